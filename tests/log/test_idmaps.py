"""The native id-map changes (`fastbook.log._idmaps.MapChanges`, log/_idmaps.pyx) against the Python
reference `fastbook.log.replica._MapChanges`, on random batches: after every `advance` call the same
`removed` dict, the same maps in the same insertion order (snapshots iterate `orders`), the same
position for the next call, and the same exception where the reference raises one. Bad input raises
a clear exception. (tests/test_replica_batch.py runs Replica.apply_batch with both classes.)"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbook.log._idmaps import MapChanges
from fastbook.log.replica import Replica, _MapChanges
from fastbook.wire.market import MarketSpec

SPEC = MarketSpec.parse("BTC-USD")
FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
IMPLEMENTATIONS: dict[str, Any] = {"reference": _MapChanges, "native": MapChanges}
OWNERS = [1, 2, 7, 300, 2**40]  # (300 and up are not CPython's cached small ints)
COIDS = ["a", "b", "c", "d", "e"]  # few: a client order id comes back once its order is gone

Orders = dict[int, tuple[int, Any]]
ByOwner = dict[int, dict[Any, int]]


@dataclass
class Case:
    orders: Orders  # the maps before the batch
    by_owner: ByOwner
    new_at: list[int]
    new_ids: list[int]
    new_owners: list[int]
    client_order_ids: list[str | None]
    gone_at: list[int]
    gone_ids: list[int]
    calls: list[int]  # the `upto` of each advance call, in order

    def columns(self, arrays: bool) -> tuple[Any, ...]:
        """The constructor's columns after the replica: lists, or numpy arrays of the dtypes
        Replica.apply_batch passes (flatnonzero's intp, COMMAND_DTYPE and EVENT_DTYPE fields)."""
        coids = self.client_order_ids
        if not arrays:
            return self.new_at, self.new_ids, self.new_owners, coids, self.gone_at, self.gone_ids
        return (
            np.array(self.new_at, dtype=np.intp),
            np.array(self.new_ids, dtype=np.int64),
            np.array(self.new_owners, dtype=u4_or_i8(self.new_owners)),
            coids,
            np.array(self.gone_at, dtype=u4_or_i8(self.gone_at)),
            np.array(self.gone_ids, dtype=np.int64),
        )


def u4_or_i8(values: list[int]) -> type[np.integer]:
    """uint32 as in the engine's rows, or int64 for values out of its range (wild cases)."""
    return np.uint32 if all(0 <= v < 2**32 for v in values) else np.int64


def maps_of(resting: list[tuple[int, int, Any]]) -> tuple[Orders, ByOwner]:
    orders: Orders = {}
    by_owner: ByOwner = {}
    for order_id, owner, coid in resting:
        orders[order_id] = (owner, coid)
        by_owner.setdefault(owner, {})[coid] = order_id
    return orders, by_owner


@st.composite
def valid_batches(draw: st.DrawFn) -> Case:
    """A batch as a sequencer's log gives one: news with increasing fresh ids, a client order id
    open at most once per owner (reused once its order is gone), gones of open orders (the entry's
    own new included: a taker filled at once) and of ids not in the maps (already gone, unknown)."""
    open_orders: dict[int, tuple[int, str]] = {}
    next_id = 1
    for _ in range(draw(st.integers(0, 6))):
        owner = draw(st.sampled_from(OWNERS))
        free = [c for c in COIDS if (owner, c) not in open_orders.values()]
        if free:
            open_orders[next_id] = (owner, draw(st.sampled_from(free)))
        next_id += draw(st.integers(1, 3))
    orders, by_owner = maps_of([(i, o, c) for i, (o, c) in open_orders.items()])
    case = Case(orders, by_owner, [], [], [], [], [], [], [])
    gone_before: list[int] = []
    n = draw(st.integers(0, 30))
    for i in range(n):
        if draw(st.integers(0, 9)) < 7:
            owner = draw(st.sampled_from(OWNERS))
            free = [c for c in COIDS if (owner, c) not in open_orders.values()]
            coid = draw(st.sampled_from(free)) if free else f"x{i}"
            case.new_at.append(i)
            case.new_ids.append(next_id)
            case.new_owners.append(owner)
            case.client_order_ids.append(coid)
            open_orders[next_id] = (owner, coid)
            next_id += draw(st.integers(1, 2))
        else:  # a cancel, amend or cancel_all: its client order id does not reach the maps
            case.client_order_ids.append(draw(st.sampled_from([*COIDS, None])))
        for _ in range(draw(st.integers(0, 3))):
            pick = draw(st.integers(0, 9))
            if pick < 8 and open_orders:
                order_id = draw(st.sampled_from(sorted(open_orders)))
                del open_orders[order_id]
                gone_before.append(order_id)
            elif pick < 9 and gone_before:
                order_id = draw(st.sampled_from(gone_before))  # gone twice: skipped
            else:
                order_id = draw(st.sampled_from([-1, 0, 10**12]))  # never in the maps
            case.gone_at.append(i)
            case.gone_ids.append(order_id)
    case.calls = sorted(draw(st.lists(st.integers(-2, n + 1), max_size=5))) + [n - 1]
    return case


@st.composite
def wild_batches(draw: st.DrawFn) -> Case:
    """Anything of the right shape: ids and client order ids that collide (an open id or client
    order id overwritten), None client order ids, entry indexes out of order, maps that disagree
    with each other (then the reference raises KeyError part way), calls in any order."""
    n = draw(st.integers(0, 12))
    ids = st.integers(0, 8)
    owners = st.sampled_from(OWNERS[:3])
    coids = st.sampled_from([*COIDS[:3], None])
    orders: Orders = {}
    by_owner: ByOwner = {}
    for _ in range(draw(st.integers(0, 6))):
        order_id, owner, coid = draw(ids), draw(owners), draw(coids)
        if draw(st.integers(0, 3)):
            orders[order_id] = (owner, coid)
        if draw(st.integers(0, 3)):
            by_owner.setdefault(owner, {})[coid] = order_id
    news = draw(st.lists(st.tuples(st.integers(0, max(n - 1, 0)), ids, owners), max_size=n if n else 0))
    gones = draw(st.lists(st.tuples(st.integers(0, max(n - 1, 0)), ids), max_size=12 if n else 0))
    if draw(st.booleans()):
        news.sort()
        gones.sort(key=lambda g: g[0])
    calls = draw(st.lists(st.integers(-1, n + 1), max_size=5)) + [n - 1]
    return Case(
        orders,
        by_owner,
        [at for at, _, _ in news],
        [order_id for _, order_id, _ in news],
        [owner for _, _, owner in news],
        [draw(coids) for _ in range(n)],
        [at for at, _ in gones],
        [order_id for _, order_id in gones],
        calls,
    )


def run(cls: Any, case: Case, arrays: bool) -> list[tuple[Any, ...]]:
    """What each advance call returned or raised, and the maps and position after it."""
    replica = Replica(SPEC)
    replica.orders, replica.by_owner = copy.deepcopy(case.orders), copy.deepcopy(case.by_owner)
    changes = cls(replica, *case.columns(arrays))
    out: list[tuple[Any, ...]] = []
    for upto in case.calls:
        try:
            result: tuple[Any, ...] = ("returned", list(changes.advance(upto).items()))
        except Exception as exc:  # what the reference raises (KeyError on maps that disagree)
            result = ("raised", type(exc), exc.args)
        assert all(type(order_id) is int for order_id in replica.orders)
        out.append(
            (
                upto,
                result,
                list(replica.orders.items()),  # in insertion order
                [(owner, list(by_id.items())) for owner, by_id in replica.by_owner.items()],
                changes.next_new,
                changes.next_gone,
            )
        )
    return out


def assert_same(case: Case) -> list[tuple[Any, ...]]:
    expected = run(_MapChanges, case, arrays=False)
    assert run(MapChanges, case, arrays=False) == expected
    assert run(MapChanges, case, arrays=True) == expected
    assert run(_MapChanges, case, arrays=True) == expected  # the reference reads the arrays too
    return expected


@settings(FUZZ, max_examples=400)
@given(valid_batches())
def test_native_equals_reference_on_valid_batches(case: Case) -> None:
    outcomes = assert_same(case)
    assert all(result[0] == "returned" for _, result, *_ in outcomes)  # consistent maps never raise
    # After the last call every change is made: the maps hold exactly the orders still open, the
    # resting ones first, then the news in entry order.
    still_open = list(case.orders.items())
    news = zip(case.new_at, case.new_ids, case.new_owners, strict=True)
    still_open += [(i, (o, case.client_order_ids[at])) for at, i, o in news]
    still_open = [(i, value) for i, value in still_open if i not in case.gone_ids]
    _, _, orders, by_owner, next_new, next_gone = outcomes[-1]
    assert orders == still_open
    assert all(by_id == [(c, i) for i, (o, c) in still_open if o == owner] for owner, by_id in by_owner)
    assert {o for _, (o, _) in still_open} <= {owner for owner, _ in by_owner}
    assert (next_new, next_gone) == (len(case.new_at), len(case.gone_at))


@settings(FUZZ, max_examples=400)
@given(wild_batches())
def test_native_equals_reference_on_colliding_ids_and_maps_that_disagree(case: Case) -> None:
    assert_same(case)


def test_a_batch_example_by_hand() -> None:
    """Owner 1 has "a" open as order 5. Entry 0: new 10 "b", filled at once, and 5 filled; entry 1:
    new 11 reuses "a"; entry 2: a cancel of 11 and of 99 (never open)."""
    for cls in IMPLEMENTATIONS.values():
        replica = Replica(SPEC)
        replica.orders, replica.by_owner = {5: (1, "a")}, {1: {"a": 5}}
        changes = cls(replica, [0, 1], [10, 11], [1, 1], ["b", "a", "x"], [0, 0, 2, 2], [10, 5, 11, 99])
        assert changes.advance(0) == {10: (1, "b"), 5: (1, "a")}
        assert replica.orders == {} and replica.by_owner == {1: {}}
        assert changes.advance(1) == {}
        assert replica.orders == {11: (1, "a")} and replica.by_owner == {1: {"a": 11}}
        assert changes.advance(1) == {}  # nothing left before entry 2
        assert changes.advance(2) == {11: (1, "a")}
        assert replica.orders == {} and (changes.next_new, changes.next_gone) == (2, 4)
        assert changes.advance(5) == {}


def test_empty_batches() -> None:
    for cls in IMPLEMENTATIONS.values():
        for arrays in ([], np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint32)):
            replica = Replica(SPEC)
            replica.orders, replica.by_owner = {3: (1, "a")}, {1: {"a": 3}}
            changes = cls(replica, arrays, arrays, arrays, [], arrays, arrays)
            assert changes.advance(-1) == {} and changes.advance(0) == {}
            assert replica.orders == {3: (1, "a")} and replica.by_owner == {1: {"a": 3}}


