"""The log (sequencer -> replicas) and the replay protocol.

A log entry is one fixed-width little-endian record (`LOG_RECORD_DTYPE`, 56 bytes, readable with
`np.frombuffer`) plus its names (the client order id, and the client id on the entry that
introduces a new owner number) in a names blob after the records. A *run* is `u32 count | u32
names length | count records | names`: the journal stores runs (one CRC frame each), a log
message is a small header + one run, and a replay answer is journal runs cut to the range and
re-framed. docs/wire.md ("The log") has the layout byte by byte.

Decoding raises ValueError: bad data here means a bug or corruption, not a user mistake.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from fastbook.engine.types import COMMAND_DTYPE, MAX_ORDER_ID, MAX_PRICE, MAX_QTY, Op
from fastbook.wire.fields import CLIENT_ID_RE, OP_TEXT, SIDE_TEXT, STP_TEXT, TIF_TEXT, TYPE_TEXT, dumps
from fastbook.wire.orders import _BadOrder, parse_json

LOG_MAGIC = b"FBLG"
# The message/record format version (docs/wire.md); a reader refuses any other. Format 2: the
# names are private (the public log carries none; a replay answer carries its requester's own).
LOG_FORMAT = 2
FLAG_REPLAY = 1
MAX_NAME = 64  # client ids and client order ids are 1-64 ASCII characters

# One sequenced engine command. Bytes 16..56 are COMMAND_DTYPE's layout (engine/types.py), with
# its padding carrying the two name lengths: the commands for Book.apply_batch are one copy.
LOG_RECORD_DTYPE = np.dtype(
    [
        ("seq", "<i8"),
        ("hash", "<u8"),  # engine state hash after applying the entry
        ("op", "u1"),
        ("side", "u1"),
        ("type", "u1"),
        ("tif", "u1"),
        ("stp", "u1"),
        ("post_only", "u1"),
        ("coid_len", "u1"),  # client order id length in the names blob (0: none, cancel_all only)
        ("client_len", "u1"),  # client id length: > 0 only on an entry introducing its owner number
        ("owner", "<u4"),
        ("reserved", "<u4"),  # 0 (room for flags)
        ("order_id", "<i8"),
        ("price", "<i8"),
        ("qty", "<i8"),
    ]
)
assert LOG_RECORD_DTYPE.itemsize == 56
_COMMAND_AT = 16  # offset of the command row inside a record
assert LOG_RECORD_DTYPE.itemsize - _COMMAND_AT == COMMAND_DTYPE.itemsize

RUN_HEAD = struct.Struct("<II")  # count, names length
MESSAGE_HEAD = struct.Struct("<4sHHqH")  # magic, format, flags, head, market length
_RECORD = LOG_RECORD_DTYPE.itemsize
# One record as a tuple, for runs read without numpy (SCALAR_RUN): the fields of LOG_RECORD_DTYPE.
_RECORD_STRUCT = struct.Struct("<qQ8BIIqqq")
assert _RECORD_STRUCT.size == _RECORD
# Runs of at most this many records (a lone order's log message) are read and checked with struct
# and plain ints: the dozen numpy calls of the columnar path cost a lone record ~10x its own work.
SCALAR_RUN = 2
_PRINTABLE = re.compile(rb"[\x21-\x7e]*")  # names: printable ASCII, no spaces (fullmatch)

# Field ranges a decoder checks (inclusive); owner is a u4 and hash a u8: any value is valid.
_RANGES = {
    "op": (1, 4),
    "side": (0, 2),
    "type": (0, 2),
    "tif": (0, 3),
    "stp": (0, 3),
    "post_only": (0, 1),
    "coid_len": (0, MAX_NAME),
    "client_len": (0, MAX_NAME),
    "reserved": (0, 0),
    "order_id": (0, MAX_ORDER_ID),
    "price": (0, MAX_PRICE),
    "qty": (0, MAX_QTY),
}
_CANCEL_ALL = int(Op.CANCEL_ALL)


class LogEntry(NamedTuple):
    """One sequenced engine command, decoded (the Python view of one record and its names).
    `client_id` is None where the record does not carry it (its owner number was introduced
    earlier: the replica's maps know the client); `client_order_id` is None only for a cancel_all
    without id."""

    seq: int
    hash: int
    client_id: str | None
    client_order_id: str | None
    op: int
    order_id: int
    owner: int
    side: int
    order_type: int
    tif: int
    stp: int
    post_only: int
    price: int
    qty: int


def _int_in(value: Any, low: int, high: int, name: str) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {repr(value)[:40]}")
    return value


_SMALL = 16  # runs up to this many records are checked in Python (numpy costs microseconds a call)
# Highest value of the u8 fields at bytes 16..23 (op, side, type, tif, stp, post_only, coid_len,
# client_len): one comparison checks them all.
_BYTE_MAX = np.array([4, 2, 2, 3, 3, 1, MAX_NAME, MAX_NAME], np.uint8)


def _pack_rows(rows: Sequence[tuple[int, ...]]) -> np.ndarray | None:
    """LOG_RECORD_DTYPE records of rows (tuples of its fields), writable, with one numpy call;
    None if a value does not fit its field (then np.array raises what it always did)."""
    pack = _RECORD_STRUCT.pack
    try:
        data = bytearray(b"".join([pack(*row) for row in rows]))
    except struct.error:
        return None
    return np.frombuffer(data, LOG_RECORD_DTYPE)


def _row_valid(row: tuple[int, ...], named: bool = True) -> bool:
    """Whether one record (its fields as a tuple, in LOG_RECORD_DTYPE's order) is valid; `named`
    as for _rows_valid."""
    seq, _hash, op, side, otype, tif, stp, post_only, coid_len, client_len = row[:10]
    _owner, reserved, order_id, price, qty = row[10:]
    return (
        seq >= 1 and 1 <= op <= 4 and side <= 2 and otype <= 2 and tif <= 3 and stp <= 3
        and post_only <= 1 and coid_len <= MAX_NAME and client_len <= MAX_NAME and reserved == 0
        and 0 <= order_id and 0 <= price <= MAX_PRICE and 0 <= qty <= MAX_QTY
        and bool(coid_len or op == _CANCEL_ALL or not named)
    )  # fmt: skip


def _rows_valid(records: np.ndarray, named: bool) -> bool:
    """Whether every record is valid, with few numpy calls (or none for a short run); the
    field-by-field checks of _check_records name the problem if not. `named`: every record but a
    cancel_all must carry its client order id (a journal run; a log message's need not)."""
    n = len(records)
    if n <= _SMALL:
        return all(_row_valid(row, named) for row in records.tolist())
    raw = np.ascontiguousarray(records).view(np.uint8).reshape(n, _RECORD)
    small = raw[:, 16:24]
    words = raw.view("<i8")  # 7 per record: seq, hash, (bytes), (owner, reserved), order_id, price, qty
    return not (
        (small > _BYTE_MAX).any()
        or (small[:, 0] == 0).any()
        or (named and ((small[:, 6] == 0) & (small[:, 0] != _CANCEL_ALL)).any())
        or words[:, 0].min() < 1
        or raw[:, 28:32].any()
        or words[:, 4].min() < 0
        or not 0 <= words[:, 5].min() <= words[:, 5].max() <= MAX_PRICE
        or not 0 <= words[:, 6].min() <= words[:, 6].max() <= MAX_QTY
    )


def _check_records(records: np.ndarray, names_len: int, named: bool = True) -> np.ndarray:
    """The names offsets (n + 1, int64) of valid records; ValueError naming the first problem."""
    n = len(records)
    if n and not _rows_valid(records, named):
        seqs = records["seq"]
        if int(seqs.min()) < 1:
            raise ValueError(f"log record seq {int(seqs.min())} is not >= 1")
        for name, (low, high) in _RANGES.items():
            column = records[name]
            if int(column.min()) < low or int(column.max()) > high:
                bad = int(np.flatnonzero((column < low) | (column > high))[0])
                raise ValueError(
                    f"log record {int(seqs[bad])}: {name} {int(column[bad])} is not in {low}..{high}"
                )
        no_id = records["coid_len"] == 0
        if named and no_id.any() and (records["op"][no_id] != _CANCEL_ALL).any():
            bad = int(np.flatnonzero(no_id & (records["op"] != _CANCEL_ALL))[0])
            raise ValueError(f"log record {int(seqs[bad])}: only a cancel_all may lack a client order id")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(records["coid_len"].astype(np.int64) + records["client_len"], out=offsets[1:])
    if int(offsets[-1]) != names_len:
        raise ValueError(f"log records name {int(offsets[-1])} bytes of names, the run holds {names_len}")
    return offsets


@dataclass(slots=True, eq=False)
class LogRun:
    """Consecutive log records and their names blob: what the journal stores per frame and a log
    message carries. `offsets[i]` is where entry i's names start (its client order id, then its
    client id if it has one); `offsets[n]` is the blob's length."""

    records: np.ndarray  # LOG_RECORD_DTYPE
    names: bytes
    _offsets: np.ndarray | None = None  # int64, len(records) + 1; computed when first needed
    # The records as tuples of ints, when read by the scalar path (SCALAR_RUN): entries() reads
    # them without numpy.
    _rows: list[tuple[int, ...]] | None = None

    @property
    def offsets(self) -> np.ndarray:
        if self._offsets is None:
            offsets = np.zeros(len(self.records) + 1, dtype=np.int64)
            np.cumsum(self.records["coid_len"].astype(np.int64) + self.records["client_len"], out=offsets[1:])
            self._offsets = offsets
        return self._offsets

    def __len__(self) -> int:
        return len(self.records)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogRun) and self.to_bytes() == other.to_bytes()

    @property
    def seqs(self) -> np.ndarray:
        return self.records["seq"]

    def seq_range(self) -> tuple[int, int]:
        """(first seq, last seq) of a run that is not empty (of a short run: without numpy)."""
        rows = self._rows
        if rows is not None:
            return rows[0][0], rows[-1][0]
        seqs = self.records["seq"]
        return int(seqs[0]), int(seqs[-1])

    @classmethod
    def empty(cls) -> LogRun:
        return cls(np.empty(0, LOG_RECORD_DTYPE), b"", np.zeros(1, np.int64))

    @classmethod
    def build(cls, records: np.ndarray, names: bytes) -> LogRun:
        """A run of records written here (the sequencer's): lengths are trusted, not re-checked."""
        return cls(records, names)

    @classmethod
    def from_entries(cls, entries: Iterable[LogEntry]) -> LogRun:
        """Records of LogEntry tuples (the per-command path, migration, tests)."""
        rows: list[tuple[int, ...]] = []
        names = []
        for e in entries:
            coid = "" if e.client_order_id is None else e.client_order_id
            client = "" if e.client_id is None else e.client_id
            names.append(coid)
            names.append(client)
            rows.append(
                (e.seq, e.hash, e.op, e.side, e.order_type, e.tif, e.stp, e.post_only, len(coid), len(client),
                 e.owner, 0, e.order_id, e.price, e.qty)
            )  # fmt: skip
        try:
            blob = "".join(names).encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("log entry names must be ASCII") from None
        if 0 < len(rows) <= SCALAR_RUN:
            packed = _pack_rows(rows)  # (a lone order's record: struct, not np.array of tuples)
            if packed is not None:
                return cls(packed, blob, None, rows)
        return cls.build(np.array(rows, dtype=LOG_RECORD_DTYPE), blob)

    @classmethod
    def from_commands(
        cls,
        rows: np.ndarray,
        first_seq: int,
        hashes: np.ndarray,
        client_order_ids: list[str],
        client: str | None = None,
    ) -> LogRun:
        """Records of consecutive commands (COMMAND_DTYPE `rows`, their post-state `hashes`), from
        seq `first_seq`, with numpy; `client` is named on the first (it introduces its owner)."""
        n = len(rows)
        # (plain slices of the bytes, not structured field views: a field view costs microseconds)
        raw = np.empty((n, _RECORD), np.uint8)
        raw[:, _COMMAND_AT:] = np.ascontiguousarray(rows).view(np.uint8).reshape(n, COMMAND_DTYPE.itemsize)
        head = np.empty((n, 2), np.uint64)
        head[:, 0] = np.arange(first_seq, first_seq + n, dtype=np.uint64)
        head[:, 1] = hashes
        raw[:, :16] = head.view(np.uint8).reshape(n, 16)
        raw[:, 22] = np.fromiter(map(len, client_order_ids), np.uint8, n)
        raw[:, 23] = 0
        raw[:, 28:32] = 0
        records = raw.view(LOG_RECORD_DTYPE).reshape(n)
        names = "".join(client_order_ids)
        if client is not None and n:
            raw[0, 23] = len(client)
            cut = len(client_order_ids[0])
            names = names[:cut] + client + names[cut:]
        return cls.build(records, names.encode("ascii"))

    @classmethod
    def concat(cls, runs: Sequence[LogRun]) -> LogRun:
        if len(runs) == 1:
            return runs[0]
        if not runs:
            return cls.empty()
        records = np.concatenate([run.records for run in runs])
        return cls.build(records, b"".join(run.names for run in runs))

    def cut(self, start: int, stop: int | None = None) -> LogRun:
        """Entries start..stop-1 (a view of the records; the names sliced)."""
        stop = len(self) if stop is None else min(stop, len(self))
        start = min(start, stop)
        if start == 0 and stop == len(self):
            return self
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        return LogRun(self.records[start:stop], self.names[lo:hi], self.offsets[start : stop + 1] - lo)

    def to_bytes(self) -> bytes:
        return RUN_HEAD.pack(len(self), len(self.names)) + self.records.tobytes() + self.names

    def anonymous(self) -> LogRun:
        """The run without names (what the public log carries): every record's name lengths 0."""
        rows = self._rows
        if rows is not None:  # (a short run: its tuples, packed again, cost no numpy field writes)
            bare = [(*row[:8], 0, 0, *row[10:]) for row in rows]
            packed = _pack_rows(bare)
            if packed is not None:  # (always: these rows were records)
                return LogRun(packed, b"", None, bare)
        records = self.records.copy()
        records["coid_len"] = 0
        records["client_len"] = 0
        return LogRun(records, b"", np.zeros(len(records) + 1, np.int64))

    def named_for(self, owner: int | None) -> LogRun:
        """The run with the names of `owner`'s entries only (its client order ids, and its client
        id on the entry introducing it): what a replay answer to that client carries."""
        records = self.records
        if owner is None or not len(records) or not self.names:
            return self.anonymous()
        mine = records["owner"] == owner
        if not mine.any():
            return self.anonymous()
        out = records.copy()
        out["coid_len"][~mine] = 0
        out["client_len"][~mine] = 0
        lengths = records["coid_len"].astype(np.int64) + records["client_len"]
        keep = np.repeat(mine, lengths)  # a mask over the names blob's bytes
        names = np.frombuffer(self.names, np.uint8)[keep].tobytes()
        return LogRun(out, names)

    @classmethod
    def read(cls, data: bytes | memoryview, at: int = 0, named: bool = True) -> tuple[LogRun, int]:
        """(the run at offset `at` of `data`, the offset after it); ValueError if it is truncated,
        its lengths do not add up, a field is out of range or a name is not printable ASCII.
        `named`: refuse a record other than a cancel_all without its client order id (the
        journal's runs are named; a log message's carry only its requester's names, or none)."""
        if len(data) - at < RUN_HEAD.size:
            raise ValueError("log run truncated (no count)")
        count, names_len = RUN_HEAD.unpack_from(data, at)
        start = at + RUN_HEAD.size
        end_records = start + count * _RECORD
        end = end_records + names_len
        if end > len(data):
            raise ValueError(f"log run truncated: {count} records and {names_len} name bytes need {end - at}")
        if count <= SCALAR_RUN:
            return cls._read_scalar(data, count, start, bytes(data[end_records:end]), named), end
        records = np.frombuffer(data, LOG_RECORD_DTYPE, count, start)
        names = bytes(data[end_records:end])
        offsets = _check_records(records, names_len, named)
        if names:
            blob = np.frombuffer(names, np.uint8)
            if int(blob.min()) < 0x21 or int(blob.max()) > 0x7E:
                raise ValueError("log run names are not printable ASCII")
            for i in np.flatnonzero(records["client_len"]).tolist():
                lo = int(offsets[i]) + int(records["coid_len"][i])
                client = names[lo : int(offsets[i + 1])].decode("ascii")
                if not CLIENT_ID_RE.fullmatch(client):
                    raise ValueError(f"log record {int(records['seq'][i])}: client id {client!r} is invalid")
        return cls(records, names, offsets), end

    @classmethod
    def _read_scalar(
        cls, data: bytes | memoryview, count: int, start: int, names: bytes, named: bool
    ) -> LogRun:
        """`read` of a short run: the same checks on tuples of ints (one struct unpack a record)."""
        unpack = _RECORD_STRUCT.unpack_from
        rows = [unpack(data, start + i * _RECORD) for i in range(count)]
        records = np.frombuffer(data, LOG_RECORD_DTYPE, count, start)
        if not all(_row_valid(row, named) for row in rows):
            _check_records(records, len(names), named)  # names the problem
            raise ValueError("log record invalid")  # (not reached: _check_records raises)
        at = 0
        for row in rows:
            at += row[8] + row[9]
        if at != len(names):
            raise ValueError(f"log records name {at} bytes of names, the run holds {len(names)}")
        if names and _PRINTABLE.fullmatch(names) is None:
            raise ValueError("log run names are not printable ASCII")
        at = 0
        for row in rows:
            lo = at + row[8]
            at = lo + row[9]
            if row[9]:
                client = names[lo:at].decode("ascii")
                if not CLIENT_ID_RE.fullmatch(client):
                    raise ValueError(f"log record {row[0]}: client id {client!r} is invalid")
        return cls(records, names, None, rows)

    # -- per-entry views (not the hot path) -------------------------------------------------

    def names_of(self, i: int) -> tuple[str | None, str | None]:
        """(client id or None, client order id or None) of entry i."""
        lo = int(self.offsets[i])
        mid = lo + int(self.records["coid_len"][i])
        hi = int(self.offsets[i + 1])
        coid = self.names[lo:mid].decode("ascii") if mid > lo else None
        client = self.names[mid:hi].decode("ascii") if hi > mid else None
        return client, coid

    def client_order_ids_at(self, indices: np.ndarray) -> list[str | None]:
        """A list indexed by entry holding the client order ids of the entries `indices` (None
        elsewhere): what MapChanges reads, built only for the entries it maps."""
        out: list[str | None] = [None] * len(self)
        if len(indices):
            text = self.names.decode("ascii")
            starts = self.offsets[indices]
            ends = starts + self.records["coid_len"][indices]
            for i, lo, hi in zip(indices.tolist(), starts.tolist(), ends.tolist(), strict=True):
                out[i] = text[lo:hi] if hi > lo else None
        return out

    def entry(self, i: int, clients: dict[int, str] | None = None) -> LogEntry:
        """Entry i; with `clients` (owner -> client id), the client id of an entry that does not
        carry it is filled in from there."""
        seq, state_hash, op, side, otype, tif, stp, post_only, _cl, _kl, owner, _r, order_id, price, qty = (
            self.records[i].tolist()
        )
        client, coid = self.names_of(i)
        if client is None and clients is not None:
            client = clients.get(owner)
        return LogEntry(
            seq, state_hash, client, coid, op, order_id, owner, side, otype, tif, stp, post_only, price, qty
        )

    def entries(self, clients: dict[int, str] | None = None) -> list[LogEntry]:
        rows = self._rows
        if rows is None:
            return [self.entry(i, clients) for i in range(len(self))]
        out = []
        names, at = self.names, 0
        for row in rows:
            seq, state_hash, op, side, otype, tif, stp, post_only, coid_len, client_len, owner = row[:11]
            order_id, price, qty = row[12:]
            mid = at + coid_len
            coid = names[at:mid].decode("ascii") if coid_len else None
            at = mid + client_len
            if client_len:
                client: str | None = names[mid:at].decode("ascii")
            else:
                client = None if clients is None else clients.get(owner)
            out.append(
                LogEntry(
                    seq, state_hash, client, coid, op, order_id, owner, side, otype, tif, stp, post_only,
                    price, qty,
                )
            )  # fmt: skip
        return out


def encode_log_message(market: str, head: int, run: LogRun | None = None, replay: bool = False) -> bytes:
    """A log message: header + run (no run: a heartbeat, or a replay answer with nothing to send)."""
    name = market.encode("ascii")
    flags = FLAG_REPLAY if replay else 0
    prefix = MESSAGE_HEAD.pack(LOG_MAGIC, LOG_FORMAT, flags, head, len(name)) + name
    return prefix + (run.to_bytes() if run is not None else RUN_HEAD.pack(0, 0))


@dataclass(slots=True)
class LogBatch:
    """A decoded log message: what a replica applies in one `Book.apply_batch` call. Row i is the
    entry with seq `seqs[i]`."""

    market: str
    head: int
    replay: bool
    run: LogRun

    def __len__(self) -> int:
        return len(self.run)

    @property
    def seqs(self) -> np.ndarray:  # int64
        return self.run.records["seq"]

    @property
    def hashes(self) -> np.ndarray:  # uint64: the post-state hash the sequencer computed after each entry
        return self.run.records["hash"]

    @property
    def owners(self) -> np.ndarray:
        return self.run.records["owner"]

    def commands(self) -> np.ndarray:
        """The entries' engine commands (COMMAND_DTYPE, contiguous): one copy of the records' bytes."""
        n = len(self.run)
        commands = np.empty(n, COMMAND_DTYPE)
        if n:
            raw = np.ascontiguousarray(self.run.records).view(np.uint8).reshape(n, _RECORD)
            commands.view(np.uint8).reshape(n, COMMAND_DTYPE.itemsize)[:] = raw[:, _COMMAND_AT:]
            commands["_pad"] = 0
            commands["_pad2"] = 0
        return commands

    def consecutive(self) -> bool:
        """Seqs strictly one apart (what a sequencer publishes: one batch, in order)."""
        seqs = self.seqs
        n = len(seqs)
        return n < 2 or (int(seqs[-1]) - int(seqs[0]) == n - 1 and bool(np.all(np.diff(seqs) == 1)))

    def tail(self, start: int) -> LogBatch:
        return LogBatch(self.market, self.head, self.replay, self.run.cut(start))

    def entry(self, i: int, clients: dict[int, str] | None = None) -> LogEntry:
        return self.run.entry(i, clients)

    @property
    def entries(self) -> list[LogEntry]:
        """Every entry, as the records carry them (client ids only where introduced)."""
        return self.run.entries()


class ReplayRefused(ValueError):
    """The sequencer refused a replay request (its answer topic carried a `replay_refused`)."""


def _refusal(payload: bytes) -> ReplayRefused | None:
    """The refusal a replay answer topic carries instead of log messages, if it is one."""
    try:
        doc = parse_json(payload)
    except _BadOrder:
        return None
    if not isinstance(doc, dict) or doc.get("type") != "replay_refused":
        return None
    return ReplayRefused(f"replay refused: {str(doc.get('code'))[:40]}: {str(doc.get('message'))[:300]}")


def decode_log_message(payload: bytes | memoryview) -> LogBatch:
    """Raises ValueError on anything that is not a well-formed log message of LOG_FORMAT
    (ReplayRefused, a ValueError, for the sequencer's refusal of a replay request)."""
    if type(payload) is not bytes:  # the records are a view: of bytes nobody can change under them
        payload = bytes(payload)
    if payload[:1] == b"{":
        refusal = _refusal(payload)
        if refusal is not None:
            raise refusal
    if len(payload) < MESSAGE_HEAD.size:
        raise ValueError("log message truncated (no header)")
    magic, version, flags, head, market_len = MESSAGE_HEAD.unpack_from(payload, 0)
    if magic != LOG_MAGIC:
        raise ValueError(f"not a log message (magic {bytes(magic)!r})")
    if version != LOG_FORMAT:
        raise ValueError(f"unsupported log message format {version} (this reader knows {LOG_FORMAT})")
    if flags & ~FLAG_REPLAY:
        raise ValueError(f"log message has unknown flags {flags:#x}")
    if head < 0:
        raise ValueError(f"log message head {head} is negative")
    at = MESSAGE_HEAD.size + market_len
    if len(payload) < at:
        raise ValueError("log message truncated (market name)")
    try:
        market = bytes(payload[MESSAGE_HEAD.size : at]).decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("log message market name is not ASCII") from None
    run, end = LogRun.read(payload, at, named=False)
    if end != len(payload):
        raise ValueError(f"log message has {len(payload) - end} bytes after its run")
    return LogBatch(market, head, bool(flags & FLAG_REPLAY), run)


def entry_json(entry: LogEntry, market: Any | None = None) -> dict[str, Any]:
    """A readable JSON object of one entry (`fastbook log`): field names, the hash in hex, decimal
    prices and quantities when the market spec (a MarketSpec) is known, else ticks and lots."""
    doc: dict[str, Any] = {
        "seq": entry.seq,
        "hash": f"{entry.hash:016x}",
        "op": OP_TEXT.get(entry.op, entry.op),
        "order_id": entry.order_id,
        "owner": entry.owner,
    }
    if entry.client_order_id is not None:  # only in a replay answer to the entry's own client
        doc["id"] = entry.client_order_id
    if entry.op == Op.NEW:
        doc["side"] = SIDE_TEXT.get(entry.side, entry.side)
        doc["type"] = TYPE_TEXT.get(entry.order_type, entry.order_type)
        doc["tif"] = TIF_TEXT.get(entry.tif, entry.tif)
        doc["stp"] = STP_TEXT.get(entry.stp, entry.stp)
        doc["post_only"] = bool(entry.post_only)
    if market is not None:
        doc["price"] = market.ticks_to_price(entry.price) if entry.price else None
        doc["qty"] = market.lots_to_qty(entry.qty) if entry.qty else None
    else:
        doc["price_ticks"] = entry.price
        doc["qty_lots"] = entry.qty
    return doc


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    first: int  # first seq wanted (>= 1)
    last: int | None  # last seq wanted, None = up to the head
    snapshot: bool = False  # send the latest snapshot first (resync)
    names: bool = False  # send the requester's own names first (its owner number, open orders)


def encode_replay_request(req: ReplayRequest) -> bytes:
    body: dict[str, Any] = {"from": req.first, "to": req.last}
    if req.snapshot:
        body["snapshot"] = True
    if req.names:
        body["names"] = True
    return dumps(body)


def decode_replay_request(payload: bytes) -> ReplayRequest:
    try:
        doc = parse_json(payload)
    except _BadOrder as bad:
        raise ValueError(bad.message) from None
    if not isinstance(doc, dict) or not doc.keys() <= {"v", "from", "to", "snapshot", "names"}:
        shape = '{"from": N, "to": N or null[, "snapshot": bool, "names": bool]}'
        raise ValueError(f"replay request must be {shape}")
    first, last, snap = doc.get("from"), doc.get("to"), doc.get("snapshot", False)
    names = doc.get("names", False)
    if type(first) is not int or first < 1:
        raise ValueError("replay request 'from' must be an integer >= 1")
    if last is not None and (type(last) is not int or last < first):
        raise ValueError("replay request 'to' must be null or an integer >= from")
    if not isinstance(snap, bool) or not isinstance(names, bool):
        raise ValueError("replay request 'snapshot' and 'names' must be true or false")
    return ReplayRequest(first, last, snap, names)


