"""Grouped, depthwise and transposed convolution, and padding="same"/"valid" (API.md).

* conv2d/conv1d with groups (grouped, depthwise, depthwise with a channel multiplier) and
  string paddings, and conv_transpose2d/conv_transpose1d, forward and backward, against
  PyTorch autograd in float64 on hypothesis-drawn configurations, both dtypes, both backends,
  empty batches included;
* every backend's kernels against the loop oracle of fastconv.reference.naive on tiny shapes,
  and the oracle itself against torch;
* gradients by central differences;
* compiled results bitwise identical at 1, 2 and 3 threads, on shapes that reach every way the
  kernels split their work (grouped GEMMs in batch and small-batch mode, the pointwise
  shortcut, the direct depthwise kernels with and without their padded window, transposed
  convolutions and their depthwise case);
* non-contiguous inputs, and infinities/NaN at padded borders as the reference has them.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from fastconv import reference
from fastconv.reference import naive
from conftest import AVAILABLE_BACKENDS, as_spelling

torch = pytest.importorskip("torch")
TF = torch.nn.functional

DTYPES = (np.float32, np.float64)
# Relative to the largest magnitude of the expected array.
TOL = {np.float32: 1e-4, np.float64: 1e-10}
seeds = st.integers(0, 2**32 - 1)
needs_compiled = pytest.mark.skipif("cython" not in AVAILABLE_BACKENDS, reason="compiled backend not built")


def _depthwise_isas():
    """The instruction sets of the direct depthwise kernels this machine runs."""
    try:
        from fastconv._ext import _depthwise
    except ImportError:
        return []
    available = []
    for isa in ("generic", "avx2"):
        try:
            _depthwise._use_kernels(isa)
            available.append(isa)
        except ValueError:
            pass
    _depthwise._use_kernels("best")
    return available


@pytest.fixture(params=_depthwise_isas() or [None])
def depthwise_isa(request):
    """Each instruction set of the direct depthwise kernels in turn (the best one afterwards)."""
    if request.param is None:
        yield None
        return
    from fastconv._ext import _depthwise
    _depthwise._use_kernels(request.param)
    try:
        yield request.param
    finally:
        _depthwise._use_kernels("best")


def assert_close(actual, expected, dtype, what):
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}"
    assert actual.flags.c_contiguous, what
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    assert err <= TOL[dtype] * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


def t64(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def grad_of(tensor):
    return np.zeros(tuple(tensor.shape)) if tensor.grad is None else tensor.grad.numpy()


def torch_conv(nd, x, w, b, dout, stride, padding, dilation, groups):
    """y, dx, dw, db of torch's conv{nd}d in float64 (autograd)."""
    tx, tw, tb = t64(x, True), t64(w, True), t64(b, True)
    function = TF.conv1d if nd == 1 else TF.conv2d
    ty = function(tx, tw, tb, stride, padding, dilation, groups)
    if dout is not None and ty.numel():
        ty.backward(t64(dout))
    return ty.detach().numpy(), grad_of(tx), grad_of(tw), grad_of(tb)


def torch_conv_transpose(nd, x, w, b, dout, stride, padding, output_padding, groups, dilation):
    """y, dx, dw, db of torch's conv_transpose{nd}d in float64 (autograd)."""
    tx, tw, tb = t64(x, True), t64(w, True), t64(b, True)
    function = TF.conv_transpose1d if nd == 1 else TF.conv_transpose2d
    ty = function(tx, tw, tb, stride, padding, output_padding, groups, dilation)
    if dout is not None and ty.numel():
        ty.backward(t64(dout))
    return ty.detach().numpy(), grad_of(tx), grad_of(tw), grad_of(tb)


# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------

def spell(draw, values, nd):
    """An nd-tuple of hyper-parameters as a user might write it."""
    if nd == 1:
        return values[0] if draw(st.booleans()) else tuple(values)
    return as_spelling(draw, values)


