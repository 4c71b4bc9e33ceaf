# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""fastbook.engine._engine: the native matching engine of docs/engine.md.

Layout (the .pxd files are the readable contract):
  contract.pxd   enums, limits, the COMMAND/EVENT records (mirror of src/fastbook/engine/types.py)
  order.pxd      Order (40 bytes) in a uint32-indexed pool, the open-addressing id index
  level.pxd      Level (FIFO chain + aggregates), side-aware keys, per-side std::map
  statehash.pxd  mix64 / order_hash
  book.pxd       BookState, the taker being matched, the event buffer

Every state change goes through the nogil C functions below; the per-command Python API and the
batch loop call the same functions, so they produce the same events by construction.
"""

cimport cython
from cpython.buffer cimport PyBuffer_FillInfo
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject
from cython.operator cimport dereference as deref
from cython.operator cimport preincrement as inc
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
from libcpp.algorithm cimport pop_heap, push_heap
from libcpp.algorithm cimport sort as cpp_sort
from libcpp.pair cimport pair
from libcpp.vector cimport vector

from bigbuf cimport buf_free, buf_resize
from book cimport BookState, EventBuffer, Taker
from contract cimport *
from level cimport HeapEntry, Level, LevelIndex, LevelPool, SideBook
from order cimport NIL, IdWindow, IndexSlot, Order, OrderIndex, OrderPool, SlotTable
from statehash cimport mix64, order_hash, order_hash_delta, order_hash_from
from pyint cimport new_byte_int, new_int, new_int_hint, small_int_value

from collections.abc import Sequence

import numpy as np

from fastbook.engine.types import COMMAND_DTYPE, EVENT_DTYPE

__all__ = ["Book", "Events", "SNAPSHOT_MAGIC", "SNAPSHOT_VERSION"]

SNAPSHOT_MAGIC = b"FBSN"
SNAPSHOT_VERSION = 1

cdef enum:
    HEADER_SIZE = 24
    RECORD_SIZE = 40
    TRAILER_SIZE = 8
    INITIAL_CAPACITY = 16
    MAX_POOL_CAPACITY = 0x80000000   # 2^31 orders / levels (indices stay below NIL)
    PREFETCH_SLOT = 16               # batch look-ahead distances (commands)
    PREFETCH_ORDER = 8
    MIN_WINDOW = 64                  # id window slots (a power of two) when it starts or empties
    MAX_WINDOW = 0x80000000          # 2^31: the window does not grow past this many slots


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

cdef inline int64_t side_key(uint32_t side, int64_t price) noexcept nogil:
    # Bids are keyed by -price, asks by price: the best level of either side has the smallest key.
    return -price if side == BUY else price


cdef inline uint32_t order_flags(uint32_t side, uint32_t stp, uint32_t post_only) noexcept nogil:
    return side | (stp << 8) | (post_only << 16)


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define fb_prefetch(p) __builtin_prefetch((const void*)(p))
    #else
    #define fb_prefetch(p) ((void)(p))
    #endif
    """
    void prefetch "fb_prefetch"(const void* p) noexcept nogil


cdef inline uint64_t hash_delta(BookState* b, Order* o, uint64_t new_remaining) noexcept nogil:
    # What changing o.remaining to new_remaining XORs into the state hash.
    cdef Level* lvl = &b.levels.items[o.level]
    return order_hash_delta(o.id, o.owner, lvl.price, o.remaining, new_remaining, o.stamp,
                            order_flags(lvl.side, o.stp, o.post_only))


cdef inline uint64_t hash_of(BookState* b, Order* o) noexcept nogil:
    cdef Level* lvl = &b.levels.items[o.level]
    return order_hash(o.id, o.owner, lvl.price, o.remaining, o.stamp,
                      order_flags(lvl.side, o.stp, o.post_only))


# ---------------------------------------------------------------------------------------------
# Event buffer
# ---------------------------------------------------------------------------------------------

cdef int resize_events(EventBuffer* ev, size_t cap) noexcept nogil:
    cdef EventRec* items = <EventRec*>buf_resize(ev.items, ev.capacity * sizeof(EventRec),
                                                 cap * sizeof(EventRec))
    if items == NULL:
        return -1
    ev.items = items
    ev.capacity = cap
    return 0


cdef int grow_events(EventBuffer* ev) noexcept nogil:
    cdef size_t cap = ev.capacity * 2 if ev.capacity else 64
    cdef EventRec* items = <EventRec*>buf_resize(ev.items, ev.capacity * sizeof(EventRec),
                                                 cap * sizeof(EventRec))
    if items == NULL:
        return -1
    ev.items = items
    ev.capacity = cap
    return 0


cdef inline void emit(BookState* b, uint8_t type, int64_t order_id, uint32_t owner, uint8_t side,
                      int64_t price, int64_t qty, int64_t remaining, int64_t other_id,
                      uint32_t other_owner, int64_t other_remaining, uint8_t reason) noexcept nogil:
    cdef EventBuffer* ev = &b.ev
    if ev.count == ev.capacity:
        if grow_events(ev) < 0:
            ev.failed = True
            return
    cdef EventRec* e = &ev.items[ev.count]
    ev.count += 1
    e.cmd = ev.cmd
    e.type = type
    e.reason = reason
    e.side = side
    e._pad = 0
    e.order_id = order_id
    e.owner = owner
    e.other_owner = other_owner
    e.other_id = other_id
    e.price = price
    e.qty = qty
    e.remaining = remaining
    e.other_remaining = other_remaining


# ---------------------------------------------------------------------------------------------
# Order pool and level pool (growable arrays with free lists, addressed by uint32)
# ---------------------------------------------------------------------------------------------

cdef int grow_pool(OrderPool* p) noexcept nogil:
    # Doubling while small; +25% from 1M orders on, to keep the unused tail (memory per order) small.
    # Growth is an mremap there, so a smaller factor costs no copying.
    cdef size_t cap = <size_t>p.capacity * 2 if p.capacity else INITIAL_CAPACITY
    if p.capacity >= (1 << 20):
        cap = <size_t>p.capacity + p.capacity // 4
    if cap > MAX_POOL_CAPACITY:
        return -1
    cdef Order* items = <Order*>buf_resize(p.items, p.capacity * sizeof(Order), cap * sizeof(Order))
    if items == NULL:
        return -1
    p.items = items
    p.capacity = <uint32_t>cap
    return 0


cdef int reserve_pool(OrderPool* p, uint32_t capacity) noexcept nogil:
    cdef Order* items = <Order*>buf_resize(p.items, p.capacity * sizeof(Order), capacity * sizeof(Order))
    if items == NULL:
        return -1
    p.items = items
    p.capacity = capacity
    return 0


cdef inline uint32_t pool_alloc(OrderPool* p) noexcept nogil:
    # The caller has reserved room (reserve()).
    cdef uint32_t i
    if p.free_head != NIL:
        i = p.free_head
        p.free_head = p.items[i].next
    else:
        i = p.used
        p.used += 1
    p.live += 1
    return i


cdef inline void pool_free(OrderPool* p, uint32_t i) noexcept nogil:
    p.items[i].remaining = 0       # marks the slot dead for the cancel_all scan
    p.items[i].next = p.free_head
    p.free_head = i
    p.live -= 1


cdef int grow_levels(LevelPool* p) noexcept nogil:
    cdef size_t cap = <size_t>p.capacity * 2 if p.capacity else INITIAL_CAPACITY
    if cap > MAX_POOL_CAPACITY:
        return -1
    cdef Level* items = <Level*>buf_resize(p.items, p.capacity * sizeof(Level), cap * sizeof(Level))
    if items == NULL:
        return -1
    p.items = items
    p.capacity = <uint32_t>cap
    return 0


cdef inline uint32_t level_alloc(LevelPool* p) noexcept nogil:
    cdef uint32_t i
    if p.free_head != NIL:
        i = p.free_head
        p.free_head = p.items[i].side
    else:
        i = p.used
        p.used += 1
    p.live += 1
    return i


cdef inline void level_free(LevelPool* p, uint32_t i) noexcept nogil:
    p.items[i].count = 0
    p.items[i].side = p.free_head
    p.free_head = i
    p.live -= 1


# ---------------------------------------------------------------------------------------------
# Level index: side-aware key -> level index (linear probing, backward-shift delete)
# ---------------------------------------------------------------------------------------------

cdef int slot_table_resize(SlotTable* ix, size_t capacity) noexcept nogil:
    # Rehash into a table of `capacity` slots (a power of two). A slot's tag alone gives its home
    # slot, so neither the pool nor the levels are touched.
    cdef IndexSlot* slots = <IndexSlot*>buf_resize(NULL, 0, capacity * sizeof(IndexSlot))
    cdef size_t i
    cdef uint32_t mask = <uint32_t>(capacity - 1)
    cdef uint32_t j
    if slots == NULL:
        return -1
    for i in range(capacity):
        slots[i].idx = NIL
    if ix.slots != NULL:
        for i in range(<size_t>ix.mask + 1):
            if ix.slots[i].idx != NIL:
                j = ix.slots[i].tag & mask
                while slots[j].idx != NIL:
                    j = (j + 1) & mask
                slots[j] = ix.slots[i]
        buf_free(ix.slots, (<size_t>ix.mask + 1) * sizeof(IndexSlot))
    ix.slots = slots
    ix.mask = mask
    return 0


cdef inline void slot_table_insert(SlotTable* ix, uint64_t key_mix, uint32_t idx) noexcept nogil:
    # The key (key_mix = mix64(key)) is absent and there is room (reserve()).
    cdef uint32_t tag = <uint32_t>(key_mix >> 32)
    cdef uint32_t i = tag & ix.mask
    while ix.slots[i].idx != NIL:
        i = (i + 1) & ix.mask
    ix.slots[i].idx = idx
    ix.slots[i].tag = tag
    ix.count += 1


cdef inline uint32_t level_index_find_slot(LevelIndex* ix, Level* levels, int64_t key) noexcept nogil:
    cdef uint32_t tag = <uint32_t>(mix64(<uint64_t>key) >> 32)
    cdef uint32_t i = tag & ix.mask
    cdef IndexSlot* s
    while True:
        s = &ix.slots[i]
        if s.idx == NIL:
            return NIL
        if s.tag == tag and side_key(levels[s.idx].side, levels[s.idx].price) == key:
            return i
        i = (i + 1) & ix.mask


# ---------------------------------------------------------------------------------------------
# Order index: id -> pool index (linear probing, backward-shift delete)
# ---------------------------------------------------------------------------------------------

cdef inline uint32_t index_find_slot(OrderIndex* ix, Order* orders, int64_t order_id,
                                     uint64_t id_mix) noexcept nogil:
    # Returns the slot holding order_id (id_mix = mix64(order_id)), or NIL.
    cdef uint32_t tag = <uint32_t>(id_mix >> 32)
    cdef uint32_t i = tag & ix.mask
    cdef IndexSlot* s
    while True:
        s = &ix.slots[i]
        if s.idx == NIL:
            return NIL
        if s.tag == tag and orders[s.idx].id == order_id:
            return i
        i = (i + 1) & ix.mask


