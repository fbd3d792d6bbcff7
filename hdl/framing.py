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

_CRC_PARAMETERS = crc.catalog.CRC16_CCITT_FALSE(data_width=8)


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

    Takes one byte per cycle and never stalls its input (``i.ready`` is always 1: a UART cannot be
    paused). Every byte produces at most one event, one cycle after it was taken: a frame on
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

    Members
    -------
    i : In(stream.Signature(8))
        Received bytes (from the UART); ``ready`` is always 1.
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
    """

    def __init__(self, max_payload=512):
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) or \
                not 1 <= max_payload <= 0xFFFF:
            raise reject(self, ValueError(f"max_payload must be an integer in 1..65535, "
                                          f"not {max_payload!r}"))
        self.max_payload = max_payload
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

        m.submodules.buffer = buffer = Memory(shape=8, depth=self.max_payload, init=[])
        wr = buffer.write_port()
        rd = buffer.read_port()
        m.d.comb += [rd.addr.eq(self.rd_addr), self.rd_data.eq(rd.data)]

        m.submodules.crc = crc_unit = crc.Processor(_CRC_PARAMETERS)

        state = Signal(_RxState)
        esc = Signal()                          # previous byte was ESC
        op = Signal(8)                          # opcode of the frame being received, 0 before it
        length = Signal(16)
        index = Signal(range(self.max_payload))
        crc_lo = Signal(8)
        overrun = Signal()                      # this frame lost (part of) its payload

        # The receiver cannot stall: the UART has nowhere to keep the bytes.
        m.d.comb += self.i.ready.eq(1)
        byte = self.i.payload
        take = self.i.valid

        # Buffer busy: a frame is pending and not being taken on this very cycle.
        busy = self.frame.valid & ~self.frame.ready

        # At most one event per byte; it is latched into `frame` or `error` below.
        err_valid = Signal()
        err_code = Signal(8)
        frame_done = Signal()

        # A data byte: an ordinary byte, or the second byte of an escape pair.
        value = Signal(8)
        is_data = Signal()

        with m.If(take):
            with m.If(byte == SYNC):
                with m.If(esc):
                    m.d.comb += [err_valid.eq(1), err_code.eq(ERROR_BAD_ESCAPE)]
                with m.Elif(~((state == _RxState.HUNT) | (state == _RxState.SKIP) |
                              (state == _RxState.OP))):
                    m.d.comb += [err_valid.eq(1), err_code.eq(ERROR_TRUNCATED)]
                m.d.comb += crc_unit.start.eq(1)
                m.d.sync += [state.eq(_RxState.OP), esc.eq(0), op.eq(0), index.eq(0),
                             overrun.eq(0)]
            with m.Elif((state == _RxState.HUNT) | (state == _RxState.SKIP)):
                pass
            with m.Elif(esc):
                m.d.sync += esc.eq(0)
                with m.If((byte == (SYNC ^ ESC_XOR)) | (byte == (ESC ^ ESC_XOR))):
                    m.d.comb += [is_data.eq(1), value.eq(byte ^ ESC_XOR)]
                with m.Else():
                    m.d.comb += [err_valid.eq(1), err_code.eq(ERROR_BAD_ESCAPE)]
                    m.d.sync += state.eq(_RxState.HUNT)
            with m.Elif(byte == ESC):
                m.d.sync += esc.eq(1)
            with m.Else():
                m.d.comb += [is_data.eq(1), value.eq(byte)]

        # The CRC covers OP, LEN and PAYLOAD: every data byte until the CRC field.
        m.d.comb += [
            crc_unit.data.eq(value),
            crc_unit.valid.eq(is_data & (state != _RxState.CRC0) & (state != _RxState.CRC1)),
        ]

        new_length = Cat(length[:8], value)
        with m.If(is_data):
            with m.Switch(state):
                with m.Case(_RxState.OP):
                    m.d.sync += [op.eq(value), state.eq(_RxState.LEN0)]
                with m.Case(_RxState.LEN0):
                    m.d.sync += [length[:8].eq(value), state.eq(_RxState.LEN1)]
                with m.Case(_RxState.LEN1):
                    m.d.sync += length[8:].eq(value)
                    with m.If(new_length > self.max_payload):
                        m.d.comb += [err_valid.eq(1), err_code.eq(ERROR_BAD_LENGTH)]
                        m.d.sync += state.eq(_RxState.SKIP)
                    with m.Elif(new_length == 0):
                        m.d.sync += state.eq(_RxState.CRC0)
                    with m.Else():
                        m.d.sync += state.eq(_RxState.PAYLOAD)
                with m.Case(_RxState.PAYLOAD):
                    with m.If(busy):
                        m.d.sync += overrun.eq(1)
                    m.d.comb += [wr.addr.eq(index), wr.data.eq(value), wr.en.eq(~busy)]
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == length - 1):
                        m.d.sync += state.eq(_RxState.CRC0)
                with m.Case(_RxState.CRC0):
                    m.d.sync += [crc_lo.eq(value), state.eq(_RxState.CRC1)]
                with m.Case(_RxState.CRC1):
                    m.d.sync += state.eq(_RxState.HUNT)
                    with m.If(Cat(crc_lo, value) != crc_unit.crc):
                        m.d.comb += [err_valid.eq(1), err_code.eq(ERROR_BAD_CRC)]
                    with m.Elif(overrun | busy):
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
    last CRC byte transferred on ``o``). With ``o.ready`` always high and ``data`` always valid,
    one byte leaves per cycle within a frame.

    ``o`` comes from registers, and ``data.ready`` does not depend on ``data.payload`` (only on
    ``o.ready``), so the transmitter adds no long combinational path between its neighbours.

    Members
    -------
    header : In(stream.Signature(HeaderLayout))
        ``op`` and ``length`` of the next frame.
    data : In(stream.Signature(8))
        The payload bytes.
    o : Out(stream.Signature(8))
        Bytes for the UART transmitter.
    """

    header: In(stream.Signature(HeaderLayout))
    data: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc_unit = crc.Processor(_CRC_PARAMETERS)

        # Fetch stage: `state` says which raw byte comes next.
        state = Signal(_TxState)
        op = Signal(8)
        length = Signal(16)
        remaining = Signal(16)

        # Output stage: the raw byte being sent, and whether it goes out as an escape pair.
        cur = Signal(8)
        cur_valid = Signal()
        cur_esc = Signal()
        esc_sent = Signal()             # the ESC prefix of `cur` has gone out

        prefix = cur_esc & ~esc_sent
        m.d.comb += [
            self.o.valid.eq(cur_valid),
            self.o.payload.eq(Mux(prefix, ESC, Mux(cur_esc, cur ^ ESC_XOR, cur))),
        ]
        sent = self.o.valid & self.o.ready
        advance = sent & ~prefix        # `cur` is completely sent
        with m.If(sent & prefix):
            m.d.sync += esc_sent.eq(1)
        with m.If(advance):
            m.d.sync += [esc_sent.eq(0), cur_valid.eq(0)]

        # The output stage can take a new raw byte this cycle.
        load = ~cur_valid | advance

        # The next raw byte; every byte after the SYNC is escaped if it is SYNC or ESC.
        raw = Signal(8)
        raw_valid = Signal()
        with m.Switch(state):
            with m.Case(_TxState.SYNC):
                m.d.comb += [raw.eq(SYNC), raw_valid.eq(1)]
            with m.Case(_TxState.OP):
                m.d.comb += [raw.eq(op), raw_valid.eq(1)]
            with m.Case(_TxState.LEN0):
                m.d.comb += [raw.eq(length[:8]), raw_valid.eq(1)]
            with m.Case(_TxState.LEN1):
                m.d.comb += [raw.eq(length[8:]), raw_valid.eq(1)]
            with m.Case(_TxState.PAYLOAD):
                m.d.comb += [raw.eq(self.data.payload), raw_valid.eq(self.data.valid),
                             self.data.ready.eq(load)]
            with m.Case(_TxState.CRC0):
                m.d.comb += [raw.eq(crc_unit.crc[:8]), raw_valid.eq(1)]
            with m.Case(_TxState.CRC1):
                m.d.comb += [raw.eq(crc_unit.crc[8:]), raw_valid.eq(1)]
        fetch = load & raw_valid
        with m.If(fetch):
            m.d.sync += [
                cur.eq(raw),
                cur_valid.eq(1),
                cur_esc.eq((state != _TxState.SYNC) & ((raw == SYNC) | (raw == ESC))),
            ]

        # The CRC register is updated the cycle after a body byte is fetched, which is in time
        # for fetching CRC0: that happens one cycle after the last body byte at the earliest.
        m.d.comb += [
            crc_unit.data.eq(raw),
            crc_unit.valid.eq(fetch & ((state == _TxState.OP) | (state == _TxState.LEN0) |
                                       (state == _TxState.LEN1) | (state == _TxState.PAYLOAD))),
        ]

        # A new frame only once the previous one has completely left the output stage.
        m.d.comb += self.header.ready.eq((state == _TxState.IDLE) & ~cur_valid)
        with m.If(self.header.valid & self.header.ready):
            m.d.comb += crc_unit.start.eq(1)
            m.d.sync += [
                op.eq(self.header.payload.op),
                length.eq(self.header.payload.length),
                remaining.eq(self.header.payload.length),
                state.eq(_TxState.SYNC),
            ]

        with m.If(fetch):
            with m.Switch(state):
                with m.Case(_TxState.SYNC):
                    m.d.sync += state.eq(_TxState.OP)
                with m.Case(_TxState.OP):
                    m.d.sync += state.eq(_TxState.LEN0)
                with m.Case(_TxState.LEN0):
                    m.d.sync += state.eq(_TxState.LEN1)
                with m.Case(_TxState.LEN1):
                    with m.If(length == 0):
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
