"""Leaky integrate-and-fire neuron update unit with explicit, documented semantics.

The spiking core keeps every neuron's state in memory and streams it, one memory row at a time,
through :class:`LifUnit` lanes. The unit is purely combinational: it maps the state read from
memory (and a weight, a bias) to the state written back and a spike bit. All the details on which
published models and their software twins differ are parameters of :class:`LifParams`: the
threshold comparison, the reset, the leak and its rounding, saturation or wrap-around, the
refractory period, the synaptic current, and whether the threshold is tested after every input
event or once per timestep.

Semantics
---------
Let ``v`` be the membrane, ``u`` the synaptic current (``synapse="current"``), ``acc`` the sum of
the weights received during the current timestep (``fire="timestep"``), ``ref`` the refractory
counter, ``w`` a weight, ``b`` the neuron's bias, ``s = input_shift``, ``θ = threshold``.

``ovf_v(x)`` brings ``x`` into the membrane's range: with ``overflow="saturate"`` it clips to
``[0, 2**n - 1]`` (unsigned) or to the symmetric ``[-(2**(n-1) - 1), 2**(n-1) - 1]`` (signed, as
Loihi clips), with ``"wrap"`` it keeps the low ``n`` bits (two's complement when signed).
``ovf_u`` does the same for ``u`` with ``current_width`` and ``current_overflow``.

Leak of the membrane (``leak``)::

    none:  L(v) = v
    shift: L(v) = v - (v >> k)                              (arithmetic shift, k = leak_shift)
    mul:   L(v) = sgn(v) * ((|v| * (4096 - d)) >> 12)       (toward zero, d = leak_decay)
    sub:   L(v) = max(v - c, 0) if v > 0, min(v + c, 0) if v < 0   (c = leak_sub)

Decay of the current: ``D(u) = sgn(u) * ((|u| * (4096 - current_decay)) >> 12)``.

``fire="timestep"`` (Loihi style). An input event only accumulates ``acc += w`` (``acc`` is wide
enough never to overflow when each axon fires at most once per timestep; it saturates otherwise).
At the end of the timestep, for every neuron::

    I   = acc << s
    u'  = ovf_u(D(u) + I);  I = u'                       (only with synapse="current")
    v1  = ovf_v(L(v) + I + (b << bias_shift))
    spike = ref == 0 and (v1 >= θ  or  v1 > θ)           (threshold_mode)
    v'  = v if ref > 0 else (reset(v1) if spike else v1)  reset: 0, or v1 - θ ("subtract")
    ref' = ref - 1 if ref > 0 else (refractory if spike else 0)
    acc' = 0

``fire="event"`` (ODIN style, no synaptic current). Every input event updates the membrane and
tests the threshold at once; the end of the timestep is an event of its own (leak and bias)::

    event:  v1 = ovf_v(v + (w << s))                  spike and reset as above
    end:    v1 = ovf_v(L(v) + (b << bias_shift))      spike and reset as above

A refractory neuron (``ref > 0``) is frozen: it ignores events, does not leak and cannot spike;
its synaptic current still evolves. A neuron that spikes in timestep ``t`` is refractory for
timesteps ``t+1 .. t+refractory`` (their end-of-timestep updates included) and, with
``fire="event"``, for the rest of timestep ``t``; the counter is therefore loaded with
``refractory + 1`` by a spike caused by an input event, and with ``refractory`` by a spike at the
end of a timestep.
"""

import dataclasses
from dataclasses import dataclass

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "FIRE_MODES",
    "LEAK_MODES",
    "OVERFLOW_MODES",
    "RESET_MODES",
    "SYNAPSE_MODES",
    "THRESHOLD_MODES",
    "PRESETS",
    "LifParams",
    "LifUnit",
    "accumulator_width",
    "const_multiply",
    "csd_digits",
]

