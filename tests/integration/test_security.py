"""Authentication and the topic ACL, on the embedded broker (amqtt) and on a private mosquitto started
with edge/mosquitto-secure.conf + edge/mosquitto.acl: every line of the matrix in docs/security.md.

Absence ("bob's forged message never arrived") is shown against a barrier: after the forged
publishes, bob sends a legitimate order and the test waits for its answer; the broker handles bob's
packets in order, so anything it let through would have been delivered before that answer.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fastbook.apps.status import read_status
from fastbook.edge.client import Edge
from fastbook.transport.acl import (
    MAX_CLIENT_MESSAGE,
    MAX_RETAINED_STATUS,
    MAX_SEQUENCER_MESSAGE,
    TopicScope,
    may_publish,
    may_receive,
    may_retain,
    may_subscribe,
)
from fastbook.transport.node import Outgoing
from fastbook.transport.users import UsersFile, UsersFileError
from fastbook.wire.log import decode_log_message
from fastbook.wire.topics import Topics
from tests.support.brokers import (
    MOSQUITTO,
    Broker,
    Proc,
    free_port,
    port_open,
    program,
    start_fastbook_broker,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
MARKET = "BTC-USD"
T = Topics(MARKET)
# paho reports MQTT 3.1.1 CONNACK codes as MQTT 5 reason codes: 4 -> 134, 5 -> 135.
REFUSED = (134, 135)
PASSWORDS = {"sequencer": "seq-Secret-1", "alice": "alice-pw-2", "bob": "bob-pw-3", "carol": "carol-pw-4"}


@dataclass
class Deployment:
    kind: str
    broker: Broker
    procs: list[Proc]

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def url(self) -> str:
        return self.broker.url

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def start_secure_amqtt(workdir: Path) -> Deployment:
    users = UsersFile(workdir / "users.json")
    for name in ("alice", "bob", "carol"):
        users.set(name, PASSWORDS[name])
    users.save()
    broker, proc = start_fastbook_broker(workdir, [MARKET], extra_args=["--users", str(users.path)])
    return Deployment("amqtt", broker, [proc])


def mosquitto_secure_conf(port: int, passwd: Path, acl: Path) -> str:
    """edge/mosquitto-secure.conf as shipped, with a test port, file paths and no persistence."""
    lines = []
    for line in (REPO / "edge" / "mosquitto-secure.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key == "listener":
            line = f"listener {port} 127.0.0.1"
        elif key == "password_file":
            line = f"password_file {passwd}"
        elif key == "acl_file":
            line = f"acl_file {acl}"
        elif key in ("persistence", "persistence_location", "autosave_interval", "log_dest"):
            continue
        lines.append(line)
    extra = ["persistence false", "log_dest stdout", "log_type all"]
    if os.geteuid() == 0:
        # mosquitto started as root drops to user "mosquitto", which cannot read the test's private
        # (0600, root-owned, in a 0700 tmp dir) password file; stay the test's own user.
        extra.append("user root")
    return "\n".join(lines + extra) + "\n"


def start_secure_mosquitto(workdir: Path) -> Deployment:
    passwd = workdir / "mosquitto.passwd"
    for i, (name, password) in enumerate(PASSWORDS.items()):
        # -b takes the password as an argument: acceptable for a throwaway test file only.
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), name, password],
                       check=True, capture_output=True)
    os.chmod(passwd, 0o600)
    port = free_port()
    conf = workdir / "mosquitto-secure.conf"
    conf.write_text(mosquitto_secure_conf(port, passwd, REPO / "edge" / "mosquitto.acl"))
    broker_proc = Proc([MOSQUITTO, "-c", str(conf)], workdir / "mosquitto.log")
    procs = [broker_proc]
    try:
        wait_for(lambda: port_open(port) or not broker_proc.alive(), 10, "mosquitto to listen")
        assert broker_proc.alive(), broker_proc.output()
        password_file = workdir / "sequencer.pw"
        password_file.write_text(PASSWORDS["sequencer"] + "\n")
        procs.append(Proc([program("fastbook-sequencer"), "--broker", f"mqtt://127.0.0.1:{port}",
                           "--data-dir", str(workdir / "data"), "--market", MARKET,
                           "--username", "sequencer", "--password-file", str(password_file)],
                          workdir / "sequencer.log"))
        wait_for(lambda: read_status(f"mqtt://127.0.0.1:{port}", MARKET, timeout=2, username="carol",
                                     password=PASSWORDS["carol"]).book_version is not None,
                 20, "the sequencer's retained book")
    except BaseException:
        for proc in reversed(procs):
            proc.stop()
        raise
    return Deployment("mosquitto", Broker("mosquitto", port, [broker_proc]), procs)


@pytest.fixture(scope="module", params=["amqtt", "mosquitto"])
def secure(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp(f"secure-{request.param}")
    deployment = start_secure_amqtt(workdir) if request.param == "amqtt" else start_secure_mosquitto(workdir)
    try:
        yield deployment
    finally:
        deployment.stop()


class Probe:
    """A raw paho client: what a hostile (or careless) program can do with its own credentials."""

    def __init__(self, port: int, username: str | None, password: str | None, client_id: str | None = None,
                 will: tuple[str, bytes] | None = None) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or username or "anonymous",
                                  protocol=MQTTProtocolVersion.MQTTv311)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []
        self.connack: int | None = None
        self.subacks: dict[int, list[int]] = {}
        self.disconnected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda *_a: self.disconnected.set()
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None or self.disconnected.is_set(), 10, "CONNACK")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self.connack is None:
            self.connack = int(reason.value)
        if reason.is_failure:
            self.client.disconnect()  # no automatic retry with the refused credentials

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[Any], _p: Any) -> None:
        self.subacks[mid] = [int(r.value) for r in reasons]

    @property
    def accepted(self) -> bool:
        return self.connack == 0

    def subscribe(self, topic_filter: str) -> int:
        """The SUBACK code: 0/1 = granted QoS, 128 = refused."""
        _rc, mid = self.client.subscribe(topic_filter, qos=1)
        wait_for(lambda: mid in self.subacks, 10, f"SUBACK for {topic_filter}")
        return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)


    def received(self, topic_part: str = "") -> list[tuple[str, bytes]]:
        with self.lock:
            return [(t, p) for t, p in self.messages if topic_part in t]

    def reports(self) -> list[dict[str, Any]]:
        return [r for _t, p in self.received("/reports/") for r in json.loads(p)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def probe(d: Deployment, user: str, **kw: Any) -> Probe:
    p = Probe(d.port, user, PASSWORDS[user], **kw)
    assert p.accepted, f"{user} refused: {p.connack}"
    return p


def edge(d: Deployment, user: str) -> Edge:
    e = Edge(user, d.url, MARKET, username=user, password=PASSWORDS[user]).start()
    assert e.wait_synced(20), f"{user}'s replica did not sync"
    return e


def forge_as_bob(d: Deployment, messages: list[tuple[str, bytes, bool]]) -> None:
    """Publishes the ACL must drop, each on its own connection of bob's: mosquitto 2.0.11 closes
    the connection of an MQTT 3.1.1 client after a denied publish (amqtt just drops the message).
    QoS 0, because mosquitto answers a denied QoS 1 publish with a PUBACK paho cannot parse."""
    for topic, payload, retain in messages:
        bob = probe(d, "bob")
        bob.client.publish(topic, payload, qos=0, retain=retain)
        bob.client.disconnect()  # queued after the publish: the broker has handled it when this returns
        wait_for(bob.disconnected.is_set, 10, "bob's forging connection closed")
        bob.client.loop_stop()


def bob_barrier(bob: Probe, order_id: str) -> int:
    """Bob's own (allowed) order, answered: everything bob published before it has been handled.
    Its seq (the public log is anonymous: the barrier is found there by its seq)."""
    order = {"op": "new", "id": order_id, "side": "buy", "price": "1.00", "qty": "0.001"}
    bob.publish(T.orders("bob"), json.dumps(order).encode())
    wait_for(lambda: any(r.get("id") == order_id for r in bob.reports()), 15, f"bob's {order_id} answered")
    return int(next(r["seq"] for r in bob.reports() if r.get("id") == order_id and r.get("seq")))


def log_reached(watcher: Probe, seq: int) -> bool:
    """Whether the live log the watcher saw reached `seq`."""
    for _t, payload in watcher.received(T.log):
        try:
            if any(e.seq >= seq for e in decode_log_message(payload).entries):
                return True
        except ValueError:
            continue
    return False


# ---- authentication ------------------------------------------------------------------------------


def test_anonymous_and_wrong_password_are_refused(secure: Deployment) -> None:
    anonymous = Probe(secure.port, None, None, client_id="anon-1")
    wrong = Probe(secure.port, "alice", "not-her-password")
    unknown = Probe(secure.port, "mallory", "whatever")
    try:
        assert anonymous.connack in REFUSED and wrong.connack in REFUSED and unknown.connack in REFUSED
    finally:
        for p in (anonymous, wrong, unknown):
            p.close()


def test_bob_cannot_take_alices_client_id(secure: Deployment) -> None:
    alice = probe(secure, "alice")
    bob = Probe(secure.port, "bob", PASSWORDS["bob"], client_id="alice")
    try:
        # amqtt refuses the connection; mosquitto forces bob's client id to "bob". Either way alice's
        # session survives and bob's connection gets none of her rights.
        assert bob.connack in (REFUSED if secure.kind == "amqtt" else (0,))
        assert not alice.disconnected.is_set()
        assert alice.subscribe(T.reports("alice")) in (0, 1)
    finally:
        bob.close()
        alice.close()


# ---- the ACL matrix --------------------------------------------------------------------------------


def test_bob_cannot_read_alices_reports_or_everything(secure: Deployment) -> None:
    bob = probe(secure, "bob")
    alice = probe(secure, "alice")
    try:
        for topic_filter in (T.reports("alice"), f"{T.base}/reports/+", "#", f"{T.base}/#", "+/+/+/+",
                             T.replay_response("alice"), f"{T.base}/orders/+", f"{T.base}/replay/request/+"):
            # amqtt refuses the subscription; mosquitto grants it and checks read access on every
            # delivery instead. What counts is below: nothing of alice's ever arrives.
            code = bob.subscribe(topic_filter)
            assert code == 128 or secure.kind == "mosquitto", topic_filter
        for topic_filter in (T.reports("bob"), T.book, T.trades, T.snapshot, T.log, T.replicas_filter):
            assert bob.subscribe(topic_filter) in (0, 1), topic_filter
        assert alice.subscribe(T.reports("alice")) in (0, 1)
        order = {"op": "new", "id": "a-private", "side": "buy", "price": "2.00", "qty": "0.001"}
        alice.publish(T.orders("alice"), json.dumps(order).encode())
        wait_for(lambda: any(r.get("id") == "a-private" for r in alice.reports()), 15, "alice's answer")
        bob_barrier(bob, "b-read-barrier")
        assert not [t for t, _p in bob.received() if t.endswith("/alice")]  # reports, orders, replay
        assert all(r.get("id") != "a-private" for r in bob.reports())
    finally:
        bob.close()
        alice.close()


def test_bob_cannot_trade_or_cancel_as_alice(secure: Deployment) -> None:
    alice = edge(secure, "alice")
    watcher = probe(secure, "carol")
    bob: Probe | None = None
    try:
        assert watcher.subscribe(T.log) in (0, 1)
        resting = alice.submit({"op": "new", "id": "a-rest", "side": "sell", "price": "9000.00",
                                "qty": "0.001"}).result(15)
        assert resting["type"] == "accepted"
        forged_new = {"op": "new", "id": "forged-new", "side": "buy", "price": "3.00", "qty": "0.001"}
        forge_as_bob(secure, [(T.orders("alice"), json.dumps(forged_new).encode(), False),
                              (T.orders("alice"), b'{"op": "cancel", "id": "a-rest"}', False),
                              (T.orders("alice"), b'{"op": "cancel_all"}', False)])
        bob = probe(secure, "bob")
        bob.subscribe(T.reports("bob"))
        # Under his own name bob may send a cancel of "a-rest", but client order ids are per client:
        # it names no order of bob's and is rejected.
        bob.publish(T.orders("bob"), json.dumps({"op": "cancel", "id": "a-rest"}).encode())
        wait_for(lambda: any(r.get("id") == "a-rest" and r.get("type") == "rejected" for r in bob.reports()),
                 15, "bob's cancel of a-rest rejected")
        barrier = bob_barrier(bob, "b-trade-barrier")
        wait_for(lambda: log_reached(watcher, barrier), 15, "barrier logged")
        open_ids = [o["id"] for o in alice.own_orders()]
        assert "a-rest" in open_ids and "forged-new" not in open_ids  # bob neither cancelled nor added
        logged = b"".join(p for _t, p in watcher.received())
        assert b"forged-new" not in logged
        from fastbook.wire.log import decode_log_message

        logs = [p for _t, p in watcher.received() if p[:4] == b"FBLG"]
        entries = [e for p in logs for e in decode_log_message(p).entries]
        # alice's own order is in the log (at the seq she was told, the log is anonymous); bob's
        # cancels of it are not: no other entry touches its engine order id
        (placed,) = [e for e in entries if e.seq == resting["seq"]]
        assert placed.op == 1
        assert [e.op for e in entries if e.order_id == placed.order_id] == [1]
    finally:
        watcher.close()
        if bob is not None:
            bob.close()
        alice.close()


def test_bob_cannot_forge_log_book_snapshot_or_reports(secure: Deployment) -> None:
    watcher = probe(secure, "carol")
    forged = b'{"forged-by":"bob"}'
    try:
        for topic in (T.log, T.book, T.snapshot, T.trades, T.reports("carol"), T.replay_response("carol"),
                      T.replicas_filter, T.recover_request):
            watcher.subscribe(topic)
        targets = ((T.log, False), (T.book, True), (T.snapshot, True), (T.trades, False),
                   (T.reports("carol"), False), (T.replay_response("carol"), False),
                   (T.replica("alice"), True), (T.replay_request("alice"), False),
                   (T.recover_request, False), (T.recover_answer("alice"), False))
        forge_as_bob(secure, [(topic, forged, retain) for topic, retain in targets])
        bob = probe(secure, "bob")
        bob.subscribe(T.reports("bob"))
        barrier = bob_barrier(bob, "b-forge-barrier")
        wait_for(lambda: log_reached(watcher, barrier), 15, "barrier in the log")
        assert not [t for t, p in watcher.received() if p == forged]
        late = probe(secure, "carol")  # a new subscriber gets the retained book/snapshot: the sequencer's
        try:
            late.subscribe(T.book)
            late.subscribe(T.snapshot)
            late.subscribe(T.replicas_filter)
            wait_for(lambda: len(late.received(T.book)) >= 1 and len(late.received(T.snapshot)) >= 1, 10,
                     "retained book and snapshot")
            assert all(p != forged for _t, p in late.received())
        finally:
            late.close()
            bob.close()
    finally:
        watcher.close()


def test_bob_cannot_store_retained_messages_outside_the_contract(secure: Deployment) -> None:
    """Issue 15, D3: retained messages under any prefix and market (2,000 x 100 KB were accepted on
    both brokers) are refused; on amqtt also retained messages on non-retained topics of bob's own
    and an oversized status. (mosquitto cannot refuse the retain flag on a topic bob may publish to:
    there the topics and message_size_limit bound it, and the sequencer ignores retained orders.)"""
    status = b'{"forged-status":"bob"}'
    outside = [("other/BTC-USD/replicas/bob", status, True), ("fastbook/NOPE/replicas/bob", status, True),
               ("fastbook/NOPE/orders/bob", status, True), ("x/y/replay/request/bob", status, True)]
    forge_as_bob(secure, outside)
    if secure.kind == "amqtt":
        bob = probe(secure, "bob")
        try:
            bob.publish(T.replica("bob"), b"x" * (MAX_RETAINED_STATUS + 1), retain=True)
            bob.publish(T.replay_request("bob"), b'{"from":1,"to":1}', retain=True)
        finally:
            bob.close()
    late = probe(secure, "carol")
    try:
        late.subscribe("+/+/replicas/+")
        late.subscribe(T.book)  # its retained copy comes after the ones of the filter above
        wait_for(lambda: late.received(T.book), 10, "the retained book")
        kept = [(t, len(p)) for t, p in late.received("/replicas/")]
        assert not [(t, n) for t, n in kept if not t.startswith(T.base) or n > MAX_RETAINED_STATUS], kept
    finally:
        late.close()


def test_message_size_limits(secure: Deployment) -> None:
    """amqtt cuts a trader's connection at MAX_CLIENT_MESSAGE without reading the payload;
    mosquitto's shipped message_size_limit (MAX_SEQUENCER_MESSAGE) drops anything larger. Between
    the sequencer's max_payload (1 MiB) and the broker's limit, the sequencer answers the order
    message with PAYLOAD_TOO_LARGE."""
    bob = probe(secure, "bob")
    try:
        bob.subscribe(T.reports("bob"))
        bob.publish(T.orders("bob"), b" " * ((1 << 20) + 10))
        wait_for(lambda: any(r.get("code") == "PAYLOAD_TOO_LARGE" for r in bob.reports()), 15,
                 "PAYLOAD_TOO_LARGE")
    finally:
        bob.close()
    too_large = (MAX_CLIENT_MESSAGE if secure.kind == "amqtt" else MAX_SEQUENCER_MESSAGE) + 1
    watcher = probe(secure, "carol")
    try:
        watcher.subscribe(T.replica("bob"))
        bob = probe(secure, "bob")
        bob.client.publish(T.replica("bob"), b"y" * too_large, qos=0, retain=True)
        if secure.kind == "amqtt":  # refused before the payload is read: the connection closes
            wait_for(bob.disconnected.is_set, 20, "amqtt to close bob's connection")
        bob.client.disconnect()
        bob.client.loop_stop()
        fine = probe(secure, "bob")
        try:
            fine.publish(T.replica("bob"), b'{"status":"ok"}', retain=True)
            wait_for(lambda: watcher.received(T.replica("bob")), 10, "bob's status")
            assert all(len(p) < too_large for _t, p in watcher.received(T.replica("bob")))
        finally:
            fine.close()
    finally:
        watcher.close()


def test_a_forged_last_will_is_never_published(secure: Deployment) -> None:
    watcher = probe(secure, "carol")
    try:
        watcher.subscribe(T.log)
        forged = b'{"will-forged-by":"bob"}'
        sneaky = Probe(secure.port, "bob", PASSWORDS["bob"], will=(T.log, forged))
        if sneaky.accepted:  # mosquitto accepts the connection and drops the will at publish time
            sock = sneaky.client.socket()
            assert sock is not None
            sock.close()  # no DISCONNECT: the broker would publish the will now
            sneaky.client.loop_stop()
        else:
            assert secure.kind == "amqtt" and sneaky.connack in REFUSED
        bob = probe(secure, "bob")
        try:
            bob.subscribe(T.reports("bob"))
            barrier = bob_barrier(bob, "b-will-barrier")
            wait_for(lambda: log_reached(watcher, barrier), 15, "barrier")
        finally:
            bob.close()
        assert all(p != forged for _t, p in watcher.received())
    finally:
        watcher.close()


# ---- the matrix, live: what the ACL functions say (expected) vs what the broker did (seen) ---------

SCOPE = TopicScope("fastbook", frozenset({MARKET}))


@dataclass
class MatrixRow:
    broker: str
    who: str
    action: str  # read (subscribed, then a message there), publish, retain (kept for a late reader)
    topic: str
    expected: bool
    seen: bool
    note: str = ""


def eventually(condition: Any, timeout: float) -> bool:
    """Whether `condition()` turned true within `timeout` seconds (a waited-for delivery that may,
    by the ACL, never come: the matrix records it rather than raising)."""
    try:
        wait_for(condition, timeout, "")
    except (AssertionError, TimeoutError):
        return False
    return True


def format_matrix(rows: list[MatrixRow]) -> str:
    """The matrix as printed by test_acl_matrix_seen_on_the_broker and copied into docs/security.md."""
    yes = {True: "allowed", False: "denied"}
    lines = [f"{'broker':<9} {'who':<4} {'action':<8} {'topic':<40} {'expected':<8} {'seen':<8} note"]
    for r in rows:
        mark = "" if r.expected == r.seen else "  <-- MISMATCH"
        lines.append(f"{r.broker:<9} {r.who:<4} {r.action:<8} {r.topic:<40} {yes[r.expected]:<8} "
                     f"{yes[r.seen]:<8} {r.note}{mark}")
    for broker in sorted({r.broker for r in rows}):
        mine = [r for r in rows if r.broker == broker]
        allowed = sum(r.seen for r in mine)
        agree = sum(r.seen == r.expected for r in mine)
        lines.append(f"{broker}: {len(mine)} checks, {allowed} allowed, {len(mine) - allowed} denied, "
                     f"{agree} as expected")
    return "\n".join(lines)


def test_acl_matrix_seen_on_the_broker(secure: Deployment) -> None:
    """What bob (a trader) may read, publish and retain, checked on the broker itself: every row's
    `seen` is observed (a delivery, or the sequencer's answer to it) and must equal what the ACL
    functions (edge/mosquitto.acl is the same matrix) say. The matrix is printed (pytest -s), and
    appended to the file FASTBOOK_ACL_MATRIX names, if set; docs/security.md has the counts."""
    rows: list[MatrixRow] = []
    kind = secure.kind

    def row(action: str, topic: str, expected: bool, seen: bool, note: str = "") -> None:
        rows.append(MatrixRow(kind, "bob", action, topic, expected, seen, note))

    def pub(topic: str) -> bool:
        return may_publish("bob", "trader", topic, SCOPE)

    nonce = f"{kind}-{os.getpid()}"
    alice, carol = probe(secure, "alice"), probe(secure, "carol")
    try:
        for topic_filter in (T.reports("alice"), T.replay_response("alice")):
            assert alice.subscribe(topic_filter) in (0, 1)
        # -- read: bob subscribed to each topic, then traffic on every one of them ---------------------
        read_topics = [T.orders("bob"), T.orders("alice"), T.replay_request("bob"),
                       T.replay_request("alice"),
                       T.replica("bob"), T.replica("alice"), T.reports("bob"), T.reports("alice"),
                       T.replay_response("bob"), T.replay_response("alice"), T.log, T.book, T.snapshot,
                       T.trades]
        bob = probe(secure, "bob")
        subacks = {topic: bob.subscribe(topic) for topic in read_topics}
        sell = {"op": "new", "id": f"m-sell-{nonce}", "side": "sell", "price": "7777.00", "qty": "0.001"}
        buy = {"op": "new", "id": f"m-buy-{nonce}", "side": "buy", "price": "7777.00", "qty": "0.001"}
        alice.publish(T.orders("alice"), json.dumps(sell).encode())
        alice.publish(T.replay_request("alice"), b'{"from":1,"to":1}')
        alice.publish(T.replica("alice"), b'{"matrix":"alice"}')
        wait_for(lambda: any(r.get("id") == sell["id"] for r in alice.reports()), 15, "alice answered")
        wait_for(lambda: alice.received(T.replay_response("alice")), 15, "alice's replay answered")
        bob.publish(T.orders("bob"), json.dumps(buy).encode())  # crosses alice's: a trade
        bob.publish(T.replay_request("bob"), b'{"from":1,"to":1}')
        bob.publish(T.replica("bob"), b'{"matrix":"bob"}')
        bob_barrier(bob, f"m-read-barrier-{nonce}")
        eventually(lambda: bob.received(T.replay_response("bob")), 15)
        for topic in read_topics:
            seen = bool(bob.received(topic)) and any(t == topic for t, _p in bob.received(topic))
            row("read", topic, may_subscribe("bob", "trader", topic), seen, f"SUBACK {subacks[topic]}")
        bob.close()
        # -- publish: allowed ones on a connection of bob's, observed by their effect ------------------
        for topic in (T.log, T.book, T.snapshot, T.trades, T.replicas_filter, "+/+/replicas/+",
                      T.reports("carol"), T.replay_response("carol")):
            carol.subscribe(topic)
        marker = f'{{"matrix-forged-by":"bob","n":"{nonce}"}}'.encode()
        bob = probe(secure, "bob")
        bob.subscribe(T.reports("bob"))
        bob.subscribe(T.replay_response("bob"))
        own = {"op": "new", "id": f"m-own-{nonce}", "side": "buy", "price": "1.00", "qty": "0.001"}
        bob.publish(T.orders("bob"), json.dumps(own).encode())
        row("publish", T.orders("bob"), pub(T.orders("bob")),
            eventually(lambda: any(r.get("id") == own["id"] for r in bob.reports()), 15),
            "the sequencer answers")
        bob.publish(T.replay_request("bob"), b'{"from":1,"to":1}')
        row("publish", T.replay_request("bob"), pub(T.replay_request("bob")),
            eventually(lambda: bob.received(T.replay_response("bob")), 15), "the sequencer answers")
        bob.publish(T.replica("bob"), marker)
        row("publish", T.replica("bob"), pub(T.replica("bob")),
            eventually(lambda: (T.replica("bob"), marker) in carol.received(T.replica("bob")), 15),
            "carol reads")
        bob.close()
        # -- publish: denied ones, each on its own connection (mosquitto closes it) -------------------
        answers_before = len(alice.received(T.replay_response("alice")))
        forged_order = {"op": "new", "id": f"m-forged-{nonce}", "side": "buy", "price": "1.00",
                        "qty": "0.001"}
        observed = [T.replica("alice"), T.log, T.book, T.snapshot, T.trades, T.reports("carol"),
                    T.replay_response("carol"), "other/BTC-USD/replicas/bob", "fastbook/NOPE/replicas/bob"]
        forge_as_bob(secure, [(T.orders("alice"), json.dumps(forged_order).encode(), False),
                              (T.replay_request("alice"), b'{"from":1,"to":1}', False)]
                     + [(topic, marker, False) for topic in observed])
        bob = probe(secure, "bob")
        bob.subscribe(T.reports("bob"))
        barrier = bob_barrier(bob, f"m-publish-barrier-{nonce}")
        wait_for(lambda: log_reached(carol, barrier), 15, "barrier in carol's log")
        row("publish", T.orders("alice"), pub(T.orders("alice")),
            any(r.get("id") == forged_order["id"] for r in alice.reports()), "would be answered to alice")
        row("publish", T.replay_request("alice"), pub(T.replay_request("alice")),
            len(alice.received(T.replay_response("alice"))) > answers_before, "would be answered to alice")
        for topic in observed:
            row("publish", topic, pub(topic),
                any(t == topic and p == marker for t, p in carol.received()), "carol reads")
        # -- retain: kept for a late reader? -----------------------------------------------------------
        status = f'{{"matrix-status":"bob","n":"{nonce}"}}'.encode()
        retained = [(T.replica("bob"), status)]
        forge_as_bob(secure, [("other/BTC-USD/replicas/bob", status, True),
                              ("fastbook/NOPE/replicas/bob", status, True)])
        bob.close()  # (taken over by the forging connections of bob's)
        bob = probe(secure, "bob")
        bob.subscribe(T.reports("bob"))
        if kind == "amqtt":  # (mosquitto bounds a message by message_size_limit only)
            big = b"x" * (MAX_RETAINED_STATUS + 1)
            bob.publish(T.replica("bob"), big, retain=True)
            late = probe(secure, "carol")
            try:
                late.subscribe(T.replica("bob"))
                late.subscribe(T.book)  # its retained copy comes after the one above
                wait_for(lambda: late.received(T.book), 10, "the retained book")
                expected = may_retain("bob", "trader", T.replica("bob"), len(big), SCOPE)
                row("retain", T.replica("bob"), expected,
                    any(p == big for _t, p in late.received(T.replica("bob"))), f"{len(big)} bytes")
            finally:
                late.close()
        for topic, payload in retained:
            bob.publish(topic, payload, retain=True)
        bob_barrier(bob, f"m-retain-barrier-{nonce}")
        late = probe(secure, "carol")
        try:
            late.subscribe("+/+/replicas/+")
            late.subscribe(T.book)
            wait_for(lambda: late.received(T.book), 10, "the retained book")
            kept = late.received("/replicas/")
            for topic in (T.replica("bob"), "other/BTC-USD/replicas/bob", "fastbook/NOPE/replicas/bob"):
                row("retain", topic, may_retain("bob", "trader", topic, len(status), SCOPE),
                    (topic, status) in kept, f"{len(status)} bytes, a late reader")
        finally:
            late.close()
        bob.publish(T.replica("bob"), b"", retain=True)  # (clears it again)
        bob.close()
    finally:
        alice.close()
        carol.close()
    table = format_matrix(rows)
    print(f"\nACL matrix, {kind}:\n{table}")
    if os.environ.get("FASTBOOK_ACL_MATRIX"):
        with open(os.environ["FASTBOOK_ACL_MATRIX"], "a") as out:
            out.write(table + "\n")
    assert all(r.expected == r.seen for r in rows), table
    assert {r.action for r in rows} == {"read", "publish", "retain"}


# ---- the full flow with credentials --------------------------------------------------------------


def test_trade_end_to_end_with_credentials(secure: Deployment) -> None:
    alice = edge(secure, "alice")
    bob = edge(secure, "bob")
    try:
        sell = alice.submit({"op": "new", "id": "e2e-sell", "side": "sell", "price": "500.00",
                             "qty": "0.002"})
        assert sell.result(15)["type"] == "accepted"
        buy = bob.submit({"op": "new", "id": "e2e-buy", "side": "buy", "price": "500.00", "qty": "0.002"})
        assert buy.result(15)["type"] == "accepted"
        wait_for(lambda: alice.state()[:2] == bob.state()[:2], 15, "replicas converge")
        assert all(o["id"] != "e2e-sell" for o in alice.own_orders())  # filled
        status = read_status(secure.url, MARKET, timeout=5, username="carol", password=PASSWORDS["carol"])
        assert status.book_version == alice.version
    finally:
        bob.close()
        alice.close()


# ---- the ACL functions themselves (shared by both brokers' matrix) --------------------------------


@pytest.mark.parametrize(("user", "role", "topic", "allowed"), [
    ("bob", "trader", "fastbook/M/orders/bob", True),
    ("bob", "trader", "fastbook/M/orders/alice", False),
    ("bob", "trader", "fastbook/M/replay/request/bob", True),
    ("bob", "trader", "fastbook/M/replay/request/alice", False),
    ("bob", "trader", "fastbook/M/replicas/bob", True),
    ("bob", "trader", "fastbook/M/replicas/alice", False),
    ("bob", "trader", "fastbook/M/log", False),
    ("bob", "trader", "fastbook/M/book", False),
    ("bob", "trader", "fastbook/M/reports/bob", False),
    ("seq", "sequencer", "fastbook/M/log", True),
    ("seq", "sequencer", "fastbook/M/reports/alice", True),
    ("seq", "sequencer", "fastbook/M/replay/response/alice", True),
    ("seq", "sequencer", "fastbook/M/orders/alice", False),
    # a damaged journal tail's recovery (issue 15, D2): only the sequencer asks, each client answers
    # as itself
    ("bob", "trader", "fastbook/M/recover/answer/bob", True),
    ("bob", "trader", "fastbook/M/recover/answer/alice", False),
    ("bob", "trader", "fastbook/M/recover/request", False),
    ("seq", "sequencer", "fastbook/M/recover/request", True),
    ("seq", "sequencer", "fastbook/M/recover/answer/alice", False),
    # bounded to the broker's prefix and markets (issue 15, D3)
    ("bob", "trader", "other/M/replicas/bob", False),
    ("bob", "trader", "fastbook/N/replicas/bob", False),
    ("bob", "trader", "fastbook/N/orders/bob", False),
    ("bob", "trader", "x/y/replay/request/bob", False),
    ("seq", "sequencer", "fastbook/N/log", False),
])
def test_publish_rules(user: str, role: str, topic: str, allowed: bool) -> None:
    assert may_publish(user, role, topic, TopicScope("fastbook", frozenset({"M"}))) is allowed


@pytest.mark.parametrize(("user", "role", "topic", "size", "kept"), [
    ("bob", "trader", "fastbook/M/replicas/bob", 200, True),
    ("bob", "trader", "fastbook/M/replicas/bob", MAX_RETAINED_STATUS + 1, False),
    ("bob", "trader", "fastbook/M/orders/bob", 20, False),
    ("bob", "trader", "fastbook/M/replay/request/bob", 20, False),
    ("bob", "trader", "fastbook/N/replicas/bob", 20, False),
    ("bob", "trader", "fastbook/M/replicas/alice", 20, False),
    ("seq", "sequencer", "fastbook/M/book", 1 << 20, True),
    ("seq", "sequencer", "fastbook/M/snapshot", 8 << 20, True),
    ("seq", "sequencer", "fastbook/M/log", 20, False),
    ("seq", "sequencer", "fastbook/M/reports/bob", 20, False),
])
def test_retain_rules(user: str, role: str, topic: str, size: int, kept: bool) -> None:
    assert may_retain(user, role, topic, size, TopicScope("fastbook", frozenset({"M"}))) is kept


@pytest.mark.parametrize(("topic_filter", "allowed"), [
    ("fastbook/M/reports/bob", True), ("+/+/reports/bob", True), ("fastbook/M/reports/alice", False),
    ("fastbook/M/reports/+", False), ("fastbook/M/replay/response/bob", True),
    ("fastbook/M/log", True), ("+/+/log", True), ("fastbook/M/+", False), ("fastbook/M/#", False),
    ("#", False), ("fastbook/M/replicas/+", True), ("fastbook/M/+/bob", False),
    ("fastbook/M/orders/+", False), ("fastbook/M/orders/bob", False), ("fastbook/+/+/+", False),
    ("fastbook/M/recover/request", True), ("+/+/recover/request", True),
    ("fastbook/M/recover/answer/alice", False), ("fastbook/M/recover/answer/+", False),
])
def test_subscribe_rules_for_a_trader(topic_filter: str, allowed: bool) -> None:
    assert may_subscribe("bob", "trader", topic_filter) is allowed


def test_the_sequencer_reads_every_recover_answer() -> None:
    assert may_subscribe("seq", "sequencer", "fastbook/M/recover/answer/+")
    assert may_receive("seq", "sequencer", "fastbook/M/recover/answer/alice")
    assert not may_receive("bob", "trader", "fastbook/M/recover/answer/alice")


# ---- credentials file and programs -----------------------------------------------------------------


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "FASTBOOK_PASSWORD"}
    full_env.update(env or {})
    return subprocess.run(list(args), capture_output=True, text=True, env=full_env, input=stdin, timeout=60)


def test_users_cli_add_list_remove(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    fastbook = program("fastbook")
    added = run(fastbook, "users", "add", "--file", str(users), "alice",
                env={"FASTBOOK_PASSWORD": "pw-alice"})
    assert added.returncode == 0, added.stderr
    pw = tmp_path / "seq.pw"
    pw.write_text("pw-seq\n")
    assert run(fastbook, "users", "add", "--file", str(users), "--role", "sequencer", "--password-file",
               str(pw), "seq").returncode == 0
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    text = users.read_text()
    assert "pw-alice" not in text and "pw-seq" not in text and "scrypt$" in text
    listed = run(fastbook, "users", "list", "--file", str(users))
    assert listed.stdout.split() == ["alice", "trader", "seq", "sequencer"]
    loaded = UsersFile.load(users)
    assert loaded.check("alice", "pw-alice") is not None and loaded.check("alice", "pw-seq") is None
    assert loaded.check("seq", "pw-seq").role == "sequencer"  # type: ignore[union-attr]
    no_password = run(fastbook, "users", "add", "--file", str(users), "bob", stdin="")
    assert no_password.returncode == 2 and "FASTBOOK_PASSWORD" in no_password.stderr
    bad_name = run(fastbook, "users", "add", "--file", str(users), "a/b", env={"FASTBOOK_PASSWORD": "x"})
    assert bad_name.returncode == 1 and "user name" in bad_name.stderr
    assert run(fastbook, "users", "remove", "--file", str(users), "alice").returncode == 0
    missing = run(fastbook, "users", "remove", "--file", str(users), "alice")
    assert missing.returncode == 1 and "no user 'alice'" in missing.stderr
    assert run(fastbook, "users", "list", "--file", str(users)).stdout.split() == ["seq", "sequencer"]
    users.write_text('{"version": 1, "users": {"x": {"role": "trader", "hash": "plain"}}}')
    broken = run(fastbook, "users", "list", "--file", str(users))
    assert broken.returncode == 1 and "bad password hash" in broken.stderr


def test_open_broker_refuses_a_non_loopback_address_and_a_password_argument(tmp_path: Path) -> None:
    refused = run(program("fastbook-broker"), "--host", "0.0.0.0", "--port", str(free_port()),
                  "--data-dir", str(tmp_path / "d"))
    assert refused.returncode == 2 and "without credentials" in refused.stderr
    no_password = run(program("fastbook-edge"), "--username", "alice", "--broker", "mqtt://127.0.0.1:1")
    assert no_password.returncode == 2 and "FASTBOOK_PASSWORD" in no_password.stderr
    assert run(program("fastbook-edge"), "--username", "alice", "--password", "x").returncode == 2
    differs = run(program("fastbook-edge"), "--username", "alice", "--client-id", "bob",
                  env={"FASTBOOK_PASSWORD": "x"})
    assert differs.returncode == 2 and "differs" in differs.stderr


# ---- defence in depth: what a replica does with a forged log entry the ACL let through -----------


def _pump(seq: Any, edge_node: Any, messages: list[Any], rounds: int = 10) -> None:
    """Deliver messages between an in-process sequencer and edge until both are quiet."""
    pending: list[Outgoing] = list(messages)
    for _ in range(rounds):
        to_edge = [(m.topic, m.payload) for m in pending
                   if m.topic in (T.log, T.snapshot, T.book, T.replay_response("alice"), T.reports("alice"))]
        to_seq = [(m.topic, m.payload) for m in pending if "/replay/request/" in m.topic]
        pending = edge_node.on_messages(to_edge) if to_edge else []
        pending += seq.on_messages(to_seq) if to_seq else []
        if not pending:
            return


def test_a_replica_rejects_a_forged_log_entry(tmp_path: Path) -> None:
    """The ACL is the protection; the hash chain is a second line: an entry whose hash does not match
    the replica's own post-state is never kept, and even a forger who computes the right hash for his
    entry (the hash is not a MAC: anyone with the log can compute it) is caught by the sequencer's next
    genuine entry, which chains from the genuine state. Either way the replica resyncs to the
    sequencer's state and the forged order is gone."""
    from fastbook.edge.node import EdgeConfig, EdgeNode
    from fastbook.log.sequencer import SequencerConfig, SequencerNode
    from fastbook.wire.log import LogRun, decode_log_message, encode_log_message
    from fastbook.wire.market import MarketSpec

    spec = MarketSpec(MARKET)
    seq = SequencerNode(SequencerConfig(spec, tmp_path / "real"))
    shadow = SequencerNode(SequencerConfig(spec, tmp_path / "forger"))  # the forger's copy of the state
    alice = EdgeNode(EdgeConfig("alice", MARKET))
    resyncs: list[dict[str, Any]] = []
    alice.add_listener(lambda kind, data: resyncs.append(data) if kind == "resync" else None)
    alice.on_connected()
    _pump(seq, alice, seq.on_connected())
    genuine = {"op": "new", "id": "a1", "side": "sell", "price": "100.00", "qty": "1"}
    for node in (seq, shadow):
        out = node.on_messages([(T.orders("alice"), json.dumps(genuine).encode())])
    _pump(seq, alice, out)
    assert (alice.version, alice.state_hash) == (seq.version, seq.state_hash) == (1, shadow.state_hash)

    # 1. A forged entry "bob buys" with a made-up hash: refused, replica resyncs to the sequencer.
    # (bob's buy would fill alice's resting sell at 100.00)
    forged_order = b'{"op":"new","id":"f1","side":"buy","price":"100.00","qty":"1"}'
    forged_out = shadow.on_messages([(T.orders("bob"), forged_order)])
    forged_entry = next(e for o in forged_out if o.topic == T.log
                        for e in decode_log_message(o.payload).entries)
    wrong = forged_entry._replace(hash=forged_entry.hash ^ 0x5A5A)
    _pump(seq, alice, [Outgoing(T.log, encode_log_message(MARKET, 2, LogRun.from_entries([wrong])))])
    assert resyncs, "the replica must notice the forged entry"
    assert (alice.version, alice.state_hash) == (seq.version, seq.state_hash)
    assert alice.version == 1 and [level[0] for level in alice.depth(5)["asks"]] == ["100.00"]

    # 2. The same entry with its correct hash is applied for a moment, but the sequencer's genuine
    #    entry 2 (another command) chains from the genuine state: mismatch, resync, forged order gone.
    before = len(resyncs)
    _pump(seq, alice, [Outgoing(T.log, encode_log_message(MARKET, 2, LogRun.from_entries([forged_entry])))])
    assert alice.version == 2 and alice.depth(5)["asks"] == []  # applied: its hash is right for it
    genuine2 = {"op": "new", "id": "a2", "side": "sell", "price": "101.00", "qty": "1"}
    _pump(seq, alice, seq.on_messages([(T.orders("alice"), json.dumps(genuine2).encode())]))
    genuine3 = {"op": "new", "id": "a3", "side": "sell", "price": "102.00", "qty": "1"}
    _pump(seq, alice, seq.on_messages([(T.orders("alice"), json.dumps(genuine3).encode())]))
    assert len(resyncs) > before
    assert (alice.version, alice.state_hash) == (seq.version, seq.state_hash)
    # bob's forged buy did not fill alice's sell: all three of her orders rest in the replica's book
    assert [level[0] for level in alice.depth(5)["asks"]] == ["100.00", "101.00", "102.00"]
    seq.close()
    shadow.close()


def test_tls_listener_with_credentials(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    users = UsersFile(tmp_path / "users.json")
    users.set("carol", PASSWORDS["carol"])
    users.save()
    broker, proc = start_fastbook_broker(tmp_path, [MARKET], extra_args=[
        "--users", str(users.path), "--tls-cert", str(cert), "--tls-key", str(key)])
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="carol",
                         protocol=MQTTProtocolVersion.MQTTv311)
    try:
        assert "mqtts://127.0.0.1" in proc.output()
        books: list[bytes] = []
        client.username_pw_set("carol", PASSWORDS["carol"])
        client.tls_set(ca_certs=str(cert))
        client.on_message = lambda _c, _u, msg: books.append(bytes(msg.payload))
        client.on_connect = lambda c, *_a: c.subscribe(T.book, qos=1)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        # The retained book comes from the in-process sequencer (no MQTT client of its own).
        wait_for(lambda: books, 15, "the retained book over TLS")
        assert json.loads(books[0])["market"] == MARKET
        plain = Probe(broker.port, "carol", PASSWORDS["carol"])  # no TLS: no MQTT session at all
        assert not plain.accepted
        plain.close()
        client.disconnect()  # same user: the Edge below would take this session over anyway
        with Edge("carol", broker.url, MARKET, username="carol", password=PASSWORDS["carol"],
                  tls_ca=str(cert)) as carol:
            assert carol.wait_synced(15)
            order = {"op": "new", "id": "tls-1", "side": "buy", "price": "1.00", "qty": "0.001"}
            assert carol.submit(order).result(15)["type"] == "accepted"
        status = run(program("fastbook"), "status", "--broker", broker.url, "--username", "carol",
                     "--tls-ca", str(cert), "--json", env={"FASTBOOK_PASSWORD": PASSWORDS["carol"]})
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["sequencer"]["version"] >= 1
    finally:
        client.disconnect()
        client.loop_stop()
        broker.stop()


def test_edge_and_status_programs_with_credentials(secure: Deployment, tmp_path: Path) -> None:
    env = dict(os.environ, FASTBOOK_PASSWORD=PASSWORDS["alice"], PYTHONUNBUFFERED="1")
    edge_proc = Proc([program("fastbook-edge"), "--username", "alice", "--broker", secure.url,
                      "--market", MARKET], tmp_path / "edge-alice.log", env=env, stdin_pipe=True)
    try:
        wait_for(lambda: "in sync" in edge_proc.output() or not edge_proc.alive(), 20, "the edge in sync")
        edge_proc.send_lines(["buy 0.001 @ 4.00 id=cli-1"])
        try:
            wait_for(lambda: "ACCEPTED buy 0.001 @ 4.00" in edge_proc.output(), 30, "the accepted report")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the edge printed:\n{edge_proc.output()[-3000:]}") from None
    finally:
        assert edge_proc.stop() == 0, edge_proc.output()
    pw = tmp_path / "carol.pw"
    pw.write_text(PASSWORDS["carol"] + "\n")
    ok = run(program("fastbook"), "status", "--broker", secure.url, "--username", "carol",
             "--password-file", str(pw), "--json")
    assert ok.returncode == 0, ok.stderr
    assert any(r["client_id"] == "alice" for r in json.loads(ok.stdout)["replicas"])
    refused = run(program("fastbook"), "status", "--broker", secure.url, "--username", "carol",
                  "--timeout", "2", env={"FASTBOOK_PASSWORD": "wrong"})
    assert refused.returncode == 1 and "refused" in refused.stderr


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                 max_leaves=20).map(lambda doc: json.dumps({"version": 1, "users": doc}).encode()),
))
def test_a_hostile_credentials_file_is_a_clear_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "users.json"
    path.write_bytes(data)
    try:
        users = UsersFile.load(path)
    except UsersFileError as exc:
        assert str(path) in str(exc)
        return
    for user in users.users.values():  # whatever loaded is well-formed and checkable
        assert user.role in ("trader", "sequencer")
        assert users.check(user.name, "not the password") is None


