"""fastconv.dask: the functions on dask arrays, and data-parallel training, against the
in-memory functions.

* every function on hypothesis-drawn shapes, hyper-parameters and batch chunkings (odd sizes,
  empty chunks, an empty batch) equals the in-memory function bit for bit (dx, y, pooling);
  dw and db equal the chunks' in-memory dw and db summed in the documented order (a pairwise
  tree written out below), and the whole-batch dw and db up to rounding;
* graphs are lazy, weights are embedded once, dask-array weights work;
* dw and db are bitwise identical on the synchronous, threaded (with chunks finishing in
  shuffled order) and multiprocessing schedulers and on a LocalCluster of worker processes with
  one and two workers; a worker killed in the middle of a computation is replaced, the lost
  tasks rerun, and the result is still exact;
* DataParallel training equals a single-process loop over the same chunks bit for bit, on
  every scheduler, also when a worker dies mid-step;
* bad input raises at once, naming the function and argument;
* without dask, ``import fastconv`` works and ``import fastconv.dask`` says what to install.

The LocalCluster is started and stopped by a module fixture (its teardown runs even when a
test fails). Skipped when dask or distributed is not installed.
"""

import functools
import inspect
import operator
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

import fastconv  # noqa: E402
import fastconv.dask as fcd  # noqa: E402
from conftest import conv_configs, pool_configs  # noqa: E402
from fastconv import nn  # noqa: E402

# Functions below run on the cluster's worker processes: ship them by value, so the workers
# need not import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SCHEDULERS = ["sync", "threads", "processes", "distributed"]


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two single-threaded worker processes, closed after the module."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",  # any free port
        silence_logs=40,  # logging.ERROR: a worker restart is expected in two tests
    ) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


def compute(*collections, scheduler="sync", **kwargs):
    """dask.compute on a named scheduler ("distributed" needs kwargs["client"])."""
    if scheduler == "distributed":
        kwargs["scheduler"] = kwargs.pop("client")
    elif scheduler == "processes":
        kwargs.update(scheduler="processes", num_workers=2)
    else:
        kwargs["scheduler"] = scheduler
    return dask.compute(*collections, **kwargs)


# ----------------------------------------------------------------------------------------------
# Helpers: data, chunkings, and the documented order of the sum over chunks
# ----------------------------------------------------------------------------------------------

