"""2-D convolution: forward, backward-data and backward-weight over im2col + GEMM.

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
grown on demand; a call checks a workspace out of a pool and gives it back, so concurrent
calls (the kernels release the GIL) never share one. BLAS runs single-threaded inside our
calls: our own threads already occupy the cores.
"""

import threading

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport uintptr_t
from libc.string cimport memset
from libc.limits cimport INT_MAX

from fastconv._ext._typedefs cimport index_t, Window2D
from fastconv._ext._openmp cimport omp_get_thread_num
from fastconv._ext._blas cimport gemm
from scipy.linalg.cython_blas cimport sgemm
from fastconv._ext._im2col cimport im2col_image, col2im_image
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
# Sub-buffers start on 64-byte boundaries (a cache line; full AVX-512 vectors).
cdef index_t ALIGN = 64


# ----------------------------------------------------------------------------------------------
# Keeping BLAS single-threaded inside our calls
# ----------------------------------------------------------------------------------------------
# SciPy's OpenBLAS is usually a pthreads build whose thread count is a process-wide setting.
# We look up its get/set functions once (in the library that scipy.linalg.cython_blas is linked
# against) and set 1 thread while any fastconv call runs, restoring the previous value when the
# last concurrent call ends. The counter is only touched with the GIL held.

cdef extern from *:
    """
    #if defined(_WIN32)
    static int fastconv_find_blas_threads(void *anchor, void **set_fn, void **get_fn) { return 0; }
    #else
    #include <dlfcn.h>
    static int fastconv_find_blas_threads(void *anchor, void **set_fn, void **get_fn) {
        static const char *names[][2] = {
            {"scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"},
            {"scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"},
            {"openblas_set_num_threads", "openblas_get_num_threads"},
            {"openblas_set_num_threads64_", "openblas_get_num_threads64_"},
        };
        Dl_info info;
        void *handle;
        int i;
        if (!dladdr(anchor, &info) || info.dli_fname == NULL) return 0;
        /* dlsym on a library handle also searches that library's dependencies: the BLAS. */
        handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
        if (handle == NULL) return 0;
        for (i = 0; i < 4; i++) {
            void *s = dlsym(handle, names[i][0]);
            void *g = dlsym(handle, names[i][1]);
            if (s != NULL && g != NULL) { *set_fn = s; *get_fn = g; dlclose(handle); return 1; }
        }
        dlclose(handle);
        return 0;
    }
    #endif
    """
    int fastconv_find_blas_threads(void* anchor, void** set_fn, void** get_fn)

