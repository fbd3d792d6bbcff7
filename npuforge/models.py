"""The demo network: a small MLP on the 8x8 digits, post-training int8 quantization, int8 reference.

The float model is trained with scikit-learn on the handwritten digits that ship with it (no
download). :func:`quantize_mlp` turns it into layers in exactly the MAC array's integer format, and
:meth:`QuantizedMLP.forward_int8` runs the whole network through the golden models of
:mod:`npuforge.sim.golden`, so the hardware's activations must equal its output bit for bit.

One quantized dense layer computes, on int8 inputs ``x_q`` of shape (M, K)::

    acc = x_q @ w                                   # int8 x int8 products, exact sum
    y32 = saturate_int32(acc + bias)                # bias: int32 per output channel
    y   = clip(zero_point + rounding_divide_by_pot(srdhm(y32, mult[n]), shift[n]), out_min, out_max)

The real-valued meaning of the integers is the usual affine one: an input ``x_q`` stands for
``in_scale * (x_q - in_zero_point)``, a weight ``w[k, n]`` for ``w_scale[n] * w[k, n]`` (symmetric,
per output channel) and an output ``y`` for ``out_scale * (y - zero_point)``. The array multiplies the
raw int8 inputs, so the input zero point is folded into the bias::

    bias[n] = round(b[n] / (in_scale * w_scale[n])) - in_zero_point * sum_k w[k, n]

and ``mult[n] * 2**-(31 + shift[n])`` approximates ``in_scale * w_scale[n] / out_scale``. A hidden
layer's ReLU is the requantizer's clamp: its output zero point is -128 (the real value 0) and
``out_min`` equals it, so negative values clip to zero and all 256 codes cover ``[0, max]``.

scikit-learn is only needed to load the data and to train (the ``demo`` extra); quantizing, the int8
reference and the ``.npz`` files need NumPy only.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from .sim.golden import RequantParams, mac_array_reference, quantize_multipliers

__all__ = [
    "DIGITS_INPUT_SCALE",
    "DigitsSplit",
    "FloatMLP",
    "QuantLayer",
    "QuantizedMLP",
    "load_digits_split",
    "quantize_mlp",
    "train_digits_mlp",
]

#: The digits' pixels are integers 0..16; the float model sees them divided by 16 (features in [0, 1]).
DIGITS_INPUT_SCALE = 1.0 / 16.0

_I8_MIN, _I8_MAX = -128, 127
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
#: Largest bias magnitude (in accumulator codes) that :func:`quantize_mlp` produces.
_BIAS_LIMIT = 2**20
#: Smallest weight scale :func:`quantize_mlp` uses (keeps scales and multipliers out of denormals).
_MIN_W_SCALE = 2.0**-60
#: Version of the ``.npz`` layout written by :meth:`QuantizedMLP.save_npz` / :meth:`FloatMLP.save_npz`.
_NPZ_VERSION = 1


def _require_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:  # pragma: no cover - the demo extra is installed in the test environment
        raise ImportError(
            "the digits demo needs scikit-learn: install it with `pip install npuforge[demo]`"
        ) from None


def _check_int(value, name, lo, hi):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    return int(value)


def _check_scale(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive finite real number, not {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a positive finite real number, not {value!r}")
    return value


def _frozen_int_array(value, name, shape_desc, ndim, lo, hi, dtype):
    """Validate an integer array (dimensions and value range) and return a read-only copy."""
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array {shape_desc}, not dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be an array {shape_desc}, not an array of shape {arr.shape}")
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        bad = int(arr[(arr < lo) | (arr > hi)].flat[0])
        raise ValueError(f"{name} must hold integers in {lo}..{hi}, not {bad}")
    out = arr.astype(dtype, copy=True)
    out.setflags(write=False)
    return out


def _as_float_matrix(x, name, features):
    """Return ``x`` as a float64 (M, features) array; a single sample of shape (features,) is accepted."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"{name} must be a real-valued array of shape (M, {features}), not dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != features:
        raise ValueError(f"{name} must be an array of shape (M, {features}), not shape {np.shape(x)}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold finite values")
    return arr


