"""Every invalid-input rule of API.md "Conventions" raises ValueError or TypeError with a message
that names the function and the argument, on every backend, and before any kernel runs."""

import datetime
import re

import numpy as np
import pytest

import fastconv as fc
from fastconv import _backend

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 6, 6))          # (N, C, H, W)
W = rng.standard_normal((4, 3, 3, 3))          # (F, C, KH, KW)
B = rng.standard_normal(4)
DOUT = rng.standard_normal((2, 4, 4, 4))       # conv2d(X, W) output
X1 = rng.standard_normal((2, 3, 8))            # (N, C, L)
W1 = rng.standard_normal((4, 3, 3))
DOUT1 = rng.standard_normal((2, 4, 6))
COLS = rng.standard_normal((2, 27, 16))        # im2col(X, 3)
XG = rng.standard_normal((2, 4, 6, 6))         # 4 channels: groups 1, 2 or 4
WG = rng.standard_normal((6, 2, 3, 3))         # groups=2: 6 filters of 2 channels
WT = rng.standard_normal((3, 2, 3, 3))         # conv_transpose2d(X, WT): (C, F/groups, KH, KW)
DOUT_T = rng.standard_normal((2, 2, 8, 8))     # its output
WT1 = rng.standard_normal((3, 2, 3))
DOUT_T1 = rng.standard_normal((2, 2, 10))      # conv_transpose1d(X1, WT1)
POOL_DOUT = rng.standard_normal((2, 3, 3, 3))  # max_pool2d(X, 2)
IDX = np.zeros((2, 3, 3, 3), dtype=np.int64)
POOL_DOUT1 = rng.standard_normal((2, 3, 4))    # max_pool1d(X1, 2)
IDX1 = np.zeros((2, 3, 4), dtype=np.int64)
C3 = np.ones(3)                                # a (C,) vector for X
READ_ONLY = np.ones(3)
READ_ONLY.flags.writeable = False
LOGITS = rng.standard_normal((4, 5))
LABELS = np.array([0, 4, 1, 2])


class NotAnArray:
    """Neither a sequence nor an object with __array__."""


def ragged():
    return [[1.0, 2.0], [3.0]]


