/* The body of depthwise.h for one floating type: FC_REAL is the type, FC_NAME(name) the name
 * of a function (or type) for it. Included once per type (no include guard on purpose).
 *
 * The arithmetic runs on FC_NAME(vec), FC_DW_VECTOR_BYTES worth of FC_REAL (see depthwise.h),
 * with accumulators in local variables and tile sizes that are constants where the inline
 * helpers are used, so that they stay in vector registers. */

enum { FC_NAME(lanes) = FC_DW_VECTOR_BYTES / sizeof(FC_REAL) };
#define V FC_NAME(lanes)

#if FC_DW_NATIVE_VECTORS
typedef FC_REAL FC_NAME(vec) __attribute__((vector_size(FC_DW_VECTOR_BYTES)));

static inline FC_NAME(vec) FC_NAME(vadd)(FC_NAME(vec) a, FC_NAME(vec) b) { return a + b; }
static inline FC_NAME(vec) FC_NAME(vmul)(FC_NAME(vec) a, FC_NAME(vec) b) { return a * b; }
#else
typedef struct { FC_REAL e[FC_DW_VECTOR_BYTES / sizeof(FC_REAL)]; } FC_NAME(vec);

static inline FC_NAME(vec) FC_NAME(vadd)(FC_NAME(vec) a, FC_NAME(vec) b)
{
    int l;
    for (l = 0; l < V; l++)
        a.e[l] += b.e[l];
    return a;
}
static inline FC_NAME(vec) FC_NAME(vmul)(FC_NAME(vec) a, FC_NAME(vec) b)
{
    int l;
    for (l = 0; l < V; l++)
        a.e[l] *= b.e[l];
    return a;
}
#endif

typedef FC_NAME(vec) FC_NAME(vec_t);
#define VEC FC_NAME(vec_t)

/* p[0], p[stride], ..., p[(V - 1)*stride] as a vector (a plain load when stride is 1). */
static inline VEC FC_NAME(vload)(const FC_REAL *p, ptrdiff_t stride)
{
    VEC v;
    if (stride == 1) {
        memcpy(&v, p, sizeof v);
    } else {
        FC_REAL e[V];
        int l;
        for (l = 0; l < V; l++)
            e[l] = p[l * stride];
        memcpy(&v, e, sizeof v);
    }
    return v;
}

static inline void FC_NAME(vstore)(FC_REAL *p, VEC v) { memcpy(p, &v, sizeof v); }

static inline VEC FC_NAME(vsplat)(FC_REAL s)
{
    FC_REAL e[V];
    VEC v;
    int l;
    for (l = 0; l < V; l++)
        e[l] = s;
    memcpy(&v, e, sizeof v);
    return v;
}

/* Lane 0 + lane 1 + ... + lane V-1, added to total in that order. */
static inline FC_REAL FC_NAME(vsum)(FC_REAL total, VEC v)
{
    FC_REAL e[V];
    int l;
    memcpy(e, &v, sizeof v);
    for (l = 0; l < V; l++)
        total += e[l];
    return total;
}

/* ------------------------------------------------------------------------------------------
 * dw_correlate: a correlation in which every kernel offset reads inside the input,
 *
 *   y[r*y_step + o] = start (or y[r*y_step + o], if accumulate)
 *                     + sum over (i, j) in row-major order of
 *                       w[(i*kw + j)*wstep] * src[r*src_step + i*tap_row + j*tap_col + o*stride]
 *
 * for r < rows, o < count. Every output adds the same terms in the same order whatever tile
 * computes it. */

