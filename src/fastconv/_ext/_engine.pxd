# The convolution engine (fastconv._ext._engine): direct convolution kernels of our own for the
# layers CNNs are made of, beside the im2col + BLAS path of fastconv._ext._conv.
#
# Entry points work on raw pointers with explicit image strides, for one "problem": a set of
# input channels (the first at x) and of output channels (the first at y / the first filter
# at w). A group of a grouped convolution is such a problem: channels [c0, c0 + Cg) of x and
# filters [f0, f0 + Fg) of w and y are x + c0*H*W, w + f0*Cg*KH*KW, y + f0*OH*OW, with the
# image strides of the whole arrays.
#
# Usage: plan_forward / plan_backward (with the GIL) say whether the engine takes the problem
# and fill an EnginePlan; the caller provides plan.workspace_bytes of 64-byte aligned memory
# (checked out of its workspace pool) and calls the nogil entry point, which runs its own
# OpenMP threads.

from cython cimport floating
from libc.stddef cimport ptrdiff_t

from fastconv._ext._typedefs cimport index_t, Window2D

cdef extern from "kernels/kernels.h":
    ctypedef void (*fc_f32_conv_tile)(size_t, const float*, const ptrdiff_t*, const float*,
                                      const float*, float*, ptrdiff_t, ptrdiff_t,
                                      size_t) noexcept nogil
    ctypedef void (*fc_f64_conv_tile)(size_t, const double*, const ptrdiff_t*, const double*,
                                      const double*, double*, ptrdiff_t, ptrdiff_t,
                                      size_t) noexcept nogil
    ctypedef void (*fc_f32_wgrad_tile)(size_t, size_t, const float*, const ptrdiff_t*, ptrdiff_t,
                                       const float*, ptrdiff_t, float*, ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f64_wgrad_tile)(size_t, size_t, const double*, const ptrdiff_t*,
                                       ptrdiff_t, const double*, ptrdiff_t, double*,
                                       ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f32_transpose)(size_t, size_t, const float*, ptrdiff_t, float*,
                                      ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f64_transpose)(size_t, size_t, const double*, ptrdiff_t, double*,
                                      ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f32_gemm_tile)(size_t, const float*, ptrdiff_t, const float*, float*,
                                      ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f64_gemm_tile)(size_t, const double*, ptrdiff_t, const double*, double*,
                                      ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f32_winograd_input)(const float*, ptrdiff_t, ptrdiff_t, size_t, float*,
                                           ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f64_winograd_input)(const double*, ptrdiff_t, ptrdiff_t, size_t, double*,
                                           ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f32_winograd_output)(const float*, ptrdiff_t, size_t, const float*, float*,
                                            ptrdiff_t, ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f64_winograd_output)(const double*, ptrdiff_t, size_t, const double*,
                                            double*, ptrdiff_t, ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f32_window_rows)(size_t, size_t, const float*, ptrdiff_t, ptrdiff_t,
                                        ptrdiff_t, ptrdiff_t, size_t, size_t, float*, ptrdiff_t,
                                        ptrdiff_t) noexcept nogil
    ctypedef void (*fc_f64_window_rows)(size_t, size_t, const double*, ptrdiff_t, ptrdiff_t,
                                        ptrdiff_t, ptrdiff_t, size_t, size_t, double*, ptrdiff_t,
                                        ptrdiff_t) noexcept nogil
    ctypedef double (*fc_fma_probe)(long) noexcept nogil
    # Array sizes are FC_MAX_NV + 1 and FC_MAX_MR + 1 (kernels.h).
    ctypedef struct fc_isa_kernels:
        const char* name
        int f32_lanes
        int f64_lanes
        int max_mr[5]
        fc_f32_conv_tile f32_conv[5][17]
        fc_f64_conv_tile f64_conv[5][17]
        fc_f32_wgrad_tile f32_wgrad[5][17]
        fc_f64_wgrad_tile f64_wgrad[5][17]
        fc_f32_gemm_tile f32_gemm[5][17]
        fc_f64_gemm_tile f64_gemm[5][17]
        fc_f32_winograd_input f32_winograd_input[2]
        fc_f64_winograd_input f64_winograd_input[2]
        fc_f32_winograd_output f32_winograd_output[2]
        fc_f64_winograd_output f64_winograd_output[2]
        fc_f32_window_rows f32_window_rows
        fc_f64_window_rows f64_window_rows
        fc_f32_transpose f32_transpose
        fc_f64_transpose f64_transpose
        fc_fma_probe f32_fma_probe
        fc_fma_probe f64_fma_probe
        long fma_probe_flops_f32
        long fma_probe_flops_f64
    int FC_MAX_NV
    int FC_MAX_MR


cdef enum:
    # Backward-data of a stride (sh, sw) layer is sh*sw stride-1 "phases"; beyond this many the
    # engine declines (most phases would be empty) and im2col + col2im runs.
    ENGINE_MAX_PASSES = 16
    # Kernel rows and columns the engine handles (a pass keeps its taps in fixed arrays).
    ENGINE_MAX_KERNEL = 32


# One convolution problem (see the top of this file).
ctypedef struct EngineConv:
    Window2D g                  # geometry; g.channels: input channels of the problem
    index_t n_images
    index_t filters             # output channels of the problem
    index_t x_image_stride      # elements between images of x and dx
    index_t y_image_stride      # elements between images of y and dout


