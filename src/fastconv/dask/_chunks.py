"""Running an in-memory fastconv function chunk by chunk over dask arrays chunked along the batch.

Three rules make the dask functions equal to the in-memory ones:

* Arguments are checked eagerly, by the in-memory function itself: it is called once on an
  empty batch of the same shapes and dtypes (every check but the batch size depends only on
  those), which also gives the shape and dtype of every result without computing anything.
* Each batch chunk is one task that calls the in-memory function on that chunk, so per-image
  results (y, dx) are the in-memory function's own values.
* Results that are sums over the batch (dw, db) are summed over the chunks' partial sums by
  dask's tree reduction with ``split_every=2``: level by level, neighbours in chunk order are
  added, ``(p0 + p1), (p2 + p3), ...``, and an odd last one moves up a level as it is. The
  tree's shape depends only on the number of chunks, never on the scheduler, the number of
  workers or the order in which tasks finish, so these sums are bitwise reproducible.
"""

import math
import numbers
import operator
from functools import partial

import dask
import dask.array as da
import numpy as np

import fastconv

# Chunk sums are added two at a time: the order is then fixed by the chunking alone.
SPLIT_EVERY = 2


class Batched:
    """Marks an argument that is a dask array chunked along the batch (axis 0)."""

    def __init__(self, name, array):
        self.name = name
        self.array = array


class Whole:
    """Marks an argument that every chunk receives whole (weights, bias): a NumPy array (or
    array-like) embedded once in the graph, or a dask array brought into one chunk."""

    def __init__(self, value):
        self.value = value

    def probe_value(self):
        if isinstance(self.value, da.Array):
            # Shape and dtype without memory: the in-memory checks look at nothing else.
            return np.broadcast_to(np.zeros((), dtype=self.value.dtype), self.value.shape)
        return self.value

    def graph_value(self):
        """A Delayed for the whole value: one key in the graph that every chunk's task reads."""
        if isinstance(self.value, da.Array):
            single = self.value if self.value.npartitions == 1 else self.value.rechunk(self.value.shape)
            return single.to_delayed().ravel()[0]
        return dask.delayed(self.value, pure=True, traverse=False)


class BatchShape:
    """Marks an ``input_shape`` argument: ``(N,) + rest``, where each chunk gets its own N."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.rest = self.shape[1:]


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"a NumPy array of shape {value.shape}"
    return f"{type(value).__name__}"


def _check_known_chunks(fname, name, value):
    if any(math.isnan(c) for sizes in value.chunks for c in sizes):
        raise ValueError(
            f"{fname}: {name} has unknown chunk sizes (chunks={value.chunks}); call "
            f"{name}.compute_chunk_sizes() first, fastconv.dask checks shapes before computing"
        )


def whole(fname, name, value):
    """``value`` (weights, bias, or None) as a :class:`Whole` argument; a dask array must have
    known chunk sizes (its shape is checked at once)."""
    if isinstance(value, da.Array):
        _check_known_chunks(fname, name, value)
    return Whole(value)


def batched(fname, name, value):
    """``value`` as a :class:`Batched` argument, after checking that it is a dask array whose
    only chunked axis is the batch (axis 0) and whose chunk sizes are known."""
    if not isinstance(value, da.Array):
        in_memory = f"fastconv.{fname} takes in-memory arrays; " if hasattr(fastconv, fname) else ""
        raise TypeError(
            f"{fname}: {name} must be a dask array chunked along the batch (axis 0), got "
            f"{_describe(value)} ({in_memory}dask.array.from_array({name}, chunks=(n, -1, ...)) "
            f"makes chunks of n images)"
        )
    if value.ndim == 0:
        raise ValueError(f"{fname}: {name} must have a batch axis (axis 0), got a 0-d dask array")
    _check_known_chunks(fname, name, value)
    split = [axis for axis in range(1, value.ndim) if len(value.chunks[axis]) > 1]
    if split:
        merge = ", ".join(f"{axis}: -1" for axis in split)
        raise ValueError(
            f"{fname}: {name} must be chunked along the batch (axis 0) only, but it is also "
            f"chunked along axis {', '.join(map(str, split))} (chunks={value.chunks}); each task "
            f"needs whole images: rechunk it with {name}.rechunk({{{merge}}})"
        )
    return Batched(name, value)


def same_batch_chunks(fname, named):
    """Every batched argument must have the first one's batch size and batch chunks."""
    (first_name, first), *others = named
    for name, arg in others:
        if arg.array.shape[0] != first.array.shape[0]:
            raise ValueError(
                f"{fname}: {name} has a batch of {arg.array.shape[0]} but {first_name} has "
                f"{first.array.shape[0]} (shapes {arg.array.shape} and {first.array.shape})"
            )
        if arg.array.chunks[0] != first.array.chunks[0]:
            raise ValueError(
                f"{fname}: {name} and {first_name} must have the same batch chunks, got "
                f"{arg.array.chunks[0]} and {first.array.chunks[0]}; rechunk one of them, e.g. "
                f"{name}.rechunk({{0: {first_name}.chunks[0]}})"
            )


