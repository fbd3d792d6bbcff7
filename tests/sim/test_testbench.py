"""The self-checking Verilog testbench: vectors from the golden model, PASS and FAIL under Icarus."""

import os
import re

import numpy as np
import pytest
from tools import require_tool, run_tool

from npuforge.generators import MacArrayConfig
from npuforge.manifest import verilog_ports
from npuforge.sim.gemm import load_words, simulate_gemm
from npuforge.sim.golden import mac_array_reference
from npuforge.sim.testbench import (
    TESTBENCH_PORTS,
    VERILATOR_WAIVERS,
    expected_outputs,
    mac_array_testbench,
    random_operands,
)
from npuforge.verilog import generate

# Small designs: each Icarus run takes well under a second.
CONFIGS = {
    # int8, raw int32 outputs.
    "os_int8": MacArrayConfig(rows=2, cols=2, dataflow="os", max_m=8, max_k=8, max_n=8),
    # Requantized int8 outputs through the weight-stationary accumulator memory.
    "ws_int8": MacArrayConfig(rows=2, cols=3, dataflow="ws", max_m=8, max_k=8, max_n=8),
    # uint8 x int4 into uint8 outputs, with a 12-bit accumulator that saturates and a bit-serial
    # requantizer (the slowest output stage).
    "os_uint8_sat": MacArrayConfig(rows=1, cols=2, dataflow="os", in_signed=False, w_bits=4,
                                   acc_bits=12, out_signed=False, requant_radix=0,
                                   max_m=4, max_k=8, max_n=4),
}
WORKLOADS = {"os_int8": (5, 7, 5, False), "ws_int8": (5, 7, 4, True), "os_uint8_sat": (3, 8, 3, True)}


@pytest.fixture(scope="module")
def designs(tmp_path_factory):
    """Generated Verilog per config, written once per module."""
    root = tmp_path_factory.mktemp("designs")
    paths = {}

    def get(key):
        if key not in paths:
            name = f"npu_{key}"
            path = root / f"{name}.v"
            path.write_text(generate(CONFIGS[key], name)[0])
            paths[key] = path
        return paths[key]

    return get


def _operands(key, seed=11):
    m, k, n, requant = WORKLOADS[key]
    return random_operands(CONFIGS[key], m, k, n, seed=seed, requant=requant)


def _run_icarus(design, tb_text, workdir):
    iverilog = require_tool("iverilog")
    vvp = require_tool("vvp")
    tb = workdir / "tb.v"
    tb.write_text(tb_text)
    compiled = run_tool([iverilog, "-g2012", "-o", "tb.vvp", str(tb), str(design)], cwd=workdir)
    assert compiled.returncode == 0, compiled.stderr
    return run_tool([vvp, "-n", "tb.vvp"], cwd=workdir, timeout=60)


_PASS = re.compile(r"^PASS: (\d+) outputs, (\d+) cycles$", re.MULTILINE)


# -- vectors (no tools needed) -----------------------------------------------------------------------

def test_random_operands_are_seeded_and_in_range():
    config = CONFIGS["os_uint8_sat"]
    a = random_operands(config, 3, 8, 3, seed=5, requant=True)
    b = random_operands(config, 3, 8, 3, seed=5, requant=True)
    c = random_operands(config, 3, 8, 3, seed=6, requant=True)
    for u, v in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(u, v)
    assert a[3] == b[3] and a[3] != c[3]
    x, w, bias, requant = a
    assert x.shape == (3, 8) and w.shape == (8, 3) and bias.shape == (3,)
    assert 0 <= x.min() and x.max() <= 255 and -8 <= w.min() and w.max() <= 7
    assert 0 <= requant.out_min <= requant.zero_point <= 255 and requant.out_max == 255
    assert random_operands(config, 3, 8, 3, seed=5)[3] is None
    with pytest.raises(ValueError, match=r"M must be in 1\.\.4 \(max_m of this array\), not 5"):
        random_operands(config, 5, 8, 3)


