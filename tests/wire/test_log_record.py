"""The binary log record and message (wire/log.py, docs/wire.md "The log"): round trips, the
layout byte by byte, the commands as Book.apply_batch takes them, and a decoder that refuses
every malformed message with ValueError (truncated, wrong magic or version, counts or lengths
that do not add up, names that are not ASCII, out-of-range fields), never with a crash."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbook.engine.types import COMMAND_DTYPE, MAX_PRICE, MAX_QTY, Op, OrderType, Side, Tif
from fastbook.wire.log import (
    LOG_FORMAT,
    LOG_RECORD_DTYPE,
    MESSAGE_HEAD,
    RUN_HEAD,
    LogEntry,
    LogRun,
    decode_log_message,
    encode_log_message,
)

NEW = LogEntry(
    7, 2**64 - 1, "alice", "o-1", Op.NEW, 3, 1, Side.BUY, OrderType.LIMIT, Tif.GTC, 0, 0, 10025, 1500
)
LATER = NEW._replace(
    seq=8, client_id=None, client_order_id=None, op=Op.CANCEL_ALL, side=0, order_type=0, tif=0, order_id=0,
    price=0, qty=0,
)  # fmt: skip


def message(*entries: LogEntry, head: int = 8, replay: bool = False) -> bytes:
    return encode_log_message("BTC-USD", head, LogRun.from_entries(entries), replay=replay)


def test_roundtrip_and_header() -> None:
    msg = decode_log_message(message(NEW, LATER, replay=True))
    assert (msg.market, msg.head, msg.replay, len(msg)) == ("BTC-USD", 8, True, 2)
    assert msg.entries == [NEW, LATER]
    assert msg.entry(1, {1: "alice"}).client_id == "alice"  # filled in from the owner number
    assert msg.seqs.tolist() == [7, 8] and msg.hashes.tolist() == [2**64 - 1, 2**64 - 1]
    heartbeat = decode_log_message(encode_log_message("BTC-USD", 12))
    assert (heartbeat.head, heartbeat.replay, heartbeat.entries) == (12, False, [])


def test_layout_byte_by_byte() -> None:
    """The bytes docs/wire.md specifies: header, run head, 56-byte records, names blob."""
    payload = message(NEW, LATER)
    assert payload[:4] == b"FBLG"
    assert struct.unpack_from("<HHqH", payload, 4) == (LOG_FORMAT, 0, 8, 7)
    at = MESSAGE_HEAD.size
    assert payload[at : at + 7] == b"BTC-USD"
    at += 7
    assert RUN_HEAD.unpack_from(payload, at) == (2, len("o-1alice"))
    at += RUN_HEAD.size
    record = payload[at : at + 56]
    assert struct.unpack("<qQ6BBBIIqqq", record) == (
        7,
        2**64 - 1,
        1,
        1,
        1,
        1,
        0,
        0,
        3,
        5,
        1,
        0,
        3,
        10025,
        1500,
    )
    assert payload[at + 112 :] == b"o-1alice"
    assert LOG_RECORD_DTYPE.itemsize == 56


def test_commands_are_the_records_command_rows() -> None:
    msg = decode_log_message(message(NEW, LATER))
    commands = msg.commands()
    assert commands.dtype == COMMAND_DTYPE and commands.flags.c_contiguous
    assert commands["_pad"].tolist() == [0, 0]  # (the name lengths do not leak into the engine row)
    assert commands.tolist() == [
        (1, 1, 1, 1, 0, 0, 0, 1, 0, 3, 10025, 1500),
        (4, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0),
    ]


def test_from_commands_equals_from_entries() -> None:
    rows = np.zeros(3, COMMAND_DTYPE)
    rows["op"], rows["side"], rows["type"], rows["tif"] = 1, 2, 1, 1
    rows["owner"], rows["order_id"], rows["price"], rows["qty"] = 4, [10, 11, 12], [5, 6, 7], [1, 2, 3]
    hashes = np.array([1, 2, 3], np.uint64)
    run = LogRun.from_commands(rows, 20, hashes, ["a", "bb", "c"], "zed")
    entries = [
        LogEntry(20 + i, i + 1, "zed" if i == 0 else None, coid, 1, 10 + i, 4, 2, 1, 1, 0, 0, 5 + i, 1 + i)
        for i, coid in enumerate(["a", "bb", "c"])
    ]
    assert run == LogRun.from_entries(entries)
    assert run.entries() == entries
    assert run.cut(1).entries() == entries[1:] and run.cut(1, 2).entries() == entries[1:2]


def bad_message(mutate: str, many: bool = False) -> bytes:
    """A message whose first record (or header) is damaged; `many`: 32 records (numpy checks them)."""
    more = [LATER._replace(seq=9 + i) for i in range(30)] if many else []
    payload = bytearray(message(NEW, LATER, *more))
    records_at = MESSAGE_HEAD.size + 7 + RUN_HEAD.size
    fields = {name: records_at + LOG_RECORD_DTYPE.fields[name][1] for name in LOG_RECORD_DTYPE.names}
    if mutate == "magic":
        payload[0:4] = b"FBLX"
    elif mutate == "version":
        payload[4] = 1  # format 1 (named records) is refused too
    elif mutate == "flags":
        payload[6] = 2
    elif mutate == "head":
        payload[8:16] = struct.pack("<q", -1)
    elif mutate == "market_len":
        payload[16:18] = struct.pack("<H", 2000)
    elif mutate == "count":
        payload[records_at - 8 : records_at - 4] = struct.pack("<I", 3)
    elif mutate == "names_len":
        payload[records_at - 4 : records_at] = struct.pack("<I", 7)
    elif mutate == "trailing":
        payload += b"x"
    elif mutate == "non_ascii":
        payload[-1] = 0xE9
    elif mutate == "space":
        payload[-1] = 0x20
    elif mutate == "client_id":
        payload[-2] = ord("/")
    elif mutate == "seq":
        payload[fields["seq"] : fields["seq"] + 8] = struct.pack("<q", 0)
    elif mutate == "reserved":
        payload[fields["reserved"]] = 1
    elif mutate == "no_coid":  # a new without client order id (its names then do not add up either)
        payload[fields["coid_len"]] = 0
    elif mutate == "coid_len":
        payload[fields["coid_len"]] = 65
    elif mutate == "price":
        payload[fields["price"] : fields["price"] + 8] = struct.pack("<q", MAX_PRICE + 1)
    elif mutate == "qty":
        payload[fields["qty"] : fields["qty"] + 8] = struct.pack("<q", MAX_QTY + 1)
    elif mutate == "order_id":
        payload[fields["order_id"] : fields["order_id"] + 8] = struct.pack("<q", -1)
    elif mutate != "none":
        payload[fields[mutate]] = 9  # an enum out of range
    return bytes(payload)


@pytest.mark.parametrize(
    "mutate",
    ["magic", "version", "flags", "head", "market_len", "count", "names_len", "trailing", "non_ascii",
     "space", "client_id", "seq", "reserved", "no_coid", "coid_len", "price", "qty", "order_id", "op", "side",
     "type", "tif", "stp", "post_only"],
)  # fmt: skip
@pytest.mark.parametrize("many", [False, True])
def test_bad_messages_raise_value_error(mutate: str, many: bool) -> None:
    decode_log_message(bad_message("none", many))  # (undamaged, it decodes)
    with pytest.raises(ValueError):
        decode_log_message(bad_message(mutate, many))


def test_truncated_messages_raise_value_error() -> None:
    payload = message(NEW, LATER)
    for end in range(len(payload)):
        with pytest.raises(ValueError):
            decode_log_message(payload[:end])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 400))
def test_arbitrary_bytes_never_crash_the_decoder(noise: bytes, at: int) -> None:
    """Random bytes, and a valid message with random bytes spliced in: a LogBatch whose entries
    all decode, or ValueError."""
    payload = message(NEW, LATER)
    for candidate in (noise, payload[:at] + noise + payload[at + len(noise) :]):
        try:
            msg = decode_log_message(candidate)
        except ValueError:
            continue
        for entry in msg.entries:
            assert entry.seq >= 1 and 1 <= entry.op <= 4
            assert entry.client_order_id is not None or entry.op == Op.CANCEL_ALL


@pytest.mark.parametrize(
    "mutate",
    ["none", "names_len", "non_ascii", "space", "client_id", "seq", "reserved", "no_coid", "coid_len",
     "price", "qty", "order_id", "op", "side", "type", "tif", "stp", "post_only"],
)  # fmt: skip
@pytest.mark.parametrize("anonymous", [False, True])
def test_short_runs_read_without_numpy_as_the_columnar_path_does(
    mutate: str, anonymous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of 1-2 records (a lone order's message) is read with struct (SCALAR_RUN): the same
    entries, or the same error, as the numpy path gives the same bytes: as a log message (format
    2, named=False: names may be missing), as a journal run (named=True), and as the anonymous
    form the public log carries (no names at all)."""
    import fastbook.wire.log as wire_log

    run_at = MESSAGE_HEAD.size + len("BTC-USD")

    def read(payload: bytes) -> tuple[object, object]:
        out: list[object] = []
        for named in (False, True):
            try:
                if named:  # the run as the journal reads it
                    out.append(LogRun.read(payload, run_at, named=True)[0].entries({1: "alice"}))
                else:
                    out.append(decode_log_message(payload).entries)
            except ValueError as exc:
                out.append(str(exc))
        return out[0], out[1]

    if anonymous:
        run = LogRun.from_entries([NEW, LATER]).anonymous()
        payload = encode_log_message("BTC-USD", 8, run)
        if mutate != "none":  # the same damage, where an anonymous record can carry it
            records_at = run_at + RUN_HEAD.size
            fields = {name: records_at + LOG_RECORD_DTYPE.fields[name][1] for name in LOG_RECORD_DTYPE.names}
            damaged = bytearray(payload)
            if mutate in ("seq", "order_id", "price", "qty"):
                damaged[fields[mutate] : fields[mutate] + 8] = struct.pack("<q", -1)
            elif mutate in ("names_len", "non_ascii", "space", "client_id"):
                damaged[run_at + 4 : run_at + 8] = struct.pack("<I", 1)  # one name byte it lacks
            elif mutate == "coid_len":
                damaged[fields["coid_len"]] = 65
            elif mutate == "no_coid":
                pass  # (it has none already)
            else:
                damaged[fields[mutate]] = 9
            payload = bytes(damaged)
    else:
        payload = bad_message(mutate)
    scalar = read(payload)
    monkeypatch.setattr(wire_log, "SCALAR_RUN", 0)
    assert read(payload) == scalar
    monkeypatch.setattr(wire_log, "SCALAR_RUN", 2)
    message_result, journal_result = scalar
    if mutate == "none" or (anonymous and mutate == "no_coid"):
        assert isinstance(message_result, list) and len(message_result) == 2
        if anonymous:  # names stripped: a message reads them as None, a journal refuses the new
            assert message_result == [NEW._replace(client_id=None, client_order_id=None), LATER]
            assert journal_result == "log record 7: only a cancel_all may lack a client order id"
        else:
            assert message_result == [NEW, LATER]
            assert journal_result == [NEW, LATER._replace(client_id="alice")]  # filled in by owner
    else:
        assert isinstance(journal_result, str) and isinstance(message_result, str)
    one = message(NEW)
    assert decode_log_message(one).run._rows is not None and decode_log_message(one).entries == [NEW]
    assert decode_log_message(message(NEW, LATER, LATER._replace(seq=9))).run._rows is None  # (3: numpy)


