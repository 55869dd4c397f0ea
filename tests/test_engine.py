"""The convolution engine (fastconv._ext._engine) on every instruction set this CPU runs.

* Every path (instruction set x {direct, im2col}) against PyTorch in float64 and against
  fastconv.reference, on hypothesis-drawn shapes: odd channel counts that fill no register tile,
  1x1 to 7x7 and non-square kernels, strides, paddings, dilations, planes of 1x1 to 64x64,
  batches of 1 to 130, both dtypes, forward and backward. The check is the error bound of
  docs/numerics.md, element by element: |got - exact| <= gamma_K * sum|terms|.
* Bitwise identical results at 1, 2 and 3 threads on shapes that reach every way the engine
  splits work (bands, stride phases, output-channel blocks, backward-weight chunks and filter
  groups), and for several Python threads calling at once.
* The plan: what it chooses, its workspace (at most 25% of the inputs + outputs on the
  benchmark's layers), FASTCONV_ISA / FASTCONV_CONV_ALGORITHM, show_config, the FMA probe.
* The existing kernel tests pass on every lower instruction set too (in a subprocess).
"""

import os
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _config, reference

_engine = pytest.importorskip("fastconv._ext._engine", reason="compiled extension not built")
_conv = pytest.importorskip("fastconv._ext._conv", reason="compiled extension not built")
torch = pytest.importorskip("torch")
TF = torch.nn.functional

ISAS = _engine.supported_isas()
DTYPES = (np.float32, np.float64)
UNIT_ROUNDOFF = {np.float32: 2.0**-24, np.float64: 2.0**-53}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=ISAS)
def isa(request):
    """Each instruction set this CPU runs, made the engine's for the test."""
    previous = _engine._set_isa(request.param)
    yield request.param
    _engine._set_isa(previous)


@pytest.fixture(params=["direct", "winograd", "im2col"])
def algorithm(request):
    """The engine's direct kernels forced wherever they can run, Winograd wherever it applies
    (3x3, stride 1, dilation 1; direct elsewhere), or im2col + BLAS everywhere."""
    previous = _engine.set_algorithm(request.param)
    yield request.param
    _engine.set_algorithm(previous)


@pytest.fixture
def direct():
    previous = _engine.set_algorithm("direct")
    yield
    _engine.set_algorithm(previous)


# ----------------------------------------------------------------------------------------------
# The error bound, against exact sums
# ----------------------------------------------------------------------------------------------

def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def exact_and_abs(x, w, b, dout, stride, padding, dilation):
    """(exact, sum|terms|) of y, dx, dw, db: float64 autograd on the (rounded) inputs, and the
    same on their absolute values."""
    results = []
    for sign in (lambda a: a, np.abs):
        tx, tw, tb = (t64(sign(a)).requires_grad_() for a in (x, w, b))
        y = TF.conv2d(tx, tw, tb, stride, padding, dilation)
        y.backward(t64(sign(dout)))
        results.append([y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()])
    return results


def assert_within_bound(name, got, exact, abs_sum, terms, dtype):
    """|got - exact| <= gamma_K * sum|terms| elementwise (plus the float64 oracle's own error)."""
    assert got.shape == exact.shape and got.dtype == np.dtype(dtype), (name, got.shape, got.dtype)
    u = UNIT_ROUNDOFF[dtype]
    gamma = terms * u / (1 - terms * u) + terms * 2.0**-53 / (1 - terms * 2.0**-53)
    err = np.abs(got.astype(np.float64) - exact)
    bound = gamma * abs_sum + 1e-300
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (
        f"{name}: error {err[worst]:.3g} above the bound {bound[worst]:.3g} at {worst} "
        f"(got {got[worst]!r}, exact {exact[worst]!r})")


# Winograd G, B^T, A^T of F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray), for the error bound.
WINOGRAD = {
    2: (np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),
        np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]])),
    4: (np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]])),
}
WINOGRAD_EXTRA_TERMS = _engine.WINOGRAD_EXTRA_TERMS