def test_random_requantization_spreads_the_outputs():
    config = MacArrayConfig(max_m=16, max_k=16, max_n=8)
    x, w, bias, requant = random_operands(config, 16, 16, 8, seed=2, requant=True)
    y = mac_array_reference(x, w, bias, requant, acc_bits=config.accumulator_bits)
    # A useful test vector uses much of the int8 range, not just the clamp limits.
    assert len(np.unique(y)) > 40


def test_saturating_config_really_saturates():
    # Otherwise the os_uint8_sat runs below would not exercise saturation.
    config = CONFIGS["os_uint8_sat"]
    x, w, bias, _ = _operands("os_uint8_sat")
    exact = mac_array_reference(x, w, bias)
    saturated = mac_array_reference(x, w, bias, acc_bits=config.accumulator_bits)
    assert not np.array_equal(exact, saturated)


def test_expected_outputs_follow_the_output_order():
    config = CONFIGS["ws_int8"]
    x, w, bias, requant = _operands("ws_int8")
    values, rows, cols = expected_outputs(config, x, w, bias, requant)
    y = mac_array_reference(x, w, bias, requant, acc_bits=config.accumulator_bits, k_group=config.k_group)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(r, c) for r in range(5) for c in range(4)]
    assert values.tolist() == [y[r, c] for r, c in zip(rows, cols)]
    # Weight-stationary output order: column strips of `cols`, rows in order within a strip.
    assert list(zip(rows[:4].tolist(), cols[:4].tolist())) == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_testbench_text():
    config = CONFIGS["ws_int8"]
    x, w, bias, requant = _operands("ws_int8")
    text = mac_array_testbench(config, "npu", x, w, bias, requant)
    assert text.startswith("// Self-checking testbench for module npu")
    assert re.search(r"^module tb_npu;$", text, re.MULTILINE)
    n_load = len(load_words(config, x, w, bias, requant))
    assert f"localparam integer N_LOAD = {n_load};" in text
    assert len(re.findall(r"^    load_word\[\d+\] = 35'h[0-9a-f]{9};$", text, re.MULTILINE)) == n_load
    assert len(re.findall(r"^    exp_y\[\d+\] = 32'h", text, re.MULTILINE)) == 20
    assert "$fatal" in text and "PASS: %0d outputs, %0d cycles" in text
    # The whole file is deterministic.
    assert text == mac_array_testbench(config, "npu", x, w, bias, requant)
    # No comment may start with "verilator": Verilator would read it as a directive.
    assert not re.search(r"//\s*verilator", text, re.IGNORECASE)


def test_testbench_rejects_bad_arguments():
    config = CONFIGS["os_int8"]
    x, w, bias, _ = _operands("os_int8")
    with pytest.raises(ValueError, match="name must be a Verilog identifier"):
        mac_array_testbench(config, "tb-1", x, w, bias)
    with pytest.raises(ValueError, match=r"x values must be in -128\.\.127 \(int8\), not 300"):
        mac_array_testbench(config, "npu", np.full((2, 2), 300), np.zeros((2, 2), dtype=int))
    with pytest.raises(TypeError, match="config must be a MacArrayConfig"):
        mac_array_testbench({"rows": 2}, "npu", x, w)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, not -1"):
        mac_array_testbench(config, "npu", x, w, seed=-1)


def test_testbench_ports_match_the_design(designs):
    declared = verilog_ports(designs("os_int8").read_text(), "npu_os_int8")
    assert declared == {name: (direction, width) for name, direction, width in TESTBENCH_PORTS}


# -- under Icarus Verilog ----------------------------------------------------------------------------

