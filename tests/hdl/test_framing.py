"""Frame receiver and transmitter against the host protocol model (npuforge.boards.protocol)."""

import random

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module
from amaranth.sim import Simulator

from npuforge.boards.protocol import (
    ESC,
    SYNC,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameError,
    crc16,
    encode_frame,
)
from npuforge.hdl.framing import FrameReceiver, FrameTransmitter
from npuforge.hdl.uart import UARTRx, UARTTx


async def _idle(ctx, cycles):
    for _ in range(cycles):
        await ctx.tick()


def _run(dut, *benches):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()


# -- receiver harness ---------------------------------------------------------------------------

def receive(stream, *, max_payload=16, gap=0, take_frames=True, serial_crc=False):
    """Feed ``stream`` to a FrameReceiver, one byte every ``gap + 1`` cycles.

    With ``serial_crc`` the producer holds each byte until the receiver takes it (the bytewise
    receiver must always be ready). A dispatcher model takes every frame as soon as it appears,
    reading its payload through ``rd_addr``/``rd_data`` one byte per cycle, and takes every error
    at once. Returns the events as ``Frame``/``FrameError`` objects in the order they appeared, and
    the final ``dropped_errors``.
    """
    dut = FrameReceiver(max_payload, serial_crc=serial_crc)
    events = []
    state = {"done": False}

    async def producer(ctx):
        for byte in stream:
            if not serial_crc:
                assert ctx.get(dut.i.ready) == 1
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, byte)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            await _idle(ctx, gap)
        # Leave time for the last frame to be read out.
        await ctx.tick().repeat(max_payload + 8)
        state["done"] = True

    async def dispatcher(ctx):
        ctx.set(dut.error.ready, 1)
        reading = None          # [event index, op, length, bytes so far, next address]
        while not state["done"]:
            if ctx.get(dut.error.valid):
                events.append(FrameError(ctx.get(dut.error.payload.code), ctx.get(dut.error.payload.op)))
            ctx.set(dut.frame.ready, 0)
            if reading is not None:
                index, op, length, payload, addr = reading
                if addr > 0:
                    payload.append(ctx.get(dut.rd_data))
                if len(payload) == length:
                    events[index] = Frame(op, bytes(payload))
                    ctx.set(dut.frame.ready, 1)
                    reading = None
                else:
                    ctx.set(dut.rd_addr, addr)
                    reading[4] = addr + 1
            elif ctx.get(dut.frame.valid) and take_frames:
                op, length = ctx.get(dut.frame.payload.op), ctx.get(dut.frame.payload.length)
                if length == 0:
                    events.append(Frame(op, b""))
                    ctx.set(dut.frame.ready, 1)
                else:
                    # Keep the event order of appearance: the slot is filled once the payload is read.
                    events.append(None)
                    ctx.set(dut.rd_addr, 0)
                    reading = [len(events) - 1, op, length, bytearray(), 1]
            await ctx.tick()
        state["dropped"] = ctx.get(dut.dropped_errors)

    _run(dut, producer, dispatcher)
    return events, state["dropped"]


def _both(stream, *, max_payload=16, gap=0, serial_crc=False):
    hw, dropped = receive(stream, max_payload=max_payload, gap=gap, serial_crc=serial_crc)
    assert dropped == 0
    sw = FrameDecoder(max_payload).feed(stream)
    assert hw == sw
    return hw


# -- receiver: directed cases -------------------------------------------------------------------

def test_receiver_good_frames():
    frames = [(0x01, b""), (0x11, bytes(range(16))), (0x7E, b"\x7e\x7d\x7e"), (0x7D, b"\x00"),
              (0xFF, b"\x7d" * 16)]
    stream = b"".join(encode_frame(op, p) for op, p in frames)
    assert _both(stream, gap=4) == [Frame(op, p) for op, p in frames]


