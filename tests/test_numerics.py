"""Numerical edge cases (docs/numerics.md states the rules these tests check).

* NaN and inf propagate through convolution as IEEE arithmetic says (checked against PyTorch in
  float64, where PyTorch uses a direct im2col + GEMM convolution, not Winograd or FFT).
* Max pooling: NaN is the maximum of any window holding one (the last NaN's index, as
  PyTorch), an all -inf window returns -inf at its first real element, and -0.0 vs 0.0 ties
  keep the first (so max(-0.0, 0.0) = -0.0 and max(0.0, -0.0) = 0.0, as PyTorch).
* Subnormal numbers are neither flushed to zero on output nor treated as zero on input.
* float32 accumulation error on long reductions stays within the classical bound
  |computed - exact| <= gamma_K * sum(|terms|), gamma_K = K*u / (1 - K*u), u = 2**-24,
  where K is the number of terms summed per output (any summation order, blocking or FMA).
"""

import numpy as np
import pytest

import fastconv as fc
from conftest import AVAILABLE_BACKENDS
from helpers import optional_torch

torch = optional_torch()  # torch comparisons skip without torch; the rest runs
F = torch.nn.functional

U32 = 2.0**-24  # unit roundoff of float32
# NaN and inf arithmetic is the point here: NumPy's "invalid value" warnings are expected.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def t64(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def assert_same_ieee(got, want, rtol):
    """NaN where want has NaN, the same infinities, finite values close."""
    want = np.asarray(want)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    inf = np.isinf(want)
    np.testing.assert_array_equal(np.isinf(got), inf)
    np.testing.assert_array_equal(got[inf], want[inf])
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=rtol)


def sprinkle(rng, a, count, values=(np.nan, np.inf, -np.inf)):
    a = a.copy()
    flat = a.reshape(-1)
    for v in values:
        flat[rng.choice(flat.size, count, replace=False)] = v
    return a


# ----------------------------------------------------------------------------------------------
# NaN and inf in convolution
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_nan_inf_propagate_as_ieee(backend, dtype):
    rng = np.random.default_rng(0)
    x = sprinkle(rng, rng.standard_normal((3, 4, 11, 10)), 3).astype(dtype)
    w = rng.standard_normal((5, 4, 3, 3)).astype(dtype)
    w[1, 2, 1, 1] = 0.0  # inf * 0 = NaN
    w[2] = 0.0           # a whole filter of zeros: NaN wherever its window meets NaN or inf
    b = rng.standard_normal(5).astype(dtype)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for stride, padding, dilation in [(1, 1, 1), (2, 0, 2), ((1, 2), (2, 1), 1)]:
        want = F.conv2d(t64(x), t64(w), t64(b), stride, padding, dilation).numpy()
        assert np.isnan(want).any() and np.isinf(want).any()  # the data does exercise both
        got = fc.conv2d(x, w, b, stride, padding, dilation, backend=backend)
        assert_same_ieee(got, want, rtol)

        # Backward, with NaN/inf both in dout and in x.
        dout = sprinkle(rng, rng.standard_normal(want.shape), 1).astype(dtype)
        xt, wt = t64(x).requires_grad_(), t64(w).requires_grad_()
        F.conv2d(xt, wt, None, stride, padding, dilation).backward(t64(dout))
        dx, dw, db = fc.conv2d_backward(dout, x, w, stride, padding, dilation, backend=backend)
        assert_same_ieee(dx, xt.grad.numpy(), rtol)
        assert_same_ieee(dw, wt.grad.numpy(), rtol)
        assert_same_ieee(db, dout.astype(np.float64).sum(axis=(0, 2, 3)), rtol)


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_conv1d_and_col2im_nan_inf(backend):
    rng = np.random.default_rng(1)
    x = sprinkle(rng, rng.standard_normal((2, 3, 30)), 2)
    w = rng.standard_normal((4, 3, 5))
    want = F.conv1d(t64(x), t64(w), None, 2, 2).numpy()
    assert_same_ieee(fc.conv1d(x, w, None, 2, 2, backend=backend), want, 1e-10)
    cols = sprinkle(rng, rng.standard_normal((2, 3 * 9, 9)), 2)
    want = F.fold(t64(cols), (6, 6), 3, padding=1, stride=2).numpy()
    assert_same_ieee(fc.col2im(cols, (2, 3, 6, 6), 3, 2, 1, backend=backend), want, 1e-10)


