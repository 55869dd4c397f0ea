"""The Layer base class: parameters, gradients, train/eval mode, state saving.

A layer owns its parameter arrays (``params``) and gradient arrays of the same shapes
(``grads``, same keys). ``backward`` adds into ``grads`` so gradients accumulate over calls
until ``zero_grad`` resets them; both happen in place, so an optimizer that holds the arrays
from ``parameters()`` always sees the current values. ``buffers`` holds state that is saved
but not trained (BatchNorm's running statistics).
"""

import numbers
import os

import numpy as np


class BackwardBeforeForwardError(RuntimeError, ValueError):
    """``backward`` was called on a layer whose ``forward`` has not run yet.

    A subclass of both RuntimeError (what PyTorch raises for a missing graph) and ValueError
    (a call made with the layer in the wrong state).
    """


def check_dtype(owner, dtype):
    """The layer's floating dtype: float32 or float64 (anything else is a TypeError)."""
    try:
        result = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {dtype!r}") from None
    if result not in (np.float32, np.float64):
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {result}")
    return result


def as_generator(owner, rng):
    """A numpy Generator from None (fresh entropy), a seed, or an existing Generator (shared)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, np.random.SeedSequence) or (
        isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, (bool, np.bool_))
    ):
        try:
            return np.random.default_rng(rng)
        except ValueError as exc:  # negative seed
            raise ValueError(f"{owner}: rng seed must be a non-negative int, got {rng!r} ({exc})") from None
    raise TypeError(
        f"{owner}: rng must be None, an int seed or a numpy.random.Generator, "
        f"got {type(rng).__name__}"
    )


def positive_int(owner, name, value):
    """value as a Python int >= 1 (bools and floats are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{owner}: {name} must be a positive int, got {value!r} (type {type(value).__name__})")
    if value < 1:
        raise ValueError(f"{owner}: {name} must be >= 1, got {value}")
    return int(value)


def kaiming_uniform(rng, shape, fan_in, dtype):
    """PyTorch's default init for conv/linear weights and biases.

    ``kaiming_uniform_(a=sqrt(5))`` has bound gain * sqrt(3 / fan_in) with
    gain = sqrt(2 / (1 + a**2)) = sqrt(1/3), i.e. exactly 1/sqrt(fan_in) -- the same bound
    PyTorch uses for the bias.
    """
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Layer:
    """Base class of every layer. Subclasses implement ``forward`` and ``backward``.

    Parameters
    ----------
    dtype : float32 or float64
        The dtype of the parameters and of the computation; inputs are converted to it.
    rng : None, int or numpy.random.Generator
        Source of randomness for initialisation (and for Dropout's masks).
    """

    # True where forward returns a new array that the layer keeps no reference to, and
    # backward a new dx: a Sequential may then let the ReLU that follows work in place on it.
    _returns_private = False

    def __init__(self, *, dtype=np.float32, rng=None):
        name = type(self).__name__
        self.dtype = check_dtype(name, dtype)
        self.rng = as_generator(name, rng)
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.training = True
        self._cache = None

    # -- parameters ------------------------------------------------------------------------

    def _add_param(self, name, value):
        self.params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self.grads[name] = np.zeros_like(self.params[name])

    def parameters(self):
        """List of ``(name, param, grad)`` triples of the arrays this layer owns."""
        return [(name, self.params[name], self.grads[name]) for name in self.params]

    def zero_grad(self):
        """Reset every gradient to zero, in place."""
        for grad in self.grads.values():
            grad[...] = 0

    def train(self, mode=True):
        """Switch to training mode (or evaluation mode with ``mode=False``); returns self."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Switch to evaluation mode; returns self."""
        return self.train(False)

    def _generators(self):
        """The random generators this layer draws from (gradcheck replays them)."""
        return [self.rng]

    # -- forward / backward ----------------------------------------------------------------

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def _input(self, x, ndims=None):
        """x as a C-contiguous array of the layer's dtype, checking its number of dimensions."""
        name = type(self).__name__
        if isinstance(x, np.ndarray):
            array = x
        else:
            try:
                array = np.asarray(x)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name}.forward: x must be array-like, got {type(x).__name__} ({exc})") from None
        if array.dtype.kind not in "fiub":
            raise TypeError(f"{name}.forward: x must have a real numeric dtype, got {array.dtype}")
        if ndims is not None and array.ndim not in ndims:
            expected = " or ".join(f"{n}-D" for n in ndims)
            raise ValueError(f"{name}.forward: x must be {expected}, got shape {array.shape}")
        return np.ascontiguousarray(array, dtype=self.dtype)

    def _need_cache(self):
        if self._cache is None:
            raise BackwardBeforeForwardError(
                f"{type(self).__name__}.backward called before forward: there is nothing to "
                "differentiate yet"
            )
        return self._cache

    def _dout(self, dout, shape):
        """dout as an array of the layer's dtype with the forward output's shape."""
        name = type(self).__name__
        try:
            array = np.asarray(dout)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}.backward: dout must be array-like ({exc})") from None
        if array.dtype.kind not in "fiub":
            raise TypeError(f"{name}.backward: dout must have a real numeric dtype, got {array.dtype}")
        if array.shape != tuple(shape):
            raise ValueError(
                f"{name}.backward: dout must have the forward output's shape {tuple(shape)}, "
                f"got {array.shape}"
            )
        return np.ascontiguousarray(array, dtype=self.dtype)

    # -- state -----------------------------------------------------------------------------

    def state_dict(self):
        """Name -> array of every parameter and buffer (the arrays themselves, not copies)."""
        state = dict(self.params)
        state.update(self.buffers)
        return state

    def load_state_dict(self, state):
        """Copy arrays into this layer's parameters and buffers, in place.

        The keys must be exactly those of ``state_dict()`` and the shapes must match; nothing
        is modified unless everything matches.
        """
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: keys do not match; "
                f"missing {missing}, unexpected {unexpected}"
            )
        converted = {}
        for key, target in own.items():
            value = np.asarray(state[key])
            if value.shape != target.shape:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: {key!r} has shape {value.shape}, "
                    f"expected {target.shape}"
                )
            if value.dtype.kind not in "fiub":
                raise TypeError(
                    f"{type(self).__name__}.load_state_dict: {key!r} has dtype {value.dtype}, "
                    "expected a real numeric array"
                )
            converted[key] = value
        for key, value in converted.items():
            own[key][...] = value

    def save(self, path):
        """Save parameters and buffers to a ``.npz`` file (plain arrays, no pickling)."""
        np.savez(path, **{key: np.asarray(value) for key, value in self.state_dict().items()})

    def load(self, path):
        """Load parameters and buffers saved by :meth:`save`, in place; never unpickles.

        Raises ValueError when the file is not an ``.npz`` archive of plain arrays or when its
        keys or shapes do not match this model's; the model is then left unchanged.
        """
        name = type(self).__name__
        if isinstance(path, (str, os.PathLike)) and not os.path.exists(path) and os.path.exists(str(path) + ".npz"):
            path = str(path) + ".npz"  # np.savez appended the extension
        try:
            archive = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise ValueError(f"{name}.load: {path!r} is not a readable .npz file ({exc})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{name}.load: {path!r} holds a single array, not an .npz archive")
        with archive:
            try:
                state = {key: archive[key] for key in archive.files}
            except (ValueError, OSError, EOFError) as exc:
                raise ValueError(f"{name}.load: cannot read {path!r} without unpickling ({exc})") from None
        self.load_state_dict(state)

    def __repr__(self):
        return f"{type(self).__name__}({self._extra_repr()})"

    def _extra_repr(self):
        return ""