def randn(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@st.composite
def chunkings(draw, n):
    """Batch chunk sizes that add up to n: one to four chunks, empty ones allowed."""
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    return tuple(b - a for a, b in zip([0] + cuts, cuts + [n]))


def as_dask(array, batch_chunks):
    return da.from_array(array, chunks=(batch_chunks,) + array.shape[1:])


def chunk_slices(batch_chunks):
    bounds = np.cumsum((0,) + tuple(batch_chunks))
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def pairwise_sum(parts):
    """The order of fastconv.dask's docs: neighbours in chunk order are added two at a time,
    level by level; an odd last one moves up as it is."""
    parts = list(parts)
    while len(parts) > 1:
        parts = [parts[i] + parts[i + 1] if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def assert_identical(actual, expected, what=""):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
        what, actual.shape, expected.shape, actual.dtype, expected.dtype)
    assert np.array_equal(actual, expected, equal_nan=True), what
    # Signed zeros too: array_equal says 0.0 == -0.0.
    assert np.array_equal(np.signbit(actual), np.signbit(expected)), what


def _per_chunk(function, arrays, batch_chunks, index, args, kwargs):
    for s in chunk_slices(batch_chunks):
        result = function(*(a[s] for a in arrays), *args, **kwargs)
        yield result[index] if isinstance(result, tuple) else result


def expected_chunk_sum(function, arrays, batch_chunks, index, *args, **kwargs):
    """Result `index` of `function` on each chunk of `arrays`, summed in the documented order."""
    return pairwise_sum(_per_chunk(function, arrays, batch_chunks, index, args, kwargs))


def expected_per_image(function, arrays, batch_chunks, index, *args, **kwargs):
    """Result `index` of `function` on each chunk of `arrays`, concatenated along the batch.

    The in-memory kernels choose how to split their work from the batch size (convolution
    backward: by images from 8 images on, by channels below), so a chunk's dx can differ from
    the same images' dx in a whole-batch call in the last bits; a chunk's own call is the
    bitwise yardstick, the whole-batch call the approximate one.
    """
    return np.concatenate(list(_per_chunk(function, arrays, batch_chunks, index, args, kwargs)))


def assert_close_to_whole_batch(actual, expected, dtype):
    tol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-10
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------------------------
# Values against the in-memory functions
# ----------------------------------------------------------------------------------------------

@settings(max_examples=20)
@given(cfg=conv_configs(max_batch=6), data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_conv2d_forward_and_backward_match_in_memory(backend, cfg, data, dtype):
    chunks = data.draw(chunkings(cfg["x_shape"][0]))
    hyper = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"])
    x, w, b = randn(cfg["x_shape"], 1, dtype), randn(cfg["w_shape"], 2, dtype), randn(cfg["w_shape"][0], 3, dtype)
    y = fastconv.conv2d(x, w, b, **hyper, backend=backend)
    dout = randn(y.shape, 4, dtype)
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, **hyper, backend=backend)

    lazy_y = fcd.conv2d(as_dask(x, chunks), w, b, **hyper, backend=backend)
    lazy = fcd.conv2d_backward(as_dask(dout, chunks), as_dask(x, chunks), w, **hyper, backend=backend)
    assert lazy_y.chunks[0] == chunks and lazy[0].chunks[0] == chunks
    assert lazy[1].numblocks == (1,) * 4 and lazy[2].numblocks == (1,)
    got_y, got_dx, got_dw, got_db = compute(lazy_y, *lazy)

    assert_identical(got_y, expected_per_image(fastconv.conv2d, (x,), chunks, 0, w, b, **hyper,
                                               backend=backend), "y")
    assert_identical(got_dx, expected_per_image(fastconv.conv2d_backward, (dout, x), chunks, 0, w, **hyper,
                                                backend=backend), "dx")
    for index, got in ((1, got_dw), (2, got_db)):
        expected = expected_chunk_sum(fastconv.conv2d_backward, (dout, x), chunks, index, w, **hyper,
                                      backend=backend)
        assert_identical(got, expected, "dw/db")
    for got, whole in zip((got_y, got_dx, got_dw, got_db), (y, dx, dw, db)):
        assert_close_to_whole_batch(got, whole, dtype)


@settings(max_examples=10)
@given(cfg=conv_configs(nd=1, max_batch=5), data=st.data())
def test_conv1d_forward_and_backward_match_in_memory(cfg, data):
    chunks = data.draw(chunkings(cfg["x_shape"][0]))
    hyper = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"])
    x, w = randn(cfg["x_shape"], 5, np.float32), randn(cfg["w_shape"], 6, np.float32)
    y = fastconv.conv1d(x, w, None, **hyper)
    dout = randn(y.shape, 7, np.float32)
    got_y, got_dx, got_dw, got_db = compute(
        fcd.conv1d(as_dask(x, chunks), w, **hyper),
        *fcd.conv1d_backward(as_dask(dout, chunks), as_dask(x, chunks), w, **hyper),
    )
    assert_identical(got_y, expected_per_image(fastconv.conv1d, (x,), chunks, 0, w, **hyper))
    assert_identical(got_dx, expected_per_image(fastconv.conv1d_backward, (dout, x), chunks, 0, w, **hyper))
    assert_close_to_whole_batch(got_dx, fastconv.conv1d_backward(dout, x, w, **hyper)[0], np.float32)
    assert_identical(got_dw, expected_chunk_sum(fastconv.conv1d_backward, (dout, x), chunks, 1, w, **hyper))
    assert_identical(got_db, expected_chunk_sum(fastconv.conv1d_backward, (dout, x), chunks, 2, w, **hyper))


@settings(max_examples=20)
@given(cfg=pool_configs(max_batch=5), data=st.data())
def test_pooling_forward_and_backward_match_in_memory(backend, cfg, data):
    chunks = data.draw(chunkings(cfg["x_shape"][0]))
    k, s, p = cfg["kernel_size"], cfg["stride"], cfg["padding"]
    x = randn(cfg["x_shape"], 8, np.float32)
    x[..., ::3] = x[..., :1]  # ties in the max windows
    y, idx = fastconv.max_pool2d(x, k, s, p, backend=backend)
    dout = randn(y.shape, 9, np.float32)
    lazy_x = as_dask(x, chunks)
    lazy_y, lazy_idx = fcd.max_pool2d(lazy_x, k, s, p, backend=backend)
    results = compute(
        lazy_y, lazy_idx,
        fcd.max_pool2d_backward(as_dask(dout, chunks), lazy_idx, x.shape, backend=backend),
        fcd.avg_pool2d(lazy_x, k, s, p, backend=backend),
        fcd.avg_pool2d_backward(as_dask(dout, chunks), x.shape, k, s, p, backend=backend),
    )
    expected = (
        y, idx, fastconv.max_pool2d_backward(dout, idx, x.shape, backend=backend),
        fastconv.avg_pool2d(x, k, s, p, backend=backend),
        fastconv.avg_pool2d_backward(dout, x.shape, k, s, p, backend=backend),
    )
    for got, want in zip(results, expected):
        assert_identical(got, want)


@settings(max_examples=10)
@given(cfg=conv_configs(max_batch=5), data=st.data())
def test_im2col_col2im_match_in_memory(cfg, data):
    chunks = data.draw(chunkings(cfg["x_shape"][0]))
    k = cfg["w_shape"][2:]
    hyper = (cfg["stride"], cfg["padding"], cfg["dilation"])
    x = randn(cfg["x_shape"], 10)
    cols = fastconv.im2col(x, k, *hyper)
    got_cols, got_x = compute(
        fcd.im2col(as_dask(x, chunks), k, *hyper),
        fcd.col2im(as_dask(cols, chunks), x.shape, k, *hyper),
    )
    assert_identical(got_cols, cols)
    assert_identical(got_x, fastconv.col2im(cols, x.shape, k, *hyper))


def test_threaded_scheduler_with_small_and_large_chunks_at_two_threads():
    """Chunks of 1 to 9 images at two fastconv threads (the kernels' batch and within-image
    paths), several dask threads at once: each chunk's own in-memory results."""
    fastconv.set_num_threads(2)
    x, w = randn((19, 8, 30, 28), 11, np.float32), randn((6, 8, 3, 3), 12, np.float32)
    dout = randn((19, 6, 28, 26), 13, np.float32)
    chunks = (1, 9, 2, 0, 7)
    y, dx, dw, _ = compute(
        fcd.conv2d(as_dask(x, chunks), w),
        *fcd.conv2d_backward(as_dask(dout, chunks), as_dask(x, chunks), w),
        scheduler="threads", num_workers=3,
    )
    assert_identical(y, expected_per_image(fastconv.conv2d, (x,), chunks, 0, w))
    assert_identical(dx, expected_per_image(fastconv.conv2d_backward, (dout, x), chunks, 0, w))
    assert_identical(dw, expected_chunk_sum(fastconv.conv2d_backward, (dout, x), chunks, 1, w))
    assert_close_to_whole_batch(dx, fastconv.conv2d_backward(dout, x, w)[0], np.float32)


def test_empty_batch_and_empty_chunks():
    w, b = randn((4, 3, 3, 3), 14), randn(4, 15)
    empty = as_dask(np.zeros((0, 3, 6, 6)), (0,))
    y = fcd.conv2d(empty, w, b, padding=1)
    dx, dw, db = compute(*fcd.conv2d_backward(as_dask(np.zeros((0, 4, 6, 6)), (0,)), empty, w, padding=1))
    assert y.shape == (0, 4, 6, 6) and y.compute().shape == (0, 4, 6, 6)
    assert dx.shape == (0, 3, 6, 6)
    assert_identical(dw, np.zeros_like(w))
    assert_identical(db, np.zeros(4))
    # Only empty chunks around one image.
    x = randn((1, 3, 6, 6), 16)
    got = fcd.conv2d(as_dask(x, (0, 0, 1, 0)), w, b).compute()
    assert_identical(got, fastconv.conv2d(x, w, b))


# ----------------------------------------------------------------------------------------------
# Graphs: lazy, weights once, dask weights
# ----------------------------------------------------------------------------------------------

_calls = []


def _counted(block):
    _calls.append(block.shape[0])
    return block


def test_nothing_is_computed_until_asked():
    _calls.clear()
    x = as_dask(randn((10, 3, 8, 8), 17), (4, 6)).map_blocks(_counted, meta=np.empty((0,) * 4))
    w = randn((5, 3, 3, 3), 18)
    y = fcd.conv2d(x, w)
    dx, dw, db = fcd.conv2d_backward(fcd.conv2d(x, w), x, w)
    pooled, idx = fcd.max_pool2d(x, 2)
    fcd.max_pool2d_backward(pooled, idx, x.shape)
    fcd.avg_pool2d_backward(fcd.avg_pool2d(x, 2), x.shape, 2)
    fcd.col2im(fcd.im2col(x, 3), x.shape, 3)
    assert _calls == []
    y.compute(scheduler="sync")
    assert sorted(_calls) == [4, 6]


def test_computing_dx_dw_db_together_runs_each_chunk_once(monkeypatch):
    calls = []
    in_memory = fastconv.conv2d_backward

    def counted(dout, *args, **kwargs):
        calls.append(dout.shape[0])
        return in_memory(dout, *args, **kwargs)

    monkeypatch.setattr(fastconv, "conv2d_backward", counted)
    x, w = randn((10, 2, 6, 6), 43), randn((3, 2, 3, 3), 44)
    lazy = fcd.conv2d_backward(as_dask(randn((10, 3, 4, 4), 45), (3, 7)), as_dask(x, (3, 7)), w)
    assert calls == [0]  # the eager check on an empty batch
    compute(*lazy)
    assert sorted(calls) == [0, 3, 7]


def test_numpy_weights_are_embedded_once():
    w = randn((64, 64, 3, 3), 19, np.float32)  # 144 KiB
    x = da.zeros((64, 64, 6, 6), chunks=(2, 64, 6, 6), dtype=np.float32)  # 32 chunks, no data
    graphs = {
        "conv2d": fcd.conv2d(x, w, np.zeros(64, np.float32)),
        "conv2d_backward": fcd.conv2d_backward(da.zeros((64, 64, 4, 4), chunks=(2, 64, 4, 4)), x, w)[1],
    }
    for name, result in graphs.items():
        size = len(cloudpickle.dumps(dict(result.__dask_graph__())))
        assert size < 1.5 * w.nbytes, (name, size, w.nbytes)


@pytest.mark.parametrize("weight_chunks", [-1, (3, 5)])
def test_dask_weights(weight_chunks):
    """Weights and bias may be dask arrays (several chunks are brought into one)."""
    x, w, b = randn((7, 3, 9, 9), 20), randn((8, 3, 2, 2), 21), randn(8, 22)
    lazy_w = da.from_array(w, chunks=(weight_chunks, -1, -1, -1) if weight_chunks != -1 else -1)
    y = fcd.conv2d(as_dask(x, (3, 4)), lazy_w, da.from_array(b, chunks=4), stride=2)
    dout = randn(y.shape, 23)
    _, dw, db = fcd.conv2d_backward(as_dask(dout, (3, 4)), as_dask(x, (3, 4)), lazy_w, stride=2)
    assert_identical(y.compute(), expected_per_image(fastconv.conv2d, (x,), (3, 4), 0, w, b, stride=2))
    assert_identical(dw.compute(), expected_chunk_sum(fastconv.conv2d_backward, (dout, x), (3, 4), 1, w, stride=2))


def test_groups_pass_through():
    if "groups" not in inspect.signature(fastconv.conv2d).parameters:
        pytest.skip("this fastconv.conv2d has no groups= yet")
    x, w, b = randn((6, 4, 7, 7), 24), randn((6, 2, 3, 3), 25), randn(6, 26)
    chunks = (2, 0, 4)
    y = fcd.conv2d(as_dask(x, chunks), w, b, padding=1, groups=2).compute()
    assert_identical(y, expected_per_image(fastconv.conv2d, (x,), chunks, 0, w, b, padding=1, groups=2))
    dout = randn(y.shape, 27)
    dx, dw, db = compute(*fcd.conv2d_backward(as_dask(dout, chunks), as_dask(x, chunks), w, padding=1, groups=2))
    assert_identical(dx, expected_per_image(fastconv.conv2d_backward, (dout, x), chunks, 0, w, padding=1, groups=2))
    assert_identical(dw, expected_chunk_sum(fastconv.conv2d_backward, (dout, x), chunks, 1, w, padding=1, groups=2))
    assert_close_to_whole_batch(dx, fastconv.conv2d_backward(dout, x, w, padding=1, groups=2)[0], np.float64)


# ----------------------------------------------------------------------------------------------
# Bitwise identical on every scheduler and number of workers; a worker that dies
# ----------------------------------------------------------------------------------------------

def _finish_late(block, n_chunks, block_id=None):
    """Chunk 0 finishes last, the last chunk first: completion order is far from chunk order."""
    time.sleep(0.005 * (n_chunks - block_id[0]))
    return block


def _backward_case(n=41, chunks=(5, 0, 7, 11, 1, 9, 8)):
    x, w = randn((n, 3, 12, 12), 28, np.float32), randn((8, 3, 3, 3), 29, np.float32)
    dout = randn((n, 8, 12, 12), 30, np.float32)
    return dout, x, w, chunks


def test_chunk_sums_depend_on_the_order():
    """The data is sensitive to the order of the sum, so the bitwise tests below can fail."""
    dout, x, w, chunks = _backward_case()
    parts = [fastconv.conv2d_backward(dout[s], x[s], w, padding=1)[1] for s in chunk_slices(chunks)]
    assert not np.array_equal(pairwise_sum(parts), functools.reduce(operator.add, reversed(parts)))
    assert not np.array_equal(pairwise_sum(parts), functools.reduce(operator.add, parts))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_dw_db_bitwise_identical_on_every_scheduler(scheduler, client):
    dout, x, w, chunks = _backward_case()
    expected = [expected_chunk_sum(fastconv.conv2d_backward, (dout, x), chunks, i, w, padding=1) for i in (1, 2)]
    lazy_x = as_dask(x, chunks)
    if scheduler == "threads":
        lazy_x = lazy_x.map_blocks(_finish_late, len(chunks), meta=np.empty((0,) * 4, x.dtype))
    runs = [{}]
    if scheduler == "threads":
        runs = [{"num_workers": 1}, {"num_workers": 4}]
    elif scheduler == "distributed":
        one_worker = sorted(client.scheduler_info()["workers"])[:1]
        runs = [{"client": client}, {"client": client, "workers": one_worker}]
    for kwargs in runs:
        _, dw, db = compute(*fcd.conv2d_backward(as_dask(dout, chunks), lazy_x, w, padding=1),
                            scheduler=scheduler, **kwargs)
        assert_identical(dw, expected[0], f"dw {kwargs}")
        assert_identical(db, expected[1], f"db {kwargs}")


def _die_once(block, marker):
    """Kill this worker process the first time a non-empty chunk passes through."""
    if block.shape[0] and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return block


def _wait_for_workers(client, n, timeout=60):
    client.wait_for_workers(n, timeout=timeout)


def test_killed_worker_is_replaced_and_results_stay_exact(client, tmp_path):
    dout, x, w, chunks = _backward_case()
    expected = [expected_per_image(fastconv.conv2d_backward, (dout, x), chunks, 0, w, padding=1)] + [
        expected_chunk_sum(fastconv.conv2d_backward, (dout, x), chunks, i, w, padding=1) for i in (1, 2)]
    marker = str(tmp_path / "killed")
    dying_x = as_dask(x, chunks).map_blocks(_die_once, marker, meta=np.empty((0,) * 4, x.dtype))
    try:
        got = compute(*fcd.conv2d_backward(as_dask(dout, chunks), dying_x, w, padding=1),
                      scheduler="distributed", client=client)
    finally:
        _wait_for_workers(client, 2)
    assert os.path.exists(marker), "no worker was killed"
    for g, e in zip(got, expected):
        assert_identical(g, e)


# ----------------------------------------------------------------------------------------------
# Data-parallel training
# ----------------------------------------------------------------------------------------------

def build_model():
    rng = np.random.default_rng(31)
    return nn.Sequential(
        nn.Conv2D(1, 6, 3, padding=1, rng=rng), nn.BatchNorm2D(6), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Dropout(0.25, rng=rng), nn.Linear(6 * 4 * 4, 10, rng=rng),
    )


def training_data(n=45, seed=32):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, n)


