"""Host driver: talk to a MAC-array shell over a real UART or a simulated one.

:class:`Board` speaks the framed protocol (:mod:`npuforge.boards.protocol`) over a *transport*:
:class:`SerialBoard` opens a serial port (pyserial); :class:`VirtualBoard` runs the very same shell
gateware in a simulator, with bytes in and out through a simulated UART. Both give the same API::

    board = VirtualBoard(MacArrayConfig(rows=4, cols=4))
    board.info()["config"]
    y = board.gemm(x, w, bias, requant)       # bit-identical to the golden model
"""

import time
from collections import deque

import numpy as np

from ..generators.mac_array import MacArrayConfig
from ..sim.gemm import check_operands
from .protocol import ErrorCode, FrameDecoder, FrameError, Op, encode_frame
from .shell import SET_SHAPE_FORMAT, MacArrayShell, info_payload, operand_bytes, parse_info

__all__ = ["Board", "DeviceError", "SerialBoard", "VirtualBoard", "BoardTimeout"]

REPLY = 0x80


class DeviceError(RuntimeError):
    """The device answered a command with an ERROR frame."""

    def __init__(self, code, op):
        self.code = code
        self.op = op
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"code {code}"
        try:
            op_name = Op(op).name
        except ValueError:
            op_name = f"0x{op:02x}"
        super().__init__(f"device rejected {op_name}: {name}")


class BoardTimeout(TimeoutError):
    """No (complete) reply arrived in time."""


