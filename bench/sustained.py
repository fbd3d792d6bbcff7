"""Sustained throughput: how busy a 256x256x256 GEMM keeps the array of each large board design.

The designs are those of ``bench/qor.py`` that fit their board and reach 24 MACs per cycle or more,
with their buffers sized for the whole GEMM (``max_m = max_k = max_n = 256``). Each runs once with raw
int32 results and once requantized to int8 (the output stage's requantizer then sets the pace when it
is the bit-serial one), on the Verilator back end, and must match the NumPy golden model.
Utilization is useful MACs over ``MACs/cycle x cycles``, from START to the last result leaving the
array; loading the operands (host I/O) is reported separately as ``load_cycles``. The output stage
runs at the array's clock here.

In the PLL board designs the output stage stays on the 12 MHz board clock with the shell
(:class:`~npuforge.generators.mac_array.SplitMacArray`). A second table runs those designs as built:
two clocks (board clock and the PLL's exact output), asynchronous FIFOs, raw results (and int8
ones when the requantizer is a pipelined one), in the
Amaranth simulator, on a smaller GEMM (``--board-size``, K = 256) next to the same GEMM on one clock
(Verilator): the difference is what the slower output stage costs.

Writes ``bench/results/sustained.json`` and ``sustained.md``.

Usage: ``python bench/sustained.py [--size 256] [--board-size 48] [--only NAME] [--out DIR]``
"""

import argparse
import dataclasses
import fnmatch
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _report import markdown_report, write_results  # noqa: E402
from qor import DESIGNS, allocation  # noqa: E402
from sim_speed import gemm_operands  # noqa: E402

from npuforge.boards.registry import get_board  # noqa: E402
from npuforge.boards.top import pll_parameters, shell_resources  # noqa: E402
from npuforge.hdl.requant import cycles_per_result  # noqa: E402
from npuforge.sim import verilator  # noqa: E402
from npuforge.sim.gemm import simulate_gemm, simulate_split_gemm  # noqa: E402
from npuforge.sim.golden import mac_array_reference  # noqa: E402

#: Designs whose array clock matters: at least this many MACs per cycle.
MIN_MACS = 24


def _designs(only, *, per_clock=False):
    """The designs to run: large, fitting their board, selected by ``only``; one per array config
    (and board), or with ``per_clock`` one per config and array clock."""
    seen, picked = set(), []
    for design in DESIGNS:
        cfg = design.config
        if cfg.macs_per_cycle < MIN_MACS:
            continue
        need = shell_resources(cfg, split=design.array_hz is not None)
        budget = get_board(design.board).budget.as_dict()
        if any(need[key] > budget[key] for key in need):
            continue                        # does not fit its board (a NO FIT row of the matrix)
        if only and not any(fnmatch.fnmatch(design.name, pattern) for pattern in only):
            continue
        # The same array at another clock simulates the same on one clock.
        key = (design.board, cfg, design.array_hz if per_clock else None)
        if key in seen:
            continue
        seen.add(key)
        picked.append(design)
    return picked


def run(design, size, seed=0):
    cfg = dataclasses.replace(design.config, max_m=size, max_k=size, max_n=size)
    x, w, bias, requant = gemm_operands(size, size, size, seed)
    rows = []
    for mode, rq in (("raw", None), ("int8", requant)):
        t0 = time.perf_counter()
        result = simulate_gemm(cfg, x, w, bias, rq, backend="verilator")
        seconds = time.perf_counter() - t0
        want = mac_array_reference(x, w, bias, rq, acc_bits=cfg.accumulator_bits, k_group=cfg.k_group)
        if not np.array_equal(result.y, want):
            raise SystemExit(f"{design.name} ({mode}): the array disagrees with the golden model")
        compute = size ** 3 / cfg.macs_per_cycle
        rows.append({
            "design": design.name, "board": design.board, "allocation": allocation(cfg),
            "macs_per_cycle": cfg.macs_per_cycle, "requant_radix": cfg.requant_radix,
            "requant_cycles_per_result": cycles_per_result(cfg.requant_radix),
            "mode": mode, "gemm": f"{size}x{size}x{size}", "cycles": result.cycles,
            "ideal_cycles": compute, "utilization": result.utilization,
            "load_cycles": result.load_cycles, "sim_seconds": seconds,
        })
        print(f"  {design.name:36s} {mode:4s} {result.cycles:>9d} cycles  "
              f"{result.utilization:6.1%} busy  ({seconds:.1f} s)", flush=True)
    return rows