def test_receiver_one_byte_per_cycle():
    """Bytes arrive every cycle and ``i.ready`` never drops; short frames keep the dispatcher in time."""
    rng = random.Random(7)
    frames = [(rng.randrange(256), bytes(rng.choice([SYNC, ESC, rng.randrange(256)])
                                         for _ in range(rng.randrange(4)))) for _ in range(30)]
    stream = b"".join(encode_frame(op, p) for op, p in frames)
    assert _both(stream, gap=0) == [Frame(op, p) for op, p in frames]


def test_receiver_errors_directed():
    good = encode_frame(0x12, b"\x01\x02\x03")
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0x01
    stream = (
        b"\x00\x11\x7d\x7d"                     # garbage before any SYNC: ignored
        + bytes(bad_crc)                        # BAD_CRC, op 0x12
        + good[:5]                              # cut after one payload byte ...
        + good                                  # ... so this SYNC reports TRUNCATED, op 0x12
        + b"\x7e\x7e\x7e"                       # repeated SYNCs: no error
        + b"\x7e\x20\x7d\x41"                   # 0x7D then 0x41: BAD_ESCAPE, op 0x20
        + b"\x7e\x7d" + good                    # 0x7D then SYNC: BAD_ESCAPE, op 0 (no OP yet)
        + b"\x7e\x33\x11\x00\x7e"               # LEN = 17 > 16: BAD_LENGTH at once ...
        + good                                  # ... and the skipped frame gives no TRUNCATED
    )
    expected = [
        FrameError(ErrorCode.BAD_CRC, 0x12),
        FrameError(ErrorCode.TRUNCATED, 0x12),
        Frame(0x12, b"\x01\x02\x03"),
        FrameError(ErrorCode.BAD_ESCAPE, 0x20),
        FrameError(ErrorCode.BAD_ESCAPE, 0),
        Frame(0x12, b"\x01\x02\x03"),
        FrameError(ErrorCode.BAD_LENGTH, 0x33),
        Frame(0x12, b"\x01\x02\x03"),
    ]
    assert _both(stream, gap=4) == expected


def test_receiver_bad_length_then_good_frame():
    """max_payload 16, LEN 17 -> BAD_LENGTH as soon as LEN is in; the next good frame is received."""
    payload17 = bytes(range(100, 117))
    body = bytes([0x11, 17, 0]) + payload17
    crc = crc16(body)
    too_long = bytes([SYNC]) + body + bytes([crc & 0xFF, crc >> 8])   # no byte needs escaping
    good = encode_frame(0x11, payload17[:16])
    assert _both(too_long + good, gap=4) == [FrameError(ErrorCode.BAD_LENGTH, 0x11),
                                            Frame(0x11, payload17[:16])]
    # At the limit the same frame is accepted.
    assert _both(too_long, max_payload=17, gap=5) == [Frame(0x11, payload17)]


def test_receiver_bad_length_reported_at_length():
    """The BAD_LENGTH report comes right after the LEN byte, before the rest of the frame."""
    stream = b"\x7e\x05\xff\xff" + b"\x00" * 8
    events, _ = receive(stream[:4], max_payload=16)
    assert events == [FrameError(ErrorCode.BAD_LENGTH, 0x05)]


def test_receiver_max_payload_one():
    assert _both(encode_frame(0x03, b"\x7e") + encode_frame(0x04, b"ab"), max_payload=1, gap=2) == \
        [Frame(0x03, b"\x7e"), FrameError(ErrorCode.BAD_LENGTH, 0x04)]


def test_receiver_default_size():
    """The default 512-byte buffer: a full-size frame is received, one byte longer is refused."""
    payload = bytes((7 * k) & 0xFF for k in range(512))
    stream = encode_frame(0x12, payload) + encode_frame(0x12, payload + b"\x00")
    hw, _ = receive(stream, max_payload=512, gap=0)
    assert hw == [Frame(0x12, payload), FrameError(ErrorCode.BAD_LENGTH, 0x12)]


@pytest.mark.parametrize("make", [FrameReceiver, lambda: FrameReceiver(65535), FrameTransmitter],
                         ids=["rx512", "rx65535", "tx"])
