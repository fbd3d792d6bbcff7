"""Pieces the command handlers of both designs share (``generate``, ``build``, ``run``).

The MAC-array and spiking-core handlers differ in what they build and check, not in how they
name their output, write their files, find their board, run the build flow or open the link to a
board: those steps live here so that both designs behave, and fail, alike.
"""

import sys
from pathlib import Path

from .config import ConfigError

__all__ = ["add_output_arguments", "board_spec", "build_and_report", "build_dir", "check_seed",
           "convert_design", "fail", "module_name", "open_board", "output_dir", "write_outputs"]


def fail(message):
    """Print ``npuforge: error: message`` on stderr; return exit status 1 (a failed check/tool)."""
    print(f"npuforge: error: {message}", file=sys.stderr)
    return 1


# -- generate --------------------------------------------------------------------------------------

def add_output_arguments(parser, default_name):
    """Add the ``output`` group of ``npuforge generate DESIGN``: ``-o/--output DIR`` and ``--name``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The design's parser.
    default_name : str
        Default of ``--name`` (the Verilog top module and the file names).

    Returns
    -------
    argparse._ArgumentGroup
        The group, for design-specific output options.
    """
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", metavar="DIR", required=True,
                     help="directory for the generated files (created if missing; files in it are "
                          "overwritten)")
    out.add_argument("--name", default=default_name, metavar="NAME",
                     help="name of the Verilog top module and of the files: a Verilog identifier "
                          f"(default: {default_name})")
    return out


def module_name(args):
    """``args.name`` checked as a Verilog identifier.

    Raises
    ------
    ConfigError
        If it is not one.
    """
    from .verilog import check_module_name

    try:
        return check_module_name(args.name)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def output_dir(args):
    """``args.output`` as a :class:`~pathlib.Path` (created later, when the files are written).

    Raises
    ------
    ConfigError
        If it names an existing file.
    """
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise ConfigError(f"output must be a directory, not the file {str(outdir)!r}")
    return outdir


def convert_design(convert, config, name):
    """Run a design's Verilog/RTLIL conversion, ``convert(config, name)``, and name its files.

    Returns
    -------
    (dict, str, Component) or None
        The files (``{"verilog": ("<name>.v", text), "rtlil": ("<name>.il", text)}``, as
        :func:`write_outputs` and the manifest take them), the Verilog text and the component; or
        ``None`` after printing the last line of Yosys' message if Yosys failed.
    """
    from amaranth.back.verilog import YosysError

    try:
        verilog_text, rtlil_text, component = convert(config, name)
    except YosysError as exc:
        lines = str(exc).strip().splitlines() or ["no message"]
        fail(f"Yosys failed: {lines[-1]}")
        return None
    files = {"verilog": (f"{name}.v", verilog_text), "rtlil": (f"{name}.il", rtlil_text)}
    return files, verilog_text, component


def write_outputs(outdir, files, manifest, summary):
    """Write the generated ``files`` and ``manifest.json`` into ``outdir``, then say so.

    Parameters
    ----------
    outdir : pathlib.Path
        Created if missing.
    files : dict
        ``kind -> (file name, text)``, as the manifest lists them.
    manifest : dict
    summary : str
        The design's one-line description, printed before the list of files.
    """
    from .manifest import write_manifest

    outdir.mkdir(parents=True, exist_ok=True)
    for fname, text in files.values():
        (outdir / fname).write_text(text, encoding="utf-8")
    write_manifest(manifest, outdir / "manifest.json")
    print(summary)
    for fname, _text in files.values():
        print(f"wrote {outdir / fname}")
    print(f"wrote {outdir / 'manifest.json'} (content hash {manifest['content_hash']['hex'][:16]})")


# -- build, flash, run -----------------------------------------------------------------------------

def board_spec(name):
    """The :class:`~npuforge.boards.registry.BoardSpec` called ``name``.

    Raises
    ------
    ConfigError
        If there is no such board.
    """
    from .boards.registry import get_board

    try:
        return get_board(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_seed(seed):
    """Refuse a negative nextpnr placement seed (:class:`ConfigError`)."""
    if seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, not {seed}")


def build_dir(given, spec):
    """The build directory of ``build`` and ``flash``: ``given``, else ``build/<board>``."""
    return Path(given or Path("build") / spec.name)


def build_and_report(top, spec, out, args, resources, *, after_table=None):
    """Run the build flow for ``npuforge build`` and print its outcome; return the exit status.

    Parameters
    ----------
    top : Elaboratable
        The design in its board shell.
    spec : BoardSpec
    out : pathlib.Path
        Build directory.
    args : argparse.Namespace
        ``seed``, ``plan_only`` and ``no_cache`` of the command line.
    resources : dict
        The design's pre-synthesis resource estimate.
    after_table : callable, optional
        Called with the build report after its table is printed (design-specific figures).

    Returns
    -------
    int
        0 for a plan or a build that met timing, 1 for a tool failure, no fit or missed timing.
    """
    from .boards.build import BuildError, build
    from .boards.toolchain import ToolchainError

    try:
        result = build(top, spec, out, seed=args.seed, plan_only=args.plan_only,
                       resources=resources, progress=True, cache=not args.no_cache)
    except (BuildError, ToolchainError) as exc:
        return fail(str(exc))
    if result.plan_only:
        print(f"plan written to {out} (no tools run)")
        return 0
    print()
    print(result.report.table())
    if after_table is not None:
        after_table(result.report)
    if result.cached:
        print("(cached: an identical build already existed)")
    return 0 if result.report.passed else 1


def open_board(args, config, virtual_board, serial_board):
    """The board ``npuforge run`` talks to: simulated with ``--virtual``, else on ``--port``.

    Parameters
    ----------
    args : argparse.Namespace
        ``virtual``, ``backend``, ``port`` and ``baud`` of the command line.
    config
        The design's configuration (for the virtual board).
    virtual_board, serial_board : type
        The design's host classes.

    Returns
    -------
    board or None
        ``None`` after printing why the serial port could not be opened.
    """
    if args.virtual:
        return virtual_board(config, backend=args.backend)
    try:
        return serial_board(args.port, args.baud, timeout=10.0)
    except RuntimeError as exc:
        fail(str(exc))
        return None
