# The engine vocabulary in C: mirrors src/fastbook/engine/types.py and docs/engine.md. Keep the three in
# step; tests/engine/test_engine_contract.py reads this file and fails when it and types.py disagree.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

# 64-bit limits as typed C constants (a C enum is only guaranteed to hold an int).
cdef extern from *:
    """
    static const int64_t FB_MAX_ORDER_ID = INT64_C(0x7FFFFFFFFFFFFFFF);  /* 2^63 - 1 */
    static const int64_t FB_MAX_OWNER = INT64_C(0xFFFFFFFF);             /* 2^32 - 1 */
    static const int64_t FB_MAX_QTY = INT64_C(0xFFFFFFFF);               /* 2^32 - 1 */
    static const int64_t FB_MAX_PRICE = INT64_C(0x1FFFFFFFFFFFFF);       /* 2^53 - 1 */
    """
    const int64_t MAX_ORDER_ID "FB_MAX_ORDER_ID"
    const int64_t MAX_OWNER "FB_MAX_OWNER"
    const int64_t MAX_QTY "FB_MAX_QTY"
    const int64_t MAX_PRICE "FB_MAX_PRICE"

cdef enum:  # Side
    BUY = 1
    SELL = 2

cdef enum:  # OrderType
    LIMIT = 1
    MARKET = 2

cdef enum:  # Tif
    GTC = 1
    IOC = 2
    FOK = 3

cdef enum:  # Stp
    STP_NONE = 0
    STP_CANCEL_TAKER = 1
    STP_CANCEL_MAKER = 2
    STP_CANCEL_BOTH = 3

cdef enum:  # Op
    OP_NEW = 1
    OP_CANCEL = 2
    OP_AMEND = 3
    OP_CANCEL_ALL = 4

cdef enum:  # EventType
    EV_ACCEPTED = 1
    EV_REJECTED = 2
    EV_TRADE = 3
    EV_CANCELLED = 4
    EV_DONE = 5
    EV_AMENDED = 6

cdef enum:  # Reject
    REJ_NONE = 0
    INVALID_ORDER_ID = 1
    INVALID_OWNER = 2
    INVALID_SIDE = 3
    INVALID_TYPE = 4
    INVALID_TIF = 5
    INVALID_STP = 6
    INVALID_QTY = 7
    INVALID_PRICE = 8
    INVALID_POST_ONLY = 9
    DUPLICATE_ORDER_ID = 10
    UNKNOWN_ORDER = 11
    POST_ONLY_WOULD_TAKE = 12
    INVALID_AMEND = 13
    INVALID_OP = 14

cdef enum:  # CancelReason
    CANCEL_USER = 1
    CANCEL_UNFILLED = 2
    CANCEL_FOK = 3
    CANCEL_SELF_TRADE = 4

# One row of COMMAND_DTYPE (40 bytes, every field naturally aligned, so packed == natural layout).
cdef packed struct CommandRec:
    uint8_t op
    uint8_t side
    uint8_t type
    uint8_t tif
    uint8_t stp
    uint8_t post_only
    uint16_t _pad
    uint32_t owner
    uint32_t _pad2
    int64_t order_id
    int64_t price
    int64_t qty

# One row of EVENT_DTYPE (64 bytes). The per-command API turns these into 11-tuples.
cdef packed struct EventRec:
    uint32_t cmd
    uint8_t type
    uint8_t reason
    uint8_t side
    uint8_t _pad
    int64_t order_id
    uint32_t owner
    uint32_t other_owner
    int64_t other_id
    int64_t price
    int64_t qty
    int64_t remaining
    int64_t other_remaining
