"""The training steps of BENCH.md: one whole step of a small CNN in fastconv.nn and in torch.nn.

Each workload builds a ``fastconv.nn.Sequential`` the way a user writes it; the torch model is
its twin (fastconv._bench.twin: same layers, same hyper-parameters, same names) and starts
from the same weights. Both see the same input batch and integer labels and use the same
optimizer. One step is what a user writes, nothing fused::

    optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); optimizer.step()

timed as forward (zero_grad, forward, loss) and backward (backward, optimizer step). Before
any timing, ``prepare`` runs a few steps of every implementation from the same start and
refuses to go on (TrainingError) unless their losses agree: a benchmark of two models that do
not compute the same thing would be meaningless. The NumPy baseline is the same fastconv.nn
model on fastconv's pure-NumPy "reference" backend. (fastconv._bench.breakdown shows where a
step's time goes.)
"""

import contextlib
import functools
import inspect
from dataclasses import dataclass, field

import numpy as np

import fastconv
from fastconv import nn
from fastconv._bench import twin

# Steps run by every implementation before timing; their losses must agree (relative error).
CHECK_STEPS = 3
LOSS_TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
SEED = 0


class TrainingError(RuntimeError):
    """A training workload cannot be measured: a model cannot be built, or the losses differ."""


@dataclass(frozen=True)
class TrainingWorkload:
    """One training step of a model built by ``build(dtype, rng)`` on a (batch,) + image input."""

    name: str
    batch: int
    image: tuple
    build: object = field(repr=False, compare=False)
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) or "adam"
    lr: float = 0.01
    needs: tuple = ()  # fastconv.nn features the model uses: layer names, or "Conv2D(groups=)"
    summary: str = ""
    classes: int = 10
    kind: str = field(default="train", init=False)
    group: str = field(default="train", init=False)

    def describe(self):
        optimizer = "Adam" if self.optimizer == "adam" else "SGD momentum 0.9"
        return f"train {self.summary}, batch {self.batch}, {optimizer} lr {self.lr}"

    def unsupported(self):
        """Why fastconv.nn cannot build this model yet (None when it can)."""
        missing = [need for need in self.needs if not _has(need)]
        return f"fastconv.nn has no {', '.join(missing)} yet" if missing else None

    def work(self, dtype=None):
        """FLOPs of one step: convolution and linear layers, forward + backward (3x forward)."""
        return 3 * _forward_flops(self)

    def make_data(self, dtype, seed=SEED):
        """The input batch (batch,) + image of `dtype` and integer labels in [0, classes)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.batch,) + self.image).astype(dtype)
        return x, rng.integers(0, self.classes, self.batch)


def _has(need):
    if need.endswith("(groups=)"):
        return "groups" in inspect.signature(nn.Conv2D).parameters
    return hasattr(nn, need)


# ---------------------------------------------------------------------------------------------
# The models (BENCH.md, "Training steps")
# ---------------------------------------------------------------------------------------------

def _tr1_cs231n(dtype, rng):
    kw = {"dtype": dtype, "rng": rng}
    return nn.Sequential(
        nn.Conv2D(3, 32, 7, padding=3, **kw), nn.ReLU(**kw), nn.MaxPool2D(2, **kw),
        nn.Flatten(**kw), nn.Linear(32 * 16 * 16, 100, **kw), nn.ReLU(**kw), nn.Linear(100, 10, **kw),
    )


def _tr2_dlfs(dtype, rng):
    kw = {"dtype": dtype, "rng": rng}
    return nn.Sequential(
        nn.Conv2D(1, 30, 5, **kw), nn.ReLU(**kw), nn.MaxPool2D(2, **kw),
        nn.Flatten(**kw), nn.Linear(30 * 12 * 12, 100, **kw), nn.ReLU(**kw), nn.Linear(100, 10, **kw),
    )


def _tr3_vgg_bn(dtype, rng):
    kw = {"dtype": dtype, "rng": rng}
    return nn.Sequential(
        nn.Conv2D(3, 32, 3, padding=1, bias=False, **kw), nn.BatchNorm2D(32, **kw), nn.ReLU(**kw),
        nn.Conv2D(32, 32, 3, padding=1, **kw), nn.ReLU(**kw), nn.MaxPool2D(2, **kw),
        nn.Conv2D(32, 64, 3, padding=1, bias=False, **kw), nn.BatchNorm2D(64, **kw), nn.ReLU(**kw),
        nn.MaxPool2D(2, **kw),
        nn.Flatten(**kw), nn.Linear(64 * 8 * 8, 10, **kw),
    )


def _tr4_resnet(dtype, rng):
    kw = {"dtype": dtype, "rng": rng}

    def basic_block(c_in, c_out, stride):
        block = nn.Sequential(
            nn.Conv2D(c_in, c_out, 3, stride=stride, padding=1, bias=False, **kw), nn.BatchNorm2D(c_out, **kw),
            nn.ReLU(**kw),
            nn.Conv2D(c_out, c_out, 3, padding=1, bias=False, **kw), nn.BatchNorm2D(c_out, **kw),
        )
        shortcut = nn.Conv2D(c_in, c_out, 1, stride=stride, bias=False, **kw) if stride != 1 else None
        return nn.Residual(block, shortcut)

    return nn.Sequential(
        nn.Conv2D(3, 16, 3, padding=1, bias=False, **kw), nn.BatchNorm2D(16, **kw), nn.ReLU(**kw),
        basic_block(16, 16, 1), nn.ReLU(**kw),
        basic_block(16, 32, 2), nn.ReLU(**kw),
        basic_block(32, 64, 2), nn.ReLU(**kw),
        nn.AdaptiveAvgPool2D(1, **kw), nn.Flatten(**kw), nn.Linear(64, 10, **kw),
    )


def _tr5_mobilenet(dtype, rng):
    kw = {"dtype": dtype, "rng": rng}

    def separable(c_in, c_out, stride):
        return [
            nn.Conv2D(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False, **kw),
            nn.BatchNorm2D(c_in, **kw), nn.ReLU(**kw),
            nn.Conv2D(c_in, c_out, 1, bias=False, **kw), nn.BatchNorm2D(c_out, **kw), nn.ReLU(**kw),
        ]

    return nn.Sequential(
        nn.Conv2D(3, 32, 3, padding=1, bias=False, **kw), nn.BatchNorm2D(32, **kw), nn.ReLU(**kw),
        *separable(32, 64, 1), *separable(64, 128, 2), *separable(128, 128, 1), *separable(128, 256, 2),
        nn.AdaptiveAvgPool2D(1, **kw), nn.Flatten(**kw), nn.Linear(256, 10, **kw),
    )


WORKLOADS = (
    TrainingWorkload("tr1_cs231n", 50, (3, 32, 32), _tr1_cs231n,
                     summary="CS231n ThreeLayerConvNet 3x32x32: conv7x7 32, ReLU, pool, fc 100, ReLU, fc 10"),
    TrainingWorkload("tr2_dlfs", 100, (1, 28, 28), _tr2_dlfs, optimizer="adam", lr=1e-3,
                     summary="DLFS SimpleConvNet 1x28x28: conv5x5 30, ReLU, pool, fc 100, ReLU, fc 10"),
    TrainingWorkload("tr3_vgg_bn", 128, (3, 32, 32), _tr3_vgg_bn,
                     summary="VGG-BN 3x32x32: conv 32 BN ReLU, conv 32 ReLU, pool, conv 64 BN ReLU, pool, fc 10"),
    TrainingWorkload("tr4_resnet", 64, (3, 32, 32), _tr4_resnet, needs=("Residual", "AdaptiveAvgPool2D"),
                     summary="ResNet 3x32x32: conv 16 BN ReLU, 3 basic blocks 16/32s2/64s2, global avg pool, fc 10"),
    TrainingWorkload("tr5_mobilenet", 64, (3, 32, 32), _tr5_mobilenet, needs=("Conv2D(groups=)", "AdaptiveAvgPool2D"),
                     summary="MobileNet 3x32x32: conv 32 BN ReLU, 4 separable blocks 64/128s2/128/256s2, "
                             "global avg pool, fc 10"),
)
BY_NAME = {w.name: w for w in WORKLOADS}


@functools.lru_cache(maxsize=None)
def _forward_flops(workload):
    """Multiply-add FLOPs (2 per weight per output) of one forward pass of `workload`.

    Counted from a forward pass on a batch of 2 (FLOPs grow linearly with the batch), on a
    freshly built model so that no benchmark model's running statistics change.
    """
    model = workload.build(np.float64, np.random.default_rng(SEED))
    flops = []

    def counting(layer):
        def wrap(forward):
            def counted(x):
                y = forward(x)
                if any(twin.is_layer(layer, name) for name in ("Conv2D", "Conv1D", "Linear")):
                    flops.append(2 * y.size * int(np.prod(layer.params["weight"].shape[1:])))
                return y
            return counted
        return wrap

    with contextlib.ExitStack() as stack:
        for leaf in twin.leaves(model):
            stack.enter_context(twin.patched(leaf, "forward", counting(leaf)))
        model.forward(np.zeros((2,) + workload.image))
    return sum(flops) * workload.batch // 2


# ---------------------------------------------------------------------------------------------
# One step of each implementation
# ---------------------------------------------------------------------------------------------

class FastconvStep:
    """A fastconv.nn training step on `backend` (the NumPy baseline: backend "reference")."""

    def __init__(self, workload, dtype, backend, x, labels):
        self.backend = backend
        self.model = workload.build(dtype, np.random.default_rng(SEED))
        self.loss_fn = nn.SoftmaxCrossEntropy()
        if workload.optimizer == "adam":
            self.optimizer = nn.Adam(self.model, lr=workload.lr)
        else:
            self.optimizer = nn.SGD(self.model, lr=workload.lr, momentum=0.9)
        self.x, self.labels = x, labels

    def forward(self):
        with fastconv.use_backend(self.backend):
            self.model.zero_grad()
            return self.loss_fn.forward(self.model.forward(self.x), self.labels)

    def backward(self, loss):
        with fastconv.use_backend(self.backend):
            # The batch is data (as torch's x, which does not require grad): no input gradient.
            self.model.backward(self.loss_fn.backward(), input_grad=False)
            self.optimizer.step()
        return loss

    def step(self):
        """One whole step; returns the loss (a float)."""
        return self.backward(self.forward())

    @property
    def layers(self):
        return self.model.layers


class TorchStep:
    """The same step in torch.nn, from the weights of a FastconvStep's model."""

    def __init__(self, workload, torch, fastconv_step, x, labels):
        model = fastconv_step.model
        self.model = twin.to_torch(model, torch).to(torch.float64 if x.dtype == np.float64 else torch.float32)
        twin.copy_weights(model, self.model, torch)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        parameters = self.model.parameters()
        if workload.optimizer == "adam":
            self.optimizer = torch.optim.Adam(parameters, lr=workload.lr)
        else:
            self.optimizer = torch.optim.SGD(parameters, lr=workload.lr, momentum=0.9)
        self.x, self.labels = torch.from_numpy(x), torch.from_numpy(labels)

    def forward(self):
        self.optimizer.zero_grad()
        return self.loss_fn(self.model(self.x), self.labels)

    def backward(self, loss):
        loss.backward()
        self.optimizer.step()
        return loss

    def step(self):
        return float(self.backward(self.forward()).detach())

    @property
    def layers(self):
        return list(self.model)


