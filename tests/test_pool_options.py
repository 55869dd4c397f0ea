"""torch's pooling options, 1-D pooling and adaptive average pooling against PyTorch and the
naive oracle, on every backend.

Covers max_pool2d/max_pool1d with dilation and ceil_mode, avg_pool2d/avg_pool1d with ceil_mode,
count_include_pad and divisor_override, adaptive_avg_pool2d, and their backward passes:
random configurations (hypothesis), an exhaustive sweep of small geometries whose output size
and acceptance must be torch's, hand-computed examples, central differences, empty batches,
non-contiguous inputs, and bitwise equality of the compiled kernels at 1, 2 and 3 threads.
"""

import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import optional_torch
torch = optional_torch()  # torch comparisons skip without torch; the rest runs
F = torch.nn.functional

import fastconv as fc
from fastconv.reference import naive
from conftest import (
    AVAILABLE_BACKENDS,
    pool_axis_out,
    pool_option_configs,
    pool_option_out_shape,
    tolerances,
    window_reads_input,
)

DTYPES = [np.float32, np.float64]
seeds = st.integers(0, 2**32 - 1)
needs_compiled = pytest.mark.skipif("cython" not in AVAILABLE_BACKENDS, reason="compiled backend not built")


def tensor(a, requires_grad=False):
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def grad_or_zeros(t):
    return np.zeros(tuple(t.shape), dtype=t.detach().numpy().dtype) if t.grad is None else t.grad.numpy()


def assert_close(actual, expected, dtype):
    assert actual.dtype == dtype and actual.shape == expected.shape and actual.flags.c_contiguous
    rtol, atol = tolerances(dtype)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def torch_arg(value):
    """A hyper-parameter as torch takes it (fastconv also takes lists; torch wants tuples)."""
    return tuple(value) if isinstance(value, list) else value


def ties_and_specials(shape, dtype, rng, special):
    """Small integers (many ties), optionally with NaN, -inf and +inf."""
    x = rng.integers(0, 3, shape).astype(dtype)
    if special and x.size:
        for value, fraction in ((np.nan, 0.15), (-np.inf, 0.2), (np.inf, 0.05)):
            x[rng.random(shape) < fraction] = value
    return x


FC_MAX = {2: fc.max_pool2d, 1: fc.max_pool1d}
FC_MAX_BACKWARD = {2: fc.max_pool2d_backward, 1: fc.max_pool1d_backward}
FC_AVG = {2: fc.avg_pool2d, 1: fc.avg_pool1d}
FC_AVG_BACKWARD = {2: fc.avg_pool2d_backward, 1: fc.avg_pool1d_backward}
TORCH_MAX = {2: F.max_pool2d, 1: F.max_pool1d}
TORCH_AVG = {2: F.avg_pool2d, 1: F.avg_pool1d}


def max_args(cfg):
    """(kernel_size, stride, padding, dilation, ceil_mode) of a max configuration, as written."""
    return (cfg["kernel_size"], cfg["stride"], cfg["padding"], cfg["dilation"], cfg["ceil_mode"])


def avg_args(cfg):
    """(kernel_size, stride, padding, ceil_mode, count_include_pad[, divisor_override])."""
    args = (cfg["kernel_size"], cfg["stride"], cfg["padding"], cfg["ceil_mode"], cfg["count_include_pad"])
    return args + (cfg["divisor_override"],) if "divisor_override" in cfg else args


