"""Host driver of the spiking core: a real board on a serial port, or the same shell simulated.

:class:`SnnBoard` speaks the spiking-core commands of the framed protocol over any transport of
:class:`~npuforge.boards.host.Board`; :class:`SerialSnnBoard` opens a serial port and
:class:`VirtualSnnBoard` runs the very same shell gateware (:class:`~npuforge.boards.snn_shell.SnnShell`)
in the Amaranth simulator or, compiled, in Verilator::

    board = VirtualSnnBoard(SnnCoreConfig.odin(neurons=16, axons=16))
    board.load_weights(w)
    result = board.run(input_spikes)        # T x M booleans in, T x N spikes out
    result.spikes, result.counters["sops"]
"""

import struct
from dataclasses import dataclass, field

import numpy as np

from ..generators.snn_core import COUNTER_NAMES, SnnCoreConfig
from .host import Board, DeviceError, _SerialTransport, simulated_transport
from .protocol import FrameError, Op
from .shell import DESIGN_SNN_CORE, INFO_MAGIC, parse_info
from .snn_shell import (
    DEFAULT_CHUNK,
    DEFAULT_FIFO_DEPTH,
    EOT,
    WRITE_HEADER_FORMAT,
    SnnShell,
    counter_bytes,
    parse_snn_info,
    snn_config_hash,
    snn_info_payload,
    word_bytes,
)

__all__ = ["SerialSnnBoard", "SnnBoard", "SnnRunResult", "VirtualSnnBoard"]


@dataclass
class SnnRunResult:
    """What a run on the board produced.

    Members
    -------
    spikes : numpy.ndarray
        ``T x N`` bool: the neuron fired in the timestep.
    spike_counts : numpy.ndarray
        ``T x N`` int: spikes per neuron and timestep (more than one only with ``fire="event"``).
    events : list of list of int
        Per timestep, the output addresses in the order the core emitted them.
    counters : dict
        The core's counters for this run (``timesteps``, ``input_events``, ``recurrent_events``,
        ``sops``, ``output_spikes``, ``dropped``, ``cycles``).
    """

    spikes: np.ndarray
    spike_counts: np.ndarray
    events: list
    counters: dict = field(default_factory=dict)

    @property
    def cycles(self):
        """Busy cycles of the core (host I/O excluded)."""
        return self.counters["cycles"]

    @property
    def sops(self):
        """Synaptic operations performed."""
        return self.counters["sops"]


