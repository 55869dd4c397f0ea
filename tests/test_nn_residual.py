"""fastconv.nn's residual-network pieces and schedules: Residual, Identity, LeakyReLU, a settable
optimizer lr, StepLR and CosineAnnealingLR; against torch.nn and torch.optim."""

import numpy as np
import pytest

from fastconv import nn
from helpers import randn

torch = pytest.importorskip("torch")

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


class TorchResidual(torch.nn.Module):
    def __init__(self, block, shortcut=None):
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x):
        return self.block(x) + (x if self.shortcut is None else self.shortcut(x))


def basic_blocks(dtype, downsample):
    """A ResNet basic block (conv-BN-ReLU-conv-BN + shortcut) in both libraries, same weights."""
    c_out, stride = (8, 2) if downsample else (4, 1)

    def ours_block():
        return nn.Sequential(nn.Conv2D(4, c_out, 3, stride=stride, padding=1, bias=False, dtype=dtype, rng=1),
                             nn.BatchNorm2D(c_out, dtype=dtype), nn.ReLU(dtype=dtype),
                             nn.Conv2D(c_out, c_out, 3, padding=1, bias=False, dtype=dtype, rng=2),
                             nn.BatchNorm2D(c_out, dtype=dtype))

    def torch_block():
        return torch.nn.Sequential(torch.nn.Conv2d(4, c_out, 3, stride=stride, padding=1, bias=False),
                                   torch.nn.BatchNorm2d(c_out), torch.nn.ReLU(),
                                   torch.nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                                   torch.nn.BatchNorm2d(c_out))

    if downsample:
        ours = nn.Residual(ours_block(), nn.Sequential(nn.Conv2D(4, c_out, 1, stride=2, bias=False, dtype=dtype, rng=3),
                                                       nn.BatchNorm2D(c_out, dtype=dtype)))
        theirs = TorchResidual(torch_block(), torch.nn.Sequential(torch.nn.Conv2d(4, c_out, 1, stride=2, bias=False),
                                                                  torch.nn.BatchNorm2d(c_out)))
    else:
        ours, theirs = nn.Residual(ours_block()), TorchResidual(torch_block())
    ours = nn.Sequential(ours, nn.ReLU(dtype=dtype))
    theirs = torch.nn.Sequential(theirs, torch.nn.ReLU()).to(TORCH_DTYPE[dtype])
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            param.copy_(torch.from_numpy(ours.params[name]))
    return ours, theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("downsample", [False, True])
def test_residual_block_matches_torch(active_backend, dtype, downsample):
    ours, theirs = basic_blocks(dtype, downsample)
    assert set(ours.params) == {name for name, _ in theirs.named_parameters()}
    x, = [randn(3, 4, 6, 6, seed=5, dtype=dtype)]
    tx = torch.from_numpy(x.copy()).requires_grad_()
    for mode in ("train", "eval"):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        ours.zero_grad()
        for p in theirs.parameters():
            p.grad = None
        tx.grad = None
        y = ours.forward(x)
        ty = theirs(tx)
        np.testing.assert_allclose(y, ty.detach().numpy(), **TOL[dtype])
        dout = randn(*y.shape, seed=6, dtype=dtype)
        dx = ours.backward(dout)
        ty.backward(torch.from_numpy(dout))
        np.testing.assert_allclose(dx, tx.grad.numpy(), **TOL[dtype])
        for name, param in theirs.named_parameters():
            np.testing.assert_allclose(ours.grads[name], param.grad.numpy(), **TOL[dtype], err_msg=name)
    for name, buffer in theirs.named_buffers():
        if not name.endswith("num_batches_tracked"):
            np.testing.assert_allclose(ours.buffers[name], buffer.numpy(), **TOL[dtype], err_msg=name)


@pytest.mark.parametrize("shortcut", [None, "conv"])
def test_residual_gradients_match_central_differences(active_backend, shortcut):
    block = nn.Sequential(nn.Conv2D(2, 2, 3, padding=1, dtype=np.float64, rng=0), nn.Tanh(dtype=np.float64),
                          nn.Conv2D(2, 2, 3, padding=1, dtype=np.float64, rng=1))
    short = None if shortcut is None else nn.Conv2D(2, 2, 1, dtype=np.float64, rng=2)
    assert nn.gradcheck(nn.Residual(block, short), randn(2, 2, 5, 5, seed=1)) < 1e-6


