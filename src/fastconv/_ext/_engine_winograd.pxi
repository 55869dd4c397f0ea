# Winograd F(m x m, 3 x 3) passes of the engine (included by _engine.pyx; see docs/guide/engine.md).
#
# Y = A^T [ sum over input channels of (G g G^T) . (B^T d B) ] A for every m x m output tile:
# (m + 2)^2 multiplies per tile and channel pair where a direct 3x3 convolution takes 9 m^2,
# 2.25x fewer for F(2x2), 4x fewer for F(4x4). The sum over input channels is one GEMM per
# transform point ("xi"), tiles x channels times channels x filters, on the engine's GEMM tiles;
# the transforms are vectorised over channels (input) and filters (output).
#
# Numerics (docs/numerics.md): every output is within gamma_n * |A^T| (sum_c |G||g||G^T| .
# |B^T||d||B|) |A| of the exact sum, n = C + WINOGRAD_EXTRA_TERMS: a bound larger than the direct
# one (the transforms add and subtract scaled copies of the inputs). The transforms also mix the
# inputs of a whole tile, so an inf or NaN would reach outputs that a direct convolution keeps
# finite: a pass runs Winograd only when every input value is finite and small enough that no
# transform can overflow, and the direct kernels otherwise (or always, with "direct").

from libc.float cimport FLT_MAX, DBL_MAX

# G of F(2x2, 3x3) (4 x 3) and of F(4x4, 3x3) (6 x 3), row-major: the weight transform, in
# double (U is rounded once).
cdef double G2[12]
cdef double G4[18]
_G2_VALUES = (1.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0.0, 0.0, 1.0)
_G4_VALUES = (1.0 / 4, 0.0, 0.0, -1.0 / 6, -1.0 / 6, -1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6,
              1.0 / 24, 1.0 / 12, 1.0 / 6, 1.0 / 24, -1.0 / 12, 1.0 / 6, 0.0, 0.0, 1.0)
for _i in range(12):
    G2[_i] = _G2_VALUES[_i]
for _i in range(18):
    G4[_i] = _G4_VALUES[_i]

# Extra roundings of the transforms beyond the C products summed per point (docs/numerics.md).
WINOGRAD_EXTRA_TERMS = 24
# The transforms scale values by at most (sum |B^T row|)^2 * (sum |A^T row|)^2 * C (F(4x4):
# 100 * 324 * C < 2**15 * C); inputs whose |x| * max|w| stays below MAX / (2**17 * C) cannot
# overflow anywhere.
cdef double TRANSFORM_HEADROOM = 131072.0
# Transformed weights may take the workspace budget but this share, left for the tasks' buffers.
cdef double WINOGRAD_TASK_SHARE = 0.25
# The widest output-channel block (FC_MAX_NV vectors of 16 floats).
DEF MAX_NR = 64
# Winograd needs enough channels to fill the vectors of its transforms and its GEMM's reduction.
cdef index_t WINOGRAD_MIN_CHANNELS = 8


