/* Portable micro-kernels (kernels.h) in plain C, for every CPU: a "vector" is a small array
 * that the compiler maps onto whatever SIMD the build targets (SSE2 on x86-64, NEON on
 * aarch64), or scalars. Correctness first; these are the fallback and the reference path of
 * the engine on machines without AVX2. */
#include "kernels.h"
#include "tile_template.h"

#define FC_ISA generic
#define FC_PROBE_ACCUMULATORS 8

#define FC_PREFIX f32
#define SCALAR float
#define LANES 4
typedef struct { float v[4]; } fc_f32x4;
#define VEC fc_f32x4
static inline fc_f32x4 f32x4_zero(void) { fc_f32x4 r = {{0, 0, 0, 0}}; return r; }
static inline fc_f32x4 f32x4_loadu(const float *p) { fc_f32x4 r = {{p[0], p[1], p[2], p[3]}}; return r; }
static inline void f32x4_storeu(float *p, fc_f32x4 a) { p[0] = a.v[0]; p[1] = a.v[1]; p[2] = a.v[2]; p[3] = a.v[3]; }
static inline fc_f32x4 f32x4_set1(float s) { fc_f32x4 r = {{s, s, s, s}}; return r; }
static inline fc_f32x4 f32x4_fma(fc_f32x4 a, fc_f32x4 b, fc_f32x4 c)
{
    fc_f32x4 r;
    int i;
    for (i = 0; i < 4; i++) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
}
static inline fc_f32x4 f32x4_add(fc_f32x4 a, fc_f32x4 b)
{
    fc_f32x4 r;
    int i;
    for (i = 0; i < 4; i++) r.v[i] = a.v[i] + b.v[i];
    return r;
}
static inline fc_f32x4 f32x4_sub(fc_f32x4 a, fc_f32x4 b)
{
    fc_f32x4 r;
    int i;
    for (i = 0; i < 4; i++) r.v[i] = a.v[i] - b.v[i];
    return r;
}
#define VADD(a, b) f32x4_add(a, b)
#define VSUB(a, b) f32x4_sub(a, b)
#define VZERO() f32x4_zero()
#define VLOADU(p) f32x4_loadu(p)
#define VSTOREU(p, v) f32x4_storeu(p, v)
#define VSET1(s) f32x4_set1(s)
#define VFMA(a, b, c) f32x4_fma(a, b, c)
#define FC_F32_TILES(X) FC_MR_1_TO_6(X, 1, 4) FC_MR_1_TO_6(X, 2, 8) FC_MR_1_TO_4(X, 4, 16)
#define VEVEN_ODD(a, b, even, odd)                                                               \
    do {                                                                                         \
        fc_f32x4 a_ = (a), b_ = (b);                                                             \
        fc_f32x4 e_ = {{a_.v[0], a_.v[2], b_.v[0], b_.v[2]}};                                    \
        fc_f32x4 o_ = {{a_.v[1], a_.v[3], b_.v[1], b_.v[3]}};                                    \
        even = e_;                                                                               \
        odd = o_;                                                                                \
    } while (0)
FC_DEFINE_ALL(FC_F32_TILES)
#undef FC_PREFIX
#undef SCALAR
#undef LANES
#undef VEC
#undef VZERO
#undef VLOADU
#undef VSTOREU
#undef VSET1
#undef VFMA
#undef VADD
#undef VSUB
#undef VEVEN_ODD

