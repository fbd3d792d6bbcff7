"""SplitMacArray: the core in a faster clock domain behind asynchronous FIFOs, still bit-exact."""

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.sim import Simulator

from npuforge.generators.mac_array import MacArrayConfig, SplitMacArray
from npuforge.sim.gemm import load_words, pack_load_words
from npuforge.sim.golden import RequantParams, mac_array_reference


class _TwoDomains(Elaboratable):
    def __init__(self, dut):
        self.dut = dut

    def elaborate(self, platform):
        m = Module()
        m.domains.array = ClockDomain("array")
        m.submodules.dut = self.dut
        return m


def _run(config, x, w, bias, requant, array_period):
    dut = SplitMacArray(config, "array")
    words = pack_load_words(load_words(config, x, w, bias, requant))
    m_, n_ = x.shape[0], w.shape[1]
    results = []

    async def bench(ctx):
        ctx.set(dut.size_m, m_)
        ctx.set(dut.size_k, x.shape[1])
        ctx.set(dut.size_n, n_)
        ctx.set(dut.raw, requant is None)
        if requant is not None:
            ctx.set(dut.zero_point, requant.zero_point)
            ctx.set(dut.out_min, requant.out_min)
            ctx.set(dut.out_max, requant.out_max)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        payload = dut.load.payload.as_value()
        ctx.set(dut.load.valid, 1)
        for word in words:
            ctx.set(payload, word)
            await ctx.tick().until(dut.load.ready)
        ctx.set(dut.load.valid, 0)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.y.ready, 1)
        while len(results) < m_ * n_:
            *_, value, valid = await ctx.tick().sample(dut.y.payload, dut.y.valid)
            if valid:
                results.append(value)
        await ctx.tick().until(~dut.busy)

    sim = Simulator(_TwoDomains(dut))
    sim.add_clock(1e-6)
    sim.add_clock(array_period * 1e-6, domain="array")
    sim.add_testbench(bench)
    sim.run()
    y = np.zeros((m_, n_), dtype=np.int64)
    rows, cols = config.output_order(m_, n_)
    y[rows, cols] = results
    return y


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
