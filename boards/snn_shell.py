"""The spiking core's board shell: :class:`~npuforge.generators.SnnCore` behind the UART protocol.

:class:`SnnShell` is platform independent (``rx``/``tx`` pins in, LEDs out), like
:class:`~npuforge.boards.shell.MacArrayShell`: :class:`SnnBoardTop` puts it on a board, and
:class:`~npuforge.boards.snn_host.VirtualSnnBoard` runs it in simulation.

Commands (payloads in ``docs/protocol.md``, section "Spiking core")::

    INFO          -> INFO reply: design 2 (snn-core), every parameter, hash, clock, baud
    RESET         -> ACK; neuron state, recurrent queue and counters zeroed (weights kept)
    SNN_WRITE_W   start u32, count u16, count load words -> ACK
    SNN_SPIKES    u16 entries: axon address, or 0xFFFF = end of timestep
                  -> DATA frames with the output events, then the reply (u32 entries streamed)
    SNN_STEP      u16 n: n empty timesteps -> DATA frames, then the reply as for SNN_SPIKES
    SNN_READ      [flags] -> status byte and the counters (bit 0 of flags: clear them after)

Output events never deadlock the core: they go from ``events_out`` into a FIFO of
``fifo_depth`` entries, and a streamer, running beside the dispatcher, sends a ``DATA`` frame of
``chunk`` entries whenever that many are waiting. While the FIFO is full the core waits (it only
ever waits for the UART transmitter, which always drains). When every input entry of a command has
been taken, the streamer sends what is left, and the dispatcher answers once the core is idle and
the FIFO empty: every output event of a command reaches the host before its reply.
"""

import hashlib
import json
import struct
from contextlib import contextmanager

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..generators.snn_core import COUNTER_NAMES, MEMORY_KINDS, SnnCore, SnnCoreConfig
from ..hdl._params import reject
from ..hdl.framing import FrameReceiver, FrameTransmitter
from ..hdl.lif import (
    FIRE_MODES,
    LEAK_MODES,
    OVERFLOW_MODES,
    RESET_MODES,
    SYNAPSE_MODES,
    THRESHOLD_MODES,
    LifParams,
    const_multiply,
)
from .protocol import ErrorCode, Op
from .shell import (
    DESIGN_SNN_CORE,
    INFO_MAGIC,
    PROTOCOL_VERSION,
    REPLY,
    connect_uart,
    offer_header,
    on_command,
    reply_states,
)

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_FIFO_DEPTH",
    "EOT",
    "SNN_SHELL_RESOURCES",
    "SnnBoardTop",
    "SnnShell",
    "counter_bytes",
    "parse_snn_info",
    "snn_config_hash",
    "snn_info_payload",
    "snn_shell_resources",
    "word_bytes",
]

#: The end-of-timestep entry of SNN_SPIKES payloads and DATA frames.
EOT = 0xFFFF
#: Output events the shell buffers (one 4 kbit block RAM of 16-bit entries).
DEFAULT_FIFO_DEPTH = 256
#: Output events per DATA frame (256 payload bytes).
DEFAULT_CHUNK = 128
#: SNN_WRITE_W header: first load address (u32) and word count (u16).
WRITE_HEADER_FORMAT = "<IH"

#: What the shell around the core costs (UART, framing, dispatcher, output FIFO, streamer); added
#: to the core's estimate before a build. Measured on the UP5K: about 1350-1450 LUT4s beside the
#: core (Yosys), and whole designs of 2291 (ODIN-class core) and 3692 (digits network) nextpnr
#: logic cells, which the sum of the core's estimate and this stays above.
SNN_SHELL_RESOURCES = {"logic_cells": 1900, "bram": 2, "spram": 0, "dsp": 0}

_INFO_HEAD = "<4sBB8s"
# (name, struct code) of every parameter INFO reports, in payload order.
_CORE_FIELDS = (("neurons", "H"), ("axons", "H"), ("lanes", "B"), ("recurrent", "B"),
                ("recurrent_depth", "H"), ("weight_memory", "B"), ("state_memory", "B"),
                ("counter_width", "B"))
