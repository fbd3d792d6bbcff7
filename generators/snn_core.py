"""The spiking-neuron core generator: an event-driven, time-multiplexed LIF core.

Architecture
------------
``N`` neurons are updated by ``P`` parallel :class:`~npuforge.hdl.lif.LifUnit` lanes. Neuron
``n`` lives in lane ``n % P`` of memory row ``n // P``: a row of the *state memory* holds the state
of ``P`` neurons (membrane, and where used synaptic current, timestep accumulator and refractory
counter), a row of the *weight memory* holds the ``P`` weights from one axon onto one row of
neurons (address ``axon * N/P + row``). The weight memory has ``M`` rows of axons, plus ``N``
with recurrent connections.

Input spikes arrive as address events (AER) on ``events_in``: ``{addr, eot}``, where ``eot = 1``
marks the end of a timestep (its ``addr`` is ignored). Each event *sweeps* the ``N/P`` rows: the
rows stream out of the state and weight memories, through the lanes and back into the state
memory, one row per cycle. The end-of-timestep marker sweeps once more (leak, threshold, reset,
bias). Output spikes leave on ``events_out`` as ``{addr, eot}`` events, ascending by address for
each sweep, and a marker with ``eot = 1`` closes every timestep. With ``recurrent``, spikes emitted
in timestep ``t`` are queued (at most ``recurrent_depth`` per timestep) and delivered at the start
of timestep ``t + 1`` as events of axons ``M + n``, before any external event: a recurrent
connection has a delay of one timestep. Timestep ``t + 1`` starts when its first input (an event
or its marker) arrives. Between events nothing toggles: memories are not enabled, counters and
pipeline registers hold.

An input event costs ``N/P + 2`` cycles, an end of timestep ``N/P + 3`` (with its marker), a
recurrent event ``N/P + 3`` (one to fetch it from its queue), and each output spike one more cycle
(spikes leave one per cycle while the sweep waits); see :meth:`SnnCoreConfig.cycles_estimate`.

Memories map to iCE40 block RAM (``amaranth.lib.memory.Memory``) or, on the UP5K, to SPRAM
(:class:`~npuforge.hdl.spram.Spram`): ``"auto"`` puts the weights in SPRAM when they would take more
than 8 block RAMs and fit, and the state when it would take more than 16. A state memory in
SPRAM (single-ported) halves the sweep rate: a row is read in one cycle and written in the next.

Weights and biases are loaded through ``load``, one memory word ``{addr, data}`` per transfer:
words ``0 .. weight_words-1`` are weight rows (``P`` weights, lane ``p`` in bits
``[p*w, (p+1)*w)``), words ``weight_words ..`` bias rows (``P`` biases alike).
:meth:`SnnCoreConfig.pack_weights` produces these words from a weight matrix. Loads are accepted
between events.

The state is zeroed after reset and on a pulse of ``clear`` (which also empties the recurrent
queue); counters are zeroed by a pulse of ``clear_counters``.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..hdl.lif import LifParams, LifUnit, accumulator_width, const_multiply, csd_digits
from ..hdl.spram import SPRAM_BLOCKS_UP5K, Spram, spram_blocks

__all__ = ["COUNTER_NAMES", "MEMORY_KINDS", "SnnCore", "SnnCoreConfig", "ebr_blocks"]

MEMORY_KINDS = ("auto", "bram", "spram")

#: Counters of the core, in the order of the ``counters`` member.
COUNTER_NAMES = ("timesteps", "input_events", "recurrent_events", "sops", "output_spikes",
                 "dropped", "cycles")

#: Weights go to SPRAM under "auto" when they would take more block RAMs than this.
AUTO_WEIGHT_EBR_LIMIT = 8
#: State goes to SPRAM under "auto" when it would take more block RAMs than this.
AUTO_STATE_EBR_LIMIT = 16

#: iCE40 4 kbit block RAM (EBR) aspect ratios: (width, depth).
_EBR_SHAPES = ((16, 256), (8, 512), (4, 1024), (2, 2048))


def ebr_blocks(width, depth):
    """4 kbit iCE40 block RAMs that a ``width x depth`` memory needs (best aspect ratio)."""
    if width <= 0 or depth <= 0:
        return 0
    return min(-(-width // w) * -(-depth // d) for w, d in _EBR_SHAPES)


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")


@dataclass(frozen=True)
class SnnCoreConfig:
    """Parameters of a spiking-neuron core.

    Parameters
    ----------
    neurons : int
        ``N``, 1..4096 (up to 1024 fit an iCE40UP5K with small state).
    axons : int
        ``M`` input axons, 1..4096.
    lanes : int
        ``P`` parallel neuron lanes: a power of two in 1..64 that divides ``neurons``.
    recurrent : bool
        Add ``N`` axons that carry the core's own spikes, delayed by one timestep.
    recurrent_depth : int or None
        Recurrent spikes queued per timestep, 1..neurons (``None``: ``neurons``); spikes beyond
        are counted in ``dropped`` and not delivered.
    neuron : :class:`~npuforge.hdl.lif.LifParams` or dict
        Neuron semantics (a dict is passed to :meth:`LifParams.from_dict`).
    weight_memory, state_memory : str
        ``"auto"``, ``"bram"`` or ``"spram"``.
    counter_width : int
        Width of each counter, 8..48.

    Raises
    ------
    TypeError, ValueError
        A parameter is out of range; the message names it, its value and the allowed range.
    """

    neurons: int = 64
    axons: int = 64
    lanes: int = 4
    recurrent: bool = False
    recurrent_depth: "int | None" = None
    neuron: LifParams = LifParams()
    weight_memory: str = "auto"
    state_memory: str = "auto"
    counter_width: int = 32

    def __post_init__(self):
        _check_int("neurons", self.neurons, 1, 4096)
        _check_int("axons", self.axons, 1, 4096)
        _check_int("lanes", self.lanes, 1, 64)
        if self.lanes & (self.lanes - 1) or self.neurons % self.lanes:
            raise ValueError(f"lanes must be a power of two in 1..64 that divides neurons "
                             f"({self.neurons}), not {self.lanes}")
        if not isinstance(self.recurrent, bool):
            raise TypeError(f"recurrent must be a bool, not {self.recurrent!r}")
        if self.recurrent_depth is not None:
            _check_int("recurrent_depth", self.recurrent_depth, 1, self.neurons)
        if isinstance(self.neuron, dict):
            object.__setattr__(self, "neuron", LifParams.from_dict(self.neuron))
        if not isinstance(self.neuron, LifParams):
            raise TypeError(f"neuron must be a LifParams or a dict, not {self.neuron!r}")
        for name in ("weight_memory", "state_memory"):
            value = getattr(self, name)
            if value not in MEMORY_KINDS:
                raise ValueError(f"{name} must be one of 'auto', 'bram', 'spram', not {value!r}")
        _check_int("counter_width", self.counter_width, 8, 48)
        blocks = self.spram_blocks
        if blocks > SPRAM_BLOCKS_UP5K:
            raise ValueError(f"SPRAM-mapped memories must fit {SPRAM_BLOCKS_UP5K} SB_SPRAM256KA blocks, "
                             f"not {blocks}")

    # -- derived figures -------------------------------------------------------------------------

    @property
    def rows(self):
        """Memory rows of neurons: ``N / P``."""
        return self.neurons // self.lanes

    @property
    def queue_depth(self):
        """Recurrent spikes queued per timestep (0 without recurrence)."""
        if not self.recurrent:
            return 0
        return self.neurons if self.recurrent_depth is None else self.recurrent_depth

    @property
    def axon_rows(self):
        """Rows of the weight matrix: ``M``, plus ``N`` with recurrence."""
        return self.axons + (self.neurons if self.recurrent else 0)

    @property
    def acc_width(self):
        """Width of the timestep accumulator (exact for one event per axon and timestep)."""
        return accumulator_width(self.neuron.weight_width, self.axons + self.queue_depth)

    @property
    def state_width(self):
        """Bits of stored state per neuron."""
        return self.neuron.state_width(self.acc_width)

    @property
    def weight_words(self):
        """Words of the weight memory."""
        return self.axon_rows * self.rows

    @property
    def weight_word_width(self):
        """Bits per weight word: ``P`` weights."""
        return self.lanes * self.neuron.weight_width

    @property
    def state_word_width(self):
        """Bits per state row: ``P`` neuron states."""
        return self.lanes * self.state_width

    @property
    def bias_words(self):
        """Words of the bias memory (0 without bias)."""
        return self.rows if self.neuron.bias else 0

    @property
    def load_words(self):
        """Addresses of the ``load`` port: weight words, then bias words."""
        return self.weight_words + self.bias_words

    @property
    def load_data_width(self):
        """Bits of ``load.payload.data``."""
        width = self.weight_word_width
        if self.neuron.bias:
            width = max(width, self.lanes * self.neuron.bias_width)
        return width

    def _auto(self, kind, width, depth, limit, spram_left):
        if kind != "auto":
            return kind
        if ebr_blocks(width, depth) > limit and spram_blocks(width, depth) <= spram_left:
            return "spram"
        return "bram"

    @property
    def weight_memory_kind(self):
        """``"bram"`` or ``"spram"``: where the weights live."""
        return self._auto(self.weight_memory, self.weight_word_width, self.weight_words,
                          AUTO_WEIGHT_EBR_LIMIT, SPRAM_BLOCKS_UP5K)

    @property
    def state_memory_kind(self):
        """``"bram"`` or ``"spram"``: where the neuron state lives."""
        used = (spram_blocks(self.weight_word_width, self.weight_words)
                if self.weight_memory_kind == "spram" else 0)
        return self._auto(self.state_memory, self.state_word_width, self.rows,
                          AUTO_STATE_EBR_LIMIT, SPRAM_BLOCKS_UP5K - used)

    @property
    def spram_blocks(self):
        """SPRAM blocks used."""
        blocks = 0
        if self.weight_memory_kind == "spram":
            blocks += spram_blocks(self.weight_word_width, self.weight_words)
        if self.state_memory_kind == "spram":
            blocks += spram_blocks(self.state_word_width, self.rows)
        return blocks

    @property
    def queue_index_width(self):
        """Address bits of one bank of the recurrent queue."""
        return max(1, ceil_log2(self.queue_depth + 1)) if self.recurrent else 0

    def memory_bits(self):
        """Bits of each memory: dict ``weights, state, bias, queue``."""
        return {
            "weights": self.weight_words * self.weight_word_width,
            "state": self.rows * self.state_word_width,
            "bias": self.bias_words * self.lanes * self.neuron.bias_width,
            "queue": (2 << self.queue_index_width) * max(1, ceil_log2(self.neurons))
            if self.recurrent else 0,
        }

    def estimate_resources(self):
        """Rough, conservative resource estimate for an iCE40 build.

        Returns
        -------
        dict
            ``logic_cells``, ``bram`` (4 kbit blocks), ``spram`` (256 kbit blocks), ``dsp``.
        """
        p = self.neuron
        vw = p.membrane_width
        bram = 0
        if self.weight_memory_kind == "bram":
            bram += ebr_blocks(self.weight_word_width, self.weight_words)
        if self.state_memory_kind == "bram":
            bram += ebr_blocks(self.state_word_width, self.rows)
        if p.bias:
            bram += ebr_blocks(self.lanes * p.bias_width, self.rows)
        if self.recurrent:
            bram += ebr_blocks(max(1, ceil_log2(self.neurons)), 2 << self.queue_index_width)
        # Per lane: update adders, overflow clamps, threshold compare, reset and write-back muxes.
        # The coefficients are fitted to nextpnr's counts for ODIN-, Loihi- and LIF-style cores
        # (1 to 16 lanes, with and without recurrence); the margin below keeps the estimate above
        # every one of them.
        lane = 7 * vw + 2 * p.weight_width
        if p.leak == "shift":
            lane += 2 * vw
        elif p.leak == "sub":
            lane += 3 * vw
        elif p.leak == "mul":
            lane += (len(csd_digits(4096 - p.leak_decay)) + 3) * (vw + 13)
        if p.synapse == "current":
            cw = p.current_width
            lane += 3 * cw + (len(csd_digits(4096 - p.current_decay)) + 3) * (cw + 13)
        if p.fire == "timestep":
            lane += 4 * self.acc_width
        if p.bias:
            lane += 3 * vw
        lane += 4 * p.refractory_width
        addr_bits = ceil_log2(max(2, self.weight_words))
        control = 120 + 4 * addr_bits + 2 * self.lanes
        if self.recurrent:
            control += 100 + 4 * ceil_log2(max(2, self.neurons))
        if self.state_memory_kind == "spram" or self.weight_memory_kind == "spram":
            control += self.state_word_width + 40
        counters = len(COUNTER_NAMES) * self.counter_width     # one LC per bit: flip-flop + carry
        cells = int(1.25 * (self.lanes * lane + control + counters))
        return {"logic_cells": cells, "bram": bram, "spram": self.spram_blocks, "dsp": 0}

    def sweep_cycles(self):
        """Cycles of one input event, from its acceptance to the next, without output spikes."""
        if self.state_memory_kind == "spram":
            return 2 * self.rows + 1
        return self.rows + 2

    def cycles_estimate(self, *, input_events, timesteps, output_spikes=0, recurrent_events=0):
        """Busy cycles (the ``cycles`` counter) for a workload, when fed without gaps.

        ``N/P + 2`` per input event, ``N/P + 3`` per timestep (its end-of-timestep sweep and
        marker), ``N/P + 3`` per recurrent event, and one per output spike. Exact for
        ``fire="timestep"`` with the state in block RAM; with ``fire="event"`` an upper bound (the
        spikes of an event's last row leave while the next event starts). With the state in
        SPRAM, rows take two cycles each and spikes may overlap the second.

        Returns
        -------
        int
        """
        sweep = self.sweep_cycles()
        return (input_events * sweep + timesteps * (sweep + 1) + recurrent_events * (sweep + 1)
                + output_spikes)

    # -- weights ---------------------------------------------------------------------------------

    def check_weights(self, weights, bias=None):
        """Validate a weight matrix (and bias vector) and return them as int64 arrays.

        Raises
        ------
        ValueError
            Wrong shape, or a value out of range.
        """
        w = np.asarray(weights)
        shape = (self.axon_rows, self.neurons)
        if w.shape != shape or not np.issubdtype(w.dtype, np.integer):
            raise ValueError(f"weights must be an integer array of shape {shape}, not {w.dtype} "
                             f"of shape {w.shape}")
        ww = self.neuron.weight_width
        lo, hi = -(1 << (ww - 1)), (1 << (ww - 1)) - 1
        if w.min() < lo or w.max() > hi:
            raise ValueError(f"weights must be integers in {lo}..{hi}, not {w.min()}..{w.max()}")
        b = None
        if self.neuron.bias:
            b = np.zeros(self.neurons, dtype=np.int64) if bias is None else np.asarray(bias)
            if b.shape != (self.neurons,) or not np.issubdtype(b.dtype, np.integer):
                raise ValueError(f"bias must be an integer array of shape ({self.neurons},), not "
                                 f"{b.dtype} of shape {b.shape}")
            bw = self.neuron.bias_width
            blo, bhi = -(1 << (bw - 1)), (1 << (bw - 1)) - 1
            if b.min() < blo or b.max() > bhi:
                raise ValueError(f"bias must be integers in {blo}..{bhi}, not {b.min()}..{b.max()}")
            b = b.astype(np.int64)
        elif bias is not None:
            raise ValueError("bias must be None when the neurons have no bias")
        return w.astype(np.int64), b

    def _pack(self, values, width):
        """Pack rows of ``P`` signed values into words (lane ``p`` in bits ``p*width..``)."""
        mask = (1 << width) - 1
        words = []
        for row in values.reshape(-1, self.lanes):
            word = 0
            for lane, value in enumerate(row):
                word |= (int(value) & mask) << (lane * width)
            words.append(word)
        return words

    def weight_words_of(self, weights):
        """Weight-memory contents for ``weights`` (``axon_rows x N``), in address order."""
        w, _ = self.check_weights(weights, np.zeros(self.neurons, dtype=np.int64)
                                  if self.neuron.bias else None)
        return self._pack(w, self.neuron.weight_width)

    def bias_words_of(self, bias):
        """Bias-memory contents for ``bias`` (``N``), in address order."""
        b = np.asarray(bias, dtype=np.int64)
        return self._pack(b, self.neuron.bias_width)

    def pack_weights(self, weights, bias=None):
        """Words to send on the ``load`` port for a weight matrix and bias.

        Parameters
        ----------
        weights : array_like
            ``axon_rows x N`` signed integers: ``weights[a, n]`` from axon ``a`` onto neuron ``n``.
        bias : array_like, optional
            ``N`` signed integers (only with ``neuron.bias``; default zeros).

        Returns
        -------
        list of (int, int)
            ``(addr, data)`` pairs, every weight word then every bias word.
        """
        w, b = self.check_weights(weights, bias)
        words = list(enumerate(self._pack(w, self.neuron.weight_width)))
        if b is not None:
            base = self.weight_words
            words += [(base + i, d) for i, d in enumerate(self._pack(b, self.neuron.bias_width))]
        return words

    # -- serialization ---------------------------------------------------------------------------

    def to_dict(self):
        """Parameters as a plain (nested) dict, for TOML and manifests.

        ``recurrent_depth`` is left out when it is ``None`` (TOML has no null).
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["neuron"] = self.neuron.to_dict()
        if d["recurrent_depth"] is None:
            del d["recurrent_depth"]
        return d

    @classmethod
    def from_dict(cls, values):
        """Build from a dict as written by :meth:`to_dict`.

        Raises
        ------
        ValueError
            An unknown key is present.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown snn-core parameter(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes):
        """Copy with some parameters changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def odin(cls, *, neurons=256, axons=256, lanes=4, threshold=64, leak=1, **kwargs):
        """An ODIN-class core: ``neurons x axons`` 4-bit synapses, ODIN's LIF neuron.

        See :meth:`~npuforge.hdl.lif.LifParams.odin` for the neuron.
        """
        return cls(neurons=neurons, axons=axons, lanes=lanes,
                   neuron=LifParams.odin(threshold=threshold, leak=leak), **kwargs)

    @classmethod
    def loihi(cls, *, neurons=64, axons=64, lanes=4, vth=10, du=0, dv=0, bias=False, bias_exp=0,
              **kwargs):
        """A core of Loihi CUBA LIF neurons (see :meth:`~npuforge.hdl.lif.LifParams.loihi`)."""
        return cls(neurons=neurons, axons=axons, lanes=lanes,
                   neuron=LifParams.loihi(vth=vth, du=du, dv=dv, bias=bias, bias_exp=bias_exp),
                   **kwargs)


class SnnCore(wiring.Component):
    """Event-driven spiking-neuron core (see the module docstring for the architecture).

    Parameters
    ----------
    config : :class:`SnnCoreConfig`
    weights : array_like, optional
        Initial weights (``axon_rows x N``), preloaded into the memory instead of through
        ``load`` (block RAM: in the bitstream; SPRAM: in simulation only).
    bias : array_like, optional
        Initial biases (``N``), preloaded likewise.

    Members
    -------
    events_in : ``In(stream.Signature({addr, eot}))``
        Input address events; ``eot = 1`` ends a timestep. Addresses ``>= axons`` are ignored.
    events_out : ``Out(stream.Signature({addr, eot}))``
        Output spikes; a marker with ``eot = 1`` ends each timestep. The core waits while
        ``ready`` is low.
    load : ``In(stream.Signature({addr, data}))``
        Weight and bias words (see :meth:`SnnCoreConfig.pack_weights`).
    clear : ``In(1)``
        Pulse: zero every neuron's state and the recurrent queue (taken when the core is idle).
    clear_counters : ``In(1)``
        Pulse: zero the counters.
    idle : ``Out(1)``
        Nothing in progress: every accepted event and marker is fully processed (recurrent
        events wait for the next timestep's first input).
    counters : ``Out(StructLayout)``
        ``timesteps, input_events, recurrent_events, sops, output_spikes, dropped, cycles``
        (``cycles`` counts the cycles in which the core is not idle waiting for input).
    trace_valid, trace_row, trace_v, trace_u : ``Out``
        During the end-of-timestep sweep, the membrane (and current) written back for row
        ``trace_row``, lane by lane (for waveforms and membrane recording).

    Raises
    ------
    TypeError
        ``config`` is not a :class:`SnnCoreConfig`.
    """

    def __init__(self, config, *, weights=None, bias=None):
        if not isinstance(config, SnnCoreConfig):
            raise TypeError(f"config must be a SnnCoreConfig, not {config!r}")
        self.config = config
        self._weight_init = None
        self._bias_init = None
        if weights is not None:
            w, b = config.check_weights(weights, bias)
            self._weight_init = config._pack(w, config.neuron.weight_width)
            if b is not None:
                self._bias_init = config._pack(b, config.neuron.bias_width)
        elif bias is not None:
            raise ValueError("bias must be given together with weights")
        p = config.neuron
        in_layout = data.StructLayout({"addr": max(1, ceil_log2(config.axons)), "eot": 1})
        out_layout = data.StructLayout({"addr": max(1, ceil_log2(config.neurons)), "eot": 1})
        load_layout = data.StructLayout({"addr": max(1, ceil_log2(config.load_words)),
                                         "data": config.load_data_width})
        counter_layout = data.StructLayout({name: config.counter_width for name in COUNTER_NAMES})
        members = {
            "events_in": In(stream.Signature(in_layout)),
            "events_out": Out(stream.Signature(out_layout)),
            "load": In(stream.Signature(load_layout)),
            "clear": In(1),
            "clear_counters": In(1),
            "idle": Out(1),
            "counters": Out(counter_layout),
            "trace_valid": Out(1),
            "trace_row": Out(max(1, ceil_log2(config.rows))),
            "trace_v": Out(data.ArrayLayout(p.membrane_shape, config.lanes)),
        }
        if p.synapse == "current":
            members["trace_u"] = Out(data.ArrayLayout(signed(p.current_width), config.lanes))
        super().__init__(members)

    # ---------------------------------------------------------------------------------------------

    def elaborate(self, platform):
        cfg = self.config
        p = cfg.neuron
        if platform is not None and cfg.weight_memory_kind == "spram" and self._weight_init is not None:
            raise ValueError("weights must be loaded through the load port when they live in SPRAM "
                             "(SB_SPRAM256KA has no initial contents)")
        m = Module()
        n_rows, n_lanes = cfg.rows, cfg.lanes
        lane_layout = p.state_layout(cfg.acc_width)
        row_layout = data.ArrayLayout(lane_layout, n_lanes)
        state_single_port = cfg.state_memory_kind == "spram"

        # -- control registers
        row = Signal(range(n_rows + 1))          # next row to issue
        waddr = Signal(range(max(2, cfg.weight_words)))
        kind_eot = Signal()                      # current sweep: 1 end of timestep, 0 event
        s1_valid = Signal()
        s1_row = Signal(range(max(2, n_rows)))
        s1_last = Signal()
        emit_bits = Signal(n_lanes)
        emit_row = Signal(range(max(2, n_rows)))
        clear_pending = Signal()
        clr_row = Signal(range(n_rows + 1))

        emit_busy = emit_bits.any()
        stall = s1_valid & emit_busy
        exec_ = s1_valid & ~stall
        in_sweep = Signal()
        issuing = Signal()
        clearing = Signal()
        m.d.comb += issuing.eq(in_sweep & (row != n_rows) & ~stall
                               & (~s1_valid if state_single_port else 1))

        # -- state memory
        state_rdata = Signal(row_layout)
        state_wdata = Signal(row_layout)
        state_we = Signal()
        state_waddr = Signal(range(max(2, n_rows)))
        if state_single_port:
            m.submodules.state_mem = smem = Spram(cfg.state_word_width, n_rows)
            m.d.comb += [
                smem.addr.eq(Mux(state_we, state_waddr, row)),
                smem.we.eq(state_we), smem.en.eq(state_we | issuing),
                smem.wdata.eq(state_wdata), state_rdata.eq(smem.rdata),
            ]
        else:
            m.submodules.state_mem = smem = Memory(shape=cfg.state_word_width, depth=n_rows, init=[])
            srp = smem.read_port()
            swp = smem.write_port()
            m.d.comb += [
                srp.addr.eq(row), srp.en.eq(issuing), state_rdata.eq(srp.data),
                swp.addr.eq(state_waddr), swp.data.eq(state_wdata), swp.en.eq(state_we),
            ]

        # -- weight memory (and the load port)
        load = self.load
        weight_rdata = Signal(data.ArrayLayout(signed(p.weight_width), n_lanes))
        load_weight = load.valid & load.ready & (load.payload.addr < cfg.weight_words)
        weight_read = issuing & ~kind_eot
        if cfg.weight_memory_kind == "spram":
            m.submodules.weight_mem = wmem = Spram(cfg.weight_word_width, cfg.weight_words,
                                                   init=self._weight_init)
            m.d.comb += [
                wmem.addr.eq(Mux(load_weight, load.payload.addr, waddr)),
                wmem.we.eq(load_weight), wmem.en.eq(load_weight | weight_read),
                wmem.wdata.eq(load.payload.data), weight_rdata.eq(wmem.rdata),
            ]
        else:
            m.submodules.weight_mem = wmem = Memory(shape=cfg.weight_word_width, depth=cfg.weight_words,
                                                    init=self._weight_init or [])
            wrp = wmem.read_port()
            wwp = wmem.write_port()
            m.d.comb += [
                wrp.addr.eq(waddr), wrp.en.eq(weight_read), weight_rdata.eq(wrp.data),
                wwp.addr.eq(load.payload.addr), wwp.data.eq(load.payload.data), wwp.en.eq(load_weight),
            ]

        bias_rdata = None
        if p.bias:
            bias_rdata = Signal(data.ArrayLayout(signed(p.bias_width), n_lanes))
            m.submodules.bias_mem = bmem = Memory(shape=n_lanes * p.bias_width, depth=n_rows,
                                                  init=self._bias_init or [])
            brp = bmem.read_port()
            bwp = bmem.write_port()
            load_bias = load.valid & load.ready & (load.payload.addr >= cfg.weight_words)
            m.d.comb += [
                brp.addr.eq(row), brp.en.eq(issuing & kind_eot), bias_rdata.eq(brp.data),
                bwp.addr.eq(load.payload.addr - cfg.weight_words), bwp.data.eq(load.payload.data),
                bwp.en.eq(load_bias),
            ]

        # -- lanes
        spikes = Signal(n_lanes)
        s1_eot = Signal()
        for lane in range(n_lanes):
            unit = LifUnit(p, cfg.acc_width)
            m.submodules[f"lane{lane}"] = unit
            st = state_rdata[lane]
            nx = state_wdata[lane]
            m.d.comb += [
                unit.eot.eq(s1_eot), unit.weight.eq(weight_rdata[lane]), unit.v.eq(st.v),
                spikes[lane].eq(unit.spike), self.trace_v[lane].eq(unit.v_next),
            ]
            if p.synapse == "current":
                m.d.comb += [unit.u.eq(st.u), self.trace_u[lane].eq(unit.u_next)]
            if p.fire == "timestep":
                m.d.comb += unit.acc.eq(st.acc)
            if p.refractory_width:
                m.d.comb += unit.ref.eq(st.ref)
            if p.bias:
                m.d.comb += unit.bias.eq(bias_rdata[lane])
            with m.If(~clearing):
                m.d.comb += nx.v.eq(unit.v_next)
                if p.synapse == "current":
                    m.d.comb += nx.u.eq(unit.u_next)
                if p.fire == "timestep":
                    m.d.comb += nx.acc.eq(unit.acc_next)
                if p.refractory_width:
                    m.d.comb += nx.ref.eq(unit.ref_next)

        m.d.comb += [
            state_we.eq(exec_ | clearing),
            state_waddr.eq(Mux(clearing, clr_row, s1_row)),
            self.trace_valid.eq(exec_ & s1_eot),
            self.trace_row.eq(s1_row),
        ]

        # -- pipeline: issue (read addresses) -> execute (lanes, write back, spikes)
        with m.If(issuing):
            m.d.sync += [
                s1_valid.eq(1), s1_row.eq(row), s1_last.eq(row == n_rows - 1), s1_eot.eq(kind_eot),
                row.eq(row + 1), waddr.eq(waddr + 1),
            ]
        with m.Elif(exec_):
            m.d.sync += s1_valid.eq(0)
        with m.If(exec_):
            m.d.sync += [emit_bits.eq(spikes), emit_row.eq(s1_row)]
        sweep_done = exec_ & s1_last

        # -- output: spikes of the emit buffer, lowest lane first, then timestep markers
        out = self.events_out
        lowest = Signal(range(max(2, n_lanes)))
        for lane in reversed(range(n_lanes)):
            with m.If(emit_bits[lane]):
                m.d.comb += lowest.eq(lane)
        lane_bits = ceil_log2(n_lanes)
        spike_addr = Cat(lowest[:lane_bits], emit_row) if lane_bits else emit_row
        send_marker = Signal()
        m.d.comb += [
            out.valid.eq(emit_busy | send_marker),
            out.payload.addr.eq(Mux(emit_busy, spike_addr, 0)),
            out.payload.eot.eq(~emit_busy & send_marker),
        ]
        spike_sent = out.valid & out.ready & emit_busy
        marker_sent = out.valid & out.ready & ~emit_busy
        with m.If(spike_sent):
            m.d.sync += emit_bits.eq(emit_bits & ~(Const(1, n_lanes) << lowest))

        # -- recurrent queue: two banks, one filling (this timestep), one replaying (the last)
        replay_pending = Const(0)
        replay_read = Signal()
        queue_data = None
        if cfg.recurrent:
            qw = cfg.queue_index_width
            m.submodules.queue_mem = qmem = Memory(shape=max(1, ceil_log2(cfg.neurons)),
                                                   depth=2 << qw, init=[])
            qrp = qmem.read_port()
            qwp = qmem.write_port()
            fill_bank = Signal()
            fill_count = Signal(range(cfg.queue_depth + 1))
            replay_count = Signal(range(cfg.queue_depth + 1))
            replay_idx = Signal(range(cfg.queue_depth + 1))
            replay_pending = replay_idx != replay_count
            queue_full = fill_count == cfg.queue_depth
            m.d.comb += [
                qwp.addr.eq(Cat(fill_count[:qw], fill_bank)), qwp.data.eq(spike_addr),
                qwp.en.eq(spike_sent & ~queue_full),
                qrp.addr.eq(Cat(replay_idx[:qw], ~fill_bank)), qrp.en.eq(replay_read),
            ]
            queue_data = qrp.data
            with m.If(spike_sent & ~queue_full):
                m.d.sync += fill_count.eq(fill_count + 1)
            with m.If(replay_read):
                m.d.sync += replay_idx.eq(replay_idx + 1)
            with m.If(marker_sent):
                m.d.sync += [fill_bank.eq(~fill_bank), fill_count.eq(0), replay_idx.eq(0),
                             replay_count.eq(fill_count)]
            with m.If(clearing):
                m.d.sync += [fill_count.eq(0), replay_idx.eq(0), replay_count.eq(0)]
            dropped_now = spike_sent & queue_full
        else:
            dropped_now = Const(0)

        # -- control
        evin = self.events_in
        with m.If(self.clear):
            m.d.sync += clear_pending.eq(1)
        start_event = Signal()
        start_axon = Signal(range(max(2, cfg.axon_rows)))
        idle_state = Signal()

        with m.FSM(init="CLEAR"):
            with m.State("CLEAR"):
                m.d.comb += clearing.eq(1)
                m.d.sync += clr_row.eq(clr_row + 1)
                with m.If(clr_row == n_rows - 1):
                    m.d.sync += [clr_row.eq(0), clear_pending.eq(0)]
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += idle_state.eq(1)
                with m.If(clear_pending & ~emit_busy):
                    m.next = "CLEAR"
                with m.Elif(load.valid):
                    m.d.comb += load.ready.eq(1)
                with m.Elif(replay_pending & evin.valid):
                    # The next timestep starts with its first input (an event or a marker).
                    m.d.comb += replay_read.eq(1)
                    if cfg.recurrent:
                        m.next = "REPLAY"
                with m.Else():
                    m.d.comb += evin.ready.eq(1)
                    with m.If(evin.valid):
                        with m.If(evin.payload.eot):
                            m.d.sync += [kind_eot.eq(1), row.eq(0)]
                            m.next = "SWEEP"
                        with m.Elif(evin.payload.addr < cfg.axons):
                            m.d.comb += [start_event.eq(1), start_axon.eq(evin.payload.addr)]
                            m.next = "SWEEP"
            if cfg.recurrent:
                with m.State("REPLAY"):
                    m.d.comb += [start_event.eq(1), start_axon.eq(cfg.axons + queue_data)]
                    m.next = "SWEEP"
            with m.State("SWEEP"):
                m.d.comb += in_sweep.eq(1)
                with m.If(sweep_done):
                    with m.If(kind_eot):
                        m.next = "MARKER"
                    with m.Else():
                        m.next = "WAIT"
            with m.State("MARKER"):
                m.d.comb += send_marker.eq(~emit_busy)
                with m.If(marker_sent):
                    m.next = "WAIT"
        with m.If(start_event):
            m.d.sync += [kind_eot.eq(0), row.eq(0),
                         waddr.eq(const_multiply(start_axon, n_rows)[:len(waddr)])]

        # -- counters
        cnt = self.counters
        accepted_input = evin.valid & evin.ready & ~evin.payload.eot & (evin.payload.addr < cfg.axons)
        m.d.comb += self.idle.eq(idle_state & ~emit_busy & ~clear_pending)
        busy = ~self.idle | evin.valid
        increments = {
            "timesteps": marker_sent,
            "input_events": accepted_input,
            "recurrent_events": replay_read,
            "sops": None,
            "output_spikes": spike_sent,
            "dropped": dropped_now,
            "cycles": busy,
        }
        with m.If(self.clear_counters):
            m.d.sync += [getattr(cnt, name).eq(0) for name in COUNTER_NAMES]
        with m.Else():
            for name, inc in increments.items():
                c = getattr(cnt, name)
                if name == "sops":
                    with m.If(start_event):
                        m.d.sync += c.eq(c + cfg.neurons)
                else:
                    with m.If(inc):
                        m.d.sync += c.eq(c + 1)
        return m
