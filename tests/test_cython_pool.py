"""The compiled pooling kernels (fastconv._ext._max_pool and _avg_pool) against
fastconv.reference and PyTorch, with torch's default options (tests/test_pool_options.py
covers dilation, ceil_mode, count_include_pad, divisor_override, 1-D and adaptive pooling).

Max pooling must agree exactly (values, NaN positions and int64 indices, ties included);
average pooling to a tight tolerance. Results must be bitwise identical for any thread count
and when several Python threads call at once. Skipped when the extension is not built.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv.reference import _vectorised as ref

_max_pool = pytest.importorskip("fastconv._ext._max_pool", reason="compiled extension not built")
_avg_pool = pytest.importorskip("fastconv._ext._avg_pool", reason="compiled extension not built")
from helpers import optional_torch
torch = optional_torch()  # torch comparisons skip without torch; the rest runs
F = torch.nn.functional
MAX_DEFAULTS = ((1, 1), False)        # dilation, ceil_mode
AVG_DEFAULTS = (False, True, None)    # ceil_mode, count_include_pad, divisor_override

DTYPES = (np.float32, np.float64)
# Average pooling sums at most KH*KW terms in a different order than torch/reference may.
AVG_TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-13, atol=1e-13)}


@st.composite
def pool_configs(draw):
    """(x_shape, kernel, stride, padding): any valid pooling, biased towards the common ones."""
    common = draw(st.sampled_from([None, None, None, ((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))]))
    if common is None:
        kernel = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
        stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    else:
        kernel, stride, padding = common
    # Smallest input that still holds one window: k - 2p (at least 1).
    hw = tuple(draw(st.integers(max(1, k - 2 * p), 13)) for k, p in zip(kernel, padding))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) + hw
    return shape, kernel, stride, padding


def _tie_heavy(rng, shape, dtype, special):
    """Small integers (many ties) with optional NaN and -inf entries."""
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    if special:
        u = rng.random(shape)
        x[u < 0.06] = np.nan
        x[(u >= 0.06) & (u < 0.14)] = -np.inf
    return x


def _torch_max(x, kernel, stride, padding):
    y, idx = F.max_pool2d(torch.from_numpy(x), kernel, stride, padding, return_indices=True)
    return y.numpy(), idx.numpy()


@settings(max_examples=80, deadline=None)
@given(cfg=pool_configs(), dtype=st.sampled_from(DTYPES), special=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_max_pool_forward_matches_reference_and_torch(cfg, dtype, special, seed):
    shape, kernel, stride, padding = cfg
    x = _tie_heavy(np.random.default_rng(seed), shape, dtype, special)
    y, idx = _max_pool.max_pool2d(x, kernel, stride, padding, *MAX_DEFAULTS, 1)
    assert y.dtype == dtype and idx.dtype == np.int64 and y.flags.c_contiguous
    y_ref, idx_ref = ref.max_pool2d(x, kernel, stride, padding, *MAX_DEFAULTS)
    np.testing.assert_array_equal(y, y_ref)  # NaN positions must match too
    np.testing.assert_array_equal(idx, idx_ref)
    y_t, idx_t = _torch_max(x, kernel, stride, padding)
    np.testing.assert_array_equal(y, y_t)
    np.testing.assert_array_equal(idx, idx_t)


@settings(max_examples=80, deadline=None)
@given(cfg=pool_configs(), dtype=st.sampled_from(DTYPES), special=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_max_pool_backward_matches_reference_and_torch_autograd(cfg, dtype, special, seed):
    shape, kernel, stride, padding = cfg
    rng = np.random.default_rng(seed)
    x = _tie_heavy(rng, shape, dtype, special)
    _, idx = _max_pool.max_pool2d(x, kernel, stride, padding, *MAX_DEFAULTS, 1)
    dout = rng.standard_normal(idx.shape).astype(dtype)
    dx = _max_pool.max_pool2d_backward(dout, idx, shape, 1)
    assert dx.shape == shape and dx.dtype == dtype
    # Same scatter order as the reference (np.add.at walks dout in C order): exact.
    np.testing.assert_array_equal(dx, ref.max_pool2d_backward(dout, idx, shape))
    xt = torch.from_numpy(x).requires_grad_()
    F.max_pool2d(xt, kernel, stride, padding).backward(torch.from_numpy(dout))
    np.testing.assert_allclose(dx, xt.grad.numpy(), **AVG_TOL[dtype])


@settings(max_examples=80, deadline=None)
@given(cfg=pool_configs(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_avg_pool_forward_and_backward_match_reference_and_torch(cfg, dtype, seed):
    shape, kernel, stride, padding = cfg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y = _avg_pool.avg_pool2d(x, kernel, stride, padding, *AVG_DEFAULTS, 1)
    assert y.dtype == dtype and y.flags.c_contiguous
    np.testing.assert_allclose(y, ref.avg_pool2d(x, kernel, stride, padding, *AVG_DEFAULTS), **AVG_TOL[dtype])
    xt = torch.from_numpy(x).requires_grad_()
    y_t = F.avg_pool2d(xt, kernel, stride, padding, count_include_pad=True)
    np.testing.assert_allclose(y, y_t.detach().numpy(), **AVG_TOL[dtype])

    dout = rng.standard_normal(y.shape).astype(dtype)
    dx = _avg_pool.avg_pool2d_backward(dout, shape, kernel, stride, padding, *AVG_DEFAULTS, 1)
    assert dx.shape == shape and dx.dtype == dtype
    np.testing.assert_allclose(
        dx, ref.avg_pool2d_backward(dout, shape, kernel, stride, padding, *AVG_DEFAULTS), **AVG_TOL[dtype]
    )
    y_t.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(dx, xt.grad.numpy(), **AVG_TOL[dtype])


def test_avg_pool_propagates_nan_and_inf():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 2, 3] = np.inf
    y = _avg_pool.avg_pool2d(x, (2, 2), (2, 2), (0, 0), *AVG_DEFAULTS, 1)
    expected = np.array([[[[np.nan, 0.0], [0.0, np.inf]]]])
    np.testing.assert_array_equal(y, expected)


def test_max_pool_all_nan_and_all_neg_inf_windows():
    # An all -inf window picks its first real element (never the -inf padding), an all-NaN
    # window its last NaN (a NaN always takes over), as PyTorch does.
    x = np.full((1, 1, 3, 3), -np.inf, dtype=np.float32)
    x[0, 0, 2, :] = np.nan
    y, idx = _max_pool.max_pool2d(x, (3, 3), (1, 1), (1, 1), *MAX_DEFAULTS, 1)
    y_t, idx_t = _torch_max(x, (3, 3), (1, 1), (1, 1))
    np.testing.assert_array_equal(y, y_t)
    np.testing.assert_array_equal(idx, idx_t)
    assert idx[0, 0, 0, 0] == 0  # the first real element, not the padding before it


# Shapes above the kernels' serial threshold, so that several threads really run; odd sizes so
# that windows do not tile the input and rows do not split evenly between threads.
THREAD_CASES = [
    ((2, 16, 50, 47), (2, 2), (2, 2), (0, 0)),
    ((3, 11, 41, 39), (3, 3), (2, 2), (1, 1)),
    ((1, 2, 181, 173), (3, 2), (1, 2), (1, 0)),  # fewer planes than threads
    ((5, 7, 33, 35), (4, 3), (3, 2), (2, 1)),
]


def _run_all(x, dout_max, dout_avg, kernel, stride, padding, threads):
    y, idx = _max_pool.max_pool2d(x, kernel, stride, padding, *MAX_DEFAULTS, threads)
    return (
        y,
        idx,
        _max_pool.max_pool2d_backward(dout_max, idx, x.shape, threads),
        _avg_pool.avg_pool2d(x, kernel, stride, padding, *AVG_DEFAULTS, threads),
        _avg_pool.avg_pool2d_backward(dout_avg, x.shape, kernel, stride, padding, *AVG_DEFAULTS, threads),
    )


def _inputs(shape, kernel, stride, padding, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = _tie_heavy(rng, shape, dtype, special=True)
    y_ref, idx_ref = ref.max_pool2d(x, kernel, stride, padding, *MAX_DEFAULTS)
    dout = rng.standard_normal(y_ref.shape).astype(dtype)
    return x, y_ref, idx_ref, dout


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", THREAD_CASES)
def test_bitwise_identical_for_1_2_3_threads(case, dtype):
    shape, kernel, stride, padding = case
    x, y_ref, idx_ref, dout = _inputs(shape, kernel, stride, padding, dtype)
    xf = np.nan_to_num(x, nan=0.25, neginf=-5.0)  # finite data for the averages
    results = [_run_all(x, dout, dout, kernel, stride, padding, t) for t in (1, 2, 3)]
    # Against the reference too, so that agreeing threads cannot all be wrong.
    np.testing.assert_array_equal(results[0][0], y_ref)
    np.testing.assert_array_equal(results[0][1], idx_ref)
    np.testing.assert_array_equal(results[0][2], ref.max_pool2d_backward(dout, idx_ref, shape))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()
    avgs = [_avg_pool.avg_pool2d(xf, kernel, stride, padding, *AVG_DEFAULTS, t) for t in (1, 2, 3)]
    np.testing.assert_allclose(avgs[0], ref.avg_pool2d(xf, kernel, stride, padding, *AVG_DEFAULTS), **AVG_TOL[dtype])
    assert avgs[0].tobytes() == avgs[1].tobytes() == avgs[2].tobytes()


def test_several_python_threads_at_once():
    jobs = []
    for i, (shape, kernel, stride, padding) in enumerate(THREAD_CASES * 2):
        dtype = DTYPES[i % 2]
        x, _, _, dout = _inputs(shape, kernel, stride, padding, dtype, seed=i)
        jobs.append((x, dout, kernel, stride, padding))
    expected = [_run_all(x, d, d, k, s, p, 1) for x, d, k, s, p in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            futures = [pool.submit(_run_all, x, d, d, k, s, p, 2) for x, d, k, s, p in jobs]
            for fut, exp in zip(futures, expected):
                for a, b in zip(fut.result(), exp):
                    assert a.tobytes() == b.tobytes()


def test_inputs_are_not_modified_and_read_only_inputs_work():
    x, _, idx_ref, dout = _inputs((2, 3, 9, 8), (3, 3), (2, 2), (1, 1), np.float64)
    x.flags.writeable = False
    dout.flags.writeable = False
    idx_ref.flags.writeable = False
    before = (x.copy(), dout.copy(), idx_ref.copy())
    _run_all(x, dout, dout, (3, 3), (2, 2), (1, 1), 2)
    _max_pool.max_pool2d_backward(dout, idx_ref, x.shape, 2)
    for a, b in zip((x, dout, idx_ref), before):
        assert a.tobytes() == b.tobytes()


@pytest.mark.skipif(
    "cython" not in fastconv._backend._modules, reason="compiled backend not loaded (needs every extension module)"
)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_public_api_uses_compiled_pooling(threads):
    shape, kernel, stride, padding = THREAD_CASES[1]
    x, y_ref, idx_ref, dout = _inputs(shape, kernel, stride, padding, np.float32)
    old = fastconv.get_num_threads()
    fastconv.set_num_threads(threads)
    try:
        y, idx = fastconv.max_pool2d(x, kernel, stride, padding, backend="cython")
        dx = fastconv.max_pool2d_backward(dout, idx, shape, backend="cython")
        xf = np.nan_to_num(x, nan=0.0, neginf=-1.0)
        ya = fastconv.avg_pool2d(xf, kernel, stride, padding, backend="cython")
        dxa = fastconv.avg_pool2d_backward(dout, shape, kernel, stride, padding, backend="cython")
    finally:
        fastconv.set_num_threads(old)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(dx, ref.max_pool2d_backward(dout, idx_ref, shape))
    np.testing.assert_allclose(ya, ref.avg_pool2d(xf, kernel, stride, padding, *AVG_DEFAULTS), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(
        dxa, ref.avg_pool2d_backward(dout, shape, kernel, stride, padding, *AVG_DEFAULTS), rtol=2e-6, atol=2e-6
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_wider_than_the_output_row(dtype):
    # kernel 5, padding 2, W = 1: a single output whose window starts left of the plane; the
    # vector path must not write past the one-element output row (a bug the fuzzer found).
    x = np.arange(2 * 3 * 7 * 1, dtype=dtype).reshape(2, 3, 7, 1)[:, :, ::-1].copy()
    y, idx = _max_pool.max_pool2d(x, (5, 5), (1, 1), (2, 2), *MAX_DEFAULTS, 2)
    y_t, idx_t = _torch_max(x, (5, 5), (1, 1), (2, 2))
    np.testing.assert_array_equal(y, y_t)
    np.testing.assert_array_equal(idx, idx_t)
