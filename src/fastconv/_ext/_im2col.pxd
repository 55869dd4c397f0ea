# Per-image im2col / col2im kernels, shared with fastconv._ext._conv, and the window arithmetic
# they share with the direct depthwise kernels (fastconv._ext._depthwise).

from cython cimport floating
from fastconv._ext._typedefs cimport index_t, Window2D

cdef void im2col_image(const floating* x, floating* cols, const Window2D* g,
                       index_t col_start, index_t col_stop) noexcept nogil

cdef void col2im_image(const floating* cols, floating* x, const Window2D* g,
                       index_t col_start, index_t col_stop) noexcept nogil


cdef inline void valid_range(index_t size, index_t out, index_t stride, index_t offset,
                             index_t* lo, index_t* hi) noexcept nogil:
    """[lo, hi): the outputs o in [0, out) whose input position o*stride + offset lies in
    [0, size) (offset: the input position of output 0 for one kernel offset; may be negative)."""
    cdef index_t first = 0, stop
    if offset < 0:
        first = (-offset + stride - 1) // stride
    if size - 1 - offset < 0:
        stop = 0
    else:
        stop = (size - 1 - offset) // stride + 1
    if first > out:
        first = out
    if stop > out:
        stop = out
    if stop < first:
        stop = first
    lo[0] = first
    hi[0] = stop
