"""Size limits: 64-bit index arithmetic, and clean refusals of sizes no array can have.

What can be shown on a machine with a few GB:

* Hyper-parameters up to the accepted maximum (2**31 - 1) over tiny inputs: products such as
  ``oh * stride``, ``i * dilation``, ``oh*stride - padding + i*dilation`` and ``h * W`` go past
  2**31 and 2**32 while every array stays tiny. The compiled kernels must compute these
  exactly; the expected values are worked out by hand below (the reference backend pads the
  input explicitly, so it cannot run them: a limitation of the fallback, not of the API).
* Hyper-parameters beyond 2**31 - 1, sizes whose product overflows 64 bits, and outputs too
  large for any array are refused with a ValueError naming the argument, before anything large
  is allocated (checked with tracemalloc, which sees NumPy's allocations).
* Arrays with more than 2**31 *elements* need more than 8 GB in float32: that test is opt-in
  (FASTCONV_TEST_BIG_MEMORY=1, skipped unless enough memory is free).
"""

import os
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

import fastconv as fc
from conftest import AVAILABLE_BACKENDS

H31 = 2**31 - 1  # the largest hyper-parameter accepted
needs_compiled = pytest.mark.skipif("cython" not in AVAILABLE_BACKENDS, reason="compiled backend not built")


# ----------------------------------------------------------------------------------------------
# Huge hyper-parameters, tiny arrays: exact results on the compiled backend
# ----------------------------------------------------------------------------------------------

