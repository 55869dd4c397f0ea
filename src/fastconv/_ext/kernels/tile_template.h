/* The micro-kernel bodies, written once over a small vector vocabulary that each instruction
 * set file defines before including this header:
 *
 *   FC_PREFIX  f32 or f64            FC_ISA     avx512, avx2 or generic
 *   SCALAR     float or double       VEC        the vector type, LANES elements
 *   VZERO()    VLOADU(p)  VSTOREU(p, v)  VSET1(s)  VFMA(a, b, c) = a*b + c, one rounding
 *   VADD(a, b)  VSUB(a, b)  VEVEN_ODD(a, b, even, odd): even/odd elements of a then b
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
/* FC_OP_NAME(f32, window_rows, avx512) is f32_window_rows__avx512. */
#define FC_OP_NAME_(prefix, op, isa) prefix##_##op##__##isa
#define FC_OP_NAME(prefix, op, isa) FC_OP_NAME_(prefix, op, isa)
#define FC_PROBE_NAME(prefix, isa) FC_OP_NAME(prefix, fma_probe, isa)

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
#define FC_F32_GEMM_ENTRY(MR, NV, NR) [NV][MR] = FC_KERNEL_NAME(f32, gemm_tile, MR, NR, FC_ISA),
#define FC_F64_GEMM_ENTRY(MR, NV, NR) [NV][MR] = FC_KERNEL_NAME(f64, gemm_tile, MR, NR, FC_ISA),
/* The Winograd entries of a kernel table. */
#define FC_WINOGRAD_ENTRIES                                                                        \
    .f32_winograd_input = {FC_KERNEL_NAME(f32, winograd_input, 2, 3, FC_ISA),                      \
                           FC_KERNEL_NAME(f32, winograd_input, 4, 3, FC_ISA)},                     \
    .f64_winograd_input = {FC_KERNEL_NAME(f64, winograd_input, 2, 3, FC_ISA),                      \
                           FC_KERNEL_NAME(f64, winograd_input, 4, 3, FC_ISA)},                     \
    .f32_winograd_output = {FC_KERNEL_NAME(f32, winograd_output, 2, 3, FC_ISA),                    \
                            FC_KERNEL_NAME(f32, winograd_output, 4, 3, FC_ISA)},                   \
    .f64_winograd_output = {FC_KERNEL_NAME(f64, winograd_output, 2, 3, FC_ISA),                    \
                            FC_KERNEL_NAME(f64, winograd_output, 4, 3, FC_ISA)},                   \
    .f32_window_rows = FC_OP_NAME(f32, window_rows, FC_ISA),                                       \
    .f64_window_rows = FC_OP_NAME(f64, window_rows, FC_ISA),
/* Every kernel of one data type (the caller has defined the vector vocabulary). */
#define FC_DEFINE_ALL(TILES)                                                                       \
    TILES(FC_DEFINE_CONV_TILE)                                                                     \
    TILES(FC_DEFINE_WGRAD_TILE)                                                                    \
    TILES(FC_DEFINE_GEMM_TILE)                                                                     \
    FC_DEFINE_WINOGRAD(2, 4)                                                                       \
    FC_DEFINE_WINOGRAD(4, 6)                                                                       \
    FC_DEFINE_WINDOW_ROWS()                                                                        \
    FC_DEFINE_FMA_PROBE()

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

/* c[m * ldc + f] = sum_k a[m * lda + k] * b[k][f] for m < MR, f < NR: a GEMM tile over rows of
 * a matrix as stored (Winograd's transformed inputs: tiles x channels) and a packed panel of
 * NR columns (its transformed weights), stored row by row. */
