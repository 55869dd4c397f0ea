"""fastconv's functions on dask arrays chunked along the batch.

Each function checks its arguments eagerly with the in-memory function's own checks and
returns lazy dask arrays: one task per batch chunk calls the in-memory function on that chunk
(see fastconv.dask._chunks for the rules, and for the fixed order in which dw and db are summed).
"""

import inspect
import numbers

import numpy as np

import fastconv
from fastconv.dask._chunks import batch_shape, batched, map_batches, same_batch_chunks, whole


def _with_groups(fname, function, groups, options):
    """Pass ``groups`` to the in-memory function unless it is the default 1.

    Leaving out the default keeps these functions working on a fastconv whose convolutions
    do not take ``groups=`` yet; any other value is passed on and checked there.
    """
    if (isinstance(groups, (numbers.Integral, np.integer)) and not isinstance(groups, (bool, np.bool_))
            and groups == 1):
        return options
    if "groups" not in inspect.signature(function).parameters:
        raise TypeError(
            f"{fname}: groups={groups!r} needs a fastconv whose {fname} takes groups=; "
            f"this version's fastconv.{fname} computes groups=1 only"
        )
    return {**options, "groups": groups}


# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------

def _conv_forward(fname, function, x, w, b, stride, padding, dilation, groups, options):
    options = _with_groups(fname, function, groups, options)
    x, w, b = batched(fname, "x", x), whole(fname, "w", w), whole(fname, "b", b)
    return map_batches(fname, function, [x, w, b, stride, padding, dilation], options)


def _conv_backward(fname, function, dout, x, w, stride, padding, dilation, groups, options):
    options = _with_groups(fname, function, groups, options)
    dout, x = batched(fname, "dout", dout), batched(fname, "x", x)
    same_batch_chunks(fname, [("x", x), ("dout", dout)])
    return map_batches(
        fname, function, [dout, x, whole(fname, "w", w), stride, padding, dilation], options, summed=(1, 2)
    )


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, **options):
    """:func:`fastconv.conv2d` on a dask array of images chunked along the batch.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, H, W)
        Chunked along the batch only (every chunk holds whole images).
    w : array_like or dask.array.Array, shape (F, C // groups, KH, KW)
        A NumPy array is embedded once in the graph; a dask array is brought into one chunk.
    b : array_like or dask.array.Array, shape (F,), optional
    stride, padding, dilation : int or (int, int)
    groups : int
        Passed to :func:`fastconv.conv2d` when it is not 1.
    **options
        Further keyword arguments of the in-memory function (such as ``backend=``), passed
        to every chunk's call.

    Returns
    -------
    y : dask.array.Array, shape (N, F, OH, OW)
        Lazy, with x's batch chunks; each chunk equals ``fastconv.conv2d`` of that chunk.

    Raises
    ------
    TypeError, ValueError
        At once, for anything :func:`fastconv.conv2d` refuses, for an x that is not a dask
        array, or that is chunked along an axis other than the batch.
    """
    return _conv_forward("conv2d", fastconv.conv2d, x, w, b, stride, padding, dilation, groups, options)


def conv2d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1, **options):
    """:func:`fastconv.conv2d_backward` on dask arrays chunked along the batch.

    Parameters
    ----------
    dout : dask.array.Array, shape (N, F, OH, OW)
        With the same batch chunks as ``x``.
    x : dask.array.Array, shape (N, C, H, W)
    w : array_like or dask.array.Array, shape (F, C // groups, KH, KW)
    stride, padding, dilation, groups
        As for :func:`conv2d`.
    **options
        Further keyword arguments of the in-memory function (such as ``backend=``), passed
        to every chunk's call.

    Returns
    -------
    dx : dask.array.Array, shape (N, C, H, W)
        With x's batch chunks; each chunk equals the in-memory function's dx of that chunk.
    dw : dask.array.Array, shape of w
    db : dask.array.Array, shape (F,)
        Single-chunk arrays: the chunks' ``dw`` (``db``) summed in a fixed order (neighbours
        in chunk order, two at a time, level by level), so they are bitwise identical for every
        scheduler and number of workers, and equal the in-memory sum over the whole batch up to
        rounding.

    Notes
    -----
    Compute the three together (``dask.compute(dx, dw, db)``) so that each chunk's backward
    pass runs once; computing them one by one runs it again for each.
    """
    return _conv_backward("conv2d_backward", fastconv.conv2d_backward, dout, x, w, stride, padding,
                          dilation, groups, options)


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, **options):
    """:func:`fastconv.conv1d` on a dask array ``x`` of shape (N, C, L) chunked along the batch.

    Arguments and results as :func:`conv2d`, with ``w`` of shape (F, C // groups, K) and
    ``y`` of shape (N, F, OL).
    """
    return _conv_forward("conv1d", fastconv.conv1d, x, w, b, stride, padding, dilation, groups, options)