cdef inline uint32_t index_find(BookState* b, int64_t order_id) noexcept nogil:
    return index_find_mixed(b, order_id, mix64(<uint64_t>order_id))


cdef inline uint32_t index_find_mixed(BookState* b, int64_t order_id, uint64_t id_mix) noexcept nogil:
    cdef uint32_t slot = index_find_slot(&b.index, b.pool.items, order_id, id_mix)
    return NIL if slot == NIL else b.index.slots[slot].idx


cdef inline void delete_slot(IndexSlot* slots, uint32_t mask, uint32_t i) noexcept nogil:
    # Backward-shift deletion: pull later members of the probe run into the hole when their home
    # slot does not lie cyclically in (hole, their slot].
    cdef uint32_t j = i
    cdef uint32_t home
    while True:
        j = (j + 1) & mask
        if slots[j].idx == NIL:
            break
        home = slots[j].tag & mask
        if i <= j:
            if i < home and home <= j:
                continue
        else:
            if i < home or home <= j:
                continue
        slots[i] = slots[j]
        i = j
    slots[i].idx = NIL


cdef inline void index_delete(BookState* b, int64_t order_id, uint32_t idx) noexcept nogil:
    # Remove the slot of a resting order; comparing pool indices, not ids, keeps the pool out of it.
    cdef uint32_t i = <uint32_t>(mix64(<uint64_t>order_id) >> 32) & b.index.mask
    while b.index.slots[i].idx != idx:
        i = (i + 1) & b.index.mask
    delete_slot(b.index.slots, b.index.mask, i)
    b.index.count -= 1


# ---------------------------------------------------------------------------------------------
# Id window (order.pxd): ids in sequence map straight to pool indices; the hash table above holds
# the rest. Lookups try the window, then the hash table only if the id lies in its bounds.
# ---------------------------------------------------------------------------------------------

cdef inline bint in_window(IdWindow* w, int64_t order_id) noexcept nogil:
    # Unsigned difference: ids below base wrap to huge values, and no signed overflow can occur.
    return <uint64_t>order_id - <uint64_t>w.base < w.cap


cdef inline uint32_t* window_slot(IdWindow* w, int64_t order_id) noexcept nogil:
    return &w.slots[<uint64_t>order_id & (w.cap - 1)]


cdef inline uint32_t window_find(IdWindow* w, int64_t order_id) noexcept nogil:
    return window_slot(w, order_id)[0] if in_window(w, order_id) else NIL


cdef inline bint in_hash_bounds(IdWindow* w, int64_t order_id) noexcept nogil:
    return w.hash_lo <= order_id <= w.hash_hi


cdef inline uint32_t id_find_mixed(BookState* b, int64_t order_id, uint64_t id_mix) noexcept nogil:
    # Pool index of the resting order with this id (id_mix = mix64(order_id)), or NIL.
    cdef uint32_t oi = window_find(&b.window, order_id)
    if oi != NIL or not in_hash_bounds(&b.window, order_id):
        return oi
    return index_find_mixed(b, order_id, id_mix)


cdef inline uint32_t id_find(BookState* b, int64_t order_id) noexcept nogil:
    cdef uint32_t oi = window_find(&b.window, order_id)
    if oi != NIL or not in_hash_bounds(&b.window, order_id):
        return oi
    return index_find(b, order_id)


cdef inline void hash_insert(BookState* b, int64_t order_id, uint64_t id_mix, uint32_t oi) noexcept nogil:
    slot_table_insert(&b.index, id_mix, oi)
    if order_id < b.window.hash_lo:
        b.window.hash_lo = order_id
    if order_id > b.window.hash_hi:
        b.window.hash_hi = order_id


cdef inline void id_insert(BookState* b, int64_t order_id, uint64_t id_mix, uint32_t oi) noexcept nogil:
    # The id is absent and there is room (reserve(), and reserve_id() for a new id).
    cdef IdWindow* w = &b.window
    if in_window(w, order_id):
        window_slot(w, order_id)[0] = oi
        w.live += 1
    else:
        hash_insert(b, order_id, id_mix, oi)


cdef inline void id_delete(BookState* b, int64_t order_id, uint32_t oi) noexcept nogil:
    cdef IdWindow* w = &b.window
    cdef uint32_t* slot
    if in_window(w, order_id):
        slot = window_slot(w, order_id)
        if slot[0] == oi:
            slot[0] = NIL
            w.live -= 1
            return
    index_delete(b, order_id, oi)
    if b.index.count == 0:
        w.hash_lo = INT64_MAX
        w.hash_hi = INT64_MIN


cdef int hash_room(BookState* b, size_t extra) noexcept nogil:
    # Grow the hash table (load <= 3/4) so that `extra` more ids fit without a resize.
    cdef size_t slots = <size_t>b.index.mask + 1
    while (<size_t>b.index.count + extra) * 4 > slots * 3:
        slots *= 2
    if slots == <size_t>b.index.mask + 1:
        return 0
    if slots > (<size_t>1 << 32):
        return -1
    return slot_table_resize(&b.index, slots)


cdef int window_place(BookState* b, int64_t base, size_t cap) noexcept nogil:
    # A new, empty window [base, base + cap) (cap a power of two); the old one must hold no order.
    cdef IdWindow* w = &b.window
    cdef uint32_t* slots = w.slots
    cdef size_t i
    if cap != w.cap:
        slots = <uint32_t*>buf_resize(NULL, 0, cap * sizeof(uint32_t))
        if slots == NULL:
            return -1
        buf_free(w.slots, <size_t>w.cap * sizeof(uint32_t))
    for i in range(cap):
        slots[i] = NIL
    w.slots = slots
    w.cap = <uint32_t>cap
    w.base = base
    w.live = 0
    return 0


cdef int window_grow(BookState* b) noexcept nogil:
    # Double the window over the same base; every order moves to its slot under the new mask.
    cdef IdWindow* w = &b.window
    cdef size_t cap = <size_t>w.cap * 2
    cdef uint32_t* slots = <uint32_t*>buf_resize(NULL, 0, cap * sizeof(uint32_t))
    cdef size_t i
    cdef uint32_t oi
    if slots == NULL:
        return -1
    for i in range(cap):
        slots[i] = NIL
    for i in range(w.cap):
        oi = w.slots[i]
        if oi != NIL:
            slots[<uint64_t>b.pool.items[oi].id & (cap - 1)] = oi
    buf_free(w.slots, <size_t>w.cap * sizeof(uint32_t))
    w.slots = slots
    w.cap = <uint32_t>cap
    return 0


cdef int window_slide(BookState* b, int64_t new_base) noexcept nogil:
    # Move the window up to start at new_base (> base); the orders whose ids it leaves behind move
    # to the hash table. Every id is left behind at most once, so this is O(1) per order overall.
    cdef IdWindow* w = &b.window
    cdef uint64_t shift = <uint64_t>new_base - <uint64_t>w.base
    cdef uint64_t span = shift if shift < w.cap else w.cap
    cdef uint64_t k
    cdef uint32_t moving = 0
    cdef uint32_t* slot
    cdef int64_t order_id
    if w.live:
        for k in range(span):
            if window_slot(w, <int64_t>(<uint64_t>w.base + k))[0] != NIL:
                moving += 1
        if moving:
            if hash_room(b, moving + 1) < 0:
                return -1
            for k in range(span):
                order_id = <int64_t>(<uint64_t>w.base + k)
                slot = window_slot(w, order_id)
                if slot[0] != NIL:
                    hash_insert(b, order_id, mix64(<uint64_t>order_id), slot[0])
                    slot[0] = NIL
            w.live -= moving
    w.base = new_base
    if w.live == 0 and w.cap > MIN_WINDOW:
        return window_place(b, new_base, MIN_WINDOW)   # emptied: give the memory back
    return 0


