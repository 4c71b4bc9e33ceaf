"""`fastbook`: the umbrella command — `fastbook status`, `fastbook demo` and `fastbook users`."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from fastbook.apps.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    PASSWORD_ENV,
    CredentialsError,
    add_broker_argument,
    add_credentials_arguments,
    credentials,
    fail,
    market_name,
    positive_float,
    positive_int,
    read_password_file,
)
from fastbook.wire.topics import DEFAULT_PREFIX


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
    add_credentials_arguments(status)

    demo = sub.add_parser("demo", help="run broker, sequencer and three edges locally and show them converge",
                          description="Start the embedded broker (on a free port), the sequencer and three "
                          "fastbook-edge processes, feed a seeded order flow, wait until every replica "
                          "has the sequencer's version and hash, print a summary.")
    demo.add_argument("--orders", type=positive_int, default=2000, metavar="N", help="orders to send (2000)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the flow (7)")
    demo.add_argument("--keep-running", action="store_true", help="keep everything up after the summary")
    demo.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                      help="keep journals and logs here (default: a temporary directory, removed)")

    users = sub.add_parser("users", help="manage the embedded broker's credentials file",
                           description="Add, remove or list the users of a credentials file "
                           "(fastbook-broker --users FILE). Passwords are stored as salted scrypt "
                           "hashes; the file is written with mode 0600.")
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = users_sub.add_parser("add", help="add a user or change its password/role",
                               description="The password comes from --password-file, else the "
                               f"environment variable {PASSWORD_ENV}, else a prompt on a terminal.")
    add.add_argument("--file", type=Path, required=True, help="credentials file (created if missing)")
    add.add_argument("--role", choices=("trader", "sequencer"), default="trader",
                     help="trader (default) or sequencer (may write log, book, snapshot, reports...)")
    add.add_argument("--password-file", type=Path, metavar="FILE", help="first line is the password")
    add.add_argument("name", metavar="NAME", help="user name = MQTT client id = client id in topics")
    remove = users_sub.add_parser("remove", help="remove a user")
    remove.add_argument("--file", type=Path, required=True, help="credentials file")
    remove.add_argument("name", metavar="NAME")
    listing = users_sub.add_parser("list", help="list users and roles (never passwords)")
    listing.add_argument("--file", type=Path, required=True, help="credentials file")
    return p


def _new_password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        return read_password_file(args.password_file)
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise CredentialsError(f"no password: give --password-file FILE, set {PASSWORD_ENV}, "
                               "or run on a terminal to be prompted")
    first = getpass.getpass(f"password for {args.name}: ")
    if first != getpass.getpass("again: "):
        raise CredentialsError("the passwords differ")
    return first


def users_command(args: argparse.Namespace) -> int:
    from fastbook.transport.users import UsersFile, UsersFileError, check_user_name

    try:
        if args.users_command == "list":
            for user in sorted(UsersFile.load(args.file).users.values(), key=lambda u: u.name):
                print(f"{user.name}\t{user.role}")
            return EXIT_OK
        check_user_name(args.name)
        users = UsersFile.load(args.file, missing_ok=args.users_command == "add")
        if args.users_command == "remove":
            if args.name not in users.users:
                return fail(f"no user {args.name!r} in {args.file}")
            users.remove(args.name)
            users.save()
            print(f"removed {args.name} from {args.file}")
            return EXIT_OK
        existed = args.name in users.users
        users.set(args.name, _new_password(args), args.role)
        users.save()
        print(f"{'updated' if existed else 'added'} {args.name} ({args.role}) in {args.file}")
        return EXIT_OK
    except CredentialsError as exc:
        return fail(str(exc), EXIT_USAGE)
    except (UsersFileError, ValueError) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot write {args.file}: {exc.strerror or exc}")


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "status":
        from fastbook.apps.status import format_status, read_status

        try:
            username, password = credentials(args)
        except CredentialsError as exc:
            return fail(str(exc), EXIT_USAGE)
        try:
            status = read_status(args.broker, args.market, args.prefix, args.timeout,
                                 username=username, password=password,
                                 tls_ca=str(args.tls_ca) if args.tls_ca else None)
        except TimeoutError as exc:
            return fail(str(exc))
        if args.json:
            print(json.dumps(status.to_json(), indent=2))
        else:
            print(format_status(status))
        return EXIT_OK if status.book_version is not None else EXIT_FAILURE
    if args.command == "demo":
        from fastbook.apps.demo import run_demo

        # Explicit handlers: a program started in the background by a shell inherits SIGINT ignored.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        return run_demo(args.orders, args.seed, args.keep_running, args.data_dir)
    if args.command == "users":
        return users_command(args)
    return EXIT_FAILURE  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