NOT_AN_ENTRY = r"is not an entry index \(client_order_ids"


@pytest.mark.parametrize(
    "columns, message",
    [
        (([0, 1], [10], [1], ["a", "b"], [], []), r"new_at, new_ids, new_owners have lengths 2, 1, 1"),
        (([0], [10], [1, 2], ["a"], [], []), r"new_at, new_ids, new_owners have lengths 1, 1, 2"),
        (([], [], [], ["a"], [0, 0], [3]), r"gone_at, gone_ids have lengths 2, 1"),
        (([0, 2], [10, 11], [1, 1], ["a", "b"], [], []), rf"new_at\[1\] = 2 {NOT_AN_ENTRY} has 2\)"),
        (([-1], [10], [1], ["a"], [], []), rf"new_at\[0\] = -1 {NOT_AN_ENTRY} has 1\)"),
    ],
)
def test_mismatched_columns_raise_the_same_value_error(columns: tuple[Any, ...], message: str) -> None:
    for cls in IMPLEMENTATIONS.values():
        with pytest.raises(ValueError, match=f"^{message}$"):
            cls(Replica(SPEC), *columns)


GOOD_COLUMNS = {"new_at": [0], "new_ids": [10], "new_owners": [1], "client_order_ids": ["a"], "gone_at": [0],
                "gone_ids": [3]}  # fmt: skip


