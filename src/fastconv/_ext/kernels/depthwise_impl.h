/* The body of depthwise.h for one floating type and instruction set. Included once per
 * instantiation (no include guard on purpose), with:
 *
 *   FC_REAL          the floating type
 *   FC_NAME(name)    the name of a function or type for this instantiation
 *   FC_VECTOR_BYTES  the vector width
 *   FC_NATIVE        1: the compiler's vector extensions; 0: a struct of scalars
 *   FC_HALF          1 when half a vector still holds two elements or more: row tails then
 *                    take a half-vector step before the single elements
 *
 * The arithmetic runs on vectors of FC_VECTOR_BYTES (prefix v_) and half that (prefix h_),
 * with accumulators in local variables and tile sizes that are constants where the inline
 * helpers are used, so that they stay in vector registers. */

/* The vector vocabulary of one width: type P##vec of LANES elements, unaligned load (strided
 * when stride != 1), store, broadcast, add, multiply, and the sum of the lanes in order. */
#if FC_NATIVE
#define FC_VECTOR_TYPE(P, BYTES)                                                                 \
    typedef FC_REAL FC_NAME(P##vec) __attribute__((vector_size(BYTES)));                        \
    FC_DW_INLINE FC_NAME(P##vec) FC_NAME(P##add)(FC_NAME(P##vec) a, FC_NAME(P##vec) b)           \
    {                                                                                            \
        return a + b;                                                                            \
    }                                                                                            \
    FC_DW_INLINE FC_NAME(P##vec) FC_NAME(P##mul)(FC_NAME(P##vec) a, FC_NAME(P##vec) b)           \
    {                                                                                            \
        return a * b;                                                                            \
    }
#else
#define FC_VECTOR_TYPE(P, BYTES)                                                                 \
    typedef struct { FC_REAL e[(BYTES) / sizeof(FC_REAL)]; } FC_NAME(P##vec);                    \
    FC_DW_INLINE FC_NAME(P##vec) FC_NAME(P##add)(FC_NAME(P##vec) a, FC_NAME(P##vec) b)           \
    {                                                                                            \
        int l;                                                                                   \
        for (l = 0; l < (int)((BYTES) / sizeof(FC_REAL)); l++)                                   \
            a.e[l] += b.e[l];                                                                    \
        return a;                                                                                \
    }                                                                                            \
    FC_DW_INLINE FC_NAME(P##vec) FC_NAME(P##mul)(FC_NAME(P##vec) a, FC_NAME(P##vec) b)           \
    {                                                                                            \
        int l;                                                                                   \
        for (l = 0; l < (int)((BYTES) / sizeof(FC_REAL)); l++)                                   \
            a.e[l] *= b.e[l];                                                                    \
        return a;                                                                                \
    }
#endif

#define FC_VECTOR_OPS(P, BYTES)                                                                  \
    FC_VECTOR_TYPE(P, BYTES)                                                                     \
    enum { FC_NAME(P##lanes) = (BYTES) / sizeof(FC_REAL) };                                      \
    FC_DW_INLINE FC_NAME(P##vec) FC_NAME(P##load)(const FC_REAL *p, ptrdiff_t stride)            \
    {                                                                                            \
        FC_NAME(P##vec) v;                                                                       \
        if (stride == 1) {                                                                       \
            memcpy(&v, p, sizeof v);                                                             \
        } else {                                                                                 \
            FC_REAL e[(BYTES) / sizeof(FC_REAL)];                                                \
            int l;                                                                               \
            for (l = 0; l < FC_NAME(P##lanes); l++)                                              \
                e[l] = p[l * stride];                                                            \
            memcpy(&v, e, sizeof v);                                                             \
        }                                                                                        \
        return v;                                                                                \
    }                                                                                            \
    FC_DW_INLINE void FC_NAME(P##store)(FC_REAL *p, FC_NAME(P##vec) v) { memcpy(p, &v, sizeof v); } \
    FC_DW_INLINE FC_NAME(P##vec) FC_NAME(P##splat)(FC_REAL s)                                    \
    {                                                                                            \
        FC_REAL e[(BYTES) / sizeof(FC_REAL)];                                                    \
        FC_NAME(P##vec) v;                                                                       \
        int l;                                                                                   \
        for (l = 0; l < FC_NAME(P##lanes); l++)                                                  \
            e[l] = s;                                                                            \
        memcpy(&v, e, sizeof v);                                                                 \
        return v;                                                                                \
    }                                                                                            \
    FC_DW_INLINE FC_REAL FC_NAME(P##sum)(FC_REAL total, FC_NAME(P##vec) v)                       \
    {                                                                                            \
        FC_REAL e[(BYTES) / sizeof(FC_REAL)];                                                    \
        int l;                                                                                   \
        memcpy(e, &v, sizeof v);                                                                 \
        for (l = 0; l < FC_NAME(P##lanes); l++)                                                  \
            total += e[l];                                                                       \
        return total;                                                                            \
    }

FC_VECTOR_OPS(v_, FC_VECTOR_BYTES)
#if FC_HALF
FC_VECTOR_OPS(h_, FC_VECTOR_BYTES / 2)
#endif

#define V FC_NAME(v_lanes)
#define H (V / 2)
#define VEC FC_NAME(v_vec)
#define VOP(op) FC_NAME(v_##op)
#define HVEC FC_NAME(h_vec)
#define HOP(op) FC_NAME(h_##op)

/* ------------------------------------------------------------------------------------------
 * dw_correlate: a correlation in which every kernel offset reads inside the input,
 *
 *   y[r*y_step + o] = start (or y[r*y_step + o], if accumulate)
 *                     + sum over (i, j) in row-major order of
 *                       w[(i*kw + j)*wstep] * src[r*src_step + i*tap_row + j*tap_col + o*stride]
 *
 * for r < rows, o < count. Every output adds the same terms in the same order whatever tile
 * computes it. */

/* A tile: outputs [o, o + vecs*LANES) of `rows` consecutive rows (rows, vecs: constants). */
#define FC_CORRELATE_TILE(P)                                                                     \
    FC_DW_INLINE void FC_NAME(P##correlate_tile)(                                                \
        const FC_REAL *restrict src, ptrdiff_t src_step, ptrdiff_t tap_row, ptrdiff_t tap_col,   \
        ptrdiff_t stride, const FC_REAL *restrict w, ptrdiff_t wstep, ptrdiff_t kh,              \
        ptrdiff_t kw, FC_REAL *restrict y, ptrdiff_t y_step, ptrdiff_t o, FC_REAL start,         \
        int accumulate, int rows, int vecs)                                                      \
    {                                                                                            \
        const int lanes = FC_NAME(P##lanes);                                                     \
        FC_NAME(P##vec) acc[FC_DW_TILE_ROWS][FC_DW_TILE_VECTORS];                                \
        ptrdiff_t i, j;                                                                          \
        int r, c;                                                                                \
        for (r = 0; r < rows; r++)                                                               \
            for (c = 0; c < vecs; c++)                                                           \
                acc[r][c] = accumulate ? FC_NAME(P##load)(y + r * y_step + o + c * lanes, 1)     \
                                       : FC_NAME(P##splat)(start);                               \
        for (i = 0; i < kh; i++)                                                                 \
            for (j = 0; j < kw; j++) {                                                           \
                const FC_NAME(P##vec) wv = FC_NAME(P##splat)(w[(i * kw + j) * wstep]);           \
                const FC_REAL *q = src + i * tap_row + j * tap_col + o * stride;                 \
                for (r = 0; r < rows; r++)                                                       \
                    for (c = 0; c < vecs; c++)                                                   \
                        acc[r][c] = FC_NAME(P##add)(acc[r][c], FC_NAME(P##mul)(wv, FC_NAME(P##load)( \
                            q + r * src_step + c * lanes * stride, stride)));                    \
            }                                                                                    \
        for (r = 0; r < rows; r++)                                                               \
            for (c = 0; c < vecs; c++)                                                           \
                FC_NAME(P##store)(y + r * y_step + o + c * lanes, acc[r][c]);                    \
    }

FC_CORRELATE_TILE(v_)
#if FC_HALF
FC_CORRELATE_TILE(h_)
#endif

/* Output o of one row, one term after the other. */
FC_DW_INLINE void FC_NAME(dw_correlate_point)(
    const FC_REAL *restrict src, ptrdiff_t tap_row, ptrdiff_t tap_col, ptrdiff_t stride,
    const FC_REAL *restrict w, ptrdiff_t wstep, ptrdiff_t kh, ptrdiff_t kw, FC_REAL *restrict y,
    ptrdiff_t o, FC_REAL start, int accumulate)
{
    FC_REAL a = accumulate ? y[o] : start;
    ptrdiff_t i, j;
    for (i = 0; i < kh; i++)
        for (j = 0; j < kw; j++)
            a += w[(i * kw + j) * wstep] * src[i * tap_row + j * tap_col + o * stride];
    y[o] = a;
}

/* All columns of `rows` (a constant) rows: wide tiles, single vectors, a half vector, points. */
FC_DW_INLINE void FC_NAME(dw_correlate_band)(
    const FC_REAL *restrict src, ptrdiff_t src_step, ptrdiff_t tap_row, ptrdiff_t tap_col,
    ptrdiff_t stride, const FC_REAL *restrict w, ptrdiff_t wstep, ptrdiff_t kh, ptrdiff_t kw,
    FC_REAL *restrict y, ptrdiff_t y_step, ptrdiff_t count, FC_REAL start, int accumulate,
    int rows)
{
    ptrdiff_t o = 0;
    int r;
    for (; o + FC_DW_TILE_VECTORS * V <= count; o += FC_DW_TILE_VECTORS * V)
        VOP(correlate_tile)(src, src_step, tap_row, tap_col, stride, w, wstep, kh, kw, y, y_step, o,
                            start, accumulate, rows, FC_DW_TILE_VECTORS);
    for (; o + V <= count; o += V)
        VOP(correlate_tile)(src, src_step, tap_row, tap_col, stride, w, wstep, kh, kw, y, y_step, o,
                            start, accumulate, rows, 1);
#if FC_HALF
    if (o + H <= count) {
        HOP(correlate_tile)(src, src_step, tap_row, tap_col, stride, w, wstep, kh, kw, y, y_step, o,
                            start, accumulate, rows, 1);
        o += H;
    }
#endif
    for (; o < count; o++)
        for (r = 0; r < rows; r++)
            FC_NAME(dw_correlate_point)(src + r * src_step, tap_row, tap_col, stride, w, wstep,
                                        kh, kw, y + r * y_step, o, start, accumulate);
}

FC_DW_INLINE void FC_NAME(dw_correlate_body)(
    const FC_REAL *restrict src, ptrdiff_t src_step, ptrdiff_t tap_row, ptrdiff_t tap_col,
    ptrdiff_t stride, const FC_REAL *restrict w, ptrdiff_t wstep, ptrdiff_t kh, ptrdiff_t kw,
    FC_REAL *restrict y, ptrdiff_t y_step, ptrdiff_t rows, ptrdiff_t count, FC_REAL start,
    int accumulate)
{
    ptrdiff_t r = 0;
    for (; r + FC_DW_TILE_ROWS <= rows; r += FC_DW_TILE_ROWS)
        FC_NAME(dw_correlate_band)(src + r * src_step, src_step, tap_row, tap_col, stride, w,
                                   wstep, kh, kw, y + r * y_step, y_step, count, start,
                                   accumulate, FC_DW_TILE_ROWS);
    for (; r < rows; r++)
        FC_NAME(dw_correlate_band)(src + r * src_step, src_step, tap_row, tap_col, stride, w,
                                   wstep, kh, kw, y + r * y_step, y_step, count, start,
                                   accumulate, 1);
}

FC_DW_NOINLINE static void FC_NAME(dw_correlate)(
    const FC_REAL *restrict src, ptrdiff_t src_step, ptrdiff_t tap_row, ptrdiff_t tap_col,
    ptrdiff_t stride, const FC_REAL *restrict w, ptrdiff_t wstep, ptrdiff_t kh, ptrdiff_t kw,
    FC_REAL *restrict y, ptrdiff_t y_step, ptrdiff_t rows, ptrdiff_t count, FC_REAL start,
    int accumulate)
{
    /* A literal stride of 1 makes every load a plain vector load. */
    if (stride == 1)
        FC_NAME(dw_correlate_body)(src, src_step, tap_row, tap_col, 1, w, wstep, kh, kw, y,
                                   y_step, rows, count, start, accumulate);
    else
        FC_NAME(dw_correlate_body)(src, src_step, tap_row, tap_col, stride, w, wstep, kh, kw, y,
                                   y_step, rows, count, start, accumulate);
}

/* ------------------------------------------------------------------------------------------
 * dw_dot_rows: the sum over r < rows and o < count of d[r*d_step + o] * x[r*x_step + o*stride],
 * in an order fixed by count alone. In every row, the columns go FC_DW_DOT_VECTORS vectors at
 * a time into the partial sums a[0 .. FC_DW_DOT_VECTORS - 1] (independent chains), the
 * remaining whole vectors into a[0], a[1], ..., then half a vector into h, and the last
 * columns one by one into rest[0], rest[1], ...; all are added up in order at the end. */

FC_DW_INLINE FC_REAL FC_NAME(dw_dot_body)(const FC_REAL *restrict d, ptrdiff_t d_step,
                                          const FC_REAL *restrict x, ptrdiff_t x_step,
                                          ptrdiff_t stride, ptrdiff_t rows, ptrdiff_t count)
{
    VEC a[FC_DW_DOT_VECTORS];
    FC_REAL rest[V], total = 0;
    const ptrdiff_t wide = count / (FC_DW_DOT_VECTORS * V) * (FC_DW_DOT_VECTORS * V);
    const ptrdiff_t whole = count / V * V;   /* wide + fewer than FC_DW_DOT_VECTORS vectors */
    ptrdiff_t r, o;
    int k, l;
#if FC_HALF
    HVEC h = HOP(splat)(0);
#endif
    for (k = 0; k < FC_DW_DOT_VECTORS; k++)
        a[k] = VOP(splat)(0);
    for (l = 0; l < V; l++)
        rest[l] = 0;
    for (r = 0; r < rows; r++) {
        const FC_REAL *dr = d + r * d_step, *xr = x + r * x_step;
        for (o = 0; o < wide; o += FC_DW_DOT_VECTORS * V)
            for (k = 0; k < FC_DW_DOT_VECTORS; k++)
                a[k] = VOP(add)(a[k], VOP(mul)(VOP(load)(dr + o + k * V, 1),
                                               VOP(load)(xr + (o + k * V) * stride, stride)));
        /* (constant trip counts, so that a[] and rest[] keep constant indices) */
        for (k = 0; k < FC_DW_DOT_VECTORS - 1; k++)
            if (o < whole) {
                a[k] = VOP(add)(a[k], VOP(mul)(VOP(load)(dr + o, 1), VOP(load)(xr + o * stride, stride)));
                o += V;
            }
#if FC_HALF
        if (o + H <= count) {
            h = HOP(add)(h, HOP(mul)(HOP(load)(dr + o, 1), HOP(load)(xr + o * stride, stride)));
            o += H;
        }
#endif
        for (l = 0; l < V - 1; l++)
            if (o < count) {
                rest[l] += dr[o] * xr[o * stride];
                o++;
            }
    }
    for (k = 0; k < FC_DW_DOT_VECTORS; k++)
        total = VOP(sum)(total, a[k]);
#if FC_HALF
    total = HOP(sum)(total, h);
#endif
    for (l = 0; l < V; l++)
        total += rest[l];
    return total;
}

FC_DW_NOINLINE static FC_REAL FC_NAME(dw_dot_rows)(const FC_REAL *restrict d, ptrdiff_t d_step,
                                                   const FC_REAL *restrict x, ptrdiff_t x_step,
                                                   ptrdiff_t stride, ptrdiff_t rows,
                                                   ptrdiff_t count)
{
    if (stride == 1)
        return FC_NAME(dw_dot_body)(d, d_step, x, x_step, 1, rows, count);
    return FC_NAME(dw_dot_body)(d, d_step, x, x_step, stride, rows, count);
}

/* ------------------------------------------------------------------------------------------
 * dw_dot_taps: the dot products of dw_dot_rows for the kernel offsets j < kw of one kernel row
 * at once, where every offset reads inside x:
 *
 *   out[j] (+)= sum over r < rows, o < count of d[r*d_step + o] * x[r*x_step + j*tap_col + o*stride]
 *
 * (out[j] + the sum, if accumulate.) Each d element is loaded once for all kw offsets. Per
 * offset, in an order fixed by count: columns two vectors at a time into two partial sums,
 * one more vector into the first, half a vector into a third, the last columns one by one
 * into rest[]; added up in order at the end. */

/* Offsets 0 .. taps - 1 (taps a constant, at most FC_DW_DOT_TAPS). */
FC_DW_INLINE void FC_NAME(dw_dot_taps_group)(const FC_REAL *restrict d, ptrdiff_t d_step,
                                             const FC_REAL *restrict x, ptrdiff_t x_step,
                                             ptrdiff_t tap_col, ptrdiff_t stride, ptrdiff_t rows,
                                             ptrdiff_t count, FC_REAL *restrict out, int accumulate,
                                             int taps)
{
    VEC a[FC_DW_DOT_TAPS][2];
    FC_REAL rest[FC_DW_DOT_TAPS][V];
    const ptrdiff_t pairs = count / (2 * V) * (2 * V), whole = count / V * V;
    ptrdiff_t r, o;
    int j, l;
#if FC_HALF
    HVEC h[FC_DW_DOT_TAPS];
#endif
    for (j = 0; j < taps; j++) {
        a[j][0] = a[j][1] = VOP(splat)(0);
#if FC_HALF
        h[j] = HOP(splat)(0);
#endif
        for (l = 0; l < V; l++)
            rest[j][l] = 0;
    }
    for (r = 0; r < rows; r++) {
        const FC_REAL *dr = d + r * d_step, *xr = x + r * x_step;
        for (o = 0; o < pairs; o += 2 * V) {
            const VEC d0 = VOP(load)(dr + o, 1), d1 = VOP(load)(dr + o + V, 1);
            for (j = 0; j < taps; j++) {
                const FC_REAL *q = xr + j * tap_col + o * stride;
                a[j][0] = VOP(add)(a[j][0], VOP(mul)(d0, VOP(load)(q, stride)));
                a[j][1] = VOP(add)(a[j][1], VOP(mul)(d1, VOP(load)(q + V * stride, stride)));
            }
        }
        if (o < whole) {
            const VEC d0 = VOP(load)(dr + o, 1);
            for (j = 0; j < taps; j++)
                a[j][0] = VOP(add)(a[j][0], VOP(mul)(d0, VOP(load)(xr + j * tap_col + o * stride, stride)));
            o += V;
        }
#if FC_HALF
        if (o + H <= count) {
            const HVEC d0 = HOP(load)(dr + o, 1);
            for (j = 0; j < taps; j++)
                h[j] = HOP(add)(h[j], HOP(mul)(d0, HOP(load)(xr + j * tap_col + o * stride, stride)));
            o += H;
        }
#endif
        for (l = 0; l < V - 1; l++)   /* (a constant trip count: rest[] keeps constant indices) */
            if (o + l < count)
                for (j = 0; j < taps; j++)
                    rest[j][l] += dr[o + l] * xr[j * tap_col + (o + l) * stride];
    }
    for (j = 0; j < taps; j++) {
        FC_REAL total = VOP(sum)(VOP(sum)(0, a[j][0]), a[j][1]);
#if FC_HALF
        total = HOP(sum)(total, h[j]);
#endif
        for (l = 0; l < V; l++)
            total += rest[j][l];
        out[j] = accumulate ? out[j] + total : total;
    }
}

FC_DW_INLINE void FC_NAME(dw_dot_taps_body)(const FC_REAL *restrict d, ptrdiff_t d_step,
                                            const FC_REAL *restrict x, ptrdiff_t x_step,
                                            ptrdiff_t tap_col, ptrdiff_t stride, ptrdiff_t kw,
                                            ptrdiff_t rows, ptrdiff_t count, FC_REAL *restrict out,
                                            int accumulate)
{
    ptrdiff_t j0 = 0;
    for (; j0 + FC_DW_DOT_TAPS <= kw; j0 += FC_DW_DOT_TAPS)
        FC_NAME(dw_dot_taps_group)(d, d_step, x + j0 * tap_col, x_step, tap_col, stride, rows, count,
                                   out + j0, accumulate, FC_DW_DOT_TAPS);
    switch (kw - j0) {   /* the last group, with its size a constant too */
    case 2:
        FC_NAME(dw_dot_taps_group)(d, d_step, x + j0 * tap_col, x_step, tap_col, stride, rows, count,
                                   out + j0, accumulate, 2);
        break;
    case 1:
        FC_NAME(dw_dot_taps_group)(d, d_step, x + j0 * tap_col, x_step, tap_col, stride, rows, count,
                                   out + j0, accumulate, 1);
        break;
    default:
        break;
    }
}

FC_DW_NOINLINE static void FC_NAME(dw_dot_taps)(const FC_REAL *restrict d, ptrdiff_t d_step,
                                                const FC_REAL *restrict x, ptrdiff_t x_step,
                                                ptrdiff_t tap_col, ptrdiff_t stride, ptrdiff_t kw,
                                                ptrdiff_t rows, ptrdiff_t count,
                                                FC_REAL *restrict out, int accumulate)
{
    if (stride == 1)
        FC_NAME(dw_dot_taps_body)(d, d_step, x, x_step, tap_col, 1, kw, rows, count, out, accumulate);
    else
        FC_NAME(dw_dot_taps_body)(d, d_step, x, x_step, tap_col, stride, kw, rows, count, out,
                                  accumulate);
}

/* dw_sum: d[0] + ... + d[count - 1] (a bias gradient): FC_DW_DOT_VECTORS vectors at a time
 * into as many partial sums, the rest one by one into one more. */
FC_DW_NOINLINE static FC_REAL FC_NAME(dw_sum)(const FC_REAL *restrict d, ptrdiff_t count)
{
    VEC a[FC_DW_DOT_VECTORS];
    FC_REAL total = 0, rest = 0;
    ptrdiff_t o = 0;
    int k;
    for (k = 0; k < FC_DW_DOT_VECTORS; k++)
        a[k] = VOP(splat)(0);
    for (; o + FC_DW_DOT_VECTORS * V <= count; o += FC_DW_DOT_VECTORS * V)
        for (k = 0; k < FC_DW_DOT_VECTORS; k++)
            a[k] = VOP(add)(a[k], VOP(load)(d + o + k * V, 1));
    for (; o < count; o++)
        rest += d[o];
    for (k = 0; k < FC_DW_DOT_VECTORS; k++)
        total = VOP(sum)(total, a[k]);
    return total + rest;
}

#undef V
#undef H
#undef VEC
#undef VOP
#undef HVEC
#undef HOP
#undef FC_VECTOR_TYPE
#undef FC_VECTOR_OPS
#undef FC_CORRELATE_TILE