def batch_shape(fname, input_shape, batch, batch_name):
    """``input_shape`` as a :class:`BatchShape`, after checking its batch entry against the
    ``batch`` images of argument ``batch_name`` (the rest is checked by the in-memory function)."""
    if isinstance(input_shape, np.ndarray) and input_shape.ndim == 1:
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise ValueError(
            f"{fname}: input_shape must be a sequence of ints that starts with the batch size, "
            f"got {input_shape!r}"
        )
    first = input_shape[0]
    if (isinstance(first, (bool, np.bool_)) or not isinstance(first, (numbers.Integral, np.integer))
            or first != batch):
        raise ValueError(
            f"{fname}: input_shape must start with {batch_name}'s batch size {batch}, "
            f"got input_shape={tuple(input_shape)!r}"
        )
    return BatchShape(input_shape)


class ChunkIndex:
    """Marks an argument that receives the chunk's position along the batch (0, 1, ...)."""


def _empty_batch(array):
    return np.empty((0,) + array.shape[1:], dtype=array.dtype)


def check_on_empty_batch(fname, function, args, kwargs):
    """Call ``function`` on an empty batch of the arguments' shapes: the in-memory checks, and
    the results' shapes and dtypes without computing anything. Returns a tuple of results."""
    probe_args = []
    for arg in args:
        if isinstance(arg, Batched):
            probe_args.append(_empty_batch(arg.array))
        elif isinstance(arg, Whole):
            probe_args.append(arg.probe_value())
        elif isinstance(arg, BatchShape):
            probe_args.append((0,) + arg.rest)
        elif isinstance(arg, ChunkIndex):
            probe_args.append(0)
        else:
            probe_args.append(arg)
    try:
        result = function(*probe_args, **kwargs)
    except (TypeError, ValueError) as exc:
        # A message that shows an argument's shape shows it with N = 0: say so.
        text = str(exc)
        shown = [
            f"{arg.name}.shape={arg.array.shape}" for arg, probe in zip(args, probe_args)
            if isinstance(arg, Batched) and str(probe.shape) in text
        ] + [
            f"input_shape={arg.shape}" for arg, probe in zip(args, probe_args)
            if isinstance(arg, BatchShape) and str(probe) in text
        ]
        if not shown or type(exc) not in (TypeError, ValueError):
            raise
        raise type(exc)(
            f"{text} [checked on an empty batch of the same shapes, so N shows as 0; "
            f"{', '.join(shown)}]"
        ) from None
    return result if isinstance(result, tuple) else (result,)


def _call_on_chunk(function, template, kwargs, *inputs):
    """The task of one chunk: rebuild ``function``'s arguments and call it.

    ``template`` holds one (role, value) per positional argument: ("batch", k) for the chunk
    of a batched array that is the k-th task input, ("input", k) for a whole argument,
    ("chunk", k) for the chunk's position (a one-element block of an arange), ("shape", rest)
    for an input_shape completed with the chunk's batch size, ("value", v) for a constant.
    Returns a tuple of results.
    """
    batch = next(inputs[k].shape[0] for role, k in template if role == "batch")
    args = []
    for role, value in template:
        if role in ("batch", "input"):
            args.append(inputs[value])
        elif role == "chunk":
            args.append(int(inputs[value][0]))
        elif role == "shape":
            args.append((batch,) + value)
        else:
            args.append(value)
    result = function(*args, **kwargs)
    return result if isinstance(result, tuple) else (result,)


def _with_chunk_axis(index, parts):
    """Result ``index`` of a chunk with a leading axis of length 1 (one entry per chunk)."""
    return np.asarray(parts[index])[None]


