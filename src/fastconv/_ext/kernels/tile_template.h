/* The micro-kernel bodies, written once over a small vector vocabulary that each instruction
 * set file defines before including this header:
 *
 *   FC_PREFIX  f32 or f64            FC_ISA     avx512, avx2 or generic
 *   SCALAR     float or double       VEC        the vector type, LANES elements
 *   VZERO()    VLOADU(p)  VSTOREU(p, v)  VSET1(s)  VFMA(a, b, c) = a*b + c, one rounding
 *
 * FC_DEFINE_CONV_TILE(MR, NV, NR) and FC_DEFINE_WGRAD_TILE(MR, NV, NR) define one kernel each
 * (see kernels.h for what they compute). MR and NV are literal constants, so the accumulator
 * arrays below become registers once the constant loops are unrolled: that is what makes a
 * micro-kernel (a register tile of MR x NV vectors), and why each size is its own function.
 */
#ifndef FC_TILE_TEMPLATE_H
#define FC_TILE_TEMPLATE_H

#if defined(__clang__)
#define FC_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define FC_UNROLL _Pragma("GCC unroll 32")
#else
#define FC_UNROLL
#endif

#if defined(_MSC_VER)
#define FC_ALIGN64 __declspec(align(64))
#else
#define FC_ALIGN64 __attribute__((aligned(64)))
#endif

/* FC_KERNEL_NAME(f32, conv_tile, 14, 32, avx512) is f32_conv_tile_14x32__avx512. */
#define FC_KERNEL_NAME_(prefix, op, MR, NR, isa) prefix##_##op##_##MR##x##NR##__##isa
#define FC_KERNEL_NAME(prefix, op, MR, NR, isa) FC_KERNEL_NAME_(prefix, op, MR, NR, isa)
#define FC_PROBE_NAME_(prefix, isa) prefix##_fma_probe__##isa
#define FC_PROBE_NAME(prefix, isa) FC_PROBE_NAME_(prefix, isa)

/* Lists of tile sizes for X-macros: X(MR, NV, NR) for MR = 1 .. n. */
#define FC_MR_1_TO_4(X, NV, NR) X(1, NV, NR) X(2, NV, NR) X(3, NV, NR) X(4, NV, NR)
#define FC_MR_1_TO_6(X, NV, NR) FC_MR_1_TO_4(X, NV, NR) X(5, NV, NR) X(6, NV, NR)
#define FC_MR_1_TO_9(X, NV, NR) FC_MR_1_TO_6(X, NV, NR) X(7, NV, NR) X(8, NV, NR) X(9, NV, NR)
#define FC_MR_1_TO_14(X, NV, NR)                                                                   \
    FC_MR_1_TO_9(X, NV, NR) X(10, NV, NR) X(11, NV, NR) X(12, NV, NR) X(13, NV, NR) X(14, NV, NR)
#define FC_MR_1_TO_16(X, NV, NR) FC_MR_1_TO_14(X, NV, NR) X(15, NV, NR) X(16, NV, NR)

/* Table entries: [NV][MR] = the kernel, for the designated initialisers of fc_isa_kernels. */
#define FC_F32_CONV_ENTRY(MR, NV, NR) [NV][MR] = FC_KERNEL_NAME(f32, conv_tile, MR, NR, FC_ISA),
#define FC_F64_CONV_ENTRY(MR, NV, NR) [NV][MR] = FC_KERNEL_NAME(f64, conv_tile, MR, NR, FC_ISA),
#define FC_F32_WGRAD_ENTRY(MR, NV, NR) [NV][MR] = FC_KERNEL_NAME(f32, wgrad_tile, MR, NR, FC_ISA),
#define FC_F64_WGRAD_ENTRY(MR, NV, NR) [NV][MR] = FC_KERNEL_NAME(f64, wgrad_tile, MR, NR, FC_ISA),

#endif /* FC_TILE_TEMPLATE_H */

/* y[f * y_channel_stride + m * y_pixel_stride] = bias[f] + sum_k x[k_offsets[k] + m] * w[k][f]
 * for m < MR, f < nr_valid (<= NR); the packed bias and weights are NR wide (zero beyond). */
