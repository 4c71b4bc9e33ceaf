"""fastbook-edge: a client's replica of the book, with a terminal UI and an order prompt.

On a TTY: the full-screen terminal UI (fastbook.apps.tui.app: depth ladder, trades, own orders with
short refs, fills, position, status bar) and a prompt that takes typed orders (see
fastbook.apps.cli.commands). Otherwise: one human line per report on stdout (`--json`: the raw
report JSON, for machines) and a status line every few seconds, and command lines read from stdin
if it is a pipe (EOF just stops reading; the replica keeps running).
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TextIO

from fastbook.apps.cli.commands import HELP, CommandError, parse_command
from fastbook.apps.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CredentialsError,
    add_broker_argument,
    add_credentials_arguments,
    add_logging_arguments,
    add_version_argument,
    credentials,
    fail,
    market_name,
    setup_logging,
    stop_on_signals,
    tune_gc_for_throughput,
)
from fastbook.apps.tui.describe import describe_trade
from fastbook.apps.tui.liveness import ReplicaState, ReplicaView, replica_state
from fastbook.apps.tui.refs import UnknownRef
from fastbook.apps.tui.session import TradingSession
from fastbook.apps.tui.view import EdgeView, read_view
from fastbook.edge.client import Edge
from fastbook.transport.config import parse_broker_urls
from fastbook.wire.topics import DEFAULT_PREFIX

log = logging.getLogger("fastbook.edge.node")
VIEW_LEVELS = 10
STATUS_LOG_SECONDS = 5.0
# How a state reads in a log line (`in sync` is what scripts and tests wait for).
STATE_WORDS = {
    ReplicaState.DISCONNECTED: "DISCONNECTED",
    ReplicaState.SYNCING: "syncing",
    ReplicaState.RESYNCING: "RESYNCING",
    ReplicaState.STALLED: "STALLED",
    ReplicaState.NO_SEQUENCER: "NO SEQUENCER",
    ReplicaState.SYNCED: "in sync",
}


def client_id_arg(text: str) -> str:
    from fastbook.wire.orders import valid_client_id

    if not valid_client_id(text):
        raise argparse.ArgumentTypeError(
            f"client id must be 1-64 characters of A-Z a-z 0-9 . _ - (it is a topic level), got {text!r}"
        )
    return text


def valid_user(text: str) -> bool:
    from fastbook.wire.orders import valid_client_id

    return valid_client_id(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastbook-edge",
        description="Run a replica of a fastbook market for one client; type orders on a TTY.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_argument(p)
    p.add_argument("--client-id", type=client_id_arg, metavar="ID",
                   help="this client's id (orders go to <prefix>/<market>/orders/ID); "
                   "defaults to --username, and must equal it when given")
    add_broker_argument(p)
    add_credentials_arguments(p)
    p.add_argument("--market", type=market_name, default="BTC-USD", help="market name (default BTC-USD)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--no-tty", action="store_true", help="log lines even on a terminal")
    p.add_argument("--json", action="store_true",
                   help="log lines as raw JSON (`report {...}`, `trade {...}`) for machines; "
                   "implies --no-tty")
    session = p.add_mutually_exclusive_group()
    session.add_argument("--persistent-session", action="store_true",
                         help="ask the broker to keep this edge's MQTT session (subscriptions, queued "
                         "messages) across disconnects: what fails over between the nodes of a NATS "
                         "cluster (docs/brokers.md). The default with several --broker URLs")
    session.add_argument("--clean-session", action="store_true",
                         help="a new MQTT session at every connect (the default with one --broker URL)")
    p.add_argument("--web", metavar="HOST:PORT",
                   help="also serve a browser view of this replica (book, trades, your orders, an order "
                   "ticket) on HOST:PORT, e.g. 127.0.0.1:8080; loopback only unless --username is given, "
                   "and then the page asks for the same user name and password (docs/web.md)")
    add_logging_arguments(p)
    return p


def persistent_session(args: argparse.Namespace) -> bool:
    """Persistent unless asked otherwise when --broker lists several nodes: a failover list is a
    cluster, and on NATS only a resumed session can subscribe while a node is down (a clean one
    needs new JetStream consumers, which cannot be placed then; docs/brokers.md)."""
    if args.persistent_session or args.clean_session:
        return bool(args.persistent_session)
    return len(parse_broker_urls(args.broker)) > 1


class EdgeProgram:
    """The edge of one client (an `Edge`: replica, submit with retries) and what its session has
    seen; shared by the terminal UI and the log mode. Events arrive on the runner thread."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.client_id: str = args.client_id
        self.market: str = args.market
        self.broker: str = args.broker
        username, password = credentials(args)
        # With credentials the MQTT client id must be the user name (the broker's ACL rule).
        self.edge = Edge(args.client_id, args.broker, args.market, prefix=args.prefix,
                         mqtt_client_id=username or f"fastbook-edge-{args.client_id}"[:128],
                         username=username, password=password,
                         tls_ca=str(args.tls_ca) if args.tls_ca else None,
                         clean_session=not persistent_session(args))
        self.node = self.edge.node
        self.runner = self.edge.runner
        self.session = TradingSession()
        # (kind, data, human line) for the log mode; the TUI reads the session instead
        self.events: queue.SimpleQueue[tuple[str, dict[str, Any], str | None]] = queue.SimpleQueue()
        self.edge.add_listener(self._on_event)
        self._unanswered: set[Future[dict[str, Any]]] = set()
        self._unanswered_lock = threading.Lock()
        self.quit = threading.Event()

    def start(self) -> None:
        self.edge.start()

    def stop(self) -> None:
        self.edge.close()

    # runner thread: never block here
    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind in ("report", "resync", "trade"):
            human = self.session.on_event(kind, data)
            if kind == "trade":  # the TUI shows public trades on its tape; a log has one line each
                human = describe_trade(data)
            self.events.put((kind, data, human))

    def _note(self, line: str) -> None:
        self.session.note(line)
        self.events.put(("note", {}, line))

    @staticmethod
    def describe_json(kind: str, data: dict[str, Any]) -> str:
        """The machine line of an event: `report {...}` (as the edge has always printed it)."""
        word = "RESYNC" if kind == "resync" else kind
        return f"{word} " + json.dumps(data, separators=(",", ":"))

    def queued(self) -> int:
        """Commands sent (or queued while disconnected) that have no answer yet."""
        with self._unanswered_lock:
            return len(self._unanswered)

    def submit(self, order: dict[str, Any], typed: str) -> str:
        """Send one command; `queued ...` while disconnected (the runner sends it on reconnect)."""
        connected = self.runner.connected.is_set()
        try:
            future = self.edge.submit(order)
        except Exception as exc:
            return f"not sent: {exc}"
        with self._unanswered_lock:
            self._unanswered.add(future)
        future.add_done_callback(lambda f: self._answered(f, typed))
        if connected:
            return f"sent: {typed}"
        return f"queued (disconnected; sent when the broker is back): {typed}"

    def _answered(self, future: Future[dict[str, Any]], typed: str) -> None:
        with self._unanswered_lock:
            self._unanswered.discard(future)
        exc = future.exception()
        if exc is not None and not self.quit.is_set():
            self._note(f"no answer to '{typed}': {exc} (a late answer still shows here)")

    def execute(self, line: str) -> str | None:
        """Run one typed line; returns the text to show (never raises on bad input)."""
        try:
            command = parse_command(line)
        except CommandError as exc:
            return f"error: {exc}"
        if command.kind == "help":
            return HELP
        if command.kind == "quit":
            self.quit.set()
            return "bye"
        if command.kind == "book":
            return self.book_text()
        if command.kind == "orders":
            return "\n".join(self.orders_lines()) or "no open orders"
        assert command.order is not None
        order = dict(command.order)
        if order.get("op") in ("cancel", "amend"):
            try:
                order["id"] = self.session.resolve(str(order["id"]))
            except UnknownRef as exc:
                return f"error: {exc}"
        return self.submit(order, " ".join(line.split()))

    def view(self, levels: int = VIEW_LEVELS) -> EdgeView:
        return read_view(self.edge, levels)

    def book_text(self) -> str:
        return "\n".join(render_book(self.view()))

    def orders_lines(self) -> list[str]:
        return render_orders(self.session.label_orders(self.view().orders))

    def status_line(self, replica: ReplicaView) -> str:
        word = STATE_WORDS[replica_state(replica)]
        return (f"edge {self.client_id} {self.market} {word} version {replica.version} "
                f"hash {replica.state_hash:016x} lag {replica.lag} queued {self.queued()}"
                + (f"; {replica.detail}" if replica.detail else "")
                + (f"; {replica.conflict}" if replica.conflict else ""))

    def stop_reason(self) -> str | None:
        """Why the edge stopped by itself (None: it did not, or it failed: runner.error)."""
        presence = self.node.presence
        return presence.conflict if presence.newer else None


