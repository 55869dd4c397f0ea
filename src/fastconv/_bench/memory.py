"""Peak extra memory of one forward + backward pass, measured in a fresh process.

"Extra" is what the pass needs beyond its inputs (x, w, b, dout) and outputs (y, dx, dw, db):
im2col buffers, workspaces, temporaries. Each measurement runs in its own interpreter so that
memory freed by earlier work (which the allocator keeps and reuses, hiding new peaks) cannot
distort it. Two views are reported:

- tracemalloc: the peak of NumPy's (and Python's) own allocations, exact but blind to memory
  that compiled code takes with malloc;
- RSS high-water mark: everything the process touches, page-granular. On Linux the mark is
  reset just before the pass (``/proc/self/clear_refs`` = 5, then ``VmHWM``); elsewhere
  ``getrusage``'s ``ru_maxrss``, which is only meaningful because the process is fresh.

A small pass of the same kind runs first so that one-time start-up costs (BLAS buffers,
OpenMP thread stacks) are not charged to the workload; workspaces that fastconv keeps between
calls are charged, since they stay allocated.

Run as ``python -m fastconv._bench.memory '<json spec>'``; prints one JSON object.
"""

import dataclasses
import gc
import json
import subprocess
import sys
import tracemalloc

import numpy as np


def _status_kib(field):
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_high_water_mark():
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes():
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def _nbytes(objects):
    total = 0
    for obj in objects:
        if isinstance(obj, (tuple, list)):
            total += _nbytes(obj)
        elif hasattr(obj, "nbytes"):
            total += int(obj.nbytes)
        elif hasattr(obj, "element_size"):  # torch.Tensor
            total += obj.element_size() * obj.numel()
    return total


def measure_here(spec):
    """Measure in this process (meant to be a fresh one): see the module docstring."""
    import fastconv
    from threadpoolctl import threadpool_limits

    from fastconv._bench import impls, workloads

    workload = workloads.WORKLOADS[spec["workload"]]
    dtype = np.dtype(spec["dtype"])
    threads = int(spec["threads"])
    fastconv.set_num_threads(threads)
    limits = threadpool_limits(limits=threads, user_api="blas")  # noqa: F841 (kept for the run)
    if spec["impl"] == "torch":
        torch, reason = impls.import_torch()
        if torch is None:
            return {"error": reason}
        torch.set_num_threads(threads)
        make = impls.torch_maker(torch)
    else:
        make = impls.fastconv_maker(spec["impl"])

    # The same operation (groups, transposition, kernel, stride) on a small batch of small planes.
    small = dataclasses.replace(workload, name="warm-up", n=2, h=min(workload.h, 8), w=min(workload.w, 8))
    forward, backward = make(small, workloads.make_inputs(small, dtype))
    backward(forward())

    inputs = workloads.make_inputs(workload, dtype)
    forward, backward = make(workload, inputs)
    gc.collect()
    rss_before = _status_kib("VmRSS")
    reset = rss_before is not None and _reset_high_water_mark()
    if not reset:
        rss_before = _ru_maxrss_bytes()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    y = forward()
    grads = backward(y)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = _status_kib("VmHWM") if reset else _ru_maxrss_bytes()
    outputs = _nbytes([y, grads])
    io = _nbytes(inputs.values()) + outputs
    result = {
        "workload": workload.name, "dtype": dtype.name, "threads": threads, "impl": spec["impl"],
        "inputs_outputs_bytes": io,
        "rss_method": "VmHWM after clear_refs" if reset else "ru_maxrss in a fresh process",
        "rss_extra_bytes": max(0, peak - rss_before - outputs),
    }
    # tracemalloc does not see PyTorch's allocator: only report it for the NumPy-based ones.
    result["traced_extra_bytes"] = None if spec["impl"] == "torch" else max(0, traced_peak - traced_before - outputs)
    extra = max(result["rss_extra_bytes"], result["traced_extra_bytes"] or 0)
    result["extra_bytes"] = extra
    result["extra_percent"] = 100.0 * extra / io
    return result


def measure(workload, dtype, threads, impl, timeout=600):
    """Run measure_here in a fresh interpreter; returns its dict (or {"error": ...})."""
    spec = json.dumps({"workload": workload, "dtype": np.dtype(dtype).name, "threads": threads, "impl": impl})
    try:
        proc = subprocess.run([sys.executable, "-m", "fastconv._bench.memory", spec],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure_here(json.loads(sys.argv[1]))))
