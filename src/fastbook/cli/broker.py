"""fastbook-broker: the embedded default — an amqtt MQTT broker plus the sequencer of each market,
in one process (the sequencers connect to the broker over loopback like any other client)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from fastbook.broker import BrokerStartError, EmbeddedBroker, free_port, is_loopback
from fastbook.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_logging_arguments,
    fail,
    market_spec,
    port_number,
    setup_logging,
    tune_gc_for_throughput,
)
from fastbook.cli.sequencer import add_sequencer_arguments, build_sequencer_runner, sequencer_client_id
from fastbook.market import MarketSpec
from fastbook.mqtt import NodeRunner

log = logging.getLogger("fastbook.broker")
DEFAULT_MARKET = "BTC-USD"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastbook-broker",
        description="Run an MQTT broker (amqtt) and the sequencer of each market in one process.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=1883, help="MQTT port (default 1883)")
    p.add_argument("--data-dir", type=Path, default=Path("fastbook-data"), metavar="DIR",
                   help="journals and snapshots, one DIR/<market>/ each (default ./fastbook-data)")
    p.add_argument("--market", type=market_spec, action="extend", nargs="+", metavar="SPEC",
                   help="NAME[:tick=0.01][:lot=0.001], one or more (default BTC-USD)")
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


async def serve(args: argparse.Namespace, markets: list[MarketSpec]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    # The in-process sequencers authenticate with a random secret that exists only in this process
    # (user = their fixed client id, a name `fastbook users` refuses to create), role sequencer.
    internal = {sequencer_client_id(args.prefix, m): secrets.token_urlsafe(32) for m in markets}
    tls = (args.tls_cert, args.tls_key) if args.tls_cert is not None else None
    # With TLS the in-process sequencers use a plain listener on loopback (same credentials).
    local_port = free_port() if tls is not None else None
    broker = EmbeddedBroker(args.host, args.port, users_file=args.users,
                            internal_credentials=internal if args.users is not None else None, tls=tls,
                            local_port=local_port)
    try:
        await broker.start()
    except (BrokerStartError, ValueError) as exc:
        return fail(str(exc))
    if args.users is None:
        log.warning("NO AUTHENTICATION: the broker is open to anyone who can reach %s "
                    "(loopback only); use --users FILE to require credentials", broker.url)
    local_url = f"mqtt://{'127.0.0.1' if args.host in ('0.0.0.0', '') else args.host}:{args.port}"
    if ":" in args.host and args.host != "::":
        local_url = f"mqtt://[{args.host}]:{args.port}"
    elif args.host == "::":
        local_url = f"mqtt://[::1]:{args.port}"

    if local_port is not None:
        local_url = f"mqtt://127.0.0.1:{local_port}"
    runners: list[NodeRunner] = []
    code = EXIT_OK
    try:
        for market in markets:
            try:
                user = sequencer_client_id(args.prefix, market) if args.users is not None else None
                runners.append(build_sequencer_runner(market, args.data_dir, local_url, args,
                                                      user, internal[user] if user else None))
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
    # The amqtt event loop and each sequencer's paho threads hand the GIL to each other for every
    # message: the default 5 ms switch interval left the ready one waiting (bench/README.md:
    # one order per message +25% at 1 ms).
    sys.setswitchinterval(0.001)
    markets: list[MarketSpec] = [] if args.no_sequencer else (args.market or [MarketSpec(DEFAULT_MARKET)])
    if len({m.name for m in markets}) != len(markets):
        return fail("the same market is given twice", 2)
    if args.users is None and not is_loopback(args.host):
        return fail(f"refusing to listen on {args.host} without credentials: anyone on the network "
                    "could trade as anyone and forge the log. Give --users FILE (see `fastbook users "
                    "add`), or listen on 127.0.0.1", 2)
    if (args.tls_cert is None) != (args.tls_key is None):
        return fail("--tls-cert and --tls-key go together", 2)
    try:
        return asyncio.run(serve(args, markets))
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
