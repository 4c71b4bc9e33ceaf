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

from fastbook.broker import BrokerStartError, EmbeddedBroker
from fastbook.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_logging_arguments,
    fail,
    market_spec,
    setup_logging,
)
from fastbook.cli.sequencer import add_sequencer_arguments, build_sequencer_runner
from fastbook.market import MarketSpec
from fastbook.mqtt import NodeRunner

log = logging.getLogger("fastbook.broker")
DEFAULT_MARKET = "BTC-USD"


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number from 1 to 65535, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be a number from 1 to 65535, got {text!r}")
    return port


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
    add_sequencer_arguments(p)
    add_logging_arguments(p)
    return p


async def serve(args: argparse.Namespace, markets: list[MarketSpec]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    broker = EmbeddedBroker(args.host, args.port)
    try:
        await broker.start()
    except BrokerStartError as exc:
        return fail(str(exc))
    local_url = f"mqtt://{'127.0.0.1' if args.host in ('0.0.0.0', '') else args.host}:{args.port}"
    if ":" in args.host and args.host != "::":
        local_url = f"mqtt://[{args.host}]:{args.port}"
    elif args.host == "::":
        local_url = f"mqtt://[::1]:{args.port}"

    runners: list[NodeRunner] = []
    code = EXIT_OK
    try:
        for market in markets:
            try:
                runners.append(build_sequencer_runner(market, args.data_dir, local_url, args))
            except Exception as exc:  # bad data dir, corrupt journal: say which and stop
                code = fail(f"cannot open the sequencer for {market.name}: {exc}")
                return code
        for runner in runners:
            runner.start()
        names = ", ".join(m.name for m in markets) or "none"
        log.info("fastbook broker ready on mqtt://%s:%d (markets: %s)", args.host, args.port, names)
        print(f"fastbook-broker listening on mqtt://{args.host}:{args.port} markets: {names}", flush=True)
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
    markets: list[MarketSpec] = [] if args.no_sequencer else (args.market or [MarketSpec(DEFAULT_MARKET)])
    if len({m.name for m in markets}) != len(markets):
        return fail("the same market is given twice", 2)
    try:
        return asyncio.run(serve(args, markets))
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
