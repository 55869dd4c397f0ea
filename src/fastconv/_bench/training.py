"""The training steps of BENCH.md: one whole step of a small CNN in fastconv.nn and in torch.nn.

Each workload builds a ``fastconv.nn.Sequential`` the way a user writes it; the torch model is
its mirror image (``to_torch``: same layers, same hyper-parameters, same names) and starts from
the same weights (``copy_weights``). Both see the same input batch and integer labels and the
same optimizer. One step is what a user writes, nothing fused::

    optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); optimizer.step()

timed as forward (zero_grad, forward, loss) and backward (backward, optimizer step). Before
any timing, ``prepare`` runs a few steps of every implementation from the same start and
refuses to go on (TrainingError) unless their losses agree: a benchmark of two models that do
not compute the same thing would be meaningless. The NumPy baseline is the same fastconv.nn
model on fastconv's pure-NumPy "reference" backend.

``layer_breakdown`` times each top-level layer's forward and backward (fastconv: wrapped
methods; torch: module forward hooks and backward pre-hooks), the loss, zero_grad and the
optimizer step, so that it shows where a step's time goes.
"""

import contextlib
import functools
import inspect
import statistics
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

import fastconv
from fastconv import nn

# Steps run by every implementation before timing; their losses must agree (relative error).
CHECK_STEPS = 3
LOSS_TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
SEED = 0


class TrainingError(RuntimeError):
    """A training workload cannot be measured: its torch twin cannot be built, or losses differ."""


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


# ---------------------------------------------------------------------------------------------
# Walking fastconv.nn models
# ---------------------------------------------------------------------------------------------

def _is(layer, name):
    """isinstance(layer, fastconv.nn.<name>), False while fastconv.nn has no such layer."""
    cls = getattr(nn, name, None)
    return isinstance(cls, type) and isinstance(layer, cls)


def _residual_parts(layer):
    """(block, shortcut) of a fastconv.nn.Residual; shortcut None means the identity."""
    try:
        return layer.block, layer.shortcut
    except AttributeError as exc:
        raise TrainingError(f"fastconv.nn.Residual has no {exc.name!r} attribute: the benchmark cannot "
                            "see its block and shortcut") from None


def _children(layer):
    """The layers directly inside a container (Sequential, Residual); [] for a leaf layer."""
    if _is(layer, "Sequential"):
        return list(layer.layers)
    if _is(layer, "Residual"):
        return [part for part in _residual_parts(layer) if part is not None]
    return []


def _leaves(layer):
    children = _children(layer)
    if not children:
        return [layer]
    return [leaf for child in children for leaf in _leaves(child)]


@contextlib.contextmanager
def _patched(obj, method, wrap):
    """Replace obj.method by wrap(original) on this instance only; restore it on exit."""
    setattr(obj, method, wrap(getattr(obj, method)))
    try:
        yield
    finally:
        delattr(obj, method)  # the class's method shows through again


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
                if any(_is(layer, name) for name in ("Conv2D", "Conv1D", "Linear")):
                    flops.append(2 * y.size * int(np.prod(layer.params["weight"].shape[1:])))
                return y
            return counted
        return wrap

    with contextlib.ExitStack() as stack:
        for leaf in _leaves(model):
            stack.enter_context(_patched(leaf, "forward", counting(leaf)))
        model.forward(np.zeros((2,) + workload.image))
    return sum(flops) * workload.batch // 2


# ---------------------------------------------------------------------------------------------
# The torch twin
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _torch_residual(torch):
    class Residual(torch.nn.Module):
        """y = block(x) + shortcut(x), as fastconv.nn.Residual."""

        def __init__(self, block, shortcut):
            super().__init__()
            self.block = block
            self.shortcut = shortcut

        def forward(self, x):
            return self.block(x) + self.shortcut(x)

    return Residual


