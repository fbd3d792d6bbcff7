"""The npuforge command line: as an installed program run from outside the checkout, and in-process."""

import json
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from npuforge import __version__
from npuforge.cli import main
from npuforge.generators import MacArrayConfig
from npuforge.sim.golden import mac_array_reference
from npuforge.sim.testbench import random_operands

# Small buffers keep Verilog generation quick.
SMALL = ["--rows", "1", "--cols", "2", "--max-m", "4", "--max-k", "4", "--max-n", "4"]


def _program():
    """The installed `npuforge` console script (next to this Python), else `python -m npuforge.cli`."""
    script = shutil.which("npuforge", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "npuforge.cli"]


def _run(args, cwd):
    return subprocess.run(_program() + args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)


def _one_error_line(err):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("npuforge: error: ")
    assert "Traceback" not in err
    return lines[0][len("npuforge: error: "):]


# -- as a program, from a directory that is not the checkout ---------------------------------------

def test_generate_as_a_program(tmp_path):
    result = _run(["generate", "mac-array", *SMALL, "--dataflow", "ws", "-o", "out"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["mac_array.il", "mac_array.v", "manifest.json"]
    verilog = (out / "mac_array.v").read_text()
    assert re.search(r"^module mac_array\(", verilog, re.MULTILINE)
    assert "\nmodule \\mac_array\n" in (out / "mac_array.il").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"] == MacArrayConfig(rows=1, cols=2, dataflow="ws", max_m=4, max_k=4,
                                                max_n=4).to_dict()
    assert f"content hash {manifest['content_hash']['hex'][:16]}" in result.stdout
    assert result.stderr == ""


def test_bad_parameter_as_a_program(tmp_path):
    result = _run(["generate", "mac-array", "--rows", "0", "-o", "out"], cwd=tmp_path)
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == "rows must be an integer in 1..64, not 0"
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_version_as_a_program(tmp_path):
    result = _run(["--version"], cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"npuforge {__version__} (amaranth 0.5")


# -- in-process ------------------------------------------------------------------------------------

def test_generate_in_process_with_testbench(tmp_path, capsys):
    out = tmp_path / "nested" / "dir"
    argv = ["generate", "mac-array", *SMALL, "--name", "npu", "--testbench", "--m", "3", "--k", "4",
            "--n", "3", "--seed", "7", "--requant", "-o", str(out)]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "npu.il", "npu.v", "tb_npu.v"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["testbench"] == {"module": "tb_npu", "m": 3, "k": 4, "n": 3, "seed": 7,
                                     "requant": True, "outputs": 9, "backpressure": True}
    assert manifest["files"]["testbench"]["path"] == "tb_npu.v"
    tb = (out / "tb_npu.v").read_text()
    assert "module tb_npu;" in tb and "  npu dut (" in tb
    # The vectors are the golden model's for the seeded operands the CLI promises.
    config = MacArrayConfig.from_dict(manifest["config"])
    x, w, bias, requant = random_operands(config, 3, 4, 3, seed=7, requant=True)
    y = mac_array_reference(x, w, bias, requant, acc_bits=config.accumulator_bits, k_group=config.k_group)
    rows, cols = config.output_order(3, 3)
    words = [int(h, 16) for h in re.findall(r"exp_y\[\d+\] = 32'h([0-9a-f]{8});", tb)]
    found = [v - (1 << 32) if v >= 1 << 31 else v for v in words]
    assert found == y[rows, cols].tolist()
    assert "wrote " + str(out / "tb_npu.v") in capsys.readouterr().out


def test_config_file_and_override_in_process(tmp_path):
    path = tmp_path / "design.toml"
    path.write_text('[mac-array]\nrows = 2\ncols = 2\ndataflow = "ws"\nmax_m = 4\nmax_k = 4\nmax_n = 4\n')
    assert main(["generate", "mac-array", "--config", str(path), "--cols", "1", "-o", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"] == MacArrayConfig(rows=2, cols=1, dataflow="ws", max_m=4, max_k=4,
                                                max_n=4).to_dict()


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"npuforge {__version__} (amaranth ")
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ("generate", "sim", "--version", "exit status"):
        assert word in text


@pytest.mark.parametrize("command", ["generate", "sim"])
def test_design_help_is_complete(command, capsys):
    assert main([command, "--help"]) == 0
    assert "mac-array" in capsys.readouterr().out
    assert main([command, "mac-array", "--help"]) == 0
    text = capsys.readouterr().out
    for f in fields(MacArrayConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
    # Every option says its default, and integer parameters their range.
    assert text.count("default") >= len(fields(MacArrayConfig)) + 4
    for option in ("--config", "--m", "--k", "--n", "--seed", "--requant"):
        assert option in text
    assert "range 1..64" in text and "range 2..16" in text
    if command == "generate":
        assert "-o DIR" in text and "--testbench" in text and "--name" in text
    else:
        assert "--vcd" in text


def _bad_inputs(tmp_path):
    out = str(tmp_path / "out")
    afile = tmp_path / "a_file"
    afile.write_text("")
    toml = tmp_path / "bad.toml"
    toml.write_text("[mac-array]\ncolz = 3\n")
    return [
        (["generate", "mac-array", "--rows", "0", "-o", out], "rows must be an integer in 1..64, not 0"),
        (["generate", "mac-array", "--in-bits", "17", "-o", out],
         "in_bits must be an integer in 2..16, not 17"),
        (["generate", "mac-array", "-o", out, "--m", "3"], "--m describes the testbench; add --testbench"),
        (["generate", "mac-array", "--name", "1abc", "-o", out], "name must be a Verilog identifier"),
        (["generate", "mac-array", "--name", "module", "-o", out], "name must not be a reserved word"),
        (["generate", "mac-array", "-o", str(afile)], "output must be a directory, not the file"),
        (["generate", "mac-array"], "the following arguments are required: -o/--output"),
        (["generate", "mac-array", "--config", str(toml), "-o", out],
         "bad.toml: unknown mac-array parameter 'colz' (did you mean 'cols'?)"),
        (["sim", "mac-array", "--m", "33"], "m must be an integer in 1..32 (max_m of this array), not 33"),
        (["sim", "mac-array", "--dataflow", "xs"], "dataflow must be one of 'os', 'ws', not 'xs'"),
        (["sim", "mac-array", "--config", str(tmp_path / "none.toml")], "cannot read config file"),
        (["sim", "mac-array", "--in-signed", "--in-unsigned"], "not allowed with argument"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ]


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    for argv, fragment in _bad_inputs(tmp_path):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert fragment in _one_error_line(captured.err), argv
        assert captured.out == ""
    assert not (tmp_path / "out").exists()


_PASS = re.compile(r"^PASS: (\d+) outputs match the golden model; (\d+) cycles, utilization ([\d.]+)%, "
                   r"([\d,]+) simulated cycles/s$", re.MULTILINE)


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_sim_passes(dataflow, capsys):
    argv = ["sim", "mac-array", "--rows", "4", "--cols", "4", "--m", "9", "--k", "13", "--n", "7",
            "--seed", "3", "--dataflow", dataflow]
    assert main(argv) == 0
    out = capsys.readouterr().out
    match = _PASS.search(out)
    assert match, out
    outputs, cycles, util = int(match[1]), int(match[2]), float(match[3])
    assert outputs == 63
    # The array cannot beat its ideal schedule, and the utilization is the useful-MAC fraction.
    assert cycles >= MacArrayConfig(dataflow=dataflow).compute_cycles(9, 13, 7)
    assert util == pytest.approx(100 * 9 * 13 * 7 / (16 * cycles), abs=0.05)


def test_sim_requant_unsigned(capsys):
    assert main(["sim", "mac-array", "--rows", "2", "--cols", "3", "--in-unsigned", "--out-unsigned",
                 "--requant", "--seed", "5", "--m", "3", "--k", "5", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "uint8 x int8" in out and "requantized" in out
    assert _PASS.search(out)


def test_sim_reports_a_mismatch(monkeypatch, capsys):
    import npuforge.sim.gemm as gemm

    real = gemm.simulate_gemm

    def broken(*args, **kwargs):
        result = real(*args, **kwargs)
        result.y[1, 2] += 1
        return result

    monkeypatch.setattr(gemm, "simulate_gemm", broken)
    argv = ["sim", "mac-array", "--rows", "2", "--cols", "2", "--m", "3", "--k", "2", "--n", "4"]
    assert main(argv) == 1
    config = MacArrayConfig(rows=2, cols=2)
    x, w, bias, _ = random_operands(config, 3, 2, 4, seed=1)
    expected = int(mac_array_reference(x, w, bias)[1, 2])
    out = capsys.readouterr().out
    assert (f"FAIL: 1 of 12 outputs differ from the golden model; first at (row 1, col 2): "
            f"expected {expected}, got {expected + 1};") in out


def test_sim_writes_a_vcd(tmp_path, capsys):
    vcd = tmp_path / "run.vcd"
    assert main(["sim", "mac-array", "--rows", "1", "--cols", "1", "--m", "2", "--k", "2", "--n", "2",
                 "--vcd", str(vcd)]) == 0
    assert "$enddefinitions" in vcd.read_text()
    assert f"wrote {vcd}" in capsys.readouterr().out