ctypedef void (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil

cdef set_threads_fn blas_set_threads = NULL
cdef get_threads_fn blas_get_threads = NULL
cdef int blas_users = 0          # fastconv calls running now (GIL-protected)
cdef int blas_saved_threads = 1  # BLAS thread count to restore when the last one ends
_threadpool_limiter = None       # fallback when the functions are not found: threadpoolctl
_active_limit = None             # the threadpoolctl limit in force while calls run


cdef void find_blas_controls():
    global blas_set_threads, blas_get_threads, _threadpool_limiter
    cdef void* set_fn = NULL
    cdef void* get_fn = NULL
    if fastconv_find_blas_threads(<void*>sgemm, &set_fn, &get_fn):
        blas_set_threads = <set_threads_fn>set_fn
        blas_get_threads = <get_threads_fn>get_fn
        return
    try:
        from threadpoolctl import ThreadpoolController
        _threadpool_limiter = ThreadpoolController().select(user_api="blas")
    except Exception:
        _threadpool_limiter = None


find_blas_controls()


cdef void blas_single_thread_enter() except *:
    global blas_users, blas_saved_threads, _active_limit
    if blas_set_threads != NULL:
        if blas_users == 0:
            blas_saved_threads = blas_get_threads()
            if blas_saved_threads != 1:
                blas_set_threads(1)
        blas_users += 1
    elif _threadpool_limiter is not None:
        # Slower (tens of microseconds), only where the direct functions are not found.
        if blas_users == 0:
            _active_limit = _threadpool_limiter.limit(limits=1)
        blas_users += 1


cdef void blas_single_thread_exit() except *:
    global blas_users, _active_limit
    if blas_set_threads != NULL:
        blas_users -= 1
        if blas_users == 0 and blas_saved_threads != 1:
            blas_set_threads(blas_saved_threads)
    elif _threadpool_limiter is not None:
        blas_users -= 1
        if blas_users == 0 and _active_limit is not None:
            _active_limit.restore_original_limits()
            _active_limit = None


def blas_thread_control():
    """How fastconv keeps BLAS single-threaded: 'direct', 'threadpoolctl' or 'none'."""
    if blas_set_threads != NULL:
        return "direct"
    return "threadpoolctl" if _threadpool_limiter is not None else "none"


# ----------------------------------------------------------------------------------------------
# Workspaces
# ----------------------------------------------------------------------------------------------

_free_workspaces = []      # byte arrays not in use; list.pop/append are atomic under the GIL
cdef Py_ssize_t MAX_KEPT_WORKSPACES = 4


cdef object checkout_workspace(Py_ssize_t nbytes):
    """A byte array of at least nbytes + ALIGN, owned by the caller until given back."""
    try:
        ws = _free_workspaces.pop()
    except IndexError:
        ws = None
    if ws is None or ws.shape[0] < nbytes + ALIGN:
        # Grow by replacing: the old buffer is released, never kept beside the new one.
        ws = None
        ws = np.empty(nbytes + ALIGN, dtype=np.uint8)
    return ws


cdef void return_workspace(object ws):
    if len(_free_workspaces) < MAX_KEPT_WORKSPACES:
        _free_workspaces.append(ws)


def release_workspaces():
    """Free every cached workspace (they are otherwise kept for the next call)."""
    del _free_workspaces[:]


def workspace_bytes():
    """Bytes held by cached workspaces (not counting those checked out right now)."""
    return sum(ws.nbytes for ws in list(_free_workspaces))


cdef inline char* aligned(object ws):
    cdef unsigned char[::1] view = ws
    cdef uintptr_t p = <uintptr_t>&view[0]
    return <char*>((p + ALIGN - 1) & ~(<uintptr_t>(ALIGN - 1)))


cdef inline index_t round_up(index_t count, index_t multiple) noexcept nogil:
    return (count + multiple - 1) // multiple * multiple


cdef inline index_t ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


# ----------------------------------------------------------------------------------------------
# Plan: shapes, blocks and the thread count of one call
# ----------------------------------------------------------------------------------------------

ctypedef struct ConvPlan:
    Window2D g            # geometry of one whole image (g.channels = C)
    index_t n_images      # N
    index_t filters       # F
    index_t ckk           # C*KH*KW: rows of the im2col matrix
    index_t ohw           # OH*OW: its columns
    index_t hw            # H*W
    bint pointwise        # 1x1, stride 1, no padding: the image already is the im2col matrix
    index_t col_blocks    # column blocks per image
    index_t block_cols    # columns per block (the last may be narrower)
    index_t threads       # threads to start (<= tasks)


cdef ConvPlan make_plan(tuple x_shape, tuple w_shape, stride, padding, dilation, int num_threads,
                       index_t itemsize) except *:
    cdef ConvPlan p
    cdef Window2D* g = &p.g
    p.n_images, g.channels, g.height, g.width = x_shape
    p.filters, _, g.kernel_h, g.kernel_w = w_shape
    g.stride_h, g.stride_w = stride
    g.pad_h, g.pad_w = padding
    g.dilation_h, g.dilation_w = dilation
    g.out_h = (g.height + 2 * g.pad_h - g.dilation_h * (g.kernel_h - 1) - 1) // g.stride_h + 1
    g.out_w = (g.width + 2 * g.pad_w - g.dilation_w * (g.kernel_w - 1) - 1) // g.stride_w + 1
    p.ckk = g.channels * g.kernel_h * g.kernel_w
    p.ohw = g.out_h * g.out_w
    p.hw = g.height * g.width
    if p.ckk > INT_MAX or p.ohw > INT_MAX or p.filters > INT_MAX:
        raise ValueError(
            f"convolution too large for BLAS (32-bit sizes): C*KH*KW={p.ckk}, OH*OW={p.ohw}, "
            f"F={p.filters}"
        )
    # A 1x1 kernel reads one pixel whatever its dilation.
    p.pointwise = (g.kernel_h == 1 and g.kernel_w == 1 and g.stride_h == 1 and g.stride_w == 1
                   and g.pad_h == 0 and g.pad_w == 0)
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


cdef inline EngineConv engine_problem(const ConvPlan* p) noexcept nogil:
    """The whole convolution as one problem of the engine (fastconv._ext._engine)."""
    cdef EngineConv c
    c.g = p.g
    c.n_images = p.n_images
    c.filters = p.filters
    c.x_image_stride = p.g.channels * p.hw
    c.y_image_stride = p.filters * p.ohw
    return c


cdef inline index_t clamp_threads(index_t threads, index_t tasks) noexcept nogil:
    return threads if threads < tasks else tasks


cdef inline const floating* column_block(const ConvPlan* p, const floating* x, index_t n,
                                         floating* buf, index_t start, index_t stop,
                                         int* ld) noexcept nogil:
    """Columns [start, stop) of image n's im2col matrix, and their leading dimension in *ld: the
    input plane itself for a pointwise convolution, otherwise im2col written into buf."""
    if p.pointwise:
        ld[0] = <int>p.ohw
        return x + n * p.ckk * p.hw + start
    im2col_image(x + n * p.g.channels * p.hw, buf, &p.g, start, stop)
    ld[0] = <int>(stop - start)
    return buf


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------

cdef void forward_task(const ConvPlan* p, index_t task, const floating* x, const floating* w,
                       const floating* b, floating* y, floating* buf) noexcept nogil:
    """y[n][:, block] = W @ cols[n][:, block] (+ b) for task = n * col_blocks + block."""
    cdef index_t n = task // p.col_blocks
    cdef index_t start = (task % p.col_blocks) * p.block_cols
    cdef index_t stop = min(start + p.block_cols, p.ohw)
    cdef index_t f, q
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
    cols = column_block(p, x, n, buf, start, stop, &ld)
    gemm(False, False, <int>p.filters, <int>(stop - start), <int>p.ckk, <floating>1, w, <int>p.ckk,
         cols, ld, beta, out, <int>p.ohw)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, stride, padding, dilation, int num_threads):
    """y = conv2d(x, w, b) (b may be None) for checked C-contiguous arguments."""
    cdef ConvPlan p = make_plan((x.shape[0], x.shape[1], x.shape[2], x.shape[3]),
                                (w.shape[0], w.shape[1], w.shape[2], w.shape[3]), stride, padding, dilation,
                                num_threads, sizeof(floating))
    cdef index_t tasks = p.n_images * p.col_blocks, t
    cdef index_t itemsize = sizeof(floating)
    cdef index_t per_thread = 0 if p.pointwise else round_up(p.ckk * p.block_cols, ALIGN // itemsize)
    cdef int threads = <int>clamp_threads(p.threads, tasks)
    y_array = np.empty((p.n_images, p.filters, p.g.out_h, p.g.out_w),
                       dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, :, ::1] y = y_array
    cdef const floating* bias = NULL if b is None else &b[0]
    cdef EngineConv conv = engine_problem(&p)
    cdef EnginePlan engine
    cdef char* scratch
    if plan_forward(&engine, &conv, itemsize, <int>p.threads):
        ws = checkout_workspace(engine.workspace_bytes)
        try:
            scratch = aligned(ws)
            with nogil:
                engine_forward(&engine, &x[0, 0, 0, 0], &w[0, 0, 0, 0], bias, &y[0, 0, 0, 0],
                               scratch)
        finally:
            return_workspace(ws)
        return y_array
    ws = checkout_workspace(threads * per_thread * itemsize)
    cdef floating* base = <floating*>aligned(ws)
    cdef floating* buf
    blas_single_thread_enter()
    try:
        if threads == 1:
            with nogil:
                for t in range(tasks):
                    forward_task(&p, t, &x[0, 0, 0, 0], &w[0, 0, 0, 0], bias, &y[0, 0, 0, 0], base)
        else:
            with nogil, parallel(num_threads=threads):
                buf = base + omp_get_thread_num() * per_thread
                for t in prange(tasks, schedule='dynamic'):
                    forward_task(&p, t, &x[0, 0, 0, 0], &w[0, 0, 0, 0], bias, &y[0, 0, 0, 0], buf)
    finally:
        blas_single_thread_exit()
        return_workspace(ws)
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
    """Large batch: every gradient of the images of one chunk, image by image, block by block."""
    cdef index_t first = chunk * p.n_images // n_chunks
    cdef index_t stop_image = (chunk + 1) * p.n_images // n_chunks
    cdef index_t n, block, start, stop
    cdef const floating* d
    cdef const floating* cols
    cdef floating* dx_n
    cdef int F = <int>p.filters, CKK = <int>p.ckk, OHW = <int>p.ohw, width, ld
    cdef bint overwrite
    for n in range(first, stop_image):
        dx_n = dx + n * p.g.channels * p.hw
        if not p.pointwise:
            memset(dx_n, 0, p.g.channels * p.hw * sizeof(floating))   # col2im accumulates
        for block in range(p.col_blocks):
            start = block * p.block_cols
            stop = min(start + p.block_cols, p.ohw)
            width = <int>(stop - start)
            d = dout + n * p.filters * p.ohw + start
            overwrite = n == first and block == 0
            cols = column_block(p, x, n, buf, start, stop, &ld)
            gemm(False, True, F, CKK, width, <floating>1, d, OHW, cols, ld,
                 <floating>(0 if overwrite else 1), dw_part, CKK)
            add_row_sums(d, p.filters, width, p.ohw, db_part, overwrite)
            if p.pointwise:
                gemm(True, False, CKK, width, F, <floating>1, w, CKK, d, OHW, <floating>0,
                     dx_n + start, OHW)
            else:
                # The im2col block is no longer needed: its buffer receives W^T @ dout block.
                gemm(True, False, CKK, width, F, <floating>1, w, CKK, d, OHW, <floating>0, buf, width)
                col2im_image(buf, dx_n, &p.g, start, stop)


cdef void weight_block_task(const ConvPlan* p, index_t task, index_t blocks_per_part,
                            const floating* dout, const floating* x,
                            floating* dw_part, floating* db_part, floating* buf) noexcept nogil:
    """Small batch: dW/db partial of `blocks_per_part` consecutive column blocks of one image."""
    cdef index_t per_image = ceil_div(p.col_blocks, blocks_per_part)
    cdef index_t n = task // per_image
    cdef index_t block = (task % per_image) * blocks_per_part
    cdef index_t block_stop = min(block + blocks_per_part, p.col_blocks)
    cdef index_t start, stop
    cdef const floating* d
    cdef const floating* cols
    cdef int ld
    cdef bint first = True
    while block < block_stop:
        start = block * p.block_cols
        stop = min(start + p.block_cols, p.ohw)
        d = dout + n * p.filters * p.ohw + start
        cols = column_block(p, x, n, buf, start, stop, &ld)
        gemm(False, True, <int>p.filters, <int>p.ckk, <int>(stop - start), <floating>1,
             d, <int>p.ohw, cols, ld, <floating>(0 if first else 1), dw_part, <int>p.ckk)
        add_row_sums(d, p.filters, stop - start, p.ohw, db_part, first)
        first = False
        block += 1


cdef void data_block_task(const ConvPlan* p, index_t task, index_t channel_blocks,
                          index_t block_channels, const floating* dout, const floating* w,
                          floating* dx, floating* buf) noexcept nogil:
    """Small batch: dx of one block of channels of one image (disjoint dx planes per task)."""
    cdef index_t n = task // channel_blocks
    cdef index_t c0 = (task % channel_blocks) * block_channels
    cdef index_t c1 = min(c0 + block_channels, p.g.channels)
    cdef index_t kk = p.g.kernel_h * p.g.kernel_w
    cdef index_t block, start, stop
    cdef Window2D g = p.g
    cdef floating* out = dx + (n * p.g.channels + c0) * p.hw
    cdef const floating* d = dout + n * p.filters * p.ohw
    g.channels = c1 - c0
    # Rows c0*KK .. c1*KK of W^T @ dout[n] come from columns c0*KK .. of W (row stride C*KK).
    if p.pointwise:
        gemm(True, False, <int>(g.channels * kk), <int>p.ohw, <int>p.filters, <floating>1,
             w + c0 * kk, <int>p.ckk, d, <int>p.ohw, <floating>0, out, <int>p.ohw)
        return
    memset(out, 0, g.channels * p.hw * sizeof(floating))   # col2im accumulates
    for block in range(p.col_blocks):
        start = block * p.block_cols
        stop = min(start + p.block_cols, p.ohw)
        gemm(True, False, <int>(g.channels * kk), <int>(stop - start), <int>p.filters,
             <floating>1, w + c0 * kk, <int>p.ckk, d + start, <int>p.ohw, <floating>0,
             buf, <int>(stop - start))
        col2im_image(buf, out, &g, start, stop)


cdef void backward_data_blas(const ConvPlan* p, const floating* dout, const floating* w,
                             floating* dx, floating* buffers, index_t per_thread,
                             index_t threads) noexcept nogil:
    """dx alone: one data_block_task per (image, block of channels); `buffers` holds
    `threads` im2col buffers of per_thread elements."""
    cdef index_t channel_blocks = min(p.g.channels, ceil_div(TASKS_TARGET, p.n_images))
    cdef index_t block_channels = ceil_div(p.g.channels, channel_blocks)
    cdef index_t tasks, t
    cdef floating* buf
    channel_blocks = ceil_div(p.g.channels, block_channels)
    tasks = p.n_images * channel_blocks
    threads = clamp_threads(threads, tasks)
    if threads == 1:
        for t in range(tasks):
            data_block_task(p, t, channel_blocks, block_channels, dout, w, dx, buffers)
    else:
        with parallel(num_threads=<int>threads):
            buf = buffers + omp_get_thread_num() * per_thread
            for t in prange(tasks, schedule='dynamic'):
                data_block_task(p, t, channel_blocks, block_channels, dout, w, dx, buf)


cdef void sum_partials(floating* dw, floating* db, const floating* parts, index_t n_parts,
                       index_t dw_size, index_t db_size) noexcept nogil:
    """dw += parts[0].dw + parts[1].dw + ... in part order (same for db): a fixed order."""
    cdef index_t k, i
    cdef const floating* part
    for k in range(n_parts):
        part = parts + k * round_up(dw_size + db_size, ALIGN // sizeof(floating))
        for i in range(dw_size):
            dw[i] = dw[i] + part[i]
        for i in range(db_size):
            db[i] = db[i] + part[dw_size + i]


def conv2d_backward(const floating[:, :, :, ::1] dout, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] w, stride, padding, dilation, int num_threads):
    """(dx, dw, db) of conv2d for checked C-contiguous arguments."""
    cdef ConvPlan p = make_plan((x.shape[0], x.shape[1], x.shape[2], x.shape[3]),
                                (w.shape[0], w.shape[1], w.shape[2], w.shape[3]), stride, padding, dilation,
                                num_threads, sizeof(floating))
    dtype = np.float32 if floating is float else np.float64
    dx_array = np.empty((p.n_images, p.g.channels, p.g.height, p.g.width), dtype=dtype)
    dw_array = np.empty((p.filters, p.g.channels, p.g.kernel_h, p.g.kernel_w), dtype=dtype)
    db_array = np.empty(p.filters, dtype=dtype)
    cdef floating[:, :, :, ::1] dx = dx_array
    cdef floating[:, :, :, ::1] dw = dw_array
    cdef floating[::1] db = db_array
    cdef index_t itemsize = sizeof(floating), vec = ALIGN // sizeof(floating)
    cdef index_t kk = p.g.kernel_h * p.g.kernel_w
    cdef index_t part_size = round_up(p.filters * p.ckk + p.filters, vec)
    cdef index_t n_chunks = 0, weight_parts = 0, blocks_per_part = 1
    cdef index_t channel_blocks = 1, block_channels = p.g.channels
    cdef index_t per_thread, tasks, t, n_parts
    cdef int threads
    cdef bint batch_mode = p.n_images >= TASKS_TARGET
    cdef const floating* d_ptr = &dout[0, 0, 0, 0]
    cdef const floating* x_ptr = &x[0, 0, 0, 0]
    cdef const floating* w_ptr = &w[0, 0, 0, 0]
    cdef floating* dx_ptr = &dx[0, 0, 0, 0]
    cdef floating* dw_ptr = &dw[0, 0, 0, 0]
    cdef floating* db_ptr = &db[0]
    cdef floating* parts
    cdef floating* scratch
    cdef floating* buf
    cdef floating* dw_part
    cdef floating* db_part
    cdef EngineConv conv = engine_problem(&p)
    cdef EnginePlan engine
    cdef char* engine_ws
    if plan_backward(&engine, &conv, itemsize, <int>p.threads):
        # dx by im2col + BLAS + col2im where the engine's tiles would leave most lanes empty.
        per_thread = 0 if engine.data_by_engine or p.pointwise else round_up(p.ckk * p.block_cols, vec)
        ws = checkout_workspace(engine.workspace_bytes + p.threads * per_thread * itemsize)
        engine_ws = aligned(ws)
        scratch = <floating*>(engine_ws + engine.workspace_bytes)
        blas_single_thread_enter()
        try:
            with nogil:
                engine_backward(&engine, d_ptr, x_ptr, w_ptr, dx_ptr, dw_ptr, db_ptr, engine_ws)
                if not engine.data_by_engine:
                    backward_data_blas(&p, d_ptr, w_ptr, dx_ptr, scratch, per_thread, p.threads)
        finally:
            blas_single_thread_exit()
            return_workspace(ws)
        return dx_array, dw_array, db_array
    if batch_mode:
        n_chunks = min(p.n_images, MAX_CHUNKS)
        n_parts = n_chunks - 1               # chunk 0 writes straight into dw/db
        per_thread = 0 if p.pointwise else round_up(p.ckk * p.block_cols, vec)
        threads = <int>clamp_threads(p.threads, n_chunks)
    else:
        blocks_per_part = ceil_div(p.n_images * p.col_blocks, MAX_WEIGHT_PARTIALS)
        blocks_per_part = min(blocks_per_part, p.col_blocks)
        weight_parts = p.n_images * ceil_div(p.col_blocks, blocks_per_part)
        n_parts = weight_parts - 1
        channel_blocks = min(p.g.channels, ceil_div(TASKS_TARGET, p.n_images))
        block_channels = ceil_div(p.g.channels, channel_blocks)
        channel_blocks = ceil_div(p.g.channels, block_channels)
        per_thread = 0
        if not p.pointwise:
            per_thread = round_up(p.ckk * p.block_cols, vec)
        threads = <int>clamp_threads(p.threads, max(weight_parts, p.n_images * channel_blocks))
    ws = checkout_workspace((n_parts * part_size + threads * per_thread) * itemsize)
    parts = <floating*>aligned(ws)
    scratch = parts + n_parts * part_size
    blas_single_thread_enter()
    try:
        if batch_mode:
            if threads == 1:
                with nogil:
                    for t in range(n_chunks):
                        dw_part = dw_ptr if t == 0 else parts + (t - 1) * part_size
                        db_part = db_ptr if t == 0 else dw_part + p.filters * p.ckk
                        backward_chunk_task(&p, t, n_chunks, d_ptr, x_ptr, w_ptr, dx_ptr,
                                            dw_part, db_part, scratch)
            else:
                with nogil, parallel(num_threads=threads):
                    buf = scratch + omp_get_thread_num() * per_thread
                    for t in prange(n_chunks, schedule='dynamic'):
                        dw_part = dw_ptr if t == 0 else parts + (t - 1) * part_size
                        db_part = db_ptr if t == 0 else dw_part + p.filters * p.ckk
                        backward_chunk_task(&p, t, n_chunks, d_ptr, x_ptr, w_ptr, dx_ptr,
                                            dw_part, db_part, buf)
        else:
            tasks = weight_parts
            if threads == 1 or tasks == 1:
                with nogil:
                    for t in range(tasks):
                        dw_part = dw_ptr if t == 0 else parts + (t - 1) * part_size
                        db_part = db_ptr if t == 0 else dw_part + p.filters * p.ckk
                        weight_block_task(&p, t, blocks_per_part, d_ptr, x_ptr, dw_part, db_part,
                                          scratch)
            else:
                with nogil, parallel(num_threads=<int>clamp_threads(threads, tasks)):
                    buf = scratch + omp_get_thread_num() * per_thread
                    for t in prange(tasks, schedule='dynamic'):
                        dw_part = dw_ptr if t == 0 else parts + (t - 1) * part_size
                        db_part = db_ptr if t == 0 else dw_part + p.filters * p.ckk
                        weight_block_task(&p, t, blocks_per_part, d_ptr, x_ptr, dw_part, db_part,
                                          buf)
            with nogil:
                backward_data_blas(&p, d_ptr, w_ptr, dx_ptr, scratch, per_thread, threads)
        with nogil:
            sum_partials(dw_ptr, db_ptr, parts, n_parts, p.filters * p.ckk, p.filters)
    finally:
        blas_single_thread_exit()
        return_workspace(ws)
    return dx_array, dw_array, db_array
