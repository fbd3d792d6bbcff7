"""The demo network: digits MLP, int8 quantization in the MAC array's format, int8 reference."""

import numpy as np
import pytest

from npuforge.models import (
    DIGITS_INPUT_SCALE,
    FloatMLP,
    QuantizedMLP,
    QuantLayer,
    load_digits_split,
    quantize_mlp,
    train_digits_mlp,
)
from npuforge.sim.golden import RequantParams, requantize, required_acc_bits

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


@pytest.fixture(scope="module")
def float_model(split):
    return train_digits_mlp(split=split)


@pytest.fixture(scope="module")
def qmodel(float_model, split):
    return quantize_mlp(float_model, split.x_train)


# ----------------------------------------------------------------- an independent Python-int reference
# Written from the documented equations (gemmlowp's SaturatingRoundingDoublingHighMul and
# RoundingDivideByPOT), with Python integers only: no NumPy arithmetic, no floats.


def _srdhm_int(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudged = ab + (2**30 if ab >= 0 else 1 - 2**30)
    q = abs(nudged) // 2**31  # the division truncates toward zero
    return q if nudged >= 0 else -q


def _rdbpot_int(x: int, shift: int) -> int:
    mask = (1 << shift) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> shift) + (1 if remainder > threshold else 0)


def _layer_int(x_row, w, bias, mult, shift, zero_point, out_min, out_max):
    out = []
    for n in range(len(bias)):
        acc = sum(int(x_row[k]) * int(w[k][n]) for k in range(len(x_row)))
        y32 = min(max(acc + int(bias[n]), INT32_MIN), INT32_MAX)
        y = zero_point + _rdbpot_int(_srdhm_int(y32, int(mult[n])), int(shift[n]))
        out.append(min(max(y, out_min), out_max))
    return out


def test_int_reference_hand_vectors():
    # Tie behaviour of the two rounding steps, from the equations: srdhm ties go to +inf,
    # rounding_divide_by_pot ties go away from zero.
    assert _srdhm_int(1, 2**30) == 1  # 0.5 -> 1
    assert _srdhm_int(-1, 2**30) == 0  # -0.5 -> 0
    assert _srdhm_int(-3, 2**30) == -1  # -1.5 -> -1
    assert _rdbpot_int(3, 1) == 2 and _rdbpot_int(-3, 1) == -2  # +-1.5 -> +-2
    assert _rdbpot_int(5, 2) == 1 and _rdbpot_int(-5, 2) == -1  # +-1.25 -> +-1
    assert _layer_int([1, 2], [[3], [4]], [5], [2**30], [1], 0, -128, 127) == [4]  # 16 / 2 / 2


# ---------------------------------------------------------------------------------------- the data


def test_split_shapes_and_stratification(split):
    assert split.x_train.shape == (1437, 64) and split.x_test.shape == (360, 64)
    assert split.y_train.shape == (1437,) and split.y_test.shape == (360,)
    for x in (split.x_train, split.x_test):
        assert np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() <= 16
    # Stratified: every class has 20 % of its images (rounded) in the test split.
    total = np.bincount(split.y_train, minlength=10) + np.bincount(split.y_test, minlength=10)
    assert np.all(np.abs(np.bincount(split.y_test, minlength=10) - 0.2 * total) <= 1)


def test_split_is_deterministic(split):
    again = load_digits_split()
    for a, b in zip(split, again):
        assert np.array_equal(a, b)
    other = load_digits_split(seed=1)
    assert not np.array_equal(split.y_test, other.y_test)


# ------------------------------------------------------------------------------------------ figures


def test_accuracy_figures(float_model, qmodel, split):
    float_acc = np.mean(float_model.predict(split.x_test) == split.y_test)
    int8_acc = np.mean(qmodel.predict(qmodel.quantize_input(split.x_test)) == split.y_test)
    assert float_acc >= 0.95
    assert int8_acc >= 0.95
    assert abs(float_acc - int8_acc) <= 0.01


def test_structure(float_model, qmodel):
    assert float_model.layer_sizes == (64, 32, 10) == qmodel.layer_sizes
    assert qmodel.macs_per_inference == 64 * 32 + 32 * 10
    hidden, out = qmodel.layers
    # ReLU by the clamp: zero point -128 is the real 0, and nothing below it survives.
    assert hidden.relu and hidden.zero_point == hidden.out_min == -128 and hidden.out_max == 127
    assert not out.relu and (out.out_min, out.out_max) == (-128, 127)
    assert out.in_scale == hidden.out_scale and out.in_zero_point == hidden.zero_point
    for layer in qmodel.layers:
        assert layer.w.dtype == np.int8 and layer.bias.dtype == np.int32
        # Symmetric weights: -128 is never used, every non-dead column reaches +-127.
        assert layer.w.min() >= -127
        assert isinstance(layer.requant, RequantParams)
        assert layer.requant.mult == tuple(int(m) for m in layer.mult)


