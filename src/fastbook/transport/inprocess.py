"""InProcessRunner: a node inside the embedded broker's process, without an MQTT client.

Messages on the node's subscriptions come straight from the broker (after its publish ACL, in the
order it takes them: `FastbookAmqttBroker.add_ingress`) and the node's output goes straight into the
broker (`publish_from_node`, scheduled on its event loop). The node runs on a worker thread like a
NodeRunner's (same NodeDriver); only the Link differs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from fastbook.transport.config import DEFAULT_BATCHING, BatchPolicy
from fastbook.transport.driver import NodeDriver
from fastbook.transport.node import Node, Outgoing
from fastbook.transport.runner import ThreadedRuntime
from fastbook.transport.seam import Inbox

log = logging.getLogger(__name__)


class InProcessLink:
    """The Link of an in-process node: the broker's ingress in, `publish_from_node` out. The node's
    filters are fixed when it starts (the sequencer's never change)."""

    def __init__(self, broker: Any, loop: asyncio.AbstractEventLoop, inbox: Inbox,
                 filters: list[str], name: str) -> None:
        self._broker = broker  # fastbook.transport.broker.FastbookAmqttBroker
        self._loop = loop  # the broker's event loop
        self._inbox = inbox
        self._filters = filters
        self._name = name

    def attach(self) -> None:
        self._broker.add_ingress(self._filters, self._deliver)

    def _deliver(self, topic: str, payload: bytes) -> None:
        self._inbox.deliver((topic, payload))

    def publish(self, messages: Sequence[Outgoing]) -> None:
        if messages:
            # Scheduled in call order on the broker's loop, so the output keeps its order.
            publish = self._broker.publish_from_node(list(messages))
            done = asyncio.run_coroutine_threadsafe(publish, self._loop)
            done.add_done_callback(self._published)

    def follow(self, subscriptions: list[tuple[str, int]]) -> None:
        pass

    def close(self, last: Sequence[Outgoing]) -> None:
        try:
            self.publish(last)
        finally:
            self.abort()

    def abort(self) -> None:
        self._broker.remove_ingress(self._deliver)

    def _published(self, done: Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("%s: the broker could not take the node's output: %s", self._name, done.exception())


class InProcessRunner(ThreadedRuntime):
    """Runs a node inside the embedded broker (see the module docstring); always "connected"."""

    def __init__(self, node: Node, broker: Any, loop: asyncio.AbstractEventLoop, *, name: str,
                 batching: BatchPolicy = DEFAULT_BATCHING) -> None:
        wakeup = threading.Event()
        inbox = Inbox(name, wakeup.set)
        filters = [topic_filter for topic_filter, _qos in node.subscriptions()]
        self.link = InProcessLink(broker, loop, inbox, filters, name)
        self.connected = threading.Event()
        super().__init__(NodeDriver(node, inbox, self.link, batching, name), wakeup)

    def _start_transport(self) -> None:
        self.link.attach()
        self.connected.set()
        self.driver.inbox.connected()
