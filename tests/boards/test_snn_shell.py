"""The spiking-core shell through the virtual board: protocol, runs vs the golden model, errors, fuzz."""

import random
import struct

import numpy as np
import pytest

from npuforge.boards.build import build
from npuforge.boards.host import DeviceError
from npuforge.boards.protocol import ErrorCode, FrameError, Op, encode_frame
from npuforge.boards.shell import info_payload
from npuforge.boards.snn_host import VirtualSnnBoard
from npuforge.boards.snn_shell import (
    EOT,
    SnnBoardTop,
    SnnShell,
    parse_snn_info,
    snn_config_hash,
    snn_info_payload,
    word_bytes,
)
from npuforge.boards.top import NoUart
from npuforge.generators import MacArrayConfig, SnnCoreConfig
from npuforge.hdl.lif import LifParams
from npuforge.sim.golden.snn import SnnModel
from npuforge.sim.verilator import verilator_available

# Recurrent, with biases (wider load words than weight words), a small output FIFO so that runs
# overflow it and exercise the streamer's flow control. Two clock cycles per UART bit keep the
# simulation short.
CONFIG = SnnCoreConfig(neurons=8, axons=6, lanes=2, recurrent=True,
                       neuron=LifParams(threshold=40, bias=True, bias_width=12, reset="subtract"))
FIFO_DEPTH, CHUNK = 6, 4


@pytest.fixture(scope="module")
def board():
    with VirtualSnnBoard(CONFIG, divisor=2, fifo_depth=FIFO_DEPTH, chunk=CHUNK) as b:
        yield b


def _network(cfg, seed, timesteps, rate=0.4):
    rng = np.random.default_rng(seed)
    w = rng.integers(-10, 40, (cfg.axon_rows, cfg.neurons))
    bias = rng.integers(-8, 9, cfg.neurons) if cfg.neuron.bias else None
    x = rng.random((timesteps, cfg.axons)) < rate
    return w, bias, x


def _golden(cfg, w, bias):
    return SnnModel(cfg.neuron, w, recurrent=cfg.recurrent,
                    recurrent_depth=cfg.queue_depth if cfg.recurrent else None, bias=bias)


def _assert_same(result, expected):
    assert result.events == expected.events
    np.testing.assert_array_equal(result.spike_counts, expected.spike_counts)
    for name, value in expected.counters.items():
        assert result.counters[name] == value, name


# -- INFO ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    SnnCoreConfig.odin(),
    SnnCoreConfig.loihi(bias=True, bias_exp=3, du=100, dv=4095, recurrent=True, recurrent_depth=5),
    SnnCoreConfig(neurons=12, axons=300, lanes=1, weight_memory="bram", state_memory="spram",
                  counter_width=40, neuron=LifParams(leak="shift", leak_shift=7, refractory=3,
                                                     membrane_signed=False, overflow="wrap",
                                                     threshold_mode=">", fire="event")),
], ids=["odin", "loihi", "mixed"])
def test_info_payload_round_trip(config):
    payload = snn_info_payload(config, "ab" * 32, 12_000_000, 115200, fifo_depth=64, chunk=32,
                               max_payload=300)
    info = parse_snn_info(payload)
    assert info["config"] == config
    assert info["hash"] == "ab" * 8
    assert (info["clock_hz"], info["baud"], info["fifo_depth"], info["chunk"], info["max_payload"]) \
        == (12_000_000, 115200, 64, 32, 300)


def test_info_parser_refuses_other_designs():
    mac = info_payload(MacArrayConfig(rows=2, cols=2), b"", 0, 0)
    with pytest.raises(ValueError, match="not the INFO reply of a spiking core"):
        parse_snn_info(mac)
    with pytest.raises(ValueError, match="not an npuforge INFO reply"):
        parse_snn_info(b"XXXX" + mac[4:])


def test_info_identifies_the_design(board):
    info = board.info()
    assert info["design"] == "snn-core"
    assert info["config"] == CONFIG
    assert info["hash"] == snn_config_hash(CONFIG)[:16]
    assert (info["fifo_depth"], info["chunk"]) == (FIFO_DEPTH, CHUNK)


