"""Run a GEMM on a simulated :class:`~npuforge.generators.MacArray`."""

import time
from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.sim import Simulator

from ..generators.mac_array import LoadLayout, LoadTarget, MacArray, MacArrayConfig, SplitMacArray
from .golden import RequantParams

__all__ = ["GemmResult", "SplitClocks", "check_operands", "gemm_bench", "load_words", "simulate_gemm",
           "simulate_split_gemm"]

CLOCK_PERIOD = 1e-6


@dataclass
class GemmResult:
    """What a simulated GEMM returns.

    Members
    -------
    y : numpy.ndarray
        ``(M, N)`` int64 results, row-major (reordered from the array's tile order).
    cycles : int
        Cycles from ``start`` until the last result left the array (host I/O excluded).
    utilization : float
        Useful MACs / (rows x cols x cycles).
    load_cycles : int
        Cycles spent streaming operands and parameters into the buffers.
    seconds : float
        Wall-clock time of the simulation.
    """

    y: np.ndarray
    cycles: int
    utilization: float
    load_cycles: int
    seconds: float
    config: MacArrayConfig = field(repr=False, default=None)

    @property
    def cycles_per_second(self):
        total = self.cycles + self.load_cycles
        return total / self.seconds if self.seconds else float("inf")


def _range(bits, is_signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)


def _int_array(value, name, ndim):
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-dimensional integer array, not shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, not {arr.dtype}")
    return arr.astype(np.int64)


def check_operands(config, x, w, bias=None, requant=None):
    """Validate a GEMM's operands against ``config``; return them as int64 arrays.

    Raises
    ------
    ValueError, TypeError
        Naming the operand, its shape or value and the allowed range.
    """
    x = _int_array(x, "x", 2)
    w = _int_array(w, "w", 2)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x has {x.shape[1]} columns but w has {w.shape[0]} rows; they must match (K)")
    m, k = x.shape
    n = w.shape[1]
    config.check_shape(m, k, n)
    for name, arr, bits, sgn in (("x", x, config.in_bits, config.in_signed),
                                 ("w", w, config.w_bits, config.w_signed)):
        lo, hi = _range(bits, sgn)
        if arr.size and (arr.min() < lo or arr.max() > hi):
            bad = arr.min() if arr.min() < lo else arr.max()
            kind = "int" if sgn else "uint"
            raise ValueError(f"{name} values must be in {lo}..{hi} ({kind}{bits}), not {bad}")
    if bias is None:
        bias = np.zeros(n, dtype=np.int64)
    bias = _int_array(bias, "bias", 1)
    if bias.shape != (n,):
        raise ValueError(f"bias must have shape ({n},), not {bias.shape}")
    if bias.size and (bias.min() < -(1 << 31) or bias.max() > (1 << 31) - 1):
        raise ValueError("bias values must be int32")
    if requant is not None:
        if not isinstance(requant, RequantParams):
            raise TypeError(f"requant must be a RequantParams or None, not {requant!r}")
        if np.asarray(requant.mult).shape != (n,) or np.asarray(requant.shift).shape != (n,):
            raise ValueError(f"requant.mult and requant.shift must have shape ({n},)")
        lo, hi = _range(8, config.out_signed)
        for fname in ("zero_point", "out_min", "out_max"):
            v = getattr(requant, fname)
            if not lo <= v <= hi:
                kind = "int8" if config.out_signed else "uint8"
                raise ValueError(f"requant.{fname} must be in {lo}..{hi} for {kind} outputs, not {v}")
    return x, w, bias


def load_words(config, x, w, bias, requant):
    """The ``(target, value)`` words that fill the buffers, in load order."""
    words = [(LoadTarget.W, int(v)) for v in w.reshape(-1)]
    words += [(LoadTarget.X, int(v)) for v in x.reshape(-1)]
    words += [(LoadTarget.BIAS, int(v)) for v in bias]
    if requant is not None:
        words += [(LoadTarget.MULT, int(v)) for v in np.asarray(requant.mult)]
        words += [(LoadTarget.SHIFT, int(v)) for v in np.asarray(requant.shift)]
    return words


def pack_load_words(words):
    """``(target, value)`` words as integers in the bit layout of :data:`LoadLayout`."""
    shift = LoadLayout.size - 32
    return [int(target.value) | ((int(value) & 0xFFFF_FFFF) << shift) for target, value in words]


def gemm_bench(dut, config, x, w, bias, requant, *, backpressure=0.0, rng=None):
    """An async testbench that runs one GEMM on ``dut`` (anything with :class:`MacArray`'s ports).

    Returns
    -------
    (bench, results, stats)
        ``bench`` for :meth:`Simulator.add_testbench`; after the run ``results`` holds the ``y``
        words in output order and ``stats`` the ``load_cycles`` and ``cycles``.
    """
    m_, k_ = x.shape
    n_ = w.shape[1]
    words = load_words(config, x, w, bias, requant)
    packed = pack_load_words(words)
    rng = rng if rng is not None else np.random.default_rng(0)
    results = []
    stats = {}

    async def bench(ctx):
        ctx.set(dut.size_m, m_)
        ctx.set(dut.size_k, k_)
        ctx.set(dut.size_n, n_)
        ctx.set(dut.raw, requant is None)
        if requant is not None:
            ctx.set(dut.zero_point, requant.zero_point)
            ctx.set(dut.out_min, requant.out_min)
            ctx.set(dut.out_max, requant.out_max)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        # Words are packed to the payload's bit layout up front: converting a dict per word costs
        # more than simulating the cycle.
        payload = dut.load.payload.as_value()
        ctx.set(dut.load.valid, 1)
        for word in packed:
            ctx.set(payload, word)
            await ctx.tick().until(dut.load.ready)
        ctx.set(dut.load.valid, 0)
        stats["load_cycles"] = len(words) + 1
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        total = m_ * n_
        ctx.set(dut.y.ready, 1)
        while len(results) < total:
            ready = 1 if not backpressure else int(rng.random() >= backpressure)
            ctx.set(dut.y.ready, ready)
            *_, value, valid = await ctx.tick().sample(dut.y.payload, dut.y.valid)
            if valid and ready:
                results.append(value)
        await ctx.tick().until(~dut.busy)
        stats["cycles"] = ctx.get(dut.cycles)

    return bench, results, stats