@st.composite
def grouped_configs(draw, nd=2, max_batch=3, max_extra=6):
    """A valid grouped conv{nd}d: depthwise (one channel per group, with a multiplier) about
    half of the time; padding an int/tuple, "valid" or "same" (stride 1, even and odd
    kernels and dilations). Keys: x_shape, w_shape, stride, padding, dilation, groups."""
    groups = draw(st.integers(1, 4))
    per_group = 1 if draw(st.booleans()) else draw(st.integers(1, 3))
    filters_per_group = draw(st.integers(1, 3))
    n = draw(st.sampled_from([0, 1, 2, max_batch]))
    kernel = [draw(st.integers(1, 4)) for _ in range(nd)]
    dilation = [draw(st.integers(1, 3)) for _ in range(nd)]
    kind = draw(st.sampled_from(["ints", "ints", "same", "valid"]))
    if kind == "same":
        stride = [1] * nd
        pads = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation)]
        padding = "same"
    else:
        stride = [draw(st.integers(1, 3)) for _ in range(nd)]
        values = [0] * nd if kind == "valid" else [draw(st.integers(0, 3)) for _ in range(nd)]
        pads = [(p, p) for p in values]
        padding = "valid" if kind == "valid" else spell(draw, values, nd)
    sizes = []
    for k, d, (before, after) in zip(kernel, dilation, pads):
        smallest = max(1, d * (k - 1) + 1 - before - after)
        sizes.append(draw(st.integers(smallest, smallest + max_extra)))
    return {
        "x_shape": (n, groups * per_group, *sizes),
        "w_shape": (groups * filters_per_group, per_group, *kernel),
        "stride": spell(draw, stride, nd),
        "padding": padding,
        "dilation": spell(draw, dilation, nd),
        "groups": groups,
    }


