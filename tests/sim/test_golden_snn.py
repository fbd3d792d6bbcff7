"""The golden spiking model against vectors computed by hand from the published equations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npuforge.sim.golden.snn import SnnModel, accumulator_width, neuron_params


def _model(weights, recurrent=False, bias_values=None, recurrent_depth=None, **params):
    return SnnModel(neuron_params(**params), np.array(weights), recurrent=recurrent, bias=bias_values,
                    recurrent_depth=recurrent_depth)


ODIN = dict(weight_width=4, membrane_width=8, membrane_signed=False, overflow="saturate", leak="sub",
            synapse="none", threshold_mode=">=", reset="zero", fire="event")


def test_odin_event_by_event():
    m = _model([[7], [7], [-8], [4]], leak_sub=3, threshold=10, **ODIN)
    trace = []
    for events in ([0], [0, 1, 1], [0, 2], [3, 3], [3], [1, 1]):
        trace.append((m.step(events), int(m.state["v"][0])))
    assert trace == [
        ([], 4),            # 7, leak -> 4
        ([0, 0], 0),        # 11 fires -> 0; 7; 14 fires -> 0; leak stays 0
        ([], 0),            # 7; 7 - 8 clamps at 0; leak
        ([], 5),            # 4, 8, leak -> 5
        ([], 6),            # 9, leak -> 6
        ([0], 4),           # 13 fires -> 0; 7; leak -> 4
    ]


def test_odin_saturates_at_255_and_leak_can_fire():
    m = _model([[7]], leak_sub=0, threshold=255, **ODIN)
    # 36 events take v to 252, the 37th saturates at 255 >= 255: fires and resets.
    assert m.step([0] * 40) == [0]
    assert m.state["v"][0] == 3 * 7 and m.counters["output_spikes"] == 1
    # A threshold of 0 is met after every event, the leak event included.
    z = _model([[1]], leak_sub=1, threshold=0, **ODIN)
    assert z.step([0, 0]) == [0, 0, 0]


def _loihi_reference(a_in, du, dv, vth, bias=0):
    """Scalar transcription of the issue's Loihi equations (Lava PyLifModelBitAcc)."""
    u = v = 0
    out = []
    for a in a_in:
        du_f = 4096 - (du + 1)
        u = (1 if u >= 0 else -1) * ((abs(u) * du_f) >> 12) + (a << 6)
        u = ((u + 2**23) % 2**24) - 2**23
        v = (1 if v >= 0 else -1) * ((abs(v) * (4096 - dv)) >> 12) + u + bias
        v = max(-(2**23 - 1), min(2**23 - 1, v))
        spike = v > (vth << 6)
        if spike:
            v = 0
        out.append((spike, u, v))
    return out


LOIHI = dict(weight_width=8, membrane_width=24, membrane_signed=True, overflow="saturate", leak="mul",
             synapse="current", current_width=24, current_overflow="wrap", input_shift=6,
             threshold_mode=">", reset="zero", fire="timestep")


def test_loihi_hand_vector_threshold_equality():
    # vth = 1 -> threshold 64. t0: u = 64, v = 64: not > 64. t1: u = 64 * 4095 >> 12 = 63,
    # v = 64 + 63 = 127 > 64: spike, v = 0. t2: u = 63 * 4095 >> 12 = 62, v = 62.
    m = _model([[1]], current_decay=1, leak_decay=0, threshold=64, **LOIHI)
    assert m.step([0]) == [] and (m.state["u"][0], m.state["v"][0]) == (64, 64)
    assert m.step([]) == [0] and (m.state["u"][0], m.state["v"][0]) == (63, 0)
    assert m.step([]) == [] and (m.state["u"][0], m.state["v"][0]) == (62, 62)


def test_loihi_decay_rounds_toward_zero():
    # u = -64 * 2 = -128; -128 * (4096 - 2049) >> 12 on |u|: 128 * 2047 / 4096 = 63.97 -> -63.
    m = _model([[-2]], current_decay=2049, leak_decay=4096, threshold=2**23 - 1, **LOIHI)
    m.step([0])
    assert m.state["u"][0] == -128 and m.state["v"][0] == -128
    m.step([])
    assert m.state["u"][0] == -63 and m.state["v"][0] == -63     # leak_decay 4096: v decays to 0


