# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Native reader of client order messages in their common form (docs/wire.md, "Orders").

`parse_orders(payload, tick_places, tick_units, lot_places, lot_units)` returns the message's
orders as engine command rows (COMMAND_DTYPE, owner and order_id left 0 for the sequencer to fill)
plus their client order ids, or None if the message is not one it reads entirely. None is not an
error: the caller then decodes it with `fastbook.wire.decode_orders`, which accepts any valid JSON
and turns whatever is wrong into rejects. What this reader takes is a strict subset of what the
Python decoder accepts: an object or a non-empty array of at most 10,000 objects, JSON whitespace
between tokens, keys among op, id, side, type, price, qty, tif, post_only, stp (each at most once,
any order, exactly the sets `wire.FIELDS_BY_OP` allows; "market" is left to the Python decoder),
string values of printable ASCII without escapes, post_only true/false, and every value checked
with the decoder's rules (`wire.decode_order`, `MarketSpec._to_steps`). Any message it returns
rows for decodes to the same commands in Python, with no reject (tests/test_orderparse.py).

Why: the sequencer spent about 3 us per order in json.loads and decode_order.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcmp, memset

from cursor cimport Cursor, expect
from contract cimport (
    BUY,
    CommandRec,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    MAX_PRICE,
    MAX_QTY,
    OP_AMEND,
    OP_CANCEL,
    OP_CANCEL_ALL,
    OP_NEW,
    SELL,
    STP_CANCEL_BOTH,
    STP_CANCEL_MAKER,
    STP_CANCEL_TAKER,
    STP_NONE,
)

import numpy as np

from fastbook.engine.types import COMMAND_DTYPE

empty = np.empty

cdef enum:
    MAX_ID_LEN = 64  # wire.CLIENT_ORDER_ID_RE
    MAX_ORDERS = 10000  # wire.MAX_ORDERS_PER_MESSAGE
    MAX_DIGITS = 30  # market.DECIMAL_RE: at most 30 digits each side of the point
    MAX_PLACES = 18  # market._parse_step: a tick or lot has at most 18 decimal places
    MIN_ORDER_LEN = 20  # {"op":"cancel_all"} and a comma: an upper bound on the count
    SMALL = 16  # arrays of up to this many orders are read into a buffer on the stack

# One bit per key.
cdef enum:
    K_OP = 1
    K_ID = 2
    K_SIDE = 4
    K_TYPE = 8
    K_PRICE = 16
    K_QTY = 32
    K_TIF = 64
    K_POST_ONLY = 128
    K_STP = 256

# Key sets per op (wire.FIELDS_BY_OP without "market").
cdef unsigned KEYS_NEW = K_OP | K_ID | K_SIDE | K_TYPE | K_PRICE | K_QTY | K_TIF | K_POST_ONLY | K_STP
cdef unsigned KEYS_AMEND = K_OP | K_ID | K_PRICE | K_QTY
cdef unsigned KEYS_CANCEL = K_OP | K_ID

# v * 10 + 9 still fits uint64 while v <= this.
cdef uint64_t ACC_LIMIT = 1844674407370955160ULL



cdef struct Scale:
    # A tick or lot: units / 10**places, and the largest step count allowed.
    int places
    uint64_t units
    int64_t maximum


cdef struct Order:
    CommandRec rec
    const uint8_t* id_start  # NULL: no "id"
    Py_ssize_t id_len


cdef inline void skip_ws(Cursor* c) noexcept:
    # JSON whitespace: space, tab, LF, CR (json.decoder.WHITESPACE).
    while c.p < c.end and (c.p[0] == 32 or c.p[0] == 10 or c.p[0] == 13 or c.p[0] == 9):
        c.p += 1


cdef inline bint take(Cursor* c, uint8_t ch) noexcept:
    """Whitespace, then `ch`."""
    skip_ws(c)
    if c.p < c.end and c.p[0] == ch:
        c.p += 1
        return True
    return False



