"""python -m fastconv check: cross-check the compiled kernels against fastconv.reference.

Draws random configurations (shapes, strides, paddings including "same"/"valid", dilations,
groups including depthwise ones, transposed convolutions' output paddings, pooling's ceil_mode,
count_include_pad, divisor_override and adaptive output sizes, both dtypes), runs every public
function on both backends and compares: max pooling and ReLU exactly (values and indices), the rest
within a tolerance of the dtype. Also checks that the compiled results are bitwise
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
    "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "batch_norm", "batch_norm_backward", "relu", "relu_backward", "softmax_cross_entropy",
)
EXACT = ("max_pool2d", "max_pool1d", "relu", "relu_backward")  # no arithmetic: values and indices must be identical


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


def _draw_pool(rng, nd, kind):
    """A random valid call of fastconv.{kind}_pool{nd}d: (shape, keyword arguments)."""
    forward = getattr(fastconv.reference, f"{kind}_pool{nd}d")
    while True:
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 5))) + tuple(int(v) for v in rng.integers(1, 13, nd))
        kernel = tuple(int(v) for v in rng.integers(1, 5, nd))
        params = dict(kernel_size=kernel, stride=tuple(int(v) for v in rng.integers(1, 4, nd)),
                      padding=tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel),
                      ceil_mode=bool(rng.integers(2)))
        if kind == "max":
            params["dilation"] = tuple(int(v) for v in rng.integers(1, 3, nd))
        else:
            params["count_include_pad"] = bool(rng.integers(2))
            if nd == 2 and rng.integers(2):
                params["divisor_override"] = int(rng.integers(1, 10))
        try:  # the validation knows torch's limits (ceil_mode, max-pooling windows of padding alone)
            forward(np.zeros(shape), **params)
        except ValueError:
            continue
        return shape, params


def _draw_batch_norm(rng):
    """(shape, data_format) of a batch-norm input: 2-, 3- or 4-D, some large enough for the
    compiled kernels' parallel paths, with more than one value per channel."""
    data_format = "NHWC" if rng.random() < 0.5 else "NCHW"
    n, c = int(rng.integers(2, 9)), int(rng.integers(1, 6))
    spatial = tuple(int(v) for v in rng.integers(1, 40, int(rng.integers(0, 3))))
    return ((n,) + spatial + (c,) if data_format == "NHWC" else (n, c) + spatial), data_format


def _layer_calls(name, rng, dtype, data):
    """(args, kwargs) of one random call of a layer function."""
    if name.startswith("batch_norm"):
        shape, data_format = _draw_batch_norm(rng)
        c = shape[-1] if data_format == "NHWC" else shape[1]
        x, weight, bias = 3 * data(shape) + 1, data((c,)), data((c,))
        training = bool(rng.random() < 0.7)
        # Evaluation reads running statistics; training gets none (each of the three calls of
        # a row would update them again; the update is the same Python code on both backends).
        stats = () if training else (data((c,)), 0.5 + np.abs(data((c,))))
        if name == "batch_norm":
            return (x, weight, bias, *stats), dict(training=training, data_format=data_format)
        _, mean, invstd = fastconv.reference.batch_norm(x, weight, bias, *stats, training=training,
                                                        data_format=data_format)
        return (data(shape), x, weight, mean, invstd), dict(training=training, data_format=data_format)
    if name.startswith("relu"):
        shape = tuple(int(v) for v in rng.integers(1, 30, int(rng.integers(1, 5))))
        return ((data(shape),) if name == "relu" else (data(shape), data(shape))), {}
    n, k = int(rng.integers(1, 300)), int(rng.integers(1, 20))
    target = rng.integers(0, k, n) if rng.random() < 0.5 else rng.dirichlet(np.ones(k), n).astype(dtype)
    return (4 * data((n, k)), target), {}


def _calls(name, rng, dtype):
    """(args, kwargs) of one random call of the public function `name`."""
    def data(shape):
        if name.startswith("max_pool"):
            # Small integers make many ties: the tie-breaking rule is checked too.
            return rng.integers(-3, 4, shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    if name in ("batch_norm", "batch_norm_backward", "relu", "relu_backward", "softmax_cross_entropy"):
        return _layer_calls(name, rng, dtype, data)
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
    if name.startswith("adaptive"):
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 5))) + tuple(int(v) for v in rng.integers(1, 13, 2))
        output_size = tuple(int(v) for v in rng.integers(1, 15, 2))
        if name == "adaptive_avg_pool2d":
            return (data(shape),), dict(output_size=output_size)
        return (data(shape[:2] + output_size), shape), {}
    nd = 1 if "1d" in name else 2
    kind = "max" if name.startswith("max") else "avg"
    shape, params = _draw_pool(rng, nd, kind)
    forward = getattr(fastconv.reference, f"{kind}_pool{nd}d")
    x = data(shape)
    if name == f"max_pool{nd}d_backward":
        y, idx = forward(x, **params)
        return (data(y.shape), idx, shape), {}
    if name == f"avg_pool{nd}d_backward":
        return (data(forward(x, **params).shape), shape), params
    return (x,), params


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _error(name, dtype, got, want):
    """Relative error of got vs want (0 means identical); inf on any shape or dtype mismatch."""
    worst = 0.0
    for g, r in zip(_as_tuple(got), _as_tuple(want)):
        g, r = np.asarray(g), np.asarray(r)  # softmax_cross_entropy's loss is a float
        if g.shape != r.shape or g.dtype != r.dtype:
            return np.inf
        if name in EXACT or g.dtype.kind == "i":
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
                        np.asarray(a).tobytes() == np.asarray(b).tobytes()
                        for a, b in zip(_as_tuple(got), _as_tuple(got_many))
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
