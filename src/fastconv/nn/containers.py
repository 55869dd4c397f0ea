"""Sequential: layers applied in order, with prefixed parameter names and .npz save/load."""

from fastconv.nn._base import Layer


class Sequential(Layer):
    """Apply ``layers`` in order; ``backward`` runs them in reverse.

    Parameters, gradients and buffers of layer ``i`` appear under ``"{i}.{name}"`` (e.g.
    ``"0.weight"``), as PyTorch names them; the dicts hold the layers' own arrays, so an
    optimizer built on a Sequential updates the layers in place.
    """

    def __init__(self, *layers):
        # Not Layer.__init__: a container has no dtype, rng or arrays of its own.
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Sequential: argument {i} must be a fastconv.nn layer, got "
                    f"{type(layer).__name__}"
                )
        self.layers = list(layers)
        self.training = True

    def _prefixed(self, attribute):
        return {
            f"{i}.{name}": value
            for i, layer in enumerate(self.layers)
            for name, value in getattr(layer, attribute).items()
        }

    # Rebuilt on every access from the children's dicts (same arrays), so they never go stale.
    @property
    def params(self):
        return self._prefixed("params")

    @property
    def grads(self):
        return self._prefixed("grads")

    @property
    def buffers(self):
        return self._prefixed("buffers")

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def zero_grad(self):
        for layer in self.layers:
            layer.zero_grad()

    def train(self, mode=True):
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def _generators(self):
        return [g for layer in self.layers for g in layer._generators()]

    def __repr__(self):
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)" if inner else "Sequential()"
