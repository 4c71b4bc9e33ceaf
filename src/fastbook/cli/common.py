"""What every fastbook program shares: argument types, logging, and stop-on-signal."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from fastbook.market import MarketSpec
from fastbook.mqtt import DEFAULT_BROKER, parse_broker_urls

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # argparse's own code for bad arguments


def market_spec(text: str) -> MarketSpec:
    """argparse type for NAME[:tick=0.01][:lot=0.001]."""
    try:
        return MarketSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def market_name(text: str) -> str:
    """argparse type for a bare market name (an edge learns tick/lot from the snapshot)."""
    try:
        return MarketSpec(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def broker_urls(text: str) -> str:
    """argparse type: one or several comma-separated mqtt://HOST:PORT URLs (validated, kept as text)."""
    try:
        parse_broker_urls(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_broker_argument(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--broker",
        type=broker_urls,
        required=required,
        default=None if required else DEFAULT_BROKER,
        metavar="URL",
        help="MQTT broker, mqtt://HOST:PORT; several comma-separated URLs are tried in order "
        + ("" if required else f"(default {DEFAULT_BROKER})"),
    )


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def setup_logging(args: argparse.Namespace, stream: object = None) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level,
        stream=stream or sys.stderr,  # type: ignore[arg-type]
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def stop_on_signals(on_stop: Callable[[], None] | None = None) -> threading.Event:
    """An Event set by SIGINT/SIGTERM (and optionally a callback); a second signal exits at once."""
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        logging.getLogger("fastbook").info("%s received, shutting down", signal.Signals(signum).name)
        stop.set()
        if on_stop is not None:
            on_stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code
