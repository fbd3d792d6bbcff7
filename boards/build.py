"""Turn any Amaranth design into an iCE40 bitstream: plan, pre-check, build, cache, report.

:func:`build` elaborates a design for an amaranth-boards platform (``platform.prepare``), writes
the build plan into the output directory and runs its three commands (Yosys, nextpnr-ice40,
icepack) one by one from that directory, each with its output in a log file there, so that each
stage can be timed and its failure explained. The output directory then holds ``top.bin``, the
tool logs (``top.rpt`` from Yosys, ``top.tim`` from nextpnr, ``<stage>.log`` with each tool's
console output), ``report.json`` and ``report.md``.

Builds are cached by content: the hash covers every file of the build plan (the design's RTLIL,
the Yosys script, the pin constraints and the commands), the board, the seed, the synthesis
options and the tool versions. Building the same design again into the same directory returns
the stored result without running a tool.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .registry import BoardSpec, get_board
from .report import (
    NEXTPNR_CELLS,
    RESOURCE_LABELS,
    BuildReport,
    parse_errors,
    parse_fmax,
    parse_unplaced_cell_type,
    parse_utilisation,
)
from .toolchain import ToolchainError, tool_var, tool_versions, toolchain_env

__all__ = [
    "BuildError",
    "DoesNotFit",
    "TimingNotMet",
    "BuildResult",
    "build",
    "check_fit",
    "content_hash",
    "default_synth_opts",
    "nextpnr_failure",
    "print_progress",
    "ESTIMATE_KEYS",
]

#: Keys of a resource estimate (see :func:`check_fit`).
ESTIMATE_KEYS = ("logic_cells", "bram", "spram", "dsp")

# Bumped when the flow changes in a way that changes the products of identical inputs, so that
# older cached builds are not reused.
_FLOW_VERSION = "1"

# A source-location attribute: a line of RTLIL, or a Verilog attribute instance.
_SRC_ATTRIBUTE = re.compile(r'^[ \t]*attribute \\src "(?:[^"\\]|\\.)*"\n'
                            r'|\(\* src = "(?:[^"\\]|\\.)*" \*\)[ \t]*', re.MULTILINE)

_NAME = "top"
_STAGE_NAMES = {"yosys": "yosys", "nextpnr-ice40": "nextpnr", "icepack": "icepack"}
_STAGE_LOGS = {"yosys": "top.rpt", "nextpnr": "top.tim"}
_PRODUCTS = ("top.rpt", "top.json", "top.tim", "top.asc", "top.bin", "report.json", "report.md",
             "elaborate.log", "yosys.log", "nextpnr.log", "icepack.log", "script.log")
_TICK_SECONDS = 10.0

Progress = Callable[[str, str, float], None]


class BuildError(RuntimeError):
    """The bitstream flow failed.

    Members
    -------
    log_path : pathlib.Path or None
        Log of the failing tool, when there is one.
    """

    def __init__(self, message: str, *, log_path: Optional[Path] = None):
        super().__init__(message)
        self.log_path = log_path


def _resource_label(resource: str, count: int) -> str:
    singular, plural = RESOURCE_LABELS.get(resource, (resource, resource))
    return singular if count == 1 else plural


class DoesNotFit(BuildError):
    """A design needs more of a resource than the board's device has.

    Parameters
    ----------
    resource : str
        ``"logic_cells"``, ``"bram"``, ``"spram"``, ``"dsp"`` or ``"io"``.
    needed : int
        How many the design needs.
    available : int
        How many the device has.
    board : str or BoardSpec
        The board.
    detail : str, optional
        Appended to the message in parentheses (e.g. where nextpnr said so).
    log_path : pathlib.Path, optional
        Log that reports it.
    """

    def __init__(self, resource: str, needed: int, available: int, board: Union[str, BoardSpec],
                 *, detail: Optional[str] = None, log_path: Optional[Path] = None):
        spec = board if isinstance(board, BoardSpec) else None
        if spec is None:
            try:
                spec = get_board(board)
            except (TypeError, ValueError):
                spec = None
        name = spec.name if spec is not None else str(board)
        where = f"{name} ({spec.device})" if spec is not None else name
        message = (f"design needs {needed} {_resource_label(resource, needed)} "
                   f"but {where} has {available}")
        if detail:
            message += f" ({detail})"
        super().__init__(message, log_path=log_path)
        self.resource = resource
        self.needed = needed
        self.available = available
        self.board = name


class TimingNotMet(BuildError):
    """nextpnr could not route a clock at its constrained frequency.

    Members
    -------
    clocks : list of ClockTiming
        The failing clocks.
    """

    def __init__(self, message: str, clocks, *, log_path: Optional[Path] = None):
        super().__init__(message, log_path=log_path)
        self.clocks = list(clocks)


@dataclass
class BuildResult:
    """What :func:`build` produced.

    Members
    -------
    board : BoardSpec
        The board.
    out_dir : pathlib.Path
        Build directory.
    content_hash : str
        Hash of the build inputs (without tool versions for a plan-only build).
    plan_only : bool
        Only the build plan was written.
    cached : bool
        The result came from an earlier identical build; no tool ran.
    report : BuildReport or None
        The build report (``None`` for a plan-only build).
    files : tuple of str
        Files of the build plan.
    seconds : float
        Wall time of this call.
    """

    board: BoardSpec
    out_dir: Path
    content_hash: str
    plan_only: bool = False
    cached: bool = False
    report: Optional[BuildReport] = None
    files: Tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def bitstream(self) -> Optional[Path]:
        """Path of ``top.bin``, or ``None`` for a plan-only build."""
        return None if self.plan_only else self.out_dir / f"{_NAME}.bin"

    @property
    def report_json(self) -> Path:
        """Path of ``report.json``."""
        return self.out_dir / "report.json"

    @property
    def report_md(self) -> Path:
        """Path of ``report.md``."""
        return self.out_dir / "report.md"

    @property
    def logs(self) -> Dict[str, Path]:
        """Stage -> full log of the tool (Yosys' ``top.rpt``, nextpnr's ``top.tim``, ...)."""
        return {"yosys": self.out_dir / "top.rpt", "nextpnr": self.out_dir / "top.tim",
                "icepack": self.out_dir / "icepack.log"}


def print_progress(stage: str, status: str, elapsed: float, *, file=None) -> None:
    """Print one progress line, e.g. ``nextpnr   running   10 s``.

    Parameters
    ----------
    stage : str
        ``"elaborate"``, ``"yosys"``, ``"nextpnr"``, ``"icepack"``, ``"cache"`` or ``"plan"``.
    status : str
        ``"start"``, ``"running"``, ``"done"``, ``"failed"``, ``"hit"`` or ``"written"``.
    elapsed : float
        Seconds since the stage started.
    file : file-like, optional
        Where to print; standard error by default.
    """
    stream = sys.stderr if file is None else file
    if status == "start":
        text = f"{stage:<9} ..."
    else:
        text = f"{stage:<9} {status:<8} {elapsed:6.1f} s"
    print(text, file=stream, flush=True)


def default_synth_opts(board: BoardSpec) -> str:
    """Return the ``synth_ice40`` options used when the caller gives none.

    ``-dsp`` on devices with ``SB_MAC16`` blocks: without it Yosys never uses them.
    """
    return "-dsp" if board.has_dsp else ""


def check_fit(resources: Mapping[str, int], board: Union[str, BoardSpec]) -> None:
    """Compare a design's resource estimate with a board's budget.

    Parameters
    ----------
    resources : mapping
        Any of ``"logic_cells"``, ``"bram"`` (4 kbit EBR), ``"spram"`` (256 kbit), ``"dsp"``
        (SB_MAC16) -> count the design needs.
    board : str or BoardSpec
        The board.

    Raises
    ------
    TypeError
        If ``resources`` is not a mapping.
    ValueError
        If a key is unknown or a count is not a non-negative integer.
    DoesNotFit
        For the first resource (in the order above) the design needs more of than the device has.
    """
    spec = board if isinstance(board, BoardSpec) else get_board(board)
    if not isinstance(resources, Mapping):
        raise TypeError(f"resources must be a mapping of resource name to count, not {resources!r}")
    for key, count in resources.items():
        if key not in ESTIMATE_KEYS:
            raise ValueError(f"resources has an unknown key {key!r}; known keys are "
                             f"{', '.join(ESTIMATE_KEYS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"resources[{key!r}] must be a non-negative integer, not {count!r}")
    budget = spec.budget.as_dict()
    for key in ESTIMATE_KEYS:
        needed = resources.get(key, 0)
        if needed > budget[key]:
            raise DoesNotFit(key, needed, budget[key], spec)


def content_hash(files: Mapping[str, Union[str, bytes]], *, board: str, seed: int,
                 synth_opts: str, versions: Mapping[str, str]) -> str:
    """Return the SHA-256 (hex) of a build's inputs.

    Parameters
    ----------
    files : mapping
        Build plan: file name -> content.
    board : str
        Board name.
    seed : int
        nextpnr seed.
    synth_opts : str
        ``synth_ice40`` options.
    versions : mapping
        Tool versions (empty for a plan-only build).

    Source-location attributes (RTLIL ``attribute \\src``, Verilog ``(* src = ... *)``) are left
    out: they name Python files and lines (absolute paths included), not logic, so moving code
    or building from another checkout does not force a rebuild.
    """
    hasher = hashlib.sha256()

    def feed(tag: str, data: Union[str, bytes]) -> None:
        if isinstance(data, str):
            data = _SRC_ATTRIBUTE.sub("", data)
        raw = data.encode("utf-8") if isinstance(data, str) else data
        hasher.update(f"{tag}:{len(raw)}:".encode())
        hasher.update(raw)

    feed("flow", _FLOW_VERSION)
    feed("board", board)
    feed("seed", str(seed))
    feed("synth_opts", synth_opts)
    feed("versions", json.dumps(dict(versions), sort_keys=True))
    for name in sorted(files):
        feed("name", name)
        feed("file", files[name])
    return hasher.hexdigest()


def nextpnr_failure(text: str, board: BoardSpec, log_path: Optional[Path] = None) -> BuildError:
    """Turn a failed nextpnr-ice40 run into the matching exception.

    Parameters
    ----------
    text : str
        nextpnr's log (and console output).
    board : BoardSpec
        The board.
    log_path : pathlib.Path, optional
        Log file, named in the message.

    Returns
    -------
    BuildError
        :class:`DoesNotFit` when nextpnr ran out of a cell type (the counts come from its
        utilisation table), :class:`TimingNotMet` when a clock failed its constraint, else a
        :class:`BuildError` quoting nextpnr's last error line.
    """
    where = f"log: {log_path}" if log_path else "nextpnr log"
    cell = parse_unplaced_cell_type(text)
    if cell is not None:
        table = parse_utilisation(text)
        resource = {v: k for k, v in NEXTPNR_CELLS.items()}.get(cell)
        if resource is not None and cell in table:
            use = table[cell]
            return DoesNotFit(resource, use.used, use.available, board,
                              detail=f"reported by nextpnr; {where}", log_path=log_path)
    errors = parse_errors(text)
    # The placer's way of saying the logic does not fit: "Failed to expand region ... of N
    # ICESTORM_LCs".
    for error in errors:
        found = re.search(r"Failed to expand region .* of (\d+) ICESTORM_LCs", error)
        if found:
            return DoesNotFit("logic_cells", int(found.group(1)), board.budget.logic_cells, board,
                              detail=f"reported by nextpnr's placer; {where}", log_path=log_path)
    failing = [clock for clock in parse_fmax(text).values() if not clock.passed]
    if failing and any(error.startswith("Max frequency") for error in errors):
        clocks = "; ".join(f"clock '{c.name}' reaches {c.fmax_mhz:.2f} MHz but needs "
                           f"{c.target_mhz:.2f} MHz" for c in failing)
        return TimingNotMet(f"timing not met on {board.name}: {clocks} ({where})", failing,
                            log_path=log_path)
    # The first error is the cause; later ones ("Packing design failed.") only follow from it.
    detail = errors[0] if errors else "no error message"
    return BuildError(f"nextpnr failed on {board.name}: {detail} ({where})", log_path=log_path)


def _tool_failure(stage: str, returncode: int, text: str, board: BoardSpec,
                  log_path: Path) -> BuildError:
    if stage == "nextpnr" and returncode > 0:
        return nextpnr_failure(text, board, log_path)
    if returncode < 0:
        return BuildError(f"{stage} crashed (signal {-returncode}) while building for "
                          f"{board.name}; log: {log_path}", log_path=log_path)
    errors = parse_errors(text)
    # The first error is the cause; later ones ("Packing design failed.") only follow from it.
    detail = errors[0] if errors else "no error message"
    return BuildError(f"{stage} failed (exit code {returncode}) while building for {board.name}: "
                      f"{detail}; log: {log_path}", log_path=log_path)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _run_stage(stage: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str],
               progress: Optional[Progress]) -> Tuple[int, float]:
    """Run one tool from ``cwd`` with its console output in ``<stage>.log``."""
    log = cwd / f"{stage}.log"
    start = time.monotonic()
    if progress:
        progress(stage, "start", 0.0)
    with open(log, "wb") as out:
        try:
            # YoWASP tools see only their working directory: run them there, on relative names.
            proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        except OSError as error:
            raise BuildError(f"{stage} could not be started ({argv[0]}): {error}",
                             log_path=log) from None
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=_TICK_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    if progress:
                        progress(stage, "running", time.monotonic() - start)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    elapsed = time.monotonic() - start
    if progress:
        progress(stage, "done" if returncode == 0 else "failed", elapsed)
    return returncode, elapsed


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached_result(spec: BoardSpec, out_dir: Path, digest: str) -> Optional[BuildReport]:
    try:
        report = BuildReport.from_json((out_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    bitstream = out_dir / f"{_NAME}.bin"
    if (report.content_hash != digest or report.error is not None or report.board != spec.name
            or not bitstream.is_file() or report.bitstream_sha256 != _sha256(bitstream)):
        return None
    return report


def _write_report(out_dir: Path, report: BuildReport) -> None:
    (out_dir / "report.json").write_text(report.to_json(), encoding="utf-8")
    (out_dir / "report.md").write_text(report.to_markdown(), encoding="utf-8")


def _commands(files: Mapping[str, Union[str, bytes]], env: Mapping[str, str]
              ) -> List[Tuple[str, List[str]]]:
    if "AMARANTH_ENV_IceStorm" in env:
        # The user's environment script must be sourced first, as Amaranth's script does.
        return [("script", ["sh", f"build_{_NAME}.sh"])]
    plan = json.loads(files[f"build_{_NAME}.json"])
    commands = []
    for argv in plan["commands"]:
        tool = argv[0]
        stage = _STAGE_NAMES.get(tool, tool)
        commands.append((stage, [env.get(tool_var(tool)) or tool, *argv[1:]]))
    return commands


def build(top, board: Union[str, BoardSpec], out_dir: Union[str, os.PathLike], *, seed: int = 1,
          synth_opts: Optional[str] = None, plan_only: bool = False,
          resources: Optional[Mapping[str, int]] = None,
          progress: Union[None, bool, Progress] = None, cache: bool = True,
          allow_timing_fail: bool = False) -> BuildResult:
    """Build an iCE40 bitstream for ``top`` on ``board``.

    Parameters
    ----------
    top : Elaboratable
        Design to build; its ``elaborate(platform)`` receives the board's amaranth-boards
        platform and requests the pins it uses. The design is named ``top``.
    board : str or BoardSpec
        Board (see :func:`~npuforge.boards.registry.get_board`).
    out_dir : path
        Build directory (created if needed).
    seed : int
        nextpnr placement seed (same design + board + seed -> same bitstream bytes).
    synth_opts : str, optional
        Options for Yosys' ``synth_ice40``. By default ``"-dsp"`` on devices with DSP blocks
        and none elsewhere; a given string replaces that default (pass ``"-dsp -abc9"`` to add
        to it, ``""`` to keep multipliers out of the DSP blocks).
    plan_only : bool
        Only write the build plan (RTLIL, Yosys script, constraints, build scripts); no tool
        runs and none needs to be installed.
    resources : mapping, optional
        The generator's estimate, checked against the board before anything runs
        (see :func:`check_fit`).
    progress : callable or bool, optional
        ``progress(stage, status, elapsed_seconds)`` is called as each stage starts, every 10 s
        while it runs and when it ends; ``True`` prints lines with :func:`print_progress`.
    cache : bool
        Reuse an earlier identical build in ``out_dir``.
    allow_timing_fail : bool
        Keep the bitstream when a clock misses its constraint (the report then says FAIL)
        instead of raising :class:`TimingNotMet`.

    Returns
    -------
    BuildResult

    Raises
    ------
    TypeError, ValueError
        For a bad argument.
    DoesNotFit
        If the estimate exceeds the board's budget, or nextpnr runs out of a resource.
    TimingNotMet
        If a clock misses its constraint (unless ``allow_timing_fail``).
    ToolchainError
        If a tool is missing.
    BuildError
        If a tool fails; the message names its log.
    """
    start = time.monotonic()
    spec = board if isinstance(board, BoardSpec) else get_board(board)
    if not callable(getattr(top, "elaborate", None)):
        raise TypeError(f"top must be an Amaranth Elaboratable, not {top!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 31:
        raise ValueError(f"seed must be an integer in 0..{2 ** 31 - 1}, not {seed!r}")
    if synth_opts is None:
        # A top may ask for its own options (see BoardTop.synth_opts).
        synth_opts = getattr(top, "synth_opts", None)
    if synth_opts is None:
        synth_opts = default_synth_opts(spec)
    elif not isinstance(synth_opts, str):
        raise TypeError(f"synth_opts must be a string or None, not {synth_opts!r}")
    if progress is True:
        progress = print_progress
    elif progress is False:
        progress = None
    elif progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable, a bool or None, not {progress!r}")
    if resources is not None:
        try:
            check_fit(resources, spec)
        except DoesNotFit:
            top._MustUse__silence = True   # refused: it was never going to be elaborated
            raise

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    if progress:
        progress("elaborate", "start", 0.0)
    t0 = time.monotonic()
    nextpnr_opts = f"--seed {seed}" + (" --timing-allow-fail" if allow_timing_fail else "")
    plan = spec.platform().prepare(top, name=_NAME, synth_opts=synth_opts,
                                   nextpnr_opts=nextpnr_opts)
    elaborate_seconds = time.monotonic() - t0
    if progress:
        progress("elaborate", "done", elaborate_seconds)
    files = dict(plan.files)
    plan.extract(out_dir)

    if plan_only:
        digest = content_hash(files, board=spec.name, seed=seed, synth_opts=synth_opts,
                              versions={})
        if progress:
            progress("plan", "written", time.monotonic() - start)
        return BuildResult(spec, out_dir, digest, plan_only=True, files=tuple(files),
                           seconds=time.monotonic() - start)

    env = toolchain_env()
    if "AMARANTH_ENV_IceStorm" in env:
        # The tools may only be reachable once the user's environment script has run.
        try:
            versions = tool_versions(env)
        except ToolchainError:
            versions = {"environment script": env["AMARANTH_ENV_IceStorm"]}
    else:
        versions = tool_versions(env)
    digest = content_hash(files, board=spec.name, seed=seed, synth_opts=synth_opts,
                          versions=versions)

    if cache:
        report = _cached_result(spec, out_dir, digest)
        if report is not None:
            if progress:
                progress("cache", "hit", time.monotonic() - start)
            return BuildResult(spec, out_dir, digest, cached=True, report=report,
                               files=tuple(files), seconds=time.monotonic() - start)

    for name in _PRODUCTS:
        (out_dir / name).unlink(missing_ok=True)

    stage_seconds = {"elaborate": round(elaborate_seconds, 3)}

    def make_report(error: Optional[str] = None, **bitstream) -> BuildReport:
        return BuildReport.from_nextpnr_log(
            _read(out_dir / "top.tim"), board=spec, seed=seed, content_hash=digest,
            tool_versions=versions, stage_seconds=stage_seconds, synth_opts=synth_opts,
            error=error, **bitstream)

    for stage, argv in _commands(files, env):
        returncode, seconds = _run_stage(stage, argv, out_dir, env, progress)
        stage_seconds[stage] = round(seconds, 3)
        if returncode != 0:
            log_path = out_dir / _STAGE_LOGS.get(stage, f"{stage}.log")
            text = _read(log_path) + "\n" + _read(out_dir / f"{stage}.log")
            if not log_path.exists():
                log_path = out_dir / f"{stage}.log"
            error = _tool_failure(stage, returncode, text, spec, log_path)
            if (out_dir / "top.tim").exists():
                _write_report(out_dir, make_report(str(error)))
            raise error

    bitstream = out_dir / f"{_NAME}.bin"
    if not bitstream.is_file():
        raise BuildError(f"the build for {spec.name} wrote no {bitstream.name}; "
                         f"logs in {out_dir}", log_path=out_dir)
    report = make_report(bitstream=bitstream.name, bitstream_bytes=bitstream.stat().st_size,
                         bitstream_sha256=_sha256(bitstream))
    _write_report(out_dir, report)
    return BuildResult(spec, out_dir, digest, report=report, files=tuple(files),
                       seconds=time.monotonic() - start)