# --------------------------------------------------------------------------------------------- data


class DigitsSplit(NamedTuple):
    """A train/test split of scikit-learn's 8x8 handwritten digits.

    Members
    -------
    x_train, x_test : numpy.ndarray
        float64 arrays of shape (n, 64): the pixels, integers 0..16, row-major 8x8.
    y_train, y_test : numpy.ndarray
        int64 arrays of shape (n,): the digit, 0..9.
    """

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def load_digits_split(seed=0, test_size=0.2) -> DigitsSplit:
    """Load the 8x8 digits (1797 images, shipped with scikit-learn) and split them deterministically.

    The split is stratified by class; the default 80/20 gives 1437 training and 360 test images.

    Parameters
    ----------
    seed : int
        Seed of the shuffle, 0..2**32 - 1. The same seed always gives the same split.
    test_size : float
        Fraction of the images in the test split, strictly between 0 and 1 (at least one image of
        each class must land on both sides).

    Returns
    -------
    DigitsSplit
        ``(x_train, x_test, y_train, y_test)``; pixels are the data set's integers 0..16.

    Raises
    ------
    TypeError
        If ``seed`` is not an integer or ``test_size`` not a real number.
    ValueError
        If ``seed`` or ``test_size`` is out of range.
    ImportError
        If scikit-learn is not installed.
    """
    seed = _check_int(seed, "seed", 0, 2**32 - 1)
    if isinstance(test_size, (bool, np.bool_)) or not isinstance(test_size, numbers.Real):
        raise TypeError(f"test_size must be a real number in (0, 1), not {test_size!r}")
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a real number in (0, 1), not {test_size!r}")
    _require_sklearn()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float64)
    y = np.asarray(digits.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=float(test_size), stratify=y, random_state=seed
    )
    return DigitsSplit(x_train, x_test, y_train, y_test)


# ---------------------------------------------------------------------------------------- float MLP