TRAIN_CHUNKS = (12, 0, 7, 13, 13)


def reference_training(x, y, chunks, steps):
    """A single process, written from DataParallel's documentation: per step, every chunk in
    order runs forward/backward from the step's parameters and buffers, with the chunk's loss
    gradient weighted by n_chunk / n_batch and its generators seeded SeedSequence([s, i]); the
    chunk gradients are summed in the pairwise order; buffers come from the first non-empty
    chunk; then Adam steps. Returns the model and the losses."""
    model = build_model()
    optimizer, loss_fn = nn.Adam(model, lr=1e-2), nn.SoftmaxCrossEntropy()
    generators = list({id(g): g for g in model._generators()}.values())
    n = len(x)
    losses = []
    for _ in range(steps):
        seeds = [int(g.integers(2**63)) for g in generators]
        states = [g.bit_generator.state for g in generators]
        start_buffers = {k: v.copy() for k, v in model.buffers.items()}
        grads, chunk_losses, new_buffers = [], [], None
        for i, s in enumerate(chunk_slices(chunks)):
            xc, yc = x[s], y[s]
            if len(xc) == 0:
                grads.append({name: np.zeros_like(p) for name, p, _ in model.parameters()})
                chunk_losses.append(np.float64(0.0))
                continue
            for k, v in start_buffers.items():
                model.buffers[k][...] = v
            for g, seed in zip(generators, seeds):
                g.bit_generator.state = np.random.PCG64(np.random.SeedSequence([seed, i])).state
            model.zero_grad()
            chunk_losses.append(np.float64(loss_fn.forward(model.forward(xc), yc) * len(xc)))
            model.backward(loss_fn.backward() * (len(xc) / n))
            grads.append({name: g.copy() for name, _, g in model.parameters()})
            if new_buffers is None:
                new_buffers = {k: v.copy() for k, v in model.buffers.items()}
        for g, state in zip(generators, states):
            g.bit_generator.state = state
        model.zero_grad()
        for name, _, g in model.parameters():
            g += pairwise_sum(part[name] for part in grads)
        for k, v in new_buffers.items():
            model.buffers[k][...] = v
        optimizer.step()
        losses.append(float(pairwise_sum(chunk_losses)) / n)
    return model, losses


