"""The MAC-array generator: ``Y = requant(X @ W + bias)`` on a parameterized array of PEs.

Architecture
------------
The array has ``rows x cols`` processing elements (PEs). Operands come from on-chip buffers
(:class:`amaranth.lib.memory.Memory`, block RAM on iCE40) that a single ``load`` stream fills in
row-major order; results leave through the ``y`` stream. Everything between runs in one in-order
pipeline with a global enable, so a stall (a full output) freezes it without losing a beat.

``dataflow="os"`` (output-stationary)
    PE ``(i, j)`` owns output ``Y[m0+i, n0+j]`` of the current tile. Each beat broadcasts column
    ``k`` of the X tile along the rows and row ``k`` of the W tile down the columns (one operand
    register per row and per column, shared by its PEs); every PE adds one product per beat. After
    ``K`` beats the tile's accumulators are copied into a shadow chain that drains, in row-major
    order, through the output stage while the next tile already accumulates. Tiles go ``m`` outer,
    ``n`` inner.

``dataflow="ws"`` (weight-stationary)
    PE ``(r, c)`` holds weight ``W[k0+r, n0+c]``. Each beat broadcasts ``X[m, k0:k0+rows]`` along the
    rows; a pipelined adder tree sums each column, and the column sums accumulate over the K tiles in
    a double-banked accumulator memory (one bank per N tile, so that one bank drains while the other
    accumulates). Loading a weight tile costs ``rows`` beats; rows past ``K`` get zero weights.

Output stage: ``y32 = saturate_int32(acc + bias[n])`` then the TFLite/gemmlowp requantizer
(per-channel multiplier and right shift, rounding, zero point, clamp) or, with ``raw`` set, ``y32``.

Results leave in *tile order* (see :meth:`MacArrayConfig.output_order`); the simulation harness
and the host driver put them back into a row-major ``(M, N)`` matrix.
"""


import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..hdl._params import reject
from ..hdl.carry_mul import CarryMulGrid
from ..hdl.ice40_dsp import DualMac8x8, Mac16x16, PipelinedLutMultiplier
from ..hdl.mul import Multiplier, product_shape
from ..hdl.output_stage import OutputStage, drain_layout, saturate

__all__ = ["DATAFLOWS", "LoadTarget", "MacArray", "MacArrayConfig", "MacCore"]

DATAFLOWS = ("os", "ws")

#: PE multiplier allocations: all in logic (``lut``), the tool's choice (``infer``), all on iCE40
#: DSP blocks (``dsp``), or ``dsp_blocks`` DSP blocks first and logic for the rest (``mixed``).
MULTIPLIERS = ("lut", "infer", "dsp", "mixed")

#: How PEs in logic multiply: a partial-product adder tree per PE (``tree``), or carry-chain rows
#: with operand delay lines shared along array rows and columns (``carry``, see
#: :class:`npuforge.hdl.carry_mul.CarryMulGrid`).
LUT_MULTIPLIERS = ("tree", "carry")

#: Register stages an SB_MAC16 PE in dual 8x8 mode offers (operand, product and output registers).
DSP_MAX_LATENCY = 3

#: Limits of the configuration space (validated with named errors).
LIMITS = {
    "rows": (1, 64),
    "cols": (1, 64),
    "in_bits": (2, 16),
    "w_bits": (2, 16),
    "acc_bits": (4, 64),
    "max_m": (1, 65535),
    "max_k": (1, 65535),
    "max_n": (1, 65535),
    "requant_radix": (0, 31),
    "mul_latency": (0, 4),
    "dsp_blocks": (0, 64),
}


