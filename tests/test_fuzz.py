"""Fuzzing: no argument, however malformed, crashes, hangs or returns garbage.

Every case runs in a worker process (tools/fuzz.py's Runner), so a segfault or an abort inside
a kernel is caught and reported as a failure instead of killing pytest, and a case that takes
too long is reported as a hang. A case passes when the call returns (and its results are new
C-contiguous arrays of the documented dtype, equal to the reference backend's, with inputs left
untouched, see tools/fuzz.py run_case) or raises ValueError/TypeError; a call whose arguments
stayed valid must return.

The long run is `python tools/fuzz.py --seconds 600`; here hypothesis drives the same generator
for a moderate number of examples per function.
"""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import AVAILABLE_BACKENDS

_FUZZ_PATH = pathlib.Path(__file__).resolve().parents[1] / "tools" / "fuzz.py"
_spec = importlib.util.spec_from_file_location("fastconv_fuzz_tool", _FUZZ_PATH)
fuzz = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fuzz  # cases pickled for the worker refer to its classes by name
_spec.loader.exec_module(fuzz)

# Seconds a case may take before it counts as a hang (the first case of a fresh worker also
# pays for importing NumPy and fastconv in it).
CASE_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def runner():
    with fuzz.Runner(timeout=CASE_TIMEOUT) as r:
        yield r


def assert_passes(runner, case):
    status, detail = runner.run(case)
    assert status in ("ok", "clean"), f"{status}: {fuzz.describe(case)}\n{detail}"
    return status, detail


# ----------------------------------------------------------------------------------------------
# The harness itself can fail
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, expected", [("crash", "crash"), ("abort", "crash"), ("exit", "crash")])
def test_harness_reports_a_dying_worker(runner, kind, expected):
    status, detail = runner.run(kind)
    assert status == expected, detail
    # ...and the next case runs in a fresh worker.
    assert runner.run("noop")[0] == "ok"


def test_harness_reports_a_hang(runner):
    status, _ = runner.run("hang", timeout=3)
    assert status == "hang"
    assert runner.run("noop")[0] == "ok"


def test_harness_detects_a_wrong_result(monkeypatch):
    """run_case compares the compiled result with the reference's: break one and see."""
    if "cython" not in AVAILABLE_BACKENDS:
        pytest.skip("needs the compiled backend")
    import fastconv
    from fastconv import _backend

    case = fuzz.Case("avg_pool2d", "cython", {"x": np.arange(16.0).reshape(1, 1, 4, 4),
                                               "kernel_size": 2, "stride": None, "padding": 0},
                     True, 1)
    assert fuzz.run_case(case) == ("ok", "")
    real = _backend._modules["cython"].avg_pool2d
    monkeypatch.setattr(_backend._modules["cython"], "avg_pool2d",
                        lambda *a: real(*a) + np.float64(1e-3))
    status, detail = fuzz.run_case(case)
    assert status == "wrong" and "differs" in detail
    assert fastconv.get_backend() in AVAILABLE_BACKENDS


def test_harness_checks_running_statistics_updated_in_place(monkeypatch):
    """batch_norm's running statistics may change (in training only) and must change as the
    reference's do: a wrong variance is caught through them, and an update in evaluation is
    an input modified."""
    if "cython" not in AVAILABLE_BACKENDS:
        pytest.skip("needs the compiled backend")
    from fastconv import _backend

    x = np.arange(24.0).reshape(4, 3, 2) ** 1.5
    args = {"x": x, "running_mean": np.zeros(3), "running_var": np.ones(3), "training": True}
    case = fuzz.Case("batch_norm", "cython", args, True, 1)
    assert fuzz.run_case(case) == ("ok", "")
    kernels = _backend._modules["cython"]
    real = kernels.batch_norm_statistics
    monkeypatch.setattr(kernels, "batch_norm_statistics", lambda x: (real(x)[0], real(x)[1] * 1.001))
    status, detail = fuzz.run_case(fuzz.Case("batch_norm", "cython", dict(args), True, 1))
    assert status == "wrong" and "differs" in detail
    monkeypatch.setattr(kernels, "batch_norm_statistics", real)
    evaluation = dict(args, training=False)
    real_forward = kernels.batch_norm_forward

    def forward_that_writes(x3, weight, bias, mean, invstd):
        evaluation["running_mean"][0] += 1  # an evaluation must not touch its statistics
        return real_forward(x3, weight, bias, mean, invstd)

    monkeypatch.setattr(kernels, "batch_norm_forward", forward_that_writes)
    status, detail = fuzz.run_case(fuzz.Case("batch_norm", "cython", evaluation, True, 1))
    assert status == "wrong" and "running_mean was modified" in detail


