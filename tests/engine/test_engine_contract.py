"""engine/contract.pxd (the engine vocabulary in C) agrees with src/fastbook/engine/types.py.

The two are written by hand; this reads the .pxd as text and compares every enum value, every limit
constant and both record layouts (field names, C types, offsets, sizes) with the Python side. The
mutation tests change a copy of either side and check that the comparison notices.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import numpy as np
import pytest

from fastbook.engine import types

CONTRACT_PXD = Path(__file__).resolve().parents[2] / "engine" / "contract.pxd"

# The prefix each Python enum's members carry in C, where every enum shares one namespace.
C_PREFIX: dict[str, str] = {
    "Side": "",
    "OrderType": "",
    "Tif": "",
    "Stp": "STP_",
    "Op": "OP_",
    "EventType": "EV_",
    "Reject": "",
    "CancelReason": "CANCEL_",
}
# C-only members, with why Python has no twin: the engine's "no reject" value; an event carries
# reason 0 for it (Event.reason's default), and a Reject member would make 0 a valid reject code.
C_ONLY_MEMBERS: dict[str, dict[str, int]] = {"Reject": {"REJ_NONE": 0}}
LIMITS = ("MAX_ORDER_ID", "MAX_OWNER", "MAX_QTY", "MAX_PRICE")
RECORDS = {"CommandRec": "COMMAND_DTYPE", "EventRec": "EVENT_DTYPE"}
C_TYPES = {
    f"{sign}int{bits}_t": np.dtype(f"{'u' if sign else 'i'}{bits // 8}")
    for sign in ("", "u")
    for bits in (8, 16, 32, 64)
}


@dataclass(frozen=True)
class CField:
    name: str
    dtype: np.dtype
    offset: int


@dataclass(frozen=True)
class PxdContract:
    enums: dict[str, dict[str, int]]  # the class the block's comment names -> C name -> value
    limits: dict[str, int]
    structs: dict[str, tuple[list[CField], int]]  # name -> (fields, size)


def parse_pxd(text: str) -> PxdContract:
    """The enums, limits and packed structs of contract.pxd's text. Raises ValueError on a line
    inside a block that it cannot read, so a new construct is not silently skipped."""
    macros = {
        name: int(value, 0)
        for name, value in re.findall(r"static const int64_t (\w+) = INT64_C\((\w+)\);", text)
    }
    limits = {}
    for name, macro in re.findall(r'^\s*const int64_t (\w+) "(\w+)"', text, re.M):
        if macro not in macros:
            raise ValueError(f"{name} names {macro}, which the C block does not define")
        limits[name] = macros[macro]

    enums: dict[str, dict[str, int]] = {}
    structs: dict[str, tuple[list[CField], int]] = {}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        enum_head = re.fullmatch(r"cdef enum:(?:\s*#\s*(\w+))?\s*", line)
        struct_head = re.fullmatch(r"cdef packed struct (\w+):\s*", line)
        if not (enum_head or struct_head):
            if line.startswith(("cdef enum", "cdef struct", "cdef packed", "cdef union", "ctypedef")):
                raise ValueError(f"contract.pxd line {index + 1}: cannot read {line!r}")
            continue
        body = []
        for member in lines[index + 1 :]:
            if not member.startswith((" ", "\t")):
                break
            if member.strip() and not member.strip().startswith("#"):
                body.append(member.split("#", 1)[0].strip())
        if enum_head:
            if enum_head[1] is None:
                raise ValueError(f"contract.pxd line {index + 1}: an enum block must name its class")
            members = {}
            for member in body:
                parsed = re.fullmatch(r"(\w+) = (\d+)", member)
                if parsed is None:
                    raise ValueError(f"enum {enum_head[1]}: cannot read {member!r}")
                members[parsed[1]] = int(parsed[2])
            enums[enum_head[1]] = members
        else:
            assert struct_head is not None
            fields, offset = [], 0
            for member in body:
                parsed = re.fullmatch(r"(\w+) (\w+)", member)
                if parsed is None or parsed[1] not in C_TYPES:
                    raise ValueError(f"struct {struct_head[1]}: cannot read {member!r}")
                fields.append(CField(parsed[2], C_TYPES[parsed[1]], offset))
                offset += C_TYPES[parsed[1]].itemsize  # packed: no padding between fields
            structs[struct_head[1]] = (fields, offset)
    return PxdContract(enums, limits, structs)


def mismatches(
    pxd: PxdContract,
    enums: dict[str, type[enum.IntEnum]],
    limits: dict[str, int],
    dtypes: dict[str, np.dtype],
) -> list[str]:
    """Every disagreement between the .pxd and the Python side; empty when they agree."""
    found = []
    if set(pxd.enums) != set(enums):
        found.append(f"enums: .pxd has {sorted(pxd.enums)}, types.py {sorted(enums)}")
    for name in sorted(set(pxd.enums) & set(enums)):
        prefix = C_PREFIX.get(name, "")  # a new enum without an entry: see test_every_python_enum_...
        expected = {prefix + member.name: int(member) for member in enums[name]}
        expected.update(C_ONLY_MEMBERS.get(name, {}))
        in_c, in_py = pxd.enums[name].items(), expected.items()
        if in_c != in_py:
            only_c, only_py = sorted(in_c - in_py), sorted(in_py - in_c)
            found.append(f"enum {name}: only in .pxd {only_c}, only in types.py {only_py}")
    if pxd.limits != limits:
        found.append(f"limits: .pxd {pxd.limits} != types.py {limits}")
    if set(pxd.structs) != set(RECORDS):
        found.append(f"structs: .pxd has {sorted(pxd.structs)}, expected {sorted(RECORDS)}")
    for struct, dtype_name in RECORDS.items():
        if struct not in pxd.structs:
            continue
        fields, size = pxd.structs[struct]
        dtype = dtypes[dtype_name]
        c_layout = [(f.name, f.dtype.str, f.offset) for f in fields]
        assert dtype.fields is not None
        py_layout = [(name, dtype.fields[name][0].str, dtype.fields[name][1]) for name in dtype.names or ()]
        for c_field, py_field in zip_longest(c_layout, py_layout):
            if c_field != py_field:  # (name, type, offset); the first difference is enough
                found.append(f"{struct} vs {dtype_name}: .pxd {c_field} != types.py {py_field}")
                break
        if size != dtype.itemsize:
            found.append(f"{struct} vs {dtype_name}: {size} bytes in the .pxd, {dtype.itemsize} in types.py")
    return found


def python_enums() -> dict[str, type[enum.IntEnum]]:
    """Every IntEnum types.py defines."""
    return {
        name: value
        for name, value in vars(types).items()
        if isinstance(value, type) and issubclass(value, enum.IntEnum) and value.__module__ == types.__name__
    }


PY_LIMITS = {name: getattr(types, name) for name in LIMITS}
PY_DTYPES = {name: getattr(types, name) for name in RECORDS.values()}


def contract_mismatches(pxd_text: str) -> list[str]:
    return mismatches(parse_pxd(pxd_text), python_enums(), PY_LIMITS, PY_DTYPES)


def test_contract_pxd_agrees_with_types_py() -> None:
    pxd = parse_pxd(CONTRACT_PXD.read_text())
    # The parser read what is there (an empty parse would agree with nothing but fail below).
    assert set(pxd.enums) == set(C_PREFIX) and set(pxd.structs) == set(RECORDS)
    assert set(pxd.limits) == set(LIMITS)
    assert contract_mismatches(CONTRACT_PXD.read_text()) == []


def test_every_python_enum_has_a_c_prefix() -> None:
    assert set(python_enums()) == set(C_PREFIX)


def _mutate(old: str, new: str, after: str = "") -> str:
    """contract.pxd's text with the first `old` after `after` replaced by `new` (it must be there)."""
    text = CONTRACT_PXD.read_text()
    start = text.index(after) if after else 0
    at = text.index(old, start)
    return text[:at] + new + text[at + len(old) :]


