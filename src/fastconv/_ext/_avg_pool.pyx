"""Compiled 2-D average pooling, forward and backward, for float32 and float64, with torch's
ceil_mode, count_include_pad and divisor_override. avg_pool1d runs here too, as planes of
height 1.

The Python layer has already checked every argument (C-contiguous arrays of the computation
dtype, valid (h, w) hyper-parameters, padding <= kernel // 2, dout of the forward's shape), so
the kernels never raise and never check bounds: every read and write is clipped to the plane.

Divisors: output (oh, ow) divides its window's sum by divisor_override, or by rows(oh) *
cols(ow), the window's extent inside the padded input (count_include_pad; a ceil_mode window
may reach past the padding) or inside the input. When every output has the same divisor (the
common case) it is one constant, as before these options existed.

Determinism: every output element is computed by exactly one thread, in a fixed order that does
not depend on the thread count, so results are bitwise identical for any `num_threads`.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t
from libc.string cimport memset

import numpy as np

from fastconv._ext._typedefs cimport index_t, Window2D
from fastconv._ext._openmp cimport omp_get_thread_num
from fastconv._ext._pool_common cimport pool_window, threads_for


cdef struct Divisors:
    int64_t uniform       # the divisor of every output, or 0 when they differ:
    const int64_t* rows   # then output (oh, ow) divides by rows[oh] * cols[ow]
    const int64_t* cols


cdef void _window_counts(int64_t* counts, index_t out, index_t size, index_t k, index_t s, index_t p,
                         bint count_include_pad) noexcept nogil:
    """Each output's window extent along one axis (its factor of the divisor)."""
    cdef index_t o, start, end
    for o in range(out):
        start = o * s - p
        end = start + k
        if count_include_pad:
            counts[o] = min(end, size + p) - start
        else:
            counts[o] = min(end, size) - max(start, 0)


cdef bint _all_equal(const int64_t* values, index_t n) noexcept nogil:
    cdef index_t i
    for i in range(1, n):
        if values[i] != values[0]:
            return False
    return True


cdef Divisors _divisors(int64_t[::1] counts, const Window2D* g, bint count_include_pad, divisor_override):
    """The divisors of a call; `counts` (OH + OW entries) holds the per-axis factors."""
    cdef Divisors d
    d.rows = &counts[0]
    d.cols = &counts[g.out_h]
    if divisor_override is not None:
        d.uniform = divisor_override
        return d
    _window_counts(&counts[0], g.out_h, g.height, g.kernel_h, g.stride_h, g.pad_h, count_include_pad)
    _window_counts(&counts[g.out_h], g.out_w, g.width, g.kernel_w, g.stride_w, g.pad_w, count_include_pad)
    if _all_equal(d.rows, g.out_h) and _all_equal(d.cols, g.out_w):
        d.uniform = d.rows[0] * d.cols[0]
    else:
        d.uniform = 0
    return d


# ----------------------------------------------------------------------------------------------
# Window sweeps shared by forward and backward
# ----------------------------------------------------------------------------------------------
# The outputs ow whose window column ow*SW - PW + j lies inside [0, W) form the range
# [_first_output(j, ...), _end_output(j, ...)). (Two functions returning values, not one with
# out-pointers: prange makes a variable thread-private only when it is assigned.)

cdef inline index_t _first_output(index_t j, index_t SW, index_t PW) noexcept nogil:
    return (PW - j + SW - 1) // SW if PW > j else 0


cdef inline index_t _end_output(index_t j, index_t W, index_t OW, index_t SW, index_t PW) noexcept nogil:
    cdef index_t last = W - 1 + PW - j  # largest ow*SW allowed
    cdef index_t first = _first_output(j, SW, PW)
    last = last // SW + 1 if last >= 0 else 0
    if last > OW:
        last = OW
    return last if last > first else first


cdef inline void _window_rows(const Window2D* g, index_t oh, index_t* hs, index_t* he) noexcept nogil:
    """Input rows [hs, he) of output row oh's windows (clipped to the plane)."""
    hs[0] = max(oh * g.stride_h - g.pad_h, 0)
    he[0] = min(oh * g.stride_h - g.pad_h + g.kernel_h, g.height)


