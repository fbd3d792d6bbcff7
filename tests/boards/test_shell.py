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


# SET_SHAPE against CONFIG (max_m=4, max_k=6, max_n=4, int8 outputs): M, K, N in 1..max and the
# zero point and limits in -128..127 with out_min <= out_max (docs/protocol.md). The device reads
# only as many bits as these ranges need, so values whose low byte alone would pass are included.
SHAPES_OK = [
    (4, 6, 4, 0, 0, -128, 127),
    (1, 1, 1, 1, -128, -128, -128),         # out_min == out_max
    (2, 3, 4, 0xFE, 127, 127, 127),         # flag bits other than bit 0 are ignored
]
SHAPES_BAD = [
    (0, 1, 1, 0, 0, 0, 0), (5, 1, 1, 0, 0, 0, 0), (0x0101, 1, 1, 0, 0, 0, 0),
    (1, 0, 1, 0, 0, 0, 0), (1, 7, 1, 0, 0, 0, 0), (1, 0x0106, 1, 0, 0, 0, 0),
    (1, 1, 0, 0, 0, 0, 0), (1, 1, 5, 0, 0, 0, 0), (1, 1, 0x8004, 0, 0, 0, 0),
    (1, 1, 1, 0, 128, 0, 0), (1, 1, 1, 0, -129, 0, 0), (1, 1, 1, 0, 0x7F00, 0, 0),
    (1, 1, 1, 0, 0, -129, 0), (1, 1, 1, 0, 0, 0, 256 + 3), (1, 1, 1, 0, 0, -32768, 0),
    (1, 1, 1, 0, 0, 5, 4), (1, 1, 1, 0, 0, 127, -128),
]


def test_set_shape_checks_every_field(board):
    for fields in SHAPES_OK + SHAPES_BAD:
        payload = struct.pack(SET_SHAPE_FORMAT, *fields)
        if fields in SHAPES_OK:
            assert board.command(Op.SET_SHAPE, payload) == b"", fields
            continue
        with pytest.raises(DeviceError, match="SET_SHAPE: BAD_ARGUMENT"):
            board.command(Op.SET_SHAPE, payload)
        # A refused shape is no shape: RUN is refused too.
        with pytest.raises(DeviceError, match="RUN: BAD_ARGUMENT"):
            board.command(Op.RUN)


def test_negative_limits_reach_the_array(board):
    """Zero point and limits are kept as bytes: negative ones must reach the array sign-extended."""
    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, (3, 4))
    w = rng.integers(-128, 128, (4, 3))
    requant = RequantParams(mult=(2**30, 2**30 + 12345, 2**31 - 1), shift=(6, 7, 8),
                            zero_point=-100, out_min=-128, out_max=-20)
    np.testing.assert_array_equal(board.gemm(x, w, None, requant),
                                  _reference(CONFIG, x, w, None, requant))


def test_wide_operands_unsigned_outputs_and_data_frames():
    """2-byte X elements next to 1-byte W and SHIFT and 4-byte BIAS and MULT; uint8 outputs; and
    M * N = 72 results, sent as DATA frames of DATA_CHUNK = 64 results and the 8 left."""
    cfg = MacArrayConfig(rows=2, cols=2, in_bits=12, w_bits=7, w_signed=False, max_m=9, max_k=2,
                         max_n=8, out_signed=False)
    rng = np.random.default_rng(9)
    x = rng.integers(-2048, 2048, (9, 2))
    w = rng.integers(0, 128, (2, 8))
    bias = rng.integers(-100000, 100000, 8)
    requant = RequantParams(mult=tuple(int(v) for v in rng.integers(2**29, 2**31, 8)),
                            shift=tuple(range(9, 17)), zero_point=128, out_min=0, out_max=255)
    with VirtualBoard(cfg) as wide:
        frames = []
        receive = wide.receive

        def recording_receive(*args, **kwargs):
            frame = receive(*args, **kwargs)
            frames.append(frame)
            return frame

        wide.receive = recording_receive
        np.testing.assert_array_equal(wide.gemm(x, w, bias), _reference(cfg, x, w, bias))
        assert [len(f.payload) for f in frames if f.op == Op.DATA] == [4 * 64, 4 * 8]
        frames.clear()
        np.testing.assert_array_equal(wide.gemm(x, w, bias, requant),
                                      _reference(cfg, x, w, bias, requant))
        assert [len(f.payload) for f in frames if f.op == Op.DATA] == [64, 8]
        # Unsigned outputs: zero point and limits in 0..255.
        for zp, lo, hi, ok in ((255, 0, 255, True), (-1, 0, 255, False), (0, -1, 0, False),
                               (0, 0, 256, False), (0, 200, 100, False)):
            payload = struct.pack(SET_SHAPE_FORMAT, 1, 1, 1, 0, zp, lo, hi)
            if ok:
                assert wide.command(Op.SET_SHAPE, payload) == b""
            else:
                with pytest.raises(DeviceError, match="SET_SHAPE: BAD_ARGUMENT"):
                    wide.command(Op.SET_SHAPE, payload)


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
