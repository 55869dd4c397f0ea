# Type stubs for fastconv.reference: the same functions as fastconv, always on NumPy.
from numpy.typing import ArrayLike

from fastconv._typing import (
    FloatArray,
    IndexArray,
    IntOrPair,
    IntOrSingle,
    OutputSize,
    Shape3D,
    Shape4D,
)

__all__: list[str]

def conv2d(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> FloatArray: ...
def conv2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    w: ArrayLike,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def conv1d(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    stride: IntOrSingle = 1,
    padding: IntOrSingle = 0,
    dilation: IntOrSingle = 1,
) -> FloatArray: ...
def conv1d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    w: ArrayLike,
    stride: IntOrSingle = 1,
    padding: IntOrSingle = 0,
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
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
) -> tuple[FloatArray, IndexArray]: ...
def max_pool2d_backward(
    dout: ArrayLike,
    indices: ArrayLike,
    input_shape: Shape4D,
) -> FloatArray: ...
def avg_pool2d(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> FloatArray: ...
def avg_pool2d_backward(
    dout: ArrayLike,
    input_shape: Shape4D,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> FloatArray: ...
def max_pool1d(
    x: ArrayLike,
    kernel_size: IntOrSingle,
    stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0,
    dilation: IntOrSingle = 1,
    ceil_mode: bool = False,
) -> tuple[FloatArray, IndexArray]: ...
def max_pool1d_backward(
    dout: ArrayLike,
    indices: ArrayLike,
    input_shape: Shape3D,
) -> FloatArray: ...
def avg_pool1d(
    x: ArrayLike,
    kernel_size: IntOrSingle,
    stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> FloatArray: ...
def avg_pool1d_backward(
    dout: ArrayLike,
    input_shape: Shape3D,
    kernel_size: IntOrSingle,
    stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> FloatArray: ...
def adaptive_avg_pool2d(
    x: ArrayLike,
    output_size: OutputSize,
) -> FloatArray: ...
def adaptive_avg_pool2d_backward(
    dout: ArrayLike,
    input_shape: Shape4D,
) -> FloatArray: ...