def test_converts(make):
    dut = make()
    text = rtlil.convert(dut)
    # The payload buffer is a memory (block RAM after synthesis), not a bank of flip-flops.
    assert ("$memrd_v2" in text) == isinstance(dut, FrameReceiver)


@pytest.mark.parametrize("value", [0, 65536, True, 2.0])
def test_receiver_bad_max_payload(value):
    with pytest.raises(ValueError, match=rf"^max_payload must be an integer in 1\.\.65535, not {value!r}$"):
        FrameReceiver(value)


# -- receiver: overrun and error holding --------------------------------------------------------

@pytest.mark.parametrize("serial_crc", [False, True])
def test_receiver_overrun(serial_crc):
    """Frames that need the buffer while it is still pending are dropped with OVERRUN."""
    dut = FrameReceiver(16, serial_crc=serial_crc)
    a = encode_frame(0x11, b"first")
    b = encode_frame(0x12, b"second")
    c = encode_frame(0x13, b"")
    d = encode_frame(0x14, b"fourth")
    errors = []

    async def send(ctx, data):
        for byte in data:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, byte)
            await ctx.tick().until(dut.i.ready)
            if ctx.get(dut.error.valid):
                errors.append((ctx.get(dut.error.payload.code), ctx.get(dut.error.payload.op)))
        ctx.set(dut.i.valid, 0)

    async def read_payload(ctx, length):
        out = bytearray()
        for k in range(length):
            ctx.set(dut.rd_addr, k)
            await ctx.tick()
            out.append(ctx.get(dut.rd_data))
        return bytes(out)

    async def take(ctx):
        ctx.set(dut.frame.ready, 1)
        await ctx.tick()
        ctx.set(dut.frame.ready, 0)

    async def bench(ctx):
        ctx.set(dut.error.ready, 1)
        await send(ctx, a + b + c)
        # a is still pending and intact; b (payload) and c (empty, completes while pending) dropped.
        assert ctx.get(dut.frame.valid) == 1
        assert (ctx.get(dut.frame.payload.op), ctx.get(dut.frame.payload.length)) == (0x11, 5)
        assert await read_payload(ctx, 5) == b"first"
        assert errors == [(ErrorCode.OVERRUN, 0x12), (ErrorCode.OVERRUN, 0x13)]
        # d's SYNC, OP and LEN arrive while a is pending; a is taken before d's first payload byte.
        await send(ctx, d[:4])
        await take(ctx)
        await send(ctx, d[4:])
        assert ctx.get(dut.frame.valid) == 1
        assert ctx.get(dut.frame.payload.op) == 0x14
        assert await read_payload(ctx, 6) == b"fourth"
        await take(ctx)
        assert ctx.get(dut.frame.valid) == 0
        assert len(errors) == 2

    _run(dut, bench)


def test_receiver_take_on_the_same_cycle():
    """A frame taken on the cycle the next frame completes counts as taken in time."""
    dut = FrameReceiver(16)
    a = encode_frame(0x21, b"")
    b = encode_frame(0x22, b"")

    async def bench(ctx):
        ctx.set(dut.error.ready, 1)
        for byte in a + b[:-1]:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, byte)
            await ctx.tick()
        ctx.set(dut.i.payload, b[-1])
        ctx.set(dut.frame.ready, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.frame.ready, 0)
        assert ctx.get(dut.error.valid) == 0
        assert ctx.get(dut.frame.valid) == 1
        assert ctx.get(dut.frame.payload.op) == 0x22

    _run(dut, bench)