CASES = [
    # --- conv2d: shapes -------------------------------------------------------------------
    ("conv2d", (X[0], W), {}, ValueError, "x"),
    ("conv2d", (X[None], W), {}, ValueError, "x"),
    ("conv2d", (X, W[0]), {}, ValueError, "w"),
    ("conv2d", (X, W[:, :2]), {}, ValueError, "channels"),
    ("conv2d", (X, W, B[:3]), {}, ValueError, "b"),
    ("conv2d", (X, W, B[:, None]), {}, ValueError, "b"),
    ("conv2d", (X, W, np.float64(1.0)), {}, ValueError, "b"),
    ("conv2d", (X[:, :, :0], W), {}, ValueError, "x"),                  # empty plane
    ("conv2d", (X, rng.standard_normal((4, 3, 7, 3))), {}, ValueError, "kernel"),
    ("conv2d", (X, W), {"dilation": 4}, ValueError, "kernel"),           # dilated kernel spans 9 > 6
    ("conv2d", (X, W), {"stride": 0}, ValueError, "stride"),
    ("conv2d", (X, W), {"stride": (1, -1)}, ValueError, "stride"),
    ("conv2d", (X, W), {"dilation": 0}, ValueError, "dilation"),
    ("conv2d", (X, W), {"padding": -1}, ValueError, "padding"),
    ("conv2d", (X, W), {"padding": (0, 1, 2)}, ValueError, "padding"),
    ("conv2d", (X, W), {"stride": ()}, ValueError, "stride"),
    ("conv2d", (X, W), {"padding": 2**40}, ValueError, "padding"),
    ("conv2d", (X, W), {"stride": np.uint64(2**64 - 1)}, ValueError, "stride"),
    ("conv2d", (X, W), {"stride": np.array(0)}, ValueError, "stride"),
    ("conv2d", (X, W), {"stride": np.array([[1, 1]])}, ValueError, "stride"),
    # --- conv2d: types ----------------------------------------------------------------------
    ("conv2d", (X, W), {"stride": 1.0}, TypeError, "stride"),
    ("conv2d", (X, W), {"stride": "2"}, TypeError, "stride"),
    ("conv2d", (X, W), {"stride": True}, TypeError, "stride"),
    ("conv2d", (X, W), {"stride": None}, TypeError, "stride"),
    ("conv2d", (X, W), {"padding": (1, 0.5)}, TypeError, "padding"),
    ("conv2d", (X, W), {"dilation": np.float64(1)}, TypeError, "dilation"),
    ("conv2d", (X, W), {"dilation": np.array(1.0)}, TypeError, "dilation"),
    ("conv2d", (X.astype(np.complex128), W), {}, TypeError, "x"),
    ("conv2d", (X, W.astype(np.complex64)), {}, TypeError, "w"),
    ("conv2d", (X, W, B.astype(np.complex128)), {}, TypeError, "b"),
    ("conv2d", (X.astype(object), W), {}, TypeError, "x"),
    ("conv2d", (X.astype(str), W), {}, TypeError, "x"),
    ("conv2d", (X.astype("datetime64[s]"), W), {}, TypeError, "x"),
    ("conv2d", (X.astype("timedelta64[s]"), W), {}, TypeError, "x"),
    ("conv2d", ("not an array", W), {}, TypeError, "x"),
    ("conv2d", (NotAnArray(), W), {}, TypeError, "x"),
    ("conv2d", (ragged(), W), {}, TypeError, "x"),
    ("conv2d", (None, W), {}, TypeError, "x"),
    ("conv2d", (X, {"w": 1}), {}, TypeError, "w"),
    ("conv2d", (X, W, datetime.date(2020, 1, 1)), {}, TypeError, "b"),
    # --- conv2d_backward ------------------------------------------------------------------
    ("conv2d_backward", (DOUT[:, :, :3], X, W), {}, ValueError, "dout"),
    ("conv2d_backward", (DOUT[:, :3], X, W), {}, ValueError, "dout"),
    ("conv2d_backward", (DOUT[:1], X, W), {}, ValueError, "dout"),
    ("conv2d_backward", (DOUT, X, W), {"stride": 2}, ValueError, "dout"),
    ("conv2d_backward", (DOUT[0], X, W), {}, ValueError, "dout"),
    ("conv2d_backward", (DOUT, X, W[:, :2]), {}, ValueError, "channels"),
    ("conv2d_backward", (DOUT, X[0], W), {}, ValueError, "x"),
    ("conv2d_backward", (DOUT.astype(np.complex128), X, W), {}, TypeError, "dout"),
    ("conv2d_backward", (DOUT, X, W), {"padding": -2}, ValueError, "padding"),
    ("conv2d_backward", (DOUT, X, W), {"dilation": 2.0}, TypeError, "dilation"),
    # --- conv1d / conv1d_backward -------------------------------------------------------------
    ("conv1d", (X, W1), {}, ValueError, "x"),
    ("conv1d", (X1, W), {}, ValueError, "w"),
    ("conv1d", (X1, W1[:, :2]), {}, ValueError, "channels"),
    ("conv1d", (X1, W1, B[:2]), {}, ValueError, "b"),
    ("conv1d", (X1, W1), {"stride": (1, 1)}, ValueError, "stride"),
    ("conv1d", (X1, W1), {"stride": 0}, ValueError, "stride"),
    ("conv1d", (X1, W1), {"padding": -1}, ValueError, "padding"),
    ("conv1d", (X1, W1), {"dilation": 5}, ValueError, "kernel"),
    ("conv1d", (X1, W1), {"stride": 1.5}, TypeError, "stride"),
    ("conv1d", (X1.astype(np.complex64), W1), {}, TypeError, "x"),
    ("conv1d_backward", (DOUT1[:, :, :5], X1, W1), {}, ValueError, "dout"),
    ("conv1d_backward", (DOUT1, X1, W1), {"padding": 1}, ValueError, "dout"),
    # --- groups and string paddings ----------------------------------------------------------
    ("conv2d", (XG, WG), {"groups": 0}, ValueError, "groups"),
    ("conv2d", (XG, WG), {"groups": -2}, ValueError, "groups"),
    ("conv2d", (XG, WG), {"groups": 3}, ValueError, "groups"),              # 3 does not divide C=4
    ("conv2d", (XG, WG[:5]), {"groups": 2}, ValueError, "groups"),          # nor F=5
    ("conv2d", (XG, WG[:, :1]), {"groups": 2}, ValueError, "channels"),     # 2 groups of 1 != 4
    ("conv2d", (XG, WG), {}, ValueError, "channels"),                       # groups=1: w expects 2
    ("conv2d", (XG, WG, B), {"groups": 2}, ValueError, "b"),
    ("conv2d", (XG, WG), {"groups": 2.0}, TypeError, "groups"),
    ("conv2d", (XG, WG), {"groups": "2"}, TypeError, "groups"),
    ("conv2d", (XG, WG), {"groups": True}, TypeError, "groups"),
    ("conv2d", (XG, WG), {"groups": None}, TypeError, "groups"),
    ("conv2d", (XG, WG), {"groups": (2,)}, TypeError, "groups"),
    ("conv2d", (X, W), {"padding": "same", "stride": 2}, ValueError, "padding"),
    ("conv2d", (X, W), {"padding": "same", "stride": (1, 2)}, ValueError, "padding"),
    ("conv2d", (X, W), {"padding": "full"}, ValueError, "padding"),
    ("conv2d", (X, W), {"padding": "SAME"}, ValueError, "padding"),
    ("conv2d", (X, W), {"padding": ""}, ValueError, "padding"),
    ("conv2d", (X, W), {"padding": ("same", 1)}, TypeError, "padding"),
    ("conv2d", (X[:, :, :2], W), {"padding": "valid"}, ValueError, "kernel"),
    ("conv2d_backward", (DOUT, XG, WG), {"groups": 3}, ValueError, "groups"),
    ("conv2d_backward", (DOUT[:, :3], XG, WG), {"groups": 2}, ValueError, "dout"),
    ("conv2d_backward", (DOUT, X, W), {"padding": "same"}, ValueError, "dout"),   # same: 6x6 out
    ("conv2d_backward", (DOUT, X, W), {"padding": "same", "stride": 2}, ValueError, "padding"),
    ("conv1d", (X1, W1), {"groups": 3}, ValueError, "groups"),
    ("conv1d", (X1, W1[:, :1]), {"groups": 3}, ValueError, "groups"),    # F=4 not divisible by 3
    ("conv1d", (X1, W1), {"padding": "same", "stride": 2}, ValueError, "padding"),
    ("conv1d", (X1, W1), {"padding": "half"}, ValueError, "padding"),
    ("conv1d_backward", (DOUT1, X1, W1), {"padding": "same"}, ValueError, "dout"),
    # --- conv_transpose2d / conv_transpose1d ----------------------------------------------------
    ("conv_transpose2d", (X[0], WT), {}, ValueError, "x"),
    ("conv_transpose2d", (X, WT[0]), {}, ValueError, "w"),
    ("conv_transpose2d", (X, WT[:2]), {}, ValueError, "channels"),
    ("conv_transpose2d", (X, WT), {"groups": 2}, ValueError, "groups"),     # 2 does not divide C=3
    ("conv_transpose2d", (X, WT), {"groups": 0}, ValueError, "groups"),
    ("conv_transpose2d", (X, WT), {"groups": 1.5}, TypeError, "groups"),
    ("conv_transpose2d", (X, WT, B[:3]), {}, ValueError, "b"),               # F = 2
    ("conv_transpose2d", (X, WT), {"output_padding": 1}, ValueError, "output_padding"),  # stride 1
    ("conv_transpose2d", (X, WT), {"stride": 2, "output_padding": 2}, ValueError, "output_padding"),
    ("conv_transpose2d", (X, WT), {"stride": 2, "output_padding": (1, 2)}, ValueError, "output_padding"),
    ("conv_transpose2d", (X, WT), {"output_padding": -1}, ValueError, "output_padding"),
    ("conv_transpose2d", (X, WT), {"output_padding": 1.0}, TypeError, "output_padding"),
    ("conv_transpose2d", (X, WT), {"padding": 5}, ValueError, "padding"),   # OH = 5 + 2 - 10 + 1 < 1
    ("conv_transpose2d", (X, WT), {"padding": -1}, ValueError, "padding"),
    ("conv_transpose2d", (X, WT), {"padding": "same"}, TypeError, "padding"),
    ("conv_transpose2d", (X, WT), {"stride": 0}, ValueError, "stride"),
    ("conv_transpose2d", (X, WT), {"dilation": 0}, ValueError, "dilation"),
    ("conv_transpose2d", (X.astype(np.complex128), WT), {}, TypeError, "x"),
    ("conv_transpose2d", (X, "w"), {}, TypeError, "w"),
    ("conv_transpose2d_backward", (DOUT_T[:, :, :7], X, WT), {}, ValueError, "dout"),
    ("conv_transpose2d_backward", (DOUT_T, X, WT), {"output_padding": (1, 0), "dilation": 2}, ValueError, "dout"),
    ("conv_transpose2d_backward", (DOUT_T, X, WT), {"groups": 2}, ValueError, "groups"),
    ("conv_transpose2d_backward", (DOUT_T, X, WT), {"groups": 3}, ValueError, "dout"),    # F = 6
    ("conv_transpose2d_backward", (DOUT_T.astype(object), X, WT), {}, TypeError, "dout"),
    ("conv_transpose1d", (X, WT1), {}, ValueError, "x"),
    ("conv_transpose1d", (X1, WT1[:2]), {}, ValueError, "channels"),
    ("conv_transpose1d", (X1, WT1), {"output_padding": 1}, ValueError, "output_padding"),
    ("conv_transpose1d", (X1, WT1), {"stride": (1, 1)}, ValueError, "stride"),
    ("conv_transpose1d_backward", (DOUT_T1[:, :, :9], X1, WT1), {}, ValueError, "dout"),
    # --- im2col / col2im --------------------------------------------------------------------
    ("im2col", (X[0], 3), {}, ValueError, "x"),
    ("im2col", (X, 0), {}, ValueError, "kernel_size"),
    ("im2col", (X, 7), {}, ValueError, "kernel"),
    ("im2col", (X, (3, 3, 3)), {}, ValueError, "kernel_size"),
    ("im2col", (X, 3.0), {}, TypeError, "kernel_size"),
    ("im2col", (X, 3), {"stride": 0}, ValueError, "stride"),
    ("im2col", (X, 3), {"padding": -1}, ValueError, "padding"),
    ("im2col", (X, 3), {"dilation": 0}, ValueError, "dilation"),
    ("im2col", (X.astype(np.complex128), 3), {}, TypeError, "x"),
    ("col2im", (COLS, X.shape, 3), {"stride": 2}, ValueError, "cols"),
    ("col2im", (COLS[:, :26], X.shape, 3), {}, ValueError, "cols"),
    ("col2im", (COLS[:1], X.shape, 3), {}, ValueError, "cols"),
    ("col2im", (COLS[0], X.shape, 3), {}, ValueError, "cols"),
    ("col2im", (COLS, X.shape[1:], 3), {}, ValueError, "input_shape"),
    ("col2im", (COLS, (2, 0, 6, 6), 3), {}, ValueError, "input_shape"),
    ("col2im", (COLS, (-1, 3, 6, 6), 3), {}, ValueError, "input_shape"),
    ("col2im", (COLS, (2, 3, 6.0, 6), 3), {}, TypeError, "input_shape"),
    ("col2im", (COLS, 7, 3), {}, ValueError, "input_shape"),
    ("col2im", (COLS, np.array(4), 3), {}, ValueError, "input_shape"),
    ("col2im", (COLS, np.array([X.shape]), 3), {}, ValueError, "input_shape"),
    ("col2im", (COLS, (2, 3, 2**40, 2**40), 3), {}, ValueError, "input_shape"),
    ("col2im", (COLS, X.shape, 7), {}, ValueError, "kernel"),
    ("col2im", (COLS, X.shape, 3), {"padding": -1}, ValueError, "padding"),
    ("col2im", (COLS.astype(object), X.shape, 3), {}, TypeError, "cols"),
    # --- max_pool2d / avg_pool2d ----------------------------------------------------------------
    ("max_pool2d", (X[0], 2), {}, ValueError, "x"),
    ("max_pool2d", (X, 0), {}, ValueError, "kernel_size"),
    ("max_pool2d", (X, 2), {"stride": 0}, ValueError, "stride"),
    ("max_pool2d", (X, 2), {"padding": 2}, ValueError, "padding"),        # > kernel_size // 2
    ("max_pool2d", (X, (3, 2)), {"padding": (1, 2)}, ValueError, "padding"),
    ("max_pool2d", (X, 3), {"padding": -1}, ValueError, "padding"),
    ("max_pool2d", (X, 7), {}, ValueError, "kernel"),
    ("max_pool2d", (X, 2.5), {}, TypeError, "kernel_size"),
    ("max_pool2d", (X, 2), {"stride": "1"}, TypeError, "stride"),
    ("max_pool2d", (X.astype(np.complex128), 2), {}, TypeError, "x"),
    ("max_pool2d", (X.astype("datetime64[ns]"), 2), {}, TypeError, "x"),
    ("avg_pool2d", (X[0], 2), {}, ValueError, "x"),
    ("avg_pool2d", (X, 2), {"padding": 2}, ValueError, "padding"),
    ("avg_pool2d", (X, (1, 7)), {}, ValueError, "kernel"),
    ("avg_pool2d", (X, 2), {"stride": -1}, ValueError, "stride"),
    ("avg_pool2d", (X.astype(str), 2), {}, TypeError, "x"),
    # --- max_pool2d_backward -------------------------------------------------------------------
    ("max_pool2d_backward", (POOL_DOUT, IDX.astype(np.float64), X.shape), {}, TypeError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, IDX.astype(bool), X.shape), {}, TypeError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, IDX.astype(object), X.shape), {}, TypeError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, IDX[:, :, :2], X.shape), {}, ValueError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, IDX[0], X.shape), {}, ValueError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, IDX + 36, X.shape), {}, ValueError, "indices"),  # == H*W
    ("max_pool2d_backward", (POOL_DOUT, IDX - 1, X.shape), {}, ValueError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, IDX.astype(np.int8) - 100, X.shape), {}, ValueError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, np.full(IDX.shape, 2**64 - 1, np.uint64), X.shape), {},
     ValueError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, np.full(IDX.shape, 2**63, np.uint64), X.shape), {},
     ValueError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, np.full(IDX.shape, -(2**63), np.int64), X.shape), {},
     ValueError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, IDX + 9, (2, 3, 3, 3)), {}, ValueError, "indices"),
    ("max_pool2d_backward", (POOL_DOUT, IDX, (2, 4, 6, 6)), {}, ValueError, "input_shape"),
    ("max_pool2d_backward", (POOL_DOUT, IDX, (1, 3, 6, 6)), {}, ValueError, "input_shape"),
    ("max_pool2d_backward", (POOL_DOUT, IDX, (2, 3, 6)), {}, ValueError, "input_shape"),
    ("max_pool2d_backward", (POOL_DOUT, IDX, (2, 3, 2**40, 2**40)), {}, ValueError, "input_shape"),
    ("max_pool2d_backward", (POOL_DOUT[0], IDX[0], X.shape), {}, ValueError, "dout"),
    ("max_pool2d_backward", (POOL_DOUT.astype(np.complex128), IDX, X.shape), {}, TypeError, "dout"),
    # --- avg_pool2d_backward ---------------------------------------------------------------------
    ("avg_pool2d_backward", (POOL_DOUT[:, :, :2], X.shape, 2), {}, ValueError, "dout"),
    ("avg_pool2d_backward", (POOL_DOUT, X.shape, 2), {"stride": 1}, ValueError, "dout"),
    ("avg_pool2d_backward", (POOL_DOUT[0], X.shape, 2), {}, ValueError, "dout"),
    ("avg_pool2d_backward", (POOL_DOUT, X.shape, 2), {"padding": 2}, ValueError, "padding"),
    ("avg_pool2d_backward", (POOL_DOUT, X.shape[:3], 2), {}, ValueError, "input_shape"),
    ("avg_pool2d_backward", (POOL_DOUT, X.shape, 0), {}, ValueError, "kernel_size"),
    ("avg_pool2d_backward", (POOL_DOUT, X.shape, 2.0), {}, TypeError, "kernel_size"),
    ("avg_pool2d_backward", (POOL_DOUT.astype(np.complex64), X.shape, 2), {}, TypeError, "dout"),
    # --- pooling options: dilation, ceil_mode, count_include_pad, divisor_override -------------
    ("max_pool2d", (X, 2), {"dilation": 0}, ValueError, "dilation"),
    ("max_pool2d", (X, 2), {"dilation": (1, -2)}, ValueError, "dilation"),
    ("max_pool2d", (X, 2), {"dilation": 1.5}, TypeError, "dilation"),
    ("max_pool2d", (X, 3), {"dilation": 3}, ValueError, "kernel"),        # dilated kernel spans 7 > 6
    ("max_pool2d", (X, 3), {"padding": 2, "dilation": 2}, ValueError, "padding"),  # torch: k // 2, undilated
    ("max_pool2d", (X[:, :, :1], 2), {"padding": 1, "dilation": 2}, ValueError, "padding"),  # padding only
    ("max_pool2d", (X, 7), {"stride": 1, "ceil_mode": True}, ValueError, "kernel"),
    ("max_pool2d", (X, 2), {"ceil_mode": 1}, TypeError, "ceil_mode"),
    ("max_pool2d", (X, 2), {"ceil_mode": "yes"}, TypeError, "ceil_mode"),
    ("max_pool2d", (X, 2), {"ceil_mode": None}, TypeError, "ceil_mode"),
    ("avg_pool2d", (X, 2), {"ceil_mode": 0}, TypeError, "ceil_mode"),
    ("avg_pool2d", (X, 2), {"count_include_pad": 1}, TypeError, "count_include_pad"),
    ("avg_pool2d", (X, 2), {"count_include_pad": None}, TypeError, "count_include_pad"),
    ("avg_pool2d", (X, 2), {"divisor_override": 0}, ValueError, "divisor_override"),
    ("avg_pool2d", (X, 2), {"divisor_override": -3}, ValueError, "divisor_override"),
    ("avg_pool2d", (X, 2), {"divisor_override": 2**31}, ValueError, "divisor_override"),
    ("avg_pool2d", (X, 2), {"divisor_override": 1.5}, TypeError, "divisor_override"),
    ("avg_pool2d", (X, 2), {"divisor_override": True}, TypeError, "divisor_override"),
    ("avg_pool2d", (X, 2), {"divisor_override": "2"}, TypeError, "divisor_override"),
    ("avg_pool2d", (X, 7), {"stride": 1, "ceil_mode": True}, ValueError, "kernel"),
    ("avg_pool2d_backward", (POOL_DOUT, X.shape, 3, 2), {}, ValueError, "dout"),  # 3x3 only with ceil_mode
    ("avg_pool2d_backward", (POOL_DOUT, X.shape, 2), {"divisor_override": 0}, ValueError, "divisor_override"),
    ("avg_pool2d_backward", (POOL_DOUT, X.shape, 2), {"count_include_pad": "no"}, TypeError, "count_include_pad"),
    # --- max_pool1d / max_pool1d_backward ------------------------------------------------------
    ("max_pool1d", (X, 2), {}, ValueError, "x"),
    ("max_pool1d", (X1[0], 2), {}, ValueError, "x"),
    ("max_pool1d", (X1[:, :, :0], 2), {}, ValueError, "x"),
    ("max_pool1d", (X1, (2, 2)), {}, ValueError, "kernel_size"),
    ("max_pool1d", (X1, 0), {}, ValueError, "kernel_size"),
    ("max_pool1d", (X1, 9), {}, ValueError, "kernel"),
    ("max_pool1d", (X1, 2), {"padding": 2}, ValueError, "padding"),
    ("max_pool1d", (X1, 2), {"stride": 0}, ValueError, "stride"),
    ("max_pool1d", (X1, 3), {"dilation": 4}, ValueError, "kernel"),
    ("max_pool1d", (X1, 2), {"dilation": 2.0}, TypeError, "dilation"),
    ("max_pool1d", (X1, 2), {"ceil_mode": "True"}, TypeError, "ceil_mode"),
    ("max_pool1d", (X1.astype(np.complex64), 2), {}, TypeError, "x"),
    ("max_pool1d_backward", (POOL_DOUT1, IDX1 + 8, X1.shape), {}, ValueError, "indices"),  # == L
    ("max_pool1d_backward", (POOL_DOUT1, IDX1 - 1, X1.shape), {}, ValueError, "indices"),
    ("max_pool1d_backward", (POOL_DOUT1, IDX1.astype(np.float32), X1.shape), {}, TypeError, "indices"),
    ("max_pool1d_backward", (POOL_DOUT1, IDX1[:, :, :3], X1.shape), {}, ValueError, "indices"),
    ("max_pool1d_backward", (POOL_DOUT1, IDX1, X.shape), {}, ValueError, "input_shape"),
    ("max_pool1d_backward", (POOL_DOUT1, IDX1, (1, 3, 8)), {}, ValueError, "input_shape"),
    ("max_pool1d_backward", (POOL_DOUT1, IDX1, (2, 3, 0)), {}, ValueError, "input_shape"),
    ("max_pool1d_backward", (POOL_DOUT, IDX, X1.shape), {}, ValueError, "dout"),
    # --- avg_pool1d / avg_pool1d_backward ------------------------------------------------------
    ("avg_pool1d", (X, 2), {}, ValueError, "x"),
    ("avg_pool1d", (X1, [2, 2]), {}, ValueError, "kernel_size"),
    ("avg_pool1d", (X1, 2), {"padding": 2}, ValueError, "padding"),
    ("avg_pool1d", (X1, 9), {"stride": 1, "ceil_mode": True}, ValueError, "kernel"),
    ("avg_pool1d", (X1, 2), {"count_include_pad": 0}, TypeError, "count_include_pad"),
    ("avg_pool1d", (X1.astype(str), 2), {}, TypeError, "x"),
    ("avg_pool1d_backward", (POOL_DOUT1[:, :, :3], X1.shape, 2), {}, ValueError, "dout"),
    ("avg_pool1d_backward", (POOL_DOUT1, X1.shape, 2), {"ceil_mode": True, "stride": 3}, ValueError, "dout"),
    ("avg_pool1d_backward", (POOL_DOUT1, X1.shape[:2], 2), {}, ValueError, "input_shape"),
    ("avg_pool1d_backward", (POOL_DOUT1[None], X1.shape, 2), {}, ValueError, "dout"),
    # --- adaptive_avg_pool2d / adaptive_avg_pool2d_backward ----------------------------------------
    ("adaptive_avg_pool2d", (X, 0), {}, ValueError, "output_size"),
    ("adaptive_avg_pool2d", (X, (3, 0)), {}, ValueError, "output_size"),
    ("adaptive_avg_pool2d", (X, [-1, 2]), {}, ValueError, "output_size"),
    ("adaptive_avg_pool2d", (X, (1, 2, 3)), {}, ValueError, "output_size"),
    ("adaptive_avg_pool2d", (X, ()), {}, ValueError, "output_size"),
    ("adaptive_avg_pool2d", (X, 2**31), {}, ValueError, "output_size"),
    ("adaptive_avg_pool2d", (X, 2.5), {}, TypeError, "output_size"),
    ("adaptive_avg_pool2d", (X, "3"), {}, TypeError, "output_size"),
    ("adaptive_avg_pool2d", (X, None), {}, TypeError, "output_size"),
    ("adaptive_avg_pool2d", (X, (None, 2.0)), {}, TypeError, "output_size"),
    ("adaptive_avg_pool2d", (X, True), {}, TypeError, "output_size"),
    ("adaptive_avg_pool2d", (X[0], 2), {}, ValueError, "x"),
    ("adaptive_avg_pool2d", (X[:, :, :0], 2), {}, ValueError, "x"),
    ("adaptive_avg_pool2d", (X.astype(np.complex128), 2), {}, TypeError, "x"),
    ("adaptive_avg_pool2d_backward", (POOL_DOUT[0], X.shape), {}, ValueError, "dout"),
    ("adaptive_avg_pool2d_backward", (POOL_DOUT[:, :, :0], X.shape), {}, ValueError, "dout"),
    ("adaptive_avg_pool2d_backward", (POOL_DOUT.astype(np.complex64), X.shape), {}, TypeError, "dout"),
    ("adaptive_avg_pool2d_backward", (POOL_DOUT, (2, 4, 6, 6)), {}, ValueError, "input_shape"),
    ("adaptive_avg_pool2d_backward", (POOL_DOUT, X.shape[:3]), {}, ValueError, "input_shape"),
    ("adaptive_avg_pool2d_backward", (POOL_DOUT, (2, 3, 6.0, 6)), {}, TypeError, "input_shape"),
    # --- batch_norm ----------------------------------------------------------------------------
    ("batch_norm", (X[0, 0, 0],), {}, ValueError, "x"),
    ("batch_norm", (X[None],), {}, ValueError, "x"),
    ("batch_norm", (X[:, :, :0],), {}, ValueError, "x"),
    ("batch_norm", (X[:, :0],), {}, ValueError, "x"),
    ("batch_norm", (X[:1, :, :1, :1],), {}, ValueError, "value"),  # one value per channel
    ("batch_norm", (X, C3[:2]), {}, ValueError, "weight"),
    ("batch_norm", (X, C3), {"data_format": "NHWC"}, ValueError, "weight"),  # NHWC: C = 6
    ("batch_norm", (X, None, C3[:, None]), {}, ValueError, "bias"),
    ("batch_norm", (X, None, None, C3), {}, ValueError, "running_var"),
    ("batch_norm", (X, None, None, None, C3), {}, ValueError, "running_mean"),
    ("batch_norm", (X,), {"training": False}, ValueError, "running_mean"),
    ("batch_norm", (X, None, None, np.zeros(4), np.ones(4)), {}, ValueError, "running_mean"),
    ("batch_norm", (X, None, None, C3, np.ones((3, 1))), {"training": False}, ValueError, "running_var"),
    ("batch_norm", (X, None, None, [0.0] * 3, C3), {}, TypeError, "running_mean"),
    ("batch_norm", (X, None, None, np.zeros(3, np.int64), C3), {}, TypeError, "running_mean"),
    ("batch_norm", (X, None, None, C3.copy(), READ_ONLY), {}, ValueError, "running_var"),
    ("batch_norm", (X,), {"momentum": 1.5}, ValueError, "momentum"),
    ("batch_norm", (X,), {"momentum": -0.1}, ValueError, "momentum"),
    ("batch_norm", (X,), {"momentum": None}, TypeError, "momentum"),
    ("batch_norm", (X,), {"momentum": "0.1"}, TypeError, "momentum"),
    ("batch_norm", (X,), {"eps": -1e-5}, ValueError, "eps"),
    ("batch_norm", (X,), {"eps": 0.0}, ValueError, "eps"),  # training (as torch)
    ("batch_norm", (X,), {"eps": float("nan")}, ValueError, "eps"),
    ("batch_norm", (X,), {"eps": float("inf")}, ValueError, "eps"),
    ("batch_norm", (X,), {"eps": True}, TypeError, "eps"),
    ("batch_norm", (X,), {"training": 1}, TypeError, "training"),
    ("batch_norm", (X,), {"training": None}, TypeError, "training"),
    ("batch_norm", (X,), {"data_format": "NCWH"}, ValueError, "data_format"),
    ("batch_norm", (X,), {"data_format": "nchw"}, ValueError, "data_format"),
    ("batch_norm", (X,), {"data_format": None}, TypeError, "data_format"),
    ("batch_norm", (X.astype(np.complex128),), {}, TypeError, "x"),
    ("batch_norm", (X.astype("datetime64[s]"),), {}, TypeError, "x"),
    ("batch_norm", (None,), {}, TypeError, "x"),
    ("batch_norm", (ragged(),), {}, TypeError, "x"),
    ("batch_norm", (X, C3.astype(np.complex64)), {}, TypeError, "weight"),
    ("batch_norm", (X, None, "abc"), {}, TypeError, "bias"),
    # --- batch_norm_backward -------------------------------------------------------------------
    ("batch_norm_backward", (X[:, :, :5], X, None, C3, C3), {}, ValueError, "dout"),
    ("batch_norm_backward", (X[0], X, None, C3, C3), {}, ValueError, "dout"),
    ("batch_norm_backward", (X[0, 0, 0], X[0, 0, 0], None, C3, C3), {}, ValueError, "x"),
    ("batch_norm_backward", (X, X, C3[:2], C3, C3), {}, ValueError, "weight"),
    ("batch_norm_backward", (X, X, None, C3[:2], C3), {}, ValueError, "mean"),
    ("batch_norm_backward", (X, X, None, C3, np.ones(6)), {}, ValueError, "invstd"),
    ("batch_norm_backward", (X, X, None, None, C3), {}, TypeError, "mean"),
    ("batch_norm_backward", (X, X, None, C3, None), {}, TypeError, "invstd"),
    ("batch_norm_backward", (X, X, None, C3, C3), {"training": "yes"}, TypeError, "training"),
    ("batch_norm_backward", (X, X, None, C3, C3), {"data_format": "CHWN"}, ValueError, "data_format"),
    ("batch_norm_backward", (X.astype(np.complex64), X, None, C3, C3), {}, TypeError, "dout"),
    ("batch_norm_backward", (X, X, None, C3, C3.astype(object)), {}, TypeError, "invstd"),
    # --- relu / relu_backward ------------------------------------------------------------------
    ("relu", (X.astype(np.complex128),), {}, TypeError, "x"),
    ("relu", ("abc",), {}, TypeError, "x"),
    ("relu", (None,), {}, TypeError, "x"),
    ("relu", (NotAnArray(),), {}, TypeError, "x"),
    ("relu_backward", (X, X[:1]), {}, ValueError, "y"),
    ("relu_backward", (X[0], X), {}, ValueError, "y"),
    ("relu_backward", (X.astype(np.complex64), X), {}, TypeError, "dout"),
    ("relu_backward", (X, X.astype(object)), {}, TypeError, "y"),
    # --- softmax_cross_entropy -----------------------------------------------------------------
    ("softmax_cross_entropy", (LOGITS[0], LABELS[:1]), {}, ValueError, "logits"),
    ("softmax_cross_entropy", (LOGITS[None], LABELS), {}, ValueError, "logits"),
    ("softmax_cross_entropy", (LOGITS[:, :0], LABELS), {}, ValueError, "logits"),
    ("softmax_cross_entropy", (LOGITS, LABELS[:3]), {}, ValueError, "target"),
    ("softmax_cross_entropy", (LOGITS, LABELS + 1), {}, ValueError, "labels"),  # 5 == K
    ("softmax_cross_entropy", (LOGITS, LABELS - 1), {}, ValueError, "labels"),
    ("softmax_cross_entropy", (LOGITS, np.full(4, 2**64 - 1, np.uint64)), {}, ValueError, "labels"),
    ("softmax_cross_entropy", (LOGITS, LABELS.astype(np.float64)), {}, TypeError, "target"),
    ("softmax_cross_entropy", (LOGITS, LABELS > 1), {}, TypeError, "target"),
    ("softmax_cross_entropy", (LOGITS, LOGITS[:, :4]), {}, ValueError, "target"),
    ("softmax_cross_entropy", (LOGITS, LOGITS[None]), {}, ValueError, "target"),
    ("softmax_cross_entropy", (LOGITS, np.int64(1)), {}, ValueError, "target"),
    ("softmax_cross_entropy", (LOGITS, None), {}, TypeError, "target"),
    ("softmax_cross_entropy", (LOGITS, LOGITS.astype(np.complex128)), {}, TypeError, "target"),
    ("softmax_cross_entropy", (LOGITS.astype(np.complex64), LABELS), {}, TypeError, "logits"),
    ("softmax_cross_entropy", (LOGITS.astype(str), LABELS), {}, TypeError, "logits"),
]


