"""Host protocol: CRC, frame encoding, incremental decoding, errors."""

import pytest
from amaranth.lib.crc import catalog
from hypothesis import given, settings
from hypothesis import strategies as st

from npuforge.boards.protocol import (
    ESC,
    SYNC,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameError,
    Op,
    ProtocolError,
    crc16,
    encode_error,
    encode_frame,
    reply_op,
)

_REFERENCE = catalog.CRC16_CCITT_FALSE(data_width=8)


# -- CRC ----------------------------------------------------------------------------------------

def test_crc16_check_value():
    # The catalogued check value of CRC-16/CCITT-FALSE (CRC-16/IBM-3740) for "123456789".
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64))
def test_crc16_matches_amaranth_catalog(data):
    assert crc16(data) == _REFERENCE.compute(data)


# -- encoding -----------------------------------------------------------------------------------

def test_encode_empty_frame():
    crc = _REFERENCE.compute(b"\x01\x00\x00")
    assert encode_frame(Op.INFO) == bytes([0x7E, 0x01, 0x00, 0x00, crc & 0xFF, crc >> 8])


def test_encode_escapes_everything_after_sync():
    # OP 0x7E, LEN 0x007D, payload of 0x7D bytes 0x7E: every one of them escaped.
    payload = b"\x7e" * 0x7D
    frame = encode_frame(0x7E, payload)
    assert frame[:5] == bytes([0x7E, 0x7D, 0x5E, 0x7D, 0x5D])
    assert frame[5] == 0x00
    assert frame[6:6 + 2 * 0x7D] == b"\x7d\x5e" * 0x7D
    assert frame.count(SYNC) == 1


def test_encode_little_endian_length():
    frame = encode_frame(0x12, bytes(300))
    assert frame[1:4] == bytes([0x12, 300 & 0xFF, 300 >> 8])


def _unescape(wire):
    out = bytearray()
    it = iter(wire)
    for byte in it:
        out.append(next(it) ^ 0x20 if byte == ESC else byte)
    return bytes(out)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=300))
def test_encode_structure(op, payload):
    wire = encode_frame(op, payload)
    assert wire[0] == SYNC and SYNC not in wire[1:]
    body = _unescape(wire[1:])
    n = len(payload)
    assert body[:3] == bytes([op, n & 0xFF, n >> 8])
    assert body[3:3 + n] == payload
    assert body[3 + n:] == _REFERENCE.compute(body[:3 + n]).to_bytes(2, "little")


@pytest.mark.parametrize("op", [-1, 256, 1.0, None, True])
def test_encode_bad_op(op):
    with pytest.raises(ValueError, match=rf"^op must be an integer in 0\.\.255, not {op!r}$"):
        encode_frame(op)


def test_encode_bad_payload():
    with pytest.raises(ValueError, match=r"^payload length must be in 0\.\.65535, not 65536$"):
        encode_frame(1, bytes(65536))
    with pytest.raises(TypeError, match=r"^payload must be bytes-like, not 3\.5$"):
        encode_frame(1, 3.5)


def test_encode_error_frame():
    assert encode_error(ErrorCode.BAD_CRC, Op.WRITE_X) == encode_frame(0x7F, b"\x01\x11")
    with pytest.raises(ValueError, match=r"^code must be an integer in 0\.\.255, not 300$"):
        encode_error(300)


# -- decoding -----------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=80)), max_size=6),
       st.binary(max_size=20), st.data())
def test_roundtrip_any_split(frames, garbage, data):
    """Frames after leading garbage decode back, however the stream is split into chunks."""
    # Garbage before the first SYNC is ignored; it is only garbage up to its first SYNC.
    lead = garbage.split(bytes([SYNC]))[0]
    stream = lead + b"".join(encode_frame(op, p) for op, p in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    events = []
    for a, b in zip([0] + cuts, cuts + [len(stream)]):
        events += decoder.feed(stream[a:b])
    assert events == [Frame(op, p) for op, p in frames]
    assert not decoder.in_frame


def test_decode_errors_by_hand():
    good = encode_frame(0x20, b"\x05")
    bad_crc = bytearray(good)
    bad_crc[4] ^= 0xFF                          # CRC low byte (no escapes in this frame)
    assert SYNC not in good[1:] and ESC not in good
    cases = [
        (bytes(bad_crc), [FrameError(ErrorCode.BAD_CRC, 0x20)]),
        (good[:3] + good, [FrameError(ErrorCode.TRUNCATED, 0x20), Frame(0x20, b"\x05")]),
        (b"\x7e\x7d" + good, [FrameError(ErrorCode.BAD_ESCAPE, 0), Frame(0x20, b"\x05")]),
        (b"\x7e\x20\x7d\x00" + good, [FrameError(ErrorCode.BAD_ESCAPE, 0x20), Frame(0x20, b"\x05")]),
        (b"\x7e\x20\x05\x02\x00" + good, [FrameError(ErrorCode.BAD_LENGTH, 0x20), Frame(0x20, b"\x05")]),
        (b"\x7e\x7e\x7e" + good + b"\x7e", [Frame(0x20, b"\x05")]),
        (b"\x11\x7d\x7d" + good + b"\x00\x7d\x33", [Frame(0x20, b"\x05")]),
    ]
    for stream, expected in cases:
        assert FrameDecoder(max_payload=4).feed(stream) == expected, stream.hex()


def test_decode_bad_length_is_immediate():
    decoder = FrameDecoder(max_payload=16)
    assert decoder.feed(b"\x7e\x11\x11") == []
    assert decoder.feed(b"\x00") == [FrameError(ErrorCode.BAD_LENGTH, 0x11)]
    assert not decoder.in_frame
    # The rest of that frame is skipped, and its end is no TRUNCATED.
    assert decoder.feed(bytes(20) + b"\x7d\x01") == []
    assert decoder.feed(encode_frame(0x11, bytes(16))) == [Frame(0x11, bytes(16))]


def test_decoder_reset():
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(1, b"abc")[:4]) == []
    assert decoder.in_frame
    decoder.reset()
    assert not decoder.in_frame
    assert decoder.feed(b"\x7e") == []          # no TRUNCATED: the partial frame was forgotten