def test_requant_multipliers_match_scales(float_model, qmodel):
    # mult * 2**-(31 + shift) must approximate in_scale * w_scale / out_scale with w_scale from the
    # documented per-channel rule (max |W| / 127), to Q31 precision.
    for layer, w_f in zip(qmodel.layers, float_model.weights):
        w_scale = np.abs(w_f).max(axis=0) / 127
        real = layer.in_scale * w_scale / layer.out_scale
        approx = layer.mult.astype(np.float64) * 2.0 ** -(31 + layer.shift.astype(np.float64))
        live = np.abs(layer.w).max(axis=0) == 127
        assert live.sum() >= layer.out_features // 2
        np.testing.assert_allclose(approx[live], real[live], rtol=2**-29)


def test_inputs_are_exact(qmodel, split):
    x_q = qmodel.quantize_input(split.x_test)
    assert x_q.dtype == np.int8
    assert np.array_equal(x_q, split.x_test.astype(np.int64))
    first = qmodel.layers[0]
    assert (first.in_scale, first.in_zero_point) == (DIGITS_INPUT_SCALE, 0)
    assert np.array_equal(qmodel.quantize_input(split.x_test[5]), x_q[5:6])


def test_int8_tracks_float(float_model, qmodel, split):
    # Dequantized int8 activations follow the float network: on average within half an output step
    # (a wrongly signed zero-point fold or a wrong scale would be off by many steps).
    x_q = qmodel.quantize_input(split.x_test)
    for layer, y_q, y_f in zip(qmodel.layers, qmodel.forward_int8(x_q), float_model.forward(split.x_test)):
        err = np.abs(layer.out_scale * (y_q.astype(np.float64) - layer.zero_point) - y_f) / layer.out_scale
        assert err.mean() < 0.5
        assert np.percentile(err, 99) < 2.0


# -------------------------------------------------------------------------------- determinism, files


