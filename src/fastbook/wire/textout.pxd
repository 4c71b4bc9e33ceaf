# A write position in a byte buffer the caller sized, and the JSON pieces the native writers put
# there: the snapshot order rows (wire/_snapshotrows) and the sequencer's run writer (log/_runwriter).
# The caller guarantees the room (each writer's buffer holds its longest text); put_str refuses a
# text longer than STR_MAX so no client text can outgrow that guarantee.
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

cdef enum:
    STR_MAX = 300  # the longest text put_str copies (an escaped id, a decimal from Python)


cdef struct Out:
    char* p


cdef inline void put(Out* o, const char* s, Py_ssize_t n) noexcept:
    memcpy(o.p, s, n)
    o.p += n


cdef inline void put_lit(Out* o, const char* s) noexcept:
    cdef Py_ssize_t n = 0
    while s[n]:
        n += 1
    put(o, s, n)


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
    from json.encoder import encode_basestring_ascii  # = wire.json_string (a pxd holds no imports)
    return put_str(o, encode_basestring_ascii(text))
