# A resting order: 40 bytes in a pool addressed by uint32 index (stable across realloc).
# Its price and side live in its level (orders on one level share them), so they are not repeated here.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    NIL = 0xFFFFFFFF          # "no index" for order/level links and hash slots

cdef struct Order:
    int64_t id
    uint64_t stamp            # priority stamp: queue order within a level is ascending stamp
    uint32_t owner
    uint32_t remaining        # open quantity, 1..MAX_QTY while resting
    uint32_t prev             # older neighbour on the level (NIL at the head)
    uint32_t next             # newer neighbour on the level (NIL at the tail); free-list link when free
    uint32_t level            # index of its Level
    uint8_t stp
    uint8_t post_only
    uint16_t _pad

cdef struct OrderPool:
    Order* items
    uint32_t capacity
    uint32_t used             # slots handed out at least once (items[used:] never touched)
    uint32_t free_head        # singly linked through Order.next
    uint32_t live

# Open-addressing id -> pool index table: linear probing, power-of-two capacity, load <= 3/4,
# backward-shift deletion (no tombstones). A slot keeps 32 bits of the id's hash as a tag, so a
# probe compares tags without touching the pool, and the tag alone gives the home slot.
cdef struct IndexSlot:
    uint32_t idx              # pool index, NIL when empty
    uint32_t tag              # high 32 bits of mix64(id); home slot = tag & mask

cdef struct SlotTable:
    IndexSlot* slots
    uint32_t mask             # capacity - 1
    uint32_t count

# The id -> order table; the level index (level.pxd) is a SlotTable too and shares its resize/insert.
ctypedef SlotTable OrderIndex
