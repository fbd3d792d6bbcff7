"""Integer GEMM golden model: exact products, an optionally saturating accumulator, bias and requantization.

This is the reference the MAC arrays are checked against. The accumulation order matters only when the
accumulator saturates: the hardware adds either one product per step (output-stationary arrays,
``k_group=1``) or the exact sum of a column of ``rows`` products per step (weight-stationary arrays,
``k_group=rows``), and saturates after each addition. :func:`gemm` reproduces both.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .requant import INT32_MAX, INT32_MIN, requantize, saturate

__all__ = [
    "RequantParams",
    "bias_add",
    "gemm",
    "mac_array_reference",
    "required_acc_bits",
]

_I16_MIN, _I16_MAX = -(2**15), 2**15 - 1
_INT64_SAFE = 2**62


def _int_matrix(value, name):
    """Return ``value`` as a 2-D integer array (int64, or object holding Python ints if huge)."""
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, not an array of shape {arr.shape}")
    if arr.dtype == object:
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in arr.flat):
            raise TypeError(f"{name} must hold integers")
        return np.vectorize(int, otypes=[object])(arr) if arr.size else arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, not dtype {arr.dtype}")
    if arr.dtype == np.uint64:
        return arr.astype(object)
    return arr.astype(np.int64)


def _max_abs(arr) -> int:
    return max((abs(int(v)) for v in arr.flat), default=0)


def _check_int(value, name, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise TypeError(f"{name} must be an integer {rng}, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer {rng}, not {value!r}")
    return int(value)


def gemm(x, w, *, acc_bits=None, k_group=1) -> np.ndarray:
    """Integer matrix product ``x @ w`` with the hardware's accumulation order and saturation.

    The K axis is summed in consecutive groups of ``k_group`` indices (the last group may be shorter).
    Each group sum is exact. The accumulator starts at 0 and adds the group sums in ascending k order;
    when ``acc_bits`` is given it saturates to the signed ``acc_bits``-bit range after every addition.

    Parameters
    ----------
    x : array_like of int, shape (M, K)
        Activations (any signedness; values are used as given).
    w : array_like of int, shape (K, N)
        Weights.
    acc_bits : int or None
        Width of the signed saturating accumulator, 1..64; ``None`` for an exact (unbounded) sum.
    k_group : int
        Number of products added to the accumulator per step, >= 1.

    Returns
    -------
    numpy.ndarray
        int64 array of shape (M, N).

    Raises
    ------
    TypeError
        If an input is not integer.
    ValueError
        If shapes do not match, a parameter is out of range.
    OverflowError
        If ``acc_bits`` is ``None`` and an exact result does not fit in int64.
    """
    x = _int_matrix(x, "x")
    w = _int_matrix(w, "w")
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x and w must agree on K, not x of shape {x.shape} and w of shape {w.shape}")
    if acc_bits is not None:
        acc_bits = _check_int(acc_bits, "acc_bits", 1, 64)
    k_group = _check_int(k_group, "k_group", 1)
    m, k = x.shape
    n = w.shape[1]
    # int64 is exact as long as every intermediate stays below 2**62 in magnitude; otherwise fall
    # back to Python integers (object arrays), which are exact at any size.
    bound = _max_abs(x) * _max_abs(w) * max(k, 1)
    exact64 = bound < _INT64_SAFE and x.dtype != object and w.dtype != object
    dtype = np.int64 if exact64 else object
    xs, ws = x.astype(dtype), w.astype(dtype)
    acc = np.zeros((m, n), dtype=dtype)
    if acc_bits is not None:
        lo, hi = -(2 ** (acc_bits - 1)), 2 ** (acc_bits - 1) - 1
    for start in range(0, k, k_group):
        stop = min(start + k_group, k)
        acc = acc + xs[:, start:stop] @ ws[start:stop, :]
        if acc_bits is not None:
            acc = np.clip(acc, lo, hi) if exact64 else np.vectorize(lambda v: min(max(v, lo), hi),
                                                                    otypes=[object])(acc)
    if exact64:
        return acc.astype(np.int64)
    if acc.size and (min(acc.flat) < -(2**63) or max(acc.flat) > 2**63 - 1):
        raise OverflowError("gemm result does not fit in int64; give acc_bits to saturate it")
    return acc.astype(np.int64)


def bias_add(acc, bias) -> np.ndarray:
    """Add a per-channel bias and saturate to int32, as the output stage does.

    Parameters
    ----------
    acc : array_like of int
        Accumulators (int64 values), last axis = output channel.
    bias : int or array_like of int
        Bias, broadcast over the last axis of ``acc``.

    Returns
    -------
    numpy.ndarray
        int64 array holding ``saturate(acc + bias, 32)``.

    Raises
    ------
    TypeError
        If an input is not integer.
    ValueError
        If the shapes do not broadcast.
    """
    acc = saturate(acc, 64)
    bias = saturate(bias, 64)
    if bias.ndim > 1 or (bias.ndim == 1 and acc.ndim and bias.shape[0] not in (1, acc.shape[-1])):
        raise ValueError(
            f"bias must be a scalar or a vector over the last axis of acc, not shape {bias.shape} "
            f"for acc of shape {acc.shape}"
        )
    if max(_max_abs(acc), _max_abs(bias)) < _INT64_SAFE:
        return saturate(acc + bias, 32)
    # Near the int64 limits the sum could wrap: add as Python integers instead.
    total = acc.astype(object) + bias.astype(object)
    return np.vectorize(lambda v: min(max(v, INT32_MIN), INT32_MAX), otypes=[np.int64])(total)


def required_acc_bits(k, a_bits, a_signed, w_bits, w_signed) -> int:
    """Smallest signed accumulator width that holds any sum of ``k`` products without overflow.

    The extreme products are computed exactly from the operand ranges (for int8 x int8 the largest
    magnitude is ``-128 * -128 = 16384``); the width covers ``k`` times the most negative and ``k``
    times the most positive product, and both sums are reachable, so the bound is tight.

    Parameters
    ----------
    k : int
        Number of products summed, >= 1.
    a_bits, w_bits : int
        Operand widths, 1..64.
    a_signed, w_signed : bool
        Operand signedness.

    Returns
    -------
    int
        The accumulator width in bits (signed two's complement).

    Raises
    ------
    TypeError
        If a width or count is not an int, or a signedness is not a bool.
    ValueError
        If a value is out of range.
    """
    k = _check_int(k, "k", 1)
    a_bits = _check_int(a_bits, "a_bits", 1, 64)
    w_bits = _check_int(w_bits, "w_bits", 1, 64)
    for name, flag in (("a_signed", a_signed), ("w_signed", w_signed)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, not {flag!r}")

    def limits(bits, signed):
        return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)

    a_lo, a_hi = limits(a_bits, bool(a_signed))
    w_lo, w_hi = limits(w_bits, bool(w_signed))
    corners = [a * b for a in (a_lo, a_hi) for b in (w_lo, w_hi)]
    lo, hi = k * min(corners), k * max(corners)
    bits = 1
    while not (-(2 ** (bits - 1)) <= lo and hi <= 2 ** (bits - 1) - 1):
        bits += 1
    return bits


@dataclass(frozen=True)
class RequantParams:
    """Per-channel requantization parameters of the output stage.

    Members
    -------
    mult : tuple of int
        Q31 multipliers, one per output channel, each in ``0 .. 2**31 - 1``.
    shift : tuple of int
        Right shifts, one per output channel, each in ``0 .. 31``.
    zero_point : int
        Output offset, ``-2**15 .. 2**15 - 1``.
    out_min, out_max : int
        Clamp limits, each in ``-2**15 .. 2**15 - 1``, ``out_min <= out_max``.

    Raises
    ------
    TypeError
        If a field has the wrong type.
    ValueError
        If a field is out of range or ``mult`` and ``shift`` differ in length (the message names the
        field).
    """

    mult: tuple
    shift: tuple
    zero_point: int = 0
    out_min: int = -128
    out_max: int = 127

    def __post_init__(self):
        for name, lo, hi in (("mult", 0, INT32_MAX), ("shift", 0, 31)):
            raw = getattr(self, name)
            arr = np.asarray(raw)
            if arr.ndim == 0:
                arr = arr.reshape(1)
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError(f"{name} must be a non-empty 1-D sequence of integers, not {raw!r}")
            values = []
            for v in arr.tolist():
                if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                    raise TypeError(f"{name} must hold integers in {lo}..{hi}, not {v!r}")
                if not lo <= v <= hi:
                    raise ValueError(f"{name} must hold integers in {lo}..{hi}, not {v!r}")
                values.append(int(v))
            object.__setattr__(self, name, tuple(values))
        if len(self.mult) != len(self.shift):
            raise ValueError(
                f"shift must have one entry per channel of mult ({len(self.mult)}), not {len(self.shift)}"
            )
        for name in ("zero_point", "out_min", "out_max"):
            object.__setattr__(self, name, _check_int(getattr(self, name), name, _I16_MIN, _I16_MAX))
        if self.out_min > self.out_max:
            raise ValueError(
                f"out_min must be <= out_max, not out_min={self.out_min}, out_max={self.out_max}"
            )

    @property
    def channels(self) -> int:
        """Number of output channels."""
        return len(self.mult)


def mac_array_reference(x, w, bias=None, requant: Optional[RequantParams] = None, *, acc_bits=None,
                        k_group=1) -> np.ndarray:
    """The whole MAC-array datapath: GEMM, bias, then requantization or the raw int32 result.

    ``acc = gemm(x, w, acc_bits=acc_bits, k_group=k_group)``; ``y32 = bias_add(acc, bias or 0)``;
    the result is ``y32`` when ``requant`` is ``None`` (raw int32 mode), else
    ``requantize(y32, requant.mult, requant.shift, ...)``.

    Parameters
    ----------
    x : array_like of int, shape (M, K)
        Activations.
    w : array_like of int, shape (K, N)
        Weights.
    bias : int or array_like of int, shape (N,), optional
        Per-channel bias (default 0).
    requant : RequantParams, optional
        Output-stage parameters; ``None`` selects raw int32 output.
    acc_bits, k_group
        As for :func:`gemm`.

    Returns
    -------
    numpy.ndarray
        int64 array of shape (M, N).

    Raises
    ------
    TypeError
        If ``requant`` is not a :class:`RequantParams` (or an input is not integer).
    ValueError
        If shapes disagree (including ``requant.channels`` against N).
    """
    if requant is not None and not isinstance(requant, RequantParams):
        raise TypeError(f"requant must be a RequantParams or None, not {requant!r}")
    acc = gemm(x, w, acc_bits=acc_bits, k_group=k_group)
    y32 = bias_add(acc, 0 if bias is None else bias)
    if requant is None:
        return y32
    if requant.channels not in (1, y32.shape[1]):
        raise ValueError(
            f"requant must have one channel per output column ({y32.shape[1]}), not {requant.channels}"
        )
    return requantize(y32, np.array(requant.mult), np.array(requant.shift), zero_point=requant.zero_point,
                      out_min=requant.out_min, out_max=requant.out_max)