def conv1d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1, **options):
    """:func:`fastconv.conv1d_backward` on dask arrays chunked along the batch.

    Arguments and results as :func:`conv2d_backward` (``dw`` and ``db`` summed over chunks in
    the same fixed order), for (N, C, L) images.
    """
    return _conv_backward("conv1d_backward", fastconv.conv1d_backward, dout, x, w, stride, padding,
                          dilation, groups, options)


# ----------------------------------------------------------------------------------------------
# im2col / col2im
# ----------------------------------------------------------------------------------------------

def im2col(x, kernel_size, stride=1, padding=0, dilation=1, **options):
    """:func:`fastconv.im2col` on a dask array ``x`` (N, C, H, W) chunked along the batch.

    Returns a lazy ``cols`` of shape (N, C*KH*KW, OH*OW) with x's batch chunks.
    """
    x = batched("im2col", "x", x)
    return map_batches("im2col", fastconv.im2col, [x, kernel_size, stride, padding, dilation], options)


def col2im(cols, input_shape, kernel_size, stride=1, padding=0, dilation=1, **options):
    """:func:`fastconv.col2im` on a dask array ``cols`` (N, C*KH*KW, OH*OW) chunked along the batch.

    ``input_shape`` is the full (N, C, H, W); returns a lazy array of that shape with cols'
    batch chunks.
    """
    cols = batched("col2im", "cols", cols)
    shape = batch_shape("col2im", input_shape, cols.array.shape[0], "cols")
    return map_batches("col2im", fastconv.col2im, [cols, shape, kernel_size, stride, padding, dilation], options)


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------

def max_pool2d(x, kernel_size, stride=None, padding=0, **options):
    """:func:`fastconv.max_pool2d` on a dask array ``x`` (N, C, H, W) chunked along the batch.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, H, W)
    kernel_size, stride, padding
        As :func:`fastconv.max_pool2d` (``stride=None`` means ``kernel_size``).
    **options
        Further keyword arguments of the in-memory function (such as ``backend=``), passed
        to every chunk's call.

    Returns
    -------
    y : dask.array.Array, shape (N, C, OH, OW)
    indices : dask.array.Array of int64, shape (N, C, OH, OW)
        Flat positions ``h*W + w`` in each image's plane; both with x's batch chunks.
    """
    x = batched("max_pool2d", "x", x)
    return map_batches("max_pool2d", fastconv.max_pool2d, [x, kernel_size, stride, padding], options)


def max_pool2d_backward(dout, indices, input_shape, **options):
    """:func:`fastconv.max_pool2d_backward` on dask arrays chunked along the batch.

    ``dout`` and ``indices`` (from :func:`max_pool2d`) have the same batch chunks;
    ``input_shape`` is the full (N, C, H, W). Returns a lazy ``dx`` of that shape. Index values
    are only known once computed: an index outside its plane raises the in-memory function's
    ValueError when the chunk that holds it is computed.
    """
    fname = "max_pool2d_backward"
    dout, indices = batched(fname, "dout", dout), batched(fname, "indices", indices)
    same_batch_chunks(fname, [("dout", dout), ("indices", indices)])
    shape = batch_shape(fname, input_shape, dout.array.shape[0], "dout")
    return map_batches(fname, fastconv.max_pool2d_backward, [dout, indices, shape], options)


def avg_pool2d(x, kernel_size, stride=None, padding=0, **options):
    """:func:`fastconv.avg_pool2d` on a dask array ``x`` (N, C, H, W) chunked along the batch.

    Returns a lazy ``y`` of shape (N, C, OH, OW) with x's batch chunks.
    """
    x = batched("avg_pool2d", "x", x)
    return map_batches("avg_pool2d", fastconv.avg_pool2d, [x, kernel_size, stride, padding], options)


def avg_pool2d_backward(dout, input_shape, kernel_size, stride=None, padding=0, **options):
    """:func:`fastconv.avg_pool2d_backward` on a dask array ``dout`` chunked along the batch.

    ``input_shape`` is the full (N, C, H, W); returns a lazy ``dx`` of that shape with dout's
    batch chunks.
    """
    fname = "avg_pool2d_backward"
    dout = batched(fname, "dout", dout)
    shape = batch_shape(fname, input_shape, dout.array.shape[0], "dout")
    return map_batches(fname, fastconv.avg_pool2d_backward, [dout, shape, kernel_size, stride, padding], options)

