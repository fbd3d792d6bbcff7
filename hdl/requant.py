"""Hardware requantizer: int32 accumulator to a clamped narrow integer, without a multiplier block.

It computes, bit-exactly with ``npuforge.sim.golden.requantize``,

.. code::

    y = clip(zero_point + RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc, mult), shift),
             out_min, out_max)

The 32 x 31-bit product is built iteratively from shift-and-add partial products, so that no ``*``
reaches synthesis: with ``-dsp`` Yosys would spend a whole DSP block on it, and the MAC array needs
every DSP. Two architectures trade logic for speed (see :class:`Requantizer`):

* ``radix_bits`` 1..31, *pipelined*: ``radix_bits`` multiplier bits per cycle, then separate stages
  for the rounding shift (a barrel shifter), the zero point and the clamp. A result every
  ``ceil(31 / radix_bits)`` cycles.
* ``radix_bits = 0``, *serial*: one multiplier bit per cycle, and the rounding shift done by the same
  shifting adder, one bit per cycle; the zero point and the two clamp comparisons are three short
  carry chains whose spare LUT inputs also make the output multiplexers. About a quarter of the
  logic cells of ``radix_bits = 1`` (171 LUTs against 577), and a result every ``36 + shift``
  cycles, which is plenty where results leave over a UART.

Arithmetic used (``P = acc * mult``, ``mult >= 0``):

* gemmlowp's high multiply ``trunc((P + nudge) / 2**31)`` with ``nudge = 2**30`` for ``P >= 0`` and
  ``1 - 2**30`` otherwise equals ``floor((P + 2**30) / 2**31)`` for every ``P`` (for ``P < 0`` the
  truncating division of ``P + 1 - 2**30`` is the floor of ``P + 1 - 2**30 + 2**31 - 1``). The
  ``2**30`` is therefore the initial value of the running partial sum and the result is a bit slice:
  no sign-dependent correction is needed. Since ``mult <= 2**31 - 1`` the saturating case
  (``INT32_MIN * INT32_MIN``) cannot occur.
* ``RoundingDivideByPOT(x, s)`` (ties away from zero) equals
  ``(x + 2**(s-1) - (x < 0)) >> s`` for ``s >= 1`` and ``x`` for ``s = 0`` (the pipelined form).
  Equivalently, with ``q = x >> s`` (a floor), ``r`` the last bit shifted out (bit ``s - 1`` of ``x``)
  and ``sticky`` the OR of the bits below it: ``q + (r & ((x >= 0) | sticky))`` (the serial form,
  which only looks at bits as they leave a right shift). The sign of ``q`` is the sign of ``x``.
"""

from amaranth.hdl import Cat, Const, Instance, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["REQUANT_INPUT_LAYOUT", "SERIAL", "Requantizer", "cycles_per_result"]

#: Payload of the requantizer's input stream: one accumulator and its channel's parameters.
REQUANT_INPUT_LAYOUT = data.StructLayout({
    "acc": signed(32),
    "mult": unsigned(31),
    "shift": unsigned(5),
})

#: ``radix_bits`` value that selects the serial requantizer (fewest logic cells).
SERIAL = 0

_MULT_BITS = 31
#: Worst-case cycles per result of the serial variant (``shift = 31``).
_SERIAL_CYCLES = 36 + 31


def cycles_per_result(radix_bits):
    """Cycles between a :class:`Requantizer`'s results at full throughput, without building one.

    ``ceil(31 / radix_bits)``; for the serial unit (``radix_bits=0``) its worst case, 67.
    """
    _check_radix_bits(radix_bits)
    return -(-_MULT_BITS // radix_bits) if radix_bits else _SERIAL_CYCLES


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


def _check_use_primitive(value):
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"use_primitive must be None, True or False, not {value!r}")


