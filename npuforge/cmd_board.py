"""Board commands: ``npuforge boards``, ``build``, ``flash`` and ``run``.

* ``npuforge boards`` lists every iCE40 board with its budget, clock, UART and programmer.
* ``npuforge build --board NAME --design mac-array|snn-core [parameters] [-o DIR] [--seed N]`` builds the
  design inside the board shell with Yosys, nextpnr-ice40 and icepack (YoWASP by default) and
  writes ``top.bin``, the logs, ``report.json`` and ``report.md``.
* ``npuforge flash --board NAME [DIR]`` programs ``DIR/top.bin`` with the board's programmer.
* ``npuforge run (--board NAME --port PORT | --virtual) [parameters] --m M --k K --n N`` runs a
  random GEMM over the host protocol on a real or a simulated board and checks it.
"""

import numpy as np

from . import cmd_snn
from ._cli_common import board_spec, build_and_report, build_dir, check_seed, fail, open_board
from .config import (
    ConfigError,
    add_design_arguments,
    add_workload_arguments,
    config_from_args,
    workload_from_args,
)

__all__ = ["register"]


def register(subparsers):
    """Add ``boards``, ``build``, ``flash`` and ``run``."""
    from .boards.registry import DEFAULT_BOARD

    boards = subparsers.add_parser("boards", help="list the supported iCE40 boards",
                                   description="List every iCE40 board npuforge builds for: device, "
                                               "logic cells, block RAM, SPRAM, DSP blocks, clock, UART "
                                               "pins and programmer.")
    boards.add_argument("--json", action="store_true", help="print JSON instead of a table")
    boards.set_defaults(handler=run_boards)

    build = subparsers.add_parser(
        "build", help="build a bitstream for a board (Yosys, nextpnr-ice40, icepack)",
        description="Build a design inside the board shell (UART, host protocol, LEDs) into an iCE40\n"
                    "bitstream. A resource estimate refuses a design that cannot fit before any tool\n"
                    "runs; builds are cached by content hash and reproducible for a given seed.\n"
                    "Tools: $YOSYS, $NEXTPNR_ICE40, $ICEPACK (default: the YoWASP packages).\n\n"
                    "exit status: 0 built and timing met, 1 tool failure, no fit or timing failure,"
                    " 2 bad input.")
    build.add_argument("--board", default=DEFAULT_BOARD, help=f"board name (default: {DEFAULT_BOARD}; "
                                                              "see 'npuforge boards')")
    build.add_argument("--design", default="mac-array", choices=["mac-array", "snn-core"],
                       help="design to build (default: mac-array); its parameters are the flags of "
                            "its group below")
    build.add_argument("-o", "--output", metavar="DIR", default=None,
                       help="build directory (default: build/<board>)")
    build.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: 1)")
    build.add_argument("--baud", type=int, default=115200, help="UART baud rate (default: 115200)")
    build.add_argument("--plan-only", action="store_true",
                       help="write the build plan (RTLIL, scripts, constraints) without running tools")
    build.add_argument("--no-cache", action="store_true", help="rebuild even if an identical build exists")
    build.add_argument("--fill", action="store_true",
                       help="the biggest array that fits the board (DSP blocks first, then logic); "
                            "--rows/--cols/--multiplier are chosen, the other parameters kept")
    build.add_argument("--array-clock", type=float, default=None, metavar="MHZ",
                       help="run the array core from the PLL at MHZ in its own clock domain "
                            "(default: everything on the board clock)")
    add_design_arguments(build, "mac-array")
    add_design_arguments(build, "snn-core", config_file=False)
    build.set_defaults(handler=run_build)

    flash = subparsers.add_parser("flash", help="program a built bitstream into a board",
                                  description="Program DIR/top.bin with the board's programmer "
                                              "(iceprog, dfu-util, tinyprog, ... as amaranth-boards "
                                              "names it).\n\nexit status: 0 programmed, 1 no "
                                              "programmer, no board or no bitstream, 2 bad input.")
    flash.add_argument("--board", default=DEFAULT_BOARD, help=f"board name (default: {DEFAULT_BOARD})")
    flash.add_argument("directory", nargs="?", default=None,
                       help="build directory holding top.bin (default: build/<board>)")
    flash.set_defaults(handler=run_flash)

    run = subparsers.add_parser(
        "run", help="run a random GEMM on a real or virtual board and check it",
        description="Drive a board over the host protocol: INFO, then a seeded random GEMM whose\n"
                    "results are compared with the golden model bit for bit. --virtual runs the same\n"
                    "shell gateware in simulation instead of a real board.\n\n"
                    "exit status: 0 PASS, 1 FAIL or no board, 2 bad input.")
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("--port", help="serial port of a flashed board, e.g. /dev/ttyUSB1")
    target.add_argument("--virtual", action="store_true", help="simulate the board")
    run.add_argument("--board", default=DEFAULT_BOARD, help=f"board name (default: {DEFAULT_BOARD})")
    run.add_argument("--baud", type=int, default=115200, help="UART baud rate (default: 115200)")
    run.add_argument("--backend", choices=["amaranth", "verilator"], default="amaranth",
                     help="simulator of --virtual (default: amaranth)")
    run.add_argument("--design", default="mac-array", choices=["mac-array", "snn-core"],
                     help="design of --virtual (default: mac-array); snn-core runs a random spiking "
                          "network (--timesteps, --rate, --seed) and checks it")
    add_design_arguments(run, "mac-array")
    add_workload_arguments(run, what="the GEMM run on the board")
    add_design_arguments(run, "snn-core", config_file=False)
    cmd_snn.add_snn_workload_arguments(run, seed=False)
    run.set_defaults(handler=run_run)


