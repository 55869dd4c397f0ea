"""The compiled backend: the kernel interface of fastconv._backend over the Cython extension.

Arguments arrive checked; this module only adds the thread count and allocates nothing itself.
"""

from fastconv._ext import _conv, _im2col, _pool
from fastconv._threads import get_num_threads

# --- convolution and im2col/col2im (fastconv._ext._conv, fastconv._ext._im2col) ---------------
# (filled in by the convolution kernels)

# --- pooling (fastconv._ext._pool) -------------------------------------------------------------
# (filled in by the pooling kernels)
