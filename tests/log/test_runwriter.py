"""The native run writer (log/_runwriter.pyx) against the Python reference: for every run of news a
sequencer executes in random flows, both write the same reports, trades and map changes.
Client order ids with characters JSON escapes; tick and lot sizes whose decimals overflow 64-bit
arithmetic (the native writer then formats them in Python). Both engines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from fastbook.engine.types import COMMAND_DTYPE, EVENT_DTYPE
from fastbook.log.runwriter import NewsRun, NewsRunInput, write_news_run_native, write_news_run_reference
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics
from tests.log.test_sequencer_runs import CLIENTS, random_order
from tests.support.orders import decoded_rows

pytestmark = pytest.mark.usefixtures("backend")


@pytest.mark.parametrize(
    "spec_text",
    [
        "BTC-USD",
        "ETH-USD:tick=0.05:lot=1",
        "BIG:tick=1000000000000000000:lot=0.000000000000000001",  # prices past 2^64: formatted in Python
        "HUGE:tick=100000000000000000.000000000000000001:lot=7",  # tick units past 2^64
    ],
)
def test_native_run_writer_equals_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec_text: str
) -> None:
    spec = MarketSpec.parse(spec_text)
    topics = Topics(spec.name)
    runs: list[int] = []

    def both(job: NewsRunInput) -> NewsRun:
        native = write_news_run_native(job)
        reference = write_news_run_reference(job)
        assert native == reference
        runs.append(len(native.accepted_ids))
        return native

    node = SequencerNode(SequencerConfig(spec, tmp_path / "seq", dedupe_window=5))
    node.write_news_run = both
    # Escaped ids into rows too (the native reader leaves them to decode_orders).
    node.read_orders = lambda payload: decoded_rows(payload, spec)
    rng = random.Random(spec_text)
    recent: dict[str, list[str]] = {c: [] for c in CLIENTS}
    for i in range(160):
        client = rng.choice(CLIENTS)
        orders = [random_order(rng, 20 * i + k, recent[client], spec) for k in range(rng.randint(1, 15))]
        for order in orders:
            if order.get("id", "").startswith("n") and rng.random() < 0.3:
                order["id"] += rng.choice(['"q', "\\b", "/s", "~!", "'"])
        recent[client] = ([o["id"] for o in orders if o["op"] == "new"] + recent[client])[:12]
        node.on_messages([(topics.orders(client), json.dumps(orders).encode())])
    assert sum(runs) > 600  # accepted news written by both
    node.close()


def test_native_run_writer_refuses_wrong_arrays() -> None:
    spec = MarketSpec.parse("BTC-USD")
    rows = np.zeros(2, dtype=COMMAND_DTYPE)
    events = np.zeros(0, dtype=EVENT_DTYPE)
    hashes = np.zeros(2, dtype=np.uint64)
    strided = np.zeros(4, dtype=COMMAND_DTYPE)[::2]
    with pytest.raises(ValueError):
        write_news_run_native(NewsRunInput(spec, "a", 0, strided, ["x", "y"], hashes, events, {}, {}, print))
    with pytest.raises(ValueError):
        write_news_run_native(NewsRunInput(spec, "a", 0, rows, ["x"], hashes, events, {}, {}, print))
    with pytest.raises(ValueError):
        wrong = np.zeros(1, dtype=COMMAND_DTYPE)
        write_news_run_native(NewsRunInput(spec, "a", 0, rows, ["x", "y"], hashes, wrong, {}, {}, print))