@pytest.mark.parametrize(
    "name, value, error, message",
    [
        ("new_at", [0.5], TypeError, "new_at must hold integers, not float"),
        ("new_at", np.array([0.0]), TypeError, "new_at must hold integers, not buffer format 'd'"),
        ("new_ids", ["10"], TypeError, "new_ids must hold integers, not str"),
        ("new_owners", [None], TypeError, "new_owners must hold integers, not NoneType"),
        ("gone_at", [True], TypeError, "gone_at must hold integers, not bool"),
        ("gone_at", [[0]], TypeError, "gone_at must hold integers, not list"),
        ("gone_at", 0, TypeError, "gone_at must be a sequence of integers, not int"),
        ("gone_at", np.zeros((1, 1), np.int64), ValueError, "gone_at must be one-dimensional"),
        ("gone_at", np.int64(0), ValueError, "gone_at must be one-dimensional"),
        ("gone_ids", np.array([3], ">i8"), TypeError, "gone_ids must hold integers, not buffer format '>q'"),
        ("gone_ids", [2**63], OverflowError, "gone_ids holds a value past int64"),
        ("gone_ids", np.array([2**63], np.uint64), OverflowError, "gone_ids holds a value past int64"),
        ("gone_ids", np.array([None], object), TypeError, "gone_ids must hold integers, not NoneType"),
        ("client_order_ids", 5, TypeError, "'int' object is not iterable"),
    ],
)
def test_the_native_class_refuses_columns_that_are_not_integers(
    name: str, value: Any, error: type[Exception], message: str
) -> None:
    replica = Replica(SPEC)
    columns = {**GOOD_COLUMNS, name: value}
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        MapChanges(replica, **columns)
    # __init__ called again on a live object that failed: nothing half read is left to advance
    changes = MapChanges(replica, **GOOD_COLUMNS)
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        changes.__init__(replica, **columns)  # type: ignore[misc]
    assert changes.advance(5) == {} and replica.orders == {}


