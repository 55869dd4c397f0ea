"""Small data helpers shared by several test modules (fixtures live in conftest.py)."""

import numpy as np


def randn(*shape, seed=0, dtype=np.float64):
    """Standard normal data of the given shape, reproducible by seed."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
