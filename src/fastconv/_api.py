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

def _forward(fname, nd, check, kernel, x, w, b, hyper, backend, **layout):
    """layout: last=True for channels-last operands (conv2d's data_format="NHWC"), whose
    kernel is `kernel` + "_nhwc"."""
    kernels = _kernels(backend)
    (x, w, b), params, out_shape = check(fname, nd, x, w, b, *hyper, **layout)
    if x.shape[0] == 0:
        return np.zeros(out_shape, dtype=x.dtype)
    if nd == 1:
        (x, w), params = _as_2d(x, w), _as_2d_params(params)
    y = getattr(kernels, kernel + ("_nhwc" if layout else ""))(x, w, b, *params)
    return y.reshape(out_shape)


def _backward(fname, nd, check, kernel, dout, x, w, hyper, backend, need_dx=True, **layout):
    """need_dx=False (conv2d/conv1d only): dx is None, and NCHW kernels do not compute it."""
    kernels = _kernels(backend)
    (dout, x, w), params, out_shape = check(fname, nd, x, w, None, *hyper, dout=dout, backward=True,
                                            **layout)
    if x.shape[0] == 0:
        filters = out_shape[-1] if layout else out_shape[1]
        return np.zeros_like(x) if need_dx else None, np.zeros_like(w), np.zeros(filters, dtype=w.dtype)
    skip = {} if need_dx or layout else {"need_dx": False}
    if nd == 1:
        dx, dw, db = getattr(kernels, kernel)(*_as_2d(dout, x, w), *_as_2d_params(params), **skip)
        return None if dx is None else dx.reshape(x.shape), dw.reshape(w.shape), db
    dx, dw, db = getattr(kernels, kernel + ("_nhwc" if layout else ""))(dout, x, w, *params, **skip)
    return dx if need_dx else None, dw, db


def conv_parameter_gradients(dout, x, w, stride=1, padding=0, dilation=1, groups=1, *,
                             data_format="NCHW"):
    """(dw, db) of conv2d (conv1d for 3-D x), without computing dx: the gradients of a
    network's first layer, whose input is data. Checks and results as conv2d_backward's
    (conv1d_backward's); channels-last computes dx and drops it. Used by fastconv.nn."""
    if np.ndim(x) == 3:
        fname, nd, layout = "conv1d_backward", 1, {}
    else:
        fname, nd, layout = "conv2d_backward", 2, _layout("conv2d_backward", data_format)
    _, dw, db = _backward(fname, nd, check.conv, "conv2d_backward", dout, x, w,
                          (stride, padding, dilation, groups), None, need_dx=False, **layout)
    return dw, db


def _layout(fname, data_format):
    """The keyword that selects channels-last checks and kernels: {} for "NCHW", {"last": True}
    for "NHWC"; an unknown data_format is refused before anything else is checked."""
    return {"last": True} if check.channels_last(fname, data_format) else {}


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, data_format="NCHW",
           backend=None):
    """2-D cross-correlation, exactly ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W); (N, H, W, C) with ``data_format="NHWC"``
    w : array_like, shape (F, C // groups, KH, KW); (KH, KW, C // groups, F) with
        ``data_format="NHWC"`` (TensorFlow's and JAX's "HWIO")
    b : array_like, shape (F,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), "valid" or "same"
        Zero padding; ``OH = (H + 2*ph - dh*(KH-1) - 1) // sh + 1`` (same for W). "valid" is
        no padding; "same" pads so that OH = H and OW = W (stride 1 only), the odd element of
        an odd total ``dh*(KH-1)`` at the bottom/right, as torch.
    groups : int
        Channels and filters are split into this many groups, each convolved on its own;
        both C and F must be divisible by it. ``groups == C`` is a depthwise convolution.
    data_format : {"NCHW", "NHWC"}
        Channels-first or channels-last images (and weights, see ``w``); the NHWC result
        equals the NCHW one transposed, computed natively (see the channels-last guide).
    backend : {"cython", "reference"}, optional
        Run this call on the given backend instead of the active one.

    Returns
    -------
    y : ndarray, shape (N, F, OH, OW) ((N, OH, OW, F) with ``data_format="NHWC"``), float32
        if every floating input is float32, else float64.
    """
    return _forward("conv2d", 2, check.conv, "conv2d", x, w, b,
                    (stride, padding, dilation, groups), backend, **_layout("conv2d", data_format))