@dataclass(frozen=True, eq=False)
class FloatMLP:
    """A float ReLU multilayer perceptron: the trained network before quantization.

    Layer ``i`` computes ``a[i] = a[i-1] @ weights[i] + biases[i]`` with ``a[-1] = x * input_scale``
    (``x``: raw inputs, e.g. pixels 0..16) and a ReLU after every layer except the last, whose outputs
    are the class logits.

    Parameters
    ----------
    weights : sequence of numpy.ndarray
        One (K, N) float array per layer; consecutive layers must chain (N of one is K of the next).
    biases : sequence of numpy.ndarray
        One (N,) float array per layer.
    input_scale : float
        Factor from raw inputs to the features the first layer sees (1/16 for the digits' pixels).

    Members
    -------
    weights, biases : tuple of numpy.ndarray
        Read-only float64 copies.
    input_scale : float

    Raises
    ------
    TypeError
        If an array is not real-valued.
    ValueError
        If there are no layers, the shapes do not chain, a value is not finite or ``input_scale`` is not
        positive.
    """

    weights: tuple
    biases: tuple
    input_scale: float = DIGITS_INPUT_SCALE

    def __post_init__(self):
        weights, biases = list(self.weights), list(self.biases)
        if not weights:
            raise ValueError("weights must hold at least one layer, not 0")
        if len(biases) != len(weights):
            raise ValueError(f"biases must hold one array per layer ({len(weights)}), not {len(biases)}")
        ws, bs = [], []
        for i, (w, b) in enumerate(zip(weights, biases)):
            w = np.array(w, dtype=np.float64)
            b = np.array(b, dtype=np.float64)
            if w.ndim != 2:
                raise ValueError(f"weights[{i}] must be a 2-D (K, N) array, not shape {w.shape}")
            if b.shape != (w.shape[1],):
                raise ValueError(f"biases[{i}] must have shape ({w.shape[1]},), not {b.shape}")
            if i and w.shape[0] != ws[-1].shape[1]:
                raise ValueError(
                    f"weights[{i}] must have {ws[-1].shape[1]} rows (the outputs of layer {i - 1}), "
                    f"not {w.shape[0]}"
                )
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ValueError(f"weights[{i}] and biases[{i}] must hold finite values")
            w.setflags(write=False)
            b.setflags(write=False)
            ws.append(w)
            bs.append(b)
        object.__setattr__(self, "weights", tuple(ws))
        object.__setattr__(self, "biases", tuple(bs))
        object.__setattr__(self, "input_scale", _check_scale(self.input_scale, "input_scale"))

    @property
    def layer_sizes(self) -> tuple:
        """Widths from input to output, e.g. ``(64, 32, 10)``."""
        return (self.weights[0].shape[0],) + tuple(w.shape[1] for w in self.weights)

    def forward(self, x) -> list:
        """Every layer's float activations (after ReLU for hidden layers; logits last).

        Parameters
        ----------
        x : array_like, shape (M, K0) or (K0,)
            Raw inputs (pixels 0..16 for the digits).

        Returns
        -------
        list of numpy.ndarray
            One float64 (M, N_i) array per layer.

        Raises
        ------
        TypeError, ValueError
            If ``x`` is not a real-valued array of the right width.
        """
        a = _as_float_matrix(x, "x", self.layer_sizes[0]) * self.input_scale
        outs = []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            a = a @ w + b
            if i != last:
                a = np.maximum(a, 0.0)
            outs.append(a)
        return outs

    def predict(self, x) -> np.ndarray:
        """Class indices (argmax of the logits) for raw inputs ``x``, as an int64 array of shape (M,)."""
        return np.argmax(self.forward(x)[-1], axis=1).astype(np.int64)

    def save_npz(self, path) -> None:
        """Write the model to an ``.npz`` file (readable with :meth:`load_npz`)."""
        arrays = {"format_version": np.int64(_NPZ_VERSION), "kind": np.str_("float_mlp"),
                  "num_layers": np.int64(len(self.weights)), "input_scale": np.float64(self.input_scale)}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"layer{i}_w"] = w
            arrays[f"layer{i}_b"] = b
        np.savez(path, **arrays)

    @classmethod
    def load_npz(cls, path) -> FloatMLP:
        """Read a model written by :meth:`save_npz`.

        Raises
        ------
        ValueError
            If the file is not a float MLP of a known format version.
        """
        with np.load(path, allow_pickle=False) as data:
            _check_npz_header(data, "float_mlp", path)
            n = int(data["num_layers"])
            return cls(
                weights=tuple(data[f"layer{i}_w"] for i in range(n)),
                biases=tuple(data[f"layer{i}_b"] for i in range(n)),
                input_scale=float(data["input_scale"]),
            )


def _check_npz_header(data, kind, path):
    if "kind" not in data.files or str(data["kind"]) != kind:
        raise ValueError(f"path must be an .npz file written by save_npz of a {kind}, not {str(path)!r}")
    version = int(data["format_version"])
    if version != _NPZ_VERSION:
        raise ValueError(f"format_version must be {_NPZ_VERSION}, not {version} (in {str(path)!r})")