# (id, text in contract.pxd, what it becomes, the struct it is in or "", how the mismatch is reported)
PXD_MUTATIONS = [
    ("enum-value", "OP_CANCEL_ALL = 4", "OP_CANCEL_ALL = 5", "", "enum Op"),
    ("enum-member-dropped", "    INVALID_OP = 14\n", "", "", "enum Reject"),
    ("enum-member-added", "EV_AMENDED = 6", "EV_AMENDED = 6\n    EV_EXPIRED = 7", "", "enum EventType"),
    ("enum-member-renamed", "CANCEL_FOK = 3", "FOK_CANCEL = 3", "", "enum CancelReason"),
    ("enum-class-renamed", "cdef enum:  # Tif", "cdef enum:  # TimeInForce", "", "enums:"),
    ("limit-value", "INT64_C(0x1FFFFFFFFFFFFF)", "INT64_C(0x3FFFFFFFFFFFFF)", "", "limits"),
    ("limit-dropped", '    const int64_t MAX_QTY "FB_MAX_QTY"\n', "", "", "limits"),
    ("field-widened", "uint32_t owner", "uint64_t owner", "CommandRec", "CommandRec vs COMMAND_DTYPE"),
    ("field-signedness", "int64_t qty", "uint64_t qty", "CommandRec", "CommandRec vs COMMAND_DTYPE"),
    ("fields-swapped", "int64_t price\n    int64_t qty", "int64_t qty\n    int64_t price", "EventRec",
     "EventRec vs EVENT_DTYPE"),
    ("field-renamed", "int64_t other_remaining", "int64_t other_left", "EventRec", "EventRec vs EVENT_DTYPE"),
    ("padding-dropped", "    uint8_t _pad\n", "", "EventRec", "EventRec vs EVENT_DTYPE"),
    ("struct-renamed", "struct EventRec:", "struct EventRecord:", "", "structs:"),
]


