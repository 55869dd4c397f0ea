/* Depthwise convolution micro-kernels: the innermost loops of fastconv/_ext/_depthwise.pyx.
 *
 *   dw_correlate  a band of output rows of a correlation whose kernel offsets all read inside
 *                 the input: the forward, and a stride-1 data gradient (kernel flipped)
 *   dw_dot_rows   one kernel offset's weight gradient: a dot product over a band of rows
 *   dw_dot_taps   the same for the offsets of a kernel row at once, all inside the input
 *   dw_sum        a bias gradient: the sum of a plane
 *
 * Written once (depthwise_impl.h) over a small vector type, and instantiated per floating type
 * and instruction set, named as XNNPACK does: fc_<f32|f64>_dw_<kernel>__<isa>.
 *
 *   generic  portable C99: GCC's and Clang's vector extensions of FC_DW_GENERIC_BYTES, which
 *            the compiler lowers to whatever its target has (SSE2 on a baseline x86-64 build,
 *            NEON on aarch64), or, with other compilers, a struct of scalars (the same
 *            element-wise operations, so the same results)
 *   avx2     x86-64 with GCC or Clang: the same source compiled for AVX2 + FMA (32-byte
 *            vectors, fused multiply-adds), whatever the build's flags
 *
 * fc_dw_kernels_for() returns the table of one instruction set; fc_dw_best() the best one this
 * CPU (and its operating system) runs. Accumulators are local variables in tiles of constant
 * size, which keeps them in vector registers with enough independent chains in flight. Every
 * sum is taken in an order fixed by the shape alone (the tiles only decide which partial sums
 * exist), so results never depend on the thread count; they may differ in the last bits
 * between instruction sets (vector width, fused multiply-adds).
 */
#ifndef FASTCONV_KERNELS_DEPTHWISE_H
#define FASTCONV_KERNELS_DEPTHWISE_H

#include <stddef.h>
#include <string.h>

#define FC_DW_GENERIC_BYTES 16  /* the narrowest common SIMD width (SSE2, NEON) */
#define FC_DW_TILE_ROWS 4       /* dw_correlate tiles: rows ... */
#define FC_DW_TILE_VECTORS 2    /* ... x vectors of columns: 8 accumulators */
#define FC_DW_DOT_VECTORS 4     /* dw_dot_rows / dw_sum: 4 accumulators */
#define FC_DW_DOT_TAPS 3        /* dw_dot_taps: offsets per pass, 2 accumulators each */

/* -DFC_DW_NATIVE_VECTORS=0 builds the struct version with any compiler (to compare them). */
#ifndef FC_DW_NATIVE_VECTORS
#if defined(__GNUC__) || defined(__clang__)
#define FC_DW_NATIVE_VECTORS 1
#else
#define FC_DW_NATIVE_VECTORS 0
#endif
#endif

#if FC_DW_NATIVE_VECTORS && (defined(__x86_64__) || defined(__i386__))
#define FC_DW_HAVE_AVX2 1
#else
#define FC_DW_HAVE_AVX2 0
#endif

/* The kernels are compiled on their own, not inlined into their (large) callers: inlined,
 * the compiler's register allocation for the accumulators gets much worse. Their helpers, on
 * the contrary, must be inlined, so that tile sizes are constants and accumulators registers
 * (GCC stops inlining them on its own when it compiles for AVX2: measured 2x slower). */
#if defined(__GNUC__) || defined(__clang__)
#define FC_DW_NOINLINE __attribute__((noinline))
#define FC_DW_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define FC_DW_NOINLINE __declspec(noinline)
#define FC_DW_INLINE static __forceinline
#else
#define FC_DW_NOINLINE
#define FC_DW_INLINE static inline
#endif

/* Ask for `bytes` from p to be brought into the cache (the next plane, while this one is
 * computed: planes are a few kB, and each is read from memory exactly once per pass). */
