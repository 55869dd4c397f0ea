"""Learning-rate schedules: StepLR and CosineAnnealingLR, as torch.optim.lr_scheduler's.

A schedule changes its optimizer's ``lr`` when ``step()`` is called, once per epoch after that
epoch's optimizer steps. The updates are torch's own recurrences (each new rate computed from
the current one), so the rates equal torch's bit for bit, and a rate set by hand in between is
carried forward as torch carries it.
"""

import math
import numbers

import numpy as np

from fastconv.nn.optim import Optimizer


class _Schedule:
    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: optimizer must be a fastconv.nn optimizer (SGD, Adam), "
                f"got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def step(self):
        """Advance one epoch and set the optimizer's learning rate for the next one."""
        self.last_epoch += 1
        self.optimizer.lr = self._next_lr(self.optimizer.lr)

    def get_last_lr(self):
        """The learning rate the optimizer uses now."""
        return self.optimizer.lr

    def _next_lr(self, lr):
        raise NotImplementedError


def _positive_int(owner, name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def _real(owner, name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite real number, got {value!r}")
    return float(value)


class StepLR(_Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = _positive_int("StepLR", "step_size", step_size)
        self.gamma = _real("StepLR", "gamma", gamma)

    def _next_lr(self, lr):
        if self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class CosineAnnealingLR(_Schedule):
    """Anneal the learning rate from its initial value to ``eta_min`` along half a cosine over
    ``T_max`` epochs (then back up, periodically, as torch's)."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        self.T_max = _positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = _real("CosineAnnealingLR", "eta_min", eta_min)

    def _next_lr(self, lr):
        epoch, period, low = self.last_epoch, self.T_max, self.eta_min
        if (epoch - 1 - period) % (2 * period) == 0:
            return lr + (self.base_lr - low) * (1 - math.cos(math.pi / period)) / 2
        return ((1 + math.cos(math.pi * epoch / period)) / (1 + math.cos(math.pi * (epoch - 1) / period))
                * (lr - low) + low)
