"""The layer functions (batch_norm, batch_norm_backward, relu, relu_backward,
softmax_cross_entropy) and Dropout's kernels: against PyTorch, the reference backend and the
loop oracle, central differences, bitwise equality at 1, 2 and 3 threads, empty batches,
memory layouts, running statistics, dtypes and special values."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from fastconv import _backend
from fastconv.reference import naive
from conftest import AVAILABLE_BACKENDS
from helpers import randn

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = [np.float32, np.float64]
needs_compiled = pytest.mark.skipif("cython" not in AVAILABLE_BACKENDS, reason="compiled backend not built")
seeds = st.integers(0, 2**32 - 1)


def close(actual, expected, dtype=None):
    """Equal within the dtype's tolerance, relative to the expected array's scale."""
    expected = np.asarray(expected)
    dtype = np.dtype(dtype or actual.dtype)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    scale = float(np.max(np.abs(expected), initial=0.0)) + 1e-30
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def channels_first(a, data_format):
    """An NHWC operand as NCHW (what torch takes); NCHW and 2-D operands unchanged."""
    return np.moveaxis(a, -1, 1) if data_format == "NHWC" else a


def channels_back(a, data_format):
    return np.moveaxis(a, 1, -1) if data_format == "NHWC" else a


@st.composite
def bn_configs(draw, max_batch=4, min_batch=0):
    """(shape, data_format) of a valid batch_norm input: 2-, 3- or 4-D, training-ready when
    the batch is not empty (more than one value per channel)."""
    ndim = draw(st.sampled_from([2, 3, 4]))
    data_format = draw(st.sampled_from(["NCHW", "NHWC"]))
    n = draw(st.integers(min_batch, max_batch))
    c = draw(st.integers(1, 4))
    spatial = [draw(st.integers(1, 5)) for _ in range(ndim - 2)]
    if n == 1 and all(s == 1 for s in spatial):
        n = 2
    shape = (n, *spatial, c) if data_format == "NHWC" else (n, c, *spatial)
    return shape, data_format


def n_channels(shape, data_format):
    return shape[-1] if data_format == "NHWC" else shape[1]


def bn_inputs(shape, data_format, dtype, seed, affine=True):
    rng = np.random.default_rng(seed)
    c = n_channels(shape, data_format)
    x = (3 * rng.standard_normal(shape) + rng.standard_normal()).astype(dtype)
    weight = (rng.standard_normal(c) + 1).astype(dtype) if affine else None
    bias = rng.standard_normal(c).astype(dtype) if affine else None
    running_mean = rng.standard_normal(c).astype(dtype)
    running_var = (0.5 + rng.random(c)).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    return x, weight, bias, running_mean, running_var, dout


def torch_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, dout, data_format):
    """torch's y, dx, dweight, dbias and updated running statistics, in fastconv's layout."""
    xt = torch.tensor(channels_first(x, data_format), requires_grad=True)
    wt = None if weight is None else torch.tensor(weight, requires_grad=True)
    bt = None if bias is None else torch.tensor(bias, requires_grad=True)
    rm = None if running_mean is None else torch.tensor(running_mean)
    rv = None if running_var is None else torch.tensor(running_var)
    yt = F.batch_norm(xt, rm, rv, wt, bt, training=training, momentum=momentum, eps=eps)
    yt.backward(torch.tensor(channels_first(dout, data_format)))
    return {
        "y": channels_back(yt.detach().numpy(), data_format),
        "dx": channels_back(xt.grad.numpy(), data_format),
        "dweight": None if wt is None else wt.grad.numpy(),
        "dbias": None if bt is None else bt.grad.numpy(),
        "running_mean": None if rm is None else rm.numpy(),
        "running_var": None if rv is None else rv.numpy(),
    }


# ----------------------------------------------------------------------------------------------
# batch_norm against torch
# ----------------------------------------------------------------------------------------------

@given(cfg=bn_configs(min_batch=1), dtype=st.sampled_from(DTYPES), training=st.booleans(),
       affine=st.booleans(), running=st.booleans(), seed=seeds)
def test_batch_norm_matches_torch(backend, cfg, dtype, training, affine, running, seed):
    shape, data_format = cfg
    x, weight, bias, rm, rv, dout = bn_inputs(shape, data_format, dtype, seed, affine)
    if not running and training:
        rm = rv = None
    momentum, eps = 0.3, 1e-3
    want = torch_batch_norm(x, weight, bias, None if rm is None else rm.copy(), None if rv is None else rv.copy(),
                            training, momentum, eps, dout, data_format)
    y, mean, invstd = fc.batch_norm(x, weight, bias, rm, rv, training, momentum, eps,
                                    data_format=data_format, backend=backend)
    assert y.dtype == dtype and mean.dtype == dtype and invstd.dtype == dtype
    assert y.shape == shape and mean.shape == invstd.shape == (n_channels(shape, data_format),)
    close(y, want["y"])
    if rm is not None:
        close(rm, want["running_mean"])
        close(rv, want["running_var"])
    dx, dweight, dbias = fc.batch_norm_backward(dout, x, weight, mean, invstd, training,
                                                data_format=data_format, backend=backend)
    assert dx.dtype == dweight.dtype == dbias.dtype == dtype and dx.shape == shape
    close(dx, want["dx"])
    if affine:
        close(dweight, want["dweight"])
        close(dbias, want["dbias"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 5), (3, 5, 11), (2, 3, 9, 13), (1, 2, 31, 33), (67, 3, 1, 1)])
def test_batch_norm_odd_shapes_match_torch(backend, shape, dtype):
    """Odd sizes, 8-lane tails, and (for the compiled backend) more than one task per channel."""
    x, weight, bias, rm, rv, dout = bn_inputs(shape, "NCHW", dtype, seed=sum(shape))
    want = torch_batch_norm(x, weight, bias, rm.copy(), rv.copy(), True, 0.1, 1e-5, dout, "NCHW")
    y, mean, invstd = fc.batch_norm(x, weight, bias, rm, rv, backend=backend)
    close(y, want["y"])
    close(rm, want["running_mean"])
    close(rv, want["running_var"])
    for got, key in zip(fc.batch_norm_backward(dout, x, weight, mean, invstd, backend=backend),
                        ("dx", "dweight", "dbias")):
        close(got, want[key])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, data_format", [((100, 2, 33, 35), "NCHW"), ((50, 30, 31, 3), "NHWC"),
                                                ((9001, 8), "NCHW"), ((3, 2, 70001), "NCHW")])
def test_batch_norm_large_shapes_match_torch(backend, shape, data_format, dtype):
    """Shapes whose reductions the compiled kernels split into several tasks per channel
    (uneven blocks of images, blocks of rows, pieces of a long plane) and run in parallel."""
    x, weight, bias, rm, rv, dout = bn_inputs(shape, data_format, dtype, seed=len(shape))
    for training in (True, False):
        want = torch_batch_norm(x, weight, bias, rm.copy(), rv.copy(), training, 0.1, 1e-5, dout, data_format)
        y, mean, invstd = fc.batch_norm(x, weight, bias, rm.copy(), rv.copy(), training, data_format=data_format,
                                        backend=backend)
        close(y, want["y"])
        grads = fc.batch_norm_backward(dout, x, weight, mean, invstd, training, data_format=data_format,
                                       backend=backend)
        for got, key in zip(grads, ("dx", "dweight", "dbias")):
            close(got, want[key])


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_relu_and_softmax_match_torch(backend, dtype):
    x, dout = randn(3, 100_003, dtype=dtype), randn(3, 100_003, seed=1, dtype=dtype)
    xt = torch.tensor(x, requires_grad=True)
    torch.relu(xt).backward(torch.tensor(dout))
    y = fc.relu(x, backend=backend)
    np.testing.assert_array_equal(y, torch.relu(torch.tensor(x)).numpy())
    np.testing.assert_array_equal(fc.relu_backward(dout, y, backend=backend), xt.grad.numpy())
    logits, labels = 3 * randn(4000, 13, dtype=dtype), np.random.default_rng(0).integers(0, 13, 4000)
    lt = torch.tensor(logits, requires_grad=True)
    want = F.cross_entropy(lt, torch.tensor(labels))
    want.backward()
    loss, dlogits = fc.softmax_cross_entropy(logits, labels, backend=backend)
    assert loss == pytest.approx(want.item(), rel=1e-5 if dtype == np.float32 else 1e-12)
    close(dlogits, lt.grad.numpy())


@pytest.mark.parametrize("ndim", [2, 3, 4])
@pytest.mark.parametrize("training", [True, False])
def test_nhwc_equals_transposed_nchw(backend, ndim, training):
    shape = (5, 3, 6, 7)[:ndim]
    x, weight, bias, rm, rv, dout = bn_inputs(shape, "NCHW", np.float64, seed=ndim)
    rm2, rv2 = rm.copy(), rv.copy()
    y, mean, invstd = fc.batch_norm(x, weight, bias, rm, rv, training, backend=backend)
    grads = fc.batch_norm_backward(dout, x, weight, mean, invstd, training, backend=backend)
    last = lambda a: np.ascontiguousarray(np.moveaxis(a, 1, -1))  # noqa: E731
    y2, mean2, invstd2 = fc.batch_norm(last(x), weight, bias, rm2, rv2, training, data_format="NHWC",
                                       backend=backend)
    grads2 = fc.batch_norm_backward(last(dout), last(x), weight, mean2, invstd2, training,
                                    data_format="NHWC", backend=backend)
    close(y2, last(y))
    for a, b in [(mean2, mean), (invstd2, invstd), (rm2, rm), (rv2, rv), (grads2[1], grads[1]), (grads2[2], grads[2])]:
        close(a, b)
    close(grads2[0], last(grads[0]))


def test_running_statistics_by_hand(backend):
    """momentum 0.25 on one channel of 1, 2, 6: mean 3, biased var 14/3, unbiased var 7."""
    x = np.array([[1.0], [2.0], [6.0]])
    rm, rv = np.array([0.0]), np.array([1.0])
    y, mean, invstd = fc.batch_norm(x, None, None, rm, rv, momentum=0.25, eps=1e-3, backend=backend)
    assert rm[0] == pytest.approx(0.25 * 3.0)
    assert rv[0] == pytest.approx(0.75 * 1.0 + 0.25 * 7.0)
    assert mean[0] == pytest.approx(3.0) and invstd[0] == pytest.approx(1 / np.sqrt(14 / 3 + 1e-3))
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 3.0) / np.sqrt(14 / 3 + 1e-3))
    # Evaluation normalises with the running statistics and leaves them alone.
    before = rm.copy(), rv.copy()
    y, mean, invstd = fc.batch_norm(np.array([[2.0]]), np.array([2.0]), np.array([1.0]), rm, rv,
                                    training=False, eps=0.0, backend=backend)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])
    assert y[0, 0] == pytest.approx(2.0 * (2.0 - rm[0]) / np.sqrt(rv[0]) + 1.0)
    assert mean[0] == rm[0] and not np.shares_memory(mean, rm)


def test_running_statistics_of_any_layout_and_dtype_are_updated_in_place(backend):
    """Strided and float32 running statistics (with float64 data) are updated where they are."""
    x = randn(6, 3, 2, 2)
    store = np.zeros((3, 2), dtype=np.float32)
    rm, rv = store[:, 0], np.ones(6)[::2]  # non-contiguous views
    want_rm, want_rv = np.zeros(3), np.ones(3)
    fc.batch_norm(x, None, None, want_rm, want_rv, backend="reference")
    y, mean, _ = fc.batch_norm(x, None, None, rm, rv, backend=backend)
    assert y.dtype == np.float64 and mean.dtype == np.float64  # any float64 input makes it float64
    close(store[:, 0], want_rm.astype(np.float32))
    assert not store[:, 1].any()
    close(rv, want_rv)


def test_running_statistics_vote_on_the_dtype(backend):
    x = randn(4, 3, dtype=np.float32)
    assert fc.batch_norm(x, backend=backend)[0].dtype == np.float32
    assert fc.batch_norm(x, running_mean=np.zeros(3), running_var=np.ones(3), backend=backend)[0].dtype == np.float64
    assert fc.batch_norm(x, np.ones(3, np.float32), np.zeros(3, np.int64), backend=backend)[0].dtype == np.float32
    assert fc.batch_norm(x.astype(np.int16), backend=backend)[0].dtype == np.float64


def test_evaluation_accepts_any_array_like_statistics(backend):
    """Evaluation only reads the running statistics: lists and read-only arrays are fine."""
    x = randn(3, 2)
    rv = np.array([1.0, 4.0])
    rv.flags.writeable = False
    y, mean, invstd = fc.batch_norm(x, None, None, [0.5, -1.0], rv, training=False, eps=0.0, backend=backend)
    np.testing.assert_allclose(y, (x - [0.5, -1.0]) / [1.0, 2.0])
    np.testing.assert_array_equal(invstd, [1.0, 0.5])


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_batch_norm_variance_of_offset_data(backend, data_format):
    """A mean of 1e8 against a spread of 1: sum(x**2)/n - mean**2 would lose every digit."""
    x = 1e8 + randn(64, 3, 50, seed=4)
    want = x.var(axis=(0, 2))
    if data_format == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 1))
    _, _, invstd = fc.batch_norm(x, eps=1e-5, data_format=data_format, backend=backend)
    np.testing.assert_allclose(1 / invstd**2 - 1e-5, want, rtol=1e-8)


def test_training_needs_two_values_per_channel(backend):
    with pytest.raises(ValueError, match="more than one value per channel"):
        fc.batch_norm(np.ones((1, 3)), backend=backend)
    with pytest.raises(ValueError, match="more than one value per channel"):
        fc.batch_norm(np.ones((1, 1, 1, 3)), data_format="NHWC", backend=backend)
    y, _, _ = fc.batch_norm(np.ones((1, 3)), None, None, np.zeros(3), np.ones(3), training=False, backend=backend)
    assert y.shape == (1, 3)


# ----------------------------------------------------------------------------------------------
# Empty batch
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_batch_norm_empty_batch(backend, data_format):
    """N = 0, as torch: an empty y and running statistics left alone in training, where there
    are no batch statistics (mean and invstd are NaN); evaluation returns the running ones.
    The backward of an empty batch is empty, with zero dweight and dbias."""
    shape = (0, 3, 4, 5) if data_format == "NCHW" else (0, 4, 5, 3)
    x = np.zeros(shape, dtype=np.float32)
    rm, rv = np.arange(3, dtype=np.float32), np.full(3, 4.0, dtype=np.float32)
    y, mean, invstd = fc.batch_norm(x, None, None, rm, rv, data_format=data_format, backend=backend)
    assert y.shape == shape and y.dtype == np.float32
    assert np.isnan(mean).all() and np.isnan(invstd).all() and mean.shape == (3,)
    np.testing.assert_array_equal(rm, [0, 1, 2])
    np.testing.assert_array_equal(rv, [4, 4, 4])
    torch_y = F.batch_norm(torch.zeros(0, 3, 4, 5), torch.tensor(rm), torch.tensor(rv), training=True)
    assert torch_y.shape == (0, 3, 4, 5)
    y, mean, invstd = fc.batch_norm(x, None, None, rm, rv, training=False, eps=0.0, data_format=data_format,
                                    backend=backend)
    assert y.shape == shape
    np.testing.assert_array_equal(mean, rm)
    np.testing.assert_array_equal(invstd, [0.5, 0.5, 0.5])
    dx, dweight, dbias = fc.batch_norm_backward(x, x, np.ones(3), mean, invstd, data_format=data_format,
                                                backend=backend)
    assert dx.shape == shape and dx.dtype == np.float64
    np.testing.assert_array_equal(dweight, np.zeros(3))
    np.testing.assert_array_equal(dbias, np.zeros(3))


def test_other_functions_empty_inputs(backend):
    assert fc.relu(np.zeros((0, 3)), backend=backend).shape == (0, 3)
    assert fc.relu(np.zeros((2, 0, 3), np.float32), backend=backend).dtype == np.float32
    assert fc.relu_backward(np.zeros((0, 4)), np.zeros((0, 4)), backend=backend).shape == (0, 4)
    loss, dlogits = fc.softmax_cross_entropy(np.zeros((0, 5), np.float32), np.zeros(0, np.int64), backend=backend)
    assert np.isnan(loss) and dlogits.shape == (0, 5) and dlogits.dtype == np.float32
    torch_loss = F.cross_entropy(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    assert np.isnan(torch_loss.item())
    loss, dlogits = fc.softmax_cross_entropy(np.zeros((0, 5)), np.zeros((0, 5)), backend=backend)
    assert np.isnan(loss) and dlogits.shape == (0, 5)


# ----------------------------------------------------------------------------------------------
# relu and softmax_cross_entropy against torch
# ----------------------------------------------------------------------------------------------

@given(shape=st.lists(st.integers(1, 6), min_size=0, max_size=4).map(tuple), dtype=st.sampled_from(DTYPES),
       seed=seeds)
def test_relu_matches_torch(backend, shape, dtype, seed):
    x = randn(*shape, seed=seed, dtype=dtype)
    dout = randn(*shape, seed=seed + 1, dtype=dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.relu(xt)
    yt.backward(torch.tensor(dout))
    y = fc.relu(x, backend=backend)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(fc.relu_backward(dout, y, backend=backend), xt.grad.numpy())
    # The input gives the same mask as the output.
    np.testing.assert_array_equal(fc.relu_backward(dout, x, backend=backend), xt.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_special_values(backend, dtype):
    x = np.array([-np.inf, -1.0, -0.0, 0.0, np.nan, 2.0, np.inf, np.finfo(dtype).tiny / 4], dtype=dtype)
    y = fc.relu(x, backend=backend)
    want = torch.relu(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(want))  # -0.0 stays -0.0, as torch
    # dout where y > 0: NaN and zeros give 0 (API.md); a NaN dout passes where y > 0.
    dout = np.array([1, 2, 3, 4, 5, np.nan, 7, 8], dtype=dtype)
    np.testing.assert_array_equal(fc.relu_backward(dout, y, backend=backend), [0, 0, 0, 0, 0, np.nan, 7, 8])


@given(n=st.integers(1, 6), k=st.integers(1, 7), soft=st.booleans(), dtype=st.sampled_from(DTYPES),
       scale=st.sampled_from([0.1, 3.0, 50.0]), seed=seeds)
def test_softmax_cross_entropy_matches_torch(backend, n, k, soft, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((n, k))).astype(dtype)
    target = rng.dirichlet(np.ones(k), size=n).astype(dtype) if soft else rng.integers(0, k, n)
    lt = torch.tensor(logits, requires_grad=True)
    want = F.cross_entropy(lt, torch.tensor(target))
    want.backward()
    loss, dlogits = fc.softmax_cross_entropy(logits, target, backend=backend)
    assert isinstance(loss, float) and dlogits.dtype == dtype and dlogits.shape == (n, k)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(want.item(), rel=tol, abs=tol)
    close(dlogits, lt.grad.numpy())


def test_softmax_cross_entropy_unnormalised_targets_get_torchs_gradient(backend):
    logits = randn(4, 3)
    target = np.abs(randn(4, 3, seed=1)) * 2  # rows do not sum to 1
    lt = torch.tensor(logits, requires_grad=True)
    F.cross_entropy(lt, torch.tensor(target)).backward()
    loss, dlogits = fc.softmax_cross_entropy(logits, target, backend=backend)
    close(dlogits, lt.grad.numpy())
    assert loss == pytest.approx(F.cross_entropy(torch.tensor(logits), torch.tensor(target)).item(), rel=1e-12)


def test_softmax_cross_entropy_is_stable_and_propagates_nan(backend):
    logits = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4 + 1.0, -1e4 + 2.0]])
    labels = np.array([2, 0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, dlogits = fc.softmax_cross_entropy(logits, labels, backend=backend)
    lt = torch.tensor(logits, requires_grad=True)
    want = F.cross_entropy(lt, torch.tensor(labels))
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-12)
    close(dlogits, lt.grad.numpy())
    bad = logits.copy()
    bad[0, 1] = np.nan
    with np.errstate(invalid="ignore"):
        loss, dlogits = fc.softmax_cross_entropy(bad, labels, backend=backend)
    assert np.isnan(loss) and np.isnan(dlogits[0]).all() and np.isfinite(dlogits[1]).all()


def test_special_values_give_ieee_results_without_warnings(backend):
    """NaN and inf spread to their channel's statistics (or their row's loss), as in torch; an
    evaluation with eps = 0 and a zero running variance gives an infinite invstd; a negative
    running variance a NaN one. No NumPy warnings."""
    x = np.array([[np.inf, 1.0, 5.0], [1.0, np.nan, 5.0], [2.0, 3.0, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, mean, invstd = fc.batch_norm(x, None, None, np.zeros(3), np.ones(3), backend=backend)
        _, dweight, _ = fc.batch_norm_backward(x, x, None, mean, invstd, backend=backend)
        eval_y, _, eval_invstd = fc.batch_norm(x, None, None, np.zeros(3), [0.0, -1.0, 1.0], False, eps=0.0,
                                               backend=backend)
        loss, dlogits = fc.softmax_cross_entropy([[np.inf, 0.0], [1.0, 2.0]], [0, 1], backend=backend)
    want = F.batch_norm(torch.tensor(x), None, None, training=True).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_allclose(y[:, 2], want[:, 2])  # a constant channel: 0 * 1/sqrt(eps)
    assert mean[0] == np.inf and np.isnan(mean[1]) and mean[2] == 5.0 and np.isnan(invstd[:2]).all()
    assert np.isnan(dweight[:2]).all()
    assert eval_invstd[0] == np.inf and np.isnan(eval_invstd[1]) and eval_invstd[2] == 1.0
    np.testing.assert_array_equal(eval_y[:, 2], x[:, 2])
    assert np.isnan(loss) and np.isnan(dlogits[0]).all() and np.isfinite(dlogits[1]).all()


def test_labels_do_not_vote_probabilities_do(backend):
    logits = randn(3, 4, dtype=np.float32)
    assert fc.softmax_cross_entropy(logits, np.array([0, 1, 3], np.uint8), backend=backend)[1].dtype == np.float32
    assert fc.softmax_cross_entropy(logits, np.eye(4)[:3], backend=backend)[1].dtype == np.float64
    assert fc.softmax_cross_entropy(logits, np.eye(4, dtype=bool)[:3], backend=backend)[1].dtype == np.float32
    assert fc.softmax_cross_entropy(logits.astype(int), [0, 1, 2], backend=backend)[1].dtype == np.float64


# ----------------------------------------------------------------------------------------------
# Central differences (float64)
# ----------------------------------------------------------------------------------------------

def numeric_gradient(f, array, h=1e-6):
    """d f() / d array by central differences, perturbing `array` in place."""
    grad = np.zeros(array.shape)
    flat, flat_grad = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        flat_grad[i] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape, data_format", [((5, 3), "NCHW"), ((2, 3, 4), "NCHW"), ((2, 2, 3, 3), "NCHW"),
                                                ((2, 3, 2, 3), "NHWC")])
def test_batch_norm_gradients_by_central_differences(backend, shape, data_format, training):
    x, weight, bias, rm, rv, dout = bn_inputs(shape, data_format, np.float64, seed=7)

    def loss():
        # The running statistics only feed evaluation; training gets no copies to update.
        y, _, _ = fc.batch_norm(x, weight, bias, None if training else rm, None if training else rv,
                                training, eps=1e-3, data_format=data_format, backend=backend)
        return float(np.sum(y * dout))

    _, mean, invstd = fc.batch_norm(x, weight, bias, None if training else rm, None if training else rv,
                                    training, eps=1e-3, data_format=data_format, backend=backend)
    dx, dweight, dbias = fc.batch_norm_backward(dout, x, weight, mean, invstd, training,
                                                data_format=data_format, backend=backend)
    for analytic, array in [(dx, x), (dweight, weight), (dbias, bias)]:
        np.testing.assert_allclose(analytic, numeric_gradient(loss, array), rtol=1e-6, atol=1e-8)


def test_relu_gradient_by_central_differences(backend):
    x = randn(3, 4, 5)
    x = np.where(np.abs(x) < 0.05, 0.5, x)  # away from the kink
    dout = randn(3, 4, 5, seed=1)
    analytic = fc.relu_backward(dout, fc.relu(x, backend=backend), backend=backend)
    numeric = numeric_gradient(lambda: float(np.sum(fc.relu(x, backend=backend) * dout)), x)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("soft", [False, True])
def test_softmax_cross_entropy_gradient_by_central_differences(backend, soft):
    logits = 2 * randn(4, 5)
    target = np.random.default_rng(3).dirichlet(np.ones(5), 4) if soft else np.array([0, 4, 2, 2])
    _, analytic = fc.softmax_cross_entropy(logits, target, backend=backend)
    numeric = numeric_gradient(lambda: fc.softmax_cross_entropy(logits, target, backend=backend)[0], logits)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# Backends agree with each other and with the loop oracle
# ----------------------------------------------------------------------------------------------

def bn_kernel_args(shape, data_format, dtype, seed):
    """Checked kernel arguments: the (outer, C, inner) views of x and dout, and (C,) vectors."""
    x, weight, bias, _, _, dout = bn_inputs(shape, data_format, dtype, seed)
    c = n_channels(shape, data_format)
    view = (int(np.prod(shape[:-1])), c, 1) if data_format == "NHWC" else (shape[0], c, int(np.prod(shape[2:])))
    mean = np.random.default_rng(seed).standard_normal(c).astype(dtype)
    invstd = (0.5 + np.random.default_rng(seed + 1).random(c)).astype(dtype)
    return x.reshape(view), dout.reshape(view), weight, bias, mean, invstd


@given(cfg=bn_configs(max_batch=3, min_batch=1), dtype=st.sampled_from(DTYPES), affine=st.booleans(),
       training=st.booleans(), seed=seeds)
def test_batch_norm_kernels_match_the_loop_oracle(kernel_module, cfg, dtype, affine, training, seed):
    x, dout, weight, bias, mean, invstd = bn_kernel_args(*cfg, dtype, seed)
    if not affine:
        weight = bias = None
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for got, want in zip(kernel_module.batch_norm_statistics(x), naive.batch_norm_statistics(x)):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    got = kernel_module.batch_norm_forward(x, weight, bias, mean, invstd)
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_allclose(got, naive.batch_norm_forward(x, weight, bias, mean, invstd), **tol)
    for got, want in zip(kernel_module.batch_norm_backward(dout, x, weight, mean, invstd, training),
                         naive.batch_norm_backward(dout, x, weight, mean, invstd, training)):
        assert got.dtype == dtype
        scale = np.abs(want).max(initial=0) + 1
        np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * scale)


@given(n=st.integers(0, 40), dtype=st.sampled_from(DTYPES), p=st.sampled_from([0.0, 0.3, 0.5, 1.0]), seed=seeds)
def test_elementwise_kernels_match_the_loop_oracle(kernel_module, n, dtype, p, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    x[rng.random(n) < 0.1] = np.nan
    for got, want in [(kernel_module.relu(x), naive.relu(x)),
                      (kernel_module.relu_backward(dout, x), naive.relu_backward(dout, x))]:
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
    u = rng.random(n)
    scale = 0.0 if p == 1 else 1 / (1 - p)
    (y, keep), (want_y, want_keep) = kernel_module.dropout(x, u, p, scale), naive.dropout(x, u, p, scale)
    assert keep.dtype == bool and y.dtype == dtype
    np.testing.assert_array_equal(keep, want_keep)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(kernel_module.dropout_backward(dout, keep, scale),
                                  naive.dropout_backward(dout, keep, scale))


@given(n=st.integers(1, 5), k=st.integers(1, 6), soft=st.booleans(), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_softmax_kernel_matches_the_loop_oracle(kernel_module, n, k, soft, dtype, seed):
    rng = np.random.default_rng(seed)
    logits = (4 * rng.standard_normal((n, k))).astype(dtype)
    target = rng.random((n, k)).astype(dtype) if soft else rng.integers(0, k, n).astype(np.int64)
    loss, dlogits = kernel_module.softmax_cross_entropy(logits, target)
    want_loss, want = naive.softmax_cross_entropy(logits, target)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(want_loss, rel=tol, abs=tol)
    assert dlogits.dtype == dtype
    np.testing.assert_allclose(dlogits, want, rtol=tol, atol=tol)


def test_the_loop_oracle_matches_torch():
    """So that a wrong oracle cannot agree with a wrong kernel."""
    x, dout, weight, bias, _, _ = bn_kernel_args((3, 2, 4), "NCHW", np.float64, seed=5)
    mean, var = naive.batch_norm_statistics(x)
    invstd = 1 / np.sqrt(var + 1e-5)
    want = torch_batch_norm(x, weight, bias, None, None, True, 0.1, 1e-5, dout, "NCHW")
    close(naive.batch_norm_forward(x, weight, bias, mean, invstd), want["y"])
    for got, key in zip(naive.batch_norm_backward(dout, x, weight, mean, invstd, True), ("dx", "dweight", "dbias")):
        close(got, want[key])
    logits, labels = randn(3, 4), np.array([3, 0, 1])
    lt = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(lt, torch.tensor(labels))
    loss.backward()
    got_loss, got = naive.softmax_cross_entropy(logits, labels)
    assert got_loss == pytest.approx(loss.item(), rel=1e-12)
    close(got, lt.grad.numpy())


@given(cfg=bn_configs(max_batch=9), dtype=st.sampled_from(DTYPES), training=st.booleans(), seed=seeds)
def test_public_functions_agree_across_backends(cfg, dtype, training, seed):
    if len(AVAILABLE_BACKENDS) < 2:
        pytest.skip("only one backend available")
    shape, data_format = cfg
    x, weight, bias, rm, rv, dout = bn_inputs(shape, data_format, dtype, seed)
    results = {}
    for backend in AVAILABLE_BACKENDS:
        stats = (rm.copy(), rv.copy())
        y, mean, invstd = fc.batch_norm(x, weight, bias, *stats, training, data_format=data_format, backend=backend)
        results[backend] = (y, mean, invstd, *stats,
                            *fc.batch_norm_backward(dout, x, weight, mean, invstd, training,
                                                    data_format=data_format, backend=backend))
    for got, want in zip(*results.values()):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        finite = ~np.isnan(want)
        close(got[finite], want[finite], dtype)


def test_reference_namespace_is_the_reference_backend():
    """fastconv.reference.f(...) == fastconv.f(..., backend="reference"), whatever is active."""
    x, weight, bias, rm, rv, dout = bn_inputs((3, 4, 5), "NHWC", np.float64, seed=9)
    _, mean, invstd = fc.batch_norm(x, weight, bias, data_format="NHWC", backend="reference")
    calls = {
        "batch_norm": ((x, weight, bias, rm, rv, False), {"data_format": "NHWC"}),
        "batch_norm_backward": ((dout, x, weight, mean, invstd), {"data_format": "NHWC"}),
        "relu": ((x,), {}),
        "relu_backward": ((dout, x), {}),
        "softmax_cross_entropy": ((x[0], [0, 4, 2, 1]), {}),
    }
    for active in AVAILABLE_BACKENDS:
        with fc.use_backend(active):
            for name, (args, kwargs) in calls.items():
                got = getattr(fc.reference, name)(*args, **kwargs)
                want = getattr(fc, name)(*args, **kwargs, backend="reference")
                for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                    assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), name


# ----------------------------------------------------------------------------------------------
# Determinism: bitwise identical at 1, 2 and 3 threads
# ----------------------------------------------------------------------------------------------

def _thread_results(call):
    out = []
    for threads in (1, 2, 3):
        fc.set_num_threads(threads)
        result = call()
        out.append([np.asarray(r).tobytes() for r in (result if isinstance(result, tuple) else (result,))])
    return out


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, data_format", [
    ((16, 8, 30, 30), "NCHW"), ((3, 5, 101, 97), "NCHW"), ((16, 30, 30, 8), "NHWC"), ((40000, 3), "NCHW"),
    ((2, 7, 70000), "NCHW"),
])
def test_batch_norm_is_bitwise_identical_for_every_thread_count(shape, data_format, dtype):
    x, weight, bias, rm, rv, dout = bn_inputs(shape, data_format, dtype, seed=1)

    def call():
        stats = (rm.copy(), rv.copy())
        y, mean, invstd = fc.batch_norm(x, weight, bias, *stats, data_format=data_format, backend="cython")
        grads = fc.batch_norm_backward(dout, x, weight, mean, invstd, data_format=data_format, backend="cython")
        eval_grads = fc.batch_norm_backward(dout, x, weight, mean, invstd, False, data_format=data_format,
                                            backend="cython")
        return (y, mean, invstd, *stats, *grads, *eval_grads)

    first, *others = _thread_results(call)
    assert all(other == first for other in others)


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_and_loss_are_bitwise_identical_for_every_thread_count(dtype):
    x, dout = randn(300_001, dtype=dtype), randn(300_001, seed=1, dtype=dtype)
    u = np.random.default_rng(2).random(x.size)
    kernels = _backend.kernels("cython")
    logits, labels = randn(5000, 37, dtype=dtype), np.random.default_rng(3).integers(0, 37, 5000)
    probabilities = np.random.default_rng(4).dirichlet(np.ones(37), 5000).astype(dtype)
    for call in [lambda: fc.relu(x, backend="cython"), lambda: fc.relu_backward(dout, x, backend="cython"),
                 lambda: kernels.dropout(x, u, 0.3, 1 / 0.7), lambda: kernels.dropout_backward(dout, u > 0.5, 2.0),
                 lambda: fc.softmax_cross_entropy(logits, labels, backend="cython"),
                 lambda: fc.softmax_cross_entropy(logits, probabilities, backend="cython")]:
        first, *others = _thread_results(call)
        assert all(other == first for other in others)


# ----------------------------------------------------------------------------------------------
# Memory layouts, fresh results
# ----------------------------------------------------------------------------------------------

def _layouts(a):
    """The same values as a Fortran-ordered, a strided, a reversed and a read-only array."""
    strided = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)[..., ::2]
    strided[...] = a
    reversed_ = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    readonly = a.copy()
    readonly.flags.writeable = False
    return [np.asfortranarray(a), strided, reversed_, readonly]


def test_any_layout_gives_the_contiguous_result(backend):
    x, weight, bias, rm, rv, dout = bn_inputs((3, 4, 5, 6), "NCHW", np.float64, seed=2)
    y, mean, invstd = fc.batch_norm(x, weight, bias, backend=backend)
    grads = fc.batch_norm_backward(dout, x, weight, mean, invstd, backend=backend)
    logits, probs = randn(6, 5), np.random.default_rng(0).dirichlet(np.ones(5), 6)
    want_loss = fc.softmax_cross_entropy(logits, probs, backend=backend)
    for xl, dl, wl, ll, pl in zip(_layouts(x), _layouts(dout), _layouts(weight), _layouts(logits), _layouts(probs)):
        got = fc.batch_norm(xl, wl, bias, backend=backend)
        for a, b in zip(got, (y, mean, invstd)):
            np.testing.assert_array_equal(a, b)
            assert a.flags.c_contiguous and a.flags.writeable
        for a, b in zip(fc.batch_norm_backward(dl, xl, wl, mean, invstd, backend=backend), grads):
            np.testing.assert_array_equal(a, b)
            assert a.flags.c_contiguous
        np.testing.assert_array_equal(fc.relu(xl, backend=backend), fc.relu(x, backend=backend))
        np.testing.assert_array_equal(fc.relu_backward(dl, xl, backend=backend), fc.relu_backward(dout, x, backend=backend))
        loss, dlogits = fc.softmax_cross_entropy(ll, pl, backend=backend)
        assert loss == want_loss[0]
        np.testing.assert_array_equal(dlogits, want_loss[1])


def test_results_are_new_arrays_and_inputs_are_untouched(backend):
    x, weight, bias, rm, rv, dout = bn_inputs((4, 3), "NCHW", np.float64, seed=3)
    inputs = [x, weight, bias, dout]
    before = [a.copy() for a in inputs]
    outputs = [*fc.batch_norm(x, weight, bias, rm, rv, training=False, backend=backend),
               *fc.batch_norm_backward(dout, x, weight, rm, rv, backend=backend),
               fc.relu(x, backend=backend), fc.relu_backward(dout, x, backend=backend),
               fc.softmax_cross_entropy(x, [0, 1, 2, 0], backend=backend)[1]]
    for out in outputs:
        assert out.flags.c_contiguous and out.flags.writeable
        assert not any(np.shares_memory(out, a) for a in inputs + [rm, rv])
    for a, b in zip(inputs, before):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# fastconv.nn uses them
# ----------------------------------------------------------------------------------------------

def test_relu_layer_caches_its_output_only():
    layer = fc.nn.ReLU()
    y = layer.forward(randn(2, 3, dtype=np.float32))
    assert layer._cache is y  # one copy of the activation: the next layer keeps the same array
    np.testing.assert_array_equal(layer.backward(np.ones((2, 3))), (y > 0).astype(np.float32))


def test_batch_norm_layer_caches_input_and_statistics():
    layer = fc.nn.BatchNorm2D(3)
    x = randn(2, 3, 4, 4, dtype=np.float32)
    layer.forward(x)
    cached_x, mean, invstd, training = layer._cache
    assert cached_x is x and mean.shape == invstd.shape == (3,) and training


def test_batch_norm_layer_with_eps_0_evaluates_but_does_not_train():
    layer = fc.nn.BatchNorm1D(2, eps=0)
    with pytest.raises(ValueError, match=r"BatchNorm1D.forward: eps must be positive"):
        layer.forward(randn(4, 2))
    np.testing.assert_array_equal(layer.eval().forward(np.ones((3, 2))), np.ones((3, 2), np.float32))


def test_dropout_masks_are_the_random_stream_of_one_draw():
    """The chunked draws are rng.random(x.shape) >= p, as before the compiled pass (the
    random stream did not change), also across chunk boundaries."""
    from fastconv.nn import normalization

    shape = (3, normalization._DRAW_CHUNK // 2 + 5)  # 1.5 chunks
    for dtype in DTYPES:
        layer = fc.nn.Dropout(0.4, rng=11, dtype=dtype)
        x = randn(*shape, dtype=dtype)
        y = layer.forward(x)
        keep = np.random.default_rng(11).random(shape) >= 0.4
        mask = (keep * (1 / 0.6)).astype(dtype)
        np.testing.assert_array_equal(y, x * mask)
        assert layer._cache[0].dtype == bool  # the mask kept for backward: one byte per element
        np.testing.assert_array_equal(layer.backward(2 * x), 2 * x * mask)


def test_dropout_of_special_values_is_a_product_as_torch():
    x = np.array([np.inf, np.nan, -np.inf, 1.0] * 50)
    layer = fc.nn.Dropout(0.5, rng=0, dtype=np.float64)
    y = layer.forward(x)
    dropped, special = ~layer._cache[0], ~np.isfinite(x)
    assert (dropped & special).any() and (dropped & ~special).any()
    assert np.isnan(y[dropped & special]).all() and not y[dropped & ~special].any()
    want = torch.tensor(x) * torch.tensor(np.where(dropped, 0.0, 2.0))  # torch's dropout: x * mask
    np.testing.assert_array_equal(y, want.numpy())
