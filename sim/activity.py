"""Switching activity of the MAC array's datapath, counted from a simulation's waveform.

Dynamic power in CMOS follows the toggles of the nets (``P = a C V^2 f``); counting bit toggles of
the datapath per MAC is a technology-independent way to compare design options such as operand
gating. The datapath here is what every multiply drives, each net once: every PE multiplier's
operand ports (with operand gating, its held operand registers), its internal nodes and its
product; the accumulators and their adders (``acc_*``, ``sum_*``); weight-stationary arrays' masked
products (``gp_*``) and column sums (``colsum_*``). The shared row and column operand registers in
front of the PEs, the buffers and the control are not counted. Zero-delay simulation: glitches are
not seen. ``bench/activity.py`` applies it to operand gating.
"""

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .gemm import simulate_gemm

__all__ = ["ActivityReport", "count_vcd_toggles", "datapath_activity"]

# Each net once: the multiplier instances' ports and internal nodes, the accumulators, the masked
# products and column sums (weight-stationary); not the aliases of the same nets outside them.
_DATAPATH = re.compile(r"\.pe_\d+_\d+\.(a|b|p|result|pp\d+_\d+)$|(^|\.)(acc_|sum_|gp_|colsum_)")
# The accumulator memory's own view of its port signals: the same nets as the ports.
_ALIASES = re.compile(r"\.acc_mem\.")
_CLOCKS = re.compile(r"\.(clk|rst)$")


@dataclass
class ActivityReport:
    """Bit toggles of the datapath during one GEMM.

    Members
    -------
    toggles : int
        Bit toggles of all datapath signals.
    macs : int
        Useful multiply-accumulates of the GEMM (``M * K * N``).
    by_signal : dict
        Toggles per signal (hierarchical name).
    """

    toggles: int
    macs: int
    cycles: int
    by_signal: dict = field(default_factory=dict, repr=False)

    @property
    def per_mac(self):
        return self.toggles / self.macs


def count_vcd_toggles(path, select=None):
    """Bit toggles per signal in a VCD file.

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
    last = {}
    counts = {}
    in_defs = True
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
            if head in "#$":
                continue
            if head in "bB":
                value, ident = line[1:].split()
            elif head in "01xXzZ":
                value, ident = head, line[1:]
            else:
                continue
            if ident not in ids:
                continue
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
    return counts


def datapath_activity(config, x, w, bias=None, requant=None):
    """Run a GEMM in simulation and count its datapath toggles.

    Returns
    -------
    ActivityReport
    """
    with tempfile.TemporaryDirectory(prefix="npuforge-activity-") as tmp:
        vcd = Path(tmp) / "run.vcd"
        result = simulate_gemm(config, x, w, bias, requant, vcd=vcd)
        counts = count_vcd_toggles(
            vcd, lambda name: (bool(_DATAPATH.search(name)) and not _CLOCKS.search(name)
                               and not _ALIASES.search(name)))
    m, k = result.y.shape[0], len(w)
    n = result.y.shape[1]
    return ActivityReport(toggles=sum(counts.values()), macs=m * k * n, cycles=result.cycles,
                          by_signal=counts)
