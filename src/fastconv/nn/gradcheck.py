"""gradcheck: compare a layer's analytic gradients with central differences."""

import numpy as np


def _relative_errors(pairs):
    """Largest elementwise |a - n| / max(|a|, |n|, floor) over (analytic, numeric) pairs.

    Central differences carry rounding noise of about eps * |loss| / h in every element, so
    elements whose true gradient is ~0 (a conv bias followed by BatchNorm, say) would show a
    huge "relative" error. The floor ignores differences below 1e-3 of the array's largest
    gradient and below 1e-4 of the largest gradient of all arrays; a wrong element of any
    non-negligible size still shows.
    """
    pairs = [(np.asarray(a, dtype=np.float64), np.asarray(n, dtype=np.float64)) for a, n in pairs]
    pairs = [(a, n) for a, n in pairs if a.size]
    if not pairs:
        return 0.0
    if not all(np.all(np.isfinite(a)) and np.all(np.isfinite(n)) for a, n in pairs):
        return float("inf")
    scales = [max(np.abs(a).max(), np.abs(n).max()) for a, n in pairs]
    overall = max(scales)
    worst = 0.0
    for (a, n), scale in zip(pairs, scales):
        floor = max(1e-3 * scale, 1e-4 * overall, 1e-300)
        worst = max(worst, float((np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)).max()))
    return worst


def gradcheck(layer, x, dout=None, h=1e-5):
    """Largest relative error between a layer's analytic gradients and central differences.

    Runs ``layer.forward(x)`` and ``layer.backward(dout)`` once, then estimates the gradient
    of ``L = sum(forward(x) * dout)`` with respect to ``x`` and to every parameter by
    ``(L(v + h) - L(v - h)) / (2 h)``, one element at a time. Returns the largest relative
    error over all of them (see ``_relative_errors``): around 1e-7 or below for a correct
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
            # An unusual seed: with seed 0, a caller's x drawn from seed 0 would equal dout,
            # which for BatchNorm makes the true dx vanish and the check ill-conditioned.
            dout = np.random.default_rng(0x5EED_D0D7).standard_normal(out.shape)
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

        pairs = [(analytic["x"], numeric_gradient(x, lambda: loss(x)))]
        for name, p in params.items():
            pairs.append((analytic[name], numeric_gradient(p, lambda: loss(x))))
        return _relative_errors(pairs)
    finally:
        for k, g in grads.items():
            g[...] = saved_grads[k]
        for k, b in buffers.items():
            b[...] = saved_buffers[k]
        for g, state in zip(generators, rng_states):
            g.bit_generator.state = state