def render_book(view: EdgeView) -> list[str]:
    """The depth as text (the `book` command); own levels marked with `*` and your quantity."""
    lines = [f"{'':2}{'price':>14} {'qty':>14} {'orders':>6}  mine"]
    for price, qty, count in reversed(view.asks):
        mine = view.mine.get(("sell", price))
        lines.append(f"A {price:>14} {qty:>14} {count:>6}" + (f"  *{mine}" if mine else ""))
    lines.append("  " + "-" * 36)
    for price, qty, count in view.bids:
        mine = view.mine.get(("buy", price))
        lines.append(f"B {price:>14} {qty:>14} {count:>6}" + (f"  *{mine}" if mine else ""))
    return lines


def render_orders(orders: list[dict[str, Any]], limit: int = 15) -> list[str]:
    """`#2 buy 1.500 @ 100.25  (id 1a232f061c1846a-3)`: refs to type, ids for the logs."""
    lines = [f"  {o.get('ref')} {o.get('side')} {o.get('qty')} @ {o.get('price')}  (id {o.get('id')})"
             for o in orders[:limit]]
    if len(orders) > limit:
        lines.append(f"  ... {len(orders) - limit} more")
    return lines


def run_log_mode(program: EdgeProgram, stop: threading.Event) -> None:
    """Non-TTY: log lines (human, or raw JSON with --json); command lines from a piped stdin."""
    out = program.out
    as_json = bool(getattr(program.args, "json", False))

    def read_stdin() -> None:
        stdin = sys.stdin
        if stdin is None or stdin.closed:
            return
        for line in stdin:
            if line.strip():
                print(program.execute(line), file=out, flush=True)
            if program.quit.is_set():
                break

    if sys.stdin is not None and not sys.stdin.isatty():
        threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    next_status = time.monotonic() + 1.0
    while not stop.is_set() and not program.quit.is_set() and program.runner.running:
        try:
            kind, data, human = program.events.get(timeout=0.2)
            if kind == "note":
                print(human, file=out, flush=True)
            elif as_json:
                print(program.describe_json(kind, data), file=out, flush=True)
            elif human is not None:
                print(human, file=out, flush=True)
        except queue.Empty:
            pass
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + STATUS_LOG_SECONDS
            try:
                print(program.status_line(program.view(1).replica), file=out, flush=True)
            except Exception:  # stopping: the runner refuses calls
                pass


