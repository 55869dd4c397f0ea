"""Where a training step's time goes: each top-level layer's forward and backward, the loss,
zero_grad and the optimizer step, in fastconv.nn and in torch.nn.

fastconv's parts are timed by wrapping the methods of each layer instance; torch's by module
forward hooks and backward pre-hooks.
"""

import contextlib
import statistics
import time
import warnings
from collections import defaultdict

from fastconv._bench.twin import patched


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
        # Sequential's fast paths (an in-place ReLU, a first layer without dx) count as the
        # layer's forward or backward.
        methods = {"forward": "forward", "_forward_in_place": "forward", "backward": "backward",
                   "_backward_in_place": "backward", "_backward_parameters_only": "backward"}
        for i, layer in enumerate(step.layers):
            for method, phase in methods.items():
                if hasattr(layer, method):
                    stack.enter_context(patched(layer, method, _timed(add, i, phase)))
        for phase in ("forward", "backward"):
            stack.enter_context(patched(step.loss_fn, phase, _timed(add, "loss", phase)))
        stack.enter_context(patched(step.model, "zero_grad", _timed(add, "zero_grad", "forward")))
        stack.enter_context(patched(step.optimizer, "step", _timed(add, "optimizer", "backward")))
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
        with patched(step.optimizer, "zero_grad", _timed(add, "zero_grad", "forward")), \
                patched(step.optimizer, "step", step_then_close_marks), warnings.catch_warnings():
            # torch warns that hooks on a module whose inputs need no gradient (the first layer)
            # fire with the output gradient: a pre-hook wants exactly that.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            yield
    finally:
        for handle in handles:
            handle.remove()


def layer_breakdown(steps, count, gap_seconds=0.0):
    """Median seconds per part of a step, for each implementation in `steps` (name -> step).

    Runs `count` instrumented steps of each, back to back as in a training loop, the
    implementations `gap_seconds` apart (as the row's timing does). Returns a list of parts, each
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
        for name, step in steps.items():
            time.sleep(gap_seconds)
            for _ in range(count):
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
