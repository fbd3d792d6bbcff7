"""The Verilator back end against the Amaranth simulator and the golden model, bit for bit.

Compiling a model dominates the run time, so the file uses three small configurations (two GEMM
arrays, one board shell), each compiled once per machine (the models are cached on disk).
"""

import gc
import random
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tools import require_tool, tools_required

from npuforge.boards.host import BoardTimeout, DeviceError, VirtualBoard
from npuforge.boards.protocol import ErrorCode, FrameError, Op, encode_frame
from npuforge.boards.shell import SET_SHAPE_FORMAT
from npuforge.generators import MacArrayConfig
from npuforge.sim import verilator
from npuforge.sim.gemm import simulate_gemm
from npuforge.sim.golden import RequantParams, mac_array_reference

pytestmark = pytest.mark.toolchain

# Between them: both dataflows, signed and unsigned operands and outputs, every multiplier latency
# extreme, a bit-serial and a one-step requantizer, and a saturating accumulator.
OS_CONFIG = MacArrayConfig(rows=2, cols=3, dataflow="os", mul_latency=0, acc_bits=18,
                           max_m=9, max_k=11, max_n=9)
WS_CONFIG = MacArrayConfig(rows=3, cols=2, dataflow="ws", in_signed=False, out_signed=False,
                           mul_latency=2, requant_radix=31, max_m=9, max_k=11, max_n=9)
BOARD_CONFIG = MacArrayConfig(rows=2, cols=2, max_m=4, max_k=6, max_n=4)


@pytest.fixture(scope="module")
def tools():
    """Skip (or, with NPUFORGE_REQUIRE_TOOLS=1, fail) when Verilator, make or g++ is missing."""
    for name in ("verilator", "make", "g++"):
        require_tool(name)
    if not verilator.verilator_available():
        message = f"Verilator {verilator.verilator_version()} is too old: {verilator.INSTALL_HINT}"
        if tools_required():
            pytest.fail(message)
        pytest.skip(message)


def _rand(rng, shape, bits, is_signed):
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if is_signed else (0, 1 << bits)
    return rng.integers(lo, hi, size=shape, dtype=np.int64)