class Board:
    """Protocol client over a byte transport.

    Parameters
    ----------
    transport
        An object with ``write(data: bytes)``, ``read(timeout: float) -> bytes`` (whatever arrived,
        possibly nothing) and ``close()``.
    timeout : float
        Seconds to wait for a reply frame.
    max_payload : int
        Largest payload to put in one command frame (the device's frame buffer).
    """

    def __init__(self, transport, *, timeout=5.0, max_payload=512):
        self.transport = transport
        self.timeout = timeout
        self.max_payload = max_payload
        self._decoder = FrameDecoder(max_payload=0xFFFF)
        self._pending = deque()
        self._info = None
        self._loaded = {}
        self.last_cycles = None
        #: Array cycles of every RUN so far (from the DONE frames; host I/O excluded).
        self.total_cycles = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- frames ---------------------------------------------------------------------------------
    def send(self, op, payload=b""):
        """Send one command frame (no reply is awaited)."""
        data = encode_frame(op, payload)
        self.bytes_sent += len(data)
        self.transport.write(data)

    def receive(self, timeout=None):
        """The next frame (or :class:`FrameError`) from the device."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BoardTimeout(f"no reply from the device within {self.timeout:g} s")
            data = self.transport.read(remaining)
            self.bytes_received += len(data)
            self._pending.extend(self._decoder.feed(data))
            if not data and getattr(self.transport, "quiescent", False):
                # A simulated device that is idle with nothing in flight will never answer.
                raise BoardTimeout("no reply: the simulated device is idle with nothing in flight")
        return self._pending.popleft()

    def command(self, op, payload=b""):
        """Send a command and return its reply frame's payload.

        Raises
        ------
        DeviceError
            If the device answers with an ERROR frame.
        """
        self.send(op, payload)
        return self._expect(op | REPLY)

    def _expect(self, op):
        frame = self.receive()
        if isinstance(frame, FrameError):
            raise DeviceError(frame.code, frame.op)
        if frame.op == Op.ERROR:
            code, bad_op = (frame.payload + b"\0\0")[:2]
            raise DeviceError(code, bad_op)
        if frame.op != op:
            raise RuntimeError(f"expected a reply with op 0x{op:02x}, got 0x{frame.op:02x}")
        return frame.payload

    # -- commands -------------------------------------------------------------------------------
    def info(self):
        """The device's INFO: design, content hash, configuration, clock and baud."""
        self._info = parse_info(self.command(Op.INFO))
        return self._info

    @property
    def config(self):
        if self._info is None:
            self.info()
        return self._info["config"]

    def reset(self):
        """Forget the shape and restart the load counters."""
        self.command(Op.RESET)
        self._loaded.clear()

    def _write(self, op, data):
        """Send ``data`` in as many WRITE frames as the device's frame buffer needs."""
        step = self.max_payload - self.max_payload % 4
        for start in range(0, len(data), step):
            self.command(op, data[start:start + step])

    def gemm(self, x, w, bias=None, requant=None):
        """``requant(x @ w + bias)`` on the device; the result as an ``(M, N)`` int64 array.

        M and N may exceed the array's buffers: the host splits them into runs (``K`` must fit
        ``max_k``). Weights and per-channel parameters are written once and reused by later runs
        of the same shape.
        """
        cfg = self.config
        x = np.asarray(x)
        w = np.asarray(w)
        if x.ndim != 2 or w.ndim != 2:
            raise ValueError(f"x and w must be 2-dimensional, not {x.ndim} and {w.ndim}")
        big_m, big_n = x.shape[0], w.shape[1]
        y = np.zeros((big_m, big_n), dtype=np.int64)
        total_cycles = 0
        for n0 in range(0, big_n, cfg.max_n):
            n1 = min(n0 + cfg.max_n, big_n)
            b = None if bias is None else np.asarray(bias)[n0:n1]
            rq = None if requant is None else _slice_requant(requant, n0, n1)
            for m0 in range(0, big_m, cfg.max_m):
                m1 = min(m0 + cfg.max_m, big_m)
                part, cycles = self._gemm_once(cfg, x[m0:m1], w[:, n0:n1], b, rq)
                y[m0:m1, n0:n1] = part
                total_cycles += cycles
        self.last_cycles = total_cycles
        self.total_cycles += total_cycles
        return y

    def _gemm_once(self, cfg, x, w, bias, requant):
        x, w, bias = check_operands(cfg, x, w, bias, requant)
        m, k = x.shape
        n = w.shape[1]
        raw = requant is None
        zp, lo, hi = (0, 0, 0) if raw else (requant.zero_point, requant.out_min, requant.out_max)
        self.command(Op.SET_SHAPE, _pack_shape(m, k, n, raw, zp, lo, hi))
        # SET_SHAPE restarts the load counters but keeps the buffers: a buffer that already holds
        # exactly these words (same shape, same bytes) is not written again.
        for op, shape, data in (
            (Op.WRITE_W, (k, n), _operand_bytes(w, cfg.w_bits)),
            (Op.WRITE_BIAS, (n,), bias.astype("<i4").tobytes()),
            (Op.WRITE_MULT, (n,), None if raw else np.asarray(requant.mult, "<u4").tobytes()),
            (Op.WRITE_SHIFT, (n,), None if raw else np.asarray(requant.shift, "u1").tobytes()),
        ):
            if data is None:
                continue
            if self._loaded.get(op) == (shape, data):
                continue
            self._loaded.pop(op, None)
            self._write(op, data)
            self._loaded[op] = (shape, data)
        self._write(Op.WRITE_X, _operand_bytes(x, cfg.in_bits))
        self.send(Op.RUN)
        values = []
        while True:
            frame = self.receive()
            if isinstance(frame, FrameError):
                raise DeviceError(frame.code, frame.op)
            if frame.op == Op.ERROR:
                raise DeviceError(*(frame.payload + b"\0\0")[:2])
            if frame.op == Op.DATA:
                dtype = "<i4" if raw else ("i1" if cfg.out_signed else "u1")
                values.append(np.frombuffer(frame.payload, dtype=dtype))
            elif frame.op == Op.DONE:
                cycles = int.from_bytes(frame.payload[:4], "little")
                break
            else:
                raise RuntimeError(f"unexpected frame 0x{frame.op:02x} during RUN")
        flat = np.concatenate(values).astype(np.int64) if values else np.zeros(0, np.int64)
        if flat.size != m * n:
            raise RuntimeError(f"device returned {flat.size} results, expected {m * n}")
        rows, cols = cfg.output_order(m, n)
        y = np.zeros((m, n), dtype=np.int64)
        y[rows, cols] = flat
        return y, cycles

    def close(self):
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pack_shape(m, k, n, raw, zp, lo, hi):
    import struct
    return struct.pack(SET_SHAPE_FORMAT, m, k, n, 1 if raw else 0, zp, lo, hi)


