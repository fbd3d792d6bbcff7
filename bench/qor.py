"""Quality of results: complete board designs built for real, designs x boards.

Every design is a MAC array inside the board shell (:class:`~npuforge.boards.top.BoardTop`: UART,
framing, dispatcher, output stage), synthesized, placed and routed with the YoWASP toolchain
(:func:`~npuforge.boards.build.build`). A design either runs wholly on the 12 MHz board clock, or
its array core runs from the iCE40 PLL in its own clock domain while the shell stays on the board
clock ("split"). Builds are kept with ``--timing-allow-fail``, so a missed clock is reported as
FAIL with the frequency it reached; a design that needs more of a resource than the device has (by
the generator's estimate, or as nextpnr finds) is reported as a row with the reason.

For each design the table gives MACs per cycle, the array clock it is constrained to, the Fmax
nextpnr reached on the array clock (and on the shell clock when split), PASS/FAIL, the peak
throughput (MACs/cycle x clock) at the reached Fmax and, when timing passes, at the target clock,
the logic cells, EBR and DSP blocks used, and the build time. Rows on the iCE40UP5K also give the
ratio of MACs/cycle to the DSP bound (8 SB_MAC16 in dual 8x8 mode: 16 int8 MACs per cycle) and
the logic cells left. The JSON adds, per clock, the critical path from nextpnr's timing report
(``top.tim``): start and end cell, logic levels, logic and routing delay, and the source lines.

Designs with hand-instantiated ``SB_MAC16`` blocks are synthesized without ``-dsp`` (see
:func:`synth_options`), and their netlist is checked for intact DSP cells (:func:`check_dsp_cells`).

Builds are cached by content in the build directory: running again only rebuilds what changed.
Writes ``qor.json`` and ``qor.md`` into ``--out``; with ``--only``, the rows of designs not
selected are kept from an earlier ``qor.json``.

Usage: ``python bench/qor.py [--quick] [--out bench/results] [--jobs 1] [--only NAME]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from npuforge.boards.build import BuildError, DoesNotFit, build, check_fit
from npuforge.boards.registry import get_board
from npuforge.boards.report import parse_errors
from npuforge.boards.toolchain import ToolchainError
from npuforge.boards.top import BoardTop, pll_parameters, shell_resources
from npuforge.generators.mac_array import MacArrayConfig

ROOT = Path(__file__).resolve().parents[1]

#: int8 MACs per cycle that the UP5K's eight SB_MAC16 blocks give in dual 8x8 mode.
UP5K_DSP_BOUND = 16

#: Clock the PLL designs run their array at (42 MHz = 12 MHz x 56 / 16; 40 MHz itself is not
#: reachable from 12 MHz within 1 %, the nearest below is 39.75 MHz).
PLL_HZ = 42e6


@dataclass(frozen=True)
class Design:
    """One row of the matrix.

    Members
    -------
    name : str
        Row name (also the build directory's name).
    board : str
        Board name (see :func:`npuforge.boards.registry.get_board`).
    config : MacArrayConfig
        The generator's configuration.
    array_hz : float or None
        Array clock from the PLL, or ``None``: everything on the board clock.
    quick : bool
        Part of the ``--quick`` subset.
    precheck : bool
        Refuse the design when the generator's estimate exceeds the device; ``False`` for designs
        near the limit, where only nextpnr can tell.
    """

    name: str
    board: str
    config: MacArrayConfig
    array_hz: Optional[float] = None
    quick: bool = False
    precheck: bool = True


def _cfg(rows, cols, multiplier="lut", **kw):
    return MacArrayConfig(rows=rows, cols=cols, multiplier=multiplier, **kw)


UP5K = "icebreaker"
HX8K = "ice40_hx8k_b_evn"

def _carry(rows, cols, latency=2, requant_radix=0):
    # Carry-chain logic multipliers with shared operand delay lines, bit-serial requantizer unless
    # asked for another.
    return _cfg(rows, cols, lut_multiplier="carry", mul_latency=latency, requant_radix=requant_radix)


def _mixed_carry(rows, cols, dataflow="os", latency=2):
    # All 8 DSP blocks first, carry-chain logic multipliers for the other PEs.
    return _cfg(rows, cols, "mixed", dsp_blocks=8, mul_latency=latency, lut_multiplier="carry",
                dataflow=dataflow, requant_radix=0)


def _mixed(rows, cols):
    # All 8 DSP blocks (16 PEs in dual 8x8 mode), pipelined LUT multipliers for the other PEs.
    return _cfg(rows, cols, "mixed", dsp_blocks=8, mul_latency=2)


DESIGNS = (
    # Small and DSP-only designs on the 12 MHz board clock (the demo's design is up5k-4x4-dsp).
    Design("up5k-2x2-lut", UP5K, _cfg(2, 2), quick=True),
    Design("up5k-4x4-dsp", UP5K, _cfg(4, 4, "dsp"), quick=True),
    # Partial-product ("tree") logic PEs beside the DSPs: the estimate already refuses 24 MACs.
    Design("up5k-4x6-mixed", UP5K, _mixed(4, 6)),
    # Carry-chain logic PEs beside all 8 DSP blocks, array core on the PLL.
    Design("up5k-4x6-mixed-carry-l3-pll42", UP5K, _mixed_carry(4, 6, latency=3), PLL_HZ,
           precheck=False),
    Design("up5k-8x4-ws-mixed-carry-l3-pll42", UP5K, _mixed_carry(8, 4, "ws", 3), PLL_HZ,
           precheck=False),
    Design("up5k-8x4-ws-mixed-carry-l3-pll33", UP5K, _mixed_carry(8, 4, "ws", 3), 33e6,
           precheck=False),
    # 40.5 MHz = 12 MHz x 54 / 16, the lowest PLL setting at or above 40 MHz.
    Design("up5k-8x4-ws-mixed-carry-l3-pll40", UP5K, _mixed_carry(8, 4, "ws", 3), 40.5e6,
           precheck=False),
    # HX8K board (no DSP blocks): tree PEs on the board clock, carry-chain PEs on the PLL.
    Design("hx8k-3x3-lut", HX8K, _cfg(3, 3), quick=True),
    Design("hx8k-4x5-lut-l2", HX8K, _cfg(4, 5, mul_latency=2), precheck=False),
    Design("hx8k-4x6-lut-l2", HX8K, _cfg(4, 6, mul_latency=2)),
    Design("hx8k-4x6-carry-pll42", HX8K, _carry(4, 6), PLL_HZ, precheck=False),
    # A requantizer that keeps up with int8 results at K = 256 from the board clock: 3 cycles a
    # result (11 multiplier bits per cycle) against the 24 results per 256 beats at 42 MHz.
    Design("hx8k-4x6-carry-rq11-pll42", HX8K, _carry(4, 6, requant_radix=11), PLL_HZ,
           precheck=False),
    Design("hx8k-4x8-carry-pll42", HX8K, _carry(4, 8), PLL_HZ, precheck=False),
    Design("hx8k-4x8-carry-pll72", HX8K, _carry(4, 8), 72e6, precheck=False),
)


# -- nextpnr's critical-path reports --------------------------------------------------------------

_CP_HEADER = re.compile(r"^Info: Critical path report for clock '([^']+)' \((\w+) -> (\w+)\):")
_CP_STEP = re.compile(r"^Info:\s+(clk-to-q|routing|logic|setup|source)\s+([0-9.]+)\s+([0-9.]+)\s+"
                      r"(Source|Net)\s+(\S+)")
_CP_SINK = re.compile(r"^Info:\s+Sink\s+(\S+)")
_CP_END = re.compile(r"^Info: ([0-9.]+) ns logic, ([0-9.]+) ns routing")
_CP_DEFINED = re.compile(r"^Info:\s+(\S+\.py):(\d+)\s*$")


def short_cell(name: str) -> str:
    """A placed cell or pin name without the suffixes Yosys and nextpnr append.

    ``shell.array.requant.mult_SB_DFFESR_Q_25_D_SB_LUT4_O_LC.O`` -> ``shell.array.requant.mult``.
    """
    cut = name.find("_SB_")
    if cut > 0:
        return name[:cut]
    for suffix in ("_DFFLC", "_LC", "_CARRY"):
        base, _, pin = name.rpartition(".")
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return name


def _source_location(path: str, line: str) -> str:
    """``path:line`` relative to the repository (or to the installed package), never absolute."""
    p = Path(path)
    parts = p.parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return f"{'/'.join(parts[parts.index(anchor) + 1:])}:{line}"
    try:
        return f"{p.resolve().relative_to(ROOT).as_posix()}:{line}"
    except ValueError:
        return f"{p.name}:{line}"


def parse_critical_paths(text: str) -> Dict[str, dict]:
    """Parse the last critical-path report of each clock from a nextpnr-ice40 log.

    Parameters
    ----------
    text : str
        nextpnr's log (``top.tim``).

    Returns
    -------
    dict
        Clock name -> ``{"start", "end", "start_cell", "end_cell", "logic_levels", "logic_ns",
        "routing_ns", "total_ns", "sources"}``; ``start``/``end`` are the shortened cell names,
        ``sources`` the design's source lines along the path, in order, without repeats.
    """
    paths: Dict[str, dict] = {}
    current = None
    clock = None
    for line in text.splitlines():
        header = _CP_HEADER.match(line)
        if header:
            clock = header.group(1)
            current = {"steps": [], "sinks": [], "sources": []}
            continue
        if current is None:
            continue
        step = _CP_STEP.match(line)
        if step:
            current["steps"].append((step.group(1), float(step.group(2)), float(step.group(3)),
                                     step.group(4), step.group(5)))
            continue
        sink = _CP_SINK.match(line)
        if sink:
            current["sinks"].append(sink.group(1))
            continue
        defined = _CP_DEFINED.match(line)
        if defined:
            loc = _source_location(defined.group(1), defined.group(2))
            if loc not in current["sources"]:
                current["sources"].append(loc)
            continue
        end = _CP_END.match(line)
        if end:
            steps = current["steps"]
            cells = [s[4] for s in steps if s[3] == "Source"]
            if cells:
                start_cell = cells[0]
                end_cell = current["sinks"][-1] if current["sinks"] else cells[-1]
                paths[clock] = {
                    "start": short_cell(start_cell), "end": short_cell(end_cell),
                    "start_cell": start_cell, "end_cell": end_cell,
                    "logic_levels": sum(1 for s in steps if s[0] == "logic"),
                    "logic_ns": float(end.group(1)), "routing_ns": float(end.group(2)),
                    "total_ns": steps[-1][2],
                    "sources": current["sources"],
                }
            current = None
    return paths


def describe_path(path: Optional[dict]) -> Optional[str]:
    """One line: start -> end, logic levels, delays, and the design's own source lines."""
    if not path:
        return None
    own = [s for s in path["sources"] if not s.startswith(("amaranth/", "share/"))]
    where = f"; {', '.join(own[:4])}" if own else ""
    return (f"{path['start']} -> {path['end']} ({path['logic_levels']} logic levels, "
            f"{path['total_ns']:.2f} ns = {path['logic_ns']:.2f} logic + {path['routing_ns']:.2f} "
            f"routing{where})")


# -- one design ------------------------------------------------------------------------------------

def allocation(cfg: MacArrayConfig) -> str:
    """How the PEs multiply and requantize, e.g. ``"mixed: 16 on 8 DSP (dual 8x8) + 8 LUT, L2,
    requant radix 4"``."""
    pes = cfg.rows * cfg.cols
    if cfg.multiplier == "infer":
        return f"{pes} inferred `*` (L{cfg.mul_latency})"
    parts = []
    if cfg.dsp_pes:
        mode = "dual 8x8" if cfg.pes_per_dsp == 2 else "16x16"
        parts.append(f"{cfg.dsp_pes} on {cfg.dsp_count} DSP ({mode})")
    lut = pes - cfg.dsp_pes
    if lut:
        parts.append(f"{lut} {'carry-chain' if cfg.uses_carry else 'LUT'}")
    requant = "serial requant" if cfg.requant_radix == 0 else f"requant radix {cfg.requant_radix}"
    return f"{cfg.multiplier}: {' + '.join(parts)}, L{cfg.mul_latency}, {requant}"


def _clock_roles(clocks: Dict[str, dict], split: bool, array_mhz: float):
    """(array clock name, shell clock name or None) among nextpnr's clocks."""
    names = list(clocks)
    if not split:
        return (names[0] if names else None), None
    array = next((n for n in names if "array" in n), None)
    if array is None:
        array = min(names, key=lambda n: abs(clocks[n]["target_mhz"] - array_mhz), default=None)
    shell = next((n for n in names if n != array), None)
    return array, shell


def synth_options(design: Design) -> Optional[str]:
    """``synth_ice40`` options for a design: no ``-dsp`` when it instantiates ``SB_MAC16`` itself.

    Yosys' ``ice40_dsp`` pass (run by ``synth_ice40 -dsp``) also matches hand-instantiated
    ``SB_MAC16`` cells and rewrites them as its own 16x16 multipliers: ``MODE_8x8`` cleared, the
    registers dropped, ``CE`` and ``CLK`` tied to 0. The DSP PEs write their products as
    instances, and the LUT PEs as partial products, so nothing is left for ``-dsp`` to infer.
    ``None`` keeps the board's default.
    """
    cfg = design.config
    if cfg.multiplier in ("dsp", "mixed") and cfg.dsp_pes:
        return ""
    return None


def check_dsp_cells(netlist: Path, cfg: MacArrayConfig) -> dict:
    """What became of the design's ``SB_MAC16`` instances in Yosys' output netlist (``top.json``).

    Returns
    -------
    dict
        ``cells`` (how many), ``expected`` (:attr:`MacArrayConfig.dsp_count` for ``dsp`` and
        ``mixed``), ``mode_8x8`` (cells in dual 8x8 mode), ``clocked`` (cells whose ``CLK`` is a
        net, not a constant) and ``ok``: every expected cell is there, clocked, in the right mode.
    """
    module = json.loads(netlist.read_text())["modules"]["top"]
    cells = [c for c in module["cells"].values() if c["type"] == "SB_MAC16"]
    mode = sum(1 for c in cells if int(c["parameters"].get("MODE_8x8", "0"), 2) == 1)
    clocked = sum(1 for c in cells if all(isinstance(b, int) for b in c["connections"]["CLK"]))
    expected = cfg.dsp_count if cfg.multiplier in ("dsp", "mixed") else 0
    want_mode = expected if cfg.pes_per_dsp == 2 else 0
    return {"cells": len(cells), "expected": expected, "mode_8x8": mode, "clocked": clocked,
            "ok": len(cells) >= expected and mode >= want_mode and clocked >= expected}


def run_design(design: Design, build_root: Path, precheck: bool = True) -> dict:
    """Build one design and return its row (plain JSON data).

    Parameters
    ----------
    design : Design
    build_root : Path
        The build goes into ``build_root / design.name``.
    precheck : bool
        Refuse the design before synthesis when the generator's estimate exceeds the device.

    Returns
    -------
    dict
        The row: design, board, figures, ``status`` (``"PASS"``, ``"FAIL"``, ``"NO FIT"``,
        ``"ERROR"``) and ``reason`` when there is no bitstream.
    """
    cfg = design.config
    spec = get_board(design.board)
    out_dir = build_root / design.name
    split = design.array_hz is not None
    target_hz = pll_parameters(spec.clock_hz, design.array_hz)["f_out"] if split else spec.clock_hz
    estimate = shell_resources(cfg, split=split)
    row = {
        "name": design.name, "board": spec.name, "device": spec.device,
        "rows": cfg.rows, "cols": cfg.cols, "dataflow": cfg.dataflow,
        "multiplier": cfg.multiplier, "mul_latency": cfg.mul_latency,
        "dsp_pes": cfg.dsp_pes, "lut_pes": cfg.rows * cfg.cols - cfg.dsp_pes,
        "allocation": allocation(cfg), "macs_per_cycle": cfg.macs_per_cycle,
        "config": cfg.to_dict(),
        "split": split, "array_target_mhz": target_hz / 1e6,
        "shell_target_mhz": spec.clock_hz / 1e6 if split else None,
        "estimate": estimate, "build_dir": _relative(out_dir),
        "status": None, "reason": None,
        "fmax_array_mhz": None, "fmax_shell_mhz": None, "clocks": {},
        "gmacs_at_fmax": None, "gmacs_at_target": None,
        "resources": {}, "build_seconds": None, "cached": False,
        "critical_path": None, "critical_paths": {},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    budget = spec.budget.as_dict()
    if spec.device == "iCE40UP5K":
        row["dsp_bound_ratio"] = cfg.macs_per_cycle / UP5K_DSP_BOUND

    def progress(stage, status, elapsed):
        if status != "running":
            print(f"[{design.name}] {stage} {status} {elapsed:.0f} s", file=sys.stderr, flush=True)

    start = time.monotonic()
    if precheck and design.precheck:
        try:
            check_fit(estimate, spec)
        except DoesNotFit as exc:
            row.update(status="NO FIT", reason=f"{exc} (pre-synthesis estimate; not built)",
                       resources_estimated=True)
            row["resources"][exc.resource] = {"used": exc.needed, "available": exc.available}
            return row
    try:
        top = BoardTop(cfg, spec, array_clock_hz=design.array_hz)
        result = build(top, spec, out_dir, synth_opts=synth_options(design), progress=progress,
                       allow_timing_fail=True)
    except DoesNotFit as exc:
        row.update(status="NO FIT", reason=_clean(str(exc)), build_seconds=time.monotonic() - start)
        row["resources"][exc.resource] = {"used": exc.needed, "available": exc.available}
        _add_partial_report(row, out_dir)
        return row
    except (BuildError, ToolchainError) as exc:
        row.update(status="ERROR", reason=str(exc), build_seconds=time.monotonic() - start)
        _add_partial_report(row, out_dir)
        # The exception quotes nextpnr's last error line ("Packing design failed."); the first
        # one says why.
        tim = out_dir / "top.tim"
        if "nextpnr" in row["reason"] and tim.is_file():
            errors = parse_errors(tim.read_text(encoding="utf-8", errors="replace"))
            if errors and errors[0] not in row["reason"]:
                row["reason"] += f": {errors[0]}"
        # nextpnr's placer may give up on an over-full device with "Failed to expand region" rather
        # than "no BELs remaining": its utilisation table still says what overflowed.
        over = [(key, use) for key, use in row["resources"].items() if use["used"] > use["available"]]
        if over:
            key, use = over[0]
            detail = str(DoesNotFit(key, use["used"], use["available"], spec))
            row.update(status="NO FIT", reason=f"{detail} (nextpnr: {exc})")
        row["reason"] = _clean(row["reason"])
        return row

    report = result.report
    if cfg.multiplier in ("dsp", "mixed") and (out_dir / "top.json").is_file():
        row["dsp_cells"] = check_dsp_cells(out_dir / "top.json", cfg)
    if report.error:
        row["reason"] = _clean(report.error)
    row["status"] = report.status
    row["cached"] = result.cached
    row["synth_opts"] = report.synth_opts
    row["build_seconds"] = report.total_seconds
    row["resources"] = {key: {"used": use.used, "available": use.available}
                        for key, use in report.resources.items()}
    clocks = {name: {"fmax_mhz": c.fmax_mhz, "target_mhz": c.target_mhz, "passed": c.passed}
              for name, c in report.clocks.items()}
    row["clocks"] = clocks
    array_clock, shell_clock = _clock_roles(clocks, split, target_hz / 1e6)
    paths = parse_critical_paths((out_dir / "top.tim").read_text(encoding="utf-8", errors="replace"))
    row["critical_paths"] = paths
    if array_clock is not None:
        fmax = clocks[array_clock]["fmax_mhz"]
        row["fmax_array_mhz"] = fmax
        row["gmacs_at_fmax"] = cfg.macs_per_cycle * fmax / 1e3
        row["critical_path"] = describe_path(paths.get(array_clock))
    if shell_clock is not None:
        row["fmax_shell_mhz"] = clocks[shell_clock]["fmax_mhz"]
        row["critical_path_shell"] = describe_path(paths.get(shell_clock))
    if report.passed:
        row["gmacs_at_target"] = cfg.macs_per_cycle * target_hz / 1e9
    dsp = row.get("dsp_cells")
    if dsp is not None and not dsp["ok"]:
        # The bitstream would not compute what the simulation model does.
        row.update(status="FAIL", gmacs_at_target=None,
                   reason=f"synthesis rewrote the SB_MAC16 instances ({dsp['cells']} cells, "
                          f"{dsp['mode_8x8']} in dual 8x8 mode, {dsp['clocked']} clocked; "
                          f"expected {dsp['expected']}); synth_ice40 options "
                          f"'{report.synth_opts}'")
    lc = report.resources.get("logic_cells")
    if lc is not None:
        row["logic_left"] = lc.available - lc.used
    else:
        row["logic_left"] = budget["logic_cells"]
    return row


def _add_partial_report(row, out_dir):
    """Utilisation from nextpnr's log of a failed build (it printed its table before failing)."""
    from npuforge.boards.report import NEXTPNR_CELLS, parse_utilisation
    tim = out_dir / "top.tim"
    if not tim.is_file() or row["reason"] is None or "nextpnr" not in row["reason"]:
        return
    table = parse_utilisation(tim.read_text(encoding="utf-8", errors="replace"))
    for key, cell in NEXTPNR_CELLS.items():
        if cell in table:
            row["resources"].setdefault(key, {"used": table[cell].used,
                                              "available": table[cell].available})


def _clean(text: str) -> str:
    """A message without this machine's paths (build logs are named relative to the repository)."""
    return text.replace(f"{ROOT.as_posix()}/", "")


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.name


# -- tables ----------------------------------------------------------------------------------------

COLUMNS = ("design", "array", "dataflow", "multipliers", "board", "MACs/cycle", "array clock MHz",
           "Fmax MHz (array / shell)", "timing", "GMAC/s @Fmax", "GMAC/s @target", "logic cells",
           "EBR", "DSP", "vs DSP bound", "logic left", "build s")


def _num(value, fmt):
    return "–" if value is None else format(value, fmt)


def _use(row, key):
    use = row["resources"].get(key)
    if use is None:
        return "–"
    return f"{use['used']}/{use['available']}" + (" (est.)" if row.get("resources_estimated") else "")


def table_rows(rows: List[dict]) -> List[List[str]]:
    """Table cells of each row, in :data:`COLUMNS` order."""
    out = []
    for r in rows:
        fmax = _num(r["fmax_array_mhz"], ".2f")
        if r["split"] and r["fmax_shell_mhz"] is not None:
            fmax += f" / {r['fmax_shell_mhz']:.2f}"
        target = f"{r['array_target_mhz']:g}" + (" (PLL)" if r["split"] else "")
        if "dsp_bound_ratio" in r:
            ratio = f"{r['macs_per_cycle']}/{UP5K_DSP_BOUND} = {r['dsp_bound_ratio']:.2f}x"
        else:
            ratio = "–"
        left = "–"
        lc = r["resources"].get("logic_cells")
        if r.get("logic_left") is not None and lc and r["status"] in ("PASS", "FAIL"):
            left = f"{r['logic_left']} ({100 * r['logic_left'] / lc['available']:.0f}%)"
        seconds = _num(r["build_seconds"], ".0f") + (" (cached)" if r.get("cached") else "")
        out.append([r["name"], f"{r['rows']}x{r['cols']}", r["dataflow"], r["allocation"], r["board"],
                    str(r["macs_per_cycle"]), target, fmax, r["status"],
                    _num(r["gmacs_at_fmax"], ".3f"), _num(r["gmacs_at_target"], ".3f"),
                    _use(r, "logic_cells"), _use(r, "bram"), _use(r, "dsp"), ratio, left, seconds])
    return out


def markdown(rows: List[dict], meta: dict) -> str:
    """The results as a Markdown document: the table, the reasons, the critical paths."""
    lines = ["# QoR: complete board designs (MAC array + UART shell)", "",
             (f"Measured {meta['date']} with {meta['tools']}; nextpnr seed 1. "
              "Fmax is nextpnr's after routing; GMAC/s = MACs/cycle x clock (peak). "
              "`vs DSP bound`: MACs/cycle over the 16 int8 MACs/cycle of the UP5K's 8 SB_MAC16 in "
              "dual 8x8 mode. `(PLL)`: the array core runs from the PLL, the shell on the 12 MHz "
              "board clock."), "",
             "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---:" if c in ("MACs/cycle", "GMAC/s @Fmax", "GMAC/s @target")
                            else "---" for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    lines.append("")
    failed = [r for r in rows if r["reason"]]
    if failed:
        lines += ["Designs without a bitstream:", ""]
        lines += [f"- `{r['name']}`: {r['reason']}" for r in failed]
        lines.append("")
    paths = [r for r in rows if r.get("critical_path")]
    if paths:
        lines += ["Critical paths (array clock; shell clock when split):", ""]
        for r in paths:
            lines.append(f"- `{r['name']}`: {r['critical_path']}")
            if r.get("critical_path_shell"):
                lines.append(f"  - shell: {r['critical_path_shell']}")
        lines.append("")
    return "\n".join(lines)


def plain_table(rows: List[dict]) -> str:
    """The table for a terminal."""
    cells = [list(COLUMNS), *table_rows(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


# -- main ------------------------------------------------------------------------------------------

def select(designs, quick: bool, only: Optional[List[str]]):
    """The designs to build: all, the ``--quick`` subset, or those matching ``--only`` patterns."""
    chosen = [d for d in designs if d.quick] if quick else list(designs)
    if only:
        patterns = [p for arg in only for p in arg.split(",") if p]
        chosen = [d for d in designs if any(fnmatch.fnmatchcase(d.name, p) for p in patterns)]
        if not chosen:
            names = ", ".join(d.name for d in designs)
            raise SystemExit(f"--only matches no design; designs: {names}")
    return chosen


def _tools():
    from npuforge.boards.toolchain import tool_versions, toolchain_env
    try:
        versions = tool_versions(toolchain_env())
    except ToolchainError as exc:
        raise SystemExit(str(exc)) from None
    return versions


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only a few small designs")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                        help="directory for qor.json and qor.md")
    parser.add_argument("--jobs", type=int, default=1,
                        help="builds at a time (each tool is single-threaded, ~1-2 GB)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="build only these designs (glob patterns, comma-separated or repeated)")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "qor",
                        help="where the builds go (one directory per design; cached by content)")
    parser.add_argument("--no-precheck", action="store_true",
                        help="build even when the generator's estimate says it does not fit")
    parser.add_argument("--list", action="store_true", help="list the designs and exit")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")

    if args.list:
        for d in DESIGNS:
            est = shell_resources(d.config, split=d.array_hz is not None)
            clock = f"{d.array_hz / 1e6:g} MHz PLL" if d.array_hz else "board clock"
            print(f"{d.name:<24} {d.board:<18} {allocation(d.config):<42} {clock:<14} "
                  f"estimate {est['logic_cells']} LC{'  (quick)' if d.quick else ''}")
        return 0

    designs = select(DESIGNS, args.quick, args.only)
    versions = _tools()
    build_root = args.build_dir.resolve()
    print(f"building {len(designs)} design(s), {args.jobs} at a time, into {_relative(build_root)}",
          file=sys.stderr)
    results: Dict[str, dict] = {}
    t0 = time.monotonic()
    if args.jobs == 1:
        for d in designs:
            results[d.name] = run_design(d, build_root, not args.no_precheck)
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(run_design, d, build_root, not args.no_precheck): d
                       for d in designs}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future].name] = future.result()
    wall = time.monotonic() - t0

    # Keep earlier rows of designs not built this time (``--only``), in matrix order.
    json_path = args.out / "qor.json"
    previous = {}
    if args.only and json_path.is_file():
        try:
            previous = {r["name"]: r for r in json.loads(json_path.read_text())["rows"]}
        except (ValueError, KeyError, TypeError):
            previous = {}
    rows = [results.get(d.name) or previous.get(d.name) for d in DESIGNS]
    rows = [r for r in rows if r is not None]

    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "tools": ", ".join(versions[k].split(",")[0] for k in ("yosys", "nextpnr-ice40")
                           if k in versions) + f", amaranth {versions.get('amaranth', '?')}",
        "tool_versions": versions, "wall_seconds": wall, "jobs": args.jobs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "up5k_dsp_bound": UP5K_DSP_BOUND,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "qor.md").write_text(markdown(rows, meta))
    print(plain_table(rows))
    print()
    for r in rows:
        if r["reason"]:
            print(f"{r['name']}: {r['status']}: {r['reason']}")
        elif r.get("critical_path"):
            print(f"{r['name']}: critical path {r['critical_path']}")
    print(f"\nwrote {json_path} and {args.out / 'qor.md'} ({wall:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
