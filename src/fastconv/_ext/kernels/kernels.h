/* The convolution engine's micro-kernels: what each instruction set provides, and how the
 * dispatcher finds it.
 *
 * Two micro-kernel families, for float32 (f32) and float64 (f64), one set per instruction set
 * (avx512, avx2 = AVX2 + FMA3, generic = portable C):
 *
 *   conv tile   MR consecutive output pixels x NR output channels of a direct convolution,
 *               the whole reduction held in registers. Input values are broadcast from a
 *               "window" (see _engine.pyx): the input rows a band of outputs needs, with the
 *               channels of one row side by side and the padding written as zeros, so that
 *               tap k of pixel m is x[k_offsets[k] + m] whatever the stride, dilation or
 *               padding. Weights are packed k-major, NR output channels per k. The tile is
 *               stored transposed into the (channel, pixel) layout of NCHW.
 *   wgrad tile  MR weight rows ("taps": one input channel at one kernel offset) x NR output
 *               channels of the weight gradient, accumulated over `rows` x `row_len` output
 *               pixels: acc[t][f] += x_t[pixel] * dout_t[pixel][f].
 *   transpose   dout (filters x pixels) to dout_t (pixels x filters) for the wgrad tiles.
 *   window rows the padded (and for stride 2, column-split) input rows of a window.
 *   gemm tile, winograd input / output: Winograd F(2x2, 3x3) and F(4x4, 3x3) (_engine.pyx).
 *
 * Every output element is the sum of its terms in one fixed order (k for the conv tile, pixel
 * for the wgrad tile), each added with one fused multiply-add: which tile sizes, instruction
 * set or thread computes an element does not change its value (the generic kernels use FMA only
 * where the compiler contracts a*b+c, which is why they may differ in the last bit).
 *
 * Names follow XNNPACK: <dtype>_<operation>_<MR>x<NR>__<isa>.
 */
#ifndef FASTCONV_KERNELS_H
#define FASTCONV_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FC_MAX_NV 4   /* vectors of output channels per tile */
#define FC_MAX_MR 16  /* pixels (conv) or taps (wgrad) per tile */

typedef void (*fc_f32_conv_tile)(size_t k_count, const float *x, const ptrdiff_t *k_offsets,
                                 const float *w, const float *bias, float *y,
                                 ptrdiff_t y_channel_stride, ptrdiff_t y_pixel_stride,
                                 size_t nr_valid);
typedef void (*fc_f64_conv_tile)(size_t k_count, const double *x, const ptrdiff_t *k_offsets,
                                 const double *w, const double *bias, double *y,
                                 ptrdiff_t y_channel_stride, ptrdiff_t y_pixel_stride,
                                 size_t nr_valid);
typedef void (*fc_f32_wgrad_tile)(size_t rows, size_t row_len, const float *x,
                                  const ptrdiff_t *tap_offsets, ptrdiff_t x_row_stride,
                                  const float *dout_t, ptrdiff_t dout_pixel_stride,
                                  float *acc, ptrdiff_t acc_tap_stride);
typedef void (*fc_f64_wgrad_tile)(size_t rows, size_t row_len, const double *x,
                                  const ptrdiff_t *tap_offsets, ptrdiff_t x_row_stride,
                                  const double *dout_t, ptrdiff_t dout_pixel_stride,
                                  double *acc, ptrdiff_t acc_tap_stride);
/* dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols. */
typedef void (*fc_f32_transpose)(size_t rows, size_t cols, const float *src, ptrdiff_t src_stride,
                                 float *dst, ptrdiff_t dst_stride);
typedef void (*fc_f64_transpose)(size_t rows, size_t cols, const double *src,
                                 ptrdiff_t src_stride, double *dst, ptrdiff_t dst_stride);
/* Winograd F(m x m, 3 x 3) (tile_template.h): a GEMM tile over rows of a stored matrix, and the
 * input / output transforms of one tile. */
typedef void (*fc_f32_gemm_tile)(size_t k_count, const float *a, ptrdiff_t lda, const float *b,
                                 float *c, ptrdiff_t ldc);
typedef void (*fc_f64_gemm_tile)(size_t k_count, const double *a, ptrdiff_t lda, const double *b,
                                 double *c, ptrdiff_t ldc);
