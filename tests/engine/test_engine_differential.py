"""Differential property tests: the native engine against the reference book on random command
streams of every kind.

Streams use a small price range so orders cross often, a handful of owners so self-trade prevention
fires, and a small id pool so ids collide (duplicates) or are unknown (cancel/amend of dead orders);
a few values are out of domain to exercise the reject paths. After EVERY command both books must have
produced identical events and identical state hashes; the hash must also equal a full recomputation
from the snapshot with the spec's formula.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbook.engine.reference import ReferenceBook
from fastbook.engine.types import COMMAND_DTYPE, EVENT_DTYPE, Op, event_rows_to_tuples
from tests.support.engine_spec import book_class, build_snapshot, parse_snapshot, spec_state_hash

SETTINGS = settings(
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# A command is (op, fields) with the per-command API's keyword arguments.
Command = tuple[str, dict[str, int]]


class _CommandDecoder:
    """Turns one seed into one command, with the weights that make streams interesting.

    Hypothesis draws a list of seeds (one cheap draw per command) instead of a dozen field draws per
    command: generation stays fast, and shrinking still removes commands and simplifies seeds.
    """

    def __init__(self, seed: int, batchable: bool, id_pool: int) -> None:
        self.rng = random.Random(seed)
        self.batchable = batchable
        self.id_pool = id_pool

    def weighted(self, common: int, rare: list[int]) -> int:
        """Mostly the valid value, about one draw in forty an invalid one."""
        return self.rng.choice(rare) if self.rng.randrange(40) == 0 else common

    def order_id(self) -> int:
        # Few ids, so new ids collide with resting ones and cancels/amends often find their order.
        return self.weighted(self.rng.randint(1, self.id_pool), [0, -1, 2**63 - 1])

    def owner_for(self, order_id: int) -> int:
        """Usually the id's "natural" owner (id % 4), so cancels and amends find their order."""
        if self.rng.randrange(4) != 0:
            return order_id % 4
        owner = self.rng.randint(0, 3)
        # the batch record's u4 owner cannot hold the invalid ones
        return owner if self.batchable else self.weighted(owner, [-1, 2**32 - 1, 2**32])

    def command(self) -> Command:
        kind = self.rng.choice(["new"] * 10 + ["amend"] * 4 + ["cancel"] * 2 + ["cancel_all"])
        order_id = self.order_id()
        owner = self.owner_for(order_id)
        if kind == "cancel":
            return kind, dict(order_id=order_id, owner=owner)
        if kind == "cancel_all":
            return kind, dict(owner=owner)
        if kind == "amend":
            price = self.rng.choice([0, self.rng.randint(90, 110)])
            qty = self.rng.choice([0, self.rng.randint(1, 25), self.rng.randint(1, 25)])
            return kind, dict(
                order_id=order_id,
                owner=owner,
                price=self.weighted(price, [-1, 2**53]),
                qty=self.weighted(qty, [-1, 2**32]),
            )
        order_type = self.weighted(self.rng.choice([1] * 6 + [2]), [0, 3])
        tif = self.weighted(self.rng.choice([1] * 6 + [2, 3]), [0, 4])
        side = self.weighted(self.rng.choice([1, 2]), [0, 3])
        # Bids 90-101 and asks 99-110: they overlap enough to cross often, yet a book builds up.
        limit_price = self.rng.randint(90, 101) if side == 1 else self.rng.randint(99, 110)
        post_only = self.rng.choice([0, 0, 1]) if order_type == 1 and tif == 1 else 0
        return kind, dict(
            order_id=order_id,
            owner=owner,
            side=side,
            price=self.weighted(0 if order_type == 2 else limit_price, [0, -1, 2**53]),
            qty=self.weighted(self.rng.randint(1, 20), [0, -1, 2**32 - 1, 2**32]),
            type=order_type,
            tif=tif,
            post_only=self.weighted(post_only, [1]),
            stp=self.weighted(self.rng.randint(0, 3), [4]),
        )


@st.composite
def command_streams(
    draw: st.DrawFn, batchable: bool = False, min_size: int = 20, max_size: int = 150, id_pool: int = 20
) -> list[Command]:
    # An explicit length: plain st.lists favours short streams, and interesting states need history.
    length = draw(st.integers(min_size, max_size))
    seeds = draw(st.lists(st.integers(0, 2**32 - 1), min_size=length, max_size=length))
    return [_CommandDecoder(seed, batchable, id_pool).command() for seed in seeds]


