"""The workloads of BENCH.md and the work each one does (FLOPs, bytes moved).

The formulas are the ones BENCH.md fixes, so that figures stay comparable between runs and
machines: a convolution's forward pass costs 2*N*F*C*KH*KW*OH*OW floating-point operations
(one multiply and one add per weight per output) and its backward pass twice that (dx and dw,
the bias gradient being negligible); a pooling layer is memory-bound, so it is measured in
bytes read plus bytes written, indices included. A grouped convolution does 1/groups of the
multiply-adds of a dense one; a transposed convolution multiplies every input element by every
weight of its group (2*N*C*H*W*(F/groups)*KH*KW, the backward-data pass of the convolution it
transposes). The training steps live in fastconv._bench.training and join the registry here.
"""

import inspect
from dataclasses import dataclass, field

import numpy as np

import fastconv
from fastconv._bench import training


def out_size(size, kernel, stride, padding, dilation=1):
    """Output length of one spatial axis (API.md's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class ConvWorkload:
    """A convolution: conv2d (N, C, H, W) * (F, C // groups, K, K), or conv1d when ``ndim == 1``
    (H = 1), or with ``transpose`` conv_transpose2d (N, C, H, W) * (C, F // groups, K, K).
    """

    name: str
    n: int
    c: int
    h: int
    w: int
    f: int
    k: int
    stride: int
    pad: int
    ndim: int = 2
    groups: int = 1
    transpose: bool = False
    kind: str = field(default="conv", init=False)

    @property
    def group(self):
        return "t1" if self.name.startswith("t1") else "conv"

    @property
    def kernel_hw(self):
        return (self.k, self.k) if self.ndim == 2 else (1, self.k)

    @property
    def out_hw(self):
        kh, kw = self.kernel_hw
        if self.transpose:  # API.md: (H - 1)*s - 2*p + (K - 1) + 1 (no dilation, no output padding)
            return ((self.h - 1) * self.stride - 2 * self.pad + kh, (self.w - 1) * self.stride - 2 * self.pad + kw)
        if self.ndim == 1:
            return 1, out_size(self.w, kw, self.stride, self.pad)
        return out_size(self.h, kh, self.stride, self.pad), out_size(self.w, kw, self.stride, self.pad)

    def shapes(self):
        """Shapes of x, w, b, dout (1-D workloads have no H axis)."""
        oh, ow = self.out_hw
        if self.ndim == 1:
            return {"x": (self.n, self.c, self.w), "w": (self.f, self.c, self.k),
                    "b": (self.f,), "dout": (self.n, self.f, ow)}
        if self.transpose:
            w_shape = (self.c, self.f // self.groups, self.k, self.k)
        else:
            w_shape = (self.f, self.c // self.groups, self.k, self.k)
        return {"x": (self.n, self.c, self.h, self.w), "w": w_shape,
                "b": (self.f,), "dout": (self.n, self.f, oh, ow)}

    def forward_flops(self):
        kh, kw = self.kernel_hw
        if self.transpose:
            return 2 * self.n * self.c * self.h * self.w * (self.f // self.groups) * kh * kw
        oh, ow = self.out_hw
        return 2 * self.n * self.f * (self.c // self.groups) * kh * kw * oh * ow

    def backward_flops(self):
        return 2 * self.forward_flops()

    def work(self, dtype=None):
        """Total work of forward + backward: FLOPs for a convolution."""
        return self.forward_flops() + self.backward_flops()

    def io_bytes(self, dtype):
        """Bytes of the inputs and outputs of forward + backward: x, w, b, dout; y, dx, dw, db."""
        size = np.dtype(dtype).itemsize
        elements = sum(int(np.prod(s)) for s in self.shapes().values())  # x, w, b, dout
        return 2 * elements * size  # y, dx, dw, db have the shapes of dout, x, w, b

    def describe(self):
        groups = f" groups={self.groups}" if self.groups != 1 else ""
        if self.ndim == 1:
            return (f"conv1d N={self.n} C={self.c} L={self.w} F={self.f} K={self.k} "
                    f"s={self.stride} p={self.pad}{groups}")
        op = "conv_transpose2d" if self.transpose else "conv2d"
        return (f"{op} N={self.n} C={self.c} {self.h}x{self.w} F={self.f} K={self.k} "
                f"s={self.stride} p={self.pad}{groups}")

    def unsupported(self):
        """Why this fastconv cannot run the workload yet (None when it can)."""
        if self.transpose and not hasattr(fastconv, "conv_transpose2d"):
            return "fastconv has no conv_transpose2d yet"
        if self.groups != 1 and "groups" not in inspect.signature(fastconv.conv2d).parameters:
            return "fastconv.conv2d has no groups= keyword yet"
        return None


@dataclass(frozen=True)
class PoolWorkload:
    """Max or average pooling of (N, C, H, W) with a square kernel."""

    name: str
    op: str  # "max" or "avg"
    n: int
    c: int
    h: int
    w: int
    k: int
    stride: int
    pad: int
    kind: str = field(default="pool", init=False)
    group: str = field(default="pool", init=False)

    @property
    def out_hw(self):
        return out_size(self.h, self.k, self.stride, self.pad), out_size(self.w, self.k, self.stride, self.pad)

    def shapes(self):
        oh, ow = self.out_hw
        return {"x": (self.n, self.c, self.h, self.w), "dout": (self.n, self.c, oh, ow)}

    def forward_bytes(self, dtype):
        """Read x; write y (and, for max pooling, the int64 indices)."""
        size = np.dtype(dtype).itemsize
        n_in = self.n * self.c * self.h * self.w
        n_out = self.n * self.c * self.out_hw[0] * self.out_hw[1]
        index = 8 * n_out if self.op == "max" else 0
        return n_in * size + n_out * size + index

    def backward_bytes(self, dtype):
        """Read dout (and the indices for max pooling); write dx."""
        size = np.dtype(dtype).itemsize
        n_in = self.n * self.c * self.h * self.w
        n_out = self.n * self.c * self.out_hw[0] * self.out_hw[1]
        index = 8 * n_out if self.op == "max" else 0
        return n_out * size + index + n_in * size

    def work(self, dtype):
        """Total work of forward + backward: bytes moved for pooling."""
        return self.forward_bytes(dtype) + self.backward_bytes(dtype)

    def describe(self):
        return (f"{self.op}_pool2d N={self.n} C={self.c} {self.h}x{self.w} K={self.k} "
                f"s={self.stride} p={self.pad}")

    def unsupported(self):
        return None


WORKLOADS = {
    w.name: w
    for w in (
        ConvWorkload("c1_cs231n", 50, 3, 32, 32, 32, 3, 1, 1),
        ConvWorkload("c2_cs231n_s2", 100, 3, 31, 31, 25, 3, 2, 1),
        ConvWorkload("c3_resnet56", 32, 64, 56, 56, 64, 3, 1, 1),
        ConvWorkload("c4_wide28", 8, 128, 28, 28, 256, 3, 1, 1),
        ConvWorkload("c5_stem7x7", 4, 3, 224, 224, 64, 7, 2, 3),
        ConvWorkload("c6_1x1", 16, 256, 28, 28, 128, 1, 1, 0),
        ConvWorkload("c7_conv1d", 32, 64, 1, 1000, 64, 5, 1, 2, ndim=1),
        ConvWorkload("c8_cifar32", 128, 32, 32, 32, 32, 3, 1, 1),
        ConvWorkload("c9_cifar16", 128, 64, 16, 16, 64, 3, 1, 1),
        ConvWorkload("c10_cifar8", 128, 128, 8, 8, 128, 3, 1, 1),
        ConvWorkload("c11_down", 128, 32, 32, 32, 64, 3, 2, 1),
        ConvWorkload("c12_depthwise", 64, 128, 28, 28, 128, 3, 1, 1, groups=128),
        ConvWorkload("c13_tconv", 32, 64, 28, 28, 32, 2, 2, 0, transpose=True),
        ConvWorkload("t1_tiny", 1, 1, 5, 5, 1, 3, 1, 0),
        PoolWorkload("p1_cs231n", "max", 100, 3, 32, 32, 2, 2, 0),
        PoolWorkload("p2_max2", "max", 32, 64, 112, 112, 2, 2, 0),
        PoolWorkload("p3_max3", "max", 32, 64, 112, 112, 3, 2, 1),
        PoolWorkload("p4_avg2", "avg", 32, 64, 112, 112, 2, 2, 0),
        *training.WORKLOADS,
    )
}

# --only also takes these group names.
GROUP_NAMES = ("conv", "pool", "train")

# Workloads on which the plain-NumPy baseline is slowest; --quick leaves it out there.
SLOW_FOR_NUMPY = ("c3_resnet56", "c4_wide28", "c5_stem7x7", "c6_1x1", "c7_conv1d", "c8_cifar32", "c9_cifar16",
                  "c10_cifar8", "c11_down", "c12_depthwise", "c13_tconv", "p2_max2", "p3_max3", "p4_avg2",
                  "tr3_vgg_bn", "tr4_resnet", "tr5_mobilenet")


def select(only):
    """Workloads named in `only` (a comma-separated string of names, unique prefixes or groups).

    "c1" selects c1_cs231n, "tr1,tr3" two training steps; the group names "conv" (c1..c13),
    "pool" (p1..p4) and "train" (tr1..tr5) select a whole group; "none" selects nothing (to
    measure only the machine limits). Raises ValueError for a name that matches no workload or
    more than one.
    """
    if only is None:
        return list(WORKLOADS.values())
    chosen = []
    for token in (t.strip() for t in only.split(",")):
        if not token or token == "none":
            continue
        if token in WORKLOADS:
            matches = [token]
        elif token in GROUP_NAMES:
            matches = [name for name, w in WORKLOADS.items() if w.group == token]
        else:
            matches = [name for name in WORKLOADS if name.split("_")[0] == token] or [
                name for name in WORKLOADS if name.startswith(token)
            ]
            if len(matches) != 1:
                raise ValueError(
                    f"--only: {token!r} matches {'no workload' if not matches else matches}; "
                    f"choose from {', '.join(WORKLOADS)} or a group ({', '.join(GROUP_NAMES)})"
                )
        chosen += [WORKLOADS[name] for name in matches if WORKLOADS[name] not in chosen]
    return chosen


def make_inputs(workload, dtype, seed=0):
    """Random inputs for `workload` (a dict of NumPy arrays, C-contiguous, of `dtype`)."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in workload.shapes().items()}
