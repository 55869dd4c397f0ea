"""Containers: Sequential (layers in order) and Residual (a block plus a shortcut), and the
Identity layer that residual networks use as a shortcut.

A container's ``params``, ``grads`` and ``buffers`` are its children's own arrays under prefixed
names, as PyTorch names them (``"0.weight"``, ``"block.1.bias"``), rebuilt on every access so they
never go stale: an optimizer built on a container updates the layers in place, and save/load
(``.npz``) covers every layer inside, at any depth.
"""

import numpy as np

from fastconv.nn._base import Layer
from fastconv.nn.activations import ReLU


class _Container(Layer):
    """Shared code of the containers: children are ``(prefix, layer)`` pairs."""

    def __init__(self):
        # Not Layer.__init__: a container has no dtype, rng or arrays of its own.
        self.training = True

    def _children(self):
        raise NotImplementedError

    def _prefixed(self, attribute):
        return {
            f"{prefix}.{name}": value
            for prefix, layer in self._children()
            for name, value in getattr(layer, attribute).items()
        }

    @property
    def params(self):
        return self._prefixed("params")

    @property
    def grads(self):
        return self._prefixed("grads")

    @property
    def buffers(self):
        return self._prefixed("buffers")

    def zero_grad(self):
        for _, layer in self._children():
            layer.zero_grad()

    def train(self, mode=True):
        self.training = bool(mode)
        for _, layer in self._children():
            layer.train(mode)
        return self

    def _generators(self):
        return [g for _, layer in self._children() for g in layer._generators()]


def _check_layer(owner, what, layer):
    if not isinstance(layer, Layer):
        raise TypeError(f"{owner}: {what} must be a fastconv.nn layer, got {type(layer).__name__}")
    return layer


class Sequential(_Container):
    """Apply ``layers`` in order; ``backward`` runs them in reverse.

    Parameters, gradients and buffers of layer ``i`` appear under ``"{i}.{name}"`` (e.g.
    ``"0.weight"``).
    """

    def __init__(self, *layers):
        super().__init__()
        self.layers = [_check_layer("Sequential", f"argument {i}", layer) for i, layer in enumerate(layers)]

    def _children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x):
        private = False  # x is the caller's
        for layer in self.layers:
            x = layer._forward_in_place(x) if private and isinstance(layer, ReLU) else layer.forward(x)
            private = layer._returns_private
        return x

    def backward(self, dout, *, input_grad=True):
        """Backward through the layers in reverse; returns dx, the gradient of the input.

        ``input_grad=False`` says the input is data whose gradient is not needed (as a torch
        input that does not require grad): returns None, and a first convolution layer skips
        computing dx, often the largest pass of its backward. The parameters' gradients are the
        same either way."""
        private = False
        last = len(self.layers) - 1
        for i, layer in enumerate(reversed(self.layers)):
            if i == last and not input_grad and hasattr(layer, "_backward_parameters_only"):
                layer._backward_parameters_only(dout)
                return None
            dout = layer._backward_in_place(dout) if private and isinstance(layer, ReLU) else layer.backward(dout)
            private = layer._returns_private
        return dout if input_grad else None

    def __repr__(self):
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)" if inner else "Sequential()"


class Residual(_Container):
    """``y = block(x) + shortcut(x)``, the building block of residual networks (ResNet).

    ``shortcut=None`` is the identity; a downsampling block passes its own shortcut, e.g. a
    1x1 stride-2 ``Conv2D`` (often followed by ``BatchNorm2D``, in a ``Sequential``). Both
    outputs must have the same shape. Parameters appear as ``"block.<name>"`` and
    ``"shortcut.<name>"``; ``backward`` returns the sum of the two paths' input gradients.
    """

    def __init__(self, block, shortcut=None):
        super().__init__()
        self.block = _check_layer("Residual", "block", block)
        self.shortcut = None if shortcut is None else _check_layer("Residual", "shortcut", shortcut)
        self._cache = None

    def _children(self):
        children = [("block", self.block)]
        if self.shortcut is not None:
            children.append(("shortcut", self.shortcut))
        return children

    def forward(self, x):
        y = self.block.forward(x)
        s = np.asarray(x) if self.shortcut is None else self.shortcut.forward(x)
        if s.shape != y.shape:
            path = "its input" if self.shortcut is None else "the shortcut's output"
            raise ValueError(
                f"Residual.forward: the block's output has shape {y.shape} but {path} has shape "
                f"{s.shape}; a block that changes the shape needs a shortcut that does too"
            )
        # A new array: the block's last layer may hold y in its cache (ReLU keeps its output).
        out = np.add(y, s, dtype=y.dtype)
        self._cache = out.shape
        return out

    def backward(self, dout):
        shape = self._need_cache()
        dout = np.asarray(dout)
        if dout.shape != shape:
            raise ValueError(f"Residual.backward: dout must have the forward output's shape {shape}, got {dout.shape}")
        dx = self.block.backward(dout)
        ds = dout if self.shortcut is None else self.shortcut.backward(dout)
        return np.add(dx, ds, dtype=dx.dtype)

    def __repr__(self):
        return f"Residual(\n  (block): {self.block!r}\n  (shortcut): {self.shortcut!r}\n)"


class Identity(Layer):
    """Returns its input (as an array of the layer's dtype: the input itself when it already is
    one, as ``torch.nn.Identity``); the gradient passes through unchanged."""

    def forward(self, x):
        x = self._input(x)
        self._cache = x.shape
        return x

    def backward(self, dout):
        return self._dout(dout, self._need_cache())