@pytest.fixture(scope="module")
def reference_run():
    x, y = training_data()
    return reference_training(x, y, TRAIN_CHUNKS, steps=3)


def train_data_parallel(x, y, steps, scheduler):
    model = build_model()
    optimizer = nn.Adam(model, lr=1e-2)
    parallel = fcd.DataParallel(model, nn.SoftmaxCrossEntropy(), scheduler=scheduler)
    losses = []
    for _ in range(steps):
        model.zero_grad()
        losses.append(parallel.forward_backward(x, y))
        optimizer.step()
    return model, losses


def assert_same_state(model, expected):
    state, want = model.state_dict(), expected.state_dict()
    assert state.keys() == want.keys()
    for key in want:
        assert_identical(state[key], want[key], key)


@pytest.mark.parametrize("scheduler", ["sync", "threads", "distributed"])
def test_data_parallel_training_equals_the_single_process_loop(scheduler, client, reference_run):
    x, y = training_data()
    lazy_x = as_dask(x, TRAIN_CHUNKS)
    lazy_y = as_dask(y, TRAIN_CHUNKS) if scheduler != "sync" else y  # an in-memory y is split like x
    model, losses = train_data_parallel(lazy_x, lazy_y, 3, client if scheduler == "distributed" else scheduler)
    expected_model, expected_losses = reference_run
    assert losses == expected_losses
    assert_same_state(model, expected_model)


