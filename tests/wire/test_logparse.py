"""The native log reader (`read_log_batch`, src/fastbook/wire/_logparse.pyx) against the Python decoder.

The contract: on a log message exactly as the sequencer writes it, it returns the same entries as
`decode_log_message`; on anything else it returns None (the caller then uses the Python decoder),
and it never accepts a message the Python decoder refuses or reads one differently.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbook.engine.types import COMMAND_DTYPE, MAX_ORDER_ID, MAX_OWNER, MAX_PRICE, MAX_QTY
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.log import (
    LogBatch,
    LogEntry,
    decode_log_message,
    encode_entry,
    encode_log_message,
    read_log_batch,
)
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))  # every character a client order id may hold
CLIENT_CHARS = "ABCxyz019._-"


@st.composite
def log_entries(draw: st.DrawFn, seq: int) -> LogEntry:
    op = draw(st.integers(1, 4))
    coid = draw(st.text(PRINTABLE, min_size=1, max_size=64))
    if op == 4 and draw(st.booleans()):
        coid = None
    big = st.integers(0, 3) | st.sampled_from([MAX_ORDER_ID, 2**32, 2**53 - 1, 10**18])
    return LogEntry(
        seq,
        draw(st.integers(0, 2**64 - 1)),
        # a few short names often (the reader reuses the last entry's str for the same bytes)
        draw(st.sampled_from(["ab", "ba", "abc", "a"]) | st.text(CLIENT_CHARS, min_size=1, max_size=64)),
        coid,
        op,
        draw(big.filter(lambda v: v <= MAX_ORDER_ID)),
        draw(st.integers(0, 5) | st.just(MAX_OWNER)),
        draw(st.integers(0, 2)),
        draw(st.integers(0, 2)),
        draw(st.integers(0, 3)),
        draw(st.integers(0, 3)),
        draw(st.integers(0, 1)),
        draw(st.integers(0, 20_000) | st.just(MAX_PRICE)),
        draw(st.integers(0, 20_000) | st.just(MAX_QTY)),
    )


@st.composite
def log_messages(draw: st.DrawFn) -> tuple[bytes, int, bool, list[LogEntry]]:
    first = draw(st.integers(1, 2**63 - 50) | st.integers(1, 1000))
    count = draw(st.integers(0, 12))
    entries = [draw(log_entries(first + i)) for i in range(count)]
    head = draw(st.integers(0, 2**63 - 1))
    replay = draw(st.booleans())
    payload = encode_log_message("BTC-USD", head, [encode_entry(e) for e in entries], replay)
    return payload, head, replay, entries


def same_as_python_decoder(payload: bytes) -> LogBatch | None:
    """read_log_batch(payload); if it read the message, the Python decoder reads the same."""
    batch = read_log_batch(payload)
    if batch is not None:
        message = decode_log_message(payload)  # must not raise: the fast path never accepts more
        assert (batch.market, batch.head, batch.replay) == (message.market, message.head, message.replay)
        assert batch.entries() == message.entries
        assert batch.commands.dtype == COMMAND_DTYPE
    return batch


@FUZZ
@given(log_messages())
def test_reads_every_message_the_sequencer_can_write(case: tuple[bytes, int, bool, list[LogEntry]]) -> None:
    payload, head, replay, entries = case
    batch = same_as_python_decoder(payload)
    assert batch is not None
    assert (batch.market, batch.head, batch.replay, batch.entries()) == ("BTC-USD", head, replay, entries)
    assert batch.seqs.tolist() == [e.seq for e in entries]
    assert batch.consecutive()
    # The same from a bytearray and a memoryview (the runner may hand either)
    for view in (bytearray(payload), memoryview(payload)):
        again = read_log_batch(view)  # type: ignore[arg-type]
        assert again is not None and again.entries() == entries


EDITS = st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 2))  # where, byte, kind


@FUZZ
@given(log_messages(), st.lists(EDITS, min_size=1, max_size=4))
def test_a_damaged_message_is_read_as_the_python_decoder_reads_it_or_not_at_all(
    case: tuple[bytes, int, bool, list[LogEntry]], edits: list[tuple[int, int, int]]
) -> None:
    data = bytearray(case[0])
    for where, byte, kind in edits:
        at = where % (len(data) + 1)
        if kind == 0 and at < len(data):
            data[at] = byte  # replace
        elif kind == 1:
            data.insert(at, byte)
        elif at < len(data):
            del data[at]
    payload = bytes(data)
    try:
        expected = decode_log_message(payload)
    except ValueError:
        assert read_log_batch(payload) is None
        return
    batch = same_as_python_decoder(payload)
    if batch is not None:
        assert batch.entries() == expected.entries


ENTRY = '[7,"00000000000000ff","bob","o-1",1,5,2,1,1,1,0,0,10025,1500]'


def message(entries: str, head: str = "9", replay: str = "false", market: str = '"BTC-USD"') -> bytes:
    return f'{{"v":1,"market":{market},"head":{head},"replay":{replay},"entries":[{entries}]}}'.encode()


@pytest.mark.parametrize(
    "payload",
    [
        message(ENTRY.replace(",", ", ")),  # whitespace: valid JSON, not the canonical form
        b" " + message(ENTRY),
        message(ENTRY) + b"\n",
        message(ENTRY.replace('"o-1"', '"o\\/1"')),  # an escape the sequencer never writes
        message(ENTRY.replace('"o-1"', '"o\\u002d1"')),
        message(ENTRY.replace("[7,", "[07,")),  # leading zero: not JSON
        message(ENTRY.replace("[7,", "[0,")),  # seq 0
        message(ENTRY.replace(",1,5,2,", ",5,5,2,")),  # op 5
        message(ENTRY.replace(",1,5,2,", ",1,5,4294967296,")),  # owner 2^32
        message(ENTRY.replace(",10025,", f",{MAX_PRICE + 1},")),
        message(ENTRY.replace(",1500]", f",{MAX_QTY + 1}]")),
        message(ENTRY.replace(",1500]", ",1500.0]")),
        message(ENTRY.replace(",1500]", ",-1500]")),
        message(ENTRY.replace(",1500]", ",99999999999999999999]")),
        message(ENTRY.replace('"o-1",1,', "null,1,")),  # only a cancel_all may lack the id
        message(ENTRY.replace('"o-1"', '"' + "x" * 65 + '"')),
        message(ENTRY.replace('"o-1"', '""')),
        message(ENTRY.replace('"o-1"', '"o 1"')),
        message(ENTRY.replace('"bob"', '"b/b"')),
        message(ENTRY.replace("00000000000000ff", "00000000000000fg")),
        message(ENTRY.replace("00000000000000ff", "0000000000000ff")),
        message(ENTRY.replace(",0,0,10025", ",0,2,10025")),  # post_only 2
        message(ENTRY + ","),
        message(ENTRY[:-1]),
        message(ENTRY, head="-1"),
        message(ENTRY, replay="0"),
        message(ENTRY, market='"BTC USD"'),
        message(ENTRY).replace(b'"v":1', b'"v":2'),
        b"",
        b"[]",
    ],
)
def test_anything_but_the_canonical_form_is_left_to_the_python_decoder(payload: bytes) -> None:
    assert same_as_python_decoder(payload) is None


def test_the_hash_may_be_upper_case_and_escapes_are_read() -> None:
    entry = ENTRY.replace("00000000000000ff", "00000000000000FF").replace('"o-1"', '"a\\"b\\\\c"')
    batch = same_as_python_decoder(message(entry))
    assert batch is not None
    assert batch.hashes.tolist() == [255] and batch.client_order_ids == ['a"b\\c']


def test_a_real_sequencer_log_is_read_natively(tmp_path: Path) -> None:
    topics = Topics("BTC-USD")
    node = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    rng = random.Random(3)
    orders = [
        {"op": "new", "id": f"o{i}", "side": rng.choice(["buy", "sell"]), "price": f"{rng.randint(95, 105)}",
         "qty": "1"}
        for i in range(300)
    ]  # fmt: skip
    out = node.on_messages([(topics.orders("al"), json.dumps(orders).encode())])
    logs = [o.payload for o in out if o.topic == topics.log]
    assert logs
    for payload in logs:
        batch = same_as_python_decoder(payload)
        assert batch is not None and len(batch) and batch.consecutive()
    assert np.concatenate([read_log_batch(p).seqs for p in logs]).tolist() == list(range(1, node.version + 1))  # type: ignore[union-attr]


def test_an_entry_from_the_same_client_as_the_last_shares_its_str() -> None:
    names = ["ab", "ab", "ba", "ab", "abc", "abc", "ab", "ab"]  # same length, prefixes, repeats
    entries = [LogEntry(i + 1, 7, n, f"o{i}", 1, i + 1, 1, 1, 1, 1, 1, 0, 9, 1) for i, n in enumerate(names)]
    batch = same_as_python_decoder(encode_log_message("BTC-USD", 8, [encode_entry(e) for e in entries]))
    assert batch is not None and batch.client_ids == names
    same = [batch.client_ids[i] is batch.client_ids[i - 1] for i in range(1, len(names))]
    assert same == [names[i] == names[i - 1] for i in range(1, len(names))]