typedef void (*fc_f32_winograd_input)(const float *in, ptrdiff_t row_stride, ptrdiff_t col_stride,
                                      size_t vectors, float *v, ptrdiff_t xi_stride);
typedef void (*fc_f64_winograd_input)(const double *in, ptrdiff_t row_stride,
                                      ptrdiff_t col_stride, size_t vectors, double *v,
                                      ptrdiff_t xi_stride);
typedef void (*fc_f32_winograd_output)(const float *m, ptrdiff_t xi_stride, size_t vectors,
                                       const float *bias, float *out, ptrdiff_t row_stride,
                                       ptrdiff_t col_stride);
typedef void (*fc_f64_winograd_output)(const double *m, ptrdiff_t xi_stride, size_t vectors,
                                       const double *bias, double *out, ptrdiff_t row_stride,
                                       ptrdiff_t col_stride);
/* The rows of a convolution window (tile_template.h, FC_DEFINE_WINDOW_ROWS). */
typedef void (*fc_f32_window_rows)(size_t rows, size_t channels, const float *src,
                                   ptrdiff_t src_row_stride, ptrdiff_t src_channel_stride,
                                   ptrdiff_t col0, ptrdiff_t src_w, size_t step, size_t width,
                                   float *dst, ptrdiff_t dst_row_stride,
                                   ptrdiff_t dst_channel_stride);
typedef void (*fc_f64_window_rows)(size_t rows, size_t channels, const double *src,
                                   ptrdiff_t src_row_stride, ptrdiff_t src_channel_stride,
                                   ptrdiff_t col0, ptrdiff_t src_w, size_t step, size_t width,
                                   double *dst, ptrdiff_t dst_row_stride,
                                   ptrdiff_t dst_channel_stride);
/* Independent FMAs for the peak probe: returns a value that depends on every one of them. */
typedef double (*fc_fma_probe)(long iterations);

/* The kernels of one instruction set. conv/wgrad[nv][mr] is NULL where no kernel exists;
 * max_mr[nv] is the largest mr with one (0: this nv is not provided). */
typedef struct {
    const char *name;
    int f32_lanes, f64_lanes;           /* elements per vector: NR = nv * lanes */
    int max_mr[FC_MAX_NV + 1];
    fc_f32_conv_tile f32_conv[FC_MAX_NV + 1][FC_MAX_MR + 1];
    fc_f64_conv_tile f64_conv[FC_MAX_NV + 1][FC_MAX_MR + 1];
    fc_f32_wgrad_tile f32_wgrad[FC_MAX_NV + 1][FC_MAX_MR + 1];
    fc_f64_wgrad_tile f64_wgrad[FC_MAX_NV + 1][FC_MAX_MR + 1];
    fc_f32_gemm_tile f32_gemm[FC_MAX_NV + 1][FC_MAX_MR + 1];
    fc_f64_gemm_tile f64_gemm[FC_MAX_NV + 1][FC_MAX_MR + 1];
    /* [0]: F(2x2, 3x3), [1]: F(4x4, 3x3) */
    fc_f32_winograd_input f32_winograd_input[2];
    fc_f64_winograd_input f64_winograd_input[2];
    fc_f32_winograd_output f32_winograd_output[2];
    fc_f64_winograd_output f64_winograd_output[2];
    fc_f32_window_rows f32_window_rows;
    fc_f64_window_rows f64_window_rows;
    fc_f32_transpose f32_transpose;
    fc_f64_transpose f64_transpose;
    fc_fma_probe f32_fma_probe, f64_fma_probe;
    long fma_probe_flops_f32, fma_probe_flops_f64;  /* floating-point operations per iteration */
} fc_isa_kernels;

enum { FC_ISA_GENERIC = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2, FC_ISA_COUNT = 3 };

/* The best instruction set this CPU and its operating system support (cpuid + xgetbv). */
int fc_cpu_isa(void);
/* The kernels of an instruction set, or NULL when this build has none for it (non-x86). */
const fc_isa_kernels *fc_isa_kernels_for(int isa);
/* Bytes of the level-1 data or level-2 cache of one core as the OS reports it; 0 if unknown.
 * Used for blocking only: results never depend on it. */
size_t fc_cache_bytes(int level);

#ifdef __cplusplus
}
#endif
#endif
