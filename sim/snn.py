"""Simulation harness of the spiking-neuron core: spikes in, spikes, membranes and counts out."""

import random
import time
from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from ..generators.snn_core import COUNTER_NAMES, SnnCore, SnnCoreConfig

__all__ = ["SnnSimResult", "simulate_snn", "simulate_snn_batch", "simulate_snn_events"]

#: Simulated clock period (1 MHz; only the VCD time axis depends on it).
CLOCK_PERIOD = 1e-6


@dataclass
class SnnSimResult:
    """Outcome of :func:`simulate_snn`.

    Members
    -------
    spikes : numpy.ndarray
        ``T x N`` bool: the neuron fired in the timestep.
    spike_counts : numpy.ndarray
        ``T x N`` int: spikes per neuron and timestep.
    events : list of list of int
        Per timestep, the output addresses in the order the core emitted them.
    membrane : numpy.ndarray or None
        ``T x N`` membrane after each end-of-timestep update (``record_membrane``).
    current : numpy.ndarray or None
        ``T x N`` synaptic current likewise (``synapse="current"``).
    cycles : int
        Busy cycles of the core for the input (its ``cycles`` counter), loading excluded.
    sops : int
        Synaptic operations performed.
    counters : dict
        Every hardware counter by name.
    sim_cycles : int
        Simulated clock cycles for this input (the first one's include loading the weights).
    wall_seconds : float
        Host time spent simulating this input (elaboration excluded).
    """

    spikes: np.ndarray
    spike_counts: np.ndarray
    events: list
    membrane: "np.ndarray | None" = None
    current: "np.ndarray | None" = None
    cycles: int = 0
    sops: int = 0
    counters: dict = field(default_factory=dict)
    sim_cycles: int = 0
    wall_seconds: float = 0.0

    @property
    def cycles_per_second(self):
        """Simulation speed in simulated cycles per host second."""
        return self.sim_cycles / self.wall_seconds if self.wall_seconds else 0.0


class _Recording:
    """What leaves the core during one input: spikes by timestep, membrane traces."""

    def __init__(self, dut, t_steps, n, lanes, record_membrane, cuba):
        self.dut, self.lanes = dut, lanes
        self.counts = np.zeros((t_steps, n), dtype=np.int64)
        self.events = [[] for _ in range(t_steps)]
        self.membrane = np.zeros((t_steps, n), dtype=np.int64) if record_membrane else None
        self.current = np.zeros((t_steps, n), dtype=np.int64) if record_membrane and cuba else None

    def trace(self, ctx, t):
        """Record the state row that the next edge writes back."""
        dut, lanes = self.dut, self.lanes
        base = ctx.get(dut.trace_row) * lanes
        tv = ctx.get(dut.trace_v)
        self.membrane[t, base:base + lanes] = [tv[i] for i in range(lanes)]
        if self.current is not None:
            tu = ctx.get(dut.trace_u)
            self.current[t, base:base + lanes] = [tu[i] for i in range(lanes)]

    def output(self, ctx, t):
        """Record the output transfer that the next edge makes; return the timestep index."""
        out = self.dut.events_out
        if ctx.get(out.payload.eot):
            return t + 1
        addr = ctx.get(out.payload.addr)
        self.events[t].append(addr)
        self.counts[t, addr] += 1
        return t


def _cycle_budget(cfg, t_steps, n_events):
    """A generous bound on the cycles an input can take, to turn a hang into an error."""
    per_sweep = 2 * cfg.rows + 4 + cfg.neurons
    sweeps = n_events + t_steps * (1 + cfg.queue_depth)
    return 2000 + 2 * cfg.load_words + 2 * sweeps * per_sweep


