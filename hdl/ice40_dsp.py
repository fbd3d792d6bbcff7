"""Multipliers on the iCE40UP5K's ``SB_MAC16`` DSP blocks, and a pipelined logic-cell multiplier.

The UP5K has eight ``SB_MAC16`` blocks. Yosys (``synth_ice40 -dsp``) maps each ``*`` to one block in
16x16 mode, but a block can also compute two independent 8x8 products (``MODE_8x8``): two int8
multipliers for the price of one DSP, which only a hand-instantiated ``SB_MAC16`` reaches.

Each DSP component here elaborates to one ``SB_MAC16`` instance when built for hardware and to a
behavioural model when simulated (``platform is None``). The model reproduces the block's cycle
behaviour exactly (same registers, clock enable, latency and reset values); the tests check the
instance, run through Yosys' own ``SB_MAC16`` simulation model, against it cycle by cycle.

The block's registers have an asynchronous reset (``IRSTTOP``/``IRSTBOT``); the components drive it
from the ``sync`` domain's reset. With a reset synchronous to the clock, as Amaranth's platforms make
it, the only visible difference to a synchronous reset is that the output reads zero already in the
cycle in which the reset rises; the model masks its output with the reset to match.

:class:`DualMac8x8` exposes the block's ``BHOLD`` pin as ``b_hold``: a weight-stationary array can
keep its weights in the block's own ``B`` operand register instead of in logic cells.
"""

from amaranth.hdl import (
    Cat,
    ClockSignal,
    Const,
    Instance,
    Module,
    Mux,
    ResetSignal,
    Shape,
    Signal,
    signed,
    unsigned,
)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ._params import reject
from .mul import partial_product_multiply, product_shape

__all__ = ["SB_MAC16_UP5K", "DualMac8x8", "Mac16x16", "PipelinedLutMultiplier"]

#: ``SB_MAC16`` blocks on an iCE40UP5K.
SB_MAC16_UP5K = 8

# Widths of the SB_MAC16 parameters (Yosys' cells_sim.v), so that the instance passes each value
# with the width the primitive declares.
_PARAMETER_WIDTHS = {
    "NEG_TRIGGER": 1, "C_REG": 1, "A_REG": 1, "B_REG": 1, "D_REG": 1,
    "TOP_8x8_MULT_REG": 1, "BOT_8x8_MULT_REG": 1,
    "PIPELINE_16x16_MULT_REG1": 1, "PIPELINE_16x16_MULT_REG2": 1,
    "TOPOUTPUT_SELECT": 2, "TOPADDSUB_LOWERINPUT": 2, "TOPADDSUB_UPPERINPUT": 1,
    "TOPADDSUB_CARRYSELECT": 2,
    "BOTOUTPUT_SELECT": 2, "BOTADDSUB_LOWERINPUT": 2, "BOTADDSUB_UPPERINPUT": 1,
    "BOTADDSUB_CARRYSELECT": 2,
    "MODE_8x8": 1, "A_SIGNED": 1, "B_SIGNED": 1,
}


def _check_bool(component, name, value):
    if not isinstance(value, bool):
        raise reject(component, TypeError(f"{name} must be True or False, not {value!r}"))


def _check_latency(component, latency, hi):
    if isinstance(latency, bool) or not isinstance(latency, int):
        raise reject(component, TypeError(f"latency must be an integer in 0..{hi}, not {latency!r}"))
    if not 0 <= latency <= hi:
        raise reject(component, ValueError(f"latency must be an integer in 0..{hi}, not {latency!r}"))


def _check_use_primitive(component, value):
    if value is not None and not isinstance(value, bool):
        raise reject(component, TypeError(f"use_primitive must be None, True or False, not {value!r}"))


def _operand_shape(is_signed, width):
    return signed(width) if is_signed else unsigned(width)


