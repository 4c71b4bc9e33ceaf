"""Edges can ask the broker for a persistent MQTT session (what failover on a NATS cluster needs)."""

from __future__ import annotations

import io

import pytest

from fastbook.apps.cli.edge import EdgeProgram, parser
from fastbook.edge.client import Edge


@pytest.mark.parametrize(("flags", "clean"), [([], True), (["--persistent-session"], False)])
def test_fastbook_edge_persistent_session_flag(flags: list[str], clean: bool) -> None:
    args = parser().parse_args(["--client-id", "alice", "--broker", "mqtt://127.0.0.1:1", *flags])
    program = EdgeProgram(args, io.StringIO())  # built, never started: nothing connects
    assert program.runner.clean_session is clean


@pytest.mark.parametrize("clean", [True, False])
def test_python_api_clean_session_keyword(clean: bool) -> None:
    edge = Edge("alice", "mqtt://127.0.0.1:1", clean_session=clean)
    assert edge.runner.clean_session is clean
    assert Edge("bob", "mqtt://127.0.0.1:1").runner.clean_session is True
