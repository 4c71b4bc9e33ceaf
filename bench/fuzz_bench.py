"""Long fuzz run over every fastbook decoder (issue 4, "Bad input"): at least 1M inputs by default.

Seeds are real sequencer output (orders, log messages, entries, replay requests, snapshots, a journal,
book/trades/report messages) plus market specs, amounts, typed commands, broker URLs and CLI argv.
Each input is a seed damaged by a seeded mutator (bit flips, truncation, splices, byte insertions,
JSON-aware replacement of one value by a hostile one: NaN, 1e400, -0, huge integers, deep nesting,
1 MB strings, unicode and lone surrogates, wrong types, unknown/missing/duplicate keys, BOMs).

Every decoder is held to its contract: only the documented exception type may escape (none at all for
order decoding and for a node's on_messages), and what it returns must satisfy the wire contract
(ranges, id syntax, exact amounts). Anything else is a failure, grouped by decoder and exception,
printed with the input number and a prefix of the input. Asserts nothing about speed: it prints
inputs/s. Exit status 1 if any failure was found.

Usage: python bench/fuzz_bench.py [--count 1000000] [--seed 1] [--show 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import re
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

# Sequencer and edge state must not depend on the engine choice of the caller's environment.
os.environ.setdefault("FASTBOOK_BACKEND", "native")

from fastbook.apps.cli import broker as cli_broker  # noqa: E402
from fastbook.apps.cli import edge as cli_edge  # noqa: E402
from fastbook.apps.cli import sequencer as cli_sequencer  # noqa: E402
from fastbook.apps.cli.commands import CommandError, parse_command  # noqa: E402
from fastbook.apps.status import _StatusCollector  # noqa: E402
from fastbook.edge.node import EdgeConfig, EdgeNode  # noqa: E402
from fastbook.engine.types import MAX_ORDER_ID, MAX_OWNER, MAX_PRICE, MAX_QTY  # noqa: E402
from fastbook.log.journal import FILE_MAGIC, FRAME_HEAD, Journal, JournalError  # noqa: E402
from fastbook.log.journal_migrate import decode_json_entry  # noqa: E402
from fastbook.log.replica import Replica  # noqa: E402
from fastbook.log.sequencer import SequencerConfig, SequencerNode  # noqa: E402
from fastbook.transport.config import parse_broker_url  # noqa: E402
from fastbook.wire.fields import CLIENT_ID_RE, CLIENT_ORDER_ID_RE, dumps, parse_hash_hex
from fastbook.wire.log import LogEntry, LogRun, decode_log_message, decode_replay_request
from fastbook.wire.market import MarketSpec  # noqa: E402
from fastbook.wire.messages import encode_reports, encode_status
from fastbook.wire.orders import WireReject, decode_orders
from fastbook.wire.snapshot import SNAPSHOT_FORMAT, SNAPSHOT_MAGIC, decode_snapshot, encode_snapshot
from fastbook.wire.topics import Topics  # noqa: E402

SPEC = MarketSpec.parse("BTC-USD")
TOPICS = Topics("BTC-USD")
DECODER_CODES = {
    "PAYLOAD_TOO_LARGE",
    "INVALID_UTF8",
    "MALFORMED_JSON",
    "INVALID_MESSAGE",
    "MISSING_FIELD",
    "UNKNOWN_FIELD",
    "INVALID_FIELD",
    "INVALID_OP",
    "INVALID_PRICE",
    "INVALID_QTY",
    "INVALID_AMEND",
    "UNKNOWN_MARKET",
}
HEX16 = re.compile(r"[0-9a-f]{16}")


class ContractViolation(Exception):
    """A decoder returned something the wire contract does not allow."""


def require(condition: bool, what: str) -> None:
    if not condition:
        raise ContractViolation(what)


# ---------------------------------------------------------------------------------------------
# Seeds: real sequencer output
# ---------------------------------------------------------------------------------------------


@dataclass
class Seeds:
    orders: list[bytes] = field(default_factory=list)
    log_messages: list[bytes] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    replay: list[bytes] = field(default_factory=list)
    snapshots: list[bytes] = field(default_factory=list)
    journal: bytes = b""
    public: list[tuple[str, bytes]] = field(default_factory=list)  # book, trades, reports messages


def flow(rng: random.Random, count: int) -> list[tuple[str, dict[str, Any]]]:
    clients = ["alice", "bob", "carol", "dave"]
    orders: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        client = rng.choice(clients)
        kind = rng.random()
        if kind < 0.6:
            body: dict[str, Any] = {
                "op": "new",
                "id": f"o{i}",
                "side": rng.choice(["buy", "sell"]),
                "price": f"{rng.randint(95, 105)}.{rng.choice(['00', '25', '5'])}",
                "qty": f"{rng.randint(1, 5)}.{rng.randint(0, 999):03d}",
            }
            if rng.random() < 0.2:
                body["tif"] = rng.choice(["ioc", "fok"])
            if rng.random() < 0.1:
                body = {**body, "type": "market"}
                body.pop("price")
        elif kind < 0.75:
            body = {"op": "cancel", "id": f"o{rng.randint(0, i)}"}
        elif kind < 0.9:
            body = {"op": "amend", "id": f"o{rng.randint(0, i)}", "qty": "0.5"}
        else:
            body = {"op": "cancel_all", "id": f"ca{i}"}
        orders.append((client, body))
    return orders


def build_seeds(rng: random.Random, directory: Path) -> Seeds:
    seeds = Seeds()
    node = SequencerNode(SequencerConfig(SPEC, directory / "seq", snapshot_every=25))
    for client, body in flow(rng, 120):
        payload = json.dumps(body).encode()
        seeds.orders.append(payload)
        for out in node.on_messages([(TOPICS.orders(client), payload)]):
            if out.topic == TOPICS.log:
                seeds.log_messages.append(out.payload)
                seeds.entries += [json_entry(e) for e in decode_log_message(out.payload).entries]
            elif out.topic == TOPICS.snapshot:
                seeds.snapshots.append(out.payload)
            else:
                seeds.public.append((out.topic, out.payload))
    seeds.orders.append(json.dumps([json.loads(p) for p in seeds.orders[:20]]).encode())
    node._take_snapshot(0.0)
    for path in sorted((directory / "seq" / "snapshots").glob("*.snap"))[-3:]:
        seeds.snapshots.append(path.read_bytes())
    # Files of older sequencers carried the dedupe window ("seen"); the decoder still reads them.
    newest = decode_snapshot(seeds.snapshots[-1])
    seeds.snapshots.append(encode_snapshot(replace(newest, seen=node.dedupe.snapshot())))
    seeds.snapshots.append(node._published_snapshot)
    seeds.replay = [b'{"from":1,"to":null}', b'{"from":3,"to":7,"snapshot":true}', b'{"from":10}']
    node.close()
    seeds.journal = (directory / "seq" / Journal.FILE_NAME).read_bytes()[:4096]
    seeds.journal = seeds.journal[: journal_whole_prefix(seeds.journal)]
    return seeds


def json_entry(entry: LogEntry) -> bytes:
    """An entry in the previous journal format's JSON (what `fastbook journal migrate` decodes)."""
    client = entry.client_id or "c"
    return json.dumps([entry.seq, f"{entry.hash:016x}", client, *entry[3:]], separators=(",", ":")).encode()