@pytest.mark.toolchain
@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_icarus_pass(key, designs, tmp_path):
    config = CONFIGS[key]
    x, w, bias, requant = _operands(key)
    design = designs(key)
    result = _run_icarus(design, mac_array_testbench(config, design.stem, x, w, bias, requant), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    match = _PASS.search(result.stdout)
    assert match, result.stdout
    assert int(match[1]) == x.shape[0] * w.shape[1]
    assert "FAIL" not in result.stdout


@pytest.mark.toolchain
def test_icarus_cycles_match_the_amaranth_simulation(designs, tmp_path):
    # With both handshakes always ready the Verilog run follows simulate_gemm's schedule exactly.
    config = CONFIGS["os_int8"]
    x, w, bias, requant = _operands("os_int8")
    design = designs("os_int8")
    tb = mac_array_testbench(config, design.stem, x, w, bias, requant, backpressure=False)
    result = _run_icarus(design, tb, tmp_path)
    assert result.returncode == 0, result.stdout
    sim = simulate_gemm(config, x, w, bias, requant)
    assert _PASS.search(result.stdout)[2] == str(sim.cycles)
    # With K = 1 the output stream is the bottleneck, so a not-ready y costs cycles: the
    # pseudo-random ready must show up in the count.
    x, w, bias, requant = random_operands(config, 5, 1, 5, seed=3)
    fast = _run_icarus(design, mac_array_testbench(config, design.stem, x, w, bias, requant,
                                                   backpressure=False), tmp_path)
    slow = _run_icarus(design, mac_array_testbench(config, design.stem, x, w, bias, requant), tmp_path)
    assert slow.returncode == 0 and fast.returncode == 0
    assert int(_PASS.search(slow.stdout)[2]) > int(_PASS.search(fast.stdout)[2])


@pytest.mark.toolchain
def test_icarus_fails_on_a_corrupted_expected_value(designs, tmp_path):
    key = "ws_int8"
    config = CONFIGS[key]
    x, w, bias, requant = _operands(key)
    values, rows, cols = expected_outputs(config, x, w, bias, requant)
    design = designs(key)
    text = mac_array_testbench(config, design.stem, x, w, bias, requant)
    t = 13
    wrong = int(values[t]) + 1
    text, count = re.subn(rf"exp_y\[{t}\] = 32'h[0-9a-f]{{8}};",
                          f"exp_y[{t}] = 32'h{wrong & 0xFFFFFFFF:08x};", text)
    assert count == 1
    result = _run_icarus(design, text, tmp_path)
    assert result.returncode != 0
    assert (f"FAIL: output {t} (row {rows[t]}, col {cols[t]}): expected {wrong}, got {values[t]}"
            in result.stdout.splitlines())
    assert "PASS" not in result.stdout


@pytest.mark.toolchain
def test_icarus_times_out_when_outputs_are_missing(designs, tmp_path):
    key = "os_int8"
    config = CONFIGS[key]
    x, w, bias, requant = _operands(key)
    design = designs(key)
    text = mac_array_testbench(config, design.stem, x, w, bias, requant)
    # Wait for one output more than the array sends: only the timeout can end the run.
    n_load, n_out = len(load_words(config, x, w, bias, requant)), x.shape[0] * w.shape[1]
    text = text.replace(f"localparam integer N_OUT = {n_out};", f"localparam integer N_OUT = {n_out + 1};")
    result = _run_icarus(design, text, tmp_path)
    assert result.returncode != 0
    line = (rf"^FAIL: timeout after \d+ cycles: {n_load} of {n_load} load words sent, "
            rf"{n_out} of {n_out + 1} outputs received$")
    assert re.search(line, result.stdout, re.MULTILINE), result.stdout


# -- under Verilator ------------------------------------------------------------------------------

@pytest.mark.toolchain
@pytest.mark.slow
def test_verilator_binary(designs, tmp_path):
    verilator = require_tool("verilator")
    key = "os_int8"
    config = CONFIGS[key]
    x, w, bias, requant = _operands(key)
    design = designs(key)
    (tmp_path / "tb.v").write_text(mac_array_testbench(config, design.stem, x, w, bias, requant))
    # -O0: the C++ compile dominates and this short run gains nothing from optimization.
    build = run_tool([verilator, "--binary", *VERILATOR_WAIVERS, "-j", str(os.cpu_count() or 1),
                      "-CFLAGS", "-O0", "--top-module", "tb_" + design.stem, "tb.v", str(design)],
                     cwd=tmp_path, timeout=600)
    if build.returncode != 0 and "--binary" in build.stderr and "Invalid option" in build.stderr:
        pytest.skip("this Verilator has no --binary (Verilator 5 needed)")
    assert build.returncode == 0, build.stderr[-2000:]
    result = run_tool([str(tmp_path / "obj_dir" / f"Vtb_{design.stem}")], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _PASS.search(result.stdout)