@pytest.mark.parametrize("du,dv,vth,bias", [(0, 0, 10, 0), (100, 200, 3, 0), (4095, 0, 1, 0),
                                            (7, 4000, 50, 1000), (2000, 3, 100, -300)])
def test_loihi_matches_equation_transcription(du, dv, vth, bias):
    rng = np.random.default_rng(du + dv)
    w = rng.integers(-128, 128, size=(6, 1))
    x = rng.random((40, 6)) < 0.5
    m = SnnModel(neuron_params(LOIHI, current_decay=du + 1, leak_decay=dv, threshold=vth << 6,
                               bias=bias != 0, bias_width=13), w, bias=np.array([bias]))
    res = m.run(x, record_membrane=True)
    ref = _loihi_reference([int(w[x[t], 0].sum()) for t in range(40)], du, dv, vth, bias)
    assert res.spikes[:, 0].tolist() == [s for s, _, _ in ref]
    assert res.current[:, 0].tolist() == [u for _, u, _ in ref]
    assert res.membrane[:, 0].tolist() == [v for _, _, v in ref]


def test_loihi_current_wraps_at_24_bits():
    # Each step adds 127 << 6 * 1100 = 8940800 > 2**23 - 1: u wraps to 8940800 - 2**24.
    m = _model([[127]] * 1100, current_decay=0, leak_decay=4096, threshold=2**23 - 1, **LOIHI)
    m.step(range(1100))
    assert m.state["u"][0] == 127 * 64 * 1100 - 2**24


@pytest.mark.parametrize("mode,v0,fires", [(">=", 9, True), (">", 9, False), (">", 10, True)])
def test_threshold_equality(mode, v0, fires):
    # bias 0, input v0 in one timestep against threshold 9.
    m = _model([[v0]], threshold=9, threshold_mode=mode, weight_width=6)
    assert m.step([0]) == ([0] if fires else [])


def test_reset_by_subtraction():
    m = _model([[14]], threshold=9, reset="subtract", weight_width=6)
    assert m.step([0]) == [0] and m.state["v"][0] == 5
    m0 = _model([[14]], threshold=9, reset="zero", weight_width=6)
    assert m0.step([0]) == [0] and m0.state["v"][0] == 0


@pytest.mark.parametrize("overflow,expect", [("saturate", 127), ("wrap", 130 - 256)])
def test_membrane_saturation_and_wrap(overflow, expect):
    m = _model([[65], [65]], membrane_width=8, threshold=127, threshold_mode=">", overflow=overflow,
               weight_width=8)
    m.step([0, 1])
    assert m.state["v"][0] == expect
    neg = _model([[-100], [-100]], membrane_width=8, threshold=127, overflow=overflow, weight_width=8)
    neg.step([0, 1])
    assert neg.state["v"][0] == (-127 if overflow == "saturate" else -200 + 256)


def test_unsigned_membrane_clamps_at_zero():
    m = _model([[-5]], membrane_width=8, membrane_signed=False, threshold=200)
    m.step([0])
    assert m.state["v"][0] == 0


@pytest.mark.parametrize("leak,param,pairs", [
    ("shift", dict(leak_shift=2), [(100, 75), (-100, -75), (-1, 0), (3, 3), (0, 0)]),
    ("mul", dict(leak_decay=1024), [(100, 75), (-101, -75), (1, 0), (-1, 0)]),
    ("sub", dict(leak_sub=10), [(5, 0), (-5, 0), (15, 5), (-15, -5), (0, 0)]),
    ("none", dict(), [(5, 5), (-7, -7)]),
])
def test_leak_modes(leak, param, pairs):
    for v0, v1 in pairs:
        m = _model([[0]], threshold=1000, leak=leak, **param)
        m.state["v"][:] = v0
        m.step([])
        assert m.state["v"][0] == v1, (leak, v0)


@pytest.mark.parametrize("fire", ["timestep", "event"])
def test_refractory_period(fire):
    # A strong input every timestep: a neuron with refractory 2 fires every third timestep.
    m = _model([[20]], threshold=10, refractory=2, fire=fire, weight_width=6)
    spikes = [bool(m.step([0, 0])) for _ in range(9)]
    assert spikes == [True, False, False] * 3
    # Frozen while refractory: its membrane neither integrates nor leaks.
    m2 = _model([[4]], threshold=10, refractory=1, fire=fire, weight_width=6, leak="sub", leak_sub=1)
    m2.state["v"][:] = 9
    assert m2.step([0]) == [0]
    assert m2.step([0]) == [] and m2.state["v"][0] == 0


