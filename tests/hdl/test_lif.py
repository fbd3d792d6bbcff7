# amaranth: UnusedElaboratable=no
import random

import numpy as np
import pytest
from amaranth.hdl import Signal
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from npuforge.hdl.lif import LifParams, LifUnit, accumulator_width, const_multiply
from npuforge.sim.golden import snn as golden

# -- parameter validation -------------------------------------------------------------------------

BAD_PARAMS = [
    (dict(weight_width=0), ValueError, "weight_width must be an integer in 1..16, not 0"),
    (dict(weight_width="8"), TypeError, "weight_width must be an integer in 1..16, not '8'"),
    (dict(membrane_width=33), ValueError, "membrane_width must be an integer in 2..32, not 33"),
    (dict(membrane_signed=1), TypeError, "membrane_signed must be a bool, not 1"),
    (dict(overflow="clip"), ValueError, "overflow must be one of 'saturate', 'wrap', not 'clip'"),
    (dict(leak="exp"), ValueError, "leak must be one of 'none', 'shift', 'mul', 'sub', not 'exp'"),
    (dict(leak_shift=32), ValueError, "leak_shift must be an integer in 0..31, not 32"),
    (dict(leak_decay=4097), ValueError, "leak_decay must be an integer in 0..4096, not 4097"),
    (dict(membrane_width=8, membrane_signed=False, leak_sub=256), ValueError,
     "leak_sub must be an integer in 0..255, not 256"),
    (dict(synapse="cond"), ValueError, "synapse must be one of 'none', 'current', not 'cond'"),
    (dict(current_width=1), ValueError, "current_width must be an integer in 2..32, not 1"),
    (dict(current_decay=-1), ValueError, "current_decay must be an integer in 0..4096, not -1"),
    (dict(current_overflow="x"), ValueError,
     "current_overflow must be one of 'saturate', 'wrap', not 'x'"),
    (dict(input_shift=17), ValueError, "input_shift must be an integer in 0..16, not 17"),
    (dict(membrane_width=8, threshold=128), ValueError, "threshold must be an integer in 0..127, not 128"),
    (dict(threshold_mode="=>"), ValueError, "threshold_mode must be one of '>=', '>', not '=>'"),
    (dict(reset="hold"), ValueError, "reset must be one of 'zero', 'subtract', not 'hold'"),
    (dict(refractory=256), ValueError, "refractory must be an integer in 0..255, not 256"),
    (dict(bias="yes"), TypeError, "bias must be a bool, not 'yes'"),
    (dict(bias_width=25), ValueError, "bias_width must be an integer in 1..24, not 25"),
    (dict(bias_shift=17), ValueError, "bias_shift must be an integer in 0..16, not 17"),
    (dict(fire="spike"), ValueError, "fire must be one of 'timestep', 'event', not 'spike'"),
    (dict(fire="event", synapse="current"), ValueError,
     "synapse must be 'none' when fire is 'event', not 'current'"),
]


@pytest.mark.parametrize("kwargs,exc,message", BAD_PARAMS)
def test_params_rejected_with_named_message(kwargs, exc, message):
    with pytest.raises(exc, match="^" + _escape(message) + "$"):
        LifParams(**kwargs)


def _escape(text):
    import re
    return re.escape(text)


def test_preset_arguments_validated():
    with pytest.raises(ValueError, match=r"^threshold must be an integer in 0\.\.255, not 256$"):
        LifParams.odin(threshold=256)
    with pytest.raises(ValueError, match=r"^leak must be an integer in 0\.\.127, not 128$"):
        LifParams.odin(leak=128)
    with pytest.raises(ValueError, match=r"^vth must be an integer in 0\.\.131071, not 131072$"):
        LifParams.loihi(vth=131072)
    with pytest.raises(ValueError, match=r"^du must be an integer in 0\.\.4095, not 4096$"):
        LifParams.loihi(du=4096)
    with pytest.raises(ValueError, match=r"^bias_exp must be an integer in 0\.\.7, not 8$"):
        LifParams.loihi(bias_exp=8)


def test_presets_encode_their_sources():
    odin = LifParams.odin(threshold=200, leak=5)
    assert (odin.membrane_width, odin.membrane_signed, odin.weight_width) == (8, False, 4)
    assert (odin.leak, odin.leak_sub, odin.fire, odin.threshold_mode) == ("sub", 5, "event", ">=")
    assert (odin.membrane_min, odin.membrane_max) == (0, 255)
    loihi = LifParams.loihi(vth=100, du=7, dv=9, bias=True, bias_exp=3)
    assert loihi.threshold == 100 * 64 and loihi.threshold_mode == ">"
    assert (loihi.current_decay, loihi.leak_decay, loihi.input_shift) == (8, 9, 6)
    assert (loihi.membrane_min, loihi.membrane_max) == (-(2**23 - 1), 2**23 - 1)
    assert (loihi.bias_width, loihi.bias_shift, loihi.current_overflow) == (13, 3, "wrap")


