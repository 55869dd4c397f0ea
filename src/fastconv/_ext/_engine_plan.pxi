# The plan of a convolution: which algorithm, tiles, bands, chunks and workspace, from the
# shape alone (never the thread count). Included by _engine.pyx.

# ----------------------------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------------------------

cdef double tile_efficiency(const fc_isa_kernels* kern, int nv, index_t cols, index_t cout,
                            index_t lanes) noexcept nogil:
    """Useful fraction of the FMA issue slots that tiles of nv vectors take for one output row
    of `cols` pixels and `cout` channels. A k-step of an MR x NV tile issues MR*NV FMAs, MR + NV
    loads (as many slots on a core with as many load ports as FMA pipes), and needs at least
    MIN_CHAINS independent accumulators to cover the FMA latency (4 cycles x 2 pipes)."""
    cdef index_t nvec = ceil_div(cout, lanes)
    cdef index_t blocks = ceil_div(nvec, nv), tiles = ceil_div(cols, kern.max_mr[nv])
    cdef double mr = <double>cols / tiles
    cdef double slots = blocks * tiles * max(max(mr * nv, mr + nv), <double>MIN_CHAINS)
    return (<double>cols * cout / lanes) / slots


cdef int choose_nv(const fc_isa_kernels* kern, index_t cols, index_t cout, index_t lanes,
                   double* efficiency) noexcept nogil:
    """The vectors per output-channel block with the best tile_efficiency (ties: more)."""
    cdef int nv, best = 0
    cdef double e, best_e = -1.0
    for nv in range(1, FC_MAX_NV + 1):
        if kern.max_mr[nv] == 0:
            continue
        e = tile_efficiency(kern, nv, cols, cout, lanes)
        if e >= best_e - 1e-9:
            best, best_e = nv, e
    efficiency[0] = best_e
    return best


cdef bint finish_pass(EnginePlan* plan, DirectPass* d, index_t n_images) except -1:
    """Window geometry, channel blocks and bands of a pass whose taps and mapping are set."""
    cdef index_t lanes = plan.lanes, max_tap_col = 0, max_tap_row = 0, a, nvec
    for a in range(d.n_tap_rows):
        max_tap_row = imax(max_tap_row, d.tap_row[a])
    for a in range(d.n_tap_cols):
        max_tap_col = imax(max_tap_col, d.tap_col[a])
    # Window bytes in floating point first: with hyper-parameters near 2**31 the integer
    # products below would overflow.
    cdef double width = (d.cols - 1.0) * d.step_w + max_tap_col + 1.0
    cdef double phase_width = <double>ceil_div(<index_t>min(width, 1e15), d.step_w)
    if (max_tap_row + 1.0) * d.cin * d.step_w * phase_width * plan.itemsize > MAX_WINDOW_BYTES:
        return False
    d.taps = d.n_tap_rows * d.n_tap_cols
    d.k_count = d.cin * d.taps
    d.tap_rows_span = max_tap_row + 1
    d.win_w = (d.cols - 1) * d.step_w + max_tap_col + 1
    d.win_pw = ceil_div(d.win_w, d.step_w)
    d.win_cs = d.step_w * d.win_pw
    d.win_rs = d.cin * d.win_cs
    # One output row reading one whole source row, stride 1, no padding: the window would be
    # a copy of the source.
    d.window_is_source = (d.src_h == 1 and d.rows == 1 and d.tap_rows_span == 1
                          and d.src_row0 == 0 and d.src_col0 == 0 and d.step_w == 1
                          and d.win_w == d.src_w and d.src_channel_stride == d.win_cs)
    d.window_shared = False
    d.win_origin = 0
    d.nv = choose_nv(plan.kernels, d.cols, d.cout, lanes, &d.efficiency)
    d.nr = d.nv * lanes
    nvec = ceil_div(d.cout, lanes)
    d.blocks = ceil_div(nvec, d.nv)
    d.last_nv = <int>(nvec - (d.blocks - 1) * d.nv)
    if plan.kernels.max_mr[d.last_nv] == 0:     # no kernel this narrow: pad the last block
        d.last_nv = d.nv
    return True