def test_receiver_error_holding_and_dropped_count():
    """The first error is kept while not taken; later ones are counted, saturating at 255."""
    dut = FrameReceiver(16)

    async def bench(ctx):
        # Each "0x7E 0x01" pair after the first makes one TRUNCATED error (op 0x01).
        stream = bytes([SYNC, 0x05, 0xFF, 0xFF])        # BAD_LENGTH, op 0x05: the one kept
        stream += bytes([SYNC, 0x01]) * 300 + bytes([SYNC])
        counts = []
        for byte in stream:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, byte)
            await ctx.tick()
            counts.append(ctx.get(dut.dropped_errors))
        ctx.set(dut.i.valid, 0)
        assert counts[5] == 0 and counts[6] == 1 and counts[8] == 2
        assert max(counts) == 255 and counts[-1] == 255
        assert counts.index(255) == 4 + 2 * 255
        assert ctx.get(dut.error.valid) == 1
        assert (ctx.get(dut.error.payload.code), ctx.get(dut.error.payload.op)) == \
            (ErrorCode.BAD_LENGTH, 0x05)
        ctx.set(dut.error.ready, 1)
        await ctx.tick()
        assert ctx.get(dut.error.valid) == 0

    _run(dut, bench)


# -- receiver: fuzz against the Python decoder --------------------------------------------------

def _rand_bytes(rng, n):
    # Biased towards the two special bytes so that escapes and stray SYNCs are frequent.
    return bytes(rng.choice((SYNC, ESC, rng.randrange(256), rng.randrange(256))) for _ in range(n))


def fuzz_stream(rng, max_payload, segments):
    """A byte stream of good frames mixed with damage, and the list of the good frames in it."""
    stream = bytearray()
    good = []
    for _ in range(segments):
        kind = rng.choice(("good", "good", "garbage", "flip", "cut", "long", "escape"))
        op = rng.randrange(256)
        payload = _rand_bytes(rng, rng.randrange(max_payload + 1))
        frame = bytearray(encode_frame(op, payload))
        if kind == "good":
            good.append(Frame(op, payload))
        elif kind == "garbage":
            frame = bytearray(_rand_bytes(rng, rng.randrange(1, 24)))
        elif kind == "flip":
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        elif kind == "cut":
            frame = frame[:rng.randrange(1, len(frame))]
        elif kind == "long":
            length = rng.randrange(max_payload + 1, 0x10000)
            body = bytes([op, length & 0xFF, length >> 8]) + payload
            frame = bytearray([SYNC])
            for byte in body:
                frame += bytes([ESC, byte ^ 0x20]) if byte in (SYNC, ESC) else bytes([byte])
        else:  # escape: ESC then a byte that may not follow it
            pos = rng.randrange(1, len(frame))         # before the last byte: inside the frame
            frame[pos:pos] = bytes([ESC, rng.choice([b for b in range(256) if b not in (0x5E, 0x5D)])])
        stream += frame
    return bytes(stream), good


@pytest.mark.parametrize("seed", range(4))
def test_receiver_fuzz(seed):
    """Hardware and FrameDecoder report the same frames and errors; every good frame, nothing else."""
    rng = random.Random(seed)
    max_payload = 16
    stream, good = fuzz_stream(rng, max_payload, 60)
    hw = _both(stream, max_payload=max_payload, gap=4)
    assert [e for e in hw if isinstance(e, Frame)] == good
    # All kinds of damage were exercised.
    codes = {e.code for e in hw if isinstance(e, FrameError)}
    assert codes >= {ErrorCode.BAD_LENGTH, ErrorCode.TRUNCATED, ErrorCode.BAD_ESCAPE}
    # FrameDecoder is incremental: any split of the stream gives the same events.
    decoder = FrameDecoder(max_payload)
    events = []
    pos = 0
    while pos < len(stream):
        n = rng.randrange(1, 9)
        events += decoder.feed(stream[pos:pos + n])
        pos += n
    assert events == hw


def test_receiver_fuzz_sees_bad_crc():
    """Over a few seeds the fuzz streams also produce BAD_CRC (bit flips in payload or CRC)."""
    codes = set()
    for seed in range(4):
        stream, _ = fuzz_stream(random.Random(seed), 16, 60)
        codes |= {e.code for e in FrameDecoder(16).feed(stream) if isinstance(e, FrameError)}
    assert ErrorCode.BAD_CRC in codes


# -- receiver with the bit-serial CRC ----------------------------------------------------------

