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


# Savings measured (bench/activity.py): os 26.6 %, ws 23.0 %; without zeros gating costs os ~1 %,
# ws ~8 % (its masked products are one more net per PE). Independent zeros of probability z bound
# the multipliers' saving by z / (1 + z): a third here.
@pytest.mark.parametrize("dataflow,least,dense_cost", [("os", 0.25, 0.03), ("ws", 0.20, 0.15)])
def test_operand_gating_cuts_toggles_on_relu_activations(dataflow, least, dense_cost):
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (16, 16))
    x[x < 0] = 0                                   # post-ReLU: about half the activations are 0
    w = rng.integers(-128, 128, (16, 8))
    kw = dict(rows=4, cols=4, dataflow=dataflow, max_m=16, max_k=16, max_n=8)
    base = datapath_activity(MacArrayConfig(**kw), x, w)
    gated = datapath_activity(MacArrayConfig(operand_gating=True, **kw), x, w)
    assert base.macs == gated.macs == 16 * 16 * 8
    saving = 1 - gated.toggles / base.toggles
    assert saving >= least, f"gating saved only {saving:.1%}"
    # ... and costs little without zeros to skip (weight-stationary pays for its masked products).
    dense = rng.integers(1, 128, (16, 16))
    d0 = datapath_activity(MacArrayConfig(**kw), dense, w)
    d1 = datapath_activity(MacArrayConfig(operand_gating=True, **kw), dense, w)
    assert abs(d1.toggles - d0.toggles) / d0.toggles < dense_cost


def test_gated_multipliers_come_close_to_the_bound():
    # Holding operands skips the transitions into and out of a zero: with independent zeros of
    # probability z the multipliers' nodes, operands and product toggle 1/(1+z) as often. The
    # output-stationary array's multipliers must reach most of that saving (tile starts load
    # their operands even when zero); its accumulators save less (they move on non-zero products
    # only, gated or not).
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (16, 16))
    x[x < 0] = 0
    w = rng.integers(-128, 128, (16, 8))
    kw = dict(rows=4, cols=4, dataflow="os", max_m=16, max_k=16, max_n=8)

    def split(report):
        mul = sum(v for name, v in report.by_signal.items() if ".pe_" in name)
        return mul, report.toggles - mul

    (mul0, acc0), (mul1, acc1) = (split(datapath_activity(MacArrayConfig(operand_gating=g, **kw), x, w))
                                  for g in (False, True))
    z = float(np.mean(x == 0))
    bound = z / (1 + z)
    assert 0.85 * bound <= 1 - mul1 / mul0 <= bound + 0.05
    assert 0 < 1 - acc1 / acc0 < 1 - mul1 / mul0


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
