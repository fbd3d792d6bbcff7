"""The ``npuforge`` command line.

Each sub-command lives in its own module, which exposes ``register(subparsers)``; ``register`` adds
the command's parser and sets its handler with ``parser.set_defaults(handler=...)``. A handler
takes the parsed arguments and returns the exit status. A new command is one more module in
:data:`COMMANDS`.

Exit status: 0 success, 1 a failed check (e.g. a simulation mismatch) or a failed tool or file
operation, 2 bad input (a usage error, a bad parameter or config file). Errors are one line on
stderr, ``npuforge: error: ...``, never a traceback.
"""

import argparse
import sys

from . import __version__, cmd_board, cmd_demo, cmd_generate, cmd_sim
from .config import ConfigError

__all__ = ["COMMANDS", "ArgumentParser", "build_parser", "main"]

#: Modules that each add one sub-command (in ``--help`` order).
COMMANDS = [cmd_generate, cmd_sim, cmd_board, cmd_demo]

PROG = "npuforge"


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are one line on stderr and exit status 2.

    Sub-command parsers inherit the class (``add_subparsers`` uses the parent's class).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        hint = f"; see '{self.prog} --help'"
        self.exit(2, f"{PROG}: error: {message}{hint}\n")


def _versions():
    try:
        import importlib.metadata
        amaranth = importlib.metadata.version("amaranth")
    except Exception:  # the version line must never fail
        amaranth = "unknown"
    return f"{PROG} {__version__} (amaranth {amaranth}, Python {sys.version.split()[0]})"


def build_parser():
    """The complete argument parser: global options and every command of :data:`COMMANDS`."""
    parser = ArgumentParser(
        prog=PROG,
        description="Generate low-power AI hardware (NPU MAC arrays, spiking cores) as Amaranth HDL,\n"
                    "check it bit-exactly in simulation against NumPy golden models, and write\n"
                    "Verilog with a self-checking testbench.",
        epilog="examples:\n"
               "  npuforge generate mac-array --rows 8 --cols 8 --dataflow ws -o out/mac8\n"
               "  npuforge generate mac-array --config design.toml --testbench -o out/mac\n"
               "  npuforge sim mac-array --rows 4 --cols 4 --m 9 --k 13 --n 7 --seed 3\n"
               "\n"
               "Run 'npuforge COMMAND --help' (e.g. 'npuforge generate mac-array --help') for a "
               "command's options.\n"
               "exit status: 0 success, 1 a failed check or tool, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=_versions(),
                        help="print the versions of npuforge, Amaranth and Python, then exit")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv=None):
    """Run the ``npuforge`` command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (``sys.argv[1:]`` when omitted).

    Returns
    -------
    int
        The exit status.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{PROG}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
