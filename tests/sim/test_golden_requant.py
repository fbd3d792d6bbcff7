"""Golden requantization model: hand-computed gemmlowp vectors and an independent big-integer reference."""

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npuforge.sim.golden import (
    INT32_MAX,
    INT32_MIN,
    quantize_multiplier,
    quantize_multipliers,
    requantize,
    rounding_divide_by_pot,
    saturate,
    srdhm,
)

# --- independent slow reference (Python big integers and exact fractions) --------------------------


def ref_srdhm(a: int, b: int) -> int:
    """The gemmlowp definition, literally: nudge, then divide truncating toward zero."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = 2**30 if ab >= 0 else 1 - 2**30
    return int(Fraction(ab + nudge, 2**31))  # int() of a Fraction truncates toward zero


def ref_round_half_away(q: Fraction) -> int:
    mag = math.floor(abs(q) + Fraction(1, 2))
    return mag if q >= 0 else -mag


def ref_rdbpot(x: int, shift: int) -> int:
    return ref_round_half_away(Fraction(x, 2**shift))


def ref_requant(acc, mult, shift, zp, lo, hi):
    return min(max(zp + ref_rdbpot(ref_srdhm(acc, mult), shift), lo), hi)


int32s = st.one_of(
    st.integers(INT32_MIN, INT32_MAX),
    st.sampled_from([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX, 2**30, -(2**30)]),
)


# --- srdhm -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (2**30, 1, 1),  # +0.5 rounds up
        (-(2**30), 1, 0),  # -0.5 rounds toward +inf (gemmlowp nudge 1 - 2**30)
        (3 * 2**29, 2, 2),  # +1.5 -> 2
        (-3 * 2**29, 2, -1),  # -1.5 -> -1
        (2**30 + 1, 1, 1),  # just above +0.5
        (-(2**30) - 1, 1, -1),  # just below -0.5
        (1, 1, 0),
        (INT32_MIN, 1, -1),  # -2**31 / 2**31 exactly
        (INT32_MAX, 1, 1),  # (2**31 - 1) / 2**31 rounds to 1
        (INT32_MIN, INT32_MIN, INT32_MAX),  # the only saturating case
        (INT32_MIN, INT32_MAX, -INT32_MAX),  # exact: -(2**31 - 1)
        (INT32_MAX, INT32_MAX, 2**31 - 2),  # (2**31-1)**2 / 2**31 = 2**31 - 2 + 2**-31
        (12345, 0, 0),
        (INT32_MIN, 0, 0),
    ],
)
def test_srdhm_vectors(a, b, expected):
    assert srdhm(a, b) == expected
    assert srdhm(b, a) == expected


def test_srdhm_vectorized_random_vs_reference():
    rng = random.Random(1)
    a = [rng.randint(INT32_MIN, INT32_MAX) for _ in range(2000)]
    b = [rng.randint(INT32_MIN, INT32_MAX) for _ in range(2000)]
    got = srdhm(np.array(a), np.array(b))
    assert got.dtype == np.int64
    assert got.tolist() == [ref_srdhm(x, y) for x, y in zip(a, b)]


@settings(max_examples=200, deadline=None)
@given(int32s, int32s)
def test_srdhm_hypothesis(a, b):
    assert int(srdhm(a, b)) == ref_srdhm(a, b)


def test_srdhm_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"^a must be an int32 in -2147483648..2147483647, not 2147483648$"):
        srdhm(2**31, 1)
    with pytest.raises(ValueError, match=r"^b must be an int32 in"):
        srdhm(1, [0, INT32_MIN - 1])
    with pytest.raises(TypeError, match=r"^a must be an integer or an array of integers"):
        srdhm(0.5, 1)


# --- rounding_divide_by_pot --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "shift", "expected"),
    [
        (5, 1, 3),  # 2.5 -> 3 (ties away from zero)
        (-5, 1, -3),  # -2.5 -> -3
        (1, 1, 1),  # 0.5 -> 1
        (-1, 1, -1),  # -0.5 -> -1
        (6, 2, 2),  # 1.5 -> 2
        (-6, 2, -2),  # -1.5 -> -2
        (5, 2, 1),  # 1.25 -> 1
        (-5, 2, -1),
        (7, 2, 2),  # 1.75 -> 2
        (-7, 2, -2),
        (123456, 0, 123456),  # shift 0 is the identity
        (INT32_MIN, 0, INT32_MIN),
        (INT32_MAX, 0, INT32_MAX),
        (INT32_MIN, 31, -1),
        (INT32_MAX, 31, 1),
        (2**30, 31, 1),  # +0.5
        (-(2**30), 31, -1),  # -0.5
        (2**30 - 1, 31, 0),
        (-(2**30) + 1, 31, 0),
        (INT32_MIN, 30, -2),
        (INT32_MAX, 30, 2),
    ],
)
def test_rdbpot_vectors(x, shift, expected):
    assert rounding_divide_by_pot(x, shift) == expected


@settings(max_examples=200, deadline=None)
@given(int32s, st.integers(0, 31))
def test_rdbpot_hypothesis(x, shift):
    assert int(rounding_divide_by_pot(x, shift)) == ref_rdbpot(x, shift)


def test_rdbpot_rejects_bad_shift():
    with pytest.raises(ValueError, match=r"^shift must be an integer in 0..31, not 32$"):
        rounding_divide_by_pot(1, 32)
    with pytest.raises(ValueError, match=r"^shift must be an integer in 0..31, not -1$"):
        rounding_divide_by_pot(1, -1)


# --- saturate ----------------------------------------------------------------------------------------


def test_saturate():
    assert saturate([-200, -128, 0, 127, 200], 8).tolist() == [-128, -128, 0, 127, 127]
    assert saturate([-5, 0, 255, 300], 8, signed=False).tolist() == [0, 0, 255, 255]
    assert saturate([2**40, -(2**40)], 32).tolist() == [INT32_MAX, INT32_MIN]
    assert saturate([-3, 3], 1).tolist() == [-1, 0]
    with pytest.raises(ValueError, match=r"^bits must be an integer in 1..64, not 0$"):
        saturate(1, 0)
    with pytest.raises(TypeError, match=r"^bits must be an integer in 1..64, not 8.0$"):
        saturate(1, 8.0)


# --- requantize --------------------------------------------------------------------------------------


def test_requantize_vectors():
    # mult = 2**30 is 0.5 in Q31; shift 3 -> scale 1/16.
    acc = np.array([[0, 8, -8, 24, -24, 2032, 2048, -2064, INT32_MAX, INT32_MIN]])
    got = requantize(acc, 2**30, 3)
    # 8/16 = 0.5: srdhm(8, 2**30) = 4 exactly, 4/8 -> 0.5 -> 1 (away from zero); -0.5 -> -1.
    # 24/16 = 1.5 -> 2; -1.5 -> -2; 2032/16 = 127; 2048/16 = 128 -> clamp 127; -129 -> -128.
    assert got.tolist() == [[0, 1, -1, 2, -2, 127, 127, -128, 127, -128]]


def test_requantize_zero_point_and_clamp():
    acc = np.array([0, 100, -100, 1000])
    got = requantize(acc, INT32_MAX, 0, zero_point=10, out_min=0, out_max=50)
    # mult 2**31-1 is ~1.0: srdhm(100, 2**31-1) = round(100 - 100/2**31) = 100.
    assert got.tolist() == [10, 50, 0, 50]
    assert requantize(INT32_MAX, 0, 0, zero_point=-7).tolist() == -7  # mult 0 -> only the zero point
    # zero_point + value is not wrapped in int32.
    assert requantize(INT32_MAX, INT32_MAX, 0, zero_point=2**15 - 1, out_min=-(2**15),
                      out_max=2**15 - 1) == 2**15 - 1


def test_requantize_per_channel_broadcast():
    rng = np.random.default_rng(7)
    acc = rng.integers(INT32_MIN, INT32_MAX, size=(5, 4), endpoint=True)
    mult = np.array([0, 2**30, INT32_MAX, 1234567890])
    shift = np.array([0, 31, 5, 12])
    got = requantize(acc, mult, shift, zero_point=-3, out_min=-1000, out_max=1000)
    for i in range(5):
        for j in range(4):
            assert got[i, j] == ref_requant(int(acc[i, j]), int(mult[j]), int(shift[j]), -3, -1000, 1000)


@settings(max_examples=300, deadline=None)
@given(
    int32s,
    st.one_of(st.integers(0, INT32_MAX), st.sampled_from([0, 1, 2**30, INT32_MAX])),
    st.integers(0, 31),
    st.integers(-(2**15), 2**15 - 1),
    st.integers(-(2**15), 2**15 - 1),
    st.integers(-(2**15), 2**15 - 1),
)
def test_requantize_hypothesis(acc, mult, shift, zp, a, b):
    lo, hi = min(a, b), max(a, b)
    got = requantize(acc, mult, shift, zero_point=zp, out_min=lo, out_max=hi)
    assert int(got) == ref_requant(acc, mult, shift, zp, lo, hi)


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        (dict(acc=2**31, mult=1, shift=0), ValueError, r"^acc must be an int32 in -2147483648..2147483647"),
        (dict(acc=0, mult=-1, shift=0), ValueError, r"^mult must be an integer in 0..2147483647, not -1$"),
        (dict(acc=0, mult=2**31, shift=0), ValueError, r"^mult must be an integer in 0..2147483647"),
        (dict(acc=0, mult=1, shift=32), ValueError, r"^shift must be an integer in 0..31, not 32$"),
        (dict(acc=0, mult=1, shift=0, zero_point=2**15), ValueError,
         r"^zero_point must be an integer in -32768..32767, not 32768$"),
        (dict(acc=0, mult=1, shift=0, out_min=-(2**15) - 1), ValueError, r"^out_min must be an integer in"),
        (dict(acc=0, mult=1, shift=0, out_max=2**15), ValueError, r"^out_max must be an integer in"),
        (dict(acc=0, mult=1, shift=0, out_min=5, out_max=4), ValueError,
         r"^out_min must be <= out_max, not out_min=5, out_max=4$"),
        (dict(acc=0, mult=1, shift=0, zero_point=1.0), TypeError, r"^zero_point must be an integer"),
        (dict(acc=np.zeros((2, 3), dtype=int), mult=[1, 2], shift=0), ValueError,
         r"^mult and shift must broadcast over the last axis of acc"),
    ],
)
def test_requantize_validation(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        requantize(kwargs.pop("acc"), kwargs.pop("mult"), kwargs.pop("shift"), **kwargs)


# --- quantize_multiplier -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("real", "expected"),
    [
        (0.5, (2**30, 0)),
        (0.25, (2**30, 1)),
        (0.75, (3 * 2**29, 0)),
        (2**-31, (2**30, 30)),
        (2**-32, (2**30, 31)),
        (1 - 2**-33, (INT32_MAX, 0)),  # rounds to 1.0: clamped to the largest scale
        ((2**31 - 0.5) / 2**31 / 8, (2**30, 2)),  # q*2**31 = 2**31 - 0.5 rounds up and carries
        ((2**30 + 0.5) / 2**31, (2**30 + 1, 0)),  # tie rounds away from zero
        (2**-33, (2**29, 31)),  # needs shift 32: represented with shift 31, smaller mult
        (3 * 2**-64, (1, 31)),  # 0.75 * 2**-62 * ... rounds to 1
        (2**-64, (0, 31)),  # rounds to zero: it is zero at shift 31
    ],
)
def test_quantize_multiplier_vectors(real, expected):
    assert quantize_multiplier(real) == expected


def test_quantize_multiplier_round_trip():
    rng = random.Random(3)
    reals = [rng.random() for _ in range(500)] + [2.0 ** -rng.uniform(1, 31.9) for _ in range(500)]
    for real in reals:
        if real == 0.0:
            continue
        mult, shift = quantize_multiplier(real)
        assert 2**30 <= mult < 2**31
        assert 0 <= shift <= 31
        approx = Fraction(mult, 2 ** (31 + shift))
        # Half a unit of the last Q31 place, relative to the exponent.
        assert abs(approx - Fraction(real)) <= Fraction(1, 2 ** (32 + shift))
        assert abs(approx - Fraction(real)) / Fraction(real) <= Fraction(1, 2**31)


def test_quantize_multiplier_small_scales_keep_precision_bound():
    for e in range(33, 70):
        real = 1.37 * 2.0**-e
        mult, shift = quantize_multiplier(real)
        assert shift == 31
        assert abs(Fraction(mult, 2**62) - Fraction(real)) <= Fraction(1, 2**63)


def test_quantize_multipliers_vectorized():
    reals = np.array([[0.5, 0.1], [2**-40, 0.999]])
    mult, shift = quantize_multipliers(reals)
    assert mult.shape == shift.shape == (2, 2)
    for index in np.ndindex(2, 2):
        assert (mult[index], shift[index]) == quantize_multiplier(float(reals[index]))
    message = r"^arr must hold real numbers in \(0, 1\), not 1.5 at index \(1,\)$"
    with pytest.raises(ValueError, match=message):
        quantize_multipliers([0.5, 1.5])


@pytest.mark.parametrize("real", [0.0, 1.0, 1.5, -0.25, float("nan"), float("inf")])
def test_quantize_multiplier_rejects(real):
    with pytest.raises(ValueError, match=r"^real must be a real number in \(0, 1\), not "):
        quantize_multiplier(real)


def test_quantize_multiplier_type():
    with pytest.raises(TypeError, match=r"^real must be a real number in \(0, 1\), not '0.5'$"):
        quantize_multiplier("0.5")