def train_digits_mlp(hidden=(32,), seed=0, *, split: Optional[DigitsSplit] = None, max_iter=500,
                     alpha=1e-3) -> FloatMLP:
    """Train a ReLU MLP on the digits' training split (64 - hidden... - 10), deterministically.

    scikit-learn's ``MLPClassifier`` (Adam, cross-entropy, L2 penalty ``alpha``) is trained on the
    pixels scaled by :data:`DIGITS_INPUT_SCALE`. With the defaults (64-32-10, ``seed=0``, the default
    split) the float test accuracy is about 0.97. Whether or not the optimizer reaches its tolerance
    within ``max_iter`` epochs, the result is the same for the same arguments on the same machine, so
    scikit-learn's ``ConvergenceWarning`` is silenced.

    Parameters
    ----------
    hidden : sequence of int
        Hidden layer widths, each 1..4096, at least one layer.
    seed : int
        Seed of the weight initialization and of the mini-batch shuffling, 0..2**32 - 1.
    split : DigitsSplit, optional
        Data to train on (its ``x_train``/``y_train``); default :func:`load_digits_split` ``()``.
    max_iter : int
        Maximum number of epochs, 1..100000.
    alpha : float
        L2 penalty, >= 0.

    Returns
    -------
    FloatMLP
        The trained network, ``input_scale = 1/16``.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If an argument is out of range.
    ImportError
        If scikit-learn is not installed.
    """
    if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
        raise TypeError(f"hidden must be a sequence of integers in 1..4096, not {hidden!r}")
    hidden = tuple(hidden)
    if not hidden:
        raise ValueError("hidden must hold at least one layer width, not ()")
    hidden = tuple(_check_int(h, "hidden", 1, 4096) for h in hidden)
    seed = _check_int(seed, "seed", 0, 2**32 - 1)
    max_iter = _check_int(max_iter, "max_iter", 1, 100000)
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number >= 0, not {alpha!r}")
    if not (math.isfinite(float(alpha)) and float(alpha) >= 0.0):
        raise ValueError(f"alpha must be a real number >= 0, not {alpha!r}")
    if split is None:
        split = load_digits_split()
    elif not isinstance(split, DigitsSplit):
        raise TypeError(f"split must be a DigitsSplit or None, not {split!r}")
    _require_sklearn()
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", solver="adam", alpha=float(alpha),
                        max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        # Stopping at max_iter is a deliberate budget, not an error (the test suite turns warnings
        # into errors).
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(np.asarray(split.x_train, dtype=np.float64) * DIGITS_INPUT_SCALE, split.y_train)
    if list(clf.classes_) != list(range(len(clf.classes_))):
        raise ValueError(f"split.y_train must hold the classes 0..n-1, not {list(clf.classes_)}")
    return FloatMLP(weights=tuple(clf.coefs_), biases=tuple(clf.intercepts_),
                    input_scale=DIGITS_INPUT_SCALE)


# ------------------------------------------------------------------------------------ quantized MLP