def test_residual_save_load_names_and_errors(tmp_path):
    model = nn.Sequential(nn.Residual(nn.Sequential(nn.Conv2D(2, 2, 3, padding=1, rng=0), nn.BatchNorm2D(2))),
                          nn.Residual(nn.Conv2D(2, 4, 1, rng=1), nn.Conv2D(2, 4, 1, rng=2)))
    assert sorted(model.params) == ["0.block.0.bias", "0.block.0.weight", "0.block.1.bias", "0.block.1.weight",
                                    "1.block.bias", "1.block.weight", "1.shortcut.bias", "1.shortcut.weight"]
    assert "0.block.1.running_mean" in model.buffers
    model.forward(randn(2, 2, 4, 4, dtype=np.float32))  # moves the running statistics
    model.save(tmp_path / "m.npz")
    other = nn.Sequential(nn.Residual(nn.Sequential(nn.Conv2D(2, 2, 3, padding=1, rng=5), nn.BatchNorm2D(2))),
                          nn.Residual(nn.Conv2D(2, 4, 1, rng=6), nn.Conv2D(2, 4, 1, rng=7)))
    other.load(tmp_path / "m.npz")
    for key, value in model.state_dict().items():
        assert np.array_equal(other.state_dict()[key], value), key
    # train()/eval() and zero_grad reach the layers inside.
    other.eval()
    assert not other[0].block[1].training
    other[1].block.grads["weight"][...] = 1
    other.zero_grad()
    assert not other[1].block.grads["weight"].any()
    with pytest.raises(ValueError, match=r"Residual.forward: the block's output has shape \(1, 4, 3, 3\) but its input has shape \(1, 2, 3, 3\)"):
        nn.Residual(nn.Conv2D(2, 4, 1)).forward(np.ones((1, 2, 3, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="Residual: shortcut must be a fastconv.nn layer, got function"):
        nn.Residual(nn.Identity(), shortcut=lambda x: x)
    with pytest.raises(nn.BackwardBeforeForwardError):
        nn.Residual(nn.Identity()).backward(np.ones(3))


def test_identity_passes_through():
    layer = nn.Identity(dtype=np.float64)
    x = randn(2, 3)
    assert layer.forward(x) is x
    assert np.array_equal(layer.backward(x * 2), x * 2)
    assert layer.forward([1, 2]).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [0.01, 0.2, 0.0, -0.5, 3.0])
def test_leaky_relu_matches_torch(dtype, slope):
    x = randn(4, 5, seed=2, dtype=dtype)
    x[0, :3] = [0.0, -0.0, np.nan]
    dout = randn(4, 5, seed=3, dtype=dtype)
    layer = nn.LeakyReLU(slope, dtype=dtype)
    y, dx = layer.forward(x), layer.backward(dout)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.nn.functional.leaky_relu(tx, slope)
    ty.backward(torch.from_numpy(dout))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(dx, tx.grad.numpy())
    assert y.dtype == dx.dtype == dtype


def test_leaky_relu_refuses_bad_slopes():
    with pytest.raises(TypeError, match="negative_slope must be a real number"):
        nn.LeakyReLU("0.1")
    with pytest.raises(ValueError, match="negative_slope must be finite"):
        nn.LeakyReLU(float("inf"))


def _optimizers(lr):
    layer = nn.Linear(3, 2, dtype=np.float64, rng=0)
    tparam = torch.nn.Parameter(torch.zeros(2))
    return nn.SGD(layer, lr=lr, momentum=0.9), torch.optim.SGD([tparam], lr=lr, momentum=0.9)


@pytest.mark.parametrize("make, make_torch", [
    (lambda o: nn.StepLR(o, 3), lambda o: torch.optim.lr_scheduler.StepLR(o, 3)),
    (lambda o: nn.StepLR(o, step_size=2, gamma=0.7), lambda o: torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.7)),
    (lambda o: nn.CosineAnnealingLR(o, 10), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10)),
    (lambda o: nn.CosineAnnealingLR(o, T_max=4, eta_min=0.01),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 4, eta_min=0.01)),
    (lambda o: nn.CosineAnnealingLR(o, 1), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 1)),
])
def test_schedules_give_torchs_learning_rates_exactly(make, make_torch):
    ours, theirs = _optimizers(0.1)
    schedule, torch_schedule = make(ours), make_torch(theirs)
    assert schedule.get_last_lr() == torch_schedule.get_last_lr()[0] == 0.1
    for epoch in range(1, 31):
        theirs.step()
        schedule.step()
        torch_schedule.step()
        if epoch == 12:  # a rate set by hand is carried forward the same way
            ours.lr = theirs.param_groups[0]["lr"] = 0.05
        assert ours.lr == theirs.param_groups[0]["lr"], epoch
        assert schedule.get_last_lr() == ours.lr


def test_learning_rate_is_settable_and_checked():
    optimizer = nn.Adam(nn.Linear(2, 2), lr=1e-3)
    optimizer.lr = 0.5
    assert optimizer.lr == 0.5
    with pytest.raises(ValueError, match=r"Adam: lr must be >= 0.0, got -1.0"):
        optimizer.lr = -1
    with pytest.raises(TypeError, match="SGD: lr must be a real number"):
        nn.SGD(nn.Linear(2, 2), lr="fast")


def test_schedules_refuse_bad_arguments():
    optimizer = nn.SGD(nn.Linear(2, 2), lr=0.1)
    with pytest.raises(TypeError, match="StepLR: optimizer must be a fastconv.nn optimizer"):
        nn.StepLR(object(), 2)
    with pytest.raises(ValueError, match="StepLR: step_size must be a positive int, got 0"):
        nn.StepLR(optimizer, 0)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max must be a positive int, got 2.5"):
        nn.CosineAnnealingLR(optimizer, 2.5)
    with pytest.raises(ValueError, match="CosineAnnealingLR: eta_min must be a finite real number"):
        nn.CosineAnnealingLR(optimizer, 3, eta_min=float("nan"))
