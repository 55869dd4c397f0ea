# Types shared by the compiled kernels.
#
# The floating type is Cython's own fused `floating` (float or double, from `cython cimport
# floating`): the Python layer picks the dtype and every kernel is compiled for both.

# Every index and size is 64-bit (Py_ssize_t): C*KH*KW * OH*OW overflows 32 bits on real
# layers (a 512-channel 3x3 layer on a 224x224 plane is already 2.3e8 per image).
ctypedef Py_ssize_t index_t


# Geometry of a sliding window over one image: what im2col/col2im and the convolution
# kernels need to map an output position and a kernel offset to an input position.
ctypedef struct Window2D:
    index_t channels        # C
    index_t height          # H
    index_t width           # W
    index_t kernel_h        # KH
    index_t kernel_w        # KW
    index_t stride_h
    index_t stride_w
    index_t pad_h
    index_t pad_w
    index_t dilation_h
    index_t dilation_w
    index_t out_h           # OH
    index_t out_w           # OW
