"""fastconv.dlfs: the book "Deep Learning from Scratch"'s im2col/col2im and layers, against the
book-style NumPy code of tests/course_code.py (its documented layouts and conventions),
PyTorch, the reference backend and central differences; attributes, references to the
parameter arrays, the book's training loop on scikit-learn's digits; bitwise equality at 1, 2
and 3 threads; empty batches and bad input."""

import course_code as book
import numpy as np
import pytest
from conftest import AVAILABLE_BACKENDS
from helpers import numerical_gradient, randn, optional_torch
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv import _backend, _dropin_api, dlfs
from fastconv.nn import BackwardBeforeForwardError

torch = optional_torch()  # torch comparisons skip without torch; the rest runs
F = torch.nn.functional

DTYPES = [np.float32, np.float64]
needs_compiled = pytest.mark.skipif("cython" not in AVAILABLE_BACKENDS, reason="compiled backend not built")
DLFS_LAYERS = dict(Convolution=dlfs.Convolution, Pooling=dlfs.Pooling, Relu=dlfs.Relu, Affine=dlfs.Affine,
                   SoftmaxWithLoss=dlfs.SoftmaxWithLoss)


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-10, atol=1e-12)


@st.composite
def window_configs(draw, max_batch=3):
    """(x_shape, filter_h, filter_w, stride, pad) with at least one window."""
    fh, fw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, fh - 2 * pad), fh + 6))
    w = draw(st.integers(max(1, fw - 2 * pad), fw + 6))
    return (draw(st.integers(0, max_batch)), draw(st.integers(1, 3)), h, w), fh, fw, stride, pad


# ----------------------------------------------------------------------------------------------
# im2col / col2im
# ----------------------------------------------------------------------------------------------

def test_im2col_layout_is_the_books_by_definition():
    """Row (n*OH + oh)*OW + ow, column (c*FH + i)*FW + j holds x[n, c, oh*s - p + i, ow*s - p + j]."""
    x = randn(2, 3, 5, 4)
    fh, fw, s, p = 3, 2, 2, 1
    col = dlfs.im2col(x, fh, fw, s, p)
    oh, ow = (5 + 2 - 3) // 2 + 1, (4 + 2 - 2) // 2 + 1
    assert col.shape == (2 * oh * ow, 3 * fh * fw)
    for n in range(2):
        for a in range(oh):
            for b in range(ow):
                for c in range(3):
                    for i in range(fh):
                        for j in range(fw):
                            h, w = a * s - p + i, b * s - p + j
                            want = x[n, c, h, w] if 0 <= h < 5 and 0 <= w < 4 else 0.0
                            assert col[(n * oh + a) * ow + b, (c * fh + i) * fw + j] == want


