"""Channels-last layout (``data_format="NHWC"``) of conv2d, conv2d_backward, max_pool2d,
max_pool2d_backward, avg_pool2d, avg_pool2d_backward, batch_norm and batch_norm_backward, and
of the fastconv.nn layers that take it.

Every NHWC result is checked against PyTorch (on permuted NCHW/OIHW copies, in float64), the
NCHW result of the same backend transposed, and the reference backend; gradients against
central differences; the compiled kernels at 1 and 2 threads for bitwise equality; memory
layouts, empty batches, max pooling's h*W + w indices, and the refusals of a bad
data_format or a weight in the wrong layout. Expected values never come from the function
under test itself.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import AVAILABLE_BACKENDS, pair, pool_option_configs, pool_option_out_shape
from helpers import numerical_gradient, optional_torch, randn

import fastconv as fc
from fastconv import reference

torch = optional_torch()  # torch comparisons skip without torch; the rest runs
F = torch.nn.functional

DTYPES = [np.float32, np.float64]
seeds = st.integers(0, 2**32 - 1)
needs_compiled = pytest.mark.skipif("cython" not in AVAILABLE_BACKENDS, reason="compiled backend not built")
NHWC = {"data_format": "NHWC"}


# ----------------------------------------------------------------------------------------------
# Layout helpers (plain NumPy, independent of fastconv)
# ----------------------------------------------------------------------------------------------

def to_nhwc(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def to_nchw(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def to_hwio(w):
    """(F, C/groups, KH, KW) -> (KH, KW, C/groups, F)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def to_oihw(w):
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def nhwc_shape(shape):
    n, c, h, w = shape
    return (n, h, w, c)


def close(actual, expected, dtype):
    """Equal within the dtype's tolerance, relative to the expected array's scale."""
    expected = np.asarray(expected, dtype=np.float64)
    rtol = 2e-4 if np.dtype(dtype) == np.float32 else 1e-10
    scale = float(np.max(np.abs(expected), initial=0.0)) + 1e-30
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=rtol * scale)


