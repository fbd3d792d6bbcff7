"""Self-checking Verilog testbenches for generated MAC arrays, with vectors from the golden model.

The testbench lets a user check the generated RTL in their own flow (Icarus Verilog, Verilator)
without Python: it embeds the load words and the expected results, drives the array through its
ports exactly as :func:`npuforge.sim.simulate_gemm` does, and ends with

* ``PASS: <n> outputs, <cycles> cycles`` and ``$finish`` (exit status 0), or
* ``FAIL: output <t> (row r, col c): expected X, got Y`` (or a ``FAIL: timeout ...`` line) and
  ``$fatal`` (a non-zero exit status: 1 under Icarus ``vvp``, an abort under a Verilator binary;
  ``$finish(1)`` would exit 0 under both, its argument only selects what is printed).

It is plain Verilog-2005 apart from ``$fatal`` (compile with ``iverilog -g2012``; Verilator needs
``--binary``, which implies ``--timing`` for the clock generator). Stimuli change on the falling
clock edge and results are sampled on the rising one, so there is no race with the design's
flip-flops in either simulator. Pseudo-random gaps on ``load.valid`` and pseudo-random
``y.ready`` (a 16-bit LFSR) exercise both streams' handshakes, including backpressure on the
output.
"""

import re

import numpy as np

from .. import __version__
from ..generators.mac_array import LoadLayout, MacArrayConfig
from ..hdl.requant import cycles_per_result
from .gemm import check_operands, load_words, pack_load_words
from .golden import INT32_MAX, RequantParams, mac_array_reference, quantize_multiplier

__all__ = ["TESTBENCH_PORTS", "VERILATOR_WAIVERS", "expected_outputs", "mac_array_testbench",
           "random_operands"]

#: Verilator warnings waived for the Verilog that Yosys writes from the MAC array; each is benign.
VERILATOR_WAIVERS = (
    # Yosys leaves operands at their natural widths and lets Verilog's rules extend them.
    "-Wno-WIDTH",
    # The requantizer's rounding addend compares its 5-bit shift with every bit position up to
    # 31, so one comparison is `shift > 31`: constant false, and removed by synthesis.
    "-Wno-CMPCONST",
    # A `Switch` without a `Default` becomes a `casez` without `default:`; Yosys assigns each
    # signal before the `casez`, so uncovered values keep that assignment (no latch).
    "-Wno-CASEINCOMPLETE",
    # A zero-width signal (such as a lane counter `Signal(range(1))` of a one-column array) is
    # declared `wire [-1:0] name;` and never used.
    "-Wno-LITENDIAN",
)

#: The design's ports as the testbench connects them: ``(name, direction, width)``.
TESTBENCH_PORTS = (
    ("clk", "input", 1),
    ("rst", "input", 1),
    ("load__valid", "input", 1),
    ("load__payload", "input", LoadLayout.size),
    ("load__ready", "output", 1),
    ("y__valid", "output", 1),
    ("y__payload", "output", 32),
    ("y__ready", "input", 1),
    ("size_m", "input", 16),
    ("size_k", "input", 16),
    ("size_n", "input", 16),
    ("clear", "input", 1),
    ("start", "input", 1),
    ("busy", "output", 1),
    ("cycles", "output", 32),
    ("raw", "input", 1),
    ("zero_point", "input", 16),
    ("out_min", "input", 16),
    ("out_max", "input", 16),
)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _operand(rng, shape, bits, is_signed):
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if is_signed else (0, 1 << bits)
    return rng.integers(lo, hi, size=shape, dtype=np.int64)


def random_operands(config, m, k, n, *, seed=1, requant=False):
    """Seeded random operands for an ``(m, k) @ (k, n)`` GEMM on ``config``.

    ``x`` and ``w`` are uniform over the operand types (extremes included), ``bias`` is uniform in
    ``-2**15 .. 2**15 - 1``. With ``requant``, each output channel gets a scale that maps its
    largest raw result to 40..160 output steps (so some outputs clamp), a random zero point and,
    for half of the seeds, a ReLU clamp (``out_min = zero_point``).

    Parameters
    ----------
    config : MacArrayConfig
    m, k, n : int
        Problem size; must fit the buffers.
    seed : int
        Seed of :func:`numpy.random.default_rng`.
    requant : bool
        Also make requantization parameters.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray, RequantParams or None)
        ``x`` (M, K), ``w`` (K, N), ``bias`` (N,) and the requantization parameters.

    Raises
    ------
    TypeError, ValueError
        If ``config`` is not a :class:`MacArrayConfig` or the size does not fit.
    """
    if not isinstance(config, MacArrayConfig):
        raise TypeError(f"config must be a MacArrayConfig, not {config!r}")
    config.check_shape(m, k, n)
    rng = np.random.default_rng(seed)
    x = _operand(rng, (m, k), config.in_bits, config.in_signed)
    w = _operand(rng, (k, n), config.w_bits, config.w_signed)
    bias = rng.integers(-(1 << 15), 1 << 15, size=n, dtype=np.int64)
    if not requant:
        return x, w, bias, None
    raw = mac_array_reference(x, w, bias, None, acc_bits=config.accumulator_bits,
                              k_group=config.k_group)
    mults, shifts = [], []
    for j in range(n):
        peak = int(np.abs(raw[:, j]).max())
        scale = float(rng.uniform(40, 160)) / max(peak, 1)
        mult, shift = (INT32_MAX, 0) if scale >= 1 else quantize_multiplier(scale)
        mults.append(mult)
        shifts.append(shift)
    if config.out_signed:
        lo, hi, zero_point = -128, 127, int(rng.integers(-20, 21))
    else:
        lo, hi, zero_point = 0, 255, int(rng.integers(100, 156))
    relu = bool(rng.integers(0, 2))
    params = RequantParams(mult=tuple(mults), shift=tuple(shifts), zero_point=zero_point,
                           out_min=zero_point if relu else lo, out_max=hi)
    return x, w, bias, params


