"""The loop oracle (fastconv.reference.naive) against every backend's kernels on tiny shapes.

The kernels are called directly with checked arguments (C-contiguous float arrays, (h, w)
tuples, batch >= 1), as fastconv._api calls them: the vectorised NumPy kernels always, the
compiled ones too when they are built. A few tests also hold the oracle itself against torch,
so that a wrong oracle cannot silently agree with a wrong kernel.
"""

import numpy as np
import pytest
from helpers import optional_torch
torch = optional_torch()  # torch comparisons skip without torch; the rest runs
F = torch.nn.functional
from hypothesis import given
from hypothesis import strategies as st

from fastconv.reference import naive
from conftest import conv_configs, pair, pool_kernel_args, pool_option_configs

DTYPES = [np.float32, np.float64]
seeds = st.integers(0, 2**32 - 1)
tiny_conv = conv_configs(max_batch=2, max_channels=2, max_extra=3)
tiny_max_pool = pool_option_configs("max", max_batch=2, max_channels=2, max_extra=4)
tiny_avg_pool = pool_option_configs("avg", max_batch=2, max_channels=2, max_extra=4)


def close(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.flags.c_contiguous
    rtol = 1e-5 if expected.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol)


def conv_args(cfg, dtype, seed):
    """Checked kernel arguments (batch at least 1) and random data for a conv configuration:
    params is (stride, padding, dilation) with (h, w) padding, as im2col/col2im take it."""
    rng = np.random.default_rng(seed)
    n, *rest = cfg["x_shape"]
    x = rng.standard_normal((max(n, 1), *rest)).astype(dtype)
    w = rng.standard_normal(cfg["w_shape"]).astype(dtype)
    b = rng.standard_normal(cfg["w_shape"][0]).astype(dtype)
    params = (pair(cfg["stride"]), pair(cfg["padding"]), pair(cfg["dilation"]))
    return rng, x, w, b, params


def conv_kernel_params(params, groups=1):
    """(stride, padding, dilation) as the convolution kernels take them: padding as a
    (before, after) pair per axis, and groups."""
    stride, padding, dilation = params
    return stride, tuple((p, p) for p in padding), dilation, groups


def pool_args(cfg):
    kernel = pair(cfg["kernel_size"])
    stride = kernel if cfg["stride"] is None else pair(cfg["stride"])
    return kernel, stride, pair(cfg["padding"])


@given(cfg=tiny_conv, dtype=st.sampled_from(DTYPES), use_bias=st.booleans(), seed=seeds)
def test_conv2d(kernel_module, cfg, dtype, use_bias, seed):
    _, x, w, b, params = conv_args(cfg, dtype, seed)
    b = b if use_bias else None
    params = conv_kernel_params(params)
    close(kernel_module.conv2d(x, w, b, *params), naive.conv2d(x, w, b, *params))


@given(cfg=tiny_conv, dtype=st.sampled_from(DTYPES), seed=seeds)
def test_conv2d_backward(kernel_module, cfg, dtype, seed):
    rng, x, w, _, params = conv_args(cfg, dtype, seed)
    params = conv_kernel_params(params)
    dout = rng.standard_normal(naive.conv2d(x, w, None, *params).shape).astype(dtype)
    for got, want in zip(
        kernel_module.conv2d_backward(dout, x, w, *params), naive.conv2d_backward(dout, x, w, *params)
    ):
        close(got, want)


@given(cfg=tiny_conv, dtype=st.sampled_from(DTYPES), seed=seeds)
def test_im2col_col2im(kernel_module, cfg, dtype, seed):
    rng, x, w, _, params = conv_args(cfg, dtype, seed)
    kernel = w.shape[2:]
    cols = naive.im2col(x, kernel, *params)
    got = kernel_module.im2col(x, kernel, *params)
    assert got.dtype == cols.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, cols)  # a pure copy: bitwise equal
    c = rng.standard_normal(cols.shape).astype(dtype)
    close(kernel_module.col2im(c, x.shape, kernel, *params), naive.col2im(c, x.shape, kernel, *params))


@given(cfg=tiny_max_pool, dtype=st.sampled_from(DTYPES), special=st.booleans(), seed=seeds)
def test_max_pool2d(kernel_module, cfg, dtype, special, seed):
    rng = np.random.default_rng(seed)
    n, *rest = cfg["x_shape"]
    x = rng.integers(0, 3, (max(n, 1), *rest)).astype(dtype)  # small integers: many ties
    if special:
        x[rng.random(x.shape) < 0.2] = np.nan
        x[rng.random(x.shape) < 0.2] = -np.inf
    params = pool_kernel_args(cfg)
    y, idx = kernel_module.max_pool2d(x, *params)
    y_ref, idx_ref = naive.max_pool2d(x, *params)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    dout = rng.standard_normal(y.shape).astype(dtype)
    close(kernel_module.max_pool2d_backward(dout, idx_ref, x.shape),
          naive.max_pool2d_backward(dout, idx_ref, x.shape))