@pytest.mark.parametrize("seed", range(2))
def test_receiver_serial_crc_fuzz(seed):
    """The bit-serial receiver reports exactly what FrameDecoder does, bytes offered back to back."""
    rng = random.Random(100 + seed)
    stream, good = fuzz_stream(rng, 16, 40)
    hw = _both(stream, serial_crc=True)
    assert [e for e in hw if isinstance(e, Frame)] == good


def test_receiver_serial_crc_directed():
    frames = [(0x01, b""), (0x7E, b"\x7e\x7d\x7e"), (0x11, bytes(range(16)))]
    good = b"".join(encode_frame(op, p) for op, p in frames)
    bad_crc = bytearray(encode_frame(0x12, b"\x01\x02\x03"))
    bad_crc[-2] ^= 0x80                         # the first CRC byte
    # ... then LEN 17 > 16 (the rest is skipped) and the first frame again.
    stream = good + bytes(bad_crc) + b"\x7e\x33\x11\x00\x55" + encode_frame(*frames[0])
    expected = [Frame(op, p) for op, p in frames] + [
        FrameError(ErrorCode.BAD_CRC, 0x12), FrameError(ErrorCode.BAD_LENGTH, 0x33),
        Frame(*frames[0])]
    assert _both(stream, serial_crc=True, gap=1) == expected


def test_receiver_serial_crc_holds_off_body_bytes():
    """OP, LEN and payload bytes wait 9 cycles (decode, 8 CRC steps); SYNC, ESC and CRC bytes 1."""
    dut = FrameReceiver(16, serial_crc=True)
    frame = encode_frame(0x21, b"\x7e")       # 7E 21 01 00 7D 5E CRC_lo CRC_hi (no escaped CRC)
    assert len(frame) == 8
    waits = []

    async def bench(ctx):
        ctx.set(dut.error.ready, 1)
        for byte in frame:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, byte)
            cycles = 0
            while not ctx.get(dut.i.ready):
                await ctx.tick()
                cycles += 1
            await ctx.tick()
            waits.append(cycles)
        ctx.set(dut.i.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.frame.valid) and not ctx.get(dut.error.valid)

    _run(dut, bench)
    #             SYNC OP LEN0 LEN1 ESC 0x5E CRC0 CRC1
    assert waits == [1, 9, 9, 9, 1, 9, 1, 1]


def test_receiver_bad_serial_crc_option():
    with pytest.raises(TypeError, match=r"^serial_crc must be a bool, not 1$"):
        FrameReceiver(16, serial_crc=1)


# -- transmitter --------------------------------------------------------------------------------

def transmit(frames, *, rng=None, limit=100_000, **options):
    """Send ``frames`` through a FrameTransmitter; with ``rng``, stall producer and sink randomly.

    ``options`` go to the FrameTransmitter. Returns the bytes on ``o`` and the cycle numbers at
    which they were transferred.
    """
    dut = FrameTransmitter(**options)
    out = []
    cycles = []
    total = sum(len(encode_frame(op, p)) for op, p in frames)

    async def header_source(ctx):
        for op, payload in frames:
            ctx.set(dut.header.valid, 1)
            ctx.set(dut.header.payload.op, op)
            ctx.set(dut.header.payload.length, len(payload))
            await ctx.tick().until(dut.header.ready)
            ctx.set(dut.header.valid, 0)
            if rng is not None:
                await _idle(ctx, rng.randrange(3))

    async def data_source(ctx):
        for _, payload in frames:
            for byte in payload:
                if rng is not None and rng.randrange(3) == 0:
                    ctx.set(dut.data.valid, 0)
                    await _idle(ctx, rng.randrange(1, 4))
                ctx.set(dut.data.valid, 1)
                ctx.set(dut.data.payload, byte)
                await ctx.tick().until(dut.data.ready)
            ctx.set(dut.data.valid, 0)

    async def sink(ctx):
        cycle = 0
        while len(out) < total and cycle < limit:
            ready = 1 if rng is None else int(rng.randrange(4) != 0)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                out.append(payload)
                cycles.append(cycle)
            cycle += 1
        ctx.set(dut.o.ready, 0)
        # Nothing more comes out after the last frame.
        for _ in range(10):
            await ctx.tick()
            assert ctx.get(dut.o.valid) == 0
        assert ctx.get(dut.header.ready) == 1

    _run(dut, header_source, data_source, sink)
    return bytes(out), cycles


