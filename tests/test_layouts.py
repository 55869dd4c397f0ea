"""Memory layout: any input layout gives the result of a C-contiguous copy; inputs are never
modified; every result is a new, writeable, C-contiguous array that the caller owns; an empty
batch gives an empty result of the right shape."""

import numpy as np
import pytest

import fastconv as fc

rng = np.random.default_rng(0)


def _data(shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# Each call: (name, function of the array arguments, the array arguments). The configurations
# include "identity-like" ones (1x1 kernels, stride 1, no padding) where a careless kernel could
# hand back a view of its input instead of a new array.
CALLS = [
    ("conv2d", lambda x, w, b: fc.conv2d(x, w, b, (2, 1), 1, (1, 2)),
     [_data((2, 3, 7, 6)), _data((4, 3, 3, 2)), _data(4)]),
    ("conv2d_1x1", lambda x, w: fc.conv2d(x, w), [_data((2, 3, 5, 4)), _data((3, 3, 1, 1))]),
    ("conv2d_backward", lambda d, x, w: fc.conv2d_backward(d, x, w, 1, (1, 0)),
     [_data((2, 4, 7, 5)), _data((2, 3, 7, 6)), _data((4, 3, 3, 2))]),
    ("conv2d_backward_1x1", lambda d, x, w: fc.conv2d_backward(d, x, w),
     [_data((2, 1, 5, 4)), _data((2, 1, 5, 4)), _data((1, 1, 1, 1))]),
    ("conv1d", lambda x, w, b: fc.conv1d(x, w, b, 2, 1, 2), [_data((2, 3, 9)), _data((4, 3, 3)), _data(4)]),
    ("conv1d_backward", lambda d, x, w: fc.conv1d_backward(d, x, w, padding=1),
     [_data((2, 4, 9)), _data((2, 3, 9)), _data((4, 3, 3))]),
    ("im2col", lambda x: fc.im2col(x, (3, 2), 1, (1, 0)), [_data((2, 3, 5, 6))]),
    ("im2col_1x1", lambda x: fc.im2col(x, 1), [_data((2, 3, 5, 6))]),
    ("col2im", lambda c: fc.col2im(c, (2, 3, 5, 6), 2, 1, 1), [_data((2, 12, 42))]),
    ("col2im_1x1", lambda c: fc.col2im(c, (2, 3, 5, 6), 1), [_data((2, 3, 30))]),
    ("max_pool2d", lambda x: fc.max_pool2d(x, 3, 2, 1), [_data((2, 3, 7, 6))]),
    ("max_pool2d_1x1", lambda x: fc.max_pool2d(x, 1), [_data((2, 3, 4, 5))]),
    ("max_pool2d_backward", lambda d, i: fc.max_pool2d_backward(d, i, (2, 3, 6, 6)),
     [_data((2, 3, 3, 3)), rng.integers(0, 36, (2, 3, 3, 3))]),
    ("avg_pool2d", lambda x: fc.avg_pool2d(x, (2, 3), 1, (1, 0)), [_data((2, 3, 5, 6))]),
    ("avg_pool2d_1x1", lambda x: fc.avg_pool2d(x, 1), [_data((2, 3, 5, 6))]),
    ("avg_pool2d_backward", lambda d: fc.avg_pool2d_backward(d, (2, 3, 6, 6), 2), [_data((2, 3, 3, 3))]),
    ("avg_pool2d_backward_1x1", lambda d: fc.avg_pool2d_backward(d, (2, 3, 3, 3), 1), [_data((2, 3, 3, 3))]),
]
CALL_IDS = [c[0] for c in CALLS]


# Layout transforms: the same values, a different memory layout.
def fortran(a):
    return np.asfortranarray(a)


def negative_strides(a):
    return np.flip(np.ascontiguousarray(np.flip(a)))


def strided_view(a):
    every_other = tuple(slice(1, None, 2) for _ in a.shape)
    big = np.zeros(tuple(2 * s + 1 for s in a.shape), dtype=a.dtype)
    big[every_other] = a
    return big[every_other]


def transposed_memory(a):
    """C order with the axes of the memory reversed (a transpose of a transpose's copy)."""
    return np.ascontiguousarray(a.T).T


def read_only(a):
    c = a.copy()
    c.flags.writeable = False
    return c


def byte_swapped(a):
    return a.astype(a.dtype.newbyteorder())


def float32(a):
    return a.astype(np.float32) if a.dtype.kind == "f" else a


LAYOUTS = [fortran, negative_strides, strided_view, transposed_memory, read_only, byte_swapped]


def _results(out):
    return list(out) if isinstance(out, tuple) else [out]


def _as_computed(arrays):
    """The C-contiguous copies the results must equal."""
    return [np.ascontiguousarray(a) for a in arrays]


@pytest.fixture(autouse=True)
def _on_each_backend(backend):
    with fc.use_backend(backend):
        yield


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, fn, arrays", CALLS, ids=CALL_IDS)
def test_layout_gives_the_same_result(name, fn, arrays, dtype, layout):
    arrays = [float32(a) if dtype == np.float32 else a for a in arrays]
    expected = _results(fn(*_as_computed(arrays)))
    # Every input in the layout at once, then each input alone.
    variants = [[layout(a) for a in arrays]]
    if len(arrays) > 1:
        variants += [[layout(a) if k == j else a for k, a in enumerate(arrays)] for j in range(len(arrays))]
    for inputs in variants:
        got = _results(fn(*inputs))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype and g.shape == e.shape
            np.testing.assert_array_equal(g, e)  # the kernels see the same data: bitwise equal


@pytest.mark.parametrize("name, fn, arrays", CALLS, ids=CALL_IDS)
def test_zero_stride_inputs(name, fn, arrays):
    """Broadcast (zero-stride, read-only) arrays behave like their materialised copies."""
    constant = [np.broadcast_to(a.flat[0], a.shape) for a in arrays]
    expected = _results(fn(*[np.array(a) for a in constant]))
    for g, e in zip(_results(fn(*constant)), expected):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("layout", [lambda a: a, fortran, negative_strides, strided_view])
@pytest.mark.parametrize("name, fn, arrays", CALLS, ids=CALL_IDS)
def test_inputs_are_never_modified_and_results_are_owned(name, fn, arrays, layout):
    inputs = [layout(a.copy()) for a in arrays]
    snapshots = [a.copy() for a in inputs]
    results = _results(fn(*inputs))
    for a, snapshot in zip(inputs, snapshots):
        np.testing.assert_array_equal(a, snapshot)
    for k, r in enumerate(results):
        assert isinstance(r, np.ndarray) and type(r) is np.ndarray
        assert r.flags.c_contiguous and r.flags.writeable
        for a in inputs:
            assert not np.shares_memory(r, a), f"result {k} of {name} shares memory with an input"
        for other in results[k + 1:]:
            assert not np.shares_memory(r, other), f"two results of {name} share memory"
    # Owned: writing into a result changes no input and no later call's result.
    before = [r.copy() for r in results]
    again = _results(fn(*inputs))
    for r in results:
        r[...] = 7
    for a, snapshot in zip(inputs, snapshots):
        np.testing.assert_array_equal(a, snapshot)
    for r2, b in zip(again, before):
        np.testing.assert_array_equal(r2, b)


@pytest.mark.parametrize("name, fn, arrays", CALLS, ids=CALL_IDS)
def test_results_are_not_reused_workspaces(name, fn, arrays):
    """A later call (on other data) must not change an earlier call's result."""
    first = _results(fn(*arrays))
    kept = [r.copy() for r in first]
    other = [a * 2 + 1 if a.dtype.kind == "f" else a[..., ::-1].copy() for a in arrays]
    _results(fn(*other))
    for r, k in zip(first, kept):
        np.testing.assert_array_equal(r, k)


# ----------------------------------------------------------------------------------------------
# Empty batch
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_zero(dtype):
    x = np.zeros((0, 3, 7, 6), dtype=dtype)
    w = np.ones((4, 3, 3, 2), dtype=dtype)
    b = np.ones(4, dtype=dtype)

    def check(result, shape, zero=True):
        assert isinstance(result, np.ndarray) and result.shape == shape
        assert result.flags.c_contiguous and result.flags.writeable
        if zero:
            assert not result.any()

    y = fc.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2))
    check(y, (0, 4, 4, 6))
    assert y.dtype == dtype
    dx, dw, db = fc.conv2d_backward(np.zeros((0, 4, 4, 6), dtype), x, w, (2, 1), 1, (1, 2))
    check(dx, x.shape)
    check(dw, w.shape)  # no image contributes: the weight gradient is exactly zero
    check(db, (4,))
    assert dx.dtype == dw.dtype == db.dtype == dtype
    assert not np.shares_memory(dx, x) and not np.shares_memory(dw, w)

    check(fc.conv1d(x[:, :, 0], w[:, :, 0], b, padding=1), (0, 4, 7))
    dx1, dw1, db1 = fc.conv1d_backward(np.zeros((0, 4, 5)), x[:, :, 0], w[:, :, 0])
    check(dx1, (0, 3, 6)); check(dw1, (4, 3, 2)); check(db1, (4,))

    cols = fc.im2col(x, (3, 2), padding=1)
    check(cols, (0, 18, 7 * 7))
    assert cols.dtype == dtype
    check(fc.col2im(np.zeros((0, 18, 49), dtype), (0, 3, 7, 6), (3, 2), padding=1), (0, 3, 7, 6))

    y, idx = fc.max_pool2d(x, 3, 2, 1)
    check(y, (0, 3, 4, 3))
    check(idx, (0, 3, 4, 3))
    assert y.dtype == dtype and idx.dtype == np.int64
    check(fc.max_pool2d_backward(np.zeros((0, 3, 4, 3), dtype), idx, x.shape), x.shape)
    check(fc.avg_pool2d(x, 2), (0, 3, 3, 3))
    check(fc.avg_pool2d_backward(np.zeros((0, 3, 3, 3), dtype), x.shape, 2), x.shape)