#define FC_DEFINE_CONV_TILE(MR, NV, NR)                                                            \
    static void FC_KERNEL_NAME(FC_PREFIX, conv_tile, MR, NR, FC_ISA)(                              \
        size_t k_count, const SCALAR *x, const ptrdiff_t *k_offsets, const SCALAR *w,              \
        const SCALAR *bias, SCALAR *y, ptrdiff_t y_channel_stride, ptrdiff_t y_pixel_stride,       \
        size_t nr_valid)                                                                           \
    {                                                                                              \
        VEC acc[MR][NV];                                                                           \
        FC_ALIGN64 SCALAR tile[MR * NR];                                                           \
        size_t k, f;                                                                               \
        FC_UNROLL for (int v = 0; v < NV; v++) {                                                   \
            VEC init = bias ? VLOADU(bias + v * LANES) : VZERO();                                  \
            FC_UNROLL for (int m = 0; m < MR; m++) acc[m][v] = init;                               \
        }                                                                                          \
        for (k = 0; k < k_count; k++) {                                                            \
            const SCALAR *p = x + k_offsets[k];                                                    \
            VEC wv[NV];                                                                            \
            FC_UNROLL for (int v = 0; v < NV; v++) wv[v] = VLOADU(w + v * LANES);                  \
            FC_UNROLL for (int m = 0; m < MR; m++) {                                               \
                VEC b = VSET1(p[m]);                                                               \
                FC_UNROLL for (int v = 0; v < NV; v++) acc[m][v] = VFMA(b, wv[v], acc[m][v]);      \
            }                                                                                      \
            w += NR;                                                                               \
        }                                                                                          \
        /* The tile is pixel-major in registers; NCHW wants it channel-major. */                   \
        FC_UNROLL for (int m = 0; m < MR; m++)                                                     \
            FC_UNROLL for (int v = 0; v < NV; v++) VSTOREU(tile + m * NR + v * LANES, acc[m][v]);  \
        if (y_pixel_stride == 1) {                                                                 \
            for (f = 0; f < nr_valid; f++) {                                                       \
                SCALAR *row = y + (ptrdiff_t)f * y_channel_stride;                                 \
                FC_UNROLL for (int m = 0; m < MR; m++) row[m] = tile[m * NR + f];                  \
            }                                                                                      \
        } else {                                                                                   \
            for (f = 0; f < nr_valid; f++) {                                                       \
                SCALAR *row = y + (ptrdiff_t)f * y_channel_stride;                                 \
                FC_UNROLL for (int m = 0; m < MR; m++)                                             \
                    row[m * y_pixel_stride] = tile[m * NR + f];                                    \
            }                                                                                      \
        }                                                                                          \
    }

/* acc[t * acc_tap_stride + f] += sum over r < rows, q < row_len (in that order) of
 *     x[tap_offsets[t] + r * x_row_stride + q] * dout_t[(r * row_len + q) * dout_pixel_stride + f]
 * for t < MR, f < NR. */
#define FC_DEFINE_WGRAD_TILE(MR, NV, NR)                                                           \
    static void FC_KERNEL_NAME(FC_PREFIX, wgrad_tile, MR, NR, FC_ISA)(                             \
        size_t rows, size_t row_len, const SCALAR *x, const ptrdiff_t *tap_offsets,                \
        ptrdiff_t x_row_stride, const SCALAR *dout_t, ptrdiff_t dout_pixel_stride,                 \
        SCALAR *acc_io, ptrdiff_t acc_tap_stride)                                                  \
    {                                                                                              \
        VEC acc[MR][NV];                                                                           \
        const SCALAR *xt[MR];                                                                      \
        size_t r, q;                                                                               \
        FC_UNROLL for (int t = 0; t < MR; t++) {                                                   \
            xt[t] = x + tap_offsets[t];                                                            \
            FC_UNROLL for (int v = 0; v < NV; v++)                                                 \
                acc[t][v] = VLOADU(acc_io + t * acc_tap_stride + v * LANES);                       \
        }                                                                                          \
        for (r = 0; r < rows; r++) {                                                               \
            const SCALAR *d = dout_t + (ptrdiff_t)(r * row_len) * dout_pixel_stride;               \
            for (q = 0; q < row_len; q++) {                                                        \
                VEC dv[NV];                                                                        \
                FC_UNROLL for (int v = 0; v < NV; v++) dv[v] = VLOADU(d + v * LANES);              \
                d += dout_pixel_stride;                                                            \
                FC_UNROLL for (int t = 0; t < MR; t++) {                                           \
                    VEC b = VSET1(xt[t][q]);                                                       \
                    FC_UNROLL for (int v = 0; v < NV; v++) acc[t][v] = VFMA(b, dv[v], acc[t][v]);  \
                }                                                                                  \
            }                                                                                      \
            FC_UNROLL for (int t = 0; t < MR; t++) xt[t] += x_row_stride;                          \
        }                                                                                          \
        FC_UNROLL for (int t = 0; t < MR; t++)                                                     \
            FC_UNROLL for (int v = 0; v < NV; v++)                                                 \
                VSTOREU(acc_io + t * acc_tap_stride + v * LANES, acc[t][v]);                       \
    }

/* FC_PROBE_ACCUMULATORS independent chains of FMAs (enough to cover the FMA latency times the
 * number of FMA pipes of any CPU we know); returns their sum so that none can be dropped. */
#define FC_DEFINE_FMA_PROBE()                                                                      \
    static double FC_PROBE_NAME(FC_PREFIX, FC_ISA)(long iterations)                                \
    {                                                                                              \
        VEC acc[FC_PROBE_ACCUMULATORS];                                                            \
        VEC scale = VSET1((SCALAR)0.9999999), shift = VSET1((SCALAR)1e-7);                         \
        FC_ALIGN64 SCALAR out[LANES];                                                              \
        double total = 0;                                                                          \
        long i;                                                                                    \
        FC_UNROLL for (int a = 0; a < FC_PROBE_ACCUMULATORS; a++)                                  \
            acc[a] = VSET1((SCALAR)(iterations % 7 + a));                                          \
        for (i = 0; i < iterations; i++) {                                                         \
            FC_UNROLL for (int a = 0; a < FC_PROBE_ACCUMULATORS; a++)                              \
                acc[a] = VFMA(acc[a], scale, shift);                                               \
        }                                                                                          \
        FC_UNROLL for (int a = 1; a < FC_PROBE_ACCUMULATORS; a++) acc[0] = VFMA(acc[a], scale, acc[0]); \
        VSTOREU(out, acc[0]);                                                                      \
        for (i = 0; i < LANES; i++) total += out[i];                                               \
        return total;                                                                              \
    }