def run_boards(args):
    from .boards.registry import all_boards, board_table
    if args.json:
        import json
        rows = []
        for spec in all_boards():
            rows.append({"name": spec.name, "device": spec.device, "package": spec.package,
                         "budget": spec.budget.as_dict(), "clock_hz": spec.clock_hz,
                         "uart": None if spec.uart is None else {"rx": spec.uart.rx, "tx": spec.uart.tx,
                                                                 "ftdi": spec.uart_ftdi},
                         "leds": spec.leds, "programmer": spec.programmer})
        print(json.dumps(rows, indent=2))
    else:
        print(board_table())
    return 0


def run_build(args):
    if args.design == "snn-core":
        return cmd_snn.run_board_build(args)
    cmd_snn.check_design_flags(args, "mac-array")
    from .boards.top import BoardTop, NoUart, fill_config, shell_resources

    spec = board_spec(args.board)
    config = config_from_args(args, "mac-array")
    if args.fill:
        try:
            config = fill_config(spec, config, split=args.array_clock is not None)
        except ValueError as exc:
            return fail(str(exc))
    check_seed(args.seed)
    try:
        top = BoardTop(config, spec, baud=args.baud,
                       array_clock_hz=None if args.array_clock is None else args.array_clock * 1e6)
    except NoUart as exc:
        raise ConfigError(str(exc)) from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out = build_dir(args.output, spec)
    clock = "" if top.array_clock_hz is None else f", array at {top.array_clock_hz / 1e6:g} MHz"
    print(f"building mac-array {config.rows}x{config.cols} {config.dataflow} {config.multiplier} "
          f"({config.macs_per_cycle} MACs/cycle{clock}) for {spec.name} ({spec.device}) into {out}")
    return build_and_report(top, spec, out, args,
                            shell_resources(config, split=top.array_clock_hz is not None))


def run_flash(args):
    from .boards.flash import FlashError, flash
    spec = board_spec(args.board)
    directory = build_dir(args.directory, spec)
    try:
        flash(spec, directory)
    except FlashError as exc:
        return fail(str(exc))
    print(f"programmed {spec.name} with {directory / 'top.bin'}")
    return 0


def run_run(args):
    if args.design == "snn-core":
        return cmd_snn.run_board_run(args)
    cmd_snn.check_design_flags(args, "mac-array")
    from .boards.host import BoardTimeout, DeviceError, SerialBoard, VirtualBoard
    from .sim.golden import mac_array_reference
    from .sim.testbench import random_operands

    config = config_from_args(args, "mac-array")
    m, k, n, seed, requant = workload_from_args(args, config)
    board = open_board(args, config, VirtualBoard, SerialBoard)
    if board is None:
        return 1
    with board:
        try:
            info = board.info()
            dev = info["config"]
            print(f"connected: {info['design']} {dev.rows}x{dev.cols} {dev.dataflow}, hash {info['hash']}")
            x, w, bias, params = random_operands(dev, m, k, n, seed=seed, requant=requant)
            y = board.gemm(x, w, bias, params)
        except (BoardTimeout, DeviceError, RuntimeError) as exc:
            return fail(str(exc))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    expected = mac_array_reference(x, w, bias, params, acc_bits=dev.accumulator_bits, k_group=dev.k_group)
    bad = np.argwhere(y != expected)
    if len(bad):
        r, c = (int(v) for v in bad[0])
        print(f"FAIL: {len(bad)} of {m * n} outputs differ; first at (row {r}, col {c}): "
              f"expected {int(expected[r, c])}, got {int(y[r, c])}")
        return 1
    print(f"PASS: {m * n} outputs match the golden model; {board.last_cycles} array cycles")
    return 0
