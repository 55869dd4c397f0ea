"""Small data helpers shared by several test modules (fixtures live in conftest.py)."""

import numpy as np
import pytest


def randn(*shape, seed=0, dtype=np.float64):
    """Standard normal data of the given shape, reproducible by seed."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class _Missing:
    """Stands in for torch (or one of its attributes) when torch is not installed.

    Attribute access gives another stand-in, so module-level aliases such as
    ``F = torch.nn.functional`` still import; calling one skips: the test that reaches a torch
    comparison is skipped there (after its torch-free checks have run), and a module that calls
    torch at import is skipped whole.
    """

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        pytest.skip(f"{self._name}(): torch is not installed", allow_module_level=True)

    def __repr__(self):
        return f"<{self._name}: torch is not installed>"


def optional_torch():
    """torch when it imports, else a stand-in whose calls skip (see _Missing).

    Test modules that compare with torch also hold checks that need only fastconv (against the
    reference, against hand-computed values); importing torch this way keeps those running
    where torch is not installed, as on Pythons that have no CPU build of it at hand.
    """
    try:
        import torch
    except ImportError:
        return _Missing("torch")
    return torch


def numerical_gradient(f, x, h=1e-6):
    """Central differences of the scalar function f() with respect to the array x, changed in
    place one element at a time (and restored)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + h
        plus = f()
        x[i] = saved - h
        minus = f()
        x[i] = saved
        grad[i] = (plus - minus) / (2 * h)
    return grad
