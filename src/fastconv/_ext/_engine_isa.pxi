# The engine's instruction set (chosen at import from the CPU; FASTCONV_ISA lowers it), the
# convolution algorithm setting (FASTCONV_CONV_ALGORITHM) and the FMA peak probe. Included by
# _engine.pyx.

# ----------------------------------------------------------------------------------------------
# Instruction set: the best one this CPU runs, or a lower one that FASTCONV_ISA asks for
# ----------------------------------------------------------------------------------------------

ISA_NAMES = ("generic", "avx2", "avx512")
cdef int cpu_isa = fc_cpu_isa()
cdef const fc_isa_kernels* active_kernels = fc_isa_kernels_for(cpu_isa)


cdef list missing_kernels(const fc_isa_kernels* k):
    """Names of the kernels a plan could ask this table for that it does not have (a table
    filled wrong would otherwise crash on a NULL pointer, not fail to import)."""
    cdef int nv, mr, i
    missing = []
    for nv in range(1, FC_MAX_NV + 1):
        for mr in range(1, k.max_mr[nv] + 1):
            if (k.f32_conv[nv][mr] == NULL or k.f64_conv[nv][mr] == NULL or k.f32_wgrad[nv][mr] == NULL
                    or k.f64_wgrad[nv][mr] == NULL or k.f32_gemm[nv][mr] == NULL
                    or k.f64_gemm[nv][mr] == NULL):
                missing.append(f"tiles {mr}x{nv}")
    for i in range(2):
        if (k.f32_winograd_input[i] == NULL or k.f64_winograd_input[i] == NULL
                or k.f32_winograd_output[i] == NULL or k.f64_winograd_output[i] == NULL):
            missing.append("winograd transforms")
    if (k.f32_window_rows == NULL or k.f64_window_rows == NULL or k.f32_transpose == NULL
            or k.f64_transpose == NULL or k.f32_fma_probe == NULL or k.f64_fma_probe == NULL):
        missing.append("window rows, transposes or probes")
    if k.max_mr[1] == 0:
        missing.append("one-vector tiles")
    return missing


def _check_kernel_tables():
    for level in range(FC_ISA_COUNT):
        if fc_isa_kernels_for(level) != NULL:
            missing = missing_kernels(fc_isa_kernels_for(level))
            if missing:
                raise RuntimeError(f"fastconv: the {ISA_NAMES[level]} kernel table lacks "
                                   f"{', '.join(missing)} (a build error)")


_check_kernel_tables()


def supported_isas():
    """The instruction sets this CPU (and this build) can run, lowest first."""
    return [name for level, name in enumerate(ISA_NAMES)
            if level <= cpu_isa and fc_isa_kernels_for(level) != NULL]


def isa():
    """The instruction set the engine's kernels use now."""
    return active_kernels.name.decode()


def _set_isa(name):
    """Use the kernels of `name` (one of supported_isas()) from now on; returns the previous
    name. Private: the tests run every kernel path this CPU can run in one process. Calls that
    already planned keep their kernels."""
    global active_kernels
    if name not in supported_isas():
        raise ValueError(f"_set_isa: {name!r} is not one of this CPU's instruction sets "
                         f"{supported_isas()}")
    previous = isa()
    active_kernels = fc_isa_kernels_for(ISA_NAMES.index(name))
    return previous


def _isa_from_environment():
    """FASTCONV_ISA=avx512|avx2|generic forces a lower instruction set (never a higher one)."""
    wanted = os.environ.get("FASTCONV_ISA", "").strip().lower()
    if not wanted:
        return
    if wanted not in ISA_NAMES:
        warnings.warn(f"fastconv: FASTCONV_ISA={wanted!r} is not one of {ISA_NAMES}; using "
                      f"{isa()}", RuntimeWarning, stacklevel=2)
    elif wanted not in supported_isas():
        warnings.warn(f"fastconv: FASTCONV_ISA={wanted!r} is not supported by this CPU; using "
                      f"{isa()}", RuntimeWarning, stacklevel=2)
    else:
        _set_isa(wanted)


_isa_from_environment()