def conv2d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1, *, data_format="NCHW",
                    backend=None):
    """Gradients of :func:`conv2d`: returns ``(dx, dw, db)`` for upstream gradient ``dout``.

    ``dout`` must have the forward output's shape (N, F, OH, OW); ``dx`` has x's shape, ``dw``
    w's shape (F, C // groups, KH, KW). ``db`` is ``dout.sum(axis=(0, 2, 3))`` and is always
    returned (ignore it for a bias-free layer). With ``data_format="NHWC"`` dout is
    (N, OH, OW, F), x (N, H, W, C), w and dw (KH, KW, C // groups, F), and
    ``db = dout.sum(axis=(0, 1, 2))``.
    """
    return _backward("conv2d_backward", 2, check.conv, "conv2d_backward", dout, x, w,
                     (stride, padding, dilation, groups), backend,
                     **_layout("conv2d_backward", data_format))


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
# The 1-D functions run the 2-D kernels on (N, C, 1, L) views: a window of height 1, stride 1,
# no padding along H, so 2-D indices h*W + w are the 1-D positions.

def _window_as_2d(kernel, stride, padding):
    """A 1-D pooling window as a 2-D one of height 1 (stride 1, no padding along H)."""
    return (1,) + kernel, (1,) + stride, (0,) + padding


def _max_pool(fname, nd, x, kernel_size, stride, padding, dilation, ceil_mode, backend, last=False):
    kernels = _kernels(backend)
    x, params, out_shape = check.max_pool_forward(fname, nd, x, kernel_size, stride, padding,
                                                  dilation, ceil_mode, last)
    if x.shape[0] == 0:
        return np.zeros(out_shape, dtype=x.dtype), np.zeros(out_shape, dtype=np.int64)
    if last:
        return kernels.max_pool2d_nhwc(x, *params)
    if nd == 2:
        return kernels.max_pool2d(x, *params)
    kernel, stride, padding, dilation, ceil_mode = params
    y, indices = kernels.max_pool2d(x[:, :, None, :], *_window_as_2d(kernel, stride, padding),
                                    (1,) + dilation, ceil_mode)
    return y.reshape(out_shape), indices.reshape(out_shape)


def _max_pool_backward(fname, nd, dout, indices, input_shape, backend, last=False):
    kernels = _kernels(backend)
    dout, indices, shape = check.max_pool_backward(fname, nd, dout, indices, input_shape, last)
    if shape[0] == 0:
        return np.zeros(shape, dtype=dout.dtype)
    if last:
        return kernels.max_pool2d_backward_nhwc(dout, indices, shape)
    if nd == 2:
        return kernels.max_pool2d_backward(dout, indices, shape)
    dx = kernels.max_pool2d_backward(dout[:, :, None, :], indices[:, :, None, :], shape[:2] + (1,) + shape[2:])
    return dx.reshape(shape)


def _avg_pool(fname, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override, backend, last=False):
    kernels = _kernels(backend)
    x, params, out_shape = check.avg_pool_forward(fname, nd, x, kernel_size, stride, padding,
                                                  ceil_mode, count_include_pad, divisor_override, last)
    if x.shape[0] == 0:
        return np.zeros(out_shape, dtype=x.dtype)
    if last:
        return kernels.avg_pool2d_nhwc(x, *params)
    if nd == 2:
        return kernels.avg_pool2d(x, *params)
    return kernels.avg_pool2d(x[:, :, None, :], *_window_as_2d(*params[:3]), *params[3:]).reshape(out_shape)