def tensor(a, requires_grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def out_size(size, k, s, p_before, p_after, d):
    """API.md's output size, written out here (not fastconv's)."""
    return (size + p_before + p_after - d * (k - 1) - 1) // s + 1


# ----------------------------------------------------------------------------------------------
# Convolution configurations: groups (depthwise too), int / pair / "same" / "valid" padding
# ----------------------------------------------------------------------------------------------

@st.composite
def conv_nhwc_configs(draw, max_batch=3, max_extra=5):
    """x_shape and w_shape (NCHW / OIHW, as torch takes them), stride, padding, dilation,
    groups, and the output shape (NCHW) from API.md's formula."""
    n = draw(st.integers(0, max_batch))
    groups = draw(st.sampled_from([1, 1, 2, 3, "depthwise"]))
    if groups == "depthwise":
        c = draw(st.integers(1, 6))
        groups, per_group_c, per_group_f = c, 1, draw(st.integers(1, 2))
    else:
        per_group_c, per_group_f = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    c, f = per_group_c * groups, per_group_f * groups
    kernel = [draw(st.integers(1, 3)) for _ in range(2)]
    dilation = [draw(st.integers(1, 2)) for _ in range(2)]
    padding_kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    stride = [1, 1] if padding_kind == "same" else [draw(st.integers(1, 3)) for _ in range(2)]
    if padding_kind == "same":
        pads = [((d * (k - 1)) // 2, d * (k - 1) - (d * (k - 1)) // 2) for k, d in zip(kernel, dilation)]
        padding = "same"
    elif padding_kind == "valid":
        pads, padding = [(0, 0), (0, 0)], "valid"
    else:
        p = [draw(st.integers(0, 2)) for _ in range(2)]
        if padding_kind == "int":
            p[1] = p[0]
        pads, padding = [(v, v) for v in p], (p[0] if padding_kind == "int" else tuple(p))
    sizes = []
    for k, d, (before, after) in zip(kernel, dilation, pads):
        smallest = max(1, d * (k - 1) + 1 - before - after)
        sizes.append(draw(st.integers(smallest, smallest + max_extra)))
    out = [out_size(s, k, st_, b, a, d)
           for s, k, st_, (b, a), d in zip(sizes, kernel, stride, pads, dilation)]
    return {
        "x_shape": (n, c, *sizes), "w_shape": (f, per_group_c, *kernel),
        "stride": stride[0] if stride[0] == stride[1] and draw(st.booleans()) else tuple(stride),
        "padding": padding,
        "dilation": dilation[0] if dilation[0] == dilation[1] and draw(st.booleans()) else tuple(dilation),
        "groups": groups, "out_shape": (n, f, *out),
    }


def conv_hyper(cfg):
    return {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}


def torch_conv(x, w, b, dout, cfg):
    """torch's forward and gradients in float64 on NCHW / OIHW copies: (y, dx, dw, db)."""
    xt, wt = tensor(x, True), tensor(w, True)
    bt = tensor(b, True) if b is not None else None
    stride, dilation = pair(cfg["stride"]), pair(cfg["dilation"])
    padding = cfg["padding"] if isinstance(cfg["padding"], str) else pair(cfg["padding"])
    with warnings.catch_warnings():  # torch: "same" with an even kernel pads a copy
        warnings.simplefilter("ignore", UserWarning)
        yt = F.conv2d(xt, wt, bt, stride, padding, dilation, cfg["groups"])
    yt.backward(tensor(dout))
    db = bt.grad.numpy() if bt is not None else tensor(dout).sum((0, 2, 3)).numpy()
    return yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), db


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@given(cfg=conv_nhwc_configs(), seed=seeds, with_bias=st.booleans())
def test_conv2d_nhwc_matches_torch_and_nchw(backend, dtype, cfg, seed, with_bias):
    x = randn(*cfg["x_shape"], seed=seed, dtype=dtype)
    w = randn(*cfg["w_shape"], seed=seed + 1, dtype=dtype)
    b = randn(cfg["w_shape"][0], seed=seed + 2, dtype=dtype) if with_bias else None
    dout = randn(*cfg["out_shape"], seed=seed + 3, dtype=dtype)
    hyper = conv_hyper(cfg)

    y = fc.conv2d(to_nhwc(x), to_hwio(w), b, **hyper, **NHWC, backend=backend)
    dx, dw, db = fc.conv2d_backward(to_nhwc(dout), to_nhwc(x), to_hwio(w), **hyper, **NHWC, backend=backend)
    assert y.shape == nhwc_shape(cfg["out_shape"]) and y.dtype == dtype and y.flags.c_contiguous
    assert dx.shape == nhwc_shape(cfg["x_shape"]) and dw.shape == to_hwio(w).shape
    assert db.shape == (cfg["w_shape"][0],)
    assert dx.dtype == dw.dtype == db.dtype == dtype

    # The same backend's NCHW results, transposed.
    y_first = fc.conv2d(x, w, b, **hyper, backend=backend)
    dx_first, dw_first, db_first = fc.conv2d_backward(dout, x, w, **hyper, backend=backend)
    close(y, to_nhwc(y_first), dtype)
    close(dx, to_nhwc(dx_first), dtype)
    close(dw, to_hwio(dw_first), dtype)
    close(db, db_first, dtype)
    # The reference backend's NHWC results.
    close(y, reference.conv2d(to_nhwc(x), to_hwio(w), b, **hyper, **NHWC), dtype)
    ref = reference.conv2d_backward(to_nhwc(dout), to_nhwc(x), to_hwio(w), **hyper, **NHWC)
    for got, want in zip((dx, dw, db), ref):
        close(got, want, dtype)
    # torch.
    yt, dxt, dwt, dbt = torch_conv(x, w, b, dout, cfg)
    close(y, to_nhwc(yt), dtype)
    close(dx, to_nhwc(dxt), dtype)
    close(dw, to_hwio(dwt), dtype)
    close(db, dbt, dtype)


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("case", [
    # (N, C, H, W, F, KH, KW, stride, padding, dilation, groups)
    (2, 3, 5, 4, 2, 3, 2, 1, 1, 1, 1),
    (1, 4, 6, 5, 4, 3, 3, 2, (1, 0), (1, 2), 2),
    (2, 3, 5, 5, 6, 3, 3, 1, "same", 2, 3),         # depthwise, channel multiplier 2
    (1, 2, 4, 4, 3, 1, 1, 1, 0, 1, 1),              # pointwise
])
def test_conv2d_nhwc_gradients_central_differences(backend, case):
    n, c, h, w_, f, kh, kw, stride, padding, dilation, groups = case
    x = randn(n, h, w_, c, seed=1)
    w = randn(kh, kw, c // groups, f, seed=2)
    b = randn(f, seed=3)
    hyper = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    dout = randn(*fc.conv2d(x, w, b, **hyper, **NHWC, backend="reference").shape, seed=4)

    def loss():
        return float(np.sum(fc.conv2d(x, w, b, **hyper, **NHWC, backend=backend) * dout))

    dx, dw, db = fc.conv2d_backward(dout, x, w, **hyper, **NHWC, backend=backend)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, numerical_gradient(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, numerical_gradient(loss, b), rtol=1e-6, atol=1e-7)


# Large enough to take the parallel paths (several row blocks; a small batch's bands and a
# large batch's chunks of images in the backward; the depthwise kernels' row tasks).
THREAD_CASES = [
    # (N, C, H, W, F, K, stride, padding, groups)
    (2, 8, 21, 19, 16, 3, 1, 1, 1),
    (9, 6, 13, 12, 10, 3, 2, 1, 1),
    (3, 12, 17, 15, 12, 3, 1, 1, 12),
    (10, 8, 11, 11, 16, 3, 1, "same", 8),
    (2, 16, 14, 14, 8, 1, 1, 0, 1),
    (4, 6, 15, 15, 9, 5, 1, 2, 3),
]


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", THREAD_CASES)
def test_conv2d_nhwc_bitwise_identical_for_1_and_2_threads(dtype, case):
    n, c, h, w_, f, k, stride, padding, groups = case
    x, w = randn(n, h, w_, c, seed=5, dtype=dtype), randn(k, k, c // groups, f, seed=6, dtype=dtype)
    b = randn(f, seed=7, dtype=dtype)
    hyper = {"stride": stride, "padding": padding, "groups": groups}
    results = []
    for threads in (1, 2):
        fc.set_num_threads(threads)
        y = fc.conv2d(x, w, b, **hyper, **NHWC, backend="cython")
        dout = randn(*y.shape, seed=8, dtype=dtype)
        results.append((y,) + fc.conv2d_backward(dout, x, w, **hyper, **NHWC, backend="cython"))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
    # ... and right (against the NCHW kernels, a different code path).
    fc.set_num_threads(2)
    close(results[0][0], to_nhwc(fc.conv2d(to_nchw(x), to_oihw(w), b, **hyper, backend="cython")), dtype)


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_conv2d_nhwc_memory_layouts(backend):
    """Views (a transposed NCHW array is the usual way to hold NHWC data), Fortran order,
    negative strides and read-only arrays give the C-contiguous copy's result exactly."""
    x_first = randn(2, 5, 7, 6, seed=9)            # NCHW storage
    w_oihw = randn(4, 5, 3, 3, seed=10)
    x_views = [np.moveaxis(x_first, 1, -1), np.asfortranarray(to_nhwc(x_first)),
               to_nhwc(x_first)[:, ::-1, ::-1][:, ::-1, ::-1], to_nhwc(x_first)[..., ::-1][..., ::-1]]
    w_views = [w_oihw.transpose(2, 3, 1, 0), np.asfortranarray(to_hwio(w_oihw))]
    readonly = to_nhwc(x_first)
    readonly.flags.writeable = False
    x_views.append(readonly)
    strided = np.zeros((2, 7, 6, 10))
    strided[..., ::2] = to_nhwc(x_first)
    x_views.append(strided[..., ::2])
    want_y = fc.conv2d(to_nhwc(x_first), to_hwio(w_oihw), None, padding=1, **NHWC, backend=backend)
    dout = randn(*want_y.shape, seed=11)
    want_grads = fc.conv2d_backward(dout, to_nhwc(x_first), to_hwio(w_oihw), padding=1, **NHWC, backend=backend)
    for xv in x_views:
        for wv in w_views:
            before = xv.copy()
            np.testing.assert_array_equal(fc.conv2d(xv, wv, None, padding=1, **NHWC, backend=backend), want_y)
            for got, want in zip(fc.conv2d_backward(np.asfortranarray(dout), xv, wv, padding=1, **NHWC,
                                                    backend=backend), want_grads):
                np.testing.assert_array_equal(got, want)
                assert got.flags.c_contiguous
            np.testing.assert_array_equal(xv, before)


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_conv2d_nhwc_empty_batch_and_mixed_dtypes(backend):
    x, w = np.zeros((0, 5, 6, 4), np.float32), np.ones((3, 3, 2, 6), np.float32)
    y = fc.conv2d(x, w, None, padding=1, groups=2, **NHWC, backend=backend)
    assert y.shape == (0, 5, 6, 6) and y.dtype == np.float32
    dx, dw, db = fc.conv2d_backward(np.zeros((0, 5, 6, 6)), x, w, padding=1, groups=2, **NHWC, backend=backend)
    assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, (6,))
    assert not dw.any() and not db.any()
    # float32 with float64 computes in float64; ints are promoted.
    x32, w64 = randn(1, 4, 4, 2, seed=12, dtype=np.float32), randn(2, 2, 2, 3, seed=13)
    y = fc.conv2d(x32, w64, **NHWC, backend=backend)
    assert y.dtype == np.float64
    close(y, to_nhwc(fc.conv2d(to_nchw(x32), to_oihw(w64), backend=backend)), np.float64)
    xi = np.arange(4 * 4 * 2).reshape(1, 4, 4, 2) % 5
    close(fc.conv2d(xi, w64, **NHWC, backend=backend),
          to_nhwc(conv_plain(to_nchw(xi), to_oihw(w64))), np.float64)


def conv_plain(x, w):
    """A direct loop over an NCHW input and OIHW weights, stride 1, no padding."""
    n, _, h, w_ = x.shape
    f, _, kh, kw = w.shape
    y = np.zeros((n, f, h - kh + 1, w_ - kw + 1))
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nchw,fc->nfhw", x[:, :, i:i + y.shape[2], j:j + y.shape[3]], w[:, :, i, j])
    return y


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------

def pool_args(cfg, kind):
    keys = ("kernel_size", "stride", "padding", "ceil_mode") + (
        ("dilation",) if kind == "max" else ("count_include_pad", "divisor_override"))
    return {k: cfg[k] for k in keys}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@given(cfg=pool_option_configs(kind="max", max_channels=5), seed=seeds)
def test_max_pool2d_nhwc_matches_torch_and_nchw(backend, dtype, cfg, seed):
    x = randn(*cfg["x_shape"], seed=seed, dtype=dtype)
    args = pool_args(cfg, "max")
    y, idx = fc.max_pool2d(to_nhwc(x), **args, **NHWC, backend=backend)
    out_shape = pool_option_out_shape(cfg)
    assert y.shape == idx.shape == nhwc_shape(out_shape) and idx.dtype == np.int64 and y.dtype == dtype
    y_first, idx_first = fc.max_pool2d(x, **args, backend=backend)
    np.testing.assert_array_equal(y, to_nhwc(y_first))
    np.testing.assert_array_equal(idx, to_nhwc(idx_first))
    y_ref, idx_ref = reference.max_pool2d(to_nhwc(x), **args, **NHWC)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)

    dout = randn(*y.shape, seed=seed + 1, dtype=dtype)
    dx = fc.max_pool2d_backward(dout, idx, to_nhwc(x).shape, **NHWC, backend=backend)
    assert dx.shape == to_nhwc(x).shape and dx.dtype == dtype
    np.testing.assert_array_equal(
        dx, to_nhwc(fc.max_pool2d_backward(to_nchw(dout), idx_first, x.shape, backend=backend)))

    xt = tensor(x, True)
    yt, it = F.max_pool2d(xt, pair(cfg["kernel_size"]), cfg["stride"] and pair(cfg["stride"]),
                          pair(cfg["padding"]), pair(cfg["dilation"]), cfg["ceil_mode"], return_indices=True)
    yt.backward(tensor(to_nchw(dout)))
    close(y, to_nhwc(yt.detach().numpy()), dtype)
    np.testing.assert_array_equal(idx, to_nhwc(it.numpy()))
    close(dx, to_nhwc(xt.grad.numpy()), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@given(cfg=pool_option_configs(kind="avg", max_channels=5), seed=seeds)
def test_avg_pool2d_nhwc_matches_torch_and_nchw(backend, dtype, cfg, seed):
    x = randn(*cfg["x_shape"], seed=seed, dtype=dtype)
    args = pool_args(cfg, "avg")
    y = fc.avg_pool2d(to_nhwc(x), **args, **NHWC, backend=backend)
    assert y.shape == nhwc_shape(pool_option_out_shape(cfg)) and y.dtype == dtype
    close(y, to_nhwc(fc.avg_pool2d(x, **args, backend=backend)), dtype)
    close(y, reference.avg_pool2d(to_nhwc(x), **args, **NHWC), dtype)
    dout = randn(*y.shape, seed=seed + 1, dtype=dtype)
    dx = fc.avg_pool2d_backward(dout, to_nhwc(x).shape, **args, **NHWC, backend=backend)
    assert dx.shape == to_nhwc(x).shape and dx.dtype == dtype
    close(dx, to_nhwc(fc.avg_pool2d_backward(to_nchw(dout), x.shape, **args, backend=backend)), dtype)
    close(dx, reference.avg_pool2d_backward(dout, to_nhwc(x).shape, **args, **NHWC), dtype)

    xt = tensor(x, True)
    yt = F.avg_pool2d(xt, pair(cfg["kernel_size"]), cfg["stride"] and pair(cfg["stride"]), pair(cfg["padding"]),
                      cfg["ceil_mode"], cfg["count_include_pad"], cfg["divisor_override"])
    yt.backward(tensor(to_nchw(dout)))
    close(y, to_nhwc(yt.detach().numpy()), dtype)
    close(dx, to_nhwc(xt.grad.numpy()), dtype)


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_max_pool2d_nhwc_indices_are_plane_positions(backend):
    """Channel 0 rises along the plane (each window's maximum at its bottom right), channel 1
    falls (top left); the indices are h*W + w of the unpadded plane, whatever the channel."""
    h, w_ = 4, 6
    plane = np.arange(h * w_, dtype=np.float64).reshape(h, w_)
    x = np.stack([plane, -plane], axis=-1)[None]          # (1, 4, 6, 2)
    y, idx = fc.max_pool2d(x, 2, **NHWC, backend=backend)
    assert idx.shape == (1, 2, 3, 2)
    np.testing.assert_array_equal(idx[0, :, :, 0], [[7, 9, 11], [19, 21, 23]])
    np.testing.assert_array_equal(idx[0, :, :, 1], [[0, 2, 4], [12, 14, 16]])
    np.testing.assert_array_equal(y[0, :, :, 0], [[7, 9, 11], [19, 21, 23]])
    # Padding shifts the windows, never the numbering.
    _, idx = fc.max_pool2d(x, 3, 2, 1, **NHWC, backend=backend)
    np.testing.assert_array_equal(idx[0, :, :, 0], [[7, 9, 11], [19, 21, 23]])
    np.testing.assert_array_equal(idx[0, :, :, 1], [[0, 1, 3], [6, 7, 9]])
    # The backward scatters by those positions, into the channel of the index.
    dx = fc.max_pool2d_backward(np.ones((1, 2, 3, 2)), idx, x.shape, **NHWC, backend=backend)
    want = np.zeros(x.shape)
    for c in range(2):
        for i in idx[0, :, :, c].ravel():
            want[0, i // w_, i % w_, c] += 1
    np.testing.assert_array_equal(dx, want)
    # Ties go to the first maximum in row-major window order; NaN is the maximum.
    flat = np.zeros((1, 2, 2, 3))
    flat[0, 1, 0, 1] = np.nan
    y, idx = fc.max_pool2d(flat, 2, **NHWC, backend=backend)
    np.testing.assert_array_equal(idx.ravel(), [0, 2, 0])
    assert np.isnan(y[0, 0, 0, 1]) and y[0, 0, 0, 0] == 0


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_pooling_nhwc_gradients_central_differences(backend):
    x = randn(2, 5, 6, 3, seed=14)
    dout_avg = randn(*fc.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False, **NHWC,
                                    backend="reference").shape, seed=15)

    def avg_loss():
        y = fc.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False, **NHWC, backend=backend)
        return float(np.sum(y * dout_avg))

    dx = fc.avg_pool2d_backward(dout_avg, x.shape, 3, 2, 1, ceil_mode=True, count_include_pad=False, **NHWC,
                                backend=backend)
    np.testing.assert_allclose(dx, numerical_gradient(avg_loss, x), rtol=1e-6, atol=1e-8)

    y, idx = fc.max_pool2d(x, 3, 2, 1, dilation=(1, 2), **NHWC, backend=backend)
    dout_max = randn(*y.shape, seed=16)

    def max_loss():
        return float(np.sum(fc.max_pool2d(x, 3, 2, 1, dilation=(1, 2), **NHWC, backend=backend)[0] * dout_max))

    dx = fc.max_pool2d_backward(dout_max, idx, x.shape, **NHWC, backend=backend)
    np.testing.assert_allclose(dx, numerical_gradient(max_loss, x), rtol=1e-6, atol=1e-8)


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, window", [
    ((2, 33, 31, 16), {"kernel_size": 2}),
    ((9, 12, 13, 5), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((1, 40, 24, 64), {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)}),
])
def test_pooling_nhwc_bitwise_identical_for_1_and_2_threads(dtype, shape, window):
    x = randn(*shape, seed=17, dtype=dtype)
    results = []
    for threads in (1, 2):
        fc.set_num_threads(threads)
        y, idx = fc.max_pool2d(x, **window, **NHWC, backend="cython")
        dout = randn(*y.shape, seed=18, dtype=dtype)
        dx = fc.max_pool2d_backward(dout, idx, x.shape, **NHWC, backend="cython")
        ya = fc.avg_pool2d(x, **window, count_include_pad=False, **NHWC, backend="cython")
        dxa = fc.avg_pool2d_backward(dout, x.shape, **window, count_include_pad=False, **NHWC, backend="cython")
        results.append((y, idx, dx, ya, dxa))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_pooling_nhwc_layouts_and_empty_batch(backend):
    x_first = randn(2, 3, 7, 8, seed=19)
    view = np.moveaxis(x_first, 1, -1)               # non-contiguous NHWC view
    y, idx = fc.max_pool2d(view, 2, **NHWC, backend=backend)
    y_c, idx_c = fc.max_pool2d(to_nhwc(x_first), 2, **NHWC, backend=backend)
    np.testing.assert_array_equal(y, y_c)
    np.testing.assert_array_equal(idx, idx_c)
    np.testing.assert_array_equal(
        fc.max_pool2d_backward(np.moveaxis(to_nchw(y), 1, -1), np.asfortranarray(idx), view.shape, **NHWC,
                               backend=backend),
        fc.max_pool2d_backward(y_c, idx_c, view.shape, **NHWC, backend=backend))
    np.testing.assert_array_equal(fc.avg_pool2d(view[:, ::-1], 3, 1, 1, **NHWC, backend=backend),
                                  fc.avg_pool2d(np.ascontiguousarray(view[:, ::-1]), 3, 1, 1, **NHWC,
                                                backend=backend))
    empty = np.zeros((0, 6, 6, 3), np.float32)
    y, idx = fc.max_pool2d(empty, 2, **NHWC, backend=backend)
    assert y.shape == idx.shape == (0, 3, 3, 3) and y.dtype == np.float32
    assert fc.avg_pool2d(empty, 2, **NHWC, backend=backend).shape == (0, 3, 3, 3)
    assert fc.max_pool2d_backward(y, idx, empty.shape, **NHWC, backend=backend).shape == empty.shape
    assert fc.avg_pool2d_backward(y, empty.shape, 2, **NHWC, backend=backend).shape == empty.shape


