"""Frame receiver and transmitter for the board's UART protocol.

Frame format (``docs/protocol.md``; the host side is :mod:`npuforge.boards.protocol`)::

    0x7E | escaped( OP | LEN_lo | LEN_hi | PAYLOAD[LEN] | CRC_lo | CRC_hi )

SYNC (0x7E) starts every frame and never appears inside one (0x7E and 0x7D are sent as 0x7D,
byte ^ 0x20), so any SYNC restarts the receiver: it resynchronizes after garbage, a truncated frame
or a corrupted length with no timeout. The CRC is CRC-16/CCITT-FALSE over OP, LEN and PAYLOAD.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import crc, data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._params import reject

__all__ = [
    "ERROR_BAD_CRC",
    "ERROR_BAD_ESCAPE",
    "ERROR_BAD_LENGTH",
    "ERROR_OVERRUN",
    "ERROR_TRUNCATED",
    "ErrorLayout",
    "FrameReceiver",
    "FrameTransmitter",
    "HeaderLayout",
]

SYNC = 0x7E
ESC = 0x7D
ESC_XOR = 0x20

# Error codes the receiver raises (the same numbers as npuforge.boards.protocol.ErrorCode, which
# this module does not import: hdl/ depends on Amaranth only).
ERROR_BAD_CRC = 1
ERROR_BAD_LENGTH = 2
ERROR_TRUNCATED = 3
ERROR_OVERRUN = 6
ERROR_BAD_ESCAPE = 7

#: Payload of a frame header: opcode and payload length.
HeaderLayout = data.StructLayout({"op": 8, "length": 16})
#: Payload of an error report: error code and the opcode of the bad frame (0 if not yet received).
ErrorLayout = data.StructLayout({"code": 8, "op": 8})

_CRC_ALGORITHM = crc.catalog.CRC16_CCITT_FALSE     # not reflected, no output XOR
_CRC_PARAMETERS = _CRC_ALGORITHM(data_width=8)


def _is_special(byte):
    """1 if ``byte`` is SYNC (0x7E) or ESC (0x7D): bits 7..2 are 011111, bits 1..0 are 10 or 01."""
    return (byte[2:] == 0b011111) & (byte[0] ^ byte[1])


def _check_options(component, name, value, limit=None):
    """Shared parameter checks: ``max_payload`` (an int in 1..65535) and ``serial_crc`` (a bool)."""
    if limit is None:
        if not isinstance(value, bool):
            raise reject(component, TypeError(f"{name} must be a bool, not {value!r}"))
    elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise reject(component, ValueError(f"{name} must be an integer in 1..{limit}, not {value!r}"))
    return value


def _crc16(m, *, serial, data, valid, take, start):
    """CRC-16/CCITT-FALSE of a byte stream, bytewise or bit-serial; returns ``(crc, ready)``.

    The caller offers a byte on ``data`` with ``valid``, holds it until it takes it (``take``,
    only with ``valid & ready``), and sees it included in ``crc`` from the next cycle on. ``start``
    restarts the CRC at 0xFFFF.

    Bytewise, ``ready`` is always 1 (one byte per cycle; about 50 LUTs for the 16 XOR trees).
    Bit-serial, the held byte is shifted in most significant bit first, one bit per cycle while it
    is offered, and ``ready`` rises once all eight are in; it stays up until the byte is taken, so a
    caller that cannot take it at once loses nothing. That is a 16-bit shift register with three
    XOR taps (polynomial 0x1021) and a bit counter, a fraction of the bytewise logic, for at most
    one byte every nine cycles: a UART byte takes at least twenty.

    The logic goes into ``m`` itself rather than a submodule, so that synthesis can merge the
    register's inversion (below) into the logic that reads ``crc``.
    """
    if not serial:
        m.submodules.crc = processor = crc.Processor(_CRC_PARAMETERS)
        m.d.comb += [processor.start.eq(start), processor.data.eq(data), processor.valid.eq(take)]
        return processor.crc, 1

    # The register holds the complement of the CRC: its initial value 0xFFFF becomes 0, the
    # power-up value of iCE40 flip-flops (an all-ones register would cost an inverter per bit).
    # With crc = ~reg, the shift-and-XOR update keeps its form; only bit 0 takes ~feedback.
    reg = Signal(16, reset_less=True)      # restarted before every frame
    count = Signal(3)
    done = Signal()
    # MSB first (the CRC is not reflected): bit 7 - count, and 7 - count == ~count on 3 bits.
    feedback = ~reg[15] ^ data.bit_select(~count, 1)
    with m.If(start):
        m.d.sync += reg.eq(0)
    with m.Elif(valid & ~done):
        m.d.sync += [
            reg.eq(Cat(~feedback, reg[:15]) ^ Mux(feedback, _CRC_ALGORITHM.polynomial & ~1, 0)),
            count.eq(count + 1),
        ]
        with m.If(count == 7):
            m.d.sync += done.eq(1)
    with m.If(take):
        m.d.sync += done.eq(0)
    return ~reg, done


class _RxState(enum.Enum, shape=3):
    HUNT = 0        # outside a frame: ignore everything but SYNC
    OP = 1
    LEN0 = 2
    LEN1 = 3
    PAYLOAD = 4
    CRC0 = 5
    CRC1 = 6
    SKIP = 7        # after BAD_LENGTH: ignore the rest of the frame


class FrameReceiver(wiring.Component):
    """Receives frames from a byte stream into a payload buffer.

    With the bytewise CRC (the default) it takes one byte per cycle and never stalls its input
    (``i.ready`` is always 1: a UART cannot be paused). With ``serial_crc=True`` it decodes each
    byte into registers first and takes it on the next cycle, or, for a byte of OP, LEN or PAYLOAD,
    once the CRC has shifted it in, 9 cycles after it was offered (``i.ready`` low until then). A
    UART receiver's output register absorbs that: it holds a byte for a whole byte time (at least
    20 cycles). Every byte produces at most one event, one cycle after it was taken: a frame on
    ``frame`` or an error on ``error``.

    **Frames.** When the second CRC byte of a frame arrives and the CRC matches, ``frame`` becomes
    valid with its opcode and length; the payload sits in an internal buffer (a
    :class:`~amaranth.lib.memory.Memory`, block RAM on an FPGA) that the dispatcher reads through
    ``rd_addr``/``rd_data`` (synchronous: data one cycle after the address). Taking the frame
    (``frame.ready``) frees the buffer; until then the frame stays valid.

    **Overrun.** The buffer holds one frame. A newer frame is dropped with ``OVERRUN`` (and its
    opcode) if the previous one is still pending when the newer one needs the buffer: at any of its
    payload bytes, or when it completes. So the dispatcher has until the first payload byte of the
    next frame (at least four bytes after the end of the pending frame) to take it. A frame that is
    taken on the same cycle as the newer frame needs the buffer counts as taken in time.

    **Errors.** Bytes outside a frame are ignored; repeated SYNCs are no error. Reported on
    ``error``, with the opcode if it had been received (else 0):

    - ``BAD_CRC`` (1): complete frame, wrong CRC;
    - ``BAD_LENGTH`` (2): as soon as LEN > ``max_payload``; the rest is skipped until the next SYNC;
    - ``TRUNCATED`` (3): a SYNC after at least one byte of a frame (the SYNC starts the next frame);
    - ``OVERRUN`` (6): see above;
    - ``BAD_ESCAPE`` (7): 0x7D followed by 0x7E (reported instead of ``TRUNCATED``; the SYNC still
      starts the next frame) or by a byte other than 0x5E/0x5D (the frame is abandoned).

    ``error`` is a one-deep holding register: if another error occurs while one is still pending,
    the first one is kept and the new one is only counted in ``dropped_errors`` (saturating at 255,
    never cleared except by reset).

    Parameters
    ----------
    max_payload : int
        Largest accepted LEN, and the buffer size in bytes, 1..65535.
    serial_crc : bool
        Compute the CRC one bit per cycle (see above): a few LUTs instead of about 50.

    Members
    -------
    i : In(stream.Signature(8))
        Received bytes (from the UART); ``ready`` is always 1 with the bytewise CRC.
    frame : Out(stream.Signature(HeaderLayout))
        The received frame's ``op`` and ``length``; take it to free the buffer.
    rd_addr : In(range(max_payload))
        Payload byte address.
    rd_data : Out(8)
        Payload byte at the ``rd_addr`` of the previous cycle.
    error : Out(stream.Signature(ErrorLayout))
        Error reports ``code``, ``op``.
    dropped_errors : Out(8)
        Errors lost because ``error`` was still pending (saturating).

    Raises
    ------
    ValueError
        If ``max_payload`` is out of range.
    TypeError
        If ``serial_crc`` is not a bool.
    """

    def __init__(self, max_payload=512, *, serial_crc=False):
        self.max_payload = _check_options(self, "max_payload", max_payload, 0xFFFF)
        self.serial_crc = _check_options(self, "serial_crc", serial_crc)
        super().__init__({
            "i": In(stream.Signature(8)),
            "frame": Out(stream.Signature(HeaderLayout)),
            "rd_addr": In(range(max_payload)),
            "rd_data": Out(8),
            "error": Out(stream.Signature(ErrorLayout)),
            "dropped_errors": Out(8),
        })

    def elaborate(self, platform):
        m = Module()

        # The dispatcher reads the buffer only while a frame is pending, and then nothing writes
        # to it: what a read returns while the same address is written does not matter.
        # `no_rw_check` tells Yosys so; it only applies when Yosys itself merges the output
        # register into the read port, hence an asynchronous port and a plain register rather
        # than a synchronous port. Otherwise Yosys builds read-before-write logic around the block
        # RAM (about 25 flip-flops and an address comparator).
        m.submodules.buffer = buffer = Memory(shape=8, depth=self.max_payload, init=[],
                                              attrs={"no_rw_check": 1})
        wr = buffer.write_port()
        rd = buffer.read_port(domain="comb")
        rd_data = Signal(8, reset_less=True)
        m.d.sync += rd_data.eq(rd.data)
        m.d.comb += [rd.addr.eq(self.rd_addr), self.rd_data.eq(rd_data)]

        state = Signal(_RxState)
        esc = Signal()                          # previous byte was ESC
        # Registers that every frame writes before it reads them need no reset (which would cost
        # logic where they are also cleared or loaded).
        op = Signal(8, reset_less=True)         # opcode of the frame being received, 0 before it
        # LEN: the low byte arrives first and the range check needs all of it; the accepted value
        # needs no more bits than max_payload.
        length = Signal(max(8, self.max_payload.bit_length()), reset_less=True)
        index = Signal(range(self.max_payload), reset_less=True)
        crc_lo_ok = Signal(reset_less=True)     # the first CRC byte matched
        overrun = Signal(reset_less=True)       # this frame lost (part of) its payload

        byte = self.i.payload
        # Buffer busy: a frame is pending and not being taken on this very cycle.
        busy = self.frame.valid & ~self.frame.ready

        # -- decode: what the offered byte does, as a function of the byte and the registers ------
        # After ESC the byte must decode to SYNC or ESC; otherwise it must not be one: either way
        # `value` is special exactly when `esc` is set.
        value = byte ^ Mux(esc, ESC_XOR, 0)
        new_length = Cat(length[:8], value)
        next_index = index + 1
        crc_valid = Signal()
        crc_take = Signal()
        crc_start = Signal()
        crc_value, crc_ready = _crc16(m, serial=self.serial_crc, data=value, valid=crc_valid,
                                      take=crc_take, start=crc_start)
        in_frame = (state != _RxState.HUNT) & (state != _RxState.SKIP)
        is_sync = byte == SYNC
        special = _is_special(value)
        is_data = in_frame & ~is_sync & (special == esc)
        dec = {name: Signal(shape, name=f"dec_{name}") for name, shape in (
            ("sync", 1),            # SYNC: restart
            ("body", 1),            # OP, LEN or PAYLOAD: goes through the CRC
            ("next", _RxState),     # the state after the byte
            ("esc", 1),             # `esc` after the byte
            ("error", 1),           # the byte makes this error (OVERRUN is decided when taken)
            ("code", 3),
            ("done", 1),            # second CRC byte, and the CRC matches
        )}
        m.d.comb += [dec["sync"].eq(is_sync), dec["next"].eq(state)]
        with m.If(is_sync):
            m.d.comb += dec["next"].eq(_RxState.OP)
            with m.If(esc):
                m.d.comb += [dec["error"].eq(1), dec["code"].eq(ERROR_BAD_ESCAPE)]
            with m.Elif(in_frame & (state != _RxState.OP)):
                m.d.comb += [dec["error"].eq(1), dec["code"].eq(ERROR_TRUNCATED)]
        with m.Elif(~in_frame):
            pass
        with m.Elif(esc & ~is_data):
            m.d.comb += [dec["error"].eq(1), dec["code"].eq(ERROR_BAD_ESCAPE),
                         dec["next"].eq(_RxState.HUNT)]
        with m.Elif(~is_data):
            m.d.comb += dec["esc"].eq(1)            # ESC (a SYNC was handled above)
        with m.Else():
            with m.Switch(state):
                with m.Case(_RxState.OP):
                    m.d.comb += [dec["body"].eq(1), dec["next"].eq(_RxState.LEN0)]
                with m.Case(_RxState.LEN0):
                    m.d.comb += [dec["body"].eq(1), dec["next"].eq(_RxState.LEN1)]
                with m.Case(_RxState.LEN1):
                    m.d.comb += dec["body"].eq(1)
                    with m.If(new_length > self.max_payload):
                        m.d.comb += [dec["error"].eq(1), dec["code"].eq(ERROR_BAD_LENGTH),
                                     dec["next"].eq(_RxState.SKIP)]
                    with m.Elif(new_length[:len(length)] == 0):
                        m.d.comb += dec["next"].eq(_RxState.CRC0)
                    with m.Else():
                        m.d.comb += dec["next"].eq(_RxState.PAYLOAD)
                with m.Case(_RxState.PAYLOAD):
                    m.d.comb += dec["body"].eq(1)
                    with m.If(next_index == length):
                        m.d.comb += dec["next"].eq(_RxState.CRC0)
                with m.Case(_RxState.CRC0):
                    m.d.comb += dec["next"].eq(_RxState.CRC1)
                with m.Case(_RxState.CRC1):
                    m.d.comb += dec["next"].eq(_RxState.HUNT)
                    with m.If(~crc_lo_ok | (value != crc_value[8:])):
                        m.d.comb += [dec["error"].eq(1), dec["code"].eq(ERROR_BAD_CRC)]
                    with m.Else():
                        m.d.comb += dec["done"].eq(1)

        if self.serial_crc:
            # Every byte waits at least a cycle anyway: the decoding goes through registers on its
            # first cycle (the byte, the state and the other registers it depends on hold until
            # the byte is taken), so that it stays out of the paths to the registers it updates.
            # The CRC then shifts the byte in over the next 8 cycles.
            seen = Signal()
            registered = {name: Signal.like(sig, name=f"reg_{name}") for name, sig in dec.items()}
            with m.If(self.i.valid & ~seen):
                m.d.sync += [seen.eq(1)] + [registered[k].eq(v) for k, v in dec.items()]
            with m.If(self.i.ready):
                m.d.sync += seen.eq(0)
            dec = registered
            # `seen` implies `i.valid`: a stream holds its byte until it is taken.
            m.d.comb += [self.i.ready.eq(seen & (~dec["body"] | crc_ready)),
                         crc_valid.eq(seen & dec["body"])]
            take = self.i.ready
        else:
            m.d.comb += [self.i.ready.eq(1), crc_valid.eq(self.i.valid & dec["body"])]
            take = self.i.valid
        m.d.comb += crc_take.eq(take & dec["body"])

        # -- effects of the byte when it is taken -------------------------------------------------
        # At most one event per byte; it is latched into `frame` or `error` below.
        err_valid = Signal()
        err_code = Signal(3)
        frame_done = Signal()

        # Address and data need no mux: only the write enable depends on the state.
        m.d.comb += [wr.addr.eq(index), wr.data.eq(value)]
        with m.If(take):
            m.d.sync += [state.eq(dec["next"]), esc.eq(dec["esc"])]
            m.d.comb += [err_valid.eq(dec["error"]), err_code.eq(dec["code"])]
            with m.If(dec["sync"]):
                m.d.comb += crc_start.eq(1)
                m.d.sync += [op.eq(0), index.eq(0), overrun.eq(0)]
            with m.If(dec["body"]):
                with m.Switch(state):
                    with m.Case(_RxState.OP):
                        m.d.sync += op.eq(value)
                    with m.Case(_RxState.LEN0):
                        m.d.sync += length[:8].eq(value)
                    with m.Case(_RxState.LEN1):
                        if len(length) > 8:
                            m.d.sync += length[8:].eq(value)
                    with m.Case(_RxState.PAYLOAD):
                        with m.If(busy):
                            m.d.sync += overrun.eq(1)
                        m.d.comb += wr.en.eq(~busy)
                        m.d.sync += index.eq(next_index)
            with m.If(state == _RxState.CRC0):
                # (An ESC before the byte writes a value that the byte itself then replaces.)
                m.d.sync += crc_lo_ok.eq(value == crc_value[:8])
            with m.If(dec["done"]):
                with m.If(overrun | busy):
                    m.d.comb += [err_valid.eq(1), err_code.eq(ERROR_OVERRUN)]
                with m.Else():
                    m.d.comb += frame_done.eq(1)

        # Frame holding register: stays valid until taken; a new frame only loads when free.
        with m.If(frame_done):
            m.d.sync += [
                self.frame.valid.eq(1),
                self.frame.payload.op.eq(op),
                self.frame.payload.length.eq(length),
            ]
        with m.Elif(self.frame.ready):
            m.d.sync += self.frame.valid.eq(0)

        # One-deep error register; later errors are counted while it is full.
        err_busy = self.error.valid & ~self.error.ready
        with m.If(err_valid):
            with m.If(err_busy):
                with m.If(self.dropped_errors != 0xFF):
                    m.d.sync += self.dropped_errors.eq(self.dropped_errors + 1)
            with m.Else():
                m.d.sync += [
                    self.error.valid.eq(1),
                    self.error.payload.code.eq(err_code),
                    # The opcode is in `op` once it has been received; before that `op` is 0.
                    self.error.payload.op.eq(op),
                ]
        with m.Elif(self.error.ready):
            m.d.sync += self.error.valid.eq(0)
        return m


class _TxState(enum.Enum, shape=3):
    IDLE = 0
    SYNC = 1
    OP = 2
    LEN0 = 3
    LEN1 = 4
    PAYLOAD = 5
    CRC0 = 6
    CRC1 = 7


class FrameTransmitter(wiring.Component):
    """Sends frames: SYNC, then escaped OP, LEN, payload and CRC.

    A frame starts with a transfer on ``header``; then exactly ``length`` payload bytes are taken
    from ``data``. The next header is taken only after the previous frame is completely sent (its
    last CRC byte transferred on ``o``). With the bytewise CRC (the default), ``o.ready`` always
    high and ``data`` always valid, one byte leaves per cycle within a frame; with
    ``serial_crc=True`` the CRC shifts in each byte of OP, LEN and payload while it is being sent,
    and the next byte is fetched once that is done: at most one such byte every nine cycles, which
    a UART transmitter (ten bit times per byte) never notices.

    ``o`` comes from registers, and ``data.ready`` does not depend on ``data.payload``, so the
    transmitter adds no long combinational path between its neighbours. With the serial CRC,
    ``data.ready`` does not depend on ``o.ready`` either.

    Parameters
    ----------
    max_payload : int
        Largest ``length`` a header may carry, 1..65535: the length counter only has the bits
        this needs (a longer frame would be sent wrong).
    serial_crc : bool
        Compute the CRC one bit per cycle: a few LUTs instead of about 50.

    Members
    -------
    header : In(stream.Signature(HeaderLayout))
        ``op`` and ``length`` of the next frame.
    data : In(stream.Signature(8))
        The payload bytes.
    o : Out(stream.Signature(8))
        Bytes for the UART transmitter.

    Raises
    ------
    ValueError
        If ``max_payload`` is out of range.
    TypeError
        If ``serial_crc`` is not a bool.
    """

    header: In(stream.Signature(HeaderLayout))
    data: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def __init__(self, *, max_payload=0xFFFF, serial_crc=False):
        self.max_payload = _check_options(self, "max_payload", max_payload, 0xFFFF)
        self.serial_crc = _check_options(self, "serial_crc", serial_crc)
        super().__init__()

    def elaborate(self, platform):
        m = Module()

        # Fetch stage: `state` says which raw byte comes next. `remaining` is loaded with the
        # length, so it also supplies the LEN bytes (it only counts down during the payload).
        state = Signal(_TxState)
        op = Signal(8, reset_less=True)
        remaining = Signal(range(self.max_payload + 1), reset_less=True)

        # Output stage: the raw byte being sent. A SYNC or ESC after the frame's SYNC goes out as
        # ESC, then the byte ^ 0x20.
        cur = Signal(8, reset_less=True)
        cur_valid = Signal()
        cur_sync = Signal()             # `cur` is the frame's SYNC: sent as it is
        esc_sent = Signal()             # the ESC prefix of `cur` has gone out
        cur_esc = _is_special(cur) & ~cur_sync
        prefix = cur_esc & ~esc_sent
        m.d.comb += [
            self.o.valid.eq(cur_valid),
            self.o.payload.eq(Mux(prefix, ESC, cur ^ Mux(cur_esc, ESC_XOR, 0))),
        ]
        sent = self.o.valid & self.o.ready
        with m.If(sent):
            with m.If(prefix):
                m.d.sync += esc_sent.eq(1)
            with m.Else():
                m.d.sync += [cur_valid.eq(0), esc_sent.eq(0)]

        raw = Signal(8)
        raw_valid = Signal()
        body = Signal()
        fetch = Signal()
        crc_start = Signal()
        if self.serial_crc:
            # The CRC shifts in the fetched byte from `cur` (it holds the raw byte until the next
            # fetch) while the byte is sent; the next fetch waits for it. So the paths from the
            # neighbours end at `cur`, and `data.ready` depends on registers only: the stage must
            # be empty (a UART takes a byte in one cycle, and then is busy for ten bit times).
            crc_busy = Signal()
            crc_take = Signal()
            crc_value, crc_ready = _crc16(m, serial=True, data=cur, valid=crc_busy, take=crc_take,
                                          start=crc_start)
            m.d.comb += crc_take.eq(crc_busy & crc_ready)
            with m.If(crc_take):
                m.d.sync += crc_busy.eq(0)
            with m.If(fetch):
                m.d.sync += crc_busy.eq(body)
            load = ~cur_valid & ~crc_busy
        else:
            # The CRC takes each body byte as it is fetched; its register is updated the cycle
            # after, which is in time for fetching CRC0: that happens one cycle after the last body
            # byte at the earliest.
            crc_value, _ = _crc16(m, serial=False, data=raw, valid=raw_valid & body,
                                  take=fetch & body, start=crc_start)
            load = ~cur_valid | (sent & ~prefix)

        # The next raw byte; OP, LEN and the payload go through the CRC.
        with m.Switch(state):
            with m.Case(_TxState.SYNC):
                m.d.comb += [raw.eq(SYNC), raw_valid.eq(1)]
            with m.Case(_TxState.OP):
                m.d.comb += [raw.eq(op), raw_valid.eq(1), body.eq(1)]
            with m.Case(_TxState.LEN0):
                m.d.comb += [raw.eq(remaining[:8]), raw_valid.eq(1), body.eq(1)]
            with m.Case(_TxState.LEN1):
                m.d.comb += [raw.eq(remaining[8:]), raw_valid.eq(1), body.eq(1)]
            with m.Case(_TxState.PAYLOAD):
                m.d.comb += [raw.eq(self.data.payload), raw_valid.eq(self.data.valid), body.eq(1)]
            with m.Case(_TxState.CRC0):
                m.d.comb += [raw.eq(crc_value[:8]), raw_valid.eq(1)]
            with m.Case(_TxState.CRC1):
                m.d.comb += [raw.eq(crc_value[8:]), raw_valid.eq(1)]

        m.d.comb += [
            fetch.eq(load & raw_valid),
            self.data.ready.eq((state == _TxState.PAYLOAD) & load),
        ]
        with m.If(fetch):
            m.d.sync += [cur.eq(raw), cur_valid.eq(1), cur_sync.eq(state == _TxState.SYNC)]

        # A new frame only once the previous one has completely left the output stage. While
        # idle, the header registers follow `header.payload` and the CRC restarts on every cycle:
        # only `state` depends on the handshake, which keeps `header.valid` off a wide fan-out.
        m.d.comb += self.header.ready.eq((state == _TxState.IDLE) & ~cur_valid)
        with m.If(state == _TxState.IDLE):
            m.d.comb += crc_start.eq(1)
            m.d.sync += [
                op.eq(self.header.payload.op),
                remaining.eq(self.header.payload.length),
            ]
        with m.If(self.header.valid & self.header.ready):
            m.d.sync += state.eq(_TxState.SYNC)

        with m.If(fetch):
            with m.Switch(state):
                with m.Case(_TxState.SYNC):
                    m.d.sync += state.eq(_TxState.OP)
                with m.Case(_TxState.OP):
                    m.d.sync += state.eq(_TxState.LEN0)
                with m.Case(_TxState.LEN0):
                    m.d.sync += state.eq(_TxState.LEN1)
                with m.Case(_TxState.LEN1):
                    with m.If(remaining == 0):
                        m.d.sync += state.eq(_TxState.CRC0)
                    with m.Else():
                        m.d.sync += state.eq(_TxState.PAYLOAD)
                with m.Case(_TxState.PAYLOAD):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.d.sync += state.eq(_TxState.CRC0)
                with m.Case(_TxState.CRC0):
                    m.d.sync += state.eq(_TxState.CRC1)
                with m.Case(_TxState.CRC1):
                    m.d.sync += state.eq(_TxState.IDLE)
        return m
