"""fastbook-broker: the embedded default — an amqtt MQTT broker plus the sequencer of each market,
in one process (the sequencers connect to the broker over loopback like any other client)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from fastbook.apps.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_logging_arguments,
    add_version_argument,
    fail,
    market_spec,
    port_number,
    setup_logging,
    tune_gc_for_throughput,
)
from fastbook.apps.cli.sequencer import add_sequencer_arguments, open_sequencer
from fastbook.transport.acl import TopicScope
from fastbook.transport.broker import BrokerStartError, EmbeddedBroker, is_loopback
from fastbook.transport.config import BatchPolicy
from fastbook.transport.inprocess import InProcessRunner
from fastbook.wire.market import MarketSpec

log = logging.getLogger("fastbook.transport.broker")
DEFAULT_MARKET = "BTC-USD"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastbook-broker",
        description="Run an MQTT broker (amqtt) and the sequencer of each market in one process.",
    )
    add_version_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=1883, help="MQTT port (default 1883)")
    p.add_argument("--data-dir", type=Path, default=Path("fastbook-data"), metavar="DIR",
                   help="journals and snapshots, one DIR/<market>/ each (default ./fastbook-data)")
    p.add_argument("--market", type=market_spec, action="extend", nargs="+", metavar="SPEC",
                   help="NAME[:tick=0.01][:lot=0.001], one or more (default BTC-USD); clients may "
                   "publish for these markets only (also with --no-sequencer)")
    p.add_argument("--no-sequencer", action="store_true",
                   help="broker only (run fastbook-sequencer separately)")
    p.add_argument("--users", type=Path, metavar="FILE",
                   help="credentials file (fastbook users add ...): every connection must authenticate "
                   "and the topic ACL applies. Without it the broker is open and listens on loopback only")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve MQTT over TLS with this certificate")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="... and this private key")
    # amqtt spends most of its time per delivered message: batching under load pays (bench/README.md)
    add_sequencer_arguments(p, batch_window_ms=10.0)
    add_logging_arguments(p)
    return p


async def serve(args: argparse.Namespace, markets: list[MarketSpec], acl_markets: list[MarketSpec]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    tls = (args.tls_cert, args.tls_key) if args.tls_cert is not None else None
    # Clients may publish under --prefix for the --market markets only, sequenced here or not.
    scope = TopicScope(args.prefix, frozenset(m.name for m in acl_markets))
    broker = EmbeddedBroker(args.host, args.port, users_file=args.users, tls=tls, scope=scope)
    try:
        await broker.start()
    except (BrokerStartError, ValueError) as exc:
        return fail(str(exc))
    if args.users is None:
        log.warning("NO AUTHENTICATION: the broker is open to anyone who can reach %s "
                    "(loopback only); use --users FILE to require credentials", broker.url)
    runners: list[InProcessRunner] = []
    code = EXIT_OK
    try:
        for market in markets:
            try:
                # In this process the sequencer needs no MQTT client: the broker hands it the
                # orders it accepted (after the ACL) and takes its output directly.
                node = open_sequencer(market, args.data_dir, args)
                runners.append(broker.in_process_runner(
                    node, f"sequencer-{market.name}", BatchPolicy(window=args.batch_window / 1000.0)))
            except Exception as exc:  # bad data dir, corrupt journal: say which and stop
                code = fail(f"cannot open the sequencer for {market.name}: {exc}")
                return code
        for runner in runners:
            runner.start()
        names = ", ".join(m.name for m in markets) or "none"
        log.info("fastbook broker ready on mqtt://%s:%d (markets: %s)", args.host, args.port, names)
        mode = "authenticated" if args.users is not None else "OPEN (no authentication)"
        print(f"fastbook-broker listening on {broker.url} markets: {names} {mode}", flush=True)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            failed = [r for r in runners if not r.running]
            if failed:
                code = fail(f"{failed[0].name} stopped: {failed[0].error}")
                break
    finally:
        for runner in runners:
            await loop.run_in_executor(None, runner.stop)
        await broker.stop()
        log.info("fastbook broker stopped")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args)
    tune_gc_for_throughput()
    acl_markets: list[MarketSpec] = args.market or [MarketSpec(DEFAULT_MARKET)]
    markets = [] if args.no_sequencer else acl_markets
    if len({m.name for m in acl_markets}) != len(acl_markets):
        return fail("the same market is given twice", 2)
    if args.users is None and not is_loopback(args.host):
        return fail(f"refusing to listen on {args.host} without credentials: anyone on the network "
                    "could trade as anyone and forge the log. Give --users FILE (see `fastbook users "
                    "add`), or listen on 127.0.0.1", 2)
    if (args.tls_cert is None) != (args.tls_key is None):
        return fail("--tls-cert and --tls-key go together", 2)
    try:
        return asyncio.run(serve(args, markets, acl_markets))
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
