"""UART transmitter and receiver against the 8N1 line format, in simulation."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from npuforge.hdl.uart import UART, UARTRx, UARTTx, divisor_for


def _run(dut, *benches):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()


def _line_bits(byte):
    """The ten 8N1 bit levels of one byte: start 0, data LSB first, stop 1."""
    return [0] + [(byte >> k) & 1 for k in range(8)] + [1]


async def _send(ctx, stream, values):
    for value in values:
        ctx.set(stream.valid, 1)
        ctx.set(stream.payload, value)
        await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


# -- parameters ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [UARTTx, UARTRx, UART])
@pytest.mark.parametrize("divisor", [1, 0, -3, 2.5, True, "16"])
def test_bad_divisor(cls, divisor):
    with pytest.raises(ValueError, match=r"^divisor must be an integer >= 2 \(clock cycles per bit\), "
                                         rf"not {divisor!r}$"):
        cls(divisor)


def test_divisor_for():
    # 12 MHz / 115200 = 104.17 -> 104, 115384.6 baud, 0.16 % fast.
    assert divisor_for(12_000_000, 115_200) == 104
    # 48 MHz / 3 Mbaud is exact.
    assert divisor_for(48_000_000, 3_000_000) == 16
    # 1 MHz / 115200 = 8.68 -> 9 -> 111111 baud, 3.5 % slow: refused, naming both numbers.
    with pytest.raises(ValueError, match=r"^baud rate 115200 cannot be made from a 1000000 Hz clock "
                                         r"within 2 %: the nearest divisor 9 gives 111111 baud "
                                         r"\(3\.5% off\)$"):
        divisor_for(1_000_000, 115_200)
    # 1 MHz / 800 kbaud = 1.25 -> 1 cycle per bit: below the minimum of 2.
    with pytest.raises(ValueError, match=r"^baud rate 800000 is too fast for a 1000000 Hz clock: "
                                         r"a UART needs at least 2 clock cycles per bit, so at most "
                                         r"500000 baud$"):
        divisor_for(1_000_000, 800_000)
    with pytest.raises(ValueError, match=r"^baud must be a positive number, not 0$"):
        divisor_for(12_000_000, 0)
    with pytest.raises(ValueError, match=r"^clk_hz must be a positive number, not -1$"):
        divisor_for(-1, 9600)


# -- transmitter --------------------------------------------------------------------------------

@pytest.mark.parametrize("divisor", [2, 3, 5])
def test_tx_waveform(divisor):
    """Back-to-back bytes give exactly the 8N1 waveform, ten bit times per byte, then idle high."""
    rng = random.Random(divisor)
    values = [0x00, 0xFF, 0x55, 0xA5] + [rng.randrange(256) for _ in range(4)]
    dut = UARTTx(divisor)
    line = []

    async def producer(ctx):
        await ctx.tick().repeat(3)
        await _send(ctx, dut.i, values)

    async def monitor(ctx):
        assert ctx.get(dut.tx) == 1
        for _ in range(3 + 10 * divisor * (len(values) + 1)):
            await ctx.tick()
            line.append(ctx.get(dut.tx))

    _run(dut, producer, monitor)
    start = line.index(0)
    assert all(line[:start])
    expected = [level for v in values for level in _line_bits(v) for _ in range(divisor)]
    assert line[start:start + len(expected)] == expected
    assert all(line[start + len(expected):])


def test_tx_busy_while_sending():
    dut = UARTTx(4)

    async def bench(ctx):
        assert ctx.get(dut.i.ready) == 1
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 0x3C)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        busy = 0
        while not ctx.get(dut.i.ready):
            busy += 1
            await ctx.tick()
        # Ready again exactly at the end of the stop bit: 10 bit times after the byte was taken.
        assert busy == 10 * 4 - 1

    _run(dut, bench)


# -- loopback -----------------------------------------------------------------------------------

def _loopback(divisor):
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    return m, tx, rx


@pytest.mark.parametrize("divisor", [2, 3, 4, 7, 16])
def test_loopback_random(divisor):
    rng = random.Random(1000 + divisor)
    values = [rng.randrange(256) for _ in range(24)] + [0x00, 0xFF]
    top, tx, rx = _loopback(divisor)
    got = []
    flags = []

    async def producer(ctx):
        await _send(ctx, tx.i, values)

    async def consumer(ctx):
        ctx.set(rx.o.ready, 1)
        while len(got) < len(values):
            _, _, payload, valid, error, overrun = await ctx.tick().sample(
                rx.o.payload, rx.o.valid, rx.error, rx.overrun)
            if valid:
                got.append(payload)
            flags.append(error | overrun)

    _run(top, producer, consumer)
    assert got == values
    assert not any(flags)


def test_uart_bundle_loopback():
    dut = UART(3)
    top = Module()
    top.submodules.uart = dut
    top.d.comb += dut.rx.eq(dut.tx)
    values = list(range(0, 256, 17))
    got = []

    async def producer(ctx):
        await _send(ctx, dut.i, values)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        while len(got) < len(values):
            _, _, payload, valid, error = await ctx.tick().sample(dut.o.payload, dut.o.valid, dut.error)
            assert not error
            if valid:
                got.append(payload)

    _run(top, producer, consumer)
    assert got == values


# -- receiver driven bit by bit -----------------------------------------------------------------

def _waveform(values, bit_cycles, *, lead=5, stop_levels=None):
    """Per-cycle line levels for back-to-back bytes at a (possibly fractional) bit time.

    Bit ``k`` of the whole stream starts at cycle ``lead + round(k * bit_cycles)``: a sender whose
    clock differs from the receiver's, with the edges rounded to the receiver's clock.
    """
    bits = []
    for n, v in enumerate(values):
        b = _line_bits(v)
        if stop_levels is not None:
            b[-1] = stop_levels[n]
        bits += b
    edges = [lead + round(k * bit_cycles) for k in range(len(bits) + 1)]
    line = [1] * lead
    for k, level in enumerate(bits):
        line += [level] * (edges[k + 1] - edges[k])
    return line + [1] * int(4 * bit_cycles)


def _drive_rx(dut, line, *, ready=1):
    events = []

    async def bench(ctx):
        ctx.set(dut.o.ready, ready)
        for cycle, level in enumerate(line):
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ctx.get(dut.o.valid) and ready:
                events.append(("byte", ctx.get(dut.o.payload), cycle))
            if ctx.get(dut.error):
                events.append(("error", None, cycle))
            if ctx.get(dut.overrun):
                events.append(("overrun", ctx.get(dut.o.payload), cycle))
        events.append(("end", ctx.get(dut.o.payload) if ctx.get(dut.o.valid) else None, len(line)))

    _run(dut, bench)
    return events


@pytest.mark.parametrize("divisor", [16, 25])
@pytest.mark.parametrize("offset", [-0.02, +0.02])
def test_rx_clock_offset(divisor, offset):
    """A sender 2 % slow or fast, sending back to back with no idle time, is received intact."""
    rng = random.Random(divisor * 100 + int(offset * 100))
    values = [rng.randrange(256) for _ in range(16)] + [0x00, 0xFF, 0x80, 0x01]
    events = _drive_rx(UARTRx(divisor), _waveform(values, divisor * (1 + offset)))
    assert [e[1] for e in events if e[0] == "byte"] == values
    assert [e for e in events if e[0] in ("error", "overrun")] == []


def test_rx_framing_error():
    """A bad stop bit drops the byte and pulses ``error`` once; the next good byte is received."""
    d = 8
    line = _waveform([0xA7], d, stop_levels=[0])
    # Hold the line low for a while after the bad stop bit (a break), then idle, then a good byte.
    stop_end = 5 + 10 * d
    line = line[:stop_end] + [0] * (25 * d) + [1] * (3 * d) + _waveform([0x5A], d)
    events = _drive_rx(UARTRx(d), line)
    kinds = [(e[0], e[1]) for e in events]
    assert kinds == [("error", None), ("byte", 0x5A), ("end", None)]
    # The error is flagged at the middle of the stop bit, not before.
    assert events[0][2] >= 5 + 9 * d + d // 2


def test_rx_glitch_is_not_a_start_bit():
    d = 16
    line = [1] * 10 + [0] + [1] * (12 * d) + _waveform([0x42], d)
    events = _drive_rx(UARTRx(d), line)
    assert [(e[0], e[1]) for e in events] == [("byte", 0x42), ("end", None)]


def test_rx_overrun():
    """With ``o`` never taken, the second byte replaces the first and ``overrun`` pulses."""
    d = 4
    events = _drive_rx(UARTRx(d), _waveform([0x11, 0x22, 0x33], d), ready=0)
    assert [(e[0], e[1]) for e in events] == [("overrun", 0x22), ("overrun", 0x33), ("end", 0x33)]


def test_rx_samples_mid_bit():
    """Each bit is read near its middle: a bit shortened at either end by a quarter still reads."""
    d = 16
    # 0x96 = 1001_0110; make every data bit's first and last quarter the opposite level.
    line = [1] * 5
    for k, level in enumerate(_line_bits(0x96)):
        if 1 <= k <= 8:
            q = d // 4
            line += [1 - level] * q + [level] * (d - 2 * q) + [1 - level] * q
        else:
            line += [level] * d
    line += [1] * (3 * d)
    events = _drive_rx(UARTRx(d), line)
    assert [(e[0], e[1]) for e in events] == [("byte", 0x96), ("end", None)]
