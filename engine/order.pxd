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

# The id -> order table for ids outside the IdWindow; the level index (level.pxd) is a SlotTable too
# and shares its resize/insert.
ctypedef SlotTable OrderIndex

# Order ids in a sliding window [base, base + cap) map straight to pool indices: the slot of id is
# id & (cap - 1), so no hashing, no probing and no unpredictable branch. Our sequencer hands ids out
# in sequence, so nearly every id lands here; ids outside it (older ones left behind when the window
# slides, ids far ahead, arbitrary ids from the API) live in the OrderIndex hash table, and every id
# there lies in [hash_lo, hash_hi], so a new id past hash_hi needs no hash probe at all.
cdef struct IdWindow:
    uint32_t* slots           # pool index, NIL when empty
    int64_t base
    uint32_t cap              # power of two, 0 before the first order
    uint32_t live             # slots in use
    int64_t hash_lo           # bounds of the ids in the hash table (lo > hi when it is empty)
    int64_t hash_hi
