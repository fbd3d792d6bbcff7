"""Output stage: per-channel bias, int32 saturation and the requantizer, against the golden model.

Runs with the serial requantizer (``requant_radix=0``) and a pipelined one, under random input gaps and
output backpressure, so that the stage's bias pipeline meets both kinds of requantizer handshake.
"""

import random

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from npuforge.hdl.output_stage import PARAM_BIAS, PARAM_MULT, PARAM_SHIFT, OutputStage
from npuforge.hdl.output_stage import saturate as hw_saturate
from npuforge.sim.golden import INT32_MAX, INT32_MIN, requantize, saturate
from npuforge.sim.stream import stream_collect


async def load_params(ctx, dut, params):
    """Write every channel's ``(bias, mult, shift)`` through ``param``, kind by kind."""
    for which, column in ((PARAM_BIAS, 0), (PARAM_MULT, 1), (PARAM_SHIFT, 2)):
        for channel in params:
            ctx.set(dut.param.payload, {"which": which, "data": channel[column]})
            ctx.set(dut.param.valid, 1)
            await ctx.tick()
    ctx.set(dut.param.valid, 0)


def run_stage(requant_radix, acc_bits, params, inputs, *, raw=0, zp=0, lo=-128, hi=127, seed=0,
              gap_prob=0.3, ready_prob=0.6):
    """Load ``params`` (per channel ``(bias, mult, shift)``), then stream ``inputs`` (``(acc, n)``).

    Returns the outputs in order; checks the stream rules on ``o`` and that ``busy`` falls at the end.
    """
    dut = OutputStage(acc_bits=acc_bits, max_n=len(params), requant_radix=requant_radix)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    results = []

    async def producer(ctx):
        ctx.set(dut.raw, raw)
        ctx.set(dut.zero_point, zp)
        ctx.set(dut.out_min, lo)
        ctx.set(dut.out_max, hi)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        await load_params(ctx, dut, params)
        for acc, n in inputs:
            while rng_in.random() < gap_prob:
                await ctx.tick()
            ctx.set(dut.i.payload, {"acc": acc, "n": n})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            # Scramble the input between transfers: only the transferred values may matter.
            ctx.set(dut.i.payload, {"acc": rng_in.randrange(1 << acc_bits),
                                    "n": rng_in.randrange(len(params))})

    async def consumer(ctx):
        await stream_collect(ctx, dut.o, len(inputs), results,
                             ready=lambda: rng_out.random() < ready_prob)
        ctx.set(dut.o.ready, 0)
        assert not ctx.get(dut.o.valid)
        await ctx.tick()
        assert not ctx.get(dut.busy), "busy after the last result left"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return results


def expected(params, inputs, *, raw, zp, lo, hi):
    want = []
    for acc, n in inputs:
        bias, mult, shift = params[n]
        value = int(saturate(acc + bias, 32))
        if not raw:
            value = int(requantize(value, mult, shift, zero_point=zp, out_min=lo, out_max=hi))
        want.append(value)
    return want


def random_params(rng, count):
    return [(rng.randint(INT32_MIN, INT32_MAX) if rng.random() < 0.3 else rng.randint(-5000, 5000),
             rng.randint(2**30, INT32_MAX), rng.randint(0, 20)) for _ in range(count)]


@pytest.mark.parametrize("requant_radix", [0, 4])
@pytest.mark.parametrize("raw", [0, 1])
def test_against_golden(requant_radix, raw):
    rng = random.Random(10 * requant_radix + raw)
    acc_bits = 32
    params = random_params(rng, 5)
    params[0] = (INT32_MAX, INT32_MAX, 0)  # saturates upward with any positive accumulator
    params[1] = (INT32_MIN, 2**30, 31)
    inputs = [(rng.randint(-(2**acc_bits) // 2, 2**acc_bits // 2 - 1), rng.randrange(len(params)))
              for _ in range(40)]
    inputs += [(INT32_MAX, 0), (INT32_MIN, 0), (INT32_MIN, 1), (INT32_MAX, 1), (-1, 2), (0, 3)]
    zp, lo, hi = -3, -100, 90
    got = run_stage(requant_radix, acc_bits, params, inputs, raw=raw, zp=zp, lo=lo, hi=hi, seed=raw)
    assert got == expected(params, inputs, raw=raw, zp=zp, lo=lo, hi=hi)


@pytest.mark.parametrize("requant_radix", [0, 1])
def test_narrow_accumulators_back_to_back(requant_radix):
    """24-bit accumulators, every input offered at once and every output taken at once."""
    rng = random.Random(24)
    params = random_params(rng, 3)
    inputs = [(rng.randint(-(2**23), 2**23 - 1), rng.randrange(3)) for _ in range(20)]
    got = run_stage(requant_radix, 24, params, inputs, zp=5, lo=-128, hi=127, gap_prob=0.0, ready_prob=1.0)
    assert got == expected(params, inputs, raw=0, zp=5, lo=-128, hi=127)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requant_radix": 32}, r"^requant_radix must be an integer in 0..31, not 32$"),
        ({"requant_radix": -1}, r"^requant_radix must be an integer in 0..31, not -1$"),
        ({"requant_radix": True}, r"^requant_radix must be an integer in 0..31, not True$"),
        ({"acc_bits": 3}, r"^acc_bits must be an integer in 4..64, not 3$"),
        ({"max_n": 0}, r"^max_n must be an integer in 1..65535, not 0$"),
    ],
)
def test_parameter_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OutputStage(**{"acc_bits": 24, "max_n": 4, **kwargs})


@pytest.mark.parametrize("raw,most_cycles", [(1, 1), (0, 36)])
def test_serial_stage_passes_raw_results_one_per_cycle(raw, most_cycles):
    """With the serial requantizer, raw results go around it: a result every cycle, in order,
    against the 36 + shift cycles a requantized result takes."""
    rng = random.Random(31)
    params = [(rng.randint(-5000, 5000), rng.randint(2**30, INT32_MAX), 0) for _ in range(4)]
    inputs = [(rng.randint(-(2**23), 2**23 - 1), rng.randrange(4)) for _ in range(24)]
    dut = OutputStage(acc_bits=24, max_n=4, requant_radix=0)
    seen = []

    async def producer(ctx):
        ctx.set(dut.raw, raw)
        ctx.set(dut.out_min, -128)
        ctx.set(dut.out_max, 127)
        await load_params(ctx, dut, params)
        ctx.set(dut.o.ready, 1)
        for acc, n in inputs:
            ctx.set(dut.i.payload, {"acc": acc, "n": n})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(seen) < len(inputs):
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                seen.append((cycle, ctx.get(dut.o.payload)))
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert [v for _, v in seen] == expected(params, inputs, raw=raw, zp=0, lo=-128, hi=127)
    gaps = {b[0] - a[0] for a, b in zip(seen, seen[1:])}
    assert max(gaps) == most_cycles



@pytest.mark.parametrize("width,bits", [(6, 4), (5, 4), (4, 4), (3, 4), (9, 2)])
def test_saturate_every_value(width, bits):
    """The carry-free clamp against the golden model's, for every value of a small width."""
    m = Module()
    x = Signal(signed(width))
    out = Signal(signed(max(bits, width)))
    m.d.comb += out.eq(hw_saturate(x, bits))
    got = []

    async def bench(ctx):
        for v in range(-(1 << (width - 1)), 1 << (width - 1)):
            ctx.set(x, v)
            got.append((v, ctx.get(out)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [(v, int(saturate(v, bits))) for v, _ in got]
    assert len(got) == 1 << width
