# Per-image im2col / col2im kernels, shared with fastconv._ext._conv.

from cython cimport floating
from fastconv._ext._typedefs cimport index_t, Window2D

cdef void im2col_image(const floating* x, floating* cols, const Window2D* g,
                       index_t col_start, index_t col_stop) noexcept nogil

cdef void col2im_image(const floating* cols, floating* x, const Window2D* g,
                       index_t col_start, index_t col_stop) noexcept nogil