def _mac16_instance(params, *, a, b, en, o, b_hold=None, output_reset=False):
    """An ``SB_MAC16`` with every parameter and input given, on the ``sync`` domain.

    ``b_hold`` drives ``BHOLD`` (tied low when ``None``); ``output_reset`` clears the output
    (accumulator) registers with the domain's reset too.
    """
    kwargs = {f"p_{name}": Const(params.get(name, 0), width) for name, width in _PARAMETER_WIDTHS.items()}
    zero16 = Const(0, 16)
    rst = ResetSignal("sync", allow_reset_less=True)
    return Instance(
        "SB_MAC16",
        **kwargs,
        i_CLK=ClockSignal("sync"), i_CE=en,
        i_A=a, i_B=b, i_C=zero16, i_D=zero16,
        i_AHOLD=Const(0, 1), i_BHOLD=Const(0, 1) if b_hold is None else b_hold,
        i_CHOLD=Const(0, 1), i_DHOLD=Const(0, 1),
        # The input and multiplier registers clear with the domain's reset, and so do the output
        # registers when they are used.
        i_IRSTTOP=rst, i_IRSTBOT=rst,
        i_ORSTTOP=rst if output_reset else Const(0, 1),
        i_ORSTBOT=rst if output_reset else Const(0, 1),
        i_OLOADTOP=Const(0, 1), i_OLOADBOT=Const(0, 1),
        i_ADDSUBTOP=Const(0, 1), i_ADDSUBBOT=Const(0, 1),
        i_OHOLDTOP=Const(0, 1), i_OHOLDBOT=Const(0, 1),
        i_CI=Const(0, 1), i_ACCUMCI=Const(0, 1), i_SIGNEXTIN=Const(0, 1),
        o_O=o,
    )


def _registered(m, en, value, name):
    """``value`` through one register that loads only when ``en`` is high (the block's CE)."""
    reg = Signal(value.shape(), name=name)
    with m.If(en):
        m.d.sync += reg.eq(value)
    return reg


def _drive_output(m, port, value, registered):
    # The block's asynchronous reset clears its registers as soon as the reset rises; the model's
    # registers clear at the next edge, so the output is masked in between.
    if registered:
        m.d.comb += port.eq(Mux(ResetSignal("sync", allow_reset_less=True), 0, value))
    else:
        m.d.comb += port.eq(value)


class _Mac16Base(wiring.Component):
    #: ``SB_MAC16`` blocks one instance uses.
    dsp_blocks = 1

    def _configure(self, a_signed, b_signed, latency, use_primitive, *, width):
        """Check and store the parameters both wrappers take; set the operand and product shapes
        (operands of ``width`` bits) from which the subclass then builds its signature."""
        _check_bool(self, "a_signed", a_signed)
        _check_bool(self, "b_signed", b_signed)
        _check_latency(self, latency, 3)
        _check_use_primitive(self, use_primitive)
        self.a_signed = a_signed
        self.b_signed = b_signed
        self._latency = latency
        self.use_primitive = use_primitive
        self.a_shape = _operand_shape(a_signed, width)
        self.b_shape = _operand_shape(b_signed, width)
        self.p_shape = product_shape(self.a_shape, self.b_shape)

    def _use_primitive(self, platform):
        if self.use_primitive is None:
            return platform is not None
        return self.use_primitive

    @property
    def latency(self):
        """Clock-enabled cycles from the operands to ``p`` (0 = combinational)."""
        return self._latency


