"""Datapath activity: toggles counted from a waveform, and what operand gating saves."""

import numpy as np
import pytest

from npuforge.generators import MacArrayConfig
from npuforge.sim.activity import count_vcd_toggles, datapath_activity
from npuforge.sim.golden import mac_array_reference


def test_count_vcd_toggles_hand_written(tmp_path):
    # Hand-made waveform: a 4-bit bus 0000 -> 0011 (2 toggles) -> 0000 (2) -> 1000 (1);
    # a 1-bit wire x -> 1 (not counted: unknown before) -> 0 (1).
    path = tmp_path / "t.vcd"
    path.write_text("$scope module top $end\n$var wire 4 ! bus $end\n$var wire 1 \" bit $end\n"
                    "$upscope $end\n$enddefinitions $end\n#0\nb0000 !\nx\"\n#1\nb0011 !\n1\"\n"
                    "#2\nb0 !\n0\"\n#3\nb1000 !\n")
    assert count_vcd_toggles(path) == {"top.bus": 5, "top.bit": 1}
    assert count_vcd_toggles(path, lambda name: name.endswith("bus")) == {"top.bus": 5}


def test_count_vcd_toggles_compares_settled_values(tmp_path):
    # Within one timestamp the bus steps 0000 -> 1111 -> 0001 while a simulator's delta cycles
    # settle: only 0000 -> 0001 (1 toggle) is a change of the circuit. Then 0001 -> 0110 -> 0001
    # within #2 is no change at all, and 0001 -> 1001 at #3 is one toggle.
    path = tmp_path / "t.vcd"
    path.write_text("$scope module top $end\n$var wire 4 ! bus $end\n$upscope $end\n"
                    "$enddefinitions $end\n#0\nb0 !\n#1\nb1111 !\nb1 !\n#2\nb110 !\nb1 !\n"
                    "#3\nb1001 !\n")
    assert count_vcd_toggles(path) == {"top.bus": 2}


def _relu_gemm(rng):
    x = rng.integers(-128, 128, (16, 16))
    x[x < 0] = 0                                   # post-ReLU: about half the activations are 0
    return x, rng.integers(-128, 128, (16, 8))


# Datapath savings measured (bench/activity.py): os 26.1 %, ws 32.4 %; with the gating control's
# own toggles counted, 24.1 % and 28.8 %. Without zeros gating still saves a little (idle PEs).
# Independent zeros of probability z bound what holding operands saves on a multiplier by
# z / (1 + z): a third here.
@pytest.mark.parametrize("dataflow,least", [("os", 0.25), ("ws", 0.30)])
def test_operand_gating_cuts_toggles_on_relu_activations(dataflow, least):
    rng = np.random.default_rng(5)
    x, w = _relu_gemm(rng)
    kw = dict(rows=4, cols=4, dataflow=dataflow, max_m=16, max_k=16, max_n=8)
    base = datapath_activity(MacArrayConfig(**kw), x, w)
    gated = datapath_activity(MacArrayConfig(operand_gating=True, **kw), x, w)
    assert base.macs == gated.macs == 16 * 16 * 8
    assert base.control_toggles == 0 < gated.control_toggles
    saving = 1 - gated.toggles / base.toggles
    assert saving >= least, f"gating saved only {saving:.1%}"
    # The zero flags and load enables cost something, much less than they save.
    assert least - 0.05 <= 1 - gated.total / base.total < saving
    # ... and gating costs nothing without zeros to skip.
    dense = rng.integers(1, 128, (16, 16))
    d0 = datapath_activity(MacArrayConfig(**kw), dense, w)
    d1 = datapath_activity(MacArrayConfig(operand_gating=True, **kw), dense, w)
    assert d1.total <= d0.total * 1.01


def test_gated_multipliers_come_close_to_the_bound():
    # Holding operands skips the transitions into and out of a zero: with independent zeros of
    # probability z the multipliers' nodes, operands and product toggle 1/(1+z) as often. The
    # output-stationary array's multipliers must reach most of that saving (tile starts load
    # their operands even when zero); its accumulators save less (they move on non-zero products
    # only, gated or not).
    rng = np.random.default_rng(5)
    x, w = _relu_gemm(rng)
    kw = dict(rows=4, cols=4, dataflow="os", max_m=16, max_k=16, max_n=8)

    def split(report):
        mul = sum(v for name, v in report.by_signal.items() if ".pe_" in name and "clear" not in name)
        return mul, report.toggles - mul

    (mul0, acc0), (mul1, acc1) = (split(datapath_activity(MacArrayConfig(operand_gating=g, **kw), x, w))
                                  for g in (False, True))
    z = float(np.mean(x == 0))
    bound = z / (1 + z)
    assert 0.8 * bound <= 1 - mul1 / mul0 <= bound + 0.05
    assert 0 < 1 - acc1 / acc0 < 1 - mul1 / mul0


def test_weight_stationary_gating_clears_products_instead_of_masking():
    # Logic multipliers load a zero into their product register on a gated beat: no masked copy
    # of the product is built, and the held operands keep the multiplier's nodes still.
    rng = np.random.default_rng(5)
    x, w = _relu_gemm(rng)
    kw = dict(rows=4, cols=4, dataflow="ws", max_m=16, max_k=16, max_n=8, operand_gating=True)
    report = datapath_activity(MacArrayConfig(**kw), x, w)
    assert not any(".gp_" in name for name in report.by_signal)
    assert sum(v for name, v in report.by_signal.items() if name.endswith(".clear")) > 0
    # DSP PEs have no such input: their products are masked.
    dsp = datapath_activity(MacArrayConfig(multiplier="dsp", mul_latency=2, **kw), x, w)
    assert any(".gp_" in name for name in dsp.by_signal)


@pytest.mark.parametrize("kwargs", [{"dataflow": "os"}, {"dataflow": "ws"},
                                    {"multiplier": "dsp", "mul_latency": 2}])
def test_gated_array_is_exact(kwargs):
    from npuforge.sim.gemm import simulate_gemm
    rng = np.random.default_rng(8)
    cfg = MacArrayConfig(rows=3, cols=2, operand_gating=True, max_m=7, max_k=8, max_n=5, **kwargs)
    x = rng.integers(-128, 128, (7, 8))
    x[x < 20] = 0
    w = rng.integers(-128, 128, (8, 5))
    w[2] = 0
    y = simulate_gemm(cfg, x, w).y
    np.testing.assert_array_equal(y, mac_array_reference(x, w, acc_bits=cfg.accumulator_bits,
                                                         k_group=cfg.k_group))