cdef inline index_t _columns_lo(const Window2D* g) noexcept nogil:
    """Kernel columns outside [_columns_lo, _columns_hi) read only padding for every output:
    skipped (a kernel 2**31 wide over a narrow plane would otherwise loop for seconds)."""
    return max(0, g.pad_w - (g.out_w - 1) * g.stride_w)


cdef inline index_t _columns_hi(const Window2D* g) noexcept nogil:
    return min(g.kernel_w, g.width + g.pad_w)


cdef inline index_t _next_column(index_t lo, index_t SW, index_t PW) noexcept nogil:
    """The next kernel column that some output reads, after one that none does (lo, its
    _first_output, is then >= 1 and output lo reads right of the plane): the column where
    output lo - 1 reads input column 0. Such gaps between the columns the outputs read come
    from ceil_mode's last window, which may start up to a stride (2**31) after the others."""
    return PW - (lo - 1) * SW


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------

cdef void _avg_forward_row(const floating* plane, floating* out, const Window2D* g, index_t oh,
                           const Divisors* div) noexcept nogil:
    # The output row accumulates in place: for every window offset (h, j), in row-major order,
    # add the column of inputs it reads to all outputs of the row at once. The inner loop is a
    # plain strided sweep the compiler vectorises, and each output still sums its (real)
    # elements in row-major window order starting from +0.0: the same bits as summing the
    # zero-padded window, as the reference does.
    cdef index_t W = g.width, OW = g.out_w, SW = g.stride_w, PW = g.pad_w
    cdef index_t hs, he, h, j, k, ow, lo, hi
    cdef index_t j_lo = _columns_lo(g), j_hi = _columns_hi(g)
    cdef const floating* src
    cdef floating divisor
    cdef int64_t row_factor
    _window_rows(g, oh, &hs, &he)
    for ow in range(OW):
        out[ow] = 0
    for h in range(hs, he):
        j = j_lo
        while j < j_hi:
            lo = _first_output(j, SW, PW)
            hi = _end_output(j, W, OW, SW, PW)
            if lo >= hi:
                j = _next_column(lo, SW, PW)
                continue
            # Input column of output lo (never left of the plane, unlike that of output 0).
            src = plane + h * W + lo * SW + j - PW
            if SW == 2:  # constant stride: vectorised with interleaved loads
                for k in range(hi - lo):
                    out[lo + k] = out[lo + k] + src[2 * k]
            elif SW == 1:
                for k in range(hi - lo):
                    out[lo + k] = out[lo + k] + src[k]
            else:
                for k in range(hi - lo):
                    out[lo + k] = out[lo + k] + src[k * SW]
            j += 1
    # Divide (not multiply by a reciprocal) so the result matches sum / divisor exactly.
    if div.uniform:
        divisor = <floating>div.uniform
        for ow in range(OW):
            out[ow] = out[ow] / divisor
    else:
        row_factor = div.rows[oh]
        for ow in range(OW):
            out[ow] = out[ow] / <floating>(row_factor * div.cols[ow])


cdef void _avg_pool_forward(const floating* x, floating* y, const Window2D* g, const Divisors* div,
                            int num_threads) noexcept nogil:
    # Work item = one output row of one plane (independent of every other).
    cdef index_t plane = g.height * g.width, rows = g.channels * g.out_h
    cdef index_t r, p
    cdef int nt = threads_for(rows, g.channels * plane, num_threads)
    for r in prange(rows, schedule='static', num_threads=nt):
        p = r // g.out_h
        _avg_forward_row(x + p * plane, y + r * g.out_w, g, r - p * g.out_h, div)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------