class DualMac8x8(_Mac16Base):
    """Two independent 8x8 multipliers on one ``SB_MAC16`` (``MODE_8x8``).

    ``p0`` and ``p1`` hold ``a0 * b0`` and ``a1 * b1`` of the operands present ``latency``
    clock-enabled cycles earlier. Both products share the block's single clock enable ``en``: a
    low ``en`` freezes every register of the block. The domain's reset clears them.

    ``b_hold`` (the block's ``BHOLD``) keeps the ``B`` operand register, both halves (``b0`` and
    ``b1``) together, at its value: that register loads ``{b1, b0}`` at a clock edge only when
    ``en`` is high and ``b_hold`` is low. ``p0`` and ``p1`` then go on multiplying the new ``a0``
    and ``a1`` with the held operands, whatever sits on ``b0`` and ``b1``, so a weight-stationary
    array needs no weight registers of its own. ``b_hold`` acts only inside the clock enable (with
    ``en`` low nothing loads anyway) and the domain's reset takes precedence over it: a reset
    clears the held operands to zero, and they stay zero until a clock-enabled edge with
    ``b_hold`` low loads new ones. Only ``latency`` 2 and 3 have the operand register; at 0 and 1
    ``b`` goes straight to the multipliers and ``b_hold`` has no effect (the port exists at every
    latency so that connections do not depend on it).

    With the default ``latency=2`` the block is configured as the hand-written MARLANN design does
    it: operand registers (``A_REG``, ``B_REG``) and product registers (``TOP_8x8_MULT_REG``,
    ``BOT_8x8_MULT_REG``), outputs taken straight from the 8x8 products
    (``TOPOUTPUT_SELECT = BOTOUTPUT_SELECT = 0b10``), ``A = {a1, a0}``, ``B = {b1, b0}``,
    ``O = {p1, p0}``. ``latency=1`` drops the operand registers, ``latency=0`` all registers.
    ``latency=3`` adds the block's output registers (to match a 3-stage logic multiplier): each
    product passes its half's accumulator adder with the other addend, ``C`` (top) or ``D``
    (bottom), tied to zero (``TOPADDSUB_LOWERINPUT = BOTADDSUB_LOWERINPUT = 0b01``,
    ``TOPADDSUB_UPPERINPUT = BOTADDSUB_UPPERINPUT = 1``) into the accumulator register, which
    drives the output (``TOPOUTPUT_SELECT = BOTOUTPUT_SELECT = 0b01``) and is cleared by
    ``ORSTTOP``/``ORSTBOT`` from the domain's reset like the other registers.

    Parameters
    ----------
    a_signed, b_signed : bool
        Whether the ``a`` and ``b`` operands are two's complement (the block's ``A_SIGNED`` and
        ``B_SIGNED``, applied to both halves).
    latency : int
        Register stages, 0..3.
    use_primitive : bool or None
        ``None``: an ``SB_MAC16`` instance when elaborated with a platform, the behavioural model
        without one. ``True``/``False`` force the instance/model (e.g. to write Verilog with the
        instance for a cross-check).

    Members
    -------
    a0, a1 : ``In(signed(8))`` or ``In(unsigned(8))``
    b0, b1 : ``In(signed(8))`` or ``In(unsigned(8))``
    en : ``In(1)``
        Clock enable (``CE``).
    b_hold : ``In(1)``
        Keep the registered ``b0`` and ``b1`` (``BHOLD``); no effect at ``latency`` 0 and 1.
    p0, p1 : ``Out(signed(16))``, or ``Out(unsigned(16))`` when both operands are unsigned.

    Raises
    ------
    TypeError, ValueError
        A parameter has the wrong type or is out of range.
    """

    def __init__(self, a_signed=True, b_signed=True, *, latency=2, use_primitive=None):
        self._configure(a_signed, b_signed, latency, use_primitive, width=8)
        super().__init__({
            "a0": In(self.a_shape), "b0": In(self.b_shape),
            "a1": In(self.a_shape), "b1": In(self.b_shape),
            "en": In(1), "b_hold": In(1),
            "p0": Out(self.p_shape), "p1": Out(self.p_shape),
        })

    @property
    def parameters(self):
        """The ``SB_MAC16`` parameters (name to integer) the instance uses; unlisted ones are 0."""
        product_reg = int(self._latency >= 1)
        operand_reg = int(self._latency >= 2)
        params = {
            "MODE_8x8": 1,
            "A_SIGNED": int(self.a_signed), "B_SIGNED": int(self.b_signed),
            "A_REG": operand_reg, "B_REG": operand_reg,
            "TOP_8x8_MULT_REG": product_reg, "BOT_8x8_MULT_REG": product_reg,
            # Unused in 8x8 mode (it pipelines the 16x16 cross products); set as MARLANN sets it.
            "PIPELINE_16x16_MULT_REG1": product_reg,
            "TOPOUTPUT_SELECT": 0b10, "BOTOUTPUT_SELECT": 0b10,
        }
        if self._latency >= 3:
            # Product + C (top) / D (bottom), both tied to zero, into the accumulator registers.
            params.update({
                "TOPADDSUB_LOWERINPUT": 0b01, "BOTADDSUB_LOWERINPUT": 0b01,
                "TOPADDSUB_UPPERINPUT": 1, "BOTADDSUB_UPPERINPUT": 1,
                "TOPOUTPUT_SELECT": 0b01, "BOTOUTPUT_SELECT": 0b01,
            })
        return params

    def elaborate(self, platform):
        m = Module()
        if self._use_primitive(platform):
            o = Signal(32)
            m.submodules.mac16 = _mac16_instance(
                self.parameters, a=Cat(self.a0, self.a1), b=Cat(self.b0, self.b1), en=self.en, o=o,
                b_hold=self.b_hold, output_reset=self._latency >= 3)
            m.d.comb += [self.p0.eq(o[:16]), self.p1.eq(o[16:])]
            return m
        a0, b0, a1, b1 = self.a0, self.b0, self.a1, self.b1
        if self._latency >= 2:
            a0, a1 = _registered(m, self.en, a0, "a0_q"), _registered(m, self.en, a1, "a1_q")
            # BHOLD sits inside the clock enable, and the reset overrides both (cells_sim.v).
            b_load = self.en & ~self.b_hold
            b0, b1 = _registered(m, b_load, b0, "b0_q"), _registered(m, b_load, b1, "b1_q")
        p0, p1 = a0 * b0, a1 * b1
        if self._latency >= 1:
            p0, p1 = _registered(m, self.en, p0, "p0_q"), _registered(m, self.en, p1, "p1_q")
        if self._latency >= 3:
            p0, p1 = _registered(m, self.en, p0, "p0_acc"), _registered(m, self.en, p1, "p1_acc")
        _drive_output(m, self.p0, p0, self._latency >= 1)
        _drive_output(m, self.p1, p1, self._latency >= 1)
        return m


