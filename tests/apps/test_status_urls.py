"""`fastbook status` tries every URL it is given (issue 15: against a list whose first node was
down it failed instead of asking the next one)."""

from __future__ import annotations

from pathlib import Path

from fastbook.apps.status import read_status
from tests.support.brokers import free_port, start_mosquitto, start_sequencer, wait_for


def test_status_asks_the_next_url_when_one_does_not_answer(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    sequencer = start_sequencer(tmp_path, broker.url, tmp_path / "data", "BTC-USD")
    try:
        wait_for(lambda: read_status(broker.url, "BTC-USD", timeout=2).book_version is not None, 20,
                 "the sequencer's retained book")
        dead = f"mqtt://127.0.0.1:{free_port()}"
        status = read_status(f"{dead},{broker.url}", "BTC-USD", timeout=2)
        assert status.book_version == 0
    finally:
        sequencer.stop()
        broker.stop()