/* Outputs [o, o + vecs*V) of `rows` (a constant: 1 or FC_DW_TILE_ROWS) consecutive rows. */
static inline void FC_NAME(dw_correlate_tile)(
    const FC_REAL *restrict src, ptrdiff_t src_step, ptrdiff_t tap_row, ptrdiff_t tap_col,
    ptrdiff_t stride, const FC_REAL *restrict w, ptrdiff_t wstep, ptrdiff_t kh, ptrdiff_t kw,
    FC_REAL *restrict y, ptrdiff_t y_step, ptrdiff_t o, FC_REAL start, int accumulate,
    int rows, int vecs)
{
    VEC acc[FC_DW_TILE_ROWS][FC_DW_TILE_VECTORS];
    ptrdiff_t i, j;
    int r, c;
    for (r = 0; r < rows; r++)
        for (c = 0; c < vecs; c++)
            acc[r][c] = accumulate ? FC_NAME(vload)(y + r * y_step + o + c * V, 1)
                                   : FC_NAME(vsplat)(start);
    for (i = 0; i < kh; i++)
        for (j = 0; j < kw; j++) {
            const VEC wv = FC_NAME(vsplat)(w[(i * kw + j) * wstep]);
            const FC_REAL *q = src + i * tap_row + j * tap_col + o * stride;
            for (r = 0; r < rows; r++)
                for (c = 0; c < vecs; c++)
                    acc[r][c] = FC_NAME(vadd)(acc[r][c], FC_NAME(vmul)(wv, FC_NAME(vload)(
                        q + r * src_step + c * V * stride, stride)));
        }
    for (r = 0; r < rows; r++)
        for (c = 0; c < vecs; c++)
            FC_NAME(vstore)(y + r * y_step + o + c * V, acc[r][c]);
}

