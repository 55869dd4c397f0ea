"""DataParallel: a fastconv.nn model run and trained over batches held as dask arrays.

The shape is torch.nn.DataParallel's: the caller's process holds the one real model and its
optimizer; each call replicates the model to the chunks of a batch, runs them in parallel, and
gathers the results into the model (outputs for ``forward``; summed gradients into the model's
``grads`` for ``forward_backward``). The optimizer then steps on the caller's side, exactly as
in a single-process loop. Replicas are made afresh from the model for every call, so they
cannot drift apart, and every task is a pure function of its inputs: dask may run it on any
worker, and run it again when a worker dies, without changing the result.

torch's DistributedDataParallel keeps a replica and an optimizer in every process and
all-reduces gradients between them. On dask that state would live in particular worker
processes, which the scheduler neither places work by nor recovers when they die; shipping
the parameters with each batch instead costs the same traffic as DDP's all-reduce (one
model's worth per worker and step) and keeps the guarantee of DDP that matters: the gradient
is the whole batch's, in a fixed order, so every replica computes from identical parameters.
"""

import copy
from functools import partial

import dask
import dask.array as da
import numpy as np

from fastconv.dask._chunks import (
    Batched, ChunkIndex, Whole, batched, check_on_empty_batch, map_batches, same_batch_chunks,
)


class _Packing:
    """How named arrays (gradients, buffers) pack into one flat vector per dtype.

    Packing keeps the number of tasks per step independent of the number of parameters: one
    fixed-order sum over chunks per dtype instead of one per parameter.
    """

    def __init__(self, named_arrays):
        self.groups = {}  # dtype -> [(name, shape, start, stop)]
        for name, array in named_arrays:
            group = self.groups.setdefault(array.dtype, [])
            start = group[-1][3] if group else 0
            group.append((name, array.shape, start, start + array.size))

    def pack(self, arrays):
        """One flat vector per dtype of ``arrays[name]`` for every name, in order."""
        return tuple(
            np.concatenate([np.ravel(arrays[name]) for name, _, _, _ in group])
            for group in self.groups.values()
        )

    def zeros(self):
        return tuple(np.zeros(group[-1][3], dtype=dtype) for dtype, group in self.groups.items())

    def unpack(self, flats):
        """{name: array of its shape} from the flat vectors of :meth:`pack`."""
        return {
            name: flat[start:stop].reshape(shape)
            for flat, group in zip(flats, self.groups.values())
            for name, shape, start, stop in group
        }


def _walk(layer):
    """The layer and every layer inside it (containers list theirs in ``_children``)."""
    yield layer
    for _, child in getattr(layer, "_children", lambda: [])():
        yield from _walk(child)


def _copy_without_caches(model, loss_fn):
    """Deep copies of the model and loss, without what their last forward cached.

    The caches (inputs and activations of the last batch) can be large and are never needed by
    a replica; they are detached while copying and put back at once.
    """
    holders = [obj for obj in [*_walk(model), loss_fn] if getattr(obj, "_cache", None) is not None]
    caches = [obj._cache for obj in holders]
    try:
        for obj in holders:
            obj._cache = None
        return copy.deepcopy((model, loss_fn))
    finally:
        for obj, cache in zip(holders, caches):
            obj._cache = cache


def _generators(model):
    """The model's random generators, each once, in a fixed order (as fastconv.nn.gradcheck)."""
    return list({id(g): g for g in model._generators()}.values())


def _reseed(replica, seeds, chunk):
    """Give chunk ``chunk`` of a call its own random streams: generator ``j`` of the replica is
    seeded with ``SeedSequence([seeds[j], chunk])`` (same bit generator type)."""
    for generator, seed in zip(_generators(replica), seeds):
        bit_generator = type(generator.bit_generator)(np.random.SeedSequence([seed, chunk]))
        generator.bit_generator.state = bit_generator.state


def _forward_chunk(x, model, chunk, *, seeds):
    """A replica's output for one chunk of images."""
    replica = copy.deepcopy(model)
    if x.shape[0] == 0:
        # Only the shape matters, and training-mode batch norm cannot normalise zero images.
        replica.eval()
    _reseed(replica, seeds, chunk)
    return np.asarray(replica.forward(x))


