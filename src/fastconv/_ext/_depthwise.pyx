"""Direct depthwise convolution: every group has one input channel (groups == C).

Filter ``f = c*m + k`` (m = F // C filters per channel, the "channel multiplier") reads only
input channel ``c``, so each output plane is a small 2-D correlation of one input plane, with
``KH*KW`` multiply-adds per output: far too little work per GEMM call to pay for im2col and
BLAS (which is why torch manages about 4 GFLOP/s here). These kernels walk the planes
directly. Each input plane is first copied into a zero-padded "window" (a thread-owned buffer
the size of the padded plane), so that every kernel offset of every output reads inside it:
the micro-kernels of kernels/depthwise.h then run over whole planes with no bounds at all.
When the padding or dilation is so large that the window would be much bigger than the plane,
a general path clips each kernel offset to the outputs whose input is inside the plane
instead (no buffer; same sums in the same order).

Infinities and NaN behave as in the im2col + GEMM kernels and the NumPy reference, which
multiply the zero padding too: a non-finite weight (forward) or output gradient (weight
gradient) that meets the padding gives NaN there, and the data gradient never meets it.

A stride-1 data gradient is itself a correlation (of dout with the flipped kernel) and runs
on the same micro-kernel; other strides scatter dout, offset by offset. The weight gradient
reads x through the same window, all offsets of a kernel row in one pass over dout.

The micro-kernels come in one table per instruction set (portable, and AVX2 + FMA on
x86-64), the best one this CPU runs chosen at import; FASTCONV_ISA=generic forces the
portable one, and kernel_isa() (show_config()["depthwise_kernels"]) names the one in use.

Work is split into tasks of (chunk of consecutive images, block of consecutive channels),
decided by N and C only; a task visits its planes image by image, channel by channel, which
is the order they lie in memory (a channel across the batch would jump a whole image between
planes of a few kB). Each task owns its dx planes and its channels' part of its chunk's dW/db
partial, which the caller sums in chunk order (fastconv._ext._conv.sum_partials): results
never depend on the thread count.
"""

import os

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport isfinite
from libc.string cimport memset

from fastconv._ext._typedefs cimport index_t, Window2D
from fastconv._ext._openmp cimport omp_get_thread_num
from fastconv._ext._im2col cimport valid_range

cdef extern from "kernels/depthwise.h" nogil:
    void fc_dw_prefetch(const void* p, size_t nbytes)
    ctypedef struct fc_dw_kernels:
        const char* isa
        void (*f32_correlate)(const float* src, Py_ssize_t src_step, Py_ssize_t tap_row,
                              Py_ssize_t tap_col, Py_ssize_t stride, const float* w, Py_ssize_t wstep,
                              Py_ssize_t kh, Py_ssize_t kw, float* y, Py_ssize_t y_step,
                              Py_ssize_t rows, Py_ssize_t count, float start, int accumulate) noexcept nogil
        float (*f32_dot_rows)(const float* d, Py_ssize_t d_step, const float* x, Py_ssize_t x_step,
                              Py_ssize_t stride, Py_ssize_t rows, Py_ssize_t count) noexcept nogil
        void (*f32_dot_taps)(const float* d, Py_ssize_t d_step, const float* x, Py_ssize_t x_step,
                             Py_ssize_t tap_col, Py_ssize_t stride, Py_ssize_t kw, Py_ssize_t rows,
                             Py_ssize_t count, float* out, int accumulate) noexcept nogil
        float (*f32_sum)(const float* d, Py_ssize_t count) noexcept nogil
        void (*f64_correlate)(const double* src, Py_ssize_t src_step, Py_ssize_t tap_row,
                              Py_ssize_t tap_col, Py_ssize_t stride, const double* w, Py_ssize_t wstep,
                              Py_ssize_t kh, Py_ssize_t kw, double* y, Py_ssize_t y_step,
                              Py_ssize_t rows, Py_ssize_t count, double start, int accumulate) noexcept nogil
        double (*f64_dot_rows)(const double* d, Py_ssize_t d_step, const double* x, Py_ssize_t x_step,
                               Py_ssize_t stride, Py_ssize_t rows, Py_ssize_t count) noexcept nogil
        void (*f64_dot_taps)(const double* d, Py_ssize_t d_step, const double* x, Py_ssize_t x_step,
                             Py_ssize_t tap_col, Py_ssize_t stride, Py_ssize_t kw, Py_ssize_t rows,
                             Py_ssize_t count, double* out, int accumulate) noexcept nogil
        double (*f64_sum)(const double* d, Py_ssize_t count) noexcept nogil
    const fc_dw_kernels* fc_dw_kernels_for(const char* isa)
    const fc_dw_kernels* fc_dw_best()


