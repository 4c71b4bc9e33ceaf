"""RunnerConfig and BatchPolicy: every value checked when the config is made."""

from __future__ import annotations

import dataclasses

import pytest

from fastbook.transport.config import BatchPolicy, BrokerAddress, RunnerConfig


def test_config_parses_the_urls_and_names_itself() -> None:
    config = RunnerConfig(["mqtt://a:1", "mqtt://b:2,mqtt://c"], "client-1")
    assert config.addresses == (BrokerAddress("a", 1), BrokerAddress("b", 2), BrokerAddress("c", 1883))
    assert config.brokers == ("mqtt://a:1", "mqtt://b:2,mqtt://c")  # (a tuple: the config stays frozen)
    assert config.name == "client-1"
    assert RunnerConfig("mqtt://a", "client-1", name="edge-alice").name == "edge-alice"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.client_id = "other"  # type: ignore[misc]


def test_the_password_stays_out_of_the_repr() -> None:
    config = RunnerConfig("mqtt://a", "alice", username="alice", password="s3cret")
    assert "s3cret" not in repr(config) and config.password == "s3cret"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"brokers": "localhost:1883"}, "scheme"),
        ({"brokers": " , "}, "no broker URL"),
        ({"client_id": ""}, "client id"),
        ({"reconnect_min": 0.0}, "reconnect_min"),
        ({"reconnect_min": 2.0, "reconnect_max": 1.0}, "reconnect_min"),
        ({"keepalive": -1}, "keepalive"),
        ({"max_inflight": 0}, "max_inflight"),
        ({"password": "p"}, "user name"),
    ],
)
def test_config_rejects(fields: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"brokers": "mqtt://a", "client_id": "x", **fields}
    with pytest.raises(ValueError, match=message):
        RunnerConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"window": -0.1}, "batch window"),
        ({"window": 1.5}, "batch window"),
        ({"max_messages": 0}, "max_messages"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"tick_interval": 0.0}, "tick_interval"),
    ],
)
def test_batch_policy_rejects(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchPolicy(**fields)  # type: ignore[arg-type]