# ----------------------------------------------------------------------------------------------
# Batch norm (channels on the last axis)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_nhwc_matches_torch_and_nchw(backend, dtype, training):
    x = randn(3, 5, 4, 6, seed=20, dtype=dtype)       # NHWC, 6 channels
    weight, bias = randn(6, seed=21, dtype=dtype), randn(6, seed=22, dtype=dtype)
    rm, rv = randn(6, seed=23, dtype=dtype), np.abs(randn(6, seed=24, dtype=dtype)) + 0.5
    rm_first, rv_first = rm.copy(), rv.copy()
    y, mean, invstd = fc.batch_norm(x, weight, bias, rm, rv, training, 0.2, 1e-3, **NHWC, backend=backend)
    y_first, mean_first, invstd_first = fc.batch_norm(to_nchw(x), weight, bias, rm_first, rv_first, training,
                                                      0.2, 1e-3, backend=backend)
    close(y, to_nhwc(y_first), dtype)
    close(mean, mean_first, dtype)
    close(invstd, invstd_first, dtype)
    close(rm, rm_first, dtype)
    close(rv, rv_first, dtype)
    dout = randn(*x.shape, seed=25, dtype=dtype)
    dx, dweight, dbias = fc.batch_norm_backward(dout, x, weight, mean, invstd, training, **NHWC, backend=backend)
    dx_first, dweight_first, dbias_first = fc.batch_norm_backward(to_nchw(dout), to_nchw(x), weight, mean, invstd,
                                                                  training, backend=backend)
    close(dx, to_nhwc(dx_first), dtype)
    close(dweight, dweight_first, dtype)
    close(dbias, dbias_first, dtype)

    xt, wt, bt = tensor(to_nchw(x), True), tensor(weight, True), tensor(bias, True)
    rmt, rvt = tensor(randn(6, seed=23, dtype=dtype)), tensor(np.abs(randn(6, seed=24, dtype=dtype)) + 0.5)
    yt = F.batch_norm(xt, rmt, rvt, wt, bt, training, 0.2, 1e-3)
    yt.backward(tensor(to_nchw(dout)))
    close(y, to_nhwc(yt.detach().numpy()), dtype)
    close(rm, rmt.numpy(), dtype)
    close(rv, rvt.numpy(), dtype)
    close(dx, to_nhwc(xt.grad.numpy()), dtype)
    close(dweight, wt.grad.numpy(), dtype)
    close(dbias, bt.grad.numpy(), dtype)


