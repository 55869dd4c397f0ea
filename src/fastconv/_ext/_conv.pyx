"""2-D convolution: forward, backward-data and backward-weight over im2col + GEMM.

With groups, every task below does its work group by group: GEMMs on the group's slices of x,
w and the output (no copies). A plan with one channel per group (depthwise) hands the whole
call to the direct kernels of fastconv._ext._depthwise instead. The transposed convolution
is the data gradient of the convolution that maps its output back to its input
(transposed_plan), so its forward is backward() with dx only, and its backward is forward()
plus backward() with dw only.

How the work is split (all of it decided from the problem's shape, never from the thread
count, so that every thread count computes exactly the same floating-point operations):

* forward: one task per (image, block of output columns). With a batch of at least
  TASKS_TARGET images a block is the whole image; with fewer, each image is cut into a few
  column blocks so that small batches still use several threads.
* backward, batch of at least TASKS_TARGET images: the batch is cut into MAX_CHUNKS chunks
  of consecutive images. A chunk does, image by image: im2col, dW_chunk += dout[n] @ cols^T,
  db_chunk += row sums of dout[n], cols = W^T @ dout[n] (reusing the same buffer) and col2im
  into dx[n]. The chunk partials are then summed serially in chunk order.
* backward, smaller batches: dW/db from one partial per (image, column block), summed in
  order; dx from one task per (image, block of channels), whose dx planes are disjoint.

Tasks are handed out dynamically: which thread runs a task does not change what it computes,
and a thread that the OS preempts (for instance by BLAS workers still spinning after a NumPy
matmul) no longer holds up a fixed half of the work (measured: c7 2-thread time 94 -> 53 ms
next to the NumPy baseline in `python -m fastconv bench`).

Each thread owns one im2col buffer, carved from a workspace that is kept between calls and
grown on demand; a call checks a workspace out of the pool of fastconv._ext._workspace (shared
with the channels-last kernels) and gives it back, so concurrent calls (the kernels release the
GIL) never share one. BLAS runs single-threaded inside our
calls: our own threads already occupy the cores.
"""

import threading

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memset
from libc.limits cimport INT_MAX

from fastconv._ext._typedefs cimport index_t, Window2D
from fastconv._ext._openmp cimport omp_get_thread_num
from fastconv._ext._blas cimport gemm
from fastconv._ext._blas_threads cimport blas_single_thread_enter, blas_single_thread_exit
from fastconv._ext._im2col cimport im2col_image, col2im_image
from fastconv._ext._workspace cimport (WORKSPACE_ALIGN, aligned, ceil_div, checkout_workspace,
                                       return_workspace, round_up)
from fastconv._ext._workspace import release_workspaces, workspace_bytes
from fastconv._ext._depthwise cimport (depthwise_chunks, depthwise_workspace, depthwise_forward,
                                        depthwise_backward, plane_sum)
from fastconv._ext._engine cimport EngineConv, EnginePlan, plan_forward, engine_forward
from fastconv._ext._engine cimport plan_backward, engine_backward

# Enough tasks for up to this many threads on a small batch.
cdef index_t TASKS_TARGET = 8
# Chunks of images for the backward-weight partial sums of a large batch (one dW-sized
# partial each, so this bounds the extra memory).
cdef index_t MAX_CHUNKS = 8
# At most this many dW partials for a small batch (N < TASKS_TARGET).
cdef index_t MAX_WEIGHT_PARTIALS = 4
# A column block is never narrower than this (narrow GEMMs run far below peak).
cdef index_t MIN_BLOCK_COLUMNS = 256
# Otherwise a column block of the im2col matrix is about this large, so that im2col writes it
# into cache and GEMM (and col2im) read it from there instead of from memory.
cdef index_t BLOCK_BYTES = 512 * 1024
# Below this many multiply-adds a call runs on one thread: starting threads costs more.
cdef double SERIAL_MACS = 2.0e5



# ----------------------------------------------------------------------------------------------
# Plan: shapes, blocks and the thread count of one call
# ----------------------------------------------------------------------------------------------

