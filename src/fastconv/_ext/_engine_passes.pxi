# The task loops of the direct passes (forward, backward-data phases) and of backward-weight.
# Included by _engine.pyx.

# ----------------------------------------------------------------------------------------------
# Tiles
# ----------------------------------------------------------------------------------------------

cdef inline void conv_tile(const fc_isa_kernels* kern, int nv, index_t mr, index_t k_count,
                           const floating* x, const ptrdiff_t* koff, const floating* w,
                           const floating* bias, floating* y, index_t y_channel_stride,
                           index_t y_pixel_stride, index_t nr_valid) noexcept nogil:
    if floating is float:
        kern.f32_conv[nv][mr](k_count, x, koff, w, bias, y, y_channel_stride, y_pixel_stride,
                              nr_valid)
    else:
        kern.f64_conv[nv][mr](k_count, x, koff, w, bias, y, y_channel_stride, y_pixel_stride,
                              nr_valid)


cdef inline void wgrad_tile(const fc_isa_kernels* kern, int nv, index_t mr, index_t rows,
                            index_t row_len, const floating* x, const ptrdiff_t* toff,
                            index_t x_row_stride, const floating* dout_t, index_t dout_stride,
                            floating* acc, index_t acc_stride) noexcept nogil:
    if floating is float:
        kern.f32_wgrad[nv][mr](rows, row_len, x, toff, x_row_stride, dout_t, dout_stride, acc,
                               acc_stride)
    else:
        kern.f64_wgrad[nv][mr](rows, row_len, x, toff, x_row_stride, dout_t, dout_stride, acc,
                               acc_stride)


cdef void direct_band(const EnginePlan* plan, const DirectPass* d, index_t n, index_t band,
                      const floating* src, const floating* shared, const floating* bias,
                      floating* out, floating* win) noexcept nogil:
    """Output rows of one band of one image of a pass."""
    cdef const fc_isa_kernels* kern = plan.kernels
    cdef index_t u0 = band * d.band_rows, u1 = imin(d.rows, u0 + d.band_rows)
    cdef index_t blk, u, tile, tiles, v0, v1, f0, c, v
    cdef int nv
    cdef const ptrdiff_t* koff = <const ptrdiff_t*>(shared + d.koff_at)
    cdef const floating* wblk
    cdef const floating* bblk
    cdef const floating* xrow
    cdef floating* yrow
    cdef floating* image_out = out + n * d.out_image_stride + d.out_origin
    if d.k_count == 0:
        for c in range(d.cout):
            for u in range(u0, u1):
                yrow = image_out + c * d.out_channel_stride + u * d.out_row_step
                for v in range(d.cols):
                    yrow[v * d.out_col_step] = 0
        return
    if d.window_is_source:
        win = <floating*>src + n * d.src_image_stride
    elif not d.window_shared:       # (a shared window is copied by shared_window_task)
        copy_window(kern, d, src + n * d.src_image_stride, u0, u1, win)
    for blk in range(d.blocks):
        nv = d.nv if blk < d.blocks - 1 else d.last_nv
        f0 = blk * d.nr
        wblk = shared + d.weights_at + blk * d.k_count * d.nr
        bblk = NULL if bias == NULL else bias + f0
        tiles = ceil_div(d.cols, kern.max_mr[nv])
        for u in range(u0, u1):
            xrow = win + (u - u0) * d.step_h * d.win_rs
            yrow = image_out + f0 * d.out_channel_stride + u * d.out_row_step
            for tile in range(tiles):
                v0 = tile * d.cols // tiles
                v1 = (tile + 1) * d.cols // tiles
                conv_tile(kern, nv, v1 - v0, d.k_count, xrow + v0, koff, wblk, bblk,
                          yrow + v0 * d.out_col_step, d.out_channel_stride, d.out_col_step,
                          imin(d.nr, d.cout - f0))


cdef void run_direct_passes(const EnginePlan* plan, const floating* src, const floating* w,
                            const floating* b, floating* out, floating* ws) noexcept nogil:
    """Prepare the tables of every pass (serially), then run one task per (image, pass, band)."""
    cdef index_t n_images = plan.conv.n_images, per_image = 0, tasks, t, rem, lane
    cdef int i, threads
    cdef const DirectPass* d
    cdef floating* bias = NULL
    cdef floating* win
    cdef floating* thread_ws = ws + plan.shared_elems
    for i in range(plan.n_passes):
        d = &plan.passes[i]
        per_image += d.bands
        if d.k_count == 0:
            continue
        fill_offsets(d, <ptrdiff_t*>(ws + d.koff_at))
        pack_weights(d, plan.lanes, w, ws + d.weights_at)
        if b != NULL:
            bias = ws + d.bias_at
            for lane in range(d.blocks * d.nr):
                bias[lane] = b[lane] if lane < d.cout else 0
    if plan.shared_window:
        per_image = 1
    tasks = n_images * per_image
    threads = <int>imin(plan.threads, tasks)
    if threads <= 1:
        for t in range(tasks):
            direct_task(plan, t, per_image, src, ws, bias, out, thread_ws)
    else:
        with parallel(num_threads=threads):
            win = thread_ws + omp_get_thread_num() * plan.thread_elems
            for t in prange(tasks, schedule='dynamic'):
                direct_task(plan, t, per_image, src, ws, bias, out, win)