@given(cfg=window_configs(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_im2col_and_col2im_match_the_books_and_torch(active_backend, cfg, dtype, seed):
    shape, fh, fw, s, p = cfg
    x = randn(*shape, seed=seed, dtype=dtype)
    col = dlfs.im2col(x, fh, fw, s, p)
    oh, ow = (shape[2] + 2 * p - fh) // s + 1, (shape[3] + 2 * p - fw) // s + 1
    assert col.shape == (shape[0] * oh * ow, shape[1] * fh * fw)
    assert col.dtype == dtype and col.flags.c_contiguous
    dcol = randn(*col.shape, seed=seed + 1, dtype=dtype)
    img = dlfs.col2im(dcol, shape, fh, fw, s, p)
    assert img.shape == shape and img.dtype == dtype
    if shape[0] == 0:   # the book's reshape(N*OH*OW, -1) fails on an empty batch
        return
    np.testing.assert_array_equal(col, book.book_im2col(x, fh, fw, s, p))
    unfold = F.unfold(torch.from_numpy(x), (fh, fw), padding=p, stride=s).numpy()
    np.testing.assert_array_equal(col, unfold.transpose(0, 2, 1).reshape(col.shape))
    np.testing.assert_allclose(img, book.book_col2im(dcol, shape, fh, fw, s, p), **tol(dtype))
    # The adjoint of im2col: <im2col(x), c> == <x, col2im(c)>.
    lhs, rhs = np.vdot(col.astype(np.float64), dcol), np.vdot(x.astype(np.float64), img)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4 if dtype == np.float32 else 1e-10)


@given(cfg=window_configs(max_batch=2), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_compiled_im2row_kernels_equal_the_reference_twins(cfg, dtype, seed):
    shape, fh, fw, s, p = cfg
    x = randn(*shape, seed=seed, dtype=dtype)
    results = {}
    for backend in AVAILABLE_BACKENDS:
        col = _dropin_api.im2row(x, fh, fw, s, p, backend=backend)
        results[backend] = col, _dropin_api.row2im(col * 2 - 1, shape, fh, fw, s, p, backend=backend)
    for col, img in results.values():
        np.testing.assert_array_equal(col, results["reference"][0])
        np.testing.assert_allclose(img, results["reference"][1], **tol(dtype))


def test_im2col_keeps_float32_accepts_any_layout_and_ints(active_backend):
    x = randn(2, 3, 6, 5, dtype=np.float32)
    want = book.book_im2col(x, 3, 3, 1, 1)
    for variant in (np.asfortranarray(x), x[:, :, ::-1][:, :, ::-1], np.repeat(x, 2, axis=3)[..., ::2]):
        got = dlfs.im2col(variant, 3, 3, 1, 1)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    ints = np.arange(2 * 1 * 4 * 4).reshape(2, 1, 4, 4)
    np.testing.assert_array_equal(dlfs.im2col(ints, 2, 2, 2), book.book_im2col(ints, 2, 2, 2))


def test_im2col_of_an_empty_batch(active_backend):
    col = dlfs.im2col(np.zeros((0, 3, 5, 5)), 3, 3)
    assert col.shape == (0, 27)
    assert dlfs.col2im(col, (0, 3, 5, 5), 3, 3).shape == (0, 3, 5, 5)


def test_im2col_and_col2im_refuse_bad_input():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="im2col: input_data must be a 4-D array"):
        dlfs.im2col(np.zeros((4, 4)), 2, 2)
    with pytest.raises(ValueError, match="im2col: the kernel spans 5 along H"):
        dlfs.im2col(x, 5, 2)
    with pytest.raises(TypeError, match="im2col: filter_w must be an int"):
        dlfs.im2col(x, 2, 2.5)
    with pytest.raises(ValueError, match="im2col: pad must be >= 0"):
        dlfs.im2col(x, 2, 2, pad=-1)
    with pytest.raises(ValueError, match="im2col: stride must be >= 1"):
        dlfs.im2col(x, 2, 2, stride=0)
    with pytest.raises(TypeError, match="im2col: input_data must have a real"):
        dlfs.im2col(x.astype(complex), 2, 2)
    with pytest.raises(ValueError, match=r"col2im: col must have shape \(N\*OH\*OW, C\*FH\*FW\) = \(9, 4\)"):
        dlfs.col2im(np.zeros((9, 5)), (1, 1, 4, 4), 2, 2)
    with pytest.raises(ValueError, match="col2im: input_shape must be"):
        dlfs.col2im(np.zeros((9, 4)), (1, 4, 4), 2, 2)


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2row_kernels_are_bitwise_identical_for_every_thread_count(dtype):
    x = randn(16, 3, 30, 29, dtype=dtype)
    col_seed = randn(*dlfs.im2col(x, 5, 4, 2, 2).shape, seed=1, dtype=dtype)
    results = []
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        results.append((dlfs.im2col(x, 5, 4, 2, 2).tobytes(), dlfs.col2im(col_seed, x.shape, 5, 4, 2, 2).tobytes()))
    assert results[0] == results[1] == results[2]


# ----------------------------------------------------------------------------------------------
# Layers against the book's
# ----------------------------------------------------------------------------------------------

def _forward_backward(layer, x, dout, **kwargs):
    out = layer.forward(x, **kwargs)
    return out, layer.backward(dout.copy())   # a copy: the book's Relu writes into dout


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1), (3, 2)])
def test_convolution_matches_the_books(active_backend, dtype, stride, pad):
    x, W, b = randn(3, 2, 9, 8, dtype=dtype), randn(4, 2, 3, 3, seed=1, dtype=dtype), randn(4, seed=2, dtype=dtype)
    ours, theirs = dlfs.Convolution(W, b, stride, pad), book.BookConvolution(W, b, stride, pad)
    want = theirs.forward(x)
    dout = randn(*want.shape, seed=3, dtype=dtype)
    out, dx = _forward_backward(ours, x, dout)
    np.testing.assert_allclose(out, want, **tol(dtype))
    np.testing.assert_allclose(dx, theirs.backward(dout), **tol(dtype))
    np.testing.assert_allclose(ours.dW, theirs.dW, **tol(dtype))
    np.testing.assert_allclose(ours.db, theirs.db, **tol(dtype))
    assert out.dtype == dx.dtype == ours.dW.dtype == ours.db.dtype == dtype
    assert ours.x is x and ours.W is W and ours.b is b
    np.testing.assert_array_equal(ours.col, theirs.col)
    np.testing.assert_array_equal(ours.col_W, theirs.col_W)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, ph, pw, stride, pad", [
    ((2, 3, 8, 8), 2, 2, 2, 0), ((2, 2, 7, 9), 3, 2, 2, 0), ((1, 2, 6, 6), 3, 3, 1, 0),
    ((2, 1, 5, 7), 2, 2, 1, 1), ((1, 2, 5, 5), 3, 3, 2, 2),
])
def test_pooling_matches_the_books_including_zero_padding(active_backend, dtype, shape, ph, pw, stride, pad):
    x = randn(*shape, dtype=dtype) - 1.0   # mostly negative: zero padding wins some windows
    ours, theirs = dlfs.Pooling(ph, pw, stride, pad), book.BookPooling(ph, pw, stride, pad)
    want = theirs.forward(x)
    dout = randn(*want.shape, seed=4, dtype=dtype)
    out, dx = _forward_backward(ours, x, dout)
    np.testing.assert_array_equal(out, want.astype(dtype))
    np.testing.assert_allclose(dx, theirs.backward(dout), **tol(dtype))
    np.testing.assert_array_equal(ours.arg_max, theirs.arg_max)
    assert out.dtype == dx.dtype == dtype and ours.x is x


