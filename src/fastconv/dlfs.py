"""The names and conventions of the book "Deep Learning from Scratch" (its ``common/util.py``
and ``common/layers.py``) over fastconv's compiled kernels.

The book's networks (ch07's SimpleConvNet, ch08's DeepConvNet, ch06's MultiLayerNetExtend) only
change their imports::

    from fastconv.dlfs import Convolution, Pooling, Relu, Affine, SoftmaxWithLoss, im2col

What is the same as the book's code:

- constructor arguments, attributes (``W``, ``b``, ``dW``, ``db``, ``x``, ``col``, ``col_W``,
  ``mask``, ``arg_max``, ``out``, ``loss``, ``y``, ``t``, ``gamma``, ``beta``, ``dgamma``,
  ``dbeta``, ``running_mean``, ``running_var``, ...) and methods (``forward(x)``,
  ``forward(x, train_flg=True)`` for Dropout and BatchNormalization, ``backward(dout)``);
- layers hold *references* to the parameter arrays they are given and read them at every
  call, so the book's optimizers, which update ``params[key]`` in place, and code that rebinds
  ``layer.W`` both work;
- ``im2col``'s layout: ``col`` is (N*OH*OW, C*FH*FW), row ``(n*OH + oh)*OW + ow``, column
  ``(c*FH + i)*FW + j``; ``col2im`` sums overlapping windows;
- Pooling pads with zeros and its gradient goes to the first maximum of a window in row-major
  order (``np.argmax``'s choice); Dropout draws its mask from NumPy's global generator
  (``np.random.rand(*x.shape) > dropout_ratio``), so ``np.random.seed`` gives the book's masks;
  BatchNormalization normalises each feature of ``x.reshape(N, -1)`` with eps 1e-6 and
  averages the biased batch variance into ``running_var`` (created as zeros on first use).

What differs:

- the dtype is kept: float32 in, float32 out (the book's im2col makes float64 whatever it is
  given); ``dW``, ``db``, ``dgamma``, ``dbeta`` have their parameter's dtype;
- results are new C-contiguous arrays, and inputs are never modified (the book's
  ``Relu.backward`` writes into ``dout``);
- SoftmaxWithLoss computes the exact cross-entropy (the book adds 1e-7 inside the log, which
  lowers a row's loss by about 1e-7/p, p the probability of the true class), and its backward
  scales by ``dout`` (the book ignores it; the default ``dout=1`` is the same);
- Pooling with ``pad > 0`` gives the padded output size ``(H + 2*pad - pool_h) // stride + 1``
  (the book's forward leaves the padding out of its output size and fails);
- after a ``train_flg=False`` forward, BatchNormalization's backward is that of the affine map
  it applied (the book's uses the statistics of the last training batch); ReLU's gradient at a
  NaN input is 0 (the book passes ``dout`` through);
- bad input raises a ValueError or TypeError that names the function and the argument.

Attributes that the book computes in every forward but that its backward does not need
(``Convolution.col``, ``Pooling.arg_max``, ``SoftmaxWithLoss.y``, BatchNormalization's
``xc``, ``xn``, ``std``) are computed when first read.
"""

import numpy as np

import fastconv
from fastconv import _api, _dropin_api, _validation
from fastconv.nn._base import BackwardBeforeForwardError
from fastconv.nn.activations import sigmoid

__all__ = [
    "im2col", "col2im",
    "Convolution", "Pooling", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout",
    "BatchNormalization",
]

