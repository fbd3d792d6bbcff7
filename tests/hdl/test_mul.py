import itertools

import pytest
from amaranth.back import rtlil
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from npuforge.hdl.mul import Multiplier, product_shape


def _values(shape):
    if shape.signed:
        return range(-(1 << (shape.width - 1)), 1 << (shape.width - 1))
    return range(1 << shape.width)


def _run(dut, pairs):
    """Feed one operand pair per cycle; return p for each pair (pipelined, en held high)."""
    got = []

    async def bench(ctx):
        if dut.latency == 0:
            for a, b in pairs:
                ctx.set(dut.a, a)
                ctx.set(dut.b, b)
                await ctx.delay(1e-6)
                got.append(ctx.get(dut.p))
            return
        ctx.set(dut.en, 1)
        after_edge = []
        for a, b in pairs + [(0, 0)] * (dut.latency - 1):
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            await ctx.tick()
            after_edge.append(ctx.get(dut.p))
        # After edge t, p holds the product of the pair applied at cycle t - latency + 1.
        got.extend(after_edge[dut.latency - 1:])

    sim = Simulator(dut)
    if dut.latency:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("a_shape,b_shape", [
    (signed(4), signed(4)), (unsigned(4), unsigned(4)), (signed(4), unsigned(3)),
    (unsigned(3), signed(4)), (signed(2), signed(2)),
])
@pytest.mark.parametrize("kind", ["lut", "infer"])
@pytest.mark.parametrize("latency", [0, 1, 2])
def test_exhaustive_small(a_shape, b_shape, kind, latency):
    pairs = list(itertools.product(_values(a_shape), _values(b_shape)))
    dut = Multiplier(a_shape, b_shape, kind=kind, latency=latency)
    assert _run(dut, pairs) == [a * b for a, b in pairs]


def test_int8_extremes_and_random():
    import random
    rng = random.Random(1)
    vals = [-128, -127, -1, 0, 1, 127]
    pairs = [(a, b) for a in vals for b in vals]
    pairs += [(rng.randrange(-128, 128), rng.randrange(-128, 128)) for _ in range(300)]
    dut = Multiplier(signed(8), signed(8), kind="lut", latency=1)
    assert _run(dut, pairs) == [a * b for a, b in pairs]


def test_uint16_by_int16():
    import random
    rng = random.Random(2)
    pairs = [(65535, -32768), (65535, 32767), (0, -32768)]
    pairs += [(rng.randrange(0, 65536), rng.randrange(-32768, 32768)) for _ in range(100)]
    dut = Multiplier(unsigned(16), signed(16), kind="lut", latency=1)
    assert _run(dut, pairs) == [a * b for a, b in pairs]


def test_product_shape():
    assert product_shape(signed(8), signed(8)) == signed(16)
    assert product_shape(unsigned(8), unsigned(4)) == unsigned(12)
    assert product_shape(unsigned(8), signed(4)) == signed(12)


def test_lut_kind_has_no_mul_cell():
    # Yosys with -dsp maps every $mul to a whole DSP block; the LUT multiplier must not have one.
    text = rtlil.convert(Multiplier(signed(8), signed(8), kind="lut"))
    assert "$mul" not in text
    assert "$mul" in rtlil.convert(Multiplier(signed(8), signed(8), kind="infer"))


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"^multiplier kind must be one of lut, infer, not 'dsp9'$"):
        Multiplier(signed(8), signed(8), kind="dsp9")
    with pytest.raises(ValueError, match=r"^multiplier latency must be an integer in 0..2, not 3$"):
        Multiplier(signed(8), signed(8), latency=3)