@needs_compiled
def test_batch_norm_nhwc_bitwise_identical_for_1_and_2_threads():
    x = randn(6, 17, 19, 24, seed=26, dtype=np.float32)
    dout = randn(*x.shape, seed=27, dtype=np.float32)
    results = []
    for threads in (1, 2):
        fc.set_num_threads(threads)
        y, mean, invstd = fc.batch_norm(x, **NHWC, backend="cython")
        results.append((y, mean, invstd) + fc.batch_norm_backward(dout, x, None, mean, invstd, **NHWC,
                                                                  backend="cython"))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


# ----------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------

def nhwc_calls(data_format):
    """Each function of the channels-last contract, called on valid NHWC operands."""
    x, w = np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 5))
    dout, pooled = np.ones((1, 2, 2, 5)), np.ones((1, 2, 2, 2))
    idx = np.zeros((1, 2, 2, 2), np.int64)
    fmt = {"data_format": data_format}
    return {
        "conv2d": lambda be: fc.conv2d(x, w, **fmt, backend=be),
        "conv2d_backward": lambda be: fc.conv2d_backward(dout, x, w, **fmt, backend=be),
        "max_pool2d": lambda be: fc.max_pool2d(x, 2, **fmt, backend=be),
        "max_pool2d_backward": lambda be: fc.max_pool2d_backward(pooled, idx, x.shape, **fmt, backend=be),
        "avg_pool2d": lambda be: fc.avg_pool2d(x, 2, **fmt, backend=be),
        "avg_pool2d_backward": lambda be: fc.avg_pool2d_backward(pooled, x.shape, 2, **fmt, backend=be),
        "batch_norm": lambda be: fc.batch_norm(x, **fmt, backend=be),
        "batch_norm_backward": lambda be: fc.batch_norm_backward(x, x, None, np.zeros(2), np.ones(2), **fmt,
                                                                 backend=be),
    }


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("name", list(nhwc_calls("NHWC")))
def test_unknown_data_format_is_refused(backend, name):
    nhwc_calls("NHWC")[name](backend)      # the valid call runs
    for bad in ("nhwc", "NCWH", "channels_last", "", "NHWC "):
        with pytest.raises(ValueError, match=rf"^{name}: data_format must be one of \('NCHW', 'NHWC'\), "
                                             rf"got '{bad}'"):
            nhwc_calls(bad)[name](backend)
    with pytest.raises(TypeError, match=rf"^{name}: data_format must be one of"):
        nhwc_calls(None)[name](backend)