@dataclass(frozen=True, eq=False)
class QuantLayer:
    """One dense layer in the MAC array's integer format (see the module docstring for the equations).

    Parameters
    ----------
    w : array_like of int, shape (K, N)
        int8 weights, -128..127 (the quantizer produces -127..127, symmetric).
    bias : array_like of int, shape (N,)
        int32 biases with the input zero point already folded in.
    mult : array_like of int, shape (N,)
        Q31 requantization multipliers, 0..2**31 - 1.
    shift : array_like of int, shape (N,)
        Right shifts, 0..31.
    zero_point : int
        Output zero point, -128..127.
    out_min, out_max : int
        Output clamp, -128..127, ``out_min <= out_max`` (a ReLU layer has ``out_min == zero_point``).
    in_scale : float
        Real value of one input step.
    in_zero_point : int
        Input zero point, -128..127 (folded into ``bias``; kept for reference).
    out_scale : float
        Real value of one output step.
    relu : bool
        Whether the layer ends in a ReLU (done by the clamp).

    Members
    -------
    The parameters, the arrays as read-only copies: ``w`` int8, ``bias`` int32, ``mult`` and ``shift``
    int64.

    Raises
    ------
    TypeError
        If a field has the wrong type.
    ValueError
        If a field is out of range or the shapes disagree (the message names the field).
    """

    w: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    zero_point: int
    out_min: int
    out_max: int
    in_scale: float
    in_zero_point: int
    out_scale: float
    relu: bool

    def __post_init__(self):
        w = _frozen_int_array(self.w, "w", "of shape (K, N)", 2, _I8_MIN, _I8_MAX, np.int8)
        n = w.shape[1]
        object.__setattr__(self, "w", w)
        for name, lo, hi, dtype in (("bias", _I32_MIN, _I32_MAX, np.int32), ("mult", 0, _I32_MAX, np.int64),
                                    ("shift", 0, 31, np.int64)):
            arr = _frozen_int_array(getattr(self, name), name, f"of shape ({n},)", 1, lo, hi, dtype)
            if arr.shape != (n,):
                raise ValueError(
                    f"{name} must have shape ({n},) (one entry per column of w), not {arr.shape}"
                )
            object.__setattr__(self, name, arr)
        for name in ("zero_point", "out_min", "out_max", "in_zero_point"):
            object.__setattr__(self, name, _check_int(getattr(self, name), name, _I8_MIN, _I8_MAX))
        if self.out_min > self.out_max:
            raise ValueError(
                f"out_min must be <= out_max, not out_min={self.out_min}, out_max={self.out_max}"
            )
        for name in ("in_scale", "out_scale"):
            object.__setattr__(self, name, _check_scale(getattr(self, name), name))
        if not isinstance(self.relu, (bool, np.bool_)):
            raise TypeError(f"relu must be a bool, not {self.relu!r}")
        object.__setattr__(self, "relu", bool(self.relu))

    @property
    def in_features(self) -> int:
        """K, the number of inputs."""
        return self.w.shape[0]

    @property
    def out_features(self) -> int:
        """N, the number of outputs."""
        return self.w.shape[1]

    @property
    def requant(self) -> RequantParams:
        """The output stage's parameters, as the golden model and the MAC array take them."""
        return RequantParams(mult=tuple(int(v) for v in self.mult), shift=tuple(int(v) for v in self.shift),
                             zero_point=self.zero_point, out_min=self.out_min, out_max=self.out_max)

    def forward_int8(self, x_q, *, acc_bits=None) -> np.ndarray:
        """This layer on int8 inputs through :func:`npuforge.sim.golden.mac_array_reference`.

        Parameters
        ----------
        x_q : array_like of int, shape (M, K)
            int8 inputs, -128..127.
        acc_bits : int, optional
            Width of a saturating accumulator (as the hardware's), ``None`` for an exact sum.

        Returns
        -------
        numpy.ndarray
            int8 array of shape (M, N).

        Raises
        ------
        TypeError, ValueError
            If ``x_q`` is not an int8-valued integer array of shape (M, K).
        """
        x_q = _frozen_int_array(x_q, "x_q", f"of shape (M, {self.in_features})", 2, _I8_MIN, _I8_MAX, np.int8)
        if x_q.shape[1] != self.in_features:
            raise ValueError(f"x_q must be an array of shape (M, {self.in_features}), not shape {x_q.shape}")
        y = mac_array_reference(x_q, self.w, self.bias, self.requant, acc_bits=acc_bits)
        return y.astype(np.int8)


_LAYER_FIELDS = ("w", "bias", "mult", "shift", "zero_point", "out_min", "out_max", "in_scale",
                 "in_zero_point", "out_scale", "relu")