#define FC_DEFINE_GEMM_TILE(MR, NV, NR)                                                            \
    static void FC_KERNEL_NAME(FC_PREFIX, gemm_tile, MR, NR, FC_ISA)(                              \
        size_t k_count, const SCALAR *a, ptrdiff_t lda, const SCALAR *b, SCALAR *c,                \
        ptrdiff_t ldc)                                                                             \
    {                                                                                              \
        VEC acc[MR][NV];                                                                           \
        const SCALAR *am[MR];                                                                      \
        size_t k;                                                                                  \
        FC_UNROLL for (int m = 0; m < MR; m++) {                                                   \
            am[m] = a + m * lda;                                                                   \
            FC_UNROLL for (int v = 0; v < NV; v++) acc[m][v] = VZERO();                            \
        }                                                                                          \
        for (k = 0; k < k_count; k++) {                                                            \
            VEC bv[NV];                                                                            \
            FC_UNROLL for (int v = 0; v < NV; v++) bv[v] = VLOADU(b + v * LANES);                  \
            FC_UNROLL for (int m = 0; m < MR; m++) {                                               \
                VEC s = VSET1(am[m][k]);                                                           \
                FC_UNROLL for (int v = 0; v < NV; v++) acc[m][v] = VFMA(s, bv[v], acc[m][v]);      \
            }                                                                                      \
            b += NR;                                                                               \
        }                                                                                          \
        FC_UNROLL for (int m = 0; m < MR; m++)                                                     \
            FC_UNROLL for (int v = 0; v < NV; v++) VSTOREU(c + m * ldc + v * LANES, acc[m][v]);    \
    }

/* Winograd F(m x m, 3 x 3) input and output transforms of one tile, one vector of channels
 * (input) or filters (output) at a time, after Lavin & Gray (2016):
 *   V = B^T d B  (d: the (m+2) x (m+2) input tile),   Y = A^T M A  (M: (m+2)^2 products).
 * Input: d[i][j] = in[i * row_stride + j * col_stride + vector], i, j < m + 2 (channels last);
 *        v[xi * xi_stride + vector], xi = i * (m + 2) + j.
 * Output: mm[xi * xi_stride + vector] in, out[i * row_stride + j * col_stride + vector] =
 *         bias + Y[i][j] (channels last; the caller transposes rows into NCHW). Constants
 *         that are powers of two multiply exactly. */
#define FC_WINO_LOAD_ROW(dst, base, stride, count)                                                 \
    FC_UNROLL for (int q = 0; q < count; q++) dst[q] = VLOADU(base + q * stride);

/* B^T of F(4x4, 3x3) applied to the 6 vectors d: r = B^T d. */
#define FC_WINO4_BT(r, d)                                                                          \
    do {                                                                                           \
        VEC d12 = VADD(d[1], d[2]), d34 = VADD(d[3], d[4]);                                        \
        VEC e12 = VSUB(d[1], d[2]), e43 = VSUB(d[4], d[3]);                                        \
        VEC d42 = VSUB(d[4], d[2]), d31 = VSUB(d[3], d[1]);                                        \
        r[0] = VFMA(VSET1((SCALAR)4), d[0], VFMA(VSET1((SCALAR)-5), d[2], d[4]));                  \
        r[1] = VFMA(VSET1((SCALAR)-4), d12, d34);                                                  \
        r[2] = VFMA(VSET1((SCALAR)4), e12, e43);                                                   \
        r[3] = VFMA(VSET1((SCALAR)2), d31, d42);                                                   \
        r[4] = VFMA(VSET1((SCALAR)-2), d31, d42);                                                  \
        r[5] = VFMA(VSET1((SCALAR)4), d[1], VFMA(VSET1((SCALAR)-5), d[3], d[5]));                  \
    } while (0)

/* A^T of F(4x4, 3x3) applied to the 6 vectors s: o = A^T s (4 vectors). */
#define FC_WINO4_AT(o, s)                                                                          \
    do {                                                                                           \
        VEC s12 = VADD(s[1], s[2]), s34 = VADD(s[3], s[4]);                                        \
        VEC e12 = VSUB(s[1], s[2]), e34 = VSUB(s[3], s[4]);                                        \
        o[0] = VADD(VADD(s[0], s12), s34);                                                         \
        o[1] = VFMA(VSET1((SCALAR)2), e34, e12);                                                   \
        o[2] = VFMA(VSET1((SCALAR)4), s34, s12);                                                   \
        o[3] = VADD(VFMA(VSET1((SCALAR)8), e34, e12), s[5]);                                       \
    } while (0)

