"""The board shell: a generated accelerator behind a UART and the framed host protocol.

:class:`MacArrayShell` is platform independent (``rx``/``tx`` pins in, LEDs out) so that the
same gateware runs on a board (:class:`~npuforge.boards.top.BoardTop` adds the clock, power-on
reset and pins) and in simulation (:class:`~npuforge.boards.host.VirtualBoard`).

Command handling (payload layouts in ``docs/protocol.md``): every command frame gets exactly one
reply frame (``op | 0x80``) or an ``ERROR`` frame, except ``RUN``, whose reply is a series of
``DATA`` frames with the results followed by one ``DONE`` frame.
"""

import struct
from contextlib import contextmanager

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..generators.mac_array import LoadTarget, MacArray, MacArrayConfig, SplitMacArray
from ..hdl._params import reject
from ..hdl.framing import FrameReceiver, FrameTransmitter
from ..hdl.uart import UARTRx, UARTTx
from .protocol import ErrorCode, Op

__all__ = ["DATA_CHUNK", "INFO_MAGIC", "MacArrayShell", "PROTOCOL_VERSION", "SET_SHAPE_FORMAT",
           "info_payload", "parse_info"]

PROTOCOL_VERSION = 1
INFO_MAGIC = b"NPUF"
DESIGN_MAC_ARRAY = 1
DESIGN_SNN_CORE = 2
REPLY = 0x80
#: Results per DATA frame (at most 4 bytes each: the payload stays within 256 bytes).
DATA_CHUNK = 64     # a power of two: the shell counts results in a frame with its low bits
#: SET_SHAPE payload: M, K, N (u16), flags (bit 0: raw int32 outputs), zero point, out_min, out_max.
SET_SHAPE_FORMAT = "<HHHBhhh"
_INFO_HEAD = "<4sBB8s"
_INFO_MAC = "<BBBBBBBBHHHBBII"


def info_payload(config, content_hash, clock_hz, baud):
    """The bytes an ``INFO`` command returns for a MAC-array shell.

    Parameters
    ----------
    config : MacArrayConfig
    content_hash : bytes or str
        The design's content hash (hex string or bytes); the first 8 bytes are sent.
    clock_hz, baud : int
        The shell's clock and UART baud rate, so the host can tell which bitstream it talks to.
    """
    if isinstance(content_hash, str):
        content_hash = bytes.fromhex(content_hash)
    head = struct.pack(_INFO_HEAD, INFO_MAGIC, PROTOCOL_VERSION, DESIGN_MAC_ARRAY,
                       content_hash[:8].ljust(8, b"\0"))
    body = struct.pack(_INFO_MAC, config.rows, config.cols, 0 if config.dataflow == "os" else 1,
                       config.in_bits, config.in_signed, config.w_bits, config.w_signed,
                       config.accumulator_bits, config.max_m, config.max_k, config.max_n,
                       config.out_signed, config.requant_radix, int(clock_hz), int(baud))
    return head + body