def test_event_mode_refractory_ignores_rest_of_timestep():
    m = _model([[20]], threshold=10, refractory=1, fire="event", weight_width=6)
    assert m.step([0, 0, 0]) == [0]       # one spike, the other events ignored
    assert m.state["v"][0] == 0


def test_synaptic_current_evolves_while_refractory():
    m = _model([[10]], threshold=5, refractory=2, synapse="current", current_decay=2048,
               weight_width=6)
    m.step([0])              # u = 10, v = 10 fires
    m.step([])               # refractory: u = 5, v held at 0
    assert (m.state["u"][0], m.state["v"][0]) == (5, 0)


def test_bias_drives_without_input():
    m = _model([[0]], threshold=10, bias=True, bias_width=4, bias_shift=1, bias_values=np.array([3]))
    assert [m.step([]) for _ in range(4)] == [[], [0], [], [0]]      # 6, 12 -> 0, 6, 12 -> 0


def test_empty_timesteps_and_every_axon():
    w = np.arange(-4, 4).reshape(8, 1)
    m = _model(w, threshold=100, weight_width=4)
    res = m.run(np.zeros((3, 8), dtype=bool), record_membrane=True)
    assert not res.spikes.any() and res.membrane.tolist() == [[0]] * 3
    assert res.counters["sops"] == 0 and res.counters["timesteps"] == 3
    res = m.run(np.ones((2, 8), dtype=bool), record_membrane=True)
    assert res.membrane[:, 0].tolist() == [-4, -8]
    assert res.counters["input_events"] == 16 and res.counters["sops"] == 16


def test_recurrent_delay_and_drop():
    # Neuron 0 is driven by axon 0; neurons 1 and 2 listen to neuron 0 through recurrent axons.
    w = np.zeros((1 + 3, 3), dtype=np.int64)
    w[0, 0] = 20
    w[1, 1] = 20
    w[1, 2] = 20
    m = _model(w, recurrent=True, threshold=10, weight_width=6)
    x = np.array([[1], [0], [0]], dtype=bool)
    res = m.run(x)
    assert res.events == [[0], [1, 2], []]
    assert res.counters["recurrent_events"] == 3 and res.counters["sops"] == 4 * 3
    # A queue of one: the second spike of a timestep is dropped, not delivered.
    m = _model(w, recurrent=True, recurrent_depth=1, threshold=10, weight_width=6)
    res = m.run(np.array([[1], [0], [0], [0]], dtype=bool))
    assert res.events == [[0], [1, 2], [], []]
    assert res.counters["dropped"] == 1 and res.counters["recurrent_events"] == 2


def test_accumulator_saturates_on_repeated_events():
    m = _model([[7]], threshold=1000, membrane_width=16, weight_width=4)
    aw = accumulator_width(4, 1)
    m.step([0] * 10)
    assert m.state["v"][0] == 2 ** (aw - 1) - 1


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"^weights must be integers in -8\.\.7$"):
        _model([[8]], weight_width=4)
    with pytest.raises(ValueError, match=r"^unknown neuron parameter\(s\): tau$"):
        neuron_params(tau=1)
    with pytest.raises(ValueError, match=r"^leak must be one of"):
        neuron_params(leak="exp")
    m = _model([[1]])
    with pytest.raises(ValueError, match=r"^input_spikes must be T x 1"):
        m.run(np.zeros((3, 2), dtype=bool))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_timestep_mode_is_order_independent(seed):
    # With fire="timestep" the neuron sees only the exact sum of a timestep's weights.
    rng = np.random.default_rng(seed)
    w = rng.integers(-8, 8, size=(6, 4))
    events = list(rng.integers(0, 6, size=6))
    a, b = (_model(w, threshold=5, leak="shift", leak_shift=1, weight_width=4) for _ in range(2))
    assert a.step(events) == b.step(events[::-1])
    assert (a.state["v"] == b.state["v"]).all()
