"""The MAC-array generator against the NumPy golden model, bit for bit."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npuforge.generators import MacArray, MacArrayConfig
from npuforge.sim.gemm import simulate_gemm
from npuforge.sim.golden import RequantParams, mac_array_reference, required_acc_bits

SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _rand(rng, shape, bits, is_signed):
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if is_signed else (0, 1 << bits)
    return rng.integers(lo, hi, size=shape, dtype=np.int64)


def _check(cfg, x, w, bias=None, requant=None, **kw):
    result = simulate_gemm(cfg, x, w, bias, requant, **kw)
    expected = mac_array_reference(x, w, bias, requant, acc_bits=cfg.accumulator_bits,
                                   k_group=cfg.k_group)
    np.testing.assert_array_equal(result.y, expected)
    return result


# -- randomized shapes, tiling, both dataflows -------------------------------------------------

@SETTINGS
@given(dataflow=st.sampled_from(["os", "ws"]), rows=st.integers(1, 4), cols=st.integers(1, 4),
       m=st.integers(1, 9), k=st.integers(1, 11), n=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_random_shapes_int8(dataflow, rows, cols, m, k, n, seed):
    rng = np.random.default_rng(seed)
    cfg = MacArrayConfig(rows=rows, cols=cols, dataflow=dataflow, max_m=9, max_k=11, max_n=9)
    _check(cfg, _rand(rng, (m, k), 8, True), _rand(rng, (k, n), 8, True),
           rng.integers(-(2**31), 2**31, size=n))


@pytest.mark.parametrize("kwargs", [
    {"multiplier": "dsp"}, {"multiplier": "dsp", "mul_latency": 1, "dataflow": "ws"},
    {"multiplier": "mixed", "dsp_blocks": 3}, {"multiplier": "dsp", "in_bits": 12},
    {"multiplier": "lut", "mul_latency": 2}, {"multiplier": "dsp", "in_signed": False, "mul_latency": 0},
    {"multiplier": "dsp", "mul_latency": 3},
    {"multiplier": "mixed", "dsp_blocks": 3, "lut_multiplier": "carry", "mul_latency": 3},
    {"multiplier": "mixed", "dsp_blocks": 3, "lut_multiplier": "carry", "mul_latency": 3, "dataflow": "ws"},
])
def test_multiplier_allocations(kwargs):
    # DSP-block PEs (dual 8x8 or 16x16 models), pipelined LUT PEs and mixes: same results.
    rng = np.random.default_rng(21)
    cfg = MacArrayConfig(rows=3, cols=3, max_m=7, max_k=8, max_n=5, **kwargs)
    _check(cfg, _rand(rng, (7, 8), cfg.in_bits, cfg.in_signed), _rand(rng, (8, 5), 8, True))
    pes_on_dsp = {"dsp": 9, "mixed": 6}.get(cfg.multiplier, 0)
    assert cfg.dsp_pes == pes_on_dsp
    assert cfg.estimate_resources()["dsp"] == -(-pes_on_dsp // cfg.pes_per_dsp)


@SETTINGS
@given(dataflow=st.sampled_from(["os", "ws"]), rows=st.integers(1, 4), cols=st.integers(1, 5),
       latency=st.integers(1, 4),
       dsp_blocks=st.sampled_from([None, 0, 1, 3]),
       in_type=st.sampled_from([(8, True), (8, False), (5, True), (12, True)]),
       w_type=st.sampled_from([(8, True), (8, False), (6, True), (4, False)]),
       m=st.integers(1, 9), k=st.integers(1, 11), n=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_carry_chain_pes(dataflow, rows, cols, latency, dsp_blocks, in_type, w_type, m, k, n, seed):
    # Carry-chain logic PEs (alone or beside DSP PEs), any latency they allow, ragged tiles.
    (a_bits, a_signed), (b_bits, b_signed) = in_type, w_type
    latency = min(latency, b_bits, 3 if dsp_blocks else 4)
    dsp = {} if dsp_blocks is None else {"multiplier": "mixed",
                                         "dsp_blocks": min(dsp_blocks, rows * cols // 2)}
    cfg = MacArrayConfig(rows=rows, cols=cols, dataflow=dataflow, in_bits=a_bits,
                         in_signed=a_signed, w_bits=b_bits,
                         w_signed=b_signed, lut_multiplier="carry", mul_latency=latency,
                         max_m=9, max_k=11, max_n=9, **dsp)
    rng = np.random.default_rng(seed)
    _check(cfg, _rand(rng, (m, k), a_bits, a_signed), _rand(rng, (k, n), b_bits, b_signed),
           rng.integers(-(2**31), 2**31, size=n))


@pytest.mark.parametrize("latency", [2, 3, 4])
def test_carry_chain_ws_weights_wait_for_products_in_flight(latency):
    # M = 1: a weight load follows every single compute beat, while its product is still in the
    # carry rows that read the stationary weight stage by stage.
    cfg = MacArrayConfig(rows=2, cols=2, dataflow="ws", lut_multiplier="carry", mul_latency=latency,
                         max_m=4, max_k=16, max_n=8)
    rng = np.random.default_rng(latency)
    for m in (1, 3):
        _check(cfg, _rand(rng, (m, 11), 8, True), _rand(rng, (11, 5), 8, True))


@pytest.mark.parametrize("latency", [2, 3])
@pytest.mark.parametrize("kwargs", [{"multiplier": "dsp"},
                                    {"multiplier": "mixed", "dsp_blocks": 3, "lut_multiplier": "carry"}])
def test_ws_dsp_pes_hold_weights_in_the_block(latency, kwargs):
    # Weight-stationary DSP PEs keep their weight in the SB_MAC16's B register (BHOLD); a new
    # weight row waits one beat for the product of the last one (M = 1 is the tightest case).
    cfg = MacArrayConfig(rows=3, cols=4, dataflow="ws", mul_latency=latency, max_m=4, max_k=16,
                         max_n=8, **kwargs)
    assert cfg.dsp_weight_hold
    rng = np.random.default_rng(latency)
    for m in (1, 4):
        _check(cfg, _rand(rng, (m, 11), 8, True), _rand(rng, (11, 7), 8, True))


def test_dsp_weight_hold_conditions():
    ws = dict(dataflow="ws", multiplier="dsp", mul_latency=2, rows=2, cols=4)
    assert MacArrayConfig(**ws).dsp_weight_hold
    for change in ({"dataflow": "os"}, {"mul_latency": 1}, {"cols": 3}, {"operand_gating": True},
                   {"in_bits": 12}):
        assert not MacArrayConfig(**{**ws, **change}).dsp_weight_hold, change


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_carry_chain_extremes_and_requant(dataflow):
    # Every operand at its extreme (-128 * -128 everywhere) and requantized outputs.
    cfg = MacArrayConfig(rows=2, cols=3, dataflow=dataflow, lut_multiplier="carry", mul_latency=3,
                         max_m=5, max_k=64, max_n=4)
    x = np.full((5, 64), -128)
    w = np.full((64, 4), -128)
    w[:, 1] = 127
    _check(cfg, x, w)
    rng = np.random.default_rng(8)
    x, w = _rand(rng, (5, 30), 8, True), _rand(rng, (30, 4), 8, True)
    requant = RequantParams(mult=rng.integers(1 << 29, 1 << 31, size=4), shift=rng.integers(0, 12, size=4),
                            zero_point=-3, out_min=-128, out_max=127)
    _check(cfg, x, w, rng.integers(-5000, 5000, size=4), requant)


@SETTINGS
@given(dataflow=st.sampled_from(["os", "ws"]),
       in_type=st.sampled_from([(4, True), (4, False), (8, False), (16, True), (2, True)]),
       w_type=st.sampled_from([(4, True), (8, True), (16, False), (3, False)]),
       seed=st.integers(0, 2**16))
def test_operand_types(dataflow, in_type, w_type, seed):
    rng = np.random.default_rng(seed)
    cfg = MacArrayConfig(rows=2, cols=3, dataflow=dataflow, in_bits=in_type[0], in_signed=in_type[1],
                         w_bits=w_type[0], w_signed=w_type[1], max_m=8, max_k=8, max_n=8)
    m, k, n = (int(v) for v in rng.integers(1, 9, size=3))
    _check(cfg, _rand(rng, (m, k), *in_type), _rand(rng, (k, n), *w_type))


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_extreme_values_no_overflow(dataflow):
    # -128 x -128 summed over the largest K the buffers allow: the derived accumulator must hold it.
    k = 24
    cfg = MacArrayConfig(rows=3, cols=2, dataflow=dataflow, max_m=5, max_k=k, max_n=3)
    x = np.full((5, k), -128)
    w = np.full((k, 3), -128)
    w[:, 1] = 127
    res = _check(cfg, x, w)
    assert res.y[0, 0] == k * 16384 and res.y[0, 1] == -128 * 127 * k


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_k_equals_one_and_single_pe(dataflow):
    rng = np.random.default_rng(5)
    cfg = MacArrayConfig(rows=1, cols=1, dataflow=dataflow, max_m=4, max_k=4, max_n=4)
    _check(cfg, _rand(rng, (4, 1), 8, True), _rand(rng, (1, 4), 8, True))
    cfg = MacArrayConfig(rows=4, cols=4, dataflow=dataflow, max_m=7, max_k=4, max_n=7)
    _check(cfg, _rand(rng, (7, 1), 8, True), _rand(rng, (1, 7), 8, True))


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_saturating_accumulator(dataflow):
    # A 17-bit accumulator saturates with int8 operands after a few large products; the order of
    # saturation differs between the dataflows (k_group), and the golden model follows each.
    cfg = MacArrayConfig(rows=2, cols=2, dataflow=dataflow, acc_bits=17, max_m=4, max_k=12, max_n=4)
    assert cfg.saturating
    x = np.array([[127] * 6 + [-128] * 6, [-128] * 12, [100, -100] * 6, [5] * 12])
    w = np.array([[127, -128, 1, 0]] * 12)
    w[6:, 2] = -1
    _check(cfg, x, w)
    rng = np.random.default_rng(9)
    _check(cfg, _rand(rng, (4, 12), 8, True), _rand(rng, (12, 4), 8, True))


def test_saturation_order_differs_between_dataflows():
    # Hand-computed with a 16-bit accumulator (max 32767): K = 6, products 16129 four times,
    # then -16129 twice.
    # os, one product per step: 16129, 32258, 32767 (sat), 32767 (sat), 16638, 509.
    # ws with rows=3 adds exact column sums of three: 48387 -> 32767 (sat), then -16129: 16638.
    # ws with rows=6 adds the exact sum of all six once: 32258.
    x = np.array([[127, 127, 127, 127, -127, -127]])
    w = np.full((6, 1), 127)
    expect = {("os", 1): 509, ("ws", 3): 16638, ("ws", 6): 32258}
    for (df, rows), value in expect.items():
        cfg = MacArrayConfig(rows=rows, cols=1, dataflow=df, acc_bits=16, max_m=1, max_k=6, max_n=1)
        assert simulate_gemm(cfg, x, w).y[0, 0] == value, (df, rows)


# -- output stage ---------------------------------------------------------------------------------

@SETTINGS
@given(dataflow=st.sampled_from(["os", "ws"]), out_signed=st.booleans(), relu=st.booleans(),
       radix=st.sampled_from([4, 0]), seed=st.integers(0, 2**16))
def test_requantized_outputs(dataflow, out_signed, relu, radix, seed):
    # radix 0: the bit-serial requantizer.
    rng = np.random.default_rng(seed)
    m, k, n = 5, 7, 6
    cfg = MacArrayConfig(rows=2, cols=4, dataflow=dataflow, out_signed=out_signed,
                         requant_radix=radix, max_m=8, max_k=8, max_n=8)
    lo, hi = (-128, 127) if out_signed else (0, 255)
    zp = int(rng.integers(lo, hi + 1))
    mult = rng.integers(0, 2**31, size=n)
    mult[0], mult[1] = 2**31 - 1, 0
    shift = rng.integers(0, 32, size=n)
    shift[2], shift[3] = 0, 31
    requant = RequantParams(mult=tuple(int(v) for v in mult), shift=tuple(int(v) for v in shift),
                            zero_point=zp, out_min=zp if relu else lo, out_max=hi)
    bias = rng.integers(-(2**31), 2**31, size=n)
    bias[4] = 2**31 - 1     # saturates int32 when added to a positive accumulator
    x = _rand(rng, (m, k), 8, True)
    w = _rand(rng, (k, n), 8, True)
    res = _check(cfg, x, w, bias, requant)
    assert res.y.min() >= requant.out_min and res.y.max() <= requant.out_max


def test_requant_rounding_ties():
    # acc = x @ w chosen so that acc * mult / 2**31 / 2**shift lands exactly on .5 both ways.
    cfg = MacArrayConfig(rows=2, cols=2, max_m=4, max_k=1, max_n=2)
    x = np.array([[3], [-3], [5], [-5]])
    w = np.array([[1, 1]])
    requant = RequantParams(mult=(2**30, 2**30), shift=(1, 0), zero_point=0)
    res = simulate_gemm(cfg, x, w, requant=requant)
    # mult = 2**30 is 0.5 in Q31. gemmlowp's high multiply adds 2**30 (or 1 - 2**30 for a negative
    # product) and truncates: ties go up, so 1.5 -> 2, -1.5 -> -1, 2.5 -> 3, -2.5 -> -2.
    assert list(res.y[:, 1]) == [2, -1, 3, -2]
    # Column 0 then divides by 2 rounding ties away from zero: 2 -> 1, -1 -> -0.5 -> -1,
    # 3 -> 1.5 -> 2, -2 -> -1.
    assert list(res.y[:, 0]) == [1, -1, 2, -1]


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_output_backpressure(dataflow):
    rng = np.random.default_rng(11)
    cfg = MacArrayConfig(rows=2, cols=2, dataflow=dataflow, max_m=6, max_k=5, max_n=6)
    x, w = _rand(rng, (6, 5), 8, True), _rand(rng, (5, 6), 8, True)
    slow = _check(cfg, x, w, backpressure=0.6, seed=3)
    fast = _check(cfg, x, w)
    assert slow.cycles > fast.cycles


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(dataflow=st.sampled_from(["os", "ws"]), rows=st.integers(1, 4), cols=st.integers(1, 4),
       latency=st.integers(0, 2), m=st.integers(1, 9), k=st.integers(1, 11), n=st.integers(1, 9),
       zeros=st.floats(0.0, 1.0), acc_bits=st.sampled_from([None, 17]),
       backpressure=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**16))
def test_operand_gating_exact(dataflow, rows, cols, latency, m, k, n, zeros, acc_bits, backpressure, seed):
    # Gated PEs hold stale operands and (output-stationary) run their accumulator a product behind;
    # ragged tiles, all-zero rows, stalls and saturation must not show in the results.
    rng = np.random.default_rng(seed)
    cfg = MacArrayConfig(rows=rows, cols=cols, dataflow=dataflow, mul_latency=latency, acc_bits=acc_bits,
                         operand_gating=True, max_m=9, max_k=11, max_n=9)
    x = _rand(rng, (m, k), 8, True)
    x[rng.random((m, k)) < zeros] = 0
    w = _rand(rng, (k, n), 8, True)
    w[rng.random((k, n)) < 0.1] = 0
    _check(cfg, x, w, backpressure=backpressure, seed=seed)


# -- cycles, utilization --------------------------------------------------------------------------

@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_cycles_close_to_issue_count(dataflow):
    # Raw outputs leave one per cycle, so a K that covers the drain keeps the array busy: the run
    # takes the beats the sequencer issues plus the pipeline fill and the last drain.
    rng = np.random.default_rng(2)
    cfg = MacArrayConfig(rows=2, cols=2, dataflow=dataflow, max_m=8, max_k=16, max_n=8)
    x, w = _rand(rng, (8, 16), 8, True), _rand(rng, (16, 8), 8, True)
    res = _check(cfg, x, w)
    beats = cfg.compute_cycles(8, 16, 8)
    # The last tile's drain cannot overlap anything: rows*cols results (os), or M rows of `cols`
    # results plus one read cycle each (ws).
    last_drain = cfg.rows * cfg.cols if dataflow == "os" else 8 * (cfg.cols + 1)
    assert beats <= res.cycles <= beats + last_drain + 12
    assert res.utilization == pytest.approx(8 * 16 * 8 / (4 * res.cycles))


def test_output_order_covers_every_element_once():
    for df in ("os", "ws"):
        cfg = MacArrayConfig(rows=3, cols=2, dataflow=df)
        r, c = cfg.output_order(7, 5)
        assert sorted(zip(r.tolist(), c.tolist())) == [(i, j) for i in range(7) for j in range(5)]


# -- configuration ---------------------------------------------------------------------------------

def test_derived_accumulator_matches_golden_bound():
    for in_bits, in_signed, w_bits, w_signed, k in [(8, True, 8, True, 64), (4, False, 8, True, 100),
                                                     (16, True, 16, True, 256), (2, True, 3, False, 1)]:
        cfg = MacArrayConfig(in_bits=in_bits, in_signed=in_signed, w_bits=w_bits, w_signed=w_signed,
                             max_k=k)
        assert cfg.accumulator_bits == required_acc_bits(k, in_bits, in_signed, w_bits, w_signed)
        assert not cfg.saturating


@pytest.mark.parametrize("kwargs,exc,message", [
    ({"rows": 0}, ValueError, "rows must be an integer in 1..64, not 0"),
    ({"cols": 65}, ValueError, "cols must be an integer in 1..64, not 65"),
    ({"rows": 2.5}, TypeError, "rows must be an integer in 1..64, not 2.5"),
    ({"rows": True}, TypeError, "rows must be an integer in 1..64, not True"),
    ({"dataflow": "rs"}, ValueError, "dataflow must be one of 'os', 'ws', not 'rs'"),
    ({"in_bits": 1}, ValueError, "in_bits must be an integer in 2..16, not 1"),
    ({"w_bits": 17}, ValueError, "w_bits must be an integer in 2..16, not 17"),
    ({"in_signed": 1}, TypeError, "in_signed must be True or False, not 1"),
    ({"acc_bits": 12}, ValueError,
     "acc_bits must be at least the product width 16 (in_bits 8 x w_bits 8), not 12"),
    ({"max_k": 0}, ValueError, "max_k must be an integer in 1..65535, not 0"),
    ({"multiplier": "dsp9"}, ValueError,
     "multiplier must be one of 'lut', 'infer', 'dsp', 'mixed', not 'dsp9'"),
    ({"multiplier": "mixed"}, ValueError, "dsp_blocks must be given (0..64) when multiplier is 'mixed'"),
    ({"multiplier": "mixed", "dsp_blocks": 9, "rows": 4, "cols": 4}, ValueError,
     "dsp_blocks must be at most 8 for a 4x4 array, not 9"),
    ({"requant_radix": 32}, ValueError, "requant_radix must be an integer in 0..31, not 32"),
    ({"lut_multiplier": "booth"}, ValueError, "lut_multiplier must be one of 'tree', 'carry', not 'booth'"),
    ({"lut_multiplier": "carry", "operand_gating": True}, ValueError,
     ("operand_gating is not available with lut_multiplier 'carry' (its operands are shared by a row "
     "or column of PEs)")),
    ({"lut_multiplier": "carry", "mul_latency": 0}, ValueError,
     "mul_latency must be in 1..4 with lut_multiplier 'carry' and w_bits 8, not 0"),
    ({"lut_multiplier": "carry", "mul_latency": 3, "w_bits": 2}, ValueError,
     "mul_latency must be in 1..2 with lut_multiplier 'carry' and w_bits 2, not 3"),
    ({"multiplier": "mixed", "dsp_blocks": 2, "lut_multiplier": "carry", "mul_latency": 4}, ValueError,
     "mul_latency must be in 0..3 with SB_MAC16 dual 8x8 PEs, not 4"),
    ({"multiplier": "dsp", "in_bits": 12, "mul_latency": 3}, ValueError,
     "mul_latency must be in 0..2 with SB_MAC16 16x16 PEs, not 3"),
    ({"mul_latency": 3}, ValueError, "mul_latency must be in 0..2 with tree logic multipliers, not 3"),
    ({"multiplier": "infer", "mul_latency": 3}, ValueError,
     "mul_latency must be in 0..2 with inferred multipliers, not 3"),
])
def test_config_errors(kwargs, exc, message):
    with pytest.raises(exc, match="^" + message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.") + "$"):
        MacArrayConfig(**kwargs)


def test_shape_and_operand_errors():
    cfg = MacArrayConfig(max_m=4, max_k=4, max_n=4)
    with pytest.raises(ValueError, match=r"^M must be in 1\.\.4 \(max_m of this array\), not 5$"):
        simulate_gemm(cfg, np.zeros((5, 2), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match=r"^x has 3 columns but w has 2 rows; they must match \(K\)$"):
        simulate_gemm(cfg, np.zeros((2, 3), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match=r"^x values must be in -128\.\.127 \(int8\), not 128$"):
        simulate_gemm(cfg, np.full((2, 2), 128), np.zeros((2, 2), int))
    with pytest.raises(TypeError, match=r"^config must be a MacArrayConfig, not 4$"):
        MacArray(4)


def test_from_dict_rejects_unknown_keys():
    assert MacArrayConfig.from_dict({"rows": 2}).rows == 2
    with pytest.raises(ValueError, match=r"^unknown mac-array parameter 'rowz'"):
        MacArrayConfig.from_dict({"rowz": 2})


def test_vcd_written(tmp_path):
    cfg = MacArrayConfig(rows=2, cols=2, max_m=2, max_k=2, max_n=2)
    path = tmp_path / "gemm.vcd"
    _check(cfg, np.ones((2, 2), int), np.ones((2, 2), int), vcd=path)
    assert path.stat().st_size > 0
