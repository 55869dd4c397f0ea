"""Argument checking and normalisation for every public function.

Everything a kernel relies on is established here, once, before any backend runs: arrays are
C-contiguous copies (or the caller's own array when it already is one) of the computation
dtype, hyper-parameters are tuples of Python ints within range, and every shape agrees with
every other. Errors name the function, the argument, what was expected and what was given.
"""

import functools
import math
import numbers
import operator

import numpy as np

# Hyper-parameters beyond this are refused: they are meaningless for any array that fits in
# memory, and refusing them keeps every index product inside 64 bits.
MAX_HYPERPARAMETER = 2**31 - 1

# Largest element count of any array a call creates (result or per-image workspace): its size
# in bytes (at most 8 per element) must fit in a signed 64-bit integer. Shapes beyond that are
# refused up front with a clear message; otherwise the kernels' 64-bit index products could
# wrap around, and NumPy would fail later with a message that names no argument.
MAX_ELEMENTS = np.iinfo(np.intp).max // 8

_DIM_NAMES = {1: ("L",), 2: ("H", "W")}


def _describe(value):
    """Short description of a value for error messages."""
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} (type {type(value).__name__})"


def _as_array(fname, name, value):
    """np.asarray(value) that turns 'not array-like' into a TypeError naming the argument."""
    if value is None:
        raise TypeError(f"{fname}: {name} must be an array, got None")
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{fname}: {name} must be array-like, got {_describe(value)} ({exc})") from None


def _check_numeric(fname, name, array):
    _check_dtype(fname, name, array.dtype)


def _check_dtype(fname, name, dtype):
    if dtype.kind not in "fiub":
        raise TypeError(
            f"{fname}: {name} must have a real floating, integer or bool dtype, got dtype {dtype}"
        )


def computation_dtype(dtypes):
    """float32 when every floating dtype among `dtypes` is float32, else float64.

    Integer and bool inputs do not vote, so an all-integer call computes in float64. Sizes are
    compared, not dtypes: float32 data in non-native byte order ('>f4') stays float32.
    """
    floating = [d for d in dtypes if d.kind == "f"]
    if floating and all(d.itemsize == 4 for d in floating):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def float_arrays(fname, named_values, ndims):
    """Convert the named inputs to C-contiguous arrays of the computation dtype.

    named_values: sequence of (name, value); ndims: the ndim each must have (None to skip).
    The dtype is float32 when every floating input is float32, otherwise float64 (integer and
    bool inputs are promoted; an all-integer call computes in float64).
    Returns (list of arrays, dtype).
    """
    arrays = []
    for (name, value), ndim in zip(named_values, ndims):
        array = _as_array(fname, name, value)
        _check_numeric(fname, name, array)
        if ndim is not None and array.ndim != ndim:
            raise ValueError(
                f"{fname}: {name} must be a {ndim}-D array, got a {array.ndim}-D array "
                f"of shape {array.shape}"
            )
        arrays.append(array)
    dtype = computation_dtype([a.dtype for a in arrays])
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays], dtype