def simulate_snn(config, weights, input_spikes, *, bias=None, record_membrane=False, vcd=None,
                 load="port", backpressure=0.0, seed=0, backend="amaranth"):
    """Run a ``T x M`` spike raster through the generated core in the Amaranth simulator.

    Parameters
    ----------
    config : :class:`~npuforge.generators.snn_core.SnnCoreConfig`
    weights : array_like
        ``axon_rows x N`` signed integer weights.
    input_spikes : array_like
        ``T x M`` booleans; the axons firing in each timestep are sent in ascending order,
        followed by an end-of-timestep marker.
    bias : array_like, optional
        ``N`` biases (with ``config.neuron.bias``).
    record_membrane : bool
        Record the membrane (and current) after each timestep.
    vcd : str or path-like, optional
        Write a waveform file there.
    load : str
        ``"port"``: load weights through the ``load`` stream as a host would; ``"init"``:
        preload them into the memories (faster for large matrices).
    backpressure : float
        Probability, 0..1, that the output stream is not ready in a cycle (tests flow control).
    seed : int
        Seed of the backpressure pattern.
    backend : str
        ``"amaranth"`` (the Amaranth simulator; waveforms, backpressure) or ``"verilator"`` (the
        design compiled by Verilator, for long runs: no ``vcd``, no ``backpressure``, ``load``
        is always ``"port"``).

    Returns
    -------
    :class:`SnnSimResult`

    Raises
    ------
    TypeError, ValueError
        Bad arguments.
    RuntimeError
        The core did not finish in a generous number of cycles.
    """
    if not isinstance(config, SnnCoreConfig):
        raise TypeError(f"config must be a SnnCoreConfig, not {config!r}")
    x = np.asarray(input_spikes).astype(bool)
    if x.ndim != 2 or x.shape[1] != config.axons:
        raise ValueError(f"input_spikes must be T x {config.axons}, not of shape {x.shape}")
    events = [[int(a) for a in np.flatnonzero(row)] for row in x]
    return simulate_snn_events(config, weights, events, bias=bias, record_membrane=record_membrane,
                               vcd=vcd, load=load, backpressure=backpressure, seed=seed,
                               backend=backend)


def simulate_snn_events(config, weights, events, *, bias=None, record_membrane=False, vcd=None,
                        load="port", backpressure=0.0, seed=0, backend="amaranth"):
    """Like :func:`simulate_snn`, with the input given as address events.

    Parameters
    ----------
    events : list of list of int
        Per timestep, the axon addresses sent in that order (repeats allowed), each timestep
        closed by an end-of-timestep marker.

    Other parameters are those of :func:`simulate_snn`.
    """
    return simulate_snn_batch(config, weights, [events], bias=bias, record_membrane=record_membrane,
                              vcd=vcd, load=load, backpressure=backpressure, seed=seed,
                              backend=backend)[0]


