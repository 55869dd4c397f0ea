# Direct depthwise convolution kernels (one input channel per group), called by
# fastconv._ext._conv when its plan chooses them; plane_sum serves its bias gradients too.

from cython cimport floating
from fastconv._ext._typedefs cimport index_t, Window2D

cdef index_t depthwise_chunks(index_t n_images) noexcept nogil
cdef index_t depthwise_workspace(const Window2D* g) noexcept nogil
cdef floating plane_sum(const floating* a, index_t size) noexcept nogil

cdef void depthwise_forward(const Window2D* g, index_t n_images, index_t channels,
                            index_t multiplier, const floating* x, const floating* w,
                            const floating* b, floating* y, floating* workspace,
                            int threads) noexcept nogil

cdef void depthwise_backward(const Window2D* g, index_t n_images, index_t channels,
                             index_t multiplier, const floating* dout, const floating* x,
                             const floating* w, floating* dx, const floating* dx_init,
                             floating* dw, floating* db, floating* parts, index_t part_size,
                             floating* workspace, int threads) noexcept nogil
