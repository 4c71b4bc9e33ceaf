"""Issue 15, D6: failed logins back off per source without a password check, and repeated log
lines become one line per key per interval with a count."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fastbook.transport import users as users_mod
from fastbook.transport.broker import EmbeddedBroker, free_port
from fastbook.transport.throttle import LoginBackoff, LogThrottle
from tests.support.brokers import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_throttle_says_one_line_per_key_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttle = LogThrottle(logging.getLogger("t"), interval=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t"):
        logged = [throttle.log(logging.WARNING, "1.2.3.4", "refused %s", "x") for _ in range(50)]
        throttle.log(logging.WARNING, "5.6.7.8", "refused %s", "y")  # another key: its own line
        clock.now += 10.5
        throttle.log(logging.WARNING, "1.2.3.4", "refused %s", "x")
    assert logged.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "refused x", "refused y", "refused x (and 49 more like it in the last 10 s)"]


def test_log_throttle_forgets_the_oldest_keys() -> None:
    throttle = LogThrottle(logging.getLogger("t"), max_keys=3, clock=Clock())
    for key in range(10):
        throttle.log(logging.DEBUG, key, "m")
    assert throttle.log(logging.DEBUG, 9, "m") is False  # recent: still throttled
    assert throttle.log(logging.DEBUG, 0, "m") is True  # forgotten: logged again


def test_login_backoff_doubles_then_clears_on_success() -> None:
    clock = Clock()
    backoff = LoginBackoff(free_failures=3, base=1.0, ceiling=8.0, clock=clock)
    for _ in range(2):
        backoff.failed("a")
        assert backoff.blocked("a") == 0.0
    backoff.failed("a")  # the third in a row: 1 s
    assert backoff.blocked("a") == pytest.approx(1.0)
    assert backoff.blocked("b") == 0.0  # per source
    clock.now += 1.0
    assert backoff.blocked("a") == 0.0
    backoff.failed("a")
    assert backoff.blocked("a") == pytest.approx(2.0)
    for _ in range(10):
        backoff.failed("a")
    assert backoff.blocked("a") == pytest.approx(8.0)  # the ceiling
    backoff.succeeded("a")
    assert backoff.blocked("a") == 0.0


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="broker-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def connack(port: int, user: str, password: str) -> int:
    result: list[int] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=MQTTProtocolVersion.MQTTv311)
    client.username_pw_set(user, password)

    def on_connect(c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        result.append(int(reason.value))  # type: ignore[attr-defined]
        c.disconnect()  # no automatic retry (paho would wait a second before it)

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_for(lambda: result, 10, "CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def test_a_wrong_password_flood_costs_no_scrypt_once_in_backoff(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    users = users_mod.UsersFile(tmp_path / "users.json")
    users.set("alice", "alice-pw")
    users.save()
    checks: list[int] = []
    verify = users_mod.verify_password

    def counted(password: str | bytes | None, encoded: str) -> bool:
        checks.append(1)
        return verify(password, encoded)

    monkeypatch.setattr(users_mod, "verify_password", counted)
    # A frozen clock for the broker's backoff: on a loaded machine the 40 tries took over a
    # second, the 1 s backoff expired before the final check and the right password got in (CI).
    import fastbook.transport.broker as broker_mod
    from fastbook.transport.throttle import LoginBackoff

    monkeypatch.setattr(broker_mod, "LoginBackoff", functools.partial(LoginBackoff, clock=lambda: 1000.0))
    broker = EmbeddedBroker("127.0.0.1", free_port(), users_file=users.path)
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(10)
    try:
        with caplog.at_level(logging.WARNING, logger="fastbook.transport.broker"):
            codes = [connack(broker.port, "alice", "wrong") for _ in range(40)]
        assert all(code != 0 for code in codes)
        # 10 free failures, then refused unchecked (the clock is frozen: the backoff never expires)
        assert len(checks) == 10, len(checks)
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) <= 5, [r.getMessage() for r in refusals]
        # the source is in backoff: even the right password is refused without a check
        before = len(checks)
        assert connack(broker.port, "alice", "alice-pw") != 0 and len(checks) == before
    finally:
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(10)
