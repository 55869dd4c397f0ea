"""Typed use of fastconv's public API: `mypy --strict` on this file checks the shipped stubs.

It is also importable and runnable (test_packaging runs it), so it cannot drift from the real
API: a call that type-checks but fails at run time fails the test suite too.
"""

import numpy as np
from numpy.typing import NDArray

import fastconv as fc
from fastconv import reference


def typed_usage() -> float:
    """Call every public function once with small arrays; return a number from the results."""
    rng = np.random.default_rng(0)
    x: NDArray[np.float32] = rng.standard_normal((2, 3, 6, 6), dtype=np.float32)
    w = rng.standard_normal((4, 3, 3, 3), dtype=np.float32)
    b = np.zeros(4, dtype=np.float32)

    y = fc.conv2d(x, w, b, stride=1, padding=(1, 1), dilation=1)
    dx, dw, db = fc.conv2d_backward(np.ones_like(y), x, w, padding=1)
    z = fc.conv1d(x[:, :, 0, :], w[:, :, 0, :], padding=1, backend="reference")
    dz = fc.conv1d_backward(np.ones_like(z), x[:, :, 0, :], w[:, :, 0, :], padding=1)
    cols = fc.im2col(x, 3, padding=1)
    back = fc.col2im(cols, x.shape, kernel_size=[3, 3], padding=1)
    p, idx = fc.max_pool2d(y, kernel_size=2)
    dp = fc.max_pool2d_backward(np.ones_like(p), idx, y.shape)
    a = fc.avg_pool2d(y, 3, stride=2, padding=1)
    da = fc.avg_pool2d_backward(np.ones_like(a), y.shape, 3, stride=2, padding=1)
    pd, _ = fc.max_pool2d(y, (3, 2), dilation=2, ceil_mode=True)
    ao = fc.avg_pool2d(y, 3, 2, 1, ceil_mode=True, count_include_pad=False, divisor_override=4)
    dao = fc.avg_pool2d_backward(np.ones_like(ao), y.shape, 3, 2, 1, True, False, 4)
    seq = y[:, :, 0, :]
    p1, idx1 = fc.max_pool1d(seq, 2, padding=1, dilation=(2,), ceil_mode=True)
    dp1 = fc.max_pool1d_backward(np.ones_like(p1), idx1, seq.shape)
    a1 = fc.avg_pool1d(seq, [3], stride=2, count_include_pad=False)
    da1 = fc.avg_pool1d_backward(np.ones_like(a1), seq.shape, 3, stride=2, count_include_pad=False)
    g = fc.adaptive_avg_pool2d(y, (None, 2))
    dg = fc.adaptive_avg_pool2d_backward(np.ones_like(g), y.shape)
    gr = reference.adaptive_avg_pool2d(y, 1)
    r = reference.conv2d(x, w, b, padding=1)
    running_mean, running_var = np.zeros(4, dtype=np.float32), np.ones(4, dtype=np.float32)
    n, mean, invstd = fc.batch_norm(y, None, None, running_mean, running_var, momentum=0.1)
    dn, dgamma, dbeta = fc.batch_norm_backward(np.ones_like(n), y, None, mean, invstd)
    nl, _, _ = reference.batch_norm(y.transpose(0, 2, 3, 1), data_format="NHWC")
    h = fc.relu(y)
    dh = fc.relu_backward(np.ones_like(h), h)
    loss, dlogits = fc.softmax_cross_entropy(rng.standard_normal((4, 3)), np.array([0, 2, 1, 1]))
    gc = fc.conv2d(x, w[:3, :1], None, 1, "same", 1, 3)                  # depthwise
    dgc = fc.conv2d_backward(np.ones_like(gc), x, w[:3, :1], padding="same", groups=3)
    vc = fc.conv1d(x[:, :, 0, :], w[:3, :1, 0, :], padding="valid", groups=3)
    t = fc.conv_transpose2d(x, w.transpose(1, 0, 2, 3), b, stride=2, padding=1, output_padding=(1, 0))
    dt = fc.conv_transpose2d_backward(np.ones_like(t), x, w.transpose(1, 0, 2, 3), 2, 1, (1, 0))
    t1 = fc.conv_transpose1d(x[:, :, 0, :], w[:3, :, 0, :], None, 2, groups=3, dilation=2)
    dt1 = reference.conv_transpose1d_backward(np.ones_like(t1), x[:, :, 0, :], w[:3, :, 0, :], 2, groups=3,
                                              dilation=2)

    name: str = fc.get_backend()
    with fc.use_backend("reference") as active:
        assert active == "reference"
    fc.set_backend(name)
    threads: int = fc.get_num_threads()
    fc.set_num_threads(threads)
    config = fc.show_config()
    version: str = fc.__version__
    assert isinstance(config["openmp"], bool) and version

    first_index: int = int(idx.flat[0])
    total = sum(float(v.sum()) for v in (dx, dw, db, dz[0], back, dp, da, r, pd, dao, dp1, da1, dg, gr,
                                         dn, dgamma, dbeta, nl, dh, dlogits, dgc[1], vc, dt[0], dt1[2]))
    return total + first_index + loss


if __name__ == "__main__":
    print(typed_usage())