# ----------------------------------------------------------------------------------------------
# Against torch on random configurations
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("nd", [1, 2])
@settings(max_examples=40)
@given(data=st.data(), dtype=st.sampled_from(DTYPES), special=st.booleans(), seed=seeds)
def test_max_pool_matches_torch(backend, nd, data, dtype, special, seed):
    cfg = data.draw(pool_option_configs("max", nd=nd))
    rng = np.random.default_rng(seed)
    x = ties_and_specials(cfg["x_shape"], dtype, rng, special)
    y, idx = FC_MAX[nd](x, *max_args(cfg), backend=backend)
    yt, it = TORCH_MAX[nd](tensor(x), *map(torch_arg, max_args(cfg)), return_indices=True)
    assert y.shape == idx.shape == pool_option_out_shape(cfg) == tuple(yt.shape)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, yt.numpy())  # NaN positions too
    np.testing.assert_array_equal(idx, it.numpy())
    if x.shape[0]:
        assert idx.min() >= 0 and idx.max() < np.prod(x.shape[2:])  # positions in the input plane

    x = np.random.default_rng(seed + 1).permutation(x.size).reshape(x.shape).astype(dtype)  # no ties
    xt = tensor(x, True)
    yt = TORCH_MAX[nd](xt, *map(torch_arg, max_args(cfg)))
    dout = rng.standard_normal(yt.shape).astype(dtype)
    yt.backward(tensor(dout))
    _, idx = FC_MAX[nd](x, *max_args(cfg), backend=backend)
    assert_close(FC_MAX_BACKWARD[nd](dout, idx, x.shape, backend=backend), grad_or_zeros(xt), dtype)


@pytest.mark.parametrize("nd", [1, 2])
@settings(max_examples=40)
@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_avg_pool_matches_torch(backend, nd, data, dtype, seed):
    cfg = data.draw(pool_option_configs("avg", nd=nd))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg["x_shape"]).astype(dtype)
    y = FC_AVG[nd](x, *avg_args(cfg), backend=backend)
    xt = tensor(x, True)
    yt = TORCH_AVG[nd](xt, *map(torch_arg, avg_args(cfg)))
    assert y.shape == pool_option_out_shape(cfg)
    assert_close(y, yt.detach().numpy(), dtype)
    dout = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(tensor(dout))
    dx = FC_AVG_BACKWARD[nd](dout, x.shape, *avg_args(cfg), backend=backend)
    assert_close(dx, grad_or_zeros(xt), dtype)


@st.composite
def adaptive_configs(draw):
    """(x_shape, output_size as written): outputs smaller, equal and larger than the input,
    ints, pairs, lists and None entries."""
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    out = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    form = draw(st.sampled_from(["int", "tuple", "list", "none_h", "none_w"]))
    if form == "int":
        return shape, out[0]
    if form == "none_h":
        return shape, (None, out[1])
    if form == "none_w":
        return shape, (out[0], None)
    return shape, out if form == "tuple" else list(out)


