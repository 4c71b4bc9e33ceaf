# A price level: a FIFO chain of orders plus its aggregates. Levels live in a pool addressed by uint32.
# Each side keeps its levels in a binary min-heap on the side-aware key (below): the best level is the
# root (O(1)), a new or emptied level costs O(log L) array moves and no allocation, and a level knows
# its heap position so it can leave from anywhere. Ordered walks (depth, FOK, snapshot) are rarer and
# pay O(k log k) for k levels. A key -> level hash (LevelIndex) finds the level an order joins in O(1).
#
# Side-aware keys (liquibook's trick): a level's key is price for asks and -price for bids, so on either
# side the best level has the smallest key, and an incoming order with limit key L accepts a level iff
# key <= L (a buy's L is its limit, a sell's L is -limit, a market order's L is INT64_MAX). One match
# loop serves both sides.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from order cimport IndexSlot, SlotTable

cdef struct Level:
    int64_t price
    uint64_t total_qty        # sum of remaining over its orders
    uint32_t count            # orders on the level
    uint32_t head             # oldest order (lowest stamp), NIL when empty
    uint32_t tail             # newest order
    uint32_t side             # BUY/SELL; free-list link (next free level) while the slot is free
    uint32_t heap_pos         # position in its side's heap

cdef struct LevelPool:
    Level* items
    uint32_t capacity
    uint32_t used
    uint32_t free_head
    uint32_t live

# key -> level index for both sides (keys are side-aware, so they never collide across sides): the
# O(1) way to find the level an order joins. The std::maps below only keep levels in price order and
# are touched when a level appears or disappears. Same scheme as the order index (tag = high 32 bits
# of mix64(key), load <= 1/2).
ctypedef SlotTable LevelIndex

cdef struct HeapEntry:
    int64_t key               # side-aware key, copied here so sifting does not touch the levels
    uint32_t level
    uint32_t _pad

cdef struct SideBook:
    HeapEntry* heap           # min-heap of the side's levels on key; heap[0] is the best
    uint32_t size             # levels on this side
    uint32_t capacity
    uint32_t best             # heap[0].level, or NIL when the side is empty
    int64_t best_key
    uint64_t orders
