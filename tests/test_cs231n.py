"""fastconv.cs231n: the CS231n fast_layers names, against PyTorch and their documented semantics."""

import numpy as np
import pytest
from helpers import optional_torch
torch = optional_torch()  # torch comparisons skip without torch; the rest runs
F = torch.nn.functional

import fastconv
from fastconv import cs231n
from helpers import randn



def distinct(*shape, seed=0):
    """Well-separated values in random order: no near-ties in max pooling."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.1 - n * 0.05).reshape(shape)


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def _torch_conv(x, w, b, stride, pad, dout):
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = F.conv2d(xt, wt, bt, stride=stride, padding=pad)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


CONV_CASES = [
    # (x shape, w shape, stride, pad): the assignment's usual case, then ones its im2col/strides
    # versions refuse (filter not fitting evenly, big strides, rectangular, asymmetric).
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1),
    ((2, 3, 7, 9), (5, 3, 3, 2), 2, 0),
    ((1, 2, 6, 5), (3, 2, 4, 4), 3, 2),
    ((3, 1, 5, 5), (2, 1, 5, 5), 1, 0),
    ((2, 2, 7, 6), (3, 2, 3, 3), (2, 1), (1, 0)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, stride, pad", CONV_CASES)
def test_conv_forward_backward_match_torch(active_backend, x_shape, w_shape, stride, pad, dtype):
    x, w, b = randn(*x_shape, dtype=dtype), randn(*w_shape, seed=1, dtype=dtype), randn(w_shape[0], seed=2, dtype=dtype)
    out, cache = cs231n.conv_forward_fast(x, w, b, {"stride": stride, "pad": pad})
    dout = randn(*out.shape, seed=3, dtype=dtype)
    dx, dw, db = cs231n.conv_backward_fast(dout, cache)
    expected = _torch_conv(x, w, b, stride, pad, dout)
    for got, want, name in zip((out, dx, dw, db), expected, ("out", "dx", "dw", "db")):
        assert got.dtype == dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, err_msg=name, **tol(dtype))


def test_conv_output_size_is_the_cs231n_formula():
    # H' = 1 + (H + 2 * pad - HH) // stride, from the assignment's conv_forward_naive docstring.
    x, w = np.zeros((1, 1, 11, 10)), np.zeros((2, 1, 4, 3))
    out, _ = cs231n.conv_forward_fast(x, w, np.zeros(2), {"stride": 3, "pad": 1})
    assert out.shape == (1, 2, 1 + (11 + 2 - 4) // 3, 1 + (10 + 2 - 3) // 3)


def test_conv_by_definition_on_a_tiny_case():
    """out[n, f, i, j] = sum over the window of x_padded * w[f] + b[f], written out by hand."""
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float64).reshape(2, 1, 3, 3)
    w = np.array([[[[1.0, -1.0], [2.0, 0.5]]]])
    b = np.array([10.0])
    out, _ = cs231n.conv_forward_fast(x, w, b, {"stride": 2, "pad": 1})
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.empty((2, 1, 2, 2))
    for n in range(2):
        for i in range(2):
            for j in range(2):
                expected[n, 0, i, j] = (xp[n, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2] * w[0, 0]).sum() + 10.0
    np.testing.assert_allclose(out, expected)


def test_gradients_keep_each_arrays_dtype():
    x, w, b = randn(1, 2, 5, 5, dtype=np.float32), randn(3, 2, 3, 3, dtype=np.float32), np.zeros(3, np.float32)
    out, cache = cs231n.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    assert out.dtype == np.float32
    dx, dw, db = cs231n.conv_backward_fast(np.ones(out.shape), cache)  # float64 upstream gradient
    assert dx.dtype == dw.dtype == db.dtype == np.float32


def test_cache_round_trip_and_inputs_untouched():
    x, w, b = randn(2, 3, 6, 6), randn(4, 3, 3, 3, seed=1), randn(4, seed=2)
    copies = [a.copy() for a in (x, w, b)]
    out, cache = cs231n.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    dout = randn(*out.shape, seed=3)
    first = cs231n.conv_backward_fast(dout, cache)
    second = cs231n.conv_backward_fast(dout, cache)  # a cache can be used again
    for a, c in zip(first, second):
        np.testing.assert_array_equal(a, c)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)
    pout, pcache = cs231n.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    d1 = cs231n.max_pool_backward_fast(np.ones(pout.shape), pcache)
    d2 = cs231n.max_pool_backward_fast(np.ones(pout.shape), pcache)
    np.testing.assert_array_equal(d1, d2)


POOL_CASES = [
    ((2, 3, 8, 8), 2, 2, 2),
    ((2, 2, 7, 9), 3, 2, 2),  # windows do not tile the input
    ((1, 2, 6, 6), 3, 3, 1),  # overlapping windows
    ((2, 1, 5, 7), 2, 4, 3),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, ph, pw, stride", POOL_CASES)
def test_max_pool_matches_torch(active_backend, x_shape, ph, pw, stride, dtype):
    x = distinct(*x_shape).astype(dtype)
    out, cache = cs231n.max_pool_forward_fast(x, {"pool_height": ph, "pool_width": pw, "stride": stride})
    dout = randn(*out.shape, seed=4, dtype=dtype)
    dx = cs231n.max_pool_backward_fast(dout, cache)
    xt = torch.tensor(x, requires_grad=True)
    yt = F.max_pool2d(xt, (ph, pw), stride=stride)
    yt.backward(torch.tensor(dout))
    assert out.dtype == dx.dtype == dtype
    np.testing.assert_array_equal(out, yt.detach().numpy())
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))


def test_max_pool_ties_go_to_the_first_maximum():
    x = np.ones((1, 1, 2, 2))
    out, cache = cs231n.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    dx = cs231n.max_pool_backward_fast(np.array([[[[5.0]]]]), cache)
    np.testing.assert_array_equal(dx, [[[[5.0, 0.0], [0.0, 0.0]]]])


def test_aliases_are_the_fast_functions():
    assert cs231n.conv_forward_im2col is cs231n.conv_forward_strides is cs231n.conv_forward_fast
    assert cs231n.conv_backward_im2col is cs231n.conv_backward_strides is cs231n.conv_backward_fast
    assert cs231n.max_pool_forward_reshape is cs231n.max_pool_forward_im2col is cs231n.max_pool_forward_fast
    assert cs231n.max_pool_backward_reshape is cs231n.max_pool_backward_im2col is cs231n.max_pool_backward_fast
    for name in cs231n.__all__:
        assert hasattr(cs231n, name), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_relu_and_conv_relu_pool_match_torch(active_backend, dtype):
    x, w, b = randn(2, 3, 7, 7, dtype=dtype), randn(4, 3, 3, 3, seed=1, dtype=dtype), randn(4, seed=2, dtype=dtype)
    conv_param, pool_param = {"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}

    def torch_reference(with_pool, dout):
        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.relu(F.conv2d(xt, wt, bt, padding=1))
        if with_pool:
            y = F.max_pool2d(y, 2, stride=2)
        y.backward(torch.tensor(dout))
        return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()

    out, cache = cs231n.conv_relu_forward(x, w, b, conv_param)
    dout = randn(*out.shape, seed=5, dtype=dtype)
    got = (out,) + tuple(cs231n.conv_relu_backward(dout, cache))
    for a, e in zip(got, torch_reference(False, dout)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, **tol(dtype))

    out, cache = cs231n.conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    dout = randn(*out.shape, seed=6, dtype=dtype)
    got = (out,) + tuple(cs231n.conv_relu_pool_backward(dout, cache))
    for a, e in zip(got, torch_reference(True, dout)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, **tol(dtype))


def test_missing_or_bad_parameter_dicts():
    x, w, b = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), np.zeros(1)
    with pytest.raises(ValueError, match="conv_param is missing.*pad"):
        cs231n.conv_forward_fast(x, w, b, {"stride": 1})
    with pytest.raises(KeyError):  # what the assignment's own code would raise
        cs231n.conv_forward_fast(x, w, b, {"pad": 1})
    with pytest.raises(TypeError, match="conv_param must be a dict"):
        cs231n.conv_forward_fast(x, w, b, (1, 1))
    with pytest.raises(ValueError, match="pool_param is missing.*pool_width"):
        cs231n.max_pool_forward_fast(x, {"pool_height": 2, "stride": 2})
    with pytest.raises(ValueError, match=r"stride"):
        cs231n.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2})
    with pytest.raises(ValueError, match="stride"):
        cs231n.conv_forward_fast(x, w, b, {"stride": 0, "pad": 1})
    with pytest.raises(ValueError, match="channels"):
        cs231n.conv_forward_fast(np.zeros((1, 2, 4, 4)), w, b, {"stride": 1, "pad": 0})
    with pytest.raises(TypeError, match="cache"):
        cs231n.conv_backward_fast(np.zeros((1, 1, 2, 2)), None)
    out, cache = cs231n.conv_forward_fast(x, w, b, {"stride": 1, "pad": 0, "extra": "ignored"})
    with pytest.raises(ValueError, match="dout"):
        cs231n.conv_backward_fast(np.zeros((1, 1, 3, 3)), cache)