def config_hash(config):
    """A stable hash of a configuration (hex), for INFO when no manifest hash is given."""
    import hashlib
    import json
    text = json.dumps({"generator": "mac-array", "config": config.to_dict()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_info(payload):
    """Decode an ``INFO`` reply into a dict (``design``, ``hash``, ``config``, ``clock_hz``, ...).

    Raises
    ------
    ValueError
        If the payload is not an npuforge INFO reply.
    """
    n = struct.calcsize(_INFO_HEAD)
    if len(payload) < n or payload[:4] != INFO_MAGIC:
        raise ValueError(f"not an npuforge INFO reply: {payload[:8].hex()}")
    _, version, design, digest = struct.unpack(_INFO_HEAD, payload[:n])
    info = {"protocol": version, "hash": digest.hex()}
    if design == DESIGN_MAC_ARRAY:
        (rows, cols, dataflow, in_bits, in_signed, w_bits, w_signed, acc_bits, max_m, max_k, max_n,
         out_signed, radix, clock_hz, baud) = struct.unpack(_INFO_MAC, payload[n:])
        config = MacArrayConfig(rows=rows, cols=cols, dataflow=("os", "ws")[dataflow], in_bits=in_bits,
                                in_signed=bool(in_signed), w_bits=w_bits, w_signed=bool(w_signed),
                                max_m=max_m, max_k=max_k, max_n=max_n, out_signed=bool(out_signed),
                                requant_radix=radix)
        if config.accumulator_bits != acc_bits:
            config = MacArrayConfig(**{**config.to_dict(), "acc_bits": acc_bits})
        info.update(design="mac-array", config=config, clock_hz=clock_hz, baud=baud)
    else:
        info.update(design=f"unknown ({design})", config=None)
    return info


def connect_uart(m, shell, frx, ftx):
    """Add a UART of ``shell.divisor`` between ``shell``'s ``rx``/``tx`` pins and its framing.

    The submodules are ``uart_rx``, ``uart_tx``, ``frx`` (received bytes into the frame receiver
    ``frx``) and ``ftx`` (the frame transmitter ``ftx`` out through the UART), in that order.
    """
    m.submodules.uart_rx = urx = UARTRx(shell.divisor)
    m.submodules.uart_tx = utx = UARTTx(shell.divisor)
    m.submodules.frx = frx
    m.submodules.ftx = ftx
    m.d.comb += [urx.rx.eq(shell.rx), shell.tx.eq(utx.tx)]
    wiring.connect(m, urx.o, frx.i)
    wiring.connect(m, ftx.o, utx.i)


@contextmanager
def on_command(m, *, frx, err_code, err_op):
    """What a shell's ``IDLE`` state waits for; use inside ``with m.State("IDLE")``.

    An error of the frame receiver (bad CRC or length, a truncated frame, ...) is taken and goes
    to ``ERROR_HEADER``, its code and opcode in ``err_code``/``err_op`` for the ERROR frame; it
    comes before a waiting command frame. The body runs while a command frame is waiting.
    """
    with m.If(frx.error.valid):
        m.d.comb += frx.error.ready.eq(1)
        m.d.sync += [err_code.eq(frx.error.payload.code), err_op.eq(frx.error.payload.op)]
        m.next = "ERROR_HEADER"
    with m.Elif(frx.frame.valid):
        yield


def offer_header(m, ftx, op, length):
    """Offer a reply header to the frame transmitter (combinational, for one FSM state)."""
    m.d.comb += [ftx.header.valid.eq(1), ftx.header.payload.op.eq(op),
                 ftx.header.payload.length.eq(length)]


def reply_states(m, *, frx, ftx, op, info_rd, info_len, err_code, err_op, tx_idx, error_led):
    """The FSM states every shell's dispatcher shares; call inside its ``with m.FSM()``.

    ``INFO_HEADER``/``INFO_BYTES`` send the INFO reply from ``info_rd``, ``ACK`` an empty reply,
    ``RELEASE`` frees the frame buffer and returns to ``IDLE``; ``REJECT`` frees the buffer of a
    refused command and reports ``err_code`` for it; ``ERROR_HEADER``/``ERROR_BYTES`` send an ERROR
    frame ``[err_code, err_op]`` and light ``error_led`` (cleared by the next good reply).

    ``info_rd`` is a read port of the INFO bytes, asynchronous or synchronous (addressed one byte
    ahead; outside INFO_BYTES its address is 0). ``tx_idx`` counts the bytes sent: the dispatcher
    sets it to 0 before INFO_HEADER, ERROR_HEADER does so itself.
    """
    with m.State("INFO_HEADER"):
        offer_header(m, ftx, op | REPLY, info_len)
        with m.If(ftx.header.ready):
            m.next = "INFO_BYTES"
    with m.State("INFO_BYTES"):
        m.d.comb += [info_rd.addr.eq(tx_idx), ftx.data.valid.eq(1),
                     ftx.data.payload.eq(info_rd.data)]
        if info_rd.domain != "comb":
            # Data one cycle after the address: address the next byte as this one is taken.
            with m.If(ftx.data.ready):
                m.d.comb += info_rd.addr.eq(tx_idx + 1)
        with m.If(ftx.data.ready):
            m.d.sync += tx_idx.eq(tx_idx + 1)
            with m.If(tx_idx == info_len - 1):
                m.next = "RELEASE"
    with m.State("ACK"):
        offer_header(m, ftx, op | REPLY, 0)
        with m.If(ftx.header.ready):
            m.next = "RELEASE"
    with m.State("RELEASE"):
        m.d.comb += frx.frame.ready.eq(1)
        m.d.sync += error_led.eq(0)
        m.next = "IDLE"
    with m.State("REJECT"):
        # A command the dispatcher refuses: free its buffer, then report.
        m.d.comb += frx.frame.ready.eq(1)
        m.d.sync += err_op.eq(op)
        m.next = "ERROR_HEADER"
    with m.State("ERROR_HEADER"):
        offer_header(m, ftx, Op.ERROR, 2)
        with m.If(ftx.header.ready):
            m.d.sync += [tx_idx.eq(0), error_led.eq(1)]
            m.next = "ERROR_BYTES"
    with m.State("ERROR_BYTES"):
        # Two bytes: bit 0 of the count tells them apart.
        m.d.comb += [ftx.data.valid.eq(1),
                     ftx.data.payload.eq(Mux(tx_idx[0], err_op, err_code))]
        with m.If(ftx.data.ready):
            m.d.sync += tx_idx.eq(tx_idx + 1)
            with m.If(tx_idx[0]):
                m.next = "IDLE"


def operand_bytes(bits):
    """Bytes per operand in WRITE_X / WRITE_W payloads: 1 up to 8 bits, else 2 (little-endian)."""
    return 1 if bits <= 8 else 2


class MacArrayShell(wiring.Component):
    """A :class:`~npuforge.generators.MacArray` driven over a UART with the framed protocol.

    The shell is built for area: the frame receiver and transmitter use bit-serial CRCs (a UART
    byte lasts far longer than the 8 cycles they need), registers are only as wide as the values
    the configuration allows, SET_SHAPE is checked field by field as its bytes are read, and reply
    bytes are taken straight from where they are (the result on the array's output stream, the
    array's cycle counter, the INFO ROM) instead of being copied into shift registers.

    Parameters
    ----------
    config : MacArrayConfig
    info : bytes
        The INFO reply (see :func:`info_payload`).
    divisor : int
        Clock cycles per UART bit.
    max_payload : int
        Largest command payload accepted (the frame buffer size).
    array_domain : str
        Clock domain of the array core: ``"sync"`` (one domain), or another domain that the
        enclosing design drives (a :class:`~npuforge.generators.mac_array.SplitMacArray`).
    info_bram : bool
        Keep the INFO reply in a block RAM (one more, about 45 LUTs fewer) rather than in logic.

    Members
    -------
    rx : In(1)
        UART receive line (idle high).
    tx : Out(1)
        UART transmit line.
    leds : Out(3)
        0: a command is being handled; 1: the array is busy; 2: an error frame was sent (sticky
        until the next good command).
    """

    def __init__(self, config, *, info=b"", divisor=104, max_payload=512, array_domain="sync",
                 info_bram=True):
        if not isinstance(config, MacArrayConfig):
            raise reject(self, TypeError(f"config must be a MacArrayConfig, not {config!r}"))
        if max_payload < 16:
            raise reject(self, ValueError(f"max_payload must be at least 16, not {max_payload}"))
        self.config = config
        self.info = bytes(info) or info_payload(config, b"", 0, 0)
        self.divisor = divisor
        self.max_payload = max_payload
        self.array_domain = array_domain
        self.info_bram = bool(info_bram)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(3)})

    def elaborate(self, platform):
        cfg = self.config
        info = self.info
        m = Module()
        # A UART byte takes 10 * divisor >= 20 cycles: room for the bit-serial CRCs (9 cycles).
        frx = FrameReceiver(self.max_payload, serial_crc=True)
        # Replies: DATA frames of at most DATA_CHUNK results of up to 4 bytes, or INFO.
        ftx = FrameTransmitter(max_payload=max(4 * DATA_CHUNK, len(info)), serial_crc=True)
        connect_uart(m, self, frx, ftx)
        if self.array_domain == "sync":
            m.submodules.array = arr = MacArray(cfg)
        else:
            m.submodules.array = arr = SplitMacArray(cfg, self.array_domain)

        if self.info_bram:
            # Yosys keeps a ROM this small in logic unless told otherwise.
            m.submodules.info_rom = info_rom = Memory(shape=8, depth=len(info), init=list(info),
                                                      attrs={"ram_style": "block"})
            info_rd = info_rom.read_port()
        else:
            m.submodules.info_rom = info_rom = Memory(shape=8, depth=len(info), init=list(info))
            info_rd = info_rom.read_port(domain="comb")

        # -- registers ------------------------------------------------------------------------------
        # The frame receiver holds the command's opcode and length until the frame is taken, which
        # is after the reply (or, for RUN, once the command has started): no copies here. A
        # received length never exceeds max_payload.
        op = frx.frame.payload.op
        length = frx.frame.payload.length[:self.max_payload.bit_length()]
        # Error codes are 1..7.
        assert max(ErrorCode) < 8
        err_code = Signal(3)
        err_op = Signal(8)

        # The shape as SET_SHAPE leaves it; each register only as wide as its checked range (a
        # refused SET_SHAPE leaves shape_ok low, so RUN refuses whatever landed here).
        size_m = Signal(range(cfg.max_m + 1))
        size_k = Signal(range(cfg.max_k + 1))
        size_n = Signal(range(cfg.max_n + 1))
        raw = Signal()                  # flags bit 0: raw int32 outputs
        # zero point and limits fit the output type (checked), so one byte each.
        out_shape = signed(8) if cfg.out_signed else unsigned(8)
        zero_point, out_min, out_max = Signal(out_shape), Signal(out_shape), Signal(out_shape)
        # M * N, results per RUN: only as wide as the largest shape needs.
        total = Signal(range(cfg.max_m * cfg.max_n + 1))
        shape_ok = Signal()
        field_bad = Signal(6)           # SET_SHAPE: M, K, N, zero point, out_min, out_max refused
        m.d.comb += [
            arr.size_m.eq(size_m), arr.size_k.eq(size_k), arr.size_n.eq(size_n),
            arr.raw.eq(raw), arr.zero_point.eq(zero_point),
            arr.out_min.eq(out_min), arr.out_max.eq(out_max),
        ]

        # The byte counter: the command payload byte being read, or the reply byte being sent
        # (a command is read before its reply is sent). A DATA frame has up to 4 * 64 bytes.
        byte_idx = Signal(range(max(self.max_payload, len(info), 4 * DATA_CHUNK)))
        tx_idx = byte_idx
        chunk_bits = (DATA_CHUNK - 1).bit_length()     # DATA_CHUNK is a power of two
        # WRITE_*: the first bytes of a multi-byte element, shifted in from the top; the last
        # byte is used straight from the buffer. SET_SHAPE: the last bytes read.
        low = Signal(24, reset_less=True)
        elem_end = Signal()             # the byte read is the last of an element
        payload_end = Signal()          # ... and of the payload
        remaining = Signal.like(total)  # RUN: results still to send; SET_SHAPE: N countdown
        error_led = Signal()

        x_bytes = operand_bytes(cfg.in_bits)
        w_bytes = operand_bytes(cfg.w_bits)

        # WRITE_*: target and element size follow from the opcode (0x11..0x15), which the frame
        # receiver holds; `mask` is the element size - 1, so an element's last byte is the one
        # whose index has all `mask` bits set (elements start at payload byte 0).
        target = Signal(LoadTarget)
        mask = Signal(2)
        with m.Switch(op[:3]):
            for load_op, tgt, size in ((Op.WRITE_X, LoadTarget.X, x_bytes),
                                       (Op.WRITE_W, LoadTarget.W, w_bytes),
                                       (Op.WRITE_BIAS, LoadTarget.BIAS, 4),
                                       (Op.WRITE_MULT, LoadTarget.MULT, 4),
                                       (Op.WRITE_SHIFT, LoadTarget.SHIFT, 1)):
                with m.Case(load_op & 7):
                    m.d.comb += [target.eq(tgt), mask.eq(size - 1)]

        m.d.comb += frx.rd_addr.eq(byte_idx)
        # The command being handled (one-hot; 0: unknown opcode), and whether its payload length
        # (or, for RUN, the shape) is acceptable.
        cmd = Signal(data.StructLayout({"info": 1, "reset": 1, "set_shape": 1, "load": 1, "run": 1}))
        cmd_ok = Signal()
        y_ack = Signal()                # arr.y.ready, a one-cycle pulse
        m.d.comb += arr.y.ready.eq(y_ack)
        m.d.sync += y_ack.eq(0)

        with m.FSM(name="dispatch") as fsm:
            with m.State("IDLE"), on_command(m, frx=frx, err_code=err_code, err_op=err_op):
                # Decode the command into flags here (the frame's op and length hold until it
                # is taken), so that DISPATCH acts on registers, not on comparisons.
                m.d.sync += [byte_idx.eq(0), cmd.eq(0), cmd_ok.eq(0)]
                with m.Switch(op):
                    with m.Case(Op.INFO):
                        m.d.sync += cmd.info.eq(1)
                    with m.Case(Op.RESET):
                        m.d.sync += cmd.reset.eq(1)
                    with m.Case(Op.SET_SHAPE):
                        m.d.sync += [cmd.set_shape.eq(1),
                                     cmd_ok.eq(length == struct.calcsize(SET_SHAPE_FORMAT))]
                    for load_op, size in ((Op.WRITE_X, x_bytes), (Op.WRITE_W, w_bytes),
                                          (Op.WRITE_BIAS, 4), (Op.WRITE_MULT, 4),
                                          (Op.WRITE_SHIFT, 1)):
                        with m.Case(load_op):
                            # A whole number of elements, at least one.
                            m.d.sync += [cmd.load.eq(1), cmd_ok.eq(
                                (length != 0) & (length[:size.bit_length() - 1] == 0))]
                    with m.Case(Op.RUN):
                        m.d.sync += [cmd.run.eq(1), cmd_ok.eq(shape_ok)]
                m.next = "DISPATCH"

            with m.State("DISPATCH"):
                def refuse(code):
                    m.d.sync += err_code.eq(code)
                    m.next = "REJECT"

                with m.If(cmd.info):
                    m.next = "INFO_HEADER"
                with m.Elif(cmd.reset):
                    m.d.sync += [size_m.eq(0), size_k.eq(0), size_n.eq(0), shape_ok.eq(0), raw.eq(0)]
                    m.d.comb += arr.clear.eq(1)
                    m.next = "ACK"
                with m.Elif(cmd.as_value() == 0):
                    refuse(ErrorCode.UNKNOWN_OP)
                with m.Elif(~cmd_ok):
                    refuse(ErrorCode.BAD_ARGUMENT)
                with m.Elif(cmd.set_shape):
                    m.next = "SHAPE_READ"
                with m.Elif(cmd.load):
                    m.next = "LOAD_READ"
                with m.Else():                      # RUN
                    m.d.comb += arr.start.eq(1)
                    m.d.sync += remaining.eq(total)
                    m.next = "RUN_RELEASE"

            # -- SET_SHAPE: check each field as its last byte arrives, then M * N ----------------
            with m.State("SHAPE_READ"):
                # The buffer answers one cycle after the address, and the bytes then go through
                # `low` (shared with WRITE_*), so that the checks start from registers: at
                # byte_idx = j, low[16:] is byte j - 2 and `field` the u16/i16 ending with it.
                m.d.sync += [low.eq(Cat(low[8:], frx.rd_data)), byte_idx.eq(byte_idx + 1)]
                field = low[8:]
                if cfg.out_signed:
                    fits_byte = (field[7:] == 0) | (field[7:] == 0x1FF)
                else:
                    fits_byte = field[8:] == 0
                with m.Switch(byte_idx[:4]):      # SET_SHAPE has 13 bytes
                    # Each field's check has its own flag, so that no case decoding follows the
                    # comparisons; every SET_SHAPE writes all six.
                    for index, (j, size, limit) in enumerate(
                            ((3, size_m, cfg.max_m), (5, size_k, cfg.max_k), (7, size_n, cfg.max_n))):
                        with m.Case(j):
                            m.d.sync += [size.eq(field),
                                         field_bad[index].eq((field == 0) | (field > limit))]
                    with m.Case(8):
                        m.d.sync += raw.eq(field[8])
                    for index, (j, reg) in enumerate(((10, zero_point), (12, out_min))):
                        with m.Case(j):
                            m.d.sync += [reg.eq(field[:8]), field_bad[3 + index].eq(~fits_byte)]
                    with m.Case(14):
                        # out_max is also checked against out_min; both fit a byte.
                        if cfg.out_signed:
                            too_low = out_min > field[:8].as_signed()
                        else:
                            too_low = out_min > field[:8]
                        m.d.sync += [out_max.eq(field[:8]), field_bad[5].eq(~fits_byte | too_low)]
                        m.next = "SHAPE_CHECK"
            with m.State("SHAPE_CHECK"):
                with m.If(field_bad.any()):
                    m.d.sync += [shape_ok.eq(0), err_code.eq(ErrorCode.BAD_ARGUMENT)]
                    m.next = "REJECT"
                with m.Else():
                    m.d.sync += [total.eq(0), remaining.eq(size_n), shape_ok.eq(1)]
                    m.d.comb += arr.clear.eq(1)
                    m.next = "SHAPE_MUL"
            with m.State("SHAPE_MUL"):
                # total = M * N by adding M, N times: one adder and the RUN result counter, where
                # a `*` would cost a DSP block and shift-and-add a shifter and a bit counter. At
                # most max_n cycles, once per SET_SHAPE.
                with m.If(remaining == 0):
                    m.next = "ACK"
                with m.Else():
                    m.d.sync += [total.eq(total + size_m), remaining.eq(remaining - 1)]

            # -- WRITE_*: bytes -> little-endian elements -> the array's load stream -------------
            with m.State("LOAD_READ"):
                # Address byte_idx is on the buffer; its data arrives next cycle. Meanwhile the
                # decisions about this byte go into registers (shorter paths in LOAD_BYTE).
                m.d.sync += [elem_end.eq((byte_idx[:2] | ~mask) == 0b11),
                             payload_end.eq(byte_idx + 1 == length)]
                m.next = "LOAD_BYTE"
            with m.State("LOAD_BYTE"):
                with m.If(~elem_end):
                    m.d.sync += [low.eq(Cat(low[8:], frx.rd_data)), byte_idx.eq(byte_idx + 1)]
                    m.next = "LOAD_READ"
                with m.Else():
                    # The element's last byte is rd_data (held: the address does not move until
                    # the array takes the element). The array keeps only an element's own bits
                    # (its buffers are as wide as the operands), so the bits above a 1- or 2-byte
                    # element need not be cleared or sign-extended.
                    rd = frx.rd_data
                    if 2 in (x_bytes, w_bytes):
                        lane0 = Mux(mask[1], low[:8], Mux(mask[0], low[16:], rd))
                    else:
                        lane0 = Mux(mask[1], low[:8], rd)
                    value = Cat(lane0, Mux(mask[1], low[8:16], rd), low[16:], rd)
                    m.d.comb += [arr.load.valid.eq(1), arr.load.payload.target.eq(target),
                                 arr.load.payload.data.eq(value)]
                    with m.If(arr.load.ready):
                        m.d.sync += byte_idx.eq(byte_idx + 1)
                        with m.If(payload_end):
                            m.next = "ACK"
                        with m.Else():
                            m.next = "LOAD_READ"

            # -- RUN: DATA frames of up to DATA_CHUNK results, then DONE with the cycle count ---
            with m.State("RUN_RELEASE"):
                m.d.comb += frx.frame.ready.eq(1)
                m.next = "DATA_HEADER"
            with m.State("DATA_HEADER"):
                # Entered with remaining > 0 (a checked shape has M, N >= 1).
                count = Mux(remaining > DATA_CHUNK, DATA_CHUNK, remaining)
                offer_header(m, ftx, Op.DATA, Mux(raw, count << 2, count))
                with m.If(ftx.header.ready):
                    m.d.sync += tx_idx.eq(0)
                    m.next = "DATA_BYTES"
            with m.State("DATA_BYTES"):
                # The result stays on the array's output until its last byte is sent; then the
                # array gets `y.ready` from a register, on the next cycle, so that no path runs
                # from here into the array's output pipeline. Meanwhile `y.payload` is still the
                # old result: it is not offered again. tx_idx counts the frame's bytes: a result
                # has 4 raw, else 1, and a frame ends after DATA_CHUNK results or the last one.
                byte = Mux(raw, tx_idx[:2], 0)
                result = Mux(raw, tx_idx[2:2 + chunk_bits], tx_idx[:chunk_bits])
                m.d.comb += [ftx.data.valid.eq(arr.y.valid & ~y_ack),
                             ftx.data.payload.eq(arr.y.payload.word_select(byte, 8))]
                with m.If(ftx.data.valid & ftx.data.ready):
                    m.d.sync += tx_idx.eq(tx_idx + 1)
                    with m.If(byte == Cat(raw, raw)):
                        m.d.sync += [y_ack.eq(1), remaining.eq(remaining - 1)]
                        with m.If(remaining == 1):
                            m.next = "DONE_WAIT"
                        with m.Elif(result == DATA_CHUNK - 1):
                            m.next = "DATA_HEADER"
            with m.State("DONE_WAIT"):
                with m.If(~arr.busy):
                    m.next = "DONE_HEADER"
            with m.State("DONE_HEADER"):
                offer_header(m, ftx, Op.DONE, 4)
                with m.If(ftx.header.ready):
                    m.d.sync += tx_idx.eq(0)
                    m.next = "DONE_BYTES"
            with m.State("DONE_BYTES"):
                # The array's cycle count holds once it is idle.
                m.d.comb += [ftx.data.valid.eq(1),
                             ftx.data.payload.eq(arr.cycles.word_select(tx_idx[:2], 8))]
                with m.If(ftx.data.ready):
                    m.d.sync += tx_idx.eq(tx_idx + 1)
                    with m.If(tx_idx[:2] == 3):
                        m.d.sync += error_led.eq(0)
                        m.next = "IDLE"

            reply_states(m, frx=frx, ftx=ftx, op=op, info_rd=info_rd, info_len=len(info),
                         err_code=err_code, err_op=err_op, tx_idx=tx_idx, error_led=error_led)

        # One-hot: shallower next-state and decoding logic (about 2 MHz and 15 LUTs; 15 more
        # flip-flops). Yosys drops the state register's initial value when it re-encodes it (and
        # says so); the reset puts the FSM into IDLE, and on an iCE40 board the platform's
        # power-on reset (or BoardTop's own, with the PLL) always asserts it at start-up.
        fsm.state.attrs["fsm_encoding"] = "one-hot"
        m.d.comb += self.leds.eq(Cat(~fsm.ongoing("IDLE"), arr.busy, error_led))
        return m