# ----------------------------------------------------------------------------------------------
# Algorithm: "auto" lets the plan choose; "direct" uses the engine's direct kernels wherever
# they can run (never Winograd); "winograd" uses Winograd wherever it applies (3x3, stride 1,
# dilation 1) and the direct kernels elsewhere; "im2col" always takes im2col + BLAS.
# FASTCONV_CONV_ALGORITHM sets it at import.
# ----------------------------------------------------------------------------------------------

ALGORITHMS = ("auto", "direct", "winograd", "im2col")
cdef enum:
    ALGORITHM_AUTO = 0
    ALGORITHM_DIRECT = 1
    ALGORITHM_WINOGRAD = 2
    ALGORITHM_IM2COL = 3
cdef int algorithm_choice = ALGORITHM_AUTO


def get_algorithm():
    """The convolution algorithm in force: "auto", "direct" or "im2col"."""
    return ALGORITHMS[algorithm_choice]


def set_algorithm(name):
    """Force a convolution algorithm ("direct", "winograd", "im2col") or let the plan choose
    ("auto"); returns the previous setting. Results of every algorithm agree within the bounds
    of docs/numerics.md."""
    global algorithm_choice
    if name not in ALGORITHMS:
        raise ValueError(f"set_algorithm: algorithm must be one of {ALGORITHMS}, got {name!r}")
    previous = get_algorithm()
    algorithm_choice = ALGORITHMS.index(name)
    return previous


def _algorithm_from_environment():
    wanted = os.environ.get("FASTCONV_CONV_ALGORITHM", "").strip().lower()
    if not wanted:
        return
    if wanted in ALGORITHMS:
        set_algorithm(wanted)
    else:
        warnings.warn(f"fastconv: FASTCONV_CONV_ALGORITHM={wanted!r} is not one of "
                      f"{ALGORITHMS}; using auto", RuntimeWarning, stacklevel=2)


_algorithm_from_environment()



# ----------------------------------------------------------------------------------------------
# FMA peak probe (python -m fastconv bench --limits)
# ----------------------------------------------------------------------------------------------

cdef double run_probe(fc_fma_probe probe, long iterations, int threads) noexcept nogil:
    """Run the probe on `threads` threads at once; returns the sum of their results."""
    cdef double total = 0
    cdef int t
    if threads <= 1:
        return probe(iterations)
    for t in prange(threads, num_threads=threads, schedule='static', chunksize=1):
        total += probe(iterations + t)
    return total


def fma_peak_gflops(isa_name, dtype, int threads=1, double seconds=0.1, int repeat=3):
    """GFLOP/s of independent vector FMAs with the kernels of `isa_name` (one of
    supported_isas()) in `dtype`, on `threads` threads at once: the best of `repeat` runs of
    about `seconds` each. The ceiling that every engine rate is a fraction of."""
    import time
    if isa_name not in supported_isas():
        raise ValueError(f"fma_peak_gflops: {isa_name!r} is not one of {supported_isas()}")
    if threads < 1:
        raise ValueError(f"fma_peak_gflops: threads must be >= 1, got {threads}")
    cdef const fc_isa_kernels* kern = fc_isa_kernels_for(ISA_NAMES.index(isa_name))
    cdef bint single = np.dtype(dtype) == np.float32
    cdef fc_fma_probe probe = kern.f32_fma_probe if single else kern.f64_fma_probe
    cdef double flops = kern.fma_probe_flops_f32 if single else kern.fma_probe_flops_f64
    cdef long iterations = 1000
    cdef double elapsed = 0, best = 0
    while True:  # calibrate: double until one run takes a tenth of the budget
        start = time.perf_counter()
        with nogil:
            run_probe(probe, iterations, 1)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 10 or iterations > (1 << 40):
            break
        iterations *= 2
    iterations = max(1000, <long>(iterations * seconds / max(elapsed, 1e-9)))
    for _ in range(repeat):
        start = time.perf_counter()
        with nogil:
            run_probe(probe, iterations, threads)
        elapsed = time.perf_counter() - start
        best = max(best, threads * iterations * flops / elapsed / 1e9)
    return best
