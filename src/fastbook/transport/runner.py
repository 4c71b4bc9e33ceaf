"""NodeRunner: one node against an MQTT broker on ONE thread that does both the socket I/O and the
node's logic (a selector loop over the paho socket, paho's external-loop API).

One iteration of the loop: select until the socket is readable, a deadline (the node's next tick,
the group-commit window, a reconnect, paho's keepalive) or a wakeup from another thread; read every
packet readable now (each message goes into the Inbox as paho parses it); hand that to the node as
one batch (NodeDriver); write the node's output to the socket before selecting again. A lone order
is therefore answered in the iteration that read it, and under load a batch holds everything that
arrived during the previous one (group commit: one fsync for many orders). Nothing is handed
between threads on the message path: before this runner, a paho network thread and a worker thread
passed each message across the GIL (switch interval 5 ms) and the worker ticked every 100 ms.

Calls from other threads (`call()`, `stop()`, the Edge API's submit) go into the Inbox and write a
byte to a socketpair registered in the selector (`_Wakeup`). The in-process twin for the embedded
broker is fastbook.transport.inprocess.InProcessRunner.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time

from fastbook.transport.config import BrokerAddress, RunnerConfig
from fastbook.transport.connection import MISC_INTERVAL, MqttConnection
from fastbook.transport.driver import DriverView, NodeDriver
from fastbook.transport.node import Node
from fastbook.transport.seam import Inbox, RunnerError

log = logging.getLogger(__name__)


class _Wakeup:
    """A socketpair the loop selects on; `set()` from another thread makes the select return. At
    most one byte is in flight: a burst of calls costs one write and one read."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)
        self._pending = False
        self.loop_thread: int | None = None  # the loop's own thread needs no wakeup

    def set(self) -> None:
        if self._pending or threading.get_ident() == self.loop_thread:
            return
        self._pending = True
        try:
            self._writer.send(b"\0")
        except (BlockingIOError, OSError):  # full (a byte is there already) or closed (stopped)
            pass

    def clear(self) -> None:
        """Before the loop looks at the inbox: a set() from now on writes again. Drain first, then
        reset the flag: reset first, a set() in between would write a byte the drain then ate,
        leaving the flag up with no byte, and every later set() silent (the loop woken only by its
        next deadline)."""
        try:
            while self.reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._pending = False

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


