"""The public functions: check the arguments once, then hand them to a backend's kernels.

Every function also takes a keyword-only `backend=` ("cython" or "reference") that overrides
the active backend for that one call; fastconv.reference binds it to "reference".
"""

import numpy as np

from fastconv import _backend
from fastconv import _validation as check


def _kernels(backend):
    """The kernel module for a call's `backend=` argument (None: the active backend).

    Resolved before the arguments are checked, so that an unknown backend name is refused even
    when the call takes the empty-batch shortcut and no kernel runs.
    """
    if backend is None:
        return _backend.kernels()
    return _backend.kernels(_backend._check_name(backend))


def _as_2d(*arrays):
    """View 1-D convolution operands (N, C, L) as 2-D ones with H = 1 (C-contiguity is kept)."""
    return tuple(None if a is None else a[:, :, None, :] for a in arrays)


def _as_2d_params(params):
    """1-D convolution hyper-parameters as 2-D ones whose first axis is trivial.

    Convolution: (stride, padding, dilation, groups), padding as (before, after) pairs.
    Transposed: (stride, padding, output_padding, groups, dilation).
    """
    if len(params) == 4:
        stride, padding, dilation, groups = params
        return (1,) + stride, ((0, 0),) + padding, (1,) + dilation, groups
    stride, padding, output_padding, groups, dilation = params
    return (1,) + stride, (0,) + padding, (0,) + output_padding, groups, (1,) + dilation


# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------
# conv{1,2}d and conv_transpose{1,2}d share these: `check` is the validation function, `kernel`
# the name of the backend's kernel (the 1-D functions run the 2-D kernels with H = 1).

def _forward(fname, nd, check, kernel, x, w, b, hyper, backend):
    kernels = _kernels(backend)
    (x, w, b), params, out_shape = check(fname, nd, x, w, b, *hyper)
    if x.shape[0] == 0:
        return np.zeros(out_shape, dtype=x.dtype)
    if nd == 1:
        (x, w), params = _as_2d(x, w), _as_2d_params(params)
    y = getattr(kernels, kernel)(x, w, b, *params)
    return y.reshape(out_shape)


def _backward(fname, nd, check, kernel, dout, x, w, hyper, backend):
    kernels = _kernels(backend)
    (dout, x, w), params, out_shape = check(fname, nd, x, w, None, *hyper, dout=dout, backward=True)
    if x.shape[0] == 0:
        return np.zeros_like(x), np.zeros_like(w), np.zeros(out_shape[1], dtype=w.dtype)
    if nd == 1:
        dx, dw, db = getattr(kernels, kernel)(*_as_2d(dout, x, w), *_as_2d_params(params))
        return dx.reshape(x.shape), dw.reshape(w.shape), db
    return getattr(kernels, kernel)(dout, x, w, *params)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    """2-D cross-correlation, exactly ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (F, C // groups, KH, KW)
    b : array_like, shape (F,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), "valid" or "same"
        Zero padding; ``OH = (H + 2*ph - dh*(KH-1) - 1) // sh + 1`` (same for W). "valid" is
        no padding; "same" pads so that OH = H and OW = W (stride 1 only), the odd element of
        an odd total ``dh*(KH-1)`` at the bottom/right, as torch.
    groups : int
        Channels and filters are split into this many groups, each convolved on its own;
        both C and F must be divisible by it. ``groups == C`` is a depthwise convolution.
    backend : {"cython", "reference"}, optional
        Run this call on the given backend instead of the active one.

    Returns
    -------
    y : ndarray, shape (N, F, OH, OW), float32 if every floating input is float32, else float64.
    """
    return _forward("conv2d", 2, check.conv, "conv2d", x, w, b,
                    (stride, padding, dilation, groups), backend)


