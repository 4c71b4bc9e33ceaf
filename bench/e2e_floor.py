"""The floor of the end-to-end path: the same paho client doing the same hops with no fastbook logic.

A publisher (in the bench process) sends one small message at a paced rate to `floor/in`; a relay
process receives it, writes it to a file and fdatasyncs (one per message, as a lone order costs the
sequencer), then republishes it on `floor/log`; three subscriber processes record when each message
arrives. Every client is single-threaded (a selector loop over paho's socket, callbacks inline),
TCP_NODELAY, QoS1, through the same broker as the fastbook run. Latency of a message = the last
subscriber's arrival - the publish; CPU per message of the relay and of a bare QoS1 subscriber come
from /proc, as for the fastbook processes.

    python bench/e2e_floor.py relay PORT QOS JOURNAL       # (started by the bench)
    python bench/e2e_floor.py subscriber PORT NAME OUT COUNT
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

IN_TOPIC = "floor/in"
LOG_TOPIC = "floor/log"
STAMP = struct.Struct("<I")  # the message index, first in every payload


def single_threaded_client(client_id: str, port: int) -> tuple[paho.Client, selectors.BaseSelector]:
    """A paho client driven by a selector on the caller's thread (no network thread)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(1000)
    selector = selectors.DefaultSelector()

    def opened(_c: Any, _u: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        selector.register(sock, selectors.EVENT_READ)

    client.on_socket_open = opened
    client.on_socket_close = lambda _c, _u, sock: selector.unregister(sock)
    client.on_socket_register_write = lambda *_: None  # publish() queues; the loop writes
    client.on_socket_unregister_write = lambda *_: None
    client.connect("127.0.0.1", port, keepalive=30)
    return client, selector


def pump(client: paho.Client, selector: selectors.BaseSelector, timeout: float) -> None:
    """One loop iteration: write what is queued, wait up to `timeout` for the socket, read everything
    readable (callbacks inline), write what they queued."""
    if client.want_write():
        client.loop_write()
    for _key, _events in selector.select(max(0.0, timeout)):
        while client.socket() is not None:
            rc = client._packet_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                if rc != MQTTErrorCode.MQTT_ERR_AGAIN:
                    client._loop_rc_handle(rc)
                break
    if client.want_write():
        client.loop_write()


def run_loop(client: paho.Client, selector: selectors.BaseSelector, done: Callable[[], bool],
             until: float | None = None) -> None:
    """Iterations until done() (select no later than `until`, a monotonic time)."""
    next_misc = time.monotonic() + 1.0
    while not done():
        now = time.monotonic()
        pump(client, selector, min(0.2, (until - now) if until is not None else 0.2))
        if now >= next_misc:
            client.loop_misc()
            next_misc = now + 1.0


def relay_main(port: int, qos: int, journal: str) -> int:
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    client, selector = single_threaded_client("floor-relay", port)

    def on_message(c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        os.write(fd, msg.payload)
        os.fdatasync(fd)
        c.publish(LOG_TOPIC, msg.payload, qos=qos)

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(IN_TOPIC, qos=1)
    client.on_subscribe = lambda *_: print("READY", flush=True)
    run_loop(client, selector, lambda: stop[0])
    return 0


def subscriber_main(port: int, name: str, out: str, count: int) -> int:
    arrivals: list[float] = [0.0] * count
    seen = [0]
    client, selector = single_threaded_client(f"floor-{name}", port)

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        (index,) = STAMP.unpack_from(msg.payload)
        if index < count and not arrivals[index]:
            arrivals[index] = time.monotonic()
            seen[0] += 1

    cpu_at_ready = [0.0]

    def subscribed(*_: Any) -> None:
        times = os.times()
        cpu_at_ready[0] = times.user + times.system
        print("READY", flush=True)

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(LOG_TOPIC, qos=1)
    client.on_subscribe = subscribed
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    run_loop(client, selector, lambda: seen[0] >= count or stop[0])
    pump(client, selector, 0.05)  # the last PUBACK out
    times = os.times()
    cpu = times.user + times.system - cpu_at_ready[0]
    Path(out).write_text(json.dumps({"arrivals": arrivals, "cpu_seconds": cpu}))
    return 0


def run_floor(port: int, workdir: Path, rate: float, count: int, payload: bytes, qos: int,
              cpu_seconds: Callable[[int], float | None], broker_pid: int | None = None) -> dict[str, Any]:
    """One paced floor run through the broker on `port`: latencies (ms, sorted) and CPU per message
    (with `broker_pid`, the broker's too: what relaying the floor's messages costs the broker)."""
    me = [sys.executable, __file__]
    procs: list[subprocess.Popen[str]] = []
    try:
        relay = subprocess.Popen([*me, "relay", str(port), str(qos), str(workdir / "floor.journal")],
                                 stdout=subprocess.PIPE, text=True)
        procs.append(relay)
        subs = []
        for i in range(3):
            out = workdir / f"floor-sub-{i}.json"
            sub = subprocess.Popen([*me, "subscriber", str(port), f"s{i}", str(out), str(count)],
                                   stdout=subprocess.PIPE, text=True)
            procs.append(sub)
            subs.append((sub, out))
        for proc in procs:
            assert proc.stdout is not None
            if not proc.stdout.readline().startswith("READY"):
                raise RuntimeError("a floor process did not subscribe")
        publisher, selector = single_threaded_client("floor-publisher", port)
        connected = [False]
        publisher.on_connect = lambda *_: connected.__setitem__(0, True)
        deadline = time.monotonic() + 10
        run_loop(publisher, selector, lambda: connected[0] or time.monotonic() > deadline)
        relay_before = cpu_seconds(relay.pid)
        broker_before = cpu_seconds(broker_pid) if broker_pid is not None else None
        sent_at = [0.0] * count
        t0 = time.monotonic()
        for k in range(count):
            # The publisher's own loop between messages: acks read, the next message written at once.
            due = t0 + k / rate
            run_loop(publisher, selector, lambda due=due: time.monotonic() >= due, until=due)
            sent_at[k] = time.monotonic()
            publisher.publish(IN_TOPIC, STAMP.pack(k) + payload, qos=1)
            publisher.loop_write()
        for sub, _out in subs:
            finish = time.monotonic() + 60
            while sub.poll() is None and time.monotonic() < finish:
                pump(publisher, selector, 0.02)  # keep acking while they finish
        elapsed = time.monotonic() - t0
        relay_after = cpu_seconds(relay.pid)
        broker_after = cpu_seconds(broker_pid) if broker_pid is not None else None
        publisher.disconnect()
        results = [json.loads(out.read_text()) for _sub, out in subs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
    arrivals = [r["arrivals"] for r in results]
    latencies = sorted(1000 * (max(a[k] for a in arrivals) - sent_at[k]) for k in range(count))
    relay_cpu = None
    if relay_before is not None and relay_after is not None:
        relay_cpu = round(1e6 * (relay_after - relay_before) / count, 1)
    subscriber_cpu = [1e6 * r["cpu_seconds"] / count for r in results]
    cpu: dict[str, float | None] = {"relay": relay_cpu,
                                    "bare subscriber (mean of 3)": round(sum(subscriber_cpu) / 3, 1)}
    if broker_before is not None and broker_after is not None:
        cpu["broker"] = round(1e6 * (broker_after - broker_before) / count, 1)
    return {
        "messages": count,
        "paced_messages_per_second": rate,
        "log_qos": qos,
        "seconds": round(elapsed, 3),
        "latency_p50_ms": round(latencies[len(latencies) // 2], 3),
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99)], 3),
        "cpu_us_per_message": cpu,
        "_latencies_ms": latencies,
    }


if __name__ == "__main__":
    if sys.argv[1] == "relay":
        sys.exit(relay_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
    sys.exit(subscriber_main(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])))