cdef inline void direct_task(const EnginePlan* plan, index_t t, index_t per_image,
                             const floating* src, const floating* shared, const floating* bias,
                             floating* out, floating* win) noexcept nogil:
    cdef index_t n = t // per_image, rem = t % per_image
    cdef int i = 0
    if plan.shared_window:      # one task per image: its window once, then every phase
        copy_window(plan.kernels, &plan.common, src + n * plan.common.src_image_stride, 0, 1, win)
        for i in range(plan.n_passes):
            direct_band(plan, &plan.passes[i], n, 0, src, shared, bias, out, win)
        return
    while rem >= plan.passes[i].bands:
        rem -= plan.passes[i].bands
        i += 1
    direct_band(plan, &plan.passes[i], n, rem, src, shared, bias, out, win)



# ----------------------------------------------------------------------------------------------
# Backward-weight
# ----------------------------------------------------------------------------------------------

cdef void weight_task(const EnginePlan* plan, index_t chunk, index_t group,
                      const floating* dout, const floating* x, floating* shared,
                      floating* thread_ws) noexcept nogil:
    """dW/db partial of one chunk of (image, output row) pairs, for one group of filter
    blocks: window band by window band, and inside each, dout band by dout band (a few output
    rows, or a segment of one long row)."""
    cdef const WeightPass* wp = &plan.wgrad
    cdef const DirectPass* d = &plan.wgrad_window
    cdef const Window2D* g = &plan.conv.g
    cdef const fc_isa_kernels* kern = plan.kernels
    cdef const ptrdiff_t* koff = <const ptrdiff_t*>(shared + d.koff_at)
    cdef index_t total_rows = plan.conv.n_images * g.out_h, plane = g.out_h * g.out_w
    cdef index_t r = chunk * total_rows // wp.chunks, r_end = (chunk + 1) * total_rows // wp.chunks
    cdef index_t b0 = group * wp.blocks_per_group, b1 = imin(wp.blocks, b0 + wp.blocks_per_group)
    cdef index_t f0 = b0 * wp.nr, f1 = b1 * wp.nr, width = f1 - f0
    cdef index_t n, u0, u1, s0, k, blk, tile, k0, k1, q0, q1, p0, rows, row_len
    cdef floating* part = shared + wp.partials_at + chunk * wp.partial_elems
    cdef floating* db_part = part + wp.k_count * wp.fpad
    cdef floating* win = thread_ws
    cdef floating* dout_t = thread_ws + pass_window_elems(plan, d)
    cdef floating* xw
    cdef const floating* dout_n
    for k in range(wp.k_count):
        memset(part + k * wp.fpad + f0, 0, width * sizeof(floating))
    memset(db_part + f0, 0, width * sizeof(floating))
    while r < r_end:
        n = r // g.out_h
        u0 = r % g.out_h
        u1 = imin(imin(g.out_h, u0 + d.band_rows), u0 + r_end - r)
        if d.window_is_source:
            win = <floating*>x + n * d.src_image_stride + u0 * d.step_h * d.win_rs
        else:
            copy_window(kern, d, x + n * d.src_image_stride, u0, u1, win)
        dout_n = dout + n * plan.conv.y_image_stride
        s0 = u0
        while s0 < u1:
            rows = imin(u1 - s0, wp.band_rows)
            q0 = 0
            while q0 < g.out_w:
                # A band of whole rows, or (rows == 1) a segment of at most band_cols columns.
                q1 = g.out_w if rows > 1 else imin(g.out_w, q0 + wp.band_cols)
                row_len = q1 - q0
                p0 = s0 * g.out_w + q0
                transpose_dout(kern, dout_n, plane, p0, p0 + (rows - 1) * g.out_w + row_len, f0,
                               f1, wp.filters, width, dout_t, db_part)
                xw = win + (s0 - u0) * d.step_h * d.win_rs + q0
                for blk in range(b0, b1):
                    for tile in range(wp.tap_tiles):
                        k0 = tile * wp.k_count // wp.tap_tiles
                        k1 = (tile + 1) * wp.k_count // wp.tap_tiles
                        wgrad_tile(kern, wp.nv, k1 - k0, rows, row_len, xw, koff + k0,
                                   d.step_h * d.win_rs, dout_t + blk * wp.nr - f0, width,
                                   part + k0 * wp.fpad + blk * wp.nr, wp.fpad)
                q0 = q1
            s0 += rows
        r += u1 - u0


cdef void run_weight_pass(const EnginePlan* plan, const floating* dout, const floating* x,
                          floating* dw, floating* db, floating* ws) noexcept nogil:
    cdef const WeightPass* wp = &plan.wgrad
    cdef index_t tasks = wp.chunks * wp.groups, t, f, k, j
    cdef int threads = <int>imin(plan.threads, tasks)
    cdef floating* thread_ws = ws + plan.shared_elems
    cdef floating* mine
    cdef const floating* part
    cdef floating s
    fill_offsets(&plan.wgrad_window, <ptrdiff_t*>(ws + plan.wgrad_window.koff_at))
    if threads <= 1:
        for t in range(tasks):
            weight_task(plan, t // wp.groups, t % wp.groups, dout, x, ws, thread_ws)
    else:
        with parallel(num_threads=threads):
            mine = thread_ws + omp_get_thread_num() * plan.thread_elems
            for t in prange(tasks, schedule='dynamic'):
                weight_task(plan, t // wp.groups, t % wp.groups, dout, x, ws, mine)
    # dw[f][k] = partial_0[k][f] + partial_1[k][f] + ... (chunk order), db alike.
    part = ws + wp.partials_at
    for f in range(wp.filters):
        for k in range(wp.k_count):
            s = part[k * wp.fpad + f]
            for j in range(1, wp.chunks):
                s = s + part[j * wp.partial_elems + k * wp.fpad + f]
            dw[f * wp.k_count + k] = s
        s = part[wp.k_count * wp.fpad + f]
        for j in range(1, wp.chunks):
            s = s + part[j * wp.partial_elems + wp.k_count * wp.fpad + f]
        db[f] = s
