"""Golden GEMM model: exact sums, saturation order, accumulator width, bias and the whole datapath."""

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npuforge.sim.golden import (
    INT32_MAX,
    INT32_MIN,
    RequantParams,
    bias_add,
    gemm,
    mac_array_reference,
    required_acc_bits,
)


def ref_gemm(x, w, acc_bits=None, k_group=1):
    """Slow reference with Python integers, written from the specification."""
    x, w = np.asarray(x), np.asarray(w)
    (m, k), n = x.shape, w.shape[1]
    out = [[0] * n for _ in range(m)]
    for i in range(m):
        for j in range(n):
            acc = 0
            for start in range(0, k, k_group):
                acc += sum(int(x[i][t]) * int(w[t][j]) for t in range(start, min(start + k_group, k)))
                if acc_bits is not None:
                    acc = min(max(acc, -(2 ** (acc_bits - 1))), 2 ** (acc_bits - 1) - 1)
            out[i][j] = acc
    return out


def test_gemm_exact_int8():
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, size=(7, 33))
    w = rng.integers(-128, 128, size=(33, 5))
    got = gemm(x, w)
    assert got.dtype == np.int64
    assert got.shape == (7, 5)
    assert got.tolist() == ref_gemm(x, w)


def test_gemm_unsigned_inputs_used_as_given():
    x = np.array([[255, 200]], dtype=np.uint8)
    w = np.array([[255], [-128]], dtype=np.int16)
    assert gemm(x, w).tolist() == [[255 * 255 - 200 * 128]]


def test_gemm_saturation_order_differs_with_k_group():
    # Products 7, 7, -7 into a 4-bit accumulator (-8..7).
    x = np.array([[7, 7, -7]])
    w = np.array([[1], [1], [1]])
    # k_group=1: 0+7=7; 7+7=14 -> 7; 7-7=0.
    assert gemm(x, w, acc_bits=4, k_group=1).tolist() == [[0]]
    # k_group=2: (7+7)=14 -> 7; then 7-7=0.
    assert gemm(x, w, acc_bits=4, k_group=2).tolist() == [[0]]
    # k_group=3: exact group sum 7 fits.
    assert gemm(x, w, acc_bits=4, k_group=3).tolist() == [[7]]
    # A group larger than K is one group.
    assert gemm(x, w, acc_bits=4, k_group=8).tolist() == [[7]]
    # Without saturation every order agrees.
    assert gemm(x, w).tolist() == [[7]]


def test_gemm_ragged_last_group():
    # 3-bit accumulator (-4..3), K = 5 in groups of 2: [3, 3] = 6 -> 3; [3, -3] = 0 -> 3; [-4] -> -1.
    # One product per step: 3; 6 -> 3; 6 -> 3; 0; -4.
    x = np.array([[3, 3, 3, -3, -4]])
    w = np.ones((5, 1), dtype=int)
    assert gemm(x, w, acc_bits=3, k_group=2).tolist() == [[-1]]
    assert gemm(x, w, acc_bits=3, k_group=1).tolist() == ref_gemm(x, w, 3, 1) == [[-4]]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4), st.integers(0, 9), st.integers(1, 4), st.integers(1, 12), st.integers(1, 6),
    st.integers(0, 2**32 - 1),
)
def test_gemm_hypothesis_vs_reference(m, k, n, acc_bits, k_group, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(m, k))
    w = rng.integers(-128, 128, size=(k, n))
    assert gemm(x, w, acc_bits=acc_bits, k_group=k_group).tolist() == ref_gemm(
        x, w, acc_bits, k_group)