def test_dict_roundtrip_and_unknown_key():
    p = LifParams.loihi(vth=5, du=3, dv=4)
    assert LifParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match=r"^unknown neuron parameter\(s\): tau$"):
        LifParams.from_dict({"tau": 3})


def test_golden_knows_every_parameter():
    assert set(golden.NEURON_DEFAULTS) == set(LifParams().to_dict())
    assert golden.NEURON_DEFAULTS == LifParams().to_dict()


def test_state_fields_follow_semantics():
    assert list(LifParams.odin().state_fields(10)) == ["v"]
    assert list(LifParams.loihi().state_fields(10)) == ["v", "u", "acc"]
    p = LifParams(refractory=3, fire="event")
    assert p.refractory_max == 4 and p.refractory_width == 3
    assert list(p.state_fields(10)) == ["v", "ref"]


def test_accumulator_width_holds_extreme_sums():
    for ww, events in [(4, 1), (4, 256), (8, 100), (1, 7)]:
        aw = accumulator_width(ww, events)
        assert events * 2 ** (ww - 1) <= 2 ** (aw - 1) - 1
        assert aw == golden.accumulator_width(ww, events)


def test_unit_arguments_validated():
    with pytest.raises(TypeError, match=r"^params must be a LifParams, not 'odin'$"):
        LifUnit("odin")
    with pytest.raises(ValueError, match=r"^acc_width must be an integer in 2\.\.64, not 1$"):
        LifUnit(LifParams(), acc_width=1)


# -- arithmetic helper ----------------------------------------------------------------------------

@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 4095, 4094, 3072, 1234, 4096, 2731])
def test_const_multiply(k):
    x = Signal(12)
    prod = Signal(24)
    rng = random.Random(k)
    xs = [0, 1, 4095] + [rng.randrange(4096) for _ in range(40)]
    got = []

    from amaranth.hdl import Module
    m = Module()
    m.d.comb += prod.eq(const_multiply(x, k))

    async def bench(ctx):
        for value in xs:
            ctx.set(x, value)
            got.append(ctx.get(prod))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [value * k for value in xs]


# -- the unit against the golden equations -------------------------------------------------------

@st.composite
def lif_params(draw):
    fire = draw(st.sampled_from(["timestep", "event"]))
    vw = draw(st.integers(3, 12))
    signed = draw(st.booleans())
    vmax = 2 ** (vw - 1) - 1 if signed else 2**vw - 1
    ww = draw(st.integers(2, 6))
    return LifParams(
        weight_width=ww, membrane_width=vw, membrane_signed=signed,
        overflow=draw(st.sampled_from(["saturate", "wrap"])),
        leak=draw(st.sampled_from(["none", "shift", "mul", "sub"])),
        leak_shift=draw(st.integers(0, vw)), leak_decay=draw(st.integers(0, 4096)),
        leak_sub=draw(st.integers(0, min(vmax, 9))),
        synapse="none" if fire == "event" else draw(st.sampled_from(["none", "current"])),
        current_width=draw(st.integers(3, 14)), current_decay=draw(st.integers(0, 4096)),
        current_overflow=draw(st.sampled_from(["saturate", "wrap"])),
        input_shift=draw(st.integers(0, 3)),
        threshold=draw(st.integers(0, vmax)),
        threshold_mode=draw(st.sampled_from([">=", ">"])),
        reset=draw(st.sampled_from(["zero", "subtract"])),
        refractory=draw(st.integers(0, 3)),
        bias=draw(st.booleans()), bias_width=draw(st.integers(2, 6)), bias_shift=draw(st.integers(0, 2)),
        fire=fire,
    )


def _random_inputs(p, acc_width, rng, count):
    """Random unit inputs that a stored state can hold (ranges from the parameters)."""
    vlo = p.membrane_min if p.overflow == "saturate" else (-(2 ** (p.membrane_width - 1))
                                                           if p.membrane_signed else 0)
    cw = p.current_width
    amax = 2 ** (acc_width - 1) - 1
    rows = []
    for _ in range(count):
        rows.append(dict(
            eot=rng.randrange(2),
            weight=rng.randrange(-(2 ** (p.weight_width - 1)), 2 ** (p.weight_width - 1)),
            v=rng.choice([vlo, p.membrane_max, p.threshold, rng.randint(vlo, p.membrane_max)]),
            u=rng.randint(-(2 ** (cw - 1)), 2 ** (cw - 1) - 1),
            acc=rng.randint(-amax, amax),
            ref=rng.randint(0, p.refractory_max),
            bias=rng.randrange(-(2 ** (p.bias_width - 1)), 2 ** (p.bias_width - 1)),
        ))
    return rows


