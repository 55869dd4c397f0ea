"""The convolution engine: direct convolution with micro-kernels of our own (kernels/*.c).

How a convolution is computed (docs/engine.md has the measurements behind each choice):

* Output channels fill the vector lanes; input values are broadcast. A tile of MR consecutive
  output pixels x NR output channels keeps its whole reduction (input channels x kernel taps)
  in registers and is stored once, transposed into NCHW.
* The input a band of output rows needs is first copied into a "window": the rows of all its
  channels side by side (row r: channel 0's columns, channel 1's, ...), zeros where the window
  meets the padding, and for a column stride s the columns split into s phases. In a window,
  tap k of output pixel m is at x[k_offsets[k] + m] whatever the padding, stride or dilation,
  and the rows a tile reads are contiguous (few pages, prefetch-friendly: 1.9x faster than
  reading the NCHW planes on a 56x56 layer).
* Weights are packed once per call: k-major, NR output channels per k, zero beyond the last.
* Backward-data of a layer of stride (sh, sw) is sh*sw "phases", each a stride-1 correlation of
  dout with the taps of that phase: it runs on the same tiles, with no col2im scatter.
* Backward-weight keeps MR weight rows ("taps") x NR filters of dW in registers and sums over
  output pixels: dout is transposed band by band (filters fill the lanes), x read from windows.
  The pixels are cut into `chunks` ranges of (image, output row) pairs fixed by the shape; each
  range has its own partial sums and the partials are added in chunk order, so dW and db are
  bitwise identical for every thread count.

Every output of a forward or backward-data tile is its full sum in one fixed order, so those
results do not depend on how work is split at all; backward-weight depends on `chunks` only.
"""

import os
import warnings

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stddef cimport ptrdiff_t
from libc.string cimport memset

from fastconv._ext._typedefs cimport index_t, Window2D
from fastconv._ext._openmp cimport omp_get_thread_num

cdef extern from "kernels/kernels.h":
    int FC_ISA_GENERIC, FC_ISA_AVX2, FC_ISA_AVX512, FC_ISA_COUNT
    int fc_cpu_isa() noexcept nogil
    const fc_isa_kernels* fc_isa_kernels_for(int isa) noexcept nogil
    size_t fc_cache_bytes(int level) noexcept nogil

# Enough tasks for up to this many threads (forward and backward-data: bands of output rows of
# small batches; backward-weight: chunks x filter groups).
cdef index_t TASKS_TARGET = 8
cdef index_t MAX_CHUNKS = 8
# Backward-weight partial sums take at most this fraction of the inputs + outputs of a forward +
# backward pair, and all of the workspace (with the threads' windows) about WORKSPACE_FRACTION.
cdef double PARTIALS_FRACTION = 0.04
cdef double WORKSPACE_FRACTION = 0.2
# A backward-weight chunk holds at least this many output pixels (fewer: not worth a partial).
cdef index_t MIN_CHUNK_PIXELS = 4096
# With the automatic choice, a pass whose tiles would use less than this fraction of the FMA
# issue slots (mostly: fewer output channels than half a vector) goes to im2col + BLAS.
cdef double MIN_EFFICIENCY = 0.5
# Independent FMA chains a tile needs to keep the FMA pipes busy (latency x pipes).
cdef double MIN_CHAINS = 8
# Sub-buffers of the workspace start on 64-byte boundaries.
cdef index_t ALIGN = 64
# The engine declines windows larger than this (huge paddings or dilations over small inputs:
# the im2col path handles those without materialising the padding).
cdef index_t MAX_WINDOW_BYTES = 64 * 1024 * 1024

# Cache sizes steer blocking only (never results); unknown sizes take typical values.
cdef index_t L1_BYTES = fc_cache_bytes(1) or 32 * 1024
cdef index_t L2_BYTES = fc_cache_bytes(2) or 512 * 1024


# ----------------------------------------------------------------------------------------------
# Instruction set: the best one this CPU runs, or a lower one that FASTCONV_ISA asks for
# ----------------------------------------------------------------------------------------------

ISA_NAMES = ("generic", "avx2", "avx512")
cdef int cpu_isa = fc_cpu_isa()
cdef const fc_isa_kernels* active_kernels = fc_isa_kernels_for(cpu_isa)


cdef list missing_kernels(const fc_isa_kernels* k):
    """Names of the kernels a plan could ask this table for that it does not have (a table
    filled wrong would otherwise crash on a NULL pointer, not fail to import)."""
    cdef int nv, mr, i
    missing = []
    for nv in range(1, FC_MAX_NV + 1):
        for mr in range(1, k.max_mr[nv] + 1):
            if (k.f32_conv[nv][mr] == NULL or k.f64_conv[nv][mr] == NULL or k.f32_wgrad[nv][mr] == NULL
                    or k.f64_wgrad[nv][mr] == NULL or k.f32_gemm[nv][mr] == NULL
                    or k.f64_gemm[nv][mr] == NULL):
                missing.append(f"tiles {mr}x{nv}")
    for i in range(2):
        if (k.f32_winograd_input[i] == NULL or k.f64_winograd_input[i] == NULL
                or k.f32_winograd_output[i] == NULL or k.f64_winograd_output[i] == NULL):
            missing.append("winograd transforms")
    if (k.f32_window_rows == NULL or k.f64_window_rows == NULL or k.f32_transpose == NULL
            or k.f64_transpose == NULL or k.f32_fma_probe == NULL or k.f64_fma_probe == NULL):
        missing.append("window rows, transposes or probes")
    if k.max_mr[1] == 0:
        missing.append("one-vector tiles")
    return missing


def _check_kernel_tables():
    for level in range(FC_ISA_COUNT):
        if fc_isa_kernels_for(level) != NULL:
            missing = missing_kernels(fc_isa_kernels_for(level))
            if missing:
                raise RuntimeError(f"fastconv: the {ISA_NAMES[level]} kernel table lacks "
                                   f"{', '.join(missing)} (a build error)")


_check_kernel_tables()


def supported_isas():
    """The instruction sets this CPU (and this build) can run, lowest first."""
    return [name for level, name in enumerate(ISA_NAMES)
            if level <= cpu_isa and fc_isa_kernels_for(level) != NULL]


def isa():
    """The instruction set the engine's kernels use now."""
    return active_kernels.name.decode()


def _set_isa(name):
    """Use the kernels of `name` (one of supported_isas()) from now on; returns the previous
    name. Private: the tests run every kernel path this CPU can run in one process. Calls that
    already planned keep their kernels."""
    global active_kernels
    if name not in supported_isas():
        raise ValueError(f"_set_isa: {name!r} is not one of this CPU's instruction sets "
                         f"{supported_isas()}")
    previous = isa()
    active_kernels = fc_isa_kernels_for(ISA_NAMES.index(name))
    return previous