def _avg_pool_backward(fname, nd, dout, input_shape, kernel_size, stride, padding, ceil_mode,
                       count_include_pad, divisor_override, backend, last=False):
    kernels = _kernels(backend)
    dout, shape, params = check.avg_pool_backward(fname, nd, dout, input_shape, kernel_size, stride,
                                                  padding, ceil_mode, count_include_pad, divisor_override,
                                                  last)
    if shape[0] == 0:
        return np.zeros(shape, dtype=dout.dtype)
    if last:
        return kernels.avg_pool2d_backward_nhwc(dout, shape, *params)
    if nd == 2:
        return kernels.avg_pool2d_backward(dout, shape, *params)
    dx = kernels.avg_pool2d_backward(dout[:, :, None, :], shape[:2] + (1,) + shape[2:],
                                     *_window_as_2d(*params[:3]), *params[3:])
    return dx.reshape(shape)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
               data_format="NCHW", backend=None):
    """2-D max pooling with argmax, as ``torch.nn.functional.max_pool2d(return_indices=True)``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W); (N, H, W, C) with ``data_format="NHWC"``
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default (None): equal to ``kernel_size``.
    padding : int or (int, int)
        Implicit -inf padding on both sides, at most ``kernel_size // 2``; never selected.
    dilation : int or (int, int)
        Spacing between the taps of a window: it spans ``dilation*(kernel_size-1) + 1``.
    ceil_mode : bool
        Round the output size up instead of down (a window that would start in the right or
        bottom padding is still dropped, as torch).
    data_format : {"NCHW", "NHWC"}
        Channels-first or channels-last ``x``, ``y`` and ``indices``.
    backend : {"cython", "reference"}, optional
        Run this call on the given backend instead of the active one.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW) ((N, OH, OW, C) with ``data_format="NHWC"``)
        ``OH = (H + 2*ph - dh*(KH-1) - 1) / sh + 1``, rounded down (up with ceil_mode).
    indices : ndarray of int64, y's shape
        ``h*W + w``, the flat position of each maximum in the unpadded input plane (in either
        layout). Ties go to the first maximum in row-major window order; NaN counts as the
        maximum.

    A dilated window that would read only padding (possible when the dilation exceeds the
    input size) is refused with a ValueError; PyTorch returns -inf and an index outside the
    input there.
    """
    return _max_pool("max_pool2d", 2, x, kernel_size, stride, padding, dilation, ceil_mode, backend,
                     check.channels_last("max_pool2d", data_format))


