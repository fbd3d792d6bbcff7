"""Switching activity of the MAC array's datapath, counted from a simulation's waveform.

Dynamic power in CMOS follows the toggles of the nets (``P = a C V^2 f``); counting bit toggles of
the datapath per MAC is a technology-independent way to compare design options such as operand
gating. The datapath here is what every multiply drives, each net once:

* every PE multiplier instance's nets: its operand ports (with operand gating, the held operand
  registers), internal nodes (adder-tree nodes, pipeline registers; a DSP model's registers) and
  product;
* the accumulators and their adders (``acc_*``, ``sum_*``);
* weight-stationary arrays' masked products (``gp_*``), column sums (``colsum_*``) and
  accumulator memory data.

The control that operand gating adds (zero flags ``gz_*``, load enables ``gl_*``, the
multipliers' ``clear`` inputs) is counted apart, in :attr:`ActivityReport.control_toggles`, so
that a report can give the saving with and without it. The shared row and column operand
registers in front of the PEs, the buffers and the rest of the control are not counted.

Zero-delay simulation: only the value each net has settled to at the end of a timestamp counts,
as in a Verilog simulator's VCD dump, so neither glitches nor the simulator's delta-cycle steps are
seen. ``bench/activity.py`` applies it to operand gating.
"""

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .gemm import simulate_gemm

__all__ = ["ActivityReport", "count_vcd_toggles", "datapath_activity"]

# Each net once: the multiplier instances' nets, the accumulators, the masked products and column
# sums (weight-stationary); not the aliases of the same nets outside them.
_DATAPATH = re.compile(r"\.pe_(\d+_\d+|dsp\d+)\.[^.]+$|(^|\.)(acc_|sum_|gp_|colsum_)")
# What operand gating adds: zero flags, load enables, the multipliers' clear inputs.
_CONTROL = re.compile(r"(^|\.)(gz_|gl_)|\.pe_\d+_\d+\.clear$")
# The accumulator memory's own view of its port signals: the same nets as the ports.
_ALIASES = re.compile(r"\.acc_mem\.")
# Clocks, resets, enables and addresses are control, and not gating's.
_CLOCKS = re.compile(r"\.(clk|rst|en|b_hold)$|__(addr|en)$")


@dataclass
class ActivityReport:
    """Bit toggles of the datapath during one GEMM.

    Members
    -------
    toggles : int
        Bit toggles of all datapath signals.
    macs : int
        Useful multiply-accumulates of the GEMM (``M * K * N``).
    cycles : int
        Clock cycles of the run.
    control_toggles : int
        Bit toggles of the control that operand gating adds (0 without it).
    by_signal : dict
        Toggles per signal (hierarchical name), datapath and gating control.
    """

    toggles: int
    macs: int
    cycles: int
    control_toggles: int = 0
    by_signal: dict = field(default_factory=dict, repr=False)

    @property
    def per_mac(self):
        """Datapath toggles per MAC."""
        return self.toggles / self.macs

    @property
    def total(self):
        """Datapath and gating-control toggles."""
        return self.toggles + self.control_toggles


def count_vcd_toggles(path, select=None):
    """Bit toggles per signal in a VCD file, between the settled values of successive timestamps.

    A simulator may write a net several times within one timestamp while its delta cycles settle
    (an adder whose two inputs arrive in different delta cycles passes through a value that mixes
    the new one with the old). Such zero-width steps depend on the simulator's evaluation order,
    not on the circuit, and Verilog's own VCD dumps leave them out; here too only the value a net
    has at the end of each timestamp is compared with the one it had at the end of the previous.

    Parameters
    ----------
    path : path
    select : callable, optional
        ``select(hierarchical_name) -> bool``; all signals when omitted.

    Returns
    -------
    dict
        ``{name: toggles}``; a change from ``x`` counts no toggle. Aliases of one net (names
        sharing a VCD identifier) count once, under the first selected name.
    """
    ids = {}             # VCD identifier -> list of names
    scope = []
    last = {}            # identifier -> settled value at the end of the previous timestamp
    pending = {}         # identifier -> latest value written in the current timestamp
    counts = {}
    in_defs = True

    def settle():
        for ident, value in pending.items():
            prev = last.get(ident)
            last[ident] = value
            if prev is None or "x" in prev or "x" in value:
                continue
            width = max(len(prev), len(value))
            a, b = prev.rjust(width, "0"), value.rjust(width, "0")
            flips = sum(1 for p, q in zip(a, b) if p != q)
            if flips:
                for name in ids[ident]:
                    counts[name] = counts.get(name, 0) + flips
        pending.clear()

    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if in_defs:
                if line.startswith("$scope"):
                    scope.append(line.split()[2])
                elif line.startswith("$upscope"):
                    scope.pop()
                elif line.startswith("$var"):
                    parts = line.split()
                    ident, name = parts[3], parts[4]
                    full = ".".join(scope + [name])
                    # Aliases of one net share its identifier: it counts once, under the first
                    # selected name.
                    if ident not in ids and (select is None or select(full)):
                        ids[ident] = [full]
                elif line.startswith("$enddefinitions"):
                    in_defs = False
                continue
            head = line[0]
            if head == "#":
                settle()
                continue
            if head == "$":
                continue
            if head in "bB":
                value, ident = line[1:].split()
            elif head in "01xXzZ":
                value, ident = head, line[1:]
            else:
                continue
            if ident in ids:
                pending[ident] = value.lower()
    settle()
    return counts


def datapath_activity(config, x, w, bias=None, requant=None):
    """Run a GEMM in simulation and count its datapath toggles (and operand gating's control).

    Returns
    -------
    ActivityReport
    """
    def select(name):
        if _CLOCKS.search(name) or _ALIASES.search(name):
            return False
        return bool(_CONTROL.search(name) or _DATAPATH.search(name))

    with tempfile.TemporaryDirectory(prefix="npuforge-activity-") as tmp:
        vcd = Path(tmp) / "run.vcd"
        result = simulate_gemm(config, x, w, bias, requant, vcd=vcd)
        counts = count_vcd_toggles(vcd, select)
    control = sum(v for name, v in counts.items() if _CONTROL.search(name))
    m, k = result.y.shape[0], len(w)
    n = result.y.shape[1]
    return ActivityReport(toggles=sum(counts.values()) - control, macs=m * k * n,
                          cycles=result.cycles, control_toggles=control, by_signal=counts)
