"""Optimizers that update a model's parameter arrays in place: SGD and Adam.

Both follow ``torch.optim``'s formulas, including weight decay, which (as in torch.optim.SGD and
torch.optim.Adam, not AdamW) is added to the gradient: ``g = grad + weight_decay * param``.
Each parameter is updated in one pass by the active backend's kernels, in the parameter's
dtype, without temporaries (fastconv._ext._optim).
"""

import math
import numbers

import numpy as np

from fastconv import _backend


def _real(owner, name, value, minimum=0.0, below=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not value >= minimum or (below is not None and not value < below):
        bounds = f"in [{minimum}, {below})" if below is not None else f">= {minimum}"
        raise ValueError(f"{owner}: {name} must be {bounds}, got {value!r}")
    return value


class Optimizer:
    """Holds the ``(name, param, grad)`` triples of a layer or Sequential."""

    def __init__(self, model):
        owner = type(self).__name__
        if not callable(getattr(model, "parameters", None)):
            raise TypeError(f"{owner}: model must be a fastconv.nn layer or Sequential, got {type(model).__name__}")
        self.parameters = list(model.parameters())
        if not self.parameters:
            raise ValueError(f"{owner}: the model has no parameters to optimise")
        for name, param, grad in self.parameters:
            if not (isinstance(param, np.ndarray) and isinstance(grad, np.ndarray)
                    and param.dtype in (np.float32, np.float64) and grad.dtype == param.dtype
                    and param.shape == grad.shape and param.flags.c_contiguous
                    and grad.flags.c_contiguous and param.flags.writeable):
                raise TypeError(
                    f"{owner}: parameter {name!r} and its gradient must be writable C-contiguous "
                    "float32 or float64 arrays of one shape and dtype (as fastconv.nn layers make them)"
                )
        self.state = {name: {} for name, _, _ in self.parameters}
        self.step_count = 0

    @property
    def lr(self):
        """The learning rate; settable (a schedule such as StepLR sets it once per epoch)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _real(type(self).__name__, "lr", value)

    def zero_grad(self):
        """Reset the gradients of every optimised parameter to zero, in place."""
        for _, _, grad in self.parameters:
            grad[...] = 0

    def step(self):
        """Update every parameter in place from its current gradient."""
        self.step_count += 1
        for name, param, grad in self.parameters:
            self._update(param, grad, self.state[name])

    def _update(self, param, grad, state):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (heavy-ball or Nesterov) momentum.

    As torch.optim.SGD with dampening 0: ``g = grad + weight_decay * p``;
    ``buf = g`` on the first step, then ``buf = momentum * buf + g``; ``p -= lr * buf``
    (Nesterov: ``p -= lr * (g + momentum * buf)``).
    """

    def __init__(self, model, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(model)
        self.lr = lr
        self.momentum = _real("SGD", "momentum", momentum)
        self.weight_decay = _real("SGD", "weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")

    def _update(self, param, grad, state):
        first = bool(self.momentum) and "momentum_buffer" not in state
        if first:
            state["momentum_buffer"] = np.empty_like(param)
        buf = state.get("momentum_buffer")
        _backend.kernels().sgd_update(
            param.reshape(-1), grad.reshape(-1), None if buf is None else buf.reshape(-1),
            self.lr, self.momentum, self.weight_decay, self.nesterov, first,
        )


class Adam(Optimizer):
    """Adam (Kingma & Ba), as torch.optim.Adam with ``amsgrad=False``.

    ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g**2``,
    ``p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)``.
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(model)
        self.lr = lr
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"Adam: betas must be a pair of numbers, got {betas!r}") from None
        self.betas = (_real("Adam", "betas[0]", beta1, 0.0, 1.0), _real("Adam", "betas[1]", beta2, 0.0, 1.0))
        self.eps = _real("Adam", "eps", eps)
        self.weight_decay = _real("Adam", "weight_decay", weight_decay)

    def _update(self, param, grad, state):
        beta1, beta2 = self.betas
        if not state:
            state["exp_avg"] = np.zeros_like(param)
            state["exp_avg_sq"] = np.zeros_like(param)
        t = self.step_count
        _backend.kernels().adam_update(
            param.reshape(-1), grad.reshape(-1), state["exp_avg"].reshape(-1),
            state["exp_avg_sq"].reshape(-1), self.lr / (1 - beta1**t), beta1, beta2,
            math.sqrt(1 - beta2**t), self.eps, self.weight_decay,
        )