def simulate_snn_batch(config, weights, inputs, *, bias=None, record_membrane=False, vcd=None,
                       load="port", backpressure=0.0, seed=0, backend="amaranth"):
    """Run several independent inputs through one simulated core, clearing it in between.

    The weights are loaded once; before each input after the first, the core's ``clear`` and
    ``clear_counters`` are pulsed, as a host would between inferences.

    Parameters
    ----------
    inputs : list
        Each a ``T x M`` boolean raster (array) or a list of per-timestep address lists.

    Other parameters are those of :func:`simulate_snn`.

    Returns
    -------
    list of :class:`SnnSimResult`
    """
    if not isinstance(config, SnnCoreConfig):
        raise TypeError(f"config must be a SnnCoreConfig, not {config!r}")
    if load not in ("port", "init"):
        raise ValueError(f"load must be one of 'port', 'init', not {load!r}")
    if backend not in ("amaranth", "verilator"):
        raise ValueError(f"backend must be one of 'amaranth', 'verilator', not {backend!r}")
    if not (isinstance(backpressure, (int, float)) and 0.0 <= backpressure < 1.0):
        raise ValueError(f"backpressure must be a number in 0..1 (exclusive), not {backpressure!r}")
    runs = []
    for item in inputs:
        if isinstance(item, np.ndarray):
            x = item.astype(bool)
            if x.ndim != 2 or x.shape[1] != config.axons:
                raise ValueError(f"input_spikes must be T x {config.axons}, not of shape {x.shape}")
            runs.append([[int(a) for a in np.flatnonzero(row)] for row in x])
        else:
            runs.append([[int(a) for a in step] for step in item])
    words = config.pack_weights(weights, bias)     # validates weights and bias
    if backend == "verilator":
        if vcd is not None or backpressure:
            raise ValueError("vcd and backpressure need backend='amaranth'")
        return _run_verilator(config, words, runs, record_membrane)
    n, lanes = config.neurons, config.lanes
    if load == "init":
        dut = SnnCore(config, weights=weights, bias=bias)
        words = []
    else:
        dut = SnnCore(config)
    cuba = config.neuron.synapse == "current"
    rng = random.Random(seed)
    results = []
    done = [0]

    async def driver(ctx):
        ld = dut.load
        for addr, value in words:
            ctx.set(ld.valid, 1)
            ctx.set(ld.payload, {"addr": addr, "data": value})
            await ctx.tick().until(ld.ready)
        ctx.set(ld.valid, 0)
        ev = dut.events_in
        for index, run in enumerate(runs):
            while done[0] < index:
                await ctx.tick()
            if index:
                ctx.set(dut.clear, 1)
                await ctx.tick()
                ctx.set(dut.clear, 0)
            await ctx.tick().until(dut.idle)
            ctx.set(dut.clear_counters, 1)
            await ctx.tick()
            ctx.set(dut.clear_counters, 0)
            for step in run:
                for a in step:
                    ctx.set(ev.valid, 1)
                    ctx.set(ev.payload, {"addr": a, "eot": 0})
                    await ctx.tick().until(ev.ready)
                ctx.set(ev.valid, 1)
                ctx.set(ev.payload, {"addr": 0, "eot": 1})
                await ctx.tick().until(ev.ready)
            ctx.set(ev.valid, 0)

    out = dut.events_out

    async def collector(ctx):
        cycles = 0
        for run in runs:
            t_steps = len(run)
            rec = _Recording(dut, t_steps, n, lanes, record_membrane, cuba)
            budget = cycles + _cycle_budget(config, t_steps, sum(len(e) for e in run))
            if backpressure:
                budget = int(budget / (1.0 - backpressure)) + 1000
            start_cycles, start_wall = cycles, time.perf_counter()
            watch = out.valid | dut.trace_valid if record_membrane else out.valid
            ctx.set(out.ready, 1)
            t = 0
            while t < t_steps:
                if backpressure:
                    ready = rng.random() >= backpressure
                    ctx.set(out.ready, ready)
                    # Values read now (settled after the previous edge) are what the next edge sees.
                    if record_membrane and ctx.get(dut.trace_valid):
                        rec.trace(ctx, t)
                    if ready and ctx.get(out.valid):
                        t = rec.output(ctx, t)
                    await ctx.tick()
                    cycles += 1
                else:
                    # Skip the cycles in which nothing leaves the core.
                    await ctx.tick()
                    cycles += 1
                    while not ctx.get(watch):
                        await ctx.tick()
                        cycles += 1
                    if record_membrane and ctx.get(dut.trace_valid):
                        rec.trace(ctx, t)
                    if ctx.get(out.valid):
                        t = rec.output(ctx, t)
                if cycles > budget:
                    raise RuntimeError(f"the core did not finish {t_steps} timesteps in "
                                       f"{budget - start_cycles} cycles")
            if not backpressure:
                await ctx.tick()        # the edge that transfers the last marker
                cycles += 1
            ctx.set(out.ready, 1)
            while not ctx.get(dut.idle):
                await ctx.tick()
                cycles += 1
            final = {name: int(ctx.get(getattr(dut.counters, name))) for name in COUNTER_NAMES}
            results.append(SnnSimResult(
                spikes=rec.counts > 0, spike_counts=rec.counts, events=rec.events,
                membrane=rec.membrane, current=rec.current, cycles=final["cycles"],
                sops=final["sops"], counters=final, sim_cycles=cycles - start_cycles,
                wall_seconds=time.perf_counter() - start_wall))
            done[0] += 1

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(driver)
    sim.add_testbench(collector)
    if vcd is not None:
        with sim.write_vcd(str(vcd)):
            sim.run()
    else:
        sim.run()
    return results


# -- Verilator back end ----------------------------------------------------------------------------