class Mac16x16(_Mac16Base):
    """One 16x16 multiplier with a 32-bit product on one ``SB_MAC16``.

    ``p`` holds ``a * b`` of the operands present ``latency`` clock-enabled cycles earlier; ``en``
    is the block's clock enable, the domain's reset clears its registers.

    The block forms four 8x8 partial products and adds them in its own adder. ``latency`` picks the
    registers: 1 registers the partial products (``TOP_8x8_MULT_REG``, ``BOT_8x8_MULT_REG``,
    ``PIPELINE_16x16_MULT_REG1``), 2 adds the operand registers (``A_REG``, ``B_REG``), 3 also the
    sum (``PIPELINE_16x16_MULT_REG2``), which takes the block's adder off the path into the fabric;
    0 is combinational. The output is the adder's (``TOPOUTPUT_SELECT = BOTOUTPUT_SELECT = 0b11``).

    Parameters
    ----------
    a_signed, b_signed : bool
        Whether ``a`` and ``b`` are two's complement (``A_SIGNED``, ``B_SIGNED``).
    latency : int
        Register stages, 0..3.
    use_primitive : bool or None
        As for :class:`DualMac8x8`.

    Members
    -------
    a : ``In(signed(16))`` or ``In(unsigned(16))``
    b : ``In(signed(16))`` or ``In(unsigned(16))``
    en : ``In(1)``
        Clock enable (``CE``).
    p : ``Out(signed(32))``, or ``Out(unsigned(32))`` when both operands are unsigned.

    Raises
    ------
    TypeError, ValueError
        A parameter has the wrong type or is out of range.
    """

    def __init__(self, a_signed=True, b_signed=True, *, latency=2, use_primitive=None):
        self._configure(a_signed, b_signed, latency, use_primitive, width=16)
        super().__init__({
            "a": In(self.a_shape), "b": In(self.b_shape), "en": In(1), "clear": In(1),
            "p": Out(self.p_shape),
        })

    @property
    def parameters(self):
        """The ``SB_MAC16`` parameters (name to integer) the instance uses; unlisted ones are 0."""
        product_reg = int(self._latency >= 1)
        operand_reg = int(self._latency >= 2)
        return {
            "MODE_8x8": 0,
            "A_SIGNED": int(self.a_signed), "B_SIGNED": int(self.b_signed),
            "A_REG": operand_reg, "B_REG": operand_reg,
            # The four partial products must be registered together, or the sum would mix cycles.
            "TOP_8x8_MULT_REG": product_reg, "BOT_8x8_MULT_REG": product_reg,
            "PIPELINE_16x16_MULT_REG1": product_reg,
            "PIPELINE_16x16_MULT_REG2": int(self._latency >= 3),
            "TOPOUTPUT_SELECT": 0b11, "BOTOUTPUT_SELECT": 0b11,
        }

    def elaborate(self, platform):
        m = Module()
        if self._use_primitive(platform):
            o = Signal(32)
            m.submodules.mac16 = _mac16_instance(self.parameters, a=self.a, b=self.b, en=self.en, o=o)
            m.d.comb += self.p.eq(o)
            return m
        a, b = self.a, self.b
        if self._latency >= 2:
            a, b = _registered(m, self.en, a, "a_q"), _registered(m, self.en, b, "b_q")
        p = a * b
        if self._latency >= 1:
            p = _registered(m, self.en, p, "p_q")
        if self._latency >= 3:
            p = _registered(m, self.en, p, "sum_q")
        _drive_output(m, self.p, p, self._latency >= 1)
        return m


