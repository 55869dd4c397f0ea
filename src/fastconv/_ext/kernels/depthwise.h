/* Depthwise convolution micro-kernels: the innermost loops of fastconv/_ext/_depthwise.pyx,
 * for float (fc_f32_*) and double (fc_f64_*).
 *
 *   dw_correlate  a band of output rows of a correlation whose kernel offsets all read inside
 *                 the input: the forward, and a stride-1 data gradient (kernel flipped)
 *   dw_dot_rows   one kernel offset's weight gradient: a dot product over a band of rows
 *   dw_dot_taps   the same for the offsets of a kernel row at once, all inside the input
 *   dw_sum        a bias gradient: the sum of a plane
 *
 * Portable C99 over a small vector type (FC_DW_VECTOR_BYTES of the floating type): GCC's
 * and Clang's vector extensions, which the compiler lowers to whatever vector instructions
 * its target has (SSE2 on a baseline x86-64 build, NEON on aarch64), or a struct of scalars
 * elsewhere (the same element-wise operations, so the same results). Accumulators are local
 * variables in tiles of constant size, which keeps them in vector registers with enough
 * independent chains in flight; no intrinsics, no CPU dispatch. Every sum is taken in an
 * order fixed by the shape alone (the tiles only decide which partial sums exist).
 */
#ifndef FASTCONV_KERNELS_DEPTHWISE_H
#define FASTCONV_KERNELS_DEPTHWISE_H

#include <stddef.h>
#include <string.h>

#define FC_DW_VECTOR_BYTES 16   /* the narrowest common SIMD width (SSE2, NEON) */
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

/* The kernels are compiled on their own, not inlined into their (large) callers: inlined,
 * the compiler's register allocation for the accumulators gets much worse. */
#if defined(__GNUC__) || defined(__clang__)
#define FC_DW_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define FC_DW_NOINLINE __declspec(noinline)
#else
#define FC_DW_NOINLINE
#endif

#define FC_REAL float
#define FC_NAME(name) fc_f32_##name
#include "depthwise_impl.h"
#undef FC_REAL
#undef FC_NAME

#define FC_REAL double
#define FC_NAME(name) fc_f64_##name
#include "depthwise_impl.h"
#undef FC_REAL
#undef FC_NAME

#endif