def _crc_with_special_byte():
    # A payload whose CRC contains 0x7E or 0x7D, so that the CRC field itself gets escaped.
    for n in range(1000):
        payload = n.to_bytes(2, "little")
        crc = crc16(bytes([0x31, 2, 0]) + payload)
        if (crc & 0xFF) in (SYNC, ESC) or (crc >> 8) in (SYNC, ESC):
            return payload
    raise AssertionError("no such payload")


def test_transmitter_matches_encoder():
    frames = [(0x81, b""), (0x7E, b"\x7e\x7d\x00\xff"), (0x31, _crc_with_special_byte()),
              (0x21, bytes(range(126))),          # LEN = 0x007E: the length byte is escaped
              (0xA1, b"x")]
    data, cycles = transmit(frames)
    assert data == b"".join(encode_frame(op, p) for op, p in frames)
    # One byte per cycle while the frame is being sent (a free sink, data always available).
    first = len(encode_frame(*frames[0]))
    assert cycles[first - 1] - cycles[0] == first - 1


@pytest.mark.parametrize("seed", range(3))
def test_transmitter_random_stalls(seed):
    """Random frames with random stalls on all three streams decode back to what was sent."""
    rng = random.Random(seed)
    frames = [(rng.randrange(256), _rand_bytes(rng, rng.randrange(40))) for _ in range(12)]
    data, _ = transmit(frames, rng=rng)
    assert FrameDecoder().feed(data) == [Frame(op, p) for op, p in frames]
    assert data == b"".join(encode_frame(op, p) for op, p in frames)


def test_transmitter_waits_for_complete_frame():
    """The next header is taken only after the last CRC byte of the previous frame went out."""
    dut = FrameTransmitter()

    async def bench(ctx):
        ctx.set(dut.header.valid, 1)
        ctx.set(dut.header.payload.op, 0x7D)
        ctx.set(dut.header.payload.length, 0)
        await ctx.tick().until(dut.header.ready)
        ctx.set(dut.header.payload.op, 0x22)     # a second header waits
        ctx.set(dut.o.ready, 1)
        sent = []
        for _ in range(50):
            ready, valid, payload = ctx.get(dut.header.ready), ctx.get(dut.o.valid), ctx.get(dut.o.payload)
            if ready:
                break
            if valid:
                sent.append(payload)
            await ctx.tick()
        assert bytes(sent) == encode_frame(0x7D, b"")
        assert ctx.get(dut.o.valid) == 0

    _run(dut, bench)


@pytest.mark.parametrize("seed", range(2))
def test_transmitter_serial_crc_random_stalls(seed):
    """The bit-serial transmitter sends the same bytes, whatever the stalls."""
    rng = random.Random(50 + seed)
    frames = [(rng.randrange(256), _rand_bytes(rng, rng.randrange(30))) for _ in range(8)]
    frames.append((0x31, _crc_with_special_byte()))
    data, _ = transmit(frames, rng=rng, serial_crc=True)
    assert data == b"".join(encode_frame(op, p) for op, p in frames)


def test_transmitter_serial_crc_pace():
    """With a free sink, a byte after one that goes through the CRC waits for its 8 CRC steps."""
    frames = [(0x22, b"\x01\x7e")]
    data, cycles = transmit(frames, serial_crc=True)
    assert data == encode_frame(*frames[0])      # 7E 22 02 00 01 7D 5E CRC_lo CRC_hi
    gaps = [b - a for a, b in zip(cycles, cycles[1:])]
    # After SYNC, after the ESC prefix (same raw byte) and after CRC_lo: no CRC to wait for.
    assert [gaps[k] <= 2 for k in range(8)] == [True, False, False, False, False, True, False, True]
    # After OP, LEN0, LEN1 and 0x01; after 0x7E, whose CRC steps began as its prefix went out.
    assert min(gaps[1:5]) >= 9 and gaps[6] >= 8, gaps