def apply(book: Any, command: Command) -> list[tuple[int, ...]]:
    op, fields = command
    return [tuple(event) for event in getattr(book, op)(**fields)]


def assert_same_state(native: Any, reference: Any, where: str) -> None:
    assert native.state_hash() == reference.state_hash(), where
    assert native.next_stamp == reference.next_stamp, where
    assert len(native) == len(reference), where
    assert native.counts() == reference.counts(), where
    assert native.best_bid() == reference.best_bid(), where
    assert native.best_ask() == reference.best_ask(), where


def assert_hash_matches_spec(book: Any, where: str) -> None:
    next_stamp, records, trailer = parse_snapshot(book.snapshot())
    assert trailer == book.state_hash() == spec_state_hash(next_stamp, records), where


def _run_side_by_side(commands: list[Command], native: Any = None, reference: Any = None) -> None:
    native = book_class("native")() if native is None else native
    reference = ReferenceBook() if reference is None else reference
    for step, command in enumerate(commands):
        where = f"step {step}: {command}"
        assert apply(native, command) == apply(reference, command), where
        assert_same_state(native, reference, where)
    assert native.snapshot() == reference.snapshot()
    assert native.depth(20) == reference.depth(20)
    for order_id in {fields["order_id"] for _, fields in commands if "order_id" in fields} | set(range(301)):
        assert native.order(order_id) == reference.order(order_id)
    assert_hash_matches_spec(native, "end")


def to_extremes(command: Command) -> Command:
    """The same command near the top of every domain: huge ids, owners, prices and quantities.

    Small valid values are shifted up (keeping their order, so the stream crosses the same way);
    zero and the invalid values stay as they are.
    """
    op, fields = command
    shifted = dict(fields)
    if 0 < fields.get("order_id", 0) <= 300:
        shifted["order_id"] = 2**63 - 1 - (300 - fields["order_id"]) * 7919
    if fields["owner"] in range(4):
        shifted["owner"] = 2**32 - 1 - fields["owner"]
    if 0 < fields.get("price", 0) <= 200:
        shifted["price"] = 2**53 - 1 - 200 + fields["price"]
    if 0 < fields.get("qty", 0) <= 30:
        shifted["qty"] = 2**32 - 1 - 30 + fields["qty"]
    return op, shifted


@SETTINGS
@given(command_streams())
def test_native_matches_reference_after_every_command(commands: list[Command]) -> None:
    _run_side_by_side(commands)


@settings(SETTINGS, max_examples=100)
@given(command_streams())
def test_native_matches_reference_near_domain_limits(commands: list[Command]) -> None:
    """64-bit ids, 53-bit prices, 32-bit quantities whose level totals overflow 32 bits."""
    _run_side_by_side([to_extremes(command) for command in commands])


@settings(SETTINGS, max_examples=50)
@given(command_streams(), st.integers(2**40, 2**62))
def test_native_matches_reference_with_large_stamps(commands: list[Command], next_stamp: int) -> None:
    """Start both books from a restored empty state whose next stamp is already large."""
    data = build_snapshot(next_stamp, [])
    _run_side_by_side(commands, book_class("native").restore(data), ReferenceBook.restore(data))


@settings(SETTINGS, max_examples=10)
@given(command_streams(min_size=1000, max_size=3000, id_pool=300))
def test_native_matches_reference_on_long_streams(commands: list[Command]) -> None:
    """Longer histories over more ids: deeper books, longer queues, more levels."""
    _run_side_by_side(commands)


@SETTINGS
@given(command_streams())
def test_incremental_hash_equals_spec_recomputation(commands: list[Command]) -> None:
    """Both books' incrementally maintained hash equals the spec formula over the whole state."""
    books = [book_class("native")(), ReferenceBook()]
    for step, command in enumerate(commands):
        for book in books:
            apply(book, command)
            assert_hash_matches_spec(book, f"{type(book).__name__} step {step}: {command}")


