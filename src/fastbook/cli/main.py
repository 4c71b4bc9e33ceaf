"""`fastbook`: the umbrella command — `fastbook status` and `fastbook demo`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from fastbook.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_broker_argument,
    fail,
    market_name,
)
from fastbook.cli.sequencer import positive_float, positive_int
from fastbook.topics import DEFAULT_PREFIX


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastbook", description="fastbook: a replicated limit order book.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = sub.add_parser("status", help="show replicas, versions, hashes and lag of a market",
                            description="Read the retained book and replica status topics and print them.")
    add_broker_argument(status)
    status.add_argument("--market", type=market_name, default="BTC-USD", help="market (default BTC-USD)")
    status.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
    status.add_argument("--timeout", type=positive_float, default=5.0, help="seconds to wait for the broker")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser("demo", help="run broker, sequencer and three edges locally and show them converge",
                          description="Start the embedded broker (on a free port), the sequencer and three "
                          "fastbook-edge processes, feed a seeded order flow, wait until every replica "
                          "has the sequencer's version and hash, print a summary.")
    demo.add_argument("--orders", type=positive_int, default=2000, metavar="N", help="orders to send (2000)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the flow (7)")
    demo.add_argument("--keep-running", action="store_true", help="keep everything up after the summary")
    demo.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                      help="keep journals and logs here (default: a temporary directory, removed)")
    return p


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "status":
        from fastbook.status import format_status, read_status

        try:
            status = read_status(args.broker, args.market, args.prefix, args.timeout)
        except TimeoutError as exc:
            return fail(str(exc))
        if args.json:
            print(json.dumps(status.to_json(), indent=2))
        else:
            print(format_status(status))
        return EXIT_OK if status.book_version is not None else EXIT_FAILURE
    if args.command == "demo":
        from fastbook.demo import run_demo

        # Explicit handlers: a program started in the background by a shell inherits SIGINT ignored.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        return run_demo(args.orders, args.seed, args.keep_running, args.data_dir)
    return EXIT_FAILURE  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