def test_integer_columns_of_every_kind_read_alike() -> None:
    """Numpy arrays of every integer type, strided and reversed views, object arrays, tuples,
    iterators and numpy integers in a list all give the changes the lists give."""
    coids: list[str | None] = ["b", None, "a"]
    case = Case({5: (1, "a")}, {1: {"a": 5}}, [0, 2], [7, 9], [1, 3], coids, [0, 2, 2], [5, 9, 4], [2])
    expected = run(_MapChanges, case, arrays=False)
    rows = np.zeros(3, dtype=[("pad", "u1"), ("owner", "u2"), ("id", "i8")])  # unaligned fields
    rows["owner"], rows["id"] = [1, 3, 0], [7, 9, 0]
    dtypes = ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", np.intp)
    forms: list[Any] = [lambda v, dtype=dtype: np.array(v, dtype=dtype) for dtype in dtypes]
    forms += [
        lambda v: np.array(v[::-1], dtype=np.int64)[::-1],
        lambda v: np.repeat(np.array(v, dtype=np.int64), 2)[::2],
        lambda v: np.array(v, dtype=object),
        tuple,
        iter,
        lambda v: [np.int32(x) for x in v],
    ]
    for form in forms:
        converted = Case(**{**case.__dict__})
        for name in ("new_at", "new_ids", "new_owners", "gone_at", "gone_ids"):
            setattr(converted, name, form(getattr(case, name)))
        assert run_native(converted) == expected
    strided = Case(**{**case.__dict__})
    strided.new_owners, strided.new_ids = rows["owner"][:2], rows["id"][:2]  # type: ignore[assignment]
    assert run_native(strided) == expected


def run_native(case: Case) -> list[tuple[Any, ...]]:
    """`run` of the native class on the case's columns as they are (any form)."""
    replica = Replica(SPEC)
    replica.orders, replica.by_owner = copy.deepcopy(case.orders), copy.deepcopy(case.by_owner)
    columns = (case.new_at, case.new_ids, case.new_owners, case.client_order_ids, case.gone_at, case.gone_ids)
    changes = MapChanges(replica, *columns)
    out = []
    for upto in case.calls:
        removed = list(changes.advance(upto).items())
        out.append((upto, ("returned", removed), list(replica.orders.items()),
                    [(owner, list(by_id.items())) for owner, by_id in replica.by_owner.items()],
                    changes.next_new, changes.next_gone))  # fmt: skip
    return out


def test_the_native_class_refuses_maps_of_another_shape() -> None:
    """Where the reference would take what a Replica never holds, a TypeError (never a crash)."""
    NOT_A_PAIR = r"replica.orders\[10\] must be an \(owner, client order id\) tuple"
    shapes: list[tuple[Any, Any, str]] = [
        (None, {}, "replica.orders must be a dict, not NoneType"),
        ({}, [], "replica.by_owner must be a dict, not list"),
        ({}, {1: [("a", 3)]}, "a replica.by_owner value must be a dict, not list"),
        ({10: [1, "b"]}, {1: {"b": 10}}, NOT_A_PAIR),
        ({10: (1, "b", 0)}, {1: {"b": 10}}, NOT_A_PAIR),
    ]
    for orders, by_owner, message in shapes:
        replica = Replica(SPEC)
        replica.orders, replica.by_owner = orders, by_owner
        with pytest.raises(TypeError, match=message):
            MapChanges(replica, [0], [11], [1], ["a"], [0], [10]).advance(0)


def test_a_client_order_id_list_that_shrank_raises_index_error() -> None:
    coids: list[str | None] = ["a", "b"]
    for cls in IMPLEMENTATIONS.values():
        replica = Replica(SPEC)
        changes = cls(replica, [0, 1], [10, 11], [1, 1], coids, [], [])
        del coids[1:]
        with pytest.raises(IndexError):
            changes.advance(1)
        coids.append("b")


def test_an_unhashable_client_order_id_raises_the_references_type_error() -> None:
    case = Case({}, {}, [0, 1], [10, 11], [1, 1], ["a", ["b"]], [0], [10], [1, 1])  # type: ignore[list-item]
    outcomes = assert_same(case)
    assert outcomes[0][1][0] == "raised" and outcomes[0][1][1] is TypeError


def test_the_replica_uses_the_selected_backends_class(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Replica(MarketSpec.parse("BTC-USD")).map_changes is MapChanges
    monkeypatch.setenv("FASTBOOK_BACKEND", "reference")
    assert Replica(MarketSpec.parse("BTC-USD")).map_changes is _MapChanges