class Requantizer(wiring.Component):
    """Streaming requantizer with an iterative shift-and-add multiplier.

    **Pipelined** (``radix_bits`` 1..31), four stages:

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
    cycle). ``raw`` is sampled together with each input, so it may change between transfers.

    **Serial** (``radix_bits = 0``, :data:`SERIAL`): built for the fewest logic cells.

    1. **load** (1 cycle): ``acc`` is registered, so that the producer's logic (the output stage's
       bias adder) and the adder below never share a clock period.
    2. **multiply and round** (``32 + shift`` cycles): each cycle ``high + acc`` or ``high`` itself
       (33 bits, ``high`` being a 32-bit register) goes shifted right by one into ``high`` and a bit
       ``lsb`` below it. The 31 multiply steps (adding when the multiplier bit is set) leave the high
       multiply ``x`` in ``high``; ``shift`` more steps divide it by ``2**shift`` (a floor), keeping
       the last bit shifted out and a sticky OR of the earlier ones; one more step leaves
       ``q = x >> shift`` in ``{high, lsb}``. Raw mode skips to that last step (from a zero
       ``high``) and adds ``acc`` in it, so that ``{high, lsb} = acc`` after one step.
    3. **zero point** (1 cycle): an 18-bit adder forms ``y = q + zero_point + round`` (``round`` from
       the last bit and the sticky bit) on the low bits of ``q``; if ``q`` lies outside
       ``-2**16 .. 2**16 - 1`` the result clamps by its sign alone, since ``|zero_point| <= 2**15``.
    4. **clamp** (1 cycle, then combinational): two 19-bit comparisons, ``y < out_min`` and
       ``max(y, out_min) > out_max``, each selecting its limit in the same logic cells.

    On the iCE40 every bit of these four carry chains is one logic cell: the LUT in front of the
    carry also does the step's add-or-keep choice, the raw bypass, or a clamp multiplexer. The unit
    delivers a result every ``36 + shift`` cycles (5 in raw mode); :attr:`cycles_per_result` is the
    worst case, 67. It reads ``i.payload`` (``mult`` and ``shift``) and ``raw`` until the result is ready
    and takes its input in the cycle its result leaves (``i.ready = o.valid & o.ready``, so
    :attr:`latency` is 0): as the stream rules require, the producer holds the payload from
    ``i.valid`` until the transfer, and ``raw`` must be held with it.

    In both, ``zero_point``, ``out_min`` and ``out_max`` must be held stable while results are in
    flight, and ``out_min <= out_max`` is required (as in the golden model).

    Parameters
    ----------
    radix_bits : int
        Multiplier bits consumed per cycle, 1..31, or 0 (:data:`SERIAL`) for the serial unit
        (default 8).
    use_primitive : bool or None
        Serial unit only. ``None`` (default): ``SB_LUT4``/``SB_CARRY`` instances when elaborated with
        a platform; without one, plain Amaranth arithmetic computing the same values in the same
        cycles (quick to simulate, portable Verilog). ``True``/``False`` force either.

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
        If ``radix_bits`` is not an int or ``use_primitive`` not a bool or None.
    ValueError
        If ``radix_bits`` is out of range.
    """

    def __new__(cls, radix_bits=8, *, use_primitive=None):
        # Validate before the object exists: a rejected configuration must not leave an
        # "elaboratable created but never used" warning behind.
        _check_radix_bits(radix_bits)
        _check_use_primitive(use_primitive)
        return super().__new__(cls, radix_bits, src_loc_at=1)

    def __init__(self, radix_bits=8, *, use_primitive=None):
        _check_radix_bits(radix_bits)
        _check_use_primitive(use_primitive)
        self._radix_bits = radix_bits
        self._use_primitive = use_primitive
        self._steps = -(-_MULT_BITS // radix_bits) if radix_bits else None
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
        """Multiplier bits consumed per cycle (0: the serial unit)."""
        return self._radix_bits

    @property
    def use_primitive(self):
        """``SB_LUT4``/``SB_CARRY`` instances in the serial unit: ``None`` (if a platform), True, False."""
        return self._use_primitive

    @property
    def cycles_per_result(self) -> int:
        """Cycles between results at full throughput: ``ceil(31 / radix_bits)``.

        For the serial unit the worst case, 67 (``36 + shift`` for a result with that shift).
        """
        return cycles_per_result(self._radix_bits)

    @property
    def latency(self) -> int:
        """Clock edges from an input transfer to its output transfer (``o.ready`` high).

        ``cycles_per_result + 3`` when pipelined; 0 for the serial unit, which takes its input and
        delivers its result in the same cycle.
        """
        return self._steps + 3 if self._radix_bits else 0

    def elaborate(self, platform):
        if self._radix_bits == SERIAL:
            return self._elaborate_serial(platform)
        return self._elaborate_pipelined()

    def _elaborate_pipelined(self):
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

    def _elaborate_serial(self, platform):
        m = Module()
        primitive = platform is not None if self._use_primitive is None else self._use_primitive
        cells = _Cells(m) if primitive else None
        acc, mult, shift = self.i.payload.acc, self.i.payload.mult, self.i.payload.shift
        raw = self.raw

        # --- control: load, 32 + shift steps, then two cycles through the clamp registers ----------
        loaded, done, settle, ready = Signal(), Signal(), Signal(), Signal()
        # `d` = steps taken + 1: bits 0..4 index the multiplier bit of this step, bit 5 is set
        # once the 31 multiply steps are over, and the last step is d == 32 + shift.
        d = Signal(6, init=1)
        m.d.comb += [self.o.valid.eq(ready), self.i.ready.eq(ready & self.o.ready)]
        step = self.i.valid & loaded & ~done
        release = ready & self.o.ready
        multiplying = ~d[5]
        last = Signal()
        m.d.comb += last.eq(d[5] & (d[:5] == Mux(raw, 0, shift)))
        add = Signal()
        m.d.comb += add.eq(Mux(raw, last, multiplying & Cat(Const(0, 1), mult).bit_select(d[:5], 1)))

        # --- multiply and round: {high, lsb} = (high + acc or high), 33 bits, shifted right --------
        acc_r = Signal(signed(32), reset_less=True)
        # Starts at the nudge 2**30 (see the module docstring); 32 bits hold every partial sum.
        high = Signal(signed(32), init=2**30)
        lsb, last_out, sticky = Signal(), Signal(), Signal()
        shifted = Signal(33)
        if primitive:
            h = [high[k] for k in range(32)] + [high[31]]
            a = [acc_r[k] for k in range(32)] + [acc_r[31]]
            m.d.comb += shifted.eq(Cat(*cells.luts(_add_or_keep, [add] * 33, h, a, cells.chain(h, a, 0, 32))))
        else:
            m.d.comb += shifted.eq(Mux(add, high + acc_r, high))
        with m.If(release):
            m.d.sync += [high.eq(2**30), d.eq(1), lsb.eq(0), last_out.eq(0), sticky.eq(0),
                         loaded.eq(0), done.eq(0), settle.eq(0), ready.eq(0)]
        with m.Else():
            m.d.sync += [settle.eq(done), ready.eq(settle)]
            with m.If(self.i.valid & ~loaded):
                m.d.sync += [acc_r.eq(acc), loaded.eq(1)]
                # Raw mode skips the multiply and shift steps: one step adds acc to a zero high.
                # Loading follows a release (d = 1, high = 2**30), so three bits change.
                with m.If(raw):
                    m.d.sync += [d[0].eq(0), d[5].eq(1), high[30].eq(0)]
            with m.If(step):
                m.d.sync += [
                    high.eq(shifted[1:]),
                    # Bits shifted out while multiplying are below the high multiply: dropped.
                    lsb.eq(shifted[0] & ~multiplying),
                    last_out.eq(lsb),
                    sticky.eq(sticky | last_out),
                    d.eq(d + 1),
                    done.eq(last),
                ]

        # --- zero point and rounding: ~y = ~(q + zero_point + round) in 18 bits --------------------
        # Inverted (free in the LUT), because the comparisons below need ~y. Raw mode passes q = acc.
        q = Cat(lsb, high)
        negative = high[31]
        round_up = Signal()
        m.d.comb += round_up.eq(last_out & (~negative | sticky) & ~raw)
        zp = self.zero_point.as_signed()
        ny_next = Signal(18)
        if primitive:
            qk = [q[k] for k in range(18)]
            zk = [zp[min(k, 15)] for k in range(18)]
            m.d.comb += ny_next.eq(Cat(*cells.luts(_not_sum_or_bypass, [raw] * 18, qk, zk,
                                                   cells.chain(qk, zk, round_up, 17))))
        else:
            m.d.comb += ny_next.eq(~Mux(raw, q[:18], q[:18] + zp + round_up))
        ny = Signal(18, reset_less=True)
        m.d.sync += ny.eq(ny_next)
        # y is exact in 18 bits when q is within -2**16 .. 2**16 - 1; beyond, its sign decides.
        window = q[16:]
        in_window = window.all() | ~window.any()
        lo, hi = self.out_min.as_signed(), self.out_max.as_signed()
        lok = [lo[min(k, 15)] for k in range(19)]
        hik = [hi[min(k, 15)] for k in range(19)]

        # --- lower clamp: out_min + ~y = out_min - y - 1 >= 0 exactly when y < out_min ------------
        # Its cells also form ~t, t = max(y, out_min).
        nyk = [ny[k] for k in range(18)] + [ny[17]]
        s_lo, below, nt_next = Signal(), Signal(), Signal(18)
        if primitive:
            c_lo = cells.chain(nyk, lok, 0, 18)
            m.d.comb += [s_lo.eq(cells.lut(_sum, 0, nyk[18], lok[18], c_lo[18])),
                         nt_next.eq(Cat(*cells.luts(_not_limit_or_keep, [below] * 18, nyk[:18], lok, c_lo)))]
        else:
            m.d.comb += [s_lo.eq((Cat(*nyk) + Cat(*lok))[18]), nt_next.eq(Mux(below, ~lo, ny))]
        m.d.comb += below.eq(~raw & Mux(in_window, ~s_lo, negative))
        nt = Signal(18, reset_less=True)
        m.d.sync += nt.eq(nt_next)

        # --- upper clamp: out_max + ~t + 1 = out_max - t < 0 exactly when t > out_max -------------
        # Its cells also form min(t, out_max): the result.
        ntk = [nt[k] for k in range(18)] + [nt[17]]
        s_hi, above, out = Signal(), Signal(), Signal(16)
        if primitive:
            c_hi = cells.chain(ntk, hik, 1, 18)
            m.d.comb += [s_hi.eq(cells.lut(_sum, 0, ntk[18], hik[18], c_hi[18])),
                         out.eq(Cat(*cells.luts(_limit_or_not, [above] * 16, ntk[:16], hik, c_hi)))]
        else:
            m.d.comb += [s_hi.eq((Cat(*ntk) + Cat(*hik) + 1)[18]), out.eq(Mux(above, hi, ~nt[:16]))]
        m.d.comb += [
            above.eq(~raw & Mux(in_window, s_hi, ~negative)),
            self.o.payload.eq(Cat(out, *(Mux(raw, q[k], out[15]) for k in range(16, 32)))),
        ]
        return m


# LUT functions of the serial unit's chain cells: (I0, I1, I2, I3) = (select, chain operand a,
# chain operand b, carry in), each a single bit.

def _add_or_keep(add, h, a, c):
    """Multiply/shift step: bit of ``h + a`` when adding, else ``h``."""
    return h ^ a ^ c if add else h


def _not_sum_or_bypass(raw, q, z, c):
    """Zero point: ``~(q + z)``, or ``~q`` in raw mode."""
    return 1 - (q if raw else q ^ z ^ c)


def _not_limit_or_keep(below, ny, lo, c):
    """Lower clamp on inverted data: ``~out_min`` when below it, else ``~y`` as it is."""
    return 1 - lo if below else ny


def _limit_or_not(above, nt, hi, c):
    """Upper clamp, back to true polarity: ``out_max`` when above it, else ``t``."""
    return hi if above else 1 - nt


def _sum(_, a, b, c):
    """The sum bit of a chain's last cell: the sign of a comparison."""
    return a ^ b ^ c


def _lut_init(fn):
    """``LUT_INIT`` of an ``SB_LUT4`` whose output is ``fn(i0, i1, i2, i3)`` (index ``I3 I2 I1 I0``)."""
    return sum(1 << n for n in range(16) if fn(n & 1, n >> 1 & 1, n >> 2 & 1, n >> 3 & 1))


class _Cells:
    """iCE40 logic-cell pieces: ``SB_LUT4`` and ``SB_CARRY`` instances.

    A carry cell computes ``CO = MAJ(I0, I1, CI)``. nextpnr packs it with the LUT whose ``I1``/``I2``
    are its ``I0``/``I1`` and whose ``I3`` is its ``CI``, into one logic cell; the LUT's ``I0`` is then
    free for one more signal, so a chain bit can add *and* select. Every chain LUT here is built so.
    """

    def __init__(self, m):
        self._m = m

    def lut(self, fn, i0, i1, i2, i3):
        """A LUT computing ``fn(i0, i1, i2, i3)`` of single bits; returns its output."""
        return self.luts(fn, [i0], [i1], [i2], [i3])[0]

    def luts(self, fn, i0, i1, i2, i3):
        """One LUT computing ``fn`` per position of the input lists; returns their outputs."""
        init = Const(_lut_init(fn), 16)
        outs = []
        for k in range(len(i1)):
            o = Signal()
            self._m.submodules += Instance("SB_LUT4", p_LUT_INIT=init,
                                           i_I0=i0[k], i_I1=i1[k], i_I2=i2[k], i_I3=i3[k], o_O=o)
            outs.append(o)
        return outs

    def chain(self, a, b, ci, n):
        """Carries of ``a + b + ci`` over cells ``0 .. n-1``: ``c[k]`` enters cell ``k``, ``c[n]`` leaves."""
        carries = [ci]
        for k in range(n):
            co = Signal()
            self._m.submodules += Instance("SB_CARRY", i_I0=a[k], i_I1=b[k], i_CI=carries[k], o_CO=co)
            carries.append(co)
        return carries