@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_with_dilation_and_stride_near_2_31(dtype):
    """KH = 2 with dilation_h = stride_h = padding_h = 2**31 - 1 over a 1-row input: OH = 2.
    Output row 0 reads input row 0 with kernel row 1 (offset -p + d = 0); output row 1 reads it
    with kernel row 0 (offset s - p = 0); every other tap falls in the padding."""
    rng = np.random.default_rng(0)
    n, c, f, width = 2, 3, 4, 5
    x = rng.standard_normal((n, c, 1, width)).astype(dtype)
    w = rng.standard_normal((f, c, 2, 1)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    geometry = dict(stride=(H31, 1), padding=(H31, 0), dilation=(H31, 1))
    y = fc.conv2d(x, w, b, **geometry, backend="cython")
    x64, w64 = x[:, :, 0].astype(np.float64), w[:, :, :, 0].astype(np.float64)
    expected = np.empty((n, f, 2, width))
    expected[:, :, 0] = np.einsum("fc,ncw->nfw", w64[:, :, 1], x64) + b[None, :, None]
    expected[:, :, 1] = np.einsum("fc,ncw->nfw", w64[:, :, 0], x64) + b[None, :, None]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)

    dout = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = fc.conv2d_backward(dout, x, w, **geometry, backend="cython")
    d64 = dout.astype(np.float64)
    exp_dx = (np.einsum("nfw,fc->ncw", d64[:, :, 0], w64[:, :, 1])
              + np.einsum("nfw,fc->ncw", d64[:, :, 1], w64[:, :, 0]))
    exp_dw = np.empty((f, c, 2))
    exp_dw[:, :, 1] = np.einsum("nfw,ncw->fc", d64[:, :, 0], x64)
    exp_dw[:, :, 0] = np.einsum("nfw,ncw->fc", d64[:, :, 1], x64)
    np.testing.assert_allclose(dx[:, :, 0], exp_dx, rtol=tol, atol=tol)
    np.testing.assert_allclose(dw[:, :, :, 0], exp_dw, rtol=tol, atol=tol)
    np.testing.assert_allclose(db, d64.sum(axis=(0, 2, 3)), rtol=tol, atol=tol)

    # The same geometry through im2col / col2im: rows (c, i), columns (oh, ow).
    cols = fc.im2col(x, (2, 1), **geometry, backend="cython")
    exp_cols = np.zeros((n, c, 2, 2, width), dtype=dtype)
    exp_cols[:, :, 1, 0] = x[:, :, 0]
    exp_cols[:, :, 0, 1] = x[:, :, 0]
    assert np.array_equal(cols, exp_cols.reshape(n, 2 * c, 2 * width))
    back = fc.col2im(cols, x.shape, (2, 1), **geometry, backend="cython")
    np.testing.assert_array_equal(back, 2 * x)  # each input element is read by two taps


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv1d_with_huge_padding_and_dilation(dtype):
    """conv1d: K = 3, dilation 2**30, padding 2**30 over L = 4: the middle tap sees the input,
    the outer taps only padding, so y = w[:, :, 1] @ x (OL = L)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    w = rng.standard_normal((5, 3, 3)).astype(dtype)
    y = fc.conv1d(x, w, None, 1, 2**30, 2**30, backend="cython")
    expected = np.einsum("fc,ncl->nfl", w[:, :, 1].astype(np.float64), x.astype(np.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_with_dilation_and_stride_near_2_31(dtype):
    """The geometry of test_conv_with_dilation_and_stride_near_2_31 on a depthwise
    convolution with a channel multiplier (the direct kernels, whose padded window would be
    ~2**31 rows: they clip instead): output row 0 is kernel row 1 times the input row, output
    row 1 kernel row 0 times it, filter f = c*2 + k reading channel c only."""
    rng = np.random.default_rng(3)
    n, c, width = 2, 3, 5
    x = rng.standard_normal((n, c, 1, width)).astype(dtype)
    w = rng.standard_normal((2 * c, 1, 2, 1)).astype(dtype)
    b = rng.standard_normal(2 * c).astype(dtype)
    geometry = dict(stride=(H31, 1), padding=(H31, 0), dilation=(H31, 1), groups=c)
    y = fc.conv2d(x, w, b, **geometry, backend="cython")
    x_of_filter = np.repeat(x[:, :, 0].astype(np.float64), 2, axis=1)       # (n, 2c, width)
    w64 = w[:, 0, :, 0].astype(np.float64)                                   # (2c, 2)
    expected = np.stack([x_of_filter * w64[None, :, 1, None], x_of_filter * w64[None, :, 0, None]], axis=2)
    expected += b[None, :, None, None]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)

    dout = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = fc.conv2d_backward(dout, x, w, **geometry, backend="cython")
    d64 = dout.astype(np.float64)
    per_filter = d64[:, :, 0] * w64[None, :, 1, None] + d64[:, :, 1] * w64[None, :, 0, None]
    np.testing.assert_allclose(dx[:, :, 0], per_filter.reshape(n, c, 2, width).sum(axis=2), rtol=tol, atol=tol)
    np.testing.assert_allclose(dw[:, 0, 1, 0], (d64[:, :, 0] * x_of_filter).sum(axis=(0, 2)), rtol=tol, atol=tol)
    np.testing.assert_allclose(dw[:, 0, 0, 0], (d64[:, :, 1] * x_of_filter).sum(axis=(0, 2)), rtol=tol, atol=tol)
    np.testing.assert_allclose(db, d64.sum(axis=(0, 2, 3)), rtol=tol, atol=tol)


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 3])
def test_conv_transpose_with_stride_and_dilation_near_2_31(dtype, groups):
    """KH = 2, H = 2, stride = padding = 2**31 - 2, dilation 2**31 - 1: OH = 2, and only two
    products land inside it: input row 1 with kernel row 0 on output row 0 (1*s - p = 0), input
    row 0 with kernel row 1 on output row 1 (d - p = 1). groups=3 is depthwise (the direct
    kernels)."""
    rng = np.random.default_rng(4)
    n, c, width = 2, 3, 4
    f_per_group = 1 if groups == 3 else 2
    x = rng.standard_normal((n, c, 2, width)).astype(dtype)
    w = rng.standard_normal((c, f_per_group, 2, 1)).astype(dtype)
    b = rng.standard_normal(f_per_group * groups).astype(dtype)
    geometry = dict(stride=(H31 - 1, 1), padding=(H31 - 1, 0), dilation=(H31, 1), groups=groups)
    y = fc.conv_transpose2d(x, w, b, **geometry, backend="cython")
    assert y.shape == (n, f_per_group * groups, 2, width)
    x64, w64 = x.astype(np.float64), w[..., 0].astype(np.float64)            # w64: (c, f/g, 2)
    cg = c // groups

    def transposed_row(rows, tap):
        """sum over the group's channels of x row `rows` times kernel row `tap`: (n, F, width)."""
        out = np.zeros((n, f_per_group * groups, width))
        for ci in range(c):
            g = ci // cg
            for fl in range(f_per_group):
                out[:, g * f_per_group + fl] += x64[:, ci, rows] * w64[ci, fl, tap]
        return out

    expected = np.stack([transposed_row(1, 0), transposed_row(0, 1)], axis=2) + b[None, :, None, None]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)

    dout = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = fc.conv_transpose2d_backward(dout, x, w, **geometry, backend="cython")
    d64 = dout.astype(np.float64)
    exp_dx, exp_dw = np.zeros(x.shape), np.zeros(w.shape)
    for ci in range(c):
        g = ci // cg
        for fl in range(f_per_group):
            f = g * f_per_group + fl
            exp_dx[:, ci, 1] += d64[:, f, 0] * w64[ci, fl, 0]
            exp_dx[:, ci, 0] += d64[:, f, 1] * w64[ci, fl, 1]
            exp_dw[ci, fl, 0, 0] = (x64[:, ci, 1] * d64[:, f, 0]).sum()
            exp_dw[ci, fl, 1, 0] = (x64[:, ci, 0] * d64[:, f, 1]).sum()
    np.testing.assert_allclose(dx, exp_dx, rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, exp_dw, rtol=tol, atol=tol)
    np.testing.assert_allclose(db, d64.sum(axis=(0, 2, 3)), rtol=tol, atol=tol)