@st.composite
def transposed_configs(draw, nd=2, max_batch=3, max_extra=5):
    """A valid conv_transpose{nd}d: output_padding below the stride or the dilation, padding
    small enough for a non-empty output. Keys: x_shape, w_shape, stride, padding,
    output_padding, groups, dilation."""
    groups = draw(st.integers(1, 3))
    per_group = draw(st.integers(1, 3))            # input channels per group
    filters_per_group = 1 if draw(st.booleans()) else draw(st.integers(1, 3))
    n = draw(st.sampled_from([0, 1, 2, max_batch]))
    kernel = [draw(st.integers(1, 4)) for _ in range(nd)]
    stride = [draw(st.integers(1, 3)) for _ in range(nd)]
    dilation = [draw(st.integers(1, 3)) for _ in range(nd)]
    output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    sizes = [draw(st.integers(1, 1 + max_extra)) for _ in range(nd)]
    padding = []
    for size, k, s, d, op in zip(sizes, kernel, stride, dilation, output_padding):
        full = (size - 1) * s + d * (k - 1) + op   # OH - 1 without padding
        padding.append(draw(st.integers(0, min(3, full // 2))))
    return {
        "x_shape": (n, groups * per_group, *sizes),
        "w_shape": (groups * per_group, filters_per_group, *kernel),
        "stride": spell(draw, stride, nd),
        "padding": spell(draw, padding, nd),
        "output_padding": spell(draw, output_padding, nd),
        "groups": groups,
        "dilation": spell(draw, dilation, nd),
    }


def conv_hyper(cfg):
    return cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"]


def transposed_hyper(cfg):
    return cfg["stride"], cfg["padding"], cfg["output_padding"], cfg["groups"], cfg["dilation"]


def data(rng, cfg, dtype, filters):
    x = rng.standard_normal(cfg["x_shape"]).astype(dtype)
    w = rng.standard_normal(cfg["w_shape"]).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype)
    return x, w, b

# torch warns that an even total "same" padding needs a padded copy of its input.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


# ----------------------------------------------------------------------------------------------
# Against PyTorch
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("nd", [2, 1])
@given(data_=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_grouped_conv_matches_torch(backend, depthwise_isa, nd, data_, dtype, seed):
    cfg = data_.draw(grouped_configs(nd=nd))
    rng = np.random.default_rng(seed)
    x, w, b = data(rng, cfg, dtype, cfg["w_shape"][0])
    forward, backward = (fc.conv1d, fc.conv1d_backward) if nd == 1 else (fc.conv2d, fc.conv2d_backward)
    y = forward(x, w, b, *conv_hyper(cfg), backend=backend)
    dout = rng.standard_normal(y.shape).astype(dtype)
    grads = backward(dout, x, w, *conv_hyper(cfg), backend=backend)
    want = torch_conv(nd, x, w, b, dout, *conv_hyper(cfg))
    for name, got, expected in zip(("y", "dx", "dw", "db"), (y,) + grads, want):
        assert_close(got, expected, dtype, f"{name} vs torch")
    if cfg["padding"] == "same":
        assert y.shape[2:] == x.shape[2:]
    # Without a bias the output is the biased one minus b.
    y0 = forward(x, w, None, *conv_hyper(cfg), backend=backend)
    assert_close(y0, want[0] - b.astype(np.float64).reshape((1, -1) + (1,) * nd), dtype, "y without bias")


@pytest.mark.parametrize("nd", [2, 1])
@given(data_=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_conv_transpose_matches_torch(backend, nd, data_, dtype, seed):
    cfg = data_.draw(transposed_configs(nd=nd))
    rng = np.random.default_rng(seed)
    x, w, b = data(rng, cfg, dtype, cfg["w_shape"][1] * cfg["groups"])
    if nd == 1:
        forward, backward = fc.conv_transpose1d, fc.conv_transpose1d_backward
    else:
        forward, backward = fc.conv_transpose2d, fc.conv_transpose2d_backward
    y = forward(x, w, b, *transposed_hyper(cfg), backend=backend)
    dout = rng.standard_normal(y.shape).astype(dtype)
    grads = backward(dout, x, w, *transposed_hyper(cfg), backend=backend)
    want = torch_conv_transpose(nd, x, w, b, dout, *transposed_hyper(cfg))
    for name, got, expected in zip(("y", "dx", "dw", "db"), (y,) + grads, want):
        assert_close(got, expected, dtype, f"{name} vs torch")
    y0 = forward(x, w, None, *transposed_hyper(cfg), backend=backend)
    assert_close(y0, want[0] - b.astype(np.float64).reshape((1, -1) + (1,) * nd), dtype, "y without bias")


@pytest.mark.parametrize("kernel, dilation", [(1, 1), (2, 1), (3, 1), (4, 1), (2, 2), (3, 2), (4, 3), (5, 2)])
def test_same_padding_puts_the_odd_row_at_the_bottom_right(backend, kernel, dilation):
    """"same" keeps the size; an odd total dilation*(K-1) pads one more at the bottom/right,
    which only an asymmetric window shows: compare with explicit padding of the input."""
    rng = np.random.default_rng(kernel * 10 + dilation)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, kernel, kernel))
    y = fc.conv2d(x, w, None, 1, "same", dilation, backend=backend)
    total = dilation * (kernel - 1)
    padded = np.pad(x, ((0, 0), (0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2)))
    np.testing.assert_allclose(y, fc.conv2d(padded, w, None, 1, 0, dilation, backend=backend), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, TF.conv2d(t64(x), t64(w), None, 1, "same", dilation).numpy(), rtol=1e-10, atol=1e-10)
    assert y.shape == (2, 4, 7, 6)
    if total < 6:  # the kernel fits unpadded: "valid" is padding 0
        np.testing.assert_array_equal(fc.conv2d(x, w, None, 2, "valid", dilation, backend=backend),
                                      fc.conv2d(x, w, None, 2, 0, dilation, backend=backend))


def test_output_padding_adds_rows_at_the_bottom_right(backend):
    """With output_padding, the extra rows/columns hold only what reaches them (here
    nothing but the bias, with stride 3 and a 1x1 kernel)."""
    x, w, b = np.ones((1, 2, 3, 3)), np.ones((2, 1, 1, 1)), np.array([5.0])
    y = fc.conv_transpose2d(x, w, b, 3, 0, (2, 1), backend=backend)
    assert y.shape == (1, 1, 9, 8)
    expected = np.full((9, 8), 5.0)
    expected[::3, ::3] = 7.0
    np.testing.assert_array_equal(y[0, 0], expected)


# ----------------------------------------------------------------------------------------------
# Every backend's kernels against the loop oracle (tiny shapes), and the oracle against torch
# ----------------------------------------------------------------------------------------------

def pairs(value, nd=2):
    """An int/tuple/list hyper-parameter as an nd-tuple."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd


def kernel_conv_params(cfg):
    """The checked arguments the kernels get for a 2-D grouped_configs() configuration:
    (stride, padding as (before, after) pairs, dilation, groups), worked out from API.md."""
    stride, dilation = pairs(cfg["stride"]), pairs(cfg["dilation"])
    if cfg["padding"] == "same":
        totals = [d * (k - 1) for k, d in zip(cfg["w_shape"][2:], dilation)]
        padding = tuple((t // 2, t - t // 2) for t in totals)
    elif cfg["padding"] == "valid":
        padding = ((0, 0), (0, 0))
    else:
        padding = tuple((p, p) for p in pairs(cfg["padding"]))
    return stride, padding, dilation, cfg["groups"]


def kernel_transposed_params(cfg):
    return (pairs(cfg["stride"]), pairs(cfg["padding"]), pairs(cfg["output_padding"]), cfg["groups"],
            pairs(cfg["dilation"]))


def batch_of_one_or_more(cfg):
    """The kernels never see an empty batch (the public functions answer it themselves)."""
    n, *rest = cfg["x_shape"]
    return dict(cfg, x_shape=(max(n, 1), *rest))


def close(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.flags.c_contiguous
    rtol = 1e-5 if expected.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol)


tiny_grouped = grouped_configs(max_batch=2, max_extra=3)
tiny_transposed = transposed_configs(max_batch=2, max_extra=3)


@given(cfg=tiny_grouped, dtype=st.sampled_from(DTYPES), use_bias=st.booleans(), seed=seeds)
def test_grouped_kernels_match_naive(kernel_module, cfg, dtype, use_bias, seed):
    cfg = batch_of_one_or_more(cfg)
    rng = np.random.default_rng(seed)
    x, w, b = data(rng, cfg, dtype, cfg["w_shape"][0])
    b = b if use_bias else None
    params = kernel_conv_params(cfg)
    y = naive.conv2d(x, w, b, *params)
    close(kernel_module.conv2d(x, w, b, *params), y)
    dout = rng.standard_normal(y.shape).astype(dtype)
    for got, want in zip(kernel_module.conv2d_backward(dout, x, w, *params),
                         naive.conv2d_backward(dout, x, w, *params)):
        close(got, want)


@given(cfg=tiny_transposed, dtype=st.sampled_from(DTYPES), use_bias=st.booleans(), seed=seeds)
def test_transposed_kernels_match_naive(kernel_module, cfg, dtype, use_bias, seed):
    cfg = batch_of_one_or_more(cfg)
    rng = np.random.default_rng(seed)
    x, w, b = data(rng, cfg, dtype, cfg["w_shape"][1] * cfg["groups"])
    b = b if use_bias else None
    params = kernel_transposed_params(cfg)
    y = naive.conv_transpose2d(x, w, b, *params)
    close(kernel_module.conv_transpose2d(x, w, b, *params), y)
    dout = rng.standard_normal(y.shape).astype(dtype)
    for got, want in zip(kernel_module.conv_transpose2d_backward(dout, x, w, *params),
                         naive.conv_transpose2d_backward(dout, x, w, *params)):
        close(got, want)


@given(cfg=tiny_grouped, seed=seeds)
def test_naive_grouped_conv_against_torch(cfg, seed):
    cfg = batch_of_one_or_more(cfg)
    rng = np.random.default_rng(seed)
    x, w, b = data(rng, cfg, np.float64, cfg["w_shape"][0])
    params = kernel_conv_params(cfg)
    y = naive.conv2d(x, w, b, *params)
    dout = rng.standard_normal(y.shape)
    want = torch_conv(2, x, w, b, dout, *conv_hyper(cfg))
    for got, expected in zip((y,) + naive.conv2d_backward(dout, x, w, *params), want):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@given(cfg=tiny_transposed, seed=seeds)
def test_naive_conv_transpose_against_torch(cfg, seed):
    cfg = batch_of_one_or_more(cfg)
    rng = np.random.default_rng(seed)
    x, w, b = data(rng, cfg, np.float64, cfg["w_shape"][1] * cfg["groups"])
    params = kernel_transposed_params(cfg)
    y = naive.conv_transpose2d(x, w, b, *params)
    dout = rng.standard_normal(y.shape)
    want = torch_conv_transpose(2, x, w, b, dout, *transposed_hyper(cfg))
    for got, expected in zip((y,) + naive.conv_transpose2d_backward(dout, x, w, *params), want):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Gradients by central differences (float64)
# ----------------------------------------------------------------------------------------------

H = 1e-6


def numerical_gradient(loss, a):
    """Central differences of loss() with respect to every entry of a (perturbed in place)."""
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
    # function name, x shape, w shape, hyper-parameters (after b)
    ("conv2d", (2, 4, 5, 4), (6, 2, 3, 2), dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)),
    ("conv2d", (2, 3, 5, 5), (6, 1, 2, 3), dict(padding="same", dilation=(3, 1), groups=3)),  # depthwise x2
    ("conv2d", (1, 2, 6, 5), (2, 1, 3, 3), dict(stride=2, padding=2, dilation=2, groups=2)),  # depthwise, strided
    ("conv1d", (2, 4, 9), (4, 2, 4), dict(padding="same", groups=2)),
    ("conv_transpose2d", (2, 4, 3, 4), (4, 3, 3, 2), dict(stride=2, padding=1, output_padding=1, groups=2,
                                                          dilation=(1, 2))),
    ("conv_transpose2d", (1, 3, 4, 3), (3, 1, 3, 3), dict(stride=1, padding=1, groups=3)),  # depthwise
    ("conv_transpose1d", (2, 2, 5), (2, 3, 3), dict(stride=3, padding=2, output_padding=1, dilation=2)),
]


@pytest.mark.parametrize("name, x_shape, w_shape, hyper", GRADIENT_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(GRADIENT_CASES)])
def test_gradients_match_central_differences(backend, name, x_shape, w_shape, hyper):
    rng = np.random.default_rng(0)
    forward, backward = getattr(fc, name), getattr(fc, name + "_backward")
    filters = w_shape[1] * hyper.get("groups", 1) if "transpose" in name else w_shape[0]
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(filters)
    g = rng.standard_normal(forward(x, w, b, **hyper, backend=backend).shape)

    def loss():
        return float(np.sum(g * forward(x, w, b, **hyper, backend=backend)))

    dx, dw, db = backward(g, x, w, **hyper, backend=backend)
    for analytic, wrt in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(analytic, numerical_gradient(loss, wrt), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Compiled results: bitwise identical for any thread count, on every way the work is split
# ----------------------------------------------------------------------------------------------

# (function, x shape, w shape, hyper-parameters): all large enough to run in parallel.
SPLIT_CASES = [
    pytest.param("conv2d", (9, 8, 14, 14), (6, 4, 3, 3), dict(padding=1, groups=2), id="grouped-batch-chunks"),
    pytest.param("conv2d", (1, 6, 40, 40), (6, 2, 3, 3), dict(padding="same", groups=3), id="grouped-N1-column-blocks"),
    pytest.param("conv2d", (3, 12, 24, 24), (6, 4, 3, 3), dict(stride=2, groups=3), id="grouped-N3-channel-blocks"),
    pytest.param("conv2d", (2, 16, 30, 30), (8, 4, 1, 1), dict(groups=4), id="grouped-pointwise"),
    pytest.param("conv2d", (10, 6, 20, 20), (12, 1, 3, 3), dict(padding=1, groups=6), id="depthwise-x2-window"),
    pytest.param("conv2d", (1, 3, 128, 128), (3, 1, 5, 5), dict(stride=2, padding=2, dilation=2, groups=3),
                 id="depthwise-strided-N1"),
    pytest.param("conv2d", (3, 4, 6, 6), (4, 1, 3, 3), dict(padding=70, groups=4), id="depthwise-no-window"),
    pytest.param("conv2d", (12, 2, 30, 31), (2, 1, 4, 3), dict(padding="same", groups=2), id="depthwise-C2-chunks"),
    pytest.param("conv1d", (8, 4, 300), (6, 2, 4), dict(padding="same", groups=2), id="conv1d-grouped-same"),
    pytest.param("conv_transpose2d", (9, 8, 14, 14), (8, 4, 2, 2), dict(stride=2), id="transposed-batch"),
    pytest.param("conv_transpose2d", (2, 6, 20, 20), (6, 2, 3, 3),
                 dict(stride=2, padding=1, output_padding=1, groups=2), id="transposed-small-batch-grouped"),
    pytest.param("conv_transpose2d", (4, 8, 32, 32), (8, 1, 3, 3), dict(padding=1, groups=8),
                 id="transposed-depthwise"),
    pytest.param("conv_transpose1d", (8, 4, 200), (4, 3, 5), dict(stride=3, padding=2, output_padding=2, dilation=2),
                 id="transposed-1d"),
]


def run_all(name, x, w, b, dout, hyper):
    y = getattr(fc, name)(x, w, b, **hyper, backend="cython")
    return (y,) + tuple(getattr(fc, name + "_backward")(dout, x, w, **hyper, backend="cython"))


def split_case_data(name, x_shape, w_shape, hyper, dtype, seed=7):
    rng = np.random.default_rng(seed)
    filters = w_shape[1] * hyper.get("groups", 1) if "transpose" in name else w_shape[0]
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, (filters,)))
    y = getattr(reference, name)(x, w, b, **hyper)
    return x, w, b, rng.standard_normal(y.shape).astype(dtype), y


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, x_shape, w_shape, hyper", SPLIT_CASES)
def test_bitwise_identical_for_any_thread_count(depthwise_isa, name, x_shape, w_shape, hyper, dtype):
    x, w, b, dout, y = split_case_data(name, x_shape, w_shape, hyper, dtype)
    results = {}
    for threads in (1, 2, 3):
        fc.set_num_threads(threads)
        results[threads] = run_all(name, x, w, b, dout, hyper)
    for threads in (2, 3):
        for what, a, r in zip(("y", "dx", "dw", "db"), results[1], results[threads]):
            assert np.array_equal(a, r), f"{what} differs between 1 and {threads} threads"
    # And they are right, not merely reproducible.
    expected = (y,) + tuple(getattr(reference, name + "_backward")(dout, x, w, **hyper))
    for what, a, e in zip(("y", "dx", "dw", "db"), results[1], expected):
        assert_close(a, e, dtype, what)


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
def test_workspace_reuse_does_not_leak_between_calls(dtype):
    """NaN-filled calls leave the cached workspaces (im2col buffers, depthwise windows,
    partial sums) full of NaN; later calls of every split must not see any of it."""
    big = dict(padding=3, groups=6)
    x, w = np.full((9, 6, 30, 30), np.nan, dtype), np.full((6, 1, 7, 7), np.nan, dtype)
    for threads in (1, 2):
        fc.set_num_threads(threads)
        y = fc.conv2d(x, w, None, **big, backend="cython")
        fc.conv2d_backward(y, x, w, **big, backend="cython")
        fc.conv_transpose2d_backward(np.full((9, 6, 36, 36), np.nan, dtype), x, w, padding=0, groups=6,
                                     backend="cython")
        for param in SPLIT_CASES:
            name, x_shape, w_shape, hyper = param.values
            cx, cw, cb, dout, want = split_case_data(name, x_shape, w_shape, hyper, dtype, seed=3)
            got = run_all(name, cx, cw, cb, dout, hyper)
            expected = (want,) + tuple(getattr(reference, name + "_backward")(dout, cx, cw, **hyper))
            for what, a, e in zip(("y", "dx", "dw", "db"), got, expected):
                assert np.isfinite(a).all(), f"{param.id} {what}: NaN leaked from an earlier call"
                assert_close(a, e, dtype, f"{param.id} {what}")


@needs_compiled
@pytest.mark.parametrize("value", ["generic", ""])
def test_fastconv_isa_selects_the_depthwise_kernels(value):
    """FASTCONV_ISA=generic (the convolution engine's variable) forces the portable kernels,
    otherwise the best this CPU runs are used; show_config() names them."""
    expected = "generic" if value else _depthwise_isas()[-1]
    code = "import fastconv; print(fastconv.show_config()['depthwise_kernels'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, FASTCONV_ISA=value))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == expected, done.stdout


# ----------------------------------------------------------------------------------------------
# Layouts, empty batches, infinities
# ----------------------------------------------------------------------------------------------

def odd_layouts(a):
    """The same values as a in other memory layouts: Fortran order, strided, reversed, read-only."""
    strided = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    strided[..., ::2] = a
    reversed_ = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    readonly = a.copy()
    readonly.flags.writeable = False
    return [np.asfortranarray(a), strided[..., ::2], reversed_, readonly]


@pytest.mark.parametrize("name, x_shape, w_shape, hyper", [
    ("conv2d", (2, 4, 7, 6), (6, 2, 3, 2), dict(padding="same", groups=2)),
    ("conv2d", (2, 3, 7, 6), (6, 1, 3, 3), dict(stride=2, padding=1, groups=3)),
    ("conv1d", (2, 4, 9), (2, 2, 3), dict(padding="valid", groups=2)),
    ("conv_transpose2d", (2, 4, 5, 4), (4, 1, 3, 3), dict(stride=2, output_padding=1, groups=2)),
    ("conv_transpose1d", (2, 2, 6), (2, 3, 2), dict(stride=2)),
], ids=["grouped-same", "depthwise", "conv1d-valid", "transposed", "transposed-1d"])
def test_any_memory_layout_gives_the_contiguous_result(backend, name, x_shape, w_shape, hyper):
    rng = np.random.default_rng(1)
    filters = w_shape[1] * hyper.get("groups", 1) if "transpose" in name else w_shape[0]
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(filters)
    forward, backward = getattr(fc, name), getattr(fc, name + "_backward")
    y = forward(x, w, b, **hyper, backend=backend)
    dout = rng.standard_normal(y.shape)
    grads = backward(dout, x, w, **hyper, backend=backend)
    for ox, ow, od in zip(odd_layouts(x), odd_layouts(w), odd_layouts(dout)):
        np.testing.assert_array_equal(forward(ox, ow, b, **hyper, backend=backend), y)
        for got, want in zip(backward(od, ox, ow, **hyper, backend=backend), grads):
            np.testing.assert_array_equal(got, want)
            assert got.flags.c_contiguous and got.flags.writeable


@pytest.mark.parametrize("name, x_shape, w_shape, hyper, out_shape", [
    ("conv2d", (0, 4, 7, 6), (6, 2, 3, 2), dict(padding="same", groups=2), (0, 6, 7, 6)),
    ("conv1d", (0, 3, 9), (6, 1, 3), dict(stride=2, groups=3), (0, 6, 4)),
    ("conv_transpose2d", (0, 4, 5, 4), (4, 3, 3, 3), dict(stride=2, output_padding=1, groups=2), (0, 6, 12, 10)),
    ("conv_transpose1d", (0, 2, 6), (2, 3, 2), dict(stride=2), (0, 3, 12)),
])
def test_empty_batch(backend, name, x_shape, w_shape, hyper, out_shape):
    x, w = np.zeros(x_shape, np.float32), np.ones(w_shape, np.float32)
    y = getattr(fc, name)(x, w, None, **hyper, backend=backend)
    assert y.shape == out_shape and y.dtype == np.float32
    dx, dw, db = getattr(fc, name + "_backward")(y, x, w, **hyper, backend=backend)
    assert dx.shape == x_shape and dw.shape == w_shape and db.shape == (out_shape[1],)
    assert not dw.any() and not db.any()


def assert_same_ieee(got, want, what):
    """NaN where want has NaN, the same infinities, finite values close."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN pattern")
    inf = np.isinf(want)
    np.testing.assert_array_equal(np.isinf(got), inf, err_msg=f"{what}: infinities")
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"{what}: signs of infinities")
    np.testing.assert_allclose(got[~inf & ~np.isnan(want)], want[~inf & ~np.isnan(want)], rtol=1e-10, atol=1e-10)


@needs_compiled
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 40, 1), (2, 40, 2)],
                         ids=["window", "strided", "dilated", "no-window", "no-window-strided"])