def _operand_bytes(arr, bits):
    if operand_bytes(bits) == 1:
        return (np.asarray(arr, dtype=np.int64) & 0xFF).astype("u1").tobytes()
    return (np.asarray(arr, dtype=np.int64) & 0xFFFF).astype("<u2").tobytes()


def _slice_requant(requant, n0, n1):
    from dataclasses import replace
    return replace(requant, mult=tuple(np.asarray(requant.mult)[n0:n1].tolist()),
                   shift=tuple(np.asarray(requant.shift)[n0:n1].tolist()))


# -- transports -----------------------------------------------------------------------------------

class _SerialTransport:
    def __init__(self, port, baud):
        try:
            import serial
        except ImportError as exc:  # pragma: no cover - pyserial is a dependency
            raise RuntimeError("pyserial is needed to talk to a board: pip install pyserial") from exc
        try:
            self._port = serial.Serial(port, baud, timeout=0)
        except (OSError, serial.SerialException) as exc:
            raise RuntimeError(f"cannot open serial port {port!r}: {exc}") from exc

    def write(self, data):
        self._port.write(data)

    def read(self, timeout):
        self._port.timeout = min(timeout, 0.1)
        return self._port.read(4096)

    def close(self):
        self._port.close()


class SerialBoard(Board):
    """A board on a serial port (e.g. ``/dev/ttyUSB1`` for the iCEBreaker's FTDI channel B)."""

    def __init__(self, port, baud=115200, **kwargs):
        super().__init__(_SerialTransport(port, baud), **kwargs)


class _AmaranthUartTransport:
    """The shell in the Amaranth simulator, bytes through its UART pins bit by bit."""

    def __init__(self, shell, divisor, vcd=None):
        from amaranth.sim import Simulator

        self.shell = shell
        self.divisor = divisor
        self.to_device = deque()
        self.from_device = bytearray()
        self.cycles = 0
        self.period = 1e-6
        sim = Simulator(shell)
        sim.add_clock(self.period)
        sim.add_testbench(self._drive_rx, background=True)
        sim.add_testbench(self._sample_tx, background=True)
        sim.add_testbench(self._watch, background=True)
        self._rx_active = self._tx_active = self._device_busy = False
        self.sim = sim
        self._vcd = None
        if vcd is not None:
            self._vcd = sim.write_vcd(str(vcd))
            self._vcd.__enter__()

    # Plain delays rather than `tick().repeat()`: these loops never end, and a coroutine suspended
    # inside an async generator cannot be closed cleanly when the simulator is dropped.
    async def _drive_rx(self, ctx):
        bit_time = self.divisor * self.period
        while True:
            if not self.to_device:
                await ctx.delay(10 * bit_time)
                continue
            byte = self.to_device.popleft()
            self._rx_active = True
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(self.shell.rx, bit)
                await ctx.delay(bit_time)
            self._rx_active = bool(self.to_device)

    async def _sample_tx(self, ctx):
        bit_time = self.divisor * self.period
        while True:
            await ctx.negedge(self.shell.tx)
            self._tx_active = True
            await ctx.delay(1.5 * bit_time)         # middle of data bit 0
            byte = 0
            for i in range(8):
                byte |= ctx.get(self.shell.tx) << i
                await ctx.delay(bit_time)
            self.from_device.append(byte)           # now in the stop bit
            self._tx_active = False

    async def _watch(self, ctx):
        # Whether the shell is handling a command or computing, sampled every few bit times.
        while True:
            self._device_busy = bool(ctx.get(self.shell.leds[0]) or ctx.get(self.shell.leds[1]))
            await ctx.delay(4 * self.divisor * self.period)

    @property
    def quiescent(self):
        """Nothing in flight: no byte to send, none arriving, the shell idle. No reply can come."""
        return not self.to_device and not self._rx_active and not self._tx_active \
            and not self._device_busy

    def write(self, data):
        self.to_device.extend(data)

    def read(self, timeout):
        """Simulate until the device sends something, it is quiescent, or ``timeout`` (wall) ends."""
        deadline = time.monotonic() + max(timeout, 0.0)
        step = self.divisor * 20
        quiet_steps = 0
        while not self.from_device:
            self._run(step)
            quiet_steps = quiet_steps + 1 if self.quiescent else 0
            if quiet_steps >= 2 or time.monotonic() > deadline:
                break
        data = bytes(self.from_device)
        self.from_device.clear()
        return data

    def _run(self, cycles):
        self.cycles += cycles
        self.sim.run_until(self.cycles * self.period)

    def close(self):
        if self._vcd is not None:
            self._vcd.__exit__(None, None, None)
            self._vcd = None


