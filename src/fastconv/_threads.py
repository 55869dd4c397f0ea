"""How many threads the compiled kernels use.

The default is OMP_NUM_THREADS when it is set (its first entry, as OpenMP reads it), otherwise
the number of CPUs this process may run on. Results never depend on the thread count: the
kernels split work at boundaries fixed by the problem size and reduce in a fixed order.
"""

import os
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
