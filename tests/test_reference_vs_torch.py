"""The public API on every available backend against PyTorch, the tie-breaker of API.md.

Each test draws a valid configuration (non-square kernels, strides, paddings, dilations,
batch 0 and 1, float32 and float64), runs fastconv and the equivalent torch operation on the
same data and compares; gradients come from torch autograd. Pooling indices are compared
exactly, including windows with ties (small integer data), NaN, -inf, padding, overlapping
windows and windows that do not tile the input.
"""

import numpy as np
import pytest
from helpers import optional_torch
torch = optional_torch()  # torch comparisons skip without torch; the rest runs
F = torch.nn.functional
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from conftest import (
    conv_configs,
    conv_out_shape,
    pair,
    pool_configs,
    pool_out_shape,
    tolerances,
)

DTYPES = [np.float32, np.float64]
seeds = st.integers(0, 2**32 - 1)


def tensor(a, requires_grad=False):
    """A torch tensor holding a copy of `a` (so torch never aliases test data)."""
    return torch.tensor(np.array(a), requires_grad=requires_grad)


def grad_or_zeros(t):
    return np.zeros(tuple(t.shape), dtype=t.detach().numpy().dtype) if t.grad is None else t.grad.numpy()


def assert_close(actual, expected, dtype):
    rtol, atol = tolerances(dtype)
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == np.dtype(dtype), (actual.dtype, dtype)
    assert actual.shape == tuple(expected.shape), (actual.shape, tuple(expected.shape))
    np.testing.assert_allclose(actual, np.asarray(expected), rtol=rtol, atol=atol)


def torch_hyper(value, nd):
    """fastconv's int/tuple/list spelling as the tuple torch takes."""
    if nd == 1:
        return (value,) if isinstance(value, int) else tuple(value)
    return pair(value)


# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------

def _conv_case(cfg, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg["x_shape"]).astype(dtype)
    w = rng.standard_normal(cfg["w_shape"]).astype(dtype)
    b = rng.standard_normal(cfg["w_shape"][0]).astype(dtype)
    dout = rng.standard_normal(conv_out_shape(cfg)).astype(dtype)
    return x, w, b, dout


def _torch_conv(nd, x, w, b, cfg):
    conv = F.conv2d if nd == 2 else F.conv1d
    return conv(
        x, w, b,
        stride=torch_hyper(cfg["stride"], nd),
        padding=torch_hyper(cfg["padding"], nd),
        dilation=torch_hyper(cfg["dilation"], nd),
    )


@pytest.mark.parametrize("nd", [1, 2])
@given(data=st.data(), dtype=st.sampled_from(DTYPES), use_bias=st.booleans(), seed=seeds)
def test_conv_forward(backend, nd, data, dtype, use_bias, seed):
    cfg = data.draw(conv_configs(nd=nd))
    x, w, b, _ = _conv_case(cfg, dtype, seed)
    fn = fc.conv2d if nd == 2 else fc.conv1d
    y = fn(x, w, b if use_bias else None, cfg["stride"], cfg["padding"], cfg["dilation"], backend=backend)
    expected = _torch_conv(nd, tensor(x), tensor(w), tensor(b) if use_bias else None, cfg)
    assert expected.shape == conv_out_shape(cfg)
    assert_close(y, expected.numpy(), dtype)