# -- runs against the golden model --------------------------------------------------------------

def test_random_networks_match_golden(board):
    for seed in (1, 2):
        w, bias, x = _network(CONFIG, seed, timesteps=5)
        board.load_weights(w, bias)
        result = board.run(x)
        expected = _golden(CONFIG, w, bias).run(x)
        _assert_same(result, expected)
        # More output events than the FIFO holds: the streamer had to send while the core ran.
        assert expected.counters["output_spikes"] > FIFO_DEPTH
        assert result.cycles > 0
    # The counters stay until cleared.
    counters = board.read_counters(clear=True)
    for name, value in expected.counters.items():
        assert counters[name] == value
    assert all(v == 0 for v in board.read_counters().values())


def test_run_continues_and_steps_without_input(board):
    w, bias, x = _network(CONFIG, 3, timesteps=5)
    board.load_weights(w, bias)
    model = _golden(CONFIG, w, bias)
    _assert_same(board.run(x[:3]), model.run(x[:3]))
    # Without a reset the state, the recurrent queue and the timestep go on.
    before = dict(model.counters)
    second = board.run(x[3:], reset=False)
    expected = model.run(x[3:])
    assert second.events == expected.events
    assert second.counters["sops"] == expected.counters["sops"] - before["sops"]
    # Timesteps without input: recurrence and biases still act.
    assert board.step(3) == [model.step() for _ in range(3)]


# -- errors -----------------------------------------------------------------------------------------

def _write_w(start, count, words, wb):
    return struct.pack("<IH", start, count) + b"".join(v.to_bytes(wb, "little") for v in words)


def test_dispatcher_errors_change_nothing(board):
    w, bias, x = _network(CONFIG, 5, timesteps=3)
    board.load_weights(w, bias)
    wb = word_bytes(CONFIG)
    bad = [
        (0x55, b"", ErrorCode.UNKNOWN_OP),
        (Op.SNN_SPIKES, b"", ErrorCode.BAD_ARGUMENT),
        (Op.SNN_SPIKES, b"\x01\x00\x02", ErrorCode.BAD_ARGUMENT),             # odd length
        # An axon beyond the core after good entries: none of them may be used.
        (Op.SNN_SPIKES, struct.pack("<4H", 1, EOT, 2, CONFIG.axons), ErrorCode.BAD_ARGUMENT),
        (Op.SNN_STEP, struct.pack("<H", 0), ErrorCode.BAD_ARGUMENT),
        (Op.SNN_STEP, b"\x01", ErrorCode.BAD_ARGUMENT),
        (Op.SNN_READ, b"\x00\x00", ErrorCode.BAD_ARGUMENT),
        (Op.SNN_WRITE_W, _write_w(0, 0, [], wb) + bytes(wb), ErrorCode.BAD_ARGUMENT),  # count 0
        (Op.SNN_WRITE_W, _write_w(0, 2, [1], wb), ErrorCode.BAD_ARGUMENT),    # one word short
        (Op.SNN_WRITE_W, _write_w(CONFIG.load_words - 1, 2, [0, 0], wb), ErrorCode.BAD_ARGUMENT),
        (Op.SNN_WRITE_W, b"\x00\x00", ErrorCode.BAD_ARGUMENT),                # no header
    ]
    for op, payload, code in bad:
        with pytest.raises(DeviceError) as err:
            board.command(op, payload)
        assert (err.value.code, err.value.op) == (code, op), (hex(op), payload)
    # Nothing above touched the weights, the state or the counters.
    _assert_same(board.run(x), _golden(CONFIG, w, bias).run(x))


def test_host_refuses_bad_input(board):
    with pytest.raises(ValueError, match=r"input_spikes must be T x 6, not of shape \(3, 5\)"):
        board.run(np.zeros((3, 5), dtype=bool))
    with pytest.raises(ValueError, match="weights must be"):
        board.load_weights(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="timesteps must be an integer in 1..65535, not 0"):
        board.step(0)


