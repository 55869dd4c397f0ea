# Type stubs for the public API of fastconv (see the contract in API.md and the docstrings in
# fastconv/_api.py). Any array-like is accepted as input; results are new C-contiguous arrays
# of the computation dtype (float32 when every floating input is float32, else float64).
from contextlib import AbstractContextManager
from typing import Any

from numpy.typing import ArrayLike

from fastconv import cs231n as cs231n
from fastconv import dlfs as dlfs
from fastconv import nn as nn
from fastconv import reference as reference
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

__version__: str
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
    backend: str | None = None,
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
    backend: str | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def conv1d(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    stride: IntOrSingle = 1,
    padding: IntOrSingle | ConvPadding = 0,
    dilation: IntOrSingle = 1,
    groups: int = 1,
    *,
    backend: str | None = None,
) -> FloatArray: ...
def conv1d_backward(
    dout: ArrayLike,
    x: ArrayLike,
    w: ArrayLike,
    stride: IntOrSingle = 1,
    padding: IntOrSingle | ConvPadding = 0,
    dilation: IntOrSingle = 1,
    groups: int = 1,
    *,
    backend: str | None = None,
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
    *,
    backend: str | None = None,
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
    *,
    backend: str | None = None,
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
    *,
    backend: str | None = None,
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
    *,
    backend: str | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def im2col(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    *,
    backend: str | None = None,
) -> FloatArray: ...
def col2im(
    cols: ArrayLike,
    input_shape: Shape4D,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    *,
    backend: str | None = None,
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
    backend: str | None = None,
) -> tuple[FloatArray, IndexArray]: ...
def max_pool2d_backward(
    dout: ArrayLike,
    indices: ArrayLike,
    input_shape: Shape4D,
    *,
    data_format: DataFormat = "NCHW",
    backend: str | None = None,
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
    backend: str | None = None,
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
    backend: str | None = None,
) -> FloatArray: ...
def max_pool1d(
    x: ArrayLike,
    kernel_size: IntOrSingle,
    stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0,
    dilation: IntOrSingle = 1,
    ceil_mode: bool = False,
    *,
    backend: str | None = None,
) -> tuple[FloatArray, IndexArray]: ...
def max_pool1d_backward(
    dout: ArrayLike,
    indices: ArrayLike,
    input_shape: Shape3D,
    *,
    backend: str | None = None,
) -> FloatArray: ...
def avg_pool1d(
    x: ArrayLike,
    kernel_size: IntOrSingle,
    stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    backend: str | None = None,
) -> FloatArray: ...
def avg_pool1d_backward(
    dout: ArrayLike,
    input_shape: Shape3D,
    kernel_size: IntOrSingle,
    stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    backend: str | None = None,
) -> FloatArray: ...
def adaptive_avg_pool2d(
    x: ArrayLike,
    output_size: OutputSize,
    *,
    backend: str | None = None,
) -> FloatArray: ...
def adaptive_avg_pool2d_backward(
    dout: ArrayLike,
    input_shape: Shape4D,
    *,
    backend: str | None = None,
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
    backend: str | None = None,
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
    backend: str | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def relu(x: ArrayLike, *, backend: str | None = None) -> FloatArray: ...
def relu_backward(dout: ArrayLike, y: ArrayLike, *, backend: str | None = None) -> FloatArray: ...
def softmax_cross_entropy(
    logits: ArrayLike, target: ArrayLike, *, backend: str | None = None
) -> tuple[float, FloatArray]: ...
def get_backend() -> str: ...
def set_backend(name: str) -> None: ...
def use_backend(name: str) -> AbstractContextManager[str]: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def show_config() -> dict[str, Any]: ...
