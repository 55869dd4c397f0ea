"""Elementwise kernels of the layers: ReLU forward and backward, Dropout's masked scaling.

Arguments are flat C-contiguous arrays of the computation dtype (the caller flattens any
shape). Every output element depends only on the inputs at its own position, so however the
work is split over threads the bits are the same; large arrays are cut into blocks of BLOCK
elements, handed out to the threads dynamically (a preempted thread holds up no fixed share).
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint8_t

import numpy as np

# Below this many elements a call runs on one thread (a pass over 64K floats takes a few
# microseconds, about what starting the threads costs).
cdef Py_ssize_t SERIAL_ELEMENTS = 1 << 16
cdef Py_ssize_t BLOCK = 1 << 14


cdef inline int _threads_for(Py_ssize_t n, int num_threads) noexcept nogil:
    cdef Py_ssize_t blocks = (n + BLOCK - 1) // BLOCK
    if n < SERIAL_ELEMENTS or num_threads < 1:
        return 1
    return <int>blocks if num_threads > blocks else num_threads


cdef inline Py_ssize_t _block_end(Py_ssize_t b, Py_ssize_t n) noexcept nogil:
    return (b + 1) * BLOCK if (b + 1) * BLOCK < n else n


cdef void _relu(const floating* x, floating* y, Py_ssize_t n, int num_threads) noexcept nogil:
    cdef Py_ssize_t b, i
    for b in prange((n + BLOCK - 1) // BLOCK, schedule='dynamic', num_threads=_threads_for(n, num_threads)):
        for i in range(b * BLOCK, _block_end(b, n)):
            # As torch's relu (clamp_min): negatives become +0, NaN and -0.0 pass unchanged.
            y[i] = 0 if x[i] < 0 else x[i]


cdef void _relu_backward(const floating* dout, const floating* y, floating* dx, Py_ssize_t n,
                         int num_threads) noexcept nogil:
    cdef Py_ssize_t b, i
    cdef floating g
    for b in prange((n + BLOCK - 1) // BLOCK, schedule='dynamic', num_threads=_threads_for(n, num_threads)):
        for i in range(b * BLOCK, _block_end(b, n)):
            # Load first, then select: a conditional load would stay a (mispredicted) branch.
            g = dout[i]
            dx[i] = g if y[i] > 0 else 0


cdef void _dropout(const floating* x, const double* u, floating* y, uint8_t* keep, Py_ssize_t n,
                   double p, floating scale) noexcept nogil:
    # Serial: the caller draws u serially, a cache-sized chunk at a time, and a parallel region
    # per chunk would cost more than the pass (much more when another process holds a core).
    cdef Py_ssize_t i
    cdef uint8_t kept
    for i in range(n):
        kept = u[i] >= p
        keep[i] = kept
        # A product, not a select (as torch): a dropped inf or NaN gives NaN. The factor is
        # 0 or 1 times scale, computed without a branch (a random mask mispredicts half).
        y[i] = x[i] * (kept * scale)


cdef void _dropout_backward(const floating* dout, const uint8_t* keep, floating* dx, Py_ssize_t n,
                            floating scale, int num_threads) noexcept nogil:
    cdef Py_ssize_t b, i
    for b in prange((n + BLOCK - 1) // BLOCK, schedule='dynamic', num_threads=_threads_for(n, num_threads)):
        for i in range(b * BLOCK, _block_end(b, n)):
            dx[i] = dout[i] * (keep[i] * scale)


def relu(const floating[::1] x, int num_threads, out=None):
    """y = x where x >= 0 or NaN, else +0 (flat x). out: a C-contiguous array of x's size and
    dtype to write y into (x itself: in place)."""
    y_arr = np.empty(x.shape[0], dtype=np.float32 if floating is float else np.float64) if out is None else out
    cdef floating[::1] y = y_arr
    if x.shape[0]:
        with nogil:
            _relu(&x[0], &y[0], x.shape[0], num_threads)
    return y_arr


def relu_backward(const floating[::1] dout, const floating[::1] y, int num_threads, out=None):
    """dx = dout where y > 0, else 0 (flat arrays of the same size); out as relu's (dout
    itself: in place)."""
    dx_arr = np.empty(dout.shape[0], dtype=np.float32 if floating is float else np.float64) if out is None else out
    cdef floating[::1] dx = dx_arr
    if dout.shape[0]:
        with nogil:
            _relu_backward(&dout[0], &y[0], &dx[0], dout.shape[0], num_threads)
    return dx_arr


def dropout(const floating[::1] x, const double[::1] u, double p, double scale, int num_threads,
            out=None):
    """(y, keep): keep = u >= p (bool), y = x * (scale where kept, else 0); flat arrays.

    out=(y, keep) writes into preallocated C-contiguous arrays of x's size (x's dtype, bool).
    Runs on one thread (num_threads is ignored): see _dropout.
    """
    if out is None:
        out = (np.empty(x.shape[0], dtype=np.float32 if floating is float else np.float64),
               np.empty(x.shape[0], dtype=np.bool_))
    y_arr, keep_arr = out
    cdef floating[::1] y = y_arr
    cdef uint8_t[::1] keep = keep_arr.view(np.uint8)
    if x.shape[0]:
        with nogil:
            _dropout(&x[0], &u[0], &y[0], &keep[0], x.shape[0], p, <floating>scale)
    return y_arr, keep_arr


def dropout_backward(const floating[::1] dout, keep_arr, double scale, int num_threads):
    """dx = dout * (scale where keep, else 0); keep is the bool mask of dropout()."""
    cdef const uint8_t[::1] keep = keep_arr.view(np.uint8)
    dx_arr = np.empty(dout.shape[0], dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] dx = dx_arr
    if dout.shape[0]:
        with nogil:
            _dropout_backward(&dout[0], &keep[0], &dx[0], dout.shape[0], <floating>scale, num_threads)
    return dx_arr