class NodeRunner(DriverView):
    """Runs one node against an MQTT broker (RunnerConfig: URLs with failover, credentials, TLS,
    session, batching) until `stop()`, on one thread named `<name>-node`.

    - The node's `will()` is the MQTT last will; `close()`'s messages are published before
      disconnecting. A node that raises is disconnected without DISCONNECT, so the broker publishes
      the will; `error` holds the exception and `wait()` returns False.
    - A node's `subscriptions()` may change: after every call into the node the runner subscribes
      and unsubscribes the difference, and every (re)connect subscribes to the current list.
    """

    def __init__(self, node: Node, config: RunnerConfig) -> None:
        self.config = config
        self.name = config.name
        self._wakeup = _Wakeup()
        inbox = Inbox(config.name, self._wakeup.set)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wakeup.reader, selectors.EVENT_READ)
        self._sock: socket.socket | None = None  # the paho socket registered in the selector
        self._sock_events = 0
        self._sock_lost = False  # the socket closed since the last iteration: schedule a reconnect
        self.connection = MqttConnection(config, inbox, node.will, node.subscriptions(), self._on_socket)
        self.connected = self.connection.connected
        self.driver = NodeDriver(node, inbox, self.connection, config.batching, config.name)
        self._stopping = threading.Event()  # no more reconnects; the stop is in the inbox
        self._done = threading.Event()  # the loop has ended (the connection is closed)
        self._started = False
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-node", daemon=True)

    # ---- public API ---------------------------------------------------------------------------------

    def start(self) -> NodeRunner:
        if self._started:
            raise RunnerError("runner already started")
        self._started = True
        self._thread.start()
        return self

    def __enter__(self) -> NodeRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the node (publishing its last messages), disconnect cleanly (no last will), join."""
        if not self._started:
            return
        if self._stopping.is_set():
            self._done.wait(timeout)
            return
        self._stopping.set()
        self.driver.inbox.stop()
        self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the runner stopped; True if it stopped without a node error."""
        done = self._done.wait(timeout)
        return done and self.driver.error is None

    @property
    def clean_session(self) -> bool:
        return self.config.clean_session

    @property
    def current_broker(self) -> BrokerAddress | None:
        return self.connection.current_broker

    @property
    def connect_count(self) -> int:
        return self.connection.connect_count

    @property
    def refusal(self) -> str | None:
        """The broker's last CONNACK refusal (bad credentials, ...); None once connected."""
        return self.connection.refusal

    @property
    def last_failure(self) -> str | None:
        """What the last connection attempt ran into, in words (cannot connect, a CONNACK refusal,
        refused subscriptions); None once connected and subscribed."""
        return self.connection.last_failure

    @property
    def unsolicited(self) -> int:
        """Messages on topics the node did not subscribe to (dropped)."""
        return self.connection.unsolicited

    # ---- the loop (the runner's thread) -------------------------------------------------------------

    def _on_socket(self, sock: socket.socket | None) -> None:
        """paho opened (registered for reading) or closed (unregistered) its socket."""
        if self._sock is not None:
            self._selector.unregister(self._sock)
            self._sock, self._sock_events = None, 0
            self._sock_lost = True
        if sock is not None:
            self._selector.register(sock, selectors.EVENT_READ)
            self._sock, self._sock_events = sock, selectors.EVENT_READ

    def _want_write(self, want: bool) -> None:
        if self._sock is None:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
        if events != self._sock_events:
            self._selector.modify(self._sock, events)
            self._sock_events = events

    def _run(self) -> None:
        self._wakeup.loop_thread = threading.get_ident()
        try:
            self._serve()
            self._finish_close()
        except Exception as exc:  # a bug here must not leave a silent zombie process
            log.exception("%s: runner loop failed", self.name)
            if not self.driver.stopped.is_set():
                self.driver.fail(exc)
        finally:
            if self.connection.client.socket() is not None:
                self.connection.abort()
                self.connection.client._sock_close()  # (paho 2.x) unregisters and closes
            self._selector.close()
            self._wakeup.close()
            self._done.set()

    def _serve(self) -> None:
        """Until the driver stopped (the node closed or failed)."""
        driver, conn, wakeup = self.driver, self.connection, self._wakeup
        items = driver.inbox.items
        select = self._selector.select
        reader = wakeup.reader
        reconnect_at = time.monotonic()
        next_misc = reconnect_at + MISC_INTERVAL
        while True:
            now = time.monotonic()
            if self._sock_lost:
                self._sock_lost = False
                self.connected.clear()
                reconnect_at = now + conn.rotation.connection_lost()
            if self._sock is None and now >= reconnect_at and not self._stopping.is_set():
                delay = conn.connect()
                if delay is not None:
                    reconnect_at = now + delay
                self._sock_lost = False  # (a socket that opened now is the new one)
            hold = driver.hold(now) if items and not self._stopping.is_set() else 0.0
            if hold == 0.0 and (items or now >= driver.next_tick):
                if not driver.run_ready():
                    return
            self._want_write(conn.flush())
            if now >= next_misc:
                conn.misc()
                next_misc = now + MISC_INTERVAL
            now = time.monotonic()
            if (items and hold == 0.0) or conn.read_pending:
                # more than one batch was queued, or bytes were read but not parsed (a read pass
                # stops at a batch's worth): go on after a look at the socket
                timeout = 0.0
            else:
                deadline = min(driver.next_tick, next_misc)
                if hold:
                    deadline = min(deadline, now + hold)
                if self._sock is None and not self._stopping.is_set():
                    deadline = min(deadline, reconnect_at)
                timeout = max(0.0, deadline - now)
            for key, events in select(timeout):
                if key.fileobj is reader:
                    wakeup.clear()
                    continue
                if events & selectors.EVENT_WRITE:
                    self._want_write(conn.flush())
                if events & selectors.EVENT_READ:
                    conn.read()
            if conn.read_pending:
                conn.read()  # (the socket may have nothing more: the bytes are in the reader)

    def _finish_close(self) -> None:
        """After the driver stopped: a clean stop waits for close()'s messages to leave, then sends
        DISCONNECT; after an abort (node error) the socket is just closed, so the will goes out."""
        conn = self.connection
        if conn.aborted or conn.closing is None:
            return
        while conn.client.socket() is not None and not conn.close_done(time.monotonic()):
            self._want_write(conn.flush())
            for key, events in self._selector.select(0.05):
                if key.fileobj is self._wakeup.reader:
                    self._wakeup.clear()
                elif events & selectors.EVENT_READ:
                    conn.read()
            if conn.read_pending:
                conn.read()
        conn.disconnect()
        deadline = time.monotonic() + 1.0
        while conn.client.socket() is not None and time.monotonic() < deadline:
            if not conn.flush():
                break  # DISCONNECT written: paho closed the socket
            self._selector.select(0.05)