def test_depthwise_infinities_at_padded_borders_as_the_reference(depthwise_isa, stride, padding, dilation):
    """The direct depthwise kernels skip the padding where the im2col reference multiplies its
    zeros: inf or NaN weights (forward) and output gradients (weight gradient) meeting the
    padding must still give NaN there, and nothing else may change."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((6, 1, 3, 3))
    x[0, 1, 3, 2], x[1, 2, 0, 0] = np.inf, np.nan
    w[0, 0, 0, 0], w[3, 0, 2, 1], w[5, 0, 1, 2] = np.inf, -np.inf, np.nan
    hyper = dict(stride=stride, padding=padding, dilation=dilation, groups=3)
    want = fc.conv2d(x, w, None, **hyper, backend="reference")
    assert np.isnan(want).any() and np.isinf(want).any()
    assert_same_ieee(fc.conv2d(x, w, None, **hyper, backend="cython"), want, "y")
    dout = rng.standard_normal(want.shape)
    dout[0, 0, 0, 0], dout[1, 4, -1, -1], dout[1, 2, 2, 2] = np.inf, -np.inf, np.nan
    got = fc.conv2d_backward(dout, x, w, **hyper, backend="cython")
    for what, a, e in zip(("dx", "dw", "db"), got, fc.conv2d_backward(dout, x, w, **hyper, backend="reference")):
        assert_same_ieee(a, e, what)