def winograd_abs_sum(x, w, padding, m):
    """|A^T| (sum_c |G||g||G^T| . |B^T||d||B|) |A| per output (docs/numerics.md): what the
    error of Winograd F(m x m, 3 x 3) is a multiple of, as sum|terms| is for a direct sum."""
    G, BT, AT = (np.abs(a.astype(np.float64)) for a in WINOGRAD[m])
    n, c, h, width = x.shape
    (ph, pw), alpha = pair(padding), m + 2
    oh, ow = h + 2 * ph - 2, width + 2 * pw - 2
    th, tw = -(-oh // m), -(-ow // m)
    xp = np.zeros((n, c, th * m + 2, tw * m + 2))
    xp[:, :, ph:ph + h, pw:pw + width] = np.abs(x)[:, :, :th * m + 2 - ph, :tw * m + 2 - pw]
    tiles = np.lib.stride_tricks.sliding_window_view(xp, (alpha, alpha), axis=(2, 3))[:, :, ::m, ::m]
    v = np.einsum("ai,nctuij,bj->nctuab", BT, tiles, BT)
    u = np.einsum("ai,fcij,bj->fcab", G, np.abs(w.astype(np.float64)), G)
    z = np.einsum("ia,nftuab,jb->nftuij", AT, np.einsum("nctuab,fcab->nftuab", v, u), AT)
    return z.transpose(0, 1, 2, 4, 3, 5).reshape(n, w.shape[0], th * m, tw * m)[:, :, :oh, :ow]


def winograd_tile(description):
    """m of "winograd F(mxm,3x3)/..." in an algorithm() description, else None."""
    return int(description.split("F(")[1][0]) if "winograd F(" in description else None


def check_against_exact(x, w, b, dout, stride, padding, dilation, dtype):
    y = fastconv.conv2d(x, w, b, stride, padding, dilation, backend="cython")
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, stride, padding, dilation, backend="cython")
    exact, abs_sum = exact_and_abs(x, w, b, dout, stride, padding, dilation)
    n, c, kh, kw = x.shape[0], x.shape[1], w.shape[2], w.shape[3]
    f, (oh, ow) = w.shape[0], y.shape[2:]
    terms = {"y": c * kh * kw + 1, "dx": f * kh * kw, "dw": n * oh * ow, "db": n * oh * ow}
    plan = _engine.algorithm(x.shape, w.shape, pair(stride), pair(padding), pair(dilation),
                             dtype, fastconv.get_num_threads())
    m = winograd_tile(plan["forward"])
    if m:
        abs_sum[0] = winograd_abs_sum(x, w, padding, m) + np.abs(b)[None, :, None, None]
        terms["y"] = c + WINOGRAD_EXTRA_TERMS + 1
    m = winograd_tile(plan["backward"])
    if m:
        flipped = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
        abs_sum[1] = winograd_abs_sum(dout, flipped, tuple(2 - p for p in pair(padding)), m)
        terms["dx"] = f + WINOGRAD_EXTRA_TERMS
    for name, got, e, a in zip(("y", "dx", "dw", "db"), (y, dx, dw, db), exact, abs_sum):
        assert_within_bound(name, got, e, a, terms[name], dtype)
    return y, dx, dw, db


@st.composite
def engine_cases(draw):
    """Shapes and (h, w) hyper-parameters of a valid conv2d that the engine plans for: channel
    counts off every vector width, kernels 1..7 (not always square), planes 1..64, batches up
    to 130 on small planes."""
    k = draw(st.sampled_from([1, 3, 3, 5, 7]))
    kernel = (k, k) if draw(st.booleans()) else (k, draw(st.sampled_from([1, 2, 3])))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    sizes = []
    for kk, p, d in zip(kernel, padding, dilation):
        smallest = max(1, d * (kk - 1) + 1 - 2 * p)
        sizes.append(draw(st.integers(smallest, max(smallest, draw(st.sampled_from([8, 20, 64]))))))
    c = draw(st.sampled_from([1, 3, 7, 16, 17, 33]))
    f = draw(st.sampled_from([1, 5, 16, 19, 40, 65]))
    budget = 60_000 // (c * sizes[0] * sizes[1])
    n = draw(st.integers(1, max(1, min(130, budget))))
    return (n, c, *sizes), (f, c, *kernel), stride, padding, dilation


