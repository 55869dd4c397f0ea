"""fastconv.nn's dense-layer and optimizer kernels (backend functions linear, linear_backward,
sgd_update, adam_update): compiled against the NumPy twins and torch, bitwise for every thread
count, gradients accumulated in place."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv import _backend, nn
from conftest import AVAILABLE_BACKENDS
from helpers import randn

from helpers import optional_torch
torch = optional_torch()  # torch comparisons skip without torch; the rest runs

needs_compiled = pytest.mark.skipif("cython" not in AVAILABLE_BACKENDS, reason="compiled backend missing")
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _linear_case(m, n, k, dtype, seed=0):
    return (randn(m, k, seed=seed, dtype=dtype), randn(n, k, seed=seed + 1, dtype=dtype),
            randn(n, seed=seed + 2, dtype=dtype), randn(m, n, seed=seed + 3, dtype=dtype))


def _run_linear(kernels, x, w, b, dout, grad_w0, grad_b0):
    y = kernels.linear(x, w, b)
    grad_w, grad_b = grad_w0.copy(), None if grad_b0 is None else grad_b0.copy()
    dx = kernels.linear_backward(dout, x, w, grad_w, grad_b)
    return y, dx, grad_w, grad_b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(m=st.integers(1, 150), n=st.integers(1, 40), k=st.integers(1, 300), bias=st.booleans())
def test_linear_kernels_match_torch_and_accumulate(kernel_module, dtype, m, n, k, bias):
    x, w, b, dout = _linear_case(m, n, k, dtype, seed=m + n + k)
    b = b if bias else None
    grad_w0 = randn(n, k, seed=7, dtype=dtype)           # gradients are added into these
    grad_b0 = randn(n, seed=8, dtype=dtype) if bias else None
    y, dx, grad_w, grad_b = _run_linear(kernel_module, x, w, b, dout, grad_w0, grad_b0)
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    tb = None if b is None else torch.from_numpy(b).requires_grad_()
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.from_numpy(dout))
    assert y.dtype == dx.dtype == dtype and y.shape == (m, n) and dx.shape == (m, k)
    scale = np.sqrt(k)  # sums of k products of unit normals
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=TOL[dtype]["rtol"] * scale, atol=TOL[dtype]["atol"] * scale)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=TOL[dtype]["rtol"] * 10, atol=TOL[dtype]["atol"] * np.sqrt(n) * 10)
    np.testing.assert_allclose(grad_w - grad_w0, tw.grad.numpy(), rtol=TOL[dtype]["rtol"] * np.sqrt(m) * 10,
                               atol=TOL[dtype]["atol"] * np.sqrt(m) * 10)
    if bias:
        np.testing.assert_allclose(grad_b - grad_b0, tb.grad.numpy(), rtol=TOL[dtype]["rtol"] * np.sqrt(m) * 10,
                                   atol=TOL[dtype]["atol"] * np.sqrt(m) * 10)


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(1, 10, 8192), (50, 100, 8192), (128, 10, 4096), (300, 64, 33), (7, 513, 129)])
def test_linear_is_bitwise_identical_for_every_thread_count(dtype, m, n, k):
    x, w, b, dout = _linear_case(m, n, k, dtype)
    kernels = _backend.kernels("cython")
    results = []
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        results.append(_run_linear(kernels, x, w, b, dout, np.zeros((n, k), dtype), np.zeros(n, dtype)))
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert np.array_equal(a, c)
    # The column sums for db are NumPy's order, so the compiled db equals the reference bitwise.
    reference = _run_linear(_backend.kernels("reference"), x, w, b, dout, np.zeros((n, k), dtype), np.zeros(n, dtype))
    assert np.array_equal(results[0][3], reference[3])


def _optimizer_state(size, dtype, seed):
    return {name: randn(size, seed=seed + i, dtype=dtype) for i, name in enumerate(("param", "grad", "a", "b"))}


SGD_SETTINGS = [
    dict(momentum=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, weight_decay=0.0, nesterov=False),
    dict(momentum=0.8, weight_decay=0.01, nesterov=False),
    dict(momentum=0.9, weight_decay=1e-4, nesterov=True),
    dict(momentum=0.0, weight_decay=0.1, nesterov=False),
]


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 17, (1 << 15) - 1, (1 << 15) + 1, 3 * (1 << 15) + 5])
@pytest.mark.parametrize("settings", SGD_SETTINGS)
def test_sgd_kernel_equals_numpy_twin_bitwise_at_every_thread_count(dtype, size, settings):
    results = []
    for kernels, threads in [(_backend.kernels("reference"), 1)] + [(_backend.kernels("cython"), t) for t in (1, 2, 3)]:
        fastconv.set_num_threads(threads)
        s = _optimizer_state(size, dtype, seed=size)
        buf = s["a"] if settings["momentum"] else None
        for first in (True, False, False):
            kernels.sgd_update(s["param"], s["grad"], buf, 0.05, settings["momentum"],
                               settings["weight_decay"], settings["nesterov"], first)
        results.append((s["param"], buf))
    for param, buf in results[1:]:
        assert np.array_equal(param, results[0][0])
        assert buf is None or np.array_equal(buf, results[0][1])


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 17, (1 << 15) + 1, 3 * (1 << 15) + 5])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_kernel_equals_numpy_twin_bitwise_at_every_thread_count(dtype, size, weight_decay):
    results = []
    for kernels, threads in [(_backend.kernels("reference"), 1)] + [(_backend.kernels("cython"), t) for t in (1, 2, 3)]:
        fastconv.set_num_threads(threads)
        s = _optimizer_state(size, dtype, seed=size)
        s["a"][...] = 0
        s["b"][...] = 0
        for t in (1, 2, 3):
            kernels.adam_update(s["param"], s["grad"], s["a"], s["b"], 1e-3 / (1 - 0.9**t), 0.9, 0.999,
                                np.sqrt(1 - 0.999**t), 1e-8, weight_decay)
        results.append((s["param"], s["a"], s["b"]))
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert np.array_equal(a, c)


def _twin_models(dtype):
    """A small MLP in fastconv.nn and torch.nn with identical weights."""
    ours = nn.Sequential(nn.Linear(20, 16, dtype=dtype, rng=0), nn.ReLU(dtype=dtype), nn.Linear(16, 5, dtype=dtype, rng=1))
    theirs = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    theirs = theirs.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            param.copy_(torch.from_numpy(ours.params[name]))
    return ours, theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, make_torch", [
    (lambda m: nn.SGD(m, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)),
    (lambda m: nn.Adam(m, lr=1e-2, weight_decay=1e-3), lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3)),
])
def test_training_steps_follow_torch(active_backend, dtype, make, make_torch):
    ours, theirs = _twin_models(dtype)
    optimizer, torch_optimizer = make(ours), make_torch(theirs.parameters())
    loss_fn = nn.SoftmaxCrossEntropy()
    x, labels = randn(32, 20, seed=3, dtype=dtype), np.arange(32) % 5
    for _ in range(5):
        loss = loss_fn.forward(ours.forward(x), labels)
        ours.zero_grad()
        ours.backward(loss_fn.backward())
        optimizer.step()
        torch_optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(labels))
        torch_loss.backward()
        torch_optimizer.step()
        assert loss == pytest.approx(torch_loss.item(), rel=1e-4 if dtype == np.float32 else 1e-10)
    for name, param in theirs.named_parameters():
        np.testing.assert_allclose(ours.params[name], param.detach().numpy(),
                                   **(dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)))


def test_optimizers_refuse_parameters_they_cannot_update_in_place():
    layer = nn.Linear(3, 2)
    layer.params["weight"] = np.asfortranarray(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="parameter 'weight' and its gradient must be writable C-contiguous"):
        nn.SGD(layer, lr=0.1)
    layer = nn.Linear(3, 2)
    layer.grads["bias"] = np.zeros(2)  # float64 gradient of a float32 parameter
    with pytest.raises(TypeError, match="parameter 'bias'"):
        nn.Adam(layer)
