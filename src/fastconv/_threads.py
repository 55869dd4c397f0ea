"""How many threads the compiled kernels use, and how long they spin when idle.

The default is OMP_NUM_THREADS when it is set (its first entry, as OpenMP reads it), otherwise
the number of CPUs this process may run on. Results never depend on the thread count: the
kernels split work at boundaries fixed by the problem size and reduce in a fixed order.

Spinning: after a parallel region, GNU OpenMP's idle threads busy-wait before they sleep, for
GOMP_SPINCOUNT iterations (300,000 by default: 12-30 ms measured on a 2-core Zen 4). A thread
pool that spins keeps a core from whatever runs next: NumPy's own BLAS, the user's code, or our
next parallel region when the user's NumPy left its OpenBLAS workers spinning. Measured there, a
c1-sized conv forward + backward at 2 threads took 3.1 ms alone and 23-29 ms right after a NumPy
matmul with libgomp's default; with a spin count of 10,000 (0.1-0.7 ms of spinning) it took 7 ms
there and no longer alone. So fastconv sets GOMP_SPINCOUNT=10000 for the OpenMP runtime it loads,
unless the user chose a wait policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT) or the runtime was
already loaded by someone else; the variable is set only while the extension loads, so neither
the user's environment nor child processes see it.
"""

import contextlib
import os
import sys
import warnings

# Upper bound on the thread count. OpenMP starts as many threads as it is asked for, and when
# the system cannot create them libgomp ends the process ("Thread creation failed"); the kernel
# entry points also take the count as a C int. No machine needs more threads than this.
MAX_NUM_THREADS = 4096


def _cpus_available():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_num_threads():
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n > MAX_NUM_THREADS:
            warnings.warn(
                f"fastconv: OMP_NUM_THREADS={n} is more than {MAX_NUM_THREADS}; "
                f"using {MAX_NUM_THREADS} threads",
                RuntimeWarning,
                stacklevel=3,
            )
            return MAX_NUM_THREADS
        if n >= 1:
            return n
        warnings.warn(
            f"fastconv: ignoring OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']!r} "
            "(not a positive integer)",
            RuntimeWarning,
            stacklevel=3,
        )
    return _cpus_available()


_num_threads = _default_num_threads()


def get_num_threads():
    """Number of threads the compiled kernels use (the reference backend uses one)."""
    return _num_threads


def set_num_threads(n):
    """Set the number of threads for the compiled kernels; results are identical for every n.

    Raises TypeError when n is not an int and ValueError when n < 1 or n > MAX_NUM_THREADS.
    """
    global _num_threads
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: n must be an int, got {n!r} (type {type(n).__name__})")
    n = n.__index__()
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    if n > MAX_NUM_THREADS:
        raise ValueError(f"set_num_threads: n must be <= {MAX_NUM_THREADS}, got {n}")
    _num_threads = n


# ----------------------------------------------------------------------------------------------
# How long idle OpenMP threads spin (see the module docstring)
# ----------------------------------------------------------------------------------------------

SPIN_COUNT = 10000
_USER_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# What the OpenMP runtime's idle threads do, for show_config(); set when the extension loads.
wait_policy = "not loaded"


def _gnu_openmp_runtimes():
    """Paths of the GNU OpenMP runtimes mapped into this process (None where it cannot tell)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps") as maps:
            return {line.rsplit(None, 1)[-1] for line in maps if "/libgomp" in line}
    except OSError:
        return None


@contextlib.contextmanager
def openmp_spin_policy():
    """Context for importing the compiled extension: the OpenMP runtime it loads reads
    GOMP_SPINCOUNT once, when it initialises, so the variable is set only around that import.
    A runtime that was already loaded (torch's libgomp.so.1 has the same name as the system's,
    so a source build shares it) keeps its own settings; show_config() says which happened."""
    global wait_policy
    chosen = {name: os.environ[name] for name in _USER_WAIT_SETTINGS if name in os.environ}
    before = _gnu_openmp_runtimes()
    if not chosen:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    try:
        yield
    finally:
        if chosen:
            wait_policy = "environment: " + ", ".join(f"{k}={v}" for k, v in chosen.items())
            return
        del os.environ["GOMP_SPINCOUNT"]
        after = _gnu_openmp_runtimes()
        if after is None:
            wait_policy = f"GOMP_SPINCOUNT={SPIN_COUNT} requested (a GNU OpenMP runtime reads it)"
        elif after - before:
            wait_policy = f"GOMP_SPINCOUNT={SPIN_COUNT} (set by fastconv)"
        elif after:
            wait_policy = f"runtime defaults ({', '.join(sorted(after))} was loaded before fastconv)"
        else:
            wait_policy = "runtime defaults (not GNU OpenMP)"