def test_gemm_large_values_exact():
    x = np.array([[2**40, -(2**40)]], dtype=np.int64)
    w = np.array([[2**21], [2**21 - 1]], dtype=np.int64)
    assert gemm(x, w).tolist() == [[2**40]]
    assert gemm(x, w, acc_bits=63).tolist() == [[2**40]]
    # 62 bits: the first product 2**61 saturates to 2**61 - 1 before the second is added.
    assert gemm(x, w, acc_bits=62).tolist() == [[2**40 - 1]] == ref_gemm(x, w, 62, 1)
    assert gemm(x, w, acc_bits=40, k_group=1).tolist() == ref_gemm(x, w, 40, 1)
    with pytest.raises(OverflowError, match=r"^gemm result does not fit in int64"):
        gemm(np.array([[2**62, 2**62]]), np.array([[2], [2]]))


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "message"),
    [
        (([[1, 2]], [[1]]), {}, ValueError,
         r"^x and w must agree on K, not x of shape \(1, 2\) and w of shape"),
        (([1, 2], [[1], [2]]), {}, ValueError, r"^x must be a 2-D array, not an array of shape \(2,\)$"),
        (([[1.0]], [[1]]), {}, TypeError, r"^x must hold integers, not dtype float64$"),
        (([[1]], [[1]]), {"acc_bits": 0}, ValueError, r"^acc_bits must be an integer in 1..64, not 0$"),
        (([[1]], [[1]]), {"k_group": 0}, ValueError, r"^k_group must be an integer >= 1, not 0$"),
        (([[1]], [[1]]), {"k_group": 1.5}, TypeError, r"^k_group must be an integer >= 1, not 1.5$"),
    ],
)
def test_gemm_validation(args, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        gemm(*args, **kwargs)


# --- required_acc_bits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((1, 8, True, 8, True), 16),  # max product 16384 = -128 * -128 needs 16 bits
        ((2, 8, True, 8, True), 17),  # 32768
        ((1, 8, False, 8, False), 17),  # 65025
        ((1, 8, False, 8, True), 16),  # -32640..32385
        ((1024, 8, True, 8, True), 26),  # 1024 * 16384 = 2**24 > 2**24 - 1
        ((1, 1, True, 1, True), 2),  # (-1) * (-1) = 1
        ((1, 1, False, 1, False), 2),  # 1 * 1 = 1
        ((3, 1, True, 1, False), 3),  # -3..0
    ],
)
def test_required_acc_bits_values(args, expected):
    assert required_acc_bits(*args) == expected


def _signed_fits(value, bits):
    return -(2 ** (bits - 1)) <= value <= 2 ** (bits - 1) - 1