# Verilator names a port `a__b` as `a___05Fb` (it escapes a double underscore).
SNN_HARNESS = r"""// npuforge runner for a Verilated spiking core (SnnCore).
// stdin : nload nwords32, nload load payloads as nwords32 32-bit words each (least significant
//         first), record (0/1), nruns, then per run: T and per timestep k a_1 .. a_k.
// stdout: per run "run T <simulated cycles>", "c" and the counters, per timestep "e k a_1 .. a_k", and with
//         record, per timestep "v" and N membranes (and "u" and N currents).
#include <cstdint>
#include <cstdio>
#include <vector>
#include "Vtop.h"
#include "verilated.h"

#define EV_VALID events_in___05Fvalid
#define EV_READY events_in___05Fready
#define EV_PAYLOAD events_in___05Fpayload
#define OUT_VALID events_out___05Fvalid
#define OUT_READY events_out___05Fready
#define OUT_PAYLOAD events_out___05Fpayload
#define LD_VALID load___05Fvalid
#define LD_READY load___05Fready
#define LD_PAYLOAD load___05Fpayload

template <typename T> static uint64_t bits(const T& v, int lo, int n) {
    return ((uint64_t)v >> lo) & (n >= 64 ? ~0ull : ((1ull << n) - 1));
}
template <std::size_t W> static uint64_t bits(const VlWide<W>& v, int lo, int n) {
    uint64_t r = 0;
    for (int i = 0; i < n; i++) {
        int b = lo + i;
        r |= (uint64_t)((v.at(b >> 5) >> (b & 31)) & 1u) << i;
    }
    return r;
}
template <typename T> static void setw(T& v, const uint32_t* w, int n) {
    uint64_t x = w[0];
    if (n > 1) x |= (uint64_t)w[1] << 32;
    v = (T)x;
}
template <std::size_t W> static void setw(VlWide<W>& v, const uint32_t* w, int n) {
    for (std::size_t i = 0; i < W; i++) v.at(i) = (int)i < n ? w[i] : 0;
}
static int64_t sext(uint64_t x, int n, bool is_signed) {
    if (is_signed && n < 64 && ((x >> (n - 1)) & 1)) return (int64_t)(x | (~0ull << n));
    return (int64_t)x;
}

int main() {
    long nload, nw;
    if (scanf("%ld %ld", &nload, &nw) != 2) return 2;
    std::vector<uint32_t> words(nload * nw);
    for (auto& w : words) { unsigned long v; if (scanf("%lu", &v) != 1) return 2; w = (uint32_t)v; }
    long record, nruns;
    if (scanf("%ld %ld", &record, &nruns) != 2) return 2;

    VerilatedContext context;
    Vtop top{&context};
    unsigned long long cycles = 0;
    auto edge = [&] { top.clk = 1; top.eval(); top.clk = 0; cycles++; };
    top.clk = 0; top.rst = 0; top.OUT_READY = 1;
    top.eval();
    top.LD_VALID = 1;
    for (long i = 0; i < nload; i++) {
        setw(top.LD_PAYLOAD, &words[i * nw], (int)nw);
        for (;;) { top.eval(); bool ready = top.LD_READY; edge(); if (ready) break; }
    }
    top.LD_VALID = 0;
    std::vector<int64_t> v((size_t)NEURONS), u((size_t)NEURONS);
    for (long run = 0; run < nruns; run++) {
        long T;
        if (scanf("%ld", &T) != 1) return 2;
        std::vector<std::vector<long>> steps(T);
        for (long t = 0; t < T; t++) {
            long k; if (scanf("%ld", &k) != 1) return 2;
            steps[t].resize(k);
            for (auto& a : steps[t]) if (scanf("%ld", &a) != 1) return 2;
        }
        unsigned long long run_start = cycles;
        if (run) { top.clear = 1; top.eval(); edge(); top.clear = 0; }
        do { top.eval(); edge(); top.eval(); } while (!top.idle);
        top.clear_counters = 1; top.eval(); edge(); top.clear_counters = 0;
        // Inputs: every event of a timestep, then its marker.
        long st = 0, at = 0;
        auto present = [&] {
            if (st >= T) { top.EV_VALID = 0; return; }
            top.EV_VALID = 1;
            if (at < (long)steps[st].size()) top.EV_PAYLOAD = (uint64_t)steps[st][at];
            else top.EV_PAYLOAD = (uint64_t)1 << IN_ADDR_BITS;
        };
        present();
        std::vector<std::vector<long>> out(T);
        std::vector<std::vector<int64_t>> vs, us;
        long t_out = 0;
        while (t_out < T) {
            top.eval();
            bool ev_go = top.EV_VALID && top.EV_READY;
            bool o_valid = top.OUT_VALID;
            uint64_t o_payload = bits(top.OUT_PAYLOAD, 0, OUT_ADDR_BITS + 1);
            if (record && top.trace_valid) {
                long base = (long)top.trace_row * LANES;
                for (int l = 0; l < LANES; l++) {
                    v[base + l] = sext(bits(top.trace_v, l * VW, VW), VW, VSIGNED);
#if CW
                    u[base + l] = sext(bits(top.trace_u, l * CW, CW), CW, true);
#endif
                }
            }
            edge();
            if (o_valid) {
                if ((o_payload >> OUT_ADDR_BITS) & 1) {
                    if (record) { vs.push_back(v); us.push_back(u); }
                    t_out++;
                } else {
                    out[t_out].push_back((long)(o_payload & ((1ull << OUT_ADDR_BITS) - 1)));
                }
            }
            if (ev_go) {
                if (at < (long)steps[st].size()) at++; else { st++; at = 0; }
                present();
            }
        }
        top.EV_VALID = 0;
        do { top.eval(); if (top.idle) break; edge(); } while (true);
        printf("run %ld %llu\nc", T, cycles - run_start);
        for (int i = 0; i < NCOUNTERS; i++)
            printf(" %llu", (unsigned long long)bits(top.counters, i * COUNTER_W, COUNTER_W));
        printf("\n");
        for (long t = 0; t < T; t++) {
            printf("e %zu", out[t].size());
            for (long a : out[t]) printf(" %ld", a);
            printf("\n");
        }
        if (record) {
            for (long t = 0; t < T; t++) {
                printf("v");
                for (auto x : vs[t]) printf(" %lld", (long long)x);
                printf("\n");
#if CW
                printf("u");
                for (auto x : us[t]) printf(" %lld", (long long)x);
                printf("\n");
#endif
            }
        }
    }
    top.final();
    return 0;
}
"""