def _operands(cfg, rng, m, k, n, requant):
    x = _rand(rng, (m, k), cfg.in_bits, cfg.in_signed)
    w = _rand(rng, (k, n), cfg.w_bits, cfg.w_signed)
    bias = rng.integers(-20000, 20000, size=n)
    rq = None
    if requant:
        lo, hi = (-128, 127) if cfg.out_signed else (0, 255)
        zp = int(rng.integers(lo, hi // 2))
        rq = RequantParams(mult=tuple(int(v) for v in rng.integers(2**29, 2**31, n)),
                           shift=tuple(int(v) for v in rng.integers(4, 14, n)),
                           zero_point=zp, out_min=zp, out_max=hi)
    return x, w, bias, rq


def _golden(cfg, x, w, bias, rq):
    return mac_array_reference(x, w, bias, rq, acc_bits=cfg.accumulator_bits, k_group=cfg.k_group)


def _both(cfg, x, w, bias, rq, **kw):
    amaranth = simulate_gemm(cfg, x, w, bias, rq, **kw)
    ver = simulate_gemm(cfg, x, w, bias, rq, backend="verilator", **kw)
    np.testing.assert_array_equal(ver.y, amaranth.y)
    np.testing.assert_array_equal(ver.y, _golden(cfg, x, w, bias, rq))
    assert (ver.cycles, ver.load_cycles) == (amaranth.cycles, amaranth.load_cycles)
    return amaranth, ver


# -- parameter errors (no tools needed) ------------------------------------------------------------

def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match=r"^backend must be 'amaranth' or 'verilator', not 'x'$"):
        simulate_gemm(OS_CONFIG, [[1]], [[1]], backend="x")
    with pytest.raises(ValueError, match=r"^backend must be 'amaranth' or 'verilator', not 'x'$"):
        VirtualBoard(BOARD_CONFIG, backend="x")


def test_vcd_needs_the_amaranth_backend(tmp_path):
    with pytest.raises(ValueError, match="vcd is not supported with backend='verilator'"):
        simulate_gemm(OS_CONFIG, [[1]], [[1]], vcd=tmp_path / "a.vcd", backend="verilator")


def test_missing_verilator_says_what_to_install(monkeypatch):
    monkeypatch.setattr(verilator, "_version_text", lambda: None)
    assert not verilator.verilator_available()
    message = ("Verilator and a C++ compiler are needed for backend='verilator': "
               "apt-get install verilator g++ make")
    with pytest.raises(verilator.VerilatorUnavailable, match=f"^{re.escape(message)}$"):
        simulate_gemm(OS_CONFIG, [[1]], [[1]], backend="verilator")


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NPUFORGE_CACHE", str(tmp_path))
    assert verilator.cache_root() == tmp_path / "verilator"
    monkeypatch.delenv("NPUFORGE_CACHE")
    assert verilator.cache_root() == Path.home() / ".cache" / "npuforge" / "verilator"


def test_a_lost_build_race_keeps_the_winner(tmp_path):
    # Two processes built the same model: the second rename fails, and its copy is dropped.
    final = tmp_path / "abc"
    final.mkdir()
    (final / "model").write_text("winner")
    loser = tmp_path / ".build-abc-1"
    loser.mkdir()
    (loser / "model").write_text("loser")
    verilator._install(loser, final)
    assert (final / "model").read_text() == "winner"
    assert not loser.exists()
    # Without a finished model in place, a failed rename is an error, not silently ignored.
    empty = tmp_path / "def"
    (empty / "junk").mkdir(parents=True)
    other = tmp_path / ".build-def-1"
    other.mkdir()
    with pytest.raises(OSError):
        verilator._install(other, empty)


# -- GEMM runner ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("requant", [False, True], ids=["raw", "requant"])
@pytest.mark.parametrize("cfg", [OS_CONFIG, WS_CONFIG], ids=["os", "ws"])
def test_gemm_matches_amaranth(tools, cfg, requant):
    rng = np.random.default_rng(11 + requant)
    # M and N not multiples of the array, K past one weight tile.
    _both(cfg, *_operands(cfg, rng, 7, 10, 8, requant))


@pytest.mark.parametrize("cfg", [OS_CONFIG, WS_CONFIG], ids=["os", "ws"])
def test_backpressure_matches_amaranth(tools, cfg):
    rng = np.random.default_rng(5)
    ops = _operands(cfg, rng, 9, 3, 9, False)
    free, _ = _both(cfg, *ops)
    stalled, ver = _both(cfg, *ops, backpressure=0.6, seed=3)
    assert stalled.cycles > free.cycles          # the pattern did stall the array


@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cfg=st.sampled_from([OS_CONFIG, WS_CONFIG]), m=st.integers(1, 9), k=st.integers(1, 11),
       n=st.integers(1, 9), requant=st.booleans(), seed=st.integers(0, 2**16))
def test_random_shapes_match_amaranth(tools, cfg, m, k, n, requant, seed):
    _both(cfg, *_operands(cfg, np.random.default_rng(seed), m, k, n, requant))


def test_saturating_accumulator_matches_golden(tools):
    # Extreme operands overflow OS_CONFIG's 18-bit accumulator: the saturation path runs.
    x = np.full((4, 11), -128)
    w = np.full((11, 5), -128)
    assert (x @ w).max() > 1 << 17
    _both(OS_CONFIG, x, w, np.zeros(5, dtype=np.int64), None)


def test_second_build_comes_from_the_cache(tools, capfd):
    exe = verilator._gemm_executable(OS_CONFIG)
    capfd.readouterr()
    design = (exe.parent / "design.v").read_text()
    t0 = time.monotonic()
    again = verilator.build_model(design, "mac_array", verilator.GEMM_HARNESS)
    assert again == exe
    assert time.monotonic() - t0 < 2
    assert "compiling" not in capfd.readouterr().err


def test_a_new_process_finds_the_model_without_verilog(tools, monkeypatch):
    # As in a fresh process: nothing remembered in memory. The first lookup indexes the model for
    # the current sources; the second must find it before anything is converted or built.
    monkeypatch.setattr(verilator, "_EXECUTABLES", {})
    exe = verilator._gemm_executable(OS_CONFIG)
    monkeypatch.setattr(verilator, "_EXECUTABLES", {})

    def fail(*args, **kwargs):
        raise AssertionError("converted or built again")

    monkeypatch.setattr(verilator, "build_model", fail)
    assert verilator._gemm_executable(OS_CONFIG) == exe


