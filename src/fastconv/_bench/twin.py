"""fastconv.nn models seen from outside: their structure, their torch.nn twin, method patching.

``to_torch`` builds the torch.nn module that computes what a fastconv.nn model computes (the
same layers, the same hyper-parameters, so the parameter names line up) and ``copy_weights``
gives it the fastconv model's parameters and buffers. Layers are recognised by isinstance
against ``fastconv.nn``'s classes, looked up when needed, so that a layer fastconv.nn does not
have yet (Residual, AdaptiveAvgPool2D, ...) simply never matches.
"""

import contextlib
import functools

import numpy as np

from fastconv import nn


class TwinError(RuntimeError):
    """A fastconv.nn model that has no torch twin (or whose structure cannot be seen)."""


def is_layer(layer, name):
    """isinstance(layer, fastconv.nn.<name>), False while fastconv.nn has no such layer."""
    cls = getattr(nn, name, None)
    return isinstance(cls, type) and isinstance(layer, cls)


def _residual_parts(layer):
    """(block, shortcut) of a fastconv.nn.Residual; shortcut None means the identity."""
    try:
        return layer.block, layer.shortcut
    except AttributeError as exc:
        raise TwinError(f"fastconv.nn.Residual has no {exc.name!r} attribute: the benchmark cannot "
                        "see its block and shortcut") from None


def _children(layer):
    """The layers directly inside a container (Sequential, Residual); [] for a leaf layer."""
    if is_layer(layer, "Sequential"):
        return list(layer.layers)
    if is_layer(layer, "Residual"):
        return [part for part in _residual_parts(layer) if part is not None]
    return []


def leaves(layer):
    """The layers of a model that are not containers, in forward order."""
    children = _children(layer)
    if not children:
        return [layer]
    return [leaf for child in children for leaf in leaves(child)]


@contextlib.contextmanager
def patched(obj, method, wrap):
    """Replace obj.method by wrap(original) on this instance only; restore it on exit."""
    setattr(obj, method, wrap(getattr(obj, method)))
    try:
        yield
    finally:
        delattr(obj, method)  # the class's method shows through again



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
    if is_layer(layer, "Sequential"):
        return torch.nn.Sequential(*[to_torch(child, torch) for child in layer.layers])
    if is_layer(layer, "Residual"):
        block, shortcut = _residual_parts(layer)
        return _torch_residual(torch)(to_torch(block, torch),
                                      torch.nn.Identity() if shortcut is None else to_torch(shortcut, torch))
    for name, make in _torch_twins(torch.nn).items():
        if is_layer(layer, name):
            return make(layer)
    raise TwinError(f"no torch twin for fastconv.nn.{type(layer).__name__} in the training benchmark")


def _pairs(layer, module):
    """(fastconv leaf layer, torch module) pairs of a model and its torch twin."""
    if is_layer(layer, "Sequential"):
        for child, twin in zip(layer.layers, module):
            yield from _pairs(child, twin)
    elif is_layer(layer, "Residual"):
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
                    raise TwinError(f"{type(layer).__name__}.{key}: fastconv shape {array.shape}, "
                                        f"torch {tuple(target.shape)}")
                target.copy_(torch.from_numpy(np.ascontiguousarray(array)))