def prepare(workload, dtype, backend, torch, names):
    """Build the implementations in `names` ("fastconv", "torch", "numpy") and check them.

    Each runs CHECK_STEPS steps from the same weights and data; returns (steps, losses) with
    steps[name].forward / .backward ready to be timed. Raises TrainingError when the torch twin
    cannot be built or when any implementation's losses differ from torch's (from fastconv's
    when torch is not there) by more than LOSS_TOLERANCE.
    """
    dtype = np.dtype(dtype)
    x, labels = workload.make_data(dtype)
    # A layer whose arguments or attributes are not what API.md says fails the row, not the run.
    try:
        steps = {"fastconv": FastconvStep(workload, dtype, backend, x, labels)}
        if "numpy" in names:
            steps["numpy"] = FastconvStep(workload, dtype, "reference", x, labels)
    except (AttributeError, TypeError, ValueError) as exc:
        raise TrainingError(f"{workload.name}: cannot build the fastconv.nn model: {type(exc).__name__}: {exc}") from None
    if "torch" in names:
        try:
            steps["torch"] = TorchStep(workload, torch, steps["fastconv"], x, labels)
        except (twin.TwinError, AttributeError, TypeError, ValueError) as exc:
            raise TrainingError(f"{workload.name}: cannot build the torch twin: {type(exc).__name__}: {exc}") from None
    losses = {name: [step.step() for _ in range(CHECK_STEPS)] for name, step in steps.items()}
    check_losses(workload.name, dtype, losses)
    return steps, losses


def check_losses(name, dtype, losses):
    """Raise TrainingError unless every loss sequence agrees with the reference one."""
    reference = "torch" if "torch" in losses else "fastconv"
    tolerance = LOSS_TOLERANCE[np.dtype(dtype).name]
    expected = np.asarray(losses[reference])
    for impl, values in losses.items():
        values = np.asarray(values)
        error = np.abs(values - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
        if not (np.all(np.isfinite(values)) and np.all(error <= tolerance)):
            raise TrainingError(
                f"{name} {np.dtype(dtype).name}: the first {len(values)} losses of {impl} {values.tolist()} differ "
                f"from {reference}'s {expected.tolist()} (relative error {np.max(error):.2e} > {tolerance:g}): "
                "the two models do not compute the same thing, so the row is not timed"
            )