class _SessionLogHandler(logging.Handler):
    """Log records as lines of the TUI's log panel: written to stderr they would scribble over
    the screen (`cannot connect to ...` while the broker is down)."""

    def __init__(self, session: TradingSession) -> None:
        super().__init__(logging.WARNING)
        self.session = session

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.session.note(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:
            self.handleError(record)


def logs_to_session(session: TradingSession) -> Callable[[], None]:
    """Send log records to the TUI's log panel from now on (from before the runner starts: its
    first `cannot connect` would otherwise land on the terminal); returns the undo."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [_SessionLogHandler(session)]

    def restore() -> None:
        root.handlers[:] = saved

    return restore


def run_tty_mode(program: EdgeProgram, stop: threading.Event) -> None:
    from fastbook.apps.tui.app import EdgeApp

    EdgeApp(program, stop).run()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.client_id is None:
        if args.username is None:
            return fail("give --client-id ID (or --username USER)", EXIT_USAGE)
        if not valid_user(args.username):
            return fail(f"--username {args.username!r} is not a valid client id", EXIT_USAGE)
        args.client_id = args.username
    elif args.username is not None and args.username != args.client_id:
        return fail(f"--client-id {args.client_id} differs from --username {args.username}: the broker "
                    "only lets a user trade under its own name", EXIT_USAGE)
    try:
        username, password = credentials(args)
    except CredentialsError as exc:
        return fail(str(exc), EXIT_USAGE)
    web_access = None
    if args.web is not None:
        from fastbook.apps.web.access import AccessError, WebAccess, parse_listen

        try:
            web_access = WebAccess(*parse_listen(args.web), username=username, password=password)
        except AccessError as exc:
            return fail(str(exc), EXIT_USAGE)
    interactive = not args.no_tty and not args.json and sys.stdin.isatty() and sys.stdout.isatty()
    if interactive:
        # Logs would scribble over the view: keep them quiet unless asked.
        args.quiet = args.quiet or not args.verbose
    setup_logging(args)
    tune_gc_for_throughput()
    stop = stop_on_signals()
    try:
        program = EdgeProgram(args, sys.stdout)
    except ValueError as exc:
        return fail(str(exc))
    restore_logs = logs_to_session(program.session) if interactive else None
    program.start()
    log.info("edge %s on %s via %s", args.client_id, args.market, args.broker)
    web = None
    if web_access is not None:
        from fastbook.apps.web.server import WebServer

        try:
            # the page reads the program's own Edge: one replica, one set of resends
            web = WebServer(program.edge, web_access, args.market).start()
        except OSError as exc:
            program.stop()
            if restore_logs is not None:
                restore_logs()
            return fail(f"--web {args.web}: cannot listen: {exc.strerror or exc}")
        print(f"fastbook-edge: web view at {web.url}", file=sys.stderr, flush=True)
    try:
        if interactive:
            run_tty_mode(program, stop)
        else:
            run_log_mode(program, stop)
    finally:
        if web is not None:
            web.close()
        program.quit.set()
        program.stop()
        if restore_logs is not None:
            restore_logs()
    reason = program.stop_reason()
    if reason is not None:
        return fail(f"edge stopped: {reason}")
    if program.runner.error is not None:
        return fail(f"edge stopped: {program.runner.error}")
    if program.runner.refusal is not None and program.runner.connect_count == 0:
        return fail(f"the broker refused the connection: {program.runner.refusal}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