@pytest.mark.parametrize("name", list(nhwc_calls("NHWC")))
def test_data_format_is_keyword_only(name):
    import inspect

    param = inspect.signature(getattr(fc, name)).parameters["data_format"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default == "NCHW"
    assert inspect.signature(getattr(reference, name)).parameters["data_format"].default == "NCHW"


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_wrong_weight_layout_is_refused(backend):
    x = np.ones((2, 6, 6, 3))
    oihw = np.ones((8, 3, 1, 1))         # an OIHW weight given with data_format="NHWC"
    with pytest.raises(ValueError, match=r"x has 3 channels but w expects 1 \(w\.shape=\(8, 3, 1, 1\), "
                                         r"\(KH, KW, C/groups, F\) with data_format='NHWC'\)"):
        fc.conv2d(x, oihw, **NHWC, backend=backend)
    with pytest.raises(ValueError, match=r"w expects 1 .*data_format='NHWC'"):
        fc.conv2d_backward(np.ones((2, 6, 6, 8)), x, oihw, **NHWC, backend=backend)
    # An NCHW image with HWIO weights: the channels (last axis) do not match.
    with pytest.raises(ValueError, match=r"x has 6 channels but w expects 3"):
        fc.conv2d(np.ones((2, 3, 6, 6)), np.ones((3, 3, 3, 4)), **NHWC, backend=backend)
    # The bias is checked against F, the weight's last axis.
    with pytest.raises(ValueError, match=r"\bb\b.*\(4,\)"):
        fc.conv2d(x, np.ones((3, 3, 3, 4)), np.ones(3), **NHWC, backend=backend)
    # dout must be (N, OH, OW, F) = (2, 4, 5, 4), not NCHW's (2, 4, 4, 5).
    with pytest.raises(ValueError, match=r"dout.*\(2, 4, 5, 4\)"):
        fc.conv2d_backward(np.ones((2, 4, 4, 5)), np.ones((2, 6, 7, 3)), np.ones((3, 3, 3, 4)), **NHWC,
                           backend=backend)
    # groups must divide the channels of the last axis.
    with pytest.raises(ValueError, match=r"groups"):
        fc.conv2d(x, np.ones((3, 3, 1, 4)), groups=2, **NHWC, backend=backend)


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_pooling_nhwc_refusals(backend):
    x = np.ones((2, 6, 6, 3))
    y, idx = fc.max_pool2d(x, 2, **NHWC, backend=backend)
    # An NCHW input_shape given with NHWC dout: N and C (last axes) do not agree.
    with pytest.raises(ValueError, match=r"input_shape \(2, 3, 6, 6\) must have the same N and C as dout"):
        fc.max_pool2d_backward(y, idx, (2, 3, 6, 6), **NHWC, backend=backend)
    with pytest.raises(ValueError, match=r"dout"):
        fc.avg_pool2d_backward(y, (2, 3, 6, 6), 2, **NHWC, backend=backend)
    # Indices hold plane positions: H*W = 36 is outside the plane.
    with pytest.raises(ValueError, match=r"indices"):
        fc.max_pool2d_backward(y, np.full(idx.shape, 36), x.shape, **NHWC, backend=backend)
    fc.max_pool2d_backward(y, np.full(idx.shape, 35), x.shape, **NHWC, backend=backend)
    # The window is checked against H and W (axes 1 and 2), not against C.
    with pytest.raises(ValueError):
        fc.max_pool2d(np.ones((1, 6, 6, 2)), (1, 7), **NHWC, backend=backend)
    fc.max_pool2d(np.ones((1, 6, 6, 2)), (6, 6), **NHWC, backend=backend)


# ----------------------------------------------------------------------------------------------
# fastconv.nn
# ----------------------------------------------------------------------------------------------

def small_net(data_format, seed=0):
    nn = fc.nn
    fmt = {"data_format": data_format}
    return nn.Sequential(
        nn.Conv2D(3, 6, 3, padding=1, **fmt, dtype=np.float64, rng=seed),
        nn.BatchNorm2D(6, **fmt, dtype=np.float64),
        nn.ReLU(),
        nn.MaxPool2D(2, **fmt),
        nn.Conv2D(6, 6, 3, padding="same", groups=3, **fmt, dtype=np.float64, rng=seed + 1),
        nn.AvgPool2D(2, ceil_mode=True, **fmt),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 4, dtype=np.float64, rng=seed + 2),
    )