def _torch_twins(tnn):
    """fastconv.nn layer name -> function making the torch.nn module with the same hyper-parameters."""
    def conv(module):
        return lambda l: module(l.in_channels, l.out_channels, l.kernel_size, stride=l.stride, padding=l.padding,
                                dilation=l.dilation, groups=getattr(l, "groups", 1), bias="bias" in l.params)

    def norm(module):
        return lambda l: module(l.num_features, eps=l.eps, momentum=l.momentum, affine="weight" in l.params)

    def pool(module):
        return lambda l: module(l.kernel_size, l.stride, l.padding)

    return {
        "Conv2D": conv(tnn.Conv2d), "Conv1D": conv(tnn.Conv1d),
        "Linear": lambda l: tnn.Linear(l.in_features, l.out_features, bias="bias" in l.params),
        "BatchNorm2D": norm(tnn.BatchNorm2d), "BatchNorm1D": norm(tnn.BatchNorm1d),
        "MaxPool2D": pool(tnn.MaxPool2d), "AvgPool2D": pool(tnn.AvgPool2d),
        "AdaptiveAvgPool2D": lambda l: tnn.AdaptiveAvgPool2d(l.output_size),
        "ReLU": lambda l: tnn.ReLU(), "Sigmoid": lambda l: tnn.Sigmoid(), "Tanh": lambda l: tnn.Tanh(),
        "Flatten": lambda l: tnn.Flatten(), "Identity": lambda l: tnn.Identity(),
    }


def to_torch(layer, torch):
    """The torch.nn module that computes what the fastconv.nn `layer` computes (fresh weights)."""
    if _is(layer, "Sequential"):
        return torch.nn.Sequential(*[to_torch(child, torch) for child in layer.layers])
    if _is(layer, "Residual"):
        block, shortcut = _residual_parts(layer)
        return _torch_residual(torch)(to_torch(block, torch),
                                      torch.nn.Identity() if shortcut is None else to_torch(shortcut, torch))
    for name, make in _torch_twins(torch.nn).items():
        if _is(layer, name):
            return make(layer)
    raise TrainingError(f"no torch twin for fastconv.nn.{type(layer).__name__} in the training benchmark")


def _pairs(layer, module):
    """(fastconv leaf layer, torch module) pairs of a model and its torch twin."""
    if _is(layer, "Sequential"):
        for child, twin in zip(layer.layers, module):
            yield from _pairs(child, twin)
    elif _is(layer, "Residual"):
        block, shortcut = _residual_parts(layer)
        yield from _pairs(block, module.block)
        if shortcut is not None:
            yield from _pairs(shortcut, module.shortcut)
    else:
        yield layer, module


def copy_weights(model, module, torch):
    """Copy every parameter and buffer of the fastconv `model` into its torch twin, in place."""
    with torch.no_grad():
        for layer, twin in _pairs(model, module):
            for key, array in layer.state_dict().items():
                target = getattr(twin, key)
                if tuple(target.shape) != array.shape:
                    raise TrainingError(f"{type(layer).__name__}.{key}: fastconv shape {array.shape}, "
                                        f"torch {tuple(target.shape)}")
                target.copy_(torch.from_numpy(np.ascontiguousarray(array)))


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
            self.model.backward(self.loss_fn.backward())
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
        self.torch = torch
        self.model = to_torch(model, torch).to(torch.float64 if x.dtype == np.float64 else torch.float32)
        copy_weights(model, self.model, torch)
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
    steps = {"fastconv": FastconvStep(workload, dtype, backend, x, labels)}
    if "numpy" in names:
        steps["numpy"] = FastconvStep(workload, dtype, "reference", x, labels)
    if "torch" in names:
        try:
            steps["torch"] = TorchStep(workload, torch, steps["fastconv"], x, labels)
        except (AttributeError, TypeError, ValueError) as exc:
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


# ---------------------------------------------------------------------------------------------
# Where a step's time goes
# ---------------------------------------------------------------------------------------------

def layer_label(index, layer):
    """A short name for a top-level layer, e.g. "0 Conv2D 3->32 7x7" or "4 Linear 8192->100"."""
    kind = type(layer).__name__
    if kind in ("Conv2D", "Conv1D"):
        kernel = "x".join(str(k) for k in layer.kernel_size)
        extra = "".join([f" s{layer.stride[0]}" if max(layer.stride) > 1 else "",
                         f" g{layer.groups}" if getattr(layer, "groups", 1) != 1 else ""])
        return f"{index} {kind} {layer.in_channels}->{layer.out_channels} {kernel}{extra}"
    if kind == "Linear":
        return f"{index} Linear {layer.in_features}->{layer.out_features}"
    if kind.startswith("BatchNorm"):
        return f"{index} {kind} {layer.num_features}"
    if kind in ("MaxPool2D", "AvgPool2D"):
        return f"{index} {kind} {'x'.join(str(k) for k in layer.kernel_size)}"
    return f"{index} {kind}"


# The parts of a step besides the layers, in the order they are shown.
OTHER_PARTS = ("loss", "zero_grad", "optimizer")