def test_data_parallel_survives_a_killed_worker(client, tmp_path, reference_run):
    x, y = training_data()
    marker = str(tmp_path / "killed")
    dying_x = as_dask(x, TRAIN_CHUNKS).map_blocks(_die_once, marker, meta=np.empty((0,) * 4, x.dtype))
    try:
        model, losses = train_data_parallel(dying_x, as_dask(y, TRAIN_CHUNKS), 3, client)
    finally:
        _wait_for_workers(client, 2)
    assert os.path.exists(marker), "no worker was killed"
    assert losses == reference_run[1]
    assert_same_state(model, reference_run[0])


def test_data_parallel_forward_is_lazy_and_equals_each_chunk():
    model = build_model().eval()
    x, _ = training_data(19)
    chunks = (5, 0, 14)
    out = fcd.DataParallel(model).forward(as_dask(x, chunks))
    assert out.shape == (19, 10) and out.chunks == (chunks, (10,)) and out.dtype == np.float32
    expected = np.concatenate([model.forward(x[s]) for s in chunk_slices(chunks)])
    assert_identical(out.compute(scheduler="sync"), expected)


def test_data_parallel_replicas_never_touch_the_model():
    """forward_backward changes grads and buffers only; the model's caches stay its own."""
    model = build_model()
    x, y = training_data()
    params = {k: v.copy() for k, v in model.params.items()}
    model.forward(x[:3])  # caches of a last batch, which must not travel with the replicas
    parallel = fcd.DataParallel(model, nn.SoftmaxCrossEntropy(), scheduler="sync")
    parallel.forward_backward(as_dask(x, TRAIN_CHUNKS), y)
    for key, value in model.params.items():
        assert_identical(value, params[key], key)
    assert model.layers[0]._cache[0].shape[0] == 3
    assert any(np.any(g) for g in model.grads.values())


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

