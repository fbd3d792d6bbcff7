"""SplitMacArray: the core in a faster clock domain behind asynchronous FIFOs, still bit-exact."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from npuforge.generators.mac_array import MacArrayConfig, SplitMacArray
from npuforge.sim.gemm import SplitClocks, gemm_bench, simulate_gemm, simulate_split_gemm
from npuforge.sim.golden import RequantParams, mac_array_reference


def _run(config, x, w, bias, requant, array_period):
    return simulate_split_gemm(config, x, w, bias, requant, array_hz=1e6 / array_period, board_hz=1e6).y


@pytest.mark.parametrize("dataflow,array_period", [("os", 0.27), ("ws", 0.31), ("os", 2.3)])
def test_split_array_matches_golden(dataflow, array_period):
    rng = np.random.default_rng(7)
    cfg = MacArrayConfig(rows=2, cols=2, dataflow=dataflow, max_m=5, max_k=6, max_n=5)
    x = rng.integers(-128, 128, (5, 6))
    w = rng.integers(-128, 128, (6, 5))
    bias = rng.integers(-3000, 3000, 5)
    requant = RequantParams(mult=tuple(int(v) for v in rng.integers(2**30, 2**31, 5)),
                            shift=tuple(int(v) for v in rng.integers(0, 8, 5)), zero_point=2)
    for rq in (None, requant):
        y = _run(cfg, x, w, bias, rq, array_period)
        expected = mac_array_reference(x, w, bias, rq, acc_bits=cfg.accumulator_bits, k_group=cfg.k_group)
        np.testing.assert_array_equal(y, expected)


def test_split_array_counts_each_run_from_zero():
    # The core's cycle counter restarts with every run: two identical GEMMs report the same count,
    # which covers at least the issued beats.
    rng = np.random.default_rng(3)
    cfg = MacArrayConfig(rows=2, cols=2, max_m=5, max_k=6, max_n=5)
    x = rng.integers(-128, 128, (5, 6))
    w = rng.integers(-128, 128, (6, 5))
    bias = np.zeros(5, dtype=np.int64)
    dut = SplitMacArray(cfg, "array")
    first, results1, stats1 = gemm_bench(dut, cfg, x, w, bias, None)
    second, results2, stats2 = gemm_bench(dut, cfg, x, w, bias, None)

    async def both(ctx):
        await first(ctx)
        await second(ctx)

    sim = Simulator(SplitClocks(dut))
    sim.add_clock(1e-6)
    sim.add_clock(0.37e-6, domain="array")
    sim.add_testbench(both)
    sim.run()
    assert results1 == results2
    assert stats1["cycles"] == stats2["cycles"]
    assert cfg.compute_cycles(5, 6, 5) <= stats1["cycles"] < 2 * cfg.compute_cycles(5, 6, 5) + 40


@pytest.mark.parametrize("array_period", [0.29, 1.7])
def test_split_array_back_to_back_jobs_reload_parameters(array_period):
    # Parameters travel in-band to the output stage in the array domain: a second job with other
    # shapes, biases and requantization (and backpressure on y) must not see the first one's.
    rng = np.random.default_rng(11)
    cfg = MacArrayConfig(rows=2, cols=3, max_m=6, max_k=7, max_n=6, requant_radix=0)
    dut = SplitMacArray(cfg, "array")
    jobs, benches = [], []
    for (m_, k_, n_), raw in (((5, 7, 6), False), ((3, 4, 2), True), ((6, 2, 5), False)):
        x = rng.integers(-128, 128, (m_, k_))
        w = rng.integers(-128, 128, (k_, n_))
        bias = rng.integers(-5000, 5000, n_)
        rq = None if raw else RequantParams(mult=tuple(int(v) for v in rng.integers(2**29, 2**31, n_)),
                                            shift=tuple(int(v) for v in rng.integers(0, 10, n_)),
                                            zero_point=int(rng.integers(-5, 5)))
        bench, results, _ = gemm_bench(dut, cfg, x, w, bias, rq, backpressure=0.3, rng=rng)
        jobs.append((x, w, bias, rq, results))
        benches.append(bench)

    async def all_jobs(ctx):
        for bench in benches:
            await bench(ctx)

    sim = Simulator(SplitClocks(dut))
    sim.add_clock(1e-6)
    sim.add_clock(array_period * 1e-6, domain="array")
    sim.add_testbench(all_jobs)
    sim.run()
    for x, w, bias, rq, results in jobs:
        m_, n_ = x.shape[0], w.shape[1]
        y = np.zeros((m_, n_), dtype=np.int64)
        rows, cols = cfg.output_order(m_, n_)
        y[rows, cols] = results
        np.testing.assert_array_equal(y, mac_array_reference(x, w, bias, rq, acc_bits=cfg.accumulator_bits,
                                                             k_group=cfg.k_group))


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_board_clocked_output_stage_keeps_up_with_raw_results(dataflow):
    # A 12 MHz output stage behind a 42 MHz array: with the serial requantizer, raw results go
    # around it one per board cycle, so at K = 64 a 4x4 array's tiles (16 results per 64 beats)
    # hardly wait for the drain. (Five board cycles per result made these runs 3.3x (os) and
    # 2.9x (ws) as long as on one clock.)
    rng = np.random.default_rng(4)
    cfg = MacArrayConfig(rows=4, cols=4, dataflow=dataflow, requant_radix=0, max_m=16, max_k=64, max_n=16)
    x = rng.integers(-128, 128, (16, 64))
    w = rng.integers(-128, 128, (64, 16))
    bias = rng.integers(-5000, 5000, 16)
    split = simulate_split_gemm(cfg, x, w, bias, array_hz=42e6, board_hz=12e6)
    np.testing.assert_array_equal(split.y, mac_array_reference(x, w, bias, acc_bits=cfg.accumulator_bits,
                                                               k_group=cfg.k_group))
    one = simulate_gemm(cfg, x, w, bias)
    # Measured: 1.02x (os) and 1.09x (ws; its drains come in bursts of M x cols results).
    assert split.cycles <= 1.15 * one.cycles, (split.cycles, one.cycles)


def test_simulate_split_gemm_rejects_bad_clocks():
    cfg = MacArrayConfig(rows=2, cols=2, max_m=2, max_k=2, max_n=2)
    x = np.ones((2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match=r"^array_hz must be a positive frequency in Hz, not 0$"):
        simulate_split_gemm(cfg, x, x, array_hz=0)
    with pytest.raises(ValueError, match=r"^board_hz must be a positive frequency in Hz, not -1$"):
        simulate_split_gemm(cfg, x, x, array_hz=1e6, board_hz=-1)
