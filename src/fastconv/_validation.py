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


def input_shape_tuple(fname, value, nd=2):
    """The full input shape of a backward or col2im call: (N, C, H, W), or (N, C, L) for nd=1."""
    axes = ("N", "C") + _DIM_NAMES[nd]
    description = f"a sequence of {len(axes)} ints ({', '.join(axes)})"
    # Nested sequences are refused by _int below (np.ndim would choke on ragged ones).
    if (not isinstance(value, (tuple, list, np.ndarray))
            or (isinstance(value, np.ndarray) and value.ndim != 1) or len(value) != len(axes)):
        raise ValueError(f"{fname}: input_shape must be {description}, got {_describe(value)}")
    shape = tuple(_int(fname, "input_shape", v, description) for v in value)
    if shape[0] < 0 or min(shape[1:]) < 1:
        raise ValueError(
            f"{fname}: input_shape must have N >= 0 and {', '.join(axes[1:])} >= 1, got {shape}"
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


def output_size(fname, nd, in_sizes, kernel, stride, padding, dilation, ceil_mode=False):
    """Output spatial size; ValueError when the dilated kernel exceeds the padded input.

    padding: one int per axis (both sides alike) or a (before, after) pair per axis.
    ``(size + before + after - span) / s + 1`` rounded down, or up with pooling's ceil_mode,
    which (as torch) then drops a last window that would start in the right (bottom) padding;
    the last window may still reach past the padding (the kernels clip it).
    """
    out = []
    for axis, size, k, s, p, d in zip(_DIM_NAMES[nd], in_sizes, kernel, stride, padding, dilation):
        before, after = p if isinstance(p, tuple) else (p, p)
        span = d * (k - 1) + 1
        room = size + before + after - span  # how far the window slides inside the padded input
        if ceil_mode:
            count = -(-room // s) + 1
            if (count - 1) * s >= size + before:
                count -= 1
        else:
            count = room // s + 1
        if count < 1:
            shown = before if before == after else (before, after)
            raise ValueError(
                f"{fname}: the kernel spans {span} along {axis} (size {k}, dilation {d}) but the "
                f"padded input has only {size + before + after} ({axis}={size}, padding={shown}); "
                f"the output would be empty" + (f" even with ceil_mode=True and stride {s}" if ceil_mode else "")
            )
        out.append(count)
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

def flag(fname, name, value):
    """A bool option (ceil_mode, count_include_pad): True, False or a NumPy bool, as torch."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{fname}: {name} must be True or False, got {_describe(value)}")


def divisor_override(fname, value):
    """None or an int >= 1 (torch refuses 0; a negative divisor is refused here as well)."""
    if value is None:
        return None
    value = _int(fname, "divisor_override", value, "None or an int")
    if not 1 <= value <= MAX_HYPERPARAMETER:
        raise ValueError(
            f"{fname}: divisor_override must be None or an int in [1, {MAX_HYPERPARAMETER}], got {value}"
        )
    return value


def _check_windows_read_input(fname, nd, in_sizes, kernel, padding, dilation):
    """Refuse a max pooling whose dilated window skips over the whole input.

    Only the first window can: a window starting at or right of position 0 starts inside
    the input (the output size guarantees it, ceil_mode's too), and one starting in the left
    padding (at most kernel // 2 before the input) has a tap in [0, d): inside, unless the
    dilation exceeds the input size, and then the output size leaves only the first window
    starting in the padding (tests/test_pool_options.py checks this against every window of
    small configurations). PyTorch returns -inf and an index outside the input for such a
    window.
    """
    for axis, size, k, p, d in zip(_DIM_NAMES[nd], in_sizes, kernel, padding, dilation):
        first_tap = -(-p // d)  # the first of the first window's taps at or right of 0
        if first_tap >= k or first_tap * d - p >= size:
            raise ValueError(
                f"{fname}: the first window along {axis} reads only padding: its taps at "
                f"{-p}, {d - p}, ... skip over the input ({axis}={size}, kernel_size={k}, "
                f"padding={p}, dilation={d}); a smaller dilation or padding is needed"
            )


def pool_window(fname, nd, kernel_size, stride, padding):
    """(kernel, stride, padding) as nd-tuples; stride None means kernel_size, and padding may be
    at most half the (undilated) kernel, as torch."""
    kernel = int_tuple(fname, "kernel_size", kernel_size, nd, 1)
    stride = kernel if stride is None else int_tuple(fname, "stride", stride, nd, 1)
    padding = int_tuple(fname, "padding", padding, nd, 0)
    for k, p in zip(kernel, padding):
        if p > k // 2:
            raise ValueError(
                f"{fname}: padding must be at most half the kernel size "
                f"(kernel_size={kernel}, so padding <= {tuple(k // 2 for k in kernel)}), "
                f"got padding={padding}"
            )
    return kernel, stride, padding


def pool_params(fname, nd, in_sizes, kernel_size, stride, padding, dilation, ceil_mode, *, max_pool):
    """Normalise pooling hyper-parameters.

    Returns ((kernel, stride, padding, dilation, ceil_mode), out_sizes): pool_window's checks,
    an output of at least one window of the dilated kernel, and for max pooling no window made
    of padding alone.
    """
    kernel, stride, padding = pool_window(fname, nd, kernel_size, stride, padding)
    dilation = int_tuple(fname, "dilation", dilation, nd, 1)
    ceil_mode = flag(fname, "ceil_mode", ceil_mode)
    out = output_size(fname, nd, in_sizes, kernel, stride, padding, dilation, ceil_mode)
    if max_pool:
        _check_windows_read_input(fname, nd, in_sizes, kernel, padding, dilation)
    return (kernel, stride, padding, dilation, ceil_mode), out


def _image(fname, nd, x):
    """x as a checked (N, C, *spatial) array of the computation dtype."""
    (x,), _ = float_arrays(fname, [("x", x)], [nd + 2])
    check_nonempty(fname, "x", x.shape, ("N", "C") + _DIM_NAMES[nd])
    return x


def _dout(fname, nd, dout):
    """dout, unconverted (its shape is checked before a copy is made), of ndim nd + 2."""
    raw = _as_array(fname, "dout", dout)
    _check_numeric(fname, "dout", raw)
    if raw.ndim != nd + 2:
        axes = ", ".join(("N", "C") + tuple("O" + a for a in _DIM_NAMES[nd]))
        raise ValueError(f"{fname}: dout must be a {nd + 2}-D array ({axes}), got shape {raw.shape}")
    return raw


def _converted_dout(fname, raw):
    (dout,), _ = float_arrays(fname, [("dout", raw)], [raw.ndim])
    return dout


def _check_planes(fname, shape, dout_shape):
    """A backward's input_shape and dout must have the same N and C."""
    if shape[:2] != dout_shape[:2]:
        raise ValueError(
            f"{fname}: input_shape {shape} must have the same N and C as dout {dout_shape}"
        )


def max_pool_forward(fname, nd, x, kernel_size, stride, padding, dilation, ceil_mode):
    """Returns (x, (kernel, stride, padding, dilation, ceil_mode), out_shape)."""
    x = _image(fname, nd, x)
    params, out = pool_params(fname, nd, x.shape[2:], kernel_size, stride, padding, dilation,
                              ceil_mode, max_pool=True)
    check_size(fname, "the output of shape", x.shape[:2] + out)
    return x, params, x.shape[:2] + out


def _avg_params(fname, nd, in_sizes, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor):
    """((kernel, stride, padding, ceil_mode, count_include_pad, divisor_override), out_sizes)."""
    (kernel, stride, padding, _, ceil_mode), out = pool_params(
        fname, nd, in_sizes, kernel_size, stride, padding, 1, ceil_mode, max_pool=False
    )
    options = (flag(fname, "count_include_pad", count_include_pad), divisor_override(fname, divisor))
    return (kernel, stride, padding, ceil_mode) + options, out


def avg_pool_forward(fname, nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor):
    """Returns (x, (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override),
    out_shape)."""
    x = _image(fname, nd, x)
    params, out = _avg_params(fname, nd, x.shape[2:], kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor)
    check_size(fname, "the output of shape", x.shape[:2] + out)
    return x, params, x.shape[:2] + out


def avg_pool_backward(fname, nd, dout, input_shape, kernel_size, stride, padding, ceil_mode,
                      count_include_pad, divisor):
    """Returns (dout, input_shape, params) with params as avg_pool_forward's."""
    raw = _dout(fname, nd, dout)
    shape = input_shape_tuple(fname, input_shape, nd)
    params, out = _avg_params(fname, nd, shape[2:], kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor)
    check_dout(fname, raw.shape, shape[:2] + out)
    return _converted_dout(fname, raw), shape, params


def max_pool_backward(fname, nd, dout, indices, input_shape):
    """Returns (dout, int64 indices, input_shape); every index inside its input plane."""
    raw = _dout(fname, nd, dout)
    idx = _as_array(fname, "indices", indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{fname}: indices must be an integer array, got dtype {idx.dtype}")
    if idx.shape != raw.shape:
        raise ValueError(f"{fname}: indices must have dout's shape {raw.shape}, got {idx.shape}")
    shape = input_shape_tuple(fname, input_shape, nd)
    _check_planes(fname, shape, raw.shape)
    plane = math.prod(shape[2:])
    if idx.size:
        # Compare in the indices' own dtype (a uint64 above 2**63 must not wrap to negative).
        lo, hi = idx.min(), idx.max()
        if lo < 0 or hi >= plane:
            bad = lo if lo < 0 else hi
            extent = "L" if nd == 1 else "H*W"
            raise ValueError(
                f"{fname}: indices must lie in [0, {extent}) = [0, {plane}) for input_shape={shape}, "
                f"got {int(bad)}"
            )
    return _converted_dout(fname, raw), np.ascontiguousarray(idx, dtype=np.int64), shape


# Adaptive pooling: the window of output i spans input positions floor(i*H/OH) to
# ceil((i+1)*H/OH) - 1; the kernels compute (i+1)*H + OH in 64 bits.
_ADAPTIVE_PRODUCT_LIMIT = 2**62


def adaptive_output_spec(fname, value):
    """output_size as (OH, OW), each an int >= 1 or None (None keeps that input size, as torch)."""
    description = "an int or a sequence of 2 ints or Nones (None keeps the input size)"
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{fname}: output_size must be {description}, got {_describe(value)}")
        entries = tuple(value)
    else:
        entries = (value, value)
    spec = []
    for v in entries:
        if v is None and isinstance(value, (tuple, list)):
            spec.append(None)
            continue
        v = _int(fname, "output_size", v, description)
        if v < 1:
            raise ValueError(f"{fname}: output_size must be >= 1, got {value!r}")
        if v > MAX_HYPERPARAMETER:
            raise ValueError(f"{fname}: output_size must be <= {MAX_HYPERPARAMETER}, got {value!r}")
        spec.append(v)
    return tuple(spec)


def adaptive_output_size(fname, value, in_hw):
    """output_size as (OH, OW) for an input of spatial size in_hw."""
    out = tuple(size if o is None else o for o, size in zip(adaptive_output_spec(fname, value), in_hw))
    for axis, size, o in zip(("H", "W"), in_hw, out):
        check_adaptive_product(fname, axis, size, o)
    return out


def check_adaptive_product(fname, axis, size, out):
    if (size + 1) * (out + 1) > _ADAPTIVE_PRODUCT_LIMIT:
        raise ValueError(
            f"{fname}: an input size {axis}={size} with an output size of {out} is beyond the "
            f"64-bit window arithmetic (their product must stay below {_ADAPTIVE_PRODUCT_LIMIT})"
        )


def adaptive_pool_forward(fname, x, output_size):
    """Returns (x, (OH, OW), out_shape)."""
    x = _image(fname, 2, x)
    out = adaptive_output_size(fname, output_size, x.shape[2:])
    check_size(fname, "the output of shape", x.shape[:2] + out)
    return x, out, x.shape[:2] + out


def adaptive_pool_backward(fname, dout, input_shape):
    """Returns (dout, input_shape); dout's (OH, OW) is the output size of the forward call."""
    raw = _dout(fname, 2, dout)
    shape = input_shape_tuple(fname, input_shape)
    _check_planes(fname, shape, raw.shape)
    if min(raw.shape[2:]) < 1:
        raise ValueError(
            f"{fname}: dout must have OH, OW >= 1 (the output_size of the forward call), "
            f"got shape {raw.shape}"
        )
    for axis, size, o in zip(("H", "W"), shape[2:], raw.shape[2:]):
        check_adaptive_product(fname, axis, size, o)
    return _converted_dout(fname, raw), shape


# ----------------------------------------------------------------------------------------------
# Layer functions: batch normalisation, ReLU, softmax cross-entropy
# ----------------------------------------------------------------------------------------------

DATA_FORMATS = ("NCHW", "NHWC")


def channels_last(fname, data_format):
    """True for data_format "NHWC" (channels on the last axis), False for "NCHW"."""
    if not isinstance(data_format, str):
        raise TypeError(f"{fname}: data_format must be one of {DATA_FORMATS}, got {_describe(data_format)}")
    if data_format not in DATA_FORMATS:
        raise ValueError(f"{fname}: data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    return data_format == "NHWC"


def flag(fname, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fname}: {name} must be True or False, got {_describe(value)}")
    return bool(value)


def real_number(fname, name, value, lowest, highest=None):
    """value as a finite Python float in [lowest, highest]."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{fname}: {name} must be a real number, got {_describe(value)}")
    number = float(value)
    if not (math.isfinite(number) and lowest <= number and (highest is None or number <= highest)):
        bounds = f">= {lowest}" if highest is None else f"in [{lowest}, {highest}]"
        raise ValueError(f"{fname}: {name} must be a finite number {bounds}, got {value!r}")
    return number


def _batch_norm_operand(fname, name, value, last):
    """A batch-norm image operand: (array, C, the (outer, C, inner) shape the kernels see)."""
    array = _as_array(fname, name, value)
    _check_numeric(fname, name, array)
    shape = array.shape
    if array.ndim not in (2, 3, 4):
        layout = "(N, C), (N, L, C) or (N, H, W, C)" if last else "(N, C), (N, C, L) or (N, C, H, W)"
        raise ValueError(f"{fname}: {name} must be a 2-, 3- or 4-D array {layout}, got a "
                         f"{array.ndim}-D array of shape {shape}")
    spatial = {2: (), 3: ("L",), 4: ("H", "W")}[array.ndim]
    check_nonempty(fname, name, shape, ("N",) + spatial + ("C",) if last else ("N", "C") + spatial)
    if last:
        return array, shape[-1], (math.prod(shape[:-1]), shape[-1], 1)
    return array, shape[1], (shape[0], shape[1], math.prod(shape[2:]))


def _channel_vector(fname, name, value, channels, x_shape):
    array = _as_array(fname, name, value)
    _check_numeric(fname, name, array)
    if array.shape != (channels,):
        raise ValueError(f"{fname}: {name} must have shape (C,) = ({channels},) for x.shape={x_shape}, "
                         f"got shape {array.shape}")
    return array


def _running_statistic(fname, name, value, channels, x_shape, training):
    """A running statistic: in training the caller's own array, which is updated in place."""
    if training:
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{fname}: {name} must be a NumPy array (training updates it in place), "
                            f"got {_describe(value)}")
        if value.dtype.kind != "f":
            raise TypeError(f"{fname}: {name} must have a floating dtype (training updates it in "
                            f"place), got dtype {value.dtype}")
        if not value.flags.writeable:
            raise ValueError(f"{fname}: {name} is read-only, but training updates it in place")
    return _channel_vector(fname, name, value, channels, x_shape)


def batch_norm(fname, x, weight, bias, running_mean, running_var, training, momentum, eps, data_format):
    """Check a batch_norm call.

    Returns (x3, shape, weight, bias, running_mean, running_var, training, momentum, eps):
    x3 is x as a C-contiguous (outer, C, inner) array of the computation dtype (see
    fastconv._backend), shape is x's own shape, weight and bias are (C,) arrays of that dtype
    or None, and the running statistics are None or, in training, the caller's own arrays (to
    update in place) and, in evaluation, new (C,) arrays of the computation dtype.
    """
    last = channels_last(fname, data_format)
    training = flag(fname, "training", training)
    momentum = real_number(fname, "momentum", momentum, 0.0, 1.0)
    eps = real_number(fname, "eps", eps, 0.0)
    if training and eps == 0:
        raise ValueError(f"{fname}: eps must be positive in training (as torch), got {eps}")
    raw, channels, view = _batch_norm_operand(fname, "x", x, last)
    vectors = [None if v is None else _channel_vector(fname, name, v, channels, raw.shape)
               for name, v in (("weight", weight), ("bias", bias))]
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fname}: running_mean and running_var must be given together (both or neither)")
    if running_mean is None and not training:
        raise ValueError(f"{fname}: evaluation (training=False) normalises with the running statistics: "
                         "running_mean and running_var must be given")
    running = [None if v is None else _running_statistic(fname, name, v, channels, raw.shape, training)
               for name, v in (("running_mean", running_mean), ("running_var", running_var))]
    if training and view[0] * view[2] == 1:
        raise ValueError(f"{fname}: training needs more than one value per channel to compute a "
                         f"variance, got x.shape={raw.shape}")
    dtype = computation_dtype([a.dtype for a in [raw] + vectors + running if a is not None])
    x3 = np.ascontiguousarray(raw, dtype=dtype).reshape(view)
    weight, bias = (None if v is None else np.ascontiguousarray(v, dtype=dtype) for v in vectors)
    if not training:
        running = [np.array(v, dtype=dtype) for v in running]  # copies: mean is returned
    return (x3, raw.shape, weight, bias, *running, training, momentum, eps)


def batch_norm_backward(fname, dout, x, weight, mean, invstd, training, data_format):
    """Check a batch_norm_backward call: returns (dout3, x3, shape, weight, mean, invstd, training)
    with dout3 and x3 the (outer, C, inner) views and shape as in batch_norm, and (C,) vectors,
    all C-contiguous arrays of the computation dtype (weight may be None)."""
    last = channels_last(fname, data_format)
    training = flag(fname, "training", training)
    raw_x, channels, view = _batch_norm_operand(fname, "x", x, last)
    raw_dout = _as_array(fname, "dout", dout)
    _check_numeric(fname, "dout", raw_dout)
    if raw_dout.shape != raw_x.shape:
        raise ValueError(f"{fname}: dout must have x's shape {raw_x.shape}, got {raw_dout.shape}")
    vectors = [None if v is None and name == "weight" else _channel_vector(fname, name, v, channels, raw_x.shape)
               for name, v in (("weight", weight), ("mean", mean), ("invstd", invstd))]
    dtype = computation_dtype([a.dtype for a in [raw_dout, raw_x] + vectors if a is not None])
    dout3, x3 = (np.ascontiguousarray(a, dtype=dtype).reshape(view) for a in (raw_dout, raw_x))
    weight, mean, invstd = (None if v is None else np.ascontiguousarray(v, dtype=dtype) for v in vectors)
    return dout3, x3, raw_x.shape, weight, mean, invstd, training


def elementwise(fname, named_values):
    """Same-shaped arrays of any shape (the first one's shape rules), as C-contiguous arrays of
    the computation dtype."""
    arrays = []
    for name, value in named_values:
        array = _as_array(fname, name, value)
        _check_numeric(fname, name, array)
        if arrays and array.shape != arrays[0].shape:
            raise ValueError(f"{fname}: {name} must have {named_values[0][0]}'s shape "
                             f"{arrays[0].shape}, got {array.shape}")
        arrays.append(array)
    dtype = computation_dtype([a.dtype for a in arrays])
    # Not ascontiguousarray: it would make a 0-d array 1-D.
    return [np.asarray(a, dtype=dtype, order="C") for a in arrays]


def softmax_cross_entropy(fname, logits, target):
    """Check a softmax_cross_entropy call: returns (logits, target) with logits a C-contiguous
    (N, K) array of the computation dtype and target either int64 labels (N,) in [0, K) or
    (N, K) probabilities of that dtype. Labels do not vote on the dtype; probabilities do."""
    raw = _as_array(fname, "logits", logits)
    _check_numeric(fname, "logits", raw)
    if raw.ndim != 2:
        raise ValueError(f"{fname}: logits must be a 2-D array (N, K), got a {raw.ndim}-D array "
                         f"of shape {raw.shape}")
    check_nonempty(fname, "logits", raw.shape, ("N", "K"))
    n, k = raw.shape
    labels = _as_array(fname, "target", target)
    _check_numeric(fname, "target", labels)
    if labels.ndim == 1:
        dtype = computation_dtype([raw.dtype])
        return np.ascontiguousarray(raw, dtype=dtype), class_labels(fname, "target", labels, n, k)
    if labels.ndim != 2:
        raise ValueError(f"{fname}: target must be integer labels (N,) or probabilities (N, K), got a "
                         f"{labels.ndim}-D array of shape {labels.shape}")
    if labels.shape != raw.shape:
        raise ValueError(f"{fname}: target probabilities must have the logits' shape (N, K) = "
                         f"{raw.shape}, got {labels.shape}")
    dtype = computation_dtype([raw.dtype, labels.dtype])
    return np.ascontiguousarray(raw, dtype=dtype), np.ascontiguousarray(labels, dtype=dtype)


def class_labels(fname, name, labels, n, k):
    """N integer class labels in [0, K) as a C-contiguous int64 array (labels: an ndarray)."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        if labels.ndim == 1:
            raise TypeError(f"{fname}: {name} labels (N,) must be integers, got dtype {labels.dtype}"
                            + (" (probabilities have the logits' shape (N, K))" if name == "target" else ""))
        raise ValueError(f"{fname}: {name} must be N integer labels (N,), got a {labels.ndim}-D array "
                         f"of shape {labels.shape}")
    if labels.shape != (n,):
        raise ValueError(f"{fname}: {name} has {labels.shape[0]} labels for N={n} rows of "
                         + ("logits" if name == "target" else "scores"))
    if labels.size:
        # Compare in the labels' own dtype (a uint64 above 2**63 must not wrap to negative).
        lo, hi = labels.min(), labels.max()
        if lo < 0 or hi >= k:
            raise ValueError(f"{fname}: labels must lie in [0, K) = [0, {k}), got {int(lo if lo < 0 else hi)}")
    return np.ascontiguousarray(labels, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# The drop-ins' kernels (fastconv._dropin_api): the book's patch matrix, the courses' affine
# layer with (in, out) weights, group and layer normalisation, the hinge loss
# ----------------------------------------------------------------------------------------------

def _patch_window(fname, hw, filter_h, filter_w, stride, pad):
    """((kernel, stride, padding), (OH, OW)) of the book's window over an (H, W) plane."""
    kernel = (int_tuple(fname, "filter_h", filter_h, 1, 1)[0], int_tuple(fname, "filter_w", filter_w, 1, 1)[0])
    stride = int_tuple(fname, "stride", stride, 2, 1)
    padding = int_tuple(fname, "pad", pad, 2, 0)
    return (kernel, stride, padding), output_size(fname, 2, hw, kernel, stride, padding, (1, 1))


def patch_rows(fname, x, filter_h, filter_w, stride, pad):
    """Check a book-style im2col call (argument names as the book's).

    Returns (x, (kernel, stride, padding), rows_shape) with x a C-contiguous (N, C, H, W) array of
    the computation dtype and rows_shape (N*OH*OW, C*FH*FW).
    """
    (x,), _ = float_arrays(fname, [("input_data", x)], [4])
    check_nonempty(fname, "input_data", x.shape, ("N", "C", "H", "W"))
    params, (oh, ow) = _patch_window(fname, x.shape[2:], filter_h, filter_w, stride, pad)
    kernel = params[0]
    n, c = x.shape[:2]
    rows_shape = (n * oh * ow, c * kernel[0] * kernel[1])
    check_size(fname, "the output of shape", rows_shape)
    return x, params, rows_shape


def patch_rows_fold(fname, col, input_shape, filter_h, filter_w, stride, pad):
    """Check a book-style col2im call: returns (col, input_shape, (kernel, stride, padding))."""
    raw = _as_array(fname, "col", col)
    _check_numeric(fname, "col", raw)
    shape = input_shape_tuple(fname, input_shape)
    params, (oh, ow) = _patch_window(fname, shape[2:], filter_h, filter_w, stride, pad)
    (kh, kw), stride, padding = params
    expected = (shape[0] * oh * ow, shape[1] * kh * kw)
    if raw.shape != expected:
        raise ValueError(
            f"{fname}: col must have shape (N*OH*OW, C*FH*FW) = {expected} for input_shape={shape}, "
            f"filter ({kh}, {kw}), stride={stride}, pad={padding}; got {raw.shape}"
        )
    (col,), _ = float_arrays(fname, [("col", raw)], [2])
    return col, shape, params


def _matrix_operands(fname, named_values, layouts):
    """Named 2-D (or 1-D) operands with the given axis names, of one computation dtype."""
    arrays = []
    for (name, value), layout in zip(named_values, layouts):
        array = _as_array(fname, name, value)
        _check_numeric(fname, name, array)
        if array.ndim != len(layout):
            raise ValueError(f"{fname}: {name} must be a {len(layout)}-D array ({', '.join(layout)}), "
                             f"got a {array.ndim}-D array of shape {array.shape}")
        # The compiled kernels hand these sizes to BLAS, whose dimensions are 32-bit ints.
        if max(array.shape, default=0) > MAX_HYPERPARAMETER:
            raise ValueError(f"{fname}: {name}.shape={array.shape} has a dimension beyond BLAS's 32-bit "
                             f"limit of {MAX_HYPERPARAMETER}")
        arrays.append(array)
    dtype = computation_dtype([a.dtype for a in arrays])
    return arrays, dtype


def affine(fname, x, w, b):
    """Check y = x @ w + b with x (N, D), w (D, M), b (M,) or None; returns [x, w, b] as
    C-contiguous arrays of the computation dtype (b may be None)."""
    named = [("x", x), ("w", w)] + ([] if b is None else [("b", b)])
    arrays, dtype = _matrix_operands(fname, named, [("N", "D"), ("D", "M"), ("M",)])
    (xs, ws), bs = (a.shape for a in arrays[:2]), None if b is None else arrays[2].shape
    if xs[1] != ws[0]:
        raise ValueError(f"{fname}: x has {xs[1]} features per row (x.shape={xs}) but w expects "
                         f"{ws[0]} (w.shape={ws}, (in_features, out_features))")
    if bs is not None and bs != (ws[1],):
        raise ValueError(f"{fname}: b must have shape (M,) = ({ws[1]},) to match w.shape={ws}, got shape {bs}")
    converted = [np.ascontiguousarray(a, dtype=dtype) for a in arrays]
    return converted + ([None] if b is None else [])


def affine_backward(fname, dout, x, w):
    """Check the backward of affine: returns [dout, x, w] of one computation dtype."""
    arrays, dtype = _matrix_operands(fname, [("dout", dout), ("x", x), ("w", w)],
                                     [("N", "M"), ("N", "D"), ("D", "M")])
    ds, xs, ws = (a.shape for a in arrays)
    if xs[1] != ws[0]:
        raise ValueError(f"{fname}: x has {xs[1]} features per row (x.shape={xs}) but w expects "
                         f"{ws[0]} (w.shape={ws})")
    check_dout(fname, ds, (xs[0], ws[1]))
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def _groups_layout(fname, name, array, groups):
    """(N, G, M) and inner of a group-norm operand (N, C, *spatial) split into `groups`."""
    if array.ndim < 2:
        raise ValueError(f"{fname}: {name} must have at least 2 dimensions (N, C, ...), got shape {array.shape}")
    check_nonempty(fname, name, array.shape, ("N", "C") + tuple(f"axis {i}" for i in range(2, array.ndim)))
    channels = array.shape[1]
    if channels % groups:
        raise ValueError(f"{fname}: G = {groups} groups must divide the C = {channels} channels "
                         f"({name}.shape={array.shape})")
    inner = math.prod(array.shape[2:])
    return (array.shape[0], groups, channels // groups * inner), inner


def group_norm(fname, x, weight, bias, groups, eps):
    """Check a group (or layer) normalisation over x (N, C, *spatial) in `groups` groups.

    Returns (x3, shape, weight, bias, inner, eps): x3 the C-contiguous (N, G, M) view of the
    computation dtype, weight and bias (C,) arrays of that dtype or None.
    """
    groups = int_tuple(fname, "G", groups, 1, 1)[0]
    eps = real_number(fname, "eps", eps, 0.0)
    raw = _as_array(fname, "x", x)
    _check_numeric(fname, "x", raw)
    view, inner = _groups_layout(fname, "x", raw, groups)
    vectors = [None if v is None else _channel_vector(fname, name, v, raw.shape[1], raw.shape)
               for name, v in (("gamma", weight), ("beta", bias))]
    dtype = computation_dtype([a.dtype for a in [raw] + vectors if a is not None])
    x3 = np.ascontiguousarray(raw, dtype=dtype).reshape(view)
    weight, bias = (None if v is None else np.ascontiguousarray(v, dtype=dtype) for v in vectors)
    return x3, raw.shape, weight, bias, inner, eps


def group_norm_backward(fname, dout, x, weight, mean, invstd, groups):
    """Check the backward of group_norm: returns (dout3, x3, shape, weight, mean, invstd, inner)
    with mean and invstd (N, G) arrays, all of one computation dtype."""
    groups = int_tuple(fname, "G", groups, 1, 1)[0]
    raw_x = _as_array(fname, "x", x)
    _check_numeric(fname, "x", raw_x)
    view, inner = _groups_layout(fname, "x", raw_x, groups)
    raw_dout = _as_array(fname, "dout", dout)
    _check_numeric(fname, "dout", raw_dout)
    check_dout(fname, raw_dout.shape, raw_x.shape)
    weight = None if weight is None else _channel_vector(fname, "gamma", weight, raw_x.shape[1], raw_x.shape)
    stats = []
    for name, value in (("mean", mean), ("invstd", invstd)):
        array = _as_array(fname, name, value)
        _check_numeric(fname, name, array)
        if array.shape != view[:2]:
            raise ValueError(f"{fname}: {name} must have shape (N, G) = {view[:2]}, got {array.shape}")
        stats.append(array)
    dtype = computation_dtype([a.dtype for a in [raw_dout, raw_x] + stats + ([] if weight is None else [weight])])
    dout3, x3 = (np.ascontiguousarray(a, dtype=dtype).reshape(view) for a in (raw_dout, raw_x))
    weight, mean, invstd = (None if v is None else np.ascontiguousarray(v, dtype=dtype)
                            for v in (weight, *stats))
    return dout3, x3, raw_x.shape, weight, mean, invstd, inner


def class_scores(fname, x, y):
    """Check a loss over class scores x (N, K) and labels y (N,): returns (x, int64 labels)."""
    raw = _as_array(fname, "x", x)
    _check_numeric(fname, "x", raw)
    if raw.ndim != 2:
        raise ValueError(f"{fname}: x must be a 2-D array of class scores (N, K), got a {raw.ndim}-D "
                         f"array of shape {raw.shape}")
    check_nonempty(fname, "x", raw.shape, ("N", "K"))
    labels = _as_array(fname, "y", y)
    _check_numeric(fname, "y", labels)
    labels = class_labels(fname, "y", labels, *raw.shape)
    return np.ascontiguousarray(raw, dtype=computation_dtype([raw.dtype])), labels
