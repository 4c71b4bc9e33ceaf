"""What every fastbook program shares: argument types, logging, and stop-on-signal."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TypeVar

from fastbook.transport.config import DEFAULT_BROKER, parse_broker_urls
from fastbook.wire.market import MarketSpec

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # argparse's own code for bad arguments


def checked_number(
    convert: Callable[[str], T], valid: Callable[[T], bool], expected: str
) -> Callable[[str], T]:
    """An argparse type: `convert` the text, then `valid` must hold; else 'EXPECTED, got TEXT'."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}")
        return value

    return parse


positive_int = checked_number(int, lambda v: v > 0, "expected a positive integer")
positive_float = checked_number(float, lambda v: 0 < v < float("inf"), "expected a positive number")
port_number = checked_number(int, lambda v: 1 <= v <= 65535, "port must be a number from 1 to 65535")
milliseconds = checked_number(float, lambda v: 0 <= v <= 1000, "expected milliseconds between 0 and 1000")


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


PASSWORD_ENV = "FASTBOOK_PASSWORD"


class CredentialsError(ValueError):
    """--username/--password-file/FASTBOOK_PASSWORD do not add up; the message says why."""


def add_credentials_arguments(parser: argparse.ArgumentParser) -> None:
    """--username and --password-file. The password itself is never a command-line argument (it
    would show in `ps` and shell history): it comes from the file or the environment."""
    parser.add_argument("--username", metavar="USER",
                        help="MQTT user name (the broker's credentials); the password comes from "
                        f"--password-file or the environment variable {PASSWORD_ENV}")
    parser.add_argument("--password-file", type=Path, metavar="FILE",
                        help="file whose first line is the MQTT password (keep it mode 0600)")
    parser.add_argument("--tls-ca", type=Path, metavar="PEM",
                        help="connect with TLS, trusting the broker certificates signed by this CA file")


def read_password_file(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline(4096)
    except OSError as exc:
        raise CredentialsError(f"cannot read password file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"password file {path} is not UTF-8 text") from None
    password = line.rstrip("\r\n")
    if not password:
        raise CredentialsError(f"password file {path} is empty (the first line is the password)")
    return password


def credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(username, password) from the parsed arguments; (None, None) when no --username is given."""
    username = getattr(args, "username", None)
    password_file = getattr(args, "password_file", None)
    if username is None:
        if password_file is not None:
            raise CredentialsError("--password-file needs --username")
        return None, None
    if not username:
        raise CredentialsError("--username is empty")
    if password_file is not None:
        return username, read_password_file(password_file)
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise CredentialsError(f"--username {username} needs a password: give --password-file FILE "
                               f"or set {PASSWORD_ENV}")
    return username, password


def fastbook_version() -> str:
    """The installed distribution's version (what the wheel says), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fastbook")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {fastbook_version()}")


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


def tune_gc_for_throughput() -> None:
    """For the long-running programs: the sequencer and replicas allocate many short-lived objects
    but few reference cycles, while the collector keeps rescanning the long-lived id maps. Freezing
    what start-up built and collecting less often gained 6-12% sequencer throughput here
    (bench/journal_bench.py's sequencer section); cycles are still collected."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


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