@dataclass(frozen=True, eq=False)
class QuantizedMLP:
    """An int8 MLP for the MAC array, and its bit-exact NumPy reference.

    Parameters
    ----------
    layers : sequence of QuantLayer
        The layers in order; each one's input must be the previous one's output (same width, scale
        and zero point).
    input_scale : float
        Factor from raw inputs to the first layer's real-valued features (1/16 for the digits), used by
        :meth:`quantize_input`.

    Members
    -------
    layers : tuple of QuantLayer
    input_scale : float

    Raises
    ------
    TypeError
        If a layer is not a :class:`QuantLayer`.
    ValueError
        If there are no layers or consecutive layers do not chain.
    """

    layers: tuple
    input_scale: float = DIGITS_INPUT_SCALE

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers:
            raise ValueError("layers must hold at least one QuantLayer, not 0")
        for i, layer in enumerate(layers):
            if not isinstance(layer, QuantLayer):
                raise TypeError(f"layers[{i}] must be a QuantLayer, not {layer!r}")
            if i:
                prev = layers[i - 1]
                if layer.in_features != prev.out_features:
                    raise ValueError(f"layers[{i}] must have {prev.out_features} inputs (the outputs of "
                                     f"layers[{i - 1}]), not {layer.in_features}")
                if layer.in_zero_point != prev.zero_point or not math.isclose(
                        layer.in_scale, prev.out_scale, rel_tol=1e-12):
                    raise ValueError(f"layers[{i}] must take its input scale and zero point from "
                                     f"layers[{i - 1}]'s output ({prev.out_scale!r}, {prev.zero_point}), not "
                                     f"({layer.in_scale!r}, {layer.in_zero_point})")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "input_scale", _check_scale(self.input_scale, "input_scale"))

    @property
    def layer_sizes(self) -> tuple:
        """Widths from input to output, e.g. ``(64, 32, 10)``."""
        return (self.layers[0].in_features,) + tuple(layer.out_features for layer in self.layers)

    @property
    def macs_per_inference(self) -> int:
        """Multiply-accumulates for one input vector: the sum of K * N over the layers."""
        return sum(layer.in_features * layer.out_features for layer in self.layers)

    def quantize_input(self, x) -> np.ndarray:
        """Quantize raw inputs to the first layer's int8 codes.

        ``x_q = clip(round(x * input_scale / in_scale) + in_zero_point, -128, 127)`` (round half to
        even). For the digits quantized by :func:`quantize_mlp` this is exact: ``x_q`` is the pixel.

        Parameters
        ----------
        x : array_like, shape (M, K0) or (K0,)
            Raw inputs (pixels 0..16 for the digits).

        Returns
        -------
        numpy.ndarray
            int8 array of shape (M, K0).

        Raises
        ------
        TypeError, ValueError
            If ``x`` is not a finite real-valued array of the right width.
        """
        first = self.layers[0]
        x = _as_float_matrix(x, "x", first.in_features)
        q = np.round(x * (self.input_scale / first.in_scale)) + first.in_zero_point
        return np.clip(q, _I8_MIN, _I8_MAX).astype(np.int8)

    def forward_int8(self, x_q, *, acc_bits=None) -> list:
        """Every layer's int8 output, computed with the golden models (the hardware's exact semantics).

        Parameters
        ----------
        x_q : array_like of int, shape (M, K0)
            int8 inputs (see :meth:`quantize_input`).
        acc_bits : int, optional
            Width of a saturating accumulator, ``None`` for an exact sum. An accumulator at least
            ``required_acc_bits(K, 8, True, 8, True)`` wide (22 bits for K = 64) never saturates, so it
            gives the exact result.

        Returns
        -------
        list of numpy.ndarray
            One int8 (M, N_i) array per layer; the last holds the int8 logits.

        Raises
        ------
        TypeError, ValueError
            If ``x_q`` is not an int8-valued integer array of shape (M, K0).
        """
        outs = []
        a = x_q
        for layer in self.layers:
            a = layer.forward_int8(a, acc_bits=acc_bits)
            outs.append(a)
        return outs

    def predict(self, x_q) -> np.ndarray:
        """Class indices (argmax of the int8 logits, first on ties) as an int64 array of shape (M,)."""
        return np.argmax(self.forward_int8(x_q)[-1], axis=1).astype(np.int64)

    def dequantize_output(self, y_q) -> np.ndarray:
        """Real values of the last layer's int8 outputs: ``out_scale * (y_q - zero_point)``."""
        last = self.layers[-1]
        return last.out_scale * (np.asarray(y_q, dtype=np.float64) - last.zero_point)

    def save_npz(self, path) -> None:
        """Write the quantized model to an ``.npz`` file (readable with :meth:`load_npz`).

        The file holds plain arrays (no pickles): ``layer{i}_{field}`` for every :class:`QuantLayer`
        field, plus ``input_scale``, ``num_layers``, ``kind`` and ``format_version``.
        """
        arrays = {"format_version": np.int64(_NPZ_VERSION), "kind": np.str_("quantized_mlp"),
                  "num_layers": np.int64(len(self.layers)), "input_scale": np.float64(self.input_scale)}
        for i, layer in enumerate(self.layers):
            for name in _LAYER_FIELDS:
                arrays[f"layer{i}_{name}"] = np.asarray(getattr(layer, name))
        np.savez(path, **arrays)

    @classmethod
    def load_npz(cls, path) -> QuantizedMLP:
        """Read a model written by :meth:`save_npz`.

        Raises
        ------
        ValueError
            If the file is not a quantized MLP of a known format version, or a field is invalid.
        """
        with np.load(path, allow_pickle=False) as data:
            _check_npz_header(data, "quantized_mlp", path)
            layers = []
            for i in range(int(data["num_layers"])):
                fields = {name: data[f"layer{i}_{name}"] for name in _LAYER_FIELDS}
                for name in ("zero_point", "out_min", "out_max", "in_zero_point"):
                    fields[name] = int(fields[name])
                for name in ("in_scale", "out_scale"):
                    fields[name] = float(fields[name])
                fields["relu"] = bool(fields["relu"])
                layers.append(QuantLayer(**fields))
            return cls(layers=tuple(layers), input_scale=float(data["input_scale"]))


