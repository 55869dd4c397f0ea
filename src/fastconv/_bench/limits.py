"""What this machine allows: GEMM GFLOP/s through the BLAS in use, streaming copy GB/s.

The fractions the benchmark prints are of these figures. Without ``--limits`` the nominal
values BENCH.md measured on the project's reference machine are used (and labelled so).
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# BENCH.md, OPENBLAS_CORETYPE=Haswell, 2 cores: float32 GEMM 118 GFLOP/s on one core, 217 on
# two, float64 half of that; streaming copy 37 GB/s on one core, 48 on two.
NOMINAL = {
    "source": "nominal (BENCH.md reference machine; run with --limits to measure this one)",
    "gemm_gflops": {"float32": {1: 118.0, 2: 217.0}, "float64": {1: 59.0, 2: 108.5}},
    "copy_gbps": {1: 37.0, 2: 48.0},
}


def lookup(table, threads):
    """The entry for `threads`, else the one for the largest thread count measured below it."""
    keys = sorted(int(k) for k in table)
    below = [k for k in keys if k <= threads] or keys[:1]
    value = table.get(below[-1], table.get(str(below[-1])))
    return value


def gemm_gflops(dtype, threads, size=2048, repeat=3):
    """Best GFLOP/s of a size x size GEMM (scipy.linalg.blas ?gemm) with `threads` BLAS threads."""
    from scipy.linalg import blas
    from threadpoolctl import threadpool_limits

    gemm = blas.sgemm if np.dtype(dtype) == np.float32 else blas.dgemm
    rng = np.random.default_rng(0)
    # Fortran order: what the BLAS wants, so no copies are timed.
    a = np.asfortranarray(rng.standard_normal((size, size)).astype(dtype))
    b = np.asfortranarray(rng.standard_normal((size, size)).astype(dtype))
    best = float("inf")
    with threadpool_limits(limits=threads, user_api="blas"):
        gemm(1.0, a, b)  # warm-up: thread start, buffers
        for _ in range(repeat):
            t0 = time.perf_counter()
            gemm(1.0, a, b)
            best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best / 1e9


def copy_gbps(threads, megabytes=256, repeat=5):
    """Best streaming-copy GB/s (bytes read + bytes written) with `threads` threads of np.copyto.

    np.copyto releases the GIL, so Python threads each copying one slice run in parallel.
    """
    n = megabytes * 2**20 // 8
    src = np.ones(n)
    dst = np.zeros(n)  # touched: first-touch page faults are not timed
    bounds = np.linspace(0, n, threads + 1).astype(int)
    parts = [(dst[lo:hi], src[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: np.copyto(*p), parts))
        for _ in range(repeat):
            t0 = time.perf_counter()
            list(pool.map(lambda p: np.copyto(*p), parts))
            best = min(best, time.perf_counter() - t0)
    return 2.0 * src.nbytes / best / 1e9


def measure(thread_counts, dtypes, quick=False, progress=None):
    """Measured limits for each thread count and dtype, in the shape of NOMINAL."""
    gemm = {np.dtype(d).name: {} for d in dtypes}
    copy = {}
    for t in thread_counts:
        for d in dtypes:
            gemm[np.dtype(d).name][t] = gemm_gflops(d, t, size=1536 if quick else 2048)
            if progress:
                progress()
        copy[t] = copy_gbps(t, megabytes=128 if quick else 256)
        if progress:
            progress()
    return {"source": "measured on this machine (--limits)", "gemm_gflops": gemm, "copy_gbps": copy}


def environment():
    """Environment variables that change what the BLAS and OpenMP do (BENCH.md wants them shown)."""
    names = ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "OMP_WAIT_POLICY", "FASTCONV_BACKEND")
    return {name: os.environ.get(name) for name in names}
