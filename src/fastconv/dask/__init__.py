"""fastconv beyond one machine: the functions on dask arrays, and data-parallel training.

Needs dask (``pip install "fastconv[dask]"``, which also installs dask.distributed). Image
arguments are dask arrays chunked along the batch axis only; every function checks its
arguments at once, with the in-memory function's own checks, and returns lazy dask arrays with
the same batch chunks. Nothing is computed until asked (``.compute()``, ``dask.compute``,
``da.store``, ``.to_zarr``), on whatever scheduler dask uses: threads by default, processes,
or a dask.distributed cluster::

    import dask
    import dask.array as da
    import fastconv.dask as fcd
    from dask.distributed import Client

    client = Client("tcp://scheduler-address:8786")   # or Client() for a local cluster
    x = da.from_zarr("images.zarr")                     # (N, C, H, W), chunks (n, C, H, W)
    y = fcd.conv2d(x, w, b, padding=1)                  # lazy; w, b: NumPy arrays
    dx, dw, db = fcd.conv2d_backward(dout, x, w, padding=1)
    dx, dw, db = dask.compute(dx, dw, db)               # one backward pass per chunk

Each chunk's per-image results (``y``, ``dx``, pooling, im2col) are those of the in-memory
function called on that chunk, bit for bit. (The in-memory convolution kernels choose how to
split their work from the batch size, so the same images in one whole-batch call can differ
in the last bits.) Sums over the batch (``dw``, ``db``) are the chunks' sums added in a fixed
order that depends only on the chunking (neighbours in chunk order, two at a time, level by
level: dask's tree reduction with ``split_every=2``), so they are bitwise identical whatever
the scheduler, however many workers run them, and when a worker dies and dask reruns its
tasks. An array chunked along another axis than the batch is refused with the ``rechunk`` call
that fixes it: rechunking moves data, which fastconv.dask leaves to the caller to decide.

:class:`DataParallel` trains a :mod:`fastconv.nn` model on batches held as dask arrays: every
chunk of a batch gets a replica of the model, gradients are reduced in the same fixed order
into the model's own ``grads``, and the caller's optimizer steps as usual.
"""

try:
    import dask.array  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'fastconv.dask needs dask, which is an optional dependency: pip install "fastconv[dask]"'
        f" ({exc})"
    ) from exc

from fastconv.dask._functions import (
    avg_pool2d,
    avg_pool2d_backward,
    col2im,
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    im2col,
    max_pool2d,
    max_pool2d_backward,
)
from fastconv.dask._parallel import DataParallel

__all__ = [
    "conv2d", "conv2d_backward", "conv1d", "conv1d_backward",
    "im2col", "col2im",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "DataParallel",
]