def _window_max(x, rows, cols):
    """Max and flat index (first maximum, NaN-free data) of x[:, :, rows, cols] per plane."""
    sub = x[:, :, rows][:, :, :, cols]
    n, c, h, w = sub.shape
    flat = sub.reshape(n, c, -1)
    pos = flat.argmax(axis=-1)
    r, q = np.unravel_index(pos, (h, w))
    return flat.max(axis=-1), np.asarray(rows)[r] * x.shape[3] + np.asarray(cols)[q]


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride_w", [1, 2])
def test_pooling_with_kernel_height_near_2_31(dtype, stride_w):
    """Kernel height 2**31 - 1, padding 2**30 - 1: every window covers all H rows, whose flat
    positions h*W + w are computed from starts near -2**30."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 3, 11)).astype(dtype)
    kernel, padding = (H31, 3), (2**30 - 1, 1)
    y, idx = fc.max_pool2d(x, kernel, (1, stride_w), padding, backend="cython")
    oh = (3 + 2 * padding[0] - kernel[0]) // 1 + 1
    ow = (11 + 2 * padding[1] - kernel[1]) // stride_w + 1
    assert y.shape == (2, 3, oh, ow) == (2, 3, 3, ow)
    for j in range(ow):
        start = j * stride_w - 1
        cols = [q for q in range(start, start + 3) if 0 <= q < 11]
        exp_y, exp_idx = _window_max(x, [0, 1, 2], cols)
        for i in range(oh):
            np.testing.assert_array_equal(y[:, :, i, j], exp_y)
            np.testing.assert_array_equal(idx[:, :, i, j], exp_idx)
    dx = fc.max_pool2d_backward(np.ones_like(y), idx, x.shape, backend="cython")
    assert dx.sum() == y.size

    avg = fc.avg_pool2d(x, kernel, (1, stride_w), padding, backend="cython")
    for j in range(ow):
        start = j * stride_w - 1
        cols = [q for q in range(start, start + 3) if 0 <= q < 11]
        total = x[:, :, :, cols].astype(np.float64).sum(axis=(2, 3))
        np.testing.assert_allclose(avg[:, :, 0, j], total / (kernel[0] * kernel[1]), rtol=1e-5)
    dx = fc.avg_pool2d_backward(np.ones_like(avg), x.shape, kernel, (1, stride_w), padding, backend="cython")
    # Each input element is in OH windows per column window covering it, each adding 1/(KH*KW).
    coverage = np.zeros(11)
    for j in range(ow):
        start = j * stride_w - 1
        coverage[max(start, 0):min(start + 3, 11)] += 1
    np.testing.assert_allclose(dx[0, 0], np.broadcast_to(coverage * oh / (kernel[0] * kernel[1]), (3, 11)),
                               rtol=1e-5)


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_options_with_hyperparameters_near_2_31(dtype):
    """Dilation, stride and kernels of 2**31 - 1 with ceil_mode over tiny inputs: each result
    worked out by hand from the window positions."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 3, 9)).astype(dtype)
    # Rows: kernel 2 with dilation 2**31 - 1 and stride 2**31 - 1 under ceil_mode: one output
    # row, whose taps are rows 0 and 2**31 - 1 (outside). Columns: kernel 2, dilation 2,
    # padding 1: taps ow - 1 and ow + 1.
    y, idx = fc.max_pool2d(x, 2, (H31, 1), (0, 1), (H31, 2), ceil_mode=True, backend="cython")
    assert y.shape == (2, 3, 1, 9)
    for ow in range(9):
        exp_y, exp_idx = _window_max(x, [0], [q for q in (ow - 1, ow + 1) if 0 <= q < 9])
        np.testing.assert_array_equal(y[:, :, 0, ow], exp_y)
        np.testing.assert_array_equal(idx[:, :, 0, ow], exp_idx)
    # max_pool1d: a kernel of 2**31 - 1 with padding 2**30 - 1: every window covers all of L.
    x1 = x[:, :, 0, :4]
    y1, idx1 = fc.max_pool1d(x1, H31, 1, 2**30 - 1, backend="cython")
    assert y1.shape == (2, 3, 4)
    np.testing.assert_array_equal(y1, np.repeat(x1.max(axis=-1, keepdims=True), 4, axis=-1))
    np.testing.assert_array_equal(idx1, np.repeat(x1.argmax(axis=-1)[..., None], 4, axis=-1))
    assert fc.max_pool1d_backward(np.ones_like(y1), idx1, x1.shape, backend="cython").sum() == y1.size
    # avg_pool2d: a window 2**31 - 1 wide under ceil_mode over W = 9 is clipped to the input,
    # so with count_include_pad its divisor is 9 (the padded extent is the input itself).
    kernel, stride = (1, H31), (1, H31)
    a = fc.avg_pool2d(x, kernel, stride, 0, ceil_mode=True, backend="cython")
    np.testing.assert_allclose(a[..., 0], x.astype(np.float64).mean(axis=-1), rtol=1e-5)
    a = fc.avg_pool2d(x, kernel, stride, 0, ceil_mode=True, divisor_override=H31, backend="cython")
    np.testing.assert_allclose(a[..., 0], x.astype(np.float64).sum(axis=-1) / H31, rtol=1e-5)
    dx = fc.avg_pool2d_backward(np.ones((2, 3, 3, 1), dtype), x.shape, kernel, stride, 0, True, backend="cython")
    np.testing.assert_allclose(dx, np.full(x.shape, 1 / 9), rtol=1e-6)