cdef inline bint read_str(Cursor* c, const uint8_t** start, Py_ssize_t* n) noexcept:
    """Whitespace, then a JSON string of printable ASCII (0x20-0x7E) without escapes: sets its
    contents. Anything else (escapes, control or non-ASCII bytes, no closing quote): False."""
    cdef uint8_t ch
    skip_ws(c)
    if c.p >= c.end or c.p[0] != 34:
        return False
    c.p += 1
    start[0] = c.p
    while c.p < c.end:
        ch = c.p[0]
        if ch == 34:
            n[0] = c.p - start[0]
            c.p += 1
            return True
        if ch < 0x20 or ch > 0x7E or ch == 92:
            return False
        c.p += 1
    return False


cdef inline bint same(const uint8_t* s, Py_ssize_t n, const char* text, Py_ssize_t m) noexcept:
    return n == m and memcmp(s, text, m) == 0


cdef inline bint push_digit(uint64_t* v, uint8_t digit) noexcept:
    if v[0] > ACC_LIMIT:  # would not fit: decline rather than wrap
        return False
    v[0] = v[0] * 10 + digit
    return True


cdef bint read_steps(const uint8_t* s, Py_ssize_t n, const Scale* scale, int64_t* out) noexcept:
    """market._to_steps on a string's contents: [0-9]{1,30}(.[0-9]{1,30})?, fraction digits beyond
    the step's places all zeros, a whole number of steps in 1..maximum. False if not, or if the
    value scaled to 10**-places does not fit 64 bits."""
    cdef Py_ssize_t i = 0, frac_start, frac = 0
    cdef uint64_t v = 0
    cdef uint8_t ch
    while i < n and 48 <= s[i] <= 57:
        if not push_digit(&v, s[i] - 48):
            return False
        i += 1
    if i == 0 or i > MAX_DIGITS:
        return False
    if i < n:
        if s[i] != 46:  # "."
            return False
        i += 1
        frac_start = i
        while i < n and 48 <= s[i] <= 57:
            ch = s[i] - 48
            if i - frac_start < scale.places:
                if not push_digit(&v, ch):
                    return False
            elif ch != 0:  # a fraction finer than the step's places
                return False
            i += 1
        frac = i - frac_start
        if i != n or frac == 0 or frac > MAX_DIGITS:
            return False
    while frac < scale.places:
        if not push_digit(&v, 0):
            return False
        frac += 1
    if v % scale.units != 0:
        return False
    v = v // scale.units
    if v < 1 or v > <uint64_t>scale.maximum:
        return False
    out[0] = <int64_t>v
    return True


