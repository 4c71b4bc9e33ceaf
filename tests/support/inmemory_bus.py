"""An in-memory stand-in for an MQTT broker plus the node runners, for testing the distributed core
without sockets: retained messages, `+`/`#` filters, per-subscriber queues, a virtual clock, and
chaos (drop, duplicate, delay/reorder) on the topics a test chooses.

Deterministic for a given seed: `step()` delivers what is due, one batch per node (like the runner
draining its inbox), then ticks every node.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastbook.transport.node import Outgoing


def topic_matches(pattern: str, topic: str) -> bool:
    p_parts, t_parts = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(p_parts) == len(t_parts)


@dataclass
class Chaos:
    drop: float = 0.0
    duplicate: float = 0.0
    max_delay_steps: int = 0  # a random extra delay of 0..n steps reorders messages
    applies_to: Callable[[str], bool] = lambda topic: False


@dataclass
class _Client:
    node: Any
    filters: list[str]
    inbox: list[tuple[int, int, str, bytes]] = field(
        default_factory=list
    )  # (due step, order, topic, payload)
    connected: bool = True


class Bus:
    def __init__(self, seed: int = 1, chaos: Chaos | None = None, step_seconds: float = 0.05) -> None:
        self.rng = random.Random(seed)
        self.chaos = chaos or Chaos()
        self.step_seconds = step_seconds
        self.now = 1000.0
        self.steps = 0
        self.clients: dict[str, _Client] = {}
        self.retained: dict[str, bytes] = {}
        self.published: list[tuple[str, Outgoing]] = []  # everything any node published, in order
        self._order = 0

    def clock(self) -> float:
        return self.now

    def connect(self, name: str, node: Any) -> None:
        """Subscribe (retained messages are delivered) then call on_connected, like the runner."""
        if hasattr(node, "clock"):
            node.clock = self.clock
        filters = [f for f, _qos in node.subscriptions()]
        client = _Client(node, filters)
        self.clients[name] = client
        for topic, payload in self.retained.items():
            if any(topic_matches(f, topic) for f in filters):
                self._enqueue(client, topic, payload, chaotic=False)
        self.publish(name, node.on_connected())

    def disconnect(self, name: str, use_will: bool = True) -> None:
        client = self.clients.pop(name)
        if use_will:
            will = client.node.will()
            if will is not None:
                self.publish(name, [will])

    def publish(self, sender: str, messages: list[Outgoing]) -> None:
        for message in messages:
            self.published.append((sender, message))
            if message.retain:
                if message.payload:
                    self.retained[message.topic] = message.payload
                else:
                    self.retained.pop(message.topic, None)
            for client in self.clients.values():
                if any(topic_matches(f, message.topic) for f in client.filters):
                    self._enqueue(client, message.topic, message.payload, chaotic=True)

    def _enqueue(self, client: _Client, topic: str, payload: bytes, chaotic: bool) -> None:
        copies = 1
        delay = 0
        if chaotic and self.chaos.applies_to(topic):
            if self.rng.random() < self.chaos.drop:
                return
            if self.rng.random() < self.chaos.duplicate:
                copies = 2
            delay = self.rng.randint(0, self.chaos.max_delay_steps)
        for _ in range(copies):
            self._order += 1
            client.inbox.append((self.steps + 1 + delay, self._order, topic, payload))

    def step(self) -> None:
        self.steps += 1
        self.now += self.step_seconds
        for name, client in list(self.clients.items()):
            due = sorted(m for m in client.inbox if m[0] <= self.steps)
            if due:
                client.inbox = [m for m in client.inbox if m[0] > self.steps]
                out = client.node.on_messages([(topic, payload) for _s, _o, topic, payload in due])
                self.publish(name, out)
        for name, client in list(self.clients.items()):
            self.publish(name, client.node.on_tick(self.now))

    def run_until(self, condition: Callable[[], bool], max_steps: int = 2000) -> int:
        """Step until condition() holds; AssertionError after max_steps (a deadline, not a sleep)."""
        for _ in range(max_steps):
            if condition():
                return self.steps
            self.step()
        if condition():
            return self.steps
        raise AssertionError(f"condition not reached within {max_steps} steps")

    def idle(self) -> bool:
        return all(not c.inbox for c in self.clients.values())
