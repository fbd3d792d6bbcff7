"""``npuforge generate``: write a design's Verilog, RTLIL and manifest (and a testbench).

``npuforge generate mac-array [parameters] [--name NAME] [--testbench] -o DIR`` writes

* ``DIR/<name>.v``: Verilog (Amaranth's back end with the bundled Yosys);
* ``DIR/<name>.il``: the same design as Yosys RTLIL;
* ``DIR/manifest.json``: config, ports, derived figures, tool versions and the content hash;
* with ``--testbench``, ``DIR/tb_<name>.v``: a self-checking testbench whose vectors come from the
  golden model for a seeded random GEMM (``--m/--k/--n/--seed/--requant``).
"""

from . import cmd_snn
from ._cli_common import (
    add_output_arguments,
    convert_design,
    module_name,
    output_dir,
    write_outputs,
)
from .config import ConfigError, add_design_arguments, add_workload_arguments, config_from_args
from .config import workload_from_args as _workload_from_args
from .manifest import build_manifest
from .verilog import generate

__all__ = ["register", "run_mac_array"]

_DESCRIPTION = """\
Write the Verilog and RTLIL of a MAC array computing Y = requant(X @ W + bias), and a manifest.json
describing it (config, ports with their Verilog names, MACs per cycle, accumulator width, buffer
bits, estimated resources, output order, tool versions, content hash).

files written to DIR (created if missing):
  <name>.v         Verilog of module <name> (clock `clk`, synchronous active-high reset `rst`)
  <name>.il        the same design in Yosys RTLIL
  manifest.json    what the design is and how to drive it
  tb_<name>.v      with --testbench: a self-checking testbench; run it with
                     iverilog -g2012 -o tb.vvp tb_<name>.v <name>.v && vvp -n tb.vvp
                   it prints 'PASS: <n> outputs, <cycles> cycles' (exit status 0) or
                   'FAIL: output <t> (row r, col c): expected X, got Y' (non-zero exit status)
"""


def register(subparsers):
    """Add the ``generate`` command and its designs to ``subparsers``."""
    parser = subparsers.add_parser(
        "generate", help="write Verilog, RTLIL and manifest.json for a design",
        description="Write a design's Verilog, RTLIL and manifest.json (and optionally a\n"
                    "self-checking Verilog testbench).")
    designs = parser.add_subparsers(title="designs", dest="design", metavar="DESIGN")
    designs.required = True
    mac = designs.add_parser(
        "mac-array", help="a systolic MAC array: Y = requant(X @ W + bias)",
        description=_DESCRIPTION)
    add_design_arguments(mac, "mac-array")
    out = add_output_arguments(mac, "mac_array")
    out.add_argument("--testbench", action="store_true",
                     help="also write tb_<name>.v, a self-checking testbench for the GEMM given by "
                          "the workload options")
    out.add_argument("--no-backpressure", dest="backpressure", action="store_false",
                     help="testbench: hold y.ready and load.valid high instead of pseudo-random "
                          "handshakes")
    add_workload_arguments(mac, what="the testbench's GEMM (only with --testbench)")
    mac.set_defaults(handler=run_mac_array)
    cmd_snn.register_generate(designs)


def run_mac_array(args):
    """Handle ``npuforge generate mac-array``; return the exit status."""
    config = config_from_args(args, "mac-array")
    name = module_name(args)
    workload_given = [flag for flag, value in (("--m", args.m), ("--k", args.k), ("--n", args.n),
                                               ("--seed", args.seed), ("--requant", args.requant or None),
                                               ("--no-backpressure", not args.backpressure or None))
                      if value is not None]
    if workload_given and not args.testbench:
        raise ConfigError(f"{workload_given[0]} describes the testbench; add --testbench")
    if args.testbench:
        m, k, n, seed, requant = _workload_from_args(args, config)

    outdir = output_dir(args)
    converted = convert_design(generate, config, name)
    if converted is None:
        return 1
    files, verilog_text, component = converted

    testbench = None
    if args.testbench:
        # Imported here: the testbench needs the simulation package, `generate` alone does not.
        from .sim.testbench import mac_array_testbench, random_operands
        x, w, bias, params = random_operands(config, m, k, n, seed=seed, requant=requant)
        tb_text = mac_array_testbench(config, name, x, w, bias, params, seed=seed,
                                      backpressure=args.backpressure)
        files["testbench"] = (f"tb_{name}.v", tb_text)
        testbench = {"module": f"tb_{name}", "m": m, "k": k, "n": n, "seed": seed,
                     "requant": requant, "outputs": m * n, "backpressure": args.backpressure}

    manifest = build_manifest(config, verilog_text, component, name, files=files, testbench=testbench)
    figures = manifest["derived"]
    acc = figures["accumulator"]
    write_outputs(outdir, files, manifest,
                  f"mac-array {config.rows}x{config.cols} {config.dataflow}: {figures['macs_per_cycle']} "
                  f"MACs/cycle, {acc['bits']}-bit accumulator{' (saturating)' if acc['saturating'] else ''}, "
                  f"{figures['buffer_bits']['total']} buffer bits")
    return 0
