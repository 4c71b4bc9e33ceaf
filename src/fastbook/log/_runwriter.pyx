# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Native `fastbook.log.runwriter.write_news_run`: the reports and public trades of a run
of news the sequencer executed in one `Book.apply_batch` call, written in C.

The output is the reference's (`fastbook.log.runwriter.write_news_run_reference`), byte for byte:
the same report and public trade texts
(`reports.command_reports_json`) grouped by client the same way, and the same map changes. Numbers and decimal strings are
formatted here (`MarketSpec.ticks_to_price` / `lots_to_qty` exactly); a client order id with a
character JSON escapes, and a decimal too large for 64-bit arithmetic, go through the Python
functions instead. tests/log/test_runwriter.py compares the two over random runs.

Why: writing each accepted order's log entry and reports with f-strings was ~2 µs of the
sequencer's ~15 µs per order.
"""

from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from contract cimport CommandRec, EventRec, EV_ACCEPTED, EV_REJECTED, EV_TRADE, EV_CANCELLED, EV_DONE
from textout cimport Out, put, put_json_string, put_lit, put_str, put_u64

import json

import numpy as np

from fastbook.engine.types import COMMAND_DTYPE, EVENT_DTYPE

cdef enum:
    TEXT_MAX = 1024  # every report fits (ids <= 64 characters, numbers <= 20 digits)


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


cdef inline int add_text(dict texts, object who, str text) except -1:
    """Append a report's text to its client's list (texts: client -> texts in order)."""
    cdef object got = texts.get(who)
    if got is None:
        texts[who] = [text]
    else:
        (<list>got).append(text)
    return 0


def write_news_run(job, run):
    """Fill `run` (a fresh `fastbook.log.runwriter.NewsRun`) with what the reference writes of
    `job` (a `NewsRunInput`)."""
    market, rows, hashes, events, reject = job.market, job.rows, job.hashes, job.events, job.reject
    cdef str client = job.client
    cdef int64_t version = job.version
    cdef list coids = job.coids
    cdef dict orders = job.orders, clients = job.clients
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
    run.texts, run.rejections, run.trades, run.gone = texts, rejections, trades, gone
    run.accepted_ids, run.accepted_coids, run.accepted_seqs = accepted_ids, accepted_coids, accepted_seqs
    run.last_seq, run.last_hash = seq, last_hash