def map_batches(fname, function, args, kwargs, summed=(), per_chunk=()):
    """Apply the in-memory ``function`` to every batch chunk of its batched arguments, lazily.

    Parameters
    ----------
    fname : str
        The public name, for error messages and task names.
    function : callable
        An in-memory fastconv function (``fastconv.conv2d``, ...), or any function of a
        chunk that handles an empty batch.
    args : list
        ``function``'s positional arguments, each a :class:`Batched`, :class:`Whole`,
        :class:`BatchShape` or :class:`ChunkIndex`, or a constant passed to every chunk as it
        is. At least one is Batched, and all Batched ones have the same batch chunks (checked
        by :func:`same_batch_chunks`).
    kwargs : dict
        Keyword arguments passed to every call as they are.
    summed : sequence of int
        Indices of the results that are sums over the batch (dw, db): they are summed over the
        chunks in the fixed order of the module docstring and returned as single-chunk arrays.
    per_chunk : sequence of int
        Indices of the results that are one value per chunk: stacked along a new leading axis
        with one entry per chunk (chunks of 1).
        Every other result is per image and keeps the batch chunks.

    Returns
    -------
    dask.array.Array or tuple of them, as ``function`` returns one array or a tuple.
    """
    probes = check_on_empty_batch(fname, function, args, kwargs)
    batch_chunks = next(arg.array.chunks[0] for arg in args if isinstance(arg, Batched))

    # Task inputs: batch chunks of each Batched argument (its other axes are single chunks,
    # contracted away: the task gets the chunk itself), one Delayed per Whole argument, and
    # an arange with one block per chunk for ChunkIndex. Blocks are matched by position along
    # the batch (align_arrays=False: the arange's chunks are not the images' chunks, and the
    # images' chunks were checked to agree).
    template, inputs = [], []
    for position, arg in enumerate(args):
        if isinstance(arg, Batched):
            template.append(("batch", len(inputs)))
            index = ("batch",) + tuple(f"arg{position}.{axis}" for axis in range(1, arg.array.ndim))
            inputs.append((arg.array, index))
        elif isinstance(arg, Whole) and arg.value is not None:
            template.append(("input", len(inputs)))
            inputs.append((arg.graph_value(), None))
        elif isinstance(arg, Whole):
            template.append(("value", None))
        elif isinstance(arg, BatchShape):
            template.append(("shape", arg.rest))
        elif isinstance(arg, ChunkIndex):
            template.append(("chunk", len(inputs)))
            inputs.append((da.arange(len(batch_chunks), chunks=1), ("batch",)))
        else:
            template.append(("value", arg))
    task = partial(_call_on_chunk, function, tuple(template), dict(kwargs))
    pairs = [item for pair in inputs for item in pair]
    parts = da.blockwise(
        task, ("batch",), *pairs, concatenate=True, align_arrays=False,
        adjust_chunks={"batch": batch_chunks}, dtype=object, meta=np.empty((0,), dtype=object),
        token=f"fastconv-{fname}",
    )

    results = []
    for index, probe in enumerate(probes):
        probe = np.asarray(probe)
        if index in summed or index in per_chunk:
            axes = tuple(f"out{index}.{axis}" for axis in range(probe.ndim))
            stacked = da.blockwise(
                partial(_with_chunk_axis, index), ("batch",) + axes, parts, ("batch",),
                new_axes=dict(zip(axes, probe.shape)), adjust_chunks={"batch": 1},
                dtype=probe.dtype, meta=np.empty((0,) * (probe.ndim + 1), dtype=probe.dtype),
                token=f"fastconv-{fname}-per-chunk",
            )
            if index in summed:
                stacked = stacked.sum(axis=0, split_every=SPLIT_EVERY, dtype=probe.dtype)
            results.append(stacked)
        else:
            axes = tuple(f"out{index}.{axis}" for axis in range(1, probe.ndim))
            results.append(da.blockwise(
                operator.itemgetter(index), ("batch",) + axes, parts, ("batch",),
                new_axes=dict(zip(axes, probe.shape[1:])), dtype=probe.dtype,
                meta=np.empty((0,) * probe.ndim, dtype=probe.dtype), token=f"fastconv-{fname}-result",
            ))
    return results[0] if len(results) == 1 else tuple(results)