@SETTINGS
@given(command_streams(), st.data())
def test_snapshot_restore_continue_equals_uninterrupted(commands: list[Command], data: st.DataObject) -> None:
    """Snapshot at a random point, restore (in either implementation), continue: same events/hashes.

    Restoring the native snapshot into the reference and vice versa also proves the bytes mean the same
    thing to both.
    """
    split = data.draw(st.integers(0, len(commands)), label="split")
    native_cls = book_class("native")
    uninterrupted = native_cls()
    expected = [apply(uninterrupted, c) for c in commands]
    hashes = []
    for cls in (native_cls, ReferenceBook):
        first = cls()
        for command in commands[:split]:
            apply(first, command)
        snapshot = first.snapshot()
        for restore_cls in (native_cls, ReferenceBook):
            restored = restore_cls.restore(snapshot)
            assert restored.snapshot() == snapshot
            for step in range(split, len(commands)):
                assert apply(restored, commands[step]) == expected[step], f"{cls}->{restore_cls} step {step}"
            hashes.append(restored.state_hash())
    assert set(hashes) == {uninterrupted.state_hash()}


def to_command_array(commands: list[Command], unknown_ops: list[int]) -> np.ndarray:
    ops = {"new": Op.NEW, "cancel": Op.CANCEL, "amend": Op.AMEND, "cancel_all": Op.CANCEL_ALL}
    array = np.zeros(len(commands), dtype=COMMAND_DTYPE)
    for row, (op, fields) in enumerate(commands):
        array[row]["op"] = ops[op]
        for name, value in fields.items():
            array[row][name] = value
    for row, op in zip(range(len(commands)), unknown_ops, strict=False):
        if op:
            array[row]["op"] = op
    return array


def batch_command_to_api(row: np.void) -> Command | None:
    """The per-command equivalent of one batch row (None for an unknown op)."""
    op = int(row["op"])
    if op == Op.NEW:
        names = ("order_id", "owner", "side", "price", "qty", "type", "tif", "post_only", "stp")
        return "new", {name: int(row[name]) for name in names}
    if op == Op.CANCEL:
        return "cancel", {"order_id": int(row["order_id"]), "owner": int(row["owner"])}
    if op == Op.AMEND:
        names = ("order_id", "owner", "price", "qty")
        return "amend", {name: int(row[name]) for name in names}
    if op == Op.CANCEL_ALL:
        return "cancel_all", {"owner": int(row["owner"])}
    return None


def _batchable(commands: list[Command]) -> list[Command]:
    """Drop values the packed command record cannot hold (negative or oversized for their column)."""
    limits = {name: np.iinfo(COMMAND_DTYPE[name]) for name in COMMAND_DTYPE.names if name != "_pad"}
    return [
        (op, fields)
        for op, fields in commands
        if all(limits[name].min <= value <= limits[name].max for name, value in fields.items())
    ]


@SETTINGS
@given(command_streams(batchable=True), st.lists(st.sampled_from([0, 0, 0, 0, 5, 255])))
def test_apply_batch_equals_per_command_api(commands: list[Command], unknown_ops: list[int]) -> None:
    array = to_command_array(_batchable(commands), unknown_ops)
    native_batch, reference_batch = book_class("native")(), ReferenceBook()
    per_command = ReferenceBook()
    expected: list[tuple[int, ...]] = []
    expected_cmd: list[int] = []
    expected_hashes: list[int] = []
    for index, row in enumerate(array):
        command = batch_command_to_api(row)
        if command is None:
            events = [(2, int(row["order_id"]), int(row["owner"]), int(row["side"]), int(row["price"]),
                       int(row["qty"]), 0, 0, 0, 0, 14)]  # fmt: skip
        else:
            events = apply(per_command, command)
        expected += events
        expected_cmd += [index] * len(events)
        expected_hashes.append(per_command.state_hash())
    for book in (native_batch, reference_batch):
        hashes = np.zeros(len(array), dtype=np.uint64)
        out = book.apply_batch(array, hashes)
        assert out.dtype == EVENT_DTYPE
        assert event_rows_to_tuples(out) == expected
        assert out["cmd"].tolist() == expected_cmd
        assert hashes.tolist() == expected_hashes  # the post-state hash of every command
        assert book.state_hash() == per_command.state_hash()
        assert book.snapshot() == per_command.snapshot()


@SETTINGS
@given(st.lists(command_streams(batchable=True, min_size=0, max_size=30), min_size=1, max_size=5))
def test_apply_batch_in_chunks_equals_one_batch(chunks: list[list[Command]]) -> None:
    whole = book_class("native")()
    chunked = book_class("native")()
    arrays = [to_command_array(_batchable(chunk), []) for chunk in chunks]
    expected = event_rows_to_tuples(whole.apply_batch(np.concatenate(arrays)))
    got: list[tuple[int, ...]] = []
    for array in arrays:
        got += event_rows_to_tuples(chunked.apply_batch(array))
    assert got == expected
    assert chunked.state_hash() == whole.state_hash()