cdef bint read_order(Cursor* c, const Scale* tick, const Scale* lot, Order* o) noexcept:
    """One order object after its "{" -> o (every rec field set, padding 0). False on anything the
    fast path does not take, including everything wire.decode_order rejects."""
    cdef const uint8_t* k
    cdef const uint8_t* s
    cdef Py_ssize_t kn, sn, i
    cdef unsigned keys = 0, bit
    cdef int op = 0, side = 0, order_type = LIMIT, tif = GTC, stp = STP_NONE, post_only = 0
    cdef int64_t price = 0, qty = 0
    o.id_start = NULL
    o.id_len = 0
    if take(c, 125):  # {} has no op
        return False
    while True:
        if not read_str(c, &k, &kn) or not take(c, 58):  # key, ":"
            return False
        if kn == 2 and k[0] == 111 and k[1] == 112:  # op
            bit = K_OP
            if not read_str(c, &s, &sn):
                return False
            if same(s, sn, b"new", 3):
                op = OP_NEW
            elif same(s, sn, b"cancel", 6):
                op = OP_CANCEL
            elif same(s, sn, b"amend", 5):
                op = OP_AMEND
            elif same(s, sn, b"cancel_all", 10):
                op = OP_CANCEL_ALL
            else:
                return False
        elif kn == 2 and k[0] == 105 and k[1] == 100:  # id
            bit = K_ID
            if not read_str(c, &s, &sn) or sn == 0 or sn > MAX_ID_LEN:
                return False
            for i in range(sn):
                if s[i] == 32:  # read_str took 0x20-0x7E; ids are 0x21-0x7E
                    return False
            o.id_start = s
            o.id_len = sn
        elif same(k, kn, b"side", 4):
            bit = K_SIDE
            if not read_str(c, &s, &sn):
                return False
            if same(s, sn, b"buy", 3):
                side = BUY
            elif same(s, sn, b"sell", 4):
                side = SELL
            else:
                return False
        elif same(k, kn, b"type", 4):
            bit = K_TYPE
            if not read_str(c, &s, &sn):
                return False
            if same(s, sn, b"limit", 5):
                order_type = LIMIT
            elif same(s, sn, b"market", 6):
                order_type = MARKET
            else:
                return False
        elif same(k, kn, b"price", 5):
            bit = K_PRICE
            if not read_str(c, &s, &sn) or not read_steps(s, sn, tick, &price):
                return False
        elif same(k, kn, b"qty", 3):
            bit = K_QTY
            if not read_str(c, &s, &sn) or not read_steps(s, sn, lot, &qty):
                return False
        elif same(k, kn, b"tif", 3):
            bit = K_TIF
            if not read_str(c, &s, &sn):
                return False
            if same(s, sn, b"gtc", 3):
                tif = GTC
            elif same(s, sn, b"ioc", 3):
                tif = IOC
            elif same(s, sn, b"fok", 3):
                tif = FOK
            else:
                return False
        elif same(k, kn, b"stp", 3):
            bit = K_STP
            if not read_str(c, &s, &sn):
                return False
            if same(s, sn, b"none", 4):
                stp = STP_NONE
            elif same(s, sn, b"cancel_taker", 12):
                stp = STP_CANCEL_TAKER
            elif same(s, sn, b"cancel_maker", 12):
                stp = STP_CANCEL_MAKER
            elif same(s, sn, b"cancel_both", 11):
                stp = STP_CANCEL_BOTH
            else:
                return False
        elif same(k, kn, b"post_only", 9):
            bit = K_POST_ONLY
            skip_ws(c)
            if expect(c, b"true", 4):
                post_only = 1
            elif expect(c, b"false", 5):
                post_only = 0
            else:
                return False
        else:  # "market", anything unknown
            return False
        if keys & bit:  # a duplicate key
            return False
        keys |= bit
        if take(c, 44):  # ","
            continue
        if take(c, 125):  # "}"
            break
        return False
    # The decoder's field-set, required-field and consistency rules.
    memset(&o.rec, 0, sizeof(CommandRec))
    o.rec.op = <uint8_t>op
    if op == OP_NEW:
        if keys & ~KEYS_NEW or not (keys & K_ID) or not (keys & K_SIDE) or not (keys & K_QTY):
            return False
        if order_type == MARKET:
            if keys & K_PRICE:
                return False
        elif not (keys & K_PRICE):
            return False
        o.rec.side, o.rec.type, o.rec.tif = <uint8_t>side, <uint8_t>order_type, <uint8_t>tif
        o.rec.stp, o.rec.post_only = <uint8_t>stp, <uint8_t>post_only
        o.rec.price, o.rec.qty = price, qty
        return True
    if op == OP_AMEND:
        if keys & ~KEYS_AMEND or not (keys & K_ID) or not (keys & (K_PRICE | K_QTY)):
            return False
        o.rec.price, o.rec.qty = price, qty
        return True
    if op == OP_CANCEL:
        return not (keys & ~KEYS_CANCEL) and (keys & K_ID) != 0
    if op == OP_CANCEL_ALL:
        return not (keys & ~KEYS_CANCEL)
    return False  # no op


cdef inline object order_id(const Order* o):
    if o.id_start == NULL:
        return None
    return PyUnicode_DecodeASCII(<const char*>o.id_start, o.id_len, NULL)