def simulated_transport(make_shell, divisor, *, backend="amaranth", vcd=None, cache_key=None):
    """A transport to a shell simulated bit by bit on its UART pins.

    Parameters
    ----------
    make_shell : callable
        Returns the shell component (called at most once; not at all when a Verilator model for
        ``cache_key`` is already built).
    backend : str
        ``"amaranth"`` or ``"verilator"``.
    vcd : path, optional
        Waveform (Amaranth only).
    cache_key : hashable
        Identifies the shell for the Verilator model cache.
    """
    if backend not in ("amaranth", "verilator"):
        raise ValueError(f"backend must be 'amaranth' or 'verilator', not {backend!r}")
    if backend == "verilator":
        if vcd is not None:
            raise ValueError("vcd is not supported with backend='verilator'; use backend='amaranth' "
                             "for waveforms")
        from ..sim.verilator import VerilatorUartTransport
        # A factory: with the model already built, the shell need not be elaborated at all.
        return VerilatorUartTransport(make_shell, divisor, cache_key=cache_key)
    return _AmaranthUartTransport(make_shell(), divisor, vcd=vcd)


class VirtualBoard(Board):
    """The MAC-array shell in simulation, driven through the same protocol as a real board.

    Parameters
    ----------
    config : MacArrayConfig
    divisor : int
        Simulated clock cycles per UART bit (a real board at 12 MHz and 115200 baud uses 104; a
        short bit time keeps whole test sets fast).
    backend : str
        ``"amaranth"``: the Amaranth simulator; ``"verilator"``: a compiled Verilator model in a
        subprocess (:class:`~npuforge.sim.verilator.VerilatorUartTransport`), for long runs.
    content_hash : str
        Reported by INFO (defaults to the configuration's hash).
    """

    def __init__(self, config, *, divisor=4, backend="amaranth", content_hash=None, vcd=None,
                 timeout=600.0, max_payload=512):
        if not isinstance(config, MacArrayConfig):
            raise TypeError(f"config must be a MacArrayConfig, not {config!r}")
        if content_hash is None:
            from .shell import config_hash
            content_hash = config_hash(config)
        info = info_payload(config, content_hash, clock_hz=0, baud=0)

        def make_shell():
            return MacArrayShell(config, info=info, divisor=divisor, max_payload=max_payload)

        transport = simulated_transport(make_shell, divisor, backend=backend, vcd=vcd,
                                        cache_key=(config, info, divisor, max_payload))
        super().__init__(transport, timeout=timeout, max_payload=max_payload)
        self.sim_config = config

    @property
    def cycles(self):
        """Clock cycles simulated so far (host I/O included)."""
        return self.transport.cycles

