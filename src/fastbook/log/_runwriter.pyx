# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Native `fastbook.log.runwriter.write_news_run`: the reports and public trades of a run
of news the sequencer executed in one `Book.apply_batch` call, written in C.

The output is the reference's (`fastbook.log.runwriter.write_news_run_reference`), byte for byte:
the same report and public trade texts
(`reports.command_reports_json`) grouped by client the same way, and the same map changes. Numbers and decimal strings are
formatted here (`MarketSpec.ticks_to_price` / `lots_to_qty` exactly); a client order id with a
character JSON escapes, and a decimal too large for 64-bit arithmetic, go through the Python
functions instead. tests/test_runwriter.py compares the two over random runs.

Why: writing each accepted order's log entry and reports with f-strings was ~2 µs of the
sequencer's ~15 µs per order.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeASCII
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from contract cimport CommandRec, EventRec, EV_ACCEPTED, EV_REJECTED, EV_TRADE, EV_CANCELLED, EV_DONE

import json

import numpy as np

from fastbook.engine.types import COMMAND_DTYPE, EVENT_DTYPE
from json.encoder import encode_basestring_ascii as json_string  # = wire.json_string (no import cycle)

cdef enum:
    TEXT_MAX = 1024  # every entry and report fits (ids <= 64 characters, numbers <= 20 digits)
    STR_MAX = 300  # the longest text put_str copies (an escaped id, a decimal from Python)
    ROW_MAX = STR_MAX + 64  # a snapshot order row: two numbers, the id, punctuation


cdef struct Out:
    char* p


cdef inline void put(Out* o, const char* s, Py_ssize_t n) noexcept:
    memcpy(o.p, s, n)
    o.p += n


cdef inline void put_u64(Out* o, uint64_t v) noexcept:
    cdef char tmp[20]
    cdef int n = 0
    if v == 0:
        o.p[0] = b'0'
        o.p += 1
        return
    while v:
        tmp[n] = <char>(48 + v % 10)
        v //= 10
        n += 1
    while n:
        n -= 1
        o.p[0] = tmp[n]
        o.p += 1


cdef inline void put_hex16(Out* o, uint64_t v) noexcept:
    cdef int i
    cdef const char* digits = b"0123456789abcdef"
    for i in range(16):
        o.p[15 - i] = digits[v & 15]
        v >>= 4
    o.p += 16


