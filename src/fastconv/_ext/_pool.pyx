"""Compiled 2-D pooling kernels: max pooling (value + argmax) and average pooling, forward and
backward, for float32 and float64.

The Python layer has already checked every argument: inputs are C-contiguous arrays of the
computation dtype, hyper-parameters are valid (h, w) pairs, padding <= kernel // 2 (so every
window holds at least one real element) and max-pool indices lie inside their input plane.
The kernels below therefore never raise and never check bounds.

Determinism: every output element is computed by exactly one thread, in a fixed order that does
not depend on the thread count, so results are bitwise identical for any `num_threads`.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t
from libc.string cimport memset

import numpy as np

# Below this many input elements a call runs on one thread: starting a parallel region costs
# a few microseconds, more than pooling a few tens of kilobytes.
cdef Py_ssize_t SERIAL_ELEMENTS = 1 << 15


cdef inline int _threads_for(Py_ssize_t work_items, Py_ssize_t elements, int num_threads) noexcept nogil:
    """Threads worth starting: 1 for small problems, never more than the work items."""
    if elements < SERIAL_ELEMENTS or num_threads < 1:
        return 1
    if num_threads > work_items:
        return <int>work_items
    return num_threads


# ----------------------------------------------------------------------------------------------
# Max pooling, forward
# ----------------------------------------------------------------------------------------------
# Selection rule (PyTorch's and fastconv.reference's): the first real element of the window, in
# row-major order, starts the maximum; a later element takes over when it is strictly greater
# or is NaN. So ties keep the earliest position and NaN wins. Padding is never looked at.
#
# Windows that lie inside the plane's columns, with a column stride of 1 or 2, go through SSE2
# kernels that handle 4 (float32) or 2 (float64) adjacent outputs at once with compare-and-select
# (compilers do not vectorise an arg-max with int64 indices on their own, and the branchy scalar
# loop mispredicts on random data). The rest (edge windows, other strides, non-x86 machines)
# takes the scalar loop. Both apply the same rule in the same order, so they agree exactly.

cdef extern from *:
    """
    #if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
    #include <emmintrin.h>
    #define FASTCONV_POOL_SIMD 1

    /* Values x[p], x[p + s], x[p + 2s], x[p + 3s] for s = 1 or 2. With s = 2 this reads
       p[0..7]: the caller guarantees that p[7] is inside the row. */
    static inline __m128 fastconv_load4_f32(const float *p, int s2) {
        if (!s2) return _mm_loadu_ps(p);
        return _mm_shuffle_ps(_mm_loadu_ps(p), _mm_loadu_ps(p + 4), _MM_SHUFFLE(2, 0, 2, 0));
    }

    static inline __m128d fastconv_load2_f64(const double *p, int s2) {
        if (!s2) return _mm_loadu_pd(p);
        return _mm_shuffle_pd(_mm_loadu_pd(p), _mm_loadu_pd(p + 2), 0);
    }

    /* Max pooling of outputs [ow0, ow1) of one output row whose windows are rows [0, nrows)
       and columns [ow*sw - pw, ow*sw - pw + kw) of `rows` (already offset to the first window
       row), all inside the plane. `base` is the flat index of rows[0] in the plane. Returns the
       first output not done (the caller finishes the tail). Positions inside a window are
       int32 offsets: the caller guarantees nrows * W + kw < 2**31. */
    static Py_ssize_t fastconv_max_row_f32(const float *rows, float *y, int64_t *idx,
            Py_ssize_t W, Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pw,
            Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) {
        const int s2 = sw == 2;
        const __m128i zero = _mm_setzero_si128();
        Py_ssize_t ow, h, j;
        for (ow = ow0; ow + 4 <= ow1; ow += 4) {
            const float *win = rows + ow * sw - pw;
            __m128 best = _mm_setzero_ps();
            __m128i pos = zero;
            for (h = 0; h < nrows; h++) {
                /* Each window row is reduced on its own chain, then merged into the running
                   result: the selection rule is associative, and independent chains keep the
                   compare/select latency from serialising the whole window. */
                __m128 row = fastconv_load4_f32(win + h * W, s2);
                __m128i rpos = _mm_set1_epi32((int)(h * W));
                for (j = 1; j < kw; j++) {
                    __m128 v = fastconv_load4_f32(win + h * W + j, s2);
                    __m128 take = _mm_or_ps(_mm_cmpgt_ps(v, row), _mm_cmpunord_ps(v, v));
                    __m128i takei = _mm_castps_si128(take);
                    row = _mm_or_ps(_mm_and_ps(take, v), _mm_andnot_ps(take, row));
                    rpos = _mm_or_si128(_mm_and_si128(takei, _mm_set1_epi32((int)(h * W + j))),
                                        _mm_andnot_si128(takei, rpos));
                }
                if (h == 0) {
                    best = row;
                    pos = rpos;
                } else {
                    __m128 take = _mm_or_ps(_mm_cmpgt_ps(row, best), _mm_cmpunord_ps(row, row));
                    __m128i takei = _mm_castps_si128(take);
                    best = _mm_or_ps(_mm_and_ps(take, row), _mm_andnot_ps(take, best));
                    pos = _mm_or_si128(_mm_and_si128(takei, rpos), _mm_andnot_si128(takei, pos));
                }
            }
            _mm_storeu_ps(y + ow, best);
            int64_t start = base + ow * sw - pw;  /* flat index of lane 0's window corner */
            __m128i lo = _mm_add_epi64(_mm_unpacklo_epi32(pos, zero),
                                       _mm_set_epi64x(start + sw, start));
            __m128i hi = _mm_add_epi64(_mm_unpackhi_epi32(pos, zero),
                                       _mm_set_epi64x(start + 3 * sw, start + 2 * sw));
            _mm_storeu_si128((__m128i *)(idx + ow), lo);
            _mm_storeu_si128((__m128i *)(idx + ow + 2), hi);
        }
        return ow;
    }

    static Py_ssize_t fastconv_max_row_f64(const double *rows, double *y, int64_t *idx,
            Py_ssize_t W, Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pw,
            Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) {
        const int s2 = sw == 2;
        Py_ssize_t ow, h, j;
        for (ow = ow0; ow + 2 <= ow1; ow += 2) {
            const double *win = rows + ow * sw - pw;
            __m128d best = _mm_setzero_pd();
            __m128i pos = _mm_setzero_si128();
            for (h = 0; h < nrows; h++) {
                __m128d row = fastconv_load2_f64(win + h * W, s2);
                __m128i rpos = _mm_set1_epi64x(h * W);
                for (j = 1; j < kw; j++) {
                    __m128d v = fastconv_load2_f64(win + h * W + j, s2);
                    __m128d take = _mm_or_pd(_mm_cmpgt_pd(v, row), _mm_cmpunord_pd(v, v));
                    __m128i takei = _mm_castpd_si128(take);
                    row = _mm_or_pd(_mm_and_pd(take, v), _mm_andnot_pd(take, row));
                    rpos = _mm_or_si128(_mm_and_si128(takei, _mm_set1_epi64x(h * W + j)),
                                        _mm_andnot_si128(takei, rpos));
                }
                if (h == 0) {
                    best = row;
                    pos = rpos;
                } else {
                    __m128d take = _mm_or_pd(_mm_cmpgt_pd(row, best), _mm_cmpunord_pd(row, row));
                    __m128i takei = _mm_castpd_si128(take);
                    best = _mm_or_pd(_mm_and_pd(take, row), _mm_andnot_pd(take, best));
                    pos = _mm_or_si128(_mm_and_si128(takei, rpos), _mm_andnot_si128(takei, pos));
                }
            }
            _mm_storeu_pd(y + ow, best);
            int64_t start = base + ow * sw - pw;
            _mm_storeu_si128((__m128i *)(idx + ow),
                             _mm_add_epi64(pos, _mm_set_epi64x(start + sw, start)));
        }
        return ow;
    }
    #else
    #define FASTCONV_POOL_SIMD 0
    static Py_ssize_t fastconv_max_row_f32(const float *rows, float *y, int64_t *idx,
            Py_ssize_t W, Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pw,
            Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) { return ow0; }
    static Py_ssize_t fastconv_max_row_f64(const double *rows, double *y, int64_t *idx,
            Py_ssize_t W, Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pw,
            Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) { return ow0; }
    #endif
    """
    bint FASTCONV_POOL_SIMD
    Py_ssize_t fastconv_max_row_f32(const float *rows, float *y, int64_t *idx, Py_ssize_t W,
                                    Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pw,
                                    Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) noexcept nogil
    Py_ssize_t fastconv_max_row_f64(const double *rows, double *y, int64_t *idx, Py_ssize_t W,
                                    Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pw,
                                    Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) noexcept nogil


cdef inline void _max_row_scalar(
    const floating* plane, floating* y, int64_t* idx,
    Py_ssize_t W, Py_ssize_t hs, Py_ssize_t he, Py_ssize_t KW, Py_ssize_t SW, Py_ssize_t PW,
    Py_ssize_t ow0, Py_ssize_t ow1,
) noexcept nogil:
    """Outputs [ow0, ow1) of one output row: rows [hs, he), columns clipped per window."""
    cdef Py_ssize_t ow, h, w, ws, we, best_pos
    cdef floating best, v
    for ow in range(ow0, ow1):
        ws = ow * SW - PW
        we = ws + KW
        if ws < 0:
            ws = 0
        if we > W:
            we = W
        best = plane[hs * W + ws]
        best_pos = hs * W + ws
        for h in range(hs, he):
            for w in range(ws, we):
                v = plane[h * W + w]
                if v > best or v != v:
                    best = v
                    best_pos = h * W + w
        y[ow] = best
        idx[ow] = best_pos


cdef inline void _max_row(
    const floating* plane, floating* y, int64_t* idx, Py_ssize_t W, Py_ssize_t OW,
    Py_ssize_t hs, Py_ssize_t he, Py_ssize_t KW, Py_ssize_t SW, Py_ssize_t PW, bint simd,
) noexcept nogil:
    """One output row: vector kernel on the interior windows, scalar loop on the edges."""
    cdef Py_ssize_t lo = 0, hi = 0, done
    if simd:
        # Interior: window columns inside [0, W); with stride 2 the vector load also reads one
        # column past the window, which must stay inside the row as well.
        lo = (PW + SW - 1) // SW
        if lo > OW:  # padding wider than every window start: no interior window at all
            lo = OW
        hi = W - (SW == 2) - KW + PW
        hi = hi // SW + 1 if hi >= 0 else 0
        if hi > OW:
            hi = OW
        if hi < lo:
            hi = lo
    _max_row_scalar(plane, y, idx, W, hs, he, KW, SW, PW, 0, lo)
    if hi > lo:
        if floating is float:
            done = fastconv_max_row_f32(plane + hs * W, y, idx, W, he - hs, KW, SW, PW, lo, hi, hs * W)
        else:
            done = fastconv_max_row_f64(plane + hs * W, y, idx, W, he - hs, KW, SW, PW, lo, hi, hs * W)
    else:
        done = lo
    _max_row_scalar(plane, y, idx, W, hs, he, KW, SW, PW, done, OW)


cdef void _max_pool_forward(
    const floating* x, floating* y, int64_t* idx,
    Py_ssize_t NC, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
    Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
    int num_threads,
) noexcept nogil:
    # Work item = one output row of one plane: enough items to balance two threads even for a
    # single image, and every output row is independent.
    cdef Py_ssize_t rows = NC * OH
    cdef Py_ssize_t r, p, oh, hs, he
    cdef bint simd = FASTCONV_POOL_SIMD and (SW == 1 or SW == 2) and KH * W + KW < 2147483647
    cdef int nt = _threads_for(rows, NC * H * W, num_threads)
    for r in prange(rows, schedule='static', num_threads=nt):
        p = r // OH
        oh = r - p * OH
        hs = oh * SH - PH
        he = hs + KH
        if hs < 0:
            hs = 0
        if he > H:
            he = H
        _max_row(x + p * H * W, y + r * OW, idx + r * OW, W, OW, hs, he, KW, SW, PW, simd)


# ----------------------------------------------------------------------------------------------
# Max pooling, backward
# ----------------------------------------------------------------------------------------------

cdef void _max_pool_backward(
    const floating* dout, const int64_t* idx, floating* dx,
    Py_ssize_t NC, Py_ssize_t plane_in, Py_ssize_t plane_out, int num_threads,
) noexcept nogil:
    # One thread owns a whole (n, c) plane: overlapping windows may share a maximum, and the
    # scatter-add into that position must not race. The plane is zeroed by its owner (first
    # touch happens on the thread that writes it) and stays in cache for the scatter.
    cdef Py_ssize_t p, k
    cdef floating* d
    cdef const floating* g
    cdef const int64_t* ix
    cdef int nt = _threads_for(NC, NC * plane_in, num_threads)
    for p in prange(NC, schedule='static', num_threads=nt):
        d = dx + p * plane_in
        g = dout + p * plane_out
        ix = idx + p * plane_out
        memset(d, 0, plane_in * sizeof(floating))
        for k in range(plane_out):
            d[ix[k]] += g[k]


# ----------------------------------------------------------------------------------------------
# Average pooling (count_include_pad=True: the divisor is always KH*KW)
# ----------------------------------------------------------------------------------------------

# The outputs ow whose window column ow*SW - PW + j lies inside [0, W) form the range
# [_first_output(j, ...), _end_output(j, ...)). (Two functions returning values, not one with
# out-pointers: prange makes a variable thread-private only when it is assigned.)

cdef inline Py_ssize_t _first_output(Py_ssize_t j, Py_ssize_t SW, Py_ssize_t PW) noexcept nogil:
    return (PW - j + SW - 1) // SW if PW > j else 0


cdef inline Py_ssize_t _end_output(
    Py_ssize_t j, Py_ssize_t W, Py_ssize_t OW, Py_ssize_t SW, Py_ssize_t PW,
) noexcept nogil:
    cdef Py_ssize_t last = W - 1 + PW - j  # largest ow*SW allowed
    cdef Py_ssize_t first = _first_output(j, SW, PW)
    last = last // SW + 1 if last >= 0 else 0
    if last > OW:
        last = OW
    return last if last > first else first


cdef void _avg_pool_forward(
    const floating* x, floating* y,
    Py_ssize_t NC, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
    Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
    int num_threads,
) noexcept nogil:
    # Each output row accumulates in place: for every window offset (h, j), in row-major order,
    # add the column of inputs it reads to all outputs of the row at once. The inner loop is a
    # plain strided sweep the compiler vectorises, and each output still sums its (real)
    # elements in row-major window order starting from +0.0: the same bits as summing the
    # zero-padded window, as the reference does.
    cdef Py_ssize_t rows = NC * OH
    cdef Py_ssize_t r, p, oh, ow, hs, he, h, j, k, lo, hi
    cdef const floating* src
    cdef floating* out
    # Divide (not multiply by a reciprocal) so the result matches sum / (KH*KW) exactly.
    cdef floating divisor = <floating>(KH * KW)
    # Kernel columns outside [j_lo, j_hi) read only padding for every output: skip them (a
    # kernel 2**31 wide over a narrow plane would otherwise loop for seconds doing nothing).
    cdef Py_ssize_t j_lo = max(0, PW - (OW - 1) * SW), j_hi = min(KW, W + PW)
    cdef int nt = _threads_for(rows, NC * H * W, num_threads)
    for r in prange(rows, schedule='static', num_threads=nt):
        p = r // OH
        oh = r - p * OH
        hs = oh * SH - PH
        he = hs + KH
        if hs < 0:
            hs = 0
        if he > H:
            he = H
        out = y + r * OW
        for ow in range(OW):
            out[ow] = 0
        for h in range(hs, he):
            for j in range(j_lo, j_hi):
                lo = _first_output(j, SW, PW)
                hi = _end_output(j, W, OW, SW, PW)
                # Input column of output lo (never left of the plane, unlike that of output 0).
                src = x + p * H * W + h * W + lo * SW + j - PW
                if SW == 2:  # constant stride: vectorised with interleaved loads
                    for k in range(hi - lo):
                        out[lo + k] = out[lo + k] + src[2 * k]
                elif SW == 1:
                    for k in range(hi - lo):
                        out[lo + k] = out[lo + k] + src[k]
                else:
                    for k in range(hi - lo):
                        out[lo + k] = out[lo + k] + src[k * SW]
        for ow in range(OW):
            out[ow] = out[ow] / divisor


cdef void _avg_pool_backward(
    const floating* dout, floating* dx,
    Py_ssize_t NC, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
    Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
    int num_threads,
) noexcept nogil:
    # Scatter each output's share over its window, one thread per plane (windows may overlap,
    # so two threads must never add into the same plane). The plane, zeroed by its owner, stays
    # in cache while the output rows are swept into it one window offset at a time.
    cdef Py_ssize_t p, oh, hs, he, h, j, k, lo, hi
    cdef floating* dst
    cdef const floating* g
    cdef floating divisor = <floating>(KH * KW)
    cdef Py_ssize_t j_lo = max(0, PW - (OW - 1) * SW), j_hi = min(KW, W + PW)  # as in forward
    cdef int nt = _threads_for(NC, NC * H * W, num_threads)
    for p in prange(NC, schedule='static', num_threads=nt):
        memset(dx + p * H * W, 0, H * W * sizeof(floating))
        for oh in range(OH):
            g = dout + (p * OH + oh) * OW
            hs = oh * SH - PH
            he = hs + KH
            if hs < 0:
                hs = 0
            if he > H:
                he = H
            for h in range(hs, he):
                for j in range(j_lo, j_hi):
                    lo = _first_output(j, SW, PW)
                    hi = _end_output(j, W, OW, SW, PW)
                    dst = dx + p * H * W + h * W + lo * SW + j - PW
                    if SW == 2:
                        for k in range(hi - lo):
                            dst[2 * k] += g[lo + k] / divisor
                    elif SW == 1:
                        for k in range(hi - lo):
                            dst[k] += g[lo + k] / divisor
                    else:
                        for k in range(hi - lo):
                            dst[k * SW] += g[lo + k] / divisor


# ----------------------------------------------------------------------------------------------
# Python entry points: allocate the outputs, call the kernel without the GIL.
# ----------------------------------------------------------------------------------------------

cdef inline Py_ssize_t _out_size(Py_ssize_t size, Py_ssize_t k, Py_ssize_t s, Py_ssize_t p):
    return (size + 2 * p - k) // s + 1


def max_pool2d(const floating[:, :, :, ::1] x, kernel_size, stride, padding, int num_threads):
    """Max pooling of x (N, C, H, W) -> (y, idx); idx (int64) is h*W + w in the input plane."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t KH = kernel_size[0], KW = kernel_size[1]
    cdef Py_ssize_t SH = stride[0], SW = stride[1], PH = padding[0], PW = padding[1]
    cdef Py_ssize_t OH = _out_size(H, KH, SH, PH), OW = _out_size(W, KW, SW, PW)
    dtype = np.float32 if floating is float else np.float64
    y_arr = np.empty((N, C, OH, OW), dtype=dtype)
    idx_arr = np.empty((N, C, OH, OW), dtype=np.int64)
    cdef floating[:, :, :, ::1] y = y_arr
    cdef int64_t[:, :, :, ::1] idx = idx_arr
    if y_arr.size:
        with nogil:
            _max_pool_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &idx[0, 0, 0, 0], N * C, H, W, OH, OW,
                              KH, KW, SH, SW, PH, PW, num_threads)
    return y_arr, idx_arr