def _run_isolated(code, timeout):
    """Run code in a fresh interpreter; returns (seconds, CompletedProcess) or (None, None)
    on timeout (the child is killed)."""
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, None
    return time.monotonic() - start, done


@needs_compiled
@pytest.mark.parametrize("func", ["avg_pool2d", "avg_pool2d_backward"])
def test_avg_pool_huge_kernel_width_is_fast(func):
    """A kernel ~2**31 wide over a 1-pixel input has one output, reading one real element."""
    call = ("fc.avg_pool2d(x, (1, K), 1, (0, K // 2), backend='cython')" if func == "avg_pool2d"
            else "fc.avg_pool2d_backward(x, x.shape, (1, K), 1, (0, K // 2), backend='cython')")
    seconds, done = _run_isolated(f"""
        import numpy as np, fastconv as fc
        K = 2**31 - 1
        x = np.full((1, 1, 1, 1), 3.0)
        r = {call}
        assert r.shape == (1, 1, 1, 1) and r[0, 0, 0, 0] == 3.0 / K, r
    """, timeout=6)
    assert seconds is not None, "did not finish within 6 s"
    assert done.returncode == 0, done.stderr


@needs_compiled
def test_avg_pool_ceil_mode_window_a_huge_stride_away_is_fast():
    """ceil_mode adds a second output window 2**30 columns after the first; the ~2**30 kernel
    columns between them, which no output reads, are skipped (found by tools/fuzz.py: the
    forward and backward took 100 s before). Kernel (3, 2**31 - 2), stride (1, 2**30), padding
    (1, 2**30 - 1) over 3x3: window 0 covers columns [-(2**30 - 1), 2**30 - 1), window 1
    [1, 2**31 - 1); divisors (count_include_pad: the extent inside the padded input) are
    3 * (2**31 - 2) and 3 * (2**30 + 1)."""
    seconds, done = _run_isolated("""
        import numpy as np, fastconv as fc
        x = np.arange(1.0, 19.0).reshape(1, 2, 3, 3)
        geometry = ((3, 2**31 - 2), (1, 2**30), (1, 2**30 - 1), True)
        y = fc.avg_pool2d(x, *geometry, backend="cython")
        assert y.shape == (1, 2, 3, 2), y.shape
        for oh in range(3):
            rows = x[:, :, max(oh - 1, 0):oh + 2]
            np.testing.assert_allclose(y[:, :, oh, 0], rows.sum(axis=(2, 3)) / (3 * (2**31 - 2)), rtol=1e-12)
            np.testing.assert_allclose(y[:, :, oh, 1], rows[..., 1:].sum(axis=(2, 3)) / (3 * (2**30 + 1)), rtol=1e-12)
        dx = fc.avg_pool2d_backward(np.ones_like(y), x.shape, *geometry, backend="cython")
        coverage = np.array([2, 3, 2])[:, None]  # output rows whose window holds each input row
        share = coverage * (1 / (3 * (2**31 - 2)) + np.array([0, 1, 1]) / (3 * (2**30 + 1)))
        np.testing.assert_allclose(dx[0, 0], share, rtol=1e-12)
    """, timeout=6)
    assert seconds is not None, "did not finish within 6 s"
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------------------------
# Refusals, before any large allocation
# ----------------------------------------------------------------------------------------------

