# Workspaces kept between calls (see _workspace.pyx): a call checks one out, carves it into
# aligned per-thread buffers and gives it back.

from fastconv._ext._typedefs cimport index_t

# Sub-buffers start on 64-byte boundaries (a cache line; full AVX-512 vectors).
cdef enum:
    WORKSPACE_ALIGN = 64

cdef object checkout_workspace(Py_ssize_t nbytes)
cdef void return_workspace(object ws)
cdef char* aligned(object ws)


cdef inline index_t round_up(index_t count, index_t multiple) noexcept nogil:
    return (count + multiple - 1) // multiple * multiple


cdef inline index_t ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b