static inline void fc_dw_prefetch(const void *p, size_t bytes)
{
#if defined(__GNUC__) || defined(__clang__)
    size_t o;
    for (o = 0; o < bytes; o += 64)
        __builtin_prefetch((const char *)p + o);
#else
    (void)p;
    (void)bytes;
#endif
}

/* --- instantiations ---------------------------------------------------------------------- */

#define FC_NATIVE FC_DW_NATIVE_VECTORS
#define FC_VECTOR_BYTES FC_DW_GENERIC_BYTES
#define FC_REAL float
#define FC_HALF 1
#define FC_NAME(name) fc_f32_##name##__generic
#include "depthwise_impl.h"
#undef FC_REAL
#undef FC_HALF
#undef FC_NAME
#define FC_REAL double
#define FC_HALF 0                /* half a vector: one element */
#define FC_NAME(name) fc_f64_##name##__generic
#include "depthwise_impl.h"
#undef FC_REAL
#undef FC_HALF
#undef FC_NAME
#undef FC_VECTOR_BYTES
#undef FC_NATIVE

#if FC_DW_HAVE_AVX2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define FC_NATIVE 1
#define FC_VECTOR_BYTES 32
#define FC_HALF 1
#define FC_REAL float
#define FC_NAME(name) fc_f32_##name##__avx2
#include "depthwise_impl.h"
#undef FC_REAL
#undef FC_NAME
#define FC_REAL double
#define FC_NAME(name) fc_f64_##name##__avx2
#include "depthwise_impl.h"
#undef FC_REAL
#undef FC_NAME
#undef FC_HALF
#undef FC_VECTOR_BYTES
#undef FC_NATIVE
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

/* --- the table of one instruction set ----------------------------------------------------- */

#define FC_DW_SIGNATURES(T, P)                                                                   \
    void (*P##correlate)(const T *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const T *,         \
                         ptrdiff_t, ptrdiff_t, ptrdiff_t, T *, ptrdiff_t, ptrdiff_t, ptrdiff_t, T, \
                         int);                                                                     \
    T (*P##dot_rows)(const T *, ptrdiff_t, const T *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t); \
    void (*P##dot_taps)(const T *, ptrdiff_t, const T *, ptrdiff_t, ptrdiff_t, ptrdiff_t,          \
                        ptrdiff_t, ptrdiff_t, ptrdiff_t, T *, int);                                \
    T (*P##sum)(const T *, ptrdiff_t);

typedef struct {
    const char *isa;
    FC_DW_SIGNATURES(float, f32_)
    FC_DW_SIGNATURES(double, f64_)
} fc_dw_kernels;

#define FC_DW_TABLE(ISA)                                                                          \
    {#ISA, fc_f32_dw_correlate__##ISA, fc_f32_dw_dot_rows__##ISA, fc_f32_dw_dot_taps__##ISA,       \
     fc_f32_dw_sum__##ISA, fc_f64_dw_correlate__##ISA, fc_f64_dw_dot_rows__##ISA,                  \
     fc_f64_dw_dot_taps__##ISA, fc_f64_dw_sum__##ISA}

static const fc_dw_kernels fc_dw_generic = FC_DW_TABLE(generic);
#if FC_DW_HAVE_AVX2
static const fc_dw_kernels fc_dw_avx2 = FC_DW_TABLE(avx2);
#endif

/* The kernels of instruction set `isa` ("generic" or "avx2"), or NULL when this build or this
 * CPU cannot run them. */
static inline const fc_dw_kernels *fc_dw_kernels_for(const char *isa)
{
    if (strcmp(isa, "generic") == 0)
        return &fc_dw_generic;
#if FC_DW_HAVE_AVX2
    /* (GCC's and Clang's checks include the operating system's support of the ymm state) */
    if (strcmp(isa, "avx2") == 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &fc_dw_avx2;
#endif
    return NULL;
}

static inline const fc_dw_kernels *fc_dw_best(void)
{
    const fc_dw_kernels *k = fc_dw_kernels_for("avx2");
    return k ? k : &fc_dw_generic;
}

#endif
