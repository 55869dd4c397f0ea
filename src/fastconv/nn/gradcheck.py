"""gradcheck: compare a layer's analytic gradients with central differences."""

import numpy as np


def _relative_error(analytic, numeric):
    """Largest elementwise |a - n| / max(|a|, |n|, floor) of one gradient array.

    The floor (1e-3 of the array's largest magnitude, at least 1e-10) stops elements whose
    true gradient is ~0 from turning the rounding noise of the differences (about
    eps * |loss| / h) into a huge "relative" error, while a wrong element of any
    non-negligible size still shows.
    """
    if analytic.size == 0:
        return 0.0
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(n))):
        return float("inf")
    scale = max(np.abs(a).max(), np.abs(n).max())
    floor = max(1e-3 * scale, 1e-10)
    return float((np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)).max())


def gradcheck(layer, x, dout=None, h=1e-5):
    """Largest relative error between a layer's analytic gradients and central differences.

    Runs ``layer.forward(x)`` and ``layer.backward(dout)`` once, then estimates the gradient
    of ``L = sum(forward(x) * dout)`` with respect to ``x`` and to every parameter by
    ``(L(v + h) - L(v - h)) / (2 h)``, one element at a time. Returns the largest relative
    error over all of them (see ``_relative_error``): around 1e-7 or below for a correct
    float64 layer, order 1 for a wrong one.

    The layer must compute in float64 (build it with ``dtype=np.float64``): float32
    differences are too coarse to check anything. Random layers (Dropout) draw the same
    masks in every evaluation, and the layer's gradients and buffers (BatchNorm's running
    statistics) are restored afterwards, so the check has no side effects beyond the cache.
    ``dout`` defaults to a fixed random array of the output's shape. Choose ``x`` away from
    kinks (ReLU at 0, ties in max pooling), where the function is not differentiable.
    """
    if not (callable(getattr(layer, "forward", None)) and callable(getattr(layer, "backward", None))):
        raise TypeError(f"gradcheck: layer must have forward and backward, got {type(layer).__name__}")
    if not (isinstance(h, (int, float, np.floating)) and h > 0):
        raise ValueError(f"gradcheck: h must be a positive number, got {h!r}")
    x = np.array(x, dtype=np.float64)  # our own copy: it is perturbed below
    params = dict(getattr(layer, "params", {}))
    grads = dict(getattr(layer, "grads", {}))
    buffers = dict(getattr(layer, "buffers", {}))
    for name, p in params.items():
        if p.dtype != np.float64:
            raise ValueError(
                f"gradcheck: parameter {name!r} is {p.dtype}; build the layer with "
                "dtype=np.float64 for a meaningful check"
            )
    generators = list({id(g): g for g in (layer._generators() if hasattr(layer, "_generators") else [])}.values())
    rng_states = [g.bit_generator.state for g in generators]
    saved_grads = {k: g.copy() for k, g in grads.items()}
    saved_buffers = {k: b.copy() for k, b in buffers.items()}

    def run_forward(inp):
        # Same random draws and running statistics for every evaluation.
        for g, state in zip(generators, rng_states):
            g.bit_generator.state = state
        for k, b in buffers.items():
            b[...] = saved_buffers[k]
        return layer.forward(inp)

    try:
        out = np.asarray(run_forward(x))
        if out.dtype != np.float64:
            raise ValueError(
                f"gradcheck: the layer returned {out.dtype}; build it with dtype=np.float64 "
                "for a meaningful check"
            )
        if dout is None:
            dout = np.random.default_rng(0).standard_normal(out.shape)
        dout = np.asarray(dout, dtype=np.float64)
        if dout.shape != out.shape:
            raise ValueError(f"gradcheck: dout must have the output's shape {out.shape}, got {dout.shape}")
        for g in grads.values():
            g[...] = 0
        analytic = {"x": np.asarray(layer.backward(dout), dtype=np.float64).copy()}
        analytic.update({name: grads[name].copy() for name in params})

        def loss(inp):
            return float(np.sum(np.asarray(run_forward(inp), dtype=np.float64) * dout))

        def numeric_gradient(array, evaluate):
            result = np.zeros(array.shape)
            flat, flat_result = array.reshape(-1), result.reshape(-1)
            for i in range(flat.size):
                old = flat[i]
                flat[i] = old + h
                plus = evaluate()
                flat[i] = old - h
                minus = evaluate()
                flat[i] = old
                flat_result[i] = (plus - minus) / (2 * h)
            return result

        errors = [_relative_error(analytic["x"], numeric_gradient(x, lambda: loss(x)))]
        for name, p in params.items():
            errors.append(_relative_error(analytic[name], numeric_gradient(p, lambda: loss(x))))
        return max(errors)
    finally:
        for k, g in grads.items():
            g[...] = saved_grads[k]
        for k, b in buffers.items():
            b[...] = saved_buffers[k]
        for g, state in zip(generators, rng_states):
            g.bit_generator.state = state