cdef bint plan_winograd(EnginePlan* plan, const DirectPass* d, index_t n_images,
                        bint with_bias) noexcept nogil:
    """Plan Winograd for a stride-1, dilation-1, 3x3 pass described like a direct pass (its
    source, taps, mapping and weights); False when it does not apply or does not fit."""
    cdef WinogradPass* wg = &plan.wino
    cdef index_t lanes = plan.lanes, tile_bytes, budget, shared, target, m, i
    cdef double eff
    cdef bint flip
    if algorithm_choice != ALGORITHM_AUTO and algorithm_choice != ALGORITHM_WINOGRAD:
        return False
    if d.n_tap_rows != 3 or d.n_tap_cols != 3 or d.step_h != 1 or d.step_w != 1:
        return False
    # Window offsets 0, 1, 2 (no dilation), reading kernel offsets 0, 1, 2 (forward) or 2, 1, 0
    # (backward-data) alike in rows and columns.
    flip = d.tap_weight_row[0] != 2 - d.tap_row[0]
    flip = not flip
    for i in range(3):
        if d.tap_row[i] > 2 or d.tap_col[i] != d.tap_row[i]:
            return False
        if d.tap_weight_row[i] != (2 - d.tap_row[i] if flip else d.tap_row[i]):
            return False
        if d.tap_weight_col[i] != d.tap_weight_row[i]:
            return False
    if d.tap_row[0] + d.tap_row[1] + d.tap_row[2] != 3 or d.tap_row[0] == d.tap_row[1]:
        return False
    if algorithm_choice == ALGORITHM_AUTO and d.cin < WINOGRAD_MIN_CHANNELS:
        return False
    for m in range(4, 0, -2):
        wg.m = <int>m
        wg.alpha = m + 2
        wg.points = wg.alpha * wg.alpha
        wg.cin, wg.cout = d.cin, d.cout
        wg.cpad = round_up(d.cin, lanes)
        wg.nv = choose_nv(plan.kernels, 64, d.cout, lanes, &eff)
        wg.nr = wg.nv * lanes
        wg.blocks = ceil_div(d.cout, wg.nr)
        wg.fpad = wg.blocks * wg.nr
        wg.src_h, wg.src_w = d.src_h, d.src_w
        wg.src_channel_stride, wg.src_image_stride = d.src_channel_stride, d.src_image_stride
        wg.src_row0, wg.src_col0 = d.src_row0, d.src_col0
        wg.rows, wg.cols = d.rows, d.cols
        wg.tiles_h, wg.tiles_w = ceil_div(d.rows, m), ceil_div(d.cols, m)
        wg.win_cols = wg.tiles_w * m + 2
        wg.out_channel_stride, wg.out_image_stride = d.out_channel_stride, d.out_image_stride
        wg.w_out_stride, wg.w_in_stride = d.w_out_stride, d.w_in_stride
        wg.flip = flip
        wg.input_limit = (FLT_MAX if plan.itemsize == 4 else DBL_MAX) / (TRANSFORM_HEADROOM * d.cin)
        # Shared: U (points x blocks x cin x nr) and the bias. Which m runs decides results, so
        # it depends on the shape alone: U must leave WINOGRAD_TASK_SHARE of the budget for the
        # tasks' buffers, whose size (tiles per task, never a result) then follows the threads.
        wg.u_at = 0
        shared = vector_elems(plan, wg.points * wg.blocks * wg.cin * wg.nr)
        wg.bias_at = shared
        if with_bias:
            shared += vector_elems(plan, wg.fpad)
        budget = <index_t>(WORKSPACE_FRACTION * plan.io_bytes) - shared * plan.itemsize
        if budget < WINOGRAD_TASK_SHARE * WORKSPACE_FRACTION * plan.io_bytes:
            continue
        tile_bytes = wg.points * (wg.cpad + wg.fpad) * plan.itemsize
        target = imax(1, imin(L2_BYTES, budget // plan.threads) // tile_bytes)
        while True:
            size_winograd_tasks(plan, wg, n_images, target)
            wg.thread_elems = wg.win_elems + wg.v_elems + wg.m_elems + wg.stage_elems
            if plan.threads * wg.thread_elems * plan.itemsize <= budget:
                break
            if wg.task_images == 1 and wg.task_tile_rows == 1:
                break      # one tile row of one image is the smallest task
            target = imin(target, wg.task_tiles) * 3 // 4
        # Fewer threads where even the smallest tasks of all of them would not fit (how many
        # threads run never changes a result). Its own layout, overlapping the direct one: a
        # call runs one or the other.
        wg.threads = <int>imax(1, imin(plan.threads, budget // (wg.thread_elems * plan.itemsize)))
        wg.shared_elems = shared
        return True
    return False


cdef void size_winograd_tasks(const EnginePlan* plan, WinogradPass* wg, index_t n_images,
                              index_t target) noexcept nogil:
    """Tasks of about `target` tiles (at least one tile row): groups of whole images, or bands of
    tile rows of one image; enough of them for several threads. Sets the buffer sizes."""
    cdef index_t tiles_per_image = wg.tiles_h * wg.tiles_w, m = wg.m
    if target >= tiles_per_image:
        wg.task_images = imin(n_images, target // tiles_per_image)
        wg.task_images = imax(1, imin(wg.task_images, n_images // imin(n_images, TASKS_TARGET)))
        wg.task_tile_rows = wg.tiles_h
    else:
        wg.task_images = 1
        wg.task_tile_rows = imax(1, target // wg.tiles_w)
    if wg.task_images == 1 and n_images * ceil_div(wg.tiles_h, wg.task_tile_rows) < TASKS_TARGET:
        wg.task_tile_rows = ceil_div(wg.tiles_h, imin(wg.tiles_h, ceil_div(TASKS_TARGET, n_images)))
    wg.bands = ceil_div(wg.tiles_h, wg.task_tile_rows)
    wg.task_tiles = wg.task_images * wg.task_tile_rows * wg.tiles_w
    wg.tasks = ceil_div(n_images, wg.task_images) * (wg.bands if wg.task_images == 1 else 1)
    wg.win_elems = vector_elems(plan, (wg.task_tile_rows * m + 2) * wg.win_cols * wg.cpad)
    # A tile's points are a stride apart in V and M: one cache line more than the tiles take,
    # so that the points of a tile fall in different cache sets (with a stride of a multiple of
    # 2 KB they would share two sets of L1 and evict each other).
    wg.v_stride = vector_elems(plan, wg.task_tiles * wg.cpad) + ALIGN // plan.itemsize
    wg.m_stride = vector_elems(plan, wg.task_tiles * wg.fpad) + ALIGN // plan.itemsize
    wg.v_elems = wg.points * wg.v_stride
    wg.m_elems = wg.points * wg.m_stride
    # One tile row of outputs, channels last, before its rows are transposed into NCHW.
    wg.stage_elems = vector_elems(plan, m * wg.tiles_w * m * wg.fpad)


cdef bint winograd_inputs_safe(const WinogradPass* wg, const floating* src, index_t n_images,
                               const floating* w, index_t w_count, int threads) noexcept nogil:
    """Every weight and input value finite, and max|input| * max|w| below input_limit."""
    cdef floating v, w_max = 0, limit
    cdef index_t i, bad = 0, count = n_images * wg.src_image_stride
    cdef index_t part, parts = imin(threads, imax(1, count // 65536))
    for i in range(w_count):
        v = w[i]
        if not (v <= DBL_MAX and v >= -DBL_MAX):    # NaN or inf
            return False
        w_max = max(w_max, v if v >= 0 else -v)
    limit = wg.input_limit if w_max == 0 else min(<double>wg.input_limit / w_max,
                                                  FLT_MAX if floating is float else DBL_MAX)
    if parts <= 1:
        return count_outside(src, count, limit) == 0
    for part in prange(parts, num_threads=<int>parts, schedule='static'):
        bad += count_outside(src + part * count // parts,
                             (part + 1) * count // parts - part * count // parts, limit)
    return bad == 0


cdef inline index_t count_outside(const floating* values, index_t count,
                                  floating limit) noexcept nogil:
    """How many values are not in [-limit, limit] (NaN included). Counts rather than stops at
    the first: this loop vectorises."""
    cdef index_t i, bad = 0
    cdef floating v
    for i in range(count):
        v = values[i]
        bad += (v > limit) + (v < -limit) + (v != v)
    return bad


cdef void pack_winograd_weights(const WinogradPass* wg, const floating* w, floating* u,
                                int threads) noexcept nogil:
    """u[xi][block][c][lane] = (G g G^T)[xi] of weight(block*nr + lane, c), computed in double
    and rounded once; zero beyond cout. One task per (block, input channel)."""
    cdef index_t task, tasks = wg.blocks * wg.cin
    if threads <= 1 or tasks < 64:
        for task in range(tasks):
            pack_winograd_block(wg, w, u, task // wg.cin, task % wg.cin)
    else:
        for task in prange(tasks, num_threads=threads, schedule='static'):
            pack_winograd_block(wg, w, u, task // wg.cin, task % wg.cin)


cdef void pack_winograd_block(const WinogradPass* wg, const floating* w, floating* u,
                              index_t blk, index_t c) noexcept nogil:
    """The nr lanes of one (block, input channel), lanes innermost so that the loops vectorise."""
    cdef index_t lane, co, a, b, k, alpha = wg.alpha, nr = wg.nr
    cdef double g[9][MAX_NR]
    cdef double t[6][3][MAX_NR]
    cdef const floating* src
    cdef floating* dst
    cdef const double* G = &G2[0]
    if wg.m == 4:
        G = &G4[0]
    for lane in range(nr):
        co = blk * nr + lane
        src = w + co * wg.w_out_stride + c * wg.w_in_stride
        for k in range(9):
            g[k][lane] = 0 if co >= wg.cout else src[8 - k if wg.flip else k]
    for a in range(alpha):      # t = G g
        for b in range(3):
            for lane in range(nr):
                t[a][b][lane] = (G[a * 3] * g[b][lane] + G[a * 3 + 1] * g[3 + b][lane]
                                 + G[a * 3 + 2] * g[6 + b][lane])
    for a in range(alpha):      # U = t G^T
        for b in range(alpha):
            dst = u + ((a * alpha + b) * wg.blocks + blk) * wg.cin * nr + c * nr
            for lane in range(nr):
                dst[lane] = <floating>(t[a][0][lane] * G[b * 3] + t[a][1][lane] * G[b * 3 + 1]
                                       + t[a][2][lane] * G[b * 3 + 2])


cdef void copy_window_channels_last(const fc_isa_kernels* kern, const WinogradPass* wg,
                                    const floating* src, index_t first_row, index_t n_rows,
                                    floating* win) noexcept nogil:
    """win[r][col][c] = src[c][first_row + r][src_col0 + col] (0 outside the planes and for
    c >= cin), for r < n_rows, col < win_cols."""
    cdef index_t cpad = wg.cpad, cin = wg.cin, win_cols = wg.win_cols, plane = wg.src_channel_stride
    cdef index_t row_stride = win_cols * cpad, r, row, col, c
    cdef index_t lo = imin(win_cols, imax(0, -wg.src_col0))
    cdef index_t hi = imax(lo, imin(win_cols, wg.src_w - wg.src_col0))
    cdef floating* dst
    for r in range(n_rows):
        row = first_row + r
        dst = win + r * row_stride
        if row < 0 or row >= wg.src_h:
            memset(dst, 0, row_stride * sizeof(floating))
            continue
        memset(dst, 0, lo * cpad * sizeof(floating))
        memset(dst + hi * cpad, 0, (win_cols - hi) * cpad * sizeof(floating))
        if floating is float:
            kern.f32_transpose(cin, hi - lo, src + row * wg.src_w + wg.src_col0 + lo, plane,
                               dst + lo * cpad, cpad)
        else:
            kern.f64_transpose(cin, hi - lo, src + row * wg.src_w + wg.src_col0 + lo, plane,
                               dst + lo * cpad, cpad)
        if cpad > cin:
            for col in range(lo, hi):
                for c in range(cin, cpad):
                    dst[col * cpad + c] = 0


cdef void winograd_task(const EnginePlan* plan, index_t task, const floating* src,
                        const floating* shared, const floating* bias, floating* out,
                        floating* thread_ws) noexcept nogil:
    """One task: its images (or band of tile rows) through window, input transform, the GEMMs
    of every transform point and the output transform."""
    cdef const WinogradPass* wg = &plan.wino
    cdef const fc_isa_kernels* kern = plan.kernels
    cdef index_t m = wg.m, lanes = plan.lanes, cpad = wg.cpad, fpad = wg.fpad
    cdef index_t n0, n1, tr0, tr1, n, ty, tx, t, xi, blk, tile, tiles, t0, t1, T, i
    cdef index_t row_stride = wg.win_cols * cpad
    cdef floating* win = thread_ws
    cdef floating* v = thread_ws + wg.win_elems
    cdef floating* mm = v + wg.v_elems
    cdef floating* stage = mm + wg.m_elems
    cdef floating* y_row
    cdef const floating* u = shared + wg.u_at
    cdef const floating* a
    cdef int mr, tile_nv = wg.nv, wi = 1 if wg.m == 4 else 0
    if wg.task_images > 1:
        n0 = task * wg.task_images
        n1 = imin(plan.conv.n_images, n0 + wg.task_images)
        tr0, tr1 = 0, wg.tiles_h
    else:
        n0 = task // wg.bands
        n1 = n0 + 1
        tr0 = (task % wg.bands) * wg.task_tile_rows
        tr1 = imin(wg.tiles_h, tr0 + wg.task_tile_rows)
    # Input transform: V[xi][t][c] for the task's tiles t.
    T = (n1 - n0) * (tr1 - tr0) * wg.tiles_w
    t = 0
    for n in range(n0, n1):
        copy_window_channels_last(kern, wg, src + n * wg.src_image_stride,
                                  wg.src_row0 + tr0 * m, (tr1 - tr0) * m + 2, win)
        for ty in range(tr1 - tr0):
            for tx in range(wg.tiles_w):
                a = win + ty * m * row_stride + tx * m * cpad
                if floating is float:
                    kern.f32_winograd_input[wi](a, row_stride, cpad, cpad // lanes, v + t * cpad,
                                                wg.v_stride)
                else:
                    kern.f64_winograd_input[wi](a, row_stride, cpad, cpad // lanes, v + t * cpad,
                                                wg.v_stride)
                t += 1
    # M[xi][t][f] = V[xi][t][:] . U[xi][:][f], point by point.
    tiles = ceil_div(T, kern.max_mr[tile_nv])
    for xi in range(wg.points):
        for blk in range(wg.blocks):
            for tile in range(tiles):
                t0 = tile * T // tiles
                t1 = (tile + 1) * T // tiles
                mr = <int>(t1 - t0)
                if floating is float:
                    kern.f32_gemm[tile_nv][mr](wg.cin, v + xi * wg.v_stride + t0 * cpad, cpad,
                                               u + (xi * wg.blocks + blk) * wg.cin * wg.nr,
                                               mm + xi * wg.m_stride + t0 * fpad + blk * wg.nr,
                                               fpad)
                else:
                    kern.f64_gemm[tile_nv][mr](wg.cin, v + xi * wg.v_stride + t0 * cpad, cpad,
                                               u + (xi * wg.blocks + blk) * wg.cin * wg.nr,
                                               mm + xi * wg.m_stride + t0 * fpad + blk * wg.nr,
                                               fpad)
    # Output transform, one tile row at a time into the channels-last stage, whose rows are
    # then transposed into NCHW (clipped at the plane's edges).
    t = 0
    for n in range(n0, n1):
        for ty in range(tr0, tr1):
            for tx in range(wg.tiles_w):
                if floating is float:
                    kern.f32_winograd_output[wi](mm + t * fpad, wg.m_stride, ceil_div(wg.cout, lanes),
                                                 bias, stage + tx * m * fpad, wg.tiles_w * m * fpad,
                                                 fpad)
                else:
                    kern.f64_winograd_output[wi](mm + t * fpad, wg.m_stride, ceil_div(wg.cout, lanes),
                                                 bias, stage + tx * m * fpad, wg.tiles_w * m * fpad,
                                                 fpad)
                t += 1
            for i in range(imin(m, wg.rows - ty * m)):
                y_row = out + n * wg.out_image_stride + (ty * m + i) * wg.cols
                if floating is float:
                    kern.f32_transpose(wg.cols, wg.cout, stage + i * wg.tiles_w * m * fpad, fpad,
                                       y_row, wg.out_channel_stride)
                else:
                    kern.f64_transpose(wg.cols, wg.cout, stage + i * wg.tiles_w * m * fpad, fpad,
                                       y_row, wg.out_channel_stride)


cdef void run_winograd(const EnginePlan* plan, const floating* src, const floating* w,
                       const floating* b, floating* out, floating* ws) noexcept nogil:
    cdef const WinogradPass* wg = &plan.wino
    cdef index_t t, lane
    cdef int threads = <int>imin(wg.threads, wg.tasks)
    cdef floating* bias = NULL
    cdef floating* thread_ws = ws + wg.shared_elems
    cdef floating* mine
    pack_winograd_weights(wg, w, ws + wg.u_at, threads)
    if b != NULL:
        bias = ws + wg.bias_at
        for lane in range(wg.fpad):
            bias[lane] = b[lane] if lane < wg.cout else 0
    if threads <= 1:
        for t in range(wg.tasks):
            winograd_task(plan, t, src, ws, bias, out, thread_ws)
    else:
        with parallel(num_threads=threads):
            mine = thread_ws + omp_get_thread_num() * wg.thread_elems
            for t in prange(wg.tasks, schedule='dynamic'):
                winograd_task(plan, t, src, ws, bias, out, mine)
