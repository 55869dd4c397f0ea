"""Backward functions against central differences of the forward functions, in float64.

For a forward y = f(x) and an upstream gradient g, the backward must return dL/dx of
L(x) = sum(g * f(x)); each entry is checked against (L(x + h e) - L(x - h e)) / 2h. The
forward is exact up to rounding, so with h = 1e-6 the two agree to about 1e-8 relative.
Max pooling uses well-separated values (a permutation of 0..n-1), so that no perturbation of
size h changes any window's argmax.
"""

import numpy as np
import pytest

import fastconv as fc

H = 1e-6


def numerical_gradient(loss, a):
    """Central differences of the scalar function loss() with respect to every entry of a
    (a is perturbed in place and restored)."""
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


def assert_gradient(analytic, numeric):
    assert analytic.shape == numeric.shape
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


CONV2D = [
    # x shape, w shape, stride, padding, dilation
    ((2, 2, 5, 4), (3, 2, 3, 2), 1, 0, 1),
    ((1, 3, 6, 7), (2, 3, 2, 3), (2, 1), (1, 2), (2, 1)),
    ((2, 1, 4, 4), (2, 1, 3, 3), 3, 2, 1),   # stride > kernel: some inputs get no gradient
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", CONV2D)
def test_conv2d_gradients(backend, x_shape, w_shape, stride, padding, dilation):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    g = rng.standard_normal(fc.conv2d(x, w, b, stride, padding, dilation, backend=backend).shape)

    def loss():
        return float(np.sum(g * fc.conv2d(x, w, b, stride, padding, dilation, backend=backend)))

    dx, dw, db = fc.conv2d_backward(g, x, w, stride, padding, dilation, backend=backend)
    assert_gradient(dx, numerical_gradient(loss, x))
    assert_gradient(dw, numerical_gradient(loss, w))
    assert_gradient(db, numerical_gradient(loss, b))


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 2), (3, 2, 1)])
def test_conv1d_gradients(backend, stride, padding, dilation):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 2, 9)), rng.standard_normal((3, 2, 3)), rng.standard_normal(3)
    g = rng.standard_normal(fc.conv1d(x, w, b, stride, padding, dilation, backend=backend).shape)

    def loss():
        return float(np.sum(g * fc.conv1d(x, w, b, stride, padding, dilation, backend=backend)))

    dx, dw, db = fc.conv1d_backward(g, x, w, stride, padding, dilation, backend=backend)
    assert_gradient(dx, numerical_gradient(loss, x))
    assert_gradient(dw, numerical_gradient(loss, w))
    assert_gradient(db, numerical_gradient(loss, b))


POOLS = [
    # x shape, kernel_size, stride, padding
    ((2, 2, 6, 6), 2, None, 0),
    ((1, 2, 7, 5), (3, 2), (2, 1), (1, 1)),   # overlapping windows, padding, no tiling
    ((1, 1, 5, 5), 3, 1, 1),
]


@pytest.mark.parametrize("x_shape, kernel_size, stride, padding", POOLS)
def test_max_pool2d_gradient(backend, x_shape, kernel_size, stride, padding):
    rng = np.random.default_rng(2)
    x = rng.permutation(np.prod(x_shape)).reshape(x_shape).astype(np.float64)  # gaps of 1 >> H
    y, idx = fc.max_pool2d(x, kernel_size, stride, padding, backend=backend)
    g = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(g * fc.max_pool2d(x, kernel_size, stride, padding, backend=backend)[0]))

    dx = fc.max_pool2d_backward(g, idx, x.shape, backend=backend)
    assert_gradient(dx, numerical_gradient(loss, x))


@pytest.mark.parametrize("x_shape, kernel_size, stride, padding", POOLS)
def test_avg_pool2d_gradient(backend, x_shape, kernel_size, stride, padding):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape)
    g = rng.standard_normal(fc.avg_pool2d(x, kernel_size, stride, padding, backend=backend).shape)

    def loss():
        return float(np.sum(g * fc.avg_pool2d(x, kernel_size, stride, padding, backend=backend)))

    dx = fc.avg_pool2d_backward(g, x.shape, kernel_size, stride, padding, backend=backend)
    assert_gradient(dx, numerical_gradient(loss, x))


@pytest.mark.parametrize("x_shape, kernel_size, stride, padding, dilation", [
    ((2, 2, 5, 6), (2, 3), 1, 0, 1),
    ((1, 3, 7, 7), 3, 2, 1, 2),
    ((2, 1, 4, 5), (1, 2), (3, 2), (2, 0), 1),
])
def test_col2im_is_the_adjoint_of_im2col(backend, x_shape, kernel_size, stride, padding, dilation):
    """<im2col(x), c> == <x, col2im(c)> for every x and c: col2im is im2col's gradient."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape)
    cols = fc.im2col(x, kernel_size, stride, padding, dilation, backend=backend)
    c = rng.standard_normal(cols.shape)
    back = fc.col2im(c, x_shape, kernel_size, stride, padding, dilation, backend=backend)
    np.testing.assert_allclose(np.sum(cols * c), np.sum(x * back), rtol=1e-12)

    def loss():
        return float(np.sum(c * fc.im2col(x, kernel_size, stride, padding, dilation, backend=backend)))

    assert_gradient(back, numerical_gradient(loss, x))