X = np.ones((1, 2, 4, 4))
W = np.ones((3, 2, 2, 2))


def refused_calls():
    """(description, call) of calls that must raise ValueError mentioning `word`."""
    return [
        ("stride 2**31", lambda b: fc.conv2d(X, W, stride=2**31, backend=b), "stride"),
        ("padding 2**63", lambda b: fc.conv2d(X, W, padding=2**63, backend=b), "padding"),
        ("dilation 2**64", lambda b: fc.conv2d(X, W, dilation=(1, 2**64), backend=b), "dilation"),
        ("kernel 2**31", lambda b: fc.im2col(X, 2**31, padding=2**30, backend=b), "kernel_size"),
        ("stride -2**63", lambda b: fc.max_pool2d(X, 2, -(2**63), backend=b), "stride"),
        ("padding 2**31 pool", lambda b: fc.avg_pool2d(X, 2**31 + 2, padding=2**30, backend=b), "kernel_size"),
        # Accepted hyper-parameters whose output would not fit in 64 bits.
        ("conv output > 2**63 elements", lambda b: fc.conv2d(X, W, padding=H31, backend=b), "output"),
        ("im2col output > 2**63 elements", lambda b: fc.im2col(X, 1, padding=H31, backend=b), "output"),
        # (A pooling output cannot overflow: padding <= kernel // 2 keeps OH <= H + 1.)
        # BLAS takes 32-bit sizes: a convolution output plane of more than 2**31 - 1 elements.
        ("conv OH*OW > 2**31", lambda b: fc.conv2d(X, W[:, :, :1, :1], padding=(0, 2**30 + 1), backend=b), "OH*OW"),
        ("conv1d OL > 2**31", lambda b: fc.conv1d(X[:, :, 0], W[:, :, 0, :1], padding=2**30 + 1, backend=b), "OL"),
        ("depthwise output > 2**63 elements",
         lambda b: fc.conv2d(X, W[:2, :1], padding=H31, groups=2, backend=b), "output"),
        ("groups 2**40", lambda b: fc.conv2d(X, W, groups=2**40, backend=b), "groups"),
        ("conv_transpose output > 2**63 elements",
         lambda b: fc.conv_transpose2d(X, W[:2], stride=H31, backend=b), "output"),
        ("conv_transpose stride 2**31", lambda b: fc.conv_transpose2d(X, W[:2], stride=2**31, backend=b), "stride"),
        ("conv_transpose output_padding 2**31",
         lambda b: fc.conv_transpose2d(X, W[:2], stride=H31, output_padding=2**31, backend=b), "output_padding"),
        # input_shape entries whose product overflows 64 bits, or no array could have.
        ("input_shape 2**64", lambda b: fc.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), int),
                                                               (1, 1, 2**64, 4), backend=b), "input_shape"),
        ("input_shape product", lambda b: fc.col2im(np.ones((1, 1, 1)), (1, 1, 2**40, 2**40), 2**20,
                                                    stride=H31, backend=b), None),
        ("input_shape empty batch", lambda b: fc.avg_pool2d_backward(np.ones((0, 1, 1, 1)), (0, 1, 2**62, 2**62),
                                                                     1, backend=b), "input_shape"),
        ("indices 2**32 in a 4x4 plane", lambda b: fc.max_pool2d_backward(
            np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), 2**32), (1, 1, 4, 4), backend=b), "indices"),
        # Pooling options and adaptive pooling.
        ("dilation 2**31 pool", lambda b: fc.max_pool2d(X, 2, dilation=2**31, backend=b), "dilation"),
        ("max_pool1d kernel 2**31", lambda b: fc.max_pool1d(X[:, :, 0], 2**31, padding=2**30, backend=b),
         "kernel_size"),
        ("divisor_override 2**40", lambda b: fc.avg_pool2d(X, 2, divisor_override=2**40, backend=b),
         "divisor_override"),
        ("adaptive output_size 2**31", lambda b: fc.adaptive_avg_pool2d(X, 2**31, backend=b), "output_size"),
        ("adaptive output > 2**60 elements", lambda b: fc.adaptive_avg_pool2d(X, H31, backend=b), "output"),
        ("adaptive windows beyond 64 bits", lambda b: fc.adaptive_avg_pool2d_backward(
            np.ones((1, 1, 4096, 1)), (1, 1, 2**50, 1), backend=b), "64-bit"),
        ("max_pool1d input_shape 2**61", lambda b: fc.max_pool1d_backward(
            np.ones((1, 1, 1)), np.zeros((1, 1, 1), int), (1, 1, 2**61), backend=b), "input_shape"),
    ]


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("case", refused_calls(), ids=lambda c: c[0])
def test_refused_before_allocating(backend, case):
    description, call, word = case
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            call(backend)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.split(":")[0] in {"conv2d", "conv1d", "im2col", "col2im", "max_pool2d", "avg_pool2d",
                                     "max_pool2d_backward", "avg_pool2d_backward", "max_pool1d",
                                     "max_pool1d_backward", "adaptive_avg_pool2d",
                                     "adaptive_avg_pool2d_backward", "conv_transpose2d",
                                     "conv_transpose1d"}, message
    if word:
        assert word in message, message
    assert peak < 16 << 20, f"{description}: {peak} bytes allocated before refusing"