def expected_outputs(config, x, w, bias=None, requant=None):
    """Golden results in the order the array's ``y`` stream produces them.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        ``values[t]`` is the ``t``-th output, which is ``Y[rows[t], cols[t]]``.
    """
    x, w, bias = check_operands(config, x, w, bias, requant)
    y = mac_array_reference(x, w, bias, requant, acc_bits=config.accumulator_bits,
                            k_group=config.k_group)
    rows, cols = config.output_order(x.shape[0], w.shape[1])
    return y[rows, cols], rows, cols


def _hex(value, width):
    return f"{width}'h{int(value) & ((1 << width) - 1):0{(width + 3) // 4}x}"


def mac_array_testbench(config, name, x, w, bias=None, requant=None, *, backpressure=True, seed=1):
    """A self-checking Verilog testbench for the design ``name`` generated from ``config``.

    Parameters
    ----------
    config : MacArrayConfig
        The config the design was generated from.
    name : str
        The design's top module; the testbench module is ``tb_<name>``.
    x, w, bias, requant
        The GEMM to run, as for :func:`npuforge.sim.simulate_gemm`.
    backpressure : bool
        Pseudo-random ``y.ready`` and ``load.valid`` (each high about 3 cycles in 4); otherwise
        both stay high.
    seed : int
        Seeds the testbench's LFSR (the handshake pattern).

    Returns
    -------
    str
        Verilog source of module ``tb_<name>``.

    Raises
    ------
    TypeError, ValueError
        If the config, the name or an operand is invalid (the message names it).
    """
    if not isinstance(config, MacArrayConfig):
        raise TypeError(f"config must be a MacArrayConfig, not {config!r}")
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"name must be a Verilog identifier (a letter or _, then letters, digits or _), "
                         f"not {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, not {seed!r}")
    x, w, bias = check_operands(config, x, w, bias, requant)
    m, k = x.shape
    n = w.shape[1]
    values, out_rows, out_cols = expected_outputs(config, x, w, bias, requant)
    words = pack_load_words(load_words(config, x, w, bias, requant))
    load_width = LoadLayout.size
    n_load, n_out = len(words), len(values)
    per_output = cycles_per_result(config.requant_radix) + 2
    timeout = (200 + 4 * n_load + 4 * config.compute_cycles(m, k, n) + 4 * n_out * per_output
               + 8 * config.macs_per_cycle)
    lfsr_init = ((int(seed) * 0x9E37) ^ 0xACE1) & 0xFFFF or 0xACE1
    if requant is None:
        raw, zero_point, out_min, out_max = 1, 0, 0, 0
    else:
        raw, zero_point, out_min, out_max = 0, requant.zero_point, requant.out_min, requant.out_max
    mode = "raw int32 (acc + bias)" if requant is None else (
        f"requantized, zero point {zero_point}, clamp {out_min}..{out_max}")
    tb = f"tb_{name}"

    lines = [
        f"// Self-checking testbench for module {name}, generated by npuforge {__version__}.",
        f"// GEMM: M={m} K={k} N={n}, {mode}; {n_load} load words, {n_out} outputs.",
        "// Expected values come from the golden model (npuforge.sim.golden.mac_array_reference),",
        f"// listed in the array's output order ({config.dataflow} dataflow).",
        "//",
        "// Run it with Icarus Verilog or with Verilator 5:",
        f"//   $ iverilog -g2012 -o {tb}.vvp {tb}.v {name}.v && vvp -n {tb}.vvp",
        # Verilator reads a comment that starts with its own name as a directive: hence the "$ ".
        f"//   $ verilator --binary {' '.join(VERILATOR_WAIVERS)} --top-module {tb} {tb}.v {name}.v",
        f"//     && ./obj_dir/V{tb}",
        "// Ends with 'PASS: <n> outputs, <cycles> cycles' and exit status 0, or a 'FAIL: ...' line",
        "// and $fatal (non-zero exit status).",
        f"module {tb};",
        f"  localparam integer N_LOAD = {n_load};",
        f"  localparam integer N_OUT = {n_out};",
        f"  localparam integer TIMEOUT = {timeout};  // cycles",
        f"  localparam BACKPRESSURE = 1'b{int(bool(backpressure))};",
        "",
    ]
    for pname, direction, width in TESTBENCH_PORTS:
        kind = "reg " if direction == "input" else "wire"
        vec = f"[{width - 1}:0] " if width > 1 else ""
        lines.append(f"  {kind} {vec}{pname};")
    lines += [
        "",
        f"  {name} dut (",
        ",\n".join(f"    .{pname}({pname})" for pname, _, _ in TESTBENCH_PORTS),
        "  );",
        "",
        f"  reg [{load_width - 1}:0] load_word [0:N_LOAD-1];",
        "  reg [31:0] exp_y [0:N_OUT-1];",
        "  reg [15:0] exp_row [0:N_OUT-1];",
        "  reg [15:0] exp_col [0:N_OUT-1];",
        "  initial begin",
    ]
    lines += [f"    load_word[{i}] = {_hex(word, load_width)};" for i, word in enumerate(words)]
    lines += [f"    exp_y[{t}] = {_hex(v, 32)}; exp_row[{t}] = {r}; exp_col[{t}] = {c};  // {v}"
              for t, (v, r, c) in enumerate(zip(values.tolist(), out_rows.tolist(), out_cols.tolist()))]
    lines += [
        "  end",
        "",
        "  // Clock, and a 16-bit Fibonacci LFSR (taps 16, 14, 13, 11) for the handshake pattern.",
        "  initial clk = 1'b0;",
        "  always #5 clk = ~clk;",
        "  reg [15:0] lfsr;",
        "  always @(negedge clk) lfsr <= {lfsr[14:0], lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]};",
        "",
        "  integer n_sent, n_got, tick;",
        "  reg sent;",
        "",
        "  // Output consumer: ready changes on the falling edge, results are taken on the rising one.",
        "  // It listens from the start: a result before `start` would be a failure too.",
        "  always @(negedge clk) y__ready <= ~BACKPRESSURE | (lfsr[1:0] != 2'b00);",
        "  always @(posedge clk) begin",
        "    if (y__valid && y__ready) begin",
        "      if (n_got >= N_OUT) begin",
        ('        $display("FAIL: output %0d: the array sent more than the %0d expected outputs", '
         "n_got, N_OUT);"),
        '        $fatal(1, "extra output");',
        "      end",
        "      if (y__payload !== exp_y[n_got]) begin",
        ('        $display("FAIL: output %0d (row %0d, col %0d): expected %0d, got %0d", n_got, '
         "exp_row[n_got], exp_col[n_got], $signed(exp_y[n_got]), $signed(y__payload));"),
        '        $fatal(1, "output mismatch");',
        "      end",
        "      n_got = n_got + 1;",
        "    end",
        "  end",
        "",
        "  always @(posedge clk) begin",
        "    tick = tick + 1;",
        "    if (tick > TIMEOUT) begin",
        ('      $display("FAIL: timeout after %0d cycles: %0d of %0d load words sent, %0d of %0d '
         'outputs received", tick, n_sent, N_LOAD, n_got, N_OUT);'),
        '      $fatal(1, "timeout");',
        "    end",
        "  end",
        "",
        "  initial begin",
        f"    lfsr = 16'h{lfsr_init:04x};",
        "    tick = 0; n_sent = 0; n_got = 0; sent = 1'b0;",
        "    rst = 1'b1; clear = 1'b0; start = 1'b0; y__ready = 1'b0;",
        "    load__valid = 1'b0; load__payload = 0;",
        f"    size_m = {m}; size_k = {k}; size_n = {n};",
        (f"    raw = 1'b{raw}; zero_point = {_hex(zero_point, 16)}; out_min = {_hex(out_min, 16)}; "
         f"out_max = {_hex(out_max, 16)};"),
        "    repeat (3) @(negedge clk);",
        "    rst = 1'b0;",
        "    clear = 1'b1;",
        "    @(negedge clk);",
        "    clear = 1'b0;",
        "    // Stream every load word; valid stays high until the word is taken.",
        "    while (n_sent < N_LOAD) begin",
        "      if (!load__valid && (!BACKPRESSURE || lfsr[3:2] != 2'b00)) begin",
        "        load__payload = load_word[n_sent];",
        "        load__valid = 1'b1;",
        "      end",
        "      @(posedge clk);",
        "      sent = load__valid & load__ready;",
        "      @(negedge clk);",
        "      if (sent) begin",
        "        n_sent = n_sent + 1;",
        "        load__valid = 1'b0;",
        "      end",
        "    end",
        "    start = 1'b1;",
        "    @(negedge clk);",
        "    start = 1'b0;",
        "    wait (n_got == N_OUT);",
        "    @(negedge clk);",
        "    while (busy) @(negedge clk);",
        "    // A few more cycles: no output may follow the last one.",
        "    repeat (8) @(negedge clk);",
        '    $display("PASS: %0d outputs, %0d cycles", N_OUT, cycles);',
        "    $finish;",
        "  end",
        "endmodule",
        "",
    ]
    return "\n".join(lines)