def test_pooling_ties_go_to_the_books_first_maximum():
    x = np.array([[[[1.0, 3.0, 3.0, 0.0], [3.0, 2.0, 1.0, 3.0], [5, 5, 5, 5], [5, 5, 5, 5]]]])
    ours, theirs = dlfs.Pooling(2, 2, stride=2), book.BookPooling(2, 2, stride=2)
    dout = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    out, dx = _forward_backward(ours, x, dout)
    np.testing.assert_array_equal(out, theirs.forward(x))
    np.testing.assert_array_equal(dx, theirs.backward(dout))
    np.testing.assert_array_equal(ours.arg_max, theirs.arg_max)
    np.testing.assert_array_equal(ours.arg_max, [1, 0, 0, 0])


def test_pooling_default_stride_is_one_as_the_books():
    layer = dlfs.Pooling(2, 2)
    assert layer.forward(randn(1, 1, 5, 5)).shape == (1, 1, 4, 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_sigmoid_affine_match_the_books(active_backend, dtype):
    x = randn(4, 3, 2, 5, dtype=dtype)
    x.reshape(-1)[::7] = 0.0
    for ours, theirs in ((dlfs.Relu(), book.BookRelu()), (dlfs.Sigmoid(), book.BookSigmoid())):
        dout = randn(*x.shape, seed=5, dtype=dtype)
        out, dx = _forward_backward(ours, x, dout)
        want_out, want_dx = _forward_backward(theirs, x, dout)
        np.testing.assert_allclose(out, want_out, **tol(dtype))
        np.testing.assert_allclose(dx, want_dx, **tol(dtype))
        assert out.dtype == dx.dtype == dtype
    relu = dlfs.Relu()
    relu.forward(x)
    np.testing.assert_array_equal(relu.mask, x <= 0)
    sigmoid = dlfs.Sigmoid()
    np.testing.assert_array_equal(sigmoid.forward(x), sigmoid.out)
    W, b = randn(30, 6, seed=6, dtype=dtype), randn(6, seed=7, dtype=dtype)
    ours, theirs = dlfs.Affine(W, b), book.BookAffine(W, b)
    dout = randn(4, 6, seed=8, dtype=dtype)
    out, dx = _forward_backward(ours, x, dout)
    np.testing.assert_allclose(out, theirs.forward(x), **tol(dtype))
    np.testing.assert_allclose(dx, theirs.backward(dout), **tol(dtype))
    np.testing.assert_allclose(ours.dW, theirs.dW, **tol(dtype))
    np.testing.assert_allclose(ours.db, theirs.db, **tol(dtype))
    np.testing.assert_array_equal(ours.x, theirs.x)
    assert ours.original_x_shape == x.shape and dx.shape == x.shape


def test_relu_and_sigmoid_never_modify_their_arguments():
    x, dout = randn(3, 4), randn(3, 4, seed=1)
    copies = x.copy(), dout.copy()
    for layer in (dlfs.Relu(), dlfs.Sigmoid()):
        layer.forward(x)
        layer.backward(dout)
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(dout, copies[1])


@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_with_loss_matches_the_books_and_torch(active_backend, one_hot, dtype):
    x = 3 * randn(6, 5, dtype=dtype)
    labels = np.array([0, 4, 2, 2, 1, 3], dtype=np.uint8)   # the book's MNIST labels are uint8
    t = np.eye(5)[labels] if one_hot else labels
    ours, theirs = dlfs.SoftmaxWithLoss(), book.BookSoftmaxWithLoss()
    loss = ours.forward(x, t)
    want = F.cross_entropy(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(labels.astype(np.int64))).item()
    assert loss == pytest.approx(want, rel=1e-6 if dtype == np.float32 else 1e-13)
    # The book adds 1e-7 inside its log, which lowers each row's loss by about 1e-7 / p (p the
    # probability of the true class).
    p_true = book.book_softmax(x.astype(np.float64))[np.arange(6), labels]
    assert loss - theirs.forward(x, t) == pytest.approx(np.mean(1e-7 / p_true), rel=1e-2)
    np.testing.assert_allclose(ours.y, theirs.y, **tol(dtype))
    np.testing.assert_allclose(ours.backward(), theirs.backward(), **tol(dtype))
    np.testing.assert_allclose(ours.backward(2.0), 2 * theirs.backward(), **tol(dtype))
    assert ours.loss == loss and ours.t is t
    # float64 one-hot targets vote on the dtype, as they do in the book's y - t.
    assert ours.backward().dtype == (np.float64 if one_hot else dtype)


def test_dropout_draws_the_books_masks_from_numpys_global_generator():
    x = randn(4, 50)
    ours, theirs = dlfs.Dropout(0.3), book.BookDropout(0.3)
    np.random.seed(7)
    want = theirs.forward(x)
    np.random.seed(7)
    out = ours.forward(x)
    np.testing.assert_array_equal(ours.mask, theirs.mask)
    np.testing.assert_array_equal(out, want)
    dout = randn(4, 50, seed=1)
    np.testing.assert_array_equal(ours.backward(dout), theirs.backward(dout))
    np.testing.assert_array_equal(ours.forward(x, train_flg=False), theirs.forward(x, train_flg=False))
    assert 0.55 < ours.mask.mean() < 0.85
    np.random.seed(8)
    assert not np.array_equal(ours.forward(x), out)   # the stream moves on


def test_dropout_keeps_float32_and_propagates_nan_as_a_product():
    x = np.full((2, 3), np.nan, dtype=np.float32)
    out = dlfs.Dropout(0.5).forward(x)
    assert out.dtype == np.float32 and np.isnan(out).all()   # NaN * 0 is NaN, as the book's x * mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 6), (5, 2, 3, 3)])
def test_batch_normalization_matches_the_books_over_several_steps(active_backend, dtype, shape):
    d = int(np.prod(shape[1:]))
    gamma, beta = randn(d, seed=1, dtype=dtype) + 1, randn(d, seed=2, dtype=dtype)
    ours, theirs = dlfs.BatchNormalization(gamma, beta, momentum=0.8), book.BookBatchNormalization(gamma, beta, 0.8)
    for step in range(3):
        x = 2 * randn(*shape, seed=10 + step, dtype=dtype) + step
        dout = randn(*shape, seed=20 + step, dtype=dtype)
        out, dx = _forward_backward(ours, x, dout)
        want_out, want_dx = _forward_backward(theirs, x, dout)
        np.testing.assert_allclose(out, want_out, **tol(dtype))
        np.testing.assert_allclose(dx, want_dx, rtol=1e-3 if dtype == np.float32 else 1e-9, atol=1e-4)
        np.testing.assert_allclose(ours.dgamma, theirs.dgamma, rtol=1e-3 if dtype == np.float32 else 1e-9, atol=1e-4)
        np.testing.assert_allclose(ours.dbeta, theirs.dbeta, **tol(dtype))
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean, **tol(dtype))
        np.testing.assert_allclose(ours.running_var, theirs.running_var, **tol(dtype))
        assert ours.running_mean.dtype == theirs.running_mean.dtype == np.float64   # created as np.zeros(D)
        for name in ("xc", "xn", "std"):
            np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-4, atol=1e-5)
        assert ours.batch_size == theirs.batch_size == shape[0] and ours.input_shape == shape
    x = randn(*shape, seed=99, dtype=dtype)
    np.testing.assert_allclose(ours.forward(x, train_flg=False), theirs.forward(x, train_flg=False), **tol(dtype))


