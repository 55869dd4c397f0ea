"""Shared fixtures and hypothesis strategies for the fastconv test suite.

* ``backend``: every public-API test runs once per available backend ("reference" always,
  "cython" once the compiled extension imports), through the ``backend=`` keyword.
* ``kernel_module``: the same, but the raw kernel modules (for tests below the public API).
* ``conv_configs`` / ``pool_configs``: hypothesis strategies for valid hyper-parameters and
  shapes, including batch 0, non-square kernels, strides, paddings and dilations, and
  hyper-parameters written as ints, tuples and lists; ``pool_option_configs`` adds pooling's
  dilation, ceil_mode, count_include_pad and divisor_override (1-D and 2-D).

Hypothesis runs derandomised (the same examples on every run) with a moderate example count;
set HYPOTHESIS_PROFILE=thorough for a longer randomised run. FASTCONV_TEST_BACKENDS=reference
restricts the backend parametrisation.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _backend

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

AVAILABLE_BACKENDS = [b for b in ("cython", "reference") if b in _backend._modules]
# FASTCONV_TEST_BACKENDS=reference (comma-separated) restricts the parametrisation, e.g. while
# the compiled backend is being rebuilt.
if os.environ.get("FASTCONV_TEST_BACKENDS"):
    _wanted = [b.strip() for b in os.environ["FASTCONV_TEST_BACKENDS"].split(",")]
    AVAILABLE_BACKENDS = [b for b in AVAILABLE_BACKENDS if b in _wanted]


@pytest.fixture(params=AVAILABLE_BACKENDS)
def backend(request):
    """Name of a backend that is available in this installation."""
    return request.param


@pytest.fixture(params=AVAILABLE_BACKENDS)
def active_backend(request):
    """Each available backend in turn, made the active one for the test."""
    with fastconv.use_backend(request.param):
        yield request.param


@pytest.fixture(params=AVAILABLE_BACKENDS)
def kernel_module(request):
    """A backend's kernel module (the interface documented in fastconv._backend)."""
    return _backend._modules[request.param]


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Tests that switch the backend or thread count must not leak it into later tests."""
    backend, threads = fastconv.get_backend(), fastconv.get_num_threads()
    yield
    fastconv.set_backend(backend)
    fastconv.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Hyper-parameter strategies
# ----------------------------------------------------------------------------------------------

def as_spelling(draw, pair):
    """An (h, w) pair written as the user might: an int when both agree, a tuple or a list."""
    if pair[0] == pair[1] and draw(st.booleans()):
        return pair[0]
    return tuple(pair) if draw(st.booleans()) else list(pair)


def pair(value):
    """Normalise an int / tuple / list hyper-parameter to an (h, w) tuple."""
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return (value, value)


@st.composite
def conv_configs(draw, nd=2, max_batch=3, max_channels=3, max_kernel=3, max_extra=5):
    """A valid conv{nd}d configuration: a dict of shapes and raw hyper-parameters.

    Keys: x_shape, w_shape, stride, padding, dilation (as passed to fastconv/torch).
    """
    n = draw(st.integers(0, max_batch))
    c = draw(st.integers(1, max_channels))
    f = draw(st.integers(1, max_channels))
    kernel = [draw(st.integers(1, max_kernel)) for _ in range(nd)]
    stride = [draw(st.integers(1, 3)) for _ in range(nd)]
    padding = [draw(st.integers(0, 2)) for _ in range(nd)]
    dilation = [draw(st.integers(1, 2)) for _ in range(nd)]
    sizes = []
    for k, p, d in zip(kernel, padding, dilation):
        span = d * (k - 1) + 1
        smallest = max(1, span - 2 * p)  # the padded input must hold one dilated kernel
        sizes.append(draw(st.integers(smallest, smallest + max_extra)))
    if nd == 1:
        spell = lambda v: v[0] if draw(st.booleans()) else tuple(v)  # noqa: E731
    else:
        spell = lambda v: as_spelling(draw, v)  # noqa: E731
    return {
        "x_shape": (n, c, *sizes),
        "w_shape": (f, c, *kernel),
        "stride": spell(stride),
        "padding": spell(padding),
        "dilation": spell(dilation),
    }


@st.composite
def pool_configs(draw, max_batch=2, max_channels=3, max_kernel=4, max_extra=5):
    """A valid 2-D pooling configuration: x_shape, kernel_size, stride (None allowed), padding."""
    n = draw(st.integers(0, max_batch))
    c = draw(st.integers(1, max_channels))
    kernel = [draw(st.integers(1, max_kernel)) for _ in range(2)]
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    stride = None if draw(st.booleans()) else [draw(st.integers(1, 3)) for _ in range(2)]
    sizes = []
    for k, p in zip(kernel, padding):
        smallest = max(1, k - 2 * p)
        sizes.append(draw(st.integers(smallest, smallest + max_extra)))
    return {
        "x_shape": (n, c, *sizes),
        "kernel_size": as_spelling(draw, kernel),
        "stride": None if stride is None else as_spelling(draw, stride),
        "padding": as_spelling(draw, padding),
    }


def pool_axis_out(size, k, s, p, d, ceil_mode):
    """One axis of torch's pooling output size (aten's pooling_output_shape), written out here
    independently of fastconv: floor or ceil of (size + 2p - d(k-1) - 1) / s, plus 1; with
    ceil_mode a last window that would start in the right padding is dropped."""
    numerator = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = numerator // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def window_reads_input(size, k, s, p, d, out):
    """Whether every one of the `out` windows along an axis has a tap inside [0, size)."""
    return all(any(0 <= o * s - p + i * d < size for i in range(k)) for o in range(out))


@st.composite
def pool_option_configs(draw, kind="max", nd=2, max_batch=2, max_channels=3, max_kernel=4, max_extra=5):
    """A valid max (kind="max") or average ("avg") pooling configuration with torch's options.

    Keys: x_shape, kernel_size, stride (None allowed), padding, ceil_mode, and dilation (max)
    or count_include_pad (avg) and, for 2-D average pooling, divisor_override (None allowed).
    Sizes go down to the smallest input that still has one window (ceil_mode lets a window
    overhang the padding); max pooling windows always reach the input (torch returns -inf and
    an index outside the input otherwise, fastconv refuses).
    """
    n = draw(st.integers(0, max_batch))
    c = draw(st.integers(1, max_channels))
    ceil_mode = draw(st.booleans())
    kernel = [draw(st.integers(1, max_kernel)) for _ in range(nd)]
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    stride = [draw(st.integers(1, 3)) for _ in range(nd)]
    default_stride = draw(st.booleans())
    if default_stride:
        stride = list(kernel)
    dilation = [draw(st.integers(1, 3)) if kind == "max" else 1 for _ in range(nd)]
    sizes = []
    for k, s, p, d in zip(kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        smallest = max(1, span - 2 * p - (s - 1 if ceil_mode else 0))
        size = draw(st.integers(smallest, smallest + max_extra))
        out = pool_axis_out(size, k, s, p, d, ceil_mode)
        while not window_reads_input(size, k, s, p, d, out):  # only max pooling can get here
            size += 1
            out = pool_axis_out(size, k, s, p, d, ceil_mode)
        sizes.append(size)
    if nd == 1:
        spell = lambda v: v[0] if draw(st.booleans()) else tuple(v)  # noqa: E731
    else:
        spell = lambda v: as_spelling(draw, v)  # noqa: E731
    cfg = {
        "x_shape": (n, c, *sizes),
        "kernel_size": spell(kernel),
        "stride": None if default_stride else spell(stride),
        "padding": spell(padding),
        "ceil_mode": ceil_mode,
    }
    if kind == "max":
        cfg["dilation"] = spell(dilation)
    else:
        cfg["count_include_pad"] = draw(st.booleans())
        if nd == 2:
            cfg["divisor_override"] = draw(st.one_of(st.none(), st.integers(1, 20)))
    return cfg


def pool_option_out_shape(cfg):
    """Output shape of a pool_option_configs configuration (torch's formula, not fastconv's)."""
    n, c, *sizes = cfg["x_shape"]
    nd = len(sizes)
    norm = (lambda v: (v,) if isinstance(v, int) else tuple(v)) if nd == 1 else pair
    kernel = norm(cfg["kernel_size"])
    stride = kernel if cfg["stride"] is None else norm(cfg["stride"])
    dilation = norm(cfg.get("dilation", 1))
    out = [pool_axis_out(size, k, s, p, d, cfg["ceil_mode"])
           for size, k, s, p, d in zip(sizes, kernel, stride, norm(cfg["padding"]), dilation)]
    return (n, c, *out)


def pool_kernel_args(cfg):
    """A 2-D pool_option_configs configuration as the kernel interface of fastconv._backend
    takes it (after the input): (kernel, stride, padding, dilation, ceil_mode) for max pooling,
    (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override) for average."""
    kernel = pair(cfg["kernel_size"])
    stride = kernel if cfg["stride"] is None else pair(cfg["stride"])
    window = (kernel, stride, pair(cfg["padding"]))
    if "dilation" in cfg:
        return window + (pair(cfg["dilation"]), cfg["ceil_mode"])
    return window + (cfg["ceil_mode"], cfg["count_include_pad"], cfg.get("divisor_override"))


def conv_out_shape(cfg):
    """Output shape of a conv configuration from the formula of API.md (not from fastconv)."""
    n, _, *sizes = cfg["x_shape"]
    f, _, *kernel = cfg["w_shape"]
    nd = len(sizes)
    norm = (lambda v: (v,) if isinstance(v, int) else tuple(v)) if nd == 1 else pair
    out = [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(
            sizes, kernel, norm(cfg["stride"]), norm(cfg["padding"]), norm(cfg["dilation"])
        )
    ]
    return (n, f, *out)


def pool_out_shape(cfg):
    n, c, h, w = cfg["x_shape"]
    kernel = pair(cfg["kernel_size"])
    stride = kernel if cfg["stride"] is None else pair(cfg["stride"])
    padding = pair(cfg["padding"])
    out = [(size + 2 * p - k) // s + 1 for size, k, s, p in zip((h, w), kernel, stride, padding)]
    return (n, c, *out)


def tolerances(dtype):
    """(rtol, atol) for comparing against PyTorch in the given computation dtype."""
    return (1e-4, 1e-4) if np.dtype(dtype) == np.float32 else (1e-10, 1e-10)