@pytest.mark.parametrize("value", [-1, 65536, "16", False])
def test_decoder_bad_max_payload(value):
    with pytest.raises(ValueError, match=rf"^max_payload must be an integer in 0\.\.65535, not {value!r}$"):
        FrameDecoder(value)


# -- opcodes, replies, exceptions ---------------------------------------------------------------

def test_opcode_values():
    assert {op.name: op.value for op in Op} == {
        "INFO": 0x01, "RESET": 0x02, "SET_SHAPE": 0x10, "WRITE_X": 0x11, "WRITE_W": 0x12,
        "WRITE_BIAS": 0x13, "WRITE_MULT": 0x14, "WRITE_SHIFT": 0x15, "RUN": 0x20, "DATA": 0x21,
        "DONE": 0x22, "SNN_WRITE_W": 0x30, "SNN_SPIKES": 0x31, "SNN_STEP": 0x32, "SNN_READ": 0x33,
        "ERROR": 0x7F,
    }
    assert [(c.name, c.value) for c in ErrorCode] == [
        ("BAD_CRC", 1), ("BAD_LENGTH", 2), ("TRUNCATED", 3), ("UNKNOWN_OP", 4), ("BAD_ARGUMENT", 5),
        ("OVERRUN", 6), ("BAD_ESCAPE", 7)]
    assert ErrorCode.BUSY is ErrorCode.OVERRUN
    # No command (nor its reply) collides with SYNC, ESC or ERROR.
    for op in Op:
        if op is not Op.ERROR:
            assert {op, reply_op(op)}.isdisjoint({SYNC, ESC, Op.ERROR})


def test_reply_payload():
    assert Frame(0x91, b"xyz").reply_payload(Op.WRITE_X) == b"xyz"
    with pytest.raises(ProtocolError, match=r"^expected a reply to op 0x11 \(WRITE_X\) with op 0x91, "
                                            r"got a frame with op 0xA0$") as info:
        Frame(0xA0, b"").reply_payload(Op.WRITE_X)
    assert info.value.op == 0x11 and info.value.code is None
    error = Frame(Op.ERROR, bytes([ErrorCode.UNKNOWN_OP, 0x55]))
    with pytest.raises(ProtocolError, match=r"^device reported error 4 \(UNKNOWN_OP\) for op 0x55 "
                                            r"\(unknown\)$") as info:
        error.reply_payload(0x55)
    assert (info.value.code, info.value.op) == (4, 0x55)


def test_error_frame_decoding():
    frame = FrameDecoder().feed(encode_error(ErrorCode.BAD_CRC, Op.WRITE_W))[0]
    assert frame.is_error
    exc = frame.error()
    assert isinstance(exc, ProtocolError)
    assert str(exc) == "device reported error 1 (BAD_CRC) for op 0x12 (WRITE_W)"
    assert str(Frame(Op.ERROR, b"\x01").error()) == \
        "device sent an ERROR frame with a 1-byte payload '01'; expected 2 bytes [code, op]"
    with pytest.raises(ValueError, match=r"^frame with op 0x91 is not an ERROR frame \(op 0x7F\)$"):
        Frame(0x91).error()


def test_frame_error_exception():
    exc = FrameError(ErrorCode.TRUNCATED, 0x21).exception()
    assert str(exc) == "received a damaged frame: TRUNCATED (code 3, op 0x21)"
    assert (exc.code, exc.op) == (3, 0x21)


def test_frame_encode():
    assert Frame(0x33, b"\x7e").encode() == encode_frame(0x33, b"\x7e")