@given(cfg=tiny_avg_pool, dtype=st.sampled_from(DTYPES), seed=seeds)
def test_avg_pool2d(kernel_module, cfg, dtype, seed):
    rng = np.random.default_rng(seed)
    n, *rest = cfg["x_shape"]
    x = rng.standard_normal((max(n, 1), *rest)).astype(dtype)
    params = pool_kernel_args(cfg)
    y = naive.avg_pool2d(x, *params)
    close(kernel_module.avg_pool2d(x, *params), y)
    dout = rng.standard_normal(y.shape).astype(dtype)
    close(kernel_module.avg_pool2d_backward(dout, x.shape, *params),
          naive.avg_pool2d_backward(dout, x.shape, *params))


# ----------------------------------------------------------------------------------------------
# The oracle itself against torch
# ----------------------------------------------------------------------------------------------

@given(cfg=tiny_conv, seed=seeds)
def test_naive_conv_against_torch(cfg, seed):
    rng, x, w, b, params = conv_args(cfg, np.float64, seed)
    stride, padding, dilation = params
    conv_params = conv_kernel_params(params)
    np.testing.assert_allclose(
        naive.conv2d(x, w, b, *conv_params),
        F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride, padding, dilation).numpy(),
        rtol=1e-12, atol=1e-12,
    )
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = F.conv2d(xt, wt, None, stride, padding, dilation)
    dout = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dout))
    dx, dw, db = naive.conv2d_backward(dout, x, w, *conv_params)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    kernel = w.shape[2:]
    np.testing.assert_array_equal(
        naive.im2col(x, kernel, *params),
        F.unfold(torch.tensor(x), kernel, dilation, padding, stride).numpy(),
    )
    cols = rng.standard_normal(naive.im2col(x, kernel, *params).shape)
    np.testing.assert_allclose(
        naive.col2im(cols, x.shape, kernel, *params),
        F.fold(torch.tensor(cols), x.shape[2:], kernel, dilation, padding, stride).numpy(),
        rtol=1e-12, atol=1e-12,
    )


@given(cfg=tiny_max_pool, seed=seeds)
def test_naive_max_pooling_against_torch(cfg, seed):
    rng = np.random.default_rng(seed)
    n, *rest = cfg["x_shape"]
    x = rng.integers(0, 3, (max(n, 1), *rest)).astype(np.float64)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[rng.random(x.shape) < 0.2] = -np.inf
    params = pool_kernel_args(cfg)
    y, idx = naive.max_pool2d(x, *params)
    yt, it = F.max_pool2d(torch.tensor(x), *params, return_indices=True)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())

    x = rng.standard_normal(x.shape)
    xt = torch.tensor(x, requires_grad=True)
    yt, it = F.max_pool2d(xt, *params, return_indices=True)
    dout = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(
        naive.max_pool2d_backward(dout, it.numpy(), x.shape), xt.grad.numpy(), rtol=1e-12, atol=1e-12
    )


@given(cfg=tiny_avg_pool, seed=seeds)
def test_naive_avg_pooling_against_torch(cfg, seed):
    rng = np.random.default_rng(seed)
    n, *rest = cfg["x_shape"]
    x = rng.standard_normal((max(n, 1), *rest))
    params = pool_kernel_args(cfg)
    xt = torch.tensor(x, requires_grad=True)
    yt = F.avg_pool2d(xt, *params)
    np.testing.assert_allclose(naive.avg_pool2d(x, *params), yt.detach().numpy(), rtol=1e-12)
    dout = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(
        naive.avg_pool2d_backward(dout, x.shape, *params), xt.grad.numpy(), rtol=1e-12, atol=1e-12
    )


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 9), st.integers(1, 9)),
       output_size=st.tuples(st.integers(1, 11), st.integers(1, 11)), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_adaptive_avg_pool2d(kernel_module, shape, output_size, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y = naive.adaptive_avg_pool2d(x, output_size)
    close(kernel_module.adaptive_avg_pool2d(x, output_size), y)
    dout = rng.standard_normal(y.shape).astype(dtype)
    close(kernel_module.adaptive_avg_pool2d_backward(dout, x.shape), naive.adaptive_avg_pool2d_backward(dout, x.shape))


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 9), st.integers(1, 9)),
       output_size=st.tuples(st.integers(1, 11), st.integers(1, 11)), seed=seeds)
def test_naive_adaptive_pooling_against_torch(shape, output_size, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = F.adaptive_avg_pool2d(xt, output_size)
    np.testing.assert_allclose(naive.adaptive_avg_pool2d(x, output_size), yt.detach().numpy(), rtol=1e-12)
    dout = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(naive.adaptive_avg_pool2d_backward(dout, x.shape), xt.grad.numpy(),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("window, expected_index", [
    ([1.0, np.nan, 3.0, np.nan], 3),  # the last NaN wins, as in torch
    ([np.nan, 5.0, 7.0, 1.0], 0),
    ([-np.inf, -np.inf, -np.inf, -np.inf], 0),
    ([2.0, 5.0, 5.0, 1.0], 1),
])
def test_naive_max_pool_rules(window, expected_index):
    x = np.array(window)[None, None, None, :]
    _, idx = naive.max_pool2d(x, (1, 4), (1, 4), (0, 0), (1, 1), False)
    assert idx[0, 0, 0, 0] == expected_index
