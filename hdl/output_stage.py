"""Output stage of the MAC array: per-channel bias, int32 saturation and requantization."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._params import reject
from .requant import SERIAL, Requantizer

__all__ = ["PARAM_BIAS", "PARAM_MULT", "PARAM_SHIFT", "OutputStage", "drain_layout", "saturate"]

#: ``param.which`` values.
PARAM_BIAS, PARAM_MULT, PARAM_SHIFT = 0, 1, 2

ParamLayout = data.StructLayout({"which": 2, "data": signed(32)})


def drain_layout(acc_bits):
    """Payload of an accumulator leaving the array: its value and output channel."""
    return data.StructLayout({"acc": signed(acc_bits), "n": unsigned(16)})


def saturate(value, bits):
    """``value`` (signed) clamped to the signed ``bits``-bit range (an Amaranth expression).

    A two's complement value fits in ``bits`` bits when its bits from ``bits - 1`` up are all
    equal; otherwise its sign picks the limit. No comparators: no carry chains.
    """
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    width = value.shape().width
    if width <= bits:
        return value
    top = value[bits - 1:]
    fits = (top == 0) | (top == (1 << (width - bits + 1)) - 1)
    return Mux(fits, value[:bits].as_signed(), Mux(value[width - 1], lo, hi))


class OutputStage(wiring.Component):
    """``y = requant(saturate_int32(acc + bias[n]))``, or the int32 value itself in raw mode.

    Per-channel bias (int32), multiplier (Q31) and right shift live in small memories, written in
    channel order through ``param`` (one counter per kind, restarted by ``clear``). The
    requantizer is :class:`~npuforge.hdl.requant.Requantizer`; ``requant_radix`` chooses its
    architecture. With the serial requantizer, raw results go around it through a register of
    their own: one result per cycle, as fast as the array drains them.

    Parameters
    ----------
    acc_bits : int
        Width of the accumulators arriving on ``i``.
    max_n : int
        Channels the parameter memories hold.
    requant_radix : int
        Requantizer multiplier bits per cycle, 1..31 (pipelined: a result every
        ``ceil(31 / requant_radix)`` cycles), or 0 (:data:`~npuforge.hdl.requant.SERIAL`): the serial
        requantizer, fewest logic cells, a result every ``36 + shift`` cycles.

    Members
    -------
    i : In(stream.Signature(drain_layout(acc_bits)))
    o : Out(stream.Signature(signed(32)))
    param : In(stream.Signature(ParamLayout))
        ``which``: 0 bias, 1 multiplier, 2 shift; always ready.
    clear : In(1)
    raw, zero_point, out_min, out_max : In
        As in :class:`~npuforge.hdl.requant.Requantizer`; held while results are in flight.
    busy : Out(1)
        A result is inside the stage.

    Raises
    ------
    ValueError
        If ``acc_bits``, ``max_n`` or ``requant_radix`` is not an integer in its range.
    """

    def __init__(self, *, acc_bits, max_n, requant_radix=4):
        for name, value, lo, hi in (("acc_bits", acc_bits, 4, 64), ("max_n", max_n, 1, 65535),
                                    ("requant_radix", requant_radix, 0, 31)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise reject(self, ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}"))
        self.acc_bits = acc_bits
        self.max_n = max_n
        self.requant_radix = requant_radix
        super().__init__({
            "i": In(stream.Signature(drain_layout(acc_bits))),
            "o": Out(stream.Signature(signed(32))),
            "param": In(stream.Signature(ParamLayout)),
            "clear": In(1),
            "raw": In(1),
            "zero_point": In(signed(16)),
            "out_min": In(signed(16)),
            "out_max": In(signed(16)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bias_mem = bias_mem = Memory(shape=signed(32), depth=self.max_n, init=[])
        m.submodules.mult_mem = mult_mem = Memory(shape=unsigned(31), depth=self.max_n, init=[])
        m.submodules.shift_mem = shift_mem = Memory(shape=unsigned(5), depth=self.max_n, init=[])

        # -- parameter loading ------------------------------------------------------------------------
        m.d.comb += self.param.ready.eq(1)
        counters = []
        for which, mem in ((PARAM_BIAS, bias_mem), (PARAM_MULT, mult_mem), (PARAM_SHIFT, shift_mem)):
            wr = mem.write_port()
            idx = Signal(range(self.max_n + 1), name=f"param{which}_idx")
            counters.append(idx)
            hit = self.param.valid & (self.param.payload.which == which)
            m.d.comb += [wr.addr.eq(idx), wr.data.eq(self.param.payload.data), wr.en.eq(hit)]
            with m.If(hit):
                m.d.sync += idx.eq(idx + 1)
        with m.If(self.clear):
            m.d.sync += [idx.eq(0) for idx in counters]

        # -- bias lookup, then the requantizer ---------------------------------------------------------
        m.submodules.requant = requant = Requantizer(radix_bits=self.requant_radix)
        # The serial unit needs 5 cycles for a raw result; a bypass register passes one a cycle.
        bypass = self.requant_radix == SERIAL
        m.d.comb += [
            requant.raw.eq(self.raw),
            requant.zero_point.eq(self.zero_point),
            requant.out_min.eq(self.out_min),
            requant.out_max.eq(self.out_max),
        ]
        bias_rd = bias_mem.read_port()
        mult_rd = mult_mem.read_port()
        shift_rd = shift_mem.read_port()
        ob_valid = Signal()
        ob_acc = Signal(signed(self.acc_bits))
        biased = Signal(signed(32))
        m.d.comb += biased.eq(saturate(ob_acc + bias_rd.data, 32))
        advance = Signal()
        if bypass:
            byp_valid = Signal()
            byp_data = Signal(signed(32))
            byp_free = ~byp_valid | self.o.ready
            with m.If(self.raw & byp_free):
                m.d.sync += [byp_valid.eq(ob_valid), byp_data.eq(biased)]
            m.d.comb += [
                advance.eq(~ob_valid | Mux(self.raw, byp_free, requant.i.ready)),
                requant.i.valid.eq(ob_valid & ~self.raw),
                requant.o.ready.eq(self.o.ready & ~self.raw),
                self.o.valid.eq(Mux(self.raw, byp_valid, requant.o.valid)),
                self.o.payload.eq(Mux(self.raw, byp_data, requant.o.payload)),
            ]
        else:
            wiring.connect(m, requant.o, wiring.flipped(self.o))
            m.d.comb += [
                advance.eq(~ob_valid | requant.i.ready),
                requant.i.valid.eq(ob_valid),
            ]
        m.d.comb += [
            self.i.ready.eq(advance),
            bias_rd.addr.eq(self.i.payload.n), bias_rd.en.eq(advance),
            mult_rd.addr.eq(self.i.payload.n), mult_rd.en.eq(advance),
            shift_rd.addr.eq(self.i.payload.n), shift_rd.en.eq(advance),
            requant.i.payload.acc.eq(biased),
            requant.i.payload.mult.eq(mult_rd.data),
            requant.i.payload.shift.eq(shift_rd.data),
        ]
        with m.If(advance):
            m.d.sync += [ob_valid.eq(self.i.valid), ob_acc.eq(self.i.payload.acc)]

        # Results inside the stage (bias register, requantizer, output register).
        outstanding = Signal(8)
        into = self.i.valid & self.i.ready
        out = self.o.valid & self.o.ready
        m.d.sync += outstanding.eq(outstanding + into - out)
        m.d.comb += self.busy.eq(outstanding != 0)
        return m