def conv2d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    """Gradients of :func:`conv2d`: returns ``(dx, dw, db)`` for upstream gradient ``dout``.

    ``dout`` must have the forward output's shape (N, F, OH, OW); ``dx`` has x's shape, ``dw``
    w's shape (F, C // groups, KH, KW). ``db`` is ``dout.sum(axis=(0, 2, 3))`` and is always
    returned (ignore it for a bias-free layer).
    """
    return _backward("conv2d_backward", 2, check.conv, "conv2d_backward", dout, x, w,
                     (stride, padding, dilation, groups), backend)


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    """1-D cross-correlation, exactly ``torch.nn.functional.conv1d``.

    ``x`` is (N, C, L), ``w`` is (F, C // groups, K), ``b`` is (F,); returns (N, F, OL) with
    ``OL = (L + 2*p - d*(K-1) - 1) // s + 1``. ``padding`` may also be "valid" or "same", and
    ``groups`` means what it means for :func:`conv2d`. Computed by the 2-D kernels with H = 1.
    """
    return _forward("conv1d", 1, check.conv, "conv2d", x, w, b,
                    (stride, padding, dilation, groups), backend)


def conv1d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    """Gradients of :func:`conv1d`: returns ``(dx, dw, db)``; ``db = dout.sum(axis=(0, 2))``."""
    return _backward("conv1d_backward", 1, check.conv, "conv2d_backward", dout, x, w,
                     (stride, padding, dilation, groups), backend)


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     backend=None):
    """2-D transposed convolution, exactly ``torch.nn.functional.conv_transpose2d``.

    The gradient of :func:`conv2d` with respect to its input, as a layer of its own (an
    upsampling convolution): every input pixel adds ``x[n, c, h, w] * w[c]`` to the output
    window at ``(h*sh - ph, w*sw - pw)``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (C, F // groups, KH, KW)
    b : array_like, shape (F,), optional
    stride, padding, output_padding, dilation : int or (int, int)
        ``OH = (H - 1)*sh - 2*ph + dh*(KH - 1) + output_padding_h + 1`` (same for W);
        ``output_padding`` adds rows and columns at the bottom/right and must be smaller than
        the stride or the dilation.
    groups : int
        C and F are split into this many groups; C must be divisible by it.
    backend : {"cython", "reference"}, optional
        Run this call on the given backend instead of the active one.

    Returns
    -------
    y : ndarray, shape (N, F, OH, OW), float32 if every floating input is float32, else float64.
    """
    return _forward("conv_transpose2d", 2, check.conv_transpose, "conv_transpose2d", x, w, b,
                    (stride, padding, output_padding, groups, dilation), backend)


def conv_transpose2d_backward(dout, x, w, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, *, backend=None):
    """Gradients of :func:`conv_transpose2d`: returns ``(dx, dw, db)`` for upstream ``dout``.

    ``dout`` must have the forward output's shape (N, F, OH, OW); ``db`` is
    ``dout.sum(axis=(0, 2, 3))`` and is always returned.
    """
    return _backward("conv_transpose2d_backward", 2, check.conv_transpose,
                     "conv_transpose2d_backward", dout, x, w,
                     (stride, padding, output_padding, groups, dilation), backend)


def conv_transpose1d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     backend=None):
    """1-D transposed convolution, exactly ``torch.nn.functional.conv_transpose1d``.

    ``x`` is (N, C, L), ``w`` is (C, F // groups, K), ``b`` is (F,); returns (N, F, OL) with
    ``OL = (L - 1)*s - 2*p + d*(K - 1) + output_padding + 1``.
    """
    return _forward("conv_transpose1d", 1, check.conv_transpose, "conv_transpose2d", x, w, b,
                    (stride, padding, output_padding, groups, dilation), backend)


def conv_transpose1d_backward(dout, x, w, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, *, backend=None):
    """Gradients of :func:`conv_transpose1d`: ``(dx, dw, db)``; ``db = dout.sum(axis=(0, 2))``."""
    return _backward("conv_transpose1d_backward", 1, check.conv_transpose,
                     "conv_transpose2d_backward", dout, x, w,
                     (stride, padding, output_padding, groups, dilation), backend)


