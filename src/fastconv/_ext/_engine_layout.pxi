# Layout conversions of the engine: offset tables, packed weights, windows, transposed dout.
# Included by _engine.pyx.

# ----------------------------------------------------------------------------------------------
# Layout conversions
# ----------------------------------------------------------------------------------------------

cdef void fill_offsets(const DirectPass* d, ptrdiff_t* koff) noexcept nogil:
    """koff[c * taps + t]: where tap t of input channel c is in a window, relative to the
    window position of output pixel (0, 0)."""
    cdef index_t c, a, b, col, k = 0
    for c in range(d.cin):
        for a in range(d.n_tap_rows):
            for b in range(d.n_tap_cols):
                col = d.tap_col[b]
                koff[k] = (d.win_origin + d.tap_row[a] * d.win_rs + c * d.win_cs
                           + (col % d.step_w) * d.win_pw + col // d.step_w)
                k += 1


cdef void pack_weights(const DirectPass* d, index_t lanes, const floating* w,
                       floating* packed) noexcept nogil:
    """packed[block][k][lane]: weight(block*nr + lane, k), zero beyond cout; the last block is
    last_nv vectors wide."""
    cdef index_t blk, width, co, c, a, b, k, lane, f0
    cdef const floating* src
    for blk in range(d.blocks):
        width = d.nr if blk < d.blocks - 1 else d.last_nv * lanes
        f0 = blk * d.nr
        for c in range(d.cin):
            for a in range(d.n_tap_rows):
                for b in range(d.n_tap_cols):
                    k = (c * d.n_tap_rows + a) * d.n_tap_cols + b
                    src = w + c * d.w_in_stride + d.tap_weight_row[a] * d.kernel_w + d.tap_weight_col[b]
                    for lane in range(width):
                        co = f0 + lane
                        packed[k * width + lane] = src[co * d.w_out_stride] if co < d.cout else 0
        packed += d.k_count * width


cdef void copy_window(const fc_isa_kernels* kern, const DirectPass* d, const floating* src,
                      index_t u0, index_t u1, floating* win) noexcept nogil:
    """The window of output rows [u0, u1): win[r][c][phase][s] = src[c][row][col] with
    row = src_row0 + u0*step_h + r, col = src_col0 + s*step_w + phase (0 outside the planes).
    Rows inside the planes by the instruction set's window-rows kernel for strides 1 and 2
    (window rows are short: plain loops spent more on their set-up than on copying)."""
    cdef index_t first_row = d.src_row0 + u0 * d.step_h
    cdef index_t n_rows = (u1 - u0 - 1) * d.step_h + d.tap_rows_span
    cdef index_t r_lo = imin(n_rows, imax(0, -first_row))
    cdef index_t r_hi = imax(r_lo, imin(n_rows, d.src_h - first_row))
    cdef index_t r, c, t
    cdef const floating* plane_row
    cdef floating* dst
    memset(win, 0, r_lo * d.win_rs * sizeof(floating))
    memset(win + r_hi * d.win_rs, 0, (n_rows - r_hi) * d.win_rs * sizeof(floating))
    if d.step_w <= 2:
        if floating is float:
            kern.f32_window_rows(r_hi - r_lo, d.cin, src + (first_row + r_lo) * d.src_w, d.src_w,
                                 d.src_channel_stride, d.src_col0, d.src_w, d.step_w, d.win_pw,
                                 win + r_lo * d.win_rs, d.win_rs, d.win_cs)
        else:
            kern.f64_window_rows(r_hi - r_lo, d.cin, src + (first_row + r_lo) * d.src_w, d.src_w,
                                 d.src_channel_stride, d.src_col0, d.src_w, d.step_w, d.win_pw,
                                 win + r_lo * d.win_rs, d.win_rs, d.win_cs)
        return
    for r in range(r_lo, r_hi):
        for c in range(d.cin):
            plane_row = src + c * d.src_channel_stride + (first_row + r) * d.src_w
            dst = win + r * d.win_rs + c * d.win_cs
            for t in range(d.step_w):
                strided_phase(plane_row, d.src_col0 + t, d.step_w, d.src_w, d.win_pw,
                              dst + t * d.win_pw)


cdef inline void strided_phase(const floating* src_row, index_t col0, index_t step,
                               index_t src_w, index_t width, floating* dst) noexcept nogil:
    """dst[q] = src_row[col0 + q*step] for q < width (0 where the column is outside)."""
    cdef index_t q_lo = imin(width, imax(0, ceil_div(-col0, step)))
    cdef index_t q_hi = imax(q_lo, imin(width, ceil_div(src_w - col0, step)))
    cdef index_t q
    cdef const floating* src = src_row + col0
    for q in range(q_lo):
        dst[q] = 0
    for q in range(q_lo, q_hi):
        dst[q] = src[q * step]
    for q in range(q_hi, width):
        dst[q] = 0


cdef void transpose_dout(const fc_isa_kernels* kern, const floating* dout, index_t plane,
                         index_t p0, index_t p1, index_t f0, index_t f1, index_t filters,
                         index_t width, floating* dout_t, floating* db) noexcept nogil:
    """dout_t[p - p0][f - f0] = dout[f][p] for p in [p0, p1), f in [f0, f1) (zero for
    f >= filters), and db[f] += dout[f][p0] + ... + dout[f][p1 - 1] in pixel order."""
    cdef index_t f, p, n = p1 - p0, valid = imin(f1, filters) - f0
    cdef floating* row
    if floating is float:
        kern.f32_transpose(valid, n, dout + f0 * plane + p0, plane, dout_t, width)
    else:
        kern.f64_transpose(valid, n, dout + f0 * plane + p0, plane, dout_t, width)
    for p in range(n):
        row = dout_t + p * width
        for f in range(valid, width):
            row[f] = 0
        # One filter per lane, pixels in order: the same sums as a loop over each dout row.
        for f in range(valid):
            db[f0 + f] += row[f]
