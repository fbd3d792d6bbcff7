"""Multiplier slot of a processing element.

Every PE multiplies through one small component so that the implementation can be chosen per PE:
partial products in logic cells (``"lut"``), the synthesis tool's own choice (``"infer"``: a plain
``*``, which Yosys maps to a whole ``SB_MAC16`` when ``-dsp`` is on), or a hand-instantiated iCE40
DSP block. All variants share one interface and one latency contract, so the array does not care.
"""

from amaranth.hdl import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ._params import reject

__all__ = ["MULTIPLIER_KINDS", "Multiplier", "product_shape"]

#: Implementations a PE can use for its multiply.
MULTIPLIER_KINDS = ("lut", "infer")


def product_shape(a_shape, b_shape):
    """Shape that holds every product of ``a_shape`` by ``b_shape`` exactly."""
    a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
    width = a_shape.width + b_shape.width
    if a_shape.signed or b_shape.signed:
        return signed(width)
    return unsigned(width)


def partial_product_multiply(a, b, a_shape, b_shape, m=None):
    """Build ``a * b`` from shifted partial products, without a ``*`` operator.

    With a module ``m``, every node of the adder tree is a named signal driven in ``m``: the
    logic is the same, and a simulation's waveform shows the multiplier's internal activity.

    Yosys with ``-dsp`` turns every ``*`` into a whole DSP block; a multiplier meant for logic cells
    therefore has to be written as additions. Row ``i`` adds ``a << i`` when bit ``i`` of ``b`` is
    set; for a signed ``b`` the top row has weight ``-2**(n-1)`` and is subtracted (two's complement).
    Operands are sign- or zero-extended to the product width first, so every row is exact.
    """
    a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
    p_shape = product_shape(a_shape, b_shape)
    # Amaranth arithmetic extends each operand by its own signedness, so `a` needs no cast.
    a_ext = a.as_signed() if a_shape.signed else a
    rows = []
    for i in range(b_shape.width):
        row = Mux(b[i], a_ext, 0) << i
        rows.append((row, b_shape.signed and i == b_shape.width - 1))
    # Balanced tree: shallower than a chain, so Yosys builds short carry chains in parallel.
    terms = [(-r if neg else r) for r, neg in rows]
    level = 0
    while len(terms) > 1:
        nxt = []
        for j in range(0, len(terms) - 1, 2):
            total = terms[j] + terms[j + 1]
            if m is not None:
                node = Signal(total.shape(), name=f"pp{level}_{j // 2}")
                m.d.comb += node.eq(total)
                total = node
            nxt.append(total)
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
        level += 1
    # The exact sum fits the product width; the slice drops only redundant sign bits.
    return terms[0][:p_shape.width]


class Multiplier(wiring.Component):
    """A registered multiplier.

    ``p`` holds ``a * b`` computed from the operands present ``latency`` enabled cycles earlier;
    operands are sampled only when ``en`` is high, so a stalled array keeps its state. With
    ``latency >= 1``, ``clear`` high in an enabled cycle loads 0 into ``p`` instead of the product
    (the flip-flops' synchronous reset: no logic in front of them). Operand gating uses it to hand
    a zero downstream while the multiplier's operands and nodes hold still.

    Parameters
    ----------
    a_shape, b_shape : Shape
        Operand shapes (signed or unsigned, 2..16 bits in the MAC array).
    kind : str
        ``"lut"``: partial products in logic cells; ``"infer"``: a ``*`` for the tool to map.
    latency : int
        Register stages between the operands and ``p`` (0 = combinational, 1 or 2).

    Members
    -------
    a : In(a_shape)
    b : In(b_shape)
    en : In(1)
    clear : In(1)
    p : Out(product_shape(a_shape, b_shape))
    """

    def __init__(self, a_shape, b_shape, *, kind="lut", latency=1):
        if kind not in MULTIPLIER_KINDS:
            raise reject(self, ValueError(
                f"multiplier kind must be one of {', '.join(MULTIPLIER_KINDS)}, not {kind!r}"))
        if not isinstance(latency, int) or not 0 <= latency <= 2:
            raise reject(self, ValueError(
                f"multiplier latency must be an integer in 0..2, not {latency!r}"))
        self.a_shape = Shape.cast(a_shape)
        self.b_shape = Shape.cast(b_shape)
        self.kind = kind
        self.latency = latency
        super().__init__({
            "a": In(self.a_shape),
            "b": In(self.b_shape),
            "en": In(1),
            "clear": In(1),
            "p": Out(product_shape(self.a_shape, self.b_shape)),
        })

    def elaborate(self, platform):
        m = Module()
        a, b = self.a, self.b
        p_shape = product_shape(self.a_shape, self.b_shape)
        if self.latency == 2:
            # The extra stage registers the operands, which cuts the routing from the array's
            # operand buses off the multiplier's critical path.
            a_r, b_r = Signal(self.a_shape), Signal(self.b_shape)
            with m.If(self.en):
                m.d.sync += [a_r.eq(a), b_r.eq(b)]
            a, b = a_r, b_r
        if self.kind == "lut":
            prod = partial_product_multiply(a, b, self.a_shape, self.b_shape, m)
        else:
            prod = a * b
        result = Signal(p_shape)
        m.d.comb += result.eq(prod)
        if self.latency == 0:
            m.d.comb += self.p.eq(result)
        else:
            with m.If(self.en):
                m.d.sync += self.p.eq(Mux(self.clear, 0, result))
        return m
