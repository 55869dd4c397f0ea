"""fastconv.nn layers: gradients by central differences, agreement with torch.nn, errors."""

import numpy as np
import pytest
from helpers import optional_torch
torch = optional_torch()  # torch comparisons skip without torch; the rest runs

import fastconv
from fastconv import nn
from helpers import randn

# torch warns that an even total "same" padding needs a padded copy of its input.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def away_from_zero(*shape, seed=0):
    """Values with |x| >= 0.1, so ReLU's kink is never within a finite-difference step."""
    x = randn(*shape, seed=seed)
    return np.where(x >= 0, x + 0.1, x - 0.1)


def distinct(*shape, seed=0):
    """A random permutation of well-separated values: max pooling never sees near-ties."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.1 - n * 0.05).reshape(shape)


def t(a, grad=False):
    return torch.tensor(np.asarray(a), requires_grad=grad)


# ----------------------------------------------------------------------------------------------
# Central differences
# ----------------------------------------------------------------------------------------------

F64 = dict(dtype=np.float64)

GRADCHECK_CASES = [
    ("conv2d", lambda: nn.Conv2D(2, 3, 3, stride=2, padding=1, rng=0, **F64), lambda: randn(2, 2, 5, 6)),
    ("conv2d-dilated-nobias", lambda: nn.Conv2D(2, 2, (2, 3), padding=(0, 2), dilation=(2, 1), bias=False, rng=1, **F64),
     lambda: randn(1, 2, 5, 4)),
    ("conv1d", lambda: nn.Conv1D(2, 3, 3, stride=2, padding=1, dilation=2, rng=2, **F64), lambda: randn(2, 2, 9)),
    ("conv2d-grouped", lambda: nn.Conv2D(4, 6, (3, 2), stride=(1, 2), padding=1, groups=2, rng=9, **F64),
     lambda: randn(2, 4, 5, 5)),
    ("conv2d-depthwise-same", lambda: nn.Conv2D(3, 6, 2, padding="same", groups=3, rng=10, **F64),
     lambda: randn(2, 3, 5, 4)),
    ("conv1d-grouped-valid", lambda: nn.Conv1D(4, 2, 3, padding="valid", groups=2, bias=False, rng=11, **F64),
     lambda: randn(2, 4, 7)),
    ("convtranspose2d", lambda: nn.ConvTranspose2D(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                                   dilation=(1, 2), rng=12, **F64), lambda: randn(2, 4, 3, 4)),
    ("linear", lambda: nn.Linear(4, 3, rng=3, **F64), lambda: randn(5, 4)),
    ("linear-3d", lambda: nn.Linear(4, 3, bias=False, rng=3, **F64), lambda: randn(2, 3, 4)),
    ("maxpool", lambda: nn.MaxPool2D(3, stride=2, padding=1, **F64), lambda: distinct(2, 2, 5, 5)),
    ("avgpool", lambda: nn.AvgPool2D((2, 3), stride=(1, 2), padding=(1, 1), **F64), lambda: randn(2, 2, 4, 5)),
    ("maxpool-dilated-ceil", lambda: nn.MaxPool2D(3, 2, 1, dilation=(2, 1), ceil_mode=True, **F64),
     lambda: distinct(2, 2, 6, 7)),
    ("maxpool1d", lambda: nn.MaxPool1D(3, 2, 1, dilation=2, ceil_mode=True, **F64), lambda: distinct(2, 3, 10)),
    ("avgpool-options", lambda: nn.AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False, **F64),
     lambda: randn(2, 2, 6, 5)),
    ("avgpool-divisor", lambda: nn.AvgPool2D(2, 1, divisor_override=3, **F64), lambda: randn(1, 2, 4, 4)),
    ("avgpool1d", lambda: nn.AvgPool1D(4, 3, 2, ceil_mode=True, count_include_pad=False, **F64),
     lambda: randn(2, 2, 9)),
    ("adaptive", lambda: nn.AdaptiveAvgPool2D((3, None), **F64), lambda: randn(2, 2, 7, 4)),
    ("adaptive-global", lambda: nn.AdaptiveAvgPool2D(1, **F64), lambda: randn(3, 4, 3, 5)),
    ("relu", lambda: nn.ReLU(**F64), lambda: away_from_zero(3, 4)),
    ("sigmoid", lambda: nn.Sigmoid(**F64), lambda: 3 * randn(3, 4)),
    ("tanh", lambda: nn.Tanh(**F64), lambda: randn(3, 4)),
    ("flatten", lambda: nn.Flatten(**F64), lambda: randn(2, 3, 2)),
    ("batchnorm1d", lambda: nn.BatchNorm1D(3, **F64), lambda: randn(5, 3)),
    ("batchnorm1d-ncl", lambda: nn.BatchNorm1D(3, **F64), lambda: randn(2, 3, 4)),
    ("batchnorm2d", lambda: nn.BatchNorm2D(2, **F64), lambda: randn(3, 2, 2, 3)),
    ("batchnorm2d-noaffine", lambda: nn.BatchNorm2D(2, affine=False, **F64), lambda: randn(3, 2, 2, 2)),
    ("dropout", lambda: nn.Dropout(0.4, rng=5, **F64), lambda: randn(4, 5)),
    ("sequential", lambda: nn.Sequential(
        nn.Conv2D(1, 2, 3, padding=1, rng=6, **F64), nn.BatchNorm2D(2, **F64), nn.Tanh(**F64),
        nn.AvgPool2D(2, **F64), nn.Flatten(**F64), nn.Dropout(0.3, rng=7, **F64), nn.Linear(8, 3, rng=8, **F64),
    ), lambda: randn(3, 1, 4, 4)),
]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name, make_layer, make_x", GRADCHECK_CASES, ids=[c[0] for c in GRADCHECK_CASES])
def test_gradients_match_central_differences(active_backend, name, make_layer, make_x, mode):
    layer = make_layer()
    if "batchnorm" in name:
        # Non-trivial running statistics and affine parameters, so eval mode is not identity.
        layer.buffers["running_mean"][...] = randn(layer.num_features, seed=11)
        layer.buffers["running_var"][...] = 0.5 + np.abs(randn(layer.num_features, seed=12))
        for key, value in layer.params.items():
            value[...] = randn(*value.shape, seed=13) + (1.0 if key == "weight" else 0.0)
    layer.train(mode == "train")
    assert nn.gradcheck(layer, make_x()) < 1e-6


def test_gradcheck_has_no_side_effects():
    layer = nn.Sequential(nn.BatchNorm1D(3, **F64), nn.Dropout(0.5, rng=0, **F64), nn.Linear(3, 2, rng=0, **F64))
    layer[2].grads["weight"][...] = 7.0
    state = {k: v.copy() for k, v in layer.state_dict().items()}
    draw_before = np.random.default_rng(0).random()  # what Dropout's rng would draw next
    nn.gradcheck(layer, randn(4, 3))
    assert np.all(layer[2].grads["weight"] == 7.0)
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    assert layer[1].rng.random() == draw_before


class _WrongWeightGradient(nn.Linear):
    """A Linear layer whose weight gradient is off by 1% (a subtle, realistic bug)."""

    def backward(self, dout):
        before = self.grads["weight"].copy()
        dx = super().backward(dout)
        self.grads["weight"][...] = before + 1.01 * (self.grads["weight"] - before)
        return dx


class _WrongInputGradient(nn.Tanh):
    """Tanh with the derivative 1 - y (instead of 1 - y**2)."""

    def backward(self, dout):
        y = self._need_cache()
        return dout * (1 - y)


class _OneWrongElement(nn.Conv2D):
    """A convolution whose dx is wrong in a single element."""

    def backward(self, dout):
        dx = super().backward(dout)
        dx[0, 0, 1, 1] += 0.05 * np.abs(dx).max()
        return dx


@pytest.mark.parametrize("layer, x", [
    (_WrongWeightGradient(4, 3, rng=0, **F64), randn(5, 4)),
    (_WrongInputGradient(**F64), randn(3, 3)),
    (_OneWrongElement(2, 2, 3, padding=1, rng=0, **F64), randn(2, 2, 4, 4)),
], ids=["weight-1%", "dx-formula", "dx-one-element"])
def test_gradcheck_detects_wrong_gradients(layer, x):
    assert nn.gradcheck(layer, x) > 1e-3


def test_gradcheck_refuses_float32_and_bad_arguments():
    with pytest.raises(ValueError, match="float64"):
        nn.gradcheck(nn.Linear(3, 2), randn(2, 3))
    with pytest.raises(ValueError, match="float64"):
        nn.gradcheck(nn.ReLU(), randn(2, 3))
    with pytest.raises(ValueError, match="dout"):
        nn.gradcheck(nn.ReLU(**F64), randn(2, 3), dout=np.ones((3, 2)))
    with pytest.raises(ValueError, match="h must"):
        nn.gradcheck(nn.ReLU(**F64), randn(2, 3), h=0)
    with pytest.raises(TypeError):
        nn.gradcheck(object(), randn(2, 3))


# ----------------------------------------------------------------------------------------------
# Against torch.nn with the same weights and inputs
# ----------------------------------------------------------------------------------------------

def _copy_params(ours, theirs):
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            param.copy_(torch.from_numpy(ours.params[name]))


def _compare(ours, theirs, x, dtype, rtol, atol):
    """Forward and backward of our layer vs a torch module (same weights already set)."""
    xt = t(x, grad=True)
    yt = theirs(xt)  # one forward only: BatchNorm's running statistics move on each one
    dout = randn(*yt.shape, seed=99, dtype=dtype)
    yt.backward(t(dout))
    y = ours.forward(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=rtol, atol=atol)
    ours.zero_grad()
    dx = ours.backward(dout)
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=rtol, atol=atol)
    for name, param in theirs.named_parameters():
        np.testing.assert_allclose(ours.grads[name], param.grad.numpy(), rtol=rtol, atol=atol, err_msg=name)


TORCH_CASES = [
    ("conv2d", lambda d: nn.Conv2D(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), rng=0, dtype=d),
     lambda: torch.nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)), (2, 3, 7, 6)),
    ("conv2d-nobias", lambda d: nn.Conv2D(2, 3, 1, bias=False, rng=0, dtype=d),
     lambda: torch.nn.Conv2d(2, 3, 1, bias=False), (2, 2, 3, 3)),
    ("conv1d", lambda d: nn.Conv1D(3, 2, 4, stride=3, padding=2, dilation=1, rng=0, dtype=d),
     lambda: torch.nn.Conv1d(3, 2, 4, stride=3, padding=2), (2, 3, 11)),
    ("conv2d-grouped", lambda d: nn.Conv2D(6, 4, 3, stride=2, padding=1, groups=2, rng=0, dtype=d),
     lambda: torch.nn.Conv2d(6, 4, 3, stride=2, padding=1, groups=2), (2, 6, 7, 6)),
    ("conv2d-depthwise-multiplier", lambda d: nn.Conv2D(3, 6, 3, padding="same", dilation=2, groups=3, rng=0,
                                                        dtype=d),
     lambda: torch.nn.Conv2d(3, 6, 3, padding="same", dilation=2, groups=3), (2, 3, 8, 7)),
    ("conv1d-grouped-same", lambda d: nn.Conv1D(4, 4, 4, padding="same", groups=4, bias=False, rng=0, dtype=d),
     lambda: torch.nn.Conv1d(4, 4, 4, padding="same", groups=4, bias=False), (2, 4, 9)),
    ("convtranspose2d", lambda d: nn.ConvTranspose2D(4, 6, (3, 2), stride=2, padding=(1, 0), output_padding=1,
                                                     groups=2, dilation=1, rng=0, dtype=d),
     lambda: torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=(1, 0), output_padding=1, groups=2),
     (2, 4, 5, 4)),
    ("convtranspose2d-nobias-dilated", lambda d: nn.ConvTranspose2D(2, 3, 3, dilation=2, output_padding=1,
                                                                    bias=False, rng=0, dtype=d),
     lambda: torch.nn.ConvTranspose2d(2, 3, 3, dilation=2, output_padding=1, bias=False), (2, 2, 4, 4)),
    ("linear", lambda d: nn.Linear(5, 3, rng=0, dtype=d), lambda: torch.nn.Linear(5, 3), (4, 5)),
    ("linear-3d", lambda d: nn.Linear(5, 3, rng=0, dtype=d), lambda: torch.nn.Linear(5, 3), (2, 4, 5)),
    ("maxpool", lambda d: nn.MaxPool2D((3, 2), stride=(2, 1), padding=(1, 1), dtype=d),
     lambda: torch.nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 1)), (2, 3, 7, 5)),
    ("maxpool-default-stride", lambda d: nn.MaxPool2D(2, dtype=d), lambda: torch.nn.MaxPool2d(2), (1, 2, 5, 5)),
    ("avgpool", lambda d: nn.AvgPool2D(3, stride=2, padding=1, dtype=d),
     lambda: torch.nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 6, 7)),
    ("maxpool-dilated-ceil", lambda d: nn.MaxPool2D((3, 2), (2, 1), (1, 1), (1, 2), ceil_mode=True, dtype=d),
     lambda: torch.nn.MaxPool2d((3, 2), (2, 1), (1, 1), (1, 2), ceil_mode=True), (2, 3, 8, 6)),
    ("maxpool1d", lambda d: nn.MaxPool1D(3, 2, 1, 2, ceil_mode=True, dtype=d),
     lambda: torch.nn.MaxPool1d(3, 2, 1, 2, ceil_mode=True), (2, 3, 10)),
    ("avgpool-options", lambda d: nn.AvgPool2D(3, 2, 1, True, False, dtype=d),
     lambda: torch.nn.AvgPool2d(3, 2, 1, True, False), (2, 3, 6, 7)),
    ("avgpool-divisor", lambda d: nn.AvgPool2D(2, 1, 1, False, True, 3, dtype=d),
     lambda: torch.nn.AvgPool2d(2, 1, 1, False, True, 3), (2, 3, 4, 5)),
    ("avgpool1d", lambda d: nn.AvgPool1D(4, 3, 2, True, False, dtype=d),
     lambda: torch.nn.AvgPool1d(4, 3, 2, True, False), (2, 3, 11)),
    ("adaptive", lambda d: nn.AdaptiveAvgPool2D((3, None), dtype=d),
     lambda: torch.nn.AdaptiveAvgPool2d((3, None)), (2, 3, 7, 5)),
    ("adaptive-upsample", lambda d: nn.AdaptiveAvgPool2D(9, dtype=d), lambda: torch.nn.AdaptiveAvgPool2d(9), (2, 3, 4, 6)),
    ("relu", lambda d: nn.ReLU(dtype=d), lambda: torch.nn.ReLU(), (3, 4, 5)),
    ("sigmoid", lambda d: nn.Sigmoid(dtype=d), lambda: torch.nn.Sigmoid(), (3, 4)),
    ("tanh", lambda d: nn.Tanh(dtype=d), lambda: torch.nn.Tanh(), (3, 4)),
    ("flatten", lambda d: nn.Flatten(dtype=d), lambda: torch.nn.Flatten(), (3, 2, 2, 2)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, ours, theirs, shape", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_layer_matches_torch(active_backend, name, ours, theirs, shape, dtype):
    layer = ours(dtype)
    module = theirs().to(torch.float64 if dtype == np.float64 else torch.float32)
    _copy_params(layer, module)
    x = (distinct(*shape) if "maxpool" in name else 3 * randn(*shape)).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    _compare(layer, module, x, dtype, **tol)


def test_sigmoid_is_stable_at_extremes():
    x = np.array([-800.0, -30.0, 0.0, 30.0, 800.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        y = nn.Sigmoid(**F64).forward(x)
    np.testing.assert_allclose(y, torch.sigmoid(t(x)).numpy(), rtol=1e-14, atol=0)


def test_relu_gradient_at_zero_and_nan():
    layer = nn.ReLU(**F64)
    y = layer.forward(np.array([-1.0, 0.0, 2.0, np.nan]))
    np.testing.assert_array_equal(y[:3], [0.0, 0.0, 2.0])
    assert np.isnan(y[3])
    np.testing.assert_array_equal(layer.backward(np.ones(4)), [0.0, 0.0, 1.0, 0.0])  # as torch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ours, theirs, shape", [
    (nn.BatchNorm1D, torch.nn.BatchNorm1d, (6, 3)),
    (nn.BatchNorm1D, torch.nn.BatchNorm1d, (4, 3, 5)),
    (nn.BatchNorm2D, torch.nn.BatchNorm2d, (4, 3, 2, 5)),
], ids=["bn1d", "bn1d-ncl", "bn2d"])
def test_batchnorm_matches_torch_in_train_and_eval(ours, theirs, shape, dtype):
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    layer, module = ours(3, dtype=dtype), theirs(3).to(tdtype)
    for p in (layer.params["weight"], layer.params["bias"]):
        p[...] = randn(3, seed=int(p.sum() * 10) + 5)
    _copy_params(layer, module)
    for step in range(3):  # running statistics after several training batches
        x = (2 * randn(*shape, seed=step) + step).astype(dtype)
        _compare(layer, module, x, dtype, **tol)
        np.testing.assert_allclose(layer.running_mean, module.running_mean.numpy(), **tol)
        np.testing.assert_allclose(layer.running_var, module.running_var.numpy(), **tol)
        module.zero_grad()
    layer.eval()
    module.eval()
    _compare(layer, module, randn(*shape, seed=9).astype(dtype), dtype, **tol)
    # Evaluation never changes the running statistics.
    np.testing.assert_allclose(layer.running_var, module.running_var.numpy(), **tol)


def test_batchnorm_momentum_and_unbiased_running_var_by_hand():
    layer = nn.BatchNorm1D(1, momentum=0.25, **F64)
    x = np.array([[1.0], [2.0], [6.0]])
    layer.forward(x)
    assert layer.running_mean[0] == pytest.approx(0.75 * 0 + 0.25 * 3.0)
    assert layer.running_var[0] == pytest.approx(0.75 * 1 + 0.25 * 7.0)  # unbiased var of 1, 2, 6 is 7


def test_batchnorm_needs_two_values_per_channel_in_training():
    layer = nn.BatchNorm1D(3)
    with pytest.raises(ValueError, match="more than one value"):
        layer.forward(np.ones((1, 3)))
    layer.eval()
    assert layer.forward(np.ones((1, 3))).shape == (1, 3)


def test_dropout_statistics_and_scaling():
    layer = nn.Dropout(0.3, rng=0, **F64)
    x = np.ones((200, 500))
    y = layer.forward(x)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01  # 100000 draws: std of the mean is 0.0015
    np.testing.assert_allclose(y[kept], 1 / 0.7)
    np.testing.assert_array_equal(layer.backward(2 * x), 2 * y)  # same mask on the way back
    assert abs(y.mean() - 1) < 0.02  # inverted dropout keeps the expectation


def test_dropout_edge_cases_and_eval_match_torch():
    x = randn(4, 6)
    for p in (0.0, 1.0):
        ours = nn.Dropout(p, rng=0, **F64)
        theirs = torch.nn.functional.dropout(t(x), p=p, training=True).numpy()
        np.testing.assert_array_equal(ours.forward(x), theirs)
        np.testing.assert_array_equal(ours.backward(np.ones_like(x)), np.full_like(x, 1.0 - p))
    layer = nn.Dropout(0.9, rng=0, **F64).eval()
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)


def test_dropout_reproducible_from_seed():
    a = nn.Dropout(0.5, rng=3).forward(np.ones((4, 4)))
    b = nn.Dropout(0.5, rng=3).forward(np.ones((4, 4)))
    c = nn.Dropout(0.5, rng=4).forward(np.ones((4, 4)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ----------------------------------------------------------------------------------------------
# Initialisation, dtypes, gradient accumulation
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, fan_in", [
    (lambda: nn.Conv2D(8, 64, (3, 5), rng=0), 8 * 15),
    (lambda: nn.Conv1D(4, 64, 7, rng=0), 28),
    (lambda: nn.Conv2D(8, 64, (3, 5), groups=4, rng=0), 2 * 15),          # C/groups * KH*KW
    (lambda: nn.Conv2D(64, 64, 3, groups=64, rng=0), 9),                   # depthwise
    (lambda: nn.ConvTranspose2D(8, 64, 2, groups=2, rng=0), 32 * 4),       # torch: F/groups * KH*KW
    (lambda: nn.ConvTranspose2D(64, 16, 3, stride=2, rng=0), 16 * 9),
    (lambda: nn.Linear(50, 200, rng=0), 50),
])
def test_default_init_is_pytorchs(make, fan_in):
    layer = make()
    bound = 1 / np.sqrt(fan_in)
    w, b = layer.params["weight"], layer.params["bias"]
    assert w.dtype == np.float32 and b.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # Uniform(-bound, bound) has standard deviation bound/sqrt(3): compare with torch's draw.
    torch.manual_seed(0)
    reference = torch.nn.Linear(fan_in, 200).weight.detach().numpy()  # same fan_in, torch's init
    assert w.std() == pytest.approx(reference.std(), rel=0.08)
    assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.08)


def test_rng_seed_and_generator():
    a, b = nn.Conv2D(2, 3, 3, rng=7), nn.Conv2D(2, 3, 3, rng=7)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    g = np.random.default_rng(1)
    c, d = nn.Linear(3, 3, rng=g), nn.Linear(3, 3, rng=g)  # a shared generator advances
    assert not np.array_equal(c.params["weight"], d.params["weight"])


def test_float32_layer_converts_input_and_keeps_dtype():
    layer = nn.Conv2D(1, 2, 3, rng=0)
    y = layer.forward(np.arange(32, dtype=np.int64).reshape(2, 1, 4, 4))
    assert y.dtype == np.float32
    assert layer.backward(np.ones(y.shape)).dtype == np.float32


def test_backward_accumulates_until_zero_grad():
    layer = nn.Conv2D(2, 3, 3, rng=0, **F64)
    x, dout = randn(2, 2, 4, 4), randn(2, 3, 2, 2, seed=1)
    layer.forward(x)
    layer.backward(dout)
    once = {k: g.copy() for k, g in layer.grads.items()}
    layer.backward(dout)
    for k in once:
        np.testing.assert_allclose(layer.grads[k], 2 * once[k])
    grads_before = {k: id(g) for k, g in layer.grads.items()}
    layer.zero_grad()
    assert all(not g.any() for g in layer.grads.values())
    assert {k: id(g) for k, g in layer.grads.items()} == grads_before  # reset in place


def test_parameters_triples_and_sequential_names():
    model = nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.BatchNorm2D(2), nn.Flatten(), nn.Linear(2, 1, bias=False))
    names = [name for name, _, _ in model.parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight"]
    for name, param, grad in model.parameters():
        layer, key = model[int(name.split(".")[0])], name.split(".")[1]
        assert param is layer.params[key] and grad is layer.grads[key]
    assert set(model.params) == set(model.grads) == set(names)
    assert set(model.buffers) == {"2.running_mean", "2.running_var"}
    model.eval()
    assert not any(layer.training for layer in model)
    model.train()
    assert all(layer.training for layer in model)


def test_sequential_forward_backward_matches_torch(active_backend):
    ours = nn.Sequential(nn.Conv2D(2, 4, 3, padding=1, rng=0, **F64), nn.BatchNorm2D(4, **F64), nn.ReLU(**F64),
                         nn.MaxPool2D(2, **F64), nn.Flatten(**F64), nn.Linear(16, 3, rng=1, **F64))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 3)).double()
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            param.copy_(torch.from_numpy(ours.params[name]))
    _compare(ours, theirs, randn(3, 2, 4, 4), np.float64, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, error", [
    (lambda: nn.Conv2D(0, 3, 3), ValueError),
    (lambda: nn.Conv2D(2, 3, 0), ValueError),
    (lambda: nn.Conv2D(2, 3, 3, stride=0), ValueError),
    (lambda: nn.Conv2D(2, 3, 3, padding=-1), ValueError),
    (lambda: nn.Conv2D(2, 3, (3, 3, 3)), ValueError),
    (lambda: nn.Conv2D(2.0, 3, 3), TypeError),
    (lambda: nn.Conv2D(2, 3, 3, bias="yes"), TypeError),
    (lambda: nn.Conv1D(2, 3, 3, dilation=0), ValueError),
    (lambda: nn.Conv2D(4, 6, 3, groups=0), ValueError),
    (lambda: nn.Conv2D(4, 6, 3, groups=3), ValueError),                    # 3 does not divide 4
    (lambda: nn.Conv2D(4, 6, 3, groups=4), ValueError),                    # nor 6
    (lambda: nn.Conv2D(4, 6, 3, groups=2.0), TypeError),
    (lambda: nn.Conv2D(4, 6, 3, stride=2, padding="same"), ValueError),
    (lambda: nn.Conv1D(4, 6, 3, padding="full"), ValueError),
    (lambda: nn.ConvTranspose2D(4, 6, 3, output_padding=1), ValueError),  # stride 1, dilation 1
    (lambda: nn.ConvTranspose2D(4, 6, 3, stride=2, output_padding=(0, 2)), ValueError),
    (lambda: nn.ConvTranspose2D(4, 6, 3, padding="same"), TypeError),
    (lambda: nn.ConvTranspose2D(4, 6, 3, groups=4), ValueError),          # 4 does not divide 6
    (lambda: nn.ConvTranspose2D(4, 6, 0), ValueError),
    (lambda: nn.ConvTranspose2D(4, 6, 2, bias=1), TypeError),
    (lambda: nn.Linear(3, -1), ValueError),
    (lambda: nn.Linear(True, 2), TypeError),
    (lambda: nn.MaxPool2D(2, padding=2), ValueError),
    (lambda: nn.AvgPool2D(0), ValueError),
    (lambda: nn.MaxPool2D(2, dilation=0), ValueError),
    (lambda: nn.MaxPool2D(2, dilation=1.5), TypeError),
    (lambda: nn.MaxPool2D(2, ceil_mode=1), TypeError),
    (lambda: nn.MaxPool1D((2, 2)), ValueError),
    (lambda: nn.MaxPool1D(3, padding=2), ValueError),
    (lambda: nn.AvgPool2D(2, count_include_pad="yes"), TypeError),
    (lambda: nn.AvgPool2D(2, divisor_override=0), ValueError),
    (lambda: nn.AvgPool2D(2, divisor_override=2.0), TypeError),
    (lambda: nn.AvgPool1D(2, ceil_mode=None), TypeError),
    (lambda: nn.AvgPool1D(0), ValueError),
    (lambda: nn.AdaptiveAvgPool2D(0), ValueError),
    (lambda: nn.AdaptiveAvgPool2D((2, 3, 4)), ValueError),
    (lambda: nn.AdaptiveAvgPool2D(2.5), TypeError),
    (lambda: nn.BatchNorm2D(0), ValueError),
    (lambda: nn.BatchNorm1D(3, momentum=1.5), ValueError),
    (lambda: nn.BatchNorm1D(3, eps=-1), ValueError),
    (lambda: nn.Dropout(1.5), ValueError),
    (lambda: nn.Dropout(-0.1), ValueError),
    (lambda: nn.Dropout("0.5"), TypeError),
    (lambda: nn.ReLU(dtype=np.int32), TypeError),
    (lambda: nn.Linear(2, 2, dtype=np.complex128), TypeError),
    (lambda: nn.Linear(2, 2, rng="seed"), TypeError),
    (lambda: nn.Linear(2, 2, rng=-1), ValueError),
    (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError),
])
def test_bad_construction_arguments(make, error):
    with pytest.raises(error):
        make()


@pytest.mark.parametrize("layer", [
    nn.Conv2D(1, 1, 1), nn.Conv1D(1, 1, 1), nn.ConvTranspose2D(1, 1, 1), nn.Linear(1, 1), nn.MaxPool2D(1),
    nn.AvgPool2D(1), nn.ReLU(), nn.MaxPool1D(1), nn.AvgPool1D(1), nn.AdaptiveAvgPool2D(1),
    nn.Sigmoid(), nn.Tanh(), nn.Flatten(), nn.BatchNorm1D(1), nn.BatchNorm2D(1), nn.Dropout(0.5),
    nn.Sequential(nn.ReLU()),
], ids=lambda layer: type(layer).__name__)
def test_backward_before_forward(layer):
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.ones((1, 1, 1, 1)))
    with pytest.raises(RuntimeError):  # the same error is also a RuntimeError, as in torch
        layer.backward(np.ones((1, 1, 1, 1)))


def test_bad_forward_and_backward_inputs():
    conv = nn.Conv2D(3, 2, 3)
    with pytest.raises(ValueError, match="channels"):
        conv.forward(np.ones((1, 2, 5, 5)))
    with pytest.raises(ValueError, match="4-D"):
        conv.forward(np.ones((3, 5, 5)))
    with pytest.raises(TypeError):
        conv.forward(np.ones((1, 3, 5, 5), dtype=complex))
    conv.forward(np.ones((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="shape"):
        conv.backward(np.ones((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(3, 2).forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm2D(3).forward(np.ones((2, 4, 2, 2)))
    relu = nn.ReLU()
    relu.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        relu.backward(np.ones((3, 2)))


def test_empty_batch_flows_through():
    model = nn.Sequential(nn.Conv2D(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Linear(8, 3))
    model.eval()
    y = model.forward(np.zeros((0, 1, 4, 4)))
    assert y.shape == (0, 3)
    assert model.backward(np.zeros((0, 3))).shape == (0, 1, 4, 4)


def test_pooling_layers_check_sizes_at_forward_and_keep_their_options():
    layer = nn.MaxPool2D(2, padding=1, dilation=2)
    with pytest.raises(ValueError, match="MaxPool2D|max_pool2d"):
        layer.forward(np.ones((1, 1, 1, 5)))  # the first window along H reads only padding
    with pytest.raises(ValueError, match="3-D"):
        nn.MaxPool1D(2).forward(np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="4-D"):
        nn.AdaptiveAvgPool2D(2).forward(np.ones((1, 4, 4)))
    avg = nn.AvgPool2D(3, 2, 1, ceil_mode=np.bool_(True), divisor_override=np.int64(4))
    assert (avg.ceil_mode, avg.count_include_pad, avg.divisor_override) == (True, True, 4)
    assert type(avg.ceil_mode) is bool and type(avg.divisor_override) is int
    assert "divisor_override=4" in repr(avg) and "dilation=(2, 2)" in repr(layer)
    assert nn.AdaptiveAvgPool2D([None, 3]).output_size == (None, 3)


def test_model_with_the_new_pooling_layers_saves_and_loads(tmp_path, active_backend):
    """Pooling layers own no arrays: the state of a model around them round-trips unchanged."""
    def model(seed):
        return nn.Sequential(
            nn.Conv1D(2, 4, 3, padding=1, rng=seed, **F64), nn.MaxPool1D(2, ceil_mode=True, **F64),
            nn.AvgPool1D(3, 1, 1, count_include_pad=False, **F64), nn.Flatten(**F64), nn.Linear(12, 3, rng=seed, **F64))

    a, b = model(0), model(1)
    x = randn(2, 2, 5)
    a.save(tmp_path / "pooling.npz")
    b.load(tmp_path / "pooling.npz")
    assert sorted(a.state_dict()) == ["0.bias", "0.weight", "4.bias", "4.weight"]
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    image_model = nn.Sequential(nn.Conv2D(1, 2, 3, rng=0, **F64), nn.AvgPool2D(2, ceil_mode=True, divisor_override=3, **F64),
                                nn.MaxPool2D(2, dilation=1, ceil_mode=True, **F64), nn.AdaptiveAvgPool2D(1, **F64),
                                nn.Flatten(**F64), nn.Linear(2, 1, rng=0, **F64))
    image_model.save(tmp_path / "image.npz")
    other = nn.Sequential(nn.Conv2D(1, 2, 3, rng=5, **F64), nn.AvgPool2D(2, **F64), nn.MaxPool2D(2, **F64),
                          nn.AdaptiveAvgPool2D(1, **F64), nn.Flatten(**F64), nn.Linear(2, 1, rng=5, **F64))
    other.load(tmp_path / "image.npz")
    for key, value in image_model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)
