"""Sequential runs a ReLU in place on the fresh output of the layer before it (a convolution,
Linear, BatchNorm) and on the fresh dx of the layer after it: the results must be bitwise those
of the layers run one by one, and no array of the caller's may change."""

import numpy as np
import pytest

import fastconv
from fastconv import _backend, nn
from helpers import randn


def model(dtype, seed=0):
    return nn.Sequential(
        nn.ReLU(dtype=dtype),                      # first: its input is the caller's
        nn.Conv2D(3, 6, 3, padding=1, dtype=dtype, rng=seed),
        nn.ReLU(dtype=dtype),                      # after a convolution: in place
        nn.BatchNorm2D(6, dtype=dtype),
        nn.ReLU(dtype=dtype),                      # after BatchNorm: in place
        nn.MaxPool2D(2),
        nn.ReLU(dtype=dtype),                      # after pooling: not in place
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 10, dtype=dtype, rng=seed + 1),
        nn.ReLU(dtype=dtype),                      # last: its dout is the caller's
    )


def one_by_one(seq, x, dout):
    for layer in seq.layers:
        x = layer.forward(x)
    y = x
    for layer in reversed(seq.layers):
        dout = layer.backward(dout)
    return y, dout


@pytest.mark.parametrize("backend", ["cython", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_relus_give_the_same_bits_and_leave_the_callers_arrays_alone(backend, dtype):
    x = randn(5, 3, 8, 8, seed=3, dtype=dtype)
    dout = randn(5, 10, seed=4, dtype=dtype)
    x_before, dout_before = x.copy(), dout.copy()
    with fastconv.use_backend(backend):
        fused, plain = model(dtype), model(dtype)
        y = fused.forward(x)
        dx = fused.backward(dout)
        y_plain, dx_plain = one_by_one(plain, x.copy(), dout.copy())
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dout, dout_before)
    np.testing.assert_array_equal(y, y_plain)
    np.testing.assert_array_equal(dx, dx_plain)
    for name, grad in fused.grads.items():
        np.testing.assert_array_equal(grad, plain.grads[name], err_msg=name)
    # The ReLUs' inputs had negative values: the test exercises the masks.
    assert (x < 0).any() and (y == 0).any() and (dx == 0).any()


def test_a_relu_after_a_convolution_reuses_its_output_array():
    conv, relu = nn.Conv2D(2, 4, 3, rng=0), nn.ReLU()
    seq = nn.Sequential(conv, relu)
    x = randn(2, 2, 6, 6, dtype=np.float32)
    y = seq.forward(x)
    assert np.shares_memory(y, relu._cache)
    expected = np.maximum(conv.forward(x), 0)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_kernels_write_into_out(dtype):
    x = randn(1000, seed=1, dtype=dtype)
    x[::7] = -0.0
    x[3] = np.nan
    dout = randn(1000, seed=2, dtype=dtype)
    for kernels in (_backend.kernels("cython"), _backend.kernels("reference")):
        expected = fastconv.relu(x)
        buf = x.copy()
        assert kernels.relu(buf, out=buf) is buf
        np.testing.assert_array_equal(buf, expected)
        assert np.signbit(buf[::7]).all() and np.isnan(buf[3])
        expected_dx = fastconv.relu_backward(dout, expected)
        grad = dout.copy()
        assert kernels.relu_backward(grad, expected, out=grad) is grad
        np.testing.assert_array_equal(grad, expected_dx)
