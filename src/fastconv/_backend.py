"""Which backend runs the kernels: the compiled extension ("cython") or NumPy ("reference").

A backend is a module with the kernel functions below, each receiving arguments that
fastconv._validation has already checked (C-contiguous arrays of the computation dtype, a
non-empty batch, hyper-parameters as (h, w) tuples of ints) and returning new arrays:

    conv2d(x, w, b, stride, padding, dilation, groups) -> y      (b may be None; padding is
    conv2d_backward(dout, x, w, stride, padding, dilation, groups,     ((top, bottom), (left, right)))
                    need_dx=True) -> (dx, dw, db)              (need_dx=False: dx None, not computed)
    conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation) -> y
    conv_transpose2d_backward(dout, x, w, stride, padding, output_padding, groups, dilation)
        -> (dx, dw, db)
    im2col(x, kernel_size, stride, padding, dilation) -> cols
    col2im(cols, input_shape, kernel_size, stride, padding, dilation) -> x
    max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode) -> (y, indices)
    max_pool2d_backward(dout, indices, input_shape) -> dx
    avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
               divisor_override) -> y                       (divisor_override may be None)
    avg_pool2d_backward(dout, input_shape, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override) -> dx
    adaptive_avg_pool2d(x, output_size) -> y                 (output_size: (OH, OW))
    adaptive_avg_pool2d_backward(dout, input_shape) -> dx

ceil_mode and count_include_pad are bools, divisor_override None or an int >= 1. The 1-D
functions reach the 2-D kernels with H = 1 (conv1d as conv2d, max_pool1d as max_pool2d, ...).

Channels-last twins (data_format="NHWC"): the same arguments, with images (N, H, W, C)
(input_shape too), convolution weights (KH, KW, C // groups, F), dw likewise; max pooling's
indices are still h*W + w:

    conv2d_nhwc, conv2d_backward_nhwc, max_pool2d_nhwc, max_pool2d_backward_nhwc,
    avg_pool2d_nhwc, avg_pool2d_backward_nhwc

The layer functions' kernels see a batch-norm operand as an (outer, C, inner) array: NCHW input
is (N, C, H*W), channels-last and 2-D input (N*H*W, C, 1); weight, bias, mean and invstd are
(C,) arrays of the same dtype (weight and bias may be None: ones, zeros):

    batch_norm_statistics(x) -> (mean, var)      float64 (C,): batch mean, biased variance
    batch_norm_forward(x, weight, bias, mean, invstd) -> y
    batch_norm_backward(dout, x, weight, mean, invstd, training) -> (dx, dweight, dbias)
    relu(x, out=None) -> y                       x flat (1-D); so are the arrays below
    relu_backward(dout, y, out=None) -> dx       out: where to write (the input: in place)
    dropout(x, u, p, scale, out=None) -> (y, keep)
        u: float64 uniform draws in [0, 1), one per element; keep = u >= p (bool);
        y = x * (scale where kept, else 0); out=(y, keep) fills preallocated arrays
    dropout_backward(dout, keep, scale) -> dx
    softmax_cross_entropy(logits, target) -> (loss, dlogits)
        logits (N, K) with N >= 1; target int64 labels (N,) in [0, K) or probabilities (N, K)

The drop-ins (fastconv.cs231n, fastconv.dlfs) add, through fastconv._dropin_api:

    im2row(x, kernel_size, stride, padding) -> rows     (N*OH*OW, C*KH*KW): the book's im2col
    row2im(rows, input_shape, kernel_size, stride, padding) -> x
    affine(x, w, b) -> y                         x (M, K) @ w (K, N) + b (b may be None)
    affine_backward(dout, x, w) -> (dx, dw, db)  new arrays
    group_norm_forward(x, weight, bias, inner, eps) -> (y, mean, invstd)
        x (N, G, M): rows (n, g) of C/G channel planes of `inner` elements; mean, invstd (N, G)
    group_norm_backward(dout, x, weight, mean, invstd, inner) -> (dx, dweight, dbias)
    svm_loss(x, labels) -> (loss, dx)            x (N, K) with N >= 1, int64 labels

FASTCONV_BACKEND selects the backend at import. When the extension cannot be imported,
fastconv still works on the reference backend and warns once.
"""

import contextlib
import importlib
import os
import threading
import warnings

from fastconv import _threads

BACKENDS = ("cython", "reference")

_modules = {"reference": importlib.import_module("fastconv.reference._vectorised")}
extension_error = None  # why the compiled backend is missing, when it is
try:
    with _threads.openmp_spin_policy():
        _modules["cython"] = importlib.import_module("fastconv._cython_backend")
except ImportError as exc:
    extension_error = exc
    warnings.warn(
        f"fastconv: the compiled extension could not be imported ({exc}); using the slower "
        "pure-NumPy 'reference' backend. Reinstall fastconv to get the compiled kernels.",
        RuntimeWarning,
        stacklevel=2,
    )

_lock = threading.Lock()
_active = "cython" if "cython" in _modules else "reference"


def _check_name(name):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    if name not in _modules:
        raise ValueError(
            f"backend {name!r} is not available: the compiled extension failed to import "
            f"({extension_error})"
        )
    return name


def get_backend():
    """Name of the active backend: "cython" or "reference"."""
    return _active


def set_backend(name):
    """Make `name` ("cython" or "reference") the active backend for every later call."""
    global _active
    with _lock:
        _active = _check_name(name)


@contextlib.contextmanager
def use_backend(name):
    """Context manager that switches the backend and restores the previous one on exit.

    The backend is process-wide state: other threads see the switch while the block runs.
    """
    global _active
    with _lock:
        previous, _active = _active, _check_name(name)
    try:
        yield name
    finally:
        with _lock:
            _active = previous


def kernels(name=None):
    """The kernel module of the active backend (or of `name`)."""
    return _modules[name or _active]


_env_backend = os.environ.get("FASTCONV_BACKEND", "").strip().lower()
if _env_backend:
    try:
        set_backend(_env_backend)
    except ValueError as exc:
        warnings.warn(f"fastconv: ignoring FASTCONV_BACKEND={_env_backend!r}: {exc}", RuntimeWarning, stacklevel=2)
