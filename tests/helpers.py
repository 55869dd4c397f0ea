"""Small data helpers shared by several test modules (fixtures live in conftest.py)."""

import numpy as np


def randn(*shape, seed=0, dtype=np.float64):
    """Standard normal data of the given shape, reproducible by seed."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


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