/* Output o of one row, one term after the other. */
static inline void FC_NAME(dw_correlate_point)(
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

/* All columns of `rows` (a constant) rows: wide tiles, then single vectors, then points. */
static inline void FC_NAME(dw_correlate_band)(
    const FC_REAL *restrict src, ptrdiff_t src_step, ptrdiff_t tap_row, ptrdiff_t tap_col,
    ptrdiff_t stride, const FC_REAL *restrict w, ptrdiff_t wstep, ptrdiff_t kh, ptrdiff_t kw,
    FC_REAL *restrict y, ptrdiff_t y_step, ptrdiff_t count, FC_REAL start, int accumulate,
    int rows)
{
    ptrdiff_t o = 0;
    int r;
    for (; o + FC_DW_TILE_VECTORS * V <= count; o += FC_DW_TILE_VECTORS * V)
        FC_NAME(dw_correlate_tile)(src, src_step, tap_row, tap_col, stride, w, wstep, kh, kw, y,
                                   y_step, o, start, accumulate, rows, FC_DW_TILE_VECTORS);
    for (; o + V <= count; o += V)
        FC_NAME(dw_correlate_tile)(src, src_step, tap_row, tap_col, stride, w, wstep, kh, kw, y,
                                   y_step, o, start, accumulate, rows, 1);
    for (; o < count; o++)
        for (r = 0; r < rows; r++)
            FC_NAME(dw_correlate_point)(src + r * src_step, tap_row, tap_col, stride, w, wstep,
                                        kh, kw, y + r * y_step, o, start, accumulate);
}

static inline void FC_NAME(dw_correlate_body)(
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
 * remaining whole vectors into a[0], a[1], ..., and the last columns (fewer than a vector)
 * one by one into rest[0], rest[1], ...; all are added up in order at the end. */

static inline FC_REAL FC_NAME(dw_dot_body)(const FC_REAL *restrict d, ptrdiff_t d_step,
                                           const FC_REAL *restrict x, ptrdiff_t x_step,
                                           ptrdiff_t stride, ptrdiff_t rows, ptrdiff_t count)
{
    VEC a[FC_DW_DOT_VECTORS];
    FC_REAL rest[V], total = 0;
    const ptrdiff_t wide = count / (FC_DW_DOT_VECTORS * V) * (FC_DW_DOT_VECTORS * V);
    const ptrdiff_t whole = count / V * V;   /* wide + fewer than FC_DW_DOT_VECTORS vectors */
    ptrdiff_t r, o;
    int k, l;
    for (k = 0; k < FC_DW_DOT_VECTORS; k++)
        a[k] = FC_NAME(vsplat)(0);
    for (l = 0; l < V; l++)
        rest[l] = 0;
    for (r = 0; r < rows; r++) {
        const FC_REAL *dr = d + r * d_step, *xr = x + r * x_step;
        for (o = 0; o < wide; o += FC_DW_DOT_VECTORS * V)
            for (k = 0; k < FC_DW_DOT_VECTORS; k++)
                a[k] = FC_NAME(vadd)(a[k], FC_NAME(vmul)(FC_NAME(vload)(dr + o + k * V, 1),
                                                         FC_NAME(vload)(xr + (o + k * V) * stride, stride)));
        /* (constant trip counts, so that a[] and rest[] keep constant indices) */
        for (k = 0; k < FC_DW_DOT_VECTORS - 1; k++)
            if (o < whole) {
                a[k] = FC_NAME(vadd)(a[k], FC_NAME(vmul)(FC_NAME(vload)(dr + o, 1),
                                                         FC_NAME(vload)(xr + o * stride, stride)));
                o += V;
            }
        for (l = 0; l < V - 1; l++)
            if (o < count) {
                rest[l] += dr[o] * xr[o * stride];
                o++;
            }
    }
    for (k = 0; k < FC_DW_DOT_VECTORS; k++)
        total = FC_NAME(vsum)(total, a[k]);
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
 * (out[j] + the sum, if accumulate.)
 * Each d element is loaded once for all kw offsets. Per offset, in an order fixed by count:
 * columns two vectors at a time into two partial sums, one more vector into the first, the
 * last columns (fewer than a vector) one by one into rest[]; added up in order at the end. */

/* Offsets j0 .. j0 + taps - 1 (taps a constant, at most FC_DW_DOT_TAPS). */
static inline void FC_NAME(dw_dot_taps_group)(const FC_REAL *restrict d, ptrdiff_t d_step,
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
    for (j = 0; j < taps; j++) {
        a[j][0] = a[j][1] = FC_NAME(vsplat)(0);
        for (l = 0; l < V; l++)
            rest[j][l] = 0;
    }
    for (r = 0; r < rows; r++) {
        const FC_REAL *dr = d + r * d_step, *xr = x + r * x_step;
        for (o = 0; o < pairs; o += 2 * V) {
            const VEC d0 = FC_NAME(vload)(dr + o, 1), d1 = FC_NAME(vload)(dr + o + V, 1);
            for (j = 0; j < taps; j++) {
                const FC_REAL *q = xr + j * tap_col + o * stride;
                a[j][0] = FC_NAME(vadd)(a[j][0], FC_NAME(vmul)(d0, FC_NAME(vload)(q, stride)));
                a[j][1] = FC_NAME(vadd)(a[j][1], FC_NAME(vmul)(d1, FC_NAME(vload)(q + V * stride, stride)));
            }
        }
        if (o < whole) {
            const VEC d0 = FC_NAME(vload)(dr + o, 1);
            for (j = 0; j < taps; j++)
                a[j][0] = FC_NAME(vadd)(a[j][0], FC_NAME(vmul)(d0, FC_NAME(vload)(
                    xr + j * tap_col + o * stride, stride)));
            o += V;
        }
        for (l = 0; l < V - 1; l++)   /* (a constant trip count: rest[] keeps constant indices) */
            if (o + l < count)
                for (j = 0; j < taps; j++)
                    rest[j][l] += dr[o + l] * xr[j * tap_col + (o + l) * stride];
    }
    for (j = 0; j < taps; j++) {
        FC_REAL total = FC_NAME(vsum)(FC_NAME(vsum)(0, a[j][0]), a[j][1]);
        for (l = 0; l < V; l++)
            total += rest[j][l];
        out[j] = accumulate ? out[j] + total : total;
    }
}

static inline void FC_NAME(dw_dot_taps_body)(const FC_REAL *restrict d, ptrdiff_t d_step,
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
    case 3:
        FC_NAME(dw_dot_taps_group)(d, d_step, x + j0 * tap_col, x_step, tap_col, stride, rows, count,
                                   out + j0, accumulate, 3);
        break;
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

/* dw_sum: d[0] + ... + d[count - 1] (a bias gradient), in the order of one row of
 * dw_dot_rows. */
FC_DW_NOINLINE static FC_REAL FC_NAME(dw_sum)(const FC_REAL *restrict d, ptrdiff_t count)
{
    VEC a[FC_DW_DOT_VECTORS];
    FC_REAL total = 0, rest = 0;
    ptrdiff_t o = 0;
    int k;
    for (k = 0; k < FC_DW_DOT_VECTORS; k++)
        a[k] = FC_NAME(vsplat)(0);
    for (; o + FC_DW_DOT_VECTORS * V <= count; o += FC_DW_DOT_VECTORS * V)
        for (k = 0; k < FC_DW_DOT_VECTORS; k++)
            a[k] = FC_NAME(vadd)(a[k], FC_NAME(vload)(d + o + k * V, 1));
    for (; o < count; o++)
        rest += d[o];
    for (k = 0; k < FC_DW_DOT_VECTORS; k++)
        total = FC_NAME(vsum)(total, a[k]);
    return total + rest;
}

#undef VEC
#undef V