# The micro-kernels in use: the best instruction set of this CPU, unless FASTCONV_ISA=generic
# asks for the portable ones (the variable of the convolution engine's instruction sets).
cdef const fc_dw_kernels* kernels = fc_dw_best()
if os.environ.get("FASTCONV_ISA", "").strip().lower() == "generic":
    kernels = fc_dw_kernels_for(b"generic")


def kernel_isa():
    """The instruction set of the depthwise micro-kernels in use: 'avx2' or 'generic'."""
    return kernels.isa.decode()


def _use_kernels(isa):
    """Tests: run the depthwise micro-kernels of `isa` ('generic', 'avx2' or 'best').

    Not thread-safe: nothing may run while it switches."""
    global kernels
    cdef const fc_dw_kernels* chosen = fc_dw_best() if isa == "best" else fc_dw_kernels_for(isa.encode())
    if chosen == NULL:
        raise ValueError(f"the depthwise kernels for {isa!r} are not available on this CPU or build")
    kernels = chosen


# Chunks of images: at most this many dW partials (as fastconv._ext._conv's batch mode).
cdef index_t MAX_CHUNKS = 8
# About this many (chunk, channel block) tasks, for a good balance under dynamic scheduling.
cdef index_t TASKS_WANTED = 32
# Prefetch the plane this many planes ahead of the one being computed.
cdef index_t PREFETCH_PLANES = 2
# A window may hold at most this many times the plane's elements plus WINDOW_SLACK (so a
# 3x3-padded 28x28 plane has one, a 5x5 plane padded by 100 has not).
cdef index_t WINDOW_RATIO = 4
cdef index_t WINDOW_SLACK = 4096


cdef floating plane_sum(const floating* a, index_t size) noexcept nogil:
    """a[0] + ... + a[size - 1], in the fixed order of partial sums of kernels/depthwise.h."""
    if floating is float:
        return kernels.f32_sum(a, size)
    else:
        return kernels.f64_sum(a, size)


cdef index_t depthwise_chunks(index_t n_images) noexcept nogil:
    """Chunks of consecutive images (each with one dW/db partial): min(N, MAX_CHUNKS)."""
    return n_images if n_images < MAX_CHUNKS else MAX_CHUNKS


cdef inline index_t channel_blocks(index_t n_chunks, index_t channels) noexcept nogil:
    """Blocks of consecutive channels per chunk: TASKS_WANTED tasks in all, at most C."""
    cdef index_t blocks = (TASKS_WANTED + n_chunks - 1) // n_chunks
    return blocks if blocks < channels else channels


cdef inline void task_range(index_t part, index_t parts, index_t count, index_t* first,
                            index_t* stop) noexcept nogil:
    """[first, stop): part `part` of `parts` nearly equal parts of range(count)."""
    first[0] = part * count // parts
    stop[0] = (part + 1) * count // parts


# ----------------------------------------------------------------------------------------------
# Windows: a plane placed in zeros so that every kernel offset of every output reads inside
# ----------------------------------------------------------------------------------------------

