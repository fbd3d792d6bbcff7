"""Integer requantization golden model (TFLite / gemmlowp semantics).

The output stage of a quantized layer turns an int32 accumulator into a narrow integer with

.. code::

    y = clip(zero_point + RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc, mult), shift),
             out_min, out_max)

which is TFLite's ``MultiplyByQuantizedMultiplier`` for a non-positive exponent (a right shift) followed
by the output offset and the activation clamp. ``mult`` is a Q31 fixed-point number (the real scale is
``mult * 2**-31 * 2**-shift``).

Rounding happens twice, and the two steps break ties differently (as gemmlowp does):

* :func:`srdhm` rounds ``acc * mult / 2**31`` to nearest with ties toward **+infinity**
  (``+0.5 -> 1``, ``-0.5 -> 0``, ``-1.5 -> -1``): that is what gemmlowp's nudge ``1 - 2**30`` for
  negative products followed by a truncating division gives.
* :func:`rounding_divide_by_pot` rounds ``x / 2**shift`` to nearest with ties **away from zero**
  (``+0.5 -> 1``, ``-0.5 -> -1``).

All arithmetic here is exact: values are held in ``int64`` (``acc * mult`` of two int32 values is below
``2**62`` in magnitude, and adding the rounding nudge still fits). Functions return ``int64`` arrays whose
values lie in the documented range.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "quantize_multiplier",
    "quantize_multipliers",
    "requantize",
    "rounding_divide_by_pot",
    "saturate",
    "srdhm",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

#: Range of the zero point and of the clamp limits (the hardware holds them in 16-bit registers).
_I16_MIN, _I16_MAX = -(2**15), 2**15 - 1


def _as_int_array(value, name):
    """Convert ``value`` to an int64 array, rejecting non-integer input (floats, bools, objects)."""
    arr = np.asarray(value)
    if arr.dtype == object:
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in arr.flat):
            raise TypeError(f"{name} must hold integers, not {value!r}")
        if arr.size and (min(arr.flat) < np.iinfo(np.int64).min or max(arr.flat) > np.iinfo(np.int64).max):
            raise ValueError(f"{name} must hold 64-bit integers, not {value!r}")
        return arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer or an array of integers, not {value!r}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must hold 64-bit signed integers, not {value!r}")
    return arr.astype(np.int64)


def _check_range(arr, name, lo, hi, what):
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        bad = arr[(arr < lo) | (arr > hi)].flat[0]
        raise ValueError(f"{name} must be {what} in {lo}..{hi}, not {int(bad)}")


def _check_int_scalar(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    return int(value)


def saturate(x, bits, signed=True) -> np.ndarray:
    """Clamp integers to the range of a ``bits``-wide integer.

    Parameters
    ----------
    x : int or array_like of int
        Values to clamp (held as int64).
    bits : int
        Width of the target integer, 1..64.
    signed : bool
        ``True``: range ``-2**(bits-1) .. 2**(bits-1)-1``; ``False``: ``0 .. 2**bits-1`` (``bits`` at
        most 63 so that the bound fits in int64).

    Returns
    -------
    numpy.ndarray
        int64 array of the shape of ``x``, each value clamped (saturated) to the range.

    Raises
    ------
    TypeError
        If ``x`` is not integer or ``bits`` is not an int.
    ValueError
        If ``bits`` is out of range.
    """
    max_bits = 64 if signed else 63
    bits = _check_int_scalar(bits, "bits", 1, max_bits)
    arr = _as_int_array(x, "x")
    if signed:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    return np.clip(arr, lo, hi).astype(np.int64)


def srdhm(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` of int32 values.

    Computes the high 32 bits of the doubled product ``2*a*b``, rounded: ``round(a*b / 2**31)`` where
    ties go toward +infinity. Exactly: ``ab = a*b``; ``nudge = 2**30`` if ``ab >= 0`` else
    ``1 - 2**30``; the result is ``(ab + nudge) / 2**31`` truncated toward zero. The only overflowing
    case, ``a == b == INT32_MIN``, saturates to ``INT32_MAX``.

    Parameters
    ----------
    a, b : int or array_like of int
        int32 values (``INT32_MIN .. INT32_MAX``), broadcast against each other.

    Returns
    -------
    numpy.ndarray
        int64 array of int32 values.

    Raises
    ------
    TypeError
        If an input is not integer.
    ValueError
        If an input lies outside the int32 range.
    """
    a = _as_int_array(a, "a")
    b = _as_int_array(b, "b")
    _check_range(a, "a", INT32_MIN, INT32_MAX, "an int32")
    _check_range(b, "b", INT32_MIN, INT32_MAX, "an int32")
    a, b = np.broadcast_arrays(a, b)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b  # |ab| <= 2**62: exact in int64
    nudged = ab + np.where(ab >= 0, np.int64(2**30), np.int64(1 - 2**30))
    # Truncating division toward zero, written on the magnitude because `>>` floors.
    mag = np.abs(nudged) >> 31
    result = np.where(nudged < 0, -mag, mag)
    return np.where(overflow, np.int64(INT32_MAX), result).astype(np.int64)


