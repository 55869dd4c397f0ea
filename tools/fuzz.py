#!/usr/bin/env python
"""Fuzz every public function of fastconv with malformed and near-valid arguments.

Each case is one call of a public function (``fastconv.<name>`` with ``backend=`` set, the
active backend, or ``fastconv.reference.<name>``) on arguments built from a valid call by a few
mutations: wrong ndim and shapes, zero-sized dimensions, every NumPy dtype, non-arrays, huge,
negative and non-integer hyper-parameters and pooling options (ceil_mode, count_include_pad,
divisor_override, output_size), bad pooling indices and input shapes, mis-shaped cols and dout,
odd scalars (momentum, eps, training, data_format), NaN/inf/denormal data, odd memory layouts.

Cases run in a worker process (many cases per worker, for speed). A case passes when the call
returns normally or raises ValueError/TypeError (MemoryError only for a NumPy allocation of more
than 256 MiB); a worker that dies is a crash, a case that exceeds the time limit is a hang, and
either way the worker is replaced. A call that returns is also checked: results are new
C-contiguous arrays of the documented dtype, inputs are unchanged, a call that had to succeed
did, and a compiled-backend result equals the reference backend's result on the same arguments
(batch_norm's running statistics, which training updates in place, must end as the
reference's do; softmax_cross_entropy's loss must be a Python float).

Usage (the last line of the output is the summary):

    python tools/fuzz.py --seconds 600            # time budget
    python tools/fuzz.py --cases 20000 --seed 3   # case budget
    ...
    cases=N ok=N clean_errors=N crashes=N hangs=N bad_errors=N wrong=N

``bad_errors`` counts other exceptions (and refusals of a valid call), ``wrong`` results that
fail the checks above; the exit status is 1 when crashes, hangs, bad_errors or wrong is non-zero.
tests/test_fuzz.py drives the same generator from hypothesis.
"""

import argparse
import collections
import faulthandler
import math
import os
import pickle
import random
import select
import signal
import struct
import subprocess
import sys
import time
import traceback
import warnings

import numpy as np

FUNCTIONS = (
    "conv2d", "conv2d_backward", "conv1d", "conv1d_backward",
    "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose1d", "conv_transpose1d_backward",
    "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "batch_norm", "batch_norm_backward", "relu", "relu_backward", "softmax_cross_entropy",
)
# Functions that take data_format="NHWC" (batch_norm's calls choose their own layout): a valid
# call of one of these is now and then made channels-last (see channels_last_call).
CHANNELS_LAST = ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
                 "avg_pool2d_backward")
# Functions returning (values, int64 indices), whose results are compared exactly.
MAX_POOLS = ("max_pool2d", "max_pool1d")
# Arguments a function updates in place (batch_norm's running statistics, in training): they
# are not "inputs left untouched"; instead their new values must equal the reference's.
IN_PLACE_ARGS = {"batch_norm": ("running_mean", "running_var")}

# Each worker may use at most this much address space: a request for an enormous array then
# fails quickly with MemoryError instead of paging the shared machine to death.
WORKER_ADDRESS_SPACE = 4 << 30
# A MemoryError is a clean refusal only for a NumPy request at least this large.
GENUINE_MEMORY_ERROR = 256 << 20
# The reference backend's run of a case (the oracle) gets this long, then is skipped.
ORACLE_SECONDS = 5.0


# ----------------------------------------------------------------------------------------------
# Sources of choices: the same generator runs on random.Random (long runs) and hypothesis.
# ----------------------------------------------------------------------------------------------

class RandomSource:
    """Choices from a seeded random.Random."""

    def __init__(self, seed):
        self.random = random.Random(seed)

    def int(self, lo, hi):
        return self.random.randint(lo, hi)

    def choice(self, options):
        return options[self.random.randrange(len(options))]

    def bool(self):
        return self.random.random() < 0.5


class HypothesisSource:
    """Choices drawn from hypothesis' ``st.data()``, so failing cases shrink."""

    def __init__(self, data):
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def int(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))

    def choice(self, options):
        return options[self.data.draw(self.st.integers(0, len(options) - 1))]

    def bool(self):
        return self.data.draw(self.st.booleans())


# ----------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------

class NotAnArray:
    """Neither a sequence nor an object with __array__ (picklable, unlike object())."""

    def __repr__(self):
        return "NotAnArray()"


def all_dtypes():
    """One dtype of every kind NumPy has (plus byte-swapped floats and structured/void)."""
    names = [
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "longdouble", ">f4", ">f8",
        "complex64", "complex128", "clongdouble", "object", "U3", "S3",
        "datetime64[ns]", "timedelta64[s]", "V8",
    ]
    return [np.dtype(n) for n in names] + [np.dtype([("a", "f4"), ("b", "i4")])]


DTYPES = all_dtypes()
ACCEPTED_KINDS = "fiub"

# Hyper-parameter values: none of them valid for every argument, most invalid everywhere.
WEIRD_INTS = [0, -1, -2, -(2**31), 2**31 - 1, 2**31, 2**32 + 1, 2**63 - 1, 2**63, 2**64, -(2**63),
              10**30]
WEIRD_OTHERS = [
    1.0, 2.5, float("nan"), float("inf"), -0.0, "2", "", None, True, False, 1 + 0j,
    np.float32(2), np.float64(1), np.bool_(True), np.int64(-1), np.uint64(2**64 - 1),
    np.int8(-128), np.array(2.0), np.array([1, 2, 3]), np.array([[1, 2]]), np.array(["a", "b"]),
    (1,), (1, 2, 3), (), [2, "a"], (1.5, 1), (np.int64(1), -1), ((1, 1), (1, 1)), {1, 2},
    {"h": 1}, NotAnArray(), b"\x01", range(2), slice(1),
]
# Spellings of a valid int that must be accepted.
INT_SPELLINGS = ("int", "np.int64", "np.int32", "np.uint8", "0-d array")


def spell_int(src, value):
    kind = src.choice(INT_SPELLINGS)
    if kind == "np.int64":
        return np.int64(value)
    if kind == "np.int32":
        return np.int32(value)
    if kind == "np.uint8" and 0 <= value < 256:
        return np.uint8(value)
    if kind == "0-d array":
        return np.array(value)
    return int(value)


