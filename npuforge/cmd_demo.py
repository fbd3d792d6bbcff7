"""``npuforge demo``: the end-to-end demo (see :mod:`npuforge.demo`)."""

import sys

__all__ = ["register"]


def register(subparsers):
    from .boards.registry import DEFAULT_BOARD
    parser = subparsers.add_parser(
        "demo", help="train, quantize and run a network on the generated NPU, with a bitstream",
        description="Train a small MLP on the 8x8 digits, quantize it to int8, run the whole test\n"
                    "split through a virtual board (the shell gateware in simulation) over the UART\n"
                    "protocol, check every activation bit for bit against the NumPy int8 reference,\n"
                    "build the bitstream for the board and write everything to one folder.\n\n"
                    "exit status: 0 bit-exact and accurate, 1 a mismatch or failure, 2 bad input.")
    parser.add_argument("name", nargs="?", default="digits-mlp", help="demo to run (default: digits-mlp)")
    parser.add_argument("--list", action="store_true", help="list the available demos and exit")
    parser.add_argument("--board", default=DEFAULT_BOARD, help=f"board (default: {DEFAULT_BOARD})")
    parser.add_argument("--port", default=None,
                        help="serial port of the board: flash it and run the test split on it")
    parser.add_argument("-o", "--output", default="out/demo", help="output folder (default: out/demo)")
    parser.add_argument("--backend", choices=["auto", "verilator", "amaranth"], default="auto",
                        help="simulator of the virtual board (default: auto = Verilator if installed)")
    parser.add_argument("--limit", type=int, default=None, help="run only the first N test samples")
    parser.add_argument("--no-build", action="store_true", help="skip the bitstream build")
    parser.set_defaults(handler=run_demo)


def run_demo(args):
    from .config import ConfigError
    from .demo import DEMOS, run_digits_mlp
    if args.list:
        width = max(len(n) for n in DEMOS)
        for name, text in DEMOS.items():
            print(f"{name:<{width}}  {text}")
        return 0
    if args.name not in DEMOS:
        raise ConfigError(f"demo must be one of {', '.join(DEMOS)}, not {args.name!r}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"limit must be a positive integer, not {args.limit}")
    if args.name == "digits-snn":
        if args.port is not None:
            raise ConfigError("--port is not supported by the digits-snn demo yet (virtual board only)")
        from . import demo_snn
        result = demo_snn.run(args.output, limit=args.limit, backend=args.backend,
                              build=not args.no_build, board_name=args.board)
    else:
        result = run_digits_mlp(args.output, board_name=args.board, port=args.port,
                                backend=args.backend, limit=args.limit, build=not args.no_build)
    print()
    print(result.table())
    report = getattr(result, "build_report", None)
    if report is not None:
        print()
        print(report.table())
    elif result.build.get("error"):
        print(f"\nbitstream build failed: {result.build['error']}", file=sys.stderr)
    print(f"\nwrote {args.output}/ (models, manifest.json, demo.json, confusion.png"
          + (", build/)" if not args.no_build else ")") + f" in {result.seconds:.0f} s")
    ok = result.bit_exact and not result.build.get("error")
    return 0 if ok else 1
