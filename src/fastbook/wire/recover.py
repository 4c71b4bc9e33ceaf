"""The tail-recovery messages (docs/wire.md, "Recovering a damaged journal tail").

A sequencer whose journal ends in a whole frame that fails its CRC (`CorruptTail`) asks the
replicas for the records they applied from the first seq it lost, on `<prefix>/<market>/recover/request`
(not retained): `{"v": 1, "type": "recover_request", "market": M, "from": N}`. Each edge answers on
`recover/answer/<client>` (only that client may publish there, docs/security.md):
`{"v": 1, "type": "recover_answer", "market": M, "from": N, "owner": k or null, "records": B64,
"names": [[seq, client order id or null], ...]}`: the raw 56-byte log records it holds from N on
(anonymous, as the log carried them, base64) and the client order ids of its own news and
cancel_alls from N on (what its reports told it), with its owner number.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastbook.engine.types import MAX_OWNER
from fastbook.wire.fields import CLIENT_ORDER_ID_RE, MAX_SEQ, dumps
from fastbook.wire.log import LOG_RECORD_DTYPE, _int_in

REQUEST_TYPE = "recover_request"
ANSWER_TYPE = "recover_answer"
MAX_ANSWER_NAMES = 1 << 16


@dataclass(frozen=True, slots=True)
class RecoverRequest:
    market: str
    first: int  # the first seq the sequencer lost


@dataclass(frozen=True, slots=True)
class RecoverAnswer:
    market: str
    first: int
    owner: int | None  # the answering client's owner number (None: not known to it)
    records: np.ndarray  # LOG_RECORD_DTYPE, seqs >= first, names lengths zeroed
    names: dict[int, str | None]  # seq -> client order id of the answerer's own new / cancel_all


def encode_recover_request(request: RecoverRequest) -> bytes:
    return dumps({"v": 1, "type": REQUEST_TYPE, "market": request.market, "from": request.first})


def _doc(payload: bytes | memoryview, kind: str) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(payload))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{kind} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != kind or doc.get("v") != 1:
        raise ValueError(f"not a {kind}")
    if not isinstance(doc.get("market"), str):
        raise ValueError(f"{kind}: market must be a string")
    return doc


def decode_recover_request(payload: bytes | memoryview) -> RecoverRequest:
    doc = _doc(payload, REQUEST_TYPE)
    return RecoverRequest(doc["market"], _int_in(doc.get("from"), 1, MAX_SEQ, "recover request from"))


def encode_recover_answer(answer: RecoverAnswer) -> bytes:
    body = {
        "v": 1,
        "type": ANSWER_TYPE,
        "market": answer.market,
        "from": answer.first,
        "owner": answer.owner,
        "records": base64.b64encode(np.ascontiguousarray(answer.records).tobytes()).decode("ascii"),
        "names": [[seq, coid] for seq, coid in sorted(answer.names.items())],
    }
    return dumps(body)


def decode_recover_answer(payload: bytes | memoryview) -> RecoverAnswer:
    """ValueError if the payload is not a well-formed answer (the records' fields are checked
    where they are used: each is re-executed and hash-checked before anything is written)."""
    doc = _doc(payload, ANSWER_TYPE)
    first = _int_in(doc.get("from"), 1, MAX_SEQ, "recover answer from")
    owner = doc.get("owner")
    if owner is not None:
        _int_in(owner, 1, MAX_OWNER, "recover answer owner")
    text = doc.get("records")
    if not isinstance(text, str):
        raise ValueError("recover answer: records must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("recover answer: records are not base64") from None
    if len(raw) % LOG_RECORD_DTYPE.itemsize:
        raise ValueError("recover answer: records are not whole 56-byte records")
    records = np.frombuffer(raw, LOG_RECORD_DTYPE).copy()
    if len(records) and (int(records["seq"].min()) < first or (np.diff(records["seq"]) != 1).any()):
        raise ValueError("recover answer: records must be consecutive seqs from 'from' on")
    rows = doc.get("names")
    if not isinstance(rows, list) or len(rows) > MAX_ANSWER_NAMES:
        raise ValueError("recover answer: names must be an array")
    names: dict[int, str | None] = {}
    for row in rows:
        if not isinstance(row, list) or len(row) != 2:
            raise ValueError("recover answer: each name must be [seq, client order id or null]")
        seq = _int_in(row[0], first, MAX_SEQ, "recover answer name seq")
        coid = row[1]
        if coid is not None and (not isinstance(coid, str) or not CLIENT_ORDER_ID_RE.fullmatch(coid)):
            raise ValueError(f"recover answer: invalid client order id {str(coid)[:70]!r}")
        names[seq] = coid
    return RecoverAnswer(doc["market"], first, owner, records, names)
