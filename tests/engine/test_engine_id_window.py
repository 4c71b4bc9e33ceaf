"""The native book's id window (engine/order.pxd): ids in sequence map straight to pool slots, every
other id lives in a hash table, and the window starts, grows, slides (moving the ids it leaves behind
into the hash table) and shrinks as ids go by. None of that may show: these streams drive every one
of those moves with id patterns a sequencer or an API user produces (in sequence, strided, far jumps,
ids behind the window, ids ahead of it that it later slides over, random ids) and check the native
book against the reference book after every command, then batch against per-command, and a
snapshot restored mid-stream against never snapshotting.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbook.engine.reference import ReferenceBook
from fastbook.engine.types import COMMAND_DTYPE, Op, event_rows_to_tuples
from tests.support.engine_spec import book_class

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
MAX_ID = 2**63 - 1

Command = tuple[str, dict[str, int]]


class IdPattern:
    """Where the next new order's id comes from: mostly the next id after a stride, sometimes a jump
    ahead, an id far behind, an id reused from a finished order, or a random 63-bit id."""

    def __init__(self, rng: random.Random, stride: int, jump_rate: int) -> None:
        self.rng = rng
        self.stride = stride
        self.jump_rate = jump_rate
        self.next_id = rng.choice([1, 1000, 2**40])
        self.used: list[int] = []

    def new_id(self) -> int:
        rng = self.rng
        roll = rng.randrange(100)
        if roll < self.jump_rate:  # far ahead: past the window's reach
            self.next_id += rng.choice([200, 5000, 100_000, 2**32])
        elif roll < self.jump_rate + 3 and self.used:  # an old id again (a duplicate if still open)
            return rng.choice(self.used)
        elif roll < self.jump_rate + 5:  # behind everything so far
            return rng.randint(1, max(1, self.next_id - 1))
        elif roll < self.jump_rate + 6:  # anywhere, up to the top of the id range
            return rng.randint(1, MAX_ID)
        order_id = min(self.next_id, MAX_ID)
        self.next_id += rng.randint(1, self.stride)
        self.used.append(order_id)
        return order_id


def id_window_stream(seed: int, length: int, stride: int, jump_rate: int) -> list[Command]:
    """New orders (most rest: deep books make the window slide with orders in it), cancels and amends
    of open orders (found or not), and fills, over the id pattern."""
    rng = random.Random(seed)
    ids = IdPattern(rng, stride, jump_rate)
    open_ids: list[int] = []
    commands: list[Command] = []
    for _ in range(length):
        roll = rng.randrange(100)
        if roll < 12 and open_ids:
            order_id = open_ids.pop(rng.randrange(len(open_ids)))
            commands.append(("cancel", {"order_id": order_id, "owner": order_id % 3}))
        elif roll < 18 and open_ids:
            order_id = rng.choice(open_ids)
            price = rng.choice([0, rng.randint(95, 105)])
            qty = rng.randint(1, 20)
            fields = {"order_id": order_id, "owner": order_id % 3, "price": price, "qty": qty}
            commands.append(("amend", fields))
        elif roll < 19:
            commands.append(("cancel_all", {"owner": rng.randrange(3)}))
        else:
            order_id = ids.new_id()
            side = rng.choice([1, 2])
            # Mostly away from the touch (they rest), sometimes crossing (fills take orders out).
            crossing = rng.randrange(4) == 0
            price = (rng.randint(99, 106) if side == 1 else rng.randint(94, 101)) if crossing else (
                rng.randint(80, 99) if side == 1 else rng.randint(101, 120)
            )
            fields = {"order_id": order_id, "owner": order_id % 3, "side": side, "price": price,
                      "qty": rng.randint(1, 20)}  # fmt: skip
            commands.append(("new", fields))
            open_ids.append(order_id)
    return commands


def apply(book: Any, command: Command) -> list[tuple[int, ...]]:
    op, fields = command
    return [tuple(event) for event in getattr(book, op)(**fields)]


def as_batch(commands: list[Command]) -> np.ndarray:
    rows = np.zeros(len(commands), dtype=COMMAND_DTYPE)
    for row, (op, fields) in zip(rows, commands, strict=True):
        row["op"] = int(getattr(Op, op.upper()))
        for name, value in fields.items():
            row[name] = value
        if op == "new":
            row["type"], row["tif"] = 1, 1
    return rows


streams = st.tuples(
    st.integers(0, 2**32 - 1),  # seed
    st.integers(200, 2500),  # length: enough orders to grow the window several times
    st.sampled_from([1, 1, 2, 3, 40, 300]),  # stride between ids in sequence
    st.sampled_from([0, 0, 1, 5]),  # % of news that jump far ahead
)


@SETTINGS
@given(streams)
def test_every_window_move_matches_the_reference(stream: tuple[int, int, int, int]) -> None:
    commands = id_window_stream(*stream)
    native = book_class("native")()
    reference = ReferenceBook()
    looked_up: set[int] = set()
    for step, command in enumerate(commands):
        where = f"step {step}: {command}"
        assert apply(native, command) == apply(reference, command), where
        assert native.state_hash() == reference.state_hash(), where
        order_id = command[1].get("order_id")
        if order_id is not None:
            looked_up.add(order_id)
            assert native.order(order_id) == reference.order(order_id), where
    assert native.snapshot() == reference.snapshot()
    for order_id in looked_up:  # every id the stream touched: open ones found, finished ones not
        assert native.order(order_id) == reference.order(order_id), order_id


@SETTINGS
@given(streams)
def test_batch_matches_per_command_over_window_moves(stream: tuple[int, int, int, int]) -> None:
    commands = id_window_stream(*stream)
    per_command = book_class("native")()
    expected = [event for command in commands for event in apply(per_command, command)]
    batched = book_class("native")()
    assert event_rows_to_tuples(batched.apply_batch(as_batch(commands))) == expected
    assert batched.snapshot() == per_command.snapshot()


@SETTINGS
@given(streams, st.floats(0.1, 0.9))
def test_restore_mid_stream_then_continue(stream: tuple[int, int, int, int], cut_at: float) -> None:
    """A restored book places its window over the snapshot's ids (dense) or past them (sparse); either
    way it must go on exactly like the book that was never snapshotted."""
    commands = id_window_stream(*stream)
    cut = int(len(commands) * cut_at)
    Book = book_class("native")
    original = Book()
    for command in commands[:cut]:
        apply(original, command)
    restored = Book.restore(original.snapshot())
    for step, command in enumerate(commands[cut:], start=cut):
        assert apply(restored, command) == apply(original, command), f"step {step}: {command}"
        order_id = command[1].get("order_id")
        if order_id is not None:
            assert restored.order(order_id) == original.order(order_id)
    assert restored.snapshot() == original.snapshot()


def test_a_long_sequence_with_resting_orders_left_behind() -> None:
    """200k ids in sequence where every fifth order rests forever far from the touch: the window
    grows, then slides with orders in it many times; every one of them must still be found."""
    Book = book_class("native")
    book = Book()
    resting = []
    for order_id in range(1, 200_001):
        if order_id % 5 == 0:
            book.new(order_id, 1, 1, 50, 1)  # a deep bid that never trades
            resting.append(order_id)
        else:
            book.new(order_id, 2, 2 if order_id % 2 else 1, 100, 1)  # buys and sells that cross
    assert len(book) - len(resting) in (0, 1)  # at most one crossing order is left open
    for order_id in resting[::997] + resting[-50:]:
        assert book.order(order_id)[:5] == (order_id, 1, 1, 50, 1)
    for order_id in resting:
        assert [event[0] for event in book.cancel(order_id, 1)] == [4]  # cancelled: it was found
    assert book.order(resting[0]) is None


def test_memory_comes_back_when_the_window_empties() -> None:
    """The window grows with the orders in it and shrinks again once they are gone and ids move on."""
    Book = book_class("native")
    book = Book()
    start = book.memory_usage()
    for order_id in range(1, 100_001):
        book.new(order_id, 1, 1, 50, 1)
    assert book.memory_usage() > start + 100_000 * (40 + 4)  # an order slot and a window slot each
    assert len(book.cancel_all(1)) == 100_000
    emptied = book.memory_usage()  # (the cancel_all's events grew the per-command event buffer)
    book.new(10**9, 1, 1, 50, 1)  # far ahead: the empty window moves there and shrinks
    assert book.memory_usage() < emptied - 100_000 * 4


def test_a_nearly_empty_window_shrinks_and_big_strides_stay_correct() -> None:
    """A dense phase grows the window; cancelling nearly everything and moving on in big id strides
    must empty it into the hash table and shrink it (instead of sliding a big, nearly empty window
    on every insert), and stay exactly the reference book all the way."""
    native = book_class("native")()
    reference = ReferenceBook()

    def both(op: str, **fields: int) -> None:
        assert apply(native, (op, fields)) == apply(reference, (op, fields)), (op, fields)

    for order_id in range(1, 20_001):
        side = 1 + order_id % 2  # bids at 90, asks at 110: nothing trades
        both("new", order_id=order_id, owner=1, side=side, price=90 if side == 1 else 110, qty=1)
    for order_id in range(1, 20_001):
        if order_id % 50:
            both("cancel", order_id=order_id, owner=1)
    assert len(native) == 400
    grown = native.memory_usage()  # a window of 32k slots (128 KiB) by now
    for step in range(2_000):
        order_id = 20_001 + (step + 1) * 5_000
        side = 1 + step % 2
        both("new", order_id=order_id, owner=2, side=side, price=89 if side == 1 else 111, qty=1)
    # The window emptied into the hash table and shrank to 64 slots: -128 KiB, while the hash table
    # grew by ~32 KiB for the 2,400 orders now in it.
    assert native.memory_usage() <= grown - 64_000
    assert native.snapshot() == reference.snapshot()
    for order_id in [*range(50, 20_001, 50), 20_001, 20_001 + 5_000 * 1_000, 20_001 + 5_000 * 2_000]:
        assert native.order(order_id) == reference.order(order_id)
