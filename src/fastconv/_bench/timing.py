"""Round-robin timing: every repetition runs each implementation once, in rotating order.

Machines drift (frequency, other tenants, page cache); running the implementations one after
the other within each repetition makes that drift hit all of them alike, and rotating which
one goes first removes any bias from always following the same neighbour. Fast workloads are
timed over an inner loop of several calls per sample (as timeit does) so that timer resolution
and call jitter do not dominate.

A baseline must never slow down what it is compared with: implementations whose thread pools
keep spinning after they return (the NumPy baseline's OpenBLAS spins for about 0.1 s after a
matmul) are timed in a phase of their own (``measure_phases``), after the round-robin of the
others and after a pause that lets the previous phase's threads go to sleep.
"""

import gc
import math
import statistics
import time


def _one_call(forward, backward):
    """Run forward then backward once; return (forward seconds, backward seconds)."""
    t0 = time.perf_counter()
    state = forward()
    t1 = time.perf_counter()
    backward(state)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def _sample(forward, backward, number):
    """Mean forward and backward seconds per call over `number` calls."""
    fwd = bwd = 0.0
    for _ in range(number):
        f, b = _one_call(forward, backward)
        fwd += f
        bwd += b
    return fwd / number, bwd / number


def stats(samples):
    """median, min and max of a list of seconds, in milliseconds."""
    ms = [1e3 * s for s in samples]
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms)}


def plan(estimates, repeat=None, min_repeat=5, max_repeat=200, target_seconds=2.0, min_sample_seconds=0.002):
    """Inner-loop counts per implementation and the number of repetitions.

    `estimates` maps implementation -> seconds per forward + backward call. Each sample lasts
    at least `min_sample_seconds`; the repetitions fill about `target_seconds` but never fall
    below `min_repeat` nor exceed `max_repeat` (an explicit `repeat` overrides both).
    """
    number = {name: max(1, min(1000, math.ceil(min_sample_seconds / max(t, 1e-9)))) for name, t in estimates.items()}
    per_round = sum(number[name] * t for name, t in estimates.items())
    if repeat is not None:
        return number, repeat
    reps = math.ceil(target_seconds / max(per_round, 1e-9))
    return number, max(min_repeat, min(max_repeat, reps))


def measure(impls, repeat=None, min_repeat=5, max_repeat=200, target_seconds=2.0,
            min_sample_seconds=0.002, gap_seconds=0.001, max_gap_seconds=0.1, on_repetition=None, on_plan=None):
    """Time each of `impls` (name -> (forward, backward)) round-robin.

    Returns name -> {"total", "forward", "backward"}: dicts of median/min/max milliseconds per
    call, plus "samples" (per-call total ms of each repetition) and "number" (calls per sample).
    A sleep between implementations lets the spinning worker threads of the previous one
    (OpenMP, OpenBLAS) go idle before the next starts: as long as the previous sample took,
    between `gap_seconds` and `max_gap_seconds` (OpenBLAS workers spin for tens of ms after a
    large GEMM and otherwise steal the cores from whatever runs next).
    """
    names = list(impls)
    estimates = {}
    for name in names:  # warm-up: first calls allocate workspaces, start thread pools, fault pages
        forward, backward = impls[name]
        first = sum(_one_call(forward, backward))
        if first > 0.5:
            estimates[name] = first
            continue
        # The first call is not representative: keep calling for a moment, take the fastest.
        calls, spent = [], 0.0
        while not calls or (spent < 0.05 and len(calls) < 20):
            calls.append(sum(_one_call(forward, backward)))
            spent += calls[-1]
        estimates[name] = min(calls)
    number, reps = plan(estimates, repeat, min_repeat, max_repeat, target_seconds, min_sample_seconds)
    if on_plan is not None:
        on_plan(reps)
    samples = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for rep in range(reps):
            start = rep % len(names)
            gap = gap_seconds
            for name in names[start:] + names[:start]:
                if gap:
                    time.sleep(gap)
                samples[name].append(_sample(*impls[name], number[name]))
                took = number[name] * sum(samples[name][-1])
                gap = min(max_gap_seconds, max(gap_seconds, took)) if gap_seconds else 0.0
            if on_repetition is not None:
                on_repetition()
    finally:
        if gc_was_enabled:
            gc.enable()
    result = {}
    for name in names:
        fwd = [f for f, _ in samples[name]]
        bwd = [b for _, b in samples[name]]
        total = [f + b for f, b in samples[name]]
        result[name] = {
            "total": stats(total), "forward": stats(fwd), "backward": stats(bwd),
            "samples": [1e3 * t for t in total], "number": number[name],
        }
    return result


# OpenBLAS workers spin (sched_yield) for about 2**28 cycles, 0.07-0.1 s, after a call
# (OPENBLAS_THREAD_TIMEOUT); measured on 2 cores, fastconv c1 ran 2-5x slower for 0.1 s after
# a NumPy matmul and at full speed after 0.2 s.
SETTLE_SECONDS = 0.25


def measure_phases(phases, settle_seconds=SETTLE_SECONDS, **options):
    """Time each phase (a dict name -> (forward, backward)) with `measure`, one phase after another.

    Implementations of one phase run round-robin with each other and never interleave with
    another phase's (their warm-up included). Before each phase the threads of whatever ran
    before (the previous phase, or the previous workload) get `settle_seconds` to go idle.
    Returns name -> timings of every phase's implementations.
    """
    result = {}
    for impls in phases:
        if not impls:
            continue
        if settle_seconds:
            time.sleep(settle_seconds)
        result.update(measure(impls, **options))
    return result
