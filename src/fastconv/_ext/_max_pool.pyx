"""Compiled 2-D max pooling: value and argmax forward (with dilation and ceil_mode), and the
scatter backward, for float32 and float64. max_pool1d runs here too, as planes of height 1.

The Python layer has already checked every argument: inputs are C-contiguous arrays of the
computation dtype, hyper-parameters are valid (h, w) pairs, padding <= kernel // 2, every window
(dilated, and ceil_mode's last ones) holds at least one element of the input, and backward
indices lie inside their input plane. The kernels below therefore never raise and never check
bounds.

Determinism: every output element is computed by exactly one thread, in a fixed order that does
not depend on the thread count, so results are bitwise identical for any `num_threads`.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memset

import numpy as np

from fastconv._ext._typedefs cimport index_t, Window2D
from fastconv._ext._pool_common cimport pool_window, threads_for


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------
# Selection rule (PyTorch's and fastconv.reference's): the first real tap of the window, in
# row-major order, starts the maximum; a later tap takes over when it is strictly greater or is
# NaN. So ties keep the earliest position and NaN wins. Padding is never looked at.
#
# Windows whose column taps lie inside the plane, with a column stride of 1 or 2, go through
# SSE2 kernels that handle 4 (float32) or 2 (float64) adjacent outputs at once with
# compare-and-select (compilers do not vectorise an arg-max with int64 indices on their own, and
# the branchy scalar loop mispredicts on random data). The rest (edge windows, other strides,
# non-x86 machines) takes the scalar loop. Both apply the same rule in the same order, so they
# agree exactly.

cdef extern from *:
    """
    #if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
    #include <emmintrin.h>
    #define FASTCONV_POOL_SIMD 1
    #if defined(_MSC_VER)
    #define FASTCONV_ALWAYS_INLINE static __forceinline
    #else
    #define FASTCONV_ALWAYS_INLINE static inline __attribute__((always_inline))
    #endif

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

    /* Max pooling of outputs [ow0, ow1) of one output row. Output ow's window has the taps
       rows[h * row_step + ow*sw - pw + j*dw] for h < nrows, j < kw, all inside the plane
       (`rows` points at the window's first real row, `base` is that row's flat index in the
       plane). Returns the first output not done (the caller finishes the tail). Positions
       inside a window are int32 offsets: the caller guarantees a plane of < 2**31 elements. */
    FASTCONV_ALWAYS_INLINE Py_ssize_t fastconv_max_row_f32_taps(const float *rows, float *y,
            int64_t *idx, Py_ssize_t row_step, Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t dw,
            Py_ssize_t sw, Py_ssize_t pw, Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) {
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
                const float *taps = win + h * row_step;
                __m128 row = fastconv_load4_f32(taps, s2);
                __m128i rpos = _mm_set1_epi32((int)(h * row_step));
                for (j = 1; j < kw; j++) {
                    __m128 v = fastconv_load4_f32(taps + j * dw, s2);
                    __m128 take = _mm_or_ps(_mm_cmpgt_ps(v, row), _mm_cmpunord_ps(v, v));
                    __m128i takei = _mm_castps_si128(take);
                    row = _mm_or_ps(_mm_and_ps(take, v), _mm_andnot_ps(take, row));
                    rpos = _mm_or_si128(_mm_and_si128(takei, _mm_set1_epi32((int)(h * row_step + j * dw))),
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

    FASTCONV_ALWAYS_INLINE Py_ssize_t fastconv_max_row_f64_taps(const double *rows, double *y,
            int64_t *idx, Py_ssize_t row_step, Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t dw,
            Py_ssize_t sw, Py_ssize_t pw, Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) {
        const int s2 = sw == 2;
        Py_ssize_t ow, h, j;
        for (ow = ow0; ow + 2 <= ow1; ow += 2) {
            const double *win = rows + ow * sw - pw;
            __m128d best = _mm_setzero_pd();
            __m128i pos = _mm_setzero_si128();
            for (h = 0; h < nrows; h++) {
                const double *taps = win + h * row_step;
                __m128d row = fastconv_load2_f64(taps, s2);
                __m128i rpos = _mm_set1_epi64x(h * row_step);
                for (j = 1; j < kw; j++) {
                    __m128d v = fastconv_load2_f64(taps + j * dw, s2);
                    __m128d take = _mm_or_pd(_mm_cmpgt_pd(v, row), _mm_cmpunord_pd(v, v));
                    __m128i takei = _mm_castpd_si128(take);
                    row = _mm_or_pd(_mm_and_pd(take, v), _mm_andnot_pd(take, row));
                    rpos = _mm_or_si128(_mm_and_si128(takei, _mm_set1_epi64x(h * row_step + j * dw)),
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

    /* An undilated window (the common case) gets its own copy with the tap step known: the
       small-kernel loops are a few instructions long, and a variable step measured a few
       percent slower on BENCH.md p1/p2. */
    static Py_ssize_t fastconv_max_row_f32(const float *rows, float *y, int64_t *idx,
            Py_ssize_t row_step, Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t sw,
            Py_ssize_t pw, Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) {
        if (dw == 1)
            return fastconv_max_row_f32_taps(rows, y, idx, row_step, nrows, kw, 1, sw, pw, ow0, ow1, base);
        return fastconv_max_row_f32_taps(rows, y, idx, row_step, nrows, kw, dw, sw, pw, ow0, ow1, base);
    }

    static Py_ssize_t fastconv_max_row_f64(const double *rows, double *y, int64_t *idx,
            Py_ssize_t row_step, Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t sw,
            Py_ssize_t pw, Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) {
        if (dw == 1)
            return fastconv_max_row_f64_taps(rows, y, idx, row_step, nrows, kw, 1, sw, pw, ow0, ow1, base);
        return fastconv_max_row_f64_taps(rows, y, idx, row_step, nrows, kw, dw, sw, pw, ow0, ow1, base);
    }
    #else
    #define FASTCONV_POOL_SIMD 0
    static Py_ssize_t fastconv_max_row_f32(const float *rows, float *y, int64_t *idx,
            Py_ssize_t row_step, Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t sw,
            Py_ssize_t pw, Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) { return ow0; }
    static Py_ssize_t fastconv_max_row_f64(const double *rows, double *y, int64_t *idx,
            Py_ssize_t row_step, Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t sw,
            Py_ssize_t pw, Py_ssize_t ow0, Py_ssize_t ow1, int64_t base) { return ow0; }
    #endif
    """
    bint FASTCONV_POOL_SIMD
    Py_ssize_t fastconv_max_row_f32(const float *rows, float *y, int64_t *idx, Py_ssize_t row_step,
                                    Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t sw,
                                    Py_ssize_t pw, Py_ssize_t ow0, Py_ssize_t ow1,
                                    int64_t base) noexcept nogil
    Py_ssize_t fastconv_max_row_f64(const double *rows, double *y, int64_t *idx, Py_ssize_t row_step,
                                    Py_ssize_t nrows, Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t sw,
                                    Py_ssize_t pw, Py_ssize_t ow0, Py_ssize_t ow1,
                                    int64_t base) noexcept nogil


cdef inline index_t _first_tap(index_t start, index_t step) noexcept nogil:
    """The first position start + i*step (i >= 0) that is not left of the plane."""
    if start >= 0:
        return start
    return start + ((-start + step - 1) // step) * step


cdef inline index_t _taps(index_t first, index_t end, index_t step) noexcept nogil:
    """How many of first, first + step, ... lie before end (no division for step 1: this runs
    once per output row, and for the edge windows once per output)."""
    if step == 1:
        return end - first
    return (end - first + step - 1) // step


cdef inline void _max_row_scalar(
    const floating* plane, floating* y, int64_t* idx, const Window2D* g,
    index_t hs, index_t row_taps, index_t ow0, index_t ow1,
) noexcept nogil:
    """Outputs [ow0, ow1) of one output row: row taps hs + i*dh (i < row_taps), column taps
    clipped to the plane per window."""
    # Copied out of *g: a store through idx (int64) may alias its fields as far as the
    # compiler knows, which would reload them for every output.
    cdef index_t W = g.width, KW = g.kernel_w, SW = g.stride_w, PW = g.pad_w, DW = g.dilation_w
    cdef index_t row_step = g.dilation_h * W, first_row = hs * W
    cdef index_t ow, i, j, ws, we, col_taps, row, pos, best_pos
    cdef floating best, v
    for ow in range(ow0, ow1):
        ws = ow * SW - PW
        we = ws + (KW - 1) * DW + 1
        if we > W:
            we = W
        ws = _first_tap(ws, DW)
        col_taps = _taps(ws, we, DW)
        best_pos = first_row + ws
        best = plane[best_pos]
        for i in range(row_taps):
            row = first_row + i * row_step + ws
            for j in range(col_taps):
                pos = row + j * DW
                v = plane[pos]
                if v > best or v != v:
                    best = v
                    best_pos = pos
        y[ow] = best
        idx[ow] = best_pos


cdef inline void _max_row(
    const floating* plane, floating* y, int64_t* idx, const Window2D* g,
    index_t hs, index_t row_taps, bint simd,
) noexcept nogil:
    """One output row: vector kernel on the interior windows, scalar loop on the edges."""
    cdef index_t OW = g.out_w, SW = g.stride_w, PW = g.pad_w
    cdef index_t lo = 0, hi = 0, done
    if simd:
        # Interior: every column tap inside [0, W); with stride 2 the vector load also reads
        # one column past the last tap, which must stay inside the row as well.
        lo = (PW + SW - 1) // SW
        if lo > OW:  # padding wider than every window start: no interior window at all
            lo = OW
        hi = g.width - 1 - (SW == 2) - (g.kernel_w - 1) * g.dilation_w + PW
        hi = hi // SW + 1 if hi >= 0 else 0
        if hi > OW:
            hi = OW
        if hi < lo:
            hi = lo
    _max_row_scalar(plane, y, idx, g, hs, row_taps, 0, lo)
    if hi > lo:
        if floating is float:
            done = fastconv_max_row_f32(plane + hs * g.width, y, idx, g.dilation_h * g.width, row_taps,
                                        g.kernel_w, g.dilation_w, SW, PW, lo, hi, hs * g.width)
        else:
            done = fastconv_max_row_f64(plane + hs * g.width, y, idx, g.dilation_h * g.width, row_taps,
                                        g.kernel_w, g.dilation_w, SW, PW, lo, hi, hs * g.width)
    else:
        done = lo
    _max_row_scalar(plane, y, idx, g, hs, row_taps, done, OW)


cdef void _max_pool_forward(
    const floating* x, floating* y, int64_t* idx, const Window2D* g, int num_threads,
) noexcept nogil:
    # Work item = one output row of one plane: enough items to balance two threads even for a
    # single image, and every output row is independent.
    cdef index_t H = g.height, OH = g.out_h, OW = g.out_w, DH = g.dilation_h
    cdef index_t rows = g.channels * OH
    cdef index_t r, p, oh, hs, he
    cdef bint simd = FASTCONV_POOL_SIMD and (g.stride_w == 1 or g.stride_w == 2) and H * g.width < 2147483647
    cdef int nt = threads_for(rows, g.channels * H * g.width, num_threads)
    for r in prange(rows, schedule='static', num_threads=nt):
        p = r // OH
        oh = r - p * OH
        hs = oh * g.stride_h - g.pad_h
        he = hs + (g.kernel_h - 1) * DH + 1
        if he > H:
            he = H
        hs = _first_tap(hs, DH)
        _max_row(x + p * H * g.width, y + r * OW, idx + r * OW, g, hs, _taps(hs, he, DH), simd)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------

cdef void _max_pool_backward(
    const floating* dout, const int64_t* idx, floating* dx,
    index_t planes, index_t plane_in, index_t plane_out, int num_threads,
) noexcept nogil:
    # One thread owns a whole (n, c) plane: overlapping windows may share a maximum, and the
    # scatter-add into that position must not race. The plane is zeroed by its owner (first
    # touch happens on the thread that writes it) and stays in cache for the scatter.
    cdef index_t p, k
    cdef floating* d
    cdef const floating* grad
    cdef const int64_t* ix
    cdef int nt = threads_for(planes, planes * plane_in, num_threads)
    for p in prange(planes, schedule='static', num_threads=nt):
        d = dx + p * plane_in
        grad = dout + p * plane_out
        ix = idx + p * plane_out
        memset(d, 0, plane_in * sizeof(floating))
        for k in range(plane_out):
            d[ix[k]] += grad[k]


# ----------------------------------------------------------------------------------------------
# Python entry points: allocate the outputs, call the kernel without the GIL.
# ----------------------------------------------------------------------------------------------

def max_pool2d(const floating[:, :, :, ::1] x, kernel_size, stride, padding, dilation, bint ceil_mode,
               int num_threads):
    """Max pooling of x (N, C, H, W) -> (y, idx); idx (int64) is h*W + w in the input plane."""
    cdef Window2D g = pool_window(x.shape[0] * x.shape[1], x.shape[2], x.shape[3], kernel_size, stride,
                                  padding, dilation, ceil_mode)
    dtype = np.float32 if floating is float else np.float64
    y_arr = np.empty((x.shape[0], x.shape[1], g.out_h, g.out_w), dtype=dtype)
    idx_arr = np.empty((x.shape[0], x.shape[1], g.out_h, g.out_w), dtype=np.int64)
    cdef floating[:, :, :, ::1] y = y_arr
    cdef int64_t[:, :, :, ::1] idx = idx_arr
    if y_arr.size:
        with nogil:
            _max_pool_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &idx[0, 0, 0, 0], &g, num_threads)
    return y_arr, idx_arr


def max_pool2d_backward(const floating[:, :, :, ::1] dout, const int64_t[:, :, :, ::1] idx,
                        input_shape, int num_threads):
    """Scatter-add dout at idx into zeros of input_shape (indices already validated)."""
    cdef index_t N = input_shape[0], C = input_shape[1], H = input_shape[2], W = input_shape[3]
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