LEAK_MODES = ("none", "shift", "mul", "sub")
OVERFLOW_MODES = ("saturate", "wrap")
SYNAPSE_MODES = ("none", "current")
THRESHOLD_MODES = (">=", ">")
RESET_MODES = ("zero", "subtract")
FIRE_MODES = ("timestep", "event")

#: Decay factors are fractions of this unity (Loihi's 12-bit decay constants).
DECAY_UNITY = 4096
DECAY_SHIFT = 12


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")


def _check_choice(name, value, choices):
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, not {value!r}")


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")


def accumulator_width(weight_width, max_events):
    """Width of a signed accumulator that holds any sum of ``max_events`` weights exactly.

    Parameters
    ----------
    weight_width : int
        Width of one signed weight.
    max_events : int
        Largest number of weights summed (input axons plus recurrent events per timestep).

    Returns
    -------
    int
        The width; the accumulator saturates symmetrically at ``±(2**(width-1) - 1)``, which is
        never reached by ``max_events`` weights.
    """
    max_abs = max(1, max_events) * (1 << (weight_width - 1))
    return max_abs.bit_length() + 1


@dataclass(frozen=True)
class LifParams:
    """Semantics of a leaky integrate-and-fire neuron (see the module docstring for equations).

    Parameters
    ----------
    weight_width : int
        Width of a signed synaptic weight, 1..16.
    membrane_width : int
        Width of the membrane potential, 2..32.
    membrane_signed : bool
        Signed (two's complement) or unsigned membrane.
    overflow : str
        ``"saturate"`` or ``"wrap"`` for the membrane.
    leak : str
        ``"none"`` (integrate-and-fire), ``"shift"``, ``"mul"`` or ``"sub"``.
    leak_shift : int
        ``k`` of the shift leak, 0..31.
    leak_decay : int
        ``d`` of the multiplicative leak, 0..4096 (factor ``(4096 - d) / 4096``).
    leak_sub : int
        Constant of the linear leak, 0..largest membrane value.
    synapse : str
        ``"none"`` or ``"current"`` (a decaying current between weights and membrane).
    current_width : int
        Width of the signed synaptic current, 2..32.
    current_decay : int
        Decay of the current, 0..4096 (factor ``(4096 - current_decay) / 4096``).
    current_overflow : str
        ``"saturate"`` or ``"wrap"`` for the current.
    input_shift : int
        Left shift applied to summed weights before they enter current or membrane, 0..16.
    threshold : int
        Firing threshold, 0..largest membrane value.
    threshold_mode : str
        ``">="`` or ``">"``.
    reset : str
        ``"zero"`` or ``"subtract"`` (subtract the threshold).
    refractory : int
        Refractory period in timesteps, 0..255.
    bias : bool
        Whether each neuron has a bias (held in its own memory, loaded with the weights).
    bias_width : int
        Width of a signed bias, 1..24.
    bias_shift : int
        Left shift of the bias, 0..16.
    fire : str
        ``"timestep"``: integrate events, update and test once per timestep; ``"event"``: update
        and test after every event, the end of a timestep being a leak event.

    Raises
    ------
    TypeError
        A parameter has the wrong type.
    ValueError
        A parameter is out of range, or ``synapse="current"`` is combined with ``fire="event"``.
    """

    weight_width: int = 8
    membrane_width: int = 16
    membrane_signed: bool = True
    overflow: str = "saturate"
    leak: str = "none"
    leak_shift: int = 4
    leak_decay: int = 0
    leak_sub: int = 0
    synapse: str = "none"
    current_width: int = 16
    current_decay: int = 0
    current_overflow: str = "wrap"
    input_shift: int = 0
    threshold: int = 64
    threshold_mode: str = ">="
    reset: str = "zero"
    refractory: int = 0
    bias: bool = False
    bias_width: int = 8
    bias_shift: int = 0
    fire: str = "timestep"

    def __post_init__(self):
        _check_int("weight_width", self.weight_width, 1, 16)
        _check_int("membrane_width", self.membrane_width, 2, 32)
        _check_bool("membrane_signed", self.membrane_signed)
        _check_choice("overflow", self.overflow, OVERFLOW_MODES)
        _check_choice("leak", self.leak, LEAK_MODES)
        _check_int("leak_shift", self.leak_shift, 0, 31)
        _check_int("leak_decay", self.leak_decay, 0, DECAY_UNITY)
        _check_int("leak_sub", self.leak_sub, 0, self.membrane_max)
        _check_choice("synapse", self.synapse, SYNAPSE_MODES)
        _check_int("current_width", self.current_width, 2, 32)
        _check_int("current_decay", self.current_decay, 0, DECAY_UNITY)
        _check_choice("current_overflow", self.current_overflow, OVERFLOW_MODES)
        _check_int("input_shift", self.input_shift, 0, 16)
        _check_int("threshold", self.threshold, 0, self.membrane_max)
        _check_choice("threshold_mode", self.threshold_mode, THRESHOLD_MODES)
        _check_choice("reset", self.reset, RESET_MODES)
        _check_int("refractory", self.refractory, 0, 255)
        _check_bool("bias", self.bias)
        _check_int("bias_width", self.bias_width, 1, 24)
        _check_int("bias_shift", self.bias_shift, 0, 16)
        _check_choice("fire", self.fire, FIRE_MODES)
        if self.fire == "event" and self.synapse != "none":
            raise ValueError(f"synapse must be 'none' when fire is 'event', not {self.synapse!r}")

    # -- derived figures -------------------------------------------------------------------------

    @property
    def membrane_max(self):
        """Largest membrane value."""
        if self.membrane_signed:
            return (1 << (self.membrane_width - 1)) - 1
        return (1 << self.membrane_width) - 1

    @property
    def membrane_min(self):
        """Smallest membrane value (saturation is symmetric for a signed membrane)."""
        if not self.membrane_signed:
            return 0
        if self.overflow == "saturate":
            return -self.membrane_max
        return -(1 << (self.membrane_width - 1))

    @property
    def membrane_shape(self):
        """Amaranth shape of the membrane."""
        if self.membrane_signed:
            return signed(self.membrane_width)
        return unsigned(self.membrane_width)

    @property
    def refractory_max(self):
        """Largest value of the refractory counter (``refractory + 1`` in event mode)."""
        if self.refractory == 0:
            return 0
        return self.refractory + (1 if self.fire == "event" else 0)

    @property
    def refractory_width(self):
        """Width of the refractory counter, 0 without a refractory period."""
        return self.refractory_max.bit_length()

    def state_fields(self, acc_width):
        """Fields of one neuron's stored state, in memory order.

        Parameters
        ----------
        acc_width : int
            Width of the timestep accumulator (see :func:`accumulator_width`).

        Returns
        -------
        dict
            Field name to Amaranth shape: ``v``, then ``u``, ``acc`` and ``ref`` where used.
        """
        fields = {"v": self.membrane_shape}
        if self.synapse == "current":
            fields["u"] = signed(self.current_width)
        if self.fire == "timestep":
            fields["acc"] = signed(acc_width)
        if self.refractory_width:
            fields["ref"] = unsigned(self.refractory_width)
        return fields

    def state_layout(self, acc_width):
        """:class:`amaranth.lib.data.StructLayout` of one neuron's stored state."""
        return data.StructLayout(self.state_fields(acc_width))

    def state_width(self, acc_width):
        """Bits of stored state per neuron."""
        return self.state_layout(acc_width).size

    # -- serialization and presets ---------------------------------------------------------------

    def to_dict(self):
        """Parameters as a plain dict (for TOML, JSON manifests and the golden model)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Build from a dict as written by :meth:`to_dict`.

        Raises
        ------
        ValueError
            An unknown key is present.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown neuron parameter(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes):
        """Copy with some parameters changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def odin(cls, *, threshold=64, leak=1):
        """ODIN's LIF neuron (Frenkel et al., IEEE TBioCAS 13(1), 2019).

        An 8-bit unsigned membrane; an excitatory event adds its weight saturating at 255, an
        inhibitory one subtracts clamping at 0 (here: a 4-bit signed weight, ``v = clip(v + w, 0,
        255)``, a superset of ODIN's 3-bit magnitude plus sign); the time reference is a leak event
        that subtracts ``leak`` clamped at 0; after every event, the leak included, ``v >= θ``
        fires and resets ``v`` to 0 at once.

        Parameters
        ----------
        threshold : int
            ODIN's 8-bit ``param_thr``, 0..255.
        leak : int
            ODIN's 7-bit ``param_leak_str``, 0..127 (0 disables the leak).
        """
        _check_int("threshold", threshold, 0, 255)
        _check_int("leak", leak, 0, 127)
        return cls(weight_width=4, membrane_width=8, membrane_signed=False, overflow="saturate",
                   leak="sub", leak_sub=leak, synapse="none", input_shift=0, threshold=threshold,
                   threshold_mode=">=", reset="zero", refractory=0, bias=False, fire="event")

    @classmethod
    def loihi(cls, *, vth=10, du=0, dv=0, bias=False, bias_exp=0, weight_width=8):
        """Loihi's CUBA LIF as Lava models it bit-accurately (``lava.proc.lif`` ``PyLifModelBitAcc``).

        Per timestep::

            u <- sgn(u) * ((|u| * (4096 - (du + 1))) >> 12) + (Σw << 6)      wrapping at 24 bits
            v <- sgn(v) * ((|v| * (4096 - dv)) >> 12) + u + (bias_mant << bias_exp)
                                                          clipped to ±(2**23 - 1)
            spike when v > vth * 2**6, then v <- 0

        Differences from Lava's NumPy model, both outside normal operation: Lava keeps the summed
        input ``a_in`` in 16 bits where we keep it exact, and its wrap-around of ``u`` keeps
        ``+2**23`` and maps ``-2**23`` to ``+2**23``, values a 24-bit register cannot hold; we
        wrap in two's complement. Dense's one-step synaptic delay is not part of the neuron.

        Parameters
        ----------
        vth : int
            Lava's unscaled threshold, 0..131071.
        du, dv : int
            Lava's 12-bit current and voltage decays, 0..4095.
        bias : bool
            Whether neurons have a (13-bit mantissa) bias.
        bias_exp : int
            Lava's bias exponent, 0..7.
        weight_width : int
            Width of the synaptic weights, 1..16 (Lava's Dense uses 8).
        """
        _check_int("vth", vth, 0, (1 << 17) - 1)
        _check_int("du", du, 0, 4095)
        _check_int("dv", dv, 0, 4095)
        _check_bool("bias", bias)
        _check_int("bias_exp", bias_exp, 0, 7)
        return cls(weight_width=weight_width, membrane_width=24, membrane_signed=True,
                   overflow="saturate", leak="mul", leak_decay=dv, synapse="current",
                   current_width=24, current_decay=du + 1, current_overflow="wrap", input_shift=6,
                   threshold=vth << 6, threshold_mode=">", reset="zero", refractory=0, bias=bias,
                   bias_width=13, bias_shift=bias_exp, fire="timestep")


