# Enter/exit around every fastconv call that runs BLAS from its own threads (see _blas_threads.pyx).

cdef void blas_single_thread_enter() except *
cdef void blas_single_thread_exit() except *
