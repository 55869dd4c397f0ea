"""python -m fastconv check: cross-check the compiled kernels against fastconv.reference.

Draws random configurations (shapes, strides, paddings including "same"/"valid", dilations,
groups including depthwise ones, transposed convolutions' output paddings, both dtypes), runs
every public function on both backends and compares: max pooling exactly (values and indices), the
rest within a tolerance of the dtype. Also checks that the compiled results are bitwise
identical at one thread and at several. Prints a table; exits 1 on any mismatch.
"""

import time

import numpy as np

import fastconv
from fastconv import _backend

TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
FUNCTIONS = (
    "conv2d", "conv2d_backward", "conv1d", "conv1d_backward",
    "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose1d", "conv_transpose1d_backward",
    "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
)


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="fewer configurations (a few seconds)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--configs", type=int, default=None, help="configurations per function and dtype (default 40, 8 with --quick)"
    )


def _ints(rng, low, high, count):
    return tuple(int(v) for v in rng.integers(low, high, count))


def _draw_conv(rng, nd):
    """A random valid convolution configuration for conv{nd}d (without groups)."""
    while True:
        n, c, f = _ints(rng, 1, 5, 1) + _ints(rng, 1, 6, 2)
        size, kernel = _ints(rng, 1, 13, nd), _ints(rng, 1, 5, nd)
        stride, padding, dilation = _ints(rng, 1, 4, nd), _ints(rng, 0, 3, nd), _ints(rng, 1, 3, nd)
        if all(s + 2 * p >= d * (k - 1) + 1 for s, k, p, d in zip(size, kernel, padding, dilation)):
            return (n, c) + size, (f, c) + kernel, stride, padding, dilation


def _draw_grouped_conv(rng, nd):
    """_draw_conv with groups (a third of them depthwise) and, now and then, padding="same"
    (stride 1) or "valid": (x shape, w shape, keyword arguments)."""
    while True:
        xs, ws, stride, padding, dilation = _draw_conv(rng, nd)
        groups = int(rng.integers(1, 4))
        per_group = 1 if rng.random() < 0.33 else ws[1]
        xs, ws = xs[:1] + (groups * per_group,) + xs[2:], (groups * ws[0], per_group) + ws[2:]
        choice = rng.random()
        if choice < 0.2:
            stride, padding = (1,) * nd, "same"
        elif choice < 0.3:
            padding = "valid"
            if any(s < d * (k - 1) + 1 for s, k, d in zip(xs[2:], ws[2:], dilation)):
                continue
        return xs, ws, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _draw_transposed_conv(rng, nd):
    """A random valid transposed convolution: (x shape, w shape, keyword arguments)."""
    while True:
        n, per_group, f_per_group = _ints(rng, 1, 5, 1) + _ints(rng, 1, 4, 2)
        groups = int(rng.integers(1, 4))
        size, kernel = _ints(rng, 1, 9, nd), _ints(rng, 1, 5, nd)
        stride, padding, dilation = _ints(rng, 1, 4, nd), _ints(rng, 0, 3, nd), _ints(rng, 1, 3, nd)
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        if all((h - 1) * s - 2 * p + d * (k - 1) + op >= 0
               for h, k, s, p, op, d in zip(size, kernel, stride, padding, output_padding, dilation)):
            return ((n, groups * per_group) + size, (groups * per_group, f_per_group) + kernel,
                    dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                         dilation=dilation))


def _draw_pool(rng):
    while True:
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 5))) + tuple(int(v) for v in rng.integers(1, 13, 2))
        kernel = tuple(int(v) for v in rng.integers(1, 5, 2))
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        if all(s + 2 * p >= k for s, k, p in zip(shape[2:], kernel, padding)):
            return shape, kernel, stride, padding