def _bad_calls():
    x = as_dask(randn((6, 3, 8, 8), 33), (2, 4))
    w, b = randn((4, 3, 3, 3), 34), randn(4, 35)
    dout = as_dask(randn((6, 4, 6, 6), 36), (2, 4))
    unknown = x[x[:, 0, 0, 0] > -100]  # chunk sizes unknown until computed
    y, idx = fcd.max_pool2d(x, 2)
    return [
        ("numpy x", lambda: fcd.conv2d(np.zeros((6, 3, 8, 8)), w), TypeError, r"conv2d: x must be a dask array"),
        ("list x", lambda: fcd.max_pool2d([[1.0]], 2), TypeError, r"max_pool2d: x must be a dask array"),
        ("0-d x", lambda: fcd.avg_pool2d(da.zeros(()), 2), ValueError, r"avg_pool2d: x must have a batch axis"),
        ("chunked channels", lambda: fcd.conv2d(x.rechunk({1: 1}), w), ValueError,
         r"conv2d: x must be chunked along the batch \(axis 0\) only.*x\.rechunk\(\{1: -1\}\)"),
        ("chunked rows", lambda: fcd.im2col(x.rechunk({2: 3, 3: 5}), 3), ValueError, r"x\.rechunk\(\{2: -1, 3: -1\}\)"),
        ("unknown chunks", lambda: fcd.conv2d(unknown, w), ValueError, r"conv2d: x has unknown chunk sizes"),
        ("unknown w", lambda: fcd.conv2d(x, da.from_array(w)[da.from_array(w)[:, 0, 0, 0] > -100]), ValueError,
         r"conv2d: w has unknown chunk sizes"),
        ("channels", lambda: fcd.conv2d(x, w[:, :2]), ValueError, r"conv2d: x has 3 channels but w expects 2"),
        ("3-d x", lambda: fcd.conv2d(x[:, 0], w), ValueError,
         r"conv2d: x must be a 4-D array.*N shows as 0; x\.shape=\(6, 8, 8\)"),
        ("bias", lambda: fcd.conv2d(x, w, b[:3]), ValueError, r"conv2d: b must have shape \(F,\)"),
        ("stride", lambda: fcd.conv2d(x, w, stride=0), ValueError, r"conv2d: stride must be >= 1"),
        ("kernel too big", lambda: fcd.conv2d(x, randn((4, 3, 9, 9), 37)), ValueError, r"conv2d: the kernel spans 9"),
        ("complex", lambda: fcd.conv2d(x.astype(complex), w), TypeError, r"conv2d: x must have a real"),
        ("keyword", lambda: fcd.conv2d(x, w, strides=2), TypeError, r"strides"),
        ("dout shape", lambda: fcd.conv2d_backward(dout[:, :, 1:], x, w), ValueError,
         r"conv2d_backward: dout must have the forward output's shape"),
        ("dout batch", lambda: fcd.conv2d_backward(dout[1:], x, w), ValueError,
         r"conv2d_backward: dout has a batch of 5 but x has 6"),
        ("dout chunks", lambda: fcd.conv2d_backward(dout.rechunk({0: 3}), x, w), ValueError,
         r"conv2d_backward: dout and x must have the same batch chunks.*dout\.rechunk"),
        ("numpy dout", lambda: fcd.conv2d_backward(np.zeros((6, 4, 6, 6)), x, w), TypeError,
         r"conv2d_backward: dout must be a dask array"),
        ("pool padding", lambda: fcd.max_pool2d(x, 2, padding=2), ValueError, r"max_pool2d: padding must be at most half"),
        ("input_shape batch", lambda: fcd.max_pool2d_backward(y, idx, (5, 3, 8, 8)), ValueError,
         r"max_pool2d_backward: input_shape must start with dout's batch size 6"),
        ("input_shape type", lambda: fcd.avg_pool2d_backward(y, "shape", 2), ValueError,
         r"avg_pool2d_backward: input_shape must be a sequence"),
        ("input_shape rest", lambda: fcd.avg_pool2d_backward(y, (6, 3, 8), 2), ValueError,
         r"avg_pool2d_backward: input_shape must be a sequence of 4 ints.*input_shape=\(6, 3, 8\)"),
        ("indices dtype", lambda: fcd.max_pool2d_backward(y, idx.astype(float), x.shape), TypeError,
         r"max_pool2d_backward: indices must be an integer array"),
        ("cols", lambda: fcd.col2im(as_dask(randn((6, 27, 35), 38), (6,)), (6, 3, 8, 8), 3), ValueError,
         r"col2im: cols must have shape"),
    ]


