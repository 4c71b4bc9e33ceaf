# The whole native book state, shared by the per-command API and the nogil batch loop.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from contract cimport EventRec
from level cimport LevelIndex, LevelPool, SideBook
from order cimport IdWindow, OrderIndex, OrderPool

cdef struct EventBuffer:
    EventRec* items
    size_t count
    size_t capacity
    uint32_t cmd              # command index stamped on every event (batch API)
    bint failed               # an allocation failed while emitting

# An incoming order (a `new`, or an amended order that lost priority) while it matches.
cdef struct Taker:
    int64_t id
    uint64_t id_mix           # mix64(id): shared by the id index and the order hash
    uint32_t owner
    uint8_t side
    uint8_t type
    uint8_t tif
    uint8_t stp
    uint8_t post_only
    int64_t price             # limit price, 0 for market
    int64_t limit_key         # side-aware acceptance bound (see level.pxd)
    uint64_t remaining

cdef struct BookState:
    OrderPool pool
    OrderIndex index          # ids outside the window
    IdWindow window           # ids in sequence
    LevelPool levels
    LevelIndex level_index
    SideBook sides[3]         # indexed by side: sides[BUY], sides[SELL]; [0] unused
    uint64_t next_stamp
    uint64_t orders_hash      # XOR of order_hash over resting orders; state hash = mix64(next_stamp) ^ this
    EventBuffer ev