def rounding_divide_by_pot(x, shift) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**shift`` rounded to nearest, ties away from zero.

    Exactly: ``mask = 2**shift - 1``; ``rem = x & mask``; ``threshold = (mask >> 1) + (x < 0)``; the
    result is ``(x >> shift) + (rem > threshold)`` with an arithmetic (flooring) ``>>``. ``shift = 0``
    is the identity; ``shift = 31`` maps every int32 to -1, 0 or 1 (``INT32_MIN -> -1``,
    ``INT32_MAX -> 1``, ``+-2**30 -> +-1``, ``+-(2**30 - 1) -> 0``).

    Parameters
    ----------
    x : int or array_like of int
        int32 values.
    shift : int or array_like of int
        Right shift, 0..31, broadcast against ``x``.

    Returns
    -------
    numpy.ndarray
        int64 array of int32 values.

    Raises
    ------
    TypeError
        If an input is not integer.
    ValueError
        If ``x`` is outside the int32 range or ``shift`` outside 0..31.
    """
    x = _as_int_array(x, "x")
    shift = _as_int_array(shift, "shift")
    _check_range(x, "x", INT32_MIN, INT32_MAX, "an int32")
    _check_range(shift, "shift", 0, 31, "an integer")
    x, shift = np.broadcast_arrays(x, shift)
    mask = (np.int64(1) << shift) - 1
    rem = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return ((x >> shift) + (rem > threshold).astype(np.int64)).astype(np.int64)


def requantize(acc, mult, shift, *, zero_point=0, out_min=-128, out_max=127) -> np.ndarray:
    """Requantize int32 accumulators: ``clip(zero_point + rdbpot(srdhm(acc, mult), shift), lo, hi)``.

    The result approximates ``zero_point + acc * mult * 2**-(31 + shift)`` (see the module docstring
    for the two rounding steps). Since ``mult`` is non-negative, :func:`srdhm` never saturates here
    (its result lies in ``-2**31 + 1 .. 2**31 - 2``); the only saturation is the final clamp, which is
    applied to the exact sum ``zero_point + ...`` (no int32 wrap-around).

    Parameters
    ----------
    acc : int or array_like of int
        int32 accumulators (``INT32_MIN .. INT32_MAX``), any shape; the last axis is the output channel.
    mult : int or array_like of int
        Per-channel Q31 multipliers in ``0 .. 2**31 - 1``, broadcast over the last axis of ``acc``.
    shift : int or array_like of int
        Per-channel right shifts in ``0 .. 31``, broadcast over the last axis of ``acc``.
    zero_point : int
        Output offset, ``-2**15 .. 2**15 - 1``.
    out_min, out_max : int
        Clamp limits, each in ``-2**15 .. 2**15 - 1``, with ``out_min <= out_max``.

    Returns
    -------
    numpy.ndarray
        int64 array of the broadcast shape, values in ``out_min .. out_max``.

    Raises
    ------
    TypeError
        If an argument is not integer.
    ValueError
        If an argument is out of range (the message names it) or the shapes do not broadcast.
    """
    zero_point = _check_int_scalar(zero_point, "zero_point", _I16_MIN, _I16_MAX)
    out_min = _check_int_scalar(out_min, "out_min", _I16_MIN, _I16_MAX)
    out_max = _check_int_scalar(out_max, "out_max", _I16_MIN, _I16_MAX)
    if out_min > out_max:
        raise ValueError(f"out_min must be <= out_max, not out_min={out_min}, out_max={out_max}")
    acc = _as_int_array(acc, "acc")
    mult = _as_int_array(mult, "mult")
    shift = _as_int_array(shift, "shift")
    _check_range(acc, "acc", INT32_MIN, INT32_MAX, "an int32")
    _check_range(mult, "mult", 0, INT32_MAX, "an integer")
    _check_range(shift, "shift", 0, 31, "an integer")
    try:
        acc, mult, shift = np.broadcast_arrays(acc, mult, shift)
    except ValueError:
        raise ValueError(
            f"mult and shift must broadcast over the last axis of acc, not shapes acc {acc.shape}, "
            f"mult {mult.shape}, shift {shift.shape}"
        ) from None
    scaled = rounding_divide_by_pot(srdhm(acc, mult), shift)
    return np.clip(scaled + zero_point, out_min, out_max).astype(np.int64)


def quantize_multiplier(real) -> tuple[int, int]:
    """Split a real scale in (0, 1) into a Q31 multiplier and a right shift (TFLite ``QuantizeMultiplier``).

    ``real = q * 2**e`` with ``q`` in [0.5, 1) (``math.frexp``); ``mult = round(q * 2**31)`` rounded half
    away from zero, ``shift = -e``, so that ``real ~= mult * 2**-31 * 2**-shift`` with ``mult`` in
    ``[2**30, 2**31)``. When rounding carries ``mult`` to ``2**31`` it is halved and the shift reduced
    by one. Two cases fall outside that normal form, because the hardware only shifts right by 0..31:

    * ``real`` just below 1 that rounds to 1.0 (``real > 1 - 2**-32``) gives ``(2**31 - 1, 0)``, the
      largest representable scale.
    * ``real < 2**-32`` (which would need ``shift > 31``) gives ``shift = 31`` and
      ``mult = round(real * 2**62)`` (half away from zero), a multiplier below ``2**30`` with fewer
      significant bits. It is 0 only when ``real < 2**-63``, i.e. when the scale rounds to zero.

    Parameters
    ----------
    real : float
        Scale, strictly between 0 and 1.

    Returns
    -------
    (int, int)
        ``(mult, shift)`` with ``mult`` in ``0 .. 2**31 - 1`` and ``shift`` in ``0 .. 31``.

    Raises
    ------
    TypeError
        If ``real`` is not a real number.
    ValueError
        If ``real`` is not in the open interval (0, 1) (NaN included).
    """
    if isinstance(real, bool) or not isinstance(real, numbers.Real):
        raise TypeError(f"real must be a real number in (0, 1), not {real!r}")
    value = float(real)
    if not 0.0 < value < 1.0:
        raise ValueError(f"real must be a real number in (0, 1), not {real!r}")
    q, e = math.frexp(value)
    shift = -e
    if shift > 31:
        # Scaling a float by a power of two is exact, so the rounding below sees the true value.
        mult = _round_half_away(math.ldexp(value, 62))
        return mult, 31
    mult = _round_half_away(math.ldexp(q, 31))
    if mult == 2**31:
        mult //= 2
        shift -= 1
        if shift < 0:
            return INT32_MAX, 0
    return mult, shift


def _round_half_away(x: float) -> int:
    """Round a non-negative float to the nearest integer, ties up (away from zero)."""
    whole = math.floor(x)
    return int(whole) + (1 if x - whole >= 0.5 else 0)


def quantize_multipliers(arr) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized :func:`quantize_multiplier`.

    Parameters
    ----------
    arr : array_like of float
        Scales, each strictly between 0 and 1.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(mult, shift)``, int64 arrays of the shape of ``arr``.

    Raises
    ------
    TypeError
        If ``arr`` is not numeric.
    ValueError
        If a scale is not in (0, 1); the message gives its index.
    """
    values = np.asarray(arr)
    if values.dtype == np.bool_ or not (
        np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)
    ):
        raise TypeError(f"arr must be an array of real numbers in (0, 1), not {arr!r}")
    mult = np.zeros(values.shape, dtype=np.int64)
    shift = np.zeros(values.shape, dtype=np.int64)
    for index in np.ndindex(values.shape):
        v = float(values[index])
        if not 0.0 < v < 1.0:
            raise ValueError(f"arr must hold real numbers in (0, 1), not {v!r} at index {index}")
        mult[index], shift[index] = quantize_multiplier(v)
    return mult, shift
