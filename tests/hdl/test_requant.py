"""Hardware requantizer against the golden model, bit for bit, under random stream pressure."""

import random

import pytest
from amaranth.back import rtlil, verilog
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from npuforge.hdl.requant import Requantizer
from npuforge.sim.golden import INT32_MAX, INT32_MIN, requantize

RADICES = [0, 1, 4, 8, 31]


def expected(item, raw, zp, lo, hi):
    acc, mult, shift = item
    if raw:
        return acc
    return int(requantize(acc, mult, shift, zero_point=zp, out_min=lo, out_max=hi))


def simulate(radix_bits, items, raws, *, zp=0, lo=-128, hi=127, seed=0, gap_prob=0.3, ready_prob=0.6,
             vcd_path=None):
    """Push ``items`` through a Requantizer with random input gaps and output backpressure.

    Returns the output values in order. Checks the stream rules on ``o`` while doing so: once
    ``o.valid`` is high it stays high, with the same payload, until a transfer.
    """
    dut = Requantizer(radix_bits)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    results = []

    async def producer(ctx):
        ctx.set(dut.zero_point, zp)
        ctx.set(dut.out_min, lo)
        ctx.set(dut.out_max, hi)
        for (acc, mult, shift), raw in zip(items, raws):
            while rng_in.random() < gap_prob:
                await ctx.tick()
            ctx.set(dut.i.payload, {"acc": acc, "mult": mult, "shift": shift})
            ctx.set(dut.raw, raw)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            # Scramble the side inputs between transfers: only the transferred values may matter.
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.i.payload, {"acc": rng_in.randint(INT32_MIN, INT32_MAX),
                                    "mult": rng_in.randint(0, INT32_MAX), "shift": rng_in.randint(0, 31)})
            ctx.set(dut.raw, rng_in.randint(0, 1))

    async def consumer(ctx):
        pending = None  # (payload) of a valid output not yet taken
        while len(results) < len(items):
            ready = rng_out.random() < ready_prob
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if pending is not None:
                assert valid, "o.valid dropped before the transfer"
                assert payload == pending, "o.payload changed before the transfer"
            if valid and ready:
                results.append(payload)
                pending = None
            elif valid:
                pending = payload

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    if vcd_path is not None:
        with sim.write_vcd(str(vcd_path)):
            sim.run()
    else:
        sim.run()
    return results


def check(radix_bits, items, raws, *, zp=0, lo=-128, hi=127, **kwargs):
    got = simulate(radix_bits, items, raws, zp=zp, lo=lo, hi=hi, **kwargs)
    want = [expected(item, raw, zp, lo, hi) for item, raw in zip(items, raws)]
    assert got == want


def edge_items():
    accs = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]
    mults = [0, 1, 2**30, INT32_MAX]
    shifts = [0, 1, 30, 31]
    items = [(a, m, s) for a in accs for m in mults for s in shifts]
    # Ties in the high multiply: acc odd times 0.5 is +-x.5 (rounds toward +inf).
    items += [(a, 2**30, 0) for a in (1, -1, 3, -3, 2**31 - 1, -(2**31) + 1)]
    # Ties in the rounding shift: srdhm(acc, 2**30) = acc / 2 = odd * 2**(s-1) (rounds away from zero).
    for s in (1, 2, 5, 17, 30):
        for odd in (1, -1, 3, -3):
            acc = 2 * odd * 2 ** (s - 1)
            if INT32_MIN <= acc <= INT32_MAX:
                items.append((acc, 2**30, s))
                items.append((acc + 1, 2**30, s))
                items.append((acc - 1, 2**30, s))
    return items


@pytest.mark.parametrize("radix_bits", RADICES)
def test_edge_cases(radix_bits):
    items = edge_items()
    raws = [0] * len(items)
    # No backpressure here to keep it quick; the random tests cover stalls.
    check(radix_bits, items, raws, gap_prob=0.0, ready_prob=1.0)


@pytest.mark.parametrize("radix_bits", RADICES)
def test_clamp_limits_and_zero_point(radix_bits):
    rng = random.Random(radix_bits)
    items = [(rng.randint(-5000, 5000), 2**30, rng.randint(0, 4)) for _ in range(40)]
    items += [(INT32_MAX, INT32_MAX, 0), (INT32_MIN, INT32_MAX, 0)]
    raws = [0] * len(items)
    for zp, lo, hi in [(0, -128, 127), (-7, -20, 20), (2**15 - 1, -(2**15), 2**15 - 1),
                       (-(2**15), -(2**15), 2**15 - 1), (100, 100, 100), (-300, -(2**15), -200)]:
        check(radix_bits, items, raws, zp=zp, lo=lo, hi=hi, seed=zp & 0xFF)


