"""fastbook-sequencer: the sequencer of one market against any MQTT broker (mosquitto, ...)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fastbook.apps.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CredentialsError,
    add_broker_argument,
    add_credentials_arguments,
    add_logging_arguments,
    add_version_argument,
    credentials,
    fail,
    market_spec,
    milliseconds,
    positive_float,
    positive_int,
    setup_logging,
    stop_on_signals,
    tune_gc_for_throughput,
)
from fastbook.transport.config import BatchPolicy, RunnerConfig
from fastbook.transport.runner import NodeRunner
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import DEFAULT_PREFIX

if TYPE_CHECKING:
    from fastbook.log.sequencer import SequencerNode

log = logging.getLogger("fastbook.log.sequencer")


def sequencer_client_id(prefix: str, market: MarketSpec) -> str:
    """Fixed MQTT client id, so a persistent session (clean_session=False) survives restarts."""
    return f"fastbook-sequencer-{prefix}-{market.name}"[:128]


def add_sequencer_arguments(parser: argparse.ArgumentParser, batch_window_ms: float = 0.0) -> None:
    """The sequencer's options; `batch_window_ms` is the program's --batch-window default."""
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
    parser.add_argument(
        "--snapshot-every", type=positive_int, default=10_000, metavar="N",
        help="publish and keep a snapshot every N versions (default 10000; with a deeper book, "
             "every as many versions as the last snapshot held orders)",
    )
    parser.add_argument(
        "--snapshot-interval", type=positive_float, default=30.0, metavar="SECONDS",
        help="... or after this many seconds if the version moved (default 30)",
    )
    parser.add_argument(
        "--batch-window", type=milliseconds, default=batch_window_ms, metavar="MS",
        help="group commit under load: once a batch held several orders and more are waiting, start "
        "batches four times their own duration apart, at most MS milliseconds, so that one fsync, log "
        f"message and book serve more orders; a lone order is never delayed (0 = off; default "
        f"{batch_window_ms:g})",
    )
    parser.add_argument(
        "--dedupe-window", type=positive_int, default=1_000_000, metavar="N",
        help="refuse a reused client order id for at least N versions after it was accepted, and while "
        "its order is open (default 1000000; about 200 bytes of memory per version: lower it on small "
        "devices)",
    )
    parser.add_argument(
        "--recover-timeout", type=positive_float, default=5.0, metavar="SECONDS",
        help="a journal whose last frame is damaged: wait this long at start for the replicas to "
        "give its records back before refusing to start (nothing on disk changed; default 5)",
    )


def open_sequencer(market: MarketSpec, data_dir: Path, args: argparse.Namespace) -> SequencerNode:
    """Open (recover) the market's journal under DATA_DIR/<market>. Raises ValueError/OSError (and
    the journal's errors) with a message on a bad data dir."""
    from fastbook.log.sequencer import SequencerConfig, SequencerNode  # heavy imports only when running

    cfg = SequencerConfig(
        market=market,
        data_dir=data_dir / market.name,
        prefix=args.prefix,
        snapshot_every=args.snapshot_every,
        snapshot_interval=args.snapshot_interval,
        dedupe_window=args.dedupe_window,
        recover_timeout=args.recover_timeout,
    )
    node = SequencerNode(cfg)
    log.info("%s: journal at %s, version %d", market.name, cfg.data_dir, node.version)
    return node


def build_sequencer_runner(
    market: MarketSpec, data_dir: Path, broker: str, args: argparse.Namespace,
    username: str | None = None, password: str | None = None,
) -> NodeRunner:
    """The market's sequencer (open_sequencer) wrapped in a runner on the broker at `broker`."""
    node = open_sequencer(market, data_dir, args)
    # Persistent session: the broker keeps our subscriptions and queues orders while we restart.
    # With credentials the client id is the user name (the broker's ACL rule): one user per sequencer.
    return NodeRunner(node, RunnerConfig(
        broker, username or sequencer_client_id(args.prefix, market), clean_session=False,
        batching=BatchPolicy(window=args.batch_window / 1000.0),
        name=f"sequencer-{market.name}", username=username, password=password,
        tls_ca=str(args.tls_ca) if getattr(args, "tls_ca", None) else None,
    ))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastbook-sequencer",
        description="Sequence, journal and publish one market's log on an MQTT broker.",
    )
    add_version_argument(p)
    add_broker_argument(p, required=True)
    p.add_argument("--data-dir", type=Path, required=True, metavar="DIR",
                   help="journal and snapshots go to DIR/<market>/")
    p.add_argument("--market", type=market_spec, required=True, metavar="SPEC",
                   help="NAME[:tick=0.01][:lot=0.001], e.g. BTC-USD:tick=0.01:lot=0.001")
    add_sequencer_arguments(p)
    add_credentials_arguments(p)
    add_logging_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args)
    tune_gc_for_throughput()
    try:
        username, password = credentials(args)
    except CredentialsError as exc:
        return fail(str(exc), EXIT_USAGE)
    stop = stop_on_signals()
    try:
        runner = build_sequencer_runner(args.market, args.data_dir, args.broker, args, username, password)
    except (OSError, ValueError) as exc:
        return fail(f"cannot open the sequencer for {args.market.name}: {exc}")
    except Exception as exc:  # the journal's own error types: still a message, not a traceback
        return fail(f"cannot open the sequencer for {args.market.name}: {type(exc).__name__}: {exc}")
    runner.start()
    log.info("sequencing %s on %s", args.market.name, args.broker)
    while not stop.wait(0.2):
        if not runner.running:
            break
    runner.stop()
    if runner.error is not None:
        return fail(f"sequencer stopped: {runner.error}")
    log.info("sequencer %s stopped cleanly at version %d", args.market.name, runner.node.version)  # type: ignore[attr-defined]
    return EXIT_OK if runner.error is None else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