def test_nn_layers_take_data_format():
    nn = fc.nn
    conv = nn.Conv2D(4, 6, (3, 2), groups=2, data_format="NHWC", rng=0)
    assert conv.params["weight"].shape == (3, 2, 2, 6) and conv.data_format == "NHWC"
    # The same seed draws the same weights as the NCHW layer, in HWIO order.
    first = nn.Conv2D(4, 6, (3, 2), groups=2, rng=0)
    np.testing.assert_array_equal(conv.params["weight"], to_hwio(first.params["weight"]))
    np.testing.assert_array_equal(conv.params["bias"], first.params["bias"])
    assert "data_format='NHWC'" in repr(conv) and "data_format" not in repr(first)
    for make in (lambda f: nn.Conv2D(2, 2, 1, data_format=f), lambda f: nn.MaxPool2D(2, data_format=f),
                 lambda f: nn.AvgPool2D(2, data_format=f), lambda f: nn.BatchNorm2D(2, data_format=f)):
        assert make("NCHW").data_format == "NCHW"
        with pytest.raises(ValueError, match="data_format must be one of"):
            make("nhwc")
    bn = nn.BatchNorm2D(3, data_format="NHWC")
    with pytest.raises(ValueError, match=r"x has 4 channels \(axis 3\)"):
        bn.forward(np.ones((2, 3, 5, 4), np.float32))
    with pytest.raises(TypeError):
        nn.Conv2D(2, 2, 1, 1, 0, 1, True, 1, "NHWC")   # keyword-only


