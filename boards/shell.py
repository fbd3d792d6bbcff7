"""The board shell: a generated accelerator behind a UART and the framed host protocol.

:class:`MacArrayShell` is platform independent (``rx``/``tx`` pins in, LEDs out) so that the
same gateware runs on a board (:class:`~npuforge.boards.top.BoardTop` adds the clock, power-on
reset and pins) and in simulation (:class:`~npuforge.boards.host.VirtualBoard`).

Command handling (payload layouts in ``docs/protocol.md``): every command frame gets exactly one
reply frame (``op | 0x80``) or an ``ERROR`` frame, except ``RUN``, whose reply is a series of
``DATA`` frames with the results followed by one ``DONE`` frame.
"""

import struct

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
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
DATA_CHUNK = 64
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


def offer_header(m, ftx, op, length):
    """Offer a reply header to the frame transmitter (combinational, for one FSM state)."""
    m.d.comb += [ftx.header.valid.eq(1), ftx.header.payload.op.eq(op),
                 ftx.header.payload.length.eq(length)]


def reply_states(m, *, frx, ftx, op, info_rd, info_len, err_code, err_op, tx_idx, error_led):
    """The FSM states every shell's dispatcher shares; call inside its ``with m.FSM()``.

    ``INFO_HEADER``/``INFO_BYTES`` send the INFO reply from ``info_rd`` (an asynchronous read
    port of the INFO bytes), ``ACK`` an empty reply, ``RELEASE`` frees the frame buffer and returns
    to ``IDLE``; ``REJECT`` frees the buffer of a refused command and reports ``err_code`` for it;
    ``ERROR_HEADER``/``ERROR_BYTES`` send an ERROR frame ``[err_code, err_op]`` and light
    ``error_led`` (cleared by the next good reply).
    """
    with m.State("INFO_HEADER"):
        offer_header(m, ftx, op | REPLY, info_len)
        with m.If(ftx.header.ready):
            m.next = "INFO_BYTES"
    with m.State("INFO_BYTES"):
        m.d.comb += [info_rd.addr.eq(tx_idx), ftx.data.valid.eq(1),
                     ftx.data.payload.eq(info_rd.data)]
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
        m.d.comb += [ftx.data.valid.eq(1),
                     ftx.data.payload.eq(Mux(tx_idx == 0, err_code, err_op))]
        with m.If(ftx.data.ready):
            m.d.sync += tx_idx.eq(tx_idx + 1)
            with m.If(tx_idx == 1):
                m.next = "IDLE"


def operand_bytes(bits):
    """Bytes per operand in WRITE_X / WRITE_W payloads: 1 up to 8 bits, else 2 (little-endian)."""
    return 1 if bits <= 8 else 2