ctypedef struct ConvPlan:
    Window2D g            # geometry of one group of one image (g.channels = C // groups)
    index_t n_images      # N
    index_t groups        # G: filters f*F/G .. read channels f*C/G .. only (f = group index)
    index_t filters       # F
    index_t group_filters # F // G
    index_t ckk           # (C // G)*KH*KW: rows of one group's im2col matrix
    index_t ohw           # OH*OW: its columns
    index_t hw            # H*W
    bint pointwise        # 1x1, stride 1, no padding: the image already is the im2col matrix
    bint depthwise        # one channel per group: the direct kernels of _depthwise, no GEMM
    index_t col_blocks    # column blocks per image
    index_t block_cols    # columns per block (the last may be narrower)
    index_t threads       # threads to start (<= tasks)


cdef ConvPlan make_plan(tuple x_shape, tuple w_shape, stride, pad_before, dilation, tuple out_hw,
                        index_t groups, int num_threads, index_t itemsize) except *:
    """The plan of the convolution of x (N, C, H, W) with w (F, C // groups, KH, KW).

    pad_before: the (top, left) padding; out_hw: the output size (OH, OW), which the padding
    after the input (bottom, right) and a transposed convolution's output_padding decide.
    """
    cdef ConvPlan p
    cdef Window2D* g = &p.g
    p.n_images, _, g.height, g.width = x_shape
    p.filters, g.channels, g.kernel_h, g.kernel_w = w_shape
    g.stride_h, g.stride_w = stride
    g.pad_h, g.pad_w = pad_before
    g.dilation_h, g.dilation_w = dilation
    g.out_h, g.out_w = out_hw
    p.groups = groups
    p.group_filters = p.filters // groups
    p.ckk = g.channels * g.kernel_h * g.kernel_w
    p.ohw = g.out_h * g.out_w
    p.hw = g.height * g.width
    if p.ckk > INT_MAX or p.ohw > INT_MAX or p.filters > INT_MAX:
        raise ValueError(
            f"convolution too large for BLAS (32-bit sizes): C*KH*KW={p.ckk}, OH*OW={p.ohw}, "
            f"F={p.filters}"
        )
    # A 1x1 kernel reads one pixel whatever its dilation (a transposed convolution's
    # output_padding can make the plane larger than the output: then it is not pointwise).
    p.pointwise = (g.kernel_h == 1 and g.kernel_w == 1 and g.stride_h == 1 and g.stride_w == 1
                   and g.pad_h == 0 and g.pad_w == 0 and p.ohw == p.hw)
    p.depthwise = groups > 1 and g.channels == 1
    # Column blocks: cache-sized (the 1x1 shortcut has no buffer to keep in cache), and on a
    # small batch also enough of them for several threads. Only shapes and the dtype decide.
    p.block_cols = p.ohw
    if not p.pointwise:
        p.block_cols = min(p.ohw, max(MIN_BLOCK_COLUMNS, round_up(BLOCK_BYTES // (p.ckk * itemsize), 16)))
    cdef index_t split
    if p.n_images < TASKS_TARGET:
        split = min(ceil_div(TASKS_TARGET, p.n_images), max(1, p.ohw // MIN_BLOCK_COLUMNS))
        if split > 1:
            p.block_cols = min(p.block_cols, round_up(ceil_div(p.ohw, split), 16))
    p.col_blocks = ceil_div(p.ohw, p.block_cols)
    cdef double macs = <double>p.n_images * p.filters * p.ckk * p.ohw
    p.threads = num_threads if num_threads >= 1 else 1
    if macs < SERIAL_MACS:
        p.threads = 1
    return p


cdef ConvPlan conv_plan(tuple x_shape, tuple w_shape, stride, padding, dilation, index_t groups,
                        int num_threads, index_t itemsize) except *:
    """The plan of conv2d: padding is ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = padding
    out_hw = tuple((size + before + after - d * (k - 1) - 1) // s + 1 for size, k, s, before, after, d
                   in zip(x_shape[2:], w_shape[2:], stride, (top, left), (bottom, right), dilation))
    return make_plan(x_shape, w_shape, stride, (top, left), dilation, out_hw, groups, num_threads,
                     itemsize)


cdef ConvPlan transposed_plan(tuple x_shape, tuple w_shape, stride, padding, output_padding,
                              index_t groups, dilation, int num_threads, index_t itemsize) except *:
    """The plan of the convolution whose data gradient conv_transpose2d(x, w) is.

    That convolution maps the transposed output (N, F, OH, OW) to x's shape (N, C, H, W) with
    the same w, read as (C filters, F // groups channels per group, KH, KW).
    """
    out_hw = tuple((size - 1) * s - 2 * p + d * (k - 1) + op + 1 for size, k, s, p, op, d
                   in zip(x_shape[2:], w_shape[2:], stride, padding, output_padding, dilation))
    conv_input = (x_shape[0], w_shape[1] * groups) + out_hw
    return make_plan(conv_input, w_shape, stride, padding, dilation, x_shape[2:], groups,
                     num_threads, itemsize)


cdef inline EngineConv engine_problem(const ConvPlan* p) noexcept nogil:
    """The whole (ungrouped) convolution as one problem of the engine (fastconv._ext._engine)."""
    cdef EngineConv c
    c.g = p.g
    c.n_images = p.n_images
    c.filters = p.filters
    c.x_image_stride = p.g.channels * p.hw
    c.y_image_stride = p.filters * p.ohw
    return c


cdef inline index_t clamp_threads(index_t threads, index_t tasks) noexcept nogil:
    return threads if threads < tasks else tasks


# Where group `gi` of image `n` starts in each operand (C-contiguous NCHW and (F, C/G, KH, KW)).

cdef inline index_t input_offset(const ConvPlan* p, index_t n, index_t gi) noexcept nogil:
    return (n * p.groups + gi) * p.g.channels * p.hw


cdef inline index_t output_offset(const ConvPlan* p, index_t n, index_t gi) noexcept nogil:
    return (n * p.groups + gi) * p.group_filters * p.ohw


cdef inline index_t weight_offset(const ConvPlan* p, index_t gi) noexcept nogil:
    return gi * p.group_filters * p.ckk


cdef inline const floating* column_block(const ConvPlan* p, const floating* image, floating* buf,
                                         index_t start, index_t stop, int* ld) noexcept nogil:
    """Columns [start, stop) of the im2col matrix of one group's channels starting at `image`,
    and their leading dimension in *ld: the input plane itself for a pointwise convolution,
    otherwise im2col written into buf."""
    if p.pointwise:
        ld[0] = <int>p.ohw
        return image + start
    im2col_image(image, buf, &p.g, start, stop)
    ld[0] = <int>(stop - start)
    return buf


cdef inline void start_planes(floating* planes, index_t count, index_t size,
                              const floating* init) noexcept nogil:
    """Fill `count` consecutive planes of `size` with init[0], init[1], ... (NULL: zeros)."""
    cdef index_t c, q
    if init == NULL:
        memset(planes, 0, count * size * sizeof(floating))
        return
    for c in range(count):
        for q in range(size):
            planes[c * size + q] = init[c]


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------

cdef void forward_task(const ConvPlan* p, index_t task, const floating* x, const floating* w,
                       const floating* b, floating* y, floating* buf) noexcept nogil:
    """y[n][:, block] = W @ cols[n][:, block] (+ b), group by group, for
    task = n * col_blocks + block."""
    cdef index_t n = task // p.col_blocks
    cdef index_t start = (task % p.col_blocks) * p.block_cols
    cdef index_t stop = min(start + p.block_cols, p.ohw)
    cdef index_t f, q, gi
    cdef floating* out = y + n * p.filters * p.ohw + start
    cdef floating beta = 0
    cdef const floating* cols
    cdef int ld
    if b != NULL:
        # Start from the bias and let GEMM add to it (beta = 1): saves a pass over y.
        for f in range(p.filters):
            for q in range(stop - start):
                out[f * p.ohw + q] = b[f]
        beta = 1
    for gi in range(p.groups):
        cols = column_block(p, x + input_offset(p, n, gi), buf, start, stop, &ld)
        gemm(False, False, <int>p.group_filters, <int>(stop - start), <int>p.ckk, <floating>1,
             w + weight_offset(p, gi), <int>p.ckk, cols, ld, beta,
             y + output_offset(p, n, gi) + start, <int>p.ohw)


cdef void forward(const ConvPlan* p, const floating* x, const floating* w, const floating* b,
                  floating* y) except *:
    """y (N, F, OH, OW) = the convolution of x with w, plus b unless NULL."""
    cdef index_t tasks = p.n_images * p.col_blocks, t
    cdef index_t itemsize = sizeof(floating)
    cdef index_t per_thread = 0 if p.pointwise else round_up(p.ckk * p.block_cols, WORKSPACE_ALIGN // itemsize)
    cdef int threads = <int>clamp_threads(p.threads, tasks)
    cdef EngineConv conv
    cdef EnginePlan engine
    cdef char* scratch
    if p.groups == 1:
        conv = engine_problem(p)
        if plan_forward(&engine, &conv, itemsize, <int>p.threads):
            ws = checkout_workspace(engine.workspace_bytes)
            scratch = aligned(ws)
            try:
                with nogil:
                    engine_forward(&engine, x, w, b, y, scratch)
            finally:
                return_workspace(ws)
            return
    if p.depthwise:
        threads = <int>p.threads
        per_thread = depthwise_workspace(&p.g)
    ws = checkout_workspace(threads * per_thread * itemsize)
    cdef floating* base = <floating*>aligned(ws)
    cdef floating* buf
    blas_single_thread_enter()
    try:
        if p.depthwise:
            with nogil:
                depthwise_forward(&p.g, p.n_images, p.groups, p.group_filters, x, w, b, y, base,
                                  threads)
        elif threads == 1:
            with nogil:
                for t in range(tasks):
                    forward_task(p, t, x, w, b, y, base)
        else:
            with nogil, parallel(num_threads=threads):
                buf = base + omp_get_thread_num() * per_thread
                for t in prange(tasks, schedule='dynamic'):
                    forward_task(p, t, x, w, b, y, buf)
    finally:
        blas_single_thread_exit()
        return_workspace(ws)


cdef inline object new_array(tuple shape, bint single):
    return np.empty(shape, dtype=np.float32 if single else np.float64)


cdef inline tuple shape4(const floating[:, :, :, ::1] a):
    return (a.shape[0], a.shape[1], a.shape[2], a.shape[3])


cdef inline const floating* optional(const floating[::1] b):
    """The data of a bias that may be None (then NULL)."""
    if b is None:
        return NULL
    return &b[0]


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, stride, padding, dilation, Py_ssize_t groups,
                   int num_threads):
    """y = conv2d(x, w, b, groups=groups) (b may be None) for checked C-contiguous arguments;
    padding is ((top, bottom), (left, right))."""
    cdef ConvPlan p = conv_plan(shape4(x), shape4(w), stride, padding, dilation,
                                groups, num_threads, sizeof(floating))
    y_array = new_array((p.n_images, p.filters, p.g.out_h, p.g.out_w), floating is float)
    cdef floating[:, :, :, ::1] y = y_array
    forward(&p, &x[0, 0, 0, 0], &w[0, 0, 0, 0], optional(b), &y[0, 0, 0, 0])
    return y_array


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------

cdef inline void add_row_sums(const floating* a, index_t rows, index_t cols, index_t ld,
                              floating* sums, bint overwrite) noexcept nogil:
    """sums[r] (+)= a[r, 0] + ... + a[r, cols-1], in column order."""
    cdef index_t r, q
    cdef floating s
    for r in range(rows):
        s = 0
        for q in range(cols):
            s = s + a[r * ld + q]
        if overwrite:
            sums[r] = s
        else:
            sums[r] = sums[r] + s


cdef void backward_chunk_task(const ConvPlan* p, index_t chunk, index_t n_chunks,
                              const floating* dout, const floating* x, const floating* w,
                              floating* dx, floating* dw_part, floating* db_part,
                              floating* buf) noexcept nogil:
    """Large batch: the gradients of the images of one chunk, image by image, block by block,
    group by group: dW/db into this chunk's partial (db_part may be NULL), and dx unless NULL."""
    cdef index_t first = chunk * p.n_images // n_chunks
    cdef index_t stop_image = (chunk + 1) * p.n_images // n_chunks
    cdef index_t n, block, start, stop, gi
    cdef const floating* d
    cdef const floating* cols
    cdef const floating* w_g
    cdef floating* dx_g
    cdef int FG = <int>p.group_filters, CKK = <int>p.ckk, OHW = <int>p.ohw, width, ld
    cdef bint overwrite
    for n in range(first, stop_image):
        if dx != NULL and not p.pointwise:
            # col2im accumulates
            start_planes(dx + input_offset(p, n, 0), p.groups * p.g.channels, p.hw, NULL)
        for block in range(p.col_blocks):
            start = block * p.block_cols
            stop = min(start + p.block_cols, p.ohw)
            width = <int>(stop - start)
            overwrite = n == first and block == 0
            for gi in range(p.groups):
                d = dout + output_offset(p, n, gi) + start
                w_g = w + weight_offset(p, gi)
                cols = column_block(p, x + input_offset(p, n, gi), buf, start, stop, &ld)
                gemm(False, True, FG, CKK, width, <floating>1, d, OHW, cols, ld,
                     <floating>(0 if overwrite else 1), dw_part + weight_offset(p, gi), CKK)
                if db_part != NULL:
                    add_row_sums(d, p.group_filters, width, p.ohw, db_part + gi * p.group_filters,
                                 overwrite)
                if dx == NULL:
                    continue
                dx_g = dx + input_offset(p, n, gi)
                if p.pointwise:
                    gemm(True, False, CKK, width, FG, <floating>1, w_g, CKK, d, OHW, <floating>0,
                         dx_g + start, OHW)
                else:
                    # The im2col block is no longer needed: its buffer receives W^T @ dout block.
                    gemm(True, False, CKK, width, FG, <floating>1, w_g, CKK, d, OHW, <floating>0,
                         buf, width)
                    col2im_image(buf, dx_g, &p.g, start, stop)


cdef void weight_block_task(const ConvPlan* p, index_t task, index_t blocks_per_part,
                            const floating* dout, const floating* x,
                            floating* dw_part, floating* db_part, floating* buf) noexcept nogil:
    """Small batch: dW/db partial of `blocks_per_part` consecutive column blocks of one image
    (db_part may be NULL)."""
    cdef index_t per_image = ceil_div(p.col_blocks, blocks_per_part)
    cdef index_t n = task // per_image
    cdef index_t block = (task % per_image) * blocks_per_part
    cdef index_t block_stop = min(block + blocks_per_part, p.col_blocks)
    cdef index_t start, stop, gi
    cdef const floating* d
    cdef const floating* cols
    cdef int ld
    cdef bint first = True
    while block < block_stop:
        start = block * p.block_cols
        stop = min(start + p.block_cols, p.ohw)
        for gi in range(p.groups):
            d = dout + output_offset(p, n, gi) + start
            cols = column_block(p, x + input_offset(p, n, gi), buf, start, stop, &ld)
            gemm(False, True, <int>p.group_filters, <int>p.ckk, <int>(stop - start), <floating>1,
                 d, <int>p.ohw, cols, ld, <floating>(0 if first else 1),
                 dw_part + weight_offset(p, gi), <int>p.ckk)
            if db_part != NULL:
                add_row_sums(d, p.group_filters, stop - start, p.ohw, db_part + gi * p.group_filters,
                             first)
        first = False
        block += 1


cdef void data_block_task(const ConvPlan* p, index_t task, index_t channel_blocks,
                          index_t block_channels, const floating* dout, const floating* w,
                          floating* dx, const floating* dx_init, floating* buf) noexcept nogil:
    """dx of one block of one group's channels of one image (disjoint dx planes per task),
    starting from dx_init (one value per channel; NULL: zeros)."""
    cdef index_t n = task // (p.groups * channel_blocks)
    cdef index_t gi = task // channel_blocks % p.groups
    cdef index_t c0 = (task % channel_blocks) * block_channels
    cdef index_t c1 = min(c0 + block_channels, p.g.channels)
    cdef index_t kk = p.g.kernel_h * p.g.kernel_w
    cdef index_t block, start, stop
    cdef Window2D g = p.g
    cdef floating* out = dx + input_offset(p, n, gi) + c0 * p.hw
    cdef const floating* d = dout + output_offset(p, n, gi)
    cdef const floating* w_g = w + weight_offset(p, gi) + c0 * kk
    cdef const floating* init = NULL
    if dx_init != NULL:
        init = dx_init + gi * p.g.channels + c0
    g.channels = c1 - c0
    # Rows c0*KK .. c1*KK of W_g^T @ dout[n] come from columns c0*KK .. of W_g (row stride C/G*KK).
    if p.pointwise:
        if init != NULL:
            start_planes(out, g.channels, p.hw, init)
        gemm(True, False, <int>(g.channels * kk), <int>p.ohw, <int>p.group_filters, <floating>1,
             w_g, <int>p.ckk, d, <int>p.ohw, <floating>(0 if init == NULL else 1), out, <int>p.ohw)
        return
    start_planes(out, g.channels, p.hw, init)   # col2im accumulates
    for block in range(p.col_blocks):
        start = block * p.block_cols
        stop = min(start + p.block_cols, p.ohw)
        gemm(True, False, <int>(g.channels * kk), <int>(stop - start), <int>p.group_filters,
             <floating>1, w_g, <int>p.ckk, d + start, <int>p.ohw, <floating>0,
             buf, <int>(stop - start))
        col2im_image(buf, out, &g, start, stop)


cdef void sum_partials(floating* dw, floating* db, const floating* parts, index_t n_parts,
                       index_t part_size, index_t dw_size, index_t db_size) noexcept nogil:
    """dw += parts[0].dw + parts[1].dw + ... in part order (same for db unless NULL)."""
    cdef index_t k, i
    cdef const floating* part
    for k in range(n_parts):
        part = parts + k * part_size
        for i in range(dw_size):
            dw[i] = dw[i] + part[i]
        if db != NULL:
            for i in range(db_size):
                db[i] = db[i] + part[dw_size + i]


cdef void backward(const ConvPlan* p, const floating* dout, const floating* x, const floating* w,
                   floating* dx, const floating* dx_init, floating* dw, floating* db) except *:
    """The gradients of forward() for upstream gradient dout (N, F, OH, OW): each one that is
    not NULL. dx starts from dx_init (one value per channel; NULL: zeros); x is only read for
    dw, and db needs dw."""
    cdef index_t itemsize = sizeof(floating), vec = WORKSPACE_ALIGN // sizeof(floating)
    cdef index_t part_size = round_up(p.filters * p.ckk + p.filters, vec)
    cdef index_t n_chunks = 0, weight_parts = 0, blocks_per_part = 1, data_tasks = 0
    cdef index_t channel_blocks = 1, block_channels = p.g.channels
    cdef index_t per_thread = 0, t, n_parts = 0
    cdef int threads = 1
    # A large batch computes both gradients in one pass over the images (one im2col each).
    cdef bint batch_mode = p.n_images >= TASKS_TARGET and dw != NULL
    cdef floating* parts
    cdef floating* scratch
    cdef floating* buf
    cdef floating* dw_part
    cdef floating* db_part
    if p.depthwise:
        n_chunks = depthwise_chunks(p.n_images)
        n_parts = n_chunks - 1 if dw != NULL else 0
        threads = <int>p.threads
        per_thread = depthwise_workspace(&p.g)
    elif batch_mode:
        n_chunks = min(p.n_images, MAX_CHUNKS)
        n_parts = n_chunks - 1               # chunk 0 writes straight into dw/db
        threads = <int>clamp_threads(p.threads, n_chunks)
        if not p.pointwise:
            per_thread = round_up(p.ckk * p.block_cols, vec)
    else:
        if dw != NULL:
            blocks_per_part = ceil_div(p.n_images * p.col_blocks, MAX_WEIGHT_PARTIALS)
            blocks_per_part = min(blocks_per_part, p.col_blocks)
            weight_parts = p.n_images * ceil_div(p.col_blocks, blocks_per_part)
            n_parts = weight_parts - 1
        if dx != NULL:
            channel_blocks = min(p.g.channels, ceil_div(TASKS_TARGET, p.n_images * p.groups))
            block_channels = ceil_div(p.g.channels, channel_blocks)
            channel_blocks = ceil_div(p.g.channels, block_channels)
            data_tasks = p.n_images * p.groups * channel_blocks
        threads = <int>clamp_threads(p.threads, max(weight_parts, data_tasks))
        if not p.pointwise:
            per_thread = round_up(p.ckk * p.block_cols, vec)
    ws = checkout_workspace((n_parts * part_size + threads * per_thread) * itemsize)
    parts = <floating*>aligned(ws)
    scratch = parts + n_parts * part_size
    blas_single_thread_enter()
    try:
        if p.depthwise:
            with nogil:
                depthwise_backward(&p.g, p.n_images, p.groups, p.group_filters, dout, x, w, dx,
                                   dx_init, dw, db, parts, part_size, scratch, threads)
        elif batch_mode:
            if threads == 1:
                with nogil:
                    for t in range(n_chunks):
                        dw_part = dw if t == 0 else parts + (t - 1) * part_size
                        db_part = NULL if db == NULL else (db if t == 0 else dw_part + p.filters * p.ckk)
                        backward_chunk_task(p, t, n_chunks, dout, x, w, dx, dw_part, db_part, scratch)
            else:
                with nogil, parallel(num_threads=threads):
                    buf = scratch + omp_get_thread_num() * per_thread
                    for t in prange(n_chunks, schedule='dynamic'):
                        dw_part = dw if t == 0 else parts + (t - 1) * part_size
                        db_part = NULL if db == NULL else (db if t == 0 else dw_part + p.filters * p.ckk)
                        backward_chunk_task(p, t, n_chunks, dout, x, w, dx, dw_part, db_part, buf)
        else:
            if threads == 1 or weight_parts <= 1:
                with nogil:
                    for t in range(weight_parts):
                        dw_part = dw if t == 0 else parts + (t - 1) * part_size
                        db_part = NULL if db == NULL else (db if t == 0 else dw_part + p.filters * p.ckk)
                        weight_block_task(p, t, blocks_per_part, dout, x, dw_part, db_part, scratch)
            else:
                with nogil, parallel(num_threads=<int>clamp_threads(threads, weight_parts)):
                    buf = scratch + omp_get_thread_num() * per_thread
                    for t in prange(weight_parts, schedule='dynamic'):
                        dw_part = dw if t == 0 else parts + (t - 1) * part_size
                        db_part = NULL if db == NULL else (db if t == 0 else dw_part + p.filters * p.ckk)
                        weight_block_task(p, t, blocks_per_part, dout, x, dw_part, db_part, buf)
            if threads == 1 or data_tasks <= 1:
                with nogil:
                    for t in range(data_tasks):
                        data_block_task(p, t, channel_blocks, block_channels, dout, w, dx, dx_init,
                                        scratch)
            else:
                with nogil, parallel(num_threads=<int>clamp_threads(threads, data_tasks)):
                    buf = scratch + omp_get_thread_num() * per_thread
                    for t in prange(data_tasks, schedule='dynamic'):
                        data_block_task(p, t, channel_blocks, block_channels, dout, w, dx, dx_init,
                                        buf)
        if dw != NULL:
            with nogil:
                sum_partials(dw, db, parts, n_parts, part_size, p.filters * p.ckk, p.filters)
    finally:
        blas_single_thread_exit()
        return_workspace(ws)


def conv2d_backward(const floating[:, :, :, ::1] dout, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] w, stride, padding, dilation, Py_ssize_t groups,
                    int num_threads, bint need_dx=True):
    """(dx, dw, db) of conv2d for checked C-contiguous arguments; need_dx=False: (None, dw, db),
    the data gradient not computed."""
    cdef ConvPlan p = conv_plan(shape4(x), shape4(w), stride, padding, dilation,
                                groups, num_threads, sizeof(floating))
    dx_array = new_array(shape4(x), floating is float) if need_dx else None
    dw_array = new_array(shape4(w), floating is float)
    db_array = new_array((p.filters,), floating is float)
    cdef floating* dx = NULL
    cdef floating[:, :, :, ::1] dx_view
    if need_dx:
        dx_view = dx_array
        dx = &dx_view[0, 0, 0, 0]
    cdef floating[:, :, :, ::1] dw = dw_array
    cdef floating[::1] db = db_array
    cdef EngineConv conv
    cdef EnginePlan engine
    cdef char* scratch
    if p.groups == 1:
        conv = engine_problem(&p)
        if plan_backward(&engine, &conv, sizeof(floating), <int>p.threads):
            ws = checkout_workspace(engine.workspace_bytes)
            scratch = aligned(ws)
            try:
                with nogil:
                    engine_backward(&engine, &dout[0, 0, 0, 0], &x[0, 0, 0, 0], &w[0, 0, 0, 0],
                                    dx, &dw[0, 0, 0, 0], &db[0], scratch)
            finally:
                return_workspace(ws)
            if need_dx and not engine.data_by_engine:
                # dx by im2col + BLAS + col2im where the engine's tiles would leave most lanes
                # empty (few input channels).
                backward(&p, &dout[0, 0, 0, 0], NULL, &w[0, 0, 0, 0], dx, NULL, NULL, NULL)
            return dx_array, dw_array, db_array
    backward(&p, &dout[0, 0, 0, 0], &x[0, 0, 0, 0], &w[0, 0, 0, 0], dx, NULL, &dw[0, 0, 0, 0],
             &db[0])
    return dx_array, dw_array, db_array


# ----------------------------------------------------------------------------------------------
# Transposed convolution: the data gradient of a convolution, and its gradients
# ----------------------------------------------------------------------------------------------
# conv_transpose2d(x, w) is backward()'s dx for the convolution of transposed_plan() with x
# as its upstream gradient (the bias is where dx starts); its data gradient is that
# convolution's forward() of dout, its weight gradient backward()'s dw with dout as the
# convolution's input and x as its upstream gradient. Only the bias gradient is new.

cdef void channel_sums(const floating* a, index_t n_images, index_t channels, index_t plane,
                       floating* sums, int threads) noexcept nogil:
    """sums[c] = a[:, c].sum() for a (n_images, channels, plane): image by image, each plane
    by _depthwise.plane_sum (in a fixed order of partial sums); channels are independent, so
    any thread count gives the same sums."""
    cdef index_t c, n
    cdef floating s
    for c in prange(channels, schedule='static', num_threads=threads if threads < channels else channels):
        s = 0
        for n in range(n_images):
            s = s + plane_sum(a + (n * channels + c) * plane, plane)
        sums[c] = s


def conv_transpose2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                             const floating[::1] b, stride, padding, output_padding,
                             Py_ssize_t groups, dilation, int num_threads):
    """y = conv_transpose2d(x, w, b, ...) (b may be None) for checked C-contiguous arguments."""
    cdef ConvPlan p = transposed_plan(shape4(x), shape4(w), stride, padding,
                                      output_padding, groups, dilation, num_threads, sizeof(floating))
    y_array = new_array((p.n_images, p.groups * p.g.channels, p.g.height, p.g.width), floating is float)
    cdef floating[:, :, :, ::1] y = y_array
    backward(&p, &x[0, 0, 0, 0], NULL, &w[0, 0, 0, 0], &y[0, 0, 0, 0], optional(b), NULL, NULL)
    return y_array


def conv_transpose2d_backward(const floating[:, :, :, ::1] dout, const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] w, stride, padding, output_padding,
                              Py_ssize_t groups, dilation, int num_threads):
    """(dx, dw, db) of conv_transpose2d for checked C-contiguous arguments."""
    cdef ConvPlan p = transposed_plan(shape4(x), shape4(w), stride, padding,
                                      output_padding, groups, dilation, num_threads, sizeof(floating))
    dx_array = new_array(shape4(x), floating is float)
    dw_array = new_array(shape4(w), floating is float)
    db_array = new_array((dout.shape[1],), floating is float)
    cdef floating[:, :, :, ::1] dx = dx_array
    cdef floating[:, :, :, ::1] dw = dw_array
    cdef floating[::1] db = db_array
    forward(&p, &dout[0, 0, 0, 0], &w[0, 0, 0, 0], NULL, &dx[0, 0, 0, 0])
    backward(&p, &x[0, 0, 0, 0], &dout[0, 0, 0, 0], &w[0, 0, 0, 0], NULL, NULL, &dw[0, 0, 0, 0], NULL)
    with nogil:
        channel_sums(&dout[0, 0, 0, 0], dout.shape[0], dout.shape[1], dout.shape[2] * dout.shape[3],
                     &db[0], <int>p.threads)
    return dx_array, dw_array, db_array
