"""Multipliers on the iCE40's carry chains: about one logic cell per partial-product bit.

An iCE40 logic cell is a 4-input LUT (``SB_LUT4``, inputs ``I0``..``I3``), a carry cell
(``SB_CARRY``: ``CO = MAJ(I1, I2, CI)`` on the LUT's ``I1``/``I2`` pins and the chain input) and a
flip-flop. An array multiplier adds one partial-product row ``s + b_j * a`` per bit of ``b``; built
the usual way that costs two LUTs per bit, one for the AND and one for the sum. Here the carry
chain runs on the raw operands instead (``I1 = s_k``, ``I2 = a_k``, ``I3 = carry in``) and the
LUT's spare input takes the multiplier bit (``I0 = b_j``)::

    O = b_j ? s_k ^ a_k ^ c_k : s_k

With ``b_j = 1`` the chain adds correctly. With ``b_j = 0`` the chain still computes carries, but
no output looks at them: every bit of the row passes ``s`` through. A row is therefore ``n + 1``
cells for an ``n``-bit ``a``: ``n`` cells on the chain and one more for the top (sign) bit, which
takes the chain's last carry on ``I3`` (nextpnr places it as the chain's final cell). Row 0 has
nothing to add to, so it is ``n`` plain ANDs. The sign row of a two's complement ``b`` subtracts
``a`` as ``s + ~a + 1`` (the ``+1`` is the chain's constant carry-in); ``~a`` is made once per
array row and shared by every PE of that row.

Numbering: after rows ``0..j-1`` the partial sum ``P_j = a * (b mod 2**j)``; its low ``j`` bits are
final product bits, and its high part ``H_j = P_j >> j`` always fits ``n`` bits (signed when ``a``
is). Row ``j`` adds ``b_j * a`` (or subtracts) to ``H_j`` in ``n + 1`` bits: bit 0 of the result is
product bit ``j``, bits ``1..n`` are ``H_(j+1)``. So every row is exactly ``n + 1`` bits wide, and
the last row's bits give the top of the product.

Pipelining: the rows are split into ``stages`` groups; each group ends in a register (its flip-flops
pack into the cells of the group's last row, whose outputs feed nothing else). The operands a later
stage needs come from delay lines *shared* by the grid: one per array row for ``a`` (and ``~a``),
one per column for ``b`` in the broadcast (output-stationary) arrangement; with a stationary ``b``
there is no delay at all. Only the low product bits finished in early stages cost extra
flip-flops per PE.

Cost and speed, int8 x int8 (``n = 8``): 71 LUTs and 56 carries per PE, and with the default
three stages (rows split 2/3/3) 7 flip-flops of delayed low bits, 78 logic cells per PE in all,
plus per array row 24 and per column 9 cells of delay lines. Every row adds about 4.5 ns to its
stage on an iCE40UP5K (a LUT, a routing hop and the hop from the chain's end to the top cell), so
three stages place and route at 49-54 MHz in a 4x4 grid, two stages (75 cells per PE) at 39-41 MHz
and four (83 cells per PE) at 68 MHz.

:class:`CarryMulGrid` builds a whole grid of such products for a MAC array, :class:`CarryMultiplier`
a single one. With a platform (or ``use_primitive=True``) every cell is an ``SB_LUT4``/``SB_CARRY``
instance with its ``LUT_INIT`` computed here; without one (simulation) each row is the equivalent
``Mux(b_j, s + a, s)``: same register contents in every cycle, far quicker to simulate.
"""

import itertools

from amaranth.hdl import Cat, Const, Instance, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ._params import reject
from .mul import product_shape

__all__ = ["CarryMulGrid", "CarryMultiplier", "split_rows"]

#: Operand widths the carry-chain multiplier accepts.
WIDTHS = (2, 16)
#: Most pipeline stages (the rows of an 8-bit ``b`` in four stages are two rows each).
MAX_STAGES = 4
#: Most array rows or columns in a grid.
MAX_GRID = 64


# ---------------------------------------------------------------------------------------------
# Parameter checks

def _check_shape(component, name, value):
    try:
        shape = Shape.cast(value)
    except TypeError:
        raise reject(component, TypeError(f"{name} must be a shape, not {value!r}")) from None
    lo, hi = WIDTHS
    if not lo <= shape.width <= hi:
        raise reject(component, ValueError(
            f"{name} width must be an integer in {lo}..{hi}, not {shape.width}"))
    return shape