@pytest.mark.parametrize("training", [True, False])
def test_nhwc_net_step_equals_nchw_net(training):
    """One forward/backward/SGD step of a small NHWC net equals the NCHW net's with the
    weights transposed (HWIO), the NCHW net's Linear columns permuted to Flatten's (h, w, c)
    order, and inputs/gradients transposed."""
    first, last = small_net("NCHW"), small_net("NHWC")
    for layer_first, layer_last in zip(first.layers, last.layers):
        if isinstance(layer_first, fc.nn.Conv2D):
            layer_last.params["weight"][...] = to_hwio(layer_first.params["weight"])
            layer_last.params["bias"][...] = layer_first.params["bias"]
    # Flatten keeps memory order: NCHW flattens (c, h, w), NHWC (h, w, c).
    lin_first, lin_last = first.layers[-1], last.layers[-1]
    weight = lin_first.params["weight"].reshape(4, 6, 2, 2)
    lin_last.params["weight"][...] = weight.transpose(0, 2, 3, 1).reshape(4, -1)
    lin_last.params["bias"][...] = lin_first.params["bias"]
    if not training:
        first.eval()
        last.eval()

    x = randn(3, 3, 7, 7, seed=30)
    labels = np.array([0, 3, 1])
    losses = []
    for net, data in ((first, x), (last, to_nhwc(x))):
        loss_fn = fc.nn.SoftmaxCrossEntropy()
        net.zero_grad()
        logits = net.forward(data)
        losses.append((logits, loss_fn.forward(logits, labels)))
        dx = net.backward(loss_fn.backward())
        losses[-1] += (dx,)
        fc.nn.SGD(net, lr=0.1, momentum=0.9).step()
    (logits_first, loss_first, dx_first), (logits_last, loss_last, dx_last) = losses
    np.testing.assert_allclose(logits_last, logits_first, rtol=1e-10, atol=1e-12)
    assert loss_last == pytest.approx(loss_first, rel=1e-12)
    np.testing.assert_allclose(dx_last, to_nhwc(dx_first), rtol=1e-9, atol=1e-12)
    for layer_first, layer_last in zip(first.layers, last.layers):
        if isinstance(layer_first, fc.nn.Conv2D):
            np.testing.assert_allclose(layer_last.params["weight"], to_hwio(layer_first.params["weight"]),
                                       rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(layer_last.grads["weight"], to_hwio(layer_first.grads["weight"]),
                                       rtol=1e-9, atol=1e-12)
        if isinstance(layer_first, fc.nn.BatchNorm2D):
            for key in ("running_mean", "running_var"):
                np.testing.assert_allclose(layer_last.buffers[key], layer_first.buffers[key], rtol=1e-10)
            np.testing.assert_allclose(layer_last.params["weight"], layer_first.params["weight"], rtol=1e-10)
    weight = lin_first.params["weight"].reshape(4, 6, 2, 2).transpose(0, 2, 3, 1).reshape(4, -1)
    np.testing.assert_allclose(lin_last.params["weight"], weight, rtol=1e-10, atol=1e-12)


def test_nhwc_layers_gradcheck():
    nn = fc.nn
    x = randn(2, 5, 4, 4, seed=31)
    for layer in (nn.Conv2D(4, 6, 3, stride=2, padding=1, groups=2, data_format="NHWC", dtype=np.float64, rng=1),
                  nn.BatchNorm2D(4, data_format="NHWC", dtype=np.float64),
                  nn.AvgPool2D(2, padding=1, count_include_pad=False, data_format="NHWC", dtype=np.float64),
                  nn.MaxPool2D(3, 1, 1, data_format="NHWC", dtype=np.float64)):
        assert nn.gradcheck(layer, x) < 1e-6, layer
