"""What the compiled extension was built with: OpenMP on or off, and its thread counts."""

from cython.parallel cimport parallel

from fastconv._ext._openmp cimport FASTCONV_HAVE_OPENMP, omp_get_max_threads, omp_get_num_procs
from fastconv._ext._openmp cimport omp_get_thread_num


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(FASTCONV_HAVE_OPENMP)


def openmp_max_threads():
    """omp_get_max_threads() (1 without OpenMP)."""
    return omp_get_max_threads()


def openmp_num_procs():
    """omp_get_num_procs() (1 without OpenMP)."""
    return omp_get_num_procs()


def threads_that_ran(int num_threads):
    """Start a parallel region of num_threads and return how many threads really ran in it."""
    import numpy as np
    seen_array = np.zeros(max(num_threads, 1), dtype=np.intc)
    cdef int[::1] seen = seen_array
    with nogil, parallel(num_threads=num_threads):
        seen[omp_get_thread_num()] = 1
    return int(seen_array.sum())


cdef extern from *:
    """
    #if defined(__clang__)
    #define FASTCONV_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FASTCONV_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define FASTCONV_STR2(x) #x
    #define FASTCONV_STR(x) FASTCONV_STR2(x)
    #define FASTCONV_COMPILER "msvc " FASTCONV_STR(_MSC_VER)
    #else
    #define FASTCONV_COMPILER "unknown"
    #endif
    #ifdef _OPENMP
    #define FASTCONV_OPENMP_VERSION _OPENMP
    #else
    #define FASTCONV_OPENMP_VERSION 0
    #endif
    """
    const char *FASTCONV_COMPILER
    int FASTCONV_OPENMP_VERSION


def compiler():
    """The C compiler that built the extension, e.g. 'gcc 12.2.0'."""
    return FASTCONV_COMPILER.decode()


def openmp_version():
    """The _OPENMP date macro the extension was compiled with (0 without OpenMP)."""
    return FASTCONV_OPENMP_VERSION