def _int(fname, name, value, description):
    """value as a Python int, refusing bools, floats and other non-integers."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]  # a 0-d integer array is an int
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{fname}: {name} must be {description}, got {_describe(value)}")
    return operator.index(value)


def int_tuple(fname, name, value, nd, minimum):
    """An int or a length-nd sequence of ints, as a tuple of nd ints >= minimum."""
    description = _int_spelling(nd)
    if nd == 1 and isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    # After unwrapping a 1-list: conv1d's stride=[np.array(2)] is an int too.
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]  # a 0-d array is a scalar (len() of it would raise a bare TypeError)
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != nd:
            raise ValueError(f"{fname}: {name} must be {description}, got {_describe(value)}")
        result = tuple(_int(fname, name, v, description) for v in value)
    else:
        result = (_int(fname, name, value, description),) * nd
    for v in result:
        if v < minimum:
            raise ValueError(f"{fname}: {name} must be >= {minimum}, got {value!r}")
        if v > MAX_HYPERPARAMETER:
            raise ValueError(f"{fname}: {name} must be <= {MAX_HYPERPARAMETER}, got {value!r}")
    return result


def input_shape_tuple(fname, value):
    """The full (N, C, H, W) input shape of a backward or col2im call."""
    description = "a sequence of 4 ints (N, C, H, W)"
    # Nested sequences are refused by _int below (np.ndim would choke on ragged ones).
    if (not isinstance(value, (tuple, list, np.ndarray))
            or (isinstance(value, np.ndarray) and value.ndim != 1) or len(value) != 4):
        raise ValueError(f"{fname}: input_shape must be {description}, got {_describe(value)}")
    shape = tuple(_int(fname, "input_shape", v, description) for v in value)
    if shape[0] < 0 or min(shape[1:]) < 1:
        raise ValueError(
            f"{fname}: input_shape must have N >= 0 and C, H, W >= 1, got {shape}"
        )
    # The result is allocated with this shape: refuse sizes no array can have (and whose
    # flat indices would overflow 64 bits in a kernel) with a clear message.
    check_size(fname, "input_shape", shape)
    return shape


def check_size(fname, what, shape):
    """ValueError when an array of this shape could not exist (see MAX_ELEMENTS).

    An empty batch does not exempt the rest of the shape: NumPy refuses such shapes too.
    """
    elements = math.prod(max(int(d), 1) for d in shape)
    if elements > MAX_ELEMENTS:
        raise ValueError(
            f"{fname}: {what} {tuple(shape)} would have {elements} elements, more than "
            f"any array can hold ({MAX_ELEMENTS}); check the sizes and hyper-parameters"
        )


def check_nonempty(fname, name, shape, axes_names):
    """Every dimension but the batch must be at least 1 (PyTorch refuses empty planes too)."""
    for size, axis in zip(shape, axes_names):
        if size < 1 and axis != "N":
            raise ValueError(
                f"{fname}: {name} must have {axis} >= 1 (only the batch may be empty), "
                f"got shape {shape}"
            )


def output_size(fname, nd, in_sizes, kernel, stride, padding, dilation):
    """Output spatial size; ValueError when the dilated kernel exceeds the padded input.

    padding: one int per axis (both sides alike) or a (before, after) pair per axis.
    """
    out = []
    for axis, size, k, s, p, d in zip(_DIM_NAMES[nd], in_sizes, kernel, stride, padding, dilation):
        before, after = p if isinstance(p, tuple) else (p, p)
        span = d * (k - 1) + 1
        if size + before + after < span:
            shown = before if before == after else (before, after)
            raise ValueError(
                f"{fname}: the kernel spans {span} along {axis} (size {k}, dilation {d}) but the "
                f"padded input has only {size + before + after} ({axis}={size}, padding={shown}); "
                f"the output would be empty"
            )
        out.append((size + before + after - span) // s + 1)
    return tuple(out)


def conv_padding(fname, padding, nd, stride, dilation, kernel):
    """A convolution's padding as a (before, after) pair per axis.

    padding: an int or nd ints (both sides alike), "valid" (none) or "same" (output size equals
    input size: stride 1 only; the total dilation*(K-1) is split with the odd element after, at
    the bottom/right, as torch).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding != "same":
            raise ValueError(
                f"{fname}: padding must be 'valid', 'same', {_int_spelling(nd)}, got {padding!r}"
            )
        if any(s != 1 for s in stride):
            raise ValueError(f"{fname}: padding='same' needs stride 1, got stride={stride}")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((total // 2, total - total // 2) for total in totals)
    return tuple((p, p) for p in int_tuple(fname, "padding", padding, nd, 0))


def _int_spelling(nd):
    return "an int" if nd == 1 else f"an int or a sequence of {nd} ints"


def positive_count(fname, name, value):
    """A count such as groups: a Python int >= 1 (bools, floats and sequences are refused)."""
    value = _int(fname, name, value, "an int")
    if value < 1:
        raise ValueError(f"{fname}: {name} must be >= 1, got {value}")
    return value


def check_dout(fname, dout_shape, expected_shape):
    if tuple(dout_shape) != tuple(expected_shape):
        raise ValueError(
            f"{fname}: dout must have the forward output's shape {tuple(expected_shape)}, "
            f"got {tuple(dout_shape)}"
        )


# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------

def conv(fname, nd, x, w, b, stride, padding, dilation, groups, dout=None, backward=False):
    """Check a conv{nd}d forward (b) or backward (dout) call.

    Returns (arrays, params, out_shape) where arrays is [x, w, b] or [dout, x, w] (b may be
    None) and params is (stride, padding, dilation, groups): stride and dilation nd-tuples,
    padding a (before, after) pair per axis.
    """
    return _checked_call(_conv_plan, fname, nd, x, w, b, dout, backward,
                         (stride, padding, dilation, groups))


def conv_transpose(fname, nd, x, w, b, stride, padding, output_padding, groups, dilation,
                   dout=None, backward=False):
    """Check a conv_transpose{nd}d forward (b) or backward (dout) call.

    Returns (arrays, params, out_shape) as conv() does, with params (stride, padding,
    output_padding, groups, dilation): nd-tuples of ints, and groups an int.
    """
    return _checked_call(_conv_transpose_plan, fname, nd, x, w, b, dout, backward,
                         (stride, padding, output_padding, groups, dilation))


def _checked_call(plan, fname, nd, x, w, b, dout, backward, hyper):
    """The arrays of a convolution call converted to the dtype that `plan` decides."""
    names = ("dout", "x", "w") if backward else ("x", "w", "b")
    values = (dout, x, w) if backward else (x, w, b)
    arrays = [None if v is None and n == "b" else _as_array(fname, n, v) for n, v in zip(names, values)]
    meta = tuple(None if a is None else (a.shape, a.dtype) for a in arrays)
    args = (fname, nd, backward, meta) + tuple(hyper)
    # Everything but the conversion depends only on shapes, dtypes and hyper-parameters, so
    # the checks are cached for repeated calls (they cost more than a tiny convolution).
    # Only plain ints and strings are cached: 2.0 == 2 and True == 1 would otherwise share
    # an entry.
    if all(_is_plain(p) for p in hyper):
        params, out_shape, dtype = plan(*args)
    else:
        params, out_shape, dtype = plan.__wrapped__(*args)
    converted = [None if a is None else np.ascontiguousarray(a, dtype=dtype) for a in arrays]
    return converted, params, out_shape


def _is_plain(value):
    return type(value) in (int, str) or (type(value) is tuple and all(type(v) is int for v in value))


def _array_shapes(fname, names, meta, layouts):
    """{name: shape} of the given arrays after checking their dtypes and numbers of dimensions."""
    shapes = {}
    for name, item in zip(names, meta):
        if item is None:
            continue
        shape, dtype = item
        _check_dtype(fname, name, dtype)
        if len(shape) != len(layouts[name]):
            raise ValueError(
                f"{fname}: {name} must be a {len(layouts[name])}-D array "
                f"({', '.join(layouts[name])}), got a {len(shape)}-D array of shape {shape}"
            )
        shapes[name] = shape
    check_nonempty(fname, "x", shapes["x"], layouts["x"])
    check_nonempty(fname, "w", shapes["w"], layouts["w"])
    return shapes


def _kernel_axes(nd):
    return tuple("K" + a for a in _DIM_NAMES[nd]) if nd == 2 else ("K",)


def _check_divides(fname, groups, count, what, name, shape):
    if count % groups:
        raise ValueError(
            f"{fname}: groups={groups} must divide the {count} {what} of {name} "
            f"({name}.shape={shape})"
        )


def _check_bias(fname, shapes, filters, ws):
    if "b" in shapes and shapes["b"] != (filters,):
        raise ValueError(
            f"{fname}: b must have shape (F,) = ({filters},) to match w.shape={ws}, "
            f"got shape {shapes['b']}"
        )


def _check_sizes(fname, nd, out_shape, columns, blas_dims, described):
    """Refuse results and workspaces no array can hold, and GEMM sizes beyond BLAS's ints."""
    check_size(fname, "the output of shape", out_shape)
    check_size(fname, "an image's im2col matrix of shape", columns)
    # The compiled kernels hand these sizes to BLAS, whose dimensions are 32-bit ints. Both
    # backends refuse alike (a single output plane this large is already over 8 GB).
    for dim_name, dim in blas_dims.items():
        if dim > MAX_HYPERPARAMETER:
            raise ValueError(
                f"{fname}: {dim_name} = {dim} is more than BLAS's 32-bit limit of "
                f"{MAX_HYPERPARAMETER} ({described})"
            )


@functools.lru_cache(maxsize=512)
def _conv_plan(fname, nd, backward, meta, stride, padding, dilation, groups):
    """The checks of conv() on shapes and dtypes: (params, out_shape, dtype)."""
    spatial = _DIM_NAMES[nd]
    layouts = {"x": ("N", "C") + spatial, "w": ("F", "C/groups") + _kernel_axes(nd),
               "b": ("F",), "dout": ("N", "F") + spatial}
    names = ("dout", "x", "w") if backward else ("x", "w", "b")
    shapes = _array_shapes(fname, names, meta, layouts)
    xs, ws = shapes["x"], shapes["w"]
    groups = positive_count(fname, "groups", groups)
    _check_divides(fname, groups, xs[1], "channels", "x", xs)
    _check_divides(fname, groups, ws[0], "filters", "w", ws)
    if xs[1] != ws[1] * groups:
        expects = f"{ws[1]}" if groups == 1 else f"{groups} groups of {ws[1]} = {ws[1] * groups}"
        raise ValueError(f"{fname}: x has {xs[1]} channels but w expects {expects} (w.shape={ws})")
    _check_bias(fname, shapes, ws[0], ws)
    stride = int_tuple(fname, "stride", stride, nd, 1)
    dilation = int_tuple(fname, "dilation", dilation, nd, 1)
    padding = conv_padding(fname, padding, nd, stride, dilation, ws[2:])
    out_spatial = output_size(fname, nd, xs[2:], ws[2:], stride, padding, dilation)
    out_shape = (xs[0], ws[0]) + out_spatial
    ckk = math.prod(ws[1:])
    _check_sizes(
        fname, nd, out_shape, (ckk, math.prod(out_spatial)),
        {"F": ws[0], "C*K" if nd == 1 else "C*KH*KW": ckk,
         "OL" if nd == 1 else "OH*OW": math.prod(out_spatial)},
        f"x.shape={xs}, w.shape={ws}, stride={stride}, padding={padding}, dilation={dilation}",
    )
    if backward:
        check_dout(fname, shapes["dout"], out_shape)
    dtype = computation_dtype([item[1] for item in meta if item is not None])
    return (stride, padding, dilation, groups), out_shape, dtype


def check_output_padding(fname, output_padding, stride, dilation):
    """output_padding must be smaller than the stride or the dilation (per axis), as torch."""
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= s and op >= d:
            raise ValueError(
                f"{fname}: output_padding must be smaller than the stride or the dilation, got "
                f"output_padding={output_padding} with stride={stride}, dilation={dilation}"
            )


def transposed_output_size(fname, nd, in_sizes, kernel, stride, padding, output_padding, dilation):
    """OH = (H - 1)*sh - 2*ph + dh*(KH - 1) + output_padding_h + 1 (same for W), each >= 1."""
    check_output_padding(fname, output_padding, stride, dilation)
    out = []
    for axis, size, k, s, p, op, d in zip(_DIM_NAMES[nd], in_sizes, kernel, stride, padding,
                                          output_padding, dilation):
        length = (size - 1) * s - 2 * p + d * (k - 1) + op + 1
        if length < 1:
            raise ValueError(
                f"{fname}: the output would be empty: {axis} = ({size} - 1)*{s} - 2*{p} + "
                f"{d}*({k} - 1) + {op} + 1 = {length} (padding={padding} is too large)"
            )
        out.append(length)
    return tuple(out)


@functools.lru_cache(maxsize=512)
def _conv_transpose_plan(fname, nd, backward, meta, stride, padding, output_padding, groups, dilation):
    """The checks of conv_transpose() on shapes and dtypes: (params, out_shape, dtype)."""
    spatial = _DIM_NAMES[nd]
    layouts = {"x": ("N", "C") + spatial, "w": ("C", "F/groups") + _kernel_axes(nd),
               "b": ("F",), "dout": ("N", "F") + spatial}
    names = ("dout", "x", "w") if backward else ("x", "w", "b")
    shapes = _array_shapes(fname, names, meta, layouts)
    xs, ws = shapes["x"], shapes["w"]
    groups = positive_count(fname, "groups", groups)
    if xs[1] != ws[0]:
        raise ValueError(
            f"{fname}: x has {xs[1]} channels but w expects {ws[0]} (w.shape={ws}; a transposed "
            f"convolution's w is (C, F/groups) + kernel)"
        )
    _check_divides(fname, groups, xs[1], "channels", "x", xs)
    filters = ws[1] * groups
    _check_bias(fname, shapes, filters, ws)
    stride = int_tuple(fname, "stride", stride, nd, 1)
    padding = int_tuple(fname, "padding", padding, nd, 0)
    output_padding = int_tuple(fname, "output_padding", output_padding, nd, 0)
    dilation = int_tuple(fname, "dilation", dilation, nd, 1)
    out_spatial = transposed_output_size(fname, nd, xs[2:], ws[2:], stride, padding,
                                         output_padding, dilation)
    out_shape = (xs[0], filters) + out_spatial
    # The compiled kernels run the convolution whose data gradient this is: its im2col matrix
    # is (F/groups*KH*KW, H*W) and its GEMMs have these sizes.
    fkk, in_plane = math.prod(ws[1:]), math.prod(xs[2:])
    _check_sizes(
        fname, nd, out_shape, (fkk, in_plane),
        {"C/groups": xs[1] // groups, "F/groups*K" if nd == 1 else "F/groups*KH*KW": fkk,
         "L" if nd == 1 else "H*W": in_plane},
        f"x.shape={xs}, w.shape={ws}, stride={stride}, padding={padding}, dilation={dilation}",
    )
    if backward:
        check_dout(fname, shapes["dout"], out_shape)
    dtype = computation_dtype([item[1] for item in meta if item is not None])
    return (stride, padding, output_padding, groups, dilation), out_shape, dtype


# ----------------------------------------------------------------------------------------------
# im2col / col2im
# ----------------------------------------------------------------------------------------------

def im2col(fname, x, kernel_size, stride, padding, dilation):
    (x,), _ = float_arrays(fname, [("x", x)], [4])
    check_nonempty(fname, "x", x.shape, ("N", "C", "H", "W"))
    kernel = int_tuple(fname, "kernel_size", kernel_size, 2, 1)
    stride = int_tuple(fname, "stride", stride, 2, 1)
    padding = int_tuple(fname, "padding", padding, 2, 0)
    dilation = int_tuple(fname, "dilation", dilation, 2, 1)
    oh, ow = output_size(fname, 2, x.shape[2:], kernel, stride, padding, dilation)
    n, c = x.shape[:2]
    out_shape = (n, c * kernel[0] * kernel[1], oh * ow)
    check_size(fname, "the output of shape", out_shape)
    return x, (kernel, stride, padding, dilation), out_shape


def col2im(fname, cols, input_shape, kernel_size, stride, padding, dilation):
    raw = _as_array(fname, "cols", cols)
    _check_numeric(fname, "cols", raw)
    if raw.ndim != 3:
        raise ValueError(
            f"{fname}: cols must be a 3-D array (N, C*KH*KW, OH*OW), got a {raw.ndim}-D array "
            f"of shape {raw.shape}"
        )
    shape = input_shape_tuple(fname, input_shape)
    kernel = int_tuple(fname, "kernel_size", kernel_size, 2, 1)
    stride = int_tuple(fname, "stride", stride, 2, 1)
    padding = int_tuple(fname, "padding", padding, 2, 0)
    dilation = int_tuple(fname, "dilation", dilation, 2, 1)
    oh, ow = output_size(fname, 2, shape[2:], kernel, stride, padding, dilation)
    expected = (shape[0], shape[1] * kernel[0] * kernel[1], oh * ow)
    if raw.shape != expected:
        raise ValueError(
            f"{fname}: cols must have shape (N, C*KH*KW, OH*OW) = {expected} for "
            f"input_shape={shape}, kernel_size={kernel}, stride={stride}, padding={padding}, "
            f"dilation={dilation}; got {raw.shape}"
        )
    (cols,), _ = float_arrays(fname, [("cols", raw)], [3])
    return cols, shape, (kernel, stride, padding, dilation)


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------

def pool_params(fname, in_hw, kernel_size, stride, padding):
    """Normalise pooling hyper-parameters and return them with the output size."""
    kernel = int_tuple(fname, "kernel_size", kernel_size, 2, 1)
    stride = kernel if stride is None else int_tuple(fname, "stride", stride, 2, 1)
    padding = int_tuple(fname, "padding", padding, 2, 0)
    for k, p in zip(kernel, padding):
        if p > k // 2:
            raise ValueError(
                f"{fname}: padding must be at most half the kernel size "
                f"(kernel_size={kernel}, so padding <= {tuple(k // 2 for k in kernel)}), "
                f"got padding={padding}"
            )
    out_hw = output_size(fname, 2, in_hw, kernel, stride, padding, (1, 1))
    return (kernel, stride, padding), out_hw


def pool_forward(fname, x, kernel_size, stride, padding):
    (x,), _ = float_arrays(fname, [("x", x)], [4])
    check_nonempty(fname, "x", x.shape, ("N", "C", "H", "W"))
    params, out_hw = pool_params(fname, x.shape[2:], kernel_size, stride, padding)
    check_size(fname, "the output of shape", x.shape[:2] + out_hw)
    return x, params, x.shape[:2] + out_hw


def avg_pool_backward(fname, dout, input_shape, kernel_size, stride, padding):
    raw = _as_array(fname, "dout", dout)
    _check_numeric(fname, "dout", raw)
    shape = input_shape_tuple(fname, input_shape)
    params, out_hw = pool_params(fname, shape[2:], kernel_size, stride, padding)
    if raw.ndim != 4:
        raise ValueError(f"{fname}: dout must be a 4-D array, got shape {raw.shape}")
    check_dout(fname, raw.shape, shape[:2] + out_hw)
    (dout,), _ = float_arrays(fname, [("dout", raw)], [4])
    return dout, shape, params


def max_pool_backward(fname, dout, indices, input_shape):
    raw = _as_array(fname, "dout", dout)
    _check_numeric(fname, "dout", raw)
    if raw.ndim != 4:
        raise ValueError(f"{fname}: dout must be a 4-D array (N, C, OH, OW), got shape {raw.shape}")
    idx = _as_array(fname, "indices", indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{fname}: indices must be an integer array, got dtype {idx.dtype}")
    if idx.shape != raw.shape:
        raise ValueError(f"{fname}: indices must have dout's shape {raw.shape}, got {idx.shape}")
    shape = input_shape_tuple(fname, input_shape)
    if shape[:2] != raw.shape[:2]:
        raise ValueError(
            f"{fname}: input_shape {shape} must have the same N and C as dout {raw.shape}"
        )
    plane = shape[2] * shape[3]
    if idx.size:
        # Compare in the indices' own dtype (a uint64 above 2**63 must not wrap to negative).
        lo, hi = idx.min(), idx.max()
        if lo < 0 or hi >= plane:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{fname}: indices must lie in [0, H*W) = [0, {plane}) for input_shape={shape}, "
                f"got {int(bad)}"
            )
    (dout,), _ = float_arrays(fname, [("dout", raw)], [4])
    return dout, np.ascontiguousarray(idx, dtype=np.int64), shape