def _id(case):
    fname, args, kwargs, exc, word = case
    return f"{fname}-{word}-{exc.__name__}"


def _assert_names(message, fname, word):
    assert message.startswith(f"{fname}:"), message
    assert re.search(rf"\b{re.escape(word)}\b", message), f"{word!r} not named in: {message}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_invalid_input_raises(backend, case):
    fname, args, kwargs, exc, word = case
    with pytest.raises(exc) as info:
        getattr(fc, fname)(*args, **kwargs, backend=backend)
    _assert_names(str(info.value), fname, word)


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_reference_namespace_raises_the_same(case):
    fname, args, kwargs, exc, word = case
    with pytest.raises(exc) as info:
        getattr(fc.reference, fname)(*args, **kwargs)
    _assert_names(str(info.value), fname, word)


def test_messages_say_what_was_expected_and_given():
    with pytest.raises(ValueError) as info:
        fc.conv2d(np.zeros((2, 3, 8, 8)), np.zeros((8, 4, 3, 3)))
    message = str(info.value)
    assert "3 channels" in message and "4" in message and "(8, 4, 3, 3)" in message
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 4\).*\(2, 4, 4, 3\)"):
        fc.conv2d_backward(DOUT[:, :, :, :3], X, W)
    with pytest.raises(ValueError, match="-7"):
        fc.conv2d(X, W, stride=-7)
    with pytest.raises(TypeError, match="complex128"):
        fc.avg_pool2d(X.astype(np.complex128), 2)
    with pytest.raises(ValueError, match=str(2**64 - 1)):
        fc.max_pool2d_backward(POOL_DOUT, np.full(IDX.shape, 2**64 - 1, np.uint64), X.shape)