cdef inline bint all_inside(const Window2D* g) noexcept nogil:
    """Whether every kernel offset of every output reads inside the input (no padding read)."""
    return (g.pad_h <= 0 and g.pad_w <= 0
            and (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h - g.pad_h < g.height
            and (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w - g.pad_w < g.width)


cdef Window2D window_geometry(const Window2D* g) noexcept nogil:
    """The geometry of g over its window: the input rows and columns that the outputs' kernel
    offsets span, with the plane at (pad_h, pad_w) in it and no padding left."""
    cdef Window2D t = g[0]
    t.height = (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1
    t.width = (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1
    t.pad_h = 0
    t.pad_w = 0
    return t


cdef index_t window_size(const Window2D* g) noexcept nogil:
    """Elements of g's window; 0 when the plane can be read in place, or when the window
    would be too large (the general path runs then)."""
    cdef index_t limit = WINDOW_RATIO * g.height * g.width + WINDOW_SLACK
    cdef Window2D t = window_geometry(g)
    if all_inside(g):
        return 0
    if t.height > limit or t.width > limit or t.height * t.width > limit:
        return 0
    return t.height * t.width


cdef void fill_window(const Window2D* g, const floating* x, floating* window) noexcept nogil:
    """Copy the plane x (H, W) to (pad_h, pad_w) of its zeroed window (the part that falls
    inside it: a negative padding crops). The zeros around it are never written, so a window
    is zeroed once and refilled plane after plane."""
    cdef Window2D t = window_geometry(g)
    cdef index_t r, q, r_lo, r_hi, c_lo, c_hi
    cdef floating* dst
    cdef const floating* src
    valid_range(t.height, g.height, 1, g.pad_h, &r_lo, &r_hi)   # plane rows r at r + pad_h
    valid_range(t.width, g.width, 1, g.pad_w, &c_lo, &c_hi)
    for r in range(r_lo, r_hi):
        # An inline loop, not memcpy: rows are short, the call would cost more than the copy.
        dst = window + (r + g.pad_h) * t.width + g.pad_w
        src = x + r * g.width
        for q in range(c_lo, c_hi):
            dst[q] = src[q]


# ----------------------------------------------------------------------------------------------
# One plane
# ----------------------------------------------------------------------------------------------

cdef void correlate_clipped(const Window2D* g, const floating* x, const floating* w,
                            index_t wstep, floating start, bint accumulate,
                            floating* y) noexcept nogil:
    """correlate_plane without a window: kernel offset by offset, each over the outputs whose
    input is inside x. Adds the offsets in the same order as the micro-kernel."""
    cdef index_t OW = g.out_w, SW = g.stride_w
    cdef index_t i, j, q, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi
    cdef floating wv
    cdef const floating* src
    cdef floating* dst
    if not accumulate:
        for q in range(g.out_h * OW):
            y[q] = start
    for i in range(g.kernel_h):
        valid_range(g.height, g.out_h, g.stride_h, i * g.dilation_h - g.pad_h, &oh_lo, &oh_hi)
        for j in range(g.kernel_w):
            valid_range(g.width, OW, SW, j * g.dilation_w - g.pad_w, &ow_lo, &ow_hi)
            wv = w[(i * g.kernel_w + j) * wstep]
            for oh in range(oh_lo, oh_hi):
                # src[ow*SW] is the input that output (oh, ow) reads with offset (i, j)
                src = x + (oh * g.stride_h + i * g.dilation_h - g.pad_h) * g.width + j * g.dilation_w - g.pad_w
                dst = y + oh * OW
                for ow in range(ow_lo, ow_hi):
                    dst[ow] = dst[ow] + wv * src[ow * SW]


cdef inline const floating* windowed(const Window2D* g, const floating* x, floating* window,
                                    Window2D* t) noexcept nogil:
    """x as a correlation should read it: copied into window, if not NULL (then t is the
    window's geometry), else x itself (t = g)."""
    if window == NULL:
        t[0] = g[0]
        return x
    fill_window(g, x, window)
    t[0] = window_geometry(g)
    return window


cdef void correlate_plane(const Window2D* g, const floating* x, const floating* w, index_t wstep,
                          floating start, bint accumulate, floating* y) noexcept nogil:
    """y (OH, OW) = start (or y itself, if accumulate) + the correlation of the input plane x
    (H, W) with the kernel w (KH, KW), zero outside x. Kernel offset (i, j) is
    w[(i*KW + j)*wstep]: wstep = 1 reads w as it is, -1 from its last element backwards (the
    kernel flipped)."""
    if not all_inside(g):
        correlate_clipped(g, x, w, wstep, start, accumulate, y)
        return
    # every offset of every output reads inside x: the micro-kernel over the whole plane
    if floating is float:
        kernels.f32_correlate(x - g.pad_h * g.width - g.pad_w, g.stride_h * g.width,
                              g.dilation_h * g.width, g.dilation_w, g.stride_w, w, wstep,
                              g.kernel_h, g.kernel_w, y, g.out_w, g.out_h, g.out_w, start, accumulate)
    else:
        kernels.f64_correlate(x - g.pad_h * g.width - g.pad_w, g.stride_h * g.width,
                              g.dilation_h * g.width, g.dilation_w, g.stride_w, w, wstep,
                              g.kernel_h, g.kernel_w, y, g.out_w, g.out_h, g.out_w, start, accumulate)


cdef void scatter_data_gradient(const Window2D* g, const floating* dout, const floating* w,
                                floating* dx) noexcept nogil:
    """dx (H, W) += the transposed correlation of one output gradient plane with one kernel,
    offset by offset (any stride; a stride-1 one is a correlation with the kernel flipped)."""
    cdef index_t OW = g.out_w, SW = g.stride_w
    cdef index_t i, j, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi
    cdef floating wv
    cdef const floating* src
    cdef floating* dst
    for i in range(g.kernel_h):
        valid_range(g.height, g.out_h, g.stride_h, i * g.dilation_h - g.pad_h, &oh_lo, &oh_hi)
        for j in range(g.kernel_w):
            valid_range(g.width, OW, SW, j * g.dilation_w - g.pad_w, &ow_lo, &ow_hi)
            wv = w[i * g.kernel_w + j]
            for oh in range(oh_lo, oh_hi):
                dst = dx + (oh * g.stride_h + i * g.dilation_h - g.pad_h) * g.width + j * g.dilation_w - g.pad_w
                src = dout + oh * OW
                for ow in range(ow_lo, ow_hi):
                    dst[ow * SW] = dst[ow * SW] + wv * src[ow]


cdef Window2D flipped_geometry(const Window2D* g) noexcept nogil:
    """The geometry of a stride-1 data gradient as a correlation: dx (H, W) is the correlation
    of dout (OH, OW) with the flipped kernel, padded by dilation*(K-1) - padding (which may be
    negative: then it crops)."""
    cdef Window2D t = g[0]
    t.height, t.width, t.out_h, t.out_w = g.out_h, g.out_w, g.height, g.width
    t.pad_h = (g.kernel_h - 1) * g.dilation_h - g.pad_h
    t.pad_w = (g.kernel_w - 1) * g.dilation_w - g.pad_w
    return t


cdef bint finite_kernel(const floating* w, index_t kk) noexcept nogil:
    cdef index_t t
    for t in range(kk):
        if not isfinite(w[t]):
            return False
    return True


cdef void mark_padding_products(const Window2D* g, const floating* w, floating* y) noexcept nogil:
    """NaN into the outputs where a non-finite kernel offset reads the zero padding (inf*0 or
    NaN*0), which correlate_clipped leaves out and the reference's im2col multiplies."""
    cdef index_t i, j, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi
    for i in range(g.kernel_h):
        valid_range(g.height, g.out_h, g.stride_h, i * g.dilation_h - g.pad_h, &oh_lo, &oh_hi)
        for j in range(g.kernel_w):
            if isfinite(w[i * g.kernel_w + j]):
                continue
            valid_range(g.width, g.out_w, g.stride_w, j * g.dilation_w - g.pad_w, &ow_lo, &ow_hi)
            for oh in range(g.out_h):
                for ow in range(g.out_w):
                    if not (oh_lo <= oh < oh_hi and ow_lo <= ow < ow_hi):
                        y[oh * g.out_w + ow] = w[i * g.kernel_w + j] * 0


cdef bint padding_meets_nonfinite(const Window2D* g, const floating* dout, index_t i,
                                  index_t j) noexcept nogil:
    """Whether dout is non-finite at an output whose kernel offset (i, j) reads the padding."""
    cdef index_t oh, ow, oh_lo, oh_hi, ow_lo, ow_hi
    valid_range(g.height, g.out_h, g.stride_h, i * g.dilation_h - g.pad_h, &oh_lo, &oh_hi)
    valid_range(g.width, g.out_w, g.stride_w, j * g.dilation_w - g.pad_w, &ow_lo, &ow_hi)
    for oh in range(g.out_h):
        for ow in range(g.out_w):
            if not (oh_lo <= oh < oh_hi and ow_lo <= ow < ow_hi) and not isfinite(dout[oh * g.out_w + ow]):
                return True
    return False


cdef void add_weight_gradient(const Window2D* g, const floating* dout, const floating* x,
                              floating* dw, floating* db, bint overwrite) noexcept nogil:
    """dw (KH, KW) (+)= correlation of x with one output gradient plane; db (+)= its sum
    (unless NULL), in the fixed orders of kernels/depthwise.h. When every kernel offset reads
    inside x (its window), a kernel row's offsets go in one pass; otherwise each offset sums
    over the outputs whose input is inside x."""
    cdef index_t OW = g.out_w, SW = g.stride_w
    cdef index_t i, j, oh_lo, oh_hi, ow_lo, ow_hi
    cdef floating total, plane_total = 0
    cdef const floating* src
    cdef const floating* d
    cdef bint inside = all_inside(g)
    if db != NULL or not inside:
        plane_total = plane_sum(dout, g.out_h * OW)
    if db != NULL:
        db[0] = plane_total if overwrite else db[0] + plane_total
    if inside:
        for i in range(g.kernel_h):
            # the input that output (0, 0) reads with offset (i, 0)
            src = x + (i * g.dilation_h - g.pad_h) * g.width - g.pad_w
            if floating is float:
                kernels.f32_dot_taps(dout, OW, src, g.stride_h * g.width, g.dilation_w, SW, g.kernel_w,
                                     g.out_h, OW, dw + i * g.kernel_w, not overwrite)
            else:
                kernels.f64_dot_taps(dout, OW, src, g.stride_h * g.width, g.dilation_w, SW, g.kernel_w,
                                     g.out_h, OW, dw + i * g.kernel_w, not overwrite)
        return
    # Clipped: a finite plane sum means every element is finite, and then no product with the
    # skipped padding could have been NaN.
    for i in range(g.kernel_h):
        valid_range(g.height, g.out_h, g.stride_h, i * g.dilation_h - g.pad_h, &oh_lo, &oh_hi)
        for j in range(g.kernel_w):
            valid_range(g.width, OW, SW, j * g.dilation_w - g.pad_w, &ow_lo, &ow_hi)
            total = 0
            if oh_lo < oh_hi and ow_lo < ow_hi:
                # the input that output (oh_lo, ow_lo) reads with offset (i, j), and its gradient
                src = (x + (oh_lo * g.stride_h + i * g.dilation_h - g.pad_h) * g.width
                       + ow_lo * SW + j * g.dilation_w - g.pad_w)
                d = dout + oh_lo * OW + ow_lo
                if floating is float:
                    total = kernels.f32_dot_rows(d, OW, src, g.stride_h * g.width, SW, oh_hi - oh_lo,
                                                 ow_hi - ow_lo)
                else:
                    total = kernels.f64_dot_rows(d, OW, src, g.stride_h * g.width, SW, oh_hi - oh_lo,
                                                 ow_hi - ow_lo)
            if not isfinite(plane_total) and padding_meets_nonfinite(g, dout, i, j):
                total = total + plane_total * 0   # NaN, as the padding's product
            if overwrite:
                dw[i * g.kernel_w + j] = total
            else:
                dw[i * g.kernel_w + j] = dw[i * g.kernel_w + j] + total


# ----------------------------------------------------------------------------------------------
# Tasks: (channel c, chunk of images)
# ----------------------------------------------------------------------------------------------

cdef index_t depthwise_workspace(const Window2D* g) noexcept nogil:
    """Elements of workspace per thread: a window for x (forward, weight gradient) and one for
    a stride-1 dout (data gradient)."""
    cdef Window2D flipped = flipped_geometry(g)
    return window_size(g) + window_size(&flipped)


cdef inline floating* zeroed_window(const Window2D* g, floating* buf) noexcept nogil:
    """g's window at buf, zeroed, or NULL when there is none (see window_size)."""
    cdef index_t size = window_size(g)
    if size == 0:
        return NULL
    memset(buf, 0, size * sizeof(floating))
    return buf


cdef inline void next_plane(const floating* a, index_t n, index_t c, index_t n_stop, index_t c_first,
                            index_t c_stop, index_t channels, index_t size) noexcept nogil:
    """Prefetch the plane of `a` (size elements per channel) that a task visits two planes
    after (n, c): one plane's work is too short to hide the memory latency of the next."""
    c = c + PREFETCH_PLANES
    while c >= c_stop:
        c = c - (c_stop - c_first)
        n = n + 1
    if n < n_stop:
        fc_dw_prefetch(a + (n * channels + c) * size, size * sizeof(floating))


cdef void forward_task(const Window2D* g, index_t task, index_t n_chunks, index_t n_images,
                       index_t channels, index_t multiplier, const floating* x, const floating* w,
                       const floating* b, floating* y, floating* buf) noexcept nogil:
    cdef index_t blocks = channel_blocks(n_chunks, channels)
    cdef index_t n, c, k, f, n_first, n_stop, c_first, c_stop
    cdef index_t hw = g.height * g.width, ohw = g.out_h * g.out_w, kk = g.kernel_h * g.kernel_w
    cdef floating* window = zeroed_window(g, buf)
    cdef const floating* src
    cdef Window2D t
    # Without a window, padding is skipped, not multiplied (see the module docstring).
    cdef bint clipped = window == NULL and not all_inside(g)
    task_range(task // blocks, n_chunks, n_images, &n_first, &n_stop)
    task_range(task % blocks, blocks, channels, &c_first, &c_stop)
    for n in range(n_first, n_stop):
        for c in range(c_first, c_stop):
            next_plane(x, n, c, n_stop, c_first, c_stop, channels, hw)
            src = windowed(g, x + (n * channels + c) * hw, window, &t)
            for k in range(multiplier):
                f = c * multiplier + k
                correlate_plane(&t, src, w + f * kk, 1, 0 if b == NULL else b[f], False,
                                y + (n * channels * multiplier + f) * ohw)
                if clipped and not finite_kernel(w + f * kk, kk):
                    mark_padding_products(g, w + f * kk, y + (n * channels * multiplier + f) * ohw)


cdef void depthwise_forward(const Window2D* g, index_t n_images, index_t channels,
                            index_t multiplier, const floating* x, const floating* w,
                            const floating* b, floating* y, floating* workspace,
                            int threads) noexcept nogil:
    """y = conv2d(x, w, b, groups=channels) for w (channels*multiplier, 1, KH, KW).

    g: the geometry of one plane (g.channels is 1). b may be NULL. workspace: at least
    `threads` * depthwise_workspace(g) elements.
    """
    cdef index_t n_chunks = depthwise_chunks(n_images)
    cdef index_t tasks = n_chunks * channel_blocks(n_chunks, channels), t
    cdef index_t per_thread = depthwise_workspace(g)
    if threads > tasks:
        threads = <int>tasks
    if threads <= 1:
        for t in range(tasks):
            forward_task(g, t, n_chunks, n_images, channels, multiplier, x, w, b, y, workspace)
    else:
        with parallel(num_threads=threads):
            for t in prange(tasks, schedule='dynamic'):
                forward_task(g, t, n_chunks, n_images, channels, multiplier, x, w, b, y,
                             workspace + omp_get_thread_num() * per_thread)


cdef void backward_task(const Window2D* g, index_t task, index_t n_chunks, index_t n_images,
                        index_t channels, index_t multiplier, const floating* dout,
                        const floating* x, const floating* w, floating* dx,
                        const floating* dx_init, floating* dw, floating* db, floating* parts,
                        index_t part_size, floating* buf) noexcept nogil:
    cdef index_t blocks = channel_blocks(n_chunks, channels), chunk = task // blocks
    cdef index_t n, c, k, f, q, n_first, n_stop, c_first, c_stop
    cdef index_t hw = g.height * g.width, ohw = g.out_h * g.out_w, kk = g.kernel_h * g.kernel_w
    cdef index_t filters = channels * multiplier
    cdef bint gather = g.stride_h == 1 and g.stride_w == 1
    cdef Window2D flipped = flipped_geometry(g), t
    cdef floating* x_window = NULL
    cdef floating* dout_window = NULL
    cdef floating* dw_part = NULL
    cdef floating* db_part = NULL
    cdef floating* plane
    cdef const floating* src
    cdef const floating* d
    cdef floating init
    cdef bint started
    if dw != NULL:
        x_window = zeroed_window(g, buf)
        # Chunk 0 writes straight into dw/db, chunk k > 0 into partial k - 1.
        dw_part = dw if chunk == 0 else parts + (chunk - 1) * part_size
        if db != NULL:
            db_part = db if chunk == 0 else dw_part + filters * kk
    if dx != NULL and gather:
        dout_window = zeroed_window(&flipped, buf + window_size(g))
    task_range(chunk, n_chunks, n_images, &n_first, &n_stop)
    task_range(task % blocks, blocks, channels, &c_first, &c_stop)
    for n in range(n_first, n_stop):
        for c in range(c_first, c_stop):
            next_plane(dout, n, c, n_stop, c_first, c_stop, channels, ohw * multiplier)
            if dw != NULL:
                next_plane(x, n, c, n_stop, c_first, c_stop, channels, hw)
            if dx != NULL:
                plane = dx + (n * channels + c) * hw
                init = 0 if dx_init == NULL else dx_init[c]
                started = False      # whether plane holds init (+ earlier filters) yet
                for k in range(multiplier):
                    f = c * multiplier + k
                    d = dout + (n * filters + f) * ohw
                    # The correlation multiplies the kernel by the zeros around dout: only a
                    # finite kernel leaves them out of the sums.
                    if gather and finite_kernel(w + f * kk, kk):
                        src = windowed(&flipped, d, dout_window, &t)
                        correlate_plane(&t, src, w + f * kk + kk - 1, -1, init, started, plane)
                    else:
                        if not started:
                            for q in range(hw):
                                plane[q] = init
                        scatter_data_gradient(g, d, w + f * kk, plane)
                    started = True
            if dw_part == NULL:
                continue
            src = windowed(g, x + (n * channels + c) * hw, x_window, &t)
            for k in range(multiplier):
                f = c * multiplier + k
                add_weight_gradient(&t, dout + (n * filters + f) * ohw, src, dw_part + f * kk,
                                    NULL if db_part == NULL else db_part + f, n == n_first)


cdef void depthwise_backward(const Window2D* g, index_t n_images, index_t channels,
                             index_t multiplier, const floating* dout, const floating* x,
                             const floating* w, floating* dx, const floating* dx_init,
                             floating* dw, floating* db, floating* parts, index_t part_size,
                             floating* workspace, int threads) noexcept nogil:
    """Gradients of depthwise_forward for upstream gradient dout (N, channels*multiplier, OH, OW).

    dx: NULL (not wanted) or the (N, channels, H, W) data gradient, starting from dx_init[c]
    (NULL: zeros). dw: NULL (not wanted) or the weight gradient, db NULL or the bias gradient;
    chunk k > 0 of depthwise_chunks() leaves its dw, db partial at parts + (k - 1)*part_size
    (dw first, db after it) for the caller to add, in chunk order. workspace: at least
    `threads` * depthwise_workspace(g) elements.
    """
    cdef index_t n_chunks = depthwise_chunks(n_images)
    cdef index_t tasks = n_chunks * channel_blocks(n_chunks, channels), t
    cdef index_t per_thread = depthwise_workspace(g)
    if threads > tasks:
        threads = <int>tasks
    if threads <= 1:
        for t in range(tasks):
            backward_task(g, t, n_chunks, n_images, channels, multiplier, dout, x, w, dx, dx_init,
                          dw, db, parts, part_size, workspace)
    else:
        with parallel(num_threads=threads):
            for t in prange(tasks, schedule='dynamic'):
                backward_task(g, t, n_chunks, n_images, channels, multiplier, dout, x, w, dx,
                              dx_init, dw, db, parts, part_size,
                              workspace + omp_get_thread_num() * per_thread)