@pytest.mark.parametrize("nd", [1, 2])
@given(data=st.data(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_conv_backward(backend, nd, data, dtype, seed):
    cfg = data.draw(conv_configs(nd=nd))
    x, w, b, dout = _conv_case(cfg, dtype, seed)
    fn = fc.conv2d_backward if nd == 2 else fc.conv1d_backward
    dx, dw, db = fn(dout, x, w, cfg["stride"], cfg["padding"], cfg["dilation"], backend=backend)
    xt, wt, bt = tensor(x, True), tensor(w, True), tensor(b, True)
    _torch_conv(nd, xt, wt, bt, cfg).backward(tensor(dout))
    assert_close(dx, grad_or_zeros(xt), dtype)
    assert_close(dw, grad_or_zeros(wt), dtype)
    assert_close(db, grad_or_zeros(bt), dtype)
    # db is defined in API.md as this sum, whether or not torch agrees on batch 0.
    np.testing.assert_allclose(db, dout.sum(axis=(0,) + tuple(range(2, nd + 2))), *tolerances(dtype))


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, dilation",
    [
        ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1),            # the smallest convolution
        ((1, 2, 7, 5), (3, 2, 1, 4), (2, 1), (0, 2), (1, 1)),  # non-square kernel and stride
        ((2, 3, 9, 8), (2, 3, 3, 2), (3, 2), (1, 0), (2, 3)),  # dilation larger than stride
        ((1, 2, 3, 3), (4, 2, 3, 3), 5, 1, 1),            # stride larger than the input
        ((1, 4, 6, 6), (5, 4, 1, 1), 1, 0, 1),            # 1x1 (pure GEMM) case
        ((3, 1, 4, 4), (1, 1, 4, 4), 1, 0, 1),            # kernel as large as the input
        ((1, 2, 2, 2), (2, 2, 3, 3), 1, 2, 2),            # padding larger than the input
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_edge_cases(backend, x_shape, w_shape, stride, padding, dilation, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    y = fc.conv2d(x, w, b, stride, padding, dilation, backend=backend)
    xt, wt, bt = tensor(x, True), tensor(w, True), tensor(b, True)
    yt = F.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation)
    assert_close(y, yt.detach().numpy(), dtype)
    dout = rng.standard_normal(yt.shape).astype(dtype)
    yt.backward(tensor(dout))
    dx, dw, db = fc.conv2d_backward(dout, x, w, stride, padding, dilation, backend=backend)
    assert_close(dx, xt.grad.numpy(), dtype)
    assert_close(dw, wt.grad.numpy(), dtype)
    assert_close(db, bt.grad.numpy(), dtype)


def test_conv2d_nan_and_inf_propagate(backend):
    """An output is NaN exactly when its window reads a NaN, or an inf times a zero weight,
    or infs of both signs; the positions are taken from torch."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 7, 7))
    x[0, 0, 3, 3] = np.nan
    x[1, 1, 0, 6] = np.inf
    x[1, 0, 5, 1] = -np.inf
    w = rng.standard_normal((3, 2, 3, 3))
    w[1, 1, 0, 0] = 0.0
    y = fc.conv2d(x, w, None, 1, 1, backend=backend)
    expected = F.conv2d(tensor(x), tensor(w), None, 1, 1).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(expected))
    assert np.isnan(y).any() and np.isinf(y).any()
    finite = np.isfinite(expected)
    np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# Result dtype rules
# ----------------------------------------------------------------------------------------------

# (x dtype, w dtype, b dtype or None) -> computation dtype of API.md
DTYPE_RULES = [
    (np.float32, np.float32, None, np.float32),
    (np.float32, np.float32, np.float32, np.float32),
    (np.float32, np.float64, None, np.float64),
    (np.float64, np.float32, None, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
    (np.int64, np.float32, None, np.float32),    # integers are promoted, float32 is kept
    (np.int32, np.int16, None, np.float64),      # no floating input at all: float64
    (np.uint8, np.float64, np.int8, np.float64),
    (np.bool_, np.float32, np.bool_, np.float32),
    (np.float16, np.float32, None, np.float64),  # float16 is not float32
]


def _values(shape, dtype, rng):
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 5, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("x_dtype, w_dtype, b_dtype, result_dtype", DTYPE_RULES)
def test_conv_result_dtype(backend, x_dtype, w_dtype, b_dtype, result_dtype):
    rng = np.random.default_rng(2)
    x = _values((2, 3, 6, 5), x_dtype, rng)
    w = _values((4, 3, 3, 2), w_dtype, rng)
    b = None if b_dtype is None else _values((4,), b_dtype, rng)
    y = fc.conv2d(x, w, b, padding=1, backend=backend)
    # Expected: the float64 result of torch on the promoted values, rounded to the dtype.
    expected = F.conv2d(
        tensor(x.astype(np.float64)), tensor(w.astype(np.float64)),
        None if b is None else tensor(b.astype(np.float64)), padding=1,
    ).numpy()
    assert_close(y, expected, result_dtype)

    y1 = fc.conv1d(x[:, :, 0], w[:, :, 0], b, padding=1, backend=backend)
    assert y1.dtype == result_dtype

    # The backward has no bias: its dtype follows x, w and a float32 dout.
    dout = _values(expected.shape, np.float32, rng)
    floating = [d for d in (x_dtype, w_dtype, np.float32) if np.dtype(d).kind == "f"]
    backward_dtype = np.float32 if all(d == np.float32 for d in floating) else np.float64
    for result in fc.conv2d_backward(dout, x, w, padding=1, backend=backend):
        assert result.dtype == backward_dtype


@pytest.mark.parametrize(
    "dtypes, result_dtype",
    [
        ((np.float32, np.float32, np.float32), np.float32),
        ((np.float64, np.float32, np.float32), np.float64),   # dout decides too
        ((np.float32, np.float32, np.float64), np.float64),
        ((np.int64, np.float32, np.float32), np.float32),
        ((np.int64, np.int64, np.int64), np.float64),
    ],
)
def test_conv_backward_result_dtype(backend, dtypes, result_dtype):
    rng = np.random.default_rng(3)
    dout = _values((2, 2, 4, 4), dtypes[0], rng)
    x = _values((2, 3, 4, 4), dtypes[1], rng)
    w = _values((2, 3, 3, 3), dtypes[2], rng)
    dx, dw, db = fc.conv2d_backward(dout, x, w, padding=1, backend=backend)
    xt = tensor(x.astype(np.float64), True)
    wt = tensor(w.astype(np.float64), True)
    F.conv2d(xt, wt, padding=1).backward(tensor(dout.astype(np.float64)))
    assert_close(dx, xt.grad.numpy(), result_dtype)
    assert_close(dw, wt.grad.numpy(), result_dtype)
    assert_close(db, dout.astype(np.float64).sum(axis=(0, 2, 3)), result_dtype)


@pytest.mark.parametrize("dtype, result_dtype", [
    (np.float32, np.float32), (np.float64, np.float64), (np.int32, np.float64),
    (np.uint8, np.float64), (np.bool_, np.float64), (np.float16, np.float64),
])
def test_other_functions_result_dtype(backend, dtype, result_dtype):
    rng = np.random.default_rng(4)
    x = _values((2, 2, 6, 6), dtype, rng)
    xf = x.astype(np.float64)
    y, idx = fc.max_pool2d(x, 2, backend=backend)
    assert_close(y, F.max_pool2d(tensor(xf), 2).numpy(), result_dtype)
    assert idx.dtype == np.int64
    assert_close(fc.avg_pool2d(x, 2, backend=backend), F.avg_pool2d(tensor(xf), 2).numpy(), result_dtype)
    cols = fc.im2col(x, 3, backend=backend)
    assert_close(cols, F.unfold(tensor(xf), 3).numpy(), result_dtype)
    c = _values((2, 2 * 9, 16), dtype, rng)
    assert_close(
        fc.col2im(c, (2, 2, 6, 6), 3, backend=backend),
        F.fold(tensor(c.astype(np.float64)), (6, 6), 3).numpy(),
        result_dtype,
    )
    dout = _values((2, 2, 3, 3), dtype, rng)
    assert fc.max_pool2d_backward(dout, idx, x.shape, backend=backend).dtype == result_dtype
    assert fc.avg_pool2d_backward(dout, x.shape, 2, backend=backend).dtype == result_dtype


# ----------------------------------------------------------------------------------------------
# im2col / col2im
# ----------------------------------------------------------------------------------------------

@given(cfg=conv_configs(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_im2col_matches_unfold(backend, cfg, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg["x_shape"]).astype(dtype)
    kernel = cfg["w_shape"][2:]
    cols = fc.im2col(x, kernel, cfg["stride"], cfg["padding"], cfg["dilation"], backend=backend)
    expected = F.unfold(
        tensor(x), kernel, dilation=pair(cfg["dilation"]), padding=pair(cfg["padding"]),
        stride=pair(cfg["stride"]),
    )
    # im2col only copies: the values must be bitwise those of the input (or exact zeros).
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, expected.numpy())


@given(cfg=conv_configs(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_col2im_matches_fold(backend, cfg, dtype, seed):
    rng = np.random.default_rng(seed)
    n, c, h, w = cfg["x_shape"]
    kh, kw = cfg["w_shape"][2:]
    _, _, oh, ow = conv_out_shape(cfg)
    cols = rng.standard_normal((n, c * kh * kw, oh * ow)).astype(dtype)
    x = fc.col2im(cols, (n, c, h, w), (kh, kw), cfg["stride"], cfg["padding"], cfg["dilation"], backend=backend)
    if n == 0:  # torch.fold refuses an empty batch
        assert x.shape == (0, c, h, w) and x.dtype == dtype
        return
    expected = F.fold(
        tensor(cols), (h, w), (kh, kw), dilation=pair(cfg["dilation"]),
        padding=pair(cfg["padding"]), stride=pair(cfg["stride"]),
    )
    assert_close(x, expected.numpy(), dtype)


# ----------------------------------------------------------------------------------------------
# Max pooling
# ----------------------------------------------------------------------------------------------

def _pool_input(shape, dtype, rng, special):
    """Small integers (many ties), optionally sprinkled with NaN and -inf (and +inf)."""
    x = rng.integers(0, 3, shape).astype(dtype)
    if special and x.size:
        for value, fraction in ((np.nan, 0.15), (-np.inf, 0.2), (np.inf, 0.05)):
            x[rng.random(shape) < fraction] = value
    return x


def _torch_pool_args(cfg):
    stride = None if cfg["stride"] is None else pair(cfg["stride"])
    return pair(cfg["kernel_size"]), stride, pair(cfg["padding"])


@given(cfg=pool_configs(), dtype=st.sampled_from(DTYPES), special=st.booleans(), seed=seeds)
def test_max_pool2d_matches_torch(backend, cfg, dtype, special, seed):
    rng = np.random.default_rng(seed)
    x = _pool_input(cfg["x_shape"], dtype, rng, special)
    y, idx = fc.max_pool2d(x, cfg["kernel_size"], cfg["stride"], cfg["padding"], backend=backend)
    kernel, stride, padding = _torch_pool_args(cfg)
    yt, it = F.max_pool2d(tensor(x), kernel, stride, padding, return_indices=True)
    assert y.shape == idx.shape == pool_out_shape(cfg)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, yt.numpy())  # NaN compares equal to NaN here
    np.testing.assert_array_equal(idx, it.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "plane, kernel_size, stride, padding",
    [
        ([[1, np.nan, 3, np.nan]], (1, 4), None, 0),          # several NaNs: PyTorch keeps the last
        ([[np.nan, 5, np.nan, 7]], (1, 4), None, 0),
        ([[5, np.nan, 7, 9]], (1, 4), None, 0),               # NaN beats larger numbers after it
        ([[-np.inf, -np.inf], [-np.inf, -np.inf]], 2, 1, 1),  # all -inf: first real element
        ([[2, 2], [2, 2]], 2, 1, 1),                          # ties: first in row-major order
        ([[np.nan] * 5] * 5, 3, 1, 1),                        # all NaN, with padding
        ([[0, 1, 1, 0, 1, 1, 0]], (1, 3), (1, 2), (0, 1)),    # overlapping windows sharing a max
        ([[1, 2, 3, 4, 5, 6, 7]], (1, 2), None, 0),           # windows do not tile the input
    ],
)
def test_max_pool2d_special_windows(backend, dtype, plane, kernel_size, stride, padding):
    x = np.array(plane, dtype=dtype)[None, None]
    y, idx = fc.max_pool2d(x, kernel_size, stride, padding, backend=backend)
    yt, it = F.max_pool2d(
        tensor(x), pair(kernel_size), None if stride is None else pair(stride), pair(padding),
        return_indices=True,
    )
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())


def test_max_pool2d_nan_rule_explicitly(backend):
    """The rule of API.md written out, independently of torch: NaN is the maximum."""
    x = np.array([[[[1.0, np.nan, 3.0, 2.0]]]])
    y, idx = fc.max_pool2d(x, (1, 4), backend=backend)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1
    x = np.array([[[[4.0, 1.0], [4.0, 4.0]]]])
    y, idx = fc.max_pool2d(x, 2, backend=backend)
    assert y[0, 0, 0, 0] == 4.0 and idx[0, 0, 0, 0] == 0


@given(cfg=pool_configs(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_max_pool2d_backward_matches_autograd(backend, cfg, dtype, seed):
    rng = np.random.default_rng(seed)
    x = _pool_input(cfg["x_shape"], dtype, rng, special=False)
    y, idx = fc.max_pool2d(x, cfg["kernel_size"], cfg["stride"], cfg["padding"], backend=backend)
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx = fc.max_pool2d_backward(dout, idx, x.shape, backend=backend)
    xt = tensor(x, True)
    F.max_pool2d(xt, *_torch_pool_args(cfg)).backward(tensor(dout))
    assert_close(dx, grad_or_zeros(xt), dtype)


@given(
    shape=st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
    out_hw=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    dtype=st.sampled_from(DTYPES),
    index_dtype=st.sampled_from([np.int64, np.int32, np.uint8, np.uint64, np.int16]),
    seed=seeds,
)
def test_max_pool2d_backward_arbitrary_indices(backend, shape, out_hw, dtype, index_dtype, seed):
    """Any in-range indices (repeated ones included) scatter-add like torch.scatter_add."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    dout = rng.standard_normal((n, c) + out_hw).astype(dtype)
    idx = rng.integers(0, h * w, dout.shape).astype(index_dtype)
    dx = fc.max_pool2d_backward(dout, idx, shape, backend=backend)
    expected = torch.zeros((n * c, h * w), dtype=tensor(dout).dtype).scatter_add_(
        1, tensor(idx.astype(np.int64)).reshape(n * c, -1 if n else 0), tensor(dout).reshape(n * c, -1 if n else 0)
    )
    assert_close(dx, expected.reshape(shape).numpy(), dtype)


# ----------------------------------------------------------------------------------------------
# Average pooling
# ----------------------------------------------------------------------------------------------

@given(cfg=pool_configs(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_avg_pool2d_matches_torch(backend, cfg, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg["x_shape"]).astype(dtype)
    y = fc.avg_pool2d(x, cfg["kernel_size"], cfg["stride"], cfg["padding"], backend=backend)
    xt = tensor(x, True)
    yt = F.avg_pool2d(xt, *_torch_pool_args(cfg))  # count_include_pad=True is torch's default
    assert_close(y, yt.detach().numpy(), dtype)
    dout = rng.standard_normal(yt.shape).astype(dtype)
    dx = fc.avg_pool2d_backward(dout, x.shape, cfg["kernel_size"], cfg["stride"], cfg["padding"], backend=backend)
    yt.backward(tensor(dout))
    assert_close(dx, grad_or_zeros(xt), dtype)


def test_avg_pool2d_counts_padding(backend):
    """With padding, a corner window of a 2x2 kernel holds one real value and three zeros."""
    x = np.full((1, 1, 2, 2), 8.0)
    y = fc.avg_pool2d(x, 2, 1, 1, backend=backend)
    np.testing.assert_array_equal(y[0, 0], [[2.0, 4.0, 2.0], [4.0, 8.0, 4.0], [2.0, 4.0, 2.0]])