def _calls(name, rng, dtype):
    """(args, kwargs) of one random call of the public function `name`."""
    def data(shape):
        if name.startswith("max_pool"):
            # Small integers make many ties: the tie-breaking rule is checked too.
            return rng.integers(-3, 4, shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    if name.startswith("conv"):
        nd = 1 if "1d" in name else 2
        transposed = name.startswith("conv_transpose")
        xs, ws, params = (_draw_transposed_conv if transposed else _draw_grouped_conv)(rng, nd)
        x, w = data(xs), data(ws)
        forward = name.replace("_backward", "")
        filters = ws[1] * params["groups"] if transposed else ws[0]
        if name.endswith("backward"):
            out = getattr(fastconv.reference, forward)(x, w, **params)
            return (data(out.shape), x, w), params
        return (x, w, data((filters,))), params
    if name in ("im2col", "col2im"):
        xs, ws, stride, padding, dilation = _draw_conv(rng, 2)
        params = dict(kernel_size=ws[2:], stride=stride, padding=padding, dilation=dilation)
        if name == "im2col":
            return (data(xs),), params
        cols_shape = fastconv.reference.im2col(np.zeros(xs, dtype), **params).shape
        return (data(cols_shape), xs), params
    shape, kernel, stride, padding = _draw_pool(rng)
    params = dict(kernel_size=kernel, stride=stride, padding=padding)
    x = data(shape)
    if name == "max_pool2d_backward":
        y, idx = fastconv.reference.max_pool2d(x, **params)
        return (data(y.shape), idx, shape), {}
    if name == "avg_pool2d_backward":
        y = fastconv.reference.avg_pool2d(x, **params)
        return (data(y.shape), shape), params
    return (x,), params


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _error(name, dtype, got, want):
    """Relative error of got vs want (0 means identical); inf on any shape or dtype mismatch."""
    worst = 0.0
    for g, r in zip(_as_tuple(got), _as_tuple(want)):
        if g.shape != r.shape or g.dtype != r.dtype:
            return np.inf
        if name == "max_pool2d" or g.dtype.kind == "i":
            if not np.array_equal(g, r, equal_nan=True):
                return np.inf
            continue
        scale = max(1.0, float(np.max(np.abs(r))) if r.size else 1.0)
        worst = max(worst, float(np.max(np.abs(g - r))) / scale if r.size else 0.0)
    return worst


def run(args):
    if "cython" not in _backend._modules:
        print(f"check: the compiled backend is not available ({_backend.extension_error}).")
        print("check: nothing to check against the reference; reinstall fastconv to build it.")
        return 1
    configs = args.configs or (8 if args.quick else 40)
    rng = np.random.default_rng(args.seed)
    threads = fastconv.get_num_threads()
    many = max(threads, 3)
    print(f"fastconv {fastconv.__version__}: compiled vs reference, {configs} random configurations "
          f"per row, seed {args.seed}; determinism: 1 vs {many} threads")
    width = max(len(name) for name in FUNCTIONS) + 2
    header = f"{'function':<{width}}{'dtype':<9}{'max rel. error':>16}{'tolerance':>12}{'1 vs n threads':>16}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    start = time.perf_counter()
    try:
        for name in FUNCTIONS:
            for dtype in (np.float32, np.float64):
                tolerance = TOLERANCE[np.dtype(dtype)]
                worst, deterministic = 0.0, True
                for _ in range(configs):
                    call_args, kwargs = _calls(name, rng, dtype)
                    function = getattr(fastconv, name)
                    want = function(*call_args, **kwargs, backend="reference")
                    fastconv.set_num_threads(1)
                    got = function(*call_args, **kwargs, backend="cython")
                    fastconv.set_num_threads(many)
                    got_many = function(*call_args, **kwargs, backend="cython")
                    worst = max(worst, _error(name, np.dtype(dtype), got, want))
                    deterministic &= all(
                        a.tobytes() == b.tobytes() for a, b in zip(_as_tuple(got), _as_tuple(got_many))
                    )
                ok = worst <= tolerance and deterministic
                failures += not ok
                print(f"{name:<{width}}{np.dtype(dtype).name:<9}{worst:>16.2e}{tolerance:>12.0e}"
                      f"{'identical' if deterministic else 'DIFFERENT':>16}  {'ok' if ok else 'MISMATCH'}")
    finally:
        fastconv.set_num_threads(threads)
    elapsed = time.perf_counter() - start
    rows = len(FUNCTIONS) * 2
    print(f"{rows - failures} passed, {failures} failed ({elapsed:.1f} s)")
    return 1 if failures else 0