@settings(max_examples=40)
@given(cfg=adaptive_configs(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_adaptive_avg_pool2d_matches_torch(backend, cfg, dtype, seed):
    shape, output_size = cfg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y = fc.adaptive_avg_pool2d(x, output_size, backend=backend)
    xt = tensor(x, True)
    yt = F.adaptive_avg_pool2d(xt, torch_arg(output_size))
    assert_close(y, yt.detach().numpy(), dtype)
    dout = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(tensor(dout))
    assert_close(fc.adaptive_avg_pool2d_backward(dout, x.shape, backend=backend), grad_or_zeros(xt), dtype)


# ----------------------------------------------------------------------------------------------
# Every small geometry: output size and acceptance as torch's
# ----------------------------------------------------------------------------------------------

def _small_geometries():
    """(size, kernel, stride, padding, dilation, ceil_mode) along one axis, torch's padding limit
    kept, with whether torch's output-size formula (conftest.pool_axis_out) leaves a window."""
    for size, k, s, d, ceil_mode in itertools.product(range(1, 8), range(1, 5), range(1, 5), range(1, 4),
                                                      (False, True)):
        for p in range(k // 2 + 1):
            yield (size, k, s, p, d, ceil_mode), pool_axis_out(size, k, s, p, d, ceil_mode) >= 1


def test_every_small_max_geometry_as_torch():
    """Along W (H = 1): torch's output size (ceil_mode's dropped last window included) and
    indices, except for a window of padding alone, which torch answers with -inf and an index
    outside the input and fastconv refuses. Geometries without a window: refused."""
    checked = refused_padding_only = 0
    for (size, k, s, p, d, ceil_mode), has_window in _small_geometries():
        x = np.arange(1.0, size + 1)[None, None, None, :]
        args = ((1, k), (1, s), (0, p), (1, d), ceil_mode)
        if not has_window:
            with pytest.raises(ValueError, match="max_pool2d: .*kernel"):
                fc.max_pool2d(x, *args, backend="reference")
            continue
        yt, it = F.max_pool2d(tensor(x), *args, return_indices=True)
        out = yt.shape[-1]
        if not window_reads_input(size, k, s, p, d, out):
            assert float(yt.min()) == -np.inf and int(it.max()) >= size  # torch's garbage
            with pytest.raises(ValueError, match="max_pool2d: the first window along W reads only padding"):
                fc.max_pool2d(x, *args, backend="reference")
            refused_padding_only += 1
            continue
        for backend in AVAILABLE_BACKENDS:
            y, idx = fc.max_pool2d(x, *args, backend=backend)
            np.testing.assert_array_equal(y, yt.numpy())
            np.testing.assert_array_equal(idx, it.numpy())
        checked += 1
    assert checked > 900 and refused_padding_only > 20  # 926 and 22 with torch 2.13


def test_every_small_avg_geometry_as_torch():
    """Along H (W = 1): torch's output size and divisors for every option; geometries without a
    window refused."""
    checked = 0
    for (size, k, s, p, _, ceil_mode), has_window in _small_geometries():
        x = np.arange(1.0, size + 1)[None, None, :, None] ** 2
        for count_include_pad in (True, False):
            args = ((k, 1), (s, 1), (p, 0), ceil_mode, count_include_pad)
            if not pool_axis_out(size, k, s, p, 1, ceil_mode) >= 1:
                with pytest.raises(ValueError, match="avg_pool2d: .*kernel"):
                    fc.avg_pool2d(x, *args, backend="reference")
                continue
            yt = F.avg_pool2d(tensor(x), *args)
            for backend in AVAILABLE_BACKENDS:
                np.testing.assert_allclose(fc.avg_pool2d(x, *args, backend=backend), yt.numpy(), rtol=1e-14)
            checked += 1
    assert checked > 500


@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="a C++ exception thrown by torch aborts under a preloaded AddressSanitizer")
def test_torch_refuses_the_small_geometries_without_a_window():
    """The other half of the sweeps above: what the formula leaves no window for, torch refuses."""
    refused = 0
    for (size, k, s, p, d, ceil_mode), has_window in _small_geometries():
        if has_window:
            continue
        with pytest.raises(RuntimeError, match="Output size is too small"):
            F.max_pool2d(tensor(np.ones((1, 1, 1, size))), (1, k), (1, s), (0, p), (1, d), ceil_mode)
        refused += 1
        if d == 1:
            with pytest.raises(RuntimeError, match="Output size is too small"):
                F.avg_pool2d(tensor(np.ones((1, 1, size, 1))), (k, 1), (s, 1), (p, 0), ceil_mode)
    assert refused > 300


def test_max_pool_refuses_exactly_the_padding_only_windows():
    """The validation's closed-form test of the first window against every window, over
    geometries beyond torch's padding limit too (fastconv's rule must not depend on it)."""
    for size, k, s, d, ceil_mode in itertools.product(range(1, 7), range(1, 6), range(1, 5), range(1, 6),
                                                      (False, True)):
        for p in range(k // 2 + 1):
            x = np.zeros((1, 1, 1, size))
            try:
                y, _ = fc.max_pool2d(x, (1, k), (1, s), (0, p), (1, d), ceil_mode, backend="reference")
            except ValueError as exc:
                if "reads only padding" in str(exc):
                    out = pool_axis_out(size, k, s, p, d, ceil_mode)
                    assert not window_reads_input(size, k, s, p, d, out), (size, k, s, p, d, ceil_mode)
                continue
            assert window_reads_input(size, k, s, p, d, y.shape[-1]), (size, k, s, p, d, ceil_mode)


# ----------------------------------------------------------------------------------------------
# Worked examples (values computed by hand)
# ----------------------------------------------------------------------------------------------

def test_max_pool1d_dilation_by_hand(backend):
    x = np.array([[[0.0, 5.0, 1.0, 7.0, 2.0, 3.0]]])
    y, idx = fc.max_pool1d(x, 2, stride=1, dilation=2, backend=backend)  # taps (i, i + 2)
    np.testing.assert_array_equal(y[0, 0], [1.0, 7.0, 2.0, 7.0])
    np.testing.assert_array_equal(idx[0, 0], [2, 3, 4, 3])
    dx = fc.max_pool1d_backward(np.ones_like(y), idx, x.shape, backend=backend)
    np.testing.assert_array_equal(dx[0, 0], [0.0, 0.0, 1.0, 2.0, 1.0, 0.0])


def test_ceil_mode_by_hand(backend):
    """L = 4, kernel 3, stride 2, padding 1: windows [-1, 1], [1, 3] and, with ceil_mode, [3, 5],
    which reaches past the one padded position."""
    x = np.array([[[0.0, 1.0, 2.0, 3.0]]])
    np.testing.assert_allclose(fc.avg_pool1d(x, 3, 2, 1, backend=backend)[0, 0], [1 / 3, 2.0])
    np.testing.assert_allclose(fc.avg_pool1d(x, 3, 2, 1, ceil_mode=True, backend=backend)[0, 0],
                               [1 / 3, 2.0, 3 / 2])  # the last divisor: 2 (input 3 and padding)
    np.testing.assert_allclose(
        fc.avg_pool1d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False, backend=backend)[0, 0],
        [1 / 2, 2.0, 3.0])
    y, idx = fc.max_pool1d(x, 3, 2, 1, ceil_mode=True, backend=backend)
    np.testing.assert_array_equal(y[0, 0], [1.0, 3.0, 3.0])
    np.testing.assert_array_equal(idx[0, 0], [1, 3, 3])
    # L = 2, kernel 2, stride 3, padding 1: the rounded-up second window would start at 2, in the
    # right padding, so it is dropped (torch's rule).
    y, _ = fc.max_pool1d(np.ones((1, 1, 2)), 2, 3, 1, ceil_mode=True, backend=backend)
    assert y.shape == (1, 1, 1)


def test_divisor_override_and_count_include_pad_by_hand(backend):
    x = np.ones((1, 1, 4, 4))
    np.testing.assert_array_equal(fc.avg_pool2d(x, 2, divisor_override=3, backend=backend), np.full((1, 1, 2, 2), 4 / 3))
    y = fc.avg_pool2d(x, 3, 1, 1, count_include_pad=False, backend=backend)
    np.testing.assert_array_equal(y, np.ones((1, 1, 4, 4)))  # only real elements: the mean is 1
    y = fc.avg_pool2d(x, 3, 1, 1, backend=backend)
    assert y[0, 0, 0, 0] == 4 / 9 and y[0, 0, 0, 1] == 6 / 9 and y[0, 0, 1, 1] == 1.0
    dx = fc.avg_pool2d_backward(np.ones((1, 1, 2, 2)), x.shape, 2, divisor_override=8, backend=backend)
    np.testing.assert_array_equal(dx, np.full(x.shape, 1 / 8))


def test_adaptive_windows_by_hand(backend):
    """H = 5 into 3: rows [0, 2), [1, 4), [3, 5) (overlapping); W = 2 into 4: each column twice."""
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])[None, None, :, None] * np.array([1.0, 10.0])
    y = fc.adaptive_avg_pool2d(x, (3, 4), backend=backend)
    np.testing.assert_allclose(y[0, 0, :, 0], [1.5, 3.0, 4.5])
    np.testing.assert_allclose(y[0, 0], np.array([[1.5, 1.5, 15, 15], [3, 3, 30, 30], [4.5, 4.5, 45, 45]]))
    dx = fc.adaptive_avg_pool2d_backward(np.ones((1, 1, 3, 4)), x.shape, backend=backend)
    # Row 1 is in windows 0 and 1 (sizes 2 and 3 rows, 1 column each), column shares 2 * 1.
    np.testing.assert_allclose(dx[0, 0, :, 0], [1.0, 2 * (1 / 2 + 1 / 3), 2 / 3, 2 * (1 / 3 + 1 / 2), 1.0])
    g = fc.adaptive_avg_pool2d(x, 1, backend=backend)  # global average pooling
    np.testing.assert_allclose(g[0, 0, 0, 0], x.mean())