def _check_common(config, backpressure):
    if not isinstance(config, MacArrayConfig):
        raise TypeError(f"config must be a MacArrayConfig, not {config!r}")
    if not 0.0 <= backpressure < 1.0:
        raise ValueError(f"backpressure must be in 0..1 (exclusive), not {backpressure!r}")


def _result(config, x, w, results, stats, seconds):
    m_, k_ = x.shape
    n_ = w.shape[1]
    out_rows, out_cols = config.output_order(m_, n_)
    y = np.zeros((m_, n_), dtype=np.int64)
    y[out_rows, out_cols] = np.array(results, dtype=np.int64)
    cycles = stats["cycles"]
    util = (m_ * k_ * n_) / (config.macs_per_cycle * cycles) if cycles else 0.0
    return GemmResult(y=y, cycles=cycles, utilization=util, load_cycles=stats["load_cycles"],
                      seconds=seconds, config=config)


def simulate_gemm(config, x, w, bias=None, requant=None, vcd=None, *, backend="amaranth",
                  backpressure=0.0, seed=0):
    """Compute ``requant(x @ w + bias)`` on a simulated MAC array.

    Parameters
    ----------
    config : MacArrayConfig
    x : array_like, shape (M, K)
    w : array_like, shape (K, N)
    bias : array_like, shape (N,), optional
        int32 bias per output channel (zero when omitted).
    requant : RequantParams, optional
        Requantization parameters; ``None`` gives the raw int32 results.
    vcd : path, optional
        Write a waveform of the run there.
    backend : str
        ``"amaranth"`` (the Amaranth simulator) or ``"verilator"`` (a compiled Verilator model, see
        :mod:`npuforge.sim.verilator`; same results and cycle counts, no ``vcd``).
    backpressure : float
        Probability (0..1) that the consumer of ``y`` is not ready in a cycle; exercises the
        array's stall path. Cycles then include the stalls.
    seed : int
        Seed of the backpressure pattern.

    Returns
    -------
    GemmResult
    """
    _check_common(config, backpressure)
    if backend not in ("amaranth", "verilator"):
        raise ValueError(f"backend must be 'amaranth' or 'verilator', not {backend!r}")
    if backend == "verilator":
        if vcd is not None:
            raise ValueError("vcd is not supported with backend='verilator'; use backend='amaranth' "
                             "for waveforms")
        from .verilator import run_gemm
        return run_gemm(config, x, w, bias, requant, backpressure=backpressure, seed=seed)
    x, w, bias = check_operands(config, x, w, bias, requant)
    rng = np.random.default_rng(seed)
    dut = MacArray(config)
    bench, results, stats = gemm_bench(dut, config, x, w, bias, requant, backpressure=backpressure,
                                       rng=rng)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    t0 = time.perf_counter()
    if vcd is not None:
        with sim.write_vcd(str(vcd)):
            sim.run()
    else:
        sim.run()
    seconds = time.perf_counter() - t0
    return _result(config, x, w, results, stats, seconds)


class SplitClocks(Elaboratable):
    """A :class:`~npuforge.generators.mac_array.SplitMacArray` with its array clock domain, for a
    simulator to clock (``sync`` and the array's domain)."""

    def __init__(self, dut):
        self.dut = dut

    def elaborate(self, platform):
        m = Module()
        m.domains += ClockDomain(self.dut.array_domain)
        m.submodules.dut = self.dut
        return m


def simulate_split_gemm(config, x, w, bias=None, requant=None, *, array_hz, board_hz=12e6,
                        backpressure=0.0, seed=0):
    """Like :func:`simulate_gemm`, on the board designs' two clocks: the array core of a
    :class:`~npuforge.generators.mac_array.SplitMacArray` at ``array_hz`` (the PLL), the output
    stage and the host side at ``board_hz``.

    Returns
    -------
    GemmResult
        ``cycles`` counts the array clock from ``start`` until the core is done (it includes the
        cycles the core waits for the slower output stage); ``load_cycles`` the board clock.
    """
    _check_common(config, backpressure)
    for name, hz in (("array_hz", array_hz), ("board_hz", board_hz)):
        if isinstance(hz, bool) or not isinstance(hz, (int, float)) or not hz > 0:
            raise ValueError(f"{name} must be a positive frequency in Hz, not {hz!r}")
    x, w, bias = check_operands(config, x, w, bias, requant)
    dut = SplitMacArray(config, "array")
    bench, results, stats = gemm_bench(dut, config, x, w, bias, requant, backpressure=backpressure,
                                       rng=np.random.default_rng(seed))
    sim = Simulator(SplitClocks(dut))
    sim.add_clock(1 / board_hz)
    sim.add_clock(1 / array_hz, domain="array")
    sim.add_testbench(bench)
    t0 = time.perf_counter()
    sim.run()
    return _result(config, x, w, results, stats, time.perf_counter() - t0)