# The book's BatchNormalization adds 10e-7 to the variance.
BATCH_NORM_EPS = 10e-7


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """The sliding windows of ``input_data`` (N, C, H, W) as the rows of a matrix.

    Parameters
    ----------
    input_data : array_like, shape (N, C, H, W)
    filter_h, filter_w : int
        Window height and width.
    stride, pad : int or (int, int)
        Zero padding on every side.

    Returns
    -------
    col : ndarray, shape (N*OH*OW, C*filter_h*filter_w)
        Row ``(n*OH + oh)*OW + ow``, column ``(c*filter_h + i)*filter_w + j`` holds
        ``x[n, c, oh*stride - pad + i, ow*stride - pad + j]`` (0 in the padding), with
        ``OH = (H + 2*pad - filter_h) // stride + 1`` (OW likewise). float32 stays float32.
    """
    return _dropin_api.im2row(input_data, filter_h, filter_w, stride, pad, name="im2col")


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Fold the rows of :func:`im2col` back into images: overlapping windows are summed and the
    padding dropped (the adjoint of im2col).

    Parameters
    ----------
    col : array_like, shape (N*OH*OW, C*filter_h*filter_w)
    input_shape : (N, C, H, W)
    filter_h, filter_w, stride, pad
        As given to :func:`im2col`.

    Returns
    -------
    img : ndarray, shape input_shape
    """
    return _dropin_api.row2im(col, input_shape, filter_h, filter_w, stride, pad, name="col2im")


def _cached(layer, value):
    if value is None:
        raise BackwardBeforeForwardError(f"{type(layer).__name__}.backward called before forward")
    return value


class Convolution:
    """The book's convolution layer: ``W`` (FN, C, FH, FW), ``b`` (FN,), ``stride``, ``pad``.

    ``forward(x)`` is :func:`fastconv.conv2d` and ``backward(dout)`` :func:`fastconv.conv2d_backward`,
    which set ``dW`` and ``db``. ``col`` (the book's im2col of ``x``) is computed when read;
    ``col_W`` is the view ``W.reshape(FN, -1).T``.

    Parameters
    ----------
    W : ndarray, shape (FN, C, FH, FW)
        Filters, held by reference (in-place updates are seen by the next forward).
    b : ndarray, shape (FN,)
    stride, pad : int or (int, int)
        Zero padding on every side.
    """

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.col_W = None
        self.dW = None
        self.db = None
        self._col = None

    def forward(self, x):
        out = fastconv.conv2d(x, self.W, self.b, self.stride, self.pad)
        self.x = x
        self.col_W = np.reshape(self.W, (np.shape(self.W)[0], -1)).T
        self._col = None
        return out

    @property
    def col(self):
        """The book's ``im2col(x, FH, FW, stride, pad)`` of the last forward's input."""
        if self._col is None and self.x is not None:
            _, _, fh, fw = np.shape(self.W)
            self._col = im2col(self.x, fh, fw, self.stride, self.pad)
        return self._col

    def backward(self, dout):
        dx, dW, db = fastconv.conv2d_backward(dout, _cached(self, self.x), self.W, self.stride, self.pad)
        self.dW = _dropin_api.gradient_like(dW, self.W)
        self.db = _dropin_api.gradient_like(db, self.b)
        return dx


class Pooling:
    """The book's max pooling layer: windows ``pool_h`` x ``pool_w``, ``stride`` (1 by default,
    as the book's), zero padding ``pad``.

    Over :func:`fastconv.max_pool2d`; the gradient of a window goes to its first maximum in
    row-major order (the book's ``np.argmax``). ``arg_max`` is the book's: the position of each
    maximum inside its window, in (N, OH, OW, C) order, computed when read.

    Parameters
    ----------
    pool_h, pool_w : int
        Window height and width.
    stride : int or (int, int)
        1 by default, as the book's (SimpleConvNet passes ``stride=2``).
    pad : int or (int, int)
        Zero padding on every side; the output has ``(H + 2*pad - pool_h) // stride + 1`` rows.
    """

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self._indices = None
        self._padded_shape = None

    def forward(self, x):
        x = _dropin_api.batch_array("Pooling.forward", x)
        if x.ndim != 4:
            raise ValueError(f"Pooling.forward: x must be a 4-D array (N, C, H, W), got shape {x.shape}")
        (ph, pw), padded = self._pad_pair(), x
        if ph or pw:
            # Zero padding, as the book's im2col pads (max_pool2d's own padding is -inf).
            n, c, h, w = x.shape
            _validation.check_size("Pooling.forward", "the zero-padded input of shape", (n, c, h + 2 * ph, w + 2 * pw))
            padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        out, self._indices = fastconv.max_pool2d(padded, (self.pool_h, self.pool_w), self.stride)
        self._padded_shape = padded.shape
        self.x = x
        return out

    def _pad_pair(self):
        return _validation.int_tuple("Pooling", "pad", self.pad, 2, 0)

    @property
    def arg_max(self):
        """Index of each window's maximum inside the window (``i*pool_w + j``), flattened in the
        book's (N, OH, OW, C) order; None before the first forward."""
        if self._indices is None:
            return None
        sh, sw = _validation.int_tuple("Pooling", "stride", self.stride, 2, 1)
        _, _, oh, ow = self._indices.shape
        width = self._padded_shape[3]
        i = self._indices // width - (np.arange(oh) * sh)[:, None]
        j = self._indices % width - np.arange(ow) * sw
        return (i * self.pool_w + j).transpose(0, 2, 3, 1).reshape(-1)

    def backward(self, dout):
        indices = _cached(self, self._indices)
        dx = fastconv.max_pool2d_backward(dout, indices, self._padded_shape)
        ph, pw = self._pad_pair()
        if ph or pw:
            dx = np.ascontiguousarray(dx[:, :, ph:dx.shape[2] - ph, pw:dx.shape[3] - pw])
        return dx


class Relu:
    """The book's ReLU, over :func:`fastconv.relu` / :func:`fastconv.relu_backward`.

    ``mask`` is the book's ``x <= 0``, computed from the kept output when read. No parameters.
    """

    def __init__(self):
        self._out = None

    def forward(self, x):
        self._out = fastconv.relu(x)
        return self._out

    @property
    def mask(self):
        """``x <= 0`` of the last forward's input (the output is 0 exactly there)."""
        return None if self._out is None else self._out <= 0

    def backward(self, dout):
        return fastconv.relu_backward(dout, _cached(self, self._out))


class Sigmoid:
    """The book's sigmoid layer (computed without overflow for large ``abs(x)``); keeps ``out``. No
    parameters."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        (x,) = _validation.elementwise("Sigmoid.forward", [("x", x)])
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        out = _cached(self, self.out)
        (dout,) = _validation.elementwise("Sigmoid.backward", [("dout", dout)])
        if dout.shape != out.shape:
            raise ValueError(f"Sigmoid.backward: dout must have the forward output's shape {out.shape}, "
                             f"got {dout.shape}")
        return dout * (1.0 - out) * out


class Affine:
    """The book's fully connected layer ``x.reshape(N, -1) @ W + b``: ``W`` (D, M), ``b`` (M,).

    The GEMMs run on fastconv's threads (never NumPy's BLAS pool). Keeps ``x`` (the flattened
    input) and ``original_x_shape``; ``backward`` sets ``dW`` and ``db`` and returns ``dx`` in
    the input's shape.

    Parameters
    ----------
    W : ndarray, shape (D, M)
        Weights (in_features, out_features), held by reference.
    b : ndarray, shape (M,)
    """

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        x = _dropin_api.batch_array("Affine.forward", x)
        rows = _dropin_api.flat_rows(x)
        out = _dropin_api.affine(rows, self.W, self.b, name="Affine.forward")
        self.original_x_shape = x.shape
        self.x = rows
        return out

    def backward(self, dout):
        dx, dW, db = _dropin_api.affine_backward(dout, _cached(self, self.x), self.W, name="Affine.backward")
        self.dW = _dropin_api.gradient_like(dW, self.W)
        self.db = _dropin_api.gradient_like(db, self.b)
        return dx.reshape(self.original_x_shape)


class SoftmaxWithLoss:
    """The book's softmax + cross-entropy, over :func:`fastconv.softmax_cross_entropy`.

    ``forward(x, t)`` takes scores (N, K) and labels ``t`` (N,) or one-hot targets (N, K);
    returns the mean loss (also kept in ``loss``). ``backward(dout=1)`` returns
    ``(softmax(x) - t) / N * dout``. ``y`` (the softmax) is computed when read. No parameters.
    """

    def __init__(self):
        self.loss = None
        self.t = None
        self._x = None
        self._y = None
        self._dx = None

    def forward(self, x, t):
        self.loss, self._dx = fastconv.softmax_cross_entropy(x, t)
        self.t = t
        self._x = x
        self._y = None
        return self.loss

    @property
    def y(self):
        """``softmax(x)`` of the last forward's scores, row by row."""
        if self._y is None and self._x is not None:
            z = np.asarray(self._x, dtype=self._dx.dtype)
            e = np.exp(z - z.max(axis=1, keepdims=True))
            self._y = e / e.sum(axis=1, keepdims=True)
        return self._y

    def backward(self, dout=1):
        return _cached(self, self._dx) * dout


class Dropout:
    """The book's dropout: ``forward(x, train_flg=True)`` keeps each element where
    ``np.random.rand(*x.shape) > dropout_ratio`` (the book's draw from NumPy's global
    generator, kept in ``mask``) and zeroes the others, without rescaling; with
    ``train_flg=False`` it returns ``x * (1 - dropout_ratio)``.

    Parameters
    ----------
    dropout_ratio : float
        The probability of dropping an element.
    """

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        x = _dropin_api.batch_array("Dropout.forward", x)
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return _dropin_api.masked_scale(x, self.mask, 1.0, name="Dropout.forward")
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        return _dropin_api.masked_scale(dout, _cached(self, self.mask), 1.0, name="Dropout.backward")


class BatchNormalization:
    """The book's batch normalisation: each feature of ``x.reshape(N, -1)`` is normalised over
    the batch (eps 1e-6), then scaled by ``gamma`` and shifted by ``beta`` (both (D,)).

    In training (``train_flg=True``) it uses the batch mean and biased variance and updates
    ``running = momentum*running + (1 - momentum)*batch`` (new arrays, as the book assigns
    them; created as zeros of shape (D,) on first use); otherwise it uses the running
    statistics. Over :func:`fastconv.batch_norm`'s compiled kernels; ``backward`` sets
    ``dgamma`` and ``dbeta``.

    Parameters
    ----------
    gamma, beta : ndarray, shape (D,)
        Scale and shift, held by reference.
    momentum : float
        Weight of the old running statistics.
    running_mean, running_var : ndarray, shape (D,), optional
        Initial running statistics (zeros, float64, when None).
    """

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.dgamma = None
        self.dbeta = None
        self._cache = None

    def forward(self, x, train_flg=True):
        x = _dropin_api.batch_array("BatchNormalization.forward", x)
        rows = _dropin_api.flat_rows(x)
        if self.running_mean is None:
            self.running_mean = np.zeros(rows.shape[1])
            self.running_var = np.zeros(rows.shape[1])
        name = "BatchNormalization.forward"
        if train_flg:
            y, mean, invstd, var = _api.batch_norm_and_variance(
                rows, self.gamma, self.beta, training=True, eps=BATCH_NORM_EPS, name=name)
            m = self.momentum
            dtype = np.result_type(np.asarray(self.running_mean).dtype, y.dtype)
            self.running_mean = (m * self.running_mean + (1 - m) * mean.astype(np.float64)).astype(dtype)
            self.running_var = (m * self.running_var + (1 - m) * var).astype(dtype)
            self.batch_size = rows.shape[0]
        else:
            y, mean, invstd, var = _api.batch_norm_and_variance(
                rows, self.gamma, self.beta, self.running_mean, self.running_var, training=False,
                eps=BATCH_NORM_EPS, name=name)
        self.input_shape = x.shape
        self._cache = (rows, mean, invstd, var, train_flg)
        return y.reshape(x.shape)

    def backward(self, dout):
        rows, mean, invstd, _, batch_statistics = _cached(self, self._cache)
        dout = np.asarray(dout)
        if dout.shape != self.input_shape:
            raise ValueError(f"BatchNormalization.backward: dout must have the forward output's shape "
                             f"{self.input_shape}, got {dout.shape}")
        dx, dgamma, dbeta = fastconv.batch_norm_backward(_dropin_api.flat_rows(dout), rows, self.gamma, mean,
                                                         invstd, batch_statistics)
        self.dgamma = _dropin_api.gradient_like(dgamma, self.gamma)
        self.dbeta = _dropin_api.gradient_like(dbeta, self.beta)
        return dx.reshape(self.input_shape)

    # The book's intermediate arrays of the last forward, computed when read.

    @property
    def xc(self):
        """``x - mean`` (N, D)."""
        return None if self._cache is None else self._cache[0] - self._cache[1]

    @property
    def std(self):
        """``sqrt(var + eps)`` (D,)."""
        return None if self._cache is None else np.sqrt(self._cache[3] + BATCH_NORM_EPS)

    @property
    def xn(self):
        """``(x - mean) / std`` (N, D): the normalised input."""
        return None if self._cache is None else (self._cache[0] - self._cache[1]) * self._cache[2]