@pytest.mark.parametrize("radix_bits", RADICES + [3, 13])
def test_random_with_backpressure(radix_bits):
    rng = random.Random(1000 + radix_bits)
    count = 60 if radix_bits < 4 else 150
    items = [(rng.randint(INT32_MIN, INT32_MAX), rng.randint(0, INT32_MAX), rng.randint(0, 31))
             for _ in range(count)]
    # Realistic accumulators too: small values and shifts that leave something in range.
    items += [(rng.randint(-(2**20), 2**20), rng.randint(2**30, INT32_MAX), rng.randint(0, 14))
              for _ in range(count)]
    raws = [int(rng.random() < 0.2) for _ in items]
    check(radix_bits, items, raws, zp=rng.randint(-50, 50), lo=-128, hi=127, seed=radix_bits)


@pytest.mark.parametrize("radix_bits", [1, 8])
def test_raw_mode(radix_bits):
    items = [(INT32_MIN, 5, 3), (INT32_MAX, 0, 31), (-1, INT32_MAX, 0), (0, 1, 1), (123456789, 2**30, 7)]
    check(radix_bits, items, [1] * len(items), zp=3, lo=-1, hi=1)
    check(radix_bits, items, [1, 0, 1, 0, 1], zp=3, lo=-1, hi=1, seed=3)


int32s = st.one_of(st.integers(INT32_MIN, INT32_MAX),
                   st.sampled_from([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX]))
items_strategy = st.lists(
    st.tuples(int32s, st.one_of(st.integers(0, INT32_MAX), st.sampled_from([0, 1, 2**30, INT32_MAX])),
              st.integers(0, 31)),
    min_size=1, max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(RADICES + [2, 7, 16]),
    items_strategy,
    st.integers(0, 2**16),
    st.integers(-(2**15), 2**15 - 1),
    st.integers(-(2**15), 2**15 - 1),
    st.integers(-(2**15), 2**15 - 1),
    st.floats(0.0, 0.8),
    st.floats(0.2, 1.0),
)
def test_hypothesis(radix_bits, items, raw_bits, zp, a, b, gap_prob, ready_prob):
    raws = [(raw_bits >> i) & 1 for i in range(len(items))]
    check(radix_bits, items, raws, zp=zp, lo=min(a, b), hi=max(a, b), seed=raw_bits,
          gap_prob=gap_prob, ready_prob=ready_prob)


@pytest.mark.parametrize("radix_bits", [1, 4, 8, 13, 31])
def test_throughput_and_latency(radix_bits):
    """Continuous input and ``o.ready`` high: one result every cycles_per_result cycles."""
    dut = Requantizer(radix_bits)
    assert dut.cycles_per_result == -(-31 // radix_bits)
    assert dut.latency == dut.cycles_per_result + 3
    count = 6
    accepted, delivered = [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.out_min, -(2**15))
        ctx.set(dut.out_max, 2**15 - 1)
        ctx.set(dut.i.payload, {"acc": 1000, "mult": 2**30, "shift": 1})
        cycle = 0
        while len(delivered) < count:
            _, _, i_ready, o_valid, o_payload = await ctx.tick().sample(dut.i.ready, dut.o.valid,
                                                                        dut.o.payload)
            if i_ready and len(accepted) < count:
                accepted.append(cycle)
                if len(accepted) == count:
                    ctx.set(dut.i.valid, 0)
            if o_valid:
                assert o_payload == 250
                delivered.append(cycle)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    n = dut.cycles_per_result
    assert [b - a for a, b in zip(accepted, accepted[1:])] == [n] * (count - 1)
    assert [b - a for a, b in zip(delivered, delivered[1:])] == [n] * (count - 1)
    assert [d - a for a, d in zip(accepted, delivered)] == [dut.latency] * count


def test_vcd_written(tmp_path):
    path = tmp_path / "requant.vcd"
    check(8, [(1000, 2**30, 2)], [0], vcd_path=path)
    assert path.stat().st_size > 0


@pytest.mark.parametrize("radix_bits", [1, 8, 31])
def test_converts_without_multiplier(radix_bits):
    dut = Requantizer(radix_bits)
    text = verilog.convert(dut, name="requant")
    assert "module requant" in text
    assert " * " not in text
    assert "$mul" not in rtlil.convert(Requantizer(radix_bits), name="requant")


@pytest.mark.parametrize(
    ("value", "exc", "message"),
    [
        (0, ValueError, r"^radix_bits must be an integer in 1..31, not 0$"),
        (32, ValueError, r"^radix_bits must be an integer in 1..31, not 32$"),
        (8.0, TypeError, r"^radix_bits must be an integer in 1..31, not 8.0$"),
        (True, TypeError, r"^radix_bits must be an integer in 1..31, not True$"),
    ],
)
def test_radix_bits_validation(value, exc, message):
    with pytest.raises(exc, match=message):
        Requantizer(value)
