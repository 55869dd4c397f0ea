# What the pooling kernels (_max_pool, _avg_pool, _adaptive_pool) share: when to start
# threads, and the geometry of a call (torch's output sizes included).

from fastconv._ext._typedefs cimport index_t, Window2D

# Below this many input elements a call runs on one thread: starting a parallel region costs
# a few microseconds, more than pooling a few tens of kilobytes.
cdef enum:
    SERIAL_ELEMENTS = 1 << 15


cdef inline int threads_for(index_t work_items, index_t elements, int num_threads) noexcept nogil:
    """Threads worth starting: 1 for small problems, never more than the work items."""
    if elements < SERIAL_ELEMENTS or num_threads < 1:
        return 1
    if num_threads > work_items:
        return <int>work_items
    return num_threads


cdef inline index_t pool_out_size(index_t size, index_t k, index_t s, index_t p, index_t d,
                                  bint ceil_mode) noexcept nogil:
    """torch's pooling_output_shape. The arguments are checked (the output is at least 1), so
    every numerator is >= 0 and C's truncating division is a floor."""
    cdef index_t room = size + 2 * p - d * (k - 1) - 1
    cdef index_t out
    if not ceil_mode:
        return room // s + 1
    out = (room + s - 1) // s + 1
    if (out - 1) * s >= size + p:  # the last window would start in the right padding
        out -= 1
    return out


cdef inline Window2D pool_window(index_t planes, index_t height, index_t width, kernel_size,
                                 stride, padding, dilation, bint ceil_mode):
    """The geometry of a pooling call over `planes` independent (n, c) planes."""
    cdef Window2D g
    g.channels = planes
    g.height = height
    g.width = width
    g.kernel_h, g.kernel_w = kernel_size
    g.stride_h, g.stride_w = stride
    g.pad_h, g.pad_w = padding
    g.dilation_h, g.dilation_w = dilation
    g.out_h = pool_out_size(height, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, ceil_mode)
    g.out_w = pool_out_size(width, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, ceil_mode)
    return g