def _int_error(name, value, lo, hi):
    """The exception for ``value`` if it is not an integer in ``lo..hi``, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return TypeError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    if not lo <= value <= hi:
        return ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    return None


def _check_int(component, name, value, lo, hi):
    exc = _int_error(name, value, lo, hi)
    if exc is not None:
        raise reject(component, exc)
    return value


def _check_bool(component, name, value):
    if not isinstance(value, bool):
        raise reject(component, TypeError(f"{name} must be True or False, not {value!r}"))
    return value


def _check_use_primitive(component, value):
    if value is not None and not isinstance(value, bool):
        raise reject(component, TypeError(f"use_primitive must be None, True or False, not {value!r}"))
    return value


def _check_split(component, split, stages, b_width):
    if split is None:
        return split_rows(b_width, stages)
    what = (f"split must be a tuple of {stages} positive integers (rows per stage) "
            f"summing to the b width {b_width}, not {split!r}")
    if not isinstance(split, (tuple, list)):
        raise reject(component, TypeError(what))
    if (len(split) != stages
            or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in split)
            or sum(split) != b_width):
        raise reject(component, ValueError(what))
    return tuple(split)


def _check_common(component, a_shape, b_shape, stages, split, use_primitive):
    """Checks and stores the parameters :class:`CarryMulGrid` and :class:`CarryMultiplier` share."""
    component.a_shape = _check_shape(component, "a_shape", a_shape)
    component.b_shape = _check_shape(component, "b_shape", b_shape)
    component.stages = _check_int(component, "stages", stages, 1,
                                  min(MAX_STAGES, component.b_shape.width))
    component.split = _check_split(component, split, component.stages, component.b_shape.width)
    component.use_primitive = _check_use_primitive(component, use_primitive)
    component.p_shape = product_shape(component.a_shape, component.b_shape)


def _check_positions(component, positions, rows, cols):
    if positions is None:
        return tuple(itertools.product(range(rows), range(cols)))
    what = (f"positions must hold (row, col) pairs with row in 0..{rows - 1} "
            f"and col in 0..{cols - 1}")
    try:
        items = list(positions)
    except TypeError:
        raise reject(component, TypeError(f"{what}, not {positions!r}")) from None
    seen = set()
    for item in items:
        if (not isinstance(item, tuple) or len(item) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in item)):
            raise reject(component, TypeError(f"{what}, not {item!r}"))
        if not (0 <= item[0] < rows and 0 <= item[1] < cols):
            raise reject(component, ValueError(f"{what}, not {item!r}"))
        seen.add(item)
    return tuple(sorted(seen))


def split_rows(b_width, stages):
    """How :class:`CarryMulGrid` splits the ``b_width`` partial-product rows into pipeline stages.

    Every row (row 0's ANDs as much as an adding row) adds one LUT and one routing hop to its
    stage's critical path, on top of one carry ripple per stage, so the rows are spread as evenly
    as possible. Where they do not divide evenly the *later* stages get the extra rows: the first
    stage's inputs are the array's broadcast operand registers, whose high fan-out makes their
    routing slowest, and every product bit finished in an early stage has to be delayed (one
    flip-flop per later stage).

    Parameters
    ----------
    b_width : int
        Width of ``b``, 2..16: the number of rows.
    stages : int
        Pipeline stages, 1..min(4, b_width).

    Returns
    -------
    tuple of int
        Rows per stage, first stage first; they sum to ``b_width``.

    Raises
    ------
    TypeError, ValueError
        An argument is not an integer in its range.
    """
    exc = _int_error("b_width", b_width, *WIDTHS)
    if exc is None:
        exc = _int_error("stages", stages, 1, min(MAX_STAGES, b_width))
    if exc is not None:
        raise exc
    base, extra = divmod(b_width, stages)
    return tuple(base + (k >= stages - extra) for k in range(stages))


# ---------------------------------------------------------------------------------------------
# The two ways to build a row: iCE40 cells, or the equivalent arithmetic for simulation

def _bit(value):
    return Const(value, 1) if isinstance(value, int) else value


# LUT functions of the pins (I0, I1, I2, I3).
def _and_fn(i0, i1, i2, i3):
    return i0 & i1


def _sum_fn(i0, i1, i2, i3):
    # I0 = b_j, I1 = s_k, I2 = x_k (a or ~a), I3 = carry in.
    return (i1 ^ i2 ^ i3) if i0 else i1


def _top_fn(i0, i1, i2, i3):
    # I0 = b_j, I1 = extension bit of x, I2 = extension bit of s, I3 = the chain's last carry.
    # (x and s on the pins in the other order than the sum cells: no tool can mistake this cell
    # for the partner LUT of the last SB_CARRY, whose pins carry the same two nets.)
    return (i1 ^ i2 ^ i3) if i0 else i2


def lut_init(fn, constants=(None, None, None, None)):
    """``LUT_INIT`` of an ``SB_LUT4`` computing ``fn(I0, I1, I2, I3)``; ``I0`` selects bit 0.

    ``constants`` gives, per pin, ``None`` for a connected pin or the 0/1 value the function is to
    see on that pin (the pin itself is then tied low and the value folded into the table).
    """
    init = 0
    for index in range(16):
        pins = [(index >> p) & 1 if constants[p] is None else constants[p] for p in range(4)]
        init |= (fn(*pins) & 1) << index
    return init


class _Cells:
    """Rows built from ``SB_LUT4`` and ``SB_CARRY`` instances."""

    def __init__(self, m):
        self.m = m

    def _lut(self, name, fn, pins, carry_pins=()):
        constants = [p if isinstance(p, int) else None for p in pins]
        for p in carry_pins:
            # These pins are also the carry's inputs: a constant on them must be the real value.
            assert constants[p] in (None, 0)
        # Constant pins are folded into the table and tied low.
        return self._emit_lut(name, lut_init(fn, constants),
                              [0 if isinstance(p, int) else p for p in pins])

    def _emit_lut(self, name, init, pins):
        out = Signal(name=name)
        self.m.submodules[f"{name}_lut"] = Instance(
            "SB_LUT4", p_LUT_INIT=Const(init, 16),
            i_I0=_bit(pins[0]), i_I1=_bit(pins[1]), i_I2=_bit(pins[2]), i_I3=_bit(pins[3]), o_O=out)
        return out

    def _carry(self, name, i0, i1, ci):
        co = Signal(name=name)
        # (The instances are named apart from their output wires, which keeps the names that
        # Yosys' abc9 pass derives from cells from colliding with wires.)
        self.m.submodules[f"{name}_carry"] = Instance(
            "SB_CARRY", i_I0=_bit(i0), i_I1=_bit(i1), i_CI=_bit(ci), o_CO=co)
        return co

    def and_row(self, name, b, a):
        return [self._lut(f"{name}_and{k}", _and_fn, [b, a_k, 0, 0]) for k, a_k in enumerate(a)]

    def add_row(self, name, b, s, x, ci, s_ext, x_ext):
        out = []
        carry = ci
        for k, (s_k, x_k) in enumerate(zip(s, x)):
            out.append(self._lut(f"{name}_sum{k}", _sum_fn, [b, s_k, x_k, carry], carry_pins=(1, 2)))
            carry = self._carry(f"{name}_co{k}", s_k, x_k, carry)
        out.append(self._lut(f"{name}_top", _top_fn, [b, x_ext, s_ext, carry]))
        return out


class _Arith:
    """Rows as arithmetic: the same bits as :class:`_Cells`, for simulation."""

    def __init__(self, m):
        self.m = m

    def and_row(self, name, b, a):
        out = Signal(len(a), name=name)
        self.m.d.comb += out.eq(Mux(b, Cat(*a), 0))
        return list(out)

    def add_row(self, name, b, s, x, ci, s_ext, x_ext):
        s_v = Cat(*map(_bit, s), _bit(s_ext))
        x_v = Cat(*map(_bit, x), _bit(x_ext))
        out = Signal(len(s) + 1, name=name)
        # The assignment truncates to n + 1 bits: the row's exact result (see the module doc).
        self.m.d.comb += out.eq(Mux(b, s_v + x_v + ci, s_v))
        return list(out)


def _pe_rows(builder, name, split, sub_row, a_signed, a_at, na, b_at, register):
    """The partial-product rows of one PE, stage after stage; returns the product bits.

    ``a_at[k]`` and ``b_at[k]`` are the bits (low first) of ``a`` and ``b`` as stage ``k`` sees
    them, ``na`` those of ``~a`` where the sign row ``sub_row`` is (``None``: unsigned ``b``).
    ``register(k, bits)`` returns the bits after stage ``k``'s register. Bits are values of the
    builder's kind or the constants 0 and 1.
    """
    low, high = [], None
    first = 0
    for k, count in enumerate(split):
        for r in range(first, first + count):
            if r == 0:
                out = builder.and_row(f"{name}_r0", b_at[k][0], a_at[k])
                # H_1 = (b_0 * a) >> 1, sign-extended for a signed a.
                high = out[1:] + [out[-1] if a_signed else 0]
            else:
                if r == sub_row:
                    x, ci, x_ext = na, 1, (na[-1] if a_signed else 1)
                else:
                    x, ci, x_ext = a_at[k], 0, (a_at[k][-1] if a_signed else 0)
                s_ext = high[-1] if a_signed else 0
                out = builder.add_row(f"{name}_r{r}", b_at[k][r], high, x, ci, s_ext, x_ext)
                high = out[1:]
            low.append(out[0])
        first += count
        bits = register(k, low + high)
        low, high = bits[:len(low)], bits[len(low):]
    return low + high


# ---------------------------------------------------------------------------------------------

class CarryMulGrid(wiring.Component):
    """A grid of pipelined carry-chain multipliers with shared operand delay lines.

    PE ``(i, j)`` multiplies array row ``i``'s operand ``a[i]`` by column ``j``'s operand
    ``b[j]`` (or, with ``stationary_b``, by its own ``b[i * cols + j]``) and presents the product
    on ``p[i * cols + j]``. ``p`` holds the products of the operands presented ``latency``
    (= ``stages``) clock-enabled cycles earlier; a low ``en`` freezes every register, including
    the delay lines, and the ``sync`` domain's reset clears them. See the module documentation for
    the construction.

    With ``stationary_b`` the ``b`` operands skip the delay lines: stage ``k`` reads ``b`` as it
    is ``k`` enabled cycles after the ``a`` it multiplies. ``b`` must therefore stay unchanged
    while a product that uses it is in flight, i.e. from the enabled cycle in which its ``a`` is
    presented through the following ``latency - 1`` enabled cycles; a product in flight while
    ``b`` changes mixes bits of the old and the new ``b``.

    Parameters
    ----------
    a_shape, b_shape : Shape
        Operand shapes, signed or unsigned, 2..16 bits each.
    rows, cols : int
        Array rows (``a`` operands) and columns, 1..64 each.
    stages : int
        Pipeline stages = latency, 1..min(4, b width).
    positions : iterable of (int, int) or None
        The PEs ``(row, col)`` to build; the others' products read 0 and cost nothing, and the
        delay lines of array rows and columns without a PE are left out. ``None``: all.
    stationary_b : bool
        One ``b`` per PE, used without delay (weight-stationary arrays).
    split : tuple of int or None
        Rows of the partial-product array per stage (``None``: :func:`split_rows`).
    use_primitive : bool or None
        ``None``: ``SB_LUT4``/``SB_CARRY`` instances when elaborated with a platform, the
        behavioural model without one. ``True``/``False`` force the instances/the model.

    Members
    -------
    a : ``In(ArrayLayout(a_shape, rows))``
    b : ``In(ArrayLayout(b_shape, cols))``, or ``In(ArrayLayout(b_shape, rows * cols))`` with
        ``stationary_b``
    en : ``In(1)``
        Clock enable of every register.
    p : ``Out(ArrayLayout(product_shape(a_shape, b_shape), rows * cols))``
        Products, row-major.

    Raises
    ------
    TypeError, ValueError
        A parameter has the wrong type or is out of range.
    """

    def __init__(self, a_shape, b_shape, rows, cols, *, stages=3, positions=None,
                 stationary_b=False, split=None, use_primitive=None):
        _check_common(self, a_shape, b_shape, stages, split, use_primitive)
        self.rows = _check_int(self, "rows", rows, 1, MAX_GRID)
        self.cols = _check_int(self, "cols", cols, 1, MAX_GRID)
        self.stationary_b = _check_bool(self, "stationary_b", stationary_b)
        self.positions = _check_positions(self, positions, self.rows, self.cols)
        n_b = self.rows * self.cols if self.stationary_b else self.cols
        super().__init__({
            "a": In(data.ArrayLayout(self.a_shape, self.rows)),
            "b": In(data.ArrayLayout(self.b_shape, n_b)),
            "en": In(1),
            "p": Out(data.ArrayLayout(self.p_shape, self.rows * self.cols)),
        })

    @property
    def latency(self):
        """Clock-enabled cycles from the operands to ``p`` (equals ``stages``)."""
        return self.stages

    def _use_primitive(self, platform):
        if self.use_primitive is None:
            return platform is not None
        return self.use_primitive

    def _plan(self):
        """Stage of each row, the sign row, and how far the shared ``a`` line must reach."""
        nb = self.b_shape.width
        stage_of = [k for k, count in enumerate(self.split) for _ in range(count)]
        sub_row = nb - 1 if self.b_shape.signed else None
        a_stages = {k for r, k in enumerate(stage_of) if r != sub_row}
        na_stage = stage_of[sub_row] if sub_row is not None else None
        # ~a for stage k > 0 is registered from a's line at stage k - 1.
        a_depth = max(a_stages | ({na_stage - 1} if na_stage else set()))
        return stage_of, sub_row, na_stage, a_depth

    @property
    def resources(self):
        """What the grid costs on an iCE40, counted from its structure.

        ``lut``, ``carry`` and ``dff`` count ``SB_LUT4``, ``SB_CARRY`` and flip-flops, all PEs and
        the shared delay lines together; ``logic_cells`` is ``lut`` plus the flip-flops that
        cannot share a cell with the LUT driving them (the delays), i.e. what nextpnr packs the
        grid into. ``per_pe`` has the same four figures for one PE alone, without the delay lines.

        Returns
        -------
        dict
            ``{"lut": int, "carry": int, "dff": int, "logic_cells": int, "per_pe": dict}``
        """
        n, nb = self.a_shape.width, self.b_shape.width
        stage_of, sub_row, na_stage, a_depth = self._plan()
        pes = len(self.positions)
        used_rows = len({i for i, _ in self.positions})
        used_cols = len({j for _, j in self.positions})
        pe = {"lut": n + (nb - 1) * (n + 1), "carry": (nb - 1) * n, "dff": 0}
        packed = 0
        done = 0
        for count in self.split:
            done += count
            # Right after row 0, H's top bit is a constant 0 (unsigned a) or the same bit as the
            # one below it (signed a).
            high = n - (done == 1)
            pe["dff"] += done + high
            packed += count + high      # each row's new bits: flip-flops in its own cells
        pe["logic_cells"] = pe["lut"] + pe["dff"] - packed
        shared_dff = used_rows * n * a_depth
        shared_lut = 0
        if sub_row is not None:
            shared_lut = used_rows * n
            shared_dff += used_rows * n * (na_stage > 0)
        b_dff = 0
        if not self.stationary_b:
            b_dff = used_cols * sum(sum(k >= s for k in stage_of) for s in range(1, self.stages))
        total = {
            "lut": pes * pe["lut"] + shared_lut,
            "carry": pes * pe["carry"],
            "dff": pes * pe["dff"] + shared_dff + b_dff,
        }
        # The ~a inverters pack with their delay flip-flops; the a and b delays stand alone.
        total["logic_cells"] = (pes * pe["logic_cells"] + shared_lut + shared_dff + b_dff
                                - used_rows * n * (sub_row is not None and na_stage > 0))
        total["per_pe"] = pe
        return total

    def elaborate(self, platform):
        m = Module()
        rows_builder = _Cells(m) if self._use_primitive(platform) else _Arith(m)
        n, nb, S = self.a_shape.width, self.b_shape.width, self.stages
        a_signed, b_signed = self.a_shape.signed, self.b_shape.signed
        stage_of, sub_row, na_stage, a_depth = self._plan()

        def register(value, name, init=0):
            value = Cat(*value) if isinstance(value, list) else value
            reg = Signal(len(value), name=name, init=init)
            with m.If(self.en):
                m.d.sync += reg.eq(value)
            return reg

        # -- shared delay lines -------------------------------------------------------------------
        # a (as a list of bits) at the input of each stage that reads it; ~a where the sign row is.
        used_rows = sorted({i for i, _ in self.positions})
        used_cols = sorted({j for _, j in self.positions})
        a_at, na_at = {}, {}
        for i in used_rows:
            line = [list(Value.cast(self.a[i]))]
            for k in range(1, a_depth + 1):
                line.append(list(register(line[-1], f"a{i}_d{k}")))
            a_at[i] = line
            if b_signed:
                if na_stage == 0:
                    na = Signal(n, name=f"na{i}")
                    m.d.comb += na.eq(~Cat(*line[0]))
                else:
                    # The inverters pack into the flip-flops of this delay stage. Reset to ~0, the
                    # complement of the reset value of a's line: after a reset the pipeline holds
                    # the products of zero operands (p = 0) even when b is not reset (stationary).
                    na = register(~Cat(*line[na_stage - 1]), f"na{i}_d{na_stage}", init=-1)
                na_at[i] = list(na)

        # b bits for stage k: delayed per column (broadcast), or straight from each PE's own b.
        def b_line(value, name):
            bits = list(Value.cast(value))
            line = [bits]
            for k in range(1, S):
                keep = [r for r in range(nb) if stage_of[r] >= k]
                reg = register([bits[r] for r in keep], f"{name}_d{k}")
                bits = [reg[keep.index(r)] if r in keep else None for r in range(nb)]
                line.append(bits)
            return line

        b_lines = {} if self.stationary_b else {j: b_line(self.b[j], f"b{j}") for j in used_cols}

        # -- one product per PE ---------------------------------------------------------------------
        for i, j in self.positions:
            idx = i * self.cols + j
            name = f"pe{i}_{j}"
            if self.stationary_b:
                b_at = [list(Value.cast(self.b[idx]))] * S
            else:
                b_at = b_lines[j]

            def register_stage(k, bits, name=name):
                # Constant bits stay constants; a bit that appears twice (the sign of row 0's
                # ANDs) gets one flip-flop.
                live = []
                for v in bits:
                    if not isinstance(v, int) and all(v is not u for u in live):
                        live.append(v)
                reg = register(live, f"{name}_s{k + 1}")
                reg_of = {id(v): reg[q] for q, v in enumerate(live)}
                return [v if isinstance(v, int) else reg_of[id(v)] for v in bits]

            bits = _pe_rows(rows_builder, name, self.split, sub_row, a_signed, a_at[i],
                            na_at.get(i), b_at, register_stage)
            m.d.comb += self.p[idx].eq(Cat(*map(_bit, bits)))
        return m


class CarryMultiplier(wiring.Component):
    """One pipelined carry-chain multiplier: a 1x1 :class:`CarryMulGrid`.

    Same interface and enable behaviour as the other multipliers
    (:class:`~npuforge.hdl.ice40_dsp.PipelinedLutMultiplier`): ``p`` holds ``a * b`` of the
    operands presented ``latency`` clock-enabled cycles earlier. The delay lines of ``a`` and
    ``b`` are its own here; a grid shares them between PEs.

    Parameters
    ----------
    a_shape, b_shape : Shape
        Operand shapes, signed or unsigned, 2..16 bits each.
    stages : int
        Pipeline stages = latency, 1..min(4, b width).
    split : tuple of int or None
        Rows per stage, as for :class:`CarryMulGrid`.
    use_primitive : bool or None
        As for :class:`CarryMulGrid`.

    Members
    -------
    a : ``In(a_shape)``
    b : ``In(b_shape)``
    en : ``In(1)``
    p : ``Out(product_shape(a_shape, b_shape))``

    Raises
    ------
    TypeError, ValueError
        A parameter has the wrong type or is out of range.
    """

    def __init__(self, a_shape, b_shape, *, stages=3, split=None, use_primitive=None):
        _check_common(self, a_shape, b_shape, stages, split, use_primitive)
        super().__init__({
            "a": In(self.a_shape), "b": In(self.b_shape), "en": In(1), "p": Out(self.p_shape),
        })

    @property
    def latency(self):
        """Clock-enabled cycles from the operands to ``p`` (equals ``stages``)."""
        return self.stages

    def elaborate(self, platform):
        m = Module()
        m.submodules.grid = grid = CarryMulGrid(
            self.a_shape, self.b_shape, 1, 1, stages=self.stages, split=self.split,
            use_primitive=self.use_primitive)
        m.d.comb += [grid.a[0].eq(self.a), grid.b[0].eq(self.b), grid.en.eq(self.en),
                     self.p.eq(grid.p[0])]
        return m
