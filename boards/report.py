"""Build reports: what nextpnr says about a placed and routed design.

The parsers read nextpnr-ice40's log text (the ``top.tim`` file of an Amaranth build):

* the "Device utilisation" table, e.g. ``Info:          ICESTORM_LC:    1234/   5280    23%``;
* the timing summary, e.g. ``Info: Max frequency for clock 'cd_sync.clk': 57.80 MHz (PASS at
  12.00 MHz)`` (nextpnr prints it after placement and again after routing; the last one counts);
* ``ERROR:`` lines, and the cell type nextpnr could not place when a design does not fit.

:class:`BuildReport` holds one build's figures and renders them as JSON (for machines), Markdown
(for a repository or a pull request) and a plain table (for the terminal).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

__all__ = [
    "RESOURCE_KEYS",
    "NEXTPNR_CELLS",
    "RESOURCE_LABELS",
    "ResourceUse",
    "ClockTiming",
    "BuildReport",
    "parse_utilisation",
    "parse_fmax",
    "parse_errors",
    "parse_unplaced_cell_type",
]

#: Resources a report lists, in order.
RESOURCE_KEYS = ("logic_cells", "bram", "spram", "dsp", "io")

#: nextpnr-ice40's cell type for each resource.
NEXTPNR_CELLS = {
    "logic_cells": "ICESTORM_LC",
    "bram": "ICESTORM_RAM",
    "spram": "ICESTORM_SPRAM",
    "dsp": "ICESTORM_DSP",
    "io": "SB_IO",
}

#: Human names (singular, plural) of each resource.
RESOURCE_LABELS = {
    "logic_cells": ("logic cell", "logic cells"),
    "bram": ("block RAM (4 kbit EBR)", "block RAMs (4 kbit EBR)"),
    "spram": ("SPRAM block (256 kbit)", "SPRAM blocks (256 kbit)"),
    "dsp": ("DSP block (SB_MAC16)", "DSP blocks (SB_MAC16)"),
    "io": ("I/O pin (SB_IO)", "I/O pins (SB_IO)"),
}

_TABLE_TITLES = {
    "logic_cells": "logic cells",
    "bram": "EBR (4 kbit)",
    "spram": "SPRAM (256 kbit)",
    "dsp": "DSP (SB_MAC16)",
    "io": "I/O (SB_IO)",
}

_UTIL_HEADER = re.compile(r"^Info:\s+Device utilisation:\s*$")
_UTIL_LINE = re.compile(r"^Info:\s+([A-Za-z0-9_]+):\s+(\d+)\s*/\s*(\d+)\s+\d+%\s*$")
_FMAX_LINE = re.compile(
    r"^(?:Info|Warning|ERROR):\s+Max frequency for clock\s+'([^']+)':\s+([0-9.]+) MHz\s+"
    r"\((PASS|FAIL) at ([0-9.]+) MHz\)")
_ERROR_LINE = re.compile(r"^ERROR:\s*(.*\S)\s*$")
_UNPLACED = re.compile(r"no BELs remaining to implement cell type '([^']+)'")


@dataclass(frozen=True)
class ResourceUse:
    """Use of one kind of resource.

    Members
    -------
    used : int
    available : int
    """

    used: int
    available: int

    @property
    def percent(self) -> float:
        """``used`` as a percentage of ``available`` (0 when none is available)."""
        return 100.0 * self.used / self.available if self.available else 0.0


@dataclass(frozen=True)
class ClockTiming:
    """nextpnr's timing result for one clock.

    Members
    -------
    name : str
        Clock net as nextpnr names it, e.g. ``"cd_sync.clk"``.
    fmax_mhz : float
        Highest frequency the routed design reaches.
    target_mhz : float
        Frequency the clock is constrained to.
    passed : bool
        Whether ``fmax_mhz`` meets ``target_mhz`` (nextpnr's PASS/FAIL).
    """

    name: str
    fmax_mhz: float
    target_mhz: float
    passed: bool


def parse_utilisation(text: str) -> Dict[str, ResourceUse]:
    """Parse the last "Device utilisation" table of a nextpnr-ice40 log.

    Parameters
    ----------
    text : str
        Log text.

    Returns
    -------
    dict
        nextpnr cell type (``"ICESTORM_LC"``, ``"SB_IO"``, ...) -> :class:`ResourceUse`, in log
        order; empty if the log has no table (nextpnr failed before packing).
    """
    table: Dict[str, ResourceUse] = {}
    inside = False
    for line in text.splitlines():
        if _UTIL_HEADER.match(line):
            table = {}
            inside = True
            continue
        if inside:
            match = _UTIL_LINE.match(line)
            if match is None:
                inside = False
                continue
            name, used, available = match.groups()
            table[name] = ResourceUse(int(used), int(available))
    return table


def parse_fmax(text: str) -> Dict[str, ClockTiming]:
    """Parse the achieved frequency of each clock from a nextpnr-ice40 log.

    Parameters
    ----------
    text : str
        Log text.

    Returns
    -------
    dict
        Clock name -> :class:`ClockTiming` from the clock's last report (after routing), in the
        order the clocks first appear.
    """
    clocks: Dict[str, ClockTiming] = {}
    for line in text.splitlines():
        match = _FMAX_LINE.match(line)
        if match:
            name, fmax, verdict, target = match.groups()
            clocks[name] = ClockTiming(name, float(fmax), float(target), verdict == "PASS")
    return clocks


def parse_errors(text: str) -> List[str]:
    """Return the messages of the ``ERROR:`` lines of a Yosys or nextpnr log, in order."""
    errors = []
    for line in text.splitlines():
        match = _ERROR_LINE.match(line)
        if match:
            errors.append(match.group(1))
    return errors


def parse_unplaced_cell_type(text: str) -> Optional[str]:
    """Return the cell type nextpnr ran out of (e.g. ``"ICESTORM_DSP"``), or ``None``."""
    match = _UNPLACED.search(text)
    return match.group(1) if match else None


def _resources_from_table(table: Mapping[str, ResourceUse],
                          budget: Mapping[str, int]) -> Dict[str, ResourceUse]:
    resources = {}
    for key in RESOURCE_KEYS:
        cell = NEXTPNR_CELLS[key]
        if cell in table:
            resources[key] = table[cell]
        else:
            # nextpnr omits cell types the device lacks (no SPRAM or DSP rows on an HX part).
            resources[key] = ResourceUse(0, int(budget.get(key, 0)))
    return resources


@dataclass
class BuildReport:
    """Figures of one bitstream build.

    Members
    -------
    board : str
        Board name.
    device : str
        iCE40 device.
    package : str
        Device package.
    seed : int
        nextpnr placement seed.
    content_hash : str
        Hash of the build inputs (generated RTLIL, scripts, board, seed, tool versions).
    resources : dict
        ``"logic_cells"``, ``"bram"``, ``"spram"``, ``"dsp"``, ``"io"`` -> :class:`ResourceUse`.
    clocks : dict
        Clock name -> :class:`ClockTiming`.
    required_clock : str
        Board's default clock resource.
    required_clock_hz : float
        Frequency of that clock.
    tool_versions : dict
        Tool -> version string.
    stage_seconds : dict
        Stage (``"elaborate"``, ``"yosys"``, ``"nextpnr"``, ``"icepack"``) -> wall time.
    synth_opts : str
        Options given to Yosys' ``synth_ice40``.
    bitstream : str or None
        Bitstream file name inside the build directory (``None`` when none was written).
    bitstream_bytes : int or None
        Bitstream size.
    bitstream_sha256 : str or None
        SHA-256 of the bitstream.
    error : str or None
        Why the build failed, or ``None``.
    """

    board: str
    device: str
    package: str
    seed: int
    content_hash: str
    resources: Dict[str, ResourceUse]
    clocks: Dict[str, ClockTiming]
    required_clock: str
    required_clock_hz: float
    tool_versions: Dict[str, str] = field(default_factory=dict)
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    synth_opts: str = ""
    bitstream: Optional[str] = None
    bitstream_bytes: Optional[int] = None
    bitstream_sha256: Optional[str] = None
    error: Optional[str] = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_nextpnr_log(cls, text: str, *, board, seed: int, content_hash: str,
                         tool_versions: Optional[Mapping[str, str]] = None,
                         stage_seconds: Optional[Mapping[str, float]] = None,
                         synth_opts: str = "", bitstream: Optional[str] = None,
                         bitstream_bytes: Optional[int] = None,
                         bitstream_sha256: Optional[str] = None,
                         error: Optional[str] = None) -> BuildReport:
        """Build a report from nextpnr's log text.

        Parameters
        ----------
        text : str
            nextpnr-ice40 log (``top.tim``).
        board : BoardSpec
            Board the design was built for (device, package, budget, default clock).
        seed, content_hash, tool_versions, stage_seconds, synth_opts, bitstream,
        bitstream_bytes, bitstream_sha256, error
            Stored as given (see the class members).

        Returns
        -------
        BuildReport
        """
        return cls(
            board=board.name, device=board.device, package=board.package, seed=seed,
            content_hash=content_hash,
            resources=_resources_from_table(parse_utilisation(text), board.budget.as_dict()),
            clocks=parse_fmax(text), required_clock=board.clock,
            required_clock_hz=float(board.clock_hz),
            tool_versions=dict(tool_versions or {}), stage_seconds=dict(stage_seconds or {}),
            synth_opts=synth_opts, bitstream=bitstream, bitstream_bytes=bitstream_bytes,
            bitstream_sha256=bitstream_sha256, error=error)

    # -- derived figures ------------------------------------------------------------------------

    @property
    def timing_met(self) -> bool:
        """Whether every clock meets its constraint (true when there is no clock)."""
        return all(clock.passed for clock in self.clocks.values())

    @property
    def passed(self) -> bool:
        """Whether the build produced a bitstream that meets timing."""
        return self.error is None and self.timing_met

    @property
    def status(self) -> str:
        """``"PASS"`` or ``"FAIL"``."""
        return "PASS" if self.passed else "FAIL"

    @property
    def total_seconds(self) -> float:
        """Sum of the stage times."""
        return sum(self.stage_seconds.values())

    # -- JSON -----------------------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        """Return the report as plain JSON-compatible data (see :meth:`from_dict`)."""
        return {
            "board": self.board,
            "device": self.device,
            "package": self.package,
            "status": self.status,
            "seed": self.seed,
            "content_hash": self.content_hash,
            "resources": {key: {"used": use.used, "available": use.available}
                          for key, use in self.resources.items()},
            "clocks": {name: {"fmax_mhz": clock.fmax_mhz, "target_mhz": clock.target_mhz,
                              "passed": clock.passed}
                       for name, clock in self.clocks.items()},
            "required_clock": self.required_clock,
            "required_clock_hz": self.required_clock_hz,
            "tool_versions": dict(self.tool_versions),
            "stage_seconds": dict(self.stage_seconds),
            "synth_opts": self.synth_opts,
            "bitstream": self.bitstream,
            "bitstream_bytes": self.bitstream_bytes,
            "bitstream_sha256": self.bitstream_sha256,
            "error": self.error,
        }

    def to_json(self) -> str:
        """Return the report as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildReport:
        """Rebuild a report from :meth:`to_dict` data.

        Raises
        ------
        ValueError
            If a required field is missing.
        """
        try:
            return cls(
                board=data["board"], device=data["device"], package=data["package"],
                seed=int(data["seed"]), content_hash=data["content_hash"],
                resources={key: ResourceUse(int(use["used"]), int(use["available"]))
                           for key, use in data["resources"].items()},
                clocks={name: ClockTiming(name, float(c["fmax_mhz"]), float(c["target_mhz"]),
                                          bool(c["passed"]))
                        for name, c in data["clocks"].items()},
                required_clock=data["required_clock"],
                required_clock_hz=float(data["required_clock_hz"]),
                tool_versions=dict(data.get("tool_versions", {})),
                stage_seconds={k: float(v) for k, v in data.get("stage_seconds", {}).items()},
                synth_opts=data.get("synth_opts", ""), bitstream=data.get("bitstream"),
                bitstream_bytes=data.get("bitstream_bytes"),
                bitstream_sha256=data.get("bitstream_sha256"), error=data.get("error"))
        except KeyError as missing:
            raise ValueError(f"build report is missing the field {missing.args[0]!r}") from None

    @classmethod
    def from_json(cls, text: str) -> BuildReport:
        """Rebuild a report from :meth:`to_json` text."""
        return cls.from_dict(json.loads(text))

    # -- people ---------------------------------------------------------------------------------

    def _resource_rows(self):
        for key in RESOURCE_KEYS:
            if key in self.resources:
                use = self.resources[key]
                yield _TABLE_TITLES[key], str(use.used), str(use.available), f"{use.percent:.0f}%"

    def _clock_rows(self):
        for clock in self.clocks.values():
            yield (clock.name, f"{clock.fmax_mhz:.2f}", f"{clock.target_mhz:.2f}",
                   "PASS" if clock.passed else "FAIL")

    def _summary(self) -> str:
        return (f"{self.board} ({self.device}-{self.package}), seed {self.seed}, "
                f"required clock {self.required_clock} at {self.required_clock_hz / 1e6:g} MHz")

    def to_markdown(self) -> str:
        """Return the report as a Markdown document."""
        lines = [f"# Build report: {self.board}", "",
                 f"**{self.status}**: {self._summary()}.", ""]
        if self.error:
            lines += [f"Error: `{self.error}`", ""]
        lines += ["| resource | used | available | use |", "|---|---:|---:|---:|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self._resource_rows()]
        lines.append("")
        if self.clocks:
            lines += ["| clock | Fmax (MHz) | constraint (MHz) | timing |", "|---|---:|---:|---|"]
            lines += [f"| `{a}` | {b} | {c} | {d} |" for a, b, c, d in self._clock_rows()]
            lines.append("")
        if self.stage_seconds:
            lines += ["| stage | seconds |", "|---|---:|"]
            lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in self.stage_seconds.items()]
            lines += [f"| total | {self.total_seconds:.1f} |", ""]
        if self.tool_versions:
            lines += ["| tool | version |", "|---|---|"]
            lines += [f"| {tool} | {version} |" for tool, version in self.tool_versions.items()]
            lines.append("")
        if self.bitstream:
            lines.append(f"Bitstream: `{self.bitstream}`, {self.bitstream_bytes} bytes, "
                         f"SHA-256 `{self.bitstream_sha256}`.")
        lines.append(f"Content hash: `{self.content_hash}`; synth_ice40 options: "
                     f"`{self.synth_opts or '(none)'}`.")
        return "\n".join(lines) + "\n"

    def table(self) -> str:
        """Return the report as plain-text tables for a terminal."""
        out = [f"{self.status}  {self._summary()}"]
        if self.error:
            out.append(f"error: {self.error}")
        out.append("")
        out += _plain_table(("resource", "used", "available", "use"),
                            list(self._resource_rows()), numeric={1, 2, 3})
        if self.clocks:
            out.append("")
            out += _plain_table(("clock", "Fmax MHz", "target MHz", "timing"),
                                list(self._clock_rows()), numeric={1, 2})
        if self.stage_seconds:
            stages = ", ".join(f"{stage} {seconds:.1f} s"
                               for stage, seconds in self.stage_seconds.items())
            out += ["", f"time: {stages} (total {self.total_seconds:.1f} s)"]
        if self.bitstream:
            out.append(f"bitstream: {self.bitstream} ({self.bitstream_bytes} bytes)")
        return "\n".join(out) + "\n"


def _plain_table(header, rows, numeric) -> List[str]:
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).rjust(widths[i]) if i in numeric else str(c).ljust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