_NEURON_FIELDS = (("weight_width", "B"), ("membrane_width", "B"), ("membrane_signed", "B"),
                  ("overflow", "B"), ("leak", "B"), ("leak_shift", "B"), ("leak_decay", "H"),
                  ("leak_sub", "I"), ("synapse", "B"), ("current_width", "B"), ("current_decay", "H"),
                  ("current_overflow", "B"), ("input_shift", "B"), ("threshold", "I"),
                  ("threshold_mode", "B"), ("reset", "B"), ("refractory", "B"), ("bias", "B"),
                  ("bias_width", "B"), ("bias_shift", "B"), ("fire", "B"))
_SHELL_FIELDS = (("clock_hz", "I"), ("baud", "I"), ("fifo_depth", "H"), ("chunk", "H"),
                 ("max_payload", "H"))
_INFO_SNN = "<" + "".join(code for _, code in _CORE_FIELDS + _NEURON_FIELDS + _SHELL_FIELDS)
# Parameters sent as the index of their value in these tuples.
_ENUMS = {"weight_memory": MEMORY_KINDS, "state_memory": MEMORY_KINDS, "overflow": OVERFLOW_MODES,
          "leak": LEAK_MODES, "synapse": SYNAPSE_MODES, "current_overflow": OVERFLOW_MODES,
          "threshold_mode": THRESHOLD_MODES, "reset": RESET_MODES, "fire": FIRE_MODES}
_BOOLS = ("recurrent", "membrane_signed", "bias")