def spell_pair(src, pair, nd=2):
    """A valid hyper-parameter as a user might write it: int, tuple, list, array, numpy ints."""
    pair = tuple(pair)
    if nd == 1:
        form = src.choice(("int", "tuple1", "list1"))
        value = spell_int(src, pair[0])
        return value if form == "int" else ((value,) if form == "tuple1" else [value])
    form = src.choice(("int", "tuple", "list", "array"))
    if form == "int" and pair[0] == pair[1]:
        return spell_int(src, pair[0])
    if form == "array":
        dtypes = (np.int64, np.int32, np.uint16) if max(pair) < 2**16 else (np.int64, np.int32)
        return np.array(pair, dtype=src.choice(dtypes))
    items = [spell_int(src, v) for v in pair]
    return tuple(items) if form in ("tuple", "int") else items


def special_fill(src, array):
    """Put NaN, inf, -inf, -0.0, denormals or huge values into some elements of a float array."""
    if array.size == 0 or array.dtype.kind != "f":
        return array
    rng = np.random.default_rng(src.int(0, 2**32 - 1))
    info = np.finfo(array.dtype)
    specials = [np.nan, np.inf, -np.inf, -0.0, float(info.tiny) / 4, float(info.max) / 2]
    value = src.choice(specials)
    count = src.int(1, max(1, array.size // 2))
    flat = array.reshape(-1).copy()
    flat[rng.choice(array.size, size=count, replace=False)] = value
    return flat.reshape(array.shape)


def make_array(src, shape, dtype=None):
    """A random array of `shape` (float32 or float64 unless given), sometimes with special values."""
    rng = np.random.default_rng(src.int(0, 2**32 - 1))
    dtype = np.dtype(dtype or src.choice((np.float32, np.float64, np.float32, np.float64, np.int64)))
    data = rng.standard_normal(shape) * 4
    array = data.astype(dtype) if dtype.kind != "b" else data > 0
    if src.int(0, 5) == 0:
        array = special_fill(src, array)
    return relayout(src, array)


def relayout(src, array):
    """The same values in another memory layout: F-order, strided, reversed, read-only."""
    kind = src.choice(("C", "C", "F", "strided", "reversed", "readonly"))
    if array.ndim == 0 or array.dtype.kind not in "fiub":
        return array
    if kind == "F":
        return np.asfortranarray(array)
    if kind == "strided":
        big = np.empty(array.shape[:-1] + (array.shape[-1] * 2,), dtype=array.dtype)
        big[..., ::2] = array
        return big[..., ::2]
    if kind == "reversed":
        return np.ascontiguousarray(array[..., ::-1])[..., ::-1]
    if kind == "readonly":
        array = array.copy()
        array.flags.writeable = False
    return array


def convert_dtype(src, array, dtype):
    """`array`'s shape with another dtype (values made up where a cast makes no sense)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # NaN to int, complex to real: lossy casts are the point
        return _convert_dtype(array, dtype)


def _convert_dtype(array, dtype):
    shape = np.shape(array)
    if np.asarray(array).dtype.kind not in "fiub":
        array = np.ones(shape)
    if dtype.kind in "fiubc":
        return np.asarray(array, dtype=np.float64).astype(dtype)
    if dtype.kind == "O":
        return np.asarray(array, dtype=np.float64).astype(object)
    if dtype.kind in "US":
        return np.full(shape, "1.5", dtype=dtype)
    if dtype.kind == "M":
        return np.full(shape, np.datetime64("2020-01-01", "ns"), dtype=dtype)
    if dtype.kind == "m":
        return np.full(shape, 3, dtype=dtype)
    return np.zeros(shape, dtype=dtype)  # void and structured


# ----------------------------------------------------------------------------------------------
# Valid calls (shapes from the formulas of API.md, never from fastconv)
# ----------------------------------------------------------------------------------------------

def out_size(size, k, s, p, d=1, ceil_mode=False):
    """The output length of API.md; with ceil_mode torch's: rounded up, and a last window that
    would start in the right padding dropped."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def windows_read_input(size, k, s, p, d, ceil_mode):
    """Whether every pooling window along an axis has a tap inside the input."""
    out = out_size(size, k, s, p, d, ceil_mode)
    return all(any(0 <= o * s - p + i * d < size for i in range(k)) for o in range(out))


def _small_window(src, nd, pool=None, ceil_mode=False, default_stride=False):
    """(kernel, stride, padding, dilation, input sizes) with an output of at least 1.
    pool: None (convolution), "max" or "avg"; default_stride: stride = kernel_size."""
    kernel, stride, padding, dilation, sizes = [], [], [], [], []
    for _ in range(nd):
        k = src.int(1, 4)
        s = k if default_stride else src.int(1, 3)
        p = src.int(0, k // 2) if pool else src.int(0, 2)
        d = src.int(1, 2) if pool in (None, "max") else 1
        span = d * (k - 1) + 1
        lo = max(1, span - 2 * p - (s - 1 if ceil_mode else 0))
        size = src.int(lo, lo + 5)
        while pool == "max" and not windows_read_input(size, k, s, p, d, ceil_mode):
            size += 1  # fastconv refuses a max-pooling window of padding alone
        kernel.append(k), stride.append(s), padding.append(p), dilation.append(d)
        sizes.append(size)
    return kernel, stride, padding, dilation, sizes


HUGE = 2**31 - 1  # the largest hyper-parameter fastconv accepts


def huge_window(src, nd, pool=None, ceil_mode=False, default_stride=False):
    """Like valid_window, but with hyper-parameters up to 2**31 - 1 and a tiny output: dilated
    kernels (convolution) or kernels (pooling) of ~2**31 over a tiny input, almost all padding.
    Exercises every index product of the kernels near and beyond 2**31 and 2**32."""
    kernel, stride, padding, dilation, sizes = [], [], [], [], []
    for _ in range(nd):
        size = src.int(1, 4)
        s = src.choice((1, 2, 3, HUGE, 2**30))
        if pool:  # every window valid without ceil_mode, hence with it too
            k = src.choice((1, 2, 3, HUGE, HUGE - 1, 2**30, 2**20 + 1))
            d = 1
            # padding <= k // 2 and size + 2p >= k: p = k // 2 - t with 2t <= size - k % 2
            p = k // 2 - src.int(0, min(k // 2, max(0, (size - k % 2) // 2)))
            s = k if default_stride else s
        else:
            k = src.choice((1, 2, 3))
            d = src.choice((1, 2, HUGE, 2**30 + 1, 2**20)) if k > 1 else src.choice((1, HUGE))
            span = d * (k - 1) + 1
            p = max(0, -(-(span - size) // 2)) + src.int(0, 2)
            if p > HUGE:
                d, span = 1, k
                p = max(0, -(-(span - size) // 2)) + src.int(0, 2)
        kernel.append(k), stride.append(s), padding.append(p), dilation.append(d)
        sizes.append(size)
    return kernel, stride, padding, dilation, sizes


def string_padding_window(src, nd):
    """(kernel, stride, padding, dilation, sizes, output sizes) of a convolution whose padding
    is "same" (stride 1, output size = input size) or "valid" (no padding)."""
    kernel = [src.int(1, 4) for _ in range(nd)]
    dilation = [src.int(1, 2) for _ in range(nd)]
    if src.bool():
        sizes = [src.int(1, 6) for _ in range(nd)]
        return kernel, [1] * nd, "same", dilation, sizes, sizes
    stride = [src.int(1, 3) for _ in range(nd)]
    sizes = [d * (k - 1) + 1 + src.int(0, 4) for k, d in zip(kernel, dilation)]
    outs = [out_size(size, k, s, 0, d) for size, k, s, d in zip(sizes, kernel, stride, dilation)]
    return kernel, stride, "valid", dilation, sizes, outs


def transposed_size(size, k, s, p, op, d):
    """OH = (H - 1)*s - 2*p + d*(k - 1) + op + 1 (API.md)."""
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def transposed_window(src, nd, huge=False):
    """(kernel, stride, padding, output_padding, dilation, sizes) of a valid transposed
    convolution: output_padding below the stride or the dilation, an output of at least 1.
    huge: strides, dilations and output paddings up to 2**31 - 1 whose output stays tiny."""
    kernel, stride, padding, output_padding, dilation, sizes = [], [], [], [], [], []
    for _ in range(nd):
        pattern = src.int(0, 3) if huge else 0
        if pattern == 1:    # input rows 1 and 0 land on output rows 0 and 1, nothing else inside
            k, size, s, d, op = 2, 2, HUGE - 1, HUGE, 0
            p = s
        elif pattern == 2:  # a huge stride: only the output_padding rows after one input row
            k, size, s, d, op, p = 1, 1, src.choice((HUGE, 2**30)), 1, src.int(0, 3), 0
        elif pattern == 3:  # a huge dilation, padding taking most of it back
            k, size, s, d = 2, 1, 1, src.choice((2**30 + 1, HUGE))
            op = src.int(0, 2)
            p = d // 2
        else:
            k, s, d, size = src.int(1, 4), src.int(1, 3), src.int(1, 2), src.int(1, 5)
            op = src.int(0, max(s, d) - 1)
            p = src.int(0, min(2, (transposed_size(size, k, s, 0, op, d) - 1) // 2))
        kernel.append(k), stride.append(s), padding.append(p), output_padding.append(op)
        dilation.append(d), sizes.append(size)
    return kernel, stride, padding, output_padding, dilation, sizes


def valid_call(src, name, huge=False):
    """Named arguments of a valid call of `name` (a dict in signature order) and how to spell
    its hyper-parameters (nd). huge: hyper-parameters up to 2**31 - 1 (see huge_window)."""
    args, nd = _valid_call(src, name, huge)
    if name in CHANNELS_LAST and src.int(0, 2) == 0:
        args = channels_last_call(src, args)
    return args, nd


def _nhwc_view(src, array):
    """An (N, C, H, W) array's values as (N, H, W, C): the transposed view itself (the way
    channels-last data usually arrives) or a C-contiguous copy of it."""
    view = np.moveaxis(array, 1, -1)
    return view if src.bool() else np.ascontiguousarray(view)


def channels_last_call(src, args):
    """A valid NCHW call of a CHANNELS_LAST function as the same call with data_format="NHWC":
    images (N, H, W, C), input_shape too, weights (KH, KW, C // groups, F); indices keep
    their values (h*W + w, the same in either layout)."""
    out = {}
    for key, value in args.items():
        if key in ("x", "dout", "indices"):
            out[key] = _nhwc_view(src, value)
        elif key == "w":
            out[key] = value.transpose(2, 3, 1, 0) if src.bool() else np.ascontiguousarray(value.transpose(2, 3, 1, 0))
        elif key == "input_shape":
            n, c, h, w = (int(v) for v in value)
            out[key] = spell_shape(src, (n, h, w, c))
        else:
            out[key] = value
    out["data_format"] = "NHWC"
    return out


def _valid_call(src, name, huge=False):
    n = src.choice((0, 1, 1, 2, 3))
    c, f = src.int(1, 3), src.int(1, 3)
    dtype = src.choice((np.float32, np.float64, np.float32, np.float64, np.int64, np.bool_, np.float16))
    valid_window = huge_window if huge else _small_window
    if name in LAYER_FUNCTION_CALLS:
        return LAYER_FUNCTION_CALLS[name](src, n, c, dtype), 2
    if name.startswith("conv"):
        nd = 1 if "1d" in name else 2
        # groups divide both channel counts: c and f are per-group counts times groups
        groups = src.choice((1, 1, 1, 2, 3))
        other = src.choice((dtype, np.float32, np.float64))
        if name.startswith("conv_transpose"):
            kernel, stride, padding, output_padding, dilation, sizes = transposed_window(src, nd, huge)
            x = make_array(src, (n, c * groups, *sizes), dtype)
            w = make_array(src, (c * groups, f, *kernel), other)
            hyper = {"stride": spell_pair(src, stride, nd), "padding": spell_pair(src, padding, nd),
                     "output_padding": spell_pair(src, output_padding, nd), "groups": spell_int(src, groups),
                     "dilation": spell_pair(src, dilation, nd)}
            outs = [transposed_size(*v) for v in zip(sizes, kernel, stride, padding, output_padding, dilation)]
        else:
            if not huge and src.int(0, 3) == 0:
                kernel, stride, padding, dilation, sizes, outs = string_padding_window(src, nd)
                padding_arg = padding
            else:
                kernel, stride, padding, dilation, sizes = valid_window(src, nd)
                outs = [out_size(*v) for v in zip(sizes, kernel, stride, padding, dilation)]
                padding_arg = spell_pair(src, padding, nd)
            x = make_array(src, (n, c * groups, *sizes), dtype)
            w = make_array(src, (f * groups, c, *kernel), other)
            hyper = {"stride": spell_pair(src, stride, nd), "padding": padding_arg,
                     "dilation": spell_pair(src, dilation, nd), "groups": spell_int(src, groups)}
        if name.endswith("backward"):
            dout = make_array(src, (n, f * groups, *outs), src.choice((dtype, np.float32, np.float64)))
            return {"dout": dout, "x": x, "w": w, **hyper}, nd
        b = None if src.bool() else make_array(src, (f * groups,), src.choice((dtype, np.float32, np.float64)))
        return {"x": x, "w": w, "b": b, **hyper}, nd
    if name in ("im2col", "col2im"):
        kernel, stride, padding, dilation, (h, w_) = valid_window(src, 2)
        hyper = {"kernel_size": spell_pair(src, kernel), "stride": spell_pair(src, stride),
                 "padding": spell_pair(src, padding), "dilation": spell_pair(src, dilation)}
        if name == "im2col":
            return {"x": make_array(src, (n, c, h, w_), dtype), **hyper}, 2
        outs = [out_size(*v) for v in zip((h, w_), kernel, stride, padding, dilation)]
        cols = make_array(src, (n, c * kernel[0] * kernel[1], outs[0] * outs[1]), dtype)
        return {"cols": cols, "input_shape": (n, c, h, w_), **hyper}, 2
    if name.startswith("adaptive"):
        return adaptive_call(src, name, n, c, dtype), 2
    nd = 1 if "1d" in name else 2
    kind = "max" if name.startswith("max") else "avg"
    ceil_mode, default_stride = src.bool(), src.int(0, 3) == 0
    kernel, stride, padding, dilation, sizes = valid_window(src, nd, kind, ceil_mode, default_stride)
    outs = [out_size(*v, ceil_mode) for v in zip(sizes, kernel, stride, padding, dilation)]
    window = {"kernel_size": spell_pair(src, kernel, nd),
              "stride": None if default_stride else spell_pair(src, stride, nd),
              "padding": spell_pair(src, padding, nd)}
    # Options are left at their defaults now and then, and spelled as bools or NumPy bools.
    options = {}
    if kind == "max" and (max(dilation) > 1 or src.bool()):
        options["dilation"] = spell_pair(src, dilation, nd)
    if ceil_mode or src.bool():
        options["ceil_mode"] = np.bool_(ceil_mode) if src.bool() else ceil_mode
    if kind == "avg":
        if src.bool():
            options["count_include_pad"] = src.bool()
        if nd == 2 and src.bool():
            options["divisor_override"] = spell_int(src, src.choice((1, 2, 3, 7, HUGE)))
    input_shape = spell_shape(src, (n, c, *sizes))
    if name == f"{kind}_pool{nd}d":
        return {"x": make_array(src, (n, c, *sizes), dtype), **window, **options}, nd
    dout = make_array(src, (n, c, *outs), dtype)
    if kind == "max":
        rng = np.random.default_rng(src.int(0, 2**32 - 1))
        idx_dtype = src.choice((np.int64, np.int64, np.int32, np.uint8, np.uint64, np.intp))
        top = min(math.prod(sizes), np.iinfo(idx_dtype).max + 1)
        indices = relayout(src, rng.integers(0, top, size=dout.shape).astype(idx_dtype))
        return {"dout": dout, "indices": indices, "input_shape": input_shape}, nd
    return {"dout": dout, "input_shape": input_shape, **window, **options}, nd


def adaptive_call(src, name, n, c, dtype):
    """A valid adaptive_avg_pool2d (or backward) call: outputs smaller and larger than the
    input, None entries (the input size) in the forward."""
    h, w_ = src.int(1, 9), src.int(1, 9)
    oh, ow = src.choice((1, 2, 3, 5, 12)), src.choice((1, 2, 4, 7, 16))
    if name == "adaptive_avg_pool2d_backward":
        return {"dout": make_array(src, (n, c, oh, ow), dtype), "input_shape": spell_shape(src, (n, c, h, w_))}
    form = src.choice(("pair", "int", "none_h", "none_w"))
    if form == "int":
        output_size = spell_int(src, oh)
    elif form == "pair":
        output_size = spell_pair(src, (oh, ow))
    else:
        output_size = (None, spell_int(src, ow)) if form == "none_h" else [spell_int(src, oh), None]
    return {"x": make_array(src, (n, c, h, w_), dtype), "output_size": output_size}


def _batch_norm_shape(src, n, c):
    """(shape, data_format, values per channel) of a batch-norm operand; data_format None
    means the default (NCHW)."""
    spatial = [src.int(1, 4) for _ in range(src.int(0, 2))]
    data_format = src.choice((None, "NCHW", "NHWC"))
    shape = (n, *spatial, c) if data_format == "NHWC" else (n, c, *spatial)
    return shape, data_format, n * int(np.prod(spatial))


def _float_dtype(src):
    return src.choice((np.float32, np.float64, np.float32, np.float64, np.int64, np.float16))


def _batch_norm_call(src, n, c, dtype):
    training = src.bool()
    if training and n == 1:
        n = 2  # training needs more than one value per channel
    shape, data_format, _ = _batch_norm_shape(src, n, c)
    args = {"x": make_array(src, shape, dtype)}
    for key in ("weight", "bias"):
        args[key] = None if src.bool() else make_array(src, (c,), _float_dtype(src))
    rng = np.random.default_rng(src.int(0, 2**32 - 1))
    if training and src.bool():
        args["running_mean"], args["running_var"] = None, None
    else:
        for key, offset in (("running_mean", 0.0), ("running_var", 0.5)):
            values = np.abs(rng.standard_normal(c)) + offset if offset else rng.standard_normal(c)
            if training:  # updated in place: a writeable floating array, of any layout
                stat = values.astype(src.choice((np.float32, np.float64)))
                args[key] = stat if src.bool() else np.repeat(stat, 2)[::2]
            else:
                args[key] = relayout(src, values.astype(_float_dtype(src)))
    args["training"] = training if src.int(0, 3) else np.bool_(training)
    args["momentum"] = src.choice((0.1, 0.0, 1.0, 0.5, np.float32(0.25)))
    # (eps = 0 is refused in training and divides by a zero variance in evaluation: tested
    # by hand, not fuzzed.)
    args["eps"] = src.choice((1e-5, 1e-3, 1))
    if data_format is not None:
        args["data_format"] = data_format
    return args


def _batch_norm_backward_call(src, n, c, dtype):
    shape, data_format, _ = _batch_norm_shape(src, n, c)
    args = {"dout": make_array(src, shape, dtype), "x": make_array(src, shape, dtype),
            "weight": None if src.bool() else make_array(src, (c,), _float_dtype(src)),
            "mean": make_array(src, (c,), _float_dtype(src)),
            "invstd": relayout(src, np.abs(np.random.default_rng(src.int(0, 2**32 - 1)).standard_normal(c)) + 0.1),
            "training": src.bool()}
    if data_format is not None:
        args["data_format"] = data_format
    return args


def _elementwise_shape(src):
    return tuple(src.int(0, 4) for _ in range(src.int(0, 4)))


def _softmax_call(src, n, c, dtype):
    k = src.int(1, 4)
    if src.bool():
        rng = np.random.default_rng(src.int(0, 2**32 - 1))
        labels = rng.integers(0, k, size=n).astype(src.choice((np.int64, np.int32, np.uint8, np.uint64)))
        return {"logits": make_array(src, (n, k), dtype), "target": relayout(src, labels)}
    return {"logits": make_array(src, (n, k), dtype), "target": make_array(src, (n, k), _float_dtype(src))}


LAYER_FUNCTION_CALLS = {
    "batch_norm": _batch_norm_call,
    "batch_norm_backward": _batch_norm_backward_call,
    "relu": lambda src, n, c, dtype: {"x": make_array(src, _elementwise_shape(src), dtype)},
    "relu_backward": lambda src, n, c, dtype: (
        lambda shape: {"dout": make_array(src, shape, dtype), "y": make_array(src, shape, dtype)}
    )(_elementwise_shape(src)),
    "softmax_cross_entropy": _softmax_call,
}


def spell_shape(src, shape):
    form = src.choice(("tuple", "tuple", "list", "array", "np ints"))
    if form == "list":
        return list(shape)
    if form == "array":
        return np.array(shape, dtype=src.choice((np.int64, np.int32)))
    if form == "np ints":
        return tuple(np.int64(v) for v in shape)
    return tuple(shape)


# ----------------------------------------------------------------------------------------------
# Mutations. Each returns True when the call stays valid (so it must still succeed).
# ----------------------------------------------------------------------------------------------

ARRAY_ARGS = ("x", "w", "b", "dout", "cols", "indices", "weight", "bias", "running_mean", "running_var",
              "mean", "invstd", "y", "logits", "target")
# ints or pairs of ints
HYPER_ARGS = ("kernel_size", "stride", "padding", "output_padding", "dilation", "groups", "output_size")
OPTION_ARGS = ("ceil_mode", "count_include_pad", "divisor_override")           # bools, None or an int
# The layer functions' scalar arguments: replaced by odd values, validity unknown (momentum 0
# and eps 1 are valid, momentum 2 is not).
SCALAR_ARGS = ("training", "momentum", "eps", "data_format")
WEIRD_SCALARS = ["NHWC", "NCHW", "nchw", "NCL", 0.5, -0.5, 1e300, np.float64("nan"), np.bool_(False)]


def mutate(src, name, args, nd):
    arrays = [k for k in args if k in ARRAY_ARGS and isinstance(args[k], np.ndarray)]
    hypers = [k for k in args if k in HYPER_ARGS]
    options = [k for k in args if k in OPTION_ARGS]
    scalars = [k for k in args if k in SCALAR_ARGS]
    kind = src.choice((
        "dtype", "ndim", "dim", "zero_dim", "not_array", "hyper", "hyper", "hyper_big",
        "input_shape", "indices", "special", "layout", "valid_spelling", "scalar",
    ))
    if kind == "scalar" and scalars:
        args[src.choice(scalars)] = src.choice(WEIRD_INTS + WEIRD_OTHERS + WEIRD_SCALARS)
        return None
    if kind in ("dtype", "ndim", "dim", "zero_dim", "special", "layout") and arrays:
        key = src.choice(arrays)
        a = args[key]
        if kind == "dtype":
            dtype = src.choice(DTYPES)
            args[key] = convert_dtype(src, a, dtype)
            if key == "indices":  # any integer dtype that holds the values is accepted
                return dtype.kind in "iu" and _indices_fit(a, dtype)
            if key == "target" and a.ndim == 1:  # class labels: integers (small ones)
                return dtype.kind in "iu"
            if key in IN_PLACE_ARGS.get(name, ()) and args.get("training", True):
                return dtype.kind == "f"  # updated in place
            return dtype.kind in ACCEPTED_KINDS
        if kind == "ndim":
            if a.ndim > 0 and src.bool():
                axis = src.int(0, a.ndim - 1)
                args[key] = resize(src, a, a.shape[:axis] + a.shape[axis + 1:])
            else:
                axis = src.int(0, a.ndim)
                args[key] = resize(src, a, a.shape[:axis] + (src.int(1, 2),) + a.shape[axis:])
            return False
        if kind in ("dim", "zero_dim") and a.ndim:
            axis = src.int(0, a.ndim - 1)
            shape = list(a.shape)
            shape[axis] = 0 if kind == "zero_dim" else max(0, shape[axis] + src.choice((-1, 1, 2, 7)))
            args[key] = resize(src, a, tuple(shape))
            return tuple(shape) == a.shape
        if kind == "special":
            args[key] = special_fill(src, np.asarray(a))
            return key != "indices"
        if kind == "layout":
            args[key] = relayout(src, np.array(a))
            # A read-only layout of a statistic that training updates in place is refused.
            return bool(args[key].flags.writeable) or key not in IN_PLACE_ARGS.get(name, ())
        return True
    if kind == "not_array":
        keys = [k for k in args if k in ARRAY_ARGS or k == "input_shape"]
        if keys:
            key = src.choice(keys)
            args[key] = src.choice([None, 3.0, "abc", [[1.0, 2.0], [3.0]], {"a": 1}, NotAnArray(),
                                    [], [[[[]]]], np.float64(2.0), b"xy"])
            return False
    if kind in ("hyper", "hyper_big") and hypers + options:
        key = src.choice(hypers + options)
        if kind == "hyper_big":
            value = src.choice(WEIRD_INTS)
            if src.bool():
                value = (value, spell_int(src, 1)) if src.bool() else [1, value]
        else:
            value = src.choice(WEIRD_INTS + WEIRD_OTHERS)
        args[key] = value
        return False
    if kind == "input_shape" and _is_shape(args.get("input_shape")):
        shape = [int(v) for v in args["input_shape"]]
        how = src.choice(("len", "neg", "zero", "huge", "float", "string", "dim", "nested"))
        last = len(shape) - 1
        if how == "len":
            shape = shape + [1] if src.bool() else shape[:last]
        elif how == "neg":
            shape[src.int(0, last)] = -src.int(1, 3)
        elif how == "zero":
            shape[src.int(1, last)] = 0
        elif how == "huge":
            shape[src.int(0, last)] = src.choice((2**31, 2**32 + 3, 2**62, 2**63, 2**64, 10**30))
        elif how == "float":
            shape[src.int(0, last)] = 2.0
        elif how == "string":
            args["input_shape"] = "1,1,4,4"
            return False
        elif how == "dim":
            axis = src.int(0, last)
            shape[axis] += src.choice((-1, 1, 3))
            args["input_shape"] = tuple(shape)
            return None  # may or may not stay valid (e.g. H + 1 with a stride of 2)
        else:
            args["input_shape"] = (tuple(shape[:2]), tuple(shape[2:]))
            return False
        args["input_shape"] = tuple(shape)
        return False
    if kind == "indices" and isinstance(args.get("indices"), np.ndarray) and args["indices"].ndim:
        idx = np.array(args["indices"])
        spatial = slice(1, -1) if args.get("data_format") == "NHWC" else slice(2, None)
        plane = math.prod(int(v) for v in args["input_shape"][spatial]) if _is_shape(args["input_shape"]) else 1
        how = src.choice(("too_big", "negative", "float", "bool", "uint64", "shape", "object", "int8"))
        if idx.dtype.kind not in "iufb":
            return False
        if how in ("too_big", "negative") and idx.size:
            flat = idx.astype(np.int64).reshape(-1)
            pos = src.int(0, flat.size - 1)
            flat[pos] = (plane + src.choice((0, 1, 2**31, 2**40))) if how == "too_big" else -src.choice((1, 2**31, 2**63))
            args["indices"] = flat.reshape(idx.shape)
        elif how == "float":
            args["indices"] = idx.astype(np.float64)
        elif how == "bool":
            args["indices"] = idx.astype(bool)
        elif how == "uint64" and idx.size:
            flat = idx.astype(np.uint64).reshape(-1)
            flat[src.int(0, flat.size - 1)] = np.uint64(2**64 - 1 - src.int(0, 3))
            args["indices"] = flat.reshape(idx.shape)
        elif how == "shape":
            args["indices"] = idx.reshape(-1) if src.bool() else idx[..., :-1]
        elif how == "object":
            args["indices"] = idx.astype(object)
        else:
            args["indices"] = idx.astype(np.int8)  # valid only if every index fits
            return None
        return False
    if kind == "valid_spelling" and hypers:
        key = src.choice(hypers)
        value = args[key]
        if key == "groups":  # an int, never a pair
            if isinstance(value, (int, np.integer)) and 1 <= value < 2**31:
                args[key] = spell_int(src, int(value))
            return True
        if value is not None and not isinstance(value, np.ndarray):
            pair = value if isinstance(value, (tuple, list)) else (value,) * nd
            pair = [int(v) for v in pair] if all(isinstance(v, (int, np.integer)) for v in pair) else []
            if len(pair) == nd and all(0 <= v < 2**31 for v in pair):
                args[key] = spell_pair(src, pair if nd == 2 else pair[:1], nd)
        return True
    return True


def _is_shape(value):
    try:
        return len(value) in (3, 4) and all(isinstance(v, (int, np.integer)) for v in value)
    except TypeError:
        return False


def _indices_fit(a, dtype):
    try:
        info = np.iinfo(dtype)
        return a.size == 0 or (a.min() >= info.min and a.max() <= info.max)
    except (ValueError, TypeError):
        return False


def resize(src, a, shape):
    """An array of `shape` with a's dtype (values made up)."""
    if a.dtype.kind not in "fiub":
        return np.zeros(shape, dtype=a.dtype)
    rng = np.random.default_rng(src.int(0, 2**32 - 1))
    return rng.integers(0, 3, size=shape).astype(a.dtype)


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

Case = collections.namedtuple("Case", "name where args expect_ok threads")


def generate_case(src, names=FUNCTIONS, backends=("cython", "reference"), huge_names=FUNCTIONS):
    """A random case: one call of one public function on valid or mutated arguments.

    `where` is "cython"/"reference" (passed as backend=), "active" (no backend=, whatever is
    active) or "module" (fastconv.reference.<name>). expect_ok is True when every mutation kept
    the call valid (so it must succeed), False when the call is invalid or unknown.
    Functions in huge_names sometimes get huge hyper-parameters (huge_window), on the compiled
    backend only: the reference backend materialises the padded input, so there they can only
    end in a MemoryError or a very long loop (a documented limitation of the fallback).
    """
    name = src.choice(tuple(names))
    where = src.choice(tuple(backends) + ("module",) + (("active",) if len(backends) > 1 else ()))
    huge = "cython" in backends and name in huge_names and src.int(0, 7) == 0
    if huge:
        where = "cython"
    args, nd = valid_call(src, name, huge)
    expect_ok = True
    for _ in range(src.choice((0, 1, 1, 1, 2, 2, 3))):
        kept = mutate(src, name, args, nd)
        expect_ok = expect_ok and kept is True
    threads = src.choice((1, 2, 3, 4))
    return Case(name, where, args, expect_ok, threads)


def describe(case):
    """A short readable description of a case (arrays by dtype and shape)."""
    parts = []
    for key, value in case.args.items():
        if isinstance(value, np.ndarray) and value.ndim > 0:
            parts.append(f"{key}=<{value.dtype} {value.shape}{'' if value.flags.c_contiguous else ' non-C'}>")
        else:
            parts.append(f"{key}={value!r}")
    return f"{case.name}[{case.where}, threads={case.threads}]({', '.join(parts)})"


# ----------------------------------------------------------------------------------------------
# Running one case (inside the worker)
# ----------------------------------------------------------------------------------------------

class _OracleTimeout(Exception):
    pass


def _call(case, where):
    import fastconv

    if where == "module":
        return getattr(fastconv.reference, case.name)(**case.args)
    if where == "active":
        return getattr(fastconv, case.name)(**case.args)
    return getattr(fastconv, case.name)(**case.args, backend=where)


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _snapshot(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    return pickle.dumps(value)


def _in_place(case):
    """The arguments this call may update in place (batch_norm's statistics in training)."""
    training = case.args.get("training", True)
    return IN_PLACE_ARGS.get(case.name, ()) if isinstance(training, (bool, np.bool_)) and training else ()


def _restore(snapshot):
    """A fresh copy of a snapshotted argument."""
    return snapshot.copy() if isinstance(snapshot, np.ndarray) else pickle.loads(snapshot)


def _same(before, value):
    if isinstance(before, np.ndarray):
        if not isinstance(value, np.ndarray) or before.shape != value.shape or before.dtype != value.dtype:
            return False
        if before.dtype.kind == "O":
            return all(a is b or a == b for a, b in zip(before.ravel(), value.ravel()))
        return before.tobytes() == value.tobytes()
    return before == pickle.dumps(value)


def _expected_dtype(case):
    floats = []
    # Every floating array argument votes (class labels are integers and cannot).
    for key in ARRAY_ARGS:
        value = case.args.get(key)
        if value is not None:
            dtype = np.asarray(value).dtype
            if dtype.kind == "f":
                floats.append(dtype)
    return np.float32 if floats and all(d.itemsize == 4 for d in floats) else np.float64


def _close(a, b, dtype, inputs_tame, exact):
    """Compiled vs reference: exact for max pooling/im2col, a summation tolerance otherwise."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "iu" or exact:
        return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if not inputs_tame:
        # Huge values may overflow to inf in one summation order and not in another;
        # only NaN-ness of non-overflowing entries is comparable, which is tested elsewhere.
        return True
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(a[~finite], b[~finite], equal_nan=True):
        return False
    eps = np.finfo(dtype).eps
    scale = float(np.max(np.abs(b[finite]), initial=0.0)) + 1.0
    return bool(np.all(np.abs(a[finite] - b[finite]) <= 64 * eps * scale * 16))


def _tame(case):
    """True when every float input is finite and moderate (no overflow in any order)."""
    for key in ARRAY_ARGS:
        value = case.args.get(key)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            if not np.all(np.isfinite(value)) or np.max(np.abs(value), initial=0) > 1e6:
                return False
    return True


def run_case(case):
    """Run one case here; returns (status, detail). Status: ok, clean, bad or wrong."""
    import fastconv

    fastconv.set_num_threads(case.threads)
    before = {k: _snapshot(v) for k, v in case.args.items()}
    in_place = _in_place(case)
    try:
        result = _call(case, case.where)
    except (ValueError, TypeError) as exc:
        if case.expect_ok:
            return "bad", f"valid call refused: {type(exc).__name__}: {exc}"
        message = str(exc)
        clear = message.startswith(f"{case.name}:") or "set_num_threads" in message
        return "clean", ("" if clear else "unclear message: ") + f"{type(exc).__name__}: {message[:200]}"
    except MemoryError as exc:
        size = getattr(exc, "_total_size", 0)
        if size >= GENUINE_MEMORY_ERROR and not case.expect_ok:
            return "clean", f"MemoryError for {size} bytes"
        return "bad", f"MemoryError: {exc}"
    except Exception as exc:  # anything else breaks the contract
        return "bad", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
    for key, value in case.args.items():
        if key not in in_place and not _same(before[key], value):
            return "wrong", f"input {key} was modified"
    outputs = _as_tuple(result)
    if case.name == "softmax_cross_entropy":
        if not isinstance(outputs[0], float):
            return "wrong", f"the loss is not a Python float: {type(outputs[0])}"
        outputs = (np.array(outputs[0]),) + outputs[1:]  # compared with the reference below
    inputs = [v for v in case.args.values() if isinstance(v, np.ndarray)]
    for out in outputs[1:] if case.name == "softmax_cross_entropy" else outputs:
        if not isinstance(out, np.ndarray) or not out.flags.c_contiguous:
            return "wrong", f"result is not a C-contiguous ndarray: {type(out)}"
        if any(np.shares_memory(out, a) for a in inputs):
            return "wrong", "result shares memory with an input"
    dtype = _expected_dtype(case)
    float_outs = {"softmax_cross_entropy": outputs[1:]}.get(case.name, outputs[:1] if case.name in MAX_POOLS else outputs)
    if any(o.dtype != dtype for o in float_outs):
        return "wrong", f"result dtype {[o.dtype for o in outputs]}, expected {np.dtype(dtype)}"
    if case.name in MAX_POOLS and outputs[1].dtype != np.int64:
        return "wrong", f"indices dtype {outputs[1].dtype}"
    # The oracle: the same call on the reference backend (skipped when it would be too slow,
    # e.g. a huge padding that the reference materialises).
    uses_compiled = case.where == "cython" or (case.where == "active" and fastconv.get_backend() == "cython")
    if uses_compiled:
        signal.signal(signal.SIGALRM, _raise_oracle_timeout)
        signal.setitimer(signal.ITIMER_REAL, ORACLE_SECONDS)
        # The reference starts from the same running statistics (the call above updated them).
        original = case._replace(args={k: _restore(before[k]) if k in in_place else v for k, v in case.args.items()})
        try:
            expected = _as_tuple(_call(original, "reference"))
        except (_OracleTimeout, MemoryError):
            return "ok", "oracle skipped (too large for the reference)"
        except ValueError as exc:
            # The reference pads the input explicitly: a padding of ~2**31 makes NumPy refuse
            # the padded array. Any other refusal is a disagreement between the backends.
            if str(exc).startswith(case.name):
                return "wrong", f"compiled returned but the reference raised ValueError: {exc}"
            return "ok", f"oracle skipped (the reference cannot allocate: {exc})"
        except Exception as exc:
            return "wrong", f"compiled returned but the reference raised {type(exc).__name__}: {exc}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        tame = _tame(case)
        exact = case.name in MAX_POOLS + ("im2col", "relu", "relu_backward")  # no arithmetic: bitwise equal
        expected = tuple(np.asarray(e) if isinstance(e, float) else e for e in expected)
        for key in in_place:
            if isinstance(case.args[key], np.ndarray):
                outputs, expected = outputs + (case.args[key],), expected + (original.args[key],)
        for k, (a, b) in enumerate(zip(outputs, expected)):
            # The tolerance of the computation dtype, or of a coarser one an output is stored in.
            coarser = b.dtype.kind == "f" and np.finfo(b.dtype).eps > np.finfo(dtype).eps
            if not _close(a, b, b.dtype if coarser else dtype, tame, exact):
                return "wrong", f"output {k} differs from the reference (max |diff| {_maxdiff(a, b)})"
    return "ok", ""


def _maxdiff(a, b):
    try:
        return float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    except ValueError:
        return "shape/dtype mismatch"


def _raise_oracle_timeout(signum, frame):
    raise _OracleTimeout()


# Self-test hooks: cases that really crash or hang, to check that the harness catches them.
def _self_test(kind):
    if kind == "crash":
        import ctypes

        ctypes.string_at(0)
    if kind == "hang":
        time.sleep(3600)
    if kind == "noop":
        return "ok", ""
    if kind == "abort":
        os.abort()
    if kind == "exit":
        os._exit(3)
    return "ok", ""


def _send(stream, obj):
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream):
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError
    (size,) = struct.unpack("<Q", header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def worker_main(parent_module, address_space):
    """Worker loop (python tools/fuzz.py --worker): read a case from stdin, run it, write
    (status, detail) to stdout. Messages are length-prefixed pickles."""
    import resource

    # Cases pickled by a parent that imported this file under another name refer to it.
    sys.modules.setdefault(parent_module, sys.modules[__name__])
    # AddressSanitizer reserves terabytes of shadow memory up front: under it, a limit on the
    # address space would fail every later mapping (ASAN_OPTIONS=max_allocation_size_mb bounds
    # allocations instead, see tools/memcheck.sh).
    if address_space and "asan" not in os.environ.get("LD_PRELOAD", ""):
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = address_space if hard == resource.RLIM_INFINITY else min(address_space, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    faulthandler.enable()
    # Overflow and invalid-value warnings are expected on NaN/inf/huge data; they are not results.
    warnings.simplefilter("ignore", RuntimeWarning)
    import fastconv  # noqa: F401  (imported before the first case, not timed with it)

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the message stream
    while True:
        try:
            case = _recv(stdin)
        except EOFError:
            return
        if case is None:
            return
        try:
            reply = _self_test(case) if isinstance(case, str) else run_case(case)
        except BaseException as exc:  # the harness itself must never die silently
            reply = ("bad", f"harness error {type(exc).__name__}: {exc}")
        _send(stdout, reply)


class Runner:
    """Runs cases in a worker process; restarts it after a crash or a hang.

    run(case) -> (status, detail) where status is ok, clean, bad, wrong, crash or hang.
    The worker is `python tools/fuzz.py --worker` (a fresh interpreter: no state shared with
    the caller, which may be pytest with threads of its own).
    """

    def __init__(self, timeout=30.0, address_space=WORKER_ADDRESS_SPACE):
        self.timeout, self.address_space = timeout, address_space
        self.process = None

    def _start(self):
        command = [sys.executable, os.path.abspath(__file__), "--worker", __name__,
                   "--address-space", str(self.address_space / 2**30)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _stop(self):
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(10)
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        self.process = None

    def close(self):
        if self.process is not None and self.process.poll() is None:
            try:
                _send(self.process.stdin, None)
                self.process.wait(5)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        self._stop()

    def run(self, case, timeout=None):
        timeout = timeout or self.timeout
        if self.process is None or self.process.poll() is not None:
            self._stop()
            self._start()
        try:
            _send(self.process.stdin, case)
            # The first case of a fresh worker also pays for its start-up (imports).
            ready, _, _ = select.select([self.process.stdout], [], [], timeout)
            if ready:
                return _recv(self.process.stdout)
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            pass
        if self.process.poll() is None:
            time.sleep(0.05)  # a worker that is dying may not have exited yet
        if self.process.poll() is None:
            self._stop()
            return "hang", f"no answer within {timeout} s"
        code = self.process.returncode
        self._stop()
        reason = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return "crash", f"worker died ({reason})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InProcessRunner:
    """Runs cases in this process (under a memory checker, which reports errors itself)."""

    def __init__(self):
        warnings.simplefilter("ignore", RuntimeWarning)

    def run(self, case, timeout=None):
        try:
            return run_case(case)
        except BaseException as exc:  # a harness error, not a fastconv one
            return "bad", f"harness error {type(exc).__name__}: {exc}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


# ----------------------------------------------------------------------------------------------
# Command line: a long run with a time or case budget
# ----------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="time budget (default 120 s)")
    parser.add_argument("--cases", type=int, default=None, help="case budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case before it is a hang")
    parser.add_argument("--functions", default=",".join(FUNCTIONS), help="comma-separated names")
    parser.add_argument("--backends", default=None, help="comma-separated (default: those available)")
    parser.add_argument("--huge-functions", default=",".join(FUNCTIONS),
                        help="functions that sometimes get hyper-parameters near 2**31 (comma-separated)")
    parser.add_argument("--verbose", action="store_true", help="print every case")
    parser.add_argument("--address-space", type=float, default=WORKER_ADDRESS_SPACE / 2**30,
                        help="GiB of address space per worker (0: no limit, needed under ASan)")
    parser.add_argument("--in-process", action="store_true",
                        help="run cases in this process, without a worker (for ASan/valgrind "
                             "runs: the first memory error ends the run); no hang detection")
    parser.add_argument("--worker", metavar="MODULE", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        return worker_main(opts.worker, int(opts.address_space * 2**30))
    if opts.seconds is None and opts.cases is None:
        opts.seconds = 120.0
    if opts.backends:
        backends = tuple(opts.backends.split(","))
    else:
        import fastconv._backend

        backends = tuple(b for b in ("cython", "reference") if b in fastconv._backend._modules)
    names = tuple(opts.functions.split(","))
    src = RandomSource(opts.seed)
    counts = collections.Counter()
    failures = []
    unclear = collections.Counter()
    start = time.monotonic()
    last_report = start
    runner = InProcessRunner() if opts.in_process else Runner(opts.timeout, int(opts.address_space * 2**30))
    with runner:
        while True:
            if opts.cases is not None and counts["cases"] >= opts.cases:
                break
            if opts.seconds is not None and time.monotonic() - start >= opts.seconds:
                break
            case = generate_case(src, names, backends, tuple(opts.huge_functions.split(",")))
            status, detail = runner.run(case)
            counts["cases"] += 1
            counts[status] += 1
            if status == "clean" and detail.startswith("unclear"):
                unclear[detail[:120]] += 1
            if status not in ("ok", "clean"):
                failures.append((status, describe(case), detail))
                print(f"FAIL {status}: {describe(case)}\n    {detail}", flush=True)
            elif opts.verbose:
                print(f"{status}: {describe(case)} {detail[:100]}", flush=True)
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(f"... {counts['cases']} cases, {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    for message, count in unclear.most_common(10):
        print(f"note: {count} refusals with a message not naming the function: {message}")
    print(f"elapsed {time.monotonic() - start:.1f} s, seed {opts.seed}, backends {','.join(backends)}")
    print(
        f"cases={counts['cases']} ok={counts['ok']} clean_errors={counts['clean']} "
        f"crashes={counts['crash']} hangs={counts['hang']} bad_errors={counts['bad']} wrong={counts['wrong']}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