@pytest.mark.parametrize("case", _bad_calls(), ids=lambda case: case[0])
def test_bad_input_raises_at_once(case):
    _, call, error, message = case
    with pytest.raises(error, match=message):
        call()


def test_groups_refused_clearly_where_fastconv_has_none():
    if "groups" in inspect.signature(fastconv.conv2d).parameters:
        pytest.skip("this fastconv.conv2d takes groups=")
    x = as_dask(randn((2, 4, 5, 5), 39), (2,))
    with pytest.raises(TypeError, match=r"conv2d: groups=2 needs a fastconv whose conv2d takes groups="):
        fcd.conv2d(x, randn((4, 2, 3, 3), 40), groups=2)
    fcd.conv2d(x, randn((4, 4, 3, 3), 41), groups=1)  # the default is never passed on


def test_bad_indices_raise_when_computed():
    x = as_dask(randn((4, 2, 6, 6), 42), (2, 2))
    y, idx = fcd.max_pool2d(x, 2)
    dx = fcd.max_pool2d_backward(y, idx + 100, x.shape)  # values are unknown until computed
    with pytest.raises(ValueError, match=r"max_pool2d_backward: indices must lie in \[0, H\*W\)"):
        dx.compute(scheduler="sync")


def test_data_parallel_bad_input():
    model = build_model()
    x, y = training_data(10)
    lazy_x = as_dask(x, (4, 6))
    parallel = fcd.DataParallel(model, nn.SoftmaxCrossEntropy(), scheduler="sync")
    cases = [
        (lambda: fcd.DataParallel(object()), TypeError, r"DataParallel: model must be a fastconv.nn layer"),
        (lambda: fcd.DataParallel(model, loss_fn=3), TypeError, r"DataParallel: loss_fn must have forward"),
        (lambda: fcd.DataParallel(model).forward_backward(lazy_x, y), ValueError, r"has no loss_fn"),
        (lambda: parallel.forward_backward(x, y), TypeError, r"DataParallel.forward_backward: x must be a dask array"),
        (lambda: parallel.forward_backward(lazy_x, y[:9]), ValueError, r"y must have one target per image of x \(10\)"),
        (lambda: parallel.forward_backward(lazy_x, as_dask(y, (5, 5))), ValueError, r"y and x must have the same batch chunks"),
        (lambda: parallel.forward_backward(lazy_x[:0], y[:0]), ValueError, r"x holds no images"),
        (lambda: parallel.forward_backward(lazy_x[:, :, :5], y), ValueError, r"Linear.forward: x must have shape"),
        (lambda: parallel.forward(lazy_x.rechunk({2: 4})), ValueError, r"DataParallel.forward: x must be chunked"),
        (lambda: parallel.forward(lazy_x[:, :, :, :5]), ValueError, r"Linear.forward"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert not any(np.any(g) for g in model.grads.values()), "a refused call changed the gradients"


# ----------------------------------------------------------------------------------------------
# Without dask
# ----------------------------------------------------------------------------------------------

def test_import_without_dask():
    """`import fastconv` works without dask (and does not import it); fastconv.dask says what
    to install."""
    code = textwrap.dedent("""
        import sys
        sys.modules["dask"] = None  # as if dask were not installed: importing it fails
        import fastconv
        assert "fastconv.dask" not in sys.modules
        try:
            import fastconv.dask
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("fastconv.dask imported without dask")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'pip install "fastconv[dask]"' in result.stdout


def test_import_fastconv_does_not_import_dask():
    code = "import sys, fastconv; print('dask' in sys.modules, 'distributed' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
