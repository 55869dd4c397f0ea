"""The convolution engine: direct convolution and Winograd with micro-kernels of our own.

How a convolution is computed (docs/guide/engine.md has the measurements behind each choice):

* Output channels fill the vector lanes; input values are broadcast. A tile of MR consecutive
  output pixels x NR output channels keeps its whole reduction (input channels x kernel taps)
  in registers and is stored once, transposed into NCHW.
* The input a band of output rows needs is first copied into a "window": the rows of all its
  channels side by side (row r: channel 0's columns, channel 1's, ...), zeros where the window
  meets the padding, and for a column stride s the columns split into s phases. In a window,
  tap k of output pixel m is at x[k_offsets[k] + m] whatever the padding, stride or dilation,
  and the rows a tile reads are contiguous (few pages, prefetch-friendly: twice as fast as
  reading the NCHW planes on a 56x56 layer).
* Weights are packed once per call: k-major, NR output channels per k, zero beyond the last.
* Backward-data of a layer of stride (sh, sw) is sh*sw "phases", each a stride-1 correlation of
  dout with the taps of that phase: it runs on the same tiles, with no col2im scatter.
* Backward-weight keeps MR weight rows ("taps") x NR filters of dW in registers and sums over
  output pixels: dout is transposed band by band (filters fill the lanes), x read from windows.
  The pixels are cut into `chunks` ranges of (image, output row) pairs fixed by the shape; each
  range has its own partial sums and the partials are added in chunk order, so dW and db are
  bitwise identical for every thread count.
* 3x3, stride-1 layers run Winograd F(4x4, 3x3) or F(2x2, 3x3) forward and backward-data when
  their inputs are finite (_engine_winograd.pxi).

Every output of a forward or backward-data tile is its full sum in one fixed order, so those
results do not depend on how work is split at all; backward-weight depends on `chunks` only.

Files: this one (constants, entry points, reports), _engine_isa.pxi (instruction set, algorithm
setting, FMA probe), _engine_plan.pxi, _engine_layout.pxi, _engine_passes.pxi (task loops),
_engine_winograd.pxi; the micro-kernels are C in kernels/.
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


include "_engine_isa.pxi"
include "_engine_plan.pxi"
include "_engine_layout.pxi"
include "_engine_passes.pxi"
include "_engine_winograd.pxi"


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
    if dx == NULL:
        pass  # the weight gradients only
    elif plan.data_by_engine and use_winograd(plan, dout, w):
        run_winograd(plan, dout, w, <const floating*>NULL, dx, <floating*>workspace)
    elif plan.data_by_engine:
        run_direct_passes(plan, dout, w, <const floating*>NULL, dx, <floating*>workspace)
    run_weight_pass(plan, dout, x, dw, db, <floating*>workspace)



# ----------------------------------------------------------------------------------------------
# What the engine would do (for show_config, the benchmark and docs/guide/engine.md)
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
