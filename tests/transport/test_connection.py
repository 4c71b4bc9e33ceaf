"""The pure parts of MqttConnection, without a broker: failover/backoff and subscription following."""

from __future__ import annotations

import pytest

from fastbook.transport.config import BrokerAddress
from fastbook.transport.connection import BrokerRotation, SubscriptionSet

A, B, C = BrokerAddress("a", 1), BrokerAddress("b", 2), BrokerAddress("c", 3)


def test_rotation_backs_off_after_a_failed_round_only() -> None:
    rotation = BrokerRotation([A, B, C], reconnect_min=0.1, reconnect_max=0.5)
    assert rotation.current == A
    assert rotation.connect_failed() == 0.0 and rotation.current == B
    assert rotation.connect_failed() == 0.0 and rotation.current == C
    assert rotation.connect_failed() == 0.1 and rotation.current == A  # a full round failed
    assert [rotation.connect_failed() for _ in range(6)] == [0.0, 0.0, 0.2, 0.0, 0.0, 0.4]
    assert [rotation.connect_failed() for _ in range(6)] == [0.0, 0.0, 0.5, 0.0, 0.0, 0.5]  # capped


def test_rotation_moves_on_after_a_lost_connection_and_resets_on_success() -> None:
    rotation = BrokerRotation([A, B], reconnect_min=0.1, reconnect_max=5.0)
    assert rotation.connection_lost() == 0.1 and rotation.current == B
    assert rotation.connection_lost() == 0.2 and rotation.current == A
    rotation.connected()
    assert rotation.connection_lost() == 0.1
    with pytest.raises(ValueError):
        BrokerRotation([], 0.1, 1.0)


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.next_mid = 10

    def unsubscribe(self, topics: list[str]) -> None:
        self.calls.append(("unsubscribe", topics))

    def subscribe(self, subs: list[tuple[str, int]]) -> int:
        self.calls.append(("subscribe", subs))
        self.next_mid += 1
        return self.next_mid


def test_subscriptions_follow_the_node_while_connected() -> None:
    subs = SubscriptionSet([("log", 1), ("snap", 1), ("reports/+", 1)])
    assert not subs.accepts("log")  # nothing subscribed yet
    assert subs.for_connect() == [("log", 1), ("snap", 1), ("reports/+", 1)]
    assert subs.accepts("log") and subs.accepts("reports/alice") and not subs.accepts("book")
    client = FakeClient()
    subs.change([("log", 1), ("snap", 1), ("reports/+", 1)], True, client.unsubscribe, client.subscribe)
    assert client.calls == []  # nothing changed: no traffic
    subs.change([("log", 1), ("reports/+", 0), ("book", 1)], True, client.unsubscribe, client.subscribe)
    assert client.calls == [("unsubscribe", ["snap"]), ("subscribe", [("reports/+", 0), ("book", 1)])]
    assert not subs.accepts("snap") and subs.accepts("book")
    assert subs.is_change(11) and not subs.is_change(11)  # the SUBACK of the change, once
    assert not subs.is_change(99)  # (the connect's own subscribe)


def test_subscriptions_changed_while_disconnected_apply_on_the_next_connect() -> None:
    subs = SubscriptionSet([("log", 1), ("snap", 1)])
    subs.for_connect()
    client = FakeClient()
    subs.change([("log", 1)], False, client.unsubscribe, client.subscribe)
    assert client.calls == [] and not subs.accepts("snap")
    assert subs.for_connect() == [("log", 1)]
    subs.change([("log", 1)], True, client.unsubscribe, client.subscribe)
    assert client.calls == []