/* F(2x2, 3x3): B^T d (4 vectors) and A^T s (2 vectors). */
#define FC_WINO2_BT(r, d)                                                                          \
    do {                                                                                           \
        r[0] = VSUB(d[0], d[2]);                                                                   \
        r[1] = VADD(d[1], d[2]);                                                                   \
        r[2] = VSUB(d[2], d[1]);                                                                   \
        r[3] = VSUB(d[1], d[3]);                                                                   \
    } while (0)
#define FC_WINO2_AT(o, s)                                                                          \
    do {                                                                                           \
        o[0] = VADD(VADD(s[0], s[1]), s[2]);                                                       \
        o[1] = VSUB(VSUB(s[1], s[2]), s[3]);                                                       \
    } while (0)

#define FC_DEFINE_WINOGRAD(M, A)                                                                   \
    static void FC_KERNEL_NAME(FC_PREFIX, winograd_input, M, 3, FC_ISA)(                           \
        const SCALAR *in, ptrdiff_t row_stride, ptrdiff_t col_stride, size_t vectors,              \
        SCALAR *v, ptrdiff_t xi_stride)                                                            \
    {                                                                                              \
        size_t cv;                                                                                 \
        for (cv = 0; cv < vectors; cv++) {                                                         \
            VEC t[A][A], d[A], r[A];                                                               \
            const SCALAR *base = in + cv * LANES;                                                  \
            FC_UNROLL for (int j = 0; j < A; j++) {       /* columns: t[.][j] = B^T d[.][j] */     \
                FC_WINO_LOAD_ROW(d, base + j * col_stride, row_stride, A)                          \
                FC_WINO##M##_BT(r, d);                                                             \
                FC_UNROLL for (int i = 0; i < A; i++) t[i][j] = r[i];                              \
            }                                                                                      \
            FC_UNROLL for (int i = 0; i < A; i++) {       /* rows: V[i][.] = t[i][.] B */          \
                FC_WINO##M##_BT(r, t[i]);                                                          \
                FC_UNROLL for (int j = 0; j < A; j++)                                              \
                    VSTOREU(v + (i * A + j) * xi_stride + cv * LANES, r[j]);                       \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    static void FC_KERNEL_NAME(FC_PREFIX, winograd_output, M, 3, FC_ISA)(                          \
        const SCALAR *mm, ptrdiff_t xi_stride, size_t vectors, const SCALAR *bias, SCALAR *out,    \
        ptrdiff_t row_stride, ptrdiff_t col_stride)                                                \
    {                                                                                              \
        size_t fv;                                                                                 \
        for (fv = 0; fv < vectors; fv++) {                                                         \
            VEC s[A], t[M][A], o[M], b = bias ? VLOADU(bias + fv * LANES) : VZERO();               \
            const SCALAR *base = mm + fv * LANES;                                                  \
            FC_UNROLL for (int jj = 0; jj < A; jj++) {    /* columns: t[.][j] = A^T M[.][j] */     \
                FC_WINO_LOAD_ROW(s, base + jj * xi_stride, A * xi_stride, A)                       \
                FC_WINO##M##_AT(o, s);                                                             \
                FC_UNROLL for (int ii = 0; ii < M; ii++) t[ii][jj] = o[ii];                        \
            }                                                                                      \
            FC_UNROLL for (int ii = 0; ii < M; ii++) {    /* rows: Y[i][.] = t[i][.] A */          \
                FC_WINO##M##_AT(o, t[ii]);                                                         \
                FC_UNROLL for (int jj = 0; jj < M; jj++)                                           \
                    VSTOREU(out + ii * row_stride + jj * col_stride + fv * LANES, VADD(o[jj], b)); \
            }                                                                                      \
        }                                                                                          \
    }



/* Window rows (_engine.pyx's copy_window), for r < rows, c < channels, t < step, q < width:
 *   dst[r * dst_row_stride + c * dst_channel_stride + t * width + q]
 *       = src[r * src_row_stride + c * src_channel_stride + col0 + q * step + t]
 * (0 where the column is outside [0, src_w)); step is 1 or 2 (2: even columns, then odd).
 * Window rows are short (a padded image row), so the inside is copied in whole vectors, the
 * last one overlapping the one before rather than a scalar tail; the caller's VEVEN_ODD
 * splits a pair of vectors into their even and odd elements. */
/* One pair of the edge, where a column may fall outside the row. */
#define FC_EDGE_PAIR(q)                                                                            \
    {                                                                                              \
        ptrdiff_t col = col0 + 2 * (q);                                                            \
        d[q] = col >= 0 && col < src_w ? row[col] : 0;                                             \
        odd[q] = col + 1 >= 0 && col + 1 < src_w ? row[col + 1] : 0;                               \
    }
#define FC_DEFINE_WINDOW_ROWS()                                                                    \
    static void FC_OP_NAME(FC_PREFIX, window_rows, FC_ISA)(                                        \
        size_t rows, size_t channels, const SCALAR *src, ptrdiff_t src_row_stride,                 \
        ptrdiff_t src_channel_stride, ptrdiff_t col0, ptrdiff_t src_w, size_t step,                \
        size_t width, SCALAR *dst, ptrdiff_t dst_row_stride, ptrdiff_t dst_channel_stride)         \
    {                                                                                              \
        ptrdiff_t w = (ptrdiff_t)width, lo, hi, n, i, q;                                           \
        size_t r, c;                                                                               \
        if (step == 1) {      /* inside: window columns [lo, hi) */                                \
            lo = -col0 < 0 ? 0 : (-col0 > w ? w : -col0);                                          \
            hi = src_w - col0 > w ? w : src_w - col0;                                              \
            if (hi < lo) hi = lo;                                                                  \
        } else {              /* inside: pairs [lo, hi), both columns in the row */                \
            lo = -col0 <= 0 ? 0 : (-col0 + 1) / 2;                                                 \
            if (lo > w) lo = w;                                                                    \
            hi = src_w - col0 >= 1 ? (src_w - col0 - 1) / 2 : 0;                                   \
            if (hi > w) hi = w;                                                                    \
            if (hi < lo) hi = lo;                                                                  \
        }                                                                                          \
        n = hi - lo;                                                                               \
        for (r = 0; r < rows; r++) {                                                               \
            for (c = 0; c < channels; c++) {                                                       \
                const SCALAR *row = src + (ptrdiff_t)r * src_row_stride                            \
                                    + (ptrdiff_t)c * src_channel_stride;                           \
                SCALAR *d = dst + (ptrdiff_t)r * dst_row_stride + (ptrdiff_t)c * dst_channel_stride; \
                if (step == 1) {                                                                   \
                    const SCALAR *s = row + col0 + lo;                                             \
                    for (i = 0; i < lo; i++) d[i] = 0;                                             \
                    for (i = hi; i < w; i++) d[i] = 0;                                             \
                    if (n >= LANES) {                                                              \
                        for (i = 0; i + LANES <= n; i += LANES) VSTOREU(d + lo + i, VLOADU(s + i)); \
                        VSTOREU(d + hi - LANES, VLOADU(s + n - LANES));                            \
                    } else {                                                                       \
                        for (i = 0; i < n; i++) d[lo + i] = s[i];                                  \
                    }                                                                              \
                } else {                                                                           \
                    const SCALAR *s = row + col0 + 2 * lo;                                         \
                    SCALAR *odd = d + w;                                                           \
                    for (q = 0; q < lo; q++) FC_EDGE_PAIR(q)                                       \
                    for (q = hi; q < w; q++) FC_EDGE_PAIR(q)                                       \
                    if (n >= LANES) {                                                              \
                        VEC even, odds;                                                            \
                        for (i = 0; i + LANES <= n; i += LANES) {                                  \
                            VEVEN_ODD(VLOADU(s + 2 * i), VLOADU(s + 2 * i + LANES), even, odds);   \
                            VSTOREU(d + lo + i, even);                                             \
                            VSTOREU(odd + lo + i, odds);                                           \
                        }                                                                          \
                        i = n - LANES;                                                             \
                        VEVEN_ODD(VLOADU(s + 2 * i), VLOADU(s + 2 * i + LANES), even, odds);       \
                        VSTOREU(d + lo + i, even);                                                 \
                        VSTOREU(odd + lo + i, odds);                                               \
                    } else {                                                                       \
                        for (i = 0; i < n; i++) {                                                  \
                            d[lo + i] = s[2 * i];                                                  \
                            odd[lo + i] = s[2 * i + 1];                                            \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
