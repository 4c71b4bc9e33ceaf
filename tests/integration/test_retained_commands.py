"""D4 (issue 15): a retained `cancel_all` on orders/bob must not re-execute at every
fastbook-sequencer reconnect on mosquitto (which keeps retained messages on any topic)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fastbook.apps.status import read_status
from fastbook.wire.fields import RETAINED_COMMAND
from fastbook.wire.topics import Topics
from tests.support.brokers import start_mosquitto, start_sequencer, wait_for

T = Topics("BTC-USD")


class Trader:
    def __init__(self, port: int, client_id: str) -> None:
        self.lock = threading.Lock()
        self.reports: list[dict[str, Any]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv311)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(T.reports(client_id), qos=1)
        self.client_id = client_id

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.reports.extend(json.loads(msg.payload))

    def send(self, order: dict[str, Any], retain: bool = False) -> None:
        self.client.publish(T.orders(self.client_id), json.dumps(order).encode(), qos=1,
                            retain=retain).wait_for_publish(10)

    def answered(self, coid: str, kind: str) -> bool:
        with self.lock:
            return any(r.get("id") == coid and r["type"] == kind for r in self.reports)

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.reports if r["type"] == kind]


def buy(coid: str) -> dict[str, Any]:
    return {"op": "new", "id": coid, "side": "buy", "price": "1.00", "qty": "0.001"}


def test_a_retained_cancel_all_is_not_run_again_when_the_sequencer_reconnects(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    data = tmp_path / "data"
    sequencer = start_sequencer(tmp_path, broker.url, data, "BTC-USD")
    bob = None
    try:
        wait_for(lambda: read_status(broker.url, "BTC-USD", timeout=2).book_version is not None, 20,
                 "the sequencer's retained book")
        bob = Trader(broker.port, "bob")
        bob.send(buy("r1"))
        wait_for(lambda: bob.answered("r1", "accepted"), 15, "r1 accepted")
        bob.send({"op": "cancel_all", "id": "ca"}, retain=True)  # live: runs once, as sent
        wait_for(lambda: bob.answered("ca", "cancelled_all"), 15, "the live cancel_all")
        bob.send(buy("r2"))
        wait_for(lambda: bob.answered("r2", "accepted"), 15, "r2 accepted")

        sequencer.stop()
        sequencer = start_sequencer(tmp_path, broker.url, data, "BTC-USD")
        # the retained copy arrives when the sequencer subscribes, before r3
        wait_for(lambda: any(r["code"] == RETAINED_COMMAND for r in bob.of("rejected")), 20,
                 "the retained cancel_all rejected")
        bob.send(buy("r3"))
        wait_for(lambda: bob.answered("r3", "accepted"), 20, "r3 accepted")
        assert not bob.answered("r2", "cancelled")
        assert len([r for r in bob.of("cancelled_all") if r["id"] == "ca"]) == 1
    finally:
        if bob is not None:
            bob.client.loop_stop()
        sequencer.stop()
        broker.stop()