def test_batch_zero_is_still_validated(backend):
    """The empty-batch shortcut must not skip the checks."""
    x0 = np.zeros((0, 3, 6, 6))
    with pytest.raises(ValueError, match="channels"):
        fc.conv2d(x0, W[:, :2], backend=backend)
    with pytest.raises(ValueError, match="dout"):
        fc.conv2d_backward(np.zeros((0, 4, 3, 3)), x0, W, backend=backend)
    with pytest.raises(ValueError, match="padding"):
        fc.max_pool2d(x0, 2, padding=2, backend=backend)
    with pytest.raises(ValueError, match="cols"):
        fc.col2im(np.zeros((0, 27, 15)), (0, 3, 6, 6), 3, backend=backend)
    with pytest.raises(TypeError, match="indices"):
        fc.max_pool2d_backward(np.zeros((0, 3, 3, 3)), np.zeros((0, 3, 3, 3)), (0, 3, 6, 6), backend=backend)
    with pytest.raises(ValueError, match="padding"):
        fc.max_pool2d(np.zeros((0, 3, 1, 6)), 2, padding=1, dilation=2, backend=backend)
    with pytest.raises(TypeError, match="ceil_mode"):
        fc.max_pool1d(np.zeros((0, 3, 6)), 2, ceil_mode=1, backend=backend)
    with pytest.raises(ValueError, match="divisor_override"):
        fc.avg_pool2d(x0, 2, divisor_override=0, backend=backend)
    with pytest.raises(ValueError, match="dout"):
        fc.avg_pool1d_backward(np.zeros((0, 3, 2)), (0, 3, 6), 2, backend=backend)
    with pytest.raises(ValueError, match="indices"):
        fc.max_pool1d_backward(np.zeros((0, 3, 3)), np.zeros((0, 3, 2), int), (0, 3, 6), backend=backend)
    with pytest.raises(ValueError, match="output_size"):
        fc.adaptive_avg_pool2d(x0, 0, backend=backend)
    with pytest.raises(ValueError, match="input_shape"):
        fc.adaptive_avg_pool2d_backward(np.zeros((0, 3, 2, 2)), (0, 4, 6, 6), backend=backend)


