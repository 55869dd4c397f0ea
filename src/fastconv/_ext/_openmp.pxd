# OpenMP shim: the same names whether or not the extension is compiled with OpenMP, so every
# kernel compiles (and runs serially) on a compiler without it. prange/parallel themselves need
# no shim: without OpenMP Cython emits ordinary loops.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCONV_HAVE_OPENMP 1
    #else
    #define FASTCONV_HAVE_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    static int omp_get_num_procs(void) { return 1; }
    #endif
    """
    bint FASTCONV_HAVE_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_procs() noexcept nogil
