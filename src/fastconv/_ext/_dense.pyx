"""Fully connected layers: y = x @ W^T + b and its gradients, as GEMMs on fastconv's threads.

fastconv.nn's Linear used NumPy's matmul, which runs on NumPy's own OpenBLAS thread pool; its
workers keep spinning after each call and take the cores from fastconv's OpenMP threads (a
training step at 2 threads was slower than at 1). Here the GEMMs run in fixed blocks on our
threads, each block a single-threaded BLAS call, so one pool of threads does all the work.

Blocks are decided by the shape only, never by the thread count, and every output element is
computed inside one block: results are bitwise identical for any number of threads.

* forward: y (M, N) in blocks of rows of x, or of columns of y (output features) when the batch
  is too small to split;
* backward: dx (M, K) and dW (N, K) in the same blocks of columns K (input features); db sums the
  rows of dout in row order. Gradients are added into the caller's arrays (beta = 1), as
  fastconv.nn's layers accumulate them.
"""

from cython cimport floating
from cython.parallel cimport prange

import numpy as np

from fastconv._ext._typedefs cimport index_t
from fastconv._ext._blas cimport gemm
from fastconv._ext._blas_threads cimport blas_single_thread_enter, blas_single_thread_exit

# At most this many blocks: enough for a few threads, few enough to keep each GEMM wide.
cdef index_t MAX_BLOCKS = 8
# A block is never narrower than this many rows or columns.
cdef index_t MIN_BLOCK = 16
# Below this many multiply-adds a call runs on one thread: starting threads costs more.
cdef double SERIAL_MACS = 2.0e5


cdef inline index_t block_size(index_t extent) noexcept nogil:
    """Rows or columns per block when `extent` of them are split (a multiple of 16)."""
    cdef index_t size = (extent + MAX_BLOCKS - 1) // MAX_BLOCKS
    size = (size + 15) // 16 * 16
    return size if size > MIN_BLOCK else MIN_BLOCK


cdef inline int threads_for(double macs, index_t blocks, int num_threads) noexcept nogil:
    if macs < SERIAL_MACS or num_threads < 1:
        return 1
    return <int>(blocks if blocks < num_threads else num_threads)


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                   int num_threads):
    """y = x @ w.T (+ b): x (M, K), w (N, K), b (N,) or None; returns a new (M, N) array."""
    return dense_forward(x, w, b, num_threads, True)


cdef object dense_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                          int num_threads, bint w_rows):
    """y = x @ w.T (w_rows: w is (N, K), nn's Linear) or x @ w (w is (K, N), the courses'
    affine), plus b; the blocks of the module docstring."""
    cdef index_t M = x.shape[0], K = x.shape[1], N = w.shape[0] if w_rows else w.shape[1]
    y_array = np.empty((M, N), dtype=np.float32 if floating is float else np.float64)
    if M == 0 or N == 0:
        return y_array
    if K == 0:  # an empty sum: y is the bias
        y_array[...] = 0
        if b is not None:
            y_array += np.asarray(b)
        return y_array
    cdef floating[:, ::1] y = y_array
    cdef floating* y_ptr = &y[0, 0]
    cdef const floating* x_ptr = &x[0, 0]
    cdef const floating* w_ptr = &w[0, 0]
    cdef const floating* b_ptr = NULL if b is None else &b[0]
    cdef bint by_rows = M >= MAX_BLOCKS * MIN_BLOCK or M >= N
    cdef index_t extent = M if by_rows else N
    cdef index_t size = block_size(extent)
    cdef index_t blocks = (extent + size - 1) // size, t
    cdef int threads = threads_for(<double>M * N * K, blocks, num_threads)
    blas_single_thread_enter()
    try:
        with nogil:
            for t in prange(blocks, num_threads=threads, schedule='dynamic'):
                forward_block(x_ptr, w_ptr, b_ptr, y_ptr, M, N, K, w_rows, by_rows, t * size,
                              min(t * size + size, extent))
    finally:
        blas_single_thread_exit()
    return y_array


cdef void forward_block(const floating* x, const floating* w, const floating* b, floating* y,
                        index_t M, index_t N, index_t K, bint w_rows, bint by_rows, index_t start,
                        index_t stop) noexcept nogil:
    """Rows [start, stop) of y (by_rows) or its columns [start, stop)."""
    cdef index_t r0 = start if by_rows else 0, r1 = stop if by_rows else M
    cdef index_t c0 = 0 if by_rows else start, c1 = N if by_rows else stop
    cdef index_t r, c
    cdef floating beta = 0
    if b != NULL:
        # Start from the bias and let GEMM add to it (beta = 1): saves a pass over y.
        for r in range(r0, r1):
            for c in range(c0, c1):
                y[r * N + c] = b[c]
        beta = 1
    if w_rows:   # w (N, K): y = x @ w.T
        gemm(False, True, <int>(r1 - r0), <int>(c1 - c0), <int>K, <floating>1, x + r0 * K, <int>K,
             w + c0 * K, <int>K, beta, y + r0 * N + c0, <int>N)
    else:        # w (K, N): y = x @ w
        gemm(False, False, <int>(r1 - r0), <int>(c1 - c0), <int>K, <floating>1, x + r0 * K, <int>K,
             w + c0, <int>N, beta, y + r0 * N + c0, <int>N)