# ----------------------------------------------------------------------------------------------
# Backend and thread arguments
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bogus", "", "Reference", None, 1, ["reference"]])
def test_bad_backend_names(name):
    with pytest.raises(ValueError, match="backend"):
        fc.set_backend(name)
    with pytest.raises(ValueError, match="backend"):
        with fc.use_backend(name):
            pass
    if name is not None:  # backend=None is the documented "active backend"
        with pytest.raises(ValueError, match="backend"):
            fc.conv2d(X, W, backend=name)


def test_bad_backend_keyword_with_empty_batch():
    with pytest.raises(ValueError, match="backend"):
        fc.conv2d(np.zeros((0, 3, 6, 6)), W, backend="bogus")
    with pytest.raises(ValueError, match="backend"):
        fc.max_pool2d(np.zeros((0, 3, 6, 6)), 2, backend="bogus")


@pytest.mark.parametrize("n, exc", [
    (0, ValueError), (-1, ValueError), (1.0, TypeError), (2.5, TypeError), ("2", TypeError),
    (True, TypeError), (None, TypeError), (np.float64(2), TypeError),
])
def test_bad_thread_counts(n, exc):
    before = fc.get_num_threads()
    with pytest.raises(exc, match="set_num_threads"):
        fc.set_num_threads(n)
    assert fc.get_num_threads() == before


