/* AVX-512F micro-kernels (kernels.h): 32 vector registers, so up to MR*NV = 28 accumulators
 * (14 pixels x 2 vectors, 9 x 3, 6 x 4, 16 x 1) beside the NV weight vectors; broadcasts fold
 * into the FMAs' memory operands. Compiled for AVX-512 whatever the build's flags, called only
 * when the CPU and the OS support it (isa.c). */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512f,avx2,fma")
#endif
#include <immintrin.h>

#include "tile_template.h"

#define FC_ISA avx512
#define FC_PROBE_ACCUMULATORS 24

#define FC_PREFIX f32
#define SCALAR float
#define VEC __m512
#define LANES 16
#define VZERO() _mm512_setzero_ps()
#define VLOADU(p) _mm512_loadu_ps(p)
#define VSTOREU(p, v) _mm512_storeu_ps(p, v)
#define VSET1(s) _mm512_set1_ps(s)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VADD(a, b) _mm512_add_ps(a, b)
#define VSUB(a, b) _mm512_sub_ps(a, b)
#define FC_F32_TILES(X) \
    FC_MR_1_TO_16(X, 1, 16) FC_MR_1_TO_14(X, 2, 32) FC_MR_1_TO_9(X, 3, 48) FC_MR_1_TO_6(X, 4, 64)
#define VEVEN_ODD(a, b, even, odd)                                                               \
    do {                                                                                         \
        __m512 a_ = (a), b_ = (b);                                                               \
        even = _mm512_permutex2var_ps(a_, _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14,   \
                                      12, 10, 8, 6, 4, 2, 0), b_);                               \
        odd = _mm512_permutex2var_ps(a_, _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15,    \
                                     13, 11, 9, 7, 5, 3, 1), b_);                                \
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
#define VEC __m512d
#define LANES 8
#define VZERO() _mm512_setzero_pd()
#define VLOADU(p) _mm512_loadu_pd(p)
#define VSTOREU(p, v) _mm512_storeu_pd(p, v)
#define VSET1(s) _mm512_set1_pd(s)
#define VFMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define VADD(a, b) _mm512_add_pd(a, b)
#define VSUB(a, b) _mm512_sub_pd(a, b)
#define FC_F64_TILES(X) \
    FC_MR_1_TO_16(X, 1, 8) FC_MR_1_TO_14(X, 2, 16) FC_MR_1_TO_9(X, 3, 24) FC_MR_1_TO_6(X, 4, 32)
#define VEVEN_ODD(a, b, even, odd)                                                               \
    do {                                                                                         \
        __m512d a_ = (a), b_ = (b);                                                              \
        even = _mm512_permutex2var_pd(a_, _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), b_);      \
        odd = _mm512_permutex2var_pd(a_, _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1), b_);       \
    } while (0)
FC_DEFINE_ALL(FC_F64_TILES)

#include "transpose_avx.h"

const fc_isa_kernels fc_kernels__avx512 = {
    .name = "avx512",
    .f32_lanes = 16,
    .f64_lanes = 8,
    .max_mr = {0, 16, 14, 9, 6},
    .f32_conv = {FC_F32_TILES(FC_F32_CONV_ENTRY)},
    .f64_conv = {FC_F64_TILES(FC_F64_CONV_ENTRY)},
    .f32_wgrad = {FC_F32_TILES(FC_F32_WGRAD_ENTRY)},
    .f64_wgrad = {FC_F64_TILES(FC_F64_WGRAD_ENTRY)},
    .f32_gemm = {FC_F32_TILES(FC_F32_GEMM_ENTRY)},
    .f64_gemm = {FC_F64_TILES(FC_F64_GEMM_ENTRY)},
    FC_WINOGRAD_ENTRIES
    .f32_transpose = f32_transpose_8x8__avx512,
    .f64_transpose = f64_transpose_4x4__avx512,
    .f32_fma_probe = f32_fma_probe__avx512,
    .f64_fma_probe = f64_fma_probe__avx512,
    .fma_probe_flops_f32 = 2L * FC_PROBE_ACCUMULATORS * 16,
    .fma_probe_flops_f64 = 2L * FC_PROBE_ACCUMULATORS * 8,
};

#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
/* Not an x86-64 build: no AVX-512 kernels (isa.c never asks for them). */
typedef int fc_no_avx512_kernels;
#endif
