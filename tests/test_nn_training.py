"""fastconv.nn training pieces: SoftmaxCrossEntropy, SGD, Adam, a short training run, save/load."""

import numpy as np
import pytest
from helpers import optional_torch
torch = optional_torch()  # torch comparisons skip without torch; the rest runs
F = torch.nn.functional

import fastconv
from fastconv import nn
from helpers import randn



# ----------------------------------------------------------------------------------------------
# SoftmaxCrossEntropy
# ----------------------------------------------------------------------------------------------

def _torch_loss_and_grad(logits, target):
    lt = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(lt, torch.tensor(target))
    loss.backward()
    return loss.item(), lt.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["labels", "one-hot", "probabilities"])
def test_cross_entropy_matches_torch(kind, dtype):
    logits = 3 * randn(6, 5, dtype=dtype)
    labels = np.array([0, 4, 2, 2, 1, 3])
    if kind == "labels":
        target = labels
    elif kind == "one-hot":
        target = np.eye(5, dtype=dtype)[labels]
    else:
        target = np.random.default_rng(1).dirichlet(np.ones(5), size=6).astype(dtype)
    loss_fn = nn.SoftmaxCrossEntropy()
    loss = loss_fn.forward(logits, target)
    dlogits = loss_fn.backward()
    expected_loss, expected_grad = _torch_loss_and_grad(logits, target)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected_loss, **{"rel": tol["rtol"], "abs": tol["atol"]})
    assert dlogits.dtype == dtype and dlogits.shape == logits.shape
    np.testing.assert_allclose(dlogits, expected_grad, **tol)


def test_cross_entropy_is_numerically_stable():
    logits = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4 + 1.0, -1e4 + 2.0]])
    labels = np.array([2, 0])
    loss_fn = nn.SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = loss_fn.forward(logits, labels)
        dlogits = loss_fn.backward()
    expected_loss, expected_grad = _torch_loss_and_grad(logits, labels)
    assert np.isfinite(loss) and loss == pytest.approx(expected_loss, rel=1e-12)
    np.testing.assert_allclose(dlogits, expected_grad, rtol=1e-12, atol=1e-15)