def max_pool2d_backward(dout, indices, input_shape, *, data_format="NCHW", backend=None):
    """Gradient of :func:`max_pool2d`: scatter-add ``dout`` at ``indices`` into zeros.

    Parameters
    ----------
    dout : array_like, shape (N, C, OH, OW); (N, OH, OW, C) with ``data_format="NHWC"``
    indices : array_like of integers, dout's shape
        As returned by :func:`max_pool2d`; each must lie in ``[0, H*W)``.
    input_shape : (N, C, H, W); (N, H, W, C) with ``data_format="NHWC"``
    data_format : {"NCHW", "NHWC"}
    backend : {"cython", "reference"}, optional

    Returns
    -------
    dx : ndarray of ``input_shape``; positions shared by several windows add up.
    """
    return _max_pool_backward("max_pool2d_backward", 2, dout, indices, input_shape, backend,
                              check.channels_last("max_pool2d_backward", data_format))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, data_format="NCHW", backend=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W); (N, H, W, C) with ``data_format="NHWC"``
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default (None): equal to ``kernel_size``.
    padding : int or (int, int)
        Implicit zero padding on both sides, at most ``kernel_size // 2``.
    ceil_mode : bool
        Round the output size up (a window that would start in the padding is dropped). The
        last window may then reach past the padding; that part is never counted.
    count_include_pad : bool
        Divide by the window size including its padded zeros (True, torch's default) or by
        the number of input elements in the window (False).
    divisor_override : int >= 1, optional
        Divide every window's sum by this instead.
    data_format : {"NCHW", "NHWC"}
        Channels-first or channels-last ``x`` and ``y``.
    backend : {"cython", "reference"}, optional

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW) ((N, OH, OW, C) with ``data_format="NHWC"``)
        ``OH = (H + 2*ph - KH) / sh + 1``, rounded down (up with ceil_mode).
    """
    return _avg_pool("avg_pool2d", 2, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, backend, check.channels_last("avg_pool2d", data_format))


def avg_pool2d_backward(dout, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, data_format="NCHW",
                        backend=None):
    """Gradient of :func:`avg_pool2d` for upstream gradient ``dout``.

    Parameters
    ----------
    dout : array_like, shape (N, C, OH, OW); (N, OH, OW, C) with ``data_format="NHWC"``
        The forward output's shape for ``input_shape`` and the hyper-parameters.
    input_shape : (N, C, H, W); (N, H, W, C) with ``data_format="NHWC"``
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        Those of the forward call.
    data_format : {"NCHW", "NHWC"}
    backend : {"cython", "reference"}, optional

    Returns
    -------
    dx : ndarray of ``input_shape``: each ``dout`` divided by its window's divisor, added
        over the window's input elements.
    """
    return _avg_pool_backward("avg_pool2d_backward", 2, dout, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, divisor_override, backend,
                              check.channels_last("avg_pool2d_backward", data_format))


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, backend=None):
    """1-D max pooling with argmax, as ``torch.nn.functional.max_pool1d(return_indices=True)``.

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    kernel_size, stride, padding, dilation : int
        As :func:`max_pool2d` along L (a 1-sequence is accepted too); ``stride=None`` means
        ``kernel_size``.
    ceil_mode : bool
    backend : {"cython", "reference"}, optional

    Returns
    -------
    y : ndarray, shape (N, C, OL)
    indices : ndarray of int64, shape (N, C, OL)
        Positions of the maxima in ``[0, L)``.
    """
    return _max_pool("max_pool1d", 1, x, kernel_size, stride, padding, dilation, ceil_mode, backend)


def max_pool1d_backward(dout, indices, input_shape, *, backend=None):
    """Gradient of :func:`max_pool1d`: scatter-add ``dout`` (N, C, OL) at ``indices`` (positions
    in ``[0, L)``) into zeros of ``input_shape`` (N, C, L).

    Parameters
    ----------
    dout : array_like, shape (N, C, OL)
    indices : array_like of integers, dout's shape
    input_shape : (N, C, L)
    backend : {"cython", "reference"}, optional

    Returns
    -------
    dx : ndarray of ``input_shape``
    """
    return _max_pool_backward("max_pool1d_backward", 1, dout, indices, input_shape, backend)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               *, backend=None):
    """1-D average pooling, as ``torch.nn.functional.avg_pool1d``.

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    kernel_size, stride, padding : int
        As :func:`avg_pool2d` along L; ``stride=None`` means ``kernel_size``.
    ceil_mode, count_include_pad : bool
        As :func:`avg_pool2d`.
    backend : {"cython", "reference"}, optional

    Returns
    -------
    y : ndarray, shape (N, C, OL)
    """
    return _avg_pool("avg_pool1d", 1, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     None, backend)


def avg_pool1d_backward(dout, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, *, backend=None):
    """Gradient of :func:`avg_pool1d` for upstream gradient ``dout`` (N, C, OL).

    Parameters
    ----------
    dout : array_like, shape (N, C, OL)
    input_shape : (N, C, L)
    kernel_size, stride, padding, ceil_mode, count_include_pad
        Those of the forward call.
    backend : {"cython", "reference"}, optional

    Returns
    -------
    dx : ndarray of ``input_shape``
    """
    return _avg_pool_backward("avg_pool1d_backward", 1, dout, input_shape, kernel_size, stride, padding,
                              ceil_mode, count_include_pad, None, backend)


def adaptive_avg_pool2d(x, output_size, *, backend=None):
    """Adaptive 2-D average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    output_size : int or (int, int)
        ``(OH, OW)``, each >= 1 (an int means both); a None entry keeps that input size, as
        torch. ``1`` is global average pooling.
    backend : {"cython", "reference"}, optional

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        Output ``(i, j)`` is the mean of rows ``floor(i*H/OH)`` to ``ceil((i+1)*H/OH) - 1``
        and columns ``floor(j*W/OW)`` to ``ceil((j+1)*W/OW) - 1`` (windows may overlap).
    """
    kernels = _kernels(backend)
    x, output_size, out_shape = check.adaptive_pool_forward("adaptive_avg_pool2d", x, output_size)
    if x.shape[0] == 0:
        return np.zeros(out_shape, dtype=x.dtype)
    return kernels.adaptive_avg_pool2d(x, output_size)


def adaptive_avg_pool2d_backward(dout, input_shape, *, backend=None):
    """Gradient of :func:`adaptive_avg_pool2d`; the output size is ``dout``'s (OH, OW).

    Parameters
    ----------
    dout : array_like, shape (N, C, OH, OW)
    input_shape : (N, C, H, W)
    backend : {"cython", "reference"}, optional

    Returns
    -------
    dx : ndarray of ``input_shape``: each ``dout`` divided by its window's size, added over
        the window.
    """
    kernels = _kernels(backend)
    dout, shape = check.adaptive_pool_backward("adaptive_avg_pool2d_backward", dout, input_shape)
    if shape[0] == 0:
        return np.zeros(shape, dtype=dout.dtype)
    return kernels.adaptive_avg_pool2d_backward(dout, shape)


# ----------------------------------------------------------------------------------------------
# Layer functions
# ----------------------------------------------------------------------------------------------

def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
               momentum=0.1, eps=1e-5, *, data_format="NCHW", backend=None):
    """Batch normalisation, as ``torch.nn.functional.batch_norm``.

    Parameters
    ----------
    x : array_like, shape (N, C), (N, C, L) or (N, C, H, W)
        Channels on axis 1; with ``data_format="NHWC"`` on the last axis ((N, L, C), (N, H, W, C)).
    weight, bias : array_like, shape (C,), optional
        The affine map after normalising; None means ones (weight) and zeros (bias).
    running_mean, running_var : ndarray, shape (C,), optional
        Running statistics. In training they are updated in place when given (both or neither;
        writeable floating arrays): ``running = (1 - momentum)*running + momentum*batch``, with
        the unbiased batch variance for ``running_var``. Evaluation needs them.
    training : bool
        Normalise with the batch's mean and biased variance (True) or the running statistics.
    momentum : float in [0, 1]
    eps : float > 0 (>= 0 in evaluation)
        Added to the variance.
    data_format : {"NCHW", "NHWC"}
    backend : {"cython", "reference"}, optional
        Run this call on the given backend instead of the active one.

    Returns
    -------
    y : ndarray, x's shape
        ``(x - mean) * invstd * weight + bias`` per channel.
    mean, invstd : ndarray, shape (C,)
        The mean and ``1 / sqrt(var + eps)`` used, for :func:`batch_norm_backward`.

    Training needs more than one value per channel (as torch). An empty batch (N = 0) gives an
    empty ``y``; in training it has no statistics, so ``mean`` and ``invstd`` are NaN and the
    running statistics are left unchanged (as torch leaves them).
    """
    return batch_norm_and_variance(x, weight, bias, running_mean, running_var, training, momentum, eps,
                                   data_format=data_format, backend=backend)[:3]


def batch_norm_and_variance(x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
                            momentum=0.1, eps=1e-5, *, data_format="NCHW", backend=None, name="batch_norm"):
    """:func:`batch_norm`, also returning the variance it normalised with, in float64 (not exported).

    Returns ``(y, mean, invstd, var)``: in training ``var`` is the biased batch variance, which
    the drop-ins' courses average into their running statistics with conventions of their own
    (fastconv.cs231n, fastconv.dlfs); ``name`` is the function named in error messages.
    """
    kernels = _kernels(backend)
    x3, shape, weight, bias, running_mean, running_var, training, momentum, eps = check.batch_norm(
        name, x, weight, bias, running_mean, running_var, training, momentum, eps, data_format
    )
    dtype = x3.dtype
    if training and x3.shape[0] == 0:
        nan = np.full(x3.shape[1], np.nan, dtype=dtype)
        return np.empty(shape, dtype=dtype), nan, nan.copy(), nan.astype(np.float64)
    # IEEE results without warnings, as the kernels give them (NaN or inf data spread to the
    # statistics; an evaluation with eps = 0 may divide by a zero running variance).
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if training:
            mean64, var64 = kernels.batch_norm_statistics(x3)
            if running_mean is not None:
                count = x3.shape[0] * x3.shape[2]
                running_mean[...] = (1 - momentum) * running_mean.astype(np.float64) + momentum * mean64
                running_var[...] = ((1 - momentum) * running_var.astype(np.float64)
                                    + momentum * (var64 * (count / (count - 1))))
            mean = mean64.astype(dtype)
        else:
            mean, var64 = running_mean, running_var.astype(np.float64)
        invstd = (1 / np.sqrt(var64 + eps)).astype(dtype)
    if x3.shape[0] == 0:
        return np.empty(shape, dtype=dtype), mean, invstd, var64
    return kernels.batch_norm_forward(x3, weight, bias, mean, invstd).reshape(shape), mean, invstd, var64


def batch_norm_backward(dout, x, weight, mean, invstd, training=True, *, data_format="NCHW",
                        backend=None):
    """Gradients of :func:`batch_norm`: returns ``(dx, dweight, dbias)``.

    ``dout`` has x's shape; ``weight`` (None: ones), ``mean`` and ``invstd`` are what
    :func:`batch_norm` used and returned. With ``training=True`` the mean and variance are
    functions of x; with ``training=False`` the backward is that of the affine map
    ``x * invstd * weight + const``. ``dweight = sum(dout * (x - mean) * invstd)`` and
    ``dbias = sum(dout)`` per channel are always returned (zeros for an empty batch).
    """
    kernels = _kernels(backend)
    dout3, x3, shape, weight, mean, invstd, training = check.batch_norm_backward(
        "batch_norm_backward", dout, x, weight, mean, invstd, training, data_format
    )
    if x3.shape[0] == 0:
        zeros = np.zeros(x3.shape[1], dtype=x3.dtype)
        return np.zeros(shape, dtype=x3.dtype), zeros, zeros.copy()
    dx, dweight, dbias = kernels.batch_norm_backward(dout3, x3, weight, mean, invstd, training)
    return dx.reshape(shape), dweight, dbias


def relu(x, *, backend=None):
    """``max(x, 0)`` elementwise, as ``torch.relu``: NaN and -0.0 pass through unchanged.

    Any shape; returns a new array of x's shape.
    """
    kernels = _kernels(backend)
    (x,) = check.elementwise("relu", [("x", x)])
    return kernels.relu(x.reshape(-1)).reshape(x.shape)


def relu_backward(dout, y, *, backend=None):
    """Gradient of :func:`relu`: ``dout`` where ``y > 0``, else 0 (``y`` is relu's output; its
    input gives the same result). NaN in ``y`` counts as not positive."""
    kernels = _kernels(backend)
    dout, y = check.elementwise("relu_backward", [("dout", dout), ("y", y)])
    return kernels.relu_backward(dout.reshape(-1), y.reshape(-1)).reshape(dout.shape)


def softmax_cross_entropy(logits, target, *, backend=None):
    """Mean cross-entropy of ``softmax(logits)``, as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    logits : array_like, shape (N, K)
    target : array_like
        Integer class labels of shape (N,) in [0, K), or target probabilities of shape (N, K)
        (any real values, as torch).
    backend : {"cython", "reference"}, optional

    Returns
    -------
    loss : float
        ``-sum(target * log_softmax(logits)) / N`` (labels: one-hot targets); NaN for N = 0.
    dlogits : ndarray, shape (N, K)
        ``(softmax(logits) * target.sum(axis=1) - target) / N``: ``(softmax - onehot) / N``
        for labels.
    """
    kernels = _kernels(backend)
    logits, target = check.softmax_cross_entropy("softmax_cross_entropy", logits, target)
    if logits.shape[0] == 0:
        return float("nan"), np.zeros(logits.shape, dtype=logits.dtype)
    loss, dlogits = kernels.softmax_cross_entropy(logits, target)
    return float(loss), dlogits
