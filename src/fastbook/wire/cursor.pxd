# A bounds-checked read position in a byte buffer, used by the native order reader
# (_orderparse): every read checks `end` first, so no input can make a reader look past it.
from libc.stdint cimport uint8_t


cdef struct Cursor:
    const uint8_t* p
    const uint8_t* end


cdef inline bint expect(Cursor* c, const char* text, Py_ssize_t n) noexcept:
    """The next n bytes are `text`: step over them. Otherwise nothing moves."""
    cdef Py_ssize_t i
    if c.end - c.p < n:
        return False
    for i in range(n):
        if c.p[i] != <uint8_t>text[i]:
            return False
    c.p += n
    return True
