# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Native reader of log messages in the exact form the sequencer writes them (docs/wire.md).

`parse_log_message(payload)` returns the message's fields and its entries as numpy columns (engine
commands ready for `Book.apply_batch`, seqs, post-state hashes) plus the client and client order
ids, or None if the payload is not in the canonical form (no whitespace, fields in order, the
escapes `encode_entry` writes). None is not an error: the caller then decodes it with
`fastbook.wire.decode_log_message`, which accepts any valid JSON and names what is wrong. Every
value the fast path accepts passes the same range checks as `fastbook.wire.decode_entry`, so the
two agree on every message the fast path reads (tests/test_logparse.py).

Why: decoding a log message in Python (json.loads, then a LogEntry per entry with its checks) was
about half of a replica's time per entry.
"""

from cpython.unicode cimport PyUnicode_DecodeASCII
from cpython.object cimport PyObject
from libc.string cimport memcmp
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from cursor cimport Cursor, expect
from contract cimport CommandRec, MAX_ORDER_ID, MAX_OWNER, MAX_PRICE, MAX_QTY

import numpy as np

from fastbook.engine.types import COMMAND_DTYPE

cdef enum:
    MAX_ID_LEN = 64
cdef int64_t MAX_SEQ = 0x7FFFFFFFFFFFFFFF
# The ranges of entry fields 4-13 (wire.decode_entry): op, order_id, owner, side, type, tif, stp,
# post_only, price, qty.
cdef int64_t[10] FIELD_LOW = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
cdef int64_t[10] FIELD_HIGH = [4, MAX_ORDER_ID, MAX_OWNER, 2, 2, 3, 3, 1, MAX_PRICE, MAX_QTY]




cdef inline bint read_uint(Cursor* c, int64_t* out) noexcept:
    """A JSON integer without sign, at most 19 digits, no leading zero; fits int64."""
    cdef const uint8_t* start = c.p
    cdef uint64_t v = 0
    cdef int digits = 0
    while c.p < c.end and c.p[0] >= 48 and c.p[0] <= 57:
        v = v * 10 + (c.p[0] - 48)
        c.p += 1
        digits += 1
        if digits > 19:
            return False
    if digits == 0 or (digits > 1 and start[0] == 48) or v > <uint64_t>0x7FFFFFFFFFFFFFFF:
        return False
    out[0] = <int64_t>v
    return True


cdef inline bint read_ranged(Cursor* c, int64_t low, int64_t high, int64_t* out) noexcept:
    return read_uint(c, out) and low <= out[0] <= high


cdef inline int hex_digit(uint8_t ch) noexcept:
    if 48 <= ch <= 57:
        return ch - 48
    if 97 <= ch <= 102:
        return ch - 87
    if 65 <= ch <= 70:
        return ch - 55
    return -1


cdef inline bint read_hash(Cursor* c, uint64_t* out) noexcept:
    """"<16 hex digits>" (either case, as parse_hash_hex takes)."""
    cdef uint64_t v = 0
    cdef int i, d
    if c.end - c.p < 18 or c.p[0] != 34 or c.p[17] != 34:
        return False
    for i in range(1, 17):
        d = hex_digit(c.p[i])
        if d < 0:
            return False
        v = (v << 4) | <uint64_t>d
    c.p += 18
    out[0] = v
    return True


cdef inline bint client_char(uint8_t ch) noexcept:
    # [A-Za-z0-9._-] (wire.CLIENT_ID_RE)
    return (48 <= ch <= 57) or (65 <= ch <= 90) or (97 <= ch <= 122) or ch == 46 or ch == 95 or ch == 45


cdef struct Name:
    const uint8_t* start  # the last name read (its bytes in the payload), NULL before the first
    Py_ssize_t size
    PyObject* text  # its str (borrowed: the caller keeps a reference)


cdef object read_name(Cursor* c, Name* last=NULL):
    """A JSON string of 1-64 client id characters (no escapes can occur): str, or None if not.
    With `last`: the same str object as the last name read when the bytes are the same (the
    entries of a log message mostly come from a few clients: no new str, and its hash is known)."""
    cdef const uint8_t* start
    cdef Py_ssize_t size
    if c.p >= c.end or c.p[0] != 34:
        return None
    c.p += 1
    start = c.p
    while c.p < c.end and client_char(c.p[0]):
        c.p += 1
    if c.p >= c.end or c.p[0] != 34 or c.p == start or c.p - start > MAX_ID_LEN:
        return None
    c.p += 1
    size = c.p - 1 - start
    if last != NULL and last.start != NULL and last.size == size and memcmp(last.start, start, size) == 0:
        return <object>last.text
    name = PyUnicode_DecodeASCII(<const char*>start, size, NULL)
    if last != NULL:
        last.start, last.size, last.text = start, size, <PyObject*>name
    return name


cdef object read_order_id(Cursor* c, bint* ok):
    """A client order id: JSON string of 1-64 printable ASCII characters without spaces
    (wire.CLIENT_ORDER_ID_RE), with `\\"` and `\\\\` the only escapes (json_string writes no
    others for these characters); or null. Sets ok=False if neither."""
    cdef char buf[MAX_ID_LEN]
    cdef int n = 0
    cdef uint8_t ch
    ok[0] = False
    if expect(c, b"null", 4):
        ok[0] = True
        return None
    if c.p >= c.end or c.p[0] != 34:
        return None
    c.p += 1
    while c.p < c.end:
        ch = c.p[0]
        if ch == 34:
            break
        if ch == 92:  # backslash
            if c.end - c.p < 2 or (c.p[1] != 34 and c.p[1] != 92):
                return None
            ch = c.p[1]
            c.p += 1
        elif ch < 0x21 or ch > 0x7E:
            return None
        if n == MAX_ID_LEN:
            return None
        buf[n] = <char>ch
        n += 1
        c.p += 1
    if c.p >= c.end or n == 0:
        return None
    c.p += 1
    ok[0] = True
    return PyUnicode_DecodeASCII(buf, n, NULL)


def parse_log_message(payload):
    """(market, head, replay, seqs int64[n], hashes uint64[n], commands COMMAND_DTYPE[n],
    clients list[str], client order ids list[str | None]) of a canonical log message, else None.
    `payload`: bytes or any buffer of bytes."""
    cdef const uint8_t[::1] data = payload
    cdef Cursor c
    if data.shape[0] == 0:
        return None
    c.p = &data[0]
    c.end = c.p + data.shape[0]
    cdef int64_t head = 0
    cdef bint replay
    if not expect(&c, b'{"v":1,"market":', 16):
        return None
    market = read_name(&c)
    if market is None or not expect(&c, b',"head":', 8) or not read_ranged(&c, 0, MAX_SEQ, &head):
        return None
    if expect(&c, b',"replay":false', 15):
        replay = False
    elif expect(&c, b',"replay":true', 14):
        replay = True
    else:
        return None
    if not expect(&c, b',"entries":[', 12):
        return None
    # Every entry takes at least 46 bytes: an upper bound on the count without a first pass.
    cdef Py_ssize_t cap = (c.end - c.p) // 46 + 1
    seqs_arr = np.empty(cap, dtype=np.int64)
    hashes_arr = np.empty(cap, dtype=np.uint64)
    commands_arr = np.zeros(cap, dtype=COMMAND_DTYPE)
    cdef int64_t[::1] seqs = seqs_arr
    cdef uint64_t[::1] hashes = hashes_arr
    cdef uint8_t[::1] raw = commands_arr.view(np.uint8)
    cdef CommandRec* cmds = <CommandRec*>&raw[0]
    cdef list clients = []  # (holds every str `last` points to)
    cdef list coids = []
    cdef Name last
    last.start = NULL
    cdef Py_ssize_t n = 0
    cdef int64_t v[10]
    cdef int k
    cdef bint ok
    cdef CommandRec* rec
    if expect(&c, b"]}", 2):
        if c.p != c.end:
            return None
        return market, head, replay, seqs_arr[:0], hashes_arr[:0], commands_arr[:0], clients, coids
    while True:
        if n == cap:
            return None
        rec = &cmds[n]
        if not expect(&c, b"[", 1) or not read_ranged(&c, 1, MAX_SEQ, &seqs[n]):
            return None
        if not expect(&c, b",", 1) or not read_hash(&c, &hashes[n]) or not expect(&c, b",", 1):
            return None
        client = read_name(&c, &last)
        if client is None or not expect(&c, b",", 1):
            return None
        coid = read_order_id(&c, &ok)
        if not ok or not expect(&c, b",", 1):
            return None
        # op, order_id, owner, side, type, tif, stp, post_only, price, qty: each in its range
        for k in range(10):
            if not read_ranged(&c, FIELD_LOW[k], FIELD_HIGH[k], &v[k]):
                return None
            if c.p >= c.end or c.p[0] != (93 if k == 9 else 44):  # "]" after the last, else ","
                return None
            c.p += 1
        if coid is None and v[0] != 4:  # only a cancel_all may have no client order id
            return None
        rec.op, rec.order_id, rec.owner, rec.side = <uint8_t>v[0], v[1], <uint32_t>v[2], <uint8_t>v[3]
        rec.type, rec.tif, rec.stp, rec.post_only = <uint8_t>v[4], <uint8_t>v[5], <uint8_t>v[6], <uint8_t>v[7]
        rec.price, rec.qty = v[8], v[9]
        clients.append(client)
        coids.append(coid)
        n += 1
        if expect(&c, b",", 1):
            continue
        if expect(&c, b"]}", 2) and c.p == c.end:
            break
        return None
    return market, head, replay, seqs_arr[:n], hashes_arr[:n], commands_arr[:n], clients, coids
