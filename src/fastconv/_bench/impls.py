"""The kernel implementations compared: fastconv, PyTorch (autograd) and a plain-NumPy baseline.

(The training steps' implementations are in fastconv._bench.training.) Each maker takes a
kernel workload and its NumPy inputs and returns ``(forward, backward)``:
``forward()`` runs the forward pass and returns what ``backward(state)`` needs. Inputs are
created once and shared, so that every implementation sees the same data and no timing
includes input preparation.
"""

import importlib

import fastconv

TORCH_VERSION_WANTED = "2.13"


def import_torch():
    """torch, or None with the reason when it cannot be imported."""
    try:
        torch = importlib.import_module("torch")
    except Exception as exc:  # ImportError, or a broken install raising something else
        return None, f"PyTorch is not importable ({type(exc).__name__}: {exc}); torch columns and ratios are skipped"
    return torch, None


def _fastconv_conv(workload, inputs, backend):
    x, w, b, dout = inputs["x"], inputs["w"], inputs["b"], inputs["dout"]
    options = {"stride": workload.stride, "padding": workload.pad, "backend": backend}
    if workload.groups != 1:  # only then: fastconv without groups= still runs the others
        options["groups"] = workload.groups
    if workload.transpose:
        conv, conv_backward = fastconv.conv_transpose2d, fastconv.conv_transpose2d_backward
    elif workload.ndim == 1:
        conv, conv_backward = fastconv.conv1d, fastconv.conv1d_backward
    else:
        conv, conv_backward = fastconv.conv2d, fastconv.conv2d_backward

    def forward():
        return conv(x, w, b, **options)

    def backward(y):
        return conv_backward(dout, x, w, **options)

    return forward, backward


def _fastconv_pool(workload, inputs, backend):
    x, dout = inputs["x"], inputs["dout"]
    k, s, p = workload.k, workload.stride, workload.pad
    if workload.op == "max":
        def forward():
            return fastconv.max_pool2d(x, k, s, p, backend=backend)

        def backward(state):
            return fastconv.max_pool2d_backward(dout, state[1], x.shape, backend=backend)
    else:
        def forward():
            return fastconv.avg_pool2d(x, k, s, p, backend=backend)

        def backward(y):
            return fastconv.avg_pool2d_backward(dout, x.shape, k, s, p, backend=backend)
    return forward, backward


def fastconv_maker(backend):
    """fastconv's public functions on `backend` (the NumPy baseline is backend "reference")."""
    def make(workload, inputs):
        if workload.kind == "conv":
            return _fastconv_conv(workload, inputs, backend)
        return _fastconv_pool(workload, inputs, backend)
    return make


def torch_maker(torch):
    """torch.nn.functional with autograd, as a PyTorch user trains: forward, then backward(dout)."""
    functional = torch.nn.functional

    def make(workload, inputs):
        # from_numpy shares the memory: the same data as the other implementations, no copy.
        x = torch.from_numpy(inputs["x"]).requires_grad_(True)
        dout = torch.from_numpy(inputs["dout"])
        if workload.kind == "conv":
            w = torch.from_numpy(inputs["w"]).requires_grad_(True)
            b = torch.from_numpy(inputs["b"]).requires_grad_(True)
            leaves = (x, w, b)
            if workload.transpose:
                conv = functional.conv_transpose2d
            else:
                conv = functional.conv1d if workload.ndim == 1 else functional.conv2d

            def forward():
                for leaf in leaves:
                    leaf.grad = None  # fresh gradients each call, as fastconv returns new arrays
                return conv(x, w, b, stride=workload.stride, padding=workload.pad, groups=workload.groups)
        else:
            leaves = (x,)
            pool = functional.max_pool2d if workload.op == "max" else functional.avg_pool2d

            def forward():
                x.grad = None
                return pool(x, workload.k, workload.stride, workload.pad)

        def backward(y):
            y.backward(dout)
            return tuple(leaf.grad for leaf in leaves)

        return forward, backward

    return make