_VERILATOR_MODELS = {}


def _verilator_model(config):
    """The compiled Verilator model of a core (cached by configuration and on disk)."""
    exe = _VERILATOR_MODELS.get(config)
    if exe is not None and exe.is_file():
        return exe
    from amaranth.back import verilog

    from .verilator import VerilatorUnavailable, build_model, verilator_available

    if not verilator_available():
        raise VerilatorUnavailable("Verilator and a C++ compiler are needed for backend='verilator'")
    p = config.neuron
    defines = {
        "NEURONS": config.neurons, "LANES": config.lanes, "VW": p.membrane_width,
        "VSIGNED": int(p.membrane_signed), "CW": p.current_width if p.synapse == "current" else 0,
        "IN_ADDR_BITS": max(1, (config.axons - 1).bit_length()),
        "OUT_ADDR_BITS": max(1, (config.neurons - 1).bit_length()),
        "NCOUNTERS": len(COUNTER_NAMES), "COUNTER_W": config.counter_width,
    }
    head = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    harness = SNN_HARNESS.replace('#include "verilated.h"\n', '#include "verilated.h"\n' + head, 1)
    text = verilog.convert(SnnCore(config), name="top")
    exe = build_model(text, "top", harness, what=f"SnnCore {config.neurons}x{config.axons}")
    _VERILATOR_MODELS[config] = exe
    return exe


def _run_verilator(config, words, runs, record_membrane):
    """Run the inputs on the Verilator model; return :class:`SnnSimResult` objects."""
    import subprocess

    exe = _verilator_model(config)
    addr_bits = max(1, (config.load_words - 1).bit_length())
    nw = -(-(addr_bits + config.load_data_width) // 32)
    job = [f"{len(words)} {nw}"]
    for addr, value in words:
        packed = addr | (value << addr_bits)
        job.append(" ".join(str((packed >> (32 * i)) & 0xFFFFFFFF) for i in range(nw)))
    job.append(f"{int(record_membrane)} {len(runs)}")
    for run in runs:
        job.append(str(len(run)))
        job.extend(f"{len(step)} " + " ".join(map(str, step)) for step in run)
    start = time.perf_counter()
    proc = subprocess.run([str(exe)], input="\n".join(job) + "\n", capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the Verilator model of the core failed (exit code {proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    lines = iter(proc.stdout.split("\n"))
    cuba = config.neuron.synapse == "current"
    n = config.neurons
    results = []
    for run in runs:
        t_steps = len(run)
        head = next(lines).split()
        if head[:2] != ["run", str(t_steps)]:
            raise RuntimeError(f"unexpected output from the Verilator model: {head!r}")
        sim_cycles = int(head[2])
        values = [int(v) for v in next(lines).split()[1:]]
        counters = dict(zip(COUNTER_NAMES, values))
        counts = np.zeros((t_steps, n), dtype=np.int64)
        events = []
        for t in range(t_steps):
            addrs = [int(a) for a in next(lines).split()[2:]]
            events.append(addrs)
            for a in addrs:
                counts[t, a] += 1
        membrane = current = None
        if record_membrane:
            membrane = np.zeros((t_steps, n), dtype=np.int64)
            current = np.zeros((t_steps, n), dtype=np.int64) if cuba else None
            for t in range(t_steps):
                membrane[t] = [int(v) for v in next(lines).split()[1:]]
                if cuba:
                    current[t] = [int(v) for v in next(lines).split()[1:]]
        results.append(SnnSimResult(
            spikes=counts > 0, spike_counts=counts, events=events, membrane=membrane, current=current,
            cycles=counters["cycles"], sops=counters["sops"], counters=counters,
            sim_cycles=sim_cycles, wall_seconds=wall / max(1, len(runs))))
    return results