# A direct "pass": out[n][co][origin + u*row_step + v*col_step] = sum over ci, taps of
# src[n][ci][src_row0 + u*step_h + tap_row][src_col0 + v*step_w + tap_col] * weight(co, ci, tap)
# (zero outside the source planes), for the output grid u < rows, v < cols. The forward pass is
# one; backward-data is one per stride phase (each a stride-1 correlation of dout).
ctypedef struct DirectPass:
    index_t cin, cout, taps, k_count            # k_count = cin * taps: the reduction
    index_t n_tap_rows, n_tap_cols              # taps = n_tap_rows * n_tap_cols
    index_t tap_row[ENGINE_MAX_KERNEL]          # window row offset of each tap row
    index_t tap_col[ENGINE_MAX_KERNEL]          # window column offset of each tap column
    index_t tap_weight_row[ENGINE_MAX_KERNEL]   # kernel row (i) / column (j) of the weight
    index_t tap_weight_col[ENGINE_MAX_KERNEL]
    index_t w_out_stride, w_in_stride           # weight(co, ci, i, j) = w[co*wo + ci*wi + i*KW + j]
    index_t kernel_w
    index_t src_h, src_w, src_channel_stride, src_image_stride
    index_t src_row0, src_col0
    index_t rows, cols, step_h, step_w
    index_t out_origin, out_row_step, out_col_step, out_channel_stride, out_image_stride
    index_t win_w, win_pw, win_cs, win_rs       # window: width, phase width, channel/row strides
    bint window_is_source                       # the source already has the window's layout
    bint window_shared                          # reads the plan's shared window (no copy)
    index_t win_origin                          # offset of its window in the shared window
    index_t tap_rows_span                       # window rows one output row needs
    index_t band_rows, bands                    # output rows per task
    int nv, last_nv                             # vectors per output-channel block (last block)
    double efficiency                           # estimated useful fraction of FMA slots
    index_t nr, blocks                          # nv * lanes; blocks of output channels
    index_t koff_at, weights_at, bias_at        # where its tables live in the shared workspace


# Backward-weight: dW and db summed over output pixels, in `chunks` fixed ranges of (image,
# output row) pairs added in chunk order, with `groups` tasks per chunk (filter-block groups).
ctypedef struct WeightPass:
    index_t cin, filters, taps, k_count
    int nv
    index_t nr, blocks, fpad, groups, blocks_per_group, chunks
    index_t band_rows, band_cols, tap_tiles     # band: rows, or columns of one long row
    index_t partial_elems, partials_at


# Winograd F(m x m, 3 x 3) of a stride-1, dilation-1 3x3 pass (forward, or backward-data as the
# forward correlation of dout with the flipped, transposed weights). A task takes a group of
# whole images, or a band of tile rows of one image: channels-last window -> input transform ->
# one GEMM per transform point -> output transform into NCHW.
ctypedef struct WinogradPass:
    int m                               # output tile m x m: 2 or 4
    index_t alpha, points               # input tile alpha = m + 2; points = alpha**2
    index_t cin, cout, cpad             # channels reduced (cpad: rounded up to vectors)
    int nv
    index_t nr, blocks, fpad            # output-channel blocks of the GEMM
    index_t src_h, src_w, src_channel_stride, src_image_stride, src_row0, src_col0
    index_t rows, cols                  # the output plane
    index_t tiles_h, tiles_w, win_cols  # tiles per image; window columns (tiles_w*m + 2)
    index_t task_images, task_tile_rows, bands, tasks, task_tiles
    index_t out_channel_stride, out_image_stride
    index_t w_out_stride, w_in_stride
    bint flip                           # weights read flipped (backward-data)
    double input_limit                  # max|input| * max|w| below this: no transform overflows
    int threads                         # threads that run it (the budget holds their buffers)
    index_t v_stride, m_stride         # elements between transform points of V and M
    index_t u_at, bias_at, shared_elems, win_elems, v_elems, m_elems, stage_elems, thread_elems


ctypedef struct EnginePlan:
    EngineConv conv
    const fc_isa_kernels* kernels
    index_t lanes, itemsize
    int threads
    int n_passes                    # forward: 1; backward-data: the stride phases
    DirectPass passes[ENGINE_MAX_PASSES]
    bint shared_window              # backward-data phases read one window per image: `common`
    DirectPass common
    bint backward
    bint data_by_engine             # backward: dx by the engine (else the caller computes it)
    bint has_winograd               # forward (or dx): Winograd when the inputs are safe for it
    WinogradPass wino
    WeightPass wgrad
    DirectPass wgrad_window         # the forward geometry whose windows wgrad reads
    index_t io_bytes                # inputs + outputs of forward + backward (the budget's base)
    index_t shared_elems, thread_elems, workspace_bytes


cdef bint plan_forward(EnginePlan* plan, const EngineConv* conv, index_t itemsize,
                       int threads) except -1
cdef bint plan_backward(EnginePlan* plan, const EngineConv* conv, index_t itemsize,
                        int threads) except -1

cdef void engine_forward(const EnginePlan* plan, const floating* x, const floating* w,
                         const floating* b, floating* y, char* workspace) noexcept nogil
cdef void engine_backward(const EnginePlan* plan, const floating* dout, const floating* x,
                          const floating* w, floating* dx, floating* dw, floating* db,
                          char* workspace) noexcept nogil