@settings(max_examples=30, deadline=None)
@given(case=engine_cases(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_every_path_within_the_error_bound(isa, algorithm, case, dtype, seed):
    x_shape, w_shape, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    out_shape = reference.conv2d(x[:1], w, b, stride, padding, dilation).shape
    dout = rng.standard_normal((x_shape[0],) + out_shape[1:]).astype(dtype)
    y, dx, dw, db = check_against_exact(x, w, b, dout, stride, padding, dilation, dtype)
    # And the NumPy reference agrees within twice the bound (it rounds too): spot-check y, dw.
    ry = reference.conv2d(x, w, b, stride, padding, dilation)
    scale = np.abs(ry).max(initial=1.0)
    assert np.abs(y - ry).max(initial=0.0) <= 1e3 * UNIT_ROUNDOFF[dtype] * scale * w[0].size


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", [
    pytest.param((2, 3, 5, 5), (4, 3, 3, 3), (3, 3), (0, 0), (1, 1), id="stride-over-kernel"),
    pytest.param((1, 2, 6, 7), (3, 2, 1, 1), (4, 3), (0, 0), (1, 1), id="phases-without-taps"),
    pytest.param((2, 5, 4, 4), (6, 5, 3, 3), (1, 1), (5, 4), (1, 1), id="padding-over-kernel"),
    pytest.param((1, 4, 1, 1), (9, 4, 1, 1), (1, 1), (0, 0), (1, 1), id="1x1-plane"),
    pytest.param((1, 4, 1, 1), (9, 4, 3, 3), (1, 1), (1, 1), (1, 1), id="1x1-plane-padded"),
    pytest.param((3, 2, 9, 1), (5, 2, 3, 1), (2, 1), (1, 0), (3, 1), id="one-column"),
    pytest.param((2, 3, 17, 19), (7, 3, 7, 7), (2, 2), (3, 3), (1, 1), id="stem-like"),
    pytest.param((1, 2, 8, 8), (3, 2, 32, 1), (1, 1), (12, 0), (1, 1), id="kernel-32"),
    # Batches of 8+: the stride phases of dx share one window per image (one phase of the 1-D
    # case reads its source row whole, which alone would need no window at all).
    pytest.param((9, 3, 1, 13), (4, 3, 1, 2), (1, 2), (0, 0), (1, 1), id="shared-window-1d"),
    pytest.param((10, 5, 9, 8), (6, 5, 3, 3), (2, 2), (1, 1), (1, 1), id="shared-window-2d"),
    pytest.param((8, 4, 11, 10), (7, 4, 3, 2), (3, 2), (2, 0), (1, 2), id="shared-window-3x2"),
])
def test_edge_geometries(isa, direct, x_shape, w_shape, stride, padding, dilation, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    y = reference.conv2d(x, w, b, stride, padding, dilation)
    dout = rng.standard_normal(y.shape).astype(dtype)
    check_against_exact(x, w, b, dout, stride, padding, dilation, dtype)


def test_float32_error_bound_on_long_reductions(isa, direct):
    """K = 4609 (forward), 4608 (dx) and 65,536 (dw, db) terms: well inside gamma_K."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 512, 10, 10)).astype(np.float32)
    w = rng.standard_normal((64, 512, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    dout = rng.standard_normal((2, 64, 8, 8)).astype(np.float32)
    check_against_exact(x, w, b, dout, 1, 0, 1, np.float32)
    x = rng.standard_normal((64, 4, 34, 34)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((64, 4, 32, 32)).astype(np.float32)
    check_against_exact(x, w, np.zeros(4, np.float32), dout, 1, 0, 1, np.float32)


# ----------------------------------------------------------------------------------------------
# Bitwise identical for every thread count, and for concurrent callers
# ----------------------------------------------------------------------------------------------

# Shapes that reach each way the engine splits work: several bands per image (small batch),
# stride phases, partial output-channel blocks, backward-weight chunks and filter groups.
SPLIT_CASES = [
    pytest.param((1, 16, 40, 37), (70, 16, 3, 3), (1, 1), (1, 1), (1, 1), id="N1-bands"),
    pytest.param((3, 17, 21, 22), (33, 17, 3, 2), (2, 3), (1, 2), (1, 2), id="phases"),
    pytest.param((20, 16, 12, 12), (40, 16, 3, 3), (1, 1), (1, 1), (1, 1), id="chunks"),
    pytest.param((9, 32, 10, 10), (130, 32, 3, 3), (1, 1), (1, 1), (1, 1), id="filter-groups"),
    pytest.param((40, 8, 16, 16), (16, 8, 5, 5), (1, 1), (2, 2), (2, 2), id="dilated-chunks"),
    pytest.param((12, 3, 20, 20), (32, 3, 3, 3), (1, 1), (1, 1), (1, 1), id="dx-by-blas"),
    pytest.param((1, 24, 37, 30), (40, 24, 3, 3), (1, 1), (1, 1), (1, 1), id="winograd-bands"),
    pytest.param((30, 16, 8, 7), (33, 16, 3, 3), (1, 1), (2, 1), (1, 1), id="winograd-images"),
]


def run_all(x, w, b, dout, stride, padding, dilation):
    y = fastconv.conv2d(x, w, b, stride, padding, dilation, backend="cython")
    return (y,) + tuple(fastconv.conv2d_backward(dout, x, w, stride, padding, dilation,
                                                 backend="cython"))


def random_args(x_shape, w_shape, stride, padding, dilation, dtype, seed=7):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    y = reference.conv2d(x, w, b, stride, padding, dilation)
    return x, w, b, rng.standard_normal(y.shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", SPLIT_CASES)
def test_bitwise_identical_for_any_thread_count(isa, x_shape, w_shape, stride, padding,
                                                dilation, dtype):
    x, w, b, dout = random_args(x_shape, w_shape, stride, padding, dilation, dtype)
    plan = _engine.algorithm(x_shape, w_shape, stride, padding, dilation, dtype, 3)
    assert "im2col" not in plan["forward"] and plan["backward"].startswith("direct"), plan
    runs = {}
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        runs[threads] = run_all(x, w, b, dout, stride, padding, dilation)
    for threads in (2, 3):
        for name, one, many in zip(("y", "dx", "dw", "db"), runs[1], runs[threads]):
            assert np.array_equal(one, many), f"{name} differs between 1 and {threads} threads"
    expected = (reference.conv2d(x, w, b, stride, padding, dilation),) + tuple(
        reference.conv2d_backward(dout, x, w, stride, padding, dilation))
    for name, got, want in zip(("y", "dx", "dw", "db"), runs[1], expected):
        np.testing.assert_allclose(got, want, rtol=1e-3 if dtype == np.float32 else 1e-10,
                                   atol=1e-3 if dtype == np.float32 else 1e-10, err_msg=name)


def test_concurrent_callers_match_serial(isa):
    jobs = [random_args(*case.values, dtype=DTYPES[i % 2], seed=i) + case.values[2:]
            for i, case in enumerate(SPLIT_CASES * 2)]
    fastconv.set_num_threads(2)
    serial = [run_all(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(2):
            for got, want in zip(pool.map(lambda job: run_all(*job), jobs * 2), serial * 2):
                for a, e in zip(got, want):
                    assert np.array_equal(a, e)


def test_non_contiguous_inputs_give_the_contiguous_results(isa):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 9, 15, 30)).astype(np.float32)[:, :, :, ::2]
    w = np.asfortranarray(rng.standard_normal((20, 9, 3, 3)).astype(np.float32))
    b = rng.standard_normal(40).astype(np.float32)[::2]
    dout = rng.standard_normal((4, 20, 13, 13)).astype(np.float32).transpose(0, 1, 3, 2)
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or dout.flags.c_contiguous)
    got = run_all(x, w, b, dout, 1, 0, 1)
    want = run_all(*(np.ascontiguousarray(a) for a in (x, w, b, dout)), 1, 0, 1)
    for a, e in zip(got, want):
        assert np.array_equal(a, e)


def test_every_instruction_set_gives_the_same_bits_with_fma():
    """The x86 kernels add every term with one FMA in the same order: AVX2 and AVX-512 agree
    bit for bit (the portable kernels may differ in the last bit where a*b+c is not fused)."""
    fma_isas = [name for name in ISAS if name != "generic"]
    if len(fma_isas) < 2:
        pytest.skip("needs two FMA instruction sets")
    args = random_args((5, 17, 14, 15), (23, 17, 3, 3), 1, 1, 1, np.float32)
    results = []
    for name in fma_isas:
        previous = _engine._set_isa(name)
        try:
            results.append(run_all(*args, 1, 1, 1))
        finally:
            _engine._set_isa(previous)
    for other in results[1:]:
        for a, e in zip(results[0], other):
            assert np.array_equal(a, e)


# ----------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------

# BENCH.md's convolutions: (x_shape, w_shape, stride, padding); c7 is a conv1d as 2-D.
BENCH_CONVS = {
    "c1": ((50, 3, 32, 32), (32, 3, 3, 3), 1, 1),
    "c2": ((100, 3, 31, 31), (25, 3, 3, 3), 2, 1),
    "c3": ((32, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    "c4": ((8, 128, 28, 28), (256, 128, 3, 3), 1, 1),
    "c5": ((4, 3, 224, 224), (64, 3, 7, 7), 2, 3),
    "c6": ((16, 256, 28, 28), (128, 256, 1, 1), 1, 0),
    "c7": ((32, 64, 1, 1000), (64, 64, 1, 5), 1, (0, 2)),
    "c8": ((128, 32, 32, 32), (32, 32, 3, 3), 1, 1),
    "c9": ((128, 64, 16, 16), (64, 64, 3, 3), 1, 1),
    "c10": ((128, 128, 8, 8), (128, 128, 3, 3), 1, 1),
    "c11": ((128, 32, 32, 32), (64, 32, 3, 3), 2, 1),
}


def pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


@pytest.mark.parametrize("name", list(BENCH_CONVS))
@pytest.mark.parametrize("threads", [1, 2, 8])
def test_workspace_within_a_quarter_of_inputs_and_outputs(name, threads):
    """The engine's workspace (what plan_* ask for) on the benchmark's layers, both dtypes, at
    most a quarter of the inputs + outputs of forward + backward (BENCH.md's bound: x, w, b,
    dout, y, dx, dw, db)."""
    x_shape, w_shape, stride, padding = BENCH_CONVS[name]
    for dtype in DTYPES:
        item = np.dtype(dtype).itemsize
        plan = _engine.algorithm(x_shape, w_shape, pair(stride), pair(padding), (1, 1), dtype,
                                 threads)
        y_size = np.prod(reference.conv2d(np.zeros((1,) + x_shape[1:]), np.zeros(w_shape), None,
                                          stride, padding).shape) * x_shape[0]
        io = 2 * item * (np.prod(x_shape) + np.prod(w_shape) + w_shape[0] + y_size)
        assert plan["forward_workspace_bytes"] <= 0.25 * io, plan
        assert plan["backward_workspace_bytes"] <= 0.25 * io, plan


@pytest.mark.parametrize("name", ["c3", "c8", "c10", "c11", "c1"])
def test_measured_extra_memory_within_a_quarter(name):
    """Peak NumPy-visible allocation of forward + backward beyond inputs and outputs (the
    engine's workspace is a NumPy array; the BLAS path's too), in a fresh workspace pool."""
    x_shape, w_shape, stride, padding = BENCH_CONVS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    dout = fastconv.conv2d(x, w, b, stride, padding)
    inputs = x.nbytes + w.nbytes + b.nbytes + dout.nbytes
    _conv.release_workspaces()
    tracemalloc.start()
    try:
        y = fastconv.conv2d(x, w, b, stride, padding)
        grads = fastconv.conv2d_backward(dout, x, w, stride, padding)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    outputs = y.nbytes + sum(g.nbytes for g in grads)
    assert peak - outputs <= 0.25 * (inputs + outputs), (peak - outputs, inputs + outputs)


def test_plan_chooses_by_lane_use():
    """Forward and dW go to the engine when output channels fill the vectors; dx of a 3-channel
    input stays with im2col + BLAS + col2im; 2 filters: everything with BLAS."""
    previous = _engine.set_algorithm("auto")
    try:
        plan = _engine.algorithm((8, 3, 32, 32), (32, 3, 3, 3), (1, 1), (1, 1), (1, 1), "float32")
        assert plan["forward"].startswith("direct/")
        assert plan["backward"].startswith("direct/") and "dx by im2col" in plan["backward"]
        plan = _engine.algorithm((8, 16, 32, 32), (2, 16, 3, 3), (1, 1), (1, 1), (1, 1), "float32")
        assert plan["forward"] == "im2col+blas" and plan["backward"] == "im2col+blas+col2im"
        _engine.set_algorithm("im2col")
        plan = _engine.algorithm((8, 64, 32, 32), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1), "float32")
        assert plan["forward"] == "im2col+blas" and plan["backward"] == "im2col+blas+col2im"
    finally:
        _engine.set_algorithm(previous)


def test_engine_declines_what_it_cannot_hold():
    """Kernels wider than 32, windows of gigabytes, stride phases beyond 16: im2col + BLAS."""
    previous = _engine.set_algorithm("direct")
    try:
        assert _engine.algorithm((1, 2, 40, 40), (4, 2, 33, 1), (1, 1), (0, 0), (1, 1),
                                 "float32")["forward"] == "im2col+blas"
        assert _engine.algorithm((1, 2, 3, 4), (4, 2, 2, 2), (1, 2**31 - 1), (2**30, 2**30),
                                 (2**31 - 1, 2**31 - 1), "float32")["forward"] == "im2col+blas"
        plan = _engine.algorithm((1, 4, 20, 20), (8, 4, 3, 3), (5, 5), (1, 1), (1, 1), "float32")
        assert plan["forward"].startswith("direct") and plan["backward"] == "im2col+blas+col2im"
    finally:
        _engine.set_algorithm(previous)


def test_conv_algorithm_reports_checked_shapes():
    got = _config.conv_algorithm((32, 64, 1000), (64, 64, 5), 1, 2)
    assert got["forward"].startswith("direct/") and got["isa"] == _engine.isa()
    with pytest.raises(ValueError, match="conv_algorithm: x has 3 channels but w expects 4"):
        _config.conv_algorithm((1, 3, 8, 8), (2, 4, 3, 3))
    with fastconv.use_backend("reference"):
        assert _config.conv_algorithm((1, 3, 8, 8), (2, 3, 3, 3))["forward"] == "reference"


def test_set_isa_and_set_algorithm_refuse_unknown_names():
    with pytest.raises(ValueError, match="_set_isa: 'sse9'"):
        _engine._set_isa("sse9")
    with pytest.raises(ValueError, match="set_algorithm: algorithm must be one of"):
        _engine.set_algorithm("fft")
    assert _engine.isa() in ISAS and _engine.get_algorithm() in _engine.ALGORITHMS


def test_show_config_names_the_instruction_set():
    config = fastconv.show_config()
    assert config["isa"] == _engine.isa()
    assert config["isa_supported"] == ISAS and "generic" in ISAS
    assert config["conv_algorithm"] == _engine.get_algorithm()


def run_python(code, **env):
    full_env = dict(os.environ, PYTHONPATH=str(Path(fastconv.__file__).parents[1]), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=120)


def test_environment_forces_a_lower_instruction_set_and_an_algorithm():
    code = ("import fastconv; c = fastconv.show_config(); "
            "print(c['isa'], c['conv_algorithm'])")
    for name in ISAS:
        out = run_python(code, FASTCONV_ISA=name, FASTCONV_CONV_ALGORITHM="im2col")
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [name, "im2col"]
    out = run_python(code, FASTCONV_ISA="avx9000", FASTCONV_CONV_ALGORITHM="fft")
    assert out.returncode == 0, out.stderr
    assert "FASTCONV_ISA='avx9000' is not one of" in out.stderr
    assert "FASTCONV_CONV_ALGORITHM='fft' is not one of" in out.stderr
    assert out.stdout.split() == [ISAS[-1], "auto"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_fma_peak_probe(dtype):
    for name in ISAS:
        one = _engine.fma_peak_gflops(name, dtype, 1, 0.01)
        two = _engine.fma_peak_gflops(name, dtype, 2, 0.01)
        assert one > 0.1 and two > 0.1
    assert _config.fma_peak_gflops(dtype=dtype, threads=1, seconds=0.01) > 0.1
    with pytest.raises(ValueError, match="fma_peak_gflops: threads must be >= 1"):
        _engine.fma_peak_gflops(ISAS[0], dtype, 0)


@pytest.mark.parametrize("name", [n for n in ISAS if n != ISAS[-1]])
def test_kernel_tests_pass_on_lower_instruction_sets(name):
    """tests/test_cython_conv.py again with FASTCONV_ISA forcing a lower instruction set."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         str(REPO / "tests" / "test_cython_conv.py")],
        capture_output=True, text=True, timeout=900, cwd=REPO,
        env=dict(os.environ, FASTCONV_ISA=name,
                 PYTHONPATH=str(Path(fastconv.__file__).parents[1])))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_takes_the_direct_kernels_for_non_finite_or_huge_inputs(isa, dtype):
    """Winograd's transforms mix a tile's inputs: an inf would turn outputs whose windows never
    see it into NaN. With such inputs (or values that the transforms could overflow) the pass
    runs the direct kernels, bit for bit, so NaN and inf propagate as IEEE arithmetic does."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 16, 12, 12)).astype(dtype)
    w = rng.standard_normal((24, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(24).astype(dtype)
    dout = rng.standard_normal((6, 24, 12, 12)).astype(dtype)
    big = np.finfo(dtype).max / 64
    cases = {"inf": (2, 3, 5, 7, np.inf), "nan": (1, 0, 0, 0, np.nan), "huge": (4, 9, 11, 2, big)}
    previous = _engine.set_algorithm("winograd")
    try:
        plan = _engine.algorithm(x.shape, w.shape, (1, 1), (1, 1), (1, 1), dtype, 2)
        assert winograd_tile(plan["forward"]) and winograd_tile(plan["backward"]), plan
        for name, (n, c, i, j, value) in cases.items():
            for which in ("x", "w", "dout"):
                args = {"x": x.copy(), "w": w.copy(), "dout": dout.copy()}
                index = (n % args[which].shape[0], c % args[which].shape[1], i % 3 if which == "w" else i,
                         j % 3 if which == "w" else j)
                args[which][index] = value
                _engine.set_algorithm("winograd")
                got = run_all(args["x"], args["w"], b, args["dout"], 1, 1, 1)
                _engine.set_algorithm("direct")
                want = run_all(args["x"], args["w"], b, args["dout"], 1, 1, 1)
                # The forward reads x and w, dx reads dout and w (dw never uses Winograd).
                reads = {"y": ("x", "w"), "dx": ("dout", "w"), "dw": ("x", "w", "dout"),
                         "db": ("dout",)}
                for part, g, e in zip(("y", "dx", "dw", "db"), got, want):
                    if which in reads[part]:
                        assert np.array_equal(g, e, equal_nan=True), f"{name} in {which}: {part}"
    finally:
        _engine.set_algorithm(previous)


@pytest.mark.parametrize("forced", ["direct", "winograd"])
@pytest.mark.parametrize("stride", [1, 2])
def test_gradients_match_central_differences(isa, forced, stride):
    """dx, dw and db of the engine's paths equal central differences of sum(conv(x, w, b) *
    dout) (float64, h = 1e-6), at every element of small arrays."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 8, 7, 6))
    w = rng.standard_normal((10, 8, 3, 3))
    b = rng.standard_normal(10)
    previous = _engine.set_algorithm(forced)
    try:
        plan = _engine.algorithm(x.shape, w.shape, (stride, stride), (1, 1), (1, 1), "float64", 1)
        assert plan["forward"].startswith(("direct", "winograd")), plan
        if forced == "winograd" and stride == 1:      # (strided layers: direct, phases)
            assert winograd_tile(plan["forward"]) and winograd_tile(plan["backward"]), plan
        dout = rng.standard_normal(fastconv.conv2d(x, w, b, stride, 1).shape)
        dx, dw, db = fastconv.conv2d_backward(dout, x, w, stride, 1)

        def loss(xx, ww, bb):
            return float(np.sum(fastconv.conv2d(xx, ww, bb, stride, 1) * dout))

        h = 1e-6
        for name, array, grad in (("x", x, dx), ("w", w, dw), ("b", b, db)):
            numeric = np.empty_like(array)
            for index in np.ndindex(array.shape):
                saved = array[index]
                array[index] = saved + h
                plus = loss(x, w, b)
                array[index] = saved - h
                minus = loss(x, w, b)
                array[index] = saved
                numeric[index] = (plus - minus) / (2 * h)
            np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5, err_msg=name)
    finally:
        _engine.set_algorithm(previous)