def linear_backward(const floating[:, ::1] dout, const floating[:, ::1] x,
                    const floating[:, ::1] w, floating[:, ::1] grad_w, floating[::1] grad_b,
                    int num_threads):
    """dx = dout @ w, and grad_w += dout.T @ x, grad_b += dout.sum(0) in place (grad_b may be
    None). dout (M, N), x (M, K), w and grad_w (N, K); returns dx, a new (M, K) array."""
    cdef index_t M = x.shape[0], K = x.shape[1], N = w.shape[0]
    dx_array = np.empty((M, K), dtype=np.float32 if floating is float else np.float64)
    if M == 0 or K == 0:
        return dx_array
    if N == 0:
        dx_array[...] = 0
        return dx_array
    cdef floating[:, ::1] dx = dx_array
    cdef floating* dx_ptr = &dx[0, 0]
    cdef floating* gw_ptr = &grad_w[0, 0]
    cdef const floating* d_ptr = &dout[0, 0]
    cdef const floating* x_ptr = &x[0, 0]
    cdef const floating* w_ptr = &w[0, 0]
    cdef index_t size = block_size(K)
    cdef index_t blocks = (K + size - 1) // size, t
    cdef int threads = threads_for(2.0 * M * N * K, blocks, num_threads)
    blas_single_thread_enter()
    try:
        with nogil:
            for t in prange(blocks, num_threads=threads, schedule='dynamic'):
                backward_block(d_ptr, x_ptr, w_ptr, dx_ptr, gw_ptr, M, N, K, t * size,
                               min(t * size + size, K))
    finally:
        blas_single_thread_exit()
    if grad_b is not None:
        with nogil:
            add_column_sums(d_ptr, M, N, &grad_b[0])
    return dx_array


cdef void backward_block(const floating* dout, const floating* x, const floating* w, floating* dx,
                         floating* grad_w, index_t M, index_t N, index_t K, index_t k0,
                         index_t k1) noexcept nogil:
    """Columns [k0, k1) of dx = dout @ w and of grad_w += dout^T @ x."""
    cdef int width = <int>(k1 - k0)
    gemm(False, False, <int>M, width, <int>N, <floating>1, dout, <int>N, w + k0, <int>K,
         <floating>0, dx + k0, <int>K)
    gemm(True, False, <int>N, width, <int>M, <floating>1, dout, <int>N, x + k0, <int>K,
         <floating>1, grad_w + k0, <int>K)


cdef void add_column_sums(const floating* a, index_t rows, index_t cols,
                          floating* sums) noexcept nogil:
    """sums[c] += (a[0, c] + a[1, c] + ...), summed in row order as NumPy's a.sum(axis=0)."""
    cdef index_t r, c
    cdef floating s
    for c in range(cols):
        s = a[c]
        for r in range(1, rows):
            s = s + a[r * cols + c]
        sums[c] = sums[c] + s


# ----------------------------------------------------------------------------------------------
# The courses' affine layer: y = x @ W + b with W stored (in_features, out_features)
# (CS231n's affine_forward, the book's Affine). The same blocks as above; gradients are new
# arrays (the courses assign them, they do not accumulate).
# ----------------------------------------------------------------------------------------------

def affine_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                   int num_threads):
    """y = x @ w (+ b): x (M, K), w (K, N), b (N,) or None; returns a new (M, N) array."""
    return dense_forward(x, w, b, num_threads, False)


def affine_backward(const floating[:, ::1] dout, const floating[:, ::1] x, const floating[:, ::1] w,
                    int num_threads):
    """(dx, dw, db) of affine_forward: dx = dout @ w.T (M, K), dw = x.T @ dout (K, N) and
    db = dout.sum(0) (N,), summed in row order; all new arrays."""
    cdef index_t M = x.shape[0], K = x.shape[1], N = w.shape[1]
    dtype = np.float32 if floating is float else np.float64
    db_array = np.zeros(N, dtype=dtype)
    if M == 0 or K == 0 or N == 0:
        return np.zeros((M, K), dtype=dtype), np.zeros((K, N), dtype=dtype), db_array
    dx_array = np.empty((M, K), dtype=dtype)  # every element is written by a GEMM (beta = 0)
    dw_array = np.empty((K, N), dtype=dtype)
    cdef floating[:, ::1] dx = dx_array
    cdef floating[:, ::1] dw = dw_array
    cdef floating[::1] db = db_array
    cdef floating* dx_ptr = &dx[0, 0]
    cdef floating* dw_ptr = &dw[0, 0]
    cdef const floating* d_ptr = &dout[0, 0]
    cdef const floating* x_ptr = &x[0, 0]
    cdef const floating* w_ptr = &w[0, 0]
    cdef index_t size = block_size(K)
    cdef index_t blocks = (K + size - 1) // size, t
    cdef int threads = threads_for(2.0 * M * N * K, blocks, num_threads)
    blas_single_thread_enter()
    try:
        with nogil:
            for t in prange(blocks, num_threads=threads, schedule='dynamic'):
                affine_backward_block(d_ptr, x_ptr, w_ptr, dx_ptr, dw_ptr, M, N, K, t * size,
                                      min(t * size + size, K))
    finally:
        blas_single_thread_exit()
    with nogil:
        add_column_sums(d_ptr, M, N, &db[0])
    return dx_array, dw_array, db_array


cdef void affine_backward_block(const floating* dout, const floating* x, const floating* w,
                                floating* dx, floating* dw, index_t M, index_t N, index_t K,
                                index_t k0, index_t k1) noexcept nogil:
    """Columns [k0, k1) of dx = dout @ w^T and rows [k0, k1) of dw = x^T @ dout."""
    cdef int width = <int>(k1 - k0)
    gemm(False, True, <int>M, width, <int>N, <floating>1, dout, <int>N, w + k0 * N, <int>N,
         <floating>0, dx + k0, <int>K)
    gemm(True, False, width, <int>N, <int>M, <floating>1, x + k0, <int>K, dout, <int>N,
         <floating>0, dw + k0 * N, <int>N)