cdef void set_bands(const EnginePlan* plan, DirectPass* d, index_t n_images,
                    index_t window_bytes) noexcept nogil:
    """Bands of output rows per task: a window of at most window_bytes (it is reread for every
    block of output channels), and enough tasks for several threads on a small batch. Bands
    decide only how work is cut, never a result."""
    d.band_rows = imax(1, imin(d.rows, window_bytes // imax(1, d.win_rs * d.step_h * plan.itemsize)))
    d.bands = ceil_div(d.rows, d.band_rows)
    if n_images * d.bands < TASKS_TARGET:
        d.bands = imax(d.bands, imin(d.rows, ceil_div(TASKS_TARGET, n_images)))
    d.band_rows = ceil_div(d.rows, d.bands)
    d.bands = ceil_div(d.rows, d.band_rows)


cdef index_t window_budget(const EnginePlan* plan, index_t shared_bytes) noexcept nogil:
    """Bytes of window per thread: about L2/4, less when the threads' windows and the shared
    tables would take more than WORKSPACE_FRACTION of the call's inputs + outputs."""
    cdef index_t spare = <index_t>(WORKSPACE_FRACTION * plan.io_bytes) - shared_bytes
    return imin(L2_BYTES // 4, imax(0, spare) // plan.threads)


cdef index_t pass_window_elems(const EnginePlan* plan, const DirectPass* d) noexcept nogil:
    if d.window_is_source or d.window_shared:
        return 0
    return vector_elems(plan, ((d.band_rows - 1) * d.step_h + d.tap_rows_span) * d.win_rs)


cdef index_t pass_weight_elems(const DirectPass* d, index_t lanes) noexcept nogil:
    return d.k_count * ((d.blocks - 1) * d.nr + d.last_nv * lanes)


cdef bint start_plan(EnginePlan* plan, const EngineConv* conv, index_t itemsize, int threads):
    """Common checks: the engine takes kernels up to ENGINE_MAX_KERNEL wide and needs kernels
    for this instruction set. A 1x1, stride-1, unpadded layer is planned as one row of H*W
    pixels: its window is then the input itself (no copy) and its tiles run along the whole
    plane."""
    cdef const Window2D* g = &conv.g
    plan.conv = conv[0]
    if (g.kernel_h == 1 and g.kernel_w == 1 and g.stride_h == 1 and g.stride_w == 1
            and g.pad_h == 0 and g.pad_w == 0):
        plan.conv.g.width = plan.conv.g.out_w = g.height * g.width
        plan.conv.g.height = plan.conv.g.out_h = 1
        plan.conv.g.dilation_h = plan.conv.g.dilation_w = 1
        conv = &plan.conv
    plan.kernels = active_kernels
    plan.itemsize = itemsize
    plan.lanes = active_kernels.f32_lanes if itemsize == 4 else active_kernels.f64_lanes
    plan.threads = threads if threads >= 1 else 1
    plan.n_passes = 0
    plan.shared_window = False
    plan.backward = False
    plan.has_winograd = False
    plan.shared_elems = 0
    plan.thread_elems = 0
    # The workspace bound of BENCH.md is over a forward + backward pair: inputs and outputs
    # x, w, b, dout, y, dx, dw, db, that is twice x + w + b + y, whichever pass is planned.
    plan.io_bytes = 2 * itemsize * (conv.n_images * g.channels * g.height * g.width
                                    + conv.filters * g.channels * g.kernel_h * g.kernel_w
                                    + conv.filters + conv.n_images * conv.filters * g.out_h * g.out_w)
    if algorithm_choice == ALGORITHM_IM2COL:
        return False
    return g.kernel_h <= ENGINE_MAX_KERNEL and g.kernel_w <= ENGINE_MAX_KERNEL


cdef void forward_geometry(DirectPass* d, const EngineConv* conv) noexcept nogil:
    """The forward pass: src = x, out = y, taps (i*dh, j*dw)."""
    cdef const Window2D* g = &conv.g
    cdef index_t i
    d.cin, d.cout = g.channels, conv.filters
    d.n_tap_rows, d.n_tap_cols = g.kernel_h, g.kernel_w
    for i in range(g.kernel_h):
        d.tap_row[i] = i * g.dilation_h
        d.tap_weight_row[i] = i
    for i in range(g.kernel_w):
        d.tap_col[i] = i * g.dilation_w
        d.tap_weight_col[i] = i
    d.kernel_w = g.kernel_w
    d.w_out_stride = g.channels * g.kernel_h * g.kernel_w
    d.w_in_stride = g.kernel_h * g.kernel_w
    d.src_h, d.src_w = g.height, g.width
    d.src_channel_stride = g.height * g.width
    d.src_image_stride = conv.x_image_stride
    d.src_row0, d.src_col0 = -g.pad_h, -g.pad_w
    d.rows, d.cols = g.out_h, g.out_w
    d.step_h, d.step_w = g.stride_h, g.stride_w
    d.out_origin = 0
    d.out_row_step, d.out_col_step = g.out_w, 1
    d.out_channel_stride = g.out_h * g.out_w
    d.out_image_stride = conv.y_image_stride


cdef index_t phase_taps(index_t kernel, index_t dilation, index_t stride, index_t phase,
                        index_t* taps, index_t* q) noexcept nogil:
    """Kernel offsets i with i*dilation = phase (mod stride), and q_i = (i*dilation - phase) /
    stride: output row sh*u + phase - pad gets dout row u - q_i from tap i."""
    cdef index_t i, n = 0
    for i in range(kernel):
        if (i * dilation) % stride == phase:
            taps[n] = i
            q[n] = (i * dilation - phase) // stride
            n += 1
    return n


cdef bint backward_data_geometry(EnginePlan* plan, const EngineConv* conv) except -1:
    """One pass per stride phase (rh, rw): dx rows h with (h + ph) % sh == rh (and columns
    alike) are a stride-1 correlation of dout with the taps i*dh = rh (mod sh)."""
    cdef const Window2D* g = &conv.g
    cdef index_t rh, rw, a, first_h, first_w, u_first, v_first, qmax_h, qmax_w
    cdef index_t n_rows, n_cols
    cdef index_t taps_h[ENGINE_MAX_KERNEL]
    cdef index_t taps_w[ENGINE_MAX_KERNEL]
    cdef index_t q_h[ENGINE_MAX_KERNEL]
    cdef index_t q_w[ENGINE_MAX_KERNEL]
    cdef DirectPass* d
    if g.stride_h * g.stride_w > ENGINE_MAX_PASSES:
        return False
    for rh in range(g.stride_h):
        first_h = pos_mod(rh - g.pad_h, g.stride_h)
        if first_h >= g.height:
            continue
        n_rows = phase_taps(g.kernel_h, g.dilation_h, g.stride_h, rh, taps_h, q_h)
        for rw in range(g.stride_w):
            first_w = pos_mod(rw - g.pad_w, g.stride_w)
            if first_w >= g.width:
                continue
            n_cols = phase_taps(g.kernel_w, g.dilation_w, g.stride_w, rw, taps_w, q_w)
            d = &plan.passes[plan.n_passes]
            plan.n_passes += 1
            d.cin, d.cout = conv.filters, g.channels
            d.n_tap_rows, d.n_tap_cols = n_rows, n_cols
            qmax_h = 0
            qmax_w = 0
            for a in range(n_rows):
                qmax_h = imax(qmax_h, q_h[a])
            for a in range(n_cols):
                qmax_w = imax(qmax_w, q_w[a])
            for a in range(n_rows):
                d.tap_row[a] = qmax_h - q_h[a]
                d.tap_weight_row[a] = taps_h[a]
            for a in range(n_cols):
                d.tap_col[a] = qmax_w - q_w[a]
                d.tap_weight_col[a] = taps_w[a]
            d.kernel_w = g.kernel_w
            d.w_out_stride = g.kernel_h * g.kernel_w
            d.w_in_stride = g.channels * g.kernel_h * g.kernel_w
            d.src_h, d.src_w = g.out_h, g.out_w
            d.src_channel_stride = g.out_h * g.out_w
            d.src_image_stride = conv.y_image_stride
            u_first = (first_h + g.pad_h - rh) // g.stride_h
            v_first = (first_w + g.pad_w - rw) // g.stride_w
            d.src_row0, d.src_col0 = u_first - qmax_h, v_first - qmax_w
            d.rows = ceil_div(g.height - first_h, g.stride_h)
            d.cols = ceil_div(g.width - first_w, g.stride_w)
            d.step_h, d.step_w = 1, 1
            d.out_origin = first_h * g.width + first_w
            d.out_row_step, d.out_col_step = g.stride_h * g.width, g.stride_w
            d.out_channel_stride = g.height * g.width
            d.out_image_stride = conv.x_image_stride
            if d.n_tap_rows == 0 or d.n_tap_cols == 0:
                # No tap reaches these dx positions: they are zeros (no window, no weights).
                d.n_tap_rows = d.n_tap_cols = 0
                d.taps = d.k_count = 0
                d.band_rows, d.bands = d.rows, 1
                d.blocks = 0
                continue
            if not finish_pass(plan, d, conv.n_images):
                return False
    return True


cdef void place_pass_tables(EnginePlan* plan, bint with_bias) noexcept nogil:
    """Place each pass's offset table, packed weights (and the bias) in the shared workspace."""
    cdef int i
    cdef DirectPass* d
    for i in range(plan.n_passes):
        d = &plan.passes[i]
        if d.k_count == 0:
            continue
        d.koff_at = plan.shared_elems
        plan.shared_elems += vector_elems(plan, ceil_div(d.k_count * sizeof(ptrdiff_t), plan.itemsize))
        d.weights_at = plan.shared_elems
        plan.shared_elems += vector_elems(plan, pass_weight_elems(d, plan.lanes))
        d.bias_at = plan.shared_elems
        if with_bias:
            plan.shared_elems += vector_elems(plan, d.blocks * d.nr)


cdef void share_phase_window(EnginePlan* plan, index_t budget) noexcept nogil:
    """Backward-data phases of a strided layer all read dout at stride 1: on a batch large
    enough for one task per image, one window of the whole image serves every phase (each at
    its offset), copied once per image instead of once per phase (dout is read from memory
    once, not sh*sw times)."""
    cdef DirectPass* c = &plan.common
    cdef DirectPass* d
    cdef index_t row0 = 0, col0 = 0, row_end = 0, col_end = 0
    cdef int i, first = -1
    plan.shared_window = False
    if plan.n_passes < 2 or plan.conv.n_images < TASKS_TARGET:
        return
    for i in range(plan.n_passes):
        d = &plan.passes[i]
        if d.k_count == 0:
            continue
        if first < 0 or d.src_row0 < row0:
            row0 = d.src_row0
        if first < 0 or d.src_col0 < col0:
            col0 = d.src_col0
        row_end = imax(row_end, d.src_row0 + d.rows - 1 + d.tap_rows_span)
        col_end = imax(col_end, d.src_col0 + d.win_w)
        if first < 0:
            first = i
    if first < 0:
        return
    c[0] = plan.passes[first]
    c.src_row0, c.src_col0 = row0, col0
    c.rows, c.step_h, c.step_w = 1, 1, 1
    c.tap_rows_span = row_end - row0
    c.win_w = c.win_pw = c.win_cs = col_end - col0
    c.win_rs = c.cin * c.win_cs
    c.band_rows, c.bands = 1, 1
    c.window_is_source = False
    if pass_window_elems(plan, c) * plan.itemsize > budget:
        return
    plan.shared_window = True
    for i in range(plan.n_passes):
        d = &plan.passes[i]
        d.bands, d.band_rows = 1, d.rows
        if d.k_count == 0:
            continue
        d.window_shared = True
        d.window_is_source = False
        d.win_origin = (d.src_row0 - row0) * c.win_rs + d.src_col0 - col0
        d.win_w = d.win_pw = d.win_cs = c.win_cs
        d.win_rs = c.win_rs
    plan.thread_elems = imax(plan.thread_elems, pass_window_elems(plan, c))


cdef void size_pass_windows(EnginePlan* plan) noexcept nogil:
    """Cut the passes into bands once the shared workspace is known; every thread gets a
    window as large as the largest pass needs (or one window shared by the phases)."""
    cdef int i
    cdef DirectPass* d
    cdef index_t budget = window_budget(plan, plan.shared_elems * plan.itemsize)
    share_phase_window(plan, budget)
    if plan.shared_window:
        return
    for i in range(plan.n_passes):
        d = &plan.passes[i]
        if d.k_count == 0:
            continue
        set_bands(plan, d, plan.conv.n_images, budget)
        plan.thread_elems = imax(plan.thread_elems, pass_window_elems(plan, d))


cdef void finish_workspace(EnginePlan* plan) noexcept nogil:
    """The larger of the direct layout and (when planned) Winograd's, which overlap."""
    plan.workspace_bytes = (plan.shared_elems + plan.threads * plan.thread_elems) * plan.itemsize
    if plan.has_winograd:
        plan.workspace_bytes = imax(plan.workspace_bytes, plan.itemsize * (
            plan.wino.shared_elems + plan.wino.threads * plan.wino.thread_elems))


cdef bint plan_forward(EnginePlan* plan, const EngineConv* conv, index_t itemsize,
                       int threads) except -1:
    """Fill plan for y = conv(x, w) + b; False: the engine declines (use im2col + BLAS)."""
    if not start_plan(plan, conv, itemsize, threads):
        return False
    forward_geometry(&plan.passes[0], &plan.conv)
    plan.n_passes = 1
    if not finish_pass(plan, &plan.passes[0], conv.n_images):
        return False
    if algorithm_choice == ALGORITHM_AUTO and plan.passes[0].efficiency < MIN_EFFICIENCY:
        return False
    place_pass_tables(plan, True)
    size_pass_windows(plan)
    plan.has_winograd = plan_winograd(plan, &plan.passes[0], plan.conv.n_images, True)
    finish_workspace(plan)
    return True


cdef bint plan_backward(EnginePlan* plan, const EngineConv* conv, index_t itemsize,
                        int threads) except -1:
    """Fill plan for (dx, dw, db); False: the engine declines (use im2col + BLAS)."""
    cdef const Window2D* g = &conv.g
    cdef WeightPass* wp = &plan.wgrad
    cdef DirectPass* win = &plan.wgrad_window
    cdef index_t pixels, band_pixels, partial_bytes, budget
    cdef double eff
    cdef int i
    if not start_plan(plan, conv, itemsize, threads):
        return False
    plan.backward = True
    if not backward_data_geometry(plan, &plan.conv):
        return False
    plan.data_by_engine = True
    for i in range(plan.n_passes):
        if plan.passes[i].k_count > 0 and plan.passes[i].efficiency < MIN_EFFICIENCY:
            plan.data_by_engine = algorithm_choice == ALGORITHM_DIRECT
    if plan.data_by_engine:
        place_pass_tables(plan, False)
    else:
        plan.n_passes = 0
    # Backward-weight reads the forward pass's windows.
    forward_geometry(win, &plan.conv)
    g = &plan.conv.g
    if not finish_pass(plan, win, conv.n_images):
        return False
    wp.cin, wp.filters = g.channels, conv.filters
    wp.taps = g.kernel_h * g.kernel_w
    wp.k_count = wp.cin * wp.taps
    wp.nv = choose_nv(plan.kernels, wp.k_count, wp.filters, plan.lanes, &eff)
    if algorithm_choice == ALGORITHM_AUTO and eff < MIN_EFFICIENCY:
        return False
    wp.nr = wp.nv * plan.lanes
    wp.blocks = ceil_div(wp.filters, wp.nr)
    wp.fpad = wp.blocks * wp.nr
    wp.tap_tiles = ceil_div(wp.k_count, plan.kernels.max_mr[wp.nv])
    # Chunks: fixed by the shape alone (they decide the summation order of dW and db).
    pixels = conv.n_images * g.out_h * g.out_w
    wp.partial_elems = vector_elems(plan, wp.k_count * wp.fpad + wp.fpad)
    partial_bytes = wp.partial_elems * itemsize
    wp.chunks = imin(MAX_CHUNKS, imin(conv.n_images * g.out_h, imax(1, pixels // MIN_CHUNK_PIXELS)))
    wp.chunks = imax(1, imin(wp.chunks, <index_t>(PARTIALS_FRACTION * plan.io_bytes) // partial_bytes))
    wp.groups = imin(wp.blocks, ceil_div(TASKS_TARGET, wp.chunks))
    wp.blocks_per_group = ceil_div(wp.blocks, wp.groups)
    wp.groups = ceil_div(wp.blocks, wp.blocks_per_group)
    wp.partials_at = plan.shared_elems
    plan.shared_elems += wp.chunks * wp.partial_elems
    win.koff_at = plan.shared_elems
    plan.shared_elems += vector_elems(plan, ceil_div(wp.k_count * sizeof(ptrdiff_t), itemsize))
    size_pass_windows(plan)
    # Bands of output rows (or segments of one long row) whose transposed dout, one filter block
    # wide, stays in L1; inside bands of window rows sized like the forward's (a window is
    # copied once for several dout bands: its halo rows are not copied again).
    band_pixels = imax(1, (L1_BYTES // 2) // (wp.nr * itemsize))
    wp.band_rows = imax(1, imin(g.out_h, band_pixels // g.out_w))
    wp.band_cols = g.out_w if wp.band_rows > 1 else imin(g.out_w, band_pixels)
    budget = window_budget(plan, plan.shared_elems * itemsize) - itemsize * vector_elems(
        plan, wp.band_rows * wp.band_cols * wp.blocks_per_group * wp.nr)
    win.band_rows = imax(wp.band_rows, imin(g.out_h, budget // imax(1, itemsize * win.win_rs * win.step_h)))
    plan.thread_elems = imax(plan.thread_elems,
                             (0 if win.window_is_source else pass_window_elems(plan, win))
                             + vector_elems(plan, wp.band_rows * wp.band_cols * wp.blocks_per_group * wp.nr))
    if plan.data_by_engine and plan.n_passes == 1:
        plan.has_winograd = plan_winograd(plan, &plan.passes[0], plan.conv.n_images, False)
    finish_workspace(plan)
    return True