# ----------------------------------------------------------------------------------------------
# Random malformed and near-valid calls
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", fuzz.FUNCTIONS)
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz(runner, name, data):
    case = fuzz.generate_case(fuzz.HypothesisSource(data), (name,), tuple(AVAILABLE_BACKENDS))
    assert_passes(runner, case)


# ----------------------------------------------------------------------------------------------
# Systematic sweeps: every dtype for every array argument, every odd hyper-parameter
# ----------------------------------------------------------------------------------------------

def _valid_args(name):
    """A small valid call of `name` (keyword arguments), built by hand."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 5, 5))
    nd = 1 if "1d" in name else 2
    sl = (slice(None),) * 2 + (0,) * (2 - nd)   # 1-D: the first row of each plane
    if name in ("conv2d", "conv1d"):
        return {"x": x[sl], "w": rng.standard_normal((4, 1, 3, 3))[sl], "b": rng.standard_normal(4),
                "stride": 1, "padding": 1, "dilation": 1, "groups": 2}
    if name in ("conv2d_backward", "conv1d_backward"):
        return {"dout": rng.standard_normal((2, 4, 5, 5))[sl], "x": x[sl],
                "w": rng.standard_normal((4, 1, 3, 3))[sl], "stride": 1, "padding": 1, "dilation": 1,
                "groups": 2}
    transposed = {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2, "dilation": 1}
    if name in ("conv_transpose2d", "conv_transpose1d"):      # output (2, 4, 10, 10)
        return {"x": x[sl], "w": rng.standard_normal((2, 2, 3, 3))[sl], "b": rng.standard_normal(4),
                **transposed}
    if name in ("conv_transpose2d_backward", "conv_transpose1d_backward"):
        return {"dout": rng.standard_normal((2, 4, 10, 10))[sl], "x": x[sl],
                "w": rng.standard_normal((2, 2, 3, 3))[sl], **transposed}
    if name == "im2col":
        return {"x": x, "kernel_size": 3, "stride": 1, "padding": 1, "dilation": 1}
    if name == "col2im":
        return {"cols": rng.standard_normal((2, 18, 25)), "input_shape": (2, 2, 5, 5),
                "kernel_size": 3, "stride": 1, "padding": 1, "dilation": 1}
    if name == "max_pool2d":
        return {"x": x, "kernel_size": 3, "stride": 2, "padding": 1, "dilation": 1, "ceil_mode": True}
    if name == "avg_pool2d":
        return {"x": x, "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                "count_include_pad": False, "divisor_override": 4}
    if name == "max_pool2d_backward":
        return {"dout": rng.standard_normal((2, 2, 3, 3)),
                "indices": rng.integers(0, 25, (2, 2, 3, 3)), "input_shape": (2, 2, 5, 5)}
    # The layer functions: evaluation reads (does not update) the running statistics, and
    # probabilities (not labels) are the target, so that every real dtype is accepted.
    if name == "batch_norm":
        return {"x": x, "weight": rng.standard_normal(2), "bias": rng.standard_normal(2),
                "running_mean": rng.standard_normal(2), "running_var": 1 + rng.random(2),
                "training": False, "momentum": 0.1, "eps": 1e-5, "data_format": "NCHW"}
    if name == "batch_norm_backward":
        return {"dout": rng.standard_normal(x.shape), "x": x, "weight": rng.standard_normal(2),
                "mean": rng.standard_normal(2), "invstd": 1 + rng.random(2), "training": True,
                "data_format": "NCHW"}
    if name == "relu":
        return {"x": x}
    if name == "relu_backward":
        return {"dout": rng.standard_normal(x.shape), "y": x}
    if name == "softmax_cross_entropy":
        return {"logits": x[:, :, 0, 0], "target": rng.random((2, 2))}
    if name == "avg_pool2d_backward":
        return {"dout": rng.standard_normal((2, 2, 3, 3)), "input_shape": (2, 2, 5, 5),
                "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": False, "count_include_pad": True,
                "divisor_override": None}
    if name == "max_pool1d":
        return {"x": x[:, :, 0], "kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2, "ceil_mode": True}
    if name == "avg_pool1d":
        return {"x": x[:, :, 0], "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                "count_include_pad": False}
    if name == "max_pool1d_backward":
        return {"dout": rng.standard_normal((2, 2, 3)), "indices": rng.integers(0, 5, (2, 2, 3)),
                "input_shape": (2, 2, 5)}
    if name == "avg_pool1d_backward":
        return {"dout": rng.standard_normal((2, 2, 3)), "input_shape": (2, 2, 5), "kernel_size": 3,
                "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}
    if name == "adaptive_avg_pool2d":
        return {"x": x, "output_size": (3, 7)}
    assert name == "adaptive_avg_pool2d_backward", name
    return {"dout": rng.standard_normal((2, 2, 3, 7)), "input_shape": (2, 2, 5, 5)}


def _cases_every_dtype():
    for name in fuzz.FUNCTIONS:
        for key in [k for k in _valid_args(name) if k in fuzz.ARRAY_ARGS]:
            for dtype in fuzz.DTYPES:
                yield name, key, dtype


@pytest.mark.parametrize("where", AVAILABLE_BACKENDS)
def test_every_dtype_of_every_array_argument(runner, where):
    """Real float, integer and bool data is accepted (indices: integers only); complex, object,
    string, bytes, datetime, timedelta, void and structured data raise TypeError."""
    for name, key, dtype in _cases_every_dtype():
        args = _valid_args(name)
        args[key] = fuzz.convert_dtype(None, args[key], dtype)
        if key == "indices":
            accepted = dtype.kind in "iu"
        else:
            accepted = dtype.kind in "fiub"
        case = fuzz.Case(name, where, args, accepted, 2)
        status, detail = assert_passes(runner, case)
        if not accepted:
            assert detail.startswith("TypeError") and key in detail, (fuzz.describe(case), detail)


ODD_HYPERPARAMETERS = fuzz.WEIRD_INTS + fuzz.WEIRD_OTHERS


@pytest.mark.parametrize("where", AVAILABLE_BACKENDS)
def test_every_odd_hyperparameter(runner, where):
    """Each odd value in place of each hyper-parameter and pooling option (and of input_shape
    and of one of its entries): a result or a ValueError/TypeError, never anything else."""
    count = 0
    for name in fuzz.FUNCTIONS:
        keys = [k for k in _valid_args(name) if k in fuzz.HYPER_ARGS + fuzz.OPTION_ARGS + fuzz.SCALAR_ARGS or k == "input_shape"]
        for key in keys:
            for value in ODD_HYPERPARAMETERS:
                for form in ("whole", "one entry"):
                    args = _valid_args(name)
                    if form == "whole":
                        args[key] = value
                    elif key == "input_shape":
                        shape = list(args[key])
                        shape[count % len(shape)] = value
                        args[key] = tuple(shape)
                    else:
                        args[key] = (1, value)
                    assert_passes(runner, fuzz.Case(name, where, args, False, 1 + count % 3))
                    count += 1
    assert count > 1500


@pytest.mark.parametrize("where", AVAILABLE_BACKENDS)
def test_bad_pooling_indices(runner, where):
    """Indices outside [0, H*W), negative, huge unsigned, float, bool, object or mis-shaped are
    refused before the scatter, so the kernel never writes out of bounds."""
    base = _valid_args("max_pool2d_backward")
    bad = []
    for value in (25, 26, 2**31, 2**32, 2**62, -1, -(2**31), -(2**63)):
        idx = base["indices"].copy()
        idx[1, 1, 2, 2] = value
        bad.append(idx)
    big = base["indices"].astype(np.uint64)
    big[0, 0, 0, 0] = np.uint64(2**64 - 1)
    bad += [big, base["indices"].astype(np.float64), base["indices"] > 3,
            base["indices"].astype(object), base["indices"][..., :2], base["indices"][None],
            base["indices"][0], base["indices"].astype(np.float16), "0"]
    for idx in bad:
        args = dict(base, indices=idx)
        status, detail = assert_passes(runner, fuzz.Case("max_pool2d_backward", where, args, False, 2))
        assert status == "clean", (fuzz.describe(fuzz.Case("max_pool2d_backward", where, args, False, 2)), detail)
        assert "indices" in detail
    # In range with every integer dtype that holds the values: accepted.
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64):
        args = dict(base, indices=base["indices"].astype(dtype))
        assert assert_passes(runner, fuzz.Case("max_pool2d_backward", where, args, True, 2))[0] == "ok"