# ----------------------------------------------------------------------------------------------
# im2col / col2im
# ----------------------------------------------------------------------------------------------

def im2col(x, kernel_size, stride=1, padding=0, dilation=1, *, backend=None):
    """Unfold sliding windows into columns, as ``torch.nn.functional.unfold``.

    Returns ``cols`` of shape (N, C*KH*KW, OH*OW): row ``c*KH*KW + i*KW + j``, column
    ``oh*OW + ow`` holds ``x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]`` (0 in the padding).
    """
    kernels = _kernels(backend)
    x, params, out_shape = check.im2col("im2col", x, kernel_size, stride, padding, dilation)
    if x.shape[0] == 0:
        return np.zeros(out_shape, dtype=x.dtype)
    return kernels.im2col(x, *params)


def col2im(cols, input_shape, kernel_size, stride=1, padding=0, dilation=1, *, backend=None):
    """Fold columns back into an image, as ``torch.nn.functional.fold`` (the adjoint of im2col).

    Overlapping contributions are summed and those that fall in the padding are dropped.
    ``input_shape`` is the full (N, C, H, W); returns an array of that shape.
    """
    kernels = _kernels(backend)
    cols, shape, params = check.col2im("col2im", cols, input_shape, kernel_size, stride, padding, dilation)
    if shape[0] == 0:
        return np.zeros(shape, dtype=cols.dtype)
    return kernels.col2im(cols, shape, *params)


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------

def max_pool2d(x, kernel_size, stride=None, padding=0, *, backend=None):
    """2-D max pooling with argmax, as ``torch.nn.functional.max_pool2d(return_indices=True)``.

    Returns ``(y, indices)``; ``indices`` (int64, ``y.shape``) holds ``h*W + w``, the flat
    position of each maximum in the unpadded input plane. Padding is -inf and never selected;
    ties go to the first maximum in row-major window order; NaN counts as the maximum.
    ``stride=None`` means ``stride = kernel_size``; padding may be at most kernel_size // 2.
    """
    kernels = _kernels(backend)
    x, params, out_shape = check.pool_forward("max_pool2d", x, kernel_size, stride, padding)
    if x.shape[0] == 0:
        return np.zeros(out_shape, dtype=x.dtype), np.zeros(out_shape, dtype=np.int64)
    return kernels.max_pool2d(x, *params)


def max_pool2d_backward(dout, indices, input_shape, *, backend=None):
    """Gradient of :func:`max_pool2d`: scatter-add ``dout`` at ``indices`` into zeros of
    ``input_shape``. Indices must be integers of dout's shape inside [0, H*W)."""
    kernels = _kernels(backend)
    dout, indices, shape = check.max_pool_backward("max_pool2d_backward", dout, indices, input_shape)
    if shape[0] == 0:
        return np.zeros(shape, dtype=dout.dtype)
    return kernels.max_pool2d_backward(dout, indices, shape)


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, backend=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d`` (padded zeros are counted
    in the divisor: ``count_include_pad=True``). ``stride=None`` means ``stride = kernel_size``."""
    kernels = _kernels(backend)
    x, params, out_shape = check.pool_forward("avg_pool2d", x, kernel_size, stride, padding)
    if x.shape[0] == 0:
        return np.zeros(out_shape, dtype=x.dtype)
    return kernels.avg_pool2d(x, *params)


def avg_pool2d_backward(dout, input_shape, kernel_size, stride=None, padding=0, *, backend=None):
    """Gradient of :func:`avg_pool2d` for upstream gradient ``dout`` (the forward's shape)."""
    kernels = _kernels(backend)
    dout, shape, params = check.avg_pool_backward(
        "avg_pool2d_backward", dout, input_shape, kernel_size, stride, padding
    )
    if shape[0] == 0:
        return np.zeros(shape, dtype=dout.dtype)
    return kernels.avg_pool2d_backward(dout, shape, *params)
