# Type stubs for fastconv.reference: the same functions as fastconv, always on NumPy.
from numpy.typing import ArrayLike

from fastconv._typing import ConvPadding, FloatArray, IndexArray, IntOrPair, IntOrSingle, Shape4D

__all__: list[str]

def conv2d(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair | ConvPadding = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> FloatArray: ...
def conv2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    w: ArrayLike,
    stride: IntOrPair = 1,
    padding: IntOrPair | ConvPadding = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def conv1d(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    stride: IntOrSingle = 1,
    padding: IntOrSingle | ConvPadding = 0,
    dilation: IntOrSingle = 1,
    groups: int = 1,
) -> FloatArray: ...
def conv1d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    w: ArrayLike,
    stride: IntOrSingle = 1,
    padding: IntOrSingle | ConvPadding = 0,
    dilation: IntOrSingle = 1,
    groups: int = 1,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def conv_transpose2d(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
) -> FloatArray: ...
def conv_transpose2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    w: ArrayLike,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def conv_transpose1d(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    stride: IntOrSingle = 1,
    padding: IntOrSingle = 0,
    output_padding: IntOrSingle = 0,
    groups: int = 1,
    dilation: IntOrSingle = 1,
) -> FloatArray: ...
def conv_transpose1d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    w: ArrayLike,
    stride: IntOrSingle = 1,
    padding: IntOrSingle = 0,
    output_padding: IntOrSingle = 0,
    groups: int = 1,
    dilation: IntOrSingle = 1,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def im2col(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> FloatArray: ...
def col2im(
    cols: ArrayLike,
    input_shape: Shape4D,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> FloatArray: ...
def max_pool2d(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
) -> tuple[FloatArray, IndexArray]: ...
def max_pool2d_backward(dout: ArrayLike, indices: ArrayLike, input_shape: Shape4D) -> FloatArray: ...
def avg_pool2d(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
) -> FloatArray: ...
def avg_pool2d_backward(
    dout: ArrayLike,
    input_shape: Shape4D,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
) -> FloatArray: ...