cdef void _avg_backward_plane(const floating* dout, floating* dx, floating* share, const Window2D* g,
                              const Divisors* div) noexcept nogil:
    # Scatter each output's share over its window. The plane, zeroed by its owner, stays in
    # cache while the output rows are swept into it one window offset at a time; `share` (one
    # output row divided by its divisors) is computed once per row.
    cdef index_t W = g.width, OW = g.out_w, SW = g.stride_w, PW = g.pad_w
    cdef index_t oh, ow, hs, he, h, j, k, lo, hi
    cdef index_t j_lo = _columns_lo(g), j_hi = _columns_hi(g)
    cdef const floating* grad
    cdef floating* dst
    cdef floating divisor = <floating>div.uniform
    memset(dx, 0, g.height * W * sizeof(floating))
    for oh in range(g.out_h):
        grad = dout + oh * OW
        if div.uniform:
            for ow in range(OW):
                share[ow] = grad[ow] / divisor
        else:
            for ow in range(OW):
                share[ow] = grad[ow] / <floating>(div.rows[oh] * div.cols[ow])
        _window_rows(g, oh, &hs, &he)
        for h in range(hs, he):
            j = j_lo
            while j < j_hi:
                lo = _first_output(j, SW, PW)
                hi = _end_output(j, W, OW, SW, PW)
                if lo >= hi:
                    j = _next_column(lo, SW, PW)
                    continue
                dst = dx + h * W + lo * SW + j - PW
                if SW == 2:
                    for k in range(hi - lo):
                        dst[2 * k] += share[lo + k]
                elif SW == 1:
                    for k in range(hi - lo):
                        dst[k] += share[lo + k]
                else:
                    for k in range(hi - lo):
                        dst[k * SW] += share[lo + k]
                j += 1


cdef void _avg_pool_backward(const floating* dout, floating* dx, floating* shares, const Window2D* g,
                             const Divisors* div, int threads) noexcept nogil:
    # One thread per plane: windows may overlap, so two threads must never add into the same
    # plane. Each thread has its own row of `shares` (OW entries).
    cdef index_t plane = g.height * g.width, p
    cdef floating* share = NULL  # (initialised: OpenMP copies it into each thread)
    if threads == 1:
        for p in range(g.channels):
            _avg_backward_plane(dout + p * g.out_h * g.out_w, dx + p * plane, shares, g, div)
        return
    with parallel(num_threads=threads):
        share = shares + omp_get_thread_num() * g.out_w
        for p in prange(g.channels, schedule='static'):
            _avg_backward_plane(dout + p * g.out_h * g.out_w, dx + p * plane, share, g, div)


# ----------------------------------------------------------------------------------------------
# Python entry points: allocate the outputs, call the kernel without the GIL.
# ----------------------------------------------------------------------------------------------

def avg_pool2d(const floating[:, :, :, ::1] x, kernel_size, stride, padding, bint ceil_mode,
               bint count_include_pad, divisor_override, int num_threads):
    """Average pooling of x (N, C, H, W) with torch's options (see the module docstring)."""
    cdef Window2D g = pool_window(x.shape[0] * x.shape[1], x.shape[2], x.shape[3], kernel_size, stride,
                                  padding, (1, 1), ceil_mode)
    counts = np.empty(g.out_h + g.out_w, dtype=np.int64)
    cdef Divisors div = _divisors(counts, &g, count_include_pad, divisor_override)
    y_arr = np.empty((x.shape[0], x.shape[1], g.out_h, g.out_w),
                     dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, :, ::1] y = y_arr
    if y_arr.size:
        with nogil:
            _avg_pool_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &g, &div, num_threads)
    return y_arr


def avg_pool2d_backward(const floating[:, :, :, ::1] dout, input_shape, kernel_size, stride, padding,
                        bint ceil_mode, bint count_include_pad, divisor_override, int num_threads):
    """Gradient of avg_pool2d: each output's dout / divisor added over its window."""
    cdef index_t N = input_shape[0], C = input_shape[1]
    cdef Window2D g = pool_window(N * C, input_shape[2], input_shape[3], kernel_size, stride, padding,
                                  (1, 1), ceil_mode)
    # dout's own sizes (checked equal to the forward's): the sweeps never read past it.
    g.out_h, g.out_w = dout.shape[2], dout.shape[3]
    counts = np.empty(g.out_h + g.out_w, dtype=np.int64)
    cdef Divisors div = _divisors(counts, &g, count_include_pad, divisor_override)
    dtype = np.float32 if floating is float else np.float64
    dx_arr = np.empty((N, C, g.height, g.width), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = dx_arr
    cdef int threads = threads_for(N * C, N * C * g.height * g.width, num_threads)
    cdef floating[::1] shares = np.empty(threads * g.out_w, dtype=dtype)
    if dx_arr.size:
        with nogil:
            _avg_pool_backward(&dout[0, 0, 0, 0], &dx[0, 0, 0, 0], &shares[0], &g, &div, threads)
    return dx_arr
