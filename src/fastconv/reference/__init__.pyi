# Type stubs for fastconv.reference: the same functions as fastconv, always on NumPy.
from numpy.typing import ArrayLike

from fastconv._typing import (
    ConvPadding,
    DataFormat,
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
    padding: IntOrPair | ConvPadding = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    *,
    data_format: DataFormat = "NCHW",
) -> FloatArray: ...
def conv2d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    w: ArrayLike,
    stride: IntOrPair = 1,
    padding: IntOrPair | ConvPadding = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    *,
    data_format: DataFormat = "NCHW",
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
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
    *,
    data_format: DataFormat = "NCHW",
) -> tuple[FloatArray, IndexArray]: ...
def max_pool2d_backward(
    dout: ArrayLike,
    indices: ArrayLike,
    input_shape: Shape4D,
    *,
    data_format: DataFormat = "NCHW",
) -> FloatArray: ...
def avg_pool2d(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    data_format: DataFormat = "NCHW",
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
    *,
    data_format: DataFormat = "NCHW",
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
def batch_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    running_mean: FloatArray | None = None,
    running_var: FloatArray | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    data_format: DataFormat = "NCHW",
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def batch_norm_backward(
    dout: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike | None,
    mean: ArrayLike,
    invstd: ArrayLike,
    training: bool = True,
    *,
    data_format: DataFormat = "NCHW",
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def relu(x: ArrayLike) -> FloatArray: ...
def relu_backward(dout: ArrayLike, y: ArrayLike) -> FloatArray: ...
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike) -> tuple[float, FloatArray]: ...