def _isa_from_environment():
    """FASTCONV_ISA=avx512|avx2|generic forces a lower instruction set (never a higher one)."""
    wanted = os.environ.get("FASTCONV_ISA", "").strip().lower()
    if not wanted:
        return
    if wanted not in ISA_NAMES:
        warnings.warn(f"fastconv: FASTCONV_ISA={wanted!r} is not one of {ISA_NAMES}; using "
                      f"{isa()}", RuntimeWarning, stacklevel=2)
    elif wanted not in supported_isas():
        warnings.warn(f"fastconv: FASTCONV_ISA={wanted!r} is not supported by this CPU; using "
                      f"{isa()}", RuntimeWarning, stacklevel=2)
    else:
        _set_isa(wanted)


_isa_from_environment()


# ----------------------------------------------------------------------------------------------
# Algorithm: "auto" lets the plan choose; "direct" uses the engine's direct kernels wherever
# they can run (never Winograd); "winograd" uses Winograd wherever it applies (3x3, stride 1,
# dilation 1) and the direct kernels elsewhere; "im2col" always takes im2col + BLAS.
# FASTCONV_CONV_ALGORITHM sets it at import.
# ----------------------------------------------------------------------------------------------

ALGORITHMS = ("auto", "direct", "winograd", "im2col")
cdef enum:
    ALGORITHM_AUTO = 0
    ALGORITHM_DIRECT = 1
    ALGORITHM_WINOGRAD = 2
    ALGORITHM_IM2COL = 3
cdef int algorithm_choice = ALGORITHM_AUTO


def get_algorithm():
    """The convolution algorithm in force: "auto", "direct" or "im2col"."""
    return ALGORITHMS[algorithm_choice]


def set_algorithm(name):
    """Force a convolution algorithm ("direct", "winograd", "im2col") or let the plan choose
    ("auto"); returns the previous setting. Results of every algorithm agree within the bounds
    of docs/numerics.md."""
    global algorithm_choice
    if name not in ALGORITHMS:
        raise ValueError(f"set_algorithm: algorithm must be one of {ALGORITHMS}, got {name!r}")
    previous = get_algorithm()
    algorithm_choice = ALGORITHMS.index(name)
    return previous


def _algorithm_from_environment():
    wanted = os.environ.get("FASTCONV_CONV_ALGORITHM", "").strip().lower()
    if not wanted:
        return
    if wanted in ALGORITHMS:
        set_algorithm(wanted)
    else:
        warnings.warn(f"fastconv: FASTCONV_CONV_ALGORITHM={wanted!r} is not one of "
                      f"{ALGORITHMS}; using auto", RuntimeWarning, stacklevel=2)


_algorithm_from_environment()


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------

cdef inline index_t ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline index_t round_up(index_t count, index_t multiple) noexcept nogil:
    return ceil_div(count, multiple) * multiple


cdef inline index_t imin(index_t a, index_t b) noexcept nogil:
    return a if a < b else b


cdef inline index_t imax(index_t a, index_t b) noexcept nogil:
    return a if a > b else b


cdef inline index_t pos_mod(index_t a, index_t m) noexcept nogil:
    cdef index_t r = a % m
    return r + m if r < 0 else r


