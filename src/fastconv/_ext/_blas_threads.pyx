"""Keeping BLAS single-threaded while fastconv's own threads call it.

SciPy's OpenBLAS is usually a pthreads build whose thread count is a process-wide setting. We
look up its get/set functions once (in the library that scipy.linalg.cython_blas is linked
against) and set 1 thread while any fastconv call runs, restoring the previous value when the
last concurrent call ends. The counter is only touched with the GIL held.
"""

from scipy.linalg.cython_blas cimport sgemm

cdef extern from *:
    """
    #if defined(_WIN32)
    static int fastconv_find_blas_threads(void *anchor, void **set_fn, void **get_fn) { return 0; }
    #else
    #include <dlfcn.h>
    static int fastconv_find_blas_threads(void *anchor, void **set_fn, void **get_fn) {
        static const char *names[][2] = {
            {"scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"},
            {"scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"},
            {"openblas_set_num_threads", "openblas_get_num_threads"},
            {"openblas_set_num_threads64_", "openblas_get_num_threads64_"},
        };
        Dl_info info;
        void *handle;
        int i;
        if (!dladdr(anchor, &info) || info.dli_fname == NULL) return 0;
        /* dlsym on a library handle also searches that library's dependencies: the BLAS. */
        handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
        if (handle == NULL) return 0;
        for (i = 0; i < 4; i++) {
            void *s = dlsym(handle, names[i][0]);
            void *g = dlsym(handle, names[i][1]);
            if (s != NULL && g != NULL) { *set_fn = s; *get_fn = g; dlclose(handle); return 1; }
        }
        dlclose(handle);
        return 0;
    }
    #endif
    """
    int fastconv_find_blas_threads(void* anchor, void** set_fn, void** get_fn)

ctypedef void (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil

cdef set_threads_fn blas_set_threads = NULL
cdef get_threads_fn blas_get_threads = NULL
cdef int blas_users = 0          # fastconv calls running now (GIL-protected)
cdef int blas_saved_threads = 1  # BLAS thread count to restore when the last one ends
_threadpool_limiter = None       # fallback when the functions are not found: threadpoolctl
_active_limit = None             # the threadpoolctl limit in force while calls run


cdef void find_blas_controls():
    global blas_set_threads, blas_get_threads, _threadpool_limiter
    cdef void* set_fn = NULL
    cdef void* get_fn = NULL
    if fastconv_find_blas_threads(<void*>sgemm, &set_fn, &get_fn):
        blas_set_threads = <set_threads_fn>set_fn
        blas_get_threads = <get_threads_fn>get_fn
        return
    try:
        from threadpoolctl import ThreadpoolController
        _threadpool_limiter = ThreadpoolController().select(user_api="blas")
    except Exception:
        _threadpool_limiter = None


find_blas_controls()


cdef void blas_single_thread_enter() except *:
    global blas_users, blas_saved_threads, _active_limit
    if blas_set_threads != NULL:
        if blas_users == 0:
            blas_saved_threads = blas_get_threads()
            if blas_saved_threads != 1:
                blas_set_threads(1)
        blas_users += 1
    elif _threadpool_limiter is not None:
        # Slower (tens of microseconds), only where the direct functions are not found.
        if blas_users == 0:
            _active_limit = _threadpool_limiter.limit(limits=1)
        blas_users += 1


cdef void blas_single_thread_exit() except *:
    global blas_users, _active_limit
    if blas_set_threads != NULL:
        blas_users -= 1
        if blas_users == 0 and blas_saved_threads != 1:
            blas_set_threads(blas_saved_threads)
    elif _threadpool_limiter is not None:
        blas_users -= 1
        if blas_users == 0 and _active_limit is not None:
            _active_limit.restore_original_limits()
            _active_limit = None


def blas_thread_control():
    """How fastconv keeps BLAS single-threaded: 'direct', 'threadpoolctl' or 'none'."""
    if blas_set_threads != NULL:
        return "direct"
    return "threadpoolctl" if _threadpool_limiter is not None else "none"


