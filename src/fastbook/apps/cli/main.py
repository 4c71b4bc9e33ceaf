"""`fastbook`: the umbrella command — `fastbook status`, `demo`, `users`, `log` and `journal`."""

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
    add_version_argument,
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
    add_version_argument(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = sub.add_parser("status", help="show replicas, versions, hashes and lag of a market",
                            description="Read the retained book and replica status topics and print them.")
    add_broker_argument(status)
    status.add_argument("--market", type=market_name, default="BTC-USD", help="market (default BTC-USD)")
    status.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
    status.add_argument("--timeout", type=positive_float, default=5.0, help="seconds to wait for the broker")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--prune", action="store_true",
                        help="clear the retained replicas/<id> entries of replicas that are offline "
                        "(or unreadable), then show what is left")
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
    logs = sub.add_parser("log", help="print a market's log as JSON lines",
                          description="Read the binary log (docs/wire.md) and print one JSON object per "
                          "entry, in seq order: `dump` replays a range from the sequencer's journal, "
                          "`tail` follows the live log.")
    logs_sub = logs.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    for action, text in (("tail", "follow the live log (from --from SEQ, replayed first)"),
                         ("dump", "print --from SEQ to --to SEQ (default: the head) and exit")):
        cmd = logs_sub.add_parser(action, help=text, description=text)
        add_broker_argument(cmd)
        cmd.add_argument("--market", type=market_name, default="BTC-USD", help="market (default BTC-USD)")
        cmd.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
        cmd.add_argument("--from", dest="first", type=positive_int, required=action == "dump",
                         metavar="SEQ", help="first seq to print")
        if action == "dump":
            cmd.add_argument("--to", dest="last", type=positive_int, default=None, metavar="SEQ",
                             help="last seq to print (default: the head)")
        cmd.add_argument("--timeout", type=positive_float, default=5.0,
                         help="seconds to wait for the broker (and, for dump, for the sequencer)")
        add_credentials_arguments(cmd)

    journal = sub.add_parser("journal", help="sequencer journal maintenance")
    journal_sub = journal.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    migrate = journal_sub.add_parser(
        "migrate", help="convert a journal of the previous format (FBJOURN1, JSON entries)",
        description="Rewrite DIR/journal.log (FBJOURN1: one JSON entry per record) in the binary "
        "format (FBJOURN2). The original is kept as DIR/journal.log.v1. Stop the sequencer first.")
    migrate.add_argument("data_dir", type=Path, metavar="DIR", help="the sequencer's data dir")
    repair = journal_sub.add_parser(
        "repair", help="show (and with --drop-tail, set aside) a damaged last journal record",
        description="The sequencer refuses to start when the last frame of DIR/journal.log is whole "
        "but fails its checks (it may be an accepted command). This shows the damage (exit 1); with "
        "--drop-tail it copies the damaged bytes to DIR/journal.log.tail-OFFSET, cuts the journal at "
        "the last good record and moves newer snapshots aside: the seqs after it are then reused and "
        "replicas that applied them resync. Restore from a backup instead if you can. Stop the "
        "sequencer first.")
    repair.add_argument("data_dir", type=Path, metavar="DIR", help="the sequencer's data dir")
    repair.add_argument("--drop-tail", action="store_true",
                        help="set the damaged tail aside and cut the journal (seqs after it are reused)")
    return p


def log_command(args: argparse.Namespace) -> int:
    from fastbook.apps.logread import read_log

    try:
        username, password = credentials(args)
    except CredentialsError as exc:
        return fail(str(exc), EXIT_USAGE)
    last = getattr(args, "last", None)
    if last is not None and args.first is not None and last < args.first:
        return fail("--to must not be below --from", EXIT_USAGE)
    try:
        read_log(args.broker, args.market, args.prefix, args.first, last, args.log_command == "tail",
                 sys.stdout, args.timeout, username=username, password=password,
                 tls_ca=str(args.tls_ca) if args.tls_ca else None)
    except TimeoutError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def journal_command(args: argparse.Namespace) -> int:
    from fastbook.log.journal import JournalError
    from fastbook.log.journal_migrate import migrate_journal

    if args.journal_command == "repair":
        from fastbook.log.journal_repair import repair_journal

        try:
            report = repair_journal(args.data_dir, drop_tail=args.drop_tail)
        except (JournalError, OSError) as exc:
            return fail(str(exc))
        if report.damaged and not report.dropped:
            return fail(report.message)
        print(report.message)
        return EXIT_OK
    try:
        count = migrate_journal(args.data_dir)
    except JournalError as exc:
        return fail(str(exc))
    print(f"migrated {count} entries in {args.data_dir / 'journal.log'} (original: journal.log.v1)")
    return EXIT_OK


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
        tls_ca = str(args.tls_ca) if args.tls_ca else None
        try:
            if args.prune:
                from fastbook.apps.status import prune_replicas

                _before, cleared = prune_replicas(args.broker, args.market, args.prefix, args.timeout,
                                                  username=username, password=password, tls_ca=tls_ca)
                for replica in cleared:
                    print(f"cleared replicas/{replica.client_id} ({replica.state})", file=sys.stderr)
                if not cleared:
                    print("no stale replica entries", file=sys.stderr)
            status = read_status(args.broker, args.market, args.prefix, args.timeout,
                                 username=username, password=password, tls_ca=tls_ca)
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
        if args.data_dir is not None:
            try:  # a new directory is made (with its parents); a file there is a clear error
                args.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return fail(f"cannot use --data-dir {args.data_dir}: {exc.strerror or exc}")
        return run_demo(args.orders, args.seed, args.keep_running, args.data_dir)
    if args.command == "users":
        return users_command(args)
    if args.command == "log":
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        return log_command(args)
    if args.command == "journal":
        return journal_command(args)
    return EXIT_FAILURE  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