cdef inline index_t vector_elems(const EnginePlan* plan, index_t count) noexcept nogil:
    """count elements rounded up to whole 64-byte lines."""
    return round_up(count, ALIGN // plan.itemsize)


# ----------------------------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------------------------

cdef double tile_efficiency(const fc_isa_kernels* kern, int nv, index_t cols, index_t cout,
                            index_t lanes) noexcept nogil:
    """Useful fraction of the FMA issue slots that tiles of nv vectors take for one output row
    of `cols` pixels and `cout` channels. A k-step of an MR x NV tile issues MR*NV FMAs, MR + NV
    loads (as many slots on a core with as many load ports as FMA pipes), and needs at least
    MIN_CHAINS independent accumulators to cover the FMA latency (4 cycles x 2 pipes)."""
    cdef index_t nvec = ceil_div(cout, lanes)
    cdef index_t blocks = ceil_div(nvec, nv), tiles = ceil_div(cols, kern.max_mr[nv])
    cdef double mr = <double>cols / tiles
    cdef double slots = blocks * tiles * max(max(mr * nv, mr + nv), <double>MIN_CHAINS)
    return (<double>cols * cout / lanes) / slots


cdef int choose_nv(const fc_isa_kernels* kern, index_t cols, index_t cout, index_t lanes,
                   double* efficiency) noexcept nogil:
    """The vectors per output-channel block with the best tile_efficiency (ties: more)."""
    cdef int nv, best = 0
    cdef double e, best_e = -1.0
    for nv in range(1, FC_MAX_NV + 1):
        if kern.max_mr[nv] == 0:
            continue
        e = tile_efficiency(kern, nv, cols, cout, lanes)
        if e >= best_e - 1e-9:
            best, best_e = nv, e
    efficiency[0] = best_e
    return best


cdef bint finish_pass(EnginePlan* plan, DirectPass* d, index_t n_images) except -1:
    """Window geometry, channel blocks and bands of a pass whose taps and mapping are set."""
    cdef index_t lanes = plan.lanes, max_tap_col = 0, max_tap_row = 0, a, nvec
    for a in range(d.n_tap_rows):
        max_tap_row = imax(max_tap_row, d.tap_row[a])
    for a in range(d.n_tap_cols):
        max_tap_col = imax(max_tap_col, d.tap_col[a])
    # Window bytes in floating point first: with hyper-parameters near 2**31 the integer
    # products below would overflow.
    cdef double width = (d.cols - 1.0) * d.step_w + max_tap_col + 1.0
    cdef double phase_width = <double>ceil_div(<index_t>min(width, 1e15), d.step_w)
    if (max_tap_row + 1.0) * d.cin * d.step_w * phase_width * plan.itemsize > MAX_WINDOW_BYTES:
        return False
    d.taps = d.n_tap_rows * d.n_tap_cols
    d.k_count = d.cin * d.taps
    d.tap_rows_span = max_tap_row + 1
    d.win_w = (d.cols - 1) * d.step_w + max_tap_col + 1
    d.win_pw = ceil_div(d.win_w, d.step_w)
    d.win_cs = d.step_w * d.win_pw
    d.win_rs = d.cin * d.win_cs
    # One output row reading one whole source row, stride 1, no padding: the window would be
    # a copy of the source.
    d.window_is_source = (d.src_h == 1 and d.rows == 1 and d.tap_rows_span == 1
                          and d.src_row0 == 0 and d.src_col0 == 0 and d.step_w == 1
                          and d.win_w == d.src_w and d.src_channel_stride == d.win_cs)
    d.nv = choose_nv(plan.kernels, d.cols, d.cout, lanes, &d.efficiency)
    d.nr = d.nv * lanes
    nvec = ceil_div(d.cout, lanes)
    d.blocks = ceil_div(nvec, d.nv)
    d.last_nv = <int>(nvec - (d.blocks - 1) * d.nv)
    if plan.kernels.max_mr[d.last_nv] == 0:     # no kernel this narrow: pad the last block
        d.last_nv = d.nv
    return True


cdef void set_bands(const EnginePlan* plan, DirectPass* d, index_t n_images,
                    index_t window_bytes) noexcept nogil:
    """Bands of output rows per task: a window of at most window_bytes (it is reread for every
    block of output channels), and enough tasks for several threads on a small batch. Bands
    decide only how work is cut, never a result."""
    d.band_rows = imax(1, imin(d.rows, window_bytes // imax(1, d.win_rs * d.step_h * plan.itemsize)))
    d.bands = ceil_div(d.rows, d.band_rows)
    if n_images * d.bands < TASKS_TARGET:
        d.bands = imax(d.bands, imin(d.rows, ceil_div(TASKS_TARGET, n_images)))
    d.band_rows = ceil_div(d.rows, d.bands)
    d.bands = ceil_div(d.rows, d.band_rows)


cdef index_t window_budget(const EnginePlan* plan, index_t shared_bytes) noexcept nogil:
    """Bytes of window per thread: about L2/4, less when the threads' windows and the shared
    tables would take more than WORKSPACE_FRACTION of the call's inputs + outputs."""
    cdef index_t spare = <index_t>(WORKSPACE_FRACTION * plan.io_bytes) - shared_bytes
    return imin(L2_BYTES // 4, imax(0, spare) // plan.threads)


cdef index_t pass_window_elems(const EnginePlan* plan, const DirectPass* d) noexcept nogil:
    if d.window_is_source:
        return 0
    return vector_elems(plan, ((d.band_rows - 1) * d.step_h + d.tap_rows_span) * d.win_rs)


cdef index_t pass_weight_elems(const DirectPass* d, index_t lanes) noexcept nogil:
    return d.k_count * ((d.blocks - 1) * d.nr + d.last_nv * lanes)


cdef bint start_plan(EnginePlan* plan, const EngineConv* conv, index_t itemsize, int threads):
    """Common checks: the engine takes kernels up to ENGINE_MAX_KERNEL wide and needs kernels
    for this instruction set. A 1x1, stride-1, unpadded layer is planned as one row of H*W
    pixels: its window is then the input itself (no copy) and its tiles run along the whole
    plane."""
    cdef const Window2D* g = &conv.g
    plan.conv = conv[0]
    if (g.kernel_h == 1 and g.kernel_w == 1 and g.stride_h == 1 and g.stride_w == 1
            and g.pad_h == 0 and g.pad_w == 0):
        plan.conv.g.width = plan.conv.g.out_w = g.height * g.width
        plan.conv.g.height = plan.conv.g.out_h = 1
        plan.conv.g.dilation_h = plan.conv.g.dilation_w = 1
        conv = &plan.conv
    plan.kernels = active_kernels
    plan.itemsize = itemsize
    plan.lanes = active_kernels.f32_lanes if itemsize == 4 else active_kernels.f64_lanes
    plan.threads = threads if threads >= 1 else 1
    plan.n_passes = 0
    plan.backward = False
    plan.has_winograd = False
    plan.shared_elems = 0
    plan.thread_elems = 0
    # The workspace bound of BENCH.md is over a forward + backward pair: inputs and outputs
    # x, w, b, dout, y, dx, dw, db, that is twice x + w + b + y, whichever pass is planned.
    plan.io_bytes = 2 * itemsize * (conv.n_images * g.channels * g.height * g.width
                                    + conv.filters * g.channels * g.kernel_h * g.kernel_w
                                    + conv.filters + conv.n_images * conv.filters * g.out_h * g.out_w)
    if algorithm_choice == ALGORITHM_IM2COL:
        return False
    return g.kernel_h <= ENGINE_MAX_KERNEL and g.kernel_w <= ENGINE_MAX_KERNEL


cdef void forward_geometry(DirectPass* d, const EngineConv* conv) noexcept nogil:
    """The forward pass: src = x, out = y, taps (i*dh, j*dw)."""
    cdef const Window2D* g = &conv.g
    cdef index_t i
    d.cin, d.cout = g.channels, conv.filters
    d.n_tap_rows, d.n_tap_cols = g.kernel_h, g.kernel_w
    for i in range(g.kernel_h):
        d.tap_row[i] = i * g.dilation_h
        d.tap_weight_row[i] = i
    for i in range(g.kernel_w):
        d.tap_col[i] = i * g.dilation_w
        d.tap_weight_col[i] = i
    d.kernel_w = g.kernel_w
    d.w_out_stride = g.channels * g.kernel_h * g.kernel_w
    d.w_in_stride = g.kernel_h * g.kernel_w
    d.src_h, d.src_w = g.height, g.width
    d.src_channel_stride = g.height * g.width
    d.src_image_stride = conv.x_image_stride
    d.src_row0, d.src_col0 = -g.pad_h, -g.pad_w
    d.rows, d.cols = g.out_h, g.out_w
    d.step_h, d.step_w = g.stride_h, g.stride_w
    d.out_origin = 0
    d.out_row_step, d.out_col_step = g.out_w, 1
    d.out_channel_stride = g.out_h * g.out_w
    d.out_image_stride = conv.y_image_stride


cdef index_t phase_taps(index_t kernel, index_t dilation, index_t stride, index_t phase,
                        index_t* taps, index_t* q) noexcept nogil:
    """Kernel offsets i with i*dilation = phase (mod stride), and q_i = (i*dilation - phase) /
    stride: output row sh*u + phase - pad gets dout row u - q_i from tap i."""
    cdef index_t i, n = 0
    for i in range(kernel):
        if (i * dilation) % stride == phase:
            taps[n] = i
            q[n] = (i * dilation - phase) // stride
            n += 1
    return n


cdef bint backward_data_geometry(EnginePlan* plan, const EngineConv* conv) except -1:
    """One pass per stride phase (rh, rw): dx rows h with (h + ph) % sh == rh (and columns
    alike) are a stride-1 correlation of dout with the taps i*dh = rh (mod sh)."""
    cdef const Window2D* g = &conv.g
    cdef index_t rh, rw, a, first_h, first_w, u_first, v_first, qmax_h, qmax_w
    cdef index_t n_rows, n_cols
    cdef index_t taps_h[ENGINE_MAX_KERNEL]
    cdef index_t taps_w[ENGINE_MAX_KERNEL]
    cdef index_t q_h[ENGINE_MAX_KERNEL]
    cdef index_t q_w[ENGINE_MAX_KERNEL]
    cdef DirectPass* d
    if g.stride_h * g.stride_w > ENGINE_MAX_PASSES:
        return False
    for rh in range(g.stride_h):
        first_h = pos_mod(rh - g.pad_h, g.stride_h)
        if first_h >= g.height:
            continue
        n_rows = phase_taps(g.kernel_h, g.dilation_h, g.stride_h, rh, taps_h, q_h)
        for rw in range(g.stride_w):
            first_w = pos_mod(rw - g.pad_w, g.stride_w)
            if first_w >= g.width:
                continue
            n_cols = phase_taps(g.kernel_w, g.dilation_w, g.stride_w, rw, taps_w, q_w)
            d = &plan.passes[plan.n_passes]
            plan.n_passes += 1
            d.cin, d.cout = conv.filters, g.channels
            d.n_tap_rows, d.n_tap_cols = n_rows, n_cols
            qmax_h = 0
            qmax_w = 0
            for a in range(n_rows):
                qmax_h = imax(qmax_h, q_h[a])
            for a in range(n_cols):
                qmax_w = imax(qmax_w, q_w[a])
            for a in range(n_rows):
                d.tap_row[a] = qmax_h - q_h[a]
                d.tap_weight_row[a] = taps_h[a]
            for a in range(n_cols):
                d.tap_col[a] = qmax_w - q_w[a]
                d.tap_weight_col[a] = taps_w[a]
            d.kernel_w = g.kernel_w
            d.w_out_stride = g.kernel_h * g.kernel_w
            d.w_in_stride = g.channels * g.kernel_h * g.kernel_w
            d.src_h, d.src_w = g.out_h, g.out_w
            d.src_channel_stride = g.out_h * g.out_w
            d.src_image_stride = conv.y_image_stride
            u_first = (first_h + g.pad_h - rh) // g.stride_h
            v_first = (first_w + g.pad_w - rw) // g.stride_w
            d.src_row0, d.src_col0 = u_first - qmax_h, v_first - qmax_w
            d.rows = ceil_div(g.height - first_h, g.stride_h)
            d.cols = ceil_div(g.width - first_w, g.stride_w)
            d.step_h, d.step_w = 1, 1
            d.out_origin = first_h * g.width + first_w
            d.out_row_step, d.out_col_step = g.stride_h * g.width, g.stride_w
            d.out_channel_stride = g.height * g.width
            d.out_image_stride = conv.x_image_stride
            if d.n_tap_rows == 0 or d.n_tap_cols == 0:
                # No tap reaches these dx positions: they are zeros (no window, no weights).
                d.n_tap_rows = d.n_tap_cols = 0
                d.taps = d.k_count = 0
                d.band_rows, d.bands = d.rows, 1
                d.blocks = 0
                continue
            if not finish_pass(plan, d, conv.n_images):
                return False
    return True


cdef void place_pass_tables(EnginePlan* plan, bint with_bias) noexcept nogil:
    """Place each pass's offset table, packed weights (and the bias) in the shared workspace."""
    cdef int i
    cdef DirectPass* d
    for i in range(plan.n_passes):
        d = &plan.passes[i]
        if d.k_count == 0:
            continue
        d.koff_at = plan.shared_elems
        plan.shared_elems += vector_elems(plan, ceil_div(d.k_count * sizeof(ptrdiff_t), plan.itemsize))
        d.weights_at = plan.shared_elems
        plan.shared_elems += vector_elems(plan, pass_weight_elems(d, plan.lanes))
        d.bias_at = plan.shared_elems
        if with_bias:
            plan.shared_elems += vector_elems(plan, d.blocks * d.nr)


cdef void size_pass_windows(EnginePlan* plan) noexcept nogil:
    """Cut the passes into bands once the shared workspace is known; every thread gets a
    window as large as the largest pass needs."""
    cdef int i
    cdef DirectPass* d
    cdef index_t budget = window_budget(plan, plan.shared_elems * plan.itemsize)
    for i in range(plan.n_passes):
        d = &plan.passes[i]
        if d.k_count == 0:
            continue
        set_bands(plan, d, plan.conv.n_images, budget)
        plan.thread_elems = imax(plan.thread_elems, pass_window_elems(plan, d))


cdef void finish_workspace(EnginePlan* plan) noexcept nogil:
    """The larger of the direct layout and (when planned) Winograd's, which overlap."""
    plan.workspace_bytes = (plan.shared_elems + plan.threads * plan.thread_elems) * plan.itemsize
    if plan.has_winograd:
        plan.workspace_bytes = imax(plan.workspace_bytes, plan.itemsize * (
            plan.wino.shared_elems + plan.wino.threads * plan.wino.thread_elems))


cdef bint plan_forward(EnginePlan* plan, const EngineConv* conv, index_t itemsize,
                       int threads) except -1:
    """Fill plan for y = conv(x, w) + b; False: the engine declines (use im2col + BLAS)."""
    if not start_plan(plan, conv, itemsize, threads):
        return False
    forward_geometry(&plan.passes[0], &plan.conv)
    plan.n_passes = 1
    if not finish_pass(plan, &plan.passes[0], conv.n_images):
        return False
    if algorithm_choice == ALGORITHM_AUTO and plan.passes[0].efficiency < MIN_EFFICIENCY:
        return False
    place_pass_tables(plan, True)
    size_pass_windows(plan)
    plan.has_winograd = plan_winograd(plan, &plan.passes[0], plan.conv.n_images, True)
    finish_workspace(plan)
    return True


cdef bint plan_backward(EnginePlan* plan, const EngineConv* conv, index_t itemsize,
                        int threads) except -1:
    """Fill plan for (dx, dw, db); False: the engine declines (use im2col + BLAS)."""
    cdef const Window2D* g = &conv.g
    cdef WeightPass* wp = &plan.wgrad
    cdef DirectPass* win = &plan.wgrad_window
    cdef index_t pixels, band_pixels, partial_bytes, budget
    cdef double eff
    cdef int i
    if not start_plan(plan, conv, itemsize, threads):
        return False
    plan.backward = True
    if not backward_data_geometry(plan, &plan.conv):
        return False
    plan.data_by_engine = True
    for i in range(plan.n_passes):
        if plan.passes[i].k_count > 0 and plan.passes[i].efficiency < MIN_EFFICIENCY:
            plan.data_by_engine = algorithm_choice == ALGORITHM_DIRECT
    if plan.data_by_engine:
        place_pass_tables(plan, False)
    else:
        plan.n_passes = 0
    # Backward-weight reads the forward pass's windows.
    forward_geometry(win, &plan.conv)
    g = &plan.conv.g
    if not finish_pass(plan, win, conv.n_images):
        return False
    wp.cin, wp.filters = g.channels, conv.filters
    wp.taps = g.kernel_h * g.kernel_w
    wp.k_count = wp.cin * wp.taps
    wp.nv = choose_nv(plan.kernels, wp.k_count, wp.filters, plan.lanes, &eff)
    if algorithm_choice == ALGORITHM_AUTO and eff < MIN_EFFICIENCY:
        return False
    wp.nr = wp.nv * plan.lanes
    wp.blocks = ceil_div(wp.filters, wp.nr)
    wp.fpad = wp.blocks * wp.nr
    wp.tap_tiles = ceil_div(wp.k_count, plan.kernels.max_mr[wp.nv])
    # Chunks: fixed by the shape alone (they decide the summation order of dW and db).
    pixels = conv.n_images * g.out_h * g.out_w
    wp.partial_elems = vector_elems(plan, wp.k_count * wp.fpad + wp.fpad)
    partial_bytes = wp.partial_elems * itemsize
    wp.chunks = imin(MAX_CHUNKS, imin(conv.n_images * g.out_h, imax(1, pixels // MIN_CHUNK_PIXELS)))
    wp.chunks = imax(1, imin(wp.chunks, <index_t>(PARTIALS_FRACTION * plan.io_bytes) // partial_bytes))
    wp.groups = imin(wp.blocks, ceil_div(TASKS_TARGET, wp.chunks))
    wp.blocks_per_group = ceil_div(wp.blocks, wp.groups)
    wp.groups = ceil_div(wp.blocks, wp.blocks_per_group)
    wp.partials_at = plan.shared_elems
    plan.shared_elems += wp.chunks * wp.partial_elems
    win.koff_at = plan.shared_elems
    plan.shared_elems += vector_elems(plan, ceil_div(wp.k_count * sizeof(ptrdiff_t), itemsize))
    size_pass_windows(plan)
    # Bands of output rows (or segments of one long row) whose transposed dout, one filter block
    # wide, stays in L1; inside bands of window rows sized like the forward's (a window is
    # copied once for several dout bands: its halo rows are not copied again).
    band_pixels = imax(1, (L1_BYTES // 2) // (wp.nr * itemsize))
    wp.band_rows = imax(1, imin(g.out_h, band_pixels // g.out_w))
    wp.band_cols = g.out_w if wp.band_rows > 1 else imin(g.out_w, band_pixels)
    budget = window_budget(plan, plan.shared_elems * itemsize) - itemsize * vector_elems(
        plan, wp.band_rows * wp.band_cols * wp.blocks_per_group * wp.nr)
    win.band_rows = imax(wp.band_rows, imin(g.out_h, budget // imax(1, itemsize * win.win_rs * win.step_h)))
    plan.thread_elems = imax(plan.thread_elems,
                             (0 if win.window_is_source else pass_window_elems(plan, win))
                             + vector_elems(plan, wp.band_rows * wp.band_cols * wp.blocks_per_group * wp.nr))
    if plan.data_by_engine and plan.n_passes == 1:
        plan.has_winograd = plan_winograd(plan, &plan.passes[0], plan.conv.n_images, False)
    finish_workspace(plan)
    return True


# ----------------------------------------------------------------------------------------------
# Layout conversions
# ----------------------------------------------------------------------------------------------

cdef void fill_offsets(const DirectPass* d, ptrdiff_t* koff) noexcept nogil:
    """koff[c * taps + t]: where tap t of input channel c is in a window, relative to the
    window position of output pixel (0, 0)."""
    cdef index_t c, a, b, col, k = 0
    for c in range(d.cin):
        for a in range(d.n_tap_rows):
            for b in range(d.n_tap_cols):
                col = d.tap_col[b]
                koff[k] = (d.tap_row[a] * d.win_rs + c * d.win_cs
                           + (col % d.step_w) * d.win_pw + col // d.step_w)
                k += 1


cdef void pack_weights(const DirectPass* d, index_t lanes, const floating* w,
                       floating* packed) noexcept nogil:
    """packed[block][k][lane]: weight(block*nr + lane, k), zero beyond cout; the last block is
    last_nv vectors wide."""
    cdef index_t blk, width, co, c, a, b, k, lane, f0
    cdef const floating* src
    for blk in range(d.blocks):
        width = d.nr if blk < d.blocks - 1 else d.last_nv * lanes
        f0 = blk * d.nr
        for c in range(d.cin):
            for a in range(d.n_tap_rows):
                for b in range(d.n_tap_cols):
                    k = (c * d.n_tap_rows + a) * d.n_tap_cols + b
                    src = w + c * d.w_in_stride + d.tap_weight_row[a] * d.kernel_w + d.tap_weight_col[b]
                    for lane in range(width):
                        co = f0 + lane
                        packed[k * width + lane] = src[co * d.w_out_stride] if co < d.cout else 0
        packed += d.k_count * width


cdef void copy_window(const fc_isa_kernels* kern, const DirectPass* d, const floating* src,
                      index_t u0, index_t u1, floating* win) noexcept nogil:
    """The window of output rows [u0, u1): win[r][c][phase][s] = src[c][row][col] with
    row = src_row0 + u0*step_h + r, col = src_col0 + s*step_w + phase (0 outside the planes).
    Rows inside the planes by the instruction set's window-rows kernel for strides 1 and 2
    (window rows are short: plain loops spent more on their set-up than on copying)."""
    cdef index_t first_row = d.src_row0 + u0 * d.step_h
    cdef index_t n_rows = (u1 - u0 - 1) * d.step_h + d.tap_rows_span
    cdef index_t r_lo = imin(n_rows, imax(0, -first_row))
    cdef index_t r_hi = imax(r_lo, imin(n_rows, d.src_h - first_row))
    cdef index_t r, c, t
    cdef const floating* plane_row
    cdef floating* dst
    memset(win, 0, r_lo * d.win_rs * sizeof(floating))
    memset(win + r_hi * d.win_rs, 0, (n_rows - r_hi) * d.win_rs * sizeof(floating))
    if d.step_w <= 2:
        if floating is float:
            kern.f32_window_rows(r_hi - r_lo, d.cin, src + (first_row + r_lo) * d.src_w, d.src_w,
                                 d.src_channel_stride, d.src_col0, d.src_w, d.step_w, d.win_pw,
                                 win + r_lo * d.win_rs, d.win_rs, d.win_cs)
        else:
            kern.f64_window_rows(r_hi - r_lo, d.cin, src + (first_row + r_lo) * d.src_w, d.src_w,
                                 d.src_channel_stride, d.src_col0, d.src_w, d.step_w, d.win_pw,
                                 win + r_lo * d.win_rs, d.win_rs, d.win_cs)
        return
    for r in range(r_lo, r_hi):
        for c in range(d.cin):
            plane_row = src + c * d.src_channel_stride + (first_row + r) * d.src_w
            dst = win + r * d.win_rs + c * d.win_cs
            for t in range(d.step_w):
                strided_phase(plane_row, d.src_col0 + t, d.step_w, d.src_w, d.win_pw,
                              dst + t * d.win_pw)


cdef inline void strided_phase(const floating* src_row, index_t col0, index_t step,
                               index_t src_w, index_t width, floating* dst) noexcept nogil:
    """dst[q] = src_row[col0 + q*step] for q < width (0 where the column is outside)."""
    cdef index_t q_lo = imin(width, imax(0, ceil_div(-col0, step)))
    cdef index_t q_hi = imax(q_lo, imin(width, ceil_div(src_w - col0, step)))
    cdef index_t q
    cdef const floating* src = src_row + col0
    for q in range(q_lo):
        dst[q] = 0
    for q in range(q_lo, q_hi):
        dst[q] = src[q * step]
    for q in range(q_hi, width):
        dst[q] = 0


cdef void transpose_dout(const fc_isa_kernels* kern, const floating* dout, index_t plane,
                         index_t p0, index_t p1, index_t f0, index_t f1, index_t filters,
                         index_t width, floating* dout_t, floating* db) noexcept nogil:
    """dout_t[p - p0][f - f0] = dout[f][p] for p in [p0, p1), f in [f0, f1) (zero for
    f >= filters), and db[f] += dout[f][p0] + ... + dout[f][p1 - 1] in pixel order."""
    cdef index_t f, p, n = p1 - p0, valid = imin(f1, filters) - f0
    cdef floating* row
    if floating is float:
        kern.f32_transpose(valid, n, dout + f0 * plane + p0, plane, dout_t, width)
    else:
        kern.f64_transpose(valid, n, dout + f0 * plane + p0, plane, dout_t, width)
    for p in range(n):
        row = dout_t + p * width
        for f in range(valid, width):
            row[f] = 0
        # One filter per lane, pixels in order: the same sums as a loop over each dout row.
        for f in range(valid):
            db[f0 + f] += row[f]


# ----------------------------------------------------------------------------------------------
# Tiles
# ----------------------------------------------------------------------------------------------

cdef inline void conv_tile(const fc_isa_kernels* kern, int nv, index_t mr, index_t k_count,
                           const floating* x, const ptrdiff_t* koff, const floating* w,
                           const floating* bias, floating* y, index_t y_channel_stride,
                           index_t y_pixel_stride, index_t nr_valid) noexcept nogil:
    if floating is float:
        kern.f32_conv[nv][mr](k_count, x, koff, w, bias, y, y_channel_stride, y_pixel_stride,
                              nr_valid)
    else:
        kern.f64_conv[nv][mr](k_count, x, koff, w, bias, y, y_channel_stride, y_pixel_stride,
                              nr_valid)


cdef inline void wgrad_tile(const fc_isa_kernels* kern, int nv, index_t mr, index_t rows,
                            index_t row_len, const floating* x, const ptrdiff_t* toff,
                            index_t x_row_stride, const floating* dout_t, index_t dout_stride,
                            floating* acc, index_t acc_stride) noexcept nogil:
    if floating is float:
        kern.f32_wgrad[nv][mr](rows, row_len, x, toff, x_row_stride, dout_t, dout_stride, acc,
                               acc_stride)
    else:
        kern.f64_wgrad[nv][mr](rows, row_len, x, toff, x_row_stride, dout_t, dout_stride, acc,
                               acc_stride)


cdef void direct_band(const EnginePlan* plan, const DirectPass* d, index_t n, index_t band,
                      const floating* src, const floating* shared, const floating* bias,
                      floating* out, floating* win) noexcept nogil:
    """Output rows of one band of one image of a pass."""
    cdef const fc_isa_kernels* kern = plan.kernels
    cdef index_t u0 = band * d.band_rows, u1 = imin(d.rows, u0 + d.band_rows)
    cdef index_t blk, u, tile, tiles, v0, v1, f0, c, v
    cdef int nv
    cdef const ptrdiff_t* koff = <const ptrdiff_t*>(shared + d.koff_at)
    cdef const floating* wblk
    cdef const floating* bblk
    cdef const floating* xrow
    cdef floating* yrow
    cdef floating* image_out = out + n * d.out_image_stride + d.out_origin
    if d.k_count == 0:
        for c in range(d.cout):
            for u in range(u0, u1):
                yrow = image_out + c * d.out_channel_stride + u * d.out_row_step
                for v in range(d.cols):
                    yrow[v * d.out_col_step] = 0
        return
    if d.window_is_source:
        win = <floating*>src + n * d.src_image_stride
    else:
        copy_window(kern, d, src + n * d.src_image_stride, u0, u1, win)
    for blk in range(d.blocks):
        nv = d.nv if blk < d.blocks - 1 else d.last_nv
        f0 = blk * d.nr
        wblk = shared + d.weights_at + blk * d.k_count * d.nr
        bblk = NULL if bias == NULL else bias + f0
        tiles = ceil_div(d.cols, kern.max_mr[nv])
        for u in range(u0, u1):
            xrow = win + (u - u0) * d.step_h * d.win_rs
            yrow = image_out + f0 * d.out_channel_stride + u * d.out_row_step
            for tile in range(tiles):
                v0 = tile * d.cols // tiles
                v1 = (tile + 1) * d.cols // tiles
                conv_tile(kern, nv, v1 - v0, d.k_count, xrow + v0, koff, wblk, bblk,
                          yrow + v0 * d.out_col_step, d.out_channel_stride, d.out_col_step,
                          imin(d.nr, d.cout - f0))


cdef void run_direct_passes(const EnginePlan* plan, const floating* src, const floating* w,
                            const floating* b, floating* out, floating* ws) noexcept nogil:
    """Prepare the tables of every pass (serially), then run one task per (image, pass, band)."""
    cdef index_t n_images = plan.conv.n_images, per_image = 0, tasks, t, rem, lane
    cdef int i, threads
    cdef const DirectPass* d
    cdef floating* bias = NULL
    cdef floating* win
    cdef floating* thread_ws = ws + plan.shared_elems
    for i in range(plan.n_passes):
        d = &plan.passes[i]
        per_image += d.bands
        if d.k_count == 0:
            continue
        fill_offsets(d, <ptrdiff_t*>(ws + d.koff_at))
        pack_weights(d, plan.lanes, w, ws + d.weights_at)
        if b != NULL:
            bias = ws + d.bias_at
            for lane in range(d.blocks * d.nr):
                bias[lane] = b[lane] if lane < d.cout else 0
    tasks = n_images * per_image
    threads = <int>imin(plan.threads, tasks)
    if threads <= 1:
        for t in range(tasks):
            direct_task(plan, t, per_image, src, ws, bias, out, thread_ws)
    else:
        with parallel(num_threads=threads):
            win = thread_ws + omp_get_thread_num() * plan.thread_elems
            for t in prange(tasks, schedule='dynamic'):
                direct_task(plan, t, per_image, src, ws, bias, out, win)


cdef inline void direct_task(const EnginePlan* plan, index_t t, index_t per_image,
                             const floating* src, const floating* shared, const floating* bias,
                             floating* out, floating* win) noexcept nogil:
    cdef index_t n = t // per_image, rem = t % per_image
    cdef int i = 0
    while rem >= plan.passes[i].bands:
        rem -= plan.passes[i].bands
        i += 1
    direct_band(plan, &plan.passes[i], n, rem, src, shared, bias, out, win)


# ----------------------------------------------------------------------------------------------
# Backward-weight
# ----------------------------------------------------------------------------------------------

cdef void weight_task(const EnginePlan* plan, index_t chunk, index_t group,
                      const floating* dout, const floating* x, floating* shared,
                      floating* thread_ws) noexcept nogil:
    """dW/db partial of one chunk of (image, output row) pairs, for one group of filter
    blocks: window band by window band, and inside each, dout band by dout band (a few output
    rows, or a segment of one long row)."""
    cdef const WeightPass* wp = &plan.wgrad
    cdef const DirectPass* d = &plan.wgrad_window
    cdef const Window2D* g = &plan.conv.g
    cdef const fc_isa_kernels* kern = plan.kernels
    cdef const ptrdiff_t* koff = <const ptrdiff_t*>(shared + d.koff_at)
    cdef index_t total_rows = plan.conv.n_images * g.out_h, plane = g.out_h * g.out_w
    cdef index_t r = chunk * total_rows // wp.chunks, r_end = (chunk + 1) * total_rows // wp.chunks
    cdef index_t b0 = group * wp.blocks_per_group, b1 = imin(wp.blocks, b0 + wp.blocks_per_group)
    cdef index_t f0 = b0 * wp.nr, f1 = b1 * wp.nr, width = f1 - f0
    cdef index_t n, u0, u1, s0, k, blk, tile, k0, k1, q0, q1, p0, rows, row_len
    cdef floating* part = shared + wp.partials_at + chunk * wp.partial_elems
    cdef floating* db_part = part + wp.k_count * wp.fpad
    cdef floating* win = thread_ws
    cdef floating* dout_t = thread_ws + pass_window_elems(plan, d)
    cdef floating* xw
    cdef const floating* dout_n
    for k in range(wp.k_count):
        memset(part + k * wp.fpad + f0, 0, width * sizeof(floating))
    memset(db_part + f0, 0, width * sizeof(floating))
    while r < r_end:
        n = r // g.out_h
        u0 = r % g.out_h
        u1 = imin(imin(g.out_h, u0 + d.band_rows), u0 + r_end - r)
        if d.window_is_source:
            win = <floating*>x + n * d.src_image_stride + u0 * d.step_h * d.win_rs
        else:
            copy_window(kern, d, x + n * d.src_image_stride, u0, u1, win)
        dout_n = dout + n * plan.conv.y_image_stride
        s0 = u0
        while s0 < u1:
            rows = imin(u1 - s0, wp.band_rows)
            q0 = 0
            while q0 < g.out_w:
                # A band of whole rows, or (rows == 1) a segment of at most band_cols columns.
                q1 = g.out_w if rows > 1 else imin(g.out_w, q0 + wp.band_cols)
                row_len = q1 - q0
                p0 = s0 * g.out_w + q0
                transpose_dout(kern, dout_n, plane, p0, p0 + (rows - 1) * g.out_w + row_len, f0,
                               f1, wp.filters, width, dout_t, db_part)
                xw = win + (s0 - u0) * d.step_h * d.win_rs + q0
                for blk in range(b0, b1):
                    for tile in range(wp.tap_tiles):
                        k0 = tile * wp.k_count // wp.tap_tiles
                        k1 = (tile + 1) * wp.k_count // wp.tap_tiles
                        wgrad_tile(kern, wp.nv, k1 - k0, rows, row_len, xw, koff + k0,
                                   d.step_h * d.win_rs, dout_t + blk * wp.nr - f0, width,
                                   part + k0 * wp.fpad + blk * wp.nr, wp.fpad)
                q0 = q1
            s0 += rows
        r += u1 - u0


cdef void run_weight_pass(const EnginePlan* plan, const floating* dout, const floating* x,
                          floating* dw, floating* db, floating* ws) noexcept nogil:
    cdef const WeightPass* wp = &plan.wgrad
    cdef index_t tasks = wp.chunks * wp.groups, t, f, k, j
    cdef int threads = <int>imin(plan.threads, tasks)
    cdef floating* thread_ws = ws + plan.shared_elems
    cdef floating* mine
    cdef const floating* part
    cdef floating s
    fill_offsets(&plan.wgrad_window, <ptrdiff_t*>(ws + plan.wgrad_window.koff_at))
    if threads <= 1:
        for t in range(tasks):
            weight_task(plan, t // wp.groups, t % wp.groups, dout, x, ws, thread_ws)
    else:
        with parallel(num_threads=threads):
            mine = thread_ws + omp_get_thread_num() * plan.thread_elems
            for t in prange(tasks, schedule='dynamic'):
                weight_task(plan, t // wp.groups, t % wp.groups, dout, x, ws, mine)
    # dw[f][k] = partial_0[k][f] + partial_1[k][f] + ... (chunk order), db alike.
    part = ws + wp.partials_at
    for f in range(wp.filters):
        for k in range(wp.k_count):
            s = part[k * wp.fpad + f]
            for j in range(1, wp.chunks):
                s = s + part[j * wp.partial_elems + k * wp.fpad + f]
            dw[f * wp.k_count + k] = s
        s = part[wp.k_count * wp.fpad + f]
        for j in range(1, wp.chunks):
            s = s + part[j * wp.partial_elems + wp.k_count * wp.fpad + f]
        db[f] = s


include "_winograd.pxi"


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------

cdef inline bint use_winograd(const EnginePlan* plan, const floating* src,
                              const floating* w) noexcept nogil:
    cdef const Window2D* g = &plan.conv.g
    return plan.has_winograd and winograd_inputs_safe(
        &plan.wino, src, plan.conv.n_images, w, plan.conv.filters * g.channels * 9,
        plan.wino.threads)


cdef void engine_forward(const EnginePlan* plan, const floating* x, const floating* w,
                         const floating* b, floating* y, char* workspace) noexcept nogil:
    if use_winograd(plan, x, w):
        run_winograd(plan, x, w, b, y, <floating*>workspace)
    else:
        run_direct_passes(plan, x, w, b, y, <floating*>workspace)


cdef void engine_backward(const EnginePlan* plan, const floating* dout, const floating* x,
                          const floating* w, floating* dx, floating* dw, floating* db,
                          char* workspace) noexcept nogil:
    if plan.data_by_engine and use_winograd(plan, dout, w):
        run_winograd(plan, dout, w, <const floating*>NULL, dx, <floating*>workspace)
    elif plan.data_by_engine:
        run_direct_passes(plan, dout, w, <const floating*>NULL, dx, <floating*>workspace)
    run_weight_pass(plan, dout, x, dw, db, <floating*>workspace)


# ----------------------------------------------------------------------------------------------
# What the engine would do (for show_config, the benchmark and docs/engine.md)
# ----------------------------------------------------------------------------------------------

cdef EngineConv conv_of(tuple x_shape, tuple w_shape, stride, padding, dilation):
    cdef EngineConv c
    cdef Window2D* g = &c.g
    c.n_images, g.channels, g.height, g.width = x_shape
    c.filters, _, g.kernel_h, g.kernel_w = w_shape
    g.stride_h, g.stride_w = stride
    g.pad_h, g.pad_w = padding
    g.dilation_h, g.dilation_w = dilation
    g.out_h = (g.height + 2 * g.pad_h - g.dilation_h * (g.kernel_h - 1) - 1) // g.stride_h + 1
    g.out_w = (g.width + 2 * g.pad_w - g.dilation_w * (g.kernel_w - 1) - 1) // g.stride_w + 1
    c.x_image_stride = g.channels * g.height * g.width
    c.y_image_stride = c.filters * g.out_h * g.out_w
    return c


cdef str describe_pass(const EnginePlan* plan, const DirectPass* d):
    mr = plan.kernels.max_mr[d.nv]
    tiles = ceil_div(d.cols, mr)
    return (f"{ceil_div(d.cols, tiles)}x{d.nr} tiles, {d.blocks} block(s) of "
            f"{d.nr} channels, K={d.k_count}")


cdef str describe_winograd(const EnginePlan* plan):
    cdef const WinogradPass* wg = &plan.wino
    return (f"winograd F({wg.m}x{wg.m},3x3)/{isa()}: {wg.tasks} task(s) of {wg.task_tiles} "
            f"tiles, {wg.blocks} block(s) of {wg.nr} channels (direct when inputs are not finite)")


def algorithm(x_shape, w_shape, stride, padding, dilation, dtype, int threads=1):
    """What conv2d / conv2d_backward would run for these (checked, (h, w)) arguments: a dict
    with "forward" and "backward" descriptions, "isa" and the engine's figures."""
    cdef EnginePlan plan
    cdef EngineConv conv = conv_of(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding),
                                   tuple(dilation))
    cdef index_t itemsize = np.dtype(dtype).itemsize
    result = {"isa": isa(), "forward_workspace_bytes": 0, "backward_workspace_bytes": 0}
    if plan_forward(&plan, &conv, itemsize, threads):
        result["forward"] = (describe_winograd(&plan) if plan.has_winograd else
                             f"direct/{isa()}: " + describe_pass(&plan, &plan.passes[0]))
        result["forward_workspace_bytes"] = plan.workspace_bytes
    else:
        result["forward"] = "im2col+blas"
    if plan_backward(&plan, &conv, itemsize, threads):
        result["backward_workspace_bytes"] = plan.workspace_bytes
        wp = &plan.wgrad
        dx = f"{plan.n_passes} phase(s)" if plan.data_by_engine else "by im2col+blas+col2im"
        if plan.has_winograd:
            dx = describe_winograd(&plan)
        result["backward"] = (
            f"direct/{isa()}: dx {dx}, dw "
            f"{ceil_div(wp.k_count, wp.tap_tiles)}x{wp.nr} tiles, {wp.chunks} chunk(s) x "
            f"{wp.groups} group(s)")
    else:
        result["backward"] = "im2col+blas+col2im"
    return result


# ----------------------------------------------------------------------------------------------
# FMA peak probe (python -m fastconv bench --limits)
# ----------------------------------------------------------------------------------------------

cdef double run_probe(fc_fma_probe probe, long iterations, int threads) noexcept nogil:
    """Run the probe on `threads` threads at once; returns the sum of their results."""
    cdef double total = 0
    cdef int t
    if threads <= 1:
        return probe(iterations)
    for t in prange(threads, num_threads=threads, schedule='static', chunksize=1):
        total += probe(iterations + t)
    return total


def fma_peak_gflops(isa_name, dtype, int threads=1, double seconds=0.1, int repeat=3):
    """GFLOP/s of independent vector FMAs with the kernels of `isa_name` (one of
    supported_isas()) in `dtype`, on `threads` threads at once: the best of `repeat` runs of
    about `seconds` each. The ceiling that every engine rate is a fraction of."""
    import time
    if isa_name not in supported_isas():
        raise ValueError(f"fma_peak_gflops: {isa_name!r} is not one of {supported_isas()}")
    if threads < 1:
        raise ValueError(f"fma_peak_gflops: threads must be >= 1, got {threads}")
    cdef const fc_isa_kernels* kern = fc_isa_kernels_for(ISA_NAMES.index(isa_name))
    cdef bint single = np.dtype(dtype) == np.float32
    cdef fc_fma_probe probe = kern.f32_fma_probe if single else kern.f64_fma_probe
    cdef double flops = kern.fma_probe_flops_f32 if single else kern.fma_probe_flops_f64
    cdef long iterations = 1000
    cdef double elapsed = 0, best = 0
    while True:  # calibrate: double until one run takes a tenth of the budget
        start = time.perf_counter()
        with nogil:
            run_probe(probe, iterations, 1)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 10 or iterations > (1 << 40):
            break
        iterations *= 2
    iterations = max(1000, <long>(iterations * seconds / max(elapsed, 1e-9)))
    for _ in range(repeat):
        start = time.perf_counter()
        with nogil:
            run_probe(probe, iterations, threads)
        elapsed = time.perf_counter() - start
        best = max(best, threads * iterations * flops / elapsed / 1e9)
    return best