def _golden_unit(p, acc_width, row):
    gp = golden.neuron_params(p)
    state = {k: np.array([row[k]], dtype=np.int64) for k in ("v", "u", "acc", "ref")}
    if row["eot"]:
        spike = golden.end_update(gp, state, np.array([row["bias"]]))
    else:
        spike = golden.event_update(gp, state, np.array([row["weight"]]), acc_width)
    return {k: int(v[0]) for k, v in state.items()}, bool(spike[0])


def _run_unit(p, acc_width, rows):
    dut = LifUnit(p, acc_width)
    outs = []

    async def bench(ctx):
        for row in rows:
            ctx.set(dut.eot, row["eot"])
            ctx.set(dut.weight, row["weight"])
            ctx.set(dut.v, row["v"])
            if p.synapse == "current":
                ctx.set(dut.u, row["u"])
            if p.fire == "timestep":
                ctx.set(dut.acc, row["acc"])
            if p.refractory_width:
                ctx.set(dut.ref, row["ref"])
            if p.bias:
                ctx.set(dut.bias, row["bias"])
            out = {"v": ctx.get(dut.v_next), "spike": bool(ctx.get(dut.spike))}
            out["u"] = ctx.get(dut.u_next) if p.synapse == "current" else row["u"]
            out["acc"] = ctx.get(dut.acc_next) if p.fire == "timestep" else row["acc"]
            out["ref"] = ctx.get(dut.ref_next) if p.refractory_width else row["ref"]
            outs.append(out)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    return outs


def _check_unit(p, acc_width, rows):
    outs = _run_unit(p, acc_width, rows)
    for row, out in zip(rows, outs):
        want, spike = _golden_unit(p, acc_width, row)
        if p.synapse != "current":
            want["u"] = row["u"]
        if p.fire != "timestep":
            want["acc"] = row["acc"]
        if not p.refractory:
            want["ref"] = row["ref"]
        got = {k: out[k] for k in ("v", "u", "acc", "ref")}
        assert (got, out["spike"]) == (want, spike), (p, row)


@settings(max_examples=25, deadline=None)
@given(p=lif_params(), seed=st.integers(0, 2**16), acc_width=st.integers(4, 12))
def test_unit_matches_golden(p, seed, acc_width):
    _check_unit(p, acc_width, _random_inputs(p, acc_width, random.Random(seed), 60))


def test_odin_unit_exhaustive():
    p = LifParams.odin(threshold=100, leak=3)
    rows = [dict(eot=eot, weight=w, v=v, u=0, acc=0, ref=0, bias=0)
            for eot in (0, 1) for w in range(-8, 8) for v in range(256) if eot == 0 or w == 0]
    _check_unit(p, 8, rows)


@pytest.mark.parametrize("signed", [False, True])
def test_mul_leak_over_the_whole_membrane_range(signed):
    # Every membrane value of an 8-bit membrane through the multiplicative leak (and the
    # current decay), unsigned values above 127 included.
    p = LifParams(membrane_width=8, membrane_signed=signed, leak="mul", leak_decay=1234,
                  threshold=127, threshold_mode=">", overflow="wrap")
    lo, hi = (-128, 127) if signed else (0, 255)
    rows = [dict(eot=1, weight=0, v=v, u=0, acc=0, ref=0, bias=0) for v in range(lo, hi + 1)]
    _check_unit(p, 8, rows)
    c = LifParams(synapse="current", current_width=8, current_decay=3000, threshold=32767)
    rows = [dict(eot=1, weight=0, v=0, u=u, acc=a, ref=0, bias=0)
            for u in range(-128, 128) for a in (-3, 0, 3)]
    _check_unit(c, 8, rows)


@pytest.mark.parametrize("k", [0, 1, 3, 4095, 3072])
def test_const_multiply_signed(k):
    from amaranth.hdl import Module, signed
    x = Signal(signed(8))
    prod = Signal(signed(22))
    m = Module()
    m.d.comb += prod.eq(const_multiply(x, k))
    got = []

    async def bench(ctx):
        for value in range(-128, 128):
            ctx.set(x, value)
            got.append(ctx.get(prod))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [value * k for value in range(-128, 128)]


def test_loihi_unit_extremes():
    p = LifParams.loihi(vth=1000, du=4095, dv=1, bias=True, bias_exp=7)
    big = 2**23 - 1
    rows = [dict(eot=1, weight=0, v=v, u=u, acc=acc, ref=0, bias=b)
            for v in (-big, -1, 0, 1, big) for u in (-(2**23), -5, 0, 5, big)
            for acc in (-500, 0, 500) for b in (-4096, 0, 4095)]
    _check_unit(p, 12, rows)