#define FC_PREFIX f64
#define SCALAR double
#define LANES 2
typedef struct { double v[2]; } fc_f64x2;
#define VEC fc_f64x2
static inline fc_f64x2 f64x2_zero(void) { fc_f64x2 r = {{0, 0}}; return r; }
static inline fc_f64x2 f64x2_loadu(const double *p) { fc_f64x2 r = {{p[0], p[1]}}; return r; }
static inline void f64x2_storeu(double *p, fc_f64x2 a) { p[0] = a.v[0]; p[1] = a.v[1]; }
static inline fc_f64x2 f64x2_set1(double s) { fc_f64x2 r = {{s, s}}; return r; }
static inline fc_f64x2 f64x2_fma(fc_f64x2 a, fc_f64x2 b, fc_f64x2 c)
{
    fc_f64x2 r;
    r.v[0] = a.v[0] * b.v[0] + c.v[0];
    r.v[1] = a.v[1] * b.v[1] + c.v[1];
    return r;
}
static inline fc_f64x2 f64x2_add(fc_f64x2 a, fc_f64x2 b)
{
    fc_f64x2 r;
    r.v[0] = a.v[0] + b.v[0];
    r.v[1] = a.v[1] + b.v[1];
    return r;
}
static inline fc_f64x2 f64x2_sub(fc_f64x2 a, fc_f64x2 b)
{
    fc_f64x2 r;
    r.v[0] = a.v[0] - b.v[0];
    r.v[1] = a.v[1] - b.v[1];
    return r;
}
#define VADD(a, b) f64x2_add(a, b)
#define VSUB(a, b) f64x2_sub(a, b)
#define VZERO() f64x2_zero()
#define VLOADU(p) f64x2_loadu(p)
#define VSTOREU(p, v) f64x2_storeu(p, v)
#define VSET1(s) f64x2_set1(s)
#define VFMA(a, b, c) f64x2_fma(a, b, c)
#define FC_F64_TILES(X) FC_MR_1_TO_6(X, 1, 2) FC_MR_1_TO_6(X, 2, 4) FC_MR_1_TO_4(X, 4, 8)
#define VEVEN_ODD(a, b, even, odd)                                                               \
    do {                                                                                         \
        fc_f64x2 a_ = (a), b_ = (b);                                                             \
        fc_f64x2 e_ = {{a_.v[0], b_.v[0]}}, o_ = {{a_.v[1], b_.v[1]}};                           \
        even = e_;                                                                               \
        odd = o_;                                                                                \
    } while (0)
FC_DEFINE_ALL(FC_F64_TILES)

static void f32_transpose_1x1__generic(size_t rows, size_t cols, const float *src,
                                       ptrdiff_t src_stride, float *dst, ptrdiff_t dst_stride)
{
    size_t r, c;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) dst[(ptrdiff_t)c * dst_stride + r] = src[(ptrdiff_t)r * src_stride + c];
}

static void f64_transpose_1x1__generic(size_t rows, size_t cols, const double *src,
                                       ptrdiff_t src_stride, double *dst, ptrdiff_t dst_stride)
{
    size_t r, c;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) dst[(ptrdiff_t)c * dst_stride + r] = src[(ptrdiff_t)r * src_stride + c];
}

const fc_isa_kernels fc_kernels__generic = {
    .name = "generic",
    .f32_lanes = 4,
    .f64_lanes = 2,
    .max_mr = {0, 6, 6, 0, 4},
    .f32_conv = {FC_F32_TILES(FC_F32_CONV_ENTRY)},
    .f64_conv = {FC_F64_TILES(FC_F64_CONV_ENTRY)},
    .f32_wgrad = {FC_F32_TILES(FC_F32_WGRAD_ENTRY)},
    .f64_wgrad = {FC_F64_TILES(FC_F64_WGRAD_ENTRY)},
    .f32_gemm = {FC_F32_TILES(FC_F32_GEMM_ENTRY)},
    .f64_gemm = {FC_F64_TILES(FC_F64_GEMM_ENTRY)},
    FC_WINOGRAD_ENTRIES
    .f32_transpose = f32_transpose_1x1__generic,
    .f64_transpose = f64_transpose_1x1__generic,
    .f32_fma_probe = f32_fma_probe__generic,
    .f64_fma_probe = f64_fma_probe__generic,
    .fma_probe_flops_f32 = 2L * FC_PROBE_ACCUMULATORS * 4,
    .fma_probe_flops_f64 = 2L * FC_PROBE_ACCUMULATORS * 2,
};