# ----------------------------------------------------------------------------------------------
# Validation happens once, before any kernel runs, and kernels get checked arguments
# ----------------------------------------------------------------------------------------------

class SpyKernels:
    """Stands in for a backend's kernel module: records every call, computes nothing."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def kernel(*args):
            self.calls.append((name, args))
            raise _KernelCalled(name)
        return kernel


class _KernelCalled(Exception):
    pass


@pytest.fixture
def spy(monkeypatch, backend):
    module = SpyKernels()
    monkeypatch.setitem(_backend._modules, backend, module)
    return module


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_no_kernel_runs_on_invalid_input(spy, backend, case):
    fname, args, kwargs, exc, word = case
    with pytest.raises(exc):
        getattr(fc, fname)(*args, **kwargs, backend=backend)
    assert spy.calls == []


VALID_CALLS = [  # odd but valid spellings, layouts and dtypes
    ("conv2d", (X.astype(np.float32)[:, :, ::-1], np.asfortranarray(W.astype(np.float32)), B.astype(np.float32)),
     {"stride": [2, 1], "padding": np.int64(1)}),
    ("conv2d_backward", (DOUT.astype(np.int32), X[..., ::1], W.T.T), {}),
    ("conv1d", (X1, W1.astype(np.float32)), {"stride": (2,), "padding": [1]}),
    ("conv1d_backward", (DOUT1, X1, W1), {}),
    ("im2col", (X.astype(np.uint8), (3, 2)), {"dilation": 1}),
    ("col2im", (COLS, np.array(X.shape), 3), {}),
    ("max_pool2d", (X.astype(bool), 2), {"stride": None}),
    ("max_pool2d_backward", (POOL_DOUT, IDX.astype(np.uint16), list(X.shape)), {}),
    ("avg_pool2d", (np.asfortranarray(X), (2, 3)), {"padding": (1, 0)}),
    ("avg_pool2d_backward", (POOL_DOUT, X.shape, 2), {}),
    ("max_pool2d", (X.astype(np.float32), 3), {"stride": 2, "padding": 1, "dilation": (2, 1),
                                             "ceil_mode": np.bool_(True)}),
    ("avg_pool2d", (X, 3), {"stride": 2, "ceil_mode": True, "count_include_pad": False,
                            "divisor_override": np.int64(3)}),
    ("avg_pool2d_backward", (POOL_DOUT, X.shape, 3, 2), {"ceil_mode": True}),
    ("max_pool1d", (X1[:, :, ::-1], [2]), {"dilation": np.int64(2), "ceil_mode": True}),
    ("max_pool1d_backward", (POOL_DOUT1, IDX1.astype(np.int32), list(X1.shape)), {}),
    ("avg_pool1d", (X1.astype(np.int16), 3), {"padding": 1, "ceil_mode": True}),
    ("avg_pool1d_backward", (POOL_DOUT1, X1.shape, 2), {"count_include_pad": False}),
    ("adaptive_avg_pool2d", (np.asfortranarray(X), np.array([2, 5])), {}),
    ("adaptive_avg_pool2d", (X, (None, 4)), {}),
    ("adaptive_avg_pool2d_backward", (POOL_DOUT, np.array(X.shape)), {}),
    ("conv2d", (XG.astype(np.float32), WG.astype(np.float32)), {"groups": np.int64(2), "padding": "same"}),
    ("conv1d_backward", (DOUT1, X1, W1), {"padding": "valid", "groups": 1}),
    ("conv_transpose2d", (X, np.asfortranarray(WT), B[:2]), {"stride": [2, 1], "output_padding": (1, 0)}),
    ("conv_transpose1d_backward", (DOUT_T1, X1, WT1), {}),
]


@pytest.mark.parametrize("fname, args, kwargs", VALID_CALLS, ids=[c[0] for c in VALID_CALLS])
def test_kernels_receive_checked_arguments(spy, backend, fname, args, kwargs):
    """The kernel interface of fastconv._backend: C-contiguous float arrays, int tuples, bool
    options (ceil_mode, count_include_pad) and divisor_override as None or an int."""
    with pytest.raises(_KernelCalled):
        getattr(fc, fname)(*args, **kwargs, backend=backend)
    assert len(spy.calls) == 1
    name, kernel_args = spy.calls[0]
    assert name == fname.replace("1d", "2d")  # the 1-D functions run the 2-D kernels
    arrays = [a for a in kernel_args if isinstance(a, np.ndarray)]
    assert arrays
    for a in arrays:
        assert a.flags.c_contiguous and a.dtype in (np.float32, np.float64, np.int64)
        assert a.ndim in (1, 3, 4) and (a.ndim == 1 or a.shape[0] >= 1)
    float_dtypes = {a.dtype for a in arrays if a.dtype != np.int64}
    assert len(float_dtypes) == 1  # one computation dtype for every float operand
    for a in kernel_args:
        if isinstance(a, tuple):   # hyper-parameters: ints, or (before, after) pairs of ints
            assert all(type(v) is int or (type(v) is tuple and all(type(e) is int for e in v))
                       for v in a), a
        else:
            assert a is None or isinstance(a, np.ndarray) or type(a) in (bool, int), a


LAYER_CALLS = [  # (name, args, kwargs, expected (kernel, shapes of its array arguments))
    ("batch_norm", (np.asfortranarray(X.astype(np.float32)), C3.astype(np.int8)), {},
     ("batch_norm_statistics", [(2, 3, 36)])),
    ("batch_norm", (X[..., ::-1], None, np.ones(6), np.zeros(6), [1] * 6), {"training": False, "data_format": "NHWC"},
     ("batch_norm_forward", [(36, 6, 1), (6,), (6,), (6,)])),
    ("batch_norm_backward", (X.astype(np.int32), X.T.T, None, [0.0] * 3, C3), {},
     ("batch_norm_backward", [(2, 3, 36), (2, 3, 36), (3,), (3,)])),
    ("relu", (X.astype(bool)[:, ::2],), {}, ("relu", [(2 * 2 * 6 * 6,)])),
    ("relu_backward", (X.T, X.T), {}, ("relu_backward", [(X.size,), (X.size,)])),
    ("softmax_cross_entropy", (LOGITS.T.T[:, ::-1], LABELS.astype(np.uint8)), {},
     ("softmax_cross_entropy", [(4, 5), (4,)])),
    ("softmax_cross_entropy", (LOGITS.astype(np.float32), np.eye(5, dtype=bool)[:4]), {},
     ("softmax_cross_entropy", [(4, 5), (4, 5)])),
]


@pytest.mark.parametrize("fname, args, kwargs, expected", LAYER_CALLS, ids=[c[0] for c in LAYER_CALLS])
def test_layer_kernels_receive_checked_arguments(spy, backend, fname, args, kwargs, expected):
    """The layer kernels of fastconv._backend: C-contiguous arrays of one float dtype (labels:
    int64), batch-norm operands as (outer, C, inner), elementwise operands flat."""
    with pytest.raises(_KernelCalled):
        getattr(fc, fname)(*args, **kwargs, backend=backend)
    (name, kernel_args), = spy.calls
    arrays = [a for a in kernel_args if isinstance(a, np.ndarray)]
    assert (name, [a.shape for a in arrays]) == expected
    assert all(a.flags.c_contiguous for a in arrays)
    assert len({a.dtype for a in arrays if a.dtype != np.int64}) == 1
    assert all(a.dtype in (np.float32, np.float64) or (a.dtype == np.int64 and a.ndim == 1) for a in arrays)


def test_layer_functions_with_empty_batch_are_still_validated(backend):
    x0 = np.zeros((0, 3, 4, 4))
    with pytest.raises(ValueError, match="weight"):
        fc.batch_norm(x0, np.ones(2), backend=backend)
    with pytest.raises(ValueError, match="running_mean"):
        fc.batch_norm(x0, training=False, backend=backend)
    with pytest.raises(ValueError, match="dout"):
        fc.batch_norm_backward(np.zeros((0, 3, 4, 3)), x0, None, C3, C3, backend=backend)
    with pytest.raises(ValueError, match="target"):
        fc.softmax_cross_entropy(np.zeros((0, 5)), np.zeros((0, 4)), backend=backend)
    with pytest.raises(ValueError, match="backend"):
        fc.batch_norm(x0, backend="bogus")