@pytest.mark.parametrize(
    ("old", "new", "struct", "reported"), [pytest.param(*m[1:], id=m[0]) for m in PXD_MUTATIONS]
)
def test_a_changed_pxd_is_caught(old: str, new: str, struct: str, reported: str) -> None:
    found = contract_mismatches(_mutate(old, new, after=f"struct {struct}:" if struct else ""))
    assert any(line.startswith(reported) for line in found), found


def test_a_changed_types_py_is_caught() -> None:
    pxd = parse_pxd(CONTRACT_PXD.read_text())
    enums = python_enums()
    enums["Side"] = enum.IntEnum("Side", {"BUY": 1, "SELL": 3})
    assert any(line.startswith("enum Side") for line in mismatches(pxd, enums, PY_LIMITS, PY_DTYPES))

    limits = dict(PY_LIMITS, MAX_OWNER=2**31 - 1)
    assert any(line.startswith("limits") for line in mismatches(pxd, python_enums(), limits, PY_DTYPES))

    event = types.EVENT_DTYPE
    assert event.fields is not None
    unsigned_qty = np.dtype([(name, "u8" if name == "qty" else code) for name, code in event.descr])
    # The same fields at the same offsets, with 8 bytes of trailing padding.
    padded = np.dtype(
        {
            "names": list(event.fields),
            "formats": [event.fields[name][0] for name in event.fields],
            "offsets": [event.fields[name][1] for name in event.fields],
            "itemsize": event.itemsize + 8,
        }
    )
    for changed in (unsigned_qty, padded):
        found = mismatches(pxd, python_enums(), PY_LIMITS, dict(PY_DTYPES, EVENT_DTYPE=changed))
        assert any(line.startswith("EventRec vs EVENT_DTYPE") for line in found), changed


def test_an_unreadable_line_is_an_error_not_a_skip() -> None:
    with pytest.raises(ValueError, match="cannot read"):
        parse_pxd(_mutate("uint32_t owner", "uint32_t[2] owner", after="struct CommandRec:"))
    with pytest.raises(ValueError, match="must name its class"):
        parse_pxd(_mutate("cdef enum:  # Side", "cdef enum:"))
    with pytest.raises(ValueError, match="cannot read"):
        parse_pxd(_mutate("cdef packed struct CommandRec:", "ctypedef struct CommandRec:"))
