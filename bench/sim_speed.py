"""Simulation speed: the Amaranth simulator against the Verilator back end.

For 4x4 and 8x8 MAC arrays, one fixed int8 GEMM (32x64 @ 64x32, requantized) runs on both back
ends; the results and cycle counts must be identical, and the table gives simulated cycles per
wall-clock second of each and their ratio, measured in the same run. The virtual board (the UART
shell, bytes bit by bit at 4 cycles per bit) is measured in bytes per second of host traffic.

Compiling a Verilator model is not timed (it is cached on disk; the first run of a configuration
takes tens of seconds). Writes ``bench/results/sim_speed.json``.

Usage: ``python bench/sim_speed.py [--repeat N] [--out PATH]``
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from npuforge.boards.host import VirtualBoard
from npuforge.generators import MacArrayConfig
from npuforge.sim import verilator
from npuforge.sim.gemm import simulate_gemm
from npuforge.sim.golden import RequantParams, mac_array_reference

GEMM_SHAPE = (32, 64, 32)
ARRAYS = (4, 8)
BOARD_CONFIG = MacArrayConfig(rows=4, cols=4)
#: Small enough for the Amaranth simulator to finish in seconds.
BOARD_SHAPE_SMALL = (8, 16, 8)
#: A longer job for the Verilator board: M and N beyond the buffers, so the host splits it.
BOARD_SHAPE_LARGE = (96, 64, 64)


def gemm_operands(m, k, n, seed=0):
    """Random int8 operands, int32 biases and requantization parameters of an M x K x N GEMM."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    bias = rng.integers(-20000, 20000, n)
    requant = RequantParams(mult=tuple(int(v) for v in rng.integers(2**29, 2**31, n)),
                            shift=tuple(int(v) for v in rng.integers(6, 12, n)),
                            zero_point=-3, out_min=-128, out_max=127)
    return x, w, bias, requant


def bench_gemm(rows, repeat):
    cfg = MacArrayConfig(rows=rows, cols=rows)
    x, w, bias, requant = gemm_operands(*GEMM_SHAPE)
    expected = mac_array_reference(x, w, bias, requant, acc_bits=cfg.accumulator_bits, k_group=cfg.k_group)

    ama = simulate_gemm(cfg, x, w, bias, requant)
    t0 = time.perf_counter()
    first = simulate_gemm(cfg, x, w, bias, requant, backend="verilator")
    first_call = time.perf_counter() - t0
    sim_seconds, call_seconds = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ver = simulate_gemm(cfg, x, w, bias, requant, backend="verilator")
        call_seconds.append(time.perf_counter() - t0)
        sim_seconds.append(ver.seconds)
    for result in (ama, first, ver):
        if not np.array_equal(result.y, expected):
            raise SystemExit(f"{rows}x{rows}: a back end disagrees with the golden model")
    if (ver.cycles, ver.load_cycles) != (ama.cycles, ama.load_cycles):
        raise SystemExit(f"{rows}x{rows}: cycle counts differ: amaranth {ama.cycles}+{ama.load_cycles}, "
                         f"verilator {ver.cycles}+{ver.load_cycles}")
    cycles = ama.cycles + ama.load_cycles
    ama_rate = cycles / ama.seconds
    ver_rate = cycles / statistics.median(sim_seconds)
    call_rate = cycles / statistics.median(call_seconds)
    return {
        "array": f"{rows}x{rows}", "gemm": "x".join(map(str, GEMM_SHAPE)), "cycles": cycles,
        "compute_cycles": ama.cycles, "load_cycles": ama.load_cycles,
        "amaranth_seconds": ama.seconds, "amaranth_cycles_per_s": ama_rate,
        "verilator_seconds": statistics.median(sim_seconds), "verilator_cycles_per_s": ver_rate,
        "verilator_call_seconds": statistics.median(call_seconds),
        "verilator_call_cycles_per_s": call_rate,
        "verilator_first_call_seconds": first_call,
        "ratio": ver_rate / ama_rate, "ratio_per_call": call_rate / ama_rate,
    }


def bench_board(backend, shape):
    x, w, bias, requant = gemm_operands(*shape, seed=1)
    cfg = BOARD_CONFIG
    expected = mac_array_reference(x, w, bias, requant, acc_bits=cfg.accumulator_bits, k_group=cfg.k_group)
    t0 = time.perf_counter()
    with VirtualBoard(cfg, backend=backend) as board:
        board.info()
        setup = time.perf_counter() - t0
        sent, received, cycles = board.bytes_sent, board.bytes_received, board.cycles
        t0 = time.perf_counter()
        y = board.gemm(x, w, bias, requant)
        seconds = time.perf_counter() - t0
        traffic = board.bytes_sent - sent + board.bytes_received - received
        sim_cycles = board.cycles - cycles
    if not np.array_equal(y, expected):
        raise SystemExit(f"virtual board ({backend}) disagrees with the golden model")
    return {"backend": backend, "gemm": "x".join(map(str, shape)), "bytes": traffic,
            "cycles": sim_cycles, "seconds": seconds, "bytes_per_s": traffic / seconds,
            "cycles_per_s": sim_cycles / seconds, "setup_seconds": setup}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="Verilator runs per array (median)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sim_speed.json")
    args = parser.parse_args(argv)
    if not verilator.verilator_available():
        raise SystemExit(verilator.INSTALL_HINT)

    gemm = [bench_gemm(rows, args.repeat) for rows in ARRAYS]
    board = [bench_board("amaranth", BOARD_SHAPE_SMALL), bench_board("verilator", BOARD_SHAPE_SMALL),
             bench_board("verilator", BOARD_SHAPE_LARGE)]

    print(f"GEMM {'x'.join(map(str, GEMM_SHAPE))} (int8, requantized), simulated cycles per second")
    print(f"{'array':>6} {'cycles':>8} {'amaranth':>10} {'verilator':>11} {'ratio':>7} "
          f"{'per call':>10} {'ratio':>7}")
    for r in gemm:
        print(f"{r['array']:>6} {r['cycles']:>8} {r['amaranth_cycles_per_s']:>10,.0f} "
              f"{r['verilator_cycles_per_s']:>11,.0f} {r['ratio']:>6.0f}x "
              f"{r['verilator_call_cycles_per_s']:>10,.0f} {r['ratio_per_call']:>6.0f}x")
    print("  (verilator: time inside the model; per call: the whole simulate_gemm call, process "
          "start and job transfer included)")
    print()
    print(f"Virtual board {BOARD_CONFIG.rows}x{BOARD_CONFIG.cols}, UART at 4 cycles per bit")
    print(f"{'backend':>10} {'gemm':>10} {'bytes':>7} {'cycles':>9} {'seconds':>8} {'bytes/s':>9} "
          f"{'cycles/s':>11}")
    for r in board:
        print(f"{r['backend']:>10} {r['gemm']:>10} {r['bytes']:>7} {r['cycles']:>9} {r['seconds']:>8.2f} "
              f"{r['bytes_per_s']:>9,.0f} {r['cycles_per_s']:>11,.0f}")
    board_ratio = board[1]["bytes_per_s"] / board[0]["bytes_per_s"]
    print(f"  verilator/amaranth bytes per second on the same job: {board_ratio:.0f}x")

    result = {
        "gemm": gemm, "board": board, "board_ratio": board_ratio,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "verilator": ".".join(map(str, verilator.verilator_version() or ()))},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
