/* AVX2 + FMA3 micro-kernels (kernels.h): 16 vector registers, of which MR*NV accumulators (6
 * pixels x 2 vectors, 4 x 3, 14 x 1), NV weight vectors and one broadcast (AVX2 FMAs cannot
 * broadcast from memory). Compiled for AVX2 whatever the build's flags, called only when the
 * CPU and the OS support it (isa.c). */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx2,fma")
#endif
#include <immintrin.h>

#include "tile_template.h"

#define FC_ISA avx2
#define FC_PROBE_ACCUMULATORS 12

#define FC_PREFIX f32
#define SCALAR float
#define VEC __m256
#define LANES 8
#define VZERO() _mm256_setzero_ps()
#define VLOADU(p) _mm256_loadu_ps(p)
#define VSTOREU(p, v) _mm256_storeu_ps(p, v)
#define VSET1(s) _mm256_set1_ps(s)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VADD(a, b) _mm256_add_ps(a, b)
#define VSUB(a, b) _mm256_sub_ps(a, b)
#define FC_F32_TILES(X) FC_MR_1_TO_14(X, 1, 8) FC_MR_1_TO_6(X, 2, 16) FC_MR_1_TO_4(X, 3, 24)
/* [a0 a2 b0 b2 | a4 a6 b4 b6], then the middle 64-bit halves swapped. */
#define VEVEN_ODD(a, b, even, odd)                                                               \
    do {                                                                                         \
        __m256 a_ = (a), b_ = (b);                                                               \
        even = _mm256_castpd_ps(_mm256_permute4x64_pd(                                           \
            _mm256_castps_pd(_mm256_shuffle_ps(a_, b_, 0x88)), 0xd8));                           \
        odd = _mm256_castpd_ps(_mm256_permute4x64_pd(                                            \
            _mm256_castps_pd(_mm256_shuffle_ps(a_, b_, 0xdd)), 0xd8));                           \
    } while (0)
FC_DEFINE_ALL(FC_F32_TILES)
#undef FC_PREFIX
#undef SCALAR
#undef VEC
#undef LANES
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
#define VEC __m256d
#define LANES 4
#define VZERO() _mm256_setzero_pd()
#define VLOADU(p) _mm256_loadu_pd(p)
#define VSTOREU(p, v) _mm256_storeu_pd(p, v)
#define VSET1(s) _mm256_set1_pd(s)
#define VFMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define VADD(a, b) _mm256_add_pd(a, b)
#define VSUB(a, b) _mm256_sub_pd(a, b)
#define FC_F64_TILES(X) FC_MR_1_TO_14(X, 1, 4) FC_MR_1_TO_6(X, 2, 8) FC_MR_1_TO_4(X, 3, 12)
#define VEVEN_ODD(a, b, even, odd)                                                               \
    do {                                                                                         \
        __m256d a_ = (a), b_ = (b);                                                              \
        even = _mm256_permute4x64_pd(_mm256_unpacklo_pd(a_, b_), 0xd8);                          \
        odd = _mm256_permute4x64_pd(_mm256_unpackhi_pd(a_, b_), 0xd8);                           \
    } while (0)
FC_DEFINE_ALL(FC_F64_TILES)

#include "transpose_avx.h"

const fc_isa_kernels fc_kernels__avx2 = {
    .name = "avx2",
    .f32_lanes = 8,
    .f64_lanes = 4,
    .max_mr = {0, 14, 6, 4, 0},
    .f32_conv = {FC_F32_TILES(FC_F32_CONV_ENTRY)},
    .f64_conv = {FC_F64_TILES(FC_F64_CONV_ENTRY)},
    .f32_wgrad = {FC_F32_TILES(FC_F32_WGRAD_ENTRY)},
    .f64_wgrad = {FC_F64_TILES(FC_F64_WGRAD_ENTRY)},
    .f32_gemm = {FC_F32_TILES(FC_F32_GEMM_ENTRY)},
    .f64_gemm = {FC_F64_TILES(FC_F64_GEMM_ENTRY)},
    FC_WINOGRAD_ENTRIES
    .f32_transpose = f32_transpose_8x8__avx2,
    .f64_transpose = f64_transpose_4x4__avx2,
    .f32_fma_probe = f32_fma_probe__avx2,
    .f64_fma_probe = f64_fma_probe__avx2,
    .fma_probe_flops_f32 = 2L * FC_PROBE_ACCUMULATORS * 8,
    .fma_probe_flops_f64 = 2L * FC_PROBE_ACCUMULATORS * 4,
};

#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
/* Not an x86-64 build: no AVX2 kernels (isa.c never asks for them). */
typedef int fc_no_avx2_kernels;
#endif