def test_batch_normalization_running_statistics_by_the_books_formula():
    gamma, beta = np.ones(3), np.zeros(3)
    mean0, var0 = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0])
    layer = dlfs.BatchNormalization(gamma, beta, 0.9, mean0, var0)
    x = randn(10, 3)
    layer.forward(x)
    np.testing.assert_allclose(layer.running_mean, 0.9 * mean0 + 0.1 * x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(layer.running_var, 0.9 * var0 + 0.1 * x.var(axis=0), rtol=1e-13)
    # Evaluation: (x - running_mean) / sqrt(running_var + 1e-6) * gamma + beta.
    y = layer.forward(x, train_flg=False)
    np.testing.assert_allclose(y, (x - layer.running_mean) / np.sqrt(layer.running_var + 1e-6), rtol=1e-12)


def test_batch_normalization_after_evaluation_backpropagates_through_the_affine_map():
    layer = dlfs.BatchNormalization(np.full(4, 2.0), np.zeros(4), running_mean=np.zeros(4), running_var=np.full(4, 3.0))
    layer.forward(randn(5, 4), train_flg=False)
    np.testing.assert_allclose(layer.backward(np.ones((5, 4))), np.full((5, 4), 2.0 / np.sqrt(3.0 + 1e-6)))


# ----------------------------------------------------------------------------------------------
# References to the parameters, the book's training loop, torch's gradients
# ----------------------------------------------------------------------------------------------

def test_layers_see_in_place_updates_and_rebinding_of_their_parameters():
    W, b = randn(3, 2), randn(2, seed=1)
    layer = dlfs.Affine(W, b)
    x = randn(4, 3, seed=2)
    before = layer.forward(x)
    params = {"W": W, "b": b}
    book.BookSGD(lr=0.5).update(params, {"W": np.ones_like(W), "b": np.ones_like(b)})  # params[key] -= ...
    assert layer.W is W
    np.testing.assert_allclose(layer.forward(x), before - 0.5 * x.sum(axis=1, keepdims=True) - 0.5)
    layer.W = np.zeros((3, 2))   # DeepConvNet.load_params rebinds layer.W
    np.testing.assert_allclose(layer.forward(x), np.broadcast_to(b, (4, 2)))
    conv_W = randn(2, 1, 3, 3)
    conv = dlfs.Convolution(conv_W, np.zeros(2))
    img = randn(1, 1, 5, 5)
    first = conv.forward(img)
    conv_W *= 2
    np.testing.assert_allclose(conv.forward(img), 2 * first)
    np.testing.assert_array_equal(conv.col_W, conv_W.reshape(2, -1).T)


def test_simple_convnet_trains_exactly_as_with_the_books_layers(active_backend):
    """The book's SimpleConvNet and Adam loop: fastconv.dlfs layers follow the book's layers'
    trajectory step by step (float64, as the book's parameters are)."""
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((20, 1, 12, 12)).astype(np.float32), rng.integers(0, 10, 20)
    conv_param = {"filter_num": 6, "filter_size": 3, "pad": 1, "stride": 1}
    nets = []
    for layers in (book.BOOK_LAYERS, DLFS_LAYERS):
        np.random.seed(3)
        nets.append(book.SimpleConvNet(layers, input_dim=(1, 12, 12), conv_param=conv_param, hidden_size=20))
    optimizers = [book.BookAdam(lr=0.01), book.BookAdam(lr=0.01)]
    for _ in range(5):
        for net, optimizer in zip(nets, optimizers):
            optimizer.update(net.params, net.gradient(x, t))
    theirs, ours = nets
    for key in theirs.params:
        np.testing.assert_allclose(ours.params[key], theirs.params[key], rtol=1e-8, atol=1e-10, err_msg=key)
    assert ours.loss(x, t) == pytest.approx(theirs.loss(x, t), abs=1e-6)


def test_simple_convnet_on_dlfs_layers_learns_the_digits():
    """SimpleConvNet, written the book's way with nothing but fastconv.dlfs layers and the
    book's Adam, classifies scikit-learn's held-out handwritten digits."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]   # (1797, 1, 8, 8)
    labels = digits.target
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:1500], order[1500:]
    np.random.seed(0)
    net = book.SimpleConvNet(DLFS_LAYERS, input_dim=(1, 8, 8),
                             conv_param={"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
                             hidden_size=64, weight_init_std=0.1)
    optimizer = book.BookAdam(lr=0.005)
    batch_rng = np.random.default_rng(1)
    first_loss = net.loss(images[train[:100]], labels[train[:100]])
    for _ in range(300):
        batch = batch_rng.choice(train, 50)
        optimizer.update(net.params, net.gradient(images[batch], labels[batch]))
    assert net.loss(images[train[:100]], labels[train[:100]]) < first_loss / 5
    assert net.accuracy(images[test], labels[test], batch_size=99) > 0.93


@pytest.mark.parametrize("dtype", DTYPES)
def test_simple_convnet_gradients_match_torch(active_backend, dtype):
    np.random.seed(1)
    net = book.SimpleConvNet(DLFS_LAYERS, input_dim=(1, 10, 10),
                             conv_param={"filter_num": 5, "filter_size": 3, "pad": 0, "stride": 1},
                             hidden_size=12, weight_init_std=0.3)
    for key in net.params:
        net.params[key] = net.params[key].astype(dtype)
    layers = net.layers   # the layers hold the float64 originals: give them the cast arrays
    layers["Conv1"].W, layers["Conv1"].b = net.params["W1"], net.params["b1"]
    layers["Affine1"].W, layers["Affine1"].b = net.params["W2"], net.params["b2"]
    layers["Affine2"].W, layers["Affine2"].b = net.params["W3"], net.params["b3"]
    x, t = randn(7, 1, 10, 10, dtype=dtype), np.random.default_rng(2).integers(0, 10, 7)
    grads = net.gradient(x, t)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in net.params.items()}
    h = F.max_pool2d(F.relu(F.conv2d(torch.from_numpy(x), p["W1"], p["b1"])), 2, 2).flatten(1)
    scores = F.relu(h @ p["W2"] + p["b2"]) @ p["W3"] + p["b3"]
    loss = F.cross_entropy(scores, torch.from_numpy(t))
    loss.backward()
    assert net.last_layer.loss == pytest.approx(loss.item(), rel=1e-5 if dtype == np.float32 else 1e-12)
    for key, grad in grads.items():
        assert grad.dtype == dtype, key
        np.testing.assert_allclose(grad, p[key].grad.numpy(), **tol(dtype), err_msg=key)


# ----------------------------------------------------------------------------------------------
# Central differences
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Convolution", "Pooling", "Affine", "Sigmoid", "Relu", "BatchNormalization",
                                  "SoftmaxWithLoss"])
def test_gradients_by_central_differences(active_backend, name):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 5, 5))
    params = {}
    if name == "Convolution":
        params = {"W": rng.standard_normal((3, 2, 3, 3)), "b": rng.standard_normal(3)}
        layer = dlfs.Convolution(params["W"], params["b"], stride=2, pad=1)
    elif name == "Pooling":
        layer = dlfs.Pooling(3, 3, stride=2, pad=1)
    elif name == "Affine":
        params = {"W": rng.standard_normal((50, 4)), "b": rng.standard_normal(4)}
        layer = dlfs.Affine(params["W"], params["b"])
    elif name == "BatchNormalization":
        params = {"gamma": rng.standard_normal(50), "beta": rng.standard_normal(50)}
        layer = dlfs.BatchNormalization(params["gamma"], params["beta"])
    elif name == "SoftmaxWithLoss":
        x = rng.standard_normal((4, 6))
        layer = dlfs.SoftmaxWithLoss()
    else:
        x = x + np.sign(x) * 0.1   # away from ReLU's kink
        layer = getattr(dlfs, name)()
    if name == "SoftmaxWithLoss":
        t = rng.integers(0, 6, 4)
        loss = lambda: layer.forward(x, t)
        loss()
        analytic = {"x": layer.backward()}
    else:
        out = layer.forward(x)
        weights = rng.standard_normal(out.shape)
        loss = lambda: float(np.sum(layer.forward(x) * weights))
        loss()
        analytic = {"x": layer.backward(weights)}
        grad_names = {"W": "dW", "b": "db", "gamma": "dgamma", "beta": "dbeta"}
        analytic.update({k: getattr(layer, grad_names[k]) for k in params})
    for key, array in {"x": x, **params}.items():
        np.testing.assert_allclose(analytic[key], numerical_gradient(loss, array), rtol=1e-5, atol=1e-7, err_msg=key)


# ----------------------------------------------------------------------------------------------
# Empty batches, bad input, threads
# ----------------------------------------------------------------------------------------------

def test_every_layer_passes_an_empty_batch(active_backend):
    x = np.zeros((0, 2, 6, 6))
    stack = [dlfs.Convolution(randn(3, 2, 3, 3), np.zeros(3)), dlfs.Relu(), dlfs.Pooling(2, 2, 2), dlfs.Sigmoid(),
             dlfs.Dropout(), dlfs.BatchNormalization(np.ones(12), np.zeros(12)), dlfs.Affine(randn(12, 4), np.zeros(4))]
    h = x
    for layer in stack:
        h = layer.forward(h)
    assert h.shape == (0, 4)
    loss_layer = dlfs.SoftmaxWithLoss()
    assert np.isnan(loss_layer.forward(h, np.zeros(0, dtype=int)))
    d = loss_layer.backward()
    for layer in reversed(stack):
        d = layer.backward(d)
    assert d.shape == x.shape


def test_bad_input_names_the_layer_and_the_argument():
    with pytest.raises(BackwardBeforeForwardError, match="Affine.backward called before forward"):
        dlfs.Affine(np.zeros((3, 2)), np.zeros(2)).backward(np.zeros((1, 2)))
    for layer in (dlfs.Convolution(np.zeros((1, 1, 2, 2)), np.zeros(1)), dlfs.Pooling(2, 2), dlfs.Relu(),
                  dlfs.Sigmoid(), dlfs.Dropout(), dlfs.BatchNormalization(np.ones(2), np.zeros(2)),
                  dlfs.SoftmaxWithLoss()):
        with pytest.raises(BackwardBeforeForwardError, match=f"{type(layer).__name__}.backward"):
            layer.backward(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="Affine.forward: x has 4 features per row"):
        dlfs.Affine(np.zeros((3, 2)), np.zeros(2)).forward(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="Affine.forward: b must have shape"):
        dlfs.Affine(np.zeros((3, 2)), np.zeros(3)).forward(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="conv2d: x has 2 channels but w expects 1"):
        dlfs.Convolution(np.zeros((1, 1, 2, 2)), np.zeros(1)).forward(np.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="Pooling.forward: x must be a 4-D array"):
        dlfs.Pooling(2, 2).forward(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="Pooling: pad must be >= 0"):
        dlfs.Pooling(2, 2, pad=-1).forward(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="labels must lie in"):
        dlfs.SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="BatchNormalization.forward: weight must have shape"):
        dlfs.BatchNormalization(np.ones(3), np.zeros(3)).forward(np.zeros((4, 2)))
    layer = dlfs.Relu()
    layer.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="relu_backward: y must have dout's shape"):
        layer.backward(np.zeros((3, 2)))
    bn = dlfs.BatchNormalization(np.ones(3), np.zeros(3))
    bn.forward(randn(4, 3))
    with pytest.raises(ValueError, match="BatchNormalization.backward: dout must have"):
        bn.backward(np.zeros((4, 4)))


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_training_step_is_bitwise_identical_for_every_thread_count(dtype):
    results = []
    x, t = randn(64, 1, 28, 28, dtype=dtype), np.random.default_rng(0).integers(0, 10, 64)
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        np.random.seed(0)
        net = book.SimpleConvNet(DLFS_LAYERS)
        grads = net.gradient(x, t)
        results.append([grads[k].tobytes() for k in sorted(grads)] + [np.float64(net.last_layer.loss).tobytes()])
    assert results[0] == results[1] == results[2]


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k, n", [(100, 4320, 100), (3, 700, 10), (300, 33, 64), (1, 8192, 10)])
def test_affine_kernels_are_bitwise_identical_for_every_thread_count_and_match_torch(dtype, m, k, n):
    x, w, b, dout = randn(m, k, dtype=dtype), randn(k, n, seed=1, dtype=dtype), randn(n, seed=2, dtype=dtype), \
        randn(m, n, seed=3, dtype=dtype)
    kernels = _backend.kernels("cython")
    results = []
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        results.append([kernels.affine(x, w, b), *kernels.affine_backward(dout, x, w)])
    for other in results[1:]:
        assert all(np.array_equal(a, c) for a, c in zip(results[0], other))
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = tx @ tw + tb
    ty.backward(torch.from_numpy(dout))
    scale = np.sqrt(max(k, m))
    rtol = (2e-5 if dtype == np.float32 else 1e-12) * scale
    for got, want in zip(results[0], (ty.detach(), tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=rtol, atol=rtol)
    # db is NumPy's row-order column sum, as the reference twin's.
    assert np.array_equal(results[0][3], _backend.kernels("reference").affine_backward(dout, x, w)[2])


# ----------------------------------------------------------------------------------------------
# Malformed arguments to the drop-ins' kernel entry points: a clean ValueError/TypeError or a
# result, never a crash (these run in-process: a crash would take pytest down)
# ----------------------------------------------------------------------------------------------

def _odd_values():
    shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)
    dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.complex64])
    arrays = st.builds(lambda shape, dtype: np.ones(shape, dtype=dtype), shapes, dtypes)
    scalars = st.sampled_from([-3, -1, 0, 1, 2, 3, 7, 2**40, 2.5, True, None, "a", (1, 2), (2, -1), [3]])
    return st.one_of(arrays, scalars)


def _valid_calls():
    """A valid argument list of each entry point, to be mutated."""
    x4, x2 = randn(2, 3, 5, 5), randn(4, 6)
    mean, invstd = np.zeros((2, 3)), np.ones((2, 3))
    return {
        "im2row": (_dropin_api.im2row, [x4, 3, 2, 1, 1]),
        "row2im": (_dropin_api.row2im, [np.ones((2 * 5 * 6, 18)), (2, 3, 5, 5), 3, 2, 1, 1]),
        "affine": (_dropin_api.affine, [x2, randn(6, 3), np.zeros(3)]),
        "affine_backward": (_dropin_api.affine_backward, [np.ones((4, 3)), x2, randn(6, 3)]),
        "group_norm": (_dropin_api.group_norm, [x4, np.ones(3), np.zeros(3), 3, 1e-5]),
        "group_norm_backward": (_dropin_api.group_norm_backward, [x4, x4, np.ones(3), mean, invstd, 3]),
        "svm_loss": (_dropin_api.svm_loss, [x2, np.array([0, 5, 2, 1])]),
        "masked_scale": (_dropin_api.masked_scale, [x2, x2 > 0, 2.0]),
    }


ENTRY_POINTS = _valid_calls()


def _mutated(data, value):
    """value with one axis resized, another dtype or layout, or replaced by an odd value."""
    kind = data.draw(st.sampled_from(["odd", "resize", "dtype", "layout"] if isinstance(value, np.ndarray) else ["odd"]))
    if kind == "odd":
        return data.draw(_odd_values())
    if kind == "resize" and value.ndim:
        shape = list(value.shape)
        shape[data.draw(st.integers(0, value.ndim - 1))] = data.draw(st.sampled_from([0, 1, 2, 7]))
        return np.resize(value, shape)
    if kind == "dtype":
        return value.astype(data.draw(st.sampled_from([np.float32, np.int8, np.uint64, np.bool_, np.complex128,
                                                       object])))
    return np.asfortranarray(value)[..., ::-1] if value.ndim else value


@given(name=st.sampled_from(sorted(ENTRY_POINTS)), data=st.data())
def test_drop_in_entry_points_refuse_malformed_arguments_cleanly(backend, name, data):
    function, args = ENTRY_POINTS[name]
    args = list(args)
    for _ in range(data.draw(st.integers(1, 2))):
        index = data.draw(st.integers(0, len(args) - 1))
        args[index] = _mutated(data, args[index])
    try:
        result = function(*args, backend=backend)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    for item in result if isinstance(result, tuple) else (result,):
        assert isinstance(item, (np.ndarray, float))