class SnnBoard(Board):
    """Protocol client for a spiking-core shell, over a byte transport.

    Parameters
    ----------
    transport
        ``write(data)``, ``read(timeout) -> bytes`` and ``close()`` (see
        :class:`~npuforge.boards.host.Board`).
    timeout : float
        Seconds to wait for each reply frame.
    max_payload : int
        Largest command payload to send (the device's own limit, from INFO, also applies).
    """

    def info(self):
        """The device's INFO: ``design``, ``hash``, ``config`` and, for a spiking core,
        ``clock_hz``, ``baud``, ``fifo_depth``, ``chunk`` and ``max_payload``."""
        payload = self.command(Op.INFO)
        if len(payload) > 5 and payload[:4] == INFO_MAGIC and payload[5] == DESIGN_SNN_CORE:
            self._info = parse_snn_info(payload)
            self.max_payload = min(self.max_payload, self._info["max_payload"])
        else:
            self._info = parse_info(payload)
        return self._info

    def _snn_config(self):
        cfg = self.config
        if not isinstance(cfg, SnnCoreConfig):
            raise RuntimeError(f"the device is a {self._info['design']}, not a spiking core")
        return cfg

    def reset(self):
        """Zero every neuron's state, the recurrent queue and the counters (weights are kept)."""
        self.command(Op.RESET)

    def load_weights(self, weights, bias=None):
        """Write a weight matrix (and biases) into the core.

        Parameters
        ----------
        weights : array_like
            ``axon_rows x N`` signed integers: ``weights[a, n]`` from axon ``a`` onto neuron ``n``
            (``axon_rows`` is ``M``, plus ``N`` with recurrence).
        bias : array_like, optional
            ``N`` signed integers (only for neurons with a bias; default zeros).

        Raises
        ------
        ValueError
            Weights or biases of the wrong shape or out of range.
        DeviceError
            The device refused a frame.
        """
        cfg = self._snn_config()
        words = cfg.pack_weights(weights, bias)
        wb = word_bytes(cfg)
        head = struct.calcsize(WRITE_HEADER_FORMAT)
        per_frame = max(1, (self.max_payload - head) // wb)
        mask = (1 << (8 * wb)) - 1
        for start in range(0, len(words), per_frame):
            chunk = words[start:start + per_frame]
            payload = struct.pack(WRITE_HEADER_FORMAT, chunk[0][0], len(chunk))
            payload += b"".join((data & mask).to_bytes(wb, "little") for _, data in chunk)
            self.command(Op.SNN_WRITE_W, payload)

    def read_counters(self, *, clear=False):
        """The core's counters, by name (see :data:`~npuforge.generators.snn_core.COUNTER_NAMES`).

        Parameters
        ----------
        clear : bool
            Zero them after reading.
        """
        cfg = self._snn_config()
        payload = self.command(Op.SNN_READ, b"\x01" if clear else b"")
        cb = counter_bytes(cfg)
        if len(payload) != 1 + cb * len(COUNTER_NAMES):
            raise RuntimeError(f"SNN_READ reply has {len(payload)} bytes, expected "
                               f"{1 + cb * len(COUNTER_NAMES)}")
        return {name: int.from_bytes(payload[1 + i * cb:1 + (i + 1) * cb], "little")
                for i, name in enumerate(COUNTER_NAMES)}

    def _stream(self, op, payload):
        """Send a run command; return the output entries of its DATA frames (checked by count)."""
        self.send(op, payload)
        entries = []
        while True:
            frame = self.receive()
            if isinstance(frame, FrameError):
                raise DeviceError(frame.code, frame.op)
            if frame.op == Op.ERROR:
                raise DeviceError(*(frame.payload + b"\0\0")[:2])
            if frame.op == Op.DATA:
                entries.extend(struct.unpack(f"<{len(frame.payload) // 2}H", frame.payload))
            elif frame.op == op | 0x80:
                sent = int.from_bytes(frame.payload[:4], "little")
                if sent != len(entries):
                    raise RuntimeError(f"device reports {sent} output events, received "
                                       f"{len(entries)}")
                return entries
            else:
                raise RuntimeError(f"unexpected frame 0x{frame.op:02x} during a spiking run")

    def run_entries(self, entries):
        """Send raw SNN_SPIKES entries (axon addresses and :data:`EOT` markers).

        Returns
        -------
        list of int
            The output entries (neuron addresses and :data:`EOT` markers), in order.
        """
        out = []
        per_frame = self.max_payload // 2
        for start in range(0, len(entries), per_frame):
            part = entries[start:start + per_frame]
            out += self._stream(Op.SNN_SPIKES, struct.pack(f"<{len(part)}H", *part))
        return out

    def step(self, timesteps=1):
        """Run ``timesteps`` timesteps without input; the output addresses of each."""
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or not 1 <= timesteps <= 0xFFFF:
            raise ValueError(f"timesteps must be an integer in 1..65535, not {timesteps!r}")
        return _split(self._stream(Op.SNN_STEP, struct.pack("<H", timesteps)))

    def run(self, input_spikes, *, reset=True):
        """Run a spike raster through the core.

        Parameters
        ----------
        input_spikes : array_like
            ``T x M`` booleans; the axons firing in a timestep are sent in ascending order,
            followed by an end-of-timestep marker.
        reset : bool
            Zero the neuron state and counters first (an independent inference); otherwise the
            run continues from the present state.

        Returns
        -------
        :class:`SnnRunResult`

        Raises
        ------
        ValueError
            ``input_spikes`` is not ``T x M``.
        DeviceError, BoardTimeout, RuntimeError
            The device refused a command, did not answer, or answered wrongly.
        """
        cfg = self._snn_config()
        x = np.asarray(input_spikes).astype(bool)
        if x.ndim != 2 or x.shape[1] != cfg.axons:
            raise ValueError(f"input_spikes must be T x {cfg.axons}, not of shape {x.shape}")
        if reset:
            self.reset()
            before = dict.fromkeys(COUNTER_NAMES, 0)
        else:
            before = self.read_counters()
        entries = []
        for row in x:
            entries.extend(int(a) for a in np.flatnonzero(row))
            entries.append(EOT)
        events = _split(self.run_entries(entries)) if entries else []
        if len(events) != x.shape[0]:
            raise RuntimeError(f"device closed {len(events)} timesteps, expected {x.shape[0]}")
        after = self.read_counters()
        mod = 1 << cfg.counter_width
        counters = {name: (after[name] - before[name]) % mod for name in COUNTER_NAMES}
        counts = np.zeros((x.shape[0], cfg.neurons), dtype=np.int64)
        for t, addrs in enumerate(events):
            for a in addrs:
                counts[t, a] += 1
        return SnnRunResult(spikes=counts > 0, spike_counts=counts, events=events, counters=counters)


def _split(entries):
    """Output entries -> per-timestep address lists (entries after the last marker are dropped)."""
    steps, cur = [], []
    for e in entries:
        if e == EOT:
            steps.append(cur)
            cur = []
        else:
            cur.append(e)
    if cur:
        raise RuntimeError(f"{len(cur)} output events arrived after the last end of timestep")
    return steps


class SerialSnnBoard(SnnBoard):
    """A flashed spiking-core board on a serial port (e.g. ``/dev/ttyUSB1`` on the iCEBreaker).

    Parameters
    ----------
    port : str
    baud : int
    **kwargs
        ``timeout`` and ``max_payload`` of :class:`SnnBoard`.

    Raises
    ------
    RuntimeError
        The port cannot be opened.
    """

    def __init__(self, port, baud=115200, **kwargs):
        super().__init__(_SerialTransport(port, baud), **kwargs)


class VirtualSnnBoard(SnnBoard):
    """The spiking-core shell in simulation, driven through the same protocol as a real board.

    Parameters
    ----------
    config : SnnCoreConfig
    divisor : int
        Simulated clock cycles per UART bit (a real board at 12 MHz and 115200 baud uses 104; a
        short bit time keeps long runs fast).
    backend : str
        ``"amaranth"`` (the Amaranth simulator; waveforms) or ``"verilator"`` (a compiled model in
        a subprocess, for long runs).
    content_hash : str, optional
        Reported by INFO (defaults to the configuration's hash).
    vcd : path, optional
        Waveform file (Amaranth back end only).
    timeout : float
        Seconds (wall clock) to wait for a reply.
    max_payload, fifo_depth, chunk : int
        The shell's frame buffer, output FIFO and DATA frame size (see
        :class:`~npuforge.boards.snn_shell.SnnShell`).

    Raises
    ------
    TypeError, ValueError
        A bad parameter.
    VerilatorUnavailable
        ``backend="verilator"`` without Verilator.
    """

    def __init__(self, config, *, divisor=4, backend="amaranth", content_hash=None, vcd=None,
                 timeout=600.0, max_payload=512, fifo_depth=DEFAULT_FIFO_DEPTH, chunk=DEFAULT_CHUNK):
        if not isinstance(config, SnnCoreConfig):
            raise TypeError(f"config must be a SnnCoreConfig, not {config!r}")
        if backend not in ("amaranth", "verilator"):   # before a shell exists to be left unused
            raise ValueError(f"backend must be 'amaranth' or 'verilator', not {backend!r}")
        if content_hash is None:
            content_hash = snn_config_hash(config)
        info = snn_info_payload(config, content_hash, 0, 0, fifo_depth=fifo_depth, chunk=chunk,
                                max_payload=max_payload)

        def make_shell():
            return SnnShell(config, info=info, divisor=divisor, max_payload=max_payload,
                            fifo_depth=fifo_depth, chunk=chunk)

        shell = make_shell()            # checks the parameters at once
        shells = iter([shell])
        if backend == "verilator":
            shell._MustUse__silence = True   # the Verilator back end may not need to elaborate it
        transport = simulated_transport(
            lambda: next(shells, None) or make_shell(), divisor, backend=backend, vcd=vcd,
            cache_key=("snn-core", config, info, divisor, max_payload, fifo_depth, chunk))
        super().__init__(transport, timeout=timeout, max_payload=max_payload)
        self.sim_config = config
        self.backend = backend

    @property
    def cycles(self):
        """Clock cycles simulated so far (host I/O included)."""
        return self.transport.cycles