# ------------------------------------------------------------------------------------- quantization


def _input_quantization(x_raw, input_scale):
    """Scale and zero point of the network input, from calibration data."""
    if np.all(x_raw == np.round(x_raw)) and x_raw.min() >= _I8_MIN and x_raw.max() <= _I8_MAX:
        # Integer inputs that fit int8 (the digits' pixels 0..16) are their own codes: no error at all.
        return input_scale, 0
    feats = x_raw * input_scale
    return _asymmetric(float(feats.min()), float(feats.max()))


def _asymmetric(lo, hi):
    """int8 scale and zero point covering [lo, hi] (widened to hold 0, so that 0 is exact)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0.0:
        return 1.0, 0
    scale = (hi - lo) / (_I8_MAX - _I8_MIN)
    zero_point = int(np.clip(np.round(_I8_MIN - lo / scale), _I8_MIN, _I8_MAX))
    return scale, zero_point


def quantize_mlp(float_model, calib_x, *, percentile=99.99) -> QuantizedMLP:
    """Post-training int8 quantization of a :class:`FloatMLP` in the MAC array's format.

    * Weights: symmetric per output channel, ``w_scale[n] = max_k |W[k, n]| / 127``,
      ``w = round(W / w_scale)`` in -127..127. (For a column so small that its bias would exceed
      ``2**20`` codes, typically a dead unit, the scale is raised to ``|b[n]| / (in_scale * 2**20)``.)
    * Network input: when the calibration inputs are integers in -128..127 (the digits' pixels) they
      are used as the codes themselves (``in_scale = input_scale``, zero point 0); otherwise an
      asymmetric per-tensor scale covers their range.
    * Hidden activations (after ReLU): per tensor, ``out_scale = P / 255`` with ``P`` the
      ``percentile`` of the float activations on ``calib_x``, zero point -128, ``out_min = -128`` (the
      ReLU), ``out_max = 127``.
    * Logits: asymmetric per tensor over the calibration logits' range (and 0), full int8 clamp.
    * Bias: ``round(b / (in_scale * w_scale)) - in_zero_point * colsum(w)`` as int32.
    * Requantization: ``(mult, shift) = quantize_multiplier(in_scale * w_scale[n] / out_scale)``.

    Parameters
    ----------
    float_model : FloatMLP
        The trained network.
    calib_x : array_like, shape (M, K0)
        Calibration inputs in raw units (the training split's pixels), M >= 1.
    percentile : float
        Percentile of the hidden activations mapped to the top code, in (50, 100]; the default clips
        only the rarest outliers, which buys resolution for the rest.

    Returns
    -------
    QuantizedMLP

    Raises
    ------
    TypeError
        If ``float_model`` is not a :class:`FloatMLP` or an argument has the wrong type.
    ValueError
        If ``calib_x`` has the wrong shape, ``percentile`` is out of range, a bias does not fit int32
        or a layer's scale ratio is not below 1 (which the right-shift-only requantizer cannot
        represent).
    """
    if not isinstance(float_model, FloatMLP):
        raise TypeError(f"float_model must be a FloatMLP, not {float_model!r}")
    if isinstance(percentile, (bool, np.bool_)) or not isinstance(percentile, numbers.Real):
        raise TypeError(f"percentile must be a real number in (50, 100], not {percentile!r}")
    if not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"percentile must be a real number in (50, 100], not {percentile!r}")
    x_raw = _as_float_matrix(calib_x, "calib_x", float_model.layer_sizes[0])
    if x_raw.shape[0] == 0:
        raise ValueError("calib_x must hold at least one sample, not 0")
    acts = float_model.forward(x_raw)
    in_scale, in_zp = _input_quantization(x_raw, float_model.input_scale)
    layers = []
    last = len(float_model.weights) - 1
    for i, (w_f, b_f) in enumerate(zip(float_model.weights, float_model.biases)):
        relu = i != last
        # Weight decay drives the inputs of a dead unit towards zero (1e-50 is seen): scaling such a
        # column to +-127 would blow its bias up beyond int32. The floor keeps every bias within
        # +-2**20 codes (ample resolution, and small next to any accumulator width) and the scale
        # positive; a column far below the floor simply quantizes to zeros.
        w_scale = np.maximum.reduce([np.max(np.abs(w_f), axis=0) / _I8_MAX,
                                     np.abs(b_f) / (in_scale * _BIAS_LIMIT),
                                     np.full(b_f.shape, _MIN_W_SCALE)])
        w_q = np.clip(np.round(w_f / w_scale), -_I8_MAX, _I8_MAX).astype(np.int64)
        if relu:
            top = float(np.percentile(acts[i], float(percentile)))
            if top <= 0.0:
                # Every calibration activation is zero: any scale represents that exactly.
                top = float(np.max(acts[i])) if np.max(acts[i]) > 0.0 else 1.0
            out_scale, zero_point = top / (_I8_MAX - _I8_MIN), _I8_MIN
            out_min, out_max = zero_point, _I8_MAX
        else:
            out_scale, zero_point = _asymmetric(float(acts[i].min()), float(acts[i].max()))
            out_min, out_max = _I8_MIN, _I8_MAX
        # In float64 first (exact for these magnitudes) so that an out-of-range bias is reported, not
        # wrapped by the integer cast.
        bias = np.round(b_f / (in_scale * w_scale)) - in_zp * w_q.sum(axis=0)
        if bias.min() < _I32_MIN or bias.max() > _I32_MAX:
            raise ValueError(f"biases[{i}] of float_model must fit int32 after quantization, not range "
                             f"{bias.min():.6g}..{bias.max():.6g}")
        real = in_scale * w_scale / out_scale
        if np.any(real >= 1.0):
            raise ValueError(f"layer {i} needs a requantization scale below 1, not {float(real.max())!r}: "
                             "its output range is too narrow for its inputs and weights")
        mult, shift = quantize_multipliers(real)
        layers.append(QuantLayer(w=w_q.astype(np.int8), bias=bias.astype(np.int32), mult=mult, shift=shift,
                                 zero_point=zero_point, out_min=out_min, out_max=out_max, in_scale=in_scale,
                                 in_zero_point=in_zp, out_scale=out_scale, relu=relu))
        in_scale, in_zp = out_scale, zero_point
    return QuantizedMLP(layers=tuple(layers), input_scale=float_model.input_scale)