# ----------------------------------------------------------------------------------------------
# Against the naive oracle (1-D pooling as the oracle's 2-D windows of height 1)
# ----------------------------------------------------------------------------------------------

def as_2d_kernel_args(cfg):
    """A 1-D configuration as the naive oracle's 2-D arguments for a window of height 1."""
    def one(v):
        return v if isinstance(v, int) else v[0]

    kernel = one(cfg["kernel_size"])
    stride = kernel if cfg["stride"] is None else one(cfg["stride"])
    window = ((1, kernel), (1, stride), (0, one(cfg["padding"])))
    if "dilation" in cfg:
        return window + ((1, one(cfg["dilation"])), cfg["ceil_mode"])
    return window + (cfg["ceil_mode"], cfg["count_include_pad"], None)


@settings(max_examples=30)
@given(cfg=pool_option_configs("max", nd=1, max_extra=4), seed=seeds)
def test_max_pool1d_matches_naive(backend, cfg, seed):
    rng = np.random.default_rng(seed)
    n, c, length = cfg["x_shape"]
    x = ties_and_specials((max(n, 1), c, length), np.float64, rng, special=True)
    y, idx = fc.max_pool1d(x, *max_args(cfg), backend=backend)
    y2, idx2 = naive.max_pool2d(x[:, :, None, :], *as_2d_kernel_args(cfg))
    np.testing.assert_array_equal(y, y2[:, :, 0])
    np.testing.assert_array_equal(idx, idx2[:, :, 0])


