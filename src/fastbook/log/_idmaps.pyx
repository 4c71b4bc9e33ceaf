# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Native id-map changes of a replica's batch apply (`Replica.apply_batch`).

`MapChanges(replica, new_at, new_ids, new_owners, client_order_ids, gone_at, gone_ids)` makes, in
entry order, the changes a batch of log entries makes to `replica.orders` (engine order id ->
(owner, client order id)) and `replica.by_owner` (owner -> {client order id: engine order id}):
the news join the maps, the orders the events finished (DONE, CANCELLED) leave them.
`advance(upto)` makes those of the entries up to index `upto` and returns the orders entry `upto`
took out. It has the constructor and the semantics of the Python reference
`fastbook.log.replica._MapChanges` (its docstring; tests/test_idmaps.py compares the two on random
batches): the same maps, in the same insertion order, the same `removed` dicts, the same state
between calls, and on maps that do not agree with each other the same KeyError at the same change.

The integer columns may be Python sequences or numpy arrays of any integer type (they are read as
int64); `client_order_ids` is indexed by entry. Where the reference would accept what a Replica
never holds (an `orders` value other than a 2-tuple, maps that are not dicts) this class raises
TypeError.

Why: the Python loop, one iteration per new and per order gone, was about 40% of a replica's CPU
under bulk load.
"""

from cpython.buffer cimport (
    PyBUF_FORMAT,
    PyBUF_STRIDES,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
)
from cpython.dict cimport PyDict_DelItem, PyDict_GetItemWithError, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyIndex_Check, PyNumber_Index
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, strchr

cdef extern from "Python.h":
    bint PyBool_Check(object o)

cdef int64_t INT64_MAX = 0x7FFFFFFFFFFFFFFF


# The columns are copied into int64 arrays of our own: a replica passes small numpy arrays of
# several integer types (intp, int64, uint32, strided or not), and reading them through the buffer
# protocol in C costs a fraction of a microsecond, where numpy conversions and typed memoryviews
# cost microseconds per column, which one-entry messages pay per entry.
cdef int64_t* read_column(object values, str name, Py_ssize_t* length) except NULL:
    """A copy of `values` as int64 (a one-dimensional buffer of integers, such as a numpy array,
    or a sequence of ints), in memory to free with PyMem_Free; the errors name the argument."""
    cdef Py_buffer view
    if PyObject_CheckBuffer(values):
        try:
            PyObject_GetBuffer(values, &view, PyBUF_FORMAT | PyBUF_STRIDES)
        except (BufferError, ValueError, TypeError):
            pass  # no strided buffer: read it as a sequence
        else:
            try:
                if view.format is NULL or view.format[0] != b"O":  # (numpy objects: a sequence)
                    return read_buffer(&view, name, length)
            finally:
                PyBuffer_Release(&view)
    return read_sequence(values, name, length)


ctypedef fused Int:
    int8_t
    uint8_t
    int16_t
    uint16_t
    int32_t
    uint32_t
    int64_t
    uint64_t


cdef bint copy_ints(const char* p, Py_ssize_t step, Py_ssize_t n, int64_t* out, Int kind) noexcept:
    """Read n values of type Int, `step` bytes apart, into out; False if one is past int64. (memcpy:
    a strided field of a structured array need not be aligned.) `kind` only picks the type."""
    cdef Py_ssize_t i
    for i in range(n):
        memcpy(&kind, p, sizeof(Int))
        if Int is uint64_t:
            if kind > <uint64_t>INT64_MAX:
                return False
        out[i] = <int64_t>kind
        p += step
    return True


cdef int64_t* read_buffer(Py_buffer* view, str name, Py_ssize_t* length) except NULL:
    cdef const char* code = view.format
    if code is NULL:  # (the protocol's "unsigned bytes")
        code = b"B"
    if code[0] == b"@" or code[0] == b"=":  # native byte order
        code += 1
    if code[0] == 0 or code[1] != 0 or strchr("bBhHiIlLqQnN", code[0]) is NULL:
        raise TypeError(f"{name} must hold integers, not buffer format {view.format.decode()!r}")
    if view.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    cdef bint signed = strchr("bhilqn", code[0]) is not NULL
    cdef Py_ssize_t n = view.shape[0], size = view.itemsize
    cdef Py_ssize_t step = view.strides[0] if view.strides is not NULL else size
    cdef const char* p = <const char*>view.buf
    cdef int64_t* out = <int64_t*>PyMem_Malloc((n if n else 1) * sizeof(int64_t))
    if out is NULL:
        raise MemoryError()
    cdef bint fits
    if size == 8:
        fits = copy_ints(p, step, n, out, <int64_t>0) if signed else copy_ints(p, step, n, out, <uint64_t>0)
    elif size == 4:
        fits = copy_ints(p, step, n, out, <int32_t>0) if signed else copy_ints(p, step, n, out, <uint32_t>0)
    elif size == 2:
        fits = copy_ints(p, step, n, out, <int16_t>0) if signed else copy_ints(p, step, n, out, <uint16_t>0)
    elif size == 1:
        fits = copy_ints(p, step, n, out, <int8_t>0) if signed else copy_ints(p, step, n, out, <uint8_t>0)
    else:
        PyMem_Free(out)
        raise TypeError(f"{name} must hold integers of 1, 2, 4 or 8 bytes, not {size}")
    if not fits:
        PyMem_Free(out)
        raise OverflowError(f"{name} holds a value past int64")
    length[0] = n
    return out


cdef int64_t* read_sequence(object values, str name, Py_ssize_t* length) except NULL:
    if type(values) is not list and type(values) is not tuple:
        try:
            values = list(values)
        except TypeError:
            raise TypeError(f"{name} must be a sequence of integers, not {type(values).__name__}") from None
    cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(values), i
    cdef int64_t* out = <int64_t*>PyMem_Malloc((n if n else 1) * sizeof(int64_t))
    if out is NULL:
        raise MemoryError()
    cdef object item
    cdef int overflow = 0
    try:
        for i in range(n):
            if i >= PySequence_Fast_GET_SIZE(values):  # an __index__ below shrank the list
                raise ValueError(f"{name} changed size while read")
            item = <object>PySequence_Fast_GET_ITEM(values, i)
            if type(item) is not int:
                if PyBool_Check(item) or not PyIndex_Check(item):
                    raise TypeError(f"{name} must hold integers, not {type(item).__name__}")
                item = PyNumber_Index(item)  # a numpy integer, say
            out[i] = PyLong_AsLongLongAndOverflow(item, &overflow)
            if overflow:
                raise OverflowError(f"{name} holds a value past int64")
    except BaseException:
        PyMem_Free(out)
        raise
    length[0] = n
    return out


cdef inline dict exact_dict(object maybe, str what):
    if type(maybe) is not dict:
        raise TypeError(f"{what} must be a dict, not {type(maybe).__name__}")
    return <dict>maybe


# The reference's checks (replica._MapChanges), with its messages: tests compare them.
cdef check_lengths(Py_ssize_t new_at, Py_ssize_t new_ids, Py_ssize_t new_owners, Py_ssize_t gone_at,
                   Py_ssize_t gone_ids):
    if not new_at == new_ids == new_owners:
        raise ValueError(f"new_at, new_ids, new_owners have lengths {new_at}, {new_ids}, {new_owners}")
    if gone_at != gone_ids:
        raise ValueError(f"gone_at, gone_ids have lengths {gone_at}, {gone_ids}")


cdef str new_at_out_of_range(Py_ssize_t k, int64_t at, Py_ssize_t n_ids):
    return f"new_at[{k}] = {at} is not an entry index (client_order_ids has {n_ids})"


cdef class MapChanges:
    """The id-map changes of a batch, made in entry order up to a given entry (see the module
    docstring and `fastbook.log.replica._MapChanges`)."""

    cdef readonly object replica
    # Where the next call starts: the first new and the first gone order not yet applied.
    cdef readonly Py_ssize_t next_new
    cdef readonly Py_ssize_t next_gone
    # The integer columns, copies owned by this object (PyMem_Malloc); news and gones counts.
    cdef int64_t* new_at
    cdef int64_t* new_ids
    cdef int64_t* new_owners
    cdef int64_t* gone_at
    cdef int64_t* gone_ids
    cdef Py_ssize_t n_new
    cdef Py_ssize_t n_gone
    cdef list client_order_ids

    def __init__(self, replica, new_at, new_ids, new_owners, client_order_ids, gone_at, gone_ids):
        cdef Py_ssize_t k, n_ids, n_new_ids = 0, n_owners = 0, n_gone_ids = 0
        self.free_columns()
        self.next_new = self.next_gone = 0
        self.replica = replica
        try:
            self.new_at = read_column(new_at, "new_at", &self.n_new)
            self.new_ids = read_column(new_ids, "new_ids", &n_new_ids)
            self.new_owners = read_column(new_owners, "new_owners", &n_owners)
            self.gone_at = read_column(gone_at, "gone_at", &self.n_gone)
            self.gone_ids = read_column(gone_ids, "gone_ids", &n_gone_ids)
            # The caller's list itself, as the reference keeps it (a copy of any other sequence).
            self.client_order_ids = (
                client_order_ids if type(client_order_ids) is list else list(client_order_ids)
            )
            check_lengths(self.n_new, n_new_ids, n_owners, self.n_gone, n_gone_ids)
            n_ids = PyList_GET_SIZE(self.client_order_ids)
            for k in range(self.n_new):
                if not 0 <= self.new_at[k] < n_ids:
                    raise ValueError(new_at_out_of_range(k, self.new_at[k], n_ids))
        except BaseException:
            self.free_columns()  # (no changes left half read, should __init__ be called again)
            raise

    cdef void free_columns(self) noexcept:
        PyMem_Free(self.new_at)
        PyMem_Free(self.new_ids)
        PyMem_Free(self.new_owners)
        PyMem_Free(self.gone_at)
        PyMem_Free(self.gone_ids)
        self.new_at = self.new_ids = self.new_owners = self.gone_at = self.gone_ids = NULL
        self.n_new = self.n_gone = 0

    def __dealloc__(self):
        self.free_columns()

    def advance(self, int64_t upto):
        """Make the changes of the entries up to index `upto`; returns the orders that entry
        `upto` took out of the maps (what `Replica.removed` holds after executing it)."""
        cdef dict orders = exact_dict(self.replica.orders, "replica.orders")
        cdef dict by_owner = exact_dict(self.replica.by_owner, "replica.by_owner")
        cdef list coids = self.client_order_ids
        cdef const int64_t* new_at = self.new_at
        cdef const int64_t* gone_at = self.gone_at
        # Written back only when the call completes: after an exception the next call starts where
        # this one did, as the reference's does.
        cdef Py_ssize_t k = self.next_new, j = self.next_gone
        cdef Py_ssize_t nk = self.n_new, nj = self.n_gone
        cdef int64_t at
        cdef dict removed = {}
        cdef object order_id, owner, coid, gone, by_id
        cdef PyObject* found
        while True:
            # Same order of changes as the reference: an entry's new before the orders its events
            # finished (new_at[k] <= gone_at[j]).
            if k < nk and new_at[k] <= upto and (j >= nj or new_at[k] <= gone_at[j]):
                at = new_at[k]
                if at >= PyList_GET_SIZE(coids):  # the caller's list shrank since the constructor
                    raise IndexError(new_at_out_of_range(k, at, PyList_GET_SIZE(coids)))
                coid = <object>PyList_GET_ITEM(coids, at)
                order_id = PyLong_FromLongLong(self.new_ids[k])
                owner = PyLong_FromLongLong(self.new_owners[k])
                PyDict_SetItem(orders, order_id, (owner, coid))
                found = PyDict_GetItemWithError(by_owner, owner)
                if found is NULL:
                    by_id = {}
                    PyDict_SetItem(by_owner, owner, by_id)
                else:
                    by_id = exact_dict(<object>found, "a replica.by_owner value")
                PyDict_SetItem(by_id, coid, order_id)
                k += 1
            elif j < nj and gone_at[j] <= upto:
                order_id = PyLong_FromLongLong(self.gone_ids[j])
                found = PyDict_GetItemWithError(orders, order_id)
                if found is not NULL:  # (ids not in the maps are skipped)
                    gone = <object>found
                    PyDict_DelItem(orders, order_id)
                    if not PyTuple_Check(gone) or PyTuple_GET_SIZE(gone) != 2:
                        raise TypeError(f"replica.orders[{order_id}] must be an (owner, client order id) tuple")
                    owner = <object>PyTuple_GET_ITEM(gone, 0)
                    found = PyDict_GetItemWithError(by_owner, owner)
                    if found is NULL:
                        raise KeyError(owner)
                    by_id = exact_dict(<object>found, "a replica.by_owner value")
                    PyDict_DelItem(by_id, <object>PyTuple_GET_ITEM(gone, 1))  # KeyError if missing
                    if gone_at[j] == upto:
                        PyDict_SetItem(removed, order_id, gone)
                j += 1
            else:
                break
        self.next_new = k
        self.next_gone = j
        return removed