def word_bytes(config):
    """Bytes per load word in SNN_WRITE_W payloads: ``ceil(load_data_width / 8)``."""
    return -(-config.load_data_width // 8)


def counter_bytes(config):
    """Bytes per counter in SNN_READ replies: ``ceil(counter_width / 8)``."""
    return -(-config.counter_width // 8)


def snn_config_hash(config):
    """A stable hash of a core configuration (hex), for INFO when no manifest hash is given."""
    text = json.dumps({"generator": "snn-core", "config": config.to_dict()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _encode(name, value):
    if name in _ENUMS:
        return _ENUMS[name].index(value)
    if name == "recurrent_depth":
        return 0 if value is None else value
    return int(value)


def _decode(name, value):
    if name in _ENUMS:
        return _ENUMS[name][value]
    if name in _BOOLS:
        return bool(value)
    if name == "recurrent_depth":
        return None if value == 0 else value
    return value


def snn_info_payload(config, content_hash, clock_hz, baud, *, fifo_depth=DEFAULT_FIFO_DEPTH,
                     chunk=DEFAULT_CHUNK, max_payload=512):
    """The bytes an ``INFO`` command returns for a spiking-core shell.

    Parameters
    ----------
    config : SnnCoreConfig
    content_hash : bytes or str
        The design's content hash (hex string or bytes); the first 8 bytes are sent.
    clock_hz, baud : int
        The shell's clock and UART baud rate (0 in simulation).
    fifo_depth, chunk, max_payload : int
        The shell's output FIFO depth, events per DATA frame and largest command payload.

    Returns
    -------
    bytes
    """
    if isinstance(content_hash, str):
        content_hash = bytes.fromhex(content_hash)
    head = struct.pack(_INFO_HEAD, INFO_MAGIC, PROTOCOL_VERSION, DESIGN_SNN_CORE,
                       content_hash[:8].ljust(8, b"\0"))
    values = [_encode(name, getattr(config, name)) for name, _ in _CORE_FIELDS]
    values += [_encode(name, getattr(config.neuron, name)) for name, _ in _NEURON_FIELDS]
    values += [int(clock_hz), int(baud), fifo_depth, chunk, max_payload]
    return head + struct.pack(_INFO_SNN, *values)


def parse_snn_info(payload):
    """Decode a spiking-core ``INFO`` reply.

    Returns
    -------
    dict
        ``protocol``, ``hash`` (16 hex digits), ``design`` (``"snn-core"``), ``config``
        (:class:`SnnCoreConfig`), ``clock_hz``, ``baud``, ``fifo_depth``, ``chunk``,
        ``max_payload``.

    Raises
    ------
    ValueError
        If the payload is not the INFO reply of a spiking-core shell.
    """
    n = struct.calcsize(_INFO_HEAD)
    if len(payload) < n or payload[:4] != INFO_MAGIC:
        raise ValueError(f"not an npuforge INFO reply: {bytes(payload[:8]).hex()}")
    _, version, design, digest = struct.unpack(_INFO_HEAD, payload[:n])
    if design != DESIGN_SNN_CORE or len(payload) != n + struct.calcsize(_INFO_SNN):
        raise ValueError(f"not the INFO reply of a spiking core (design {design}, "
                         f"{len(payload)} bytes)")
    values = iter(struct.unpack(_INFO_SNN, payload[n:]))
    core = {name: _decode(name, next(values)) for name, _ in _CORE_FIELDS}
    neuron = {name: _decode(name, next(values)) for name, _ in _NEURON_FIELDS}
    shell = {name: next(values) for name, _ in _SHELL_FIELDS}
    config = SnnCoreConfig(neuron=LifParams(**neuron), **core)
    return {"protocol": version, "hash": digest.hex(), "design": "snn-core", "config": config,
            **shell}


def snn_shell_resources(config):
    """Pre-synthesis estimate of a complete spiking-core shell (core plus shell)."""
    est = config.estimate_resources()
    return {key: est.get(key, 0) + SNN_SHELL_RESOURCES[key] for key in SNN_SHELL_RESOURCES}


def _check_int(component, name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise reject(component, ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}"))


@contextmanager
def _buffer_byte(m, read_state, byte_state):
    """Two FSM states that read one byte of the frame buffer, which answers one cycle after the
    address: ``read_state`` waits that cycle, the body is ``byte_state``'s, with the byte on
    ``frx.rd_data``."""
    with m.State(read_state):
        m.next = byte_state
    with m.State(byte_state):
        yield


@contextmanager
def _buffer_u16(m, prefix, *, frx, byte_idx, low):
    """A little-endian u16 of the frame buffer at ``byte_idx``, in the states ``{prefix}_READ_LO``,
    ``{prefix}_LO``, ``{prefix}_READ_HI`` and ``{prefix}_HI``: the low byte goes to the 8-bit
    ``low`` (``byte_idx`` moves on), the body is ``{prefix}_HI``'s, with the whole value yielded."""
    with _buffer_byte(m, f"{prefix}_READ_LO", f"{prefix}_LO"):
        m.d.sync += [low.eq(frx.rd_data), byte_idx.eq(byte_idx + 1)]
        m.next = f"{prefix}_READ_HI"
    with _buffer_byte(m, f"{prefix}_READ_HI", f"{prefix}_HI"):
        yield Cat(low, frx.rd_data)


class SnnShell(wiring.Component):
    """A :class:`~npuforge.generators.SnnCore` driven over a UART with the framed protocol.

    Parameters
    ----------
    config : SnnCoreConfig
    info : bytes
        The INFO reply (see :func:`snn_info_payload`).
    divisor : int
        Clock cycles per UART bit.
    max_payload : int
        Largest command payload accepted (the frame buffer), 16..65535 and at least one
        SNN_WRITE_W header and word.
    fifo_depth : int
        Output events buffered, 4..4096.
    chunk : int
        Output events per DATA frame, 1..``fifo_depth``.

    Members
    -------
    rx : In(1)
        UART receive line (idle high).
    tx : Out(1)
        UART transmit line.
    leds : Out(3)
        0: a command is being handled; 1: the core is busy or output events are waiting; 2: an
        error frame was sent (until the next good command).

    Raises
    ------
    TypeError, ValueError
        A parameter is out of range.
    """

    def __init__(self, config, *, info=b"", divisor=104, max_payload=512,
                 fifo_depth=DEFAULT_FIFO_DEPTH, chunk=DEFAULT_CHUNK):
        if not isinstance(config, SnnCoreConfig):
            raise reject(self, TypeError(f"config must be a SnnCoreConfig, not {config!r}"))
        min_payload = max(16, struct.calcsize(WRITE_HEADER_FORMAT) + word_bytes(config))
        _check_int(self, "max_payload", max_payload, min_payload, 0xFFFF)
        _check_int(self, "fifo_depth", fifo_depth, 4, 4096)
        _check_int(self, "chunk", chunk, 1, fifo_depth)
        self.config = config
        self.divisor = divisor
        self.max_payload = max_payload
        self.fifo_depth = fifo_depth
        self.chunk = chunk
        self.info = bytes(info) or snn_info_payload(config, b"", 0, 0, fifo_depth=fifo_depth,
                                                    chunk=chunk, max_payload=max_payload)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(3)})

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        # Bit-serial CRCs (a few LUTs instead of about 50 each; the UART is slower still) and a
        # transmit length counter sized by the longest reply: INFO, the counters or a DATA frame.
        cb = counter_bytes(cfg)
        read_length = 1 + cb * len(COUNTER_NAMES)
        frx = FrameReceiver(self.max_payload, serial_crc=True)
        ftx = FrameTransmitter(max_payload=max(len(self.info), read_length, 2 * self.chunk, 4),
                               serial_crc=True)
        connect_uart(m, self, frx, ftx)
        m.submodules.core = core = SnnCore(cfg)

        # -- output events: core -> FIFO (the streamer below sends them as DATA frames) ----------
        out = core.events_out
        out_bits = len(out.payload.addr)
        m.submodules.out_fifo = fifo = SyncFIFOBuffered(width=out_bits + 1, depth=self.fifo_depth)
        m.d.comb += [fifo.w_data.eq(Cat(out.payload.addr, out.payload.eot)),
                     fifo.w_en.eq(out.valid), out.ready.eq(fifo.w_rdy)]

        info = self.info
        m.submodules.info_rom = info_rom = Memory(shape=8, depth=len(info), init=list(info))
        info_rd = info_rom.read_port(domain="comb")

        # -- registers ---------------------------------------------------------------------------
        op = Signal(8)
        length = Signal(16)
        byte_idx = Signal(16)
        err_code, err_op = Signal(8), Signal(8)
        tx_idx = Signal(16)
        error_led = Signal()
        wb = word_bytes(cfg)
        header_bytes = struct.calcsize(WRITE_HEADER_FORMAT)
        header = Signal(8 * header_bytes)
        word = Signal(8 * wb)
        word_pos = Signal(range(wb + 1))
        load_addr = Signal(32)
        load_left = Signal(16)
        entry = Signal(16)
        scanning = Signal()
        step_left = Signal(16)
        streamed = Signal(32)           # output entries sent during the current command
        reply_word = Signal(32)
        clear_after_read = Signal()

        # Counters as little-endian bytes, each zero-extended to whole bytes.
        pad = 8 * cb - cfg.counter_width
        counter_bits = Cat(*(Cat(getattr(core.counters, name), Const(0, pad)) if pad
                             else getattr(core.counters, name) for name in COUNTER_NAMES))

        evin = core.events_in
        in_bits = len(evin.payload.addr)
        ld = core.load
        ld_bits = len(ld.payload.addr)
        flush = Signal()
        run_phase = Signal()            # the streamer may use the transmitter
        stream_idle = Signal()

        m.d.comb += frx.rd_addr.eq(byte_idx)

        def send_header(op_value, length_value):
            offer_header(m, ftx, op_value, length_value)

        def bad_argument():
            m.d.sync += err_code.eq(ErrorCode.BAD_ARGUMENT)
            m.next = "REJECT"

        run_states = ("E_READ_LO", "E_LO", "E_READ_HI", "E_HI", "E_PUSH", "ST_PUSH", "RUN_RELEASE",
                      "DRAIN")
        with m.FSM(name="dispatch") as fsm:
            with m.State("IDLE"), on_command(m, frx=frx, err_code=err_code, err_op=err_op):
                m.d.sync += [op.eq(frx.frame.payload.op), length.eq(frx.frame.payload.length),
                             byte_idx.eq(0), word_pos.eq(0)]
                m.next = "DISPATCH"

            with m.State("DISPATCH"):
                with m.Switch(op):
                    with m.Case(Op.INFO):
                        m.d.sync += tx_idx.eq(0)
                        m.next = "INFO_HEADER"
                    with m.Case(Op.RESET):
                        m.d.comb += core.clear.eq(1)
                        m.next = "RESET_WAIT"
                    with m.Case(Op.SNN_WRITE_W):
                        with m.If(length < header_bytes + wb):
                            bad_argument()
                        with m.Else():
                            m.next = "WH_READ"
                    with m.Case(Op.SNN_SPIKES):
                        with m.If((length == 0) | length[0]):
                            bad_argument()
                        with m.Else():
                            m.d.sync += scanning.eq(1)
                            m.next = "E_READ_LO"
                    with m.Case(Op.SNN_STEP):
                        with m.If(length != 2):
                            bad_argument()
                        with m.Else():
                            m.next = "ST_READ_LO"
                    with m.Case(Op.SNN_READ):
                        with m.If(length > 1):
                            bad_argument()
                        with m.Elif(length == 1):
                            m.next = "RD_FLAGS_READ"
                        with m.Else():
                            m.d.sync += clear_after_read.eq(0)
                            m.next = "RD_HEADER"
                    with m.Default():
                        m.d.sync += err_code.eq(ErrorCode.UNKNOWN_OP)
                        m.next = "REJECT"

            # -- RESET: the core zeroes its state row by row; the counters start after that ------
            with m.State("RESET_WAIT"):
                with m.If(core.idle):
                    m.d.comb += core.clear_counters.eq(1)
                    m.next = "ACK"

            # -- SNN_WRITE_W: header, check, then words onto the core's load port ---------------
            with _buffer_byte(m, "WH_READ", "WH_BYTE"):
                m.d.sync += [header.eq(Cat(header[8:], frx.rd_data)), byte_idx.eq(byte_idx + 1)]
                with m.If(byte_idx == header_bytes - 1):
                    m.next = "WH_CHECK"
                with m.Else():
                    m.next = "WH_READ"
            with m.State("WH_CHECK"):
                start, count = header[:32], header[32:48]
                # A constant multiply: a `*` would cost a DSP block on the UP5K.
                need = const_multiply(count, wb) + header_bytes
                with m.If((count == 0) | (length != need) | (start + count > cfg.load_words)):
                    bad_argument()
                with m.Else():
                    m.d.sync += [load_addr.eq(start), load_left.eq(count)]
                    m.next = "W_READ"
            with _buffer_byte(m, "W_READ", "W_BYTE"):
                m.d.sync += [word.eq(Cat(word[8:], frx.rd_data)), byte_idx.eq(byte_idx + 1)]
                with m.If(word_pos == wb - 1):
                    m.d.sync += word_pos.eq(0)
                    m.next = "W_PUSH"
                with m.Else():
                    m.d.sync += word_pos.eq(word_pos + 1)
                    m.next = "W_READ"
            with m.State("W_PUSH"):
                m.d.comb += [ld.valid.eq(1), ld.payload.addr.eq(load_addr[:ld_bits]),
                             ld.payload.data.eq(word[:cfg.load_data_width])]
                with m.If(ld.ready):
                    m.d.sync += [load_addr.eq(load_addr + 1), load_left.eq(load_left - 1)]
                    with m.If(load_left == 1):
                        m.next = "ACK"
                    with m.Else():
                        m.next = "W_READ"

            # -- SNN_SPIKES: check every entry first (a bad one changes nothing), then push -----
            with _buffer_u16(m, "E", frx=frx, byte_idx=byte_idx, low=entry[:8]) as full:
                m.d.sync += [entry.eq(full), byte_idx.eq(byte_idx + 1)]
                with m.If(scanning):
                    with m.If((full != EOT) & (full >= cfg.axons)):
                        bad_argument()
                    with m.Elif(byte_idx + 1 == length):
                        m.d.sync += [scanning.eq(0), byte_idx.eq(0), streamed.eq(0)]
                        m.next = "E_READ_LO"
                    with m.Else():
                        m.next = "E_READ_LO"
                with m.Else():
                    m.next = "E_PUSH"
            with m.State("E_PUSH"):
                m.d.comb += [evin.valid.eq(1), evin.payload.addr.eq(entry[:in_bits]),
                             evin.payload.eot.eq(entry == EOT)]
                with m.If(evin.ready):
                    with m.If(byte_idx == length):
                        m.next = "RUN_RELEASE"
                    with m.Else():
                        m.next = "E_READ_LO"

            # -- SNN_STEP: n end-of-timestep markers ---------------------------------------------
            with _buffer_u16(m, "ST", frx=frx, byte_idx=byte_idx, low=step_left[:8]) as count:
                with m.If(count == 0):
                    bad_argument()
                with m.Else():
                    m.d.sync += [step_left.eq(count), streamed.eq(0)]
                    m.next = "ST_PUSH"
            with m.State("ST_PUSH"):
                m.d.comb += [evin.valid.eq(1), evin.payload.eot.eq(1)]
                with m.If(evin.ready):
                    m.d.sync += step_left.eq(step_left - 1)
                    with m.If(step_left == 1):
                        m.next = "RUN_RELEASE"

            # -- end of a run: free the buffer, let the streamer flush, then reply ---------------
            with m.State("RUN_RELEASE"):
                m.d.comb += frx.frame.ready.eq(1)
                m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += flush.eq(1)
                with m.If(core.idle & (fifo.level == 0) & stream_idle):
                    m.d.sync += [reply_word.eq(streamed), tx_idx.eq(0)]
                    m.next = "REPLY_HEADER"
            with m.State("REPLY_HEADER"):
                send_header(op | REPLY, 4)
                with m.If(ftx.header.ready):
                    m.next = "REPLY_BYTES"
            with m.State("REPLY_BYTES"):
                m.d.comb += [ftx.data.valid.eq(1), ftx.data.payload.eq(reply_word[:8])]
                with m.If(ftx.data.ready):
                    m.d.sync += [reply_word.eq(reply_word >> 8), tx_idx.eq(tx_idx + 1)]
                    with m.If(tx_idx == 3):
                        m.d.sync += error_led.eq(0)
                        m.next = "IDLE"

            # -- SNN_READ: status byte, then the counters ----------------------------------------
            with _buffer_byte(m, "RD_FLAGS_READ", "RD_FLAGS"):
                m.d.sync += clear_after_read.eq(frx.rd_data[0])
                m.next = "RD_HEADER"
            with m.State("RD_HEADER"):
                send_header(op | REPLY, read_length)
                with m.If(ftx.header.ready):
                    m.d.sync += tx_idx.eq(0)
                    m.next = "RD_BYTES"
            with m.State("RD_BYTES"):
                counter_byte = counter_bits.word_select((tx_idx - 1)[:ceil_log2(read_length)], 8)
                m.d.comb += [ftx.data.valid.eq(1),
                             ftx.data.payload.eq(Mux(tx_idx == 0, core.idle, counter_byte))]
                with m.If(ftx.data.ready):
                    m.d.sync += tx_idx.eq(tx_idx + 1)
                    with m.If(tx_idx == read_length - 1):
                        m.d.comb += core.clear_counters.eq(clear_after_read)
                        m.next = "RELEASE"

            reply_states(m, frx=frx, ftx=ftx, op=op, info_rd=info_rd, info_len=len(info),
                         err_code=err_code, err_op=err_op, tx_idx=tx_idx, error_led=error_led)

        m.d.comb += run_phase.eq(Cat(*(fsm.ongoing(name) for name in run_states)).any())

        # -- streamer: FIFO -> DATA frames of u16 entries, concurrently with the dispatcher -------
        # It owns the transmitter only while the dispatcher is in a run (which sends nothing), and
        # the dispatcher replies only after the streamer is idle again.
        s_count = Signal(range(self.chunk + 1))
        s_entry = Signal(16)
        with m.FSM(name="stream") as sfsm:
            with m.State("S_IDLE"):
                with m.If(run_phase & (fifo.level >= self.chunk)):
                    m.d.sync += s_count.eq(self.chunk)
                    m.next = "S_HEADER"
                with m.Elif(flush & (fifo.level != 0)):
                    m.d.sync += s_count.eq(fifo.level)
                    m.next = "S_HEADER"
            with m.State("S_HEADER"):
                send_header(Op.DATA, s_count << 1)
                with m.If(ftx.header.ready):
                    m.next = "S_TAKE"
            with m.State("S_TAKE"):
                m.d.comb += fifo.r_en.eq(1)
                with m.If(fifo.r_rdy):
                    m.d.sync += [s_entry.eq(Mux(fifo.r_data[out_bits], EOT, fifo.r_data[:out_bits])),
                                 s_count.eq(s_count - 1), streamed.eq(streamed + 1)]
                    m.next = "S_LO"
            with m.State("S_LO"):
                m.d.comb += [ftx.data.valid.eq(1), ftx.data.payload.eq(s_entry[:8])]
                with m.If(ftx.data.ready):
                    m.next = "S_HI"
            with m.State("S_HI"):
                m.d.comb += [ftx.data.valid.eq(1), ftx.data.payload.eq(s_entry[8:])]
                with m.If(ftx.data.ready):
                    with m.If(s_count == 0):
                        m.next = "S_IDLE"
                    with m.Else():
                        m.next = "S_TAKE"
        m.d.comb += stream_idle.eq(sfsm.ongoing("S_IDLE"))

        busy = ~core.idle | ~stream_idle | (fifo.level != 0)
        m.d.comb += self.leds.eq(Cat(~fsm.ongoing("IDLE"), busy, error_led))
        return m


class SnnBoardTop(Elaboratable):
    """A spiking-core shell on a board: the platform's clock and reset, UART pins, LEDs.

    The ``sync`` domain is left to the platform, which drives it from the board's default clock
    and adds a power-on reset long enough for iCE40 block RAM to become readable. LED 0 blinks
    (the bitstream runs), LED 1 shows a command or the core at work, LED 2 an error frame.

    Parameters
    ----------
    config : SnnCoreConfig
    board : str or BoardSpec
    baud : int
        UART bit rate (115200 by default).
    content_hash : str, optional
        The design's content hash for INFO (hex); defaults to the configuration's hash.
    fifo_depth, chunk, max_payload : int
        See :class:`SnnShell`.

    Raises
    ------
    NoUart
        If the board has no UART.
    TypeError, ValueError
        A bad parameter, or a baud rate the board cannot make within 2 % or carry.
    """

    def __init__(self, config, board, *, baud=115200, content_hash=None,
                 fifo_depth=DEFAULT_FIFO_DEPTH, chunk=DEFAULT_CHUNK, max_payload=512):
        from .top import board_link

        if not isinstance(config, SnnCoreConfig):
            raise reject(self, TypeError(f"config must be a SnnCoreConfig, not {config!r}"))
        spec, self.divisor = board_link(self, board, baud)
        self.config = config
        self.board = spec
        self.baud = baud
        self.content_hash = content_hash or snn_config_hash(config)
        self.fifo_depth = fifo_depth
        self.chunk = chunk
        self.max_payload = max_payload

    def elaborate(self, platform):
        m = Module()
        info = snn_info_payload(self.config, self.content_hash, self.board.clock_hz, self.baud,
                                fifo_depth=self.fifo_depth, chunk=self.chunk,
                                max_payload=self.max_payload)
        m.submodules.shell = shell = SnnShell(self.config, info=info, divisor=self.divisor,
                                              max_payload=self.max_payload,
                                              fifo_depth=self.fifo_depth, chunk=self.chunk)
        from .top import connect_pins
        connect_pins(m, platform, shell, self.board)
        return m