def max_pool2d_backward(const floating[:, :, :, ::1] dout, const int64_t[:, :, :, ::1] idx,
                        input_shape, int num_threads):
    """Scatter-add dout at idx into zeros of input_shape (indices already validated)."""
    cdef Py_ssize_t N = input_shape[0], C = input_shape[1], H = input_shape[2], W = input_shape[3]
    dtype = np.float32 if floating is float else np.float64
    # np.empty, not np.zeros: each plane is zeroed by the thread that owns it.
    dx_arr = np.empty((N, C, H, W), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = dx_arr
    if dout.shape[2] * dout.shape[3] == 0:  # no windows: nothing to scatter
        dx_arr.fill(0)
    elif dx_arr.size:
        with nogil:
            _max_pool_backward(&dout[0, 0, 0, 0], &idx[0, 0, 0, 0], &dx[0, 0, 0, 0], N * C, H * W,
                               dout.shape[2] * dout.shape[3], num_threads)
    return dx_arr


def avg_pool2d(const floating[:, :, :, ::1] x, kernel_size, stride, padding, int num_threads):
    """Average pooling of x (N, C, H, W), padded zeros counted in the divisor."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t KH = kernel_size[0], KW = kernel_size[1]
    cdef Py_ssize_t SH = stride[0], SW = stride[1], PH = padding[0], PW = padding[1]
    cdef Py_ssize_t OH = _out_size(H, KH, SH, PH), OW = _out_size(W, KW, SW, PW)
    dtype = np.float32 if floating is float else np.float64
    y_arr = np.empty((N, C, OH, OW), dtype=dtype)
    cdef floating[:, :, :, ::1] y = y_arr
    if y_arr.size:
        with nogil:
            _avg_pool_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], N * C, H, W, OH, OW,
                              KH, KW, SH, SW, PH, PW, num_threads)
    return y_arr


def avg_pool2d_backward(const floating[:, :, :, ::1] dout, input_shape, kernel_size, stride, padding,
                        int num_threads):
    """Gradient of avg_pool2d: each output's dout / (KH*KW) added over its window."""
    cdef Py_ssize_t N = input_shape[0], C = input_shape[1], H = input_shape[2], W = input_shape[3]
    cdef Py_ssize_t KH = kernel_size[0], KW = kernel_size[1]
    cdef Py_ssize_t SH = stride[0], SW = stride[1], PH = padding[0], PW = padding[1]
    cdef Py_ssize_t OH = dout.shape[2], OW = dout.shape[3]
    dtype = np.float32 if floating is float else np.float64
    dx_arr = np.empty((N, C, H, W), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = dx_arr
    if dx_arr.size:
        with nogil:
            _avg_pool_backward(&dout[0, 0, 0, 0], &dx[0, 0, 0, 0], N * C, H, W, OH, OW,
                               KH, KW, SH, SW, PH, PW, num_threads)
    return dx_arr