@settings(max_examples=30)
@given(cfg=pool_option_configs("avg", nd=1, max_extra=4), seed=seeds)
def test_avg_pool1d_matches_naive(backend, cfg, seed):
    rng = np.random.default_rng(seed)
    n, c, length = cfg["x_shape"]
    x = rng.standard_normal((max(n, 1), c, length))
    params = as_2d_kernel_args(cfg)
    y = fc.avg_pool1d(x, *avg_args(cfg), backend=backend)
    np.testing.assert_allclose(y, naive.avg_pool2d(x[:, :, None, :], *params)[:, :, 0], rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(y.shape)
    want = naive.avg_pool2d_backward(dout[:, :, None, :], x.shape[:2] + (1, length), *params)[:, :, 0]
    np.testing.assert_allclose(fc.avg_pool1d_backward(dout, x.shape, *avg_args(cfg), backend=backend), want,
                               rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Central differences (float64)
# ----------------------------------------------------------------------------------------------

H = 1e-6


def numerical_gradient(loss, a):
    grad = np.empty_like(a)
    for k in np.ndindex(a.shape):
        saved = a[k]
        a[k] = saved + H
        plus = loss()
        a[k] = saved - H
        minus = loss()
        a[k] = saved
        grad[k] = (plus - minus) / (2 * H)
    return grad


GRADIENT_CASES = [
    # name, x shape, forward(x, backend), backward(g, x, backend)
    ("max2d-dilated-ceil", (2, 2, 7, 6),
     lambda x, be: fc.max_pool2d(x, 3, 2, 1, 2, True, backend=be),
     lambda g, x, be: fc.max_pool2d_backward(g, fc.max_pool2d(x, 3, 2, 1, 2, True, backend=be)[1], x.shape,
                                             backend=be)),
    ("max1d", (2, 3, 11),
     lambda x, be: fc.max_pool1d(x, 3, 2, 1, 2, True, backend=be),
     lambda g, x, be: fc.max_pool1d_backward(g, fc.max_pool1d(x, 3, 2, 1, 2, True, backend=be)[1], x.shape,
                                             backend=be)),
    ("avg2d-ceil-exclude-pad", (2, 2, 6, 7),
     lambda x, be: fc.avg_pool2d(x, (3, 2), (2, 3), (1, 1), True, False, backend=be),
     lambda g, x, be: fc.avg_pool2d_backward(g, x.shape, (3, 2), (2, 3), (1, 1), True, False, backend=be)),
    ("avg2d-divisor", (1, 2, 5, 5),
     lambda x, be: fc.avg_pool2d(x, 2, 1, 1, True, True, 3, backend=be),
     lambda g, x, be: fc.avg_pool2d_backward(g, x.shape, 2, 1, 1, True, True, 3, backend=be)),
    ("avg1d", (2, 2, 9),
     lambda x, be: fc.avg_pool1d(x, 4, 3, 2, True, False, backend=be),
     lambda g, x, be: fc.avg_pool1d_backward(g, x.shape, 4, 3, 2, True, False, backend=be)),
    ("adaptive", (2, 2, 7, 5),
     lambda x, be: fc.adaptive_avg_pool2d(x, (3, 4), backend=be),
     lambda g, x, be: fc.adaptive_avg_pool2d_backward(g, x.shape, backend=be)),
]


@pytest.mark.parametrize("name, shape, forward, backward", GRADIENT_CASES, ids=[c[0] for c in GRADIENT_CASES])
def test_gradients_match_central_differences(backend, name, shape, forward, backward):
    rng = np.random.default_rng(0)
    # Well-separated values: no perturbation of size H changes a max-pooling argmax.
    x = rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01

    def output(array):
        result = forward(array, backend)
        return result[0] if isinstance(result, tuple) else result

    g = rng.standard_normal(output(x).shape)
    analytic = backward(g, x, backend)
    numeric = numerical_gradient(lambda: float(np.sum(g * output(x))), x)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# One forward + backward of every new function, for the tests below
# ----------------------------------------------------------------------------------------------

def forward_backward(name, x, params, dout_seed=99):
    """(forward outputs..., dx) of the public function `name` and its backward on x, with the
    keyword hyper-parameters `params` (and backend=) and a random upstream gradient."""
    forward, backward = getattr(fc, name), getattr(fc, name + "_backward")
    result = forward(x, **params)
    outputs = result if isinstance(result, tuple) else (result,)
    dout = np.random.default_rng(dout_seed).standard_normal(outputs[0].shape).astype(outputs[0].dtype)
    window = {k: v for k, v in params.items() if k != "backend"}
    if name.startswith("max"):
        dx = backward(dout, outputs[1], x.shape, backend=params["backend"])
    elif name.startswith("adaptive"):
        dx = backward(dout, x.shape, backend=params["backend"])
    else:
        dx = backward(dout, x.shape, **window, backend=params["backend"])
    return outputs + (dx,)


OPTION_CALLS = [
    ("max_pool2d", (2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    ("max_pool1d", (2, 3, 9), dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    ("avg_pool2d", (2, 3, 7, 6), dict(kernel_size=(3, 2), stride=2, padding=1, ceil_mode=True,
                                      count_include_pad=False, divisor_override=None)),
    ("avg_pool2d", (2, 3, 7, 6), dict(kernel_size=2, stride=1, padding=1, divisor_override=5)),
    ("avg_pool1d", (2, 3, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("adaptive_avg_pool2d", (2, 3, 7, 6), dict(output_size=(4, 2))),
    ("adaptive_avg_pool2d", (2, 3, 7, 6), dict(output_size=(None, 9))),
]
OPTION_IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(OPTION_CALLS)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, shape, params", OPTION_CALLS, ids=OPTION_IDS)
def test_empty_batch(backend, name, shape, params, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    full = forward_backward(name, x, dict(params, backend=backend))
    empty = forward_backward(name, x[:0], dict(params, backend=backend))
    for got, want in zip(empty, full):
        assert got.shape == (0,) + want.shape[1:] and got.dtype == want.dtype and got.flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, shape, params", OPTION_CALLS, ids=OPTION_IDS)
def test_non_contiguous_input_gives_the_contiguous_result(backend, name, shape, params, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    want = forward_backward(name, x, dict(params, backend=backend))
    strided = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
    strided[..., ::2] = x
    readonly = x.copy()
    readonly.flags.writeable = False
    for other in (np.asfortranarray(x), np.ascontiguousarray(x[..., ::-1])[..., ::-1], strided[..., ::2],
                  readonly, x.astype(x.dtype.newbyteorder())):
        before = other.copy()
        got = forward_backward(name, other, dict(params, backend=backend))
        for g, w in zip(got, want):
            assert g.flags.c_contiguous and g.dtype == w.dtype and g.tobytes() == w.tobytes()
        assert np.array_equal(other, before)  # inputs are never modified


def test_one_d_pooling_accepts_one_sequences_and_integer_input(backend):
    x = np.arange(24).reshape(2, 3, 4)  # int64: computed in float64
    y, idx = fc.max_pool1d(x, [2], stride=(2,), padding=np.int64(1), dilation=[1], backend=backend)
    np.testing.assert_array_equal(y, fc.max_pool1d(x.astype(np.float64), 2, 2, 1, backend=backend)[0])
    assert y.dtype == np.float64 and idx.dtype == np.int64
    a = fc.avg_pool1d(x.astype(np.float32), (3,), None, [1], backend=backend)
    assert a.dtype == np.float32 and a.shape == (2, 3, 2)  # (4 + 2*1 - 3) // 3 + 1


# ----------------------------------------------------------------------------------------------
# Compiled kernels: bitwise identical at 1, 2 and 3 threads, and equal to the reference
# ----------------------------------------------------------------------------------------------

# Above the kernels' serial threshold (2**15 input elements) so that several threads really run;
# odd sizes; cases with fewer planes than threads; global average pooling over many planes.
THREAD_CASES = [
    ("max_pool2d", (2, 8, 45, 47), dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    ("max_pool2d", (1, 2, 181, 173), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(3, 1),
                                          ceil_mode=True)),
    ("max_pool1d", (4, 16, 1001), dict(kernel_size=4, stride=3, padding=2, dilation=2, ceil_mode=True)),
    ("avg_pool2d", (3, 7, 41, 39), dict(kernel_size=(3, 4), stride=(2, 3), padding=(1, 2), ceil_mode=True,
                                        count_include_pad=False)),
    ("avg_pool2d", (3, 7, 41, 39), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=7)),
    ("avg_pool1d", (8, 8, 999), dict(kernel_size=5, stride=2, padding=2, ceil_mode=True, count_include_pad=False)),
    ("adaptive_avg_pool2d", (2, 16, 37, 41), dict(output_size=(5, 7))),
    ("adaptive_avg_pool2d", (64, 32, 8, 8), dict(output_size=1)),
    ("adaptive_avg_pool2d", (1, 2, 181, 173), dict(output_size=(13, 11))),
    ("adaptive_avg_pool2d", (4, 9, 30, 33), dict(output_size=(45, 61))),
]


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, shape, params", THREAD_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(THREAD_CASES)])
def test_bitwise_identical_for_1_2_3_threads(name, shape, params, dtype):
    rng = np.random.default_rng(len(name) + shape[-1])
    x = (ties_and_specials(shape, dtype, rng, special=True) if name.startswith("max")
         else rng.standard_normal(shape).astype(dtype))
    runs = []
    for threads in (1, 2, 3):
        fc.set_num_threads(threads)
        runs.append(forward_backward(name, x, dict(params, backend="cython")))
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            assert a.tobytes() == b.tobytes()
    # Agreeing threads must not all be wrong: the reference on the same arguments.
    want = forward_backward(name, x, dict(params, backend="reference"))
    for got, expected in zip(runs[0], want):
        if name.startswith("max"):
            np.testing.assert_array_equal(got, expected)
        else:
            rtol = 2e-6 if dtype == np.float32 else 1e-13
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)
