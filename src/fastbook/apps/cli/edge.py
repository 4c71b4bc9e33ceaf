"""fastbook-edge: a client's replica of the book, with a live terminal view and an order prompt.

On a TTY: a full-screen view (book, own orders, recent reports) redrawn in plain ANSI, and a prompt
that takes typed orders (see fastbook.apps.cli.commands). Otherwise: log lines on stdout, and command
lines read from stdin if it is a pipe (EOF just stops reading; the replica keeps running).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, TextIO

from fastbook.apps.cli.commands import HELP, CommandError, parse_command
from fastbook.apps.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CredentialsError,
    add_broker_argument,
    add_credentials_arguments,
    add_logging_arguments,
    credentials,
    fail,
    market_name,
    setup_logging,
    stop_on_signals,
    tune_gc_for_throughput,
)
from fastbook.edge.liveness import EdgeStatus, SyncState
from fastbook.transport.config import RunnerConfig
from fastbook.transport.runner import NodeRunner
from fastbook.wire.topics import DEFAULT_PREFIX

log = logging.getLogger("fastbook.edge.node")
VIEW_LEVELS = 10
REFRESH_SECONDS = 0.25
STATUS_LOG_SECONDS = 5.0


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
    p.add_argument("--client-id", type=client_id_arg, metavar="ID",
                   help="this client's id (orders go to <prefix>/<market>/orders/ID); "
                   "defaults to --username, and must equal it when given")
    add_broker_argument(p)
    add_credentials_arguments(p)
    p.add_argument("--market", type=market_name, default="BTC-USD", help="market name (default BTC-USD)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--no-tty", action="store_true", help="log lines even on a terminal")
    p.add_argument("--persistent-session", action="store_true",
                   help="ask the broker to keep this edge's MQTT session (subscriptions, queued messages) "
                   "across disconnects; needed to fail over between NATS cluster nodes (docs/brokers.md)")
    add_logging_arguments(p)
    return p


class EdgeProgram:
    """Glue between the runner thread (node events) and the main thread (view, typed commands)."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        from fastbook.edge.node import EdgeConfig, EdgeNode

        self.args = args
        self.out = out
        self.node = EdgeNode(EdgeConfig(client_id=args.client_id, market=args.market, prefix=args.prefix))
        username, password = credentials(args)
        # With credentials the MQTT client id must be the user name (the broker's ACL rule).
        self.runner = NodeRunner(self.node, RunnerConfig(
            args.broker, username or f"fastbook-edge-{args.client_id}"[:128],
            clean_session=not args.persistent_session, name=f"edge-{args.client_id}",
            username=username, password=password, tls_ca=str(args.tls_ca) if args.tls_ca else None))
        self.events: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self.node.add_listener(self._on_event)
        self.recent: deque[str] = deque(maxlen=12)
        self.quit = threading.Event()

    # runner thread: never block here
    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind in ("report", "resync", "trade"):
            self.events.put((kind, data))

    def describe(self, kind: str, data: dict[str, Any]) -> str:
        if kind == "report":
            return "report " + json.dumps(data, separators=(",", ":"))
        if kind == "resync":
            return "RESYNC " + json.dumps(data, separators=(",", ":"))
        return f"{kind} " + json.dumps(data, separators=(",", ":"))

    def submit(self, order: dict[str, Any]) -> str:
        try:
            client_order_id = self.runner.call_with_result(lambda: self.node.submit(order)).result(5)
        except Exception as exc:
            return f"not sent: {exc}"
        return f"sent {order.get('op')} {client_order_id}"

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
        return self.submit(command.order)

    def snapshot_view(self) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        node = self.node

        def read() -> tuple[tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]], list[Any]]:
            state = {"version": node.version, "hash": node.state_hash, "in_sync": node.in_sync,
                     "lag": node.lag, "synced_once": node.synced_once, "status": node.status()}
            return (node.depth(VIEW_LEVELS), node.own_orders(), state), []

        return self.runner.call_with_result(read).result(5)

    def book_text(self) -> str:
        depth, _orders, _state = self.snapshot_view()
        return "\n".join(render_book(depth))

    def orders_lines(self) -> list[str]:
        _depth, orders, _state = self.snapshot_view()
        return render_orders(orders)

    def status_line(self, state: dict[str, Any]) -> str:
        link = "connected" if self.runner.connected.is_set() else "DISCONNECTED"
        status: EdgeStatus = state["status"]
        if status.sync in (SyncState.STALLED, SyncState.NO_SEQUENCER):
            # "STALLED: no log message or heartbeat ...", "no sequencer for market X (...)"
            sync = "STALLED" + status.detail.removeprefix("stalled") if status.stalled else status.detail
        else:
            sync = "in sync" if state["in_sync"] else ("RESYNCING" if state["synced_once"] else "syncing")
        line = (f"edge {self.args.client_id} {self.args.market} {link} version {state['version']} "
                f"hash {state['hash']:016x} lag {state['lag']} {sync}")
        return line if status.conflict is None else f"{line}; {status.conflict}"

    def stop_reason(self) -> str | None:
        """Why the edge stopped by itself (None: it did not, or it failed: runner.error)."""
        presence = self.node.presence
        return presence.conflict if presence.newer else None