def test_fuzz_lite_bad_frames_between_good_ones(board):
    # Damaged frames between good commands: every good command gets its reply, the only errors
    # are the receiver's, and the core's state and weights survive.
    rng = random.Random(99)
    w, bias, x = _network(CONFIG, 6, timesteps=3)
    board.load_weights(w, bias)
    good = [(Op.INFO, b""), (Op.SNN_READ, b""), (Op.RESET, b"")]
    receiver_errors = {ErrorCode.BAD_CRC, ErrorCode.BAD_LENGTH, ErrorCode.TRUNCATED,
                       ErrorCode.BAD_ESCAPE, ErrorCode.OVERRUN}
    for kind in ["flip", "truncate", "garbage", "long"]:
        frame = bytearray(encode_frame(Op.SNN_SPIKES, struct.pack("<3H", 0, 1, EOT)))
        if kind == "flip":
            frame[rng.randrange(1, len(frame))] ^= 1 << rng.randrange(8)
            junk = bytes(frame)
        elif kind == "truncate":
            junk = bytes(frame[:rng.randrange(1, len(frame))])
        elif kind == "garbage":
            junk = bytes(rng.randrange(256) for _ in range(9))
        else:
            junk = encode_frame(Op.SNN_SPIKES, bytes(600))     # longer than max_payload
        board.transport.write(junk)
        op, payload = rng.choice(good)
        board.send(op, payload)
        while True:
            reply = board.receive(timeout=60)
            assert not isinstance(reply, FrameError), "the device sent a malformed frame"
            if reply.op == Op.ERROR:
                assert reply.payload[0] in receiver_errors, (kind, reply)
                continue
            assert reply.op == op | 0x80, (kind, reply)
            break
        while board.transport.read(0.0):
            pass
    _assert_same(board.run(x), _golden(CONFIG, w, bias).run(x))


# -- parameters and the board top ------------------------------------------------------------

def test_shell_parameter_errors():
    with pytest.raises(TypeError, match="config must be a SnnCoreConfig, not 3"):
        SnnShell(3)
    with pytest.raises(ValueError, match=r"max_payload must be an integer in 16\.\.65535, not 8"):
        SnnShell(CONFIG, max_payload=8)
    with pytest.raises(ValueError, match=r"chunk must be an integer in 1\.\.8, not 9"):
        SnnShell(CONFIG, fifo_depth=8, chunk=9)
    with pytest.raises(ValueError, match=r"fifo_depth must be an integer in 4\.\.4096, not 2"):
        SnnShell(CONFIG, fifo_depth=2, chunk=1)
    with pytest.raises(NoUart, match="board upduino_v3 has no UART"):
        SnnBoardTop(CONFIG, "upduino_v3")
    with pytest.raises(ValueError, match="backend must be 'amaranth' or 'verilator', not 'x'"):
        VirtualSnnBoard(CONFIG, backend="x")


def test_odin_board_top_plans_with_spram(tmp_path):
    # The ODIN-class core inside the shell, for the iCEBreaker: its weights map to an
    # SB_SPRAM256KA block (no tools run).
    config = SnnCoreConfig.odin()
    assert config.weight_memory_kind == "spram"
    result = build(SnnBoardTop(config, "icebreaker"), "icebreaker", tmp_path, plan_only=True)
    rtlil = (tmp_path / "top.il").read_text()
    assert rtlil.count("SB_SPRAM256KA") >= 1
    assert result.plan_only


@pytest.mark.slow            # compiling the model takes 10-15 s (once per configuration)
@pytest.mark.toolchain
@pytest.mark.skipif(not verilator_available(), reason="needs Verilator")
def test_verilator_board_matches_golden():
    # ODIN semantics (a spike after any event), the state in SPRAM, and far more output events
    # than one DATA frame carries.
    config = SnnCoreConfig.odin(neurons=32, axons=16, lanes=4, threshold=20, leak=2,
                                state_memory="spram")
    rng = np.random.default_rng(7)
    w = rng.integers(-3, 8, (config.axon_rows, config.neurons))
    x = rng.random((30, config.axons)) < 0.5
    with VirtualSnnBoard(config, backend="verilator") as board:
        board.load_weights(w)
        result = board.run(x)
    expected = _golden(config, w, None).run(x)
    _assert_same(result, expected)
    assert expected.counters["output_spikes"] > 128