def run_board_clocks(design, size, k=256, seed=0):
    """GEMMs (size x k x size) on the split design at its board and PLL clocks, and the same on one
    clock; all must match the golden model. Raw results, and int8 ones when the requantizer is a
    pipelined one (the serial unit's pace is known: 36 + shift board cycles a result)."""
    spec = get_board(design.board)
    array_hz = pll_parameters(spec.clock_hz, design.array_hz)["f_out"]
    cfg = dataclasses.replace(design.config, max_m=size, max_k=k, max_n=size)
    x, w, bias, requant = gemm_operands(size, k, size, seed)
    rows = []
    for mode, rq in (("raw", None), ("int8", requant)):
        if rq is not None and not cfg.requant_radix:
            continue
        want = mac_array_reference(x, w, bias, rq, acc_bits=cfg.accumulator_bits, k_group=cfg.k_group)
        split = simulate_split_gemm(cfg, x, w, bias, rq, array_hz=array_hz, board_hz=spec.clock_hz)
        one = simulate_gemm(cfg, x, w, bias, rq, backend="verilator")
        for label, got in (("board clocks", split.y), ("one clock", one.y)):
            if not np.array_equal(got, want):
                raise SystemExit(f"{design.name} ({mode}, {label}): the array disagrees with the "
                                 "golden model")
        row = {
            "design": design.name, "board": design.board, "allocation": allocation(cfg),
            "macs_per_cycle": cfg.macs_per_cycle, "mode": mode, "gemm": f"{size}x{k}x{size}",
            "board_hz": spec.clock_hz, "array_hz": array_hz,
            "cycles": split.cycles, "utilization": split.utilization,
            "cycles_one_clock": one.cycles, "utilization_one_clock": one.utilization,
            "sim_seconds": split.seconds,
        }
        rows.append(row)
        print(f"  {design.name:36s} {mode:4s} board clocks {row['utilization']:6.1%} busy, one clock "
              f"{row['utilization_one_clock']:6.1%}  ({split.seconds:.1f} s)", flush=True)
    return rows


def markdown(rows, meta, board_rows=()):
    intro = (f"`python bench/sustained.py` — {meta['date']}, Verilator {meta['verilator']}. "
             f"Buffers sized for the GEMM (max_m = max_k = max_n = {meta['size']}); cycles from START to "
             "the last result out of the array; host I/O (operand loading) excluded and shown separately.")
    columns = [("design", False), ("board", False), ("allocation", False), ("MACs/cycle", True),
               ("outputs", False), ("cycles", True), ("ideal", True), ("busy", True), ("load cycles", True)]
    cells = [[r["design"], r["board"], r["allocation"], str(r["macs_per_cycle"]), r["mode"], str(r["cycles"]),
              f"{r['ideal_cycles']:.0f}", f"{r['utilization']:.1%}", str(r["load_cycles"])] for r in rows]
    text = markdown_report("Sustained GEMM throughput", intro, columns, cells)
    if board_rows:
        columns = [("design", False), ("GEMM", False), ("outputs", False), ("board / array clock", False),
                   ("array cycles", True), ("busy, board clocks", True), ("busy, one clock", True)]
        cells = [[r["design"], r["gemm"], r["mode"], f"{r['board_hz'] / 1e6:g} / {r['array_hz'] / 1e6:g} MHz",
                  str(r["cycles"]), f"{r['utilization']:.1%}", f"{r['utilization_one_clock']:.1%}"]
                 for r in board_rows]
        text += "\n" + markdown_report(
            "PLL designs at their board clocks",
            "The output stage on the board clock, the array on the PLL, Amaranth simulator; next to "
            "the same GEMM on one clock (Verilator). Raw results, and int8 ones for pipelined "
            "requantizers. Array cycles from START to the last result.", columns,
            cells).replace("# PLL", "## PLL", 1)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="M = K = N of the GEMM")
    parser.add_argument("--board-size", type=int, default=48,
                        help="M = N of the GEMM (K = 256) run at the board clocks; 0 skips it")
    parser.add_argument("--only", action="append", default=[], help="design name pattern (repeatable)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if not verilator.verilator_available():
        raise SystemExit(verilator.INSTALL_HINT)
    rows = []
    for design in _designs(args.only):
        rows += run(design, args.size)
    board_rows = []
    if args.board_size:
        for design in _designs(args.only, per_clock=True):
            if design.array_hz is not None:
                board_rows += run_board_clocks(design, args.board_size)
    meta = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "board_size": args.board_size,
            "python": platform.python_version(),
            "verilator": ".".join(str(v) for v in verilator.verilator_version())}
    write_results(args.out, "sustained", rows + board_rows, meta, markdown(rows, meta, board_rows))


if __name__ == "__main__":
    main()