def test_transmitter_narrow_length():
    """``max_payload`` sizes the length counter; LEN up to it is sent in full."""
    frames = [(0x21, bytes(range(256)) + b"\x7e" * 44), (0x21, b"")]     # LEN = 300 = 0x012C
    data, _ = transmit(frames, max_payload=300, serial_crc=True)
    assert data == b"".join(encode_frame(op, p) for op, p in frames)


@pytest.mark.parametrize("value", [0, 65536, True])
def test_transmitter_bad_max_payload(value):
    with pytest.raises(ValueError, match=rf"^max_payload must be an integer in 1\.\.65535, not {value!r}$"):
        FrameTransmitter(max_payload=value)


def test_transmitter_bad_serial_crc_option():
    with pytest.raises(TypeError, match=r"^serial_crc must be a bool, not 'yes'$"):
        FrameTransmitter(serial_crc="yes")


# -- end to end over the UART -------------------------------------------------------------------

@pytest.mark.parametrize("divisor,serial_crc", [(2, False), (3, False), (2, True)])
def test_uart_end_to_end(divisor, serial_crc):
    """FrameTransmitter -> UARTTx -> UARTRx -> FrameReceiver: every frame arrives, no byte lost.

    At divisor 2 a byte lasts 20 cycles: enough for the bit-serial CRCs on both sides.
    """
    m = Module()
    m.submodules.ftx = ftx = FrameTransmitter(serial_crc=serial_crc)
    m.submodules.utx = utx = UARTTx(divisor)
    m.submodules.urx = urx = UARTRx(divisor)
    m.submodules.frx = frx = FrameReceiver(64, serial_crc=serial_crc)
    m.d.comb += [
        utx.i.valid.eq(ftx.o.valid), utx.i.payload.eq(ftx.o.payload), ftx.o.ready.eq(utx.i.ready),
        urx.rx.eq(utx.tx),
        frx.i.valid.eq(urx.o.valid), frx.i.payload.eq(urx.o.payload), urx.o.ready.eq(frx.i.ready),
    ]
    rng = random.Random(divisor)
    frames = [(rng.randrange(256), _rand_bytes(rng, rng.randrange(65))) for _ in range(6)]
    got = []

    async def producer(ctx):
        for op, payload in frames:
            ctx.set(ftx.header.valid, 1)
            ctx.set(ftx.header.payload.op, op)
            ctx.set(ftx.header.payload.length, len(payload))
            await ctx.tick().until(ftx.header.ready)
            ctx.set(ftx.header.valid, 0)
            for byte in payload:
                ctx.set(ftx.data.valid, 1)
                ctx.set(ftx.data.payload, byte)
                await ctx.tick().until(ftx.data.ready)
            ctx.set(ftx.data.valid, 0)

    async def dispatcher(ctx):
        ctx.set(frx.error.ready, 1)
        while len(got) < len(frames):
            await ctx.tick()
            assert not ctx.get(frx.error.valid)
            assert not ctx.get(urx.overrun) and not ctx.get(urx.error)
            if ctx.get(frx.frame.valid):
                length = ctx.get(frx.frame.payload.length)
                payload = bytearray()
                for k in range(length):
                    ctx.set(frx.rd_addr, k)
                    await ctx.tick()
                    payload.append(ctx.get(frx.rd_data))
                got.append(Frame(ctx.get(frx.frame.payload.op), bytes(payload)))
                ctx.set(frx.frame.ready, 1)
                await ctx.tick()
                ctx.set(frx.frame.ready, 0)

    _run(m, producer, dispatcher)
    assert got == [Frame(op, p) for op, p in frames]
