"""The compiled convolution and im2col/col2im kernels against fastconv.reference and PyTorch.

* forward, dx, dw, db agree with the NumPy reference (same dtype) and with PyTorch autograd
  computed in float64, on hypothesis-drawn shapes and hyper-parameters;
* im2col / col2im agree with torch unfold / fold;
* results are bitwise identical for 1, 2 and 3 threads and when many Python threads call at
  once, on shapes chosen to reach every way the kernels split their work (batch chunks, column
  blocks, channel blocks, the 1x1 shortcut, the serial path);
* cached workspaces never carry results from one call into the next.
Skipped when the compiled extension is not built.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

_conv = pytest.importorskip("fastconv._ext._conv", reason="compiled extension not built")
_im2col = pytest.importorskip("fastconv._ext._im2col", reason="compiled extension not built")
from helpers import optional_torch
torch = optional_torch()  # torch comparisons skip without torch; the rest runs
TF = torch.nn.functional

DTYPES = (np.float32, np.float64)
# Relative to the largest magnitude of the expected array.
TOL = {np.float32: 1e-4, np.float64: 1e-10}


def assert_close(actual, expected, dtype, what):
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    assert err <= TOL[dtype] * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


@st.composite
def conv2d_cases(draw, max_batch=10, max_size=24):
    """Shapes and (h, w) hyper-parameters of a valid conv2d: non-square kernels, strides,
    paddings, dilations, batches of 1 up to beyond the batch-parallel threshold (8)."""
    n = draw(st.integers(1, max_batch))
    c = draw(st.integers(1, 5))
    f = draw(st.integers(1, 6))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    sizes = []
    for k, p, d in zip(kernel, padding, dilation):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)
        sizes.append(draw(st.integers(smallest, max(smallest, max_size))))
    return (n, c, *sizes), (f, c, *kernel), stride, padding, dilation


def torch_conv2d_grads(x, w, b, dout, stride, padding, dilation):
    """y, dx, dw, db from PyTorch autograd in float64 (an independent oracle)."""
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    ty = TF.conv2d(tx, tw, tb, stride, padding, dilation)
    ty.backward(torch.tensor(dout, dtype=torch.float64))
    return ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def random_case(rng, x_shape, w_shape, dtype, out_shape=None):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b


@settings(max_examples=40, deadline=None)
@given(case=conv2d_cases(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_conv2d_forward_backward_match_reference_and_torch(case, dtype, seed):
    x_shape, w_shape, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x, w, b = random_case(rng, x_shape, w_shape, dtype)
    y = fastconv.conv2d(x, w, b, stride, padding, dilation, backend="cython")
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, stride, padding, dilation, backend="cython")

    ty, tdx, tdw, tdb = torch_conv2d_grads(x, w, b, dout, stride, padding, dilation)
    for name, got, want in (("y", y, ty), ("dx", dx, tdx), ("dw", dw, tdw), ("db", db, tdb)):
        assert_close(got, want, dtype, f"{name} vs torch")

    ry = reference.conv2d(x, w, b, stride, padding, dilation)
    rdx, rdw, rdb = reference.conv2d_backward(dout, x, w, stride, padding, dilation)
    for name, got, want in (("y", y, ry), ("dx", dx, rdx), ("dw", dw, rdw), ("db", db, rdb)):
        assert_close(got, want, dtype, f"{name} vs reference")
    # Without bias the output is exactly the biased one minus nothing: check it separately.
    y0 = fastconv.conv2d(x, w, None, stride, padding, dilation, backend="cython")
    assert_close(y0, ty - b.astype(np.float64)[None, :, None, None], dtype, "y without bias")


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 10), c=st.integers(1, 4), f=st.integers(1, 5), k=st.integers(1, 6),
    stride=st.integers(1, 3), padding=st.integers(0, 3), dilation=st.integers(1, 3),
    extra=st.integers(0, 60), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
)
def test_conv1d_matches_torch(n, c, f, k, stride, padding, dilation, extra, dtype, seed):
    length = max(1, dilation * (k - 1) + 1 - 2 * padding) + extra
    rng = np.random.default_rng(seed)
    x, w, b = random_case(rng, (n, c, length), (f, c, k), dtype)
    y = fastconv.conv1d(x, w, b, stride, padding, dilation, backend="cython")
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = fastconv.conv1d_backward(dout, x, w, stride, padding, dilation, backend="cython")
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    ty = TF.conv1d(tx, tw, tb, stride, padding, dilation)
    ty.backward(torch.tensor(dout, dtype=torch.float64))
    assert_close(y, ty.detach().numpy(), dtype, "y")
    assert_close(dx, tx.grad.numpy(), dtype, "dx")
    assert_close(dw, tw.grad.numpy(), dtype, "dw")
    assert_close(db, tb.grad.numpy(), dtype, "db")


@settings(max_examples=40, deadline=None)
@given(case=conv2d_cases(max_batch=4), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_im2col_col2im_match_torch_unfold_fold(case, dtype, seed):
    x_shape, w_shape, stride, padding, dilation = case
    kernel = w_shape[2:]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    cols = fastconv.im2col(x, kernel, stride, padding, dilation, backend="cython")
    expected = TF.unfold(torch.from_numpy(x), kernel, dilation, padding, stride).numpy()
    # im2col only copies: it must be exact.
    assert cols.dtype == x.dtype
    np.testing.assert_array_equal(cols, expected)

    cols = rng.standard_normal(cols.shape).astype(dtype)
    back = fastconv.col2im(cols, x_shape, kernel, stride, padding, dilation, backend="cython")
    expected = TF.fold(torch.from_numpy(cols.astype(np.float64)), x_shape[2:], kernel, dilation,
                       padding, stride).numpy()
    assert_close(back, expected, dtype, "col2im vs fold")
    assert_close(back, reference.col2im(cols, x_shape, kernel, stride, padding, dilation), dtype,
                 "col2im vs reference")


# Shapes that reach each way the kernels split their work (batch chunks, column blocks made
# for small batches or to fit the cache, channel blocks, the 1x1 shortcut), all but the last
# large enough to run in parallel: (x_shape, w_shape, stride, padding, dilation).
SPLIT_CASES = [
    pytest.param((1, 3, 60, 57), (8, 3, 3, 2), (1, 1), (1, 0), (1, 1), id="N1-column-blocks"),
    pytest.param((3, 7, 30, 30), (6, 7, 3, 3), (2, 1), (1, 2), (1, 2), id="N3-channel-blocks"),
    pytest.param((2, 16, 32, 32), (8, 16, 1, 1), (1, 1), (0, 0), (1, 1), id="N2-pointwise"),
    pytest.param((11, 4, 17, 19), (6, 4, 3, 5), (1, 2), (2, 1), (2, 1), id="N11-batch-chunks"),
    pytest.param((9, 16, 14, 14), (8, 16, 1, 1), (1, 1), (0, 0), (2, 2), id="N9-pointwise"),
    pytest.param((20, 3, 12, 12), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), id="N20"),
    pytest.param((8, 64, 20, 20), (4, 64, 3, 3), (1, 1), (1, 1), (1, 1), id="N8-cache-blocks"),
    pytest.param((2, 64, 24, 23), (4, 64, 3, 3), (1, 1), (1, 1), (1, 1), id="N2-cache-blocks"),
    pytest.param((1, 1, 5, 5), (1, 1, 3, 3), (1, 1), (0, 0), (1, 1), id="tiny-serial"),
]


def run_all(x, w, b, dout, stride, padding, dilation):
    y = fastconv.conv2d(x, w, b, stride, padding, dilation, backend="cython")
    grads = fastconv.conv2d_backward(dout, x, w, stride, padding, dilation, backend="cython")
    return (y,) + tuple(grads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", SPLIT_CASES)
def test_bitwise_identical_for_any_thread_count(x_shape, w_shape, stride, padding, dilation, dtype):
    rng = np.random.default_rng(7)
    x, w, b = random_case(rng, x_shape, w_shape, dtype)
    y = reference.conv2d(x, w, b, stride, padding, dilation)
    dout = rng.standard_normal(y.shape).astype(dtype)
    results = {}
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        results[threads] = run_all(x, w, b, dout, stride, padding, dilation)
    for threads in (2, 3):
        for name, a, r in zip(("y", "dx", "dw", "db"), results[1], results[threads]):
            assert np.array_equal(a, r), f"{name} differs between 1 and {threads} threads"
    # And they are right, not merely reproducible.
    expected = (y,) + tuple(reference.conv2d_backward(dout, x, w, stride, padding, dilation))
    for name, a, e in zip(("y", "dx", "dw", "db"), results[1], expected):
        assert_close(a, e, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_col2im_bitwise_identical_for_any_thread_count(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 30, 31)).astype(dtype)
    args = ((3, 2), (2, 1), (1, 2), (1, 2))
    runs = []
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        cols = fastconv.im2col(x, *args, backend="cython")
        runs.append((cols, fastconv.col2im(cols, x.shape, *args, backend="cython")))
    for cols, back in runs[1:]:
        assert np.array_equal(cols, runs[0][0])
        assert np.array_equal(back, runs[0][1])


def test_many_python_threads_at_once_match_serial():
    """Concurrent calls (the kernels release the GIL) each get their own workspace."""
    rng = np.random.default_rng(11)
    jobs = []
    for i, param in enumerate(SPLIT_CASES * 2):
        x_shape, w_shape, stride, padding, dilation = param.values
        dtype = DTYPES[i % 2]
        x, w, b = random_case(rng, x_shape, w_shape, dtype)
        dout = rng.standard_normal(reference.conv2d(x, w, b, stride, padding, dilation).shape)
        jobs.append((x, w, b, dout.astype(dtype), stride, padding, dilation))
    fastconv.set_num_threads(2)
    serial = [run_all(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            concurrent = list(pool.map(lambda job: run_all(*job), jobs * 2))
            for got, want in zip(concurrent, serial * 2):
                for a, e in zip(got, want):
                    assert np.array_equal(a, e)


@pytest.mark.parametrize("dtype", DTYPES)
def test_workspace_reuse_does_not_leak_between_calls(dtype):
    """A large call poisons the cached buffers with NaN; later smaller calls of other shapes
    (including every split mode) must not see any of it."""
    rng = np.random.default_rng(5)
    big_x = np.full((9, 6, 30, 30), np.nan, dtype=dtype)
    big_w = np.full((7, 6, 5, 5), np.nan, dtype=dtype)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        y = fastconv.conv2d(big_x, big_w, None, 1, 2, backend="cython")
        fastconv.conv2d_backward(y, big_x, big_w, 1, 2, backend="cython")
        for param in SPLIT_CASES:
            x_shape, w_shape, stride, padding, dilation = param.values
            x, w, b = random_case(rng, x_shape, w_shape, dtype)
            dout = rng.standard_normal(reference.conv2d(x, w, b, stride, padding, dilation).shape)
            dout = dout.astype(dtype)
            got = run_all(x, w, b, dout, stride, padding, dilation)
            want = (reference.conv2d(x, w, b, stride, padding, dilation),) + tuple(
                reference.conv2d_backward(dout, x, w, stride, padding, dilation)
            )
            for name, a, e in zip(("y", "dx", "dw", "db"), got, want):
                assert np.isfinite(a).all(), f"{name}: NaN leaked from an earlier call"
                assert_close(a, e, dtype, name)


def test_blas_thread_count_is_restored():
    """fastconv keeps BLAS single-threaded only while its own calls run."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS)

    def blas_threads():
        return sorted((i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()
                      if i["user_api"] == "blas")

    before = blas_threads()
    x = np.ones((4, 3, 20, 20))
    w = np.ones((5, 3, 3, 3))
    y = fastconv.conv2d(x, w, backend="cython")
    fastconv.conv2d_backward(y, x, w, backend="cython")
    assert blas_threads() == before


def test_outputs_are_new_arrays_and_inputs_untouched():
    rng = np.random.default_rng(2)
    x, w, b = random_case(rng, (2, 3, 9, 9), (4, 3, 3, 3), np.float64)
    copies = [a.copy() for a in (x, w, b)]
    y1 = fastconv.conv2d(x, w, b, 1, 1, backend="cython")
    y2 = fastconv.conv2d(x, w, b, 1, 1, backend="cython")
    assert y1 is not y2 and not np.shares_memory(y1, y2)
    dx, dw, db = fastconv.conv2d_backward(y1, x, w, 1, 1, backend="cython")
    for a, c in zip((x, w, b), copies):
        assert np.array_equal(a, c)
    for a in (y1, dx, dw, db):
        assert a.flags.c_contiguous and a.flags.writeable
        assert not any(np.shares_memory(a, i) for i in (x, w, b))