def _range_of(bits, is_signed):
    if is_signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _signed_bits_for(lo, hi):
    """Smallest signed width that holds every integer in ``lo..hi``."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


class LoadTarget(enum.Enum, shape=3):
    """Which buffer a word on the ``load`` stream goes to (each in its documented order)."""
    X = 0      # X[m, k], row-major
    W = 1      # W[k, n], row-major
    BIAS = 2   # bias[n] (int32)
    MULT = 3   # requantization multiplier[n] (0 .. 2**31-1)
    SHIFT = 4  # requantization right shift[n] (0 .. 31)
    # In-band commands for a core behind a clock-domain FIFO (:class:`SplitMacArray`): they stay
    # ordered with the words around them, which separate pulses across domains would not.
    START = 5  # start the run (data ignored)
    CLEAR = 6  # restart the load counters (data ignored)


LoadLayout = data.StructLayout({"target": LoadTarget, "data": signed(32)})


def ebr_count(depth, width):
    """iCE40 block RAMs (4 kbit: 256x16, 512x8, 1024x4 or 2048x2) for a ``depth`` x ``width``
    memory with one read port, in the cheapest geometry."""
    return min(math.ceil(width / (16 >> g)) * math.ceil(depth / (256 << g)) for g in range(4))


@dataclass(frozen=True)
class MacArrayConfig:
    """Parameters of a :class:`MacArray`.

    Parameters
    ----------
    rows, cols : int
        Array size (1..64 each). Output-stationary: rows tile M, cols tile N. Weight-stationary:
        rows tile K, cols tile N.
    dataflow : str
        ``"os"`` (output-stationary) or ``"ws"`` (weight-stationary).
    in_bits, in_signed : int, bool
        Activation (X) operand type, 2..16 bits.
    w_bits, w_signed : int, bool
        Weight (W) operand type, 2..16 bits.
    acc_bits : int or None
        Accumulator width. ``None`` derives the width at which no sum of ``max_k`` products can
        overflow; a smaller explicit width saturates after every accumulation step (see
        :func:`npuforge.sim.golden.gemm`).
    max_m, max_k, max_n : int
        The largest problem the buffers hold; they size the memories.
    multiplier : str
        PE multipliers: ``"lut"`` (partial products in logic; pipelined in two halves when
        ``mul_latency`` is 2), ``"infer"`` (a ``*`` for the tool), ``"dsp"`` (iCE40 ``SB_MAC16``:
        two PEs per block in its dual 8x8 mode when both operands have at most 8 bits, else one),
        ``"mixed"`` (``dsp_blocks`` blocks first, logic for the other PEs).
    dsp_blocks : int or None
        DSP blocks for ``"mixed"`` (0..64); derived for ``"dsp"``; unused otherwise.
    lut_multiplier : str
        How PEs in logic multiply: ``"tree"`` (partial products summed per PE) or ``"carry"``
        (rows of conditional adds on the iCE40 carry chain, about one logic cell per partial
        product bit, operand delay lines shared by a row or column of PEs; without operand
        gating, ``mul_latency`` 1..4; weight-stationary arrays wait ``mul_latency - 1`` beats
        before loading new weights).
    mul_latency : int
        Register stages in each PE multiplier: 0..2 for tree logic multipliers and 16x16 DSP PEs,
        0..3 for dual 8x8 DSP PEs, 1..4 for carry-chain logic PEs (all PEs share one latency).
    requant_radix : int
        Multiplier bits the requantizer consumes per cycle (1..31): fewer cells, more cycles per
        output; 0 is the bit-serial requantizer (multiply and rounding shift one bit per cycle,
        36 + shift cycles per output, about a fifth of the cells of radix 1) for designs whose
        results leave over a slow link.
    out_signed : bool
        Requantized outputs are int8 (True) or uint8 (False); the clamp limits are runtime inputs.
    operand_gating : bool
        Give every PE its own operand registers that hold their value while either operand is
        zero, while the PE lies outside the tile (the last rows or columns of a GEMM that does not
        fill the array) and between beats: the multiplier does not toggle on the zeros that ReLU
        activations are full of, nor when idle. Output-stationary accumulators then take a new
        sum only when a product changes; weight-stationary logic multipliers load a zero product
        (DSP PEs' products are masked). Costs one pipeline stage and the registers.
    """

    rows: int = 4
    cols: int = 4
    dataflow: str = "os"
    in_bits: int = 8
    in_signed: bool = True
    w_bits: int = 8
    w_signed: bool = True
    acc_bits: Optional[int] = None
    max_m: int = 32
    max_k: int = 64
    max_n: int = 32
    multiplier: str = "lut"
    dsp_blocks: Optional[int] = None
    lut_multiplier: str = "tree"
    mul_latency: int = 1
    requant_radix: int = 4
    out_signed: bool = True
    operand_gating: bool = False

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in LIMITS:
                if f.name in ("acc_bits", "dsp_blocks") and value is None:
                    continue
                lo, hi = LIMITS[f.name]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"{f.name} must be an integer in {lo}..{hi}, not {value!r}")
                if not lo <= value <= hi:
                    raise ValueError(f"{f.name} must be an integer in {lo}..{hi}, not {value!r}")
            elif f.type in (bool, "bool"):
                if not isinstance(value, bool):
                    raise TypeError(f"{f.name} must be True or False, not {value!r}")
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of 'os', 'ws', not {self.dataflow!r}")
        if self.multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {', '.join(map(repr, MULTIPLIERS))}, "
                             f"not {self.multiplier!r}")
        if self.multiplier == "mixed" and self.dsp_blocks is None:
            raise ValueError("dsp_blocks must be given (0..64) when multiplier is 'mixed'")
        if self.multiplier == "mixed" and self.dsp_blocks * self.pes_per_dsp > self.rows * self.cols:
            raise ValueError(f"dsp_blocks must be at most {-(-self.rows * self.cols // self.pes_per_dsp)} "
                             f"for a {self.rows}x{self.cols} array, not {self.dsp_blocks}")
        if self.lut_multiplier not in LUT_MULTIPLIERS:
            raise ValueError(f"lut_multiplier must be one of 'tree', 'carry', not {self.lut_multiplier!r}")
        if self.uses_carry:
            if self.operand_gating:
                raise ValueError("operand_gating is not available with lut_multiplier 'carry' "
                                 "(its operands are shared by a row or column of PEs)")
            top = min(4, self.w_bits)
            if not 1 <= self.mul_latency <= top:
                raise ValueError(f"mul_latency must be in 1..{top} with lut_multiplier 'carry' and "
                                 f"w_bits {self.w_bits}, not {self.mul_latency}")
        # Each kind of PE multiplier offers its own range of pipeline stages.
        kinds = []
        if self.dsp_pes:
            kinds.append(("SB_MAC16 dual 8x8 PEs", DSP_MAX_LATENCY) if self.pes_per_dsp == 2 else
                         ("SB_MAC16 16x16 PEs", 2))
        if self.dsp_pes < self.rows * self.cols and not self.uses_carry:
            kinds.append(("inferred multipliers" if self.multiplier == "infer" else
                          "tree logic multipliers", 2))
        for kind, top in kinds:
            if self.mul_latency > top:
                raise ValueError(f"mul_latency must be in 0..{top} with {kind}, not {self.mul_latency}")
        if self.acc_bits is not None and self.acc_bits < self.product_bits:
            raise ValueError(f"acc_bits must be at least the product width {self.product_bits} "
                             f"(in_bits {self.in_bits} x w_bits {self.w_bits}), not {self.acc_bits}")
        for name, words in (("X", self.x_words), ("W", self.w_words)):
            if words > 1 << 20:
                raise ValueError(f"the {name} buffer would need {words} words; reduce max_m, max_k or "
                                 f"max_n (at most {1 << 20} words per buffer)")

    # -- derived figures ---------------------------------------------------------------------
    @property
    def product_bits(self):
        return product_shape(self.in_shape, self.w_shape).width

    @property
    def in_shape(self):
        return signed(self.in_bits) if self.in_signed else unsigned(self.in_bits)

    @property
    def w_shape(self):
        return signed(self.w_bits) if self.w_signed else unsigned(self.w_bits)

    @property
    def natural_acc_bits(self):
        """Accumulator width at which no sum of ``max_k`` products can overflow."""
        alo, ahi = _range_of(self.in_bits, self.in_signed)
        wlo, whi = _range_of(self.w_bits, self.w_signed)
        corners = [alo * wlo, alo * whi, ahi * wlo, ahi * whi]
        return _signed_bits_for(self.max_k * min(corners), self.max_k * max(corners))

    @property
    def accumulator_bits(self):
        """The accumulator width the hardware has (explicit or derived)."""
        return self.natural_acc_bits if self.acc_bits is None else self.acc_bits

    @property
    def saturating(self):
        """True when the accumulator is narrower than the natural width and saturates."""
        return self.accumulator_bits < self.natural_acc_bits

    @property
    def k_group(self):
        """How many products the hardware sums exactly before each (saturating) accumulation."""
        return 1 if self.dataflow == "os" else self.rows

    @property
    def pes_per_dsp(self):
        """PEs one SB_MAC16 serves: two in its dual 8x8 mode (operands of at most 8 bits)."""
        return 2 if self.in_bits <= 8 and self.w_bits <= 8 else 1

    @property
    def dsp_weight_hold(self):
        """Whether weight-stationary DSP PEs keep their weight in the SB_MAC16's B register.

        Both PEs of a dual 8x8 block must then sit in one array row (an even column count), and
        the block needs its operand registers (``mul_latency`` >= 2); operand gating keeps its own
        registers in front of the block instead.
        """
        return (self.dataflow == "ws" and self.dsp_pes > 0 and self.pes_per_dsp == 2
                and self.mul_latency >= 2 and self.cols % 2 == 0 and not self.operand_gating)

    @property
    def uses_carry(self):
        """Whether some PEs multiply with carry-chain rows (:class:`CarryMulGrid`)."""
        return (self.lut_multiplier == "carry" and self.multiplier in ("lut", "mixed")
                and self.dsp_pes < self.rows * self.cols)

    @property
    def dsp_pes(self):
        """How many PEs multiply on DSP blocks (the first ones, in row-major order)."""
        pes = self.rows * self.cols
        if self.multiplier == "dsp":
            return pes
        if self.multiplier == "mixed":
            return min(pes, self.dsp_blocks * self.pes_per_dsp)
        return 0

    @property
    def dsp_count(self):
        """SB_MAC16 blocks the PEs use (``infer`` counts one per PE: Yosys maps each ``*``)."""
        if self.multiplier == "infer":
            return self.rows * self.cols
        return -(-self.dsp_pes // self.pes_per_dsp)

    @property
    def macs_per_cycle(self):
        return self.rows * self.cols

    @property
    def x_words(self):
        if self.dataflow == "os":
            return math.ceil(self.max_m / self.rows) * self.max_k
        return math.ceil(self.max_k / self.rows) * self.max_m

    @property
    def w_words(self):
        return math.ceil(self.max_n / self.cols) * self.max_k

    @property
    def acc_words(self):
        return 2 * self.max_m if self.dataflow == "ws" else 0

    @property
    def memory_bits(self):
        """Bits of on-chip buffer memory, by buffer."""
        return {
            "x": self.x_words * self.rows * self.in_bits,
            "w": self.w_words * self.cols * self.w_bits,
            "acc": self.acc_words * self.cols * self.accumulator_bits,
            "params": self.max_n * (32 + 31 + 5),
        }

    def estimate_resources(self):
        """A pre-synthesis estimate: ``logic_cells``, ``bram``, ``spram``, ``dsp``.

        Calibrated on complete builds (``bench/qor.py``: logic within 10 % of nextpnr's count,
        block RAMs exact or up to two above, DSPs exact; a test keeps it so). Used to refuse a
        design that cannot fit a board before a minute of synthesis, and by ``--fill``; the
        nextpnr report is the authority.
        """
        pes = self.rows * self.cols
        a, w, acc = self.in_bits, self.w_bits, self.accumulator_bits
        # Partial products cost about one cell per operand bit pair (measured: ~180 cells for
        # int8, ~150 pipelined); a DSP PE keeps only its accumulator in logic.
        lut_pes = pes - self.dsp_pes if self.multiplier != "infer" else 0
        if self.uses_carry:
            # One cell per partial-product bit (w rows of a + 2 bits) and the product register.
            per_lut_pe = w * (a + 2) + a + w
        else:
            per_lut_pe = a * w * 2 + (a + w) * 2
        # A DSP PE's product and operand registers live in the block (measured: 16 dual-8x8 PEs
        # add no logic beyond their accumulators).
        mul_lc = lut_pes * per_lut_pe
        pe_lc = acc * (2 if self.dataflow == "os" else 1) + self.product_bits
        # Requantizer, measured on the UP5K: about 480 cells plus 90 per multiplier bit per cycle.
        requant_lc = 480 + 90 * self.requant_radix if self.requant_radix else 220
        ctrl_lc = 900 + requant_lc
        bram = 0
        # The weight-stationary accumulator memory has two read ports (accumulate and drain):
        # Yosys gives each its own copy.
        acc_copies = 2 if self.dataflow == "ws" else 1
        for depth, width, copies in ((self.x_words, self.rows * self.in_bits, 1),
                                     (self.w_words, self.cols * self.w_bits, 1),
                                     (self.acc_words, self.cols * self.accumulator_bits, acc_copies),
                                     (self.max_n, 32, 1), (self.max_n, 31, 1), (self.max_n, 5, 1)):
            if depth:
                bram += copies * ebr_count(depth, width)
        return {"logic_cells": int(pes * pe_lc + mul_lc + ctrl_lc), "bram": bram, "spram": 0,
                "dsp": self.dsp_count}

    def check_shape(self, m, k, n):
        """Raise :class:`ValueError` unless an ``(m, k) @ (k, n)`` product fits the buffers."""
        for name, value, limit in (("M", m, self.max_m), ("K", k, self.max_k), ("N", n, self.max_n)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if not 1 <= value <= limit:
                raise ValueError(f"{name} must be in 1..{limit} (max_{name.lower()} of this array), "
                                 f"not {value}")

    def output_order(self, m, n):
        """Row and column index of every output in the order the ``y`` stream produces them.

        Returns
        -------
        (rows, cols) : tuple of numpy.ndarray
            ``Y[rows[t], cols[t]]`` is the ``t``-th word on ``y``.
        """
        R, C = self.rows, self.cols
        out_r, out_c = [], []
        if self.dataflow == "os":
            for m0 in range(0, m, R):
                for n0 in range(0, n, C):
                    for i in range(m0, min(m0 + R, m)):
                        for j in range(n0, min(n0 + C, n)):
                            out_r.append(i)
                            out_c.append(j)
        else:
            for n0 in range(0, n, C):
                for i in range(m):
                    for j in range(n0, min(n0 + C, n)):
                        out_r.append(i)
                        out_c.append(j)
        return np.array(out_r, dtype=np.int64), np.array(out_c, dtype=np.int64)

    def compute_cycles(self, m, k, n):
        """Beats the array issues for one GEMM (the ideal cycle count without stalls)."""
        R, C = self.rows, self.cols
        if self.dataflow == "os":
            return math.ceil(m / R) * math.ceil(n / C) * k
        # One cycle per N tile claims its accumulator bank.
        return math.ceil(n / C) * (1 + math.ceil(k / R) * (R + m))

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown mac-array parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**values)


class _Slot:
    """One PE's multiplier ports, whatever implements them."""

    def __init__(self, a, b, p):
        self.a, self.b, self.p = a, b, p
        #: A registered logic multiplier's ``clear`` input (load a zero product), else None.
        self.clear = None


def _mac_array_signature():
    return {
        "load": In(stream.Signature(LoadLayout)),
        "y": Out(stream.Signature(signed(32))),
        "size_m": In(16),
        "size_k": In(16),
        "size_n": In(16),
        "clear": In(1),
        "start": In(1),
        "busy": Out(1),
        "cycles": Out(32),
        "raw": In(1),
        "zero_point": In(signed(16)),
        "out_min": In(signed(16)),
        "out_max": In(signed(16)),
    }


class MacArray(wiring.Component):
    """A parameterized MAC array computing ``Y = requant(X @ W + bias)``.

    Parameters
    ----------
    config : MacArrayConfig

    Members
    -------
    load : In(stream.Signature(LoadLayout))
        Buffer writes: ``target`` selects X, W, BIAS, MULT or SHIFT; each target has its own
        row-major write counter, reset by ``clear``. Not ready while a GEMM runs.
    y : Out(stream.Signature(signed(32)))
        Results, ``M * N`` words per run in :meth:`MacArrayConfig.output_order`.
    size_m, size_k, size_n : In(16)
        Problem size; set before loading (the loaders use it to place words) and hold.
    clear : In(1)
        Pulse: restart all load counters.
    start : In(1)
        Pulse: run the GEMM on the loaded buffers.
    busy : Out(1)
        High from ``start`` until the last result has left ``y``.
    cycles : Out(32)
        Cycles the last (or current) run has been busy.
    raw : In(1)
        Output ``saturate_int32(acc + bias)`` without requantization.
    zero_point, out_min, out_max : In(signed(16))
        Requantization zero point and output clamp (ReLU: ``out_min = zero_point``).

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`MacArrayConfig`.
    """

    def __init__(self, config):
        if not isinstance(config, MacArrayConfig):
            raise reject(self, TypeError(f"config must be a MacArrayConfig, not {config!r}"))
        self.config = config
        super().__init__(_mac_array_signature())

    # ------------------------------------------------------------------------------------------
    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.core = core = MacCore(cfg)
        m.submodules.output = out = OutputStage(acc_bits=cfg.accumulator_bits, max_n=cfg.max_n,
                                                requant_radix=cfg.requant_radix)
        busy = Signal()
        m.d.comb += [
            core.size_m.eq(self.size_m), core.size_k.eq(self.size_k), core.size_n.eq(self.size_n),
            core.clear.eq(self.clear), out.clear.eq(self.clear),
            core.start.eq(self.start & ~busy),
            out.raw.eq(self.raw), out.zero_point.eq(self.zero_point),
            out.out_min.eq(self.out_min), out.out_max.eq(self.out_max),
        ]
        wiring.connect(m, core.drain, out.i)
        wiring.connect(m, out.o, wiring.flipped(self.y))

        # Route loaded words: operands to the core's buffers, per-channel parameters to the output
        # stage. Nothing is taken while a run is in flight (the buffers are being read).
        ld = self.load
        target = ld.payload.target
        to_core = (target == LoadTarget.X) | (target == LoadTarget.W)
        m.d.comb += [
            core.load.payload.eq(ld.payload),
            out.param.payload.which.eq(target.as_value() - LoadTarget.BIAS.value),
            out.param.payload.data.eq(ld.payload.data),
            core.load.valid.eq(ld.valid & to_core & ~busy),
            out.param.valid.eq(ld.valid & ~to_core & ~busy),
            ld.ready.eq(~busy & Mux(to_core, core.load.ready, out.param.ready)),
        ]

        m.d.comb += [busy.eq(core.busy | out.busy), self.busy.eq(busy)]
        with m.If(self.start & ~busy):
            m.d.sync += self.cycles.eq(0)
        with m.Elif(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m


class MacCore(wiring.Component):
    """The array without its output stage: operand buffers, sequencer, PEs and drain.

    :class:`MacArray` pairs it with an :class:`~npuforge.hdl.output_stage.OutputStage`; a board
    shell may instead put the two in different clock domains, with a FIFO between them.

    Members
    -------
    load : In(stream.Signature(LoadLayout))
        X and W words (other targets are ignored).
    drain : Out(stream.Signature(DrainLayout))
        Accumulators with their output channel, in :meth:`MacArrayConfig.output_order`.
    size_m, size_k, size_n, clear, start : In
    busy : Out(1)
        From ``start`` until the last accumulator has left ``drain``.
    cycles : Out(32)
        Cycles the last (or current) run has been busy.
    """

    def __init__(self, config):
        if not isinstance(config, MacArrayConfig):
            raise reject(self, TypeError(f"config must be a MacArrayConfig, not {config!r}"))
        self.config = config
        super().__init__({
            "load": In(stream.Signature(LoadLayout)),
            "drain": Out(stream.Signature(drain_layout(config.accumulator_bits))),
            "size_m": In(16),
            "size_k": In(16),
            "size_n": In(16),
            "clear": In(1),
            "start": In(1),
            "busy": Out(1),
            "cycles": Out(32),
        })

    # ------------------------------------------------------------------------------------------
    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        R, C = cfg.rows, cfg.cols

        running = Signal()      # the sequencer still issues beats
        cen = Signal()          # global enable of the compute pipeline
        busy = Signal()
        # Sizes arrive long before a run; registered `size - 1` keeps subtractions off the
        # counters' compare paths.
        # Counters are only as wide as the configured maxima need (sizes are checked against
        # them before a run): narrower compares and carry chains.
        self._k_last = Signal(self._counter(cfg.max_k))
        self._m_last = Signal(self._counter(cfg.max_m))
        self._n_last = Signal(self._counter(cfg.max_n))
        # One bit wider than `kk`, so that K = 1 (all ones) matches no index.
        self._k_before_last = Signal(len(self._k_last) + 1)
        self._m_before_last = Signal(len(self._m_last) + 1)
        self._n_before_last = Signal(len(self._n_last) + 1)
        m.d.sync += [self._m_before_last.eq(self.size_m - 2), self._n_before_last.eq(self.size_n - 2)]
        m.d.sync += [self._k_last.eq(self.size_k - 1), self._m_last.eq(self.size_m - 1),
                     self._n_last.eq(self.size_n - 1), self._k_before_last.eq(self.size_k - 2)]
        # `start`, or a START word on `load` (which is only taken while idle), registered: the
        # load stream may come straight from a clock-domain FIFO.
        self._go = go = Signal()
        m.d.sync += go.eq((self.start | (self.load.valid & (self.load.payload.target == LoadTarget.START)))
                          & ~busy & ~go)

        # -- buffers ----------------------------------------------------------------------------
        m.submodules.x_mem = x_mem = Memory(shape=data.ArrayLayout(cfg.in_shape, R),
                                            depth=cfg.x_words, init=[])
        m.submodules.w_mem = w_mem = Memory(shape=data.ArrayLayout(cfg.w_shape, C),
                                            depth=cfg.w_words, init=[])

        self._elaborate_loader(m, x_mem, w_mem, busy)

        drain = self.drain

        # -- the array ----------------------------------------------------------------------------
        if cfg.dataflow == "os":
            array_idle = self._elaborate_os(m, x_mem, w_mem, drain, running, cen)
        else:
            array_idle = self._elaborate_ws(m, x_mem, w_mem, drain, running, cen)

        # -- run control ----------------------------------------------------------------------------
        m.d.comb += busy.eq(running | ~array_idle | drain.valid | go)
        m.d.comb += self.busy.eq(busy)
        # `busy` gathers the whole pipeline: the counter adds its registered copy, so neither the
        # 32 flip-flops' clock enables nor the carry chain wait for it. A run's count (its busy
        # cycles, from `go` on) is complete one cycle after `busy` falls; `go` comes at least two
        # cycles after it (START is only taken while `load_ok`, a registered ~busy, is high).
        counting = Signal()
        m.d.sync += counting.eq(busy)
        with m.If(go & ~counting):
            m.d.sync += self.cycles.eq(0)
        with m.Else():
            m.d.sync += self.cycles.eq(self.cycles + counting)
        return m

    @staticmethod
    def _counter(limit):
        """Shape of an index in ``0..limit - 1`` (at least one bit)."""
        return range(max(2, limit))

    # ------------------------------------------------------------------------------------------
    def _elaborate_loader(self, m, x_mem, w_mem, busy):
        """Row-major write counters that place each loaded word in its buffer lane."""
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        M, K = self.size_m, self.size_k
        ld = self.load
        # Registered: `busy` gathers the whole pipeline, and the load path (to the memories' write
        # enables) must not wait for it. Words come only before START, so a cycle's lag is safe.
        load_ok = Signal()
        m.d.sync += load_ok.eq(~busy)
        m.d.comb += ld.ready.eq(load_ok & ~self._go)
        target = ld.payload.target
        value = ld.payload.data
        take_x, take_w, take_clear = Signal(), Signal(), Signal()
        m.d.comb += [
            take_x.eq(ld.valid & ld.ready & (target == LoadTarget.X)),
            take_w.eq(ld.valid & ld.ready & (target == LoadTarget.W)),
            take_clear.eq(self.clear | (ld.valid & ld.ready & (target == LoadTarget.CLEAR))),
        ]

        x_wr = x_mem.write_port(granularity=1)
        w_wr = w_mem.write_port(granularity=1)
        xa = range(cfg.x_words)
        wa = range(cfg.w_words)

        def end_flag(name, index, size, last, before_last, take):
            """A register that says ``index == last`` (``size - 1``), computed a step ahead so that
            the counters' clock enables do not wait for a wide compare: a clear (``index`` to 0)
            sets it from ``size`` itself, which may change in the same cycle; then it follows
            ``index`` as ``take`` steps it (to 0 after ``last``, else up by one), and is refreshed
            while nothing is taken. ``last`` and ``before_last`` are registered, so a word may
            come no sooner than the cycle after its sizes."""
            flag = Signal(name=name)
            with m.If(take_clear):
                m.d.sync += flag.eq(size == 1)
            with m.Elif(take):
                m.d.sync += flag.eq(Mux(flag, last == 0, index == before_last))
            with m.Else():
                m.d.sync += flag.eq(index == last)
            return flag

        # X: output-stationary keeps M across lanes (lane = m % R, word = (m // R) * K + k);
        # weight-stationary keeps K across lanes (lane = k % R, word = (k // R) * M + m).
        x_lane = Signal(range(R), name="x_lane")
        x_base = Signal(xa, name="x_base")
        x_i = Signal(self._counter(cfg.max_m), name="x_i")
        x_k = Signal(self._counter(cfg.max_k), name="x_k")
        x_k_end = end_flag("x_k_end", x_k, K, self._k_last, self._k_before_last, take_x)
        for lane in range(R):
            m.d.comb += x_wr.data[lane].eq(value)
        if cfg.dataflow == "os":
            m.d.comb += x_wr.addr.eq(x_base + x_k)
        else:
            m.d.comb += x_wr.addr.eq(x_base + x_i)
        m.d.comb += x_wr.en.eq(Mux(take_x, 1 << x_lane, 0))
        with m.If(take_x):
            if cfg.dataflow == "os":
                with m.If(x_k_end):
                    m.d.sync += x_k.eq(0)
                    with m.If(x_lane == R - 1):
                        m.d.sync += [x_lane.eq(0), x_base.eq(x_base + K)]
                    with m.Else():
                        m.d.sync += x_lane.eq(x_lane + 1)
                with m.Else():
                    m.d.sync += x_k.eq(x_k + 1)
            else:
                with m.If(x_k_end):
                    m.d.sync += [x_k.eq(0), x_lane.eq(0), x_base.eq(0), x_i.eq(x_i + 1)]
                with m.Else():
                    m.d.sync += x_k.eq(x_k + 1)
                    with m.If(x_lane == R - 1):
                        m.d.sync += [x_lane.eq(0), x_base.eq(x_base + M)]
                    with m.Else():
                        m.d.sync += x_lane.eq(x_lane + 1)

        # W: lane = n % C, word = (n // C) * K + k, for both dataflows.
        w_lane = Signal(range(C), name="w_lane")
        w_base = Signal(wa, name="w_base")
        w_n = Signal(self._counter(cfg.max_n), name="w_n")
        w_k = Signal(self._counter(cfg.max_k), name="w_k")
        w_n_end = end_flag("w_n_end", w_n, self.size_n, self._n_last, self._n_before_last, take_w)
        for lane in range(C):
            m.d.comb += w_wr.data[lane].eq(value)
        m.d.comb += [
            w_wr.addr.eq(w_base + w_k),
            w_wr.en.eq(Mux(take_w, 1 << w_lane, 0)),
        ]
        with m.If(take_w):
            with m.If(w_n_end):
                m.d.sync += [w_n.eq(0), w_lane.eq(0), w_base.eq(0), w_k.eq(w_k + 1)]
            with m.Else():
                m.d.sync += w_n.eq(w_n + 1)
                with m.If(w_lane == C - 1):
                    m.d.sync += [w_lane.eq(0), w_base.eq(w_base + K)]
                with m.Else():
                    m.d.sync += w_lane.eq(w_lane + 1)

        with m.If(take_clear):
            m.d.sync += [x_lane.eq(0), x_base.eq(0), x_i.eq(0), x_k.eq(0),
                         w_lane.eq(0), w_base.eq(0), w_n.eq(0), w_k.eq(0)]

    # ------------------------------------------------------------------------------------------
    def _ctrl_pipeline(self, m, layout, depth, cen, issue):
        """``depth + 1`` copies of the beat control word, stage 0 being the issue stage."""
        stages = [issue]
        for s in range(1, depth + 1):
            reg = Signal(layout, name=f"ctrl_s{s}")
            with m.If(cen):
                m.d.sync += reg.eq(stages[-1])
            stages.append(reg)
        return stages

    def _multipliers(self, m, cen, shape_a, shape_b, count_i, count_j, prefix,
                     row_ops=None, col_ops=None, pe_ops=None, weight_load=None):
        """A grid of PE multiplier slots (``a``, ``b``, ``p``), allocated as the config says.

        The first ``dsp_pes`` PEs in row-major order multiply on SB_MAC16 blocks (two per block in
        dual 8x8 mode); the rest in logic. Every variant has the same latency, so the array's
        control does not see the difference.

        ``weight_load`` (weight-stationary, see :attr:`MacArrayConfig.dsp_weight_hold`) is
        ``(data, load)``: per column the weight being loaded, per row whether it loads now. DSP PEs
        then take their weight straight into the block's B register, which holds it.
        """
        cfg = self.config
        lat = cfg.mul_latency
        hold = weight_load if cfg.dsp_weight_hold else None
        p_shape = product_shape(shape_a, shape_b)
        slots = [[None] * count_j for _ in range(count_i)]
        dual = None
        grid = None
        if cfg.uses_carry:
            # One grid for all logic PEs: the operand delay lines are shared by array rows and
            # columns, so the grid takes the broadcast operands, not the per-PE slots.
            logic = [(i, j) for i in range(count_i) for j in range(count_j)
                     if i * count_j + j >= cfg.dsp_pes]
            grid = CarryMulGrid(shape_a, shape_b, count_i, count_j, stages=lat, positions=logic,
                                stationary_b=pe_ops is not None)
            m.submodules[f"{prefix}_carry"] = grid
            m.d.comb += grid.en.eq(cen)
            m.d.comb += [grid.a[i].eq(row_ops[i]) for i in range(count_i)]
            b_ops = col_ops if pe_ops is None else pe_ops
            m.d.comb += [grid.b[j].eq(op) for j, op in enumerate(b_ops)]
        for i in range(count_i):
            for j in range(count_j):
                idx = i * count_j + j
                slot = _Slot(Signal(shape_a, name=f"{prefix}_a_{i}_{j}"),
                             Signal(shape_b, name=f"{prefix}_b_{i}_{j}"),
                             Signal(p_shape, name=f"{prefix}_p_{i}_{j}"))
                slots[i][j] = slot
                if idx < cfg.dsp_pes and cfg.pes_per_dsp == 2:
                    lane = idx % 2
                    if lane == 0:
                        dual = DualMac8x8(shape_a.signed, shape_b.signed, latency=lat)
                        m.submodules[f"{prefix}_dsp{idx // 2}"] = dual
                        m.d.comb += dual.en.eq(cen)
                        if hold is not None:
                            # Both lanes sit in row i (the column count is even).
                            m.d.comb += dual.b_hold.eq(~hold[1][i])
                    a_port, b_port, p_port = ((dual.a0, dual.b0, dual.p0) if lane == 0 else
                                              (dual.a1, dual.b1, dual.p1))
                    b_source = slot.b if hold is None else hold[0][j]
                    m.d.comb += [a_port.eq(slot.a), b_port.eq(b_source), slot.p.eq(p_port)]
                    continue
                if grid is not None and idx >= cfg.dsp_pes:
                    m.d.comb += slot.p.eq(grid.p[idx])
                    continue
                if idx < cfg.dsp_pes:
                    mul = Mac16x16(shape_a.signed, shape_b.signed, latency=lat)
                elif cfg.multiplier != "infer" and lat == 2:
                    mul = PipelinedLutMultiplier(shape_a, shape_b)
                else:
                    kind = "infer" if cfg.multiplier == "infer" else "lut"
                    mul = Multiplier(shape_a, shape_b, kind=kind, latency=lat)
                m.submodules[f"{prefix}_{i}_{j}"] = mul
                m.d.comb += [mul.en.eq(cen), mul.a.eq(slot.a), mul.b.eq(slot.b), slot.p.eq(mul.p)]
                if lat >= 1:
                    slot.clear = Signal(name=f"{prefix}_clr_{i}_{j}")
                    m.d.comb += mul.clear.eq(slot.clear)
        return slots

    def _feed(self, m, cen, slot, a, b, name, *, force=None, enable=None):
        """Connect a PE's operands; with operand gating through registers that hold on a zero.

        The operand registers load when both operands are non-zero, or when ``force`` is set,
        and only when ``enable`` is set (both optional). ``slot.zero_next`` tells, a stage before
        the product, that the registers held: it is 0 when the product changes at the end of this
        cycle (the product then is a fresh one).
        Weight-stationary arrays see a zero in ``slot.p`` for a gated beat (cleared product
        register, or a masked product); output-stationary ones use ``slot.raw_p`` (see
        `_elaborate_os`).
        """
        cfg = self.config
        if not cfg.operand_gating:
            m.d.comb += [slot.a.eq(a), slot.b.eq(b)]
            return
        a_pe = Signal(slot.a.shape(), name=f"ga_{name}")
        b_pe = Signal(slot.b.shape(), name=f"gb_{name}")
        load = Signal(name=f"gl_{name}")
        nonzero = (a != 0) & (b != 0)
        if force is not None:
            nonzero = nonzero | force
        m.d.comb += load.eq(nonzero if enable is None else nonzero & enable)
        with m.If(cen & load):
            m.d.sync += [a_pe.eq(a), b_pe.eq(b)]
        m.d.comb += [slot.a.eq(a_pe), slot.b.eq(b_pe)]
        # The zero flag travels alongside the multiplier's pipeline: flags[s] is aligned with
        # stage s after the operand registers' input (flags[1] with the registers, flags[1 + L]
        # with the product). Only the stages something uses are built.
        flags = [~load]

        def flag(stage):
            while len(flags) <= stage:
                nxt = Signal(name=f"gz_{name}" if len(flags) == 1 else f"gz_{name}_d{len(flags) - 1}")
                with m.If(cen):
                    m.d.sync += nxt.eq(flags[-1])
                flags.append(nxt)
            return flags[stage]

        zero_next = flag(cfg.mul_latency)
        slot.raw_p = slot.p
        slot.zero_next = zero_next
        if cfg.dataflow == "ws":
            # The column adder tree needs a zero from a gated PE. A registered logic multiplier
            # loads it into its product register (synchronous reset) while its operands and
            # nodes hold; other multipliers' products are masked after the fact.
            if slot.clear is not None:
                m.d.comb += slot.clear.eq(zero_next)
            else:
                product = Signal(slot.p.shape(), name=f"gp_{name}")
                m.d.comb += product.eq(Mux(flag(cfg.mul_latency + 1), 0, slot.p))
                slot.p = product

    def _accumulate(self, acc, addend):
        """``acc + addend`` in the accumulator width, saturating when the config asks for it."""
        cfg = self.config
        if cfg.saturating:
            return saturate(acc + addend, cfg.accumulator_bits)
        return acc + addend

    # ------------------------------------------------------------------------------------------
    def _elaborate_os(self, m, x_mem, w_mem, drain, running, cen):
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        M, K, N = self.size_m, self.size_k, self.size_n
        acc_bits = cfg.accumulator_bits

        ctrl_layout = data.StructLayout({
            "valid": 1, "first": 1, "last": 1,
            "n0": self._counter(cfg.max_n), "rows_valid": range(R + 1), "cols_valid": range(C + 1),
        })
        # -- sequencer: for m0 (outer), for n0, for k ------------------------------------------
        # m_left / n_left count down the rows and columns still to tile. The "last" conditions
        # are registers computed a step ahead, so the loop control is one LUT level deep.
        kk = Signal(self._counter(cfg.max_k))
        m_left, n_left = Signal(range(cfg.max_m + 1)), Signal(range(cfg.max_n + 1))
        n0 = Signal(self._counter(cfg.max_n))
        k_end, n_end, m_end = Signal(), Signal(), Signal()     # kk, n tile, m tile are the last
        x_base, w_base = Signal(range(cfg.x_words + 1)), Signal(range(cfg.w_words + 1))
        issue = Signal(ctrl_layout)
        x_rd = x_mem.read_port()
        w_rd = w_mem.read_port()
        m.d.comb += [
            x_rd.en.eq(cen), w_rd.en.eq(cen),
            x_rd.addr.eq(x_base + kk), w_rd.addr.eq(w_base + kk),
            issue.valid.eq(running),
            issue.first.eq(kk == 0),
            issue.last.eq(k_end),
            issue.n0.eq(n0),
            issue.rows_valid.eq(Mux(m_left >= R, R, m_left)),
            issue.cols_valid.eq(Mux(n_left >= C, C, n_left)),
        ]
        with m.If(self._go & ~running):
            m.d.sync += [running.eq(1), m_left.eq(M), n_left.eq(N), n0.eq(0), kk.eq(0),
                         x_base.eq(0), w_base.eq(0), k_end.eq(self._k_last == 0),
                         n_end.eq(N <= C), m_end.eq(M <= R)]
        with m.Elif(running & cen):
            with m.If(k_end):
                m.d.sync += [kk.eq(0), k_end.eq(self._k_last == 0)]
                with m.If(n_end):
                    m.d.sync += [n0.eq(0), n_left.eq(N), w_base.eq(0), n_end.eq(N <= C)]
                    with m.If(m_end):
                        m.d.sync += running.eq(0)
                    with m.Else():
                        m.d.sync += [m_left.eq(m_left - R), x_base.eq(x_base + K),
                                     m_end.eq(m_left <= 2 * R)]
                with m.Else():
                    m.d.sync += [n0.eq(n0 + C), n_left.eq(n_left - C), w_base.eq(w_base + K),
                                 n_end.eq(n_left <= 2 * C)]
            with m.Else():
                m.d.sync += [kk.eq(kk + 1), k_end.eq(kk == self._k_before_last)]

        # -- pipeline: s1 memory data, s2 operand registers, s(2+L) products, then capture -------
        L = cfg.mul_latency
        P = 2 + L + cfg.operand_gating
        ctrl = self._ctrl_pipeline(m, ctrl_layout, P, cen, issue)
        a_reg = [Signal(cfg.in_shape, name=f"a_row{i}") for i in range(R)]
        b_reg = [Signal(cfg.w_shape, name=f"b_col{j}") for j in range(C)]
        with m.If(cen):
            m.d.sync += [a_reg[i].eq(x_rd.data[i]) for i in range(R)]
            m.d.sync += [b_reg[j].eq(w_rd.data[j]) for j in range(C)]
        muls = self._multipliers(m, cen, cfg.in_shape, cfg.w_shape, R, C, "pe", a_reg, b_reg)
        # The last beat of a tile hands `acc + p` to the shadow register and clears the
        # accumulator with the flip-flop's synchronous reset, so the next tile's first beat adds
        # to zero without a multiplexer in front of the adder.
        #
        # With operand gating the accumulator runs one product behind: `acc` holds the sum of the
        # tile's products but the latest, which waits in the multiplier's output (held there
        # while operands are gated), and `acc + p` is the tile's running sum. `acc` takes that sum
        # only when the multiplier's product changes, so on a gated beat neither the adder's inputs
        # nor its output move. Every tile's first beat loads its operands (a zero product if one is
        # zero), so the held product always belongs to the current tile, and that beat's arrival
        # clears `acc`.
        accs = [[Signal(signed(acc_bits), name=f"acc_{i}_{j}") for j in range(C)] for i in range(R)]
        sums = [[None] * C for _ in range(R)]
        beat = cen & ctrl[P].valid
        for i in range(R):
            for j in range(C):
                acc = accs[i][j]
                total = Signal(signed(acc_bits), name=f"sum_{i}_{j}")
                sums[i][j] = total
                if cfg.operand_gating:
                    # PEs outside the tile (its last rows or columns of a ragged GEMM) and every
                    # PE between runs hold their operands too.
                    used = ctrl[2].valid & (ctrl[2].rows_valid > i) & (ctrl[2].cols_valid > j)
                    self._feed(m, cen, muls[i][j], a_reg[i], b_reg[j], f"{i}_{j}",
                               force=ctrl[2].first, enable=used)
                    m.d.comb += total.eq(self._accumulate(acc, muls[i][j].raw_p))
                    with m.If(cen & ~muls[i][j].zero_next):
                        with m.If(ctrl[P - 1].first):
                            m.d.sync += acc.eq(0)
                        with m.Else():
                            m.d.sync += acc.eq(total)
                    continue
                self._feed(m, cen, muls[i][j], a_reg[i], b_reg[j], f"{i}_{j}")
                m.d.comb += total.eq(self._accumulate(acc, muls[i][j].p))
                with m.If(beat):
                    with m.If(ctrl[P].last):
                        m.d.sync += acc.eq(0)
                    with m.Else():
                        m.d.sync += acc.eq(total)

        # -- shadow chain: captured tiles drain in row-major order while the next accumulates ----
        shadow = [Signal(signed(acc_bits), name=f"shadow_{idx}") for idx in range(R * C)]
        d_busy = Signal()
        d_i, d_j = Signal(range(R)), Signal(range(C))
        d_n0 = Signal(self._counter(cfg.max_n))
        # The tile's last valid row and column, registered at capture: the drain's compares see
        # registers, not subtractions.
        d_row_last = Signal(range(R), name="d_row_last")
        d_col_last = Signal(range(C), name="d_col_last")
        capture = ctrl[P].valid & ctrl[P].last
        m.d.comb += cen.eq(~(capture & d_busy))

        emit = d_busy & (d_j <= d_col_last)
        m.d.comb += [
            drain.valid.eq(emit),
            drain.payload.acc.eq(shadow[0]),
            drain.payload.n.eq(d_n0 + d_j),
        ]
        step = d_busy & (~emit | drain.ready)
        with m.If(step):
            m.d.sync += [shadow[idx].eq(shadow[idx + 1]) for idx in range(R * C - 1)]
            with m.If(d_j == C - 1):
                m.d.sync += [d_j.eq(0), d_i.eq(d_i + 1)]
            with m.Else():
                m.d.sync += d_j.eq(d_j + 1)
            with m.If((d_i == d_row_last) & (d_j == d_col_last)):
                m.d.sync += d_busy.eq(0)
        with m.If(capture & ~d_busy):
            m.d.sync += [shadow[i * C + j].eq(sums[i][j]) for i in range(R) for j in range(C)]
            m.d.sync += [d_busy.eq(1), d_i.eq(0), d_j.eq(0), d_n0.eq(ctrl[P].n0),
                         d_row_last.eq(ctrl[P].rows_valid - 1), d_col_last.eq(ctrl[P].cols_valid - 1)]

        in_flight = Cat(*(c.valid for c in ctrl[1:]))
        return ~in_flight.any() & ~d_busy

    # ------------------------------------------------------------------------------------------
    def _elaborate_ws(self, m, x_mem, w_mem, drain, running, cen):
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        M, K, N = self.size_m, self.size_k, self.size_n
        acc_bits = cfg.accumulator_bits
        max_m = cfg.max_m

        ctrl_layout = data.StructLayout({
            "valid": 1,          # a compute beat
            "wload": 1,          # a weight-load beat for row `row`
            "row": range(R),
            "zero": 1,           # that weight row lies past K: load zeros
            "first": 1, "last": 1, "drain": 1,
            "m": self._counter(cfg.max_m), "bank": 1,
            "n0": self._counter(cfg.max_n), "cols_valid": range(C + 1),
        })
        # -- sequencer: for n0 (outer), for k0: load `rows` weight rows, then M compute beats ----
        # k_left / n_left count down what is still to tile (comparisons with constants only).
        n0 = Signal(self._counter(cfg.max_n), name="n0")
        k0 = Signal(self._counter(cfg.max_k), name="k0")
        r = Signal(range(R), name="r")
        mm = Signal(self._counter(cfg.max_m), name="mm")
        k_left = Signal(range(cfg.max_k + 1), name="k_left")
        n_left = Signal(range(cfg.max_n + 1), name="n_left")
        # "This K tile / N tile is the last": registers computed a step ahead, so the sequencer's
        # decisions do not wait for compares on the counters.
        last_k = Signal(name="last_k")
        last_n = Signal(name="last_n")
        last_m = Signal(name="last_m")      # mm is M - 1
        wk = Signal(range(cfg.w_words + 1))     # word of weight row k0 + r
        x_base = Signal(range(cfg.x_words + 1), name="x_base")
        w_base = Signal(range(cfg.w_words + 1), name="w_base")
        bank = Signal()
        bank_busy = Signal(2)
        phase = Signal(2)   # 0: wait for the bank, 1: load weights, 2: compute, 3: settle
        # Carry-chain PEs read their stationary weight in every pipeline stage: new weights wait
        # until the last product of the old ones has passed stage `mul_latency - 1`.
        # Likewise DSP PEs that hold their weight in the block's B register: the product of the
        # last beat is formed one cycle after its operands entered the block.
        settle_beats = max(cfg.mul_latency - 1 if cfg.uses_carry else 0,
                           1 if cfg.dsp_weight_hold else 0)
        settle = Signal(range(settle_beats + 1))
        after = Signal(2)   # the phase that follows the settle beats
        issue = Signal(ctrl_layout)
        x_rd = x_mem.read_port()
        w_rd = w_mem.read_port()
        m.d.comb += [
            x_rd.en.eq(cen), w_rd.en.eq(cen),
            x_rd.addr.eq(x_base + mm),
            w_rd.addr.eq(wk),
            issue.wload.eq(running & (phase == 1)),
            issue.row.eq(r),
            issue.zero.eq(r >= k_left),
            issue.valid.eq(running & (phase == 2)),
            issue.first.eq(k0 == 0),
            issue.last.eq(last_k),
            issue.drain.eq(last_k & last_m),
            issue.m.eq(mm),
            issue.bank.eq(bank),
            issue.n0.eq(n0),
            issue.cols_valid.eq(Mux(n_left >= C, C, n_left)),
        ]
        drain_done = Signal()
        drain_done_bank = Signal()
        with m.If(self._go & ~running):
            m.d.sync += last_m.eq(self._m_last == 0)
            m.d.sync += [running.eq(1), n0.eq(0), k0.eq(0), r.eq(0), mm.eq(0), x_base.eq(0),
                         w_base.eq(0), wk.eq(0), bank.eq(0), phase.eq(0), k_left.eq(K), n_left.eq(N),
                         last_k.eq(K <= R), last_n.eq(N <= C)]
        with m.Elif(running & cen):
            with m.Switch(phase):
                with m.Case(0):
                    with m.If(~bank_busy.bit_select(bank, 1)):
                        m.d.sync += phase.eq(1)
                with m.Case(1):
                    m.d.sync += wk.eq(wk + 1)
                    with m.If(r == R - 1):
                        m.d.sync += [r.eq(0), phase.eq(2), mm.eq(0), last_m.eq(self._m_last == 0)]
                    with m.Else():
                        m.d.sync += r.eq(r + 1)
                with m.Case(3):
                    with m.If(settle == 1):
                        m.d.sync += phase.eq(after)
                    m.d.sync += settle.eq(settle - 1)
                with m.Case(2):
                    def next_phase(value):
                        if settle_beats:
                            m.d.sync += [phase.eq(3), after.eq(value), settle.eq(settle_beats)]
                        else:
                            m.d.sync += phase.eq(value)

                    with m.If(last_m):
                        m.d.sync += [mm.eq(0), last_m.eq(self._m_last == 0)]
                        with m.If(last_k):
                            m.d.sync += [k0.eq(0), k_left.eq(K), x_base.eq(0), bank.eq(~bank),
                                         last_k.eq(K <= R)]
                            next_phase(0)
                            with m.If(last_n):
                                m.d.sync += running.eq(0)
                            with m.Else():
                                m.d.sync += [n0.eq(n0 + C), n_left.eq(n_left - C),
                                             w_base.eq(w_base + K), wk.eq(w_base + K),
                                             last_n.eq(n_left <= 2 * C)]
                        with m.Else():
                            m.d.sync += [k0.eq(k0 + R), k_left.eq(k_left - R), x_base.eq(x_base + M),
                                         wk.eq(w_base + k0 + R), last_k.eq(k_left <= 2 * R)]
                            next_phase(1)
                    with m.Else():
                        m.d.sync += [mm.eq(mm + 1), last_m.eq(mm == self._m_before_last)]
        # A bank is busy from the start of its N tile until its drain has finished.
        take_bank = running & cen & (phase == 0) & ~bank_busy.bit_select(bank, 1)
        for b in range(2):
            with m.If(take_bank & (bank == b)):
                m.d.sync += bank_busy[b].eq(1)
            with m.Elif(drain_done & (drain_done_bank == b)):
                m.d.sync += bank_busy[b].eq(0)

        # Results wait in the accumulator memory, so nothing downstream ever stalls this pipeline.
        m.d.comb += cen.eq(1)

        # -- pipeline -------------------------------------------------------------------------------
        L = cfg.mul_latency
        P = 2 + L + cfg.operand_gating     # products valid
        # Column adder trees of more than two products register their first level of sums: the
        # flip-flops share cells with the adders, and a DSP output no longer runs through
        # every level in one cycle.
        tree_stage = R > 2
        S = P + 1 + tree_stage  # column sums registered; accumulator read data valid; write back
        ctrl = self._ctrl_pipeline(m, ctrl_layout, S, cen, issue)
        a_reg = [Signal(cfg.in_shape, name=f"a_row{i}") for i in range(R)]
        wt = [[Signal(cfg.w_shape, name=f"wt_{i}_{j}") for j in range(C)] for i in range(R)]
        # The weight row being loaded (zeros past K) and which PE row takes it.
        w_load = [Signal(cfg.w_shape, name=f"w_load_{j}") for j in range(C)]
        row_load = [Signal(name=f"w_row_load_{i}") for i in range(R)]
        m.d.comb += [w_load[j].eq(Mux(ctrl[1].zero, 0, w_rd.data[j])) for j in range(C)]
        m.d.comb += [row_load[i].eq(ctrl[1].wload & (ctrl[1].row == i)) for i in range(R)]
        with m.If(cen):
            m.d.sync += [a_reg[i].eq(x_rd.data[i]) for i in range(R)]
            for i in range(R):
                with m.If(row_load[i]):
                    m.d.sync += [wt[i][j].eq(w_load[j]) for j in range(C)]
        muls = self._multipliers(m, cen, cfg.in_shape, cfg.w_shape, R, C, "pe", a_reg,
                                 pe_ops=[wt[i][j] for i in range(R) for j in range(C)],
                                 weight_load=(w_load, row_load))
        for i in range(R):
            for j in range(C):
                # Columns outside the tile and every PE between beats hold their operands too.
                self._feed(m, cen, muls[i][j], a_reg[i], wt[i][j], f"{i}_{j}",
                           enable=ctrl[2].valid & (ctrl[2].cols_valid > j))
        colsum_bits = cfg.product_bits + max(1, math.ceil(math.log2(R))) + 1
        colsum = [Signal(signed(colsum_bits), name=f"colsum_{j}") for j in range(C)]
        for j in range(C):
            terms = [muls[i][j].p for i in range(R)]
            if tree_stage:
                firsts = []
                for t in range(0, R, 2):
                    pair = terms[t] + terms[t + 1] if t + 1 < R else terms[t]
                    reg = Signal(signed(cfg.product_bits + 1), name=f"colsum_{j}_l1_{t // 2}")
                    with m.If(cen):
                        m.d.sync += reg.eq(pair)
                    firsts.append(reg)
                terms = firsts
            while len(terms) > 1:
                terms = [terms[t] + terms[t + 1] for t in range(0, len(terms) - 1, 2)] + \
                        ([terms[-1]] if len(terms) % 2 else [])
            with m.If(cen):
                m.d.sync += colsum[j].eq(terms[0])

        m.submodules.acc_mem = acc_mem = Memory(shape=data.ArrayLayout(signed(acc_bits), C),
                                                depth=cfg.acc_words, init=[])
        acc_rd = acc_mem.read_port()
        acc_wr = acc_mem.write_port()
        # Read at stage S - 1 so that the old value arrives with the column sums at stage S; the same
        # row is read again at least M + rows beats later, after this write has landed.
        m.d.comb += [
            acc_rd.en.eq(cen),
            acc_rd.addr.eq(Mux(ctrl[S - 1].bank, max_m, 0) + ctrl[S - 1].m),
            acc_wr.addr.eq(Mux(ctrl[S].bank, max_m, 0) + ctrl[S].m),
            acc_wr.en.eq(cen & ctrl[S].valid),
        ]
        for j in range(C):
            m.d.comb += acc_wr.data[j].eq(
                Mux(ctrl[S].first, saturate(colsum[j], acc_bits) if cfg.saturating else colsum[j],
                    self._accumulate(acc_rd.data[j], colsum[j])))

        # -- drain: one accumulator row at a time, lane by lane ------------------------------------
        req = cen & ctrl[S].valid & ctrl[S].drain
        pend_valid, pend_bank = Signal(), Signal()
        pend_n0, pend_cols = Signal(self._counter(cfg.max_n)), Signal(range(C + 1))
        d_busy, d_bank, d_n0 = Signal(), Signal(), Signal(self._counter(cfg.max_n))
        d_cols = Signal(range(C + 1))
        d_m, d_j = Signal(self._counter(cfg.max_m)), Signal(range(C))
        d_have = Signal()       # the row at d_m has been read and sits on the read port
        dr = acc_mem.read_port()
        m.d.comb += [
            dr.addr.eq(Mux(d_bank, max_m, 0) + d_m),
            dr.en.eq(d_busy & ~d_have),
            drain.valid.eq(d_busy & d_have),
            drain.payload.acc.eq(dr.data[d_j]),
            drain.payload.n.eq(d_n0 + d_j),
        ]
        with m.If(d_busy & ~d_have):
            m.d.sync += d_have.eq(1)
        with m.If(drain.valid & drain.ready):
            with m.If(d_j == d_cols - 1):
                m.d.sync += [d_j.eq(0), d_have.eq(0), d_m.eq(d_m + 1)]
                with m.If(d_m == self._m_last):
                    m.d.sync += d_busy.eq(0)
                    m.d.comb += [drain_done.eq(1), drain_done_bank.eq(d_bank)]
            with m.Else():
                m.d.sync += d_j.eq(d_j + 1)
        with m.If(~d_busy & pend_valid):
            m.d.sync += [d_busy.eq(1), d_bank.eq(pend_bank), d_n0.eq(pend_n0), d_cols.eq(pend_cols),
                         d_m.eq(0), d_j.eq(0), d_have.eq(0), pend_valid.eq(0)]
        with m.If(req):
            m.d.sync += [pend_valid.eq(1), pend_bank.eq(ctrl[S].bank), pend_n0.eq(ctrl[S].n0),
                         pend_cols.eq(ctrl[S].cols_valid)]

        in_flight = Cat(*(c.valid | c.wload for c in ctrl[1:]))
        return ~in_flight.any() & ~d_busy & ~pend_valid & ~bank_busy.any()


class SplitMacArray(wiring.Component):
    """A :class:`MacArray` whose core runs in its own (faster) clock domain.

    The core (buffers, sequencer, PEs) runs in ``array_domain``; the output stage and this
    component's ports are in ``sync``. Operands cross in an asynchronous FIFO together with the
    START and CLEAR commands (in-band, so they stay ordered with the data); accumulators come back
    through another. The signature and behaviour at the ports are :class:`MacArray`'s, except that
    ``cycles`` counts the core's cycles in ``array_domain`` (host I/O and the output stage excluded).

    Parameters
    ----------
    config : MacArrayConfig
    array_domain : str
        Clock domain of the core.
    """

    def __init__(self, config, array_domain="array"):
        if not isinstance(config, MacArrayConfig):
            raise reject(self, TypeError(f"config must be a MacArrayConfig, not {config!r}"))
        self.config = config
        self.array_domain = array_domain
        super().__init__(_mac_array_signature())

    def elaborate(self, platform):
        from amaranth.hdl import DomainRenamer
        from amaranth.lib.cdc import PulseSynchronizer
        from amaranth.lib.fifo import AsyncFIFO

        cfg = self.config
        ad = self.array_domain
        m = Module()
        m.submodules.core = core = DomainRenamer(ad)(MacCore(cfg))
        m.submodules.output = out = OutputStage(acc_bits=cfg.accumulator_bits, max_n=cfg.max_n,
                                                requant_radix=cfg.requant_radix)
        dl = drain_layout(cfg.accumulator_bits)
        m.submodules.to_core = to_core = AsyncFIFO(width=LoadLayout.size, depth=8,
                                                   w_domain="sync", r_domain=ad)
        m.submodules.from_core = from_core = AsyncFIFO(width=dl.size, depth=8, w_domain=ad,
                                                       r_domain="sync")
        m.submodules.done_sync = done_sync = PulseSynchronizer(i_domain=ad, o_domain="sync")

        # Sizes and modes are set before a run and held during it: they cross as static values.
        m.d.comb += [
            core.size_m.eq(self.size_m), core.size_k.eq(self.size_k), core.size_n.eq(self.size_n),
            out.clear.eq(self.clear),
            out.raw.eq(self.raw), out.zero_point.eq(self.zero_point),
            out.out_min.eq(self.out_min), out.out_max.eq(self.out_max),
            self.cycles.eq(core.cycles),
        ]

        # -- into the core: X/W words, and START/CLEAR injected in order -----------------------------
        pend_start, pend_clear, started = Signal(), Signal(), Signal()
        ld = self.load
        target = ld.payload.target
        is_operand = (target == LoadTarget.X) | (target == LoadTarget.W)
        inject = pend_clear | pend_start
        word = Signal(LoadLayout)
        m.d.comb += [
            word.target.eq(Mux(pend_clear, LoadTarget.CLEAR,
                               Mux(pend_start, LoadTarget.START, target))),
            word.data.eq(ld.payload.data),
            to_core.w_data.eq(word.as_value()),
            to_core.w_en.eq(inject | (ld.valid & is_operand & ~self.busy)),
            out.param.payload.which.eq(target.as_value() - LoadTarget.BIAS.value),
            out.param.payload.data.eq(ld.payload.data),
            out.param.valid.eq(ld.valid & ~is_operand & ~self.busy & ~inject),
            ld.ready.eq(~self.busy & ~inject & Mux(is_operand, to_core.w_rdy, out.param.ready)),
        ]
        with m.If(to_core.w_rdy):
            with m.If(pend_clear):
                m.d.sync += pend_clear.eq(0)
            with m.Elif(pend_start):
                m.d.sync += pend_start.eq(0)
        with m.If(self.clear):
            m.d.sync += pend_clear.eq(1)
        with m.If(self.start & ~self.busy):
            m.d.sync += [pend_start.eq(1), started.eq(1)]
        # A register between the FIFO and the core keeps the FIFO's pointer comparison off the
        # core's write-enable and start paths.
        core_word = Signal(LoadLayout)
        core_valid = Signal()
        m.d.comb += [
            core.load.payload.eq(core_word),
            core.load.valid.eq(core_valid),
            to_core.r_en.eq(~core_valid | core.load.ready),
        ]
        with m.If(to_core.r_en):
            m.d[ad] += [core_valid.eq(to_core.r_rdy), core_word.as_value().eq(to_core.r_data)]

        # -- out of the core -----------------------------------------------------------------------------
        m.d.comb += [
            from_core.w_data.eq(core.drain.payload.as_value()),
            from_core.w_en.eq(core.drain.valid),
            core.drain.ready.eq(from_core.w_rdy),
            out.i.payload.as_value().eq(from_core.r_data),
            out.i.valid.eq(from_core.r_rdy),
            from_core.r_en.eq(out.i.ready),
        ]
        wiring.connect(m, out.o, wiring.flipped(self.y))
        busy_prev = Signal()
        m.d[ad] += busy_prev.eq(core.busy)
        m.d.comb += done_sync.i.eq(busy_prev & ~core.busy)
        with m.If(done_sync.o):
            m.d.sync += started.eq(0)
        m.d.comb += self.busy.eq(started | pend_start | from_core.r_rdy | out.busy)
        return m