cdef inline bint put_steps(Out* o, int64_t count, int places, uint64_t units) noexcept:
    """count * units with `places` decimals, as MarketSpec._from_steps writes it; False (nothing
    written) if it does not fit 64 bits."""
    cdef char tmp[24]
    cdef int n = 0, i, total
    cdef uint64_t scaled
    if count < 0 or (units != 0 and <uint64_t>count > 0xFFFFFFFFFFFFFFFFULL // units):
        return False
    scaled = <uint64_t>count * units
    while scaled:
        tmp[n] = <char>(48 + scaled % 10)
        scaled //= 10
        n += 1
    total = n if n > places else places + 1  # at least one digit before the point
    for i in range(total - 1, -1, -1):
        if i == places - 1:
            o.p[0] = b'.'
            o.p += 1
        o.p[0] = tmp[i] if i < n else b'0'
        o.p += 1
    return True


cdef inline int put_str(Out* o, str text) except -1:
    """An ASCII str's characters as they are."""
    cdef Py_ssize_t n
    cdef const char* data = PyUnicode_AsUTF8AndSize(text, &n)
    if n > STR_MAX:
        raise ValueError("text too long for a report")
    put(o, data, n)
    return 0


cdef inline int put_json_string(Out* o, str text) except -1:
    """`wire.json_string(text)`: quoted; printable ASCII without '"' or '\\' needs no escape."""
    cdef Py_ssize_t n, i
    cdef const char* data = PyUnicode_AsUTF8AndSize(text, &n)
    cdef uint8_t ch
    if n <= 64:
        for i in range(n):
            ch = <uint8_t>data[i]
            if ch < 0x20 or ch > 0x7E or ch == 34 or ch == 92:
                break
        else:
            o.p[0] = b'"'
            memcpy(o.p + 1, data, n)
            o.p[n + 1] = b'"'
            o.p += n + 2
            return 0
    return put_str(o, json_string(text))


cdef class Decimals:
    """MarketSpec's tick and lot as C numbers, with the spec for what C cannot write."""
    cdef int tick_places, lot_places
    cdef uint64_t tick_units, lot_units
    cdef bint native
    cdef object market

    def __init__(self, market):
        self.market = market
        self.tick_places = market._tick_places
        self.lot_places = market._lot_places
        self.native = market._tick_units < 2**64 and market._lot_units < 2**64
        self.tick_units = market._tick_units if self.native else 1
        self.lot_units = market._lot_units if self.native else 1

    cdef int price(self, Out* o, int64_t ticks) except -1:
        if not (self.native and put_steps(o, ticks, self.tick_places, self.tick_units)):
            put_str(o, self.market.ticks_to_price(ticks))
        return 0

    cdef int qty(self, Out* o, int64_t lots) except -1:
        if not (self.native and put_steps(o, lots, self.lot_places, self.lot_units)):
            put_str(o, self.market.lots_to_qty(lots))
        return 0


cdef inline str text_of(char* start, Out* o):
    return PyUnicode_DecodeASCII(start, o.p - start, NULL)


cdef inline const char* side_text(uint8_t side) except NULL:
    if side == 1:
        return b"buy"
    if side == 2:
        return b"sell"
    raise KeyError(side)


cdef inline void put_lit(Out* o, const char* s) noexcept:
    cdef Py_ssize_t n = 0
    while s[n]:
        n += 1
    put(o, s, n)


cdef inline int add_text(dict texts, object who, str text) except -1:
    """Append a report's text to its client's list (texts: client -> texts in order)."""
    cdef object got = texts.get(who)
    if got is None:
        texts[who] = [text]
    else:
        (<list>got).append(text)
    return 0


def write_news_run(market, str client, int64_t version, rows, list coids, hashes, events,
                   dict orders, dict clients, reject):
    """(texts, rejections, trades, accepted_ids, accepted_coids, accepted_seqs, gone,
    last_seq, last_hash): the fields of `fastbook.log.runwriter.NewsRun`, with the reference's
    arguments."""
    if not (isinstance(rows, np.ndarray) and rows.dtype == COMMAND_DTYPE and rows.flags.c_contiguous):
        raise ValueError("rows must be a contiguous COMMAND_DTYPE array")
    if not (isinstance(events, np.ndarray) and events.dtype == EVENT_DTYPE and events.flags.c_contiguous):
        raise ValueError("events must be a contiguous EVENT_DTYPE array")
    cdef Py_ssize_t n = len(rows), m = len(events)
    if len(coids) != n or len(hashes) != n:
        raise ValueError("rows, coids and hashes must be the same length")
    cdef const uint64_t[::1] post = hashes
    cdef const uint8_t[::1] row_bytes = rows.view(np.uint8).reshape(-1)
    cdef const uint8_t[::1] event_bytes = events.view(np.uint8).reshape(-1)
    cdef const CommandRec* cmds = <const CommandRec*>&row_bytes[0] if n else NULL
    cdef const EventRec* evs = <const EventRec*>&event_bytes[0] if m else NULL
    cdef Decimals dec = Decimals(market)
    cdef list rejections = [], trades = [], accepted_ids = [], accepted_coids = []
    cdef list accepted_seqs = [], gone = []
    cdef dict texts = {}
    cdef char buf[TEXT_MAX]
    cdef char common[TEXT_MAX]
    cdef Out o, oc
    cdef Py_ssize_t c, k = 0, accepted = 0, pos, common_len, id_at, id_end, price_at
    cdef int64_t seq = version, first_id = 0, eid
    cdef uint64_t last_hash = 0
    cdef const CommandRec* cmd
    cdef const EventRec* ev
    cdef uint32_t number
    cdef int liquidity
    cdef uint8_t kind
    cdef object coid, order_coid, known, seq_obj, who
    cdef str text
    for c in range(n):
        cmd = &cmds[c]
        coid = coids[c]
        if k < m and evs[k].cmd == c and evs[k].type == EV_REJECTED:
            text = json.dumps(reject(coid, cmd.op, evs[k].reason), separators=(",", ":"))
            add_text(texts, client, text)
            rejections.append(text)
            k += 1
            continue
        seq += 1
        seq_obj = seq
        if accepted == 0:
            first_id = cmd.order_id
        accepted += 1
        accepted_ids.append(cmd.order_id)
        accepted_coids.append(coid)
        accepted_seqs.append(seq_obj)
        last_hash = post[c]
        # Its reports: reports.command_reports_json, event by event.
        number = 0
        while k < m and evs[k].cmd == c:
            ev = &evs[k]
            k += 1
            kind = ev.type
            if kind == EV_TRADE:
                number += 1
                # `common`: "seq":S,"trade_id":"S-N","price":"P","qty":"Q" -- shared by the public
                # trade (after its trade id) and both trade reports.
                oc.p = common
                put_lit(&oc, b'"seq":')
                put_u64(&oc, <uint64_t>seq)
                put_lit(&oc, b',"trade_id":"')
                id_at = oc.p - common
                put_u64(&oc, <uint64_t>seq)
                put(&oc, b"-", 1)
                put_u64(&oc, number)
                id_end = oc.p - common
                put_lit(&oc, b'","price":"')
                price_at = oc.p - common
                dec.price(&oc, ev.price)
                put_lit(&oc, b'","qty":"')
                dec.qty(&oc, ev.qty)
                put(&oc, b'"', 1)
                common_len = oc.p - common
                # The public trade: {"trade_id":"S-N","seq":S,"price":...,"taker_side":"..."}.
                o.p = buf
                put_lit(&o, b'{"trade_id":"')
                put(&o, common + id_at, id_end - id_at)
                put_lit(&o, b'","seq":')
                put_u64(&o, <uint64_t>seq)
                put_lit(&o, b',"price":"')
                put(&o, common + price_at, common_len - price_at)
                put_lit(&o, b',"taker_side":"')
                put_lit(&o, side_text(ev.side))
                put_lit(&o, b'"}')
                trades.append(text_of(buf, &o))
                for liquidity in range(2):  # taker, then maker
                    eid = ev.order_id if liquidity == 0 else ev.other_id
                    pos = eid - first_id
                    if 0 <= pos < accepted:
                        order_coid = accepted_coids[pos]
                    else:
                        order_coid = orders[eid][1]
                    o.p = buf
                    put_lit(&o, b'{"type":"trade","id":')
                    put_json_string(&o, order_coid)
                    put(&o, b",", 1)
                    put(&o, common, common_len)
                    put_lit(&o, b',"side":"')
                    put_lit(&o, side_text(ev.side if liquidity == 0 else 3 - ev.side))
                    if liquidity == 0:
                        put_lit(&o, b'","liquidity":"taker","remaining":"')
                        dec.qty(&o, ev.remaining)
                        who = clients[ev.owner]
                    else:
                        put_lit(&o, b'","liquidity":"maker","remaining":"')
                        dec.qty(&o, ev.other_remaining)
                        who = clients[ev.other_owner]
                    put_lit(&o, b'"}')
                    add_text(texts, who, text_of(buf, &o))
                continue
            if kind != EV_ACCEPTED and kind != EV_CANCELLED and kind != EV_DONE:
                continue
            pos = ev.order_id - first_id
            if 0 <= pos < accepted:
                order_coid = accepted_coids[pos]
            else:
                known = orders.get(ev.order_id)
                if known is None:
                    continue
                order_coid = known[1]
            o.p = buf
            if kind == EV_ACCEPTED:
                put_lit(&o, b'{"type":"accepted","id":')
            elif kind == EV_CANCELLED:
                put_lit(&o, b'{"type":"cancelled","id":')
                gone.append(ev.order_id)
            else:
                put_lit(&o, b'{"type":"done","id":')
                gone.append(ev.order_id)
            put_json_string(&o, order_coid)
            put_lit(&o, b',"seq":')
            put_u64(&o, <uint64_t>seq)
            if kind == EV_ACCEPTED:
                put_lit(&o, b',"side":"')
                put_lit(&o, side_text(ev.side))
                if cmd.type == 1:
                    put_lit(&o, b'","order_type":"limit","price":')
                elif cmd.type == 2:
                    put_lit(&o, b'","order_type":"market","price":')
                else:
                    raise KeyError(cmd.type)
                if ev.price:
                    put(&o, b'"', 1)
                    dec.price(&o, ev.price)
                    put(&o, b'"', 1)
                else:
                    put_lit(&o, b"null")
                put_lit(&o, b',"qty":"')
                dec.qty(&o, ev.qty)
                put_lit(&o, b'"}')
            elif kind == EV_CANCELLED:
                put_lit(&o, b',"qty":"')
                dec.qty(&o, ev.qty)
                put_lit(&o, b'","reason":"')
                if ev.reason == 1:
                    put_lit(&o, b"user")
                elif ev.reason == 2:
                    put_lit(&o, b"unfilled")
                elif ev.reason == 3:
                    put_lit(&o, b"fok")
                elif ev.reason == 4:
                    put_lit(&o, b"self_trade")
                else:
                    put_u64(&o, ev.reason)
                put_lit(&o, b'"}')
            else:
                put(&o, b"}", 1)
            add_text(texts, client if ev.owner == cmd.owner else clients[ev.owner], text_of(buf, &o))
    return texts, rejections, trades, accepted_ids, accepted_coids, accepted_seqs, gone, seq, last_hash


def orders_json(orders):
    """`wire.dumps(orders)` of a snapshot's resting orders, [(engine id, owner, client order id),
    ...]: the largest part of a snapshot, written in C (json.dumps of it was about a third of
    the sequencer's time on a deep book). `orders` may also be a replica's map (engine id ->
    (owner, client order id)): then the rows are not built at all (`snapshot_order_rows`)."""
    if isinstance(orders, dict):
        return map_json(orders)
    return rows_json(orders)


cdef struct RowsOut:
    char* buf
    Py_ssize_t capacity
    Py_ssize_t count
    Out o


cdef int rows_begin(RowsOut* r, Py_ssize_t n) except -1:
    r.capacity = 4096 + 64 * n
    r.count = 0
    r.buf = <char*>PyMem_Malloc(r.capacity)
    if r.buf == NULL:
        raise MemoryError()
    r.o.p = r.buf
    put(&r.o, b"[", 1)
    return 0


cdef int rows_add(RowsOut* r, int64_t order_id, int64_t owner, str coid) except -1:
    """Append [order_id,owner,"coid"] (growing the buffer first if a row might not fit)."""
    cdef Py_ssize_t used = r.o.p - r.buf
    cdef char* grown
    if r.capacity - used < ROW_MAX:
        grown = <char*>PyMem_Realloc(r.buf, r.capacity * 2)
        if grown == NULL:
            raise MemoryError()
        r.capacity *= 2
        r.buf = grown
        r.o.p = r.buf + used
    if order_id < 0 or owner < 0:
        raise ValueError("order ids and owners are not negative")
    if r.count:
        put(&r.o, b",", 1)
    r.count += 1
    put(&r.o, b"[", 1)
    put_u64(&r.o, <uint64_t>order_id)
    put(&r.o, b",", 1)
    put_u64(&r.o, <uint64_t>owner)
    put(&r.o, b",", 1)
    put_json_string(&r.o, coid)
    put(&r.o, b"]", 1)
    return 0


cdef bytes rows_json(list orders):
    cdef RowsOut r
    cdef object row
    r.buf = NULL
    try:
        rows_begin(&r, len(orders))
        for row in orders:
            rows_add(&r, row[0], row[1], row[2])
        put(&r.o, b"]", 1)
        return PyBytes_FromStringAndSize(r.buf, r.o.p - r.buf)
    finally:
        PyMem_Free(r.buf)


cdef bytes map_json(dict orders):
    """rows_json(snapshot_order_rows(orders)) without the rows, when the map is in id order (it
    almost always is); else exactly that."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef int64_t previous = -1
    cdef tuple pair
    cdef RowsOut r
    # First pass: the ids must be increasing (and in range) for the map order to be the row order.
    while PyDict_Next(orders, &pos, &key, &value):
        if type(<object>key) is not int or <object>key <= previous:
            return rows_json(snapshot_order_rows(orders))
        previous = <object>key
    r.buf = NULL
    try:
        rows_begin(&r, len(orders))
        pos = 0
        while PyDict_Next(orders, &pos, &key, &value):
            pair = <tuple?><object>value
            if len(pair) != 2:
                raise ValueError("an order map value is (owner, client order id)")
            rows_add(&r, <object>key, pair[0], pair[1])
        put(&r.o, b"]", 1)
        return PyBytes_FromStringAndSize(r.buf, r.o.p - r.buf)
    finally:
        PyMem_Free(r.buf)


def snapshot_order_rows(dict orders):
    """A snapshot's resting orders from a replica's map (engine id -> (owner, client order id)):
    [(engine id, owner, client order id), ...] by id. Ids are given in increasing order and a
    dict keeps insertion order, so the map is almost always in id order already: then no sort.
    (The Python comprehension and sort were about half of a deep book's snapshot time.)"""
    cdef list rows = []
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef object previous = None
    cdef bint ordered = True
    cdef tuple pair
    while PyDict_Next(orders, &pos, &key, &value):
        pair = <tuple?><object>value
        if len(pair) != 2:
            raise ValueError("an order map value is (owner, client order id)")
        if ordered and previous is not None and not (<object>key > previous):
            ordered = False
        previous = <object>key
        rows.append((<object>key, pair[0], pair[1]))
    if not ordered:
        rows.sort()
    return rows