class MacArrayShell(wiring.Component):
    """A :class:`~npuforge.generators.MacArray` driven over a UART with the framed protocol.

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

    def __init__(self, config, *, info=b"", divisor=104, max_payload=512, array_domain="sync"):
        if not isinstance(config, MacArrayConfig):
            raise reject(self, TypeError(f"config must be a MacArrayConfig, not {config!r}"))
        if max_payload < 16:
            raise reject(self, ValueError(f"max_payload must be at least 16, not {max_payload}"))
        self.config = config
        self.info = bytes(info) or info_payload(config, b"", 0, 0)
        self.divisor = divisor
        self.max_payload = max_payload
        self.array_domain = array_domain
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(3)})

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.submodules.frx = frx = FrameReceiver(self.max_payload)
        m.submodules.ftx = ftx = FrameTransmitter()
        if self.array_domain == "sync":
            m.submodules.array = arr = MacArray(cfg)
        else:
            m.submodules.array = arr = SplitMacArray(cfg, self.array_domain)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        wiring.connect(m, urx.o, frx.i)
        wiring.connect(m, ftx.o, utx.i)

        info = self.info
        m.submodules.info_rom = info_rom = Memory(shape=8, depth=len(info), init=list(info))
        info_rd = info_rom.read_port(domain="comb")

        # -- registers ------------------------------------------------------------------------------
        op = Signal(8)
        length = Signal(16)
        err_code, err_op = Signal(8), Signal(8)
        size_m, size_k, size_n = Signal(16), Signal(16), Signal(16)
        flags = Signal(8)
        raw = flags[0]
        zero_point, out_min, out_max = Signal(signed(16)), Signal(signed(16)), Signal(signed(16))
        # SET_SHAPE's payload lands byte by byte in these registers (no staging buffer).
        shape_regs = Cat(size_m, size_k, size_n, flags, zero_point, out_min, out_max)
        assert len(shape_regs) == 8 * struct.calcsize(SET_SHAPE_FORMAT)
        # M * N, results per RUN: only as wide as the largest shape needs.
        total = Signal(range(cfg.max_m * cfg.max_n + 1))
        shape_ok = Signal()
        m.d.comb += [
            arr.size_m.eq(size_m), arr.size_k.eq(size_k), arr.size_n.eq(size_n),
            arr.raw.eq(raw), arr.zero_point.eq(zero_point),
            arr.out_min.eq(out_min), arr.out_max.eq(out_max),
        ]

        byte_idx = Signal(16)           # payload byte being read
        word = Signal(32)               # little-endian assembly of an element
        word_pos = Signal(3)
        word_size = Signal(3)
        target = Signal(LoadTarget)
        n_bits = cfg.max_n.bit_length()  # a checked N has no higher bit set
        mul_step = Signal(range(max(2, n_bits)))
        mul_acc = Signal.like(total)
        mul_a = Signal.like(total)

        remaining = Signal.like(total)  # RUN: results still to send
        chunk_left = Signal(16)         # results left in the current DATA frame
        out_word = Signal(32)
        out_pos = Signal(3)
        out_size = Signal(3)
        tx_idx = Signal(16)
        cycles_out = Signal(32)
        error_led = Signal()

        x_bytes = operand_bytes(cfg.in_bits)
        w_bytes = operand_bytes(cfg.w_bits)

        m.d.comb += frx.rd_addr.eq(byte_idx)

        def send_header(op_value, length_value):
            offer_header(m, ftx, op_value, length_value)

        with m.FSM(name="dispatch") as fsm:
            with m.State("IDLE"):
                with m.If(frx.error.valid):
                    m.d.comb += frx.error.ready.eq(1)
                    m.d.sync += [err_code.eq(frx.error.payload.code), err_op.eq(frx.error.payload.op)]
                    m.next = "ERROR_HEADER"
                with m.Elif(frx.frame.valid):
                    m.d.sync += [op.eq(frx.frame.payload.op), length.eq(frx.frame.payload.length),
                                 byte_idx.eq(0), word_pos.eq(0), word.eq(0)]
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                def load(tgt, size):
                    with m.If((length == 0) | (length % size != 0)):
                        m.d.sync += err_code.eq(ErrorCode.BAD_ARGUMENT)
                        m.next = "REJECT"
                    with m.Else():
                        m.d.sync += [target.eq(tgt), word_size.eq(size)]
                        m.next = "LOAD_READ"

                with m.Switch(op):
                    with m.Case(Op.INFO):
                        m.d.sync += tx_idx.eq(0)
                        m.next = "INFO_HEADER"
                    with m.Case(Op.RESET):
                        m.d.sync += [size_m.eq(0), size_k.eq(0), size_n.eq(0), total.eq(0),
                                     shape_ok.eq(0), flags.eq(0)]
                        m.d.comb += arr.clear.eq(1)
                        m.next = "ACK"
                    with m.Case(Op.SET_SHAPE):
                        with m.If(length != struct.calcsize(SET_SHAPE_FORMAT)):
                            m.d.sync += err_code.eq(ErrorCode.BAD_ARGUMENT)
                            m.next = "REJECT"
                        with m.Else():
                            m.next = "SHAPE_READ"
                    with m.Case(Op.WRITE_X):
                        load(LoadTarget.X, x_bytes)
                    with m.Case(Op.WRITE_W):
                        load(LoadTarget.W, w_bytes)
                    with m.Case(Op.WRITE_BIAS):
                        load(LoadTarget.BIAS, 4)
                    with m.Case(Op.WRITE_MULT):
                        load(LoadTarget.MULT, 4)
                    with m.Case(Op.WRITE_SHIFT):
                        load(LoadTarget.SHIFT, 1)
                    with m.Case(Op.RUN):
                        with m.If(~shape_ok):
                            m.d.sync += err_code.eq(ErrorCode.BAD_ARGUMENT)
                            m.next = "REJECT"
                        with m.Else():
                            m.d.comb += arr.start.eq(1)
                            m.d.sync += [remaining.eq(total), out_size.eq(Mux(raw, 4, 1))]
                            m.next = "RUN_RELEASE"
                    with m.Default():
                        m.d.sync += err_code.eq(ErrorCode.UNKNOWN_OP)
                        m.next = "REJECT"

            # -- SET_SHAPE: read the payload, check it, M * N by shift-and-add ------------------
            with m.State("SHAPE_READ"):
                # The buffer answers one cycle after the address: byte_idx runs one ahead.
                # A failed check leaves shape_ok low, so RUN refuses whatever landed here.
                with m.Switch(byte_idx):
                    for index in range(len(shape_regs) // 8):
                        with m.Case(index + 1):
                            m.d.sync += shape_regs[8 * index:8 * index + 8].eq(frx.rd_data)
                with m.If(byte_idx == length):
                    m.next = "SHAPE_CHECK"
                with m.Else():
                    m.d.sync += byte_idx.eq(byte_idx + 1)
            with m.State("SHAPE_CHECK"):
                new_m, new_k, new_n = size_m, size_k, size_n
                new_zp, new_min, new_max = zero_point, out_min, out_max
                lo, hi = (-128, 127) if cfg.out_signed else (0, 255)
                bad = ((new_m == 0) | (new_m > cfg.max_m) | (new_k == 0) | (new_k > cfg.max_k) |
                       (new_n == 0) | (new_n > cfg.max_n) | (new_min > new_max) |
                       (new_zp < lo) | (new_zp > hi) | (new_min < lo) | (new_max > hi))
                with m.If(bad):
                    m.d.sync += [err_code.eq(ErrorCode.BAD_ARGUMENT), shape_ok.eq(0)]
                    m.next = "REJECT"
                with m.Else():
                    m.d.sync += [mul_acc.eq(0), mul_a.eq(new_m), mul_step.eq(0), shape_ok.eq(1)]
                    m.d.comb += arr.clear.eq(1)
                    m.next = "SHAPE_MUL"
            with m.State("SHAPE_MUL"):
                # total = M * N one bit of N per cycle; a `*` here would cost a DSP block.
                with m.If(size_n.bit_select(mul_step, 1)):
                    m.d.sync += mul_acc.eq(mul_acc + mul_a)
                m.d.sync += [mul_a.eq(mul_a << 1), mul_step.eq(mul_step + 1)]
                with m.If(mul_step == n_bits - 1):
                    m.next = "SHAPE_DONE"
            with m.State("SHAPE_DONE"):
                m.d.sync += total.eq(mul_acc)
                m.next = "ACK"

            # -- WRITE_*: bytes -> little-endian elements -> the array's load stream -------------
            with m.State("LOAD_READ"):
                # Address byte_idx is on the buffer; its data arrives next cycle.
                m.next = "LOAD_BYTE"
            with m.State("LOAD_BYTE"):
                shifted = Signal(32)
                m.d.comb += shifted.eq(Mux(word_pos == 0, frx.rd_data,
                                       Mux(word_pos == 1, Cat(word[0:8], frx.rd_data),
                                           Mux(word_pos == 2, Cat(word[0:16], frx.rd_data),
                                               Cat(word[0:24], frx.rd_data)))))
                m.d.sync += [word.eq(shifted), byte_idx.eq(byte_idx + 1)]
                with m.If(word_pos == word_size - 1):
                    m.d.sync += word_pos.eq(0)
                    m.next = "LOAD_PUSH"
                with m.Else():
                    m.d.sync += word_pos.eq(word_pos + 1)
                    m.next = "LOAD_READ"
            with m.State("LOAD_PUSH"):
                # Sign-extend 2-byte operands; 1-byte ones only use their low bits in the array.
                value = Mux(word_size == 2, word[:16].as_signed(), word.as_signed())
                m.d.comb += [arr.load.valid.eq(1), arr.load.payload.target.eq(target),
                             arr.load.payload.data.eq(value)]
                with m.If(arr.load.ready):
                    with m.If(byte_idx == length):
                        m.next = "ACK"
                    with m.Else():
                        m.next = "LOAD_READ"

            # -- RUN: DATA frames of up to DATA_CHUNK results, then DONE with the cycle count ---
            with m.State("RUN_RELEASE"):
                m.d.comb += frx.frame.ready.eq(1)
                m.next = "DATA_HEADER"
            with m.State("DATA_HEADER"):
                count = Mux(remaining > DATA_CHUNK, DATA_CHUNK, remaining)
                with m.If(remaining == 0):
                    m.next = "DONE_WAIT"
                with m.Else():
                    send_header(Op.DATA, Mux(raw, count << 2, count))
                    with m.If(ftx.header.ready):
                        m.d.sync += [chunk_left.eq(count), remaining.eq(remaining - count)]
                        m.next = "DATA_TAKE"
            with m.State("DATA_TAKE"):
                m.d.comb += arr.y.ready.eq(1)
                with m.If(arr.y.valid):
                    m.d.sync += [out_word.eq(arr.y.payload), out_pos.eq(0),
                                 chunk_left.eq(chunk_left - 1)]
                    m.next = "DATA_BYTES"
            with m.State("DATA_BYTES"):
                m.d.comb += [ftx.data.valid.eq(1), ftx.data.payload.eq(out_word[:8])]
                with m.If(ftx.data.ready):
                    m.d.sync += [out_word.eq(out_word >> 8), out_pos.eq(out_pos + 1)]
                    with m.If(out_pos == out_size - 1):
                        with m.If(chunk_left == 0):
                            m.next = "DATA_HEADER"
                        with m.Else():
                            m.next = "DATA_TAKE"
            with m.State("DONE_WAIT"):
                with m.If(~arr.busy):
                    m.d.sync += [cycles_out.eq(arr.cycles), out_pos.eq(0)]
                    m.next = "DONE_HEADER"
            with m.State("DONE_HEADER"):
                send_header(Op.DONE, 4)
                with m.If(ftx.header.ready):
                    m.next = "DONE_BYTES"
            with m.State("DONE_BYTES"):
                m.d.comb += [ftx.data.valid.eq(1), ftx.data.payload.eq(cycles_out[:8])]
                with m.If(ftx.data.ready):
                    m.d.sync += [cycles_out.eq(cycles_out >> 8), out_pos.eq(out_pos + 1)]
                    with m.If(out_pos == 3):
                        m.d.sync += error_led.eq(0)
                        m.next = "IDLE"

            reply_states(m, frx=frx, ftx=ftx, op=op, info_rd=info_rd, info_len=len(info),
                         err_code=err_code, err_op=err_op, tx_idx=tx_idx, error_led=error_led)

        m.d.comb += self.leds.eq(Cat(~fsm.ongoing("IDLE"), arr.busy, error_led))
        return m
