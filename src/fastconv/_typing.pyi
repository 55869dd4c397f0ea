# Type aliases shared by the stubs of fastconv's public API (stub-only: no runtime module).
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

# kernel_size / stride / padding / dilation: an int or an (h, w) pair (a tuple or a list).
IntOrPair: TypeAlias = int | tuple[int, int] | Sequence[int]
# A 1-D hyper-parameter: an int or a 1-tuple.
IntOrSingle: TypeAlias = int | tuple[int] | Sequence[int]
# The padding strings of the convolution functions (torch's).
ConvPadding: TypeAlias = Literal["valid", "same"]
# (N, C, H, W) of the input a gradient or col2im result is shaped like; (N, C, L) for 1-D.
Shape4D: TypeAlias = tuple[int, int, int, int] | Sequence[int]
Shape3D: TypeAlias = tuple[int, int, int] | Sequence[int]
# Adaptive pooling's (OH, OW): an int for both, or a pair whose None entries keep the input size.
OutputSize: TypeAlias = int | tuple[int | None, int | None] | Sequence[int | None]
# Results are float32 when every floating input is float32, otherwise float64.
FloatArray: TypeAlias = NDArray[np.floating[Any]]
IndexArray: TypeAlias = NDArray[np.int64]
# Where the channels are: axis 1 ("NCHW") or the last axis ("NHWC").
DataFormat: TypeAlias = Literal["NCHW", "NHWC"]
