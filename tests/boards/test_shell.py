"""The MAC-array shell through the virtual board: protocol, GEMMs, errors and a fuzz test."""

import random
import struct

import numpy as np
import pytest

from npuforge.boards.host import DeviceError, VirtualBoard
from npuforge.boards.protocol import ErrorCode, FrameError, Op, encode_frame
from npuforge.boards.shell import SET_SHAPE_FORMAT, config_hash
from npuforge.generators import MacArrayConfig
from npuforge.sim.golden import RequantParams, mac_array_reference

CONFIG = MacArrayConfig(rows=2, cols=2, max_m=4, max_k=6, max_n=4)


@pytest.fixture(scope="module")
def board():
    with VirtualBoard(CONFIG) as b:
        yield b


def _reference(cfg, x, w, bias=None, requant=None):
    return mac_array_reference(x, w, bias, requant, acc_bits=cfg.accumulator_bits, k_group=cfg.k_group)


def test_info_identifies_the_design(board):
    info = board.info()
    assert info["design"] == "mac-array"
    assert info["config"] == CONFIG
    assert info["hash"] == config_hash(CONFIG)[:16]


def test_gemm_raw_and_requantized_with_host_tiling(board):
    rng = np.random.default_rng(4)
    # M and N larger than the buffers: the host splits them into runs.
    x = rng.integers(-128, 128, (6, 5))
    w = rng.integers(-128, 128, (5, 7))
    bias = rng.integers(-5000, 5000, 7)
    np.testing.assert_array_equal(board.gemm(x, w, bias), _reference(CONFIG, x, w, bias))
    requant = RequantParams(mult=tuple(int(v) for v in rng.integers(2**29, 2**31, 7)),
                            shift=tuple(int(v) for v in rng.integers(0, 10, 7)),
                            zero_point=-5, out_min=-5, out_max=127)
    np.testing.assert_array_equal(board.gemm(x, w, bias, requant), _reference(CONFIG, x, w, bias, requant))
    assert board.last_cycles > 0


def test_dispatcher_errors_then_recovers(board):
    board.reset()
    with pytest.raises(DeviceError, match="RUN: BAD_ARGUMENT") as err:
        board.command(Op.RUN)
    assert err.value.code == ErrorCode.BAD_ARGUMENT
    with pytest.raises(DeviceError, match="UNKNOWN_OP"):
        board.command(0x55)
    too_big = struct.pack(SET_SHAPE_FORMAT, CONFIG.max_m + 1, 1, 1, 1, 0, 0, 0)
    with pytest.raises(DeviceError, match="SET_SHAPE: BAD_ARGUMENT"):
        board.command(Op.SET_SHAPE, too_big)
    with pytest.raises(DeviceError, match="SET_SHAPE: BAD_ARGUMENT"):
        board.command(Op.SET_SHAPE, b"\x01\x00")          # wrong length
    with pytest.raises(DeviceError, match="WRITE_BIAS: BAD_ARGUMENT"):
        board.command(Op.WRITE_BIAS, b"\x01\x02\x03")     # not a whole int32
    x = np.array([[1, 2], [3, 4]])
    w = np.array([[5, -6], [7, 8]])
    np.testing.assert_array_equal(board.gemm(x, w), x @ w)


def test_bad_crc_gets_an_error_frame(board):
    frame = bytearray(encode_frame(Op.INFO))
    frame[-1] ^= 0x01
    board.transport.write(bytes(frame))
    reply = board.receive()
    assert not isinstance(reply, FrameError)
    assert reply.op == Op.ERROR and reply.payload[0] == ErrorCode.BAD_CRC
    assert board.info()["config"] == CONFIG


def _drain(board):
    """Replies to garbage: whatever arrives until the line is quiet."""
    replies = []
    while True:
        data = board.transport.read(0.0)
        if not data:
            return replies
        replies.extend(board._decoder.feed(data))


def test_fuzz_never_hangs_and_loses_no_good_command():
    # Random bytes, bit-flipped and truncated frames interleaved with good commands: every good
    # command gets its own reply, and the only errors are the receiver's.
    rng = random.Random(1234)
    cfg = MacArrayConfig(rows=1, cols=2, max_m=2, max_k=2, max_n=2)
    good = [(Op.INFO, b""), (Op.RESET, b""),
            (Op.SET_SHAPE, struct.pack(SET_SHAPE_FORMAT, 2, 2, 2, 1, 0, 0, 0))]
    receiver_errors = {ErrorCode.BAD_CRC, ErrorCode.BAD_LENGTH, ErrorCode.TRUNCATED,
                       ErrorCode.BAD_ESCAPE, ErrorCode.OVERRUN}
    with VirtualBoard(cfg, max_payload=32) as board:
        for _ in range(14):
            kind = rng.choice(["garbage", "flip", "truncate", "long"])
            op, payload = rng.choice(good)
            frame = bytearray(encode_frame(op, payload))
            if kind == "garbage":
                junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
            elif kind == "flip":
                pos = rng.randrange(1, len(frame))
                frame[pos] ^= 1 << rng.randrange(8)
                junk = bytes(frame)
            elif kind == "truncate":
                junk = bytes(frame[:rng.randrange(1, len(frame))])
            else:
                junk = encode_frame(Op.WRITE_X, bytes(40))   # longer than max_payload
            board.transport.write(junk)
            op, payload = rng.choice(good)
            board.send(op, payload)
            seen = []
            while True:
                reply = board.receive(timeout=60)
                assert not isinstance(reply, FrameError), "the device sent a malformed frame"
                if reply.op == Op.ERROR:
                    assert reply.payload[0] in receiver_errors, (kind, reply)
                    seen.append(reply)
                    continue
                assert reply.op == op | 0x80, (kind, reply)
                break
            _drain(board)
        assert board.info()["config"] == cfg