def test_missing_or_malformed_users_file_stops_the_broker(tmp_path: Path) -> None:
    missing = run(program("fastbook-broker"), "--port", str(free_port()), "--data-dir", str(tmp_path / "d"),
                  "--users", str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("alice:plaintext\n")
    malformed = run(program("fastbook-broker"), "--port", str(free_port()), "--data-dir", str(tmp_path / "d"),
                    "--users", str(bad))
    assert malformed.returncode == 1 and "not valid JSON" in malformed.stderr


def test_password_hash_parameters_are_bounded() -> None:
    from fastbook.transport.users import hash_password, verify_password

    encoded = hash_password("pw")
    assert verify_password("pw", encoded) and not verify_password("pW", encoded)
    assert not verify_password("pw", encoded.replace("scrypt$16384$", "scrypt$1048576$"))  # 1 GiB: refused
    assert not verify_password("pw", encoded.replace("$8$1$", "$8$99$"))
    assert not verify_password("pw", "plain") and not verify_password(None, encoded)
    assert encoded != hash_password("pw")  # a fresh salt every time


def test_shipped_mosquitto_configs_limit_message_size() -> None:
    for name in ("mosquitto.conf", "mosquitto-secure.conf"):
        settings_ = dict(line.split(" ", 1) for line in (REPO / "edge" / name).read_text().splitlines()
                         if line and not line.startswith("#") and " " in line)
        assert int(settings_["message_size_limit"]) == MAX_SEQUENCER_MESSAGE, name
