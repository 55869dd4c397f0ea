"""fastconv.cs231n: the CS231n assignment's fast_layers, layers and layer_utils names, against
the assignment's formulas (tests/course_code.py), PyTorch, the reference backend and central
differences; bn_param / dropout_param conventions, bitwise thread counts, empty batches, bad
input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import optional_torch
torch = optional_torch()  # torch comparisons skip without torch; the rest runs
F = torch.nn.functional

import course_code as course
from conftest import AVAILABLE_BACKENDS
from helpers import numerical_gradient, randn

import fastconv
from fastconv import _backend, _dropin_api, cs231n


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


# ==============================================================================================
# layers.py and layer_utils.py: against the assignment's formulas (tests/course_code.py), torch,
# the reference backend and central differences
# ==============================================================================================

DTYPES = [np.float32, np.float64]
needs_compiled = pytest.mark.skipif("cython" not in AVAILABLE_BACKENDS, reason="compiled backend not built")


def loose(dtype):
    """Tolerances for values that went through a normalisation (a division by a std)."""
    return dict(rtol=2e-3, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-8, atol=1e-10)


def torch_grads(function, dout, *arrays):
    """function(*tensors) and the gradients of <function, dout> for each array."""
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = function(*tensors)
    out.backward(torch.tensor(dout))
    return [out.detach().numpy()] + [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_matches_the_assignment_and_torch(active_backend, dtype):
    x, w, b = randn(4, 3, 2, 5, dtype=dtype), randn(30, 7, seed=1, dtype=dtype), randn(7, seed=2, dtype=dtype)
    out, cache = cs231n.affine_forward(x, w, b)
    assert cache[0] is x and cache[1] is w and cache[2] is b   # the assignment's (x, w, b)
    dout = randn(4, 7, seed=3, dtype=dtype)
    got = (out,) + tuple(cs231n.affine_backward(dout, cache))
    want_out, want_cache = course.cs231n_affine_forward(x, w, b)
    for a, e in zip(got, (want_out,) + course.cs231n_affine_backward(dout, want_cache)):
        assert a.dtype == dtype and a.shape == e.shape
        np.testing.assert_allclose(a, e, **tol(dtype))
    expected = torch_grads(lambda xt, wt, bt: xt.reshape(4, -1) @ wt + bt, dout, x, w, b)
    for a, e in zip(got, expected):
        np.testing.assert_allclose(a, e, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_matches_the_assignment(active_backend, dtype):
    x = randn(3, 4, 5, dtype=dtype)
    x[0, 0] = 0.0
    out, cache = cs231n.relu_forward(x)
    assert cache is x
    dout = randn(3, 4, 5, seed=1, dtype=dtype)
    dx = cs231n.relu_backward(dout, cache)
    np.testing.assert_array_equal(out, course.cs231n_relu_forward(x)[0])
    np.testing.assert_array_equal(dx, course.cs231n_relu_backward(dout, x))
    assert out.dtype == dx.dtype == dtype


def _bn_case(shape, dtype, seed=0):
    c = shape[1]
    return (3 * randn(*shape, seed=seed, dtype=dtype) + 1, randn(c, seed=seed + 1, dtype=dtype) + 1,
            randn(c, seed=seed + 2, dtype=dtype), randn(*shape, seed=seed + 3, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spatial", [False, True])
def test_batchnorm_matches_the_assignment_over_several_steps(active_backend, dtype, spatial):
    shape = (6, 3, 4, 5) if spatial else (8, 5)
    forward = cs231n.spatial_batchnorm_forward if spatial else cs231n.batchnorm_forward
    backward = cs231n.spatial_batchnorm_backward if spatial else cs231n.batchnorm_backward
    want_forward = course.cs231n_spatial_batchnorm_forward if spatial else course.cs231n_batchnorm_forward
    want_backward = course.cs231n_spatial_batchnorm_backward if spatial else course.cs231n_batchnorm_backward
    ours, theirs = {"mode": "train", "momentum": 0.7}, {"mode": "train", "momentum": 0.7}
    for step in range(3):
        x, gamma, beta, dout = _bn_case(shape, dtype, seed=10 * step)
        out, cache = forward(x, gamma, beta, ours)
        want_out, want_cache = want_forward(x, gamma, beta, theirs)
        np.testing.assert_allclose(out, want_out, **loose(dtype))
        for key in ("running_mean", "running_var"):   # created in the dict, then replaced
            assert ours[key].shape == (shape[1],) and ours[key].dtype == theirs[key].dtype == dtype
            np.testing.assert_allclose(ours[key], theirs[key], **loose(dtype))
        grads = backward(dout, cache)
        for a, e in zip(grads, want_backward(dout, want_cache)):
            assert a.dtype == dtype
            np.testing.assert_allclose(a, e, **loose(dtype))
        if not spatial:
            for a, e in zip(cs231n.batchnorm_backward_alt(dout, cache), grads):
                np.testing.assert_array_equal(a, e)
    ours["mode"] = theirs["mode"] = "test"
    x = randn(*shape, seed=99, dtype=dtype)
    np.testing.assert_allclose(forward(x, gamma, beta, ours)[0], want_forward(x, gamma, beta, theirs)[0], **loose(dtype))


def test_batchnorm_running_statistics_by_the_assignments_formula():
    x = randn(10, 3)
    gamma, beta = np.ones(3), np.zeros(3)
    mean0, var0 = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0])
    bn_param = {"mode": "train", "running_mean": mean0, "running_var": var0, "eps": 1e-3}
    out, _ = cs231n.batchnorm_forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(out, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3), rtol=1e-12)
    np.testing.assert_allclose(bn_param["running_mean"], 0.9 * mean0 + 0.1 * x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(bn_param["running_var"], 0.9 * var0 + 0.1 * x.var(0), rtol=1e-14)  # biased
    np.testing.assert_array_equal(mean0, [1.0, 2.0, 3.0])   # new arrays in the dict, as the assignment's
    fresh = {"mode": "test"}
    out, _ = cs231n.batchnorm_forward(x, gamma, beta, fresh)   # zeros created: x / sqrt(eps)
    np.testing.assert_allclose(out, x / np.sqrt(1e-5), rtol=1e-12)
    np.testing.assert_array_equal(fresh["running_mean"], np.zeros(3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_gradients_match_torch(active_backend, dtype):
    for shape, forward, backward in (((7, 4), cs231n.batchnorm_forward, cs231n.batchnorm_backward),
                                     ((3, 4, 5, 2), cs231n.spatial_batchnorm_forward, cs231n.spatial_batchnorm_backward)):
        x, gamma, beta, dout = _bn_case(shape, dtype)
        out, cache = forward(x, gamma, beta, {"mode": "train"})
        got = (out,) + tuple(backward(dout, cache))
        want = torch_grads(lambda xt, g, b: F.batch_norm(xt, None, None, g, b, training=True, eps=1e-5),
                           dout, x, gamma, beta)
        for a, e in zip(got, want):
            np.testing.assert_allclose(a, e, **loose(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_matches_the_assignment_and_torch(active_backend, dtype):
    x, dout = 2 * randn(6, 9, dtype=dtype) + 3, randn(6, 9, seed=1, dtype=dtype)
    gamma, beta = randn(9, seed=2, dtype=dtype), randn(9, seed=3, dtype=dtype)
    out, cache = cs231n.layernorm_forward(x, gamma, beta, {"eps": 1e-4})
    got = (out,) + tuple(cs231n.layernorm_backward(dout, cache))
    want_out, want_cache = course.cs231n_layernorm_forward(x, gamma, beta, {"eps": 1e-4})
    for a, e in zip(got, (want_out,) + course.cs231n_layernorm_backward(dout, want_cache)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, **loose(dtype))
    for a, e in zip(got, torch_grads(lambda xt, g, b: F.layer_norm(xt, (9,), g, b, eps=1e-4), dout, x, gamma, beta)):
        np.testing.assert_allclose(a, e, **loose(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, G", [((2, 6, 4, 5), 3), ((3, 4, 1, 1), 2), ((2, 8, 3, 3), 1), ((2, 5, 2, 3), 5)])
def test_groupnorm_matches_the_assignment_and_torch(active_backend, dtype, shape, G):
    x, dout = 2 * randn(*shape, dtype=dtype) - 1, randn(*shape, seed=1, dtype=dtype)
    c = shape[1]
    gamma, beta = randn(1, c, 1, 1, seed=2, dtype=dtype), randn(1, c, 1, 1, seed=3, dtype=dtype)
    out, cache = cs231n.spatial_groupnorm_forward(x, gamma, beta, G, {})
    got = (out,) + tuple(cs231n.spatial_groupnorm_backward(dout, cache))
    assert got[2].shape == got[3].shape == (1, c, 1, 1)
    want_out, want_cache = course.cs231n_spatial_groupnorm_forward(x, gamma, beta, G, {})
    for a, e in zip(got, (want_out,) + course.cs231n_spatial_groupnorm_backward(dout, want_cache)):
        assert a.dtype == dtype and a.shape == e.shape
        np.testing.assert_allclose(a, e, **loose(dtype))
    want = torch_grads(lambda xt, g, b: F.group_norm(xt, G, g.reshape(-1), b.reshape(-1), eps=1e-5),
                       dout, x, gamma, beta)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, **loose(dtype))


@st.composite
def group_norm_configs(draw):
    """(shape, groups): x (N, C, *spatial) with 0 to 2 spatial axes; N may be 0."""
    groups = draw(st.integers(1, 4))
    shape = (draw(st.integers(0, 4)), groups * draw(st.integers(1, 3)))
    shape += tuple(draw(st.integers(1, 9)) for _ in range(draw(st.integers(0, 2))))
    return shape, groups


@given(cfg=group_norm_configs(), dtype=st.sampled_from(DTYPES), affine=st.booleans(), seed=st.integers(0, 2**16))
def test_group_norm_kernels_match_the_reference_and_torch(backend, cfg, dtype, affine, seed):
    shape, groups = cfg
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal(shape) + rng.standard_normal()).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    weight, bias = (rng.standard_normal(shape[1]).astype(dtype) if affine else None for _ in range(2))
    y, mean, invstd = _dropin_api.group_norm(x, weight, bias, groups, 1e-3, backend=backend)
    grads = _dropin_api.group_norm_backward(dout, x, weight, mean, invstd, groups, backend=backend)
    assert y.shape == shape and mean.shape == invstd.shape == (shape[0], groups)
    assert all(a.dtype == dtype for a in (y, mean, invstd) + grads)
    assert grads[0].shape == shape and grads[1].shape == grads[2].shape == (shape[0 + 1],)
    if shape[0] == 0:
        return
    want = torch_grads(lambda xt: F.group_norm(xt, groups, None if weight is None else torch.tensor(weight),
                                               None if bias is None else torch.tensor(bias), eps=1e-3), dout, x)
    np.testing.assert_allclose(y, want[0], **loose(dtype))
    np.testing.assert_allclose(grads[0], want[1], **loose(dtype))
    xhat = (x.reshape(shape[0], groups, -1) - mean[..., None]) * invstd[..., None]
    per_channel = lambda a: a.reshape(shape[0], shape[1], -1).sum(axis=(0, 2))
    np.testing.assert_allclose(grads[1], per_channel(dout * xhat.reshape(shape)), **loose(dtype))
    np.testing.assert_allclose(grads[2], per_channel(dout), **loose(dtype))


def test_dropout_masks_follow_the_seed_as_the_assignments():
    x = randn(50, 40) + 10
    for p in (0.25, 0.5, 1.0):
        param = {"mode": "train", "p": p, "seed": 123}
        out, cache = cs231n.dropout_forward(x, param)
        want, want_cache = course.cs231n_dropout_forward(x, dict(param))
        np.testing.assert_allclose(out, want, rtol=1e-15)
        assert abs((out != 0).mean() - p) < 0.05 and set(np.unique(out[out != 0] / x[out != 0]).round(9)) == {round(1 / p, 9)}
        dout = randn(50, 40, seed=1)
        np.testing.assert_allclose(cs231n.dropout_backward(dout, cache), course.cs231n_dropout_backward(dout, want_cache),
                                   rtol=1e-15)
    np.random.seed(0)
    a, _ = cs231n.dropout_forward(x, {"mode": "train", "p": 0.5})
    b, _ = cs231n.dropout_forward(x, {"mode": "train", "p": 0.5})   # no seed: the global stream moves on
    assert not np.array_equal(a, b)
    out, cache = cs231n.dropout_forward(x, {"mode": "test", "p": 0.5})
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(cs231n.dropout_backward(x, cache), x)
    x32 = x.astype(np.float32)
    assert cs231n.dropout_forward(x32, {"mode": "train", "p": 0.3, "seed": 1})[0].dtype == np.float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_match_the_assignment_and_torch(active_backend, dtype):
    x, y = 2 * randn(20, 7, dtype=dtype), np.random.default_rng(0).integers(0, 7, 20)
    for ours, theirs in ((cs231n.softmax_loss, course.cs231n_softmax_loss), (cs231n.svm_loss, course.cs231n_svm_loss)):
        loss, dx = ours(x, y)
        want_loss, want_dx = theirs(x, y)
        assert isinstance(loss, float) and dx.dtype == dtype
        assert loss == pytest.approx(float(want_loss), rel=1e-5 if dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(dx, want_dx, **tol(dtype))
    xt = torch.tensor(x, requires_grad=True)
    # torch's multi_margin_loss divides each row's sum by the number of classes.
    t_loss = F.multi_margin_loss(xt, torch.from_numpy(y)) * 7
    t_loss.backward()
    loss, dx = cs231n.svm_loss(x, y)
    assert loss == pytest.approx(t_loss.item(), rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))
    xt = torch.tensor(x, requires_grad=True)
    t_loss = F.cross_entropy(xt, torch.from_numpy(y))
    t_loss.backward()
    loss, dx = cs231n.softmax_loss(x, y)
    assert loss == pytest.approx(t_loss.item(), rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))


def test_svm_loss_margins_are_the_assignments_at_the_hinge_and_with_nan():
    x = np.array([[1.0, 0.0, 2.0, 1.0], [0.5, 0.5, -0.5, np.nan]])
    y = np.array([0, 1])
    loss, dx = cs231n.svm_loss(x, y)
    want_loss, want_dx = course.cs231n_svm_loss(x, y)   # margins of exactly 0 give no gradient
    assert np.isnan(loss) and np.isnan(want_loss)
    np.testing.assert_array_equal(dx, want_dx)
    loss, dx = cs231n.svm_loss(x[:1], y[:1])
    assert loss == course.cs231n_svm_loss(x[:1], y[:1])[0] == 3.0


@given(n=st.integers(1, 40), k=st.integers(1, 12), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_svm_kernel_matches_the_reference_twin(n, k, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.integers(-3, 4, (n, k)) * 0.5).astype(dtype)   # many margins of exactly 0
    y = rng.integers(0, k, n)
    results = [_dropin_api.svm_loss(x, y, backend=b) for b in AVAILABLE_BACKENDS]
    for loss, dx in results:
        assert loss == pytest.approx(results[-1][0], rel=1e-12)
        np.testing.assert_array_equal(dx, results[-1][1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sandwich_layers_match_torch(active_backend, dtype):
    x, w, b = randn(3, 2, 4, 4, dtype=dtype), randn(32, 5, seed=1, dtype=dtype), randn(5, seed=2, dtype=dtype)
    out, cache = cs231n.affine_relu_forward(x, w, b)
    dout = randn(*out.shape, seed=3, dtype=dtype)
    got = (out,) + tuple(cs231n.affine_relu_backward(dout, cache))
    for a, e in zip(got, torch_grads(lambda xt, wt, bt: F.relu(xt.reshape(3, -1) @ wt + bt), dout, x, w, b)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, **tol(dtype))
    cw, cb = randn(4, 2, 3, 3, seed=4, dtype=dtype), randn(4, seed=5, dtype=dtype)
    gamma, beta = randn(4, seed=6, dtype=dtype) + 1, randn(4, seed=7, dtype=dtype)
    bn_param = {"mode": "train"}
    out, cache = cs231n.conv_bn_relu_forward(x, cw, cb, gamma, beta, {"stride": 1, "pad": 1}, bn_param)
    assert bn_param["running_mean"].shape == (4,)
    dout = randn(*out.shape, seed=8, dtype=dtype)
    got = (out,) + tuple(cs231n.conv_bn_relu_backward(dout, cache))

    def reference(xt, wt, bt, g, be):
        a = F.conv2d(xt, wt, bt, padding=1)
        return F.relu(F.batch_norm(a, None, None, g, be, training=True, eps=1e-5))

    for a, e in zip(got, torch_grads(reference, dout, x, cw, cb, gamma, beta)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, **loose(dtype))


@pytest.mark.parametrize("layer", ["affine", "batchnorm", "spatial_batchnorm", "layernorm", "spatial_groupnorm",
                                   "dropout", "svm", "softmax"])
def test_gradients_by_central_differences(active_backend, layer):
    rng = np.random.default_rng(3)
    if layer == "affine":
        args = [rng.standard_normal((3, 2, 3)), rng.standard_normal((6, 4)), rng.standard_normal(4)]
        run = lambda: cs231n.affine_forward(*args)
        back = cs231n.affine_backward
    elif layer in ("batchnorm", "spatial_batchnorm"):
        shape = (5, 3) if layer == "batchnorm" else (2, 3, 2, 3)
        args = [rng.standard_normal(shape), rng.standard_normal(3), rng.standard_normal(3)]
        forward, back = getattr(cs231n, f"{layer}_forward"), getattr(cs231n, f"{layer}_backward")
        run = lambda: forward(*args, {"mode": "train"})
    elif layer == "layernorm":
        args = [rng.standard_normal((4, 5)), rng.standard_normal(5), rng.standard_normal(5)]
        run, back = lambda: cs231n.layernorm_forward(*args, {}), cs231n.layernorm_backward
    elif layer == "spatial_groupnorm":
        args = [rng.standard_normal((2, 4, 2, 3)), rng.standard_normal((1, 4, 1, 1)), rng.standard_normal((1, 4, 1, 1))]
        run, back = lambda: cs231n.spatial_groupnorm_forward(*args, 2, {}), cs231n.spatial_groupnorm_backward
    elif layer == "dropout":
        args = [rng.standard_normal((4, 6))]
        run = lambda: cs231n.dropout_forward(*args, {"mode": "train", "p": 0.6, "seed": 0})
        back = cs231n.dropout_backward
    else:
        args = [rng.standard_normal((5, 4))]
        labels = rng.integers(0, 4, 5)
        loss_fn = cs231n.svm_loss if layer == "svm" else cs231n.softmax_loss
        analytic = loss_fn(args[0], labels)[1]
        np.testing.assert_allclose(analytic, numerical_gradient(lambda: loss_fn(args[0], labels)[0], args[0]),
                                   rtol=1e-6, atol=1e-8)
        return
    out, cache = run()
    weights = rng.standard_normal(out.shape)
    grads = back(weights, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for array, analytic in zip(args, grads):
        numeric = numerical_gradient(lambda: float(np.sum(run()[0] * weights)), array)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_three_layer_convnet_step_equals_the_assignments_layers(active_backend, dtype):
    """cnn.py's ThreeLayerConvNet on fastconv.cs231n gives the loss and gradients of the course's
    naive layers and of its NumPy fast layers."""
    x, y = randn(3, 3, 8, 8, dtype=dtype), np.array([1, 0, 7])
    nets = [course.ThreeLayerConvNet(layers, input_dim=(3, 8, 8), num_filters=4, filter_size=3, hidden_dim=6,
                                     weight_scale=0.3, reg=0.1, dtype=dtype)
            for layers in (course.CS231N_NAIVE, course.CS231N_FAST, course.cs231n_layer_set(cs231n))]
    (naive_loss, naive_grads), (fast_loss, fast_grads), (loss, grads) = (net.loss(x, y) for net in nets)
    for want_loss, want_grads in ((naive_loss, naive_grads), (fast_loss, fast_grads)):
        assert loss == pytest.approx(want_loss, rel=1e-5 if dtype == np.float32 else 1e-12)
        for key, grad in grads.items():
            assert grad.dtype == dtype, key
            np.testing.assert_allclose(grad, want_grads[key], **loose(dtype), err_msg=key)


def test_new_functions_pass_an_empty_batch(active_backend):
    x, w, b = np.zeros((0, 2, 3)), randn(6, 4), np.zeros(4)
    out, cache = cs231n.affine_forward(x, w, b)
    dx, dw, db = cs231n.affine_backward(np.zeros((0, 4)), cache)
    assert out.shape == (0, 4) and dx.shape == x.shape and not dw.any() and not db.any()
    bn_param = {"mode": "train"}
    out, cache = cs231n.batchnorm_forward(np.zeros((0, 4)), np.ones(4), np.zeros(4), bn_param)
    assert out.shape == (0, 4) and cs231n.batchnorm_backward(out, cache)[0].shape == (0, 4)
    np.testing.assert_array_equal(bn_param["running_mean"], np.zeros(4))   # nothing averaged in
    out, cache = cs231n.layernorm_forward(np.zeros((0, 5)), np.ones(5), np.zeros(5), {})
    assert out.shape == (0, 5) and cs231n.layernorm_backward(out, cache)[0].shape == (0, 5)
    gamma = np.ones((1, 4, 1, 1))
    out, cache = cs231n.spatial_groupnorm_forward(np.zeros((0, 4, 2, 2)), gamma, gamma * 0, 2, {})
    dx, dgamma, _ = cs231n.spatial_groupnorm_backward(out, cache)
    assert dx.shape == (0, 4, 2, 2) and dgamma.shape == (1, 4, 1, 1) and not dgamma.any()
    out, cache = cs231n.dropout_forward(np.zeros((0, 3)), {"mode": "train", "p": 0.5})
    assert cs231n.dropout_backward(out, cache).shape == (0, 3)
    for loss_fn in (cs231n.svm_loss, cs231n.softmax_loss):
        loss, dx = loss_fn(np.zeros((0, 3)), np.zeros(0, dtype=int))
        assert np.isnan(loss) and dx.shape == (0, 3)


def test_new_functions_refuse_bad_input_by_name():
    x = randn(4, 3)
    cases = [
        (lambda: cs231n.affine_forward(x, randn(4, 2), np.zeros(2)), ValueError, "affine_forward: x has 3 features"),
        (lambda: cs231n.affine_forward(x, randn(3, 2), np.zeros(3)), ValueError, "affine_forward: b must have shape"),
        (lambda: cs231n.affine_backward(np.zeros((4, 3)), (x, randn(3, 2), np.zeros(2))), ValueError,
         "affine_backward: dout must have"),
        (lambda: cs231n.affine_backward(np.zeros((4, 2)), None), TypeError, "cache must be the cache returned by affine_forward"),
        (lambda: cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), {}), ValueError, r"bn_param is missing \['mode'\]"),
        (lambda: cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "eval"}), ValueError,
         'bn_param\\["mode"\\] must be "train" or "test"'),
        (lambda: cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "train", "momentum": 2}), ValueError,
         "momentum"),
        (lambda: cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "train", "running_mean": np.zeros(2)}),
         ValueError, r'bn_param\["running_mean"\] must have shape \(3,\)'),
        (lambda: cs231n.batchnorm_forward(x, np.ones(2), np.zeros(3), {"mode": "train"}), ValueError,
         "batchnorm_forward: weight must have shape"),
        (lambda: cs231n.batchnorm_forward(randn(2, 3, 4, 4), np.ones(3), np.zeros(3), {"mode": "train"}), ValueError,
         "batchnorm_forward: x must be a 2-D array"),
        (lambda: cs231n.spatial_batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "train"}), ValueError,
         "spatial_batchnorm_forward: x must be a 4-D array"),
        (lambda: cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), "train"), TypeError, "bn_param must be a dict"),
        (lambda: cs231n.layernorm_forward(x, np.ones(4), np.zeros(3), {}), ValueError, "layernorm_forward: gamma must"),
        (lambda: cs231n.layernorm_forward(x, np.ones(3), np.zeros(3), {"eps": -1}), ValueError, "eps"),
        (lambda: cs231n.spatial_groupnorm_forward(randn(2, 6, 2, 2), np.ones((1, 6, 1, 1)), np.zeros((1, 6, 1, 1)), 4, {}),
         ValueError, "G = 4 groups must divide the C = 6 channels"),
        (lambda: cs231n.spatial_groupnorm_forward(randn(2, 6, 2, 2), np.ones((6, 1)), np.zeros((1, 6, 1, 1)), 2, {}),
         ValueError, r"gamma must have shape \(1, C, 1, 1\)"),
        (lambda: cs231n.spatial_groupnorm_forward(randn(2, 6, 2, 2), np.ones((1, 6, 1, 1)), np.zeros((1, 6, 1, 1)), 2.0, {}),
         TypeError, "G must be an int"),
        (lambda: cs231n.dropout_forward(x, {"mode": "train"}), ValueError, r"dropout_param is missing \['p'\]"),
        (lambda: cs231n.dropout_forward(x, {"mode": "train", "p": 0}), ValueError, "probability of keeping"),
        (lambda: cs231n.dropout_forward(x, {"mode": "train", "p": 1.5}), ValueError, "p"),
        (lambda: cs231n.dropout_forward(x, {"mode": "predict", "p": 0.5}), ValueError, 'dropout_param\\["mode"\\]'),
        (lambda: cs231n.svm_loss(x, np.array([0, 1, 3, 0])), ValueError, r"svm_loss: labels must lie in \[0, K\)"),
        (lambda: cs231n.svm_loss(x, np.array([0.0, 1, 2, 0])), TypeError, "svm_loss: y labels"),
        (lambda: cs231n.svm_loss(x, np.array([0, 1])), ValueError, "svm_loss: y has 2 labels for N=4"),
        (lambda: cs231n.svm_loss(randn(4), np.array([0])), ValueError, "svm_loss: x must be a 2-D array"),
        (lambda: cs231n.softmax_loss(x, np.array([0, 1, 3, 0])), ValueError, "labels must lie in"),
        (lambda: cs231n.relu_backward(np.zeros((2, 2)), np.zeros((3, 2))), ValueError, "relu_backward"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, groups", [((64, 32, 16, 16), 8), ((3, 12, 101, 97), 3), ((5000, 40), 1),
                                           ((2, 70000), 1)])
def test_group_norm_and_svm_are_bitwise_identical_for_every_thread_count(dtype, shape, groups):
    x, dout = randn(*shape, dtype=dtype) + 2, randn(*shape, seed=1, dtype=dtype)
    weight, bias = randn(shape[1], seed=2, dtype=dtype), randn(shape[1], seed=3, dtype=dtype)
    scores, labels = randn(5000, 37, dtype=dtype), np.random.default_rng(4).integers(0, 37, 5000)
    results = []
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        y, mean, invstd = _dropin_api.group_norm(x, weight, bias, groups, backend="cython")
        grads = _dropin_api.group_norm_backward(dout, x, weight, mean, invstd, groups, backend="cython")
        loss, dscores = _dropin_api.svm_loss(scores, labels, backend="cython")
        results.append([a.tobytes() for a in (y, mean, invstd, *grads, dscores)] + [loss])
    assert results[0] == results[1] == results[2]
    # The float64 statistics agree with the reference twin to rounding.
    want = _dropin_api.group_norm(x, weight, bias, groups, backend="reference")
    np.testing.assert_allclose(y, want[0], **loose(dtype))


def test_kernel_modules_offer_the_drop_in_kernels():
    for name in AVAILABLE_BACKENDS:
        kernels = _backend.kernels(name)
        for function in ("im2row", "row2im", "affine", "affine_backward", "group_norm_forward",
                         "group_norm_backward", "svm_loss"):
            assert callable(getattr(kernels, function)), (name, function)


def _odd_layouts(a):
    """The values of a as a Fortran-ordered, a strided, a reversed and a read-only array."""
    strided = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)[..., ::2]
    strided[...] = a
    readonly = a.copy()
    readonly.flags.writeable = False
    return [np.asfortranarray(a), strided, np.ascontiguousarray(a[..., ::-1])[..., ::-1], readonly]


def test_new_functions_give_the_contiguous_result_for_any_layout(active_backend):
    x4, x2 = randn(2, 4, 3, 5), randn(6, 5)
    calls = {
        "affine": (lambda a: cs231n.affine_backward(np.ones((2, 3)), cs231n.affine_forward(a, randn(60, 3), np.zeros(3))[1]), x4),
        "layernorm": (lambda a: cs231n.layernorm_backward(a, cs231n.layernorm_forward(a, np.ones(5), np.zeros(5), {})[1]), x2),
        "groupnorm": (lambda a: cs231n.spatial_groupnorm_backward(a, cs231n.spatial_groupnorm_forward(
            a, np.ones((1, 4, 1, 1)), np.zeros((1, 4, 1, 1)), 2, {})[1]), x4),
        "batchnorm": (lambda a: cs231n.spatial_batchnorm_backward(a, cs231n.spatial_batchnorm_forward(
            a, np.ones(4), np.zeros(4), {"mode": "train"})[1]), x4),
        "svm": (lambda a: cs231n.svm_loss(a, np.arange(6) % 5)[1], x2),
        "dropout": (lambda a: cs231n.dropout_forward(a, {"mode": "train", "p": 0.5, "seed": 3})[0], x2),
    }
    for name, (call, array) in calls.items():
        want = call(array)
        for variant in _odd_layouts(array):
            got = call(variant)
            for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                assert g.flags.c_contiguous, name
                np.testing.assert_array_equal(g, w, err_msg=name)
