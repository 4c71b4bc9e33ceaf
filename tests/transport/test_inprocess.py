"""InProcessRunner against a fake broker on a real event loop: the ingress in, publish_from_node out,
the node called on the loop itself."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest

from fastbook.transport import inprocess
from fastbook.transport.config import BatchPolicy
from fastbook.transport.inprocess import InProcessRunner
from fastbook.transport.node import Outgoing
from tests.support.brokers import wait_for
from tests.support.transport_fakes import FakeNode


class FakeBroker:
    """The two halves of FastbookAmqttBroker an in-process node uses."""

    def __init__(self) -> None:
        self.ingress: list[tuple[list[str], Callable[[str, bytes], None]]] = []
        self.output: list[Outgoing] = []
        self.loop_threads: set[str] = set()

    def add_ingress(self, filters: list[str], deliver: Callable[[str, bytes], None]) -> None:
        self.ingress.append((filters, deliver))

    def remove_ingress(self, deliver: Callable[[str, bytes], None]) -> None:
        self.ingress = [(f, d) for f, d in self.ingress if d != deliver]

    def publish_now(self, messages: list[Outgoing]) -> int:
        return 0  # everything through publish_from_node

    async def publish_from_node(self, messages: list[Outgoing]) -> None:
        self.loop_threads.add(threading.current_thread().name)
        self.output.extend(messages)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="broker-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_in_process_runner_round_trip(loop: asyncio.AbstractEventLoop) -> None:
    node, broker = FakeNode(), FakeBroker()
    runner = InProcessRunner(node, broker, loop, name="sequencer-X").start()
    assert runner.wait_connected(0) and broker.ingress[0][0] == ["in/#"]
    deliver = broker.ingress[0][1]

    def broadcast() -> None:  # as the broker does: on its loop, one message after another
        for i in range(50):
            deliver("in/a", b"%d" % i)

    loop.call_soon_threadsafe(broadcast)
    wait_for(lambda: len(broker.output) == 51, 5, "the node's output in the broker")
    assert node.batches == [[("in/a", b"%d" % i) for i in range(50)]]  # what arrived before the run
    assert runner.call_with_result(lambda: (threading.current_thread().name, [])).result(5) == "broker-loop"
    runner.stop()
    assert runner.wait(1) and node.closed and node.threads == {"broker-loop"}  # no thread of its own
    wait_for(lambda: len(broker.output) == 52, 5, "close()'s message")
    assert [m.payload for m in broker.output] == [b"online", *(b"%d" % i for i in range(50)), b"closed"]
    assert broker.ingress == [] and broker.loop_threads == {"broker-loop"}


def test_in_process_runner_stops_on_its_loop(loop: asyncio.AbstractEventLoop) -> None:
    """fastbook-broker may stop its sequencers from a coroutine: stop() on the loop closes the node
    at once instead of waiting for the loop it is blocking."""
    node, broker = FakeNode(), FakeBroker()
    runner = InProcessRunner(node, broker, loop, name="sequencer-Y")

    async def start_then_stop() -> bool:
        runner.start()
        broker.ingress[0][1]("in/a", b"1")
        runner.stop()
        return node.closed

    assert asyncio.run_coroutine_threadsafe(start_then_stop(), loop).result(5)
    assert runner.wait(0) and node.batches == [[("in/a", b"1")]]
    wait_for(lambda: [m.payload for m in broker.output] == [b"online", b"1", b"closed"], 5, "output")


def test_in_process_runner_ticks_at_the_node_deadline(loop: asyncio.AbstractEventLoop) -> None:
    node, broker = FakeNode(), FakeBroker()
    runner = InProcessRunner(node, broker, loop, name="sequencer-Z", batching=BatchPolicy(tick_interval=0.02))
    runner.start()
    wait_for(lambda: node.ticks >= 3, 5, "ticks from a loop timer")
    runner.stop()
    assert runner.wait(1)


def test_a_burst_that_takes_several_loop_iterations_is_one_batch(
        loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    """amqtt hands a client's messages over one loop iteration each (a task per packet): the run
    waits behind the loop's other ready callbacks, so a burst is one batch (without the wait, the
    first message would run alone and the rest one batch each)."""
    monkeypatch.setattr(inprocess, "IDLE_WAIT", 5.0)  # no deadline on a slow machine: the rule itself
    node, broker = FakeNode(), FakeBroker()
    InProcessRunner(node, broker, loop, name="sequencer-B").start()
    deliver = broker.ingress[0][1]

    def arrive(i: int) -> None:
        deliver("in/a", b"%d" % i)
        if i < 9:
            loop.call_soon(arrive, i + 1)  # the next message, one iteration later

    loop.call_soon_threadsafe(arrive, 0)
    wait_for(lambda: len(broker.output) == 11, 5, "the node's output")
    assert node.batches == [[("in/a", b"%d" % i) for i in range(10)]]


def test_a_broker_that_is_never_idle_still_runs_the_node(
        loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait for an idle loop ends after IDLE_WAIT: a broker always busy delays a batch by that
    much, no more."""
    monkeypatch.setattr(inprocess, "IDLE_WAIT", 0.05)
    node, broker = FakeNode(), FakeBroker()
    InProcessRunner(node, broker, loop, name="sequencer-C").start()
    deliver = broker.ingress[0][1]
    busy = threading.Event()
    busy.set()

    def spin() -> None:  # other work always ready on the loop
        if busy.is_set():
            loop.call_soon(spin)

    loop.call_soon_threadsafe(spin)
    loop.call_soon_threadsafe(deliver, "in/a", b"1")
    try:
        wait_for(lambda: node.batches == [[("in/a", b"1")]], 5, "the batch despite a busy loop")
    finally:
        busy.clear()