@pytest.mark.parametrize("k", [1, 2, 3, 7])
@pytest.mark.parametrize(("a_bits", "w_bits"), [(1, 3), (3, 3), (4, 2), (2, 5)])
@pytest.mark.parametrize(("a_signed", "w_signed"), list(itertools.product([False, True], repeat=2)))
def test_required_acc_bits_tight(k, a_bits, w_bits, a_signed, w_signed):
    """Brute force over every operand pair: the width holds every sum, and one sum needs all of it."""
    def values(bits, signed):
        return range(-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else range(2**bits)

    products = [a * b for a in values(a_bits, a_signed) for b in values(w_bits, w_signed)]
    pmin, pmax = min(products), max(products)
    bits = required_acc_bits(k, a_bits, a_signed, w_bits, w_signed)
    assert _signed_fits(k * pmin, bits) and _signed_fits(k * pmax, bits)
    assert not (_signed_fits(k * pmin, bits - 1) and _signed_fits(k * pmax, bits - 1))
    # The extreme sum is reachable and saturates an accumulator one bit narrower.
    for p in (pmin, pmax):
        a, b = next((a, b) for a in values(a_bits, a_signed) for b in values(w_bits, w_signed) if a * b == p)
        x, w = np.full((1, k), a), np.full((k, 1), b)
        assert gemm(x, w, acc_bits=bits).tolist() == [[k * p]]
    worst = max((pmin, pmax), key=lambda p: not _signed_fits(k * p, bits - 1))
    a, b = next((a, b) for a in values(a_bits, a_signed) for b in values(w_bits, w_signed) if a * b == worst)
    if bits > 1:
        assert gemm(np.full((1, k), a), np.full((k, 1), b), acc_bits=bits - 1).tolist() != [[k * worst]]


def test_required_acc_bits_validation():
    with pytest.raises(ValueError, match=r"^k must be an integer >= 1, not 0$"):
        required_acc_bits(0, 8, True, 8, True)
    with pytest.raises(ValueError, match=r"^a_bits must be an integer in 1..64, not 0$"):
        required_acc_bits(1, 0, True, 8, True)
    with pytest.raises(TypeError, match=r"^w_signed must be a bool, not 1$"):
        required_acc_bits(1, 8, True, 8, 1)


# --- bias, RequantParams, the whole datapath ---------------------------------------------------------


def test_bias_add_saturates_to_int32():
    acc = np.array([[INT32_MAX, INT32_MIN, 0, 2**40]])
    got = bias_add(acc, np.array([1, -1, -5, -(2**40) + 7]))
    assert got.tolist() == [[INT32_MAX, INT32_MIN, -5, 7]]
    big = np.array([2**63 - 1, -(2**63), 2**62 + 5])
    assert bias_add(big, np.array([-(2**63), 2**63 - 1, -(2**62)])).tolist() == [-1, -1, 5]
    assert bias_add(np.array([[1, 2]]), 3).tolist() == [[4, 5]]
    with pytest.raises(ValueError, match=r"^bias must be a scalar or a vector over the last axis of acc"):
        bias_add(np.zeros((2, 3), dtype=int), [1, 2])


def ref_requant(acc, mult, shift, zp, lo, hi):
    ab = acc * mult
    nudge = 2**30 if ab >= 0 else 1 - 2**30
    high = int(Fraction(ab + nudge, 2**31))
    q = Fraction(high, 2**shift)
    mag = int(abs(q) + Fraction(1, 2))
    return min(max(zp + (mag if q >= 0 else -mag), lo), hi)


def test_mac_array_reference_end_to_end():
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, size=(6, 40))
    w = rng.integers(-128, 128, size=(40, 3))
    bias = np.array([1000, -2**31 + 5, 2**31 - 5])
    params = RequantParams(mult=(1518500250, 2**30, INT32_MAX), shift=(9, 0, 31), zero_point=-5,
                           out_min=-100, out_max=120)
    raw = mac_array_reference(x, w, bias)
    acc = ref_gemm(x, w)
    expected_raw = [[min(max(acc[i][j] + int(bias[j]), INT32_MIN), INT32_MAX) for j in range(3)]
                    for i in range(6)]
    assert raw.tolist() == expected_raw
    got = mac_array_reference(x, w, bias, params)
    expected = [[ref_requant(expected_raw[i][j], params.mult[j], params.shift[j], -5, -100, 120)
                 for j in range(3)] for i in range(6)]
    assert got.tolist() == expected
    # Narrow accumulator and k_group flow through.
    narrow = mac_array_reference(x, w, None, None, acc_bits=12, k_group=4)
    assert narrow.tolist() == ref_gemm(x, w, 12, 4)


def test_requant_params_validation():
    p = RequantParams(mult=np.array([1, 2]), shift=[3, 4])
    assert p.mult == (1, 2) and p.shift == (3, 4) and p.channels == 2
    assert (p.zero_point, p.out_min, p.out_max) == (0, -128, 127)
    with pytest.raises(ValueError, match=r"^mult must hold integers in 0..2147483647, not 2147483648$"):
        RequantParams(mult=[2**31], shift=[0])
    with pytest.raises(ValueError, match=r"^shift must hold integers in 0..31, not 32$"):
        RequantParams(mult=[1], shift=[32])
    with pytest.raises(ValueError, match=r"^shift must have one entry per channel of mult \(2\), not 1$"):
        RequantParams(mult=[1, 2], shift=[0])
    with pytest.raises(ValueError, match=r"^zero_point must be an integer in -32768..32767, not 40000$"):
        RequantParams(mult=[1], shift=[0], zero_point=40000)
    with pytest.raises(ValueError, match=r"^out_min must be <= out_max, not out_min=3, out_max=2$"):
        RequantParams(mult=[1], shift=[0], out_min=3, out_max=2)
    with pytest.raises(TypeError, match=r"^mult must hold integers in 0..2147483647, not 0.5$"):
        RequantParams(mult=[0.5], shift=[0])
    with pytest.raises(TypeError, match=r"^requant must be a RequantParams or None"):
        mac_array_reference([[1]], [[1]], requant=(1, 0))
    with pytest.raises(ValueError, match=r"^requant must have one channel per output column \(1\), not 2$"):
        mac_array_reference([[1]], [[1]], requant=RequantParams(mult=[1, 1], shift=[0, 0]))