def _gradients_chunk(x, y, model, loss_fn, chunk, *, total, seeds, grads, buffers):
    """One chunk's share of the batch: its packed gradients of the batch's mean loss, its
    loss times its size, and its replica's packed buffers after the forward pass."""
    if x.shape[0] == 0:
        return grads.zeros() + (np.zeros(()),) + buffers.pack(model.buffers)
    replica, loss = copy.deepcopy((model, loss_fn))
    _reseed(replica, seeds, chunk)
    replica.zero_grad()
    chunk_loss = loss.forward(replica.forward(x), y)
    # The chunk's mean-loss gradient weighted by its share of the batch: the gradient of the
    # batch's mean loss is the sum of these over chunks.
    replica.backward(loss.backward() * (x.shape[0] / total))
    named_grads = {name: grad for name, _, grad in replica.parameters()}
    return grads.pack(named_grads) + (np.asarray(chunk_loss * x.shape[0]),) + buffers.pack(replica.buffers)


class DataParallel:
    """Run and train a fastconv.nn model on batches held as dask arrays chunked along the batch.

    Every chunk of a batch is a task that works on its own replica of the model, made from the
    model's current parameters and buffers; the tasks run wherever dask runs them (threads,
    processes, a dask.distributed cluster), and their results are gathered into the model:

    * :meth:`forward` returns the outputs as a lazy dask array with the batch's chunks.
    * :meth:`forward_backward` computes the batch's mean loss and adds its gradient to the
      model's ``grads``, as ``model.backward`` would; the caller's optimizer then steps on the
      model as in any fastconv.nn training loop::

          model = nn.Sequential(...)
          optimizer = nn.Adam(model, lr=1e-3)
          parallel = DataParallel(model, nn.SoftmaxCrossEntropy(), scheduler=client)
          for x, y in batches:             # dask arrays, chunked along the batch
              model.zero_grad()
              loss = parallel.forward_backward(x, y)
              optimizer.step()

    The gradient is exactly that of a single process that, for each chunk in order, runs
    forward and backward on the chunk, weights the chunk's mean-loss gradient (the loss's
    ``dlogits``) by ``n_chunk / n_batch``, and sums the chunks' parameter gradients in the fixed
    order of :func:`fastconv.dask.conv2d_backward` (neighbours in chunk order, two at a time,
    level by level). It is bitwise identical for every scheduler and number of workers, and so
    are the parameters after any number of optimizer steps.

    Parameters
    ----------
    model : fastconv.nn.Layer
        A layer or container (``Sequential``, ``Residual``). It is copied at each call, so its
        later changes never reach a graph that was already built.
    loss_fn : optional
        A loss with ``forward(logits, y) -> float`` (the mean over its rows) and
        ``backward() -> dlogits``, such as ``nn.SoftmaxCrossEntropy()``; needed by
        :meth:`forward_backward` only.
    scheduler : optional
        Where :meth:`forward_backward` computes: passed to ``dask.compute(scheduler=...)``
        ("threads", "processes", "synchronous", or a ``distributed.Client``). None uses dask's
        default, which is the active distributed Client when there is one.

    Notes
    -----
    * Buffers (BatchNorm's running statistics) follow torch's DistributedDataParallel: after
      :meth:`forward_backward` they are those of the replica that ran the first non-empty
      chunk, which started from the model's buffers.
    * Randomness (Dropout): at every call, each of the model's generators draws one seed ``s``
      (advancing the model's own generator), and the replica of chunk ``i`` draws from a
      generator seeded with ``numpy.random.SeedSequence([s, i])``. Chunks draw different masks,
      and a run is reproducible from the model's seed whatever the scheduler.
    * An empty chunk contributes zero gradients (and ``forward`` returns an empty block for it).
    * With the threaded scheduler, several chunks run at once in one process: set
      ``fastconv.set_num_threads(1)`` so their kernels do not oversubscribe the cores (worker
      processes of dask.distributed start with ``OMP_NUM_THREADS=1``).
    """

    def __init__(self, model, loss_fn=None, *, scheduler=None):
        for method in ("forward", "backward", "parameters", "zero_grad", "_generators"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"DataParallel: model must be a fastconv.nn layer or container, got "
                    f"{type(model).__name__}"
                )
        if loss_fn is not None and not (callable(getattr(loss_fn, "forward", None))
                                        and callable(getattr(loss_fn, "backward", None))):
            raise TypeError(
                "DataParallel: loss_fn must have forward(logits, y) and backward() (such as "
                f"fastconv.nn.SoftmaxCrossEntropy()), got {type(loss_fn).__name__}"
            )
        self.model = model
        self.loss_fn = loss_fn
        self.scheduler = scheduler

    def __repr__(self):
        return f"DataParallel({self.model!r}, loss_fn={self.loss_fn!r}, scheduler={self.scheduler!r})"

    def _draw_seeds(self):
        return tuple(int(g.integers(2**63)) for g in _generators(self.model))

    def _check_input(self, fname, model, x):
        """Run the model on an empty batch of x's shape (evaluation mode): the layers' own
        checks of x, at once."""
        check_on_empty_batch(fname, partial(_forward_chunk, seeds=()), [x, Whole(model), ChunkIndex()], {})

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        """The model's outputs on a batch of images, as a lazy dask array.

        Parameters
        ----------
        x : dask.array.Array, shape (N, ...)
            Chunked along the batch only.

        Returns
        -------
        dask.array.Array, shape (N, ...)
            Chunk ``i`` is a replica's ``forward`` of chunk ``i`` of ``x``, in the model's
            current mode (call ``model.eval()`` first for inference). Nothing is computed
            until asked.
        """
        fname = "DataParallel.forward"
        x = batched(fname, "x", x)
        model, _ = _copy_without_caches(self.model, None)
        # The empty-batch call of map_batches runs the model's own checks of x.
        task = partial(_forward_chunk, seeds=self._draw_seeds())
        return map_batches(fname, task, [x, Whole(model), ChunkIndex()], {})

    def forward_backward(self, x, y):
        """Forward and backward over a batch: add the gradient of its mean loss to the model's
        ``grads`` and return the mean loss.

        Parameters
        ----------
        x : dask.array.Array, shape (N, ...)
            Chunked along the batch only; N >= 1.
        y : dask.array.Array or array_like, shape (N, ...)
            Targets for ``loss_fn`` (class labels, or probabilities): a dask array with x's
            batch chunks, or an in-memory array that is split like x.

        Returns
        -------
        float
            The mean loss over the batch (the chunks' losses weighted by their sizes).

        Notes
        -----
        Computes at once, on the DataParallel's scheduler. Gradients are *added* to
        ``model.grads`` (call ``model.zero_grad()`` between steps); the model's buffers are
        replaced (see the class notes); its parameters are not touched.
        """
        fname = "DataParallel.forward_backward"
        if self.loss_fn is None:
            raise ValueError(
                f"{fname}: this DataParallel has no loss_fn; pass one to DataParallel(model, loss_fn)"
            )
        x = batched(fname, "x", x)
        y = self._targets(fname, y, x)
        same_batch_chunks(fname, [("x", x), ("y", y)])
        total = x.array.shape[0]
        if total == 0:
            raise ValueError(
                f"{fname}: x holds no images (shape {x.array.shape}): there is no loss to differentiate"
            )
        model, loss_fn = _copy_without_caches(self.model, self.loss_fn)
        self._check_input(fname, model, x)

        grads = _Packing([(name, grad) for name, _, grad in model.parameters()])
        buffers = _Packing(list(model.buffers.items()))
        task = partial(_gradients_chunk, total=total, seeds=self._draw_seeds(), grads=grads, buffers=buffers)
        n_grads = len(grads.groups)
        results = map_batches(
            fname, task, [x, y, Whole(model), Whole(loss_fn), ChunkIndex()], {},
            summed=tuple(range(n_grads + 1)),
            per_chunk=tuple(range(n_grads + 1, n_grads + 1 + len(buffers.groups))),
        )
        results = results if isinstance(results, tuple) else (results,)
        grad_sums, loss_sum, per_chunk_buffers = results[:n_grads], results[n_grads], results[n_grads + 1:]
        first = next(i for i, size in enumerate(x.array.chunks[0]) if size)
        computed = dask.compute(
            *grad_sums, loss_sum, *(b[first] for b in per_chunk_buffers), scheduler=self.scheduler
        )

        named_grads = {name: grad for name, _, grad in self.model.parameters()}
        for name, value in grads.unpack(computed[:n_grads]).items():
            named_grads[name] += value
        model_buffers = self.model.buffers
        for name, value in buffers.unpack(computed[n_grads + 1:]).items():
            model_buffers[name][...] = value
        return float(computed[n_grads]) / total

    @staticmethod
    def _targets(fname, y, x):
        """y as a batched dask array with x's batch chunks (an in-memory y is split like x)."""
        if isinstance(y, da.Array):
            return batched(fname, "y", y)
        try:
            y = np.asarray(y)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{fname}: y must be array-like or a dask array ({exc})") from None
        if y.ndim == 0 or y.shape[0] != x.array.shape[0]:
            raise ValueError(
                f"{fname}: y must have one target per image of x ({x.array.shape[0]}), got shape {y.shape}"
            )
        return Batched("y", da.from_array(y, chunks=(x.array.chunks[0],) + y.shape[1:]))
