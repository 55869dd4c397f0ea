"""Concurrency and leaks: many Python threads calling every function at once (the compiled
kernels release the GIL and share cached workspaces) while another thread keeps changing the
thread count give exactly the serial results; 10,000 calls do not grow the process.
"""

import itertools
import os
import threading

import numpy as np
import pytest

import fastconv as fc
from conftest import AVAILABLE_BACKENDS


def _workload(dtype, seed):
    """(name, args) of one call of every public function, on varied shapes (some large enough
    for the parallel paths: batch >= 8, more than 2**16 elements)."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    calls = []
    for n, c, h, w, f, k, s, p, d in [(2, 3, 9, 8, 4, 3, 1, 1, 1), (9, 4, 12, 11, 5, 3, 2, 1, 1),
                                      (1, 8, 30, 28, 6, 3, 1, 2, 2), (3, 2, 7, 7, 3, 1, 1, 0, 1)]:
        x, wt, b = r(n, c, h, w), r(f, c, k, k), r(f)
        oh = (h + 2 * p - d * (k - 1) - 1) // s + 1
        ow = (w + 2 * p - d * (k - 1) - 1) // s + 1
        calls += [
            ("conv2d", (x, wt, b, s, p, d)),
            ("conv2d_backward", (r(n, f, oh, ow), x, wt, s, p, d)),
            ("conv1d", (x[:, :, 0], wt[:, :, 0], b, s, p, d)),
            ("conv1d_backward", (r(n, f, (w + 2 * p - d * (k - 1) - 1) // s + 1), x[:, :, 0], wt[:, :, 0], s, p, d)),
            ("im2col", (x, k, s, p, d)),
            ("col2im", (r(n, c * k * k, oh * ow), x.shape, k, s, p, d)),
        ]
    # Grouped, depthwise (direct kernels, with and without their padded window) and transposed:
    # hyper-parameters in signature order (conv: stride, padding, dilation, groups; transposed:
    # stride, padding, output_padding, groups, dilation).
    for name, x_shape, w_shape, hyper in [
        ("conv2d", (9, 8, 14, 13), (6, 4, 3, 3), (1, "same", 1, 2)),
        ("conv2d", (10, 6, 20, 20), (12, 1, 3, 3), (1, 1, 1, 6)),
        ("conv2d", (2, 4, 6, 6), (4, 1, 3, 3), (2, 40, 1, 4)),
        ("conv1d", (3, 4, 50), (4, 1, 4), (1, "same", 1, 4)),
        ("conv_transpose2d", (9, 8, 14, 14), (8, 2, 2, 2), (2, 0, 0, 2, 1)),
        ("conv_transpose2d", (4, 8, 32, 32), (8, 1, 3, 3), (1, 1, 0, 8, 1)),
        ("conv_transpose1d", (2, 3, 40), (3, 2, 3), (2, 1, 1, 1, 1)),
    ]:
        transposed = "transpose" in name
        filters = w_shape[1] * hyper[3] if transposed else w_shape[0]
        x, wt, b = r(*x_shape), r(*w_shape), r(filters)
        y = getattr(fc.reference, name)(x, wt, b, *hyper)
        calls += [(name, (x, wt, b) + hyper), (name + "_backward", (r(*y.shape), x, wt) + hyper)]
    for n, c, h, w, k, s, p in [(2, 3, 9, 10, 2, None, 0), (4, 16, 40, 41, 3, 2, 1), (1, 2, 5, 33, (2, 3), 1, 1)]:
        x = r(n, c, h, w)
        y, idx = fc.reference.max_pool2d(x, k, s, p)
        calls += [
            ("max_pool2d", (x, k, s, p)),
            ("max_pool2d_backward", (r(*y.shape), idx, x.shape)),
            ("avg_pool2d", (x, k, s, p)),
            ("avg_pool2d_backward", (r(*y.shape), x.shape, k, s, p)),
        ]
    # The options, 1-D and adaptive pooling (parallel paths: >= 2**15 input elements).
    for n, c, h, w, k, s, p, d in [(2, 3, 9, 10, 3, 2, 1, 2), (4, 16, 40, 41, (3, 2), (2, 1), 1, (2, 1))]:
        x, x1 = r(n, c, h, w), r(n, c, 40 * w)
        y, idx = fc.reference.max_pool2d(x, k, s, p, d, True)
        y1, idx1 = fc.reference.max_pool1d(x1, 3, 2, 1, 2, True)
        a = fc.reference.avg_pool2d(x, k, s, p, True, False, 3)
        a1 = fc.reference.avg_pool1d(x1, 4, 3, 2, True, False)
        calls += [
            ("max_pool2d", (x, k, s, p, d, True)),
            ("max_pool2d_backward", (r(*y.shape), idx, x.shape)),
            ("avg_pool2d", (x, k, s, p, True, False, 3)),
            ("avg_pool2d_backward", (r(*a.shape), x.shape, k, s, p, True, False, 3)),
            ("max_pool1d", (x1, 3, 2, 1, 2, True)),
            ("max_pool1d_backward", (r(*y1.shape), idx1, x1.shape)),
            ("avg_pool1d", (x1, 4, 3, 2, True, False)),
            ("avg_pool1d_backward", (r(*a1.shape), x1.shape, 4, 3, 2, True, False)),
            ("adaptive_avg_pool2d", (x, (5, 3))),
            ("adaptive_avg_pool2d_backward", (r(n, c, 5, 3), x.shape)),
            ("adaptive_avg_pool2d", (x, 1)),
        ]
    return calls


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _same(a, b):
    return all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(_as_tuple(a), _as_tuple(b)))


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_threads_calling_at_once_match_serial(backend):
    calls = [(name, args, dtype) for dtype in (np.float32, np.float64)
             for name, args in _workload(dtype, seed=hash(dtype) % 1000)]
    fc.set_num_threads(1)
    serial = [getattr(fc, name)(*args, backend=backend) for name, args, _ in calls]

    errors, stop = [], threading.Event()

    def changer():
        # Change the thread count while calls run: any count must give the same bits.
        for n in itertools.cycle((1, 3, 2, 4)):
            if stop.is_set():
                return
            fc.set_num_threads(n)
            stop.wait(0.0005)

    def worker(offset):
        try:
            for rep in range(3):
                for k in range(len(calls)):
                    i = (k + offset + rep) % len(calls)  # threads run different calls at once
                    name, args, _ = calls[i]
                    got = getattr(fc, name)(*args, backend=backend)
                    if not _same(got, serial[i]):
                        errors.append(f"{name} #{i} differs from the serial result")
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(7 * t,)) for t in range(8)]
    flipper = threading.Thread(target=changer)
    flipper.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    flipper.join()
    assert not errors, errors[:5]


def test_use_backend_in_one_thread_does_not_change_explicit_calls():
    """Calls with backend= are unaffected by other threads switching the active backend."""
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    want = {b: fc.avg_pool2d(x, 2, backend=b) for b in AVAILABLE_BACKENDS}
    stop, errors = threading.Event(), []

    def switcher():
        for name in itertools.cycle(AVAILABLE_BACKENDS):
            if stop.is_set():
                return
            with fc.use_backend(name):
                pass

    t = threading.Thread(target=switcher)
    t.start()
    try:
        for _ in range(300):
            for b in AVAILABLE_BACKENDS:
                if not np.array_equal(fc.avg_pool2d(x, 2, backend=b), want[b]):
                    errors.append(b)
    finally:
        stop.set()
        t.join()
    assert not errors


# ----------------------------------------------------------------------------------------------
# Leaks
# ----------------------------------------------------------------------------------------------

# AddressSanitizer (tools/memcheck.sh) keeps freed memory in quarantine: RSS grows by design.
skip_under_asan = pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                                     reason="RSS is not meaningful under AddressSanitizer")


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _page_size()


def _page_size():
    return os.sysconf("SC_PAGE_SIZE")


def _small_calls(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    dout = rng.standard_normal((2, 4, 8, 8)).astype(dtype)
    y, idx = fc.max_pool2d(x, 2)
    cols = fc.im2col(x, 3, 1, 1)
    tdout = rng.standard_normal((2, 3, 16, 16)).astype(dtype)   # conv_transpose2d(x, w[:3], b[:3], 2, 1, 1)
    bad_idx = idx.copy()
    bad_idx[0, 0, 0, 0] = 64
    x1 = x[:, :, 0]
    y1, idx1 = fc.max_pool1d(x1, 2, dilation=2)
    a = fc.avg_pool2d(x, 3, 2, 1, True, False, 5)
    g = fc.adaptive_avg_pool2d(x, (3, 5))
    return [
        lambda be: fc.conv2d(x, w, b, 1, 1, backend=be),
        lambda be: fc.conv2d_backward(dout, x, w, 1, 1, backend=be),
        lambda be: fc.conv1d(x[:, :, 0], w[:, :, 0], b, 1, 1, backend=be),
        lambda be: fc.conv1d_backward(dout[:, :, 0], x[:, :, 0], w[:, :, 0], 1, 1, backend=be),
        lambda be: fc.im2col(x, 3, 1, 1, backend=be),
        lambda be: fc.col2im(cols, x.shape, 3, 1, 1, backend=be),
        lambda be: fc.max_pool2d(x, 2, backend=be),
        lambda be: fc.max_pool2d_backward(y, idx, x.shape, backend=be),
        lambda be: fc.avg_pool2d(x, 3, 2, 1, backend=be),
        lambda be: fc.conv2d(x, w[:3, :1], None, 1, "same", 1, 3, backend=be),            # depthwise
        lambda be: fc.conv2d_backward(dout[:, :3], x, w[:3, :1], 1, "same", 1, 3, backend=be),
        lambda be: fc.conv_transpose2d(x, w[:3], b[:3], 2, 1, 1, backend=be),
        lambda be: fc.conv_transpose2d_backward(tdout, x, w[:3], 2, 1, 1, backend=be),
        lambda be: fc.avg_pool2d_backward(fc.avg_pool2d(x, 3, 2, 1), x.shape, 3, 2, 1, backend=be),
        lambda be: fc.max_pool2d(x, 3, 2, 1, 2, True, backend=be),
        lambda be: fc.avg_pool2d_backward(a, x.shape, 3, 2, 1, True, False, 5, backend=be),
        lambda be: fc.max_pool1d_backward(y1, idx1, x1.shape, backend=be),
        lambda be: fc.avg_pool1d(x1, 3, 2, 1, True, False, backend=be),
        lambda be: fc.adaptive_avg_pool2d(x, (3, 5), backend=be),
        lambda be: fc.adaptive_avg_pool2d_backward(g, x.shape, backend=be),
        lambda be: _refused(lambda: fc.avg_pool2d(x, 2, divisor_override=0, backend=be)),
        lambda be: _refused(lambda: fc.adaptive_avg_pool2d(x, 0, backend=be)),
        # Refused calls: the error path must not leak either (exceptions hold frames).
        lambda be: _refused(lambda: fc.max_pool2d_backward(y, bad_idx, x.shape, backend=be)),
        lambda be: _refused(lambda: fc.conv2d(x, w[:, :2], backend=be)),
        lambda be: _refused(lambda: fc.conv2d(x, w, groups=2, backend=be)),
        lambda be: _refused(lambda: fc.conv_transpose2d(x, w[:3], output_padding=1, backend=be)),
        lambda be: _refused(lambda: fc.im2col(x.astype(np.complex64), 3, backend=be)),
    ]


def _refused(call):
    try:
        call()
    except (ValueError, TypeError):
        return
    raise AssertionError("expected a refusal")


@skip_under_asan
@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_no_leak_over_10000_calls(backend):
    calls = _small_calls(np.float32) + _small_calls(np.float64)
    fc.set_num_threads(2)

    def run(count):
        for k in range(count):
            calls[k % len(calls)](backend)

    run(2000)  # warm-up: caches, workspaces, allocator arenas reach their steady state
    before = _rss_bytes()
    run(10_000)
    grown = _rss_bytes() - before
    # Typical growth is < 0.3 MiB (allocator noise). Leaking 200 bytes per call would be
    # 2 MiB; leaking a result array (>= 2 KB here) would be over 20 MiB.
    assert grown < 2 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 10,000 calls"


@skip_under_asan
@pytest.mark.skipif("cython" not in AVAILABLE_BACKENDS, reason="compiled backend not built")
def test_no_leak_with_concurrent_callers():
    """Workspaces checked out by concurrent calls all come back (or are freed)."""
    calls = _small_calls(np.float32)
    fc.set_num_threads(2)

    def run(count):
        def worker(offset):
            for k in range(count):
                calls[(k + offset) % len(calls)]("cython")
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    run(500)
    before = _rss_bytes()
    run(2500)  # 10,000 calls in all
    grown = _rss_bytes() - before
    assert grown < 4 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 10,000 concurrent calls"


# ----------------------------------------------------------------------------------------------
# The layer functions (batch norm, ReLU, softmax cross-entropy)
# ----------------------------------------------------------------------------------------------

def _layer_workload(dtype, seed):
    """(name, args, kwargs) of calls of every layer function, some large enough for the
    parallel paths. Running statistics are only read (evaluation): updating the same arrays
    from several threads at once would be a race of the caller's making."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    calls = []
    for shape, data_format in [((9, 4, 12, 11), "NCHW"), ((4, 16, 40, 3), "NHWC"), ((5, 3), "NCHW"),
                               ((2, 3, 70000), "NCHW")]:
        c = shape[-1] if data_format == "NHWC" else shape[1]
        x, w, b, dout = r(*shape), r(c), r(c), r(*shape)
        rm, rv = r(c), 0.5 + np.abs(r(c))
        fmt = {"data_format": data_format}
        _, mean, invstd = fc.reference.batch_norm(x, w, b, **fmt)
        calls += [
            ("batch_norm", (x, w, b), fmt),
            ("batch_norm", (x, None, b, rm, rv, False), fmt),
            ("batch_norm_backward", (dout, x, w, mean, invstd), fmt),
            ("batch_norm_backward", (dout, x, None, mean, invstd, False), fmt),
        ]
    for size in (10, 200_000):
        calls += [("relu", (r(size),), {}), ("relu_backward", (r(size), r(size)), {})]
    logits = 3 * r(3000, 10)
    calls += [("softmax_cross_entropy", (logits, rng.integers(0, 10, 3000)), {}),
              ("softmax_cross_entropy", (logits, rng.dirichlet(np.ones(10), 3000).astype(dtype)), {})]
    return calls