# ----------------------------------------------------------------------------------------------
# Pooling: NaN is the maximum, -inf windows, signed zeros
# ----------------------------------------------------------------------------------------------

POOL_GEOMETRIES = [  # (H, W, kernel, stride, padding): scalar edges and the vectorised interior
    (7, 9, 3, 2, 1), (6, 40, 2, 1, 0), (5, 41, 3, 2, 1), (8, 37, (2, 5), (1, 2), (1, 2)), (3, 3, 3, 1, 1),
]


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", POOL_GEOMETRIES)
def test_max_pool_nan_and_inf_as_pytorch(backend, dtype, geometry):
    h, w, k, s, p = geometry
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, h, w))
    x = sprinkle(rng, x, max(1, x.size // 15)).astype(dtype)
    x[1, 2] = -np.inf                     # a plane of -inf: every window is -inf
    x[1, 1, :, ::2] = np.nan              # many NaNs per window: the last one wins
    y, idx = fc.max_pool2d(x, k, s, p, backend=backend)
    ty, tidx = F.max_pool2d(torch.from_numpy(x), k, s, p, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())  # NaN == NaN here
    np.testing.assert_array_equal(idx, tidx.numpy())
    dout = rng.standard_normal(y.shape).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_()
    F.max_pool2d(xt, k, s, p).backward(torch.from_numpy(dout))
    np.testing.assert_allclose(fc.max_pool2d_backward(dout, idx, x.shape, backend=backend), xt.grad.numpy(),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", POOL_GEOMETRIES)
def test_max_pool_signed_zeros_as_pytorch(backend, dtype, geometry):
    """Windows of only zeros with random signs: PyTorch keeps the first of equal values, so
    the sign of the result is the sign of the window's first element."""
    h, w, k, s, p = geometry
    rng = np.random.default_rng(3)
    x = np.where(rng.random((2, 2, h, w)) < 0.5, -0.0, 0.0).astype(dtype)
    y, idx = fc.max_pool2d(x, k, s, p, backend=backend)
    ty, tidx = F.max_pool2d(torch.from_numpy(x), k, s, p, return_indices=True)
    np.testing.assert_array_equal(np.signbit(y), torch.signbit(ty).numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_avg_pool_nan_inf_and_signed_zero(backend):
    rng = np.random.default_rng(4)
    x = sprinkle(rng, rng.standard_normal((2, 3, 9, 12)), 3)
    for k, s, p in [(2, None, 0), (3, 2, 1), ((2, 3), 1, (1, 1))]:
        want = F.avg_pool2d(t64(x), k, s, p).numpy()
        assert_same_ieee(fc.avg_pool2d(x, k, s, p, backend=backend), want, 1e-12)
        dout = sprinkle(rng, rng.standard_normal(want.shape), 1)
        xt = t64(x).requires_grad_()
        F.avg_pool2d(xt, k, s, p).backward(t64(dout))
        assert_same_ieee(fc.avg_pool2d_backward(dout, x.shape, k, s, p, backend=backend), xt.grad.numpy(), 1e-12)
    # A window of -0.0 sums to +0.0 (the sum starts from +0.0), as PyTorch.
    zeros = np.full((1, 1, 4, 4), -0.0)
    got = fc.avg_pool2d(zeros, 2, backend=backend)
    np.testing.assert_array_equal(np.signbit(got), torch.signbit(F.avg_pool2d(t64(zeros), 2)).numpy())


# ----------------------------------------------------------------------------------------------
# Subnormals: no flush-to-zero, no denormals-are-zero
# ----------------------------------------------------------------------------------------------

def _subnormal_data(dtype, shape, rng):
    """Integer multiples of 4 * (smallest subnormal), small enough that every product with
    weights in {+-1/4, +-1/2, +-1, +-2} and every sum below is exact: then the float32/64 result
    must equal the exact one, bit for bit, and is subnormal itself."""
    tiny = np.finfo(dtype).smallest_subnormal
    return (rng.integers(-(2**8), 2**8, shape) * 4 * tiny.astype(np.float64)).astype(dtype)


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormals_are_not_flushed(backend, dtype):
    rng = np.random.default_rng(5)
    x = _subnormal_data(dtype, (2, 2, 6, 7), rng)
    w = rng.choice([-2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 2.0], (3, 2, 3, 3)).astype(dtype)
    assert np.all(np.abs(x[x != 0]) < np.finfo(dtype).smallest_normal)

    # The exact result (float64 holds these sums exactly, being far above float64 subnormals
    # for float32 data; for float64 data, the operations are exact by construction).
    y = fc.conv2d(x, w, None, 1, 1, backend=backend)
    want = F.conv2d(t64(x), t64(w), None, 1, 1).numpy()
    assert np.count_nonzero(y) > y.size // 2
    np.testing.assert_array_equal(y, want.astype(dtype))

    dout = _subnormal_data(dtype, y.shape, rng)
    xt, wt = t64(x).requires_grad_(), t64(w).requires_grad_()
    F.conv2d(xt, wt, None, 1, 1).backward(t64(dout))
    dx, _, db = fc.conv2d_backward(dout, x, w, 1, 1, backend=backend)
    np.testing.assert_array_equal(dx, xt.grad.numpy().astype(dtype))
    np.testing.assert_array_equal(db, dout.astype(np.float64).sum(axis=(0, 2, 3)).astype(dtype))
    assert np.count_nonzero(dx) > dx.size // 2

    cols = fc.im2col(x, 3, 1, 1, backend=backend)
    np.testing.assert_array_equal(cols, F.unfold(t64(x), 3, 1, 1, 1).numpy().astype(dtype))
    np.testing.assert_array_equal(fc.col2im(cols, x.shape, 3, 1, 1, backend=backend),
                                  F.fold(t64(cols), x.shape[2:], 3, 1, 1, 1).numpy().astype(dtype))

    ymax, idx = fc.max_pool2d(x, 2, backend=backend)
    np.testing.assert_array_equal(ymax, F.max_pool2d(t64(x), 2).numpy().astype(dtype))
    np.testing.assert_array_equal(fc.max_pool2d_backward(ymax, idx, x.shape, backend=backend),
                                  _scatter(ymax, idx, x.shape))
    yavg = fc.avg_pool2d(x, 2, backend=backend)  # / 4: exact for multiples of 4 * tiny
    np.testing.assert_array_equal(yavg, F.avg_pool2d(t64(x), 2).numpy().astype(dtype))
    assert np.count_nonzero(yavg) > yavg.size // 2
    dout = _subnormal_data(dtype, yavg.shape, rng)  # dout / 4 is exact too
    want = np.zeros(x.shape, dtype)
    want[:, :, :6, :6] = np.repeat(np.repeat(dout / 4, 2, axis=2), 2, axis=3)  # column 6: no window
    np.testing.assert_array_equal(fc.avg_pool2d_backward(dout, x.shape, 2, backend=backend), want)


def _scatter(values, idx, shape):
    """max_pool2d_backward by hand: add each value at its flat index of its plane."""
    out = np.zeros((shape[0] * shape[1], shape[2] * shape[3]), dtype=values.dtype)
    flat_v = values.reshape(shape[0] * shape[1], -1)
    flat_i = idx.reshape(shape[0] * shape[1], -1)
    for plane in range(out.shape[0]):
        np.add.at(out[plane], flat_i[plane], flat_v[plane])
    return out.reshape(shape)


# ----------------------------------------------------------------------------------------------
# float32 accumulation error on long reductions
# ----------------------------------------------------------------------------------------------

def gamma(k):
    return k * U32 / (1 - k * U32)


def _check_bound(got, exact, abs_sum, terms, what):
    """|got - exact| <= gamma_K * sum|terms| elementwise; returns the worst ratio to u*sum|terms|."""
    err = np.abs(got.astype(np.float64) - exact)
    bound = gamma(terms) * abs_sum
    assert np.all(err <= bound), f"{what}: error {err.max():.3g} above the bound {bound[err > bound].min():.3g}"
    ratio = (err / np.maximum(U32 * abs_sum, 1e-300)).max()
    return ratio


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_float32_accumulation_error_within_bound(backend):
    """conv forward with C*KH*KW = 4608 terms (+ bias), dx with F*KH*KW = 4608, dw and db over
    N*OH*OW = 65,536 terms: float32 results against the exact (float64) sums of the same
    float32 inputs, with sum|terms| from the same operation on |inputs|."""
    rng = np.random.default_rng(6)
    # Forward and dx: many channels / filters.
    x = rng.standard_normal((2, 512, 10, 10)).astype(np.float32)
    w = rng.standard_normal((512, 512, 3, 3)).astype(np.float32) if backend == "cython" else \
        rng.standard_normal((64, 512, 3, 3)).astype(np.float32)
    b = rng.standard_normal(w.shape[0]).astype(np.float32)
    y = fc.conv2d(x, w, b, backend=backend)
    exact = F.conv2d(t64(x), t64(w), t64(b)).numpy()
    abs_sum = F.conv2d(t64(np.abs(x)), t64(np.abs(w)), t64(np.abs(b))).numpy()
    r_fwd = _check_bound(y, exact, abs_sum, 512 * 9 + 1, "forward")

    dout = rng.standard_normal(y.shape).astype(np.float32)
    dx, _, _ = fc.conv2d_backward(dout, x, w, backend=backend)
    xt = t64(x).requires_grad_()
    F.conv2d(xt, t64(w)).backward(t64(dout))
    xa = t64(np.abs(x)).requires_grad_()
    F.conv2d(xa, t64(np.abs(w))).backward(t64(np.abs(dout)))
    k_dx = w.shape[0] * 9
    r_dx = _check_bound(dx, xt.grad.numpy(), xa.grad.numpy(), k_dx, "dx")

    # dw, db: a large batch.
    x = rng.standard_normal((64, 4, 34, 34)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((64, 4, 32, 32)).astype(np.float32)
    _, dw, db = fc.conv2d_backward(dout, x, w, backend=backend)
    wt = t64(w).requires_grad_()
    F.conv2d(t64(x), wt).backward(t64(dout))
    wa = t64(np.abs(w)).requires_grad_()
    F.conv2d(t64(np.abs(x)), wa).backward(t64(np.abs(dout)))
    terms = 64 * 32 * 32
    r_dw = _check_bound(dw, wt.grad.numpy(), wa.grad.numpy(), terms, "dw")
    r_db = _check_bound(db, dout.astype(np.float64).sum(axis=(0, 2, 3)),
                        np.abs(dout).astype(np.float64).sum(axis=(0, 2, 3)), terms, "db")
    # The worst-case bound is K*u*sum|terms|; what the blocked GEMM and chunked sums actually
    # reach is far less (docs/numerics.md quotes these ratios to u*sum|terms|).
    print(f"\n[{backend}] max error / (u * sum|terms|): forward {r_fwd:.2f} (K=4609), "
          f"dx {r_dx:.2f} (K={k_dx}), dw {r_dw:.2f} (K=65536), db {r_db:.2f} (K=65536)")