def test_thread_count_refused_beyond_the_maximum():
    """A thread count the kernels cannot take (a C int) or the system cannot start is refused
    when set, not at the next call."""
    before = fc.get_num_threads()
    for n in (2**31, 2**40, 10**6):
        with pytest.raises(ValueError, match="set_num_threads"):
            fc.set_num_threads(n)
    assert fc.get_num_threads() == before
    y, _ = fc.max_pool2d(X, 2)
    assert y.shape == (1, 2, 2, 2)


# ----------------------------------------------------------------------------------------------
# More than 2**31 elements: opt-in (needs > 8 GB of free memory)
# ----------------------------------------------------------------------------------------------

def _free_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@needs_compiled
@pytest.mark.skipif(os.environ.get("FASTCONV_TEST_BIG_MEMORY") != "1",
                    reason="set FASTCONV_TEST_BIG_MEMORY=1 to run (needs ~10 GB of free memory)")
def test_more_than_2_31_elements():
    """A float32 plane of 2 x (2**30 + 64) elements (8.6 GB): average pooling with a window
    reading the far end of the plane, whose flat offsets exceed 2**31."""
    if _free_bytes() < 12 << 30:
        pytest.skip("less than 12 GB of memory available")
    width = 2**30 + 64
    x = np.zeros((1, 1, 2, width), dtype=np.float32)
    x[0, 0, 1, -64:] = np.arange(64, dtype=np.float32)
    y = fc.avg_pool2d(x, (2, 64), (2, 64), backend="cython")
    assert y.shape == (1, 1, 1, width // 64)
    assert y[0, 0, 0, -1] == np.float32(np.arange(64).sum() / 128)
    assert not y[0, 0, 0, :-1].any()
    y, idx = fc.max_pool2d(x, (2, 64), (2, 64), backend="cython")
    assert idx[0, 0, 0, -1] == width + width - 1  # row 1, last column: 2**31 + 191


# ----------------------------------------------------------------------------------------------
# The layer functions: no hyper-parameter makes an array larger than the inputs, so there is
# nothing to refuse; what remains is 64-bit index arithmetic beyond 2**31 elements (opt-in).
# ----------------------------------------------------------------------------------------------

@needs_compiled
@pytest.mark.skipif(os.environ.get("FASTCONV_TEST_BIG_MEMORY") != "1",
                    reason="set FASTCONV_TEST_BIG_MEMORY=1 to run (needs ~10 GB of free memory)")
def test_batch_norm_statistics_beyond_2_31_elements():
    """One channel of 2**31 + 64 float32 elements (8.6 GB), all zero but the last 64 (0..63):
    the planar and the channels-last reductions must reach the far end of the array."""
    if _free_bytes() < 12 << 30:
        pytest.skip("less than 12 GB of memory available")
    from fastconv import _backend

    count = 2**31 + 64
    x = np.zeros((1, 1, count), dtype=np.float32)
    x[0, 0, -64:] = np.arange(64, dtype=np.float32)
    mean_want = np.arange(64).sum() / count
    var_want = (np.arange(64.0) ** 2).sum() / count - mean_want**2
    kernels = _backend.kernels("cython")
    for view in (x, x.reshape(count, 1, 1)):  # planar and channels-last
        mean, var = kernels.batch_norm_statistics(view)
        assert mean[0] == pytest.approx(mean_want, rel=1e-9)
        assert var[0] == pytest.approx(var_want, rel=1e-6)
