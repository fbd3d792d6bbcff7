"""Hardware requantizer: int32 accumulator to a clamped narrow integer, without a multiplier block.

It computes, bit-exactly with ``npuforge.sim.golden.requantize``,

.. code::

    y = clip(zero_point + RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc, mult), shift),
             out_min, out_max)

The 32 x 31-bit product is built iteratively from shift-and-add partial products, ``radix_bits``
multiplier bits per cycle, so that no ``*`` reaches synthesis: with ``-dsp`` Yosys would spend a whole
DSP block on it, and the MAC array needs every DSP.

Arithmetic used (``P = acc * mult``, ``mult >= 0``):

* gemmlowp's high multiply ``trunc((P + nudge) / 2**31)`` with ``nudge = 2**30`` for ``P >= 0`` and
  ``1 - 2**30`` otherwise equals ``floor((P + 2**30) / 2**31)`` for every ``P`` (for ``P < 0`` the
  truncating division of ``P + 1 - 2**30`` is the floor of ``P + 1 - 2**30 + 2**31 - 1``). The
  ``2**30`` is therefore the initial value of the running partial sum and the result is a bit slice:
  no sign-dependent correction is needed. Since ``mult <= 2**31 - 1`` the saturating case
  (``INT32_MIN * INT32_MIN``) cannot occur.
* ``RoundingDivideByPOT(x, s)`` (ties away from zero) equals
  ``(x + 2**(s-1) - (x < 0)) >> s`` for ``s >= 1`` and ``x`` for ``s = 0``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["REQUANT_INPUT_LAYOUT", "Requantizer"]

#: Payload of the requantizer's input stream: one accumulator and its channel's parameters.
REQUANT_INPUT_LAYOUT = data.StructLayout({
    "acc": signed(32),
    "mult": unsigned(31),
    "shift": unsigned(5),
})

_MULT_BITS = 31


def _add_tree(terms):
    """Sum ``terms`` as a balanced tree: shorter carry paths than a chain of additions."""
    while len(terms) > 1:
        pairs = [terms[j] + terms[j + 1] for j in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            pairs.append(terms[-1])
        terms = pairs
    return terms[0]


def _check_radix_bits(radix_bits):
    if isinstance(radix_bits, bool) or not isinstance(radix_bits, int):
        raise TypeError(f"radix_bits must be an integer in 0..31, not {radix_bits!r}")
    if not 0 <= radix_bits <= _MULT_BITS:
        raise ValueError(f"radix_bits must be an integer in 0..31, not {radix_bits!r}")


class Requantizer(wiring.Component):
    """Streaming requantizer with an iterative shift-and-add multiplier.

    Four pipeline stages:

    1. **multiply** (``cycles_per_result`` cycles): each cycle adds ``acc * chunk`` to a 33-bit
       running sum, where ``chunk`` is the next ``radix_bits`` bits of ``mult`` (least significant
       first), and shifts the sum right by ``radix_bits``. The ``radix_bits`` partial-product rows of a
       chunk are added by ``radix_bits`` adders of about ``33 + radix_bits`` bits, so the area grows
       with ``radix_bits`` while the cycle count shrinks: ``radix_bits = 1`` is one 33-bit adder and
       31 cycles, ``radix_bits = 31`` a full array multiplier and 1 cycle.
    2. **high multiply**: the result of step 1 is registered with its shift and rounding addend.
    3. **rounding shift**: one 33-bit adder and a 0..31 barrel shifter (ties away from zero).
    4. **output**: zero point and clamp, into the output register ``o.payload``.

    Stages 2 to 4 are separate registers so that no clock period holds more than one carry chain
    and the barrel shifter (or the zero-point adder and the two limit comparisons).

    The multiply stage accepts a new input in the cycle its last step completes, so with ``o.ready``
    held high the unit delivers one result every ``cycles_per_result = ceil(31 / radix_bits)`` cycles
    with no extra constant, and a result appears on ``o`` ``latency = cycles_per_result + 3`` cycles
    after its input was accepted. Raw-mode inputs take a single multiply-stage cycle (one result per
    cycle).

    ``raw`` is sampled together with each input, so it may change between transfers. ``zero_point``,
    ``out_min`` and ``out_max`` are used in the output stage and must be held stable while results
    are in flight; ``out_min <= out_max`` is required (as in the golden model).

    Parameters
    ----------
    radix_bits : int
        Multiplier bits consumed per cycle, 1..31 (default 8).

    Members
    -------
    i : In(stream.Signature(REQUANT_INPUT_LAYOUT))
        ``acc`` (int32), ``mult`` (Q31 multiplier, 0..2**31-1), ``shift`` (right shift, 0..31).
    o : Out(stream.Signature(signed(32)))
        The requantized value (in ``out_min .. out_max``), or ``acc`` unchanged in raw mode.
    raw : In(1)
        1: pass ``acc`` through unchanged (raw int32 mode), bypassing the multiplier.
    zero_point, out_min, out_max : In(signed(16))
        Output offset and clamp limits.

    Raises
    ------
    TypeError
        If ``radix_bits`` is not an int.
    ValueError
        If ``radix_bits`` is out of range.
    """

    def __new__(cls, radix_bits=8):
        # Validate before the object exists: a rejected configuration must not leave an
        # "elaboratable created but never used" warning behind.
        _check_radix_bits(radix_bits)
        return super().__new__(cls, radix_bits, src_loc_at=1)

    def __init__(self, radix_bits=8):
        _check_radix_bits(radix_bits)
        self._radix_bits = radix_bits
        self._steps = -(-_MULT_BITS // radix_bits) if radix_bits else 64
        super().__init__({
            "i": In(stream.Signature(REQUANT_INPUT_LAYOUT)),
            "o": Out(stream.Signature(signed(32))),
            "raw": In(1),
            "zero_point": In(signed(16)),
            "out_min": In(signed(16)),
            "out_max": In(signed(16)),
        })

    @property
    def radix_bits(self) -> int:
        """Multiplier bits consumed per cycle."""
        return self._radix_bits

    @property
    def cycles_per_result(self) -> int:
        """Cycles between results at full throughput: ``ceil(31 / radix_bits)``."""
        return self._steps

    @property
    def latency(self) -> int:
        """Clock edges from an input transfer to its output transfer (``o.ready`` high): steps + 3."""
        return self._steps + 3

    def elaborate(self, platform):
        if self._radix_bits == 0:
            return self._elaborate_serial()
        m = Module()
        r, n = self._radix_bits, self._steps

        # --- stage 1: iterative multiply ---------------------------------------------------------
        busy = Signal()
        step = Signal(range(n))
        acc = Signal(signed(32))
        mult = Signal(unsigned(n * r))  # consumed r bits at a time from the bottom
        shift = Signal(5)
        raw = Signal()
        # Running sum floor((2**30 + acc * (mult mod 2**(k*r))) / 2**(k*r)): its magnitude stays
        # below 2**32, so 33 bits hold it.
        high = Signal(signed(33))

        chunk = mult[:r]
        rows = [Mux(chunk[j], acc, 0) << j for j in range(r)]
        # Named signals for shared subexpressions: an expression used twice would otherwise be
        # emitted (and simulated) twice.
        total_expr = high + _add_tree(rows)
        total = Signal(total_expr.shape())
        m.d.comb += total.eq(total_expr)
        # After the last step `total` has weight 2**((n-1)*r); the high multiply is bit 31 upward.
        hi_mul = Signal(signed(32))
        m.d.comb += hi_mul.eq(total[_MULT_BITS - (n - 1) * r:])

        last = busy & (raw | (step == n - 1))

        # --- registers of the later stages ----------------------------------------------------------
        # Stage 2 holds the high multiply with its rounding addend, stage 3 the rounded value, stage 4
        # (`o`) the result. Each stage can load when it is empty or its content moves on this cycle.
        r_valid, r_raw = Signal(), Signal()
        r_x = Signal(signed(32))
        r_shift = Signal(5)
        r_addend = Signal(_MULT_BITS)
        a_valid, a_raw = Signal(), Signal()
        a_x = Signal(signed(33))

        o_free = ~self.o.valid | self.o.ready
        a_free = ~a_valid | o_free
        r_free = ~r_valid | a_free
        hand_over = last & r_free
        m.d.comb += self.i.ready.eq(~busy | hand_over)

        # --- stage 1 control -----------------------------------------------------------------------
        with m.If(busy & ~last):
            m.d.sync += [
                high.eq(total >> r),
                mult.eq(mult >> r),
                step.eq(step + 1),
            ]
        with m.If(hand_over):
            m.d.sync += busy.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                busy.eq(1),
                step.eq(0),
                acc.eq(self.i.payload.acc),
                mult.eq(self.i.payload.mult),
                shift.eq(self.i.payload.shift),
                raw.eq(self.raw),
                high.eq(2**30),
            ]

        # --- stage 2: high multiply and rounding addend ---------------------------------------------
        # RoundingDivideByPOT(x, s) = (x + 2**(s-1) - (x < 0)) >> s for s >= 1, x for s = 0. Bit j of
        # the addend is set when j == s-1 (x >= 0) or j < s-1 (x < 0), so it comes straight from the
        # shift and one adder does the rounding. Raw mode uses shift 0: the value passes unchanged.
        eff_shift = Signal(5)
        m.d.comb += eff_shift.eq(Mux(raw, 0, shift))
        negative = hi_mul[31]
        addend = Cat(*(Mux(negative, eff_shift > j + 1, eff_shift == j + 1) for j in range(_MULT_BITS)))
        with m.If(r_free):
            m.d.sync += r_valid.eq(hand_over)
            with m.If(hand_over):
                m.d.sync += [
                    r_x.eq(Mux(raw, acc, hi_mul)),
                    r_shift.eq(eff_shift),
                    r_addend.eq(addend),
                    r_raw.eq(raw),
                ]

        # --- stage 3: rounding divide by 2**shift (adder and a 0..31 barrel shifter) ----------------
        with m.If(a_free):
            m.d.sync += a_valid.eq(r_valid)
            with m.If(r_valid):
                m.d.sync += [
                    a_x.eq((r_x + r_addend) >> r_shift),
                    a_raw.eq(r_raw),
                ]

        # --- stage 4: zero point and clamp ------------------------------------------------------------
        # Limits and zero point are 16-bit: any |a_x| >= 2**17 clamps to the same limit as its
        # 18-bit saturation does, so the zero-point add and the comparisons need only 19 bits.
        top = a_x[17:]
        saturated = Mux(top.all() | ~top.any(), a_x[:18].as_signed(),
                        Mux(a_x[32], Const(-(2**17), signed(18)), Const(2**17 - 1, signed(18))))
        with_zp = Signal(signed(19))
        m.d.comb += with_zp.eq(saturated + self.zero_point)
        clamped = Mux(with_zp < self.out_min, self.out_min,
                      Mux(with_zp > self.out_max, self.out_max, with_zp[:16].as_signed()))
        with m.If(o_free):
            m.d.sync += self.o.valid.eq(a_valid)
            with m.If(a_valid):
                m.d.sync += self.o.payload.eq(Mux(a_raw, a_x[:32], clamped))

        return m

    def _elaborate_serial(self):
        m = Module()
        acc, mult, shift = self.i.payload.acc, self.i.payload.mult, self.i.payload.shift
        done = Signal()
        d = Signal(6, init=1)
        high = Signal(signed(32), init=2**30)
        lsb = Signal()
        sticky = Signal()

        o_free = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(done & o_free)
        transfer = self.i.valid & self.i.ready
        step = self.i.valid & ~done

        mul_phase = ~d[5]
        mbit = Cat(Const(0, 1), mult).bit_select(d[:5], 1) & mul_phase & ~self.raw
        final = d[5] & (d[:5] == Mux(self.raw, 0, shift))
        use_acc = mbit | (final & self.raw)
        use_zp = final & ~self.raw
        b = Signal(signed(33))
        m.d.comb += b.eq(Mux(use_acc, acc, 0) | Mux(use_zp, self.zero_point, 0))
        cin = final & lsb & (~high[31] | sticky)
        total = Signal(signed(33))
        m.d.comb += total.eq(high + b + cin)

        with m.If(transfer):
            m.d.sync += [high.eq(2**30), d.eq(1), lsb.eq(0), sticky.eq(0), done.eq(0)]
        with m.Elif(step):
            m.d.sync += [
                high.eq(total[1:]),
                lsb.eq(d[5] & total[0]),
                sticky.eq(d[5] & (sticky | lsb)),
                d.eq(d + 1),
                done.eq(final),
            ]

        y = Signal(signed(33))
        m.d.comb += y.eq(Cat(lsb, high))
        top = y[15:]
        in16 = top.all() | ~top.any()
        y16 = y[:16].as_signed()
        below = Mux(in16, y16 < self.out_min, y[32])
        above = Mux(in16, y16 > self.out_max, ~y[32])
        clamped = Mux(below, self.out_min, Mux(above, self.out_max, y16))
        with m.If(transfer):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(Mux(self.raw, y[:32], clamped))]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