@pytest.mark.parametrize("entries", [[NEW], [LATER], [NEW, LATER], [LATER._replace(client_id="bob", seq=7)]])
def test_short_runs_built_with_struct_equal_the_numpy_build(
    entries: list[LogEntry], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`from_entries` of 1-2 entries (a lone order's batch) packs its records with struct, and its
    `anonymous()` repacks the tuples: the same bytes, records, entries and seqs as the numpy build
    (SCALAR_RUN 0) of the same entries; the records stay writable; a value out of its field's
    range fails as np.array fails."""
    import fastbook.wire.log as wire_log

    fast = LogRun.from_entries(entries)
    monkeypatch.setattr(wire_log, "SCALAR_RUN", 0)
    general = LogRun.from_entries(entries)
    assert fast._rows is not None and general._rows is None  # (each path was taken)
    for a, b in ((fast, general), (fast.anonymous(), general.anonymous())):
        assert a.to_bytes() == b.to_bytes()
        assert a.records.dtype == b.records.dtype and a.records.tobytes() == b.records.tobytes()
        assert a.entries({1: "alice"}) == b.entries({1: "alice"})
        assert a.seq_range() == (int(b.seqs[0]), int(b.seqs[-1]))
        assert a.offsets.tolist() == b.offsets.tolist()
        a.records["coid_len"] = 0  # writable, as np.array's
    bad = [NEW._replace(qty=2**63)]
    with pytest.raises(OverflowError):
        LogRun.from_entries(bad)
    monkeypatch.setattr(wire_log, "SCALAR_RUN", 2)
    with pytest.raises(OverflowError):
        LogRun.from_entries(bad)