def journal_records(data: bytes) -> list[bytes]:
    """The run bytes of each whole frame of a journal file."""
    out, offset = [], len(FILE_MAGIC)
    while offset + FRAME_HEAD.size <= len(data):
        length, _crc = FRAME_HEAD.unpack_from(data, offset)
        if offset + FRAME_HEAD.size + length > len(data):
            break
        out.append(data[offset + FRAME_HEAD.size : offset + FRAME_HEAD.size + length])
        offset += FRAME_HEAD.size + length
    return out


def journal_whole_prefix(data: bytes) -> int:
    return len(FILE_MAGIC) + sum(FRAME_HEAD.size + len(p) for p in journal_records(data))


# ---------------------------------------------------------------------------------------------
# Mutators
# ---------------------------------------------------------------------------------------------

HOSTILE_JSON = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e400",
    b"-0",
    b"-0.0",
    b"9" * 5000,
    b"9" * 4000,
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1.5",
    b"true",
    b"false",
    b"null",
    b"[]",
    b"{}",
    b'""',
    b'"\\ud800"',
    b'"\\u0000"',
    b'"\xc3\xa9"',
    b'"\xf0\x9f\x92\xb0"',
    b'"\xff"',
    b'"\xef\xbb\xbf"',
    b'"-000000000000001"',
    b'"0x00000000000001"',
    b'" 00000000000001 "',
    b'"\xef\xbc\x91' * 5 + b'"',
    b'"' + b"x" * 65 + b'"',
    b'"a b"',
    b'"buy"',
    b'"new"',
    b'"100.001"',
    b'"1e2"',
    b'"+1"',
    b'"0"',
    b"[1,2,3]",
    b'{"k":1,"k":2}',
    b'[1,"x",null,{}]',
]
# Big values are costly to build and scan, so they are rarer and only ever the last mutation.
GIANT_JSON = [
    b"[" * 2000 + b"]" * 2000,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'"' + b"y" * (1 << 20) + b'"',
]
GIANT_RATE = 0.004
# Nesting just under the parser's recursion limit: parses, then trips whatever walks it again.
NEAR_LIMIT_JSON = [b"[" * depth + b"]" * depth for depth in range(950, 1001)]
NEAR_LIMIT_RATE = 0.02
HOSTILE_KEYS = [
    b'"x"',
    b'"\\ud800"',
    b'"op"',
    b'"id"',
    b'"\xc3\xbc"',
    b'""',
    b'"v"',
    b'"seen"',
    b'"side"',
    b'"type"',
    b'"tif"',
    b'"stp"',
    b'"market"',
    b'"post_only"',
]
INTERESTING_BYTES = [
    0x00,
    0xFF,
    0x7F,
    0x80,
    0xC0,
    0xED,
    0xEF,
    ord('"'),
    ord("\\"),
    ord("["),
    ord("{"),
    ord(","),
]
# Where JSON values start: a cheap tokenizer good enough to aim replacements at values.
VALUE_START = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*|true|false|null|\[|\{')


def mutate_bytes(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    choice = rng.randrange(8)
    buf = bytearray(data)
    if choice == 0 and buf:  # flip 1-4 bits
        for _ in range(rng.randint(1, 4)):
            bit = rng.randrange(len(buf) * 8)
            buf[bit // 8] ^= 1 << (bit % 8)
    elif choice == 1:  # truncate
        del buf[rng.randrange(len(buf) + 1) :]
    elif choice == 2 and buf:  # interesting byte
        buf[rng.randrange(len(buf))] = rng.choice(INTERESTING_BYTES)
    elif choice == 3:  # insert random bytes
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = rng.randbytes(rng.randint(1, 8))
    elif choice == 4 and buf:  # delete a range
        at = rng.randrange(len(buf))
        del buf[at : at + rng.randint(1, 16)]
    elif choice == 5 and others:  # splice with another seed
        other = rng.choice(others)
        buf = buf[: rng.randrange(len(buf) + 1)] + other[rng.randrange(len(other) + 1) :]
    elif choice == 6 and buf:  # duplicate a range
        at = rng.randrange(len(buf))
        buf[at:at] = buf[at : at + rng.randint(1, 32)]
    else:  # BOM or trailing garbage
        buf = bytearray(b"\xef\xbb\xbf" + buf) if rng.random() < 0.5 else buf + rng.randbytes(3)
    return bytes(buf)


def mutate_json(rng: random.Random, data: bytes, values: list[bytes] = HOSTILE_JSON) -> bytes:
    """Replace one JSON value by a hostile one, or add a key (unknown or duplicate), or drop a value."""
    matches = list(VALUE_START.finditer(data))
    if not matches:
        return data
    match = rng.choice(matches)
    start, end = match.start(), match.end()
    if data[start : start + 1] in (b"[", b"{"):
        end = start + 1  # an opening bracket: insert before it rather than break the structure
        replacement = rng.choice(values) + b","
    else:
        replacement = rng.choice(values)
    roll = rng.random()
    if roll < 0.7:
        return data[:start] + replacement + data[end:]
    if roll < 0.9 and data.startswith(b"{"):
        return b"{" + rng.choice(HOSTILE_KEYS) + b":" + rng.choice(values) + b"," + data[1:]
    return data[:start] + data[end:]


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    out = data
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        out = mutate_json(rng, out) if rng.random() < 0.5 else mutate_bytes(rng, out, others)
    if rng.random() < GIANT_RATE:
        out = mutate_json(rng, out, GIANT_JSON)
    elif rng.random() < NEAR_LIMIT_RATE:
        out = mutate_json(rng, out, NEAR_LIMIT_JSON)
    return out


def recrc_snapshot(rng: random.Random, data: bytes) -> bytes:
    """Damage the meta JSON of a snapshot and fix the CRC, so only the structure checks stand."""
    _magic, _fmt, flags, meta_len = struct.unpack_from("<4sHHI", data)
    meta = mutate_json(
        rng, data[12 : 12 + meta_len], GIANT_JSON if rng.random() < GIANT_RATE else HOSTILE_JSON
    )
    rest = data[12 + meta_len : -4]
    body = struct.pack("<4sHHI", SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, flags, len(meta)) + meta + rest
    return body + struct.pack("<I", zlib.crc32(body))


# ---------------------------------------------------------------------------------------------
# Targets: run one input, enforce the contract
# ---------------------------------------------------------------------------------------------


def check_entry(entry: LogEntry) -> None:
    require(entry.seq >= 1 and 0 <= entry.hash < 2**64, f"entry seq/hash out of range: {entry[:2]}")
    require(entry.client_id is None or bool(CLIENT_ID_RE.fullmatch(entry.client_id)), "entry client id")
    require(
        entry.client_order_id is not None or entry.op == 4, f"op {entry.op} entry without client order id"
    )
    require(
        entry.client_order_id is None or bool(CLIENT_ORDER_ID_RE.fullmatch(entry.client_order_id)),
        "entry client order id",
    )
    require(0 <= entry.order_id <= MAX_ORDER_ID and 0 <= entry.owner <= MAX_OWNER, "entry ids")
    require(0 <= entry.price <= MAX_PRICE and 0 <= entry.qty <= MAX_QTY, "entry amounts")


def run_orders(data: bytes) -> None:
    items = decode_orders(data, SPEC)
    require(bool(items), "no result")
    for item in items:
        if isinstance(item, WireReject):
            require(item.code in DECODER_CODES and bool(item.message), f"reject {item.code!r}")
            encode_reports([item.report()])
        else:
            require(0 <= item.price <= MAX_PRICE and 0 < item.qty <= MAX_QTY or item.op != 1, "amounts")
            require(
                item.client_order_id is None or bool(CLIENT_ORDER_ID_RE.fullmatch(item.client_order_id)),
                "client order id",
            )


def run_log(data: bytes) -> None:
    message = decode_log_message(data)
    require(type(message.head) is int and message.head >= 0, "head")
    for entry in message.entries:
        check_entry(entry)


def run_entry(data: bytes) -> None:
    check_entry(decode_json_entry(data))  # the journal migrator's decoder of previous-format entries


def run_replay(data: bytes) -> None:
    request = decode_replay_request(data)
    require(type(request.first) is int and request.first >= 1, "from")
    require(request.last is None or (type(request.last) is int and request.last >= request.first), "to")


def run_snapshot(data: bytes) -> None:
    snap = decode_snapshot(data)
    require(type(snap.version) is int and snap.version >= 0 and 0 <= snap.state_hash < 2**64, "version/hash")
    for order_id, owner, coid in snap.orders:
        require(type(order_id) is int and type(owner) is int and isinstance(coid, str), "order row types")
        require(bool(CLIENT_ORDER_ID_RE.fullmatch(coid)), "order row client order id")
    require(
        all(CLIENT_ID_RE.fullmatch(c) and 0 <= o <= MAX_OWNER for c, o in snap.owners.items()),
        "owners map",
    )
    if snap.seen is not None:
        require(
            all(
                isinstance(ids, dict)
                and all(isinstance(i, str) and type(seq) is int for i, seq in ids.items())
                for ids in snap.seen.values()
            ),
            "seen map",
        )
    replica = Replica.from_snapshot(snap)  # ValueError is the documented failure
    # What was accepted must be usable: every resting order has a client, ids only grow, and a
    # (owner, client order id) pair names one order.
    require(
        all(owner in replica.clients for owner, _ in replica.orders.values()), "order owner without client"
    )
    require(
        all(order_id < replica.next_order_id for order_id in replica.orders), "next_order_id not above ids"
    )
    require(len(set(replica.orders.values())) == len(replica.orders), "client order id shared by two orders")


def run_market(data: bytes) -> None:
    spec = MarketSpec.parse(data.decode("utf-8", "replace"))
    require(MarketSpec.parse(str(spec)) == spec, "spec does not round-trip")


def run_amount(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for convert, step in ((SPEC.price_to_ticks, SPEC.tick), (SPEC.qty_to_lots, SPEC.lot)):
        with contextlib.suppress(ValueError):
            units = convert(text)
            require(Decimal(text) == units * step, f"{text!r} converted inexactly to {units}")


def run_hash(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    value = parse_hash_hex(text)
    require(0 <= value < 2**64 and bool(HEX16.fullmatch(text.lower())), f"hash {text!r} accepted")


def run_command(data: bytes) -> None:
    command = parse_command(data.decode("utf-8", "replace"))
    if command.order is not None:
        run_orders(dumps(command.order))


def run_broker_url(data: bytes) -> None:
    address = parse_broker_url(data.decode("utf-8", "replace"))
    require(bool(address.host) and 1 <= address.port <= 65535, "address")


ARGV_PARSERS = [cli_sequencer.parser(), cli_broker.parser(), cli_edge.parser()]


def run_argv(data: bytes) -> None:
    argv = data.decode("utf-8", "replace").split("\x00")
    parser = ARGV_PARSERS[len(argv) % len(ARGV_PARSERS)]
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exc:
        require(exc.code in (0, 2), f"exit code {exc.code}")


class EdgeTarget:
    """An edge replica fed damaged messages on every topic it subscribes to; it must never raise."""

    TOPIC_CHOICES = [
        TOPICS.log,
        TOPICS.snapshot,
        TOPICS.book,
        TOPICS.trades,
        TOPICS.reports("eve"),
        TOPICS.replay_response("eve"),
    ]

    def __init__(self, seeds: Seeds) -> None:
        self.seeds = seeds
        self.edge = self._fresh()
        self.uses = 0

    def _fresh(self) -> EdgeNode:
        edge = EdgeNode(EdgeConfig(client_id="eve", replay_timeout=1.0))
        edge.clock = lambda: 0.0
        edge.on_connected()
        edge.on_tick(10.0)  # no snapshot: start from the empty book, take seq 1 onwards
        return edge

    def run(self, data: bytes, topic: str) -> None:
        self.uses += 1
        if self.uses % 200 == 0:
            self.edge = self._fresh()
        self.edge.on_messages([(topic, data)])


def run_status(data: bytes, topic: str) -> None:
    """What `fastbook status` does with the retained book and replica statuses: never raises."""
    collector = _StatusCollector(TOPICS)
    collector.on_messages([(topic, data)])
    version = collector.status.book_version
    require(version is None or type(version) is int, f"book version {version!r}")


class JournalTarget:
    """A damaged journal file reopened: JournalError, or the longest valid prefix of the records."""

    def __init__(self, seeds: Seeds, directory: Path) -> None:
        self.original = journal_records(seeds.journal)
        self.directory = directory
        self.runs = 0

    def run(self, data: bytes, damage_at: int) -> None:
        self.runs += 1
        path = self.directory / f"j{self.runs % 4}"
        path.mkdir(exist_ok=True)
        (path / Journal.FILE_NAME).write_bytes(data)
        journal = Journal(path)
        try:
            records = journal.read(1)
            require(records.seqs.tolist() == list(range(1, len(records) + 1)), "recovered seqs not gap-free")
            kept = len(records)
            frames = sum(1 for end in self._ends() if end <= damage_at)
            intact = sum(len(LogRun.read(run)[0]) for run in self.original[:frames])
            require(kept >= intact, f"lost intact records ({kept} < {intact})")
            whole = LogRun.concat([LogRun.read(run)[0] for run in self.original])
            require(records.cut(0, intact) == whole.cut(0, intact), "intact records changed")
        finally:
            journal.close()

    def _ends(self) -> list[int]:
        ends, offset = [], len(FILE_MAGIC)
        for payload in self.original:
            offset += FRAME_HEAD.size + len(payload)
            ends.append(offset)
        return ends


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class Failure:
    count: int = 0
    first_index: int = 0
    first_input: bytes = b""
    message: str = ""


@dataclass
class Target:
    name: str
    weight: int
    make: Callable[[random.Random], tuple[bytes, Any]]
    run: Callable[[bytes, Any], None]
    allowed: tuple[type[BaseException], ...]


def build_targets(seeds: Seeds, directory: Path) -> list[Target]:
    edge = EdgeTarget(seeds)
    journal = JournalTarget(seeds, directory)
    all_json = seeds.orders + seeds.log_messages + seeds.entries + seeds.replay
    markets = [b"BTC-USD", b"ETH-USD:tick=0.5:lot=1", b"X:lot=0.0001:tick=100", b"a.b_c-1:tick=1e-2"]
    amounts = [b"100.25", b"1", b"0.001", b"4294967.295", b"90071992547409.91", b"007.50"]
    hashes = [b"975835de1c9756ce", b"0000000000000000", b"ffffffffffffffff"]
    commands = [
        b"buy 1.5 @ 100.25 ioc id=o-7",
        b"sell 2 market",
        b"cancel all",
        b"amend o-3 qty 1.0 price 100.5",
        b"cancel o-1",
        b"help",
        b"book",
    ]
    urls = [b"mqtt://127.0.0.1:1883", b"mqtt://[::1]:1884,tcp://localhost", b"mqtt://broker.local"]
    argvs = [
        b"--broker\x00mqtt://h:1\x00--data-dir\x00/tmp/x\x00--market\x00BTC-USD:tick=0.01",
        b"--port\x001883\x00--market\x00BTC-USD\x00--snapshot-interval\x0030",
        b"--client-id\x00alice\x00--broker\x00mqtt://h\x00--market\x00BTC-USD",
    ]

    def from_pool(pool: list[bytes], others: list[bytes]) -> Callable[[random.Random], tuple[bytes, Any]]:
        return lambda rng: (mutate(rng, rng.choice(pool), others), None)

    def snapshot_input(rng: random.Random) -> tuple[bytes, Any]:
        seed = rng.choice(seeds.snapshots)
        return (recrc_snapshot(rng, seed) if rng.random() < 0.7 else mutate_bytes(rng, seed, [])), None

    def edge_input(rng: random.Random) -> tuple[bytes, Any]:
        topic = rng.choice(EdgeTarget.TOPIC_CHOICES)
        if topic == TOPICS.snapshot:
            return snapshot_input(rng)[0], topic
        if topic in (TOPICS.log, TOPICS.replay_response("eve")):
            return mutate(rng, rng.choice(seeds.log_messages), seeds.log_messages), topic
        return mutate(rng, rng.choice(seeds.public)[1], []), topic

    books = [p for t, p in seeds.public if t == TOPICS.book]
    statuses = [
        encode_status("bob", "online", 7, 0x975835DE1C9756CE, 0),
        encode_status("x", "offline", 0, 0, 3),
    ]

    def status_input(rng: random.Random) -> tuple[bytes, Any]:
        if rng.random() < 0.5:
            return mutate(rng, rng.choice(books), books), TOPICS.book
        return mutate(rng, rng.choice(statuses), statuses), TOPICS.replica("bob")

    def journal_input(rng: random.Random) -> tuple[bytes, Any]:
        data = seeds.journal
        kind = rng.randrange(3)
        if kind == 0:
            bit = rng.randrange(len(FILE_MAGIC) * 8, len(data) * 8)
            damaged = bytearray(data)
            damaged[bit // 8] ^= 1 << (bit % 8)
            return bytes(damaged), bit // 8
        if kind == 1:
            cut = rng.randrange(len(FILE_MAGIC), len(data) + 1)
            return data[:cut], cut
        return data + rng.randbytes(rng.randint(1, 64)), len(data)

    return [
        Target("orders", 30, from_pool(seeds.orders, all_json), lambda d, _: run_orders(d), ()),
        Target(
            "log message", 12, from_pool(seeds.log_messages, all_json), lambda d, _: run_log(d), (ValueError,)
        ),
        Target("log entry", 10, from_pool(seeds.entries, all_json), lambda d, _: run_entry(d), (ValueError,)),
        Target(
            "replay request", 8, from_pool(seeds.replay, all_json), lambda d, _: run_replay(d), (ValueError,)
        ),
        Target("snapshot", 6, snapshot_input, lambda d, _: run_snapshot(d), (ValueError,)),
        Target("market spec", 6, from_pool(markets, markets), lambda d, _: run_market(d), (ValueError,)),
        Target("amount", 6, from_pool(amounts, amounts), lambda d, _: run_amount(d), ()),
        Target("hash", 4, from_pool(hashes, hashes), lambda d, _: run_hash(d), (ValueError,)),
        Target(
            "typed command", 6, from_pool(commands, commands), lambda d, _: run_command(d), (CommandError,)
        ),
        Target("broker url", 4, from_pool(urls, urls), lambda d, _: run_broker_url(d), (ValueError,)),
        Target("cli argv", 1, from_pool(argvs, argvs), lambda d, _: run_argv(d), ()),
        Target("edge on_messages", 6, edge_input, lambda d, topic: edge.run(d, topic), ()),
        Target("status collector", 3, status_input, run_status, ()),
        Target("journal recovery", 1, journal_input, lambda d, at: journal.run(d, at), (JournalError,)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs to run (default 1000000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--show", type=int, default=3, help="failure groups shown in full (default 3 per target)"
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be positive")

    logging.disable(logging.CRITICAL)  # decoders log what they ignore; a million warnings help nobody
    rng = random.Random(args.seed)
    failures: dict[tuple[str, str], Failure] = {}
    # Journal recovery is exercised for its logic, not the disk: use tmpfs when there is one.
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="fuzz-bench-", dir=scratch) as tmp:
        seeds = build_seeds(random.Random(args.seed), Path(tmp))
        targets = build_targets(seeds, Path(tmp))
        weights = [t.weight for t in targets]
        per_target = {t.name: 0 for t in targets}
        started = time.perf_counter()
        picks = rng.choices(targets, weights, k=args.count)
        for index, target in enumerate(picks):
            data, extra = target.make(rng)
            per_target[target.name] += 1
            try:
                target.run(data, extra)
            except target.allowed:
                pass
            except (
                Exception
            ) as exc:  # RecursionError, OverflowError, AssertionError, ...: all contract breaks
                key = (target.name, type(exc).__name__ + ": " + re.sub(r"\d+", "N", str(exc))[:70])
                failure = failures.setdefault(
                    key, Failure(first_index=index, first_input=data, message=str(exc))
                )
                failure.count += 1
        elapsed = time.perf_counter() - started

    print(f"fuzz_bench: seed {args.seed}, backend {os.environ['FASTBOOK_BACKEND']}")
    print(f"inputs: {args.count}")
    print(f"elapsed: {elapsed:.1f} s")
    print(f"inputs/s: {args.count / elapsed:,.0f}")
    print("per decoder: " + ", ".join(f"{name} {n}" for name, n in per_target.items()))
    total = sum(f.count for f in failures.values())
    print(f"failures: {total} in {len(failures)} groups")
    shown: dict[str, int] = {}
    for (name, what), failure in sorted(failures.items(), key=lambda kv: (kv[0][0], -kv[1].count)):
        shown[name] = shown.get(name, 0) + 1
        print(f"  FAIL [{name}] {what} x{failure.count} (first at input {failure.first_index})")
        if shown[name] <= args.show:
            print(f"       input ({len(failure.first_input)} bytes): {failure.first_input[:160]!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