#: Published neuron models by name (constructors taking their own keyword arguments).
PRESETS = {"odin": LifParams.odin, "loihi": LifParams.loihi}


# -- arithmetic helpers ----------------------------------------------------------------------------

def csd_digits(k):
    """Canonical signed-digit form of ``k >= 0``: a list of ``(shift, ±1)``, fewest non-zero digits.

    A constant multiply by ``k`` costs ``len(csd_digits(k)) - 1`` additions.
    """
    digits = []
    i = 0
    while k:
        if k & 1:
            d = 2 - (k & 3)        # +1 when k = ...01, -1 when k = ...11
            digits.append((i, d))
            k -= d
        k >>= 1
        i += 1
    return digits


def const_multiply(x, k):
    """``x * k`` for an Amaranth value ``x`` and a constant ``k >= 0``, without ``*``.

    Yosys with ``-dsp`` maps every ``*`` to a whole ``SB_MAC16`` (the UP5K has 8); a constant
    multiply is only a few additions in canonical signed-digit form, e.g. ``4095 x`` is
    ``(x << 12) - x``.

    Returns
    -------
    Value
        The exact product, ``len(x) + k.bit_length()`` bits wide, signed when ``x`` is.
    """
    is_signed = x.shape().signed
    width = len(x) + max(1, k.bit_length())
    digits = csd_digits(k)
    if not digits:
        return Const(0, signed(width) if is_signed else width)
    terms = [(x << s) if d > 0 else -(x << s) for s, d in digits]
    while len(terms) > 1:
        nxt = [terms[j] + terms[j + 1] for j in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    # The exact product fits the width: its low bits are the product.
    low = terms[0][:width]
    return low.as_signed() if is_signed else low


def _clip(x, lo, hi):
    return Mux(x > hi, hi, Mux(x < lo, lo, x))


def _decay_toward_zero(m, x, width, decay, name):
    """``sgn(x) * ((|x| * (4096 - decay)) >> 12)`` as a signed value (rounds toward zero).

    Computed without taking the magnitude: for ``x < 0``, ``-floor(-x K / 4096)`` equals
    ``floor((x K + 4095) / 4096)``, an arithmetic shift after adding a rounding constant. That
    saves two negations (two carry chains) on the lane's critical path.
    """
    factor = DECAY_UNITY - decay
    if factor == 0:
        return Const(0, signed(2))
    prod = const_multiply(x, factor)
    res = Signal(signed(width + 1), name=f"{name}_decayed")
    m.d.comb += res.eq((prod + Mux(x < 0, DECAY_UNITY - 1, 0)) >> DECAY_SHIFT)
    return res


class LifUnit(wiring.Component):
    """Combinational update of one neuron: state and input in, next state and spike out.

    Parameters
    ----------
    params : :class:`LifParams`
        Neuron semantics.
    acc_width : int
        Width of the timestep accumulator (used with ``fire="timestep"``), 2..64.

    Members
    -------
    eot : ``In(1)``
        0: an input event with weight ``weight``; 1: the end-of-timestep update.
    weight : ``In(signed(weight_width))``
        Weight of the event's synapse onto this neuron.
    v, v_next : membrane in and out.
    u, u_next : synaptic current in and out (``synapse="current"`` only).
    acc, acc_next : timestep accumulator in and out (``fire="timestep"`` only).
    ref, ref_next : refractory counter in and out (``refractory > 0`` only).
    bias : ``In(signed(bias_width))`` (``bias=True`` only).
    spike : ``Out(1)``
        The neuron fires in this update.

    Raises
    ------
    TypeError
        ``params`` is not a :class:`LifParams`.
    ValueError
        ``acc_width`` is out of range.
    """

    def __init__(self, params, acc_width=16):
        if not isinstance(params, LifParams):
            raise TypeError(f"params must be a LifParams, not {params!r}")
        _check_int("acc_width", acc_width, 2, 64)
        self.params = params
        self.acc_width = acc_width
        members = {
            "eot": In(1),
            "weight": In(signed(params.weight_width)),
            "v": In(params.membrane_shape),
            "v_next": Out(params.membrane_shape),
            "spike": Out(1),
        }
        if params.synapse == "current":
            members["u"] = In(signed(params.current_width))
            members["u_next"] = Out(signed(params.current_width))
        if params.fire == "timestep":
            members["acc"] = In(signed(acc_width))
            members["acc_next"] = Out(signed(acc_width))
        if params.refractory_width:
            members["ref"] = In(unsigned(params.refractory_width))
            members["ref_next"] = Out(unsigned(params.refractory_width))
        if params.bias:
            members["bias"] = In(signed(params.bias_width))
        super().__init__(members)

    @staticmethod
    def _ovf(x, mode, lo, hi):
        if mode == "saturate":
            return _clip(x, lo, hi)
        return x   # assignment to the narrower state keeps the low bits: wrap-around

    def elaborate(self, platform):
        m = Module()
        p = self.params
        vw = p.membrane_width
        vlo, vhi = p.membrane_min, p.membrane_max

        def ovf_v(x):
            return self._ovf(x, p.overflow, vlo, vhi)

        # -- leak of the membrane
        v = self.v
        if p.leak == "none":
            leaked = v
        elif p.leak == "shift":
            leaked = v - (v >> p.leak_shift)
        elif p.leak == "mul":
            leaked = _decay_toward_zero(m, v, vw, p.leak_decay, "leak")
        else:
            c = p.leak_sub
            leaked = Mux(v > c, v - c, Mux(v < -c, v + c, 0)) if p.membrane_signed else \
                Mux(v > c, v - c, 0)

        bias_term = (self.bias << p.bias_shift) if p.bias else 0

        spike = Signal()
        v1 = Signal(p.membrane_shape)
        active = (self.ref == 0) if p.refractory_width else Const(1)

        if p.fire == "timestep":
            aw = self.acc_width
            amax = (1 << (aw - 1)) - 1
            m.d.comb += self.acc_next.eq(Mux(self.eot, 0, _clip(self.acc + self.weight, -amax, amax)))
            drive = self.acc << p.input_shift
            if p.synapse == "current":
                cw = p.current_width
                cmax = (1 << (cw - 1)) - 1
                cmin = -cmax if p.current_overflow == "saturate" else -(1 << (cw - 1))
                u1 = Signal(signed(cw))
                decayed = _decay_toward_zero(m, self.u, cw, p.current_decay, "cur")
                m.d.comb += u1.eq(self._ovf(decayed + drive, p.current_overflow, cmin, cmax))
                m.d.comb += self.u_next.eq(Mux(self.eot, u1, self.u))
                drive = u1
            m.d.comb += v1.eq(ovf_v(leaked + drive + bias_term))
            fires_now = self.eot
        else:
            w_term = self.weight << p.input_shift
            m.d.comb += v1.eq(ovf_v(Mux(self.eot, leaked + bias_term, v + w_term)))
            fires_now = Const(1)

        thr = p.threshold
        over = (v1 >= thr) if p.threshold_mode == ">=" else (v1 > thr)
        m.d.comb += spike.eq(fires_now & active & over)
        m.d.comb += self.spike.eq(spike)

        reset_value = 0 if p.reset == "zero" else v1 - thr
        with m.If(~fires_now | ~active):
            m.d.comb += self.v_next.eq(v)
        with m.Elif(spike):
            m.d.comb += self.v_next.eq(reset_value)
        with m.Else():
            m.d.comb += self.v_next.eq(v1)

        if p.refractory_width:
            ref = self.ref
            if p.fire == "timestep":
                with m.If(~self.eot):
                    m.d.comb += self.ref_next.eq(ref)
                with m.Elif(ref != 0):
                    m.d.comb += self.ref_next.eq(ref - 1)
                with m.Else():
                    m.d.comb += self.ref_next.eq(Mux(spike, p.refractory, 0))
            else:
                with m.If(self.eot & (ref != 0)):
                    m.d.comb += self.ref_next.eq(ref - 1)
                with m.Elif(spike):
                    m.d.comb += self.ref_next.eq(Mux(self.eot, p.refractory, p.refractory + 1))
                with m.Else():
                    m.d.comb += self.ref_next.eq(ref)
        return m