def _same_results(a, b):
    return all(np.asarray(x).tobytes() == np.asarray(y).tobytes() and np.asarray(x).dtype == np.asarray(y).dtype
               for x, y in zip(_as_tuple(a), _as_tuple(b)))


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_layer_functions_called_at_once_match_serial(backend):
    calls = [call for dtype in (np.float32, np.float64) for call in _layer_workload(dtype, seed=7)]
    fc.set_num_threads(1)
    serial = [getattr(fc, name)(*args, **kwargs, backend=backend) for name, args, kwargs in calls]
    errors, stop = [], threading.Event()

    def changer():
        for n in itertools.cycle((1, 3, 2, 4)):
            if stop.is_set():
                return
            fc.set_num_threads(n)
            stop.wait(0.0005)

    def worker(offset):
        try:
            for rep in range(3):
                for k in range(len(calls)):
                    i = (k + offset + rep) % len(calls)
                    name, args, kwargs = calls[i]
                    if not _same_results(getattr(fc, name)(*args, **kwargs, backend=backend), serial[i]):
                        errors.append(f"{name} #{i} differs from the serial result")
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(5 * t,)) for t in range(6)]
    flipper = threading.Thread(target=changer)
    flipper.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    flipper.join()
    assert not errors, errors[:5]


def _small_layer_calls(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5, 5)).astype(dtype)
    w, rm, rv = np.ones(3, dtype), np.zeros(3, dtype), np.ones(3, dtype)
    _, mean, invstd = fc.batch_norm(x)
    logits, labels = rng.standard_normal((8, 5)).astype(dtype), rng.integers(0, 5, 8)
    return [
        lambda be: fc.batch_norm(x, w, None, rm, rv, backend=be),  # updates rm, rv in place
        lambda be: fc.batch_norm(x.reshape(4, 3, 25).transpose(0, 2, 1), w, None, rm, rv, False,
                                 data_format="NHWC", backend=be),
        lambda be: fc.batch_norm_backward(x, x, w, mean, invstd, backend=be),
        lambda be: fc.relu(x, backend=be),
        lambda be: fc.relu_backward(x, x, backend=be),
        lambda be: fc.softmax_cross_entropy(logits, labels, backend=be),
        lambda be: _refused(lambda: fc.batch_norm(x, w[:2], backend=be)),
        lambda be: _refused(lambda: fc.softmax_cross_entropy(logits, labels + 5, backend=be)),
    ]


@skip_under_asan
@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_layer_functions_do_not_leak_over_10000_calls(backend):
    calls = _small_layer_calls(np.float32) + _small_layer_calls(np.float64)
    fc.set_num_threads(2)

    def run(count):
        for k in range(count):
            calls[k % len(calls)](backend)

    run(2000)
    before = _rss_bytes()
    run(10_000)
    grown = _rss_bytes() - before
    assert grown < 2 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 10,000 calls"