cdef int window_make_room(BookState* b, int64_t order_id) noexcept nogil:
    # reserve_id() for an id outside the window: start, grow or slide the window so that it holds
    # the id; an id behind the window goes to the hash table (reserve() left room for one).
    cdef IdWindow* w = &b.window
    if w.cap == 0:
        return window_place(b, order_id, MIN_WINDOW)
    if order_id < w.base:
        return 0
    if (<uint64_t>order_id - <uint64_t>w.base < 2 * <uint64_t>w.cap and <uint64_t>w.live * 4 >= w.cap
            and w.cap < MAX_WINDOW):
        return window_grow(b)       # dense and just past the end: keep everything
    if <uint64_t>w.live * 16 < w.cap and w.cap > MIN_WINDOW:
        # Nearly empty: move its few orders to the hash table, which shrinks it to MIN_WINDOW.
        # Otherwise ids arriving in big strides would make a big, nearly empty window slide (and
        # be scanned) on every insert; this way each slot scanned was paid for by an insert or a
        # removal since the window grew.
        if window_slide(b, <int64_t>(<uint64_t>w.base + w.cap)) < 0:
            return -1
        if in_window(w, order_id):
            return 0
    # Sparse, or far ahead: the id lands three quarters of the way in, leaving room for the next.
    return window_slide(b, <int64_t>(<uint64_t>order_id - (w.cap - w.cap // 4) + 1))


cdef inline int reserve_id(BookState* b, int64_t order_id) noexcept nogil:
    # Before a `new`: the window change its id may call for (allocations happen here, before the
    # command changes anything). An id inside the window is the common case.
    if in_window(&b.window, order_id):
        return 0
    return window_make_room(b, order_id)


# ---------------------------------------------------------------------------------------------
# Capacity: every command that may add an order reserves one order, one level and one index slot
# first, so nothing reallocates (and no pointer moves) while a command runs.
# ---------------------------------------------------------------------------------------------

cdef inline int reserve(BookState* b) noexcept nogil:
    # Fast path: room everywhere (the common case); else grow what is full.
    if ((b.pool.free_head != NIL or b.pool.used < b.pool.capacity)
            and (b.levels.free_head != NIL or b.levels.used < b.levels.capacity)
            and (<size_t>b.index.count + 1) * 4 <= (<size_t>b.index.mask + 1) * 3
            and (<size_t>b.level_index.count + 1) * 2 <= <size_t>b.level_index.mask + 1
            and b.sides[BUY].size < b.sides[BUY].capacity and b.sides[SELL].size < b.sides[SELL].capacity):
        return 0
    return reserve_slow(b)


cdef int reserve_slow(BookState* b) noexcept nogil:
    if b.pool.free_head == NIL and b.pool.used == b.pool.capacity:
        if grow_pool(&b.pool) < 0:
            return -1
    if b.levels.free_head == NIL and b.levels.used == b.levels.capacity:
        if grow_levels(&b.levels) < 0:
            return -1
    if b.sides[BUY].size == b.sides[BUY].capacity and grow_heap(&b.sides[BUY]) < 0:
        return -1
    if b.sides[SELL].size == b.sides[SELL].capacity and grow_heap(&b.sides[SELL]) < 0:
        return -1
    if (<size_t>b.level_index.count + 1) * 2 > <size_t>b.level_index.mask + 1:
        if slot_table_resize(&b.level_index, (<size_t>b.level_index.mask + 1) * 2) < 0:
            return -1
    return hash_room(b, 1)


# ---------------------------------------------------------------------------------------------
# Levels
# ---------------------------------------------------------------------------------------------

cdef inline void heap_place(SideBook* sb, Level* levels, uint32_t pos, HeapEntry entry) noexcept nogil:
    sb.heap[pos] = entry
    levels[entry.level].heap_pos = pos


cdef void heap_sift_up(SideBook* sb, Level* levels, uint32_t pos) noexcept nogil:
    cdef HeapEntry entry = sb.heap[pos]
    cdef uint32_t parent
    while pos > 0:
        parent = (pos - 1) >> 1
        if sb.heap[parent].key <= entry.key:
            break
        heap_place(sb, levels, pos, sb.heap[parent])
        pos = parent
    heap_place(sb, levels, pos, entry)


cdef void heap_sift_down(SideBook* sb, Level* levels, uint32_t pos) noexcept nogil:
    cdef HeapEntry entry = sb.heap[pos]
    cdef uint32_t child
    while True:
        child = 2 * pos + 1
        if child >= sb.size:
            break
        if child + 1 < sb.size and sb.heap[child + 1].key < sb.heap[child].key:
            child += 1
        if entry.key <= sb.heap[child].key:
            break
        heap_place(sb, levels, pos, sb.heap[child])
        pos = child
    heap_place(sb, levels, pos, entry)


cdef inline void heap_refresh_best(SideBook* sb) noexcept nogil:
    if sb.size:
        sb.best = sb.heap[0].level
        sb.best_key = sb.heap[0].key
    else:
        sb.best = NIL
        sb.best_key = 0


cdef void heap_push(SideBook* sb, Level* levels, int64_t key, uint32_t li) noexcept nogil:
    # The caller has reserved room (reserve()).
    cdef uint32_t pos = sb.size
    sb.size += 1
    sb.heap[pos].key = key
    sb.heap[pos].level = li
    sb.heap[pos]._pad = 0
    levels[li].heap_pos = pos
    heap_sift_up(sb, levels, pos)
    heap_refresh_best(sb)


cdef void heap_remove(SideBook* sb, Level* levels, uint32_t pos) noexcept nogil:
    # The last entry fills the hole, then moves up or down to where it belongs.
    sb.size -= 1
    if pos < sb.size:
        heap_place(sb, levels, pos, sb.heap[sb.size])
        if pos > 0 and sb.heap[pos].key < sb.heap[(pos - 1) >> 1].key:
            heap_sift_up(sb, levels, pos)
        else:
            heap_sift_down(sb, levels, pos)
    heap_refresh_best(sb)


cdef int grow_heap(SideBook* sb) noexcept nogil:
    cdef size_t cap = <size_t>sb.capacity * 2 if sb.capacity else INITIAL_CAPACITY
    if cap > MAX_POOL_CAPACITY:
        return -1
    cdef HeapEntry* heap = <HeapEntry*>buf_resize(sb.heap, sb.capacity * sizeof(HeapEntry),
                                                  cap * sizeof(HeapEntry))
    if heap == NULL:
        return -1
    sb.heap = heap
    sb.capacity = <uint32_t>cap
    return 0


ctypedef pair[int64_t, uint32_t] KeyPos     # (-key, heap position): a max-queue of these is best-first

# Walking a side's levels best-first without changing the heap: a frontier of heap positions (a
# max-heap of (-key, position)); taking a position reveals its two children. O(k log k) for k levels.

cdef inline void walk_start(vector[KeyPos]& frontier, SideBook* sb) noexcept nogil:
    frontier.clear()
    if sb.size:
        frontier.push_back(KeyPos(-sb.heap[0].key, 0))


cdef inline void walk_add(vector[KeyPos]& frontier, SideBook* sb, uint32_t pos) noexcept nogil:
    if pos < sb.size:
        frontier.push_back(KeyPos(-sb.heap[pos].key, pos))
        push_heap(frontier.begin(), frontier.end())


cdef inline uint32_t walk_next(vector[KeyPos]& frontier, SideBook* sb) noexcept nogil:
    # The next best level's index; call only while the frontier is not empty.
    pop_heap(frontier.begin(), frontier.end())
    cdef uint32_t pos = frontier.back().second
    frontier.pop_back()
    walk_add(frontier, sb, 2 * pos + 1)
    walk_add(frontier, sb, 2 * pos + 2)
    return sb.heap[pos].level


cdef uint32_t level_for(BookState* b, uint32_t side, int64_t price) noexcept nogil:
    # The level of (side, price), created (empty) if absent. Hot path: the cached best level.
    cdef SideBook* sb = &b.sides[side]
    cdef int64_t key = side_key(side, price)
    if sb.best != NIL and key == sb.best_key:
        return sb.best
    cdef uint32_t slot = level_index_find_slot(&b.level_index, b.levels.items, key)
    if slot != NIL:
        return b.level_index.slots[slot].idx
    cdef uint32_t li = level_alloc(&b.levels)
    cdef Level* lvl = &b.levels.items[li]
    lvl.price = price
    lvl.total_qty = 0
    lvl.count = 0
    lvl.head = NIL
    lvl.tail = NIL
    lvl.side = side
    slot_table_insert(&b.level_index, mix64(<uint64_t>key), li)
    heap_push(sb, b.levels.items, key, li)
    return li


cdef void drop_level(BookState* b, uint32_t li) noexcept nogil:
    cdef Level* lvl = &b.levels.items[li]
    cdef SideBook* sb = &b.sides[lvl.side]
    cdef int64_t key = side_key(lvl.side, lvl.price)
    delete_slot(b.level_index.slots, b.level_index.mask,
                level_index_find_slot(&b.level_index, b.levels.items, key))
    b.level_index.count -= 1
    heap_remove(sb, b.levels.items, lvl.heap_pos)
    level_free(&b.levels, li)


cdef inline void enqueue(BookState* b, uint32_t li, uint32_t oi) noexcept nogil:
    # Append an order to the tail of its level (it has the newest stamp).
    cdef Level* lvl = &b.levels.items[li]
    cdef Order* o = &b.pool.items[oi]
    o.level = li
    o.next = NIL
    o.prev = lvl.tail
    if lvl.tail == NIL:
        lvl.head = oi
    else:
        b.pool.items[lvl.tail].next = oi
    lvl.tail = oi
    lvl.count += 1
    lvl.total_qty += o.remaining
    b.sides[lvl.side].orders += 1


cdef void remove_order(BookState* b, uint32_t oi, bint hash_out) noexcept nogil:
    # Take a resting order out of its level, the index and the pool (and, if asked, out of the hash).
    if hash_out:
        b.orders_hash ^= hash_of(b, &b.pool.items[oi])
    id_delete(b, b.pool.items[oi].id, oi)
    unlink_order(b, oi)
    pool_free(&b.pool, oi)


cdef void unlink_order(BookState* b, uint32_t oi) noexcept nogil:
    # Take an order off its level (dropping the level if it empties); it stays in the index and pool.
    cdef Order* o = &b.pool.items[oi]
    cdef uint32_t li = o.level
    cdef Level* lvl = &b.levels.items[li]
    if o.prev == NIL:
        lvl.head = o.next
    else:
        b.pool.items[o.prev].next = o.next
    if o.next == NIL:
        lvl.tail = o.prev
    else:
        b.pool.items[o.next].prev = o.prev
    lvl.count -= 1
    lvl.total_qty -= o.remaining
    b.sides[lvl.side].orders -= 1
    if lvl.count == 0:
        drop_level(b, li)


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------

cdef void rest(BookState* b, Taker* t) noexcept nogil:
    # Queue the taker's remainder with the next priority stamp.
    cdef uint32_t li = level_for(b, t.side, t.price)
    cdef uint32_t oi = pool_alloc(&b.pool)
    cdef Order* o = &b.pool.items[oi]
    o.id = t.id
    o.owner = t.owner
    o.remaining = <uint32_t>t.remaining
    o.stamp = b.next_stamp
    b.next_stamp += 1
    o.stp = t.stp
    o.post_only = t.post_only
    o._pad = 0
    enqueue(b, li, oi)
    id_insert(b, t.id, t.id_mix, oi)
    b.orders_hash ^= order_hash_from(t.id_mix, t.owner, t.price, t.remaining, o.stamp,
                                     order_flags(t.side, t.stp, t.post_only))


cdef inline void release(BookState* b, uint32_t oi) noexcept nogil:
    # An amended order that did not rest again: out of the index and the pool.
    id_delete(b, b.pool.items[oi].id, oi)
    pool_free(&b.pool, oi)


cdef void requeue(BookState* b, Taker* t, uint32_t oi) noexcept nogil:
    # An amended order's remainder rests again in its own pool slot, with the next stamp.
    cdef uint32_t li = level_for(b, t.side, t.price)
    cdef Order* o = &b.pool.items[oi]
    o.remaining = <uint32_t>t.remaining
    o.stamp = b.next_stamp
    b.next_stamp += 1
    enqueue(b, li, oi)
    b.orders_hash ^= order_hash_from(t.id_mix, t.owner, t.price, t.remaining, o.stamp,
                                     order_flags(t.side, t.stp, t.post_only))


cdef bint fok_fillable(BookState* b, Taker* t) noexcept nogil:
    # Would matching fill the whole quantity? Walks the opposite side best-first, read-only.
    cdef SideBook* opp = &b.sides[3 - t.side]
    cdef uint64_t need = t.remaining
    cdef Level* lvl
    cdef Order* o
    cdef uint32_t oi
    if opp.best == NIL or opp.best_key > t.limit_key:
        return False
    # The best level alone usually decides it; only then pay for an ordered walk.
    lvl = &b.levels.items[opp.best]
    if t.stp == STP_NONE and lvl.total_qty >= need:
        return True
    cdef vector[KeyPos] frontier
    walk_start(frontier, opp)
    while not frontier.empty():
        lvl = &b.levels.items[walk_next(frontier, opp)]
        if side_key(lvl.side, lvl.price) > t.limit_key:
            return False
        if t.stp == STP_NONE:
            if lvl.total_qty >= need:
                return True
            need -= lvl.total_qty
        else:
            oi = lvl.head
            while oi != NIL:
                o = &b.pool.items[oi]
                if o.owner == t.owner:
                    if t.stp != STP_CANCEL_MAKER:
                        return False          # matching would stop here
                else:
                    if o.remaining >= need:
                        return True
                    need -= o.remaining
                oi = o.next
    return False


cdef bint match(BookState* b, Taker* t) noexcept nogil:
    # Match the taker against the opposite side. Returns True if self-trade prevention cancelled it.
    cdef SideBook* opp = &b.sides[3 - t.side]
    cdef uint32_t li, oi
    cdef Level* lvl
    cdef Order* o
    cdef uint64_t q
    while t.remaining:
        li = opp.best
        if li == NIL or opp.best_key > t.limit_key:
            break
        lvl = &b.levels.items[li]
        oi = lvl.head
        o = &b.pool.items[oi]
        if t.stp != STP_NONE and o.owner == t.owner:
            if t.stp != STP_CANCEL_TAKER:
                emit(b, EV_CANCELLED, o.id, o.owner, lvl.side, lvl.price, o.remaining, 0, 0, 0, 0,
                     CANCEL_SELF_TRADE)
                remove_order(b, oi, True)
            if t.stp != STP_CANCEL_MAKER:
                emit(b, EV_CANCELLED, t.id, t.owner, t.side, t.price, t.remaining, 0, 0, 0, 0,
                     CANCEL_SELF_TRADE)
                return True
            continue
        q = o.remaining if o.remaining < t.remaining else t.remaining
        t.remaining -= q
        if q == o.remaining:
            emit(b, EV_TRADE, t.id, t.owner, t.side, lvl.price, q, t.remaining, o.id, o.owner, 0, 0)
            emit(b, EV_DONE, o.id, o.owner, lvl.side, lvl.price, 0, 0, 0, 0, 0, 0)
            remove_order(b, oi, True)
        else:
            b.orders_hash ^= hash_delta(b, o, o.remaining - q)
            o.remaining -= <uint32_t>q
            lvl.total_qty -= q
            emit(b, EV_TRADE, t.id, t.owner, t.side, lvl.price, q, t.remaining, o.id, o.owner,
                 o.remaining, 0)
    return False


cdef void match_and_settle(BookState* b, Taker* t) noexcept nogil:
    if match(b, t):
        return
    if t.remaining == 0:
        emit(b, EV_DONE, t.id, t.owner, t.side, t.price, 0, 0, 0, 0, 0, 0)
    elif t.type == LIMIT and t.tif == GTC:
        rest(b, t)
    else:
        emit(b, EV_CANCELLED, t.id, t.owner, t.side, t.price, t.remaining, 0, 0, 0, 0, CANCEL_UNFILLED)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

cdef inline uint8_t check_new(int64_t order_id, int64_t owner, int64_t side, int64_t type, int64_t tif,
                              int64_t stp, int64_t qty, int64_t price, bint post_only) noexcept nogil:
    # The stateless part of the validation order of docs/engine.md.
    if order_id < 1:
        return INVALID_ORDER_ID
    if owner < 0 or owner > MAX_OWNER:
        return INVALID_OWNER
    if side != BUY and side != SELL:
        return INVALID_SIDE
    if type != LIMIT and type != MARKET:
        return INVALID_TYPE
    if tif != GTC and tif != IOC and tif != FOK:
        return INVALID_TIF
    if stp < STP_NONE or stp > STP_CANCEL_BOTH:
        return INVALID_STP
    if qty < 1 or qty > MAX_QTY:
        return INVALID_QTY
    if type == LIMIT:
        if price < 1 or price > MAX_PRICE:
            return INVALID_PRICE
    elif price != 0:
        return INVALID_PRICE
    if post_only and not (type == LIMIT and tif == GTC):
        return INVALID_POST_ONLY
    return REJ_NONE


cdef void cmd_new_checked(BookState* b, int64_t order_id, uint32_t owner, uint8_t side, uint8_t type,
                          uint8_t tif, uint8_t stp, int64_t qty, int64_t price,
                          bint post_only) noexcept nogil:
    # A `new` whose arguments passed check_new; the caller has reserved capacity.
    cdef Taker t
    t.id_mix = mix64(<uint64_t>order_id)
    if id_find_mixed(b, order_id, t.id_mix) != NIL:
        emit(b, EV_REJECTED, order_id, owner, side, price, qty, 0, 0, 0, 0, DUPLICATE_ORDER_ID)
        return
    t.id = order_id
    t.owner = owner
    t.side = side
    t.type = type
    t.tif = tif
    t.stp = stp
    t.post_only = post_only
    t.price = price
    t.remaining = <uint64_t>qty
    if type == MARKET:
        t.limit_key = INT64_MAX
    else:
        t.limit_key = side_key(3 - side, price)   # keyed as the opposite side's levels are
    cdef SideBook* opp = &b.sides[3 - side]
    if post_only and opp.best != NIL and opp.best_key <= t.limit_key:
        emit(b, EV_REJECTED, order_id, owner, side, price, qty, 0, 0, 0, 0, POST_ONLY_WOULD_TAKE)
        return
    emit(b, EV_ACCEPTED, order_id, owner, side, price, qty, qty, 0, 0, 0, 0)
    if tif == FOK and not fok_fillable(b, &t):
        emit(b, EV_CANCELLED, order_id, owner, side, price, qty, 0, 0, 0, 0, CANCEL_FOK)
        return
    match_and_settle(b, &t)


cdef void cmd_cancel(BookState* b, int64_t order_id, uint32_t owner) noexcept nogil:
    # owner is already known valid.
    cdef uint32_t oi = id_find(b, order_id)
    cdef Order* o
    cdef Level* lvl
    if oi == NIL or b.pool.items[oi].owner != owner:
        emit(b, EV_REJECTED, order_id, owner, 0, 0, 0, 0, 0, 0, 0, UNKNOWN_ORDER)
        return
    o = &b.pool.items[oi]
    lvl = &b.levels.items[o.level]
    emit(b, EV_CANCELLED, order_id, owner, lvl.side, lvl.price, o.remaining, 0, 0, 0, 0, CANCEL_USER)
    remove_order(b, oi, True)


cdef void cmd_amend(BookState* b, int64_t order_id, uint32_t owner, int64_t price, int64_t qty) noexcept nogil:
    # owner is already known valid; the caller has reserved capacity.
    cdef uint32_t oi = id_find(b, order_id)
    cdef uint8_t code = REJ_NONE
    if oi == NIL or b.pool.items[oi].owner != owner:
        code = UNKNOWN_ORDER
    elif price == 0 and qty == 0:
        code = INVALID_AMEND
    elif qty < 0 or qty > MAX_QTY:
        code = INVALID_QTY
    elif price < 0 or price > MAX_PRICE:
        code = INVALID_PRICE
    if code != REJ_NONE:
        emit(b, EV_REJECTED, order_id, owner, 0, price, qty, 0, 0, 0, 0, code)
        return
    cdef Order* o = &b.pool.items[oi]
    cdef Level* lvl = &b.levels.items[o.level]
    cdef uint8_t side = <uint8_t>lvl.side
    cdef int64_t new_price = price if price != 0 else lvl.price
    cdef uint64_t new_qty = <uint64_t>qty if qty != 0 else o.remaining
    cdef int64_t limit_key = side_key(3 - side, new_price)
    cdef SideBook* opp = &b.sides[3 - side]
    if o.post_only and opp.best != NIL and opp.best_key <= limit_key:
        emit(b, EV_REJECTED, order_id, owner, 0, price, qty, 0, 0, 0, 0, POST_ONLY_WOULD_TAKE)
        return
    if new_price == lvl.price and new_qty <= o.remaining:
        # Reduce in place: queue position and stamp kept.
        b.orders_hash ^= hash_delta(b, o, new_qty)
        lvl.total_qty -= o.remaining - new_qty
        o.remaining = <uint32_t>new_qty
        emit(b, EV_AMENDED, order_id, owner, side, new_price, new_qty, new_qty, 0, 0, 0, 1)
        return
    # Loses priority: leave the book, then come back as a GTC limit taker with the new values.
    cdef Taker t
    t.id = order_id
    t.id_mix = mix64(<uint64_t>order_id)
    t.owner = owner
    t.side = side
    t.type = LIMIT
    t.tif = GTC
    t.stp = o.stp
    t.post_only = o.post_only
    t.price = new_price
    t.limit_key = limit_key
    t.remaining = new_qty
    # The order keeps its pool slot and index entry while it matches (it is off every level, so it
    # cannot meet itself); they are released only if it does not rest again.
    b.orders_hash ^= hash_of(b, o)
    unlink_order(b, oi)
    emit(b, EV_AMENDED, order_id, owner, side, new_price, new_qty, new_qty, 0, 0, 0, 0)
    if match(b, &t):
        release(b, oi)
    elif t.remaining == 0:
        emit(b, EV_DONE, t.id, t.owner, t.side, t.price, 0, 0, 0, 0, 0, 0)
        release(b, oi)
    else:
        requeue(b, &t, oi)


cdef void cmd_cancel_all(BookState* b, uint32_t owner) noexcept nogil:
    # Scans the pool: O(pool slots + k log k) for k orders of the owner. Cancels in ascending id.
    cdef vector[pair[int64_t, uint32_t]] mine
    cdef uint32_t i
    cdef Order* o
    cdef Level* lvl
    cdef size_t k
    for i in range(b.pool.used):
        o = &b.pool.items[i]
        if o.remaining != 0 and o.owner == owner:
            mine.push_back(pair[int64_t, uint32_t](o.id, i))
    cpp_sort(mine.begin(), mine.end())
    for k in range(mine.size()):
        i = mine[k].second
        o = &b.pool.items[i]
        lvl = &b.levels.items[o.level]
        emit(b, EV_CANCELLED, o.id, owner, lvl.side, lvl.price, o.remaining, 0, 0, 0, 0, CANCEL_USER)
        remove_order(b, i, True)


cdef inline void prefetch_slot(BookState* b, int64_t order_id) noexcept nogil:
    # Batch look-ahead, stage 1: pull the id's window slot or home index slot into cache.
    cdef uint32_t tag
    if in_window(&b.window, order_id):
        prefetch(window_slot(&b.window, order_id))
    elif in_hash_bounds(&b.window, order_id):
        tag = <uint32_t>(mix64(<uint64_t>order_id) >> 32)
        prefetch(&b.index.slots[tag & b.index.mask])


cdef inline void prefetch_order(BookState* b, int64_t order_id) noexcept nogil:
    # Stage 2, a few commands later: the slot is cached now; if it holds this id, pull the order.
    cdef uint32_t tag
    cdef uint32_t oi
    cdef IndexSlot* s
    if in_window(&b.window, order_id):
        oi = window_slot(&b.window, order_id)[0]
        if oi != NIL:
            prefetch(&b.pool.items[oi])
    elif in_hash_bounds(&b.window, order_id):
        tag = <uint32_t>(mix64(<uint64_t>order_id) >> 32)
        s = &b.index.slots[tag & b.index.mask]
        if s.idx != NIL and s.tag == tag:
            prefetch(&b.pool.items[s.idx])


cdef inline void prefetch_makers(BookState* b, uint32_t side) noexcept nogil:
    # The next takers will most likely hit the head of the best level: bring in its index slot (to
    # remove it once filled) and the order queued behind it (the next head).
    cdef uint32_t li = b.sides[side].best
    cdef Order* head
    if li != NIL:
        head = &b.pool.items[b.levels.items[li].head]
        if in_window(&b.window, head.id):
            prefetch(window_slot(&b.window, head.id))
        else:
            prefetch(&b.index.slots[<uint32_t>(mix64(<uint64_t>head.id) >> 32) & b.index.mask])
        if head.next != NIL:
            prefetch(&b.pool.items[head.next])


cdef int apply_command(BookState* b, const CommandRec* rec) noexcept nogil:
    # One batch command. Returns -1 if memory ran out before the command changed anything.
    cdef CommandRec c = rec[0]          # one read of the row
    cdef uint8_t code
    cdef bint post_only = c.post_only != 0
    if c.op == OP_NEW:
        code = check_new(c.order_id, c.owner, c.side, c.type, c.tif, c.stp, c.qty, c.price, post_only)
        if code != REJ_NONE:
            emit(b, EV_REJECTED, c.order_id, c.owner, c.side, c.price, c.qty, 0, 0, 0, 0, code)
            return 0
        if reserve(b) < 0 or reserve_id(b, c.order_id) < 0:
            return -1
        cmd_new_checked(b, c.order_id, c.owner, c.side, c.type, c.tif, c.stp, c.qty, c.price, post_only)
    elif c.op == OP_CANCEL:
        cmd_cancel(b, c.order_id, c.owner)
    elif c.op == OP_AMEND:
        if reserve(b) < 0:
            return -1
        cmd_amend(b, c.order_id, c.owner, c.price, c.qty)
    elif c.op == OP_CANCEL_ALL:
        cmd_cancel_all(b, c.owner)
    else:
        emit(b, EV_REJECTED, c.order_id, c.owner, c.side, c.price, c.qty, 0, 0, 0, 0, INVALID_OP)
    return 0


# ---------------------------------------------------------------------------------------------
# Python argument conversion
# ---------------------------------------------------------------------------------------------

cdef inline int64_t as_i64(object value, str name) except? -1:
    # An int argument as int64, or ValueError (docs/engine.md). Small ints are read in place.
    cdef int64_t v
    if small_int_value(<PyObject*>value, &v):
        return v
    return as_i64_general(value, name)


cdef inline int64_t raw_as_i64(PyObject* value, str name) except? -1:
    # as_i64 of a borrowed argument pointer (the vectorcall path: no reference taken).
    cdef int64_t v
    if small_int_value(value, &v):
        return v
    return as_i64_general(<object>value, name)


cdef int64_t as_i64_general(object value, str name) except? -1:
    cdef int overflow = 0
    cdef long long v
    if not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        raise ValueError(f"{name}={value} is outside the signed 64-bit range")
    return v


cdef inline PyObject* exact(object value) noexcept:
    # value (borrowed) if it is an exact int, so an event may carry it as is; else NULL.
    return <PyObject*>value if type(value) is int else NULL


cdef inline PyObject* raw_exact(PyObject* value) noexcept:
    return value if exact_int(value) else NULL


cdef extern from "Python.h":
    # Raw forms: the tuple and list slots steal the references they are given.
    PyObject* raw_tuple_new "PyTuple_New"(Py_ssize_t size)
    void raw_tuple_set "PyTuple_SET_ITEM"(PyObject* t, Py_ssize_t i, PyObject* item)
    void list_put "PyList_SET_ITEM"(object lst, Py_ssize_t i, PyObject* item)
    void raw_incref "Py_INCREF"(PyObject* o)
    void raw_decref "Py_DECREF"(PyObject* o)
    PyObject* err_occurred "PyErr_Occurred"()


cdef extern from *:
    """
    /* A list of n NULL slots (to be filled with PyList_SET_ITEM) whose item array comes from
       PyMem_Malloc and an inline loop rather than PyList_New's calloc: the memset call is measurable
       for the 1-3 events of a command. The slots must be valid (NULL) at once: the list is tracked
       by the GC, which may run while the caller allocates the items. */
    static PyObject* fb_list_unfilled(Py_ssize_t n) {
        PyListObject* l = (PyListObject*)PyList_New(0);
        if (l == NULL || n == 0) return (PyObject*)l;
        PyObject** items = (PyObject**)PyMem_Malloc((size_t)n * sizeof(PyObject*));
        if (items == NULL) {
            Py_DECREF(l);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; i < n; i++) items[i] = NULL;
        l->ob_item = items;
        l->allocated = n;
        Py_SET_SIZE(l, n);
        return (PyObject*)l;
    }
    """
    list list_unfilled "fb_list_unfilled"(Py_ssize_t n)    # n NULL slots


cdef extern from *:
    """
    /* Vectorcall entries for the command methods. The Cython-generated methods parse keywords and
       defaults in general; fb_install_fastcall replaces one in the type's dict with a METH_FASTCALL
       method that hands plain positional calls (min..max arguments, the common case) to a C function
       over the caller's argument array, and passes everything else to the generic method unchanged
       (same results, same TypeErrors). */
    typedef PyObject* (*fb_fast_fn)(PyObject* self, PyObject** args, Py_ssize_t nargs);
    typedef struct {
        fb_fast_fn impl;
        PyObject* generic;        /* the original method descriptor */
        Py_ssize_t min_args, max_args;
        PyMethodDef def;
    } fb_fast_method;
    #define FB_FAST_METHODS 4
    static fb_fast_method fb_fast[FB_FAST_METHODS];
    static int fb_fast_count = 0;

    static PyObject* fb_fast_dispatch(int k, PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                                      PyObject* kwnames) {
        fb_fast_method* m = &fb_fast[k];
        if (kwnames == NULL && nargs >= m->min_args && nargs <= m->max_args)
            return m->impl(self, (PyObject**)args, nargs);
        PyObject* bound = Py_TYPE(m->generic)->tp_descr_get(m->generic, self, (PyObject*)Py_TYPE(self));
        if (bound == NULL) return NULL;
        PyObject* result = PyObject_Vectorcall(bound, args, (size_t)nargs, kwnames);
        Py_DECREF(bound);
        return result;
    }
    #define FB_FAST_ENTRY(k) \
        static PyObject* fb_fast_entry_##k(PyObject* self, PyObject* const* args, Py_ssize_t nargs, \
                                           PyObject* kwnames) { \
            return fb_fast_dispatch(k, self, args, nargs, kwnames); \
        }
    FB_FAST_ENTRY(0)
    FB_FAST_ENTRY(1)
    FB_FAST_ENTRY(2)
    FB_FAST_ENTRY(3)
    typedef PyObject* (*fb_fast_entry)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);
    static fb_fast_entry fb_fast_entries[FB_FAST_METHODS] = {
        fb_fast_entry_0, fb_fast_entry_1, fb_fast_entry_2, fb_fast_entry_3};

    static int fb_install_fastcall(PyObject* type, const char* name, fb_fast_fn impl,
                                   Py_ssize_t min_args, Py_ssize_t max_args) {
        PyTypeObject* tp = (PyTypeObject*)type;
        if (fb_fast_count == FB_FAST_METHODS) {
            PyErr_SetString(PyExc_RuntimeError, "too many fast methods");
            return -1;
        }
        PyObject* generic = PyDict_GetItemString(tp->tp_dict, name);
        if (generic == NULL || Py_TYPE(generic)->tp_descr_get == NULL) {
            PyErr_Format(PyExc_RuntimeError, "%s is not a method descriptor", name);
            return -1;
        }
        fb_fast_method* m = &fb_fast[fb_fast_count];
        m->def.ml_name = name;
        m->def.ml_meth = (PyCFunction)(void (*)(void))fb_fast_entries[fb_fast_count];
        m->def.ml_flags = METH_FASTCALL | METH_KEYWORDS;
        m->def.ml_doc = "A book command; returns its events (docs/engine.md).";
        PyObject* fast = PyDescr_NewMethod(tp, &m->def);
        if (fast == NULL) return -1;
        Py_INCREF(generic);
        m->generic = generic;
        m->impl = impl;
        m->min_args = min_args;
        m->max_args = max_args;
        fb_fast_count++;
        int rc = PyDict_SetItemString(tp->tp_dict, name, fast);
        Py_DECREF(fast);
        PyType_Modified(tp);
        return rc;
    }

    static inline int fb_exact_int(PyObject* o) { return PyLong_CheckExact(o); }
    """
    ctypedef object (*fast_fn "fb_fast_fn")(object, PyObject**, Py_ssize_t)
    int install_fastcall "fb_install_fastcall"(object type, const char* name, fast_fn impl,
                                               Py_ssize_t min_args, Py_ssize_t max_args) except -1
    bint exact_int "fb_exact_int"(PyObject* o) noexcept


cdef struct ArgInts:
    # The caller's int objects (borrowed; NULL when not an exact int) with their values: the event of
    # a rejection echoes the arguments and reuses their objects.
    PyObject* id_obj
    int64_t id_val
    PyObject* owner_obj
    int64_t owner_val
    PyObject* price_obj
    int64_t price_val
    PyObject* qty_obj
    int64_t qty_val


cdef inline void tuple_put(PyObject* t, Py_ssize_t i, PyObject* item, bint* failed) noexcept:
    raw_tuple_set(t, i, item)
    if item == NULL:
        failed[0] = True


cdef PyObject* event_tuple(const EventRec* e) noexcept:
    # One event as an 11-tuple (new reference), or NULL. An int that could not be allocated leaves
    # a NULL slot (a tuple allows it) and an exception set: the caller checks PyErr_Occurred once.
    cdef PyObject* t = raw_tuple_new(11)
    cdef PyObject* zero
    if t == NULL:
        return NULL
    raw_tuple_set(t, 0, new_byte_int(e.type))
    raw_tuple_set(t, 1, new_int(e.order_id))
    raw_tuple_set(t, 2, new_int(e.owner))
    raw_tuple_set(t, 3, new_byte_int(e.side))
    raw_tuple_set(t, 4, new_int(e.price))
    raw_tuple_set(t, 5, new_int(e.qty))
    raw_tuple_set(t, 6, new_int(e.remaining))
    if e.other_id == 0 and e.other_owner == 0 and e.other_remaining == 0:
        # every event but TRADE: one zero object for the three
        zero = new_byte_int(0)
        raw_tuple_set(t, 7, zero)
        if zero != NULL:
            raw_incref(zero)
            raw_incref(zero)
        raw_tuple_set(t, 8, zero)
        raw_tuple_set(t, 9, zero)
    else:
        raw_tuple_set(t, 7, new_int(e.other_id))
        raw_tuple_set(t, 8, new_int(e.other_owner))
        raw_tuple_set(t, 9, new_int(e.other_remaining))
    raw_tuple_set(t, 10, new_byte_int(e.reason))
    return t


# ---------------------------------------------------------------------------------------------
# The events of one per-command call
# ---------------------------------------------------------------------------------------------

cdef enum:
    EVENTS_INLINE = 4   # records held inside the Events object (a command rarely has more)


@cython.final
@cython.no_gc          # holds a list of int tuples and a bytes: it can never be part of a cycle
@cython.freelist(8)
cdef class Events:
    """The events of one command (docs/engine.md): a read-only sequence of 11-tuples that compares
    equal to the list of the same tuples. The records are copied out of the book when the command
    returns and become tuples only when first read: a caller that ignores them, or only asks for
    len(), pays for no tuples and no ints."""

    cdef EventRec inline_items[EVENTS_INLINE]
    cdef EventRec* items  # inline_items, or the buffer of `spill`
    cdef Py_ssize_t n
    cdef bytes spill      # the records of a command with more than EVENTS_INLINE events
    cdef list tuples      # built on first read, then the answer to every read

    cdef list _tuples(self):
        cdef Py_ssize_t i
        if self.tuples is None:
            out = list_unfilled(self.n)
            for i in range(self.n):
                list_put(out, i, event_tuple(&self.items[i]))   # NULL slots are allowed
            if err_occurred() != NULL:
                raise MemoryError()
            self.tuples = out
        return self.tuples

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return self._tuples()[index]

    def __iter__(self):
        return iter(self._tuples())

    def __reversed__(self):
        return reversed(self._tuples())

    def __contains__(self, item):
        return item in self._tuples()

    def __eq__(self, other):
        if isinstance(other, Events):
            other = (<Events>other)._tuples()
        elif not isinstance(other, list):
            return NotImplemented
        return self._tuples() == other

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None   # a list's equal: unhashable like one

    def index(self, item, *args):
        return self._tuples().index(item, *args)

    def count(self, item):
        return self._tuples().count(item)

    def tolist(self):
        """The events as a new list of 11-tuples."""
        return list(self._tuples())

    def __repr__(self):
        return f"Events({self._tuples()!r})"

    def __reduce__(self):
        return (list, (self._tuples(),))


Sequence.register(Events)


cdef Events take_events(EventBuffer* ev):
    # The events the last command left in `ev`, copied into a new Events.
    if ev.failed:
        raise MemoryError("event buffer allocation failed")
    cdef Events out = Events.__new__(Events)
    cdef size_t n = ev.count
    if n <= EVENTS_INLINE:
        out.items = out.inline_items
        memcpy(out.items, ev.items, n * sizeof(EventRec))
    else:   # a bytes object, so that freeing needs no __dealloc__ (which costs every command)
        out.spill = PyBytes_FromStringAndSize(<const char*>ev.items, <Py_ssize_t>(n * sizeof(EventRec)))
        out.items = <EventRec*>PyBytes_AS_STRING(out.spill)
    out.n = <Py_ssize_t>n
    return out


cdef Events rejected(int64_t order_id, int64_t owner, int64_t side, int64_t price, int64_t qty, int code,
                     const ArgInts* a):
    # The one-event answer of a command rejected before it reached the book (fields as given).
    cdef PyObject* t = raw_tuple_new(11)
    cdef bint failed = False
    if t == NULL:
        raise MemoryError()
    tuple_put(t, 0, new_byte_int(EV_REJECTED), &failed)
    tuple_put(t, 1, new_int_hint(order_id, a.id_obj, a.id_val), &failed)
    tuple_put(t, 2, new_int_hint(owner, a.owner_obj, a.owner_val), &failed)
    tuple_put(t, 3, new_int(side), &failed)
    tuple_put(t, 4, new_int_hint(price, a.price_obj, a.price_val), &failed)
    tuple_put(t, 5, new_int_hint(qty, a.qty_obj, a.qty_val), &failed)
    tuple_put(t, 6, new_byte_int(0), &failed)
    tuple_put(t, 7, new_byte_int(0), &failed)
    tuple_put(t, 8, new_byte_int(0), &failed)
    tuple_put(t, 9, new_byte_int(0), &failed)
    tuple_put(t, 10, new_byte_int(<unsigned>code), &failed)
    if failed:
        raw_decref(t)
        raise MemoryError()
    # Its fields are echoed as given (an owner or side out of range too), which an EventRec cannot
    # hold: the Events carries the tuple already built.
    cdef list tuples = list_unfilled(1)
    list_put(tuples, 0, t)
    cdef Events out = Events.__new__(Events)
    out.items = out.inline_items
    out.n = 1
    out.tuples = tuples
    return out


# ---------------------------------------------------------------------------------------------
# Little-endian byte helpers for the snapshot (explicit, so the bytes do not depend on the host)
# ---------------------------------------------------------------------------------------------

cdef inline void put_u64(uint8_t* p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <uint8_t>(v >> (8 * i))


cdef inline void put_u32(uint8_t* p, uint32_t v) noexcept nogil:
    cdef int i
    for i in range(4):
        p[i] = <uint8_t>(v >> (8 * i))


cdef inline uint64_t get_u64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v |= (<uint64_t>p[i]) << (8 * i)
    return v


cdef inline uint32_t get_u32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v = 0
    cdef int i
    for i in range(4):
        v |= (<uint32_t>p[i]) << (8 * i)
    return v


# ---------------------------------------------------------------------------------------------
# The memory of a batch's result array
# ---------------------------------------------------------------------------------------------

# One spare batch buffer, kept when a result array dies and reused by the next batch: its pages are
# already mapped, so a batch does not pay the kernel to fault in and zero ~128 bytes per command again.
# Touched only with the GIL held (EventStore.__dealloc__ and apply_batch's set-up).
cdef EventRec* spare_events = NULL
cdef size_t spare_capacity = 0
cdef size_t SPARE_MAX_BYTES = <size_t>1 << 30


cdef class EventStore:
    """Owns the event buffer a batch wrote; the numpy array returned by apply_batch views it."""

    cdef EventRec* items
    cdef size_t capacity
    cdef size_t count

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, self.items, <Py_ssize_t>(self.count * sizeof(EventRec)), 0, flags)

    def __releasebuffer__(self, Py_buffer* view):
        pass

    def __dealloc__(self):
        global spare_events, spare_capacity
        if spare_events == NULL and self.capacity * sizeof(EventRec) <= SPARE_MAX_BYTES:
            spare_events = self.items
            spare_capacity = self.capacity
        else:
            buf_free(self.items, self.capacity * sizeof(EventRec))


# ---------------------------------------------------------------------------------------------
# The Python class
# ---------------------------------------------------------------------------------------------

@cython.final   # direct calls to the cdef methods (no vtable): the per-command path is that hot
cdef class Book:
    """A limit order book for one market (docs/engine.md). Not thread-safe; apply_batch releases the
    GIL, and any other call on the same book while a batch runs raises RuntimeError."""

    cdef BookState st
    cdef bint busy

    def __cinit__(self):
        memset(&self.st, 0, sizeof(BookState))
        self.st.pool.free_head = NIL
        self.st.levels.free_head = NIL
        self.st.next_stamp = 1
        self.st.window.hash_lo = INT64_MAX
        self.st.window.hash_hi = INT64_MIN
        cdef int side
        for side in range(3):
            self.st.sides[side].best = NIL
        if (grow_pool(&self.st.pool) < 0 or grow_levels(&self.st.levels) < 0
                or slot_table_resize(&self.st.index, INITIAL_CAPACITY * 2) < 0
                or slot_table_resize(&self.st.level_index, INITIAL_CAPACITY * 2) < 0
                or grow_heap(&self.st.sides[BUY]) < 0 or grow_heap(&self.st.sides[SELL]) < 0
                or grow_events(&self.st.ev) < 0):
            raise MemoryError()

    def __dealloc__(self):
        buf_free(self.st.sides[BUY].heap, <size_t>self.st.sides[BUY].capacity * sizeof(HeapEntry))
        buf_free(self.st.sides[SELL].heap, <size_t>self.st.sides[SELL].capacity * sizeof(HeapEntry))
        buf_free(self.st.pool.items, <size_t>self.st.pool.capacity * sizeof(Order))
        buf_free(self.st.levels.items, <size_t>self.st.levels.capacity * sizeof(Level))
        if self.st.level_index.slots != NULL:
            buf_free(self.st.level_index.slots, (<size_t>self.st.level_index.mask + 1) * sizeof(IndexSlot))
        if self.st.index.slots != NULL:
            buf_free(self.st.index.slots, (<size_t>self.st.index.mask + 1) * sizeof(IndexSlot))
        buf_free(self.st.window.slots, <size_t>self.st.window.cap * sizeof(uint32_t))
        buf_free(self.st.ev.items, self.st.ev.capacity * sizeof(EventRec))

    # -- plumbing ------------------------------------------------------------------------------

    cdef inline int _idle(self) except -1:
        # Anything that follows pointers into the book must not run while a batch (GIL released)
        # may be reallocating them.
        if self.busy:
            raise RuntimeError("Book is busy: apply_batch is running in another thread")
        return 0

    cdef inline int _enter(self) except -1:
        if self.busy:
            raise RuntimeError("Book is busy: apply_batch is running in another thread")
        self.st.ev.count = 0
        self.st.ev.cmd = 0
        self.st.ev.failed = False
        return 0

    cdef inline Events _drain(self):
        # The caller's own work until the next command is time the cache can use: start loading
        # what a next taker most likely touches (the batch loop does the same between commands).
        prefetch_makers(&self.st, BUY)
        prefetch_makers(&self.st, SELL)
        return take_events(&self.st.ev)

    # -- commands ------------------------------------------------------------------------------

    @cython.binding(False)
    def new(self, order_id, owner, side, price, qty, type=LIMIT, tif=GTC, post_only=False,
            stp=STP_NONE):
        # The general entry (keywords, defaults as objects). Positional calls normally arrive through
        # new_positional instead: see install_fast_new below the class.
        cdef PyObject* args[9]
        args[0] = <PyObject*>order_id
        args[1] = <PyObject*>owner
        args[2] = <PyObject*>side
        args[3] = <PyObject*>price
        args[4] = <PyObject*>qty
        args[5] = <PyObject*>type
        args[6] = <PyObject*>tif
        args[7] = <PyObject*>post_only
        args[8] = <PyObject*>stp
        return self._new(args, 9)

    cdef Events _new(self, PyObject** args, Py_ssize_t nargs):
        # new() on 5..9 borrowed positional arguments; missing trailing ones take their defaults.
        cdef ArgInts a
        a.id_val = raw_as_i64(args[0], "order_id")
        a.owner_val = raw_as_i64(args[1], "owner")
        cdef int64_t sd = raw_as_i64(args[2], "side")
        a.price_val = raw_as_i64(args[3], "price")
        a.qty_val = raw_as_i64(args[4], "qty")
        cdef int64_t ty = raw_as_i64(args[5], "type") if nargs > 5 else LIMIT
        cdef int64_t tf = raw_as_i64(args[6], "tif") if nargs > 6 else GTC
        cdef bint po = (raw_as_i64(args[7], "post_only") != 0) if nargs > 7 else False
        cdef int64_t sp = raw_as_i64(args[8], "stp") if nargs > 8 else STP_NONE
        cdef uint8_t code = check_new(a.id_val, a.owner_val, sd, ty, tf, sp, a.qty_val, a.price_val, po)
        if code != REJ_NONE:
            a.id_obj = raw_exact(args[0])
            a.owner_obj = raw_exact(args[1])
            a.price_obj = raw_exact(args[3])
            a.qty_obj = raw_exact(args[4])
            return rejected(a.id_val, a.owner_val, sd, a.price_val, a.qty_val, code, &a)
        self._enter()
        if reserve(&self.st) < 0 or reserve_id(&self.st, a.id_val) < 0:
            raise MemoryError("order book allocation failed")
        cmd_new_checked(&self.st, a.id_val, <uint32_t>a.owner_val, <uint8_t>sd, <uint8_t>ty, <uint8_t>tf,
                        <uint8_t>sp, a.qty_val, a.price_val, po)
        # Ids usually come in sequence (the sequencer assigns them so): start loading the index slot
        # the next id will check, a cache miss in a big book otherwise. A wrong guess costs nothing.
        if a.id_val < MAX_ORDER_ID:
            prefetch_slot(&self.st, a.id_val + 1)
        return self._drain()

    @cython.binding(False)
    def cancel(self, order_id, owner):
        cdef PyObject* args[2]
        args[0] = <PyObject*>order_id
        args[1] = <PyObject*>owner
        return self._cancel(args, 2)

    cdef Events _cancel(self, PyObject** args, Py_ssize_t nargs):
        cdef ArgInts a
        a.id_val = raw_as_i64(args[0], "order_id")
        a.owner_val = raw_as_i64(args[1], "owner")
        a.id_obj = raw_exact(args[0])
        a.owner_obj = raw_exact(args[1])
        a.price_obj = NULL
        a.qty_obj = NULL
        if a.owner_val < 0 or a.owner_val > MAX_OWNER:
            return rejected(a.id_val, a.owner_val, 0, 0, 0, INVALID_OWNER, &a)
        self._enter()
        cmd_cancel(&self.st, a.id_val, <uint32_t>a.owner_val)
        return self._drain()

    @cython.binding(False)
    def amend(self, order_id, owner, price=0, qty=0):
        cdef PyObject* args[4]
        args[0] = <PyObject*>order_id
        args[1] = <PyObject*>owner
        args[2] = <PyObject*>price
        args[3] = <PyObject*>qty
        return self._amend(args, 4)

    cdef Events _amend(self, PyObject** args, Py_ssize_t nargs):
        # amend() on 2..4 borrowed positional arguments; price and qty default to 0 (keep).
        cdef ArgInts a
        a.id_val = raw_as_i64(args[0], "order_id")
        a.owner_val = raw_as_i64(args[1], "owner")
        a.price_val = raw_as_i64(args[2], "price") if nargs > 2 else 0
        a.qty_val = raw_as_i64(args[3], "qty") if nargs > 3 else 0
        a.id_obj = raw_exact(args[0])
        a.owner_obj = raw_exact(args[1])
        a.price_obj = raw_exact(args[2]) if nargs > 2 else NULL
        a.qty_obj = raw_exact(args[3]) if nargs > 3 else NULL
        if a.owner_val < 0 or a.owner_val > MAX_OWNER:
            return rejected(a.id_val, a.owner_val, 0, a.price_val, a.qty_val, INVALID_OWNER, &a)
        self._enter()
        if reserve(&self.st) < 0:
            raise MemoryError("order book allocation failed")
        cmd_amend(&self.st, a.id_val, <uint32_t>a.owner_val, a.price_val, a.qty_val)
        return self._drain()

    @cython.binding(False)
    def cancel_all(self, owner):
        cdef ArgInts a
        a.owner_val = as_i64(owner, "owner")
        a.owner_obj = exact(owner)
        a.id_obj = NULL
        a.price_obj = NULL
        a.qty_obj = NULL
        if a.owner_val < 0 or a.owner_val > MAX_OWNER:
            return rejected(0, a.owner_val, 0, 0, 0, INVALID_OWNER, &a)
        self._enter()
        cmd_cancel_all(&self.st, <uint32_t>a.owner_val)
        return self._drain()

    def apply_batch(self, commands, hashes=None, next_order_id=None):
        """Run a numpy array of COMMAND_DTYPE through the book with the GIL released; returns the
        events as a numpy array of EVENT_DTYPE (field `cmd` = index of the producing command).
        `hashes`, if given (a writable uint64 array, one per command), receives the state hash
        after each command: a replica checks a sequenced log entry by entry in one call.
        `next_order_id`, if given, numbers the news as a sequencer does: each new's `order_id` is
        written into `commands` (then a writable contiguous array) before it runs, starting at
        `next_order_id` and advancing only past a new the book did not reject (a rejected new's
        row keeps the id it tried, which the next new reuses)."""
        global spare_events, spare_capacity
        if not isinstance(commands, np.ndarray) or commands.dtype != COMMAND_DTYPE:
            raise ValueError("commands must be a numpy array of fastbook.engine.types.COMMAND_DTYPE")
        if commands.ndim != 1:
            raise ValueError("commands must be a one-dimensional array")
        if len(commands) >= 0xFFFFFFFF:
            raise ValueError("too many commands in one batch (the event cmd field is 32-bit)")
        cdef uint64_t[::1] post_hashes = None
        if hashes is not None:
            if not isinstance(hashes, np.ndarray) or hashes.dtype != np.uint64 or hashes.ndim != 1 \
                    or len(hashes) != len(commands):
                raise ValueError("hashes must be a one-dimensional uint64 array, one per command")
            post_hashes = hashes  # ValueError unless contiguous and writable
        cdef uint64_t* hash_out = &post_hashes[0] if post_hashes is not None and len(commands) else NULL
        cdef bint assign = next_order_id is not None
        cdef int64_t next_id = as_i64(next_order_id, "next_order_id") if assign else 0
        cdef uint8_t[::1] writable
        if assign:
            if not commands.flags.c_contiguous or not commands.flags.writeable:
                raise ValueError("with next_order_id, commands must be a writable contiguous array")
        cdef object arr = commands if assign else np.ascontiguousarray(commands)
        cdef const uint8_t[::1] raw = arr.view(np.uint8).reshape(-1)
        cdef size_t n = <size_t>arr.shape[0]
        cdef const CommandRec* cmds = <const CommandRec*>&raw[0] if n else NULL
        cdef CommandRec* numbered = NULL
        if assign and n:
            writable = arr.view(np.uint8).reshape(-1)
            numbered = <CommandRec*>&writable[0]
        cdef size_t before
        cdef size_t i
        cdef int rc = 0
        cdef BookState* b = &self.st
        cdef EventBuffer command_events
        cdef EventStore store
        self._enter()
        # The batch writes into its own buffer, sized for ~3 events per command up front (untouched
        # pages cost nothing), which then becomes the result array's memory: no copy.
        cdef size_t wanted = 3 * n + 64
        command_events = b.ev
        b.ev.items = NULL
        b.ev.capacity = 0
        b.ev.count = 0
        b.ev.failed = False
        if spare_events != NULL:
            # Reuse the spare unless it is much bigger than needed (the result array keeps it).
            if spare_capacity <= 4 * wanted:
                b.ev.items = spare_events
                b.ev.capacity = spare_capacity
            else:
                buf_free(spare_events, spare_capacity * sizeof(EventRec))
            spare_events = NULL
            spare_capacity = 0
        if b.ev.capacity < wanted and resize_events(&b.ev, wanted) < 0:
            b.ev = command_events
            raise MemoryError("event buffer allocation failed")
        self.busy = True
        try:
            with nogil:
                for i in range(n):
                    if i + PREFETCH_SLOT < n:
                        prefetch_slot(b, cmds[i + PREFETCH_SLOT].order_id)
                    if i + PREFETCH_ORDER < n:
                        prefetch_order(b, cmds[i + PREFETCH_ORDER].order_id)
                    prefetch_makers(b, BUY)
                    prefetch_makers(b, SELL)
                    b.ev.cmd = <uint32_t>i
                    if numbered != NULL and cmds[i].op == OP_NEW:
                        numbered[i].order_id = next_id
                        before = b.ev.count
                        rc = apply_command(b, &cmds[i])
                        if rc < 0:
                            break
                        if not (b.ev.count == before + 1 and b.ev.items[before].type == EV_REJECTED):
                            next_id += 1
                    else:
                        rc = apply_command(b, &cmds[i])
                        if rc < 0:
                            break
                    if hash_out != NULL:
                        hash_out[i] = mix64(b.next_stamp) ^ b.orders_hash
            if rc < 0 or b.ev.failed:
                raise MemoryError(f"order book allocation failed at command {b.ev.cmd}")
            store = EventStore.__new__(EventStore)
            store.items = b.ev.items
            store.capacity = b.ev.capacity
            store.count = b.ev.count
            b.ev.items = NULL
            b.ev.capacity = 0
        finally:
            self.busy = False
            buf_free(b.ev.items, b.ev.capacity * sizeof(EventRec))   # only after a failure
            b.ev = command_events
            b.ev.count = 0
        if store.count == 0:
            return np.empty(0, dtype=EVENT_DTYPE)
        return np.frombuffer(store, dtype=EVENT_DTYPE)

    def reserve(self, orders):
        """Pre-size the order pool and the id hash table for `orders` resting orders (like a
        container's reserve): a book known to grow that big skips the growth steps on the way (pool
        growth, rehashes, page faults). Ids in sequence do not need the hash table (the id window
        grows by itself). Never shrinks; state and events are unaffected."""
        cdef int64_t wanted = as_i64(orders, "orders")
        self._idle()
        if wanted < 0 or wanted >= MAX_POOL_CAPACITY:
            raise ValueError(f"orders must be in 0..{MAX_POOL_CAPACITY - 1}, got {wanted}")
        if <uint64_t>wanted > self.st.pool.capacity:
            if reserve_pool(&self.st.pool, <uint32_t>wanted) < 0:
                raise MemoryError("order book allocation failed")
        if <size_t>wanted + 1 > self.st.index.count and \
                hash_room(&self.st, <size_t>wanted + 1 - self.st.index.count) < 0:
            raise MemoryError("order book allocation failed")

    # -- queries -------------------------------------------------------------------------------

    cdef object _level_tuple(self, uint32_t li):
        if li == NIL:
            return None
        cdef Level* lvl = &self.st.levels.items[li]
        return (lvl.price, lvl.total_qty, lvl.count)

    def best_bid(self):
        self._idle()
        return self._level_tuple(self.st.sides[BUY].best)

    def best_ask(self):
        self._idle()
        return self._level_tuple(self.st.sides[SELL].best)

    cdef list _side_depth(self, int side, int64_t n):
        cdef list out = []
        if n <= 0 or self.st.sides[side].size == 0:
            return out
        cdef vector[KeyPos] frontier
        walk_start(frontier, &self.st.sides[side])
        while not frontier.empty() and <int64_t>len(out) < n:
            out.append(self._level_tuple(walk_next(frontier, &self.st.sides[side])))
        return out

    def depth(self, n):
        cdef int64_t count = as_i64(n, "n")
        self._idle()
        if count < 0:
            raise ValueError(f"n must be >= 0, got {count}")
        return (self._side_depth(BUY, count), self._side_depth(SELL, count))

    def order(self, order_id):
        cdef int64_t oid = as_i64(order_id, "order_id")
        self._idle()
        cdef uint32_t oi = id_find(&self.st, oid)
        if oi == NIL:
            return None
        cdef Order* o = &self.st.pool.items[oi]
        cdef Level* lvl = &self.st.levels.items[o.level]
        return (o.id, o.owner, lvl.side, lvl.price, o.remaining, o.stamp, o.stp, bool(o.post_only))

    def __len__(self):
        return self.st.pool.live

    def counts(self):
        return (self.st.sides[BUY].orders, self.st.sides[SELL].orders,
                self.st.sides[BUY].size, self.st.sides[SELL].size)

    @property
    def next_stamp(self):
        return self.st.next_stamp

    def state_hash(self):
        return mix64(self.st.next_stamp) ^ self.st.orders_hash

    def memory_usage(self):
        """Bytes held by the book's C structures (allocated capacity): order pool, id window, id
        index, level pool, level index, the two level heaps and the per-command event scratch
        buffer. A batch's events belong to the array apply_batch returns (plus at most one spare
        buffer module-wide)."""
        cdef size_t total = sizeof(BookState)
        total += <size_t>self.st.pool.capacity * sizeof(Order)
        total += (<size_t>self.st.index.mask + 1) * sizeof(IndexSlot)
        total += <size_t>self.st.window.cap * sizeof(uint32_t)
        total += <size_t>self.st.levels.capacity * sizeof(Level)
        total += (<size_t>self.st.level_index.mask + 1) * sizeof(IndexSlot)
        total += (<size_t>self.st.sides[BUY].capacity + self.st.sides[SELL].capacity) * sizeof(HeapEntry)
        total += self.st.ev.capacity * sizeof(EventRec)
        return total

    # -- snapshot / restore --------------------------------------------------------------------

    def snapshot(self):
        """The canonical snapshot bytes of docs/engine.md."""
        if self.busy:
            raise RuntimeError("Book is busy: apply_batch is running in another thread")
        cdef size_t n = self.st.pool.live
        # Written straight into the bytes object (no second copy of a possibly huge snapshot).
        cdef bytes data = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + RECORD_SIZE * n + TRAILER_SIZE)
        cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(data)
        memcpy(p, b"FBSN", 4)
        p[4] = 1
        p[5] = 0
        p[6] = 0
        p[7] = 0
        put_u64(p + 8, self.st.next_stamp)
        put_u64(p + 16, n)
        p += HEADER_SIZE
        cdef int side
        cdef vector[KeyPos] ordered
        cdef uint32_t k
        cdef Level* lvl
        cdef Order* o
        cdef uint32_t oi
        for side in (BUY, SELL):
            # Levels in key order: sort a copy of the heap (snapshots are rare; O(L log L)).
            ordered.clear()
            for k in range(self.st.sides[side].size):
                ordered.push_back(KeyPos(self.st.sides[side].heap[k].key, self.st.sides[side].heap[k].level))
            cpp_sort(ordered.begin(), ordered.end())
            for k in range(ordered.size()):
                lvl = &self.st.levels.items[ordered[k].second]
                oi = lvl.head
                while oi != NIL:
                    o = &self.st.pool.items[oi]
                    put_u64(p, <uint64_t>o.id)
                    put_u32(p + 8, o.owner)
                    put_u32(p + 12, order_flags(lvl.side, o.stp, o.post_only))
                    put_u64(p + 16, <uint64_t>lvl.price)
                    put_u64(p + 24, o.remaining)
                    put_u64(p + 32, o.stamp)
                    p += RECORD_SIZE
                    oi = o.next
        put_u64(p, mix64(self.st.next_stamp) ^ self.st.orders_hash)
        return data

    @classmethod
    def restore(cls, data):
        """Rebuild a book from snapshot() bytes, checking everything; ValueError names the problem."""
        cdef const uint8_t[::1] view
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"snapshot must be bytes, got {type(data).__name__}")
        try:
            view = memoryview(data).cast("B")
        except TypeError as exc:
            raise ValueError(f"snapshot must be bytes-like, got {type(data).__name__}") from exc
        cdef size_t size = view.shape[0]
        if size < HEADER_SIZE + TRAILER_SIZE:
            raise ValueError(f"snapshot too short: {size} bytes")
        cdef const uint8_t* p = &view[0]
        if memcmp(p, b"FBSN", 4) != 0:
            raise ValueError("snapshot magic is not b'FBSN'")
        cdef uint32_t version = p[4] | (p[5] << 8)
        if version != 1:
            raise ValueError(f"unsupported snapshot version {version}")
        if p[6] != 0 or p[7] != 0:
            raise ValueError("snapshot reserved header field is not 0")
        cdef uint64_t next_stamp = get_u64(p + 8)
        cdef uint64_t count = get_u64(p + 16)
        if next_stamp < 1 or next_stamp > <uint64_t>INT64_MAX:
            raise ValueError(f"snapshot next_stamp {next_stamp} out of range 1..2^63-1")
        if count > (size - HEADER_SIZE - TRAILER_SIZE) // RECORD_SIZE or \
                size != HEADER_SIZE + RECORD_SIZE * count + TRAILER_SIZE:
            raise ValueError(f"snapshot length {size} does not match its order count {count}")
        if count >= MAX_POOL_CAPACITY:
            raise ValueError(f"snapshot order count {count} is too large")
        cdef Book book = cls.__new__(cls)
        cdef BookState* b = &book.st
        cdef const uint8_t* r
        cdef uint64_t i, order_id, stamp, remaining, price
        cdef uint32_t owner, flags, side, stp, post_only
        cdef uint32_t prev_side = BUY
        cdef int64_t prev_key = 0
        cdef uint64_t prev_stamp = 0
        cdef bint have_prev = False
        cdef int64_t key
        cdef uint32_t li, oi
        cdef Order* o
        cdef vector[uint64_t] stamps
        stamps.reserve(count)
        if count > b.pool.capacity and reserve_pool(&b.pool, <uint32_t>count) < 0:
            raise MemoryError("order book allocation failed")
        # The id window: over the snapshot's ids if they are dense enough (the book a sequencer
        # builds), else starting just past them (the hash table takes them).
        cdef uint64_t min_id = MAX_ORDER_ID
        cdef uint64_t max_id = 0
        cdef size_t cap = MIN_WINDOW
        for i in range(count):
            order_id = get_u64(p + HEADER_SIZE + RECORD_SIZE * i)
            if 1 <= order_id <= <uint64_t>MAX_ORDER_ID:
                min_id = min(min_id, order_id)
                max_id = max(max_id, order_id)
        if count and max_id - min_id < 4 * count and max_id - min_id < MAX_WINDOW // 2:
            while cap <= max_id - min_id + 1:
                cap *= 2
            if window_place(b, <int64_t>min_id, cap) < 0:
                raise MemoryError("order book allocation failed")
        elif count:
            if (window_place(b, <int64_t>max_id + (1 if max_id < <uint64_t>MAX_ORDER_ID else 0), cap) < 0
                    or hash_room(b, count) < 0):
                raise MemoryError("order book allocation failed")
        for i in range(count):
            r = p + HEADER_SIZE + RECORD_SIZE * i
            order_id = get_u64(r)
            owner = get_u32(r + 8)
            flags = get_u32(r + 12)
            price = get_u64(r + 16)
            remaining = get_u64(r + 24)
            stamp = get_u64(r + 32)
            side = flags & 0xFF
            stp = (flags >> 8) & 0xFF
            post_only = (flags >> 16) & 0xFF
            if order_id < 1 or order_id > <uint64_t>MAX_ORDER_ID:
                raise ValueError(f"snapshot record {i}: order id {order_id} out of range")
            if (flags >> 24) != 0 or (side != BUY and side != SELL) or stp > STP_CANCEL_BOTH \
                    or post_only > 1:
                raise ValueError(f"snapshot record {i}: invalid flags {flags:#x}")
            if price < 1 or price > <uint64_t>MAX_PRICE:
                raise ValueError(f"snapshot record {i}: price {price} out of range")
            if remaining < 1 or remaining > <uint64_t>MAX_QTY:
                raise ValueError(f"snapshot record {i}: remaining {remaining} out of range")
            if stamp < 1 or stamp >= next_stamp:
                raise ValueError(f"snapshot record {i}: stamp {stamp} not in 1..next_stamp-1")
            key = side_key(side, <int64_t>price)
            if have_prev:
                if side < prev_side:
                    raise ValueError(f"snapshot record {i}: a bid after the asks")
                if side == prev_side and (key < prev_key or (key == prev_key and stamp <= prev_stamp)):
                    raise ValueError(f"snapshot record {i}: orders out of canonical order")
            if id_find(b, <int64_t>order_id) != NIL:
                raise ValueError(f"snapshot record {i}: duplicate order id {order_id}")
            if reserve(b) < 0:
                raise MemoryError("order book allocation failed")
            li = level_for(b, side, <int64_t>price)
            oi = pool_alloc(&b.pool)
            o = &b.pool.items[oi]
            o.id = <int64_t>order_id
            o.owner = owner
            o.remaining = <uint32_t>remaining
            o.stamp = stamp
            o.stp = <uint8_t>stp
            o.post_only = <uint8_t>post_only
            o._pad = 0
            enqueue(b, li, oi)
            id_insert(b, <int64_t>order_id, mix64(order_id), oi)
            b.orders_hash ^= hash_of(b, o)
            stamps.push_back(stamp)
            prev_side = side
            prev_key = key
            prev_stamp = stamp
            have_prev = True
        if b.sides[BUY].best != NIL and b.sides[SELL].best != NIL and \
                b.levels.items[b.sides[BUY].best].price >= b.levels.items[b.sides[SELL].best].price:
            raise ValueError("snapshot book is crossed (best bid >= best ask)")
        cpp_sort(stamps.begin(), stamps.end())
        for i in range(1, stamps.size()):
            if stamps[i] == stamps[i - 1]:
                raise ValueError(f"snapshot has duplicate stamp {stamps[i]}")
        b.next_stamp = next_stamp
        cdef uint64_t expected = get_u64(p + size - TRAILER_SIZE)
        cdef uint64_t actual = mix64(next_stamp) ^ b.orders_hash
        if actual != expected:
            raise ValueError(f"snapshot state hash mismatch: trailer {expected:#018x}, recomputed {actual:#018x}")
        return book

    def __reduce__(self):
        return (_restore_book, (type(self), self.snapshot()))


# Book.new / cancel / amend with positional arguments only, called straight from the vectorcall (no
# argument tuple, no per-argument references): these are the hot calls of the per-command API.
# Keywords and wrong argument counts still go through the generic methods, with their errors.

cdef object new_positional(object book, PyObject** args, Py_ssize_t nargs):
    return (<Book>book)._new(args, nargs)


cdef object cancel_positional(object book, PyObject** args, Py_ssize_t nargs):
    return (<Book>book)._cancel(args, nargs)


cdef object amend_positional(object book, PyObject** args, Py_ssize_t nargs):
    return (<Book>book)._amend(args, nargs)


install_fastcall(Book, "new", new_positional, 5, 9)
install_fastcall(Book, "cancel", cancel_positional, 2, 2)
install_fastcall(Book, "amend", amend_positional, 2, 4)


def _restore_book(cls, data):
    return cls.restore(data)
