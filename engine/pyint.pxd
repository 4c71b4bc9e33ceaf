# Fast paths between Python ints and C int64 for the per-command API (GIL held throughout).
#
# In: an int argument is read straight from the int object when it is small (one or two internal
# digits: |v| < 2^60 on the usual 30-bit-digit builds), with no call into the C API; anything else
# takes the general PyLong_AsLongLongAndOverflow path. Same semantics as that call on any int (bool
# and int subclasses included): it reads the value and never calls __index__.
#
# Out: event fields become Python ints through a small direct-mapped cache of int objects keyed by
# value (prices, quantities, owners and maker ids repeat across events), so most fields cost an
# INCREF instead of an allocation now and a free when the caller drops the event. Ints are immutable,
# so sharing them is invisible to the caller.
from cpython.object cimport PyObject
from libc.stdint cimport int64_t

cdef extern from *:
    """
    #include <Python.h>
    #include <stdint.h>

    /* 1 and *out = value if o is an int small enough to read directly, else 0 (o may be anything). */
    static inline int fb_small_int_value(PyObject* o, int64_t* out) {
        if (!PyLong_Check(o)) return 0;
    #if PY_VERSION_HEX >= 0x030C0000
        if (!PyUnstable_Long_IsCompact((PyLongObject*)o)) return 0;
        *out = (int64_t)PyUnstable_Long_CompactValue((PyLongObject*)o);
        return 1;
    #else
        const digit* d = ((PyLongObject*)o)->ob_digit;
        switch (Py_SIZE(o)) {
            case 0: *out = 0; return 1;
            case 1: *out = (int64_t)d[0]; return 1;
            case -1: *out = -(int64_t)d[0]; return 1;
            case 2: *out = (int64_t)(((uint64_t)d[1] << PyLong_SHIFT) | d[0]); return 1;
            case -2: *out = -(int64_t)(((uint64_t)d[1] << PyLong_SHIFT) | d[0]); return 1;
            default: return 0;
        }
    #endif
    }

    #define FB_INT_CACHE_BITS 10
    static PyObject* fb_int_cache_obj[1 << FB_INT_CACHE_BITS];
    static int64_t fb_int_cache_val[1 << FB_INT_CACHE_BITS];
    static PyObject* fb_byte_ints[256];    /* 0..255 (CPython's own small ints), filled on first use */

    static inline PyObject* fb_byte_int(unsigned v) {
        PyObject* o = fb_byte_ints[v];
        if (o == NULL) {
            o = PyLong_FromLong((long)v);
            if (o == NULL) return NULL;
            fb_byte_ints[v] = o;          /* keeps the reference it was given */
        }
        Py_INCREF(o);
        return o;
    }

    /* A new reference to an int equal to v (NULL with an exception set if allocation fails). */
    static inline PyObject* fb_int(int64_t v) {
        if ((uint64_t)v < 256) return fb_byte_int((unsigned)v);
        size_t i = (size_t)(((uint64_t)v * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - FB_INT_CACHE_BITS));
        PyObject* o = fb_int_cache_obj[i];
        if (o != NULL && fb_int_cache_val[i] == v) {
            Py_INCREF(o);
            return o;
        }
        PyObject* fresh = PyLong_FromLongLong(v);
        if (fresh == NULL) return NULL;
        Py_INCREF(fresh);
        fb_int_cache_obj[i] = fresh;
        fb_int_cache_val[i] = v;
        Py_XDECREF(o);
        return fresh;
    }

    /* `hint` (an exact int whose value is hint_value, or NULL) if it equals v, else fb_int(v). */
    static inline PyObject* fb_int_hint(int64_t v, PyObject* hint, int64_t hint_value) {
        if (hint != NULL && v == hint_value) {
            Py_INCREF(hint);
            return hint;
        }
        return fb_int(v);
    }
    """
    bint small_int_value "fb_small_int_value"(PyObject* o, int64_t* out) noexcept
    PyObject* new_byte_int "fb_byte_int"(unsigned v) noexcept
    # New references; NULL (exception set) on allocation failure.
    PyObject* new_int "fb_int"(int64_t v) noexcept
    PyObject* new_int_hint "fb_int_hint"(int64_t v, PyObject* hint, int64_t hint_value) noexcept