def test_training_and_quantization_are_deterministic(qmodel, split):
    again = quantize_mlp(train_digits_mlp(split=split), split.x_train)
    for a, b in zip(qmodel.layers, again.layers):
        for name in ("w", "bias", "mult", "shift"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
        assert (a.zero_point, a.out_scale, a.in_scale) == (b.zero_point, b.out_scale, b.in_scale)


def test_npz_round_trip(qmodel, float_model, split, tmp_path):
    path = tmp_path / "digits_int8.npz"
    qmodel.save_npz(path)
    loaded = QuantizedMLP.load_npz(path)
    assert loaded.input_scale == qmodel.input_scale
    assert len(loaded.layers) == len(qmodel.layers)
    for a, b in zip(qmodel.layers, loaded.layers):
        for name in ("w", "bias", "mult", "shift"):
            assert getattr(a, name).dtype == getattr(b, name).dtype
            assert np.array_equal(getattr(a, name), getattr(b, name))
        for name in ("zero_point", "out_min", "out_max", "in_scale", "in_zero_point", "out_scale", "relu"):
            assert getattr(a, name) == getattr(b, name)
            assert type(getattr(a, name)) is type(getattr(b, name))
    x_q = qmodel.quantize_input(split.x_test[:50])
    for a, b in zip(qmodel.forward_int8(x_q), loaded.forward_int8(x_q)):
        assert np.array_equal(a, b)

    fpath = tmp_path / "digits_float.npz"
    float_model.save_npz(fpath)
    floaded = FloatMLP.load_npz(fpath)
    for a, b in zip(float_model.weights + float_model.biases, floaded.weights + floaded.biases):
        assert np.array_equal(a, b)
    assert floaded.input_scale == float_model.input_scale

    wrong_kind = r"^path must be an \.npz file written by save_npz of a "
    with pytest.raises(ValueError, match=wrong_kind + "quantized_mlp"):
        QuantizedMLP.load_npz(fpath)
    with pytest.raises(ValueError, match=wrong_kind + "float_mlp"):
        FloatMLP.load_npz(path)


# ------------------------------------------------------------------------------- bit-exact reference


def test_forward_int8_equals_python_int_reference(qmodel, split):
    rng = np.random.default_rng(5)
    rows = rng.choice(len(split.x_test), size=12, replace=False)
    x_q = qmodel.quantize_input(split.x_test[rows])
    # Random int8 inputs too: they reach the negative codes and the clamps that pixels do not.
    x_rand = rng.integers(-128, 128, size=(4, 64)).astype(np.int8)
    for batch in (x_q, x_rand):
        outs = qmodel.forward_int8(batch)
        assert all(o.dtype == np.int8 for o in outs)
        for m in range(batch.shape[0]):
            a = [int(v) for v in batch[m]]
            for layer, out in zip(qmodel.layers, outs):
                a = _layer_int(a, layer.w.tolist(), layer.bias.tolist(), layer.mult.tolist(),
                               layer.shift.tolist(), layer.zero_point, layer.out_min, layer.out_max)
                assert a == out[m].tolist()


def test_predict_is_argmax_of_int8_logits(qmodel, split):
    x_q = qmodel.quantize_input(split.x_test[:40])
    logits = qmodel.forward_int8(x_q)[-1]
    assert np.array_equal(qmodel.predict(x_q), [int(np.argmax(row)) for row in logits])


def test_saturating_accumulator_wide_enough_is_exact(qmodel, split):
    x_q = qmodel.quantize_input(split.x_test)
    bits = required_acc_bits(64, 8, True, 8, True)
    for a, b in zip(qmodel.forward_int8(x_q), qmodel.forward_int8(x_q, acc_bits=bits)):
        assert np.array_equal(a, b)


def _unfolded_check(layer, b_f, w_f, x_q):
    """The folded bias gives what subtracting the input zero point first gives, in wide integers."""
    zp = layer.in_zero_point
    w = layer.w.astype(object)
    unfolded = [int(layer.bias[n]) + zp * int(w[:, n].sum()) for n in range(layer.out_features)]
    # The unfolded bias is the documented round(b / (in_scale * w_scale)).
    w_scale = np.abs(w_f).max(axis=0) / 127
    assert unfolded == [int(v) for v in np.round(b_f / (layer.in_scale * w_scale))]
    centred = x_q.astype(object) - zp  # -128..127 minus the zero point: outside int8, held as ints
    acc = centred.dot(w) + np.array(unfolded, dtype=object)
    expect = requantize(np.clip(acc.astype(np.int64), INT32_MIN, INT32_MAX), layer.mult, layer.shift,
                        zero_point=layer.zero_point, out_min=layer.out_min, out_max=layer.out_max)
    assert np.array_equal(layer.forward_int8(x_q), expect)


def test_bias_folding_hidden_zero_point(qmodel, float_model, split):
    # The output layer's input is the ReLU output: zero point -128, nonzero.
    hidden, out = qmodel.layers
    assert out.in_zero_point == -128
    h_q = hidden.forward_int8(qmodel.quantize_input(split.x_test[:64]))
    rng = np.random.default_rng(9)
    h_rand = rng.integers(-128, 128, size=(16, hidden.out_features)).astype(np.int8)
    for x in (h_q, h_rand):
        _unfolded_check(out, float_model.biases[1], float_model.weights[1], x)


def test_bias_folding_asymmetric_input():
    # Non-integer calibration data: the input gets an asymmetric scale with a nonzero zero point.
    rng = np.random.default_rng(3)
    model = FloatMLP(weights=(rng.normal(0, 0.5, (6, 5)), rng.normal(0, 0.5, (5, 3))),
                     biases=(rng.normal(0, 0.2, 5), rng.normal(0, 0.2, 3)), input_scale=1.0)
    calib = rng.uniform(0.3, 2.7, size=(200, 6))
    q = quantize_mlp(model, calib, percentile=100)
    first = q.layers[0]
    assert first.in_zero_point != 0
    x_q = q.quantize_input(calib)
    _unfolded_check(first, model.biases[0], model.weights[0], x_q)
    # And the whole network still follows the float one (the fold has the right sign).
    y_f = model.forward(calib)[-1]
    last = q.layers[-1]
    y = last.out_scale * (q.forward_int8(x_q)[-1].astype(np.float64) - last.zero_point)
    assert np.abs(y - y_f).max() < 3 * last.out_scale


def test_dead_unit_keeps_its_bias():
    # Weight decay leaves dead units with weights near 1e-50: the bias must still be represented.
    rng = np.random.default_rng(4)
    w0 = rng.normal(0, 0.5, (4, 3))
    w0[:, 1] = 1e-50
    b0 = np.array([0.1, 0.3, -0.2])
    model = FloatMLP(weights=(w0, rng.normal(0, 0.5, (3, 2))), biases=(b0, np.zeros(2)), input_scale=1.0)
    calib = rng.uniform(0, 1, size=(100, 4))
    q = quantize_mlp(model, calib, percentile=100)
    hidden = q.layers[0]
    assert np.all(hidden.w[:, 1] == 0)
    h = hidden.forward_int8(q.quantize_input(calib))
    np.testing.assert_allclose(hidden.out_scale * (h[:, 1] - hidden.zero_point), 0.3,
                               atol=hidden.out_scale)


def test_deeper_network():
    model = train_digits_mlp(hidden=(16, 12), seed=1, max_iter=60)
    assert model.layer_sizes == (64, 16, 12, 10)
    split = load_digits_split()
    q = quantize_mlp(model, split.x_train)
    assert [layer.relu for layer in q.layers] == [True, True, False]
    assert q.macs_per_inference == 64 * 16 + 16 * 12 + 12 * 10
    agree = np.mean(q.predict(q.quantize_input(split.x_test)) == model.predict(split.x_test))
    assert agree >= 0.95


# -------------------------------------------------------------------------------------------- errors


def test_parameter_errors(qmodel, float_model, split):
    layer = qmodel.layers[0]
    fields = {name: getattr(layer, name) for name in ("w", "bias", "mult", "shift", "zero_point",
                                                      "out_min", "out_max", "in_scale",
                                                      "in_zero_point", "out_scale", "relu")}
    with pytest.raises(ValueError, match=r"^w must hold integers in -128\.\.127, not 200$"):
        QuantLayer(**{**fields, "w": np.full((64, 32), 200)})
    with pytest.raises(TypeError, match=r"^w must be an integer array of shape \(K, N\), not dtype float64$"):
        QuantLayer(**{**fields, "w": np.zeros((64, 32))})
    with pytest.raises(ValueError, match=r"^shift must have shape \(32,\) \(one entry per column of w\)"):
        QuantLayer(**{**fields, "shift": np.zeros(31, dtype=np.int64)})
    with pytest.raises(ValueError, match=r"^shift must hold integers in 0\.\.31, not 32$"):
        QuantLayer(**{**fields, "shift": np.full(32, 32)})
    with pytest.raises(ValueError, match=r"^zero_point must be an integer in -128\.\.127, not 128$"):
        QuantLayer(**{**fields, "zero_point": 128})
    with pytest.raises(ValueError, match=r"^out_scale must be a positive finite real number, not 0\.0$"):
        QuantLayer(**{**fields, "out_scale": 0.0})
    with pytest.raises(TypeError, match=r"^relu must be a bool, not 1$"):
        QuantLayer(**{**fields, "relu": 1})
    with pytest.raises(ValueError, match=r"^layers\[1\] must have 32 inputs"):
        QuantizedMLP(layers=(layer, layer))
    with pytest.raises(ValueError, match=r"^x_q must hold integers in -128\.\.127, not 300$"):
        qmodel.forward_int8(np.full((2, 64), 300))
    with pytest.raises(ValueError, match=r"^x_q must be an array of shape \(M, 64\), not shape \(2, 63\)$"):
        qmodel.forward_int8(np.zeros((2, 63), dtype=np.int8))
    with pytest.raises(ValueError, match=r"^percentile must be a real number in \(50, 100\], not 10$"):
        quantize_mlp(float_model, split.x_train, percentile=10)
    with pytest.raises(TypeError, match=r"^float_model must be a FloatMLP"):
        quantize_mlp("model", split.x_train)
    with pytest.raises(ValueError, match=r"^calib_x must be an array of shape \(M, 64\), not shape \(3, 8\)"):
        quantize_mlp(float_model, np.zeros((3, 8)))
    with pytest.raises(ValueError, match=r"^hidden must be an integer in 1\.\.4096, not 0$"):
        train_digits_mlp(hidden=(0,))
    with pytest.raises(ValueError, match=r"^seed must be an integer in 0\.\.4294967295, not -1$"):
        load_digits_split(seed=-1)
    with pytest.raises(ValueError, match=r"^test_size must be a real number in \(0, 1\), not 1\.5$"):
        load_digits_split(test_size=1.5)
    with pytest.raises(ValueError, match=r"^weights\[1\] must have 32 rows"):
        FloatMLP(weights=(np.zeros((64, 32)), np.zeros((31, 10))), biases=(np.zeros(32), np.zeros(10)))
