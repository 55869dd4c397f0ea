"""Channels-last (NHWC) 2-D convolution: forward, backward-data and backward-weight as
im2col + GEMM, with no transpose anywhere.

x is (N, H, W, C), w (KH, KW, C/G, F) ("HWIO"), y and dout (N, OH, OW, F). Every output pixel
is one row: the outputs of the whole batch are one (N*OH*OW, F) matrix, and the weights, read
as a (KH*KW*C/G, F) matrix, already are the right-hand operand of the product. The im2col row
of output pixel (n, oh, ow) for group g is KH*KW contiguous runs of C/G channel values (tap
(i, j) at (i*KW + j)*C/G), so that

    Y[rows, g]     = cols_g[rows] @ W_g                     forward
    dcols_g[rows]  = dY[rows, g] @ W_g^T, then col2im       backward-data
    dW_g          += cols_g[rows]^T @ dY[rows, g]           backward-weight

where W_g, Y[:, g] and dY[:, g] are the group's columns g*F/G .. of matrices whose leading
dimension is F: GEMM reads and writes the group's slice in place. A 1x1, stride-1, unpadded
convolution needs no im2col at all: x is the (N*H*W, C) column matrix (group g: its columns
g*C/G .., leading dimension C), and dx is dcols.

Rows are cut into blocks of about BLOCK_BYTES of im2col; a block may span several images, so
small planes still make large GEMMs. One channel per group (depthwise) runs on the direct
kernels of fastconv._ext._depthwise_nhwc instead (fastconv._cython_backend chooses).

How the work is split (decided from the shape alone, never from the thread count, so that
every thread count computes exactly the same floating-point operations):

* forward: one task per block of rows (each output row is written by exactly one GEMM);
* backward, a batch of at least TASKS_TARGET images: chunks of consecutive images. A chunk
  does, block by block: im2col, dW_chunk += cols^T @ dY, db_chunk += column sums of dY,
  dcols = dY @ W^T (into the same buffer) and col2im into dx (a chunk's images' dx is its
  own). The chunk partials are then summed in chunk order.
* backward, smaller batches: dW/db from a few partials over consecutive blocks of rows
  (across images), summed in order; dx from one task per band of input rows of one image,
  which computes dcols for every output row whose windows reach the band and adds only what
  falls inside it (the output rows at a band's edges are computed by both neighbours).

The number of dW/db partials is also bounded by the size of the problem (at most an eighth
of the backward's inputs and outputs), so that small planes with many channels do not spend
more memory on partials than on the data. Tasks are handed out dynamically (which thread
runs one does not change what it computes). BLAS runs single-threaded inside our threads.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memcpy, memset
from libc.limits cimport INT_MAX

from fastconv._ext._typedefs cimport index_t, Window2D
from fastconv._ext._openmp cimport omp_get_thread_num
from fastconv._ext._blas cimport gemm
from fastconv._ext._blas_threads cimport blas_single_thread_enter, blas_single_thread_exit
from fastconv._ext._workspace cimport (WORKSPACE_ALIGN, aligned, ceil_div, checkout_workspace,
                                       return_workspace, round_up)

# Enough tasks for up to this many threads on a small problem.
cdef index_t TASKS_TARGET = 8
# Chunks of images of a large batch's backward (one dW/db partial each but the first).
cdef index_t MAX_CHUNKS = 8
# At most this many dW/db partials for a small batch (N < TASKS_TARGET).
cdef index_t MAX_WEIGHT_PARTIALS = 4
# The partials take at most 1/PARTIALS_SHARE of the backward's inputs and outputs.
cdef index_t PARTIALS_SHARE = 8
# A block of rows is about this large in im2col, so that im2col writes it into cache and
# GEMM (and col2im) read it from there; never fewer than MIN_BLOCK_ROWS rows (narrow GEMMs run
# far below peak), except to give a small problem TASKS_TARGET blocks.
cdef index_t BLOCK_BYTES = 512 * 1024
cdef index_t MIN_BLOCK_ROWS = 64
# Below this many multiply-adds a call runs on one thread: starting threads costs more.
cdef double SERIAL_MACS = 2.0e5
# Copies and sums of fewer elements than this are loops, not memcpy/memset calls (C = 3
# images make runs of 3 to 9 values, millions of them).
cdef index_t SHORT_RUN = 32


# ----------------------------------------------------------------------------------------------
# Plan: shapes, blocks and the thread count of one call
# ----------------------------------------------------------------------------------------------

ctypedef struct Plan:
    Window2D g            # one group's geometry (g.channels = C/G)
    index_t n_images      # N
    index_t channels      # C
    index_t groups        # G
    index_t filters       # F
    index_t group_filters # F/G
    index_t kkc           # KH*KW*C/G: an im2col row, the GEMMs' inner dimension
    index_t ohw           # OH*OW
    index_t hw            # H*W
    index_t rows          # N*OH*OW
    bint pointwise        # 1x1, stride 1, no padding: x already is the im2col matrix
    index_t block_rows    # rows per block (the last may have fewer)
    index_t blocks        # blocks of the batch's rows
    index_t threads       # threads to start (<= tasks)


cdef Plan make_plan(tuple x_shape, tuple w_shape, stride, padding, dilation, index_t groups,
                    int num_threads, index_t itemsize) except *:
    """The plan of the convolution of x (N, H, W, C) with w (KH, KW, C/G, F); padding is
    ((top, bottom), (left, right))."""
    cdef Plan p
    cdef Window2D* g = &p.g
    (top, bottom), (left, right) = padding
    p.n_images, g.height, g.width, p.channels = x_shape
    g.kernel_h, g.kernel_w, g.channels, p.filters = w_shape
    g.stride_h, g.stride_w = stride
    g.pad_h, g.pad_w = top, left
    g.dilation_h, g.dilation_w = dilation
    g.out_h = (g.height + top + bottom - g.dilation_h * (g.kernel_h - 1) - 1) // g.stride_h + 1
    g.out_w = (g.width + left + right - g.dilation_w * (g.kernel_w - 1) - 1) // g.stride_w + 1
    p.groups = groups
    p.group_filters = p.filters // groups
    p.kkc = g.kernel_h * g.kernel_w * g.channels
    p.ohw = g.out_h * g.out_w
    p.hw = g.height * g.width
    p.rows = p.n_images * p.ohw
    if p.kkc > INT_MAX or p.filters > INT_MAX or p.channels > INT_MAX:
        raise ValueError(f"convolution too large for BLAS (32-bit sizes): KH*KW*C/G={p.kkc}, "
                         f"F={p.filters}, C={p.channels}")
    p.pointwise = (g.kernel_h == 1 and g.kernel_w == 1 and g.stride_h == 1 and g.stride_w == 1
                   and top == 0 and bottom == 0 and left == 0 and right == 0)
    # Blocks: cache-sized (the 1x1 shortcut reads x rows of C values in place), and enough of
    # them for several threads on a small problem. Only shapes and the dtype decide.
    cdef index_t row_bytes = (g.channels if p.pointwise else p.kkc) * itemsize
    p.block_rows = max(MIN_BLOCK_ROWS, round_up(BLOCK_BYTES // row_bytes, 16))
    if ceil_div(p.rows, p.block_rows) < TASKS_TARGET:
        p.block_rows = min(p.block_rows, max(16, round_up(ceil_div(p.rows, TASKS_TARGET), 16)))
    p.block_rows = max(1, min(p.block_rows, p.rows))
    p.blocks = ceil_div(p.rows, p.block_rows)
    cdef double macs = <double>p.rows * p.filters * p.kkc
    p.threads = num_threads if num_threads >= 1 else 1
    if macs < SERIAL_MACS:
        p.threads = 1
    return p


cdef inline index_t clamp_threads(index_t threads, index_t tasks) noexcept nogil:
    return threads if threads < tasks else tasks


# ----------------------------------------------------------------------------------------------
# im2col / col2im over a range of rows (output pixels) of the batch
# ----------------------------------------------------------------------------------------------

cdef inline void copy_run(floating* dst, const floating* src, index_t count) noexcept nogil:
    cdef index_t e
    if count >= SHORT_RUN:
        memcpy(dst, src, count * sizeof(floating))
    else:
        for e in range(count):
            dst[e] = src[e]


cdef inline void zero_run(floating* dst, index_t count) noexcept nogil:
    cdef index_t e
    if count >= SHORT_RUN:
        memset(dst, 0, count * sizeof(floating))
    else:
        for e in range(count):
            dst[e] = 0


cdef inline void add_run(floating* dst, const floating* src, index_t count) noexcept nogil:
    cdef index_t e
    for e in range(count):
        dst[e] = dst[e] + src[e]


cdef void im2col_rows(const Plan* p, const floating* x, floating* cols, index_t gi,
                      index_t r0, index_t r1) noexcept nogil:
    """Rows [r0, r1) of group gi's im2col matrix, written entirely into cols (r1 - r0, KKC):
    zeros where a window overlaps the padding."""
    cdef const Window2D* g = &p.g
    cdef index_t C = p.channels, Cg = g.channels, H = g.height, W = g.width
    cdef index_t KH = g.kernel_h, KW = g.kernel_w, DW = g.dilation_w, OW = g.out_w, OH = g.out_h
    cdef index_t run = KW * Cg   # one kernel row's taps
    # A kernel row of an undilated, ungrouped window is one contiguous run of x.
    cdef bint contiguous = DW == 1 and Cg == C
    cdef index_t n = r0 // p.ohw, q = r0 - (r0 // p.ohw) * p.ohw
    cdef index_t oh = q // OW, ow = q - (q // OW) * OW
    cdef index_t r, i, j, ih, iw, iw0
    cdef bint inside_w
    cdef const floating* src
    cdef floating* dst = cols
    for r in range(r0, r1):
        iw0 = ow * g.stride_w - g.pad_w
        inside_w = iw0 >= 0 and iw0 + (KW - 1) * DW < W
        for i in range(KH):
            ih = oh * g.stride_h - g.pad_h + i * g.dilation_h
            if ih < 0 or ih >= H:
                zero_run(dst, run)
            else:
                src = x + ((n * H + ih) * W) * C + gi * Cg
                if inside_w and contiguous:
                    copy_run(dst, src + iw0 * C, run)
                else:
                    for j in range(KW):
                        iw = iw0 + j * DW
                        if 0 <= iw < W:
                            copy_run(dst + j * Cg, src + iw * C, Cg)
                        else:
                            zero_run(dst + j * Cg, Cg)
            dst += run
        ow += 1
        if ow == OW:
            ow = 0
            oh += 1
            if oh == OH:
                oh = 0
                n += 1


cdef void col2im_rows(const Plan* p, const floating* cols, floating* dx, index_t gi, index_t r0,
                      index_t r1, index_t h_lo, index_t h_hi) noexcept nogil:
    """Add rows [r0, r1) of group gi's im2col matrix (cols: (r1 - r0, KKC)) back into dx,
    dropping what falls in the padding or outside input rows [h_lo, h_hi) (0 <= h_lo, h_hi <= H).

    Contributions are added row by row, tap by tap: a fixed order, whatever the threads.
    """
    cdef const Window2D* g = &p.g
    cdef index_t C = p.channels, Cg = g.channels, H = g.height, W = g.width
    cdef index_t KH = g.kernel_h, KW = g.kernel_w, DW = g.dilation_w, OW = g.out_w, OH = g.out_h
    cdef index_t run = KW * Cg
    cdef bint contiguous = DW == 1 and Cg == C
    cdef index_t n = r0 // p.ohw, q = r0 - (r0 // p.ohw) * p.ohw
    cdef index_t oh = q // OW, ow = q - (q // OW) * OW
    cdef index_t r, i, j, ih, iw, iw0
    cdef bint inside_w
    cdef floating* dst
    cdef const floating* src = cols
    for r in range(r0, r1):
        iw0 = ow * g.stride_w - g.pad_w
        inside_w = iw0 >= 0 and iw0 + (KW - 1) * DW < W
        for i in range(KH):
            ih = oh * g.stride_h - g.pad_h + i * g.dilation_h
            if h_lo <= ih < h_hi:
                dst = dx + ((n * H + ih) * W) * C + gi * Cg
                if inside_w and contiguous:
                    add_run(dst + iw0 * C, src, run)
                else:
                    for j in range(KW):
                        iw = iw0 + j * DW
                        if 0 <= iw < W:
                            add_run(dst + iw * C, src + j * Cg, Cg)
            src += run
        ow += 1
        if ow == OW:
            ow = 0
            oh += 1
            if oh == OH:
                oh = 0
                n += 1


cdef inline const floating* column_rows(const Plan* p, const floating* x, floating* buf, index_t gi,
                                        index_t r0, index_t r1, int* ld) noexcept nogil:
    """Rows [r0, r1) of group gi's im2col matrix and their leading dimension in *ld: x itself
    for a pointwise convolution, otherwise im2col written into buf."""
    if p.pointwise:
        ld[0] = <int>p.channels
        return x + r0 * p.channels + gi * p.g.channels
    im2col_rows(p, x, buf, gi, r0, r1)
    ld[0] = <int>p.kkc
    return buf


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------

cdef void forward_task(const Plan* p, index_t block, const floating* x, const floating* w,
                       const floating* b, floating* y, floating* buf) noexcept nogil:
    """Rows of one block of y (N*OH*OW, F) = cols @ W (+ b), group by group."""
    cdef index_t r0 = block * p.block_rows
    cdef index_t r1 = min(r0 + p.block_rows, p.rows)
    cdef index_t F = p.filters, FG = p.group_filters, r, f, gi
    cdef floating* out = y + r0 * F
    cdef floating beta = 0
    cdef const floating* cols
    cdef int ld
    if b != NULL:
        # Start from the bias and let GEMM add to it (beta = 1): saves a pass over y.
        for r in range(r1 - r0):
            for f in range(F):
                out[r * F + f] = b[f]
        beta = 1
    for gi in range(p.groups):
        cols = column_rows(p, x, buf, gi, r0, r1, &ld)
        gemm(False, False, <int>(r1 - r0), <int>FG, <int>p.kkc, <floating>1, cols, ld,
             w + gi * FG, <int>F, beta, out + gi * FG, <int>F)


cdef inline index_t buffer_elements(const Plan* p, index_t itemsize) noexcept nogil:
    """A thread's im2col buffer: one block of rows (none for a pointwise convolution)."""
    if p.pointwise:
        return 0
    return round_up(p.block_rows * p.kkc, WORKSPACE_ALIGN // itemsize)


cdef void forward(const Plan* p, const floating* x, const floating* w, const floating* b,
                  floating* y) except *:
    """y (N, OH, OW, F) = the convolution of x with w, plus b unless NULL."""
    cdef index_t itemsize = sizeof(floating), t
    cdef index_t per_thread = buffer_elements(p, itemsize)
    cdef int threads = <int>clamp_threads(p.threads, p.blocks)
    ws = checkout_workspace(threads * per_thread * itemsize)
    cdef floating* base = <floating*>aligned(ws)
    cdef floating* buf
    blas_single_thread_enter()
    try:
        if threads == 1:
            with nogil:
                for t in range(p.blocks):
                    forward_task(p, t, x, w, b, y, base)
        else:
            with nogil, parallel(num_threads=threads):
                buf = base + omp_get_thread_num() * per_thread
                for t in prange(p.blocks, schedule='dynamic'):
                    forward_task(p, t, x, w, b, y, buf)
    finally:
        blas_single_thread_exit()
        return_workspace(ws)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------

cdef inline void add_column_sums(const floating* a, index_t rows, index_t cols, index_t ld,
                                 floating* sums, bint overwrite) noexcept nogil:
    """sums[c] (+)= a[0, c] + ... + a[rows-1, c], in row order (vectorised across columns)."""
    cdef index_t r, c
    if overwrite:
        for c in range(cols):
            sums[c] = 0
    for r in range(rows):
        for c in range(cols):
            sums[c] = sums[c] + a[r * ld + c]


cdef void weight_rows(const Plan* p, index_t r0, index_t r1, const floating* dout,
                      const floating* x, floating* dw_part, floating* db_part, bint first,
                      floating* buf) noexcept nogil:
    """dW (KKC, F) and db (unless NULL) partials (+)= those of rows [r0, r1), group by group
    (first: overwrite)."""
    cdef index_t F = p.filters, FG = p.group_filters, gi
    cdef const floating* d
    cdef const floating* cols
    cdef int ld
    for gi in range(p.groups):
        d = dout + r0 * F + gi * FG
        cols = column_rows(p, x, buf, gi, r0, r1, &ld)
        gemm(True, False, <int>p.kkc, <int>FG, <int>(r1 - r0), <floating>1, cols, ld, d, <int>F,
             <floating>(0 if first else 1), dw_part + gi * FG, <int>F)
        if db_part != NULL:
            add_column_sums(d, r1 - r0, FG, F, db_part + gi * FG, first)


cdef void data_rows(const Plan* p, index_t r0, index_t r1, const floating* dout, const floating* w,
                    floating* dx, index_t h_lo, index_t h_hi, floating* buf) noexcept nogil:
    """Add the data gradient of rows [r0, r1) into dx, inside input rows [h_lo, h_hi) (all
    rows of a pointwise convolution, which writes its rows of dx instead)."""
    cdef index_t F = p.filters, FG = p.group_filters, Cg = p.g.channels, gi
    cdef const floating* d
    for gi in range(p.groups):
        d = dout + r0 * F + gi * FG
        if p.pointwise:
            gemm(False, True, <int>(r1 - r0), <int>Cg, <int>FG, <floating>1, d, <int>F,
                 w + gi * FG, <int>F, <floating>0, dx + r0 * p.channels + gi * Cg, <int>p.channels)
        else:
            gemm(False, True, <int>(r1 - r0), <int>p.kkc, <int>FG, <floating>1, d, <int>F,
                 w + gi * FG, <int>F, <floating>0, buf, <int>p.kkc)
            col2im_rows(p, buf, dx, gi, r0, r1, h_lo, h_hi)


cdef void backward_chunk_task(const Plan* p, index_t chunk, index_t n_chunks,
                              const floating* dout, const floating* x, const floating* w,
                              floating* dx, floating* dw_part, floating* db_part,
                              floating* buf) noexcept nogil:
    """Large batch: the gradients of the images of one chunk, block by block: dW/db into this
    chunk's partial, dx of its images."""
    cdef index_t n0 = chunk * p.n_images // n_chunks
    cdef index_t n1 = (chunk + 1) * p.n_images // n_chunks
    cdef index_t r1 = n1 * p.ohw, start = n0 * p.ohw, stop
    cdef bint first = True
    if not p.pointwise:   # col2im accumulates
        memset(dx + n0 * p.hw * p.channels, 0, (n1 - n0) * p.hw * p.channels * sizeof(floating))
    while start < r1:
        stop = min(start + p.block_rows, r1)
        weight_rows(p, start, stop, dout, x, dw_part, db_part, first, buf)
        # The im2col block is no longer needed: its buffer receives dY @ W^T.
        data_rows(p, start, stop, dout, w, dx, 0, p.g.height, buf)
        first = False
        start = stop


cdef void weight_part_task(const Plan* p, index_t part, index_t n_parts, const floating* dout,
                           const floating* x, floating* dw_part, floating* db_part,
                           floating* buf) noexcept nogil:
    """Small batch: the dW/db partial of consecutive blocks part*blocks/n_parts .. of rows."""
    cdef index_t block = part * p.blocks // n_parts, stop_block = (part + 1) * p.blocks // n_parts
    cdef index_t start
    while block < stop_block:
        start = block * p.block_rows
        weight_rows(p, start, min(start + p.block_rows, p.rows), dout, x, dw_part, db_part,
                    block == part * p.blocks // n_parts, buf)
        block += 1


cdef void data_band_task(const Plan* p, index_t task, index_t bands, const floating* dout,
                         const floating* w, floating* dx, floating* buf) noexcept nogil:
    """Small batch: dx of input rows [h0, h1) of one image (band task % bands of image
    task // bands): dcols of every output row whose windows reach the band, added inside it."""
    cdef const Window2D* g = &p.g
    cdef index_t n = task // bands, band = task % bands
    cdef index_t h0 = band * g.height // bands, h1 = (band + 1) * g.height // bands
    cdef index_t first_row, oh_lo, oh_hi, start, stop, end
    if p.pointwise:   # output row h is input row h
        data_rows(p, (n * g.height + h0) * g.width, (n * g.height + h1) * g.width, dout, w, dx,
                  h0, h1, buf)
        return
    memset(dx + (n * g.height + h0) * g.width * p.channels, 0,
           (h1 - h0) * g.width * p.channels * sizeof(floating))
    # Output rows oh whose last tap reaches h0 and whose first tap is before h1.
    first_row = h0 + g.pad_h - (g.kernel_h - 1) * g.dilation_h
    oh_lo = 0 if first_row <= 0 else ceil_div(first_row, g.stride_h)
    oh_hi = min((h1 - 1 + g.pad_h) // g.stride_h + 1, g.out_h)
    if oh_lo >= oh_hi:
        return
    start = n * p.ohw + oh_lo * g.out_w
    end = n * p.ohw + oh_hi * g.out_w
    while start < end:
        stop = min(start + p.block_rows, end)
        data_rows(p, start, stop, dout, w, dx, h0, h1, buf)
        start = stop


cdef void sum_partials(floating* dw, floating* db, const floating* parts, index_t n_parts,
                       index_t part_size, index_t dw_size, index_t db_size) noexcept nogil:
    """dw += parts[0].dw + parts[1].dw + ... in part order (and db)."""
    cdef index_t k, i
    cdef const floating* part
    for k in range(n_parts):
        part = parts + k * part_size
        for i in range(dw_size):
            dw[i] = dw[i] + part[i]
        for i in range(db_size):
            db[i] = db[i] + part[dw_size + i]


cdef void backward(const Plan* p, const floating* dout, const floating* x, const floating* w,
                   floating* dx, floating* dw, floating* db) except *:
    """dx, dw, db of forward() for upstream gradient dout (N, OH, OW, F)."""
    cdef index_t itemsize = sizeof(floating), vec = WORKSPACE_ALIGN // sizeof(floating)
    cdef index_t part_size = round_up(p.kkc * p.filters + p.filters, vec)
    cdef index_t per_thread = buffer_elements(p, itemsize)
    # Partials beyond the first may take 1/PARTIALS_SHARE of the inputs and outputs.
    cdef index_t data = (2 * p.n_images * p.hw * p.channels + p.rows * p.filters
                         + 2 * p.kkc * p.filters + p.filters)
    cdef index_t spare = data // (PARTIALS_SHARE * part_size)
    cdef bint batch_mode = p.n_images >= TASKS_TARGET
    cdef index_t n_chunks = 1, weight_parts = 1, bands = 1, data_tasks = 0, n_parts, t
    cdef int threads
    if batch_mode:
        n_chunks = min(min(p.n_images, MAX_CHUNKS), 1 + spare)
        n_parts = n_chunks - 1               # chunk 0 writes straight into dw/db
        threads = <int>clamp_threads(p.threads, n_chunks)
    else:
        weight_parts = min(min(MAX_WEIGHT_PARTIALS, p.blocks), 1 + spare)
        n_parts = weight_parts - 1
        bands = min(p.g.height, ceil_div(TASKS_TARGET, p.n_images))
        data_tasks = p.n_images * bands
        threads = <int>clamp_threads(p.threads, max(weight_parts, data_tasks))
    ws = checkout_workspace((n_parts * part_size + threads * per_thread) * itemsize)
    cdef floating* parts = <floating*>aligned(ws)
    cdef floating* scratch = parts + n_parts * part_size
    cdef floating* buf
    cdef floating* dw_part
    blas_single_thread_enter()
    try:
        if batch_mode:
            if threads == 1:
                with nogil:
                    for t in range(n_chunks):
                        dw_part = dw if t == 0 else parts + (t - 1) * part_size
                        backward_chunk_task(p, t, n_chunks, dout, x, w, dx, dw_part,
                                            db if t == 0 else dw_part + p.kkc * p.filters, scratch)
            else:
                with nogil, parallel(num_threads=threads):
                    buf = scratch + omp_get_thread_num() * per_thread
                    for t in prange(n_chunks, schedule='dynamic'):
                        dw_part = dw if t == 0 else parts + (t - 1) * part_size
                        backward_chunk_task(p, t, n_chunks, dout, x, w, dx, dw_part,
                                            db if t == 0 else dw_part + p.kkc * p.filters, buf)
        else:
            if threads == 1 or weight_parts == 1:
                with nogil:
                    for t in range(weight_parts):
                        dw_part = dw if t == 0 else parts + (t - 1) * part_size
                        weight_part_task(p, t, weight_parts, dout, x, dw_part,
                                         db if t == 0 else dw_part + p.kkc * p.filters, scratch)
            else:
                with nogil, parallel(num_threads=<int>clamp_threads(threads, weight_parts)):
                    buf = scratch + omp_get_thread_num() * per_thread
                    for t in prange(weight_parts, schedule='dynamic'):
                        dw_part = dw if t == 0 else parts + (t - 1) * part_size
                        weight_part_task(p, t, weight_parts, dout, x, dw_part,
                                         db if t == 0 else dw_part + p.kkc * p.filters, buf)
            if threads == 1 or data_tasks == 1:
                with nogil:
                    for t in range(data_tasks):
                        data_band_task(p, t, bands, dout, w, dx, scratch)
            else:
                with nogil, parallel(num_threads=<int>clamp_threads(threads, data_tasks)):
                    buf = scratch + omp_get_thread_num() * per_thread
                    for t in prange(data_tasks, schedule='dynamic'):
                        data_band_task(p, t, bands, dout, w, dx, buf)
        with nogil:
            sum_partials(dw, db, parts, n_parts, part_size, p.kkc * p.filters, p.filters)
    finally:
        blas_single_thread_exit()
        return_workspace(ws)


# ----------------------------------------------------------------------------------------------
# Entry points (arguments checked by fastconv._validation: C-contiguous, non-empty batch)
# ----------------------------------------------------------------------------------------------

cdef inline tuple shape4(const floating[:, :, :, ::1] a):
    return (a.shape[0], a.shape[1], a.shape[2], a.shape[3])


cdef inline const floating* optional(const floating[::1] b):
    """The data of a bias that may be None (then NULL)."""
    if b is None:
        return NULL
    return &b[0]


cdef inline object new_array(tuple shape, bint single):
    return np.empty(shape, dtype=np.float32 if single else np.float64)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, stride, padding, dilation, Py_ssize_t groups,
                   int num_threads):
    """y (N, OH, OW, F) = conv2d of x (N, H, W, C) with w (KH, KW, C/G, F), plus b (may be
    None); padding is ((top, bottom), (left, right))."""
    cdef Plan p = make_plan(shape4(x), shape4(w), stride, padding, dilation, groups, num_threads,
                            sizeof(floating))
    y_array = new_array((p.n_images, p.g.out_h, p.g.out_w, p.filters), floating is float)
    cdef floating[:, :, :, ::1] y = y_array
    forward(&p, &x[0, 0, 0, 0], &w[0, 0, 0, 0], optional(b), &y[0, 0, 0, 0])
    return y_array


def conv2d_backward(const floating[:, :, :, ::1] dout, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] w, stride, padding, dilation, Py_ssize_t groups,
                    int num_threads):
    """(dx, dw, db) of conv2d_forward for upstream gradient dout (N, OH, OW, F)."""
    cdef Plan p = make_plan(shape4(x), shape4(w), stride, padding, dilation, groups, num_threads,
                            sizeof(floating))
    dx_array = new_array(shape4(x), floating is float)
    dw_array = new_array(shape4(w), floating is float)
    db_array = new_array((p.filters,), floating is float)
    cdef floating[:, :, :, ::1] dx = dx_array
    cdef floating[:, :, :, ::1] dw = dw_array
    cdef floating[::1] db = db_array
    backward(&p, &dout[0, 0, 0, 0], &x[0, 0, 0, 0], &w[0, 0, 0, 0], &dx[0, 0, 0, 0],
             &dw[0, 0, 0, 0], &db[0])
    return dx_array, dw_array, db_array