def _timed(add, part, phase):
    def wrap(method):
        def timed(*args):
            t0 = time.perf_counter()
            try:
                return method(*args)
            finally:
                add(part, phase, time.perf_counter() - t0)
        return timed
    return wrap


@contextlib.contextmanager
def _instrument_fastconv(step, add):
    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(step.layers):
            for phase in ("forward", "backward"):
                stack.enter_context(_patched(layer, phase, _timed(add, i, phase)))
        for phase in ("forward", "backward"):
            stack.enter_context(_patched(step.loss_fn, phase, _timed(add, "loss", phase)))
        stack.enter_context(_patched(step.model, "zero_grad", _timed(add, "zero_grad", "forward")))
        stack.enter_context(_patched(step.optimizer, "step", _timed(add, "optimizer", "backward")))
        yield


@contextlib.contextmanager
def _instrument_torch(step, add):
    """Forward hooks time each module's forward; backward pre-hooks mark when each module's
    output gradient arrives, so a module's backward lasts until the next mark (the one of the
    module before it, or the optimizer step for the first). Only pre-hooks: torch's full
    backward hook would fire early on a first layer whose input needs no gradient.
    """
    marks = []  # (part, time) of each backward pre-hook, in the order autograd reaches them
    started = {}
    handles = []
    modules = [(i, m) for i, m in enumerate(step.layers)] + [("loss", step.loss_fn)]
    for part, module in modules:
        def pre(mod, args, part=part):
            started[part] = time.perf_counter()

        def post(mod, args, out, part=part):
            add(part, "forward", time.perf_counter() - started[part])

        def backward_pre(mod, grad_output, part=part):
            marks.append((part, time.perf_counter()))

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post),
                    module.register_full_backward_pre_hook(backward_pre)]

    def step_then_close_marks(method):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            for (part, mark), (_, following) in zip(marks, marks[1:] + [(None, t0)]):
                add(part, "backward", following - mark)
            marks.clear()
            try:
                return method(*args, **kwargs)
            finally:
                add("optimizer", "backward", time.perf_counter() - t0)
        return timed

    try:
        with _patched(step.optimizer, "zero_grad", _timed(add, "zero_grad", "forward")), \
                _patched(step.optimizer, "step", step_then_close_marks), warnings.catch_warnings():
            # torch warns that hooks on a module whose inputs need no gradient (the first layer)
            # fire with the output gradient: a pre-hook wants exactly that.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            yield
    finally:
        for handle in handles:
            handle.remove()


def layer_breakdown(steps, count, gap_seconds=0.0):
    """Median seconds per part of a step, for each implementation in `steps` (name -> step).

    Runs `count` instrumented steps of each, round-robin. Returns a list of parts, each
    ``{"part": label, name: {"forward_ms", "backward_ms"}, ...}``: one per top-level layer,
    then loss, zero_grad, optimizer, "other" (the step's time not in any part: Python and
    autograd overhead) and "step" (the whole instrumented step).
    """
    instrument = {"torch": _instrument_torch}
    labels = [layer_label(i, layer) for i, layer in enumerate(steps["fastconv"].layers)]
    per_step = {name: [] for name in steps}
    current = {name: defaultdict(float) for name in steps}  # (part, phase) -> seconds, this step
    with contextlib.ExitStack() as stack:
        for name, step in steps.items():
            def add(part, phase, seconds, record=current[name]):
                record[(part, phase)] += seconds
            stack.enter_context(instrument.get(name, _instrument_fastconv)(step, add))
        for _ in range(count):
            for name, step in steps.items():
                time.sleep(gap_seconds)
                current[name].clear()
                t0 = time.perf_counter()
                step.backward(step.forward())
                current[name][("step", "total")] = time.perf_counter() - t0
                per_step[name].append(dict(current[name]))

    for records in per_step.values():
        for r in records:
            r[("other", "total")] = r[("step", "total")] - sum(v for k, v in r.items() if k[0] != "step")
    table = []
    for part in list(range(len(labels))) + list(OTHER_PARTS) + ["other", "step"]:
        phases = ("total",) if part in ("other", "step") else ("forward", "backward")
        entry = {"part": labels[part] if isinstance(part, int) else part}
        for name, records in per_step.items():
            entry[name] = {f"{phase}_ms": 1e3 * statistics.median(r.get((part, phase), 0.0) for r in records)
                           for phase in phases}
        table.append(entry)
    return table