def render_book(depth: dict[str, Any]) -> list[str]:
    lines = [f"{'':2}{'price':>14} {'qty':>14} {'orders':>6}"]
    for price, qty, count in reversed(depth.get("asks", [])[:VIEW_LEVELS]):
        lines.append(f"\x1b[31mA \x1b[0m{price:>14} {qty:>14} {count:>6}")
    lines.append("  " + "-" * 36)
    for price, qty, count in depth.get("bids", [])[:VIEW_LEVELS]:
        lines.append(f"\x1b[32mB \x1b[0m{price:>14} {qty:>14} {count:>6}")
    return lines


def render_orders(orders: list[dict[str, Any]]) -> list[str]:
    lines = []
    for o in orders[:15]:
        fields = " ".join(f"{k}={v}" for k, v in o.items() if k != "id")
        lines.append(f"  {o.get('id', '?')}: {fields}")
    if len(orders) > 15:
        lines.append(f"  ... {len(orders) - 15} more")
    return lines


def run_log_mode(program: EdgeProgram, stop: threading.Event) -> None:
    """Non-TTY: log lines; command lines from a piped stdin."""
    out = program.out

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
            kind, data = program.events.get(timeout=0.2)
            print(program.describe(kind, data), file=out, flush=True)
        except queue.Empty:
            pass
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + STATUS_LOG_SECONDS
            try:
                _depth, _orders, state = program.snapshot_view()
                print(program.status_line(state), file=out, flush=True)
            except Exception:  # stopping: the runner refuses calls
                pass


def run_tty_mode(program: EdgeProgram, stop: threading.Event) -> None:
    """A full-screen view redrawn in place, and a line editor in cbreak mode for the prompt."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    out = program.out
    buffer = ""
    program.recent.append("type 'help' for commands")
    try:
        tty.setcbreak(fd)
        out.write("\x1b[?1049h")  # alternate screen: the user's scrollback survives
        next_draw = 0.0
        while not stop.is_set() and not program.quit.is_set() and program.runner.running:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 1024).decode(errors="ignore")
                for ch in chunk:
                    if ch in ("\r", "\n"):
                        line, buffer = buffer, ""
                        if line.strip():
                            program.recent.append(f"> {line}")
                            for text_line in (program.execute(line) or "").splitlines():
                                program.recent.append(text_line)
                    elif ch in ("\x7f", "\b"):
                        buffer = buffer[:-1]
                    elif ch == "\x15":  # Ctrl-U
                        buffer = ""
                    elif ch == "\x04" and not buffer:  # Ctrl-D on an empty line
                        program.quit.set()
                    elif ch.isprintable():
                        buffer += ch
                next_draw = 0.0
            while True:
                try:
                    kind, data = program.events.get_nowait()
                except queue.Empty:
                    break
                program.recent.append(program.describe(kind, data))
                next_draw = 0.0
            if time.monotonic() >= next_draw:
                next_draw = time.monotonic() + REFRESH_SECONDS
                draw(program, buffer)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        out.write("\x1b[?1049l")
        out.flush()


def draw(program: EdgeProgram, buffer: str) -> None:
    try:
        depth, orders, state = program.snapshot_view()
    except Exception:
        return
    width = os.get_terminal_size(program.out.fileno()).columns if program.out.isatty() else 100
    lines = [program.status_line(state), ""]
    lines += render_book(depth)
    lines += ["", f"my open orders ({len(orders)}):"] + render_orders(orders)
    lines += ["", "recent:"] + [f"  {r[: width - 3]}" for r in program.recent]
    screen = "\x1b[H" + "".join(f"{line}\x1b[K\r\n" for line in lines) + "\x1b[J" + f"> {buffer}"
    program.out.write(screen)
    program.out.flush()


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
        credentials(args)
    except CredentialsError as exc:
        return fail(str(exc), EXIT_USAGE)
    interactive = not args.no_tty and sys.stdin.isatty() and sys.stdout.isatty()
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
    program.runner.start()
    log.info("edge %s on %s via %s", args.client_id, args.market, args.broker)
    try:
        if interactive:
            run_tty_mode(program, stop)
        else:
            run_log_mode(program, stop)
    finally:
        program.runner.stop()
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