def test_cross_entropy_errors():
    loss_fn = nn.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match="before forward"):
        loss_fn.backward()
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        loss_fn.forward(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        loss_fn.forward(logits, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="labels"):
        loss_fn.forward(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="integers"):
        loss_fn.forward(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        loss_fn.forward(logits, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="2-D"):
        loss_fn.forward(np.zeros(4), np.array([1]))
    with pytest.raises(ValueError, match="non-empty"):
        loss_fn.forward(np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(TypeError):
        loss_fn.forward(np.zeros((3, 4), dtype=complex), np.array([0, 1, 2]))


# ----------------------------------------------------------------------------------------------
# Optimizers against torch.optim
# ----------------------------------------------------------------------------------------------

def _twin_models(dtype=np.float64):
    """The same small CNN in fastconv.nn and torch.nn, with identical weights."""
    ours = nn.Sequential(
        nn.Conv2D(2, 3, 3, padding=1, rng=0, dtype=dtype), nn.ReLU(dtype=dtype), nn.MaxPool2D(2, dtype=dtype),
        nn.Flatten(dtype=dtype), nn.Linear(12, 4, rng=1, dtype=dtype),
    )
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(12, 4),
    ).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            param.copy_(torch.from_numpy(ours.params[name]))
    return ours, theirs


OPTIMIZERS = [
    ("sgd", dict(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    ("sgd-momentum", dict(lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    ("sgd-momentum-wd", dict(lr=0.05, momentum=0.8, weight_decay=0.01),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, weight_decay=0.01)),
    ("sgd-nesterov", dict(lr=0.05, momentum=0.9, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    ("adam", dict(lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    ("adam-betas-wd", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
     lambda p: torch.optim.Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
]


@pytest.mark.parametrize("name, kwargs, make_torch", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_optimizer_matches_torch_over_several_steps(active_backend, name, kwargs, make_torch):
    ours, theirs = _twin_models()
    opt = (nn.SGD if name.startswith("sgd") else nn.Adam)(ours, **kwargs)
    topt = make_torch(theirs.parameters())
    loss_fn = nn.SoftmaxCrossEntropy()
    for step in range(6):
        x, y = randn(5, 2, 4, 4, seed=step), np.random.default_rng(step).integers(0, 4, 5)
        ours.zero_grad()
        loss = loss_fn.forward(ours.forward(x), y)
        ours.backward(loss_fn.backward())
        opt.step()
        topt.zero_grad()
        tloss = F.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-9)
    for pname, param in theirs.named_parameters():
        np.testing.assert_allclose(ours.params[pname], param.detach().numpy(), rtol=1e-8, atol=1e-10, err_msg=pname)


def test_optimizer_updates_float32_in_place():
    layer = nn.Linear(3, 2, rng=0)
    weight = layer.params["weight"]
    before = weight.copy()
    layer.grads["weight"][...] = 1.0
    nn.Adam(layer, lr=0.1).step()
    assert layer.params["weight"] is weight and weight.dtype == np.float32
    np.testing.assert_allclose(weight, before - 0.1, rtol=1e-5)  # Adam's first step is lr * sign(g)


def test_optimizer_errors():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="lr"):
        nn.SGD(model, lr=-1)
    with pytest.raises(ValueError, match="momentum"):
        nn.SGD(model, lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="Nesterov"):
        nn.SGD(model, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        nn.Adam(model, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="betas"):
        nn.Adam(model, betas=0.9)
    with pytest.raises(ValueError, match="weight_decay"):
        nn.Adam(model, weight_decay=-1)
    with pytest.raises(TypeError, match="lr"):
        nn.SGD(model, lr="0.1")
    with pytest.raises(ValueError, match="no parameters"):
        nn.SGD(nn.Sequential(nn.ReLU()), lr=0.1)
    with pytest.raises(TypeError, match="model"):
        nn.SGD([1, 2], lr=0.1)


# ----------------------------------------------------------------------------------------------
# A short training run
# ----------------------------------------------------------------------------------------------

def test_short_training_run_reduces_loss(active_backend):
    """Separate two classes of 6x6 images (a bright top half vs a bright bottom half)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 64)
    x = 0.3 * rng.standard_normal((64, 1, 6, 6)).astype(np.float32)
    x[labels == 0, :, :3] += 1.0
    x[labels == 1, :, 3:] += 1.0
    model = nn.Sequential(
        nn.Conv2D(1, 4, 3, padding=1, rng=1), nn.BatchNorm2D(4), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Dropout(0.1, rng=2), nn.Linear(36, 2, rng=3),
    )
    loss_fn, opt = nn.SoftmaxCrossEntropy(), nn.SGD(model, lr=0.1, momentum=0.9)
    losses = []
    for step in range(30):
        batch = rng.choice(64, 16, replace=False)
        model.zero_grad()
        losses.append(loss_fn.forward(model.forward(x[batch]), labels[batch]))
        model.backward(loss_fn.backward())
        opt.step()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    model.eval()
    accuracy = (model.forward(x).argmax(axis=1) == labels).mean()
    assert accuracy > 0.9


# ----------------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------------

def _model(seed):
    return nn.Sequential(nn.Conv2D(1, 2, 3, rng=seed), nn.BatchNorm2D(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8, 3, rng=seed + 1))


def test_save_load_round_trip(tmp_path):
    a = _model(0)
    a.forward(randn(4, 1, 4, 4, dtype=np.float32))  # move the running statistics off their start
    path = tmp_path / "model.npz"
    a.save(path)
    with np.load(path, allow_pickle=False) as archive:
        assert set(archive.files) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                      "1.running_var", "4.weight", "4.bias"}
    b = _model(5)
    arrays_before = {k: id(v) for k, v in b.state_dict().items()}
    b.load(path)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[key], value)
    assert {k: id(v) for k, v in b.state_dict().items()} == arrays_before  # loaded in place
    x = randn(2, 1, 4, 4, seed=3, dtype=np.float32)
    np.testing.assert_array_equal(a.eval().forward(x), b.eval().forward(x))


def test_save_load_grouped_and_transposed_layers(tmp_path):
    """Grouped and depthwise weights (F, C/groups, KH, KW) and ConvTranspose2D's (C, F/groups,
    KH, KW) go through save/load unchanged, and the loaded model computes the same."""
    def model(seed):
        return nn.Sequential(nn.Conv2D(2, 4, 3, padding="same", rng=seed), nn.Conv2D(4, 8, 3, groups=4, rng=seed),
                             nn.ReLU(), nn.ConvTranspose2D(8, 4, 2, stride=2, groups=2, rng=seed))
    a, b = model(0), model(1)
    assert a.params["1.weight"].shape == (8, 1, 3, 3) and a.params["3.weight"].shape == (8, 2, 2, 2)
    a.save(tmp_path / "model.npz")
    b.load(tmp_path / "model.npz")
    x = randn(2, 2, 6, 6, dtype=np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    assert b.forward(x).shape == (2, 4, 8, 8)


def test_save_appends_npz_and_load_finds_it(tmp_path):
    a, b = _model(0), _model(1)
    a.save(tmp_path / "weights")  # np.savez adds .npz
    b.load(tmp_path / "weights")
    np.testing.assert_array_equal(a.params["4.weight"], b.params["4.weight"])


def _assert_unchanged_after(model, action, error, match):
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=match):
        action()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_load_rejects_mismatched_keys_and_shapes(tmp_path):
    model = _model(0)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    missing = dict(state)
    del missing["4.bias"]
    np.savez(tmp_path / "missing.npz", **missing)
    _assert_unchanged_after(model, lambda: model.load(tmp_path / "missing.npz"), ValueError, "missing.*4.bias")
    np.savez(tmp_path / "extra.npz", **state, **{"9.weight": np.ones(2)})
    _assert_unchanged_after(model, lambda: model.load(tmp_path / "extra.npz"), ValueError, "unexpected.*9.weight")
    wrong = dict(state)
    wrong["0.bias"] = np.zeros(2) + 5.0
    wrong["4.weight"] = np.zeros((3, 9))
    np.savez(tmp_path / "shape.npz", **wrong)
    _assert_unchanged_after(model, lambda: model.load(tmp_path / "shape.npz"), ValueError, r"4.weight.*\(3, 9\)")


def test_load_never_unpickles_and_rejects_bad_files(tmp_path):
    model = _model(0)
    state = dict(model.state_dict())
    state["0.bias"] = np.array([{"evil": 1}, None], dtype=object)  # stored with pickle
    np.savez(tmp_path / "pickled.npz", **state)
    _assert_unchanged_after(model, lambda: model.load(tmp_path / "pickled.npz"), ValueError, "unpickl|pickle")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    _assert_unchanged_after(model, lambda: model.load(tmp_path / "garbage.npz"), ValueError, "npz")
    np.save(tmp_path / "single.npy", np.ones(3))
    _assert_unchanged_after(model, lambda: model.load(tmp_path / "single.npy"), ValueError, "single array")
    with pytest.raises(FileNotFoundError):
        model.load(tmp_path / "does-not-exist.npz")