cdef bint make_scale(places, units, int64_t maximum, Scale* out):
    # A step as MarketSpec holds it: 0-18 places, units >= 1 (units beyond 64 bits: not here).
    if not (0 <= places <= MAX_PLACES and 1 <= units <= 0xFFFFFFFFFFFFFFFF):
        return False
    out.places = places
    out.units = units
    out.maximum = maximum
    return True


cdef object new_commands(const Order* orders, Py_ssize_t n):
    """(COMMAND_DTYPE[n] of the orders' rows, their client order ids)."""
    cdef Py_buffer view
    cdef CommandRec* rows
    cdef Py_ssize_t i
    commands = empty(n, COMMAND_DTYPE)
    # The array's bytes straight from the buffer protocol (a typed memoryview of a uint8 view
    # costs more than the rest of a one-order message).
    PyObject_GetBuffer(commands, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
    rows = <CommandRec*>view.buf
    for i in range(n):
        rows[i] = orders[i].rec
    PyBuffer_Release(&view)
    ids = [None] * n
    for i in range(n):
        if orders[i].id_start != NULL:
            ids[i] = order_id(&orders[i])
    return commands, ids


cdef object read_message(const uint8_t* start, Py_ssize_t size, const Scale* tick, const Scale* lot):
    cdef Cursor c
    c.p = start
    c.end = start + size
    cdef Order local[SMALL]
    cdef Order* orders = local
    cdef Py_ssize_t cap, n = 0
    skip_ws(&c)
    if c.p < c.end and c.p[0] == 123:  # a single object
        c.p += 1
        if not read_order(&c, tick, lot, &local[0]):
            return None
        skip_ws(&c)
        if c.p != c.end:
            return None
        return new_commands(local, 1)
    if c.p >= c.end or c.p[0] != 91:  # "["
        return None
    c.p += 1
    cap = (c.end - c.p) // MIN_ORDER_LEN + 1
    if cap > MAX_ORDERS:
        cap = MAX_ORDERS
    if cap > SMALL:
        orders = <Order*>PyMem_Malloc(cap * sizeof(Order))
        if orders == NULL:
            raise MemoryError()
    try:
        while True:
            if n == cap or not take(&c, 123):  # more than MAX_ORDERS (or than fit), not an object
                return None
            if not read_order(&c, tick, lot, &orders[n]):
                return None
            n += 1
            if take(&c, 44):  # ","
                continue
            if take(&c, 93):  # "]"
                break
            return None
        skip_ws(&c)
        if c.p != c.end:
            return None
        return new_commands(orders, n)
    finally:
        if orders != local:
            PyMem_Free(orders)


def parse_orders(payload, tick_places, tick_units, lot_places, lot_units, max_payload=1 << 20):
    """(commands COMMAND_DTYPE[n], client order ids list[str | None]) of an order message in the
    common form, else None. `tick_*`/`lot_*`: MarketSpec's `_tick_places`, `_tick_units`,
    `_lot_places`, `_lot_units`. A payload longer than `max_payload` (decode_orders' limit, the
    same default) is None. `payload`: bytes or any contiguous buffer of bytes."""
    cdef Scale tick, lot
    cdef Py_buffer buf
    if not make_scale(tick_places, tick_units, MAX_PRICE, &tick):
        return None
    if not make_scale(lot_places, lot_units, MAX_QTY, &lot):
        return None
    if type(payload) is bytes:
        if PyBytes_GET_SIZE(payload) == 0 or PyBytes_GET_SIZE(payload) > max_payload:
            return None
        return read_message(<const uint8_t*>PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), &tick, &lot)
    PyObject_GetBuffer(payload, &buf, PyBUF_SIMPLE)
    try:
        if buf.len == 0 or buf.len > max_payload:
            return None
        return read_message(<const uint8_t*>buf.buf, buf.len, &tick, &lot)
    finally:
        PyBuffer_Release(&buf)
