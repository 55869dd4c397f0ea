"""Sequential's fast paths: a ReLU runs in place on the fresh output of the layer before it (a
convolution, Linear, BatchNorm) and on the fresh dx of the layer after it, bitwise as the layers
run one by one and leaving the caller's arrays alone; backward(input_grad=False) skips a first
convolution's dx and keeps every parameter gradient bitwise."""

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


FIRST_LAYERS = {
    "conv2d_engine": lambda dtype: nn.Conv2D(8, 16, 3, padding=1, dtype=dtype, rng=0),
    "conv2d_3_channels": lambda dtype: nn.Conv2D(3, 16, 7, padding=3, dtype=dtype, rng=0),
    "conv2d_strided_groups": lambda dtype: nn.Conv2D(8, 16, 3, stride=2, groups=2, dtype=dtype, rng=0),
    "conv2d_nhwc": lambda dtype: nn.Conv2D(8, 16, 3, padding=1, data_format="NHWC", dtype=dtype, rng=0),
    "conv1d": lambda dtype: nn.Conv1D(8, 16, 5, padding=2, dtype=dtype, rng=0),
    "relu": lambda dtype: nn.ReLU(dtype=dtype),
}


@pytest.mark.parametrize("backend", ["cython", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("first", sorted(FIRST_LAYERS))
def test_backward_without_the_input_gradient_gives_the_same_parameter_gradients(first, dtype, backend):
    """input_grad=False returns None and leaves every parameter gradient bitwise as with dx."""
    shape = {"conv1d": (4, 8, 20), "conv2d_3_channels": (4, 3, 12, 12),
             "conv2d_nhwc": (4, 12, 12, 8)}.get(first, (4, 8, 12, 12))
    x = randn(*shape, seed=5, dtype=dtype)

    def build():
        return nn.Sequential(FIRST_LAYERS[first](dtype), nn.ReLU(dtype=dtype), nn.Flatten())

    with fastconv.use_backend(backend):
        with_dx, without_dx = build(), build()
        y = with_dx.forward(x)
        dout = randn(*y.shape, seed=6, dtype=dtype)
        dx = with_dx.backward(dout)
        np.testing.assert_array_equal(without_dx.forward(x), y)
        assert without_dx.backward(dout.copy(), input_grad=False) is None
    assert dx.shape == x.shape and np.abs(dx).sum() > 0
    assert with_dx.grads.keys() == without_dx.grads.keys()
    for name, grad in with_dx.grads.items():
        np.testing.assert_array_equal(without_dx.grads[name], grad, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_kernel_skips_dx_and_keeps_dw_db(dtype, threads):
    """conv_parameter_gradients against conv2d_backward's dw, db, on the engine (8 channels),
    its im2col fallback for dx (3 channels), grouped and empty batches."""
    cases = [((6, 8, 10, 10), (16, 8, 3, 3), dict(padding=1)),
             ((6, 3, 16, 16), (32, 3, 7, 7), dict(padding=3)),
             ((6, 8, 9, 9), (12, 4, 3, 3), dict(stride=2, groups=2)),
             ((0, 8, 9, 9), (12, 8, 3, 3), {})]
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(threads)
    try:
        for x_shape, w_shape, hyper in cases:
            x = randn(*x_shape, seed=1, dtype=dtype)
            w = randn(*w_shape, seed=2, dtype=dtype)
            dout = randn(*fastconv.conv2d(x, w, **hyper).shape, seed=3, dtype=dtype)
            _, dw, db = fastconv.conv2d_backward(dout, x, w, **hyper)
            dw2, db2 = fastconv._api.conv_parameter_gradients(dout, x, w, **hyper)
            np.testing.assert_array_equal(dw2, dw)
            np.testing.assert_array_equal(db2, db)
    finally:
        fastconv.set_num_threads(before)
