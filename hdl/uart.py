"""8N1 UART: transmitter, receiver, and both bundled.

One start bit (0), eight data bits least significant first, one stop bit (1); the line idles high.
``divisor`` is the number of clock cycles per bit. Divisors as small as 2 are allowed so that
simulations can use a short bit time; on a board, :func:`divisor_for` picks the divisor for a baud
rate and refuses one that would be more than 2 % off.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ._params import reject

__all__ = ["UART", "UARTRx", "UARTTx", "divisor_for"]

#: Largest baud-rate error :func:`divisor_for` accepts. Both ends may be off, and a receiver that
#: samples mid-bit tolerates about 5 % in total over the ten bits of a frame.
MAX_BAUD_ERROR = 0.02


def _check_divisor(component, divisor):
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 2:
        raise reject(component, ValueError(f"divisor must be an integer >= 2 (clock cycles per bit), "
                                           f"not {divisor!r}"))
    return divisor


def divisor_for(clk_hz, baud):
    """Clock cycles per bit for ``baud`` at ``clk_hz``.

    Parameters
    ----------
    clk_hz : int or float
        Clock frequency in Hz, > 0.
    baud : int or float
        Bit rate, > 0.

    Returns
    -------
    int
        ``round(clk_hz / baud)``, at least 2.

    Raises
    ------
    ValueError
        If an argument is not positive, if the divisor would be below 2, or if the achieved rate
        ``clk_hz / divisor`` differs from ``baud`` by more than 2 %.
    """
    for name, value in (("clk_hz", clk_hz), ("baud", baud)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, not {value!r}")
    divisor = round(clk_hz / baud)
    if divisor < 2:
        raise ValueError(f"baud rate {baud} is too fast for a {clk_hz} Hz clock: a UART needs at least "
                         f"2 clock cycles per bit, so at most {clk_hz / 2:g} baud")
    actual = clk_hz / divisor
    error = abs(actual - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"baud rate {baud} cannot be made from a {clk_hz} Hz clock within 2 %: "
                         f"the nearest divisor {divisor} gives {actual:.0f} baud ({error:.1%} off)")
    return divisor


def _tx_members():
    return {"i": In(stream.Signature(8)), "tx": Out(1, init=1)}


def _rx_members():
    return {"rx": In(1, init=1), "o": Out(stream.Signature(8)), "error": Out(1), "overrun": Out(1)}


class UARTTx(wiring.Component):
    """8N1 transmitter.

    A byte is taken from ``i`` when the previous one, stop bit included, is completely sent, so
    back-to-back bytes take exactly ``10 * divisor`` cycles each.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= 2.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1)
        Serial output (registered), idles high.

    Raises
    ------
    ValueError
        If ``divisor`` is not an integer >= 2.
    """

    def __init__(self, divisor):
        self.divisor = _check_divisor(self, divisor)
        super().__init__(_tx_members())

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        # Data bits then the stop bit, shifted out with zeros coming in: the register empties
        # exactly when the stop bit goes out, so it needs no bit counter.
        shreg = Signal(9)

        busy = (shreg != 0) | (timer != 0)
        m.d.comb += self.i.ready.eq(~busy)
        with m.If(self.i.valid & ~busy):
            m.d.sync += [
                self.tx.eq(0),          # start bit
                shreg.eq(Cat(self.i.payload, 1)),
                timer.eq(self.divisor - 1),
            ]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(shreg != 0):
            m.d.sync += [
                self.tx.eq(shreg[0]),
                shreg.eq(shreg >> 1),
                timer.eq(self.divisor - 1),
            ]
        return m


class _RxState(enum.Enum, shape=3):
    WAIT_IDLE = 0
    IDLE = 1
    START = 2
    DATA = 3
    STOP = 4


class UARTRx(wiring.Component):
    """8N1 receiver.

    ``rx`` passes through a two-flop synchronizer (it is asynchronous to the clock). A falling edge
    starts a byte; each bit is sampled once, in the middle of its bit time. A start bit that is no
    longer low at its middle is taken for a glitch and ignored.

    A byte whose stop bit reads 0 is dropped and ``error`` pulses for one cycle; the receiver then
    waits for the line to return high before it looks for the next start bit (so a held-low line,
    a "break", gives one error rather than a stream of them). It also starts out that way after
    reset, so a line that is low at power-up is not taken for a start bit.

    ``o`` holds each received byte until it is taken. The receiver cannot be paused: if ``o`` is
    still not taken when the next byte completes, the older byte is dropped, the newer one replaces
    it and ``overrun`` pulses for one cycle. The consumer therefore has a whole byte time
    (``10 * divisor`` cycles) to take each byte.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= 2.

    Members
    -------
    rx : In(1)
        Serial input, idles high.
    o : Out(stream.Signature(8))
        Received bytes.
    error : Out(1)
        One-cycle pulse: framing error (bad stop bit); the byte was dropped.
    overrun : Out(1)
        One-cycle pulse: a byte was dropped because ``o`` was not taken in time.

    Raises
    ------
    ValueError
        If ``divisor`` is not an integer >= 2.
    """

    def __init__(self, divisor):
        self.divisor = _check_divisor(self, divisor)
        super().__init__(_rx_members())

    def elaborate(self, platform):
        m = Module()
        d = self.divisor

        # Two flops against metastability; both start high like an idle line.
        rx_meta = Signal(init=1)
        rx_sync = Signal(init=1)
        m.d.sync += [rx_meta.eq(self.rx), rx_sync.eq(rx_meta)]

        state = Signal(_RxState)
        timer = Signal(range(d))
        # Data bits come in at the top behind a marker bit: the marker reaches bit 1 as the last
        # data bit is sampled, so no bit counter is needed.
        shreg = Signal(9)
        done = Signal()                 # a byte with a good stop bit completes this cycle

        # The start edge is seen within one cycle after it happened; waiting d // 2 cycles more
        # lands on the middle of the start bit, and every d cycles after that on the next middle.
        half = d // 2

        m.d.sync += [self.error.eq(0), self.overrun.eq(0)]
        with m.Switch(state):
            with m.Case(_RxState.WAIT_IDLE):
                with m.If(rx_sync):
                    m.d.sync += state.eq(_RxState.IDLE)
            with m.Case(_RxState.IDLE):
                with m.If(~rx_sync):
                    m.d.sync += [state.eq(_RxState.START), timer.eq(half - 1)]
            with m.Case(_RxState.START):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx_sync):
                    m.d.sync += state.eq(_RxState.IDLE)     # glitch, not a start bit
                with m.Else():
                    m.d.sync += [state.eq(_RxState.DATA), timer.eq(d - 1), shreg.eq(1 << 8)]
            with m.Case(_RxState.DATA):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx_sync)), timer.eq(d - 1)]
                    with m.If(shreg[1]):
                        m.d.sync += state.eq(_RxState.STOP)
            with m.Case(_RxState.STOP):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx_sync):
                    # Back to IDLE at mid-stop-bit: half a bit of slack for a fast sender.
                    m.d.comb += done.eq(1)
                    m.d.sync += state.eq(_RxState.IDLE)
                with m.Else():
                    m.d.sync += [self.error.eq(1), state.eq(_RxState.WAIT_IDLE)]

        with m.If(done):
            m.d.sync += [self.o.payload.eq(shreg[1:]), self.o.valid.eq(1)]
            with m.If(self.o.valid & ~self.o.ready):
                m.d.sync += self.overrun.eq(1)
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class UART(wiring.Component):
    """8N1 transmitter and receiver sharing one divisor.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= 2.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send (see :class:`UARTTx`).
    tx : Out(1)
        Serial output, idles high.
    rx : In(1)
        Serial input (see :class:`UARTRx`).
    o : Out(stream.Signature(8))
        Received bytes.
    error : Out(1)
        Framing-error pulse.
    overrun : Out(1)
        Receive-overrun pulse.

    Raises
    ------
    ValueError
        If ``divisor`` is not an integer >= 2.
    """

    def __init__(self, divisor):
        self.divisor = _check_divisor(self, divisor)
        # Exactly the transmitter's and the receiver's ports: elaborate() passes each through.
        super().__init__({**_tx_members(), **_rx_members()})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.submodules.rx = rx = UARTRx(self.divisor)
        wiring.connect(m, wiring.flipped(self.i), tx.i)
        wiring.connect(m, rx.o, wiring.flipped(self.o))
        m.d.comb += [
            self.tx.eq(tx.tx),
            rx.rx.eq(self.rx),
            self.error.eq(rx.error),
            self.overrun.eq(rx.overrun),
        ]
        return m
