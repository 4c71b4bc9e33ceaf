# The Zobrist-style state hash of docs/engine.md, in C so the 64-bit wrap-around is plain C arithmetic.
from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef extern from *:
    """
    static inline uint64_t fb_mix64(uint64_t z) {
        z += UINT64_C(0x9E3779B97F4A7C15);
        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        return z ^ (z >> 31);
    }
    /* order_hash with its first step, mix64(id), already done (the id index hashes ids the same way) */
    static inline uint64_t fb_order_hash_from(uint64_t id_mix, uint32_t owner, int64_t price,
                                              uint64_t remaining, uint64_t stamp, uint32_t flags) {
        uint64_t h = fb_mix64(id_mix ^ owner);
        h = fb_mix64(h ^ (uint64_t)price);
        h = fb_mix64(h ^ remaining);
        h = fb_mix64(h ^ stamp);
        return fb_mix64(h ^ flags);
    }
    static inline uint64_t fb_order_hash(int64_t id, uint32_t owner, int64_t price, uint64_t remaining,
                                         uint64_t stamp, uint32_t flags) {
        uint64_t h = fb_mix64((uint64_t)id);
        h = fb_mix64(h ^ owner);
        h = fb_mix64(h ^ (uint64_t)price);
        h = fb_mix64(h ^ remaining);
        h = fb_mix64(h ^ stamp);
        return fb_mix64(h ^ flags);
    }
    /* order_hash(o with remaining a) ^ order_hash(o with remaining b): what a fill or an in-place
       amend XORs into the state hash. The shared prefix is computed once and the two tails are
       independent, so the CPU overlaps them (half the latency of two order_hash calls). */
    static inline uint64_t fb_order_hash_delta(int64_t id, uint32_t owner, int64_t price,
                                               uint64_t remaining_a, uint64_t remaining_b,
                                               uint64_t stamp, uint32_t flags) {
        uint64_t p = fb_mix64(fb_mix64(fb_mix64((uint64_t)id) ^ owner) ^ (uint64_t)price);
        uint64_t a = fb_mix64(fb_mix64(fb_mix64(p ^ remaining_a) ^ stamp) ^ flags);
        uint64_t b = fb_mix64(fb_mix64(fb_mix64(p ^ remaining_b) ^ stamp) ^ flags);
        return a ^ b;
    }
    """
    # splitmix64 finaliser
    uint64_t mix64 "fb_mix64"(uint64_t z) noexcept nogil
    # order_hash(o) of docs/engine.md; flags = side | stp << 8 | post_only << 16
    uint64_t order_hash "fb_order_hash"(int64_t id, uint32_t owner, int64_t price, uint64_t remaining,
                                        uint64_t stamp, uint32_t flags) noexcept nogil
    uint64_t order_hash_from "fb_order_hash_from"(uint64_t id_mix, uint32_t owner, int64_t price,
                                                  uint64_t remaining, uint64_t stamp,
                                                  uint32_t flags) noexcept nogil
    uint64_t order_hash_delta "fb_order_hash_delta"(int64_t id, uint32_t owner, int64_t price,
                                                    uint64_t remaining_a, uint64_t remaining_b,
                                                    uint64_t stamp, uint32_t flags) noexcept nogil
