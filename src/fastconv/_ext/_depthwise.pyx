"""Direct depthwise convolution: every group has one input channel (groups == C).

Filter ``f = c*m + k`` (m = F // C filters per channel, the "channel multiplier") reads only
input channel ``c``, so each output plane is a small 2-D correlation of one input plane, with
``KH*KW`` multiply-adds per output: far too little work per GEMM call to pay for im2col and
BLAS, which is why torch manages about 4 GFLOP/s here. These kernels walk the planes directly:
for each kernel offset, the output rows it reaches and, within them, the contiguous range of
output columns whose input column is inside the image (no padded copies, so any padding and
dilation work in bounded memory). The innermost loops run over output columns with unit
stride, which the compiler vectorises.

Work is split into tasks of (channel, chunk of consecutive images), decided by N and C only;
each task owns its dx planes and one dW/db partial (its chunk's), which the caller sums in
chunk order (fastconv._ext._conv.sum_partials): results never depend on the thread count.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange

from fastconv._ext._typedefs cimport index_t, Window2D
from fastconv._ext._im2col cimport valid_range

# At least this many tasks when the batch allows it, so that small channel counts still use
# several threads (tasks = channels * chunks of images).
cdef index_t MIN_TASKS = 8
# Partial sums of the weight gradient run in this many lanes (a vector's worth and more, for
# instruction-level parallelism), added up in lane order at the end of each plane.
cdef enum:
    LANES = 8


cdef index_t depthwise_chunks(index_t n_images, index_t channels) noexcept nogil:
    """Chunks of consecutive images per channel: enough for MIN_TASKS tasks, at most N."""
    cdef index_t chunks = (MIN_TASKS + channels - 1) // channels
    return chunks if chunks < n_images else n_images


cdef inline void chunk_images(index_t chunk, index_t n_chunks, index_t n_images,
                              index_t* first, index_t* stop) noexcept nogil:
    first[0] = chunk * n_images // n_chunks
    stop[0] = (chunk + 1) * n_images // n_chunks


# ----------------------------------------------------------------------------------------------
# One plane
# ----------------------------------------------------------------------------------------------

cdef void forward_plane(const Window2D* g, const floating* x, const floating* w, floating bias,
                        floating* y) noexcept nogil:
    """y (OH, OW) = bias + the correlation of one input plane x (H, W) with one kernel w."""
    cdef index_t OW = g.out_w, SW = g.stride_w
    cdef index_t i, j, q, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi
    cdef floating wv
    cdef const floating* src
    cdef floating* dst
    for q in range(g.out_h * OW):
        y[q] = bias
    for i in range(g.kernel_h):
        valid_range(g.height, g.out_h, g.stride_h, i * g.dilation_h - g.pad_h, &oh_lo, &oh_hi)
        for j in range(g.kernel_w):
            valid_range(g.width, OW, SW, j * g.dilation_w - g.pad_w, &ow_lo, &ow_hi)
            wv = w[i * g.kernel_w + j]
            for oh in range(oh_lo, oh_hi):
                # src[ow*SW] is the input that output (oh, ow) reads with offset (i, j)
                src = x + (oh * g.stride_h + i * g.dilation_h - g.pad_h) * g.width + j * g.dilation_w - g.pad_w
                dst = y + oh * OW
                if SW == 1:
                    for ow in range(ow_lo, ow_hi):
                        dst[ow] = dst[ow] + wv * src[ow]
                else:
                    for ow in range(ow_lo, ow_hi):
                        dst[ow] = dst[ow] + wv * src[ow * SW]


cdef void add_data_gradient(const Window2D* g, const floating* dout, const floating* w,
                            floating* dx) noexcept nogil:
    """dx (H, W) += the transposed correlation of one output gradient plane with one kernel."""
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
                if SW == 1:
                    for ow in range(ow_lo, ow_hi):
                        dst[ow] = dst[ow] + wv * src[ow]
                else:
                    for ow in range(ow_lo, ow_hi):
                        dst[ow * SW] = dst[ow * SW] + wv * src[ow]


cdef inline floating lane_total(const floating* acc) noexcept nogil:
    cdef floating total = 0
    cdef int l
    for l in range(LANES):
        total = total + acc[l]
    return total


cdef void add_weight_gradient(const Window2D* g, const floating* dout, const floating* x,
                              floating* dw, floating* db, bint overwrite) noexcept nogil:
    """dw (KH, KW) (+)= correlation of x with one output gradient plane; db (+)= its sum.

    Each sum runs in LANES partial sums over the output columns, added up in lane order: a
    fixed order set by the shape alone.
    """
    cdef index_t OW = g.out_w, SW = g.stride_w
    cdef index_t i, j, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi
    cdef floating acc[LANES]
    cdef floating total
    cdef const floating* src
    cdef const floating* d
    cdef int l
    for i in range(g.kernel_h):
        valid_range(g.height, g.out_h, g.stride_h, i * g.dilation_h - g.pad_h, &oh_lo, &oh_hi)
        for j in range(g.kernel_w):
            valid_range(g.width, OW, SW, j * g.dilation_w - g.pad_w, &ow_lo, &ow_hi)
            for l in range(LANES):
                acc[l] = 0
            for oh in range(oh_lo, oh_hi):
                src = x + (oh * g.stride_h + i * g.dilation_h - g.pad_h) * g.width + j * g.dilation_w - g.pad_w
                d = dout + oh * OW
                ow = ow_lo
                if SW == 1:
                    while ow + LANES <= ow_hi:
                        for l in range(LANES):
                            acc[l] = acc[l] + d[ow + l] * src[ow + l]
                        ow = ow + LANES
                    for l in range(ow_hi - ow):
                        acc[l] = acc[l] + d[ow + l] * src[ow + l]
                else:
                    while ow + LANES <= ow_hi:
                        for l in range(LANES):
                            acc[l] = acc[l] + d[ow + l] * src[(ow + l) * SW]
                        ow = ow + LANES
                    for l in range(ow_hi - ow):
                        acc[l] = acc[l] + d[ow + l] * src[(ow + l) * SW]
            total = lane_total(acc)
            if overwrite:
                dw[i * g.kernel_w + j] = total
            else:
                dw[i * g.kernel_w + j] = dw[i * g.kernel_w + j] + total
    if db == NULL:
        return
    for l in range(LANES):
        acc[l] = 0
    ow = 0
    while ow + LANES <= g.out_h * OW:
        for l in range(LANES):
            acc[l] = acc[l] + dout[ow + l]
        ow = ow + LANES
    for l in range(g.out_h * OW - ow):
        acc[l] = acc[l] + dout[ow + l]
    total = lane_total(acc)
    db[0] = total if overwrite else db[0] + total


# ----------------------------------------------------------------------------------------------
# Tasks: (channel c, chunk of images)
# ----------------------------------------------------------------------------------------------

cdef void forward_task(const Window2D* g, index_t task, index_t n_chunks, index_t n_images,
                       index_t channels, index_t multiplier, const floating* x, const floating* w,
                       const floating* b, floating* y) noexcept nogil:
    cdef index_t c = task // n_chunks, n, k, f, first, stop
    cdef index_t hw = g.height * g.width, ohw = g.out_h * g.out_w, kk = g.kernel_h * g.kernel_w
    chunk_images(task % n_chunks, n_chunks, n_images, &first, &stop)
    for n in range(first, stop):
        for k in range(multiplier):
            f = c * multiplier + k
            forward_plane(g, x + (n * channels + c) * hw, w + f * kk, 0 if b == NULL else b[f],
                          y + (n * channels * multiplier + f) * ohw)


cdef void depthwise_forward(const Window2D* g, index_t n_images, index_t channels,
                            index_t multiplier, const floating* x, const floating* w,
                            const floating* b, floating* y, int threads) noexcept nogil:
    """y = conv2d(x, w, b, groups=channels) for w (channels*multiplier, 1, KH, KW).

    g: the geometry of one plane (g.channels is 1). b may be NULL.
    """
    cdef index_t n_chunks = depthwise_chunks(n_images, channels)
    cdef index_t tasks = channels * n_chunks, t
    if threads > tasks:
        threads = <int>tasks
    if threads <= 1:
        for t in range(tasks):
            forward_task(g, t, n_chunks, n_images, channels, multiplier, x, w, b, y)
    else:
        with parallel(num_threads=threads):
            for t in prange(tasks, schedule='dynamic'):
                forward_task(g, t, n_chunks, n_images, channels, multiplier, x, w, b, y)


cdef void backward_task(const Window2D* g, index_t task, index_t n_chunks, index_t n_images,
                        index_t channels, index_t multiplier, const floating* dout,
                        const floating* x, const floating* w, floating* dx,
                        const floating* dx_init, floating* dw, floating* db, floating* parts,
                        index_t part_size) noexcept nogil:
    cdef index_t c = task // n_chunks, chunk = task % n_chunks, n, k, f, q, first, stop
    cdef index_t hw = g.height * g.width, ohw = g.out_h * g.out_w, kk = g.kernel_h * g.kernel_w
    cdef index_t filters = channels * multiplier
    cdef floating* dw_part = NULL
    cdef floating* db_part = NULL
    cdef floating* plane = NULL
    cdef floating init
    # Chunk 0 writes straight into dw/db, chunk k > 0 into partial k - 1.
    if dw != NULL:
        dw_part = dw if chunk == 0 else parts + (chunk - 1) * part_size
        db_part = NULL if db == NULL else (db if chunk == 0 else dw_part + filters * kk)
    chunk_images(chunk, n_chunks, n_images, &first, &stop)
    for n in range(first, stop):
        if dx != NULL:
            plane = dx + (n * channels + c) * hw
            init = 0 if dx_init == NULL else dx_init[c]
            for q in range(hw):
                plane[q] = init
        for k in range(multiplier):
            f = c * multiplier + k
            if dx != NULL:
                add_data_gradient(g, dout + (n * filters + f) * ohw, w + f * kk, plane)
            if dw_part != NULL:
                add_weight_gradient(g, dout + (n * filters + f) * ohw, x + (n * channels + c) * hw,
                                    dw_part + f * kk, NULL if db_part == NULL else db_part + f,
                                    n == first)


cdef void depthwise_backward(const Window2D* g, index_t n_images, index_t channels,
                             index_t multiplier, const floating* dout, const floating* x,
                             const floating* w, floating* dx, const floating* dx_init,
                             floating* dw, floating* db, floating* parts, index_t part_size,
                             int threads) noexcept nogil:
    """Gradients of depthwise_forward for upstream gradient dout (N, channels*multiplier, OH, OW).

    dx: NULL (not wanted) or the (N, channels, H, W) data gradient, starting from dx_init[c]
    (NULL: zeros). dw: NULL (not wanted) or the weight gradient, db NULL or the bias gradient;
    chunk k > 0 of depthwise_chunks() leaves its dw, db partial at parts + (k - 1)*part_size
    (dw first, db after it) for the caller to add, in chunk order.
    """
    cdef index_t n_chunks = depthwise_chunks(n_images, channels)
    cdef index_t tasks = channels * n_chunks, t
    if threads > tasks:
        threads = <int>tasks
    if threads <= 1:
        for t in range(tasks):
            backward_task(g, t, n_chunks, n_images, channels, multiplier, dout, x, w, dx, dx_init,
                          dw, db, parts, part_size)
    else:
        with parallel(num_threads=threads):
            for t in prange(tasks, schedule='dynamic'):
                backward_task(g, t, n_chunks, n_images, channels, multiplier, dout, x, w, dx,
                              dx_init, dw, db, parts, part_size)
