"""``npuforge sim``: run a random GEMM through the simulated design and check it bit for bit.

``npuforge sim mac-array [parameters] --m M --k K --n N --seed S [--requant] [--vcd FILE]`` draws
seeded random operands, runs them through :func:`npuforge.sim.simulate_gemm` (the Amaranth
simulator), compares every output with the golden model and prints one line:

* ``PASS: 63 outputs match the golden model; 118 cycles, utilization 49.6%, 9,871 simulated cycles/s``
* ``FAIL: 2 of 63 outputs differ from the golden model; first at (row 1, col 3): expected 5, got 7; ...``

The exit status is 0 on PASS, 1 on FAIL.
"""

import sys

import numpy as np

from . import cmd_snn
from .config import add_design_arguments, add_workload_arguments, config_from_args, workload_from_args

__all__ = ["register", "run_mac_array"]

_DESCRIPTION = """\
Run a seeded random GEMM, Y = requant(X @ W + bias), through the MAC array in the Amaranth
simulator and compare every output with the NumPy golden model, bit for bit. Prints PASS or FAIL
with the array's cycle count, its utilization (useful MACs / (rows x cols x cycles)) and the
simulation speed (simulated cycles per wall-clock second).

exit status: 0 PASS, 1 FAIL (a mismatch), 2 bad input.
"""


def register(subparsers):
    """Add the ``sim`` command and its designs to ``subparsers``."""
    parser = subparsers.add_parser(
        "sim", help="simulate a design on random data and check it against the golden model",
        description="Simulate a design on seeded random data and check it bit-exactly against\n"
                    "the golden model.")
    designs = parser.add_subparsers(title="designs", dest="design", metavar="DESIGN")
    designs.required = True
    mac = designs.add_parser("mac-array", help="a systolic MAC array: Y = requant(X @ W + bias)",
                             description=_DESCRIPTION)
    add_design_arguments(mac, "mac-array")
    add_workload_arguments(mac, what="the simulated GEMM")
    out = mac.add_argument_group("output")
    out.add_argument("--vcd", metavar="FILE", default=None,
                     help="write a waveform of the run to FILE (VCD; slows the simulation down)")
    mac.set_defaults(handler=run_mac_array)
    cmd_snn.register_sim(designs)


def run_mac_array(args):
    """Handle ``npuforge sim mac-array``; return the exit status."""
    config = config_from_args(args, "mac-array")
    m, k, n, seed, requant = workload_from_args(args, config)

    # Imported here: loading the simulator is not needed for --help or a usage error.
    from .sim.gemm import simulate_gemm
    from .sim.golden import mac_array_reference
    from .sim.testbench import random_operands

    x, w, bias, params = random_operands(config, m, k, n, seed=seed, requant=requant)
    mode = "requantized" if params is not None else "raw int32"
    print(f"mac-array {config.rows}x{config.cols} {config.dataflow}, "
          f"{'int' if config.in_signed else 'uint'}{config.in_bits} x "
          f"{'int' if config.w_signed else 'uint'}{config.w_bits}, {config.accumulator_bits}-bit "
          f"accumulator; GEMM M={m} K={k} N={n}, seed {seed}, {mode} outputs")
    result = simulate_gemm(config, x, w, bias, params, vcd=args.vcd)
    expected = mac_array_reference(x, w, bias, params, acc_bits=config.accumulator_bits,
                                   k_group=config.k_group)
    bad = np.argwhere(result.y != expected)
    figures = (f"{result.cycles} cycles, utilization {100 * result.utilization:.1f}%, "
               f"{result.cycles_per_second:,.0f} simulated cycles/s")
    if len(bad) == 0:
        print(f"PASS: {m * n} outputs match the golden model; {figures}")
        if args.vcd:
            print(f"wrote {args.vcd}")
        return 0
    r, c = (int(v) for v in bad[0])
    print(f"FAIL: {len(bad)} of {m * n} outputs differ from the golden model; first at (row {r}, col {c}): "
          f"expected {int(expected[r, c])}, got {int(result.y[r, c])}; {figures}")
    sys.stdout.flush()
    return 1