class PipelinedLutMultiplier(wiring.Component):
    """A multiplier in logic cells, split into two pipeline stages for a higher clock rate.

    The rows of the partial-product array are split at half of ``b``'s width: the first stage adds
    each half (``a * b_low`` and ``a * b_high``) and registers both sums, the second adds them with
    the high half shifted and registers ``p``. No ``*`` is used, so Yosys with ``-dsp`` keeps it in
    logic cells. Same interface and enable behaviour as :class:`~npuforge.hdl.mul.Multiplier`
    with ``latency=2``: both stages load only when ``en`` is high, the domain's reset clears them.

    Parameters
    ----------
    a_shape, b_shape : Shape
        Operand shapes, signed or unsigned; ``a`` 1..32 bits, ``b`` 2..32 bits.

    Members
    -------
    a : ``In(a_shape)``
    b : ``In(b_shape)``
    en : ``In(1)``
    clear : ``In(1)``
    p : ``Out(product_shape(a_shape, b_shape))``

    Raises
    ------
    TypeError, ValueError
        A shape is not a shape or has a width out of range.
    """

    #: Clock-enabled cycles from the operands to ``p``.
    latency = 2

    def __init__(self, a_shape, b_shape):
        shapes = {}
        for name, value, lo in (("a_shape", a_shape, 1), ("b_shape", b_shape, 2)):
            try:
                shape = Shape.cast(value)
            except TypeError:
                raise reject(self, TypeError(f"{name} must be a shape, not {value!r}")) from None
            if not lo <= shape.width <= 32:
                raise reject(self, ValueError(
                    f"{name} width must be an integer in {lo}..32, not {shape.width}"))
            shapes[name] = shape
        self.a_shape = shapes["a_shape"]
        self.b_shape = shapes["b_shape"]
        self.p_shape = product_shape(self.a_shape, self.b_shape)
        super().__init__({
            "a": In(self.a_shape), "b": In(self.b_shape), "en": In(1), "clear": In(1),
            "p": Out(self.p_shape),
        })

    def elaborate(self, platform):
        m = Module()
        k = self.b_shape.width // 2
        # The low half of b is a plain unsigned number; only the high half carries b's sign.
        lo_shape = unsigned(k)
        hi_shape = _operand_shape(self.b_shape.signed, self.b_shape.width - k)
        # Named nodes (``m``): a waveform shows the adder trees' activity.
        lo = partial_product_multiply(self.a, self.b[:k], self.a_shape, lo_shape, m)
        hi = partial_product_multiply(self.a, self.b[k:], self.a_shape, hi_shape, m)
        lo_q = Signal(product_shape(self.a_shape, lo_shape), name="lo_q")
        hi_q = Signal(product_shape(self.a_shape, hi_shape), name="hi_q")
        with m.If(self.en):
            m.d.sync += [lo_q.eq(lo), hi_q.eq(hi)]
            m.d.sync += self.p.eq(Mux(self.clear, 0, lo_q + (hi_q << k)))
        return m
