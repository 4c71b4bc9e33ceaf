"""Node runtimes on threads: `ThreadedRuntime` runs a NodeDriver on a worker thread; `NodeRunner`
adds an MQTT connection (a paho client on its network thread) as the driver's Link.

The worker thread is the only thread that ever calls into the node, so nodes need no locks.
Everything reaches it through the Inbox (fastbook.transport.seam), which keeps incoming messages,
"connected" markers and `call()` requests in arrival order. The in-process twin for the embedded
broker is fastbook.transport.inprocess.InProcessRunner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from fastbook.transport.config import BrokerAddress, RunnerConfig
from fastbook.transport.connection import MqttConnection
from fastbook.transport.driver import NodeDriver
from fastbook.transport.node import Node, Outgoing
from fastbook.transport.seam import Inbox, RunnerError

T = TypeVar("T")
Runtime = TypeVar("Runtime", bound="ThreadedRuntime")


class ThreadedRuntime:
    """A NodeDriver on its own worker thread, woken by an Event; until `stop()`.

    - An exception from the node stops the runtime: `error` holds it and `wait()` returns False, so
      the program can exit non-zero (a restart recovers from the journal/snapshot; limping on could not).
    - `stop()` closes the node: its close() messages are published, then the transport disconnects.
    A subclass brings the transport: `_start_transport`, and optionally `_stopping_transport` and
    `_join_transport`.
    """

    connected: threading.Event  # set while the transport is connected and subscribed

    def __init__(self, driver: NodeDriver, wakeup: threading.Event) -> None:
        self.driver = driver
        self.name = driver.name
        self._wakeup = wakeup  # set by the driver's Inbox whenever something is queued
        self._stopping = threading.Event()
        self._started = False
        self._thread = threading.Thread(target=self._work, name=f"{self.name}-node", daemon=True)

    # ---- transport hooks ----------------------------------------------------------------------------

    def _start_transport(self) -> None:
        raise NotImplementedError

    def _stopping_transport(self) -> None:
        """A stop was asked for (the node is closed once the inbox ahead of the stop is worked off)."""

    def _join_transport(self, timeout: float) -> None:
        """After the node closed: wait for the transport's own threads, if any."""

    # ---- public API ---------------------------------------------------------------------------------

    def start(self: Runtime) -> Runtime:
        if self._started:
            raise RunnerError("runner already started")
        self._started = True
        self._start_transport()
        self._thread.start()
        return self

    def __enter__(self: Runtime) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], list[Outgoing]]) -> Future[list[Outgoing]]:
        """Run fn on the worker thread and publish the messages it returns; resolves to that list."""
        return self.driver.inbox.call(fn, returns_value=False)

    def call_with_result(self, fn: Callable[[], tuple[T, list[Outgoing]]]) -> Future[T]:
        """Run fn on the worker thread; fn returns (value, messages): publish them, resolve to value."""
        return self.driver.inbox.call(fn, returns_value=True)

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the node (publishing its last messages), disconnect cleanly (no last will), join."""
        if not self._started:
            return
        if self._stopping.is_set():
            self.driver.stopped.wait(timeout)
            return
        self._stopping.set()
        self._stopping_transport()
        self.driver.inbox.stop()
        self._thread.join(timeout)
        self._join_transport(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the runner stopped; True if it stopped without a node error."""
        stopped = self.driver.stopped.wait(timeout)
        return stopped and self.driver.error is None

    @property
    def running(self) -> bool:
        return self._started and not self.driver.stopped.is_set()

    @property
    def node(self) -> Node:
        return self.driver.node

    @property
    def error(self) -> BaseException | None:
        return self.driver.error

    @property
    def received(self) -> int:
        return self.driver.received

    @property
    def batches(self) -> int:
        return self.driver.batches

    @property
    def published(self) -> int:
        return self.driver.published

    # ---- worker thread ------------------------------------------------------------------------------

    def _work(self) -> None:
        driver = self.driver
        wakeup = self._wakeup
        while True:
            if not driver.inbox:
                wakeup.wait(driver.until_tick(time.monotonic()))
                wakeup.clear()
            hold = driver.hold(time.monotonic())
            if hold > 0:
                self._stopping.wait(hold)  # under load: let the window fill (a stop interrupts it)
            if not driver.run_ready():
                return


class NodeRunner(ThreadedRuntime):
    """Runs one node against an MQTT broker (RunnerConfig: URLs with failover, credentials, TLS,
    session, batching) until `stop()`.

    - The node's `will()` is the MQTT last will; `close()`'s messages are published before disconnecting.
      A node that raises is disconnected without DISCONNECT, so the broker publishes the will.
    - A node's `subscriptions()` may change: after every call into the node the runner subscribes
      and unsubscribes the difference (an edge drops the retained snapshot's topic while it follows
      the log), and every (re)connect subscribes to the current list.
    """

    def __init__(self, node: Node, config: RunnerConfig) -> None:
        self.config = config
        wakeup = threading.Event()
        inbox = Inbox(config.name, wakeup.set)
        self.connection = MqttConnection(config, inbox, node.will(), node.subscriptions())
        self.connected = self.connection.connected
        super().__init__(NodeDriver(node, inbox, self.connection, config.batching, config.name), wakeup)

    def _start_transport(self) -> None:
        self.connection.start()

    def _stopping_transport(self) -> None:
        self.connection.stop_reconnecting()

    def _join_transport(self, timeout: float) -> None:
        self.connection.join(timeout)

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
    def unsolicited(self) -> int:
        """Messages on topics the node did not subscribe to (dropped)."""
        return self.connection.unsolicited