# -- virtual board -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def board(tools):
    with VirtualBoard(BOARD_CONFIG, backend="verilator", timeout=60) as b:
        yield b


def test_board_info(board):
    info = board.info()
    assert info["design"] == "mac-array"
    assert info["config"] == BOARD_CONFIG


def test_board_gemm_with_host_tiling(board):
    rng = np.random.default_rng(4)
    # M and N larger than the buffers: the host splits them into runs.
    x, w, bias, rq = _operands(BOARD_CONFIG, rng, 9, 5, 7, True)
    before = board.cycles
    np.testing.assert_array_equal(board.gemm(x, w, bias), _golden(BOARD_CONFIG, x, w, bias, None))
    np.testing.assert_array_equal(board.gemm(x, w, bias, rq), _golden(BOARD_CONFIG, x, w, bias, rq))
    # The DONE frames carry the array's own cycle count: at least the ideal beats per run.
    runs = [(min(4, 9 - m0), 5, min(4, 7 - n0)) for n0 in range(0, 7, 4) for m0 in range(0, 9, 4)]
    assert board.last_cycles >= sum(BOARD_CONFIG.compute_cycles(*shape) for shape in runs)
    assert board.cycles > before + board.last_cycles


def test_board_dispatcher_errors_then_recovers(board):
    board.reset()
    with pytest.raises(DeviceError, match="RUN: BAD_ARGUMENT"):
        board.command(Op.RUN)
    with pytest.raises(DeviceError, match="UNKNOWN_OP"):
        board.command(0x55)
    x = np.array([[1, 2], [3, 4]])
    w = np.array([[5, -6], [7, 8]])
    np.testing.assert_array_equal(board.gemm(x, w), x @ w)


def test_board_bad_crc_gets_an_error_frame(board):
    frame = bytearray(encode_frame(Op.INFO))
    frame[-1] ^= 0x01
    board.transport.write(bytes(frame))
    reply = board.receive()
    assert not isinstance(reply, FrameError)
    assert reply.op == Op.ERROR and reply.payload[0] == ErrorCode.BAD_CRC
    assert board.info()["config"] == BOARD_CONFIG


def test_board_silence_is_noticed_at_once(board):
    # Bytes outside a frame get no reply: the model goes idle and the host stops waiting.
    board.transport.write(b"\x00\x11\x22")
    t0 = time.monotonic()
    with pytest.raises(BoardTimeout, match="idle"):
        board.receive(timeout=30)
    assert time.monotonic() - t0 < 10
    assert board.info()["design"] == "mac-array"


def test_board_fuzz_every_good_command_answered(board):
    # Garbage, bit flips, truncated and oversized frames before good commands: each good command
    # still gets its reply, and the only errors are the frame receiver's.
    rng = random.Random(99)
    good = [(Op.INFO, b""), (Op.RESET, b""),
            (Op.SET_SHAPE, struct.pack(SET_SHAPE_FORMAT, 2, 2, 2, 1, 0, 0, 0))]
    receiver_errors = {ErrorCode.BAD_CRC, ErrorCode.BAD_LENGTH, ErrorCode.TRUNCATED,
                       ErrorCode.BAD_ESCAPE, ErrorCode.OVERRUN}
    for _ in range(12):
        kind = rng.choice(["garbage", "flip", "truncate", "long"])
        frame = bytearray(encode_frame(*rng.choice(good)))
        if kind == "garbage":
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
        elif kind == "flip":
            pos = rng.randrange(1, len(frame))
            frame[pos] ^= 1 << rng.randrange(8)
            junk = bytes(frame)
        elif kind == "truncate":
            junk = bytes(frame[:rng.randrange(1, len(frame))])
        else:
            junk = encode_frame(Op.WRITE_X, bytes(board.max_payload + 8))
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
    assert board.info()["config"] == BOARD_CONFIG


def test_board_process_ends_on_close_and_on_collection(tools):
    b = VirtualBoard(BOARD_CONFIG, backend="verilator")
    proc = b.transport._proc
    assert b.info()["config"] == BOARD_CONFIG
    b.close()
    assert proc.poll() is not None
    b = VirtualBoard(BOARD_CONFIG, backend="verilator")
    proc = b.transport._proc
    del b
    gc.collect()
    assert proc.poll() is not None
