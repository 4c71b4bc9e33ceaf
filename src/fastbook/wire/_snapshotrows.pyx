# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The snapshot's resting order rows (docs/wire.md, the snapshot format), written in C: the largest
part of a snapshot (there can be millions), where json.dumps of them was about a third of the
sequencer's time on a deep book. `orders_json(rows)` is `wire.dumps(rows)`, byte for byte;
tests/wire/test_snapshot_rows.py compares them.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_Next
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint64_t

from textout cimport STR_MAX, Out, put, put_json_string, put_u64

cdef enum:
    ROW_MAX = STR_MAX + 64  # a row: two numbers, the id, punctuation


def orders_json(orders):
    """`wire.dumps(orders)` of a snapshot's resting orders, [(engine id, owner, client order id),
    ...]: the largest part of a snapshot, written in C (json.dumps of it was about a third of
    the sequencer's time on a deep book). `orders` may also be a replica's map (engine id ->
    (owner, client order id)): then the rows are not built at all (`snapshot_order_rows`)."""
    if isinstance(orders, dict):
        return map_json(orders)
    return rows_json(orders)


cdef struct RowsOut:
    char* buf
    Py_ssize_t capacity
    Py_ssize_t count
    Out o


cdef int rows_begin(RowsOut* r, Py_ssize_t n) except -1:
    r.capacity = 4096 + 64 * n
    r.count = 0
    r.buf = <char*>PyMem_Malloc(r.capacity)
    if r.buf == NULL:
        raise MemoryError()
    r.o.p = r.buf
    put(&r.o, b"[", 1)
    return 0


cdef int rows_add(RowsOut* r, int64_t order_id, int64_t owner, str coid) except -1:
    """Append [order_id,owner,"coid"] (growing the buffer first if a row might not fit)."""
    cdef Py_ssize_t used = r.o.p - r.buf
    cdef char* grown
    if r.capacity - used < ROW_MAX:
        grown = <char*>PyMem_Realloc(r.buf, r.capacity * 2)
        if grown == NULL:
            raise MemoryError()
        r.capacity *= 2
        r.buf = grown
        r.o.p = r.buf + used
    if order_id < 0 or owner < 0:
        raise ValueError("order ids and owners are not negative")
    if r.count:
        put(&r.o, b",", 1)
    r.count += 1
    put(&r.o, b"[", 1)
    put_u64(&r.o, <uint64_t>order_id)
    put(&r.o, b",", 1)
    put_u64(&r.o, <uint64_t>owner)
    put(&r.o, b",", 1)
    put_json_string(&r.o, coid)
    put(&r.o, b"]", 1)
    return 0


cdef bytes rows_json(list orders):
    cdef RowsOut r
    cdef object row
    r.buf = NULL
    try:
        rows_begin(&r, len(orders))
        for row in orders:
            rows_add(&r, row[0], row[1], row[2])
        put(&r.o, b"]", 1)
        return PyBytes_FromStringAndSize(r.buf, r.o.p - r.buf)
    finally:
        PyMem_Free(r.buf)


cdef bytes map_json(dict orders):
    """rows_json(snapshot_order_rows(orders)) without the rows, when the map is in id order (it
    almost always is); else exactly that."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef int64_t previous = -1
    cdef tuple pair
    cdef RowsOut r
    # First pass: the ids must be increasing (and in range) for the map order to be the row order.
    while PyDict_Next(orders, &pos, &key, &value):
        if type(<object>key) is not int or <object>key <= previous:
            return rows_json(snapshot_order_rows(orders))
        previous = <object>key
    r.buf = NULL
    try:
        rows_begin(&r, len(orders))
        pos = 0
        while PyDict_Next(orders, &pos, &key, &value):
            pair = <tuple?><object>value
            if len(pair) != 2:
                raise ValueError("an order map value is (owner, client order id)")
            rows_add(&r, <object>key, pair[0], pair[1])
        put(&r.o, b"]", 1)
        return PyBytes_FromStringAndSize(r.buf, r.o.p - r.buf)
    finally:
        PyMem_Free(r.buf)


def snapshot_order_rows(dict orders):
    """A snapshot's resting orders from a replica's map (engine id -> (owner, client order id)):
    [(engine id, owner, client order id), ...] by id. Ids are given in increasing order and a
    dict keeps insertion order, so the map is almost always in id order already: then no sort.
    (The Python comprehension and sort were about half of a deep book's snapshot time.)"""
    cdef list rows = []
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef object previous = None
    cdef bint ordered = True
    cdef tuple pair
    while PyDict_Next(orders, &pos, &key, &value):
        pair = <tuple?><object>value
        if len(pair) != 2:
            raise ValueError("an order map value is (owner, client order id)")
        if ordered and previous is not None and not (<object>key > previous):
            ordered = False
        previous = <object>key
        rows.append((<object>key, pair[0], pair[1]))
    if not ordered:
        rows.sort()
    return rows
