"""The spiking core on the command line: generate, sim (with the raster plot), build and run."""

import json
import re

import numpy as np
import pytest

from npuforge.cli import main
from npuforge.cmd_snn import random_network
from npuforge.config import ConfigError, load_config
from npuforge.generators import SnnCoreConfig
from npuforge.hdl.lif import LifParams
from npuforge.snn_config import CORE_FIELDS, NEURON_FIELDS, SnnCoreParameters

SMALL = ["--neurons", "8", "--axons", "8", "--lanes", "2"]


def _one_error_line(err):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("npuforge: error: ")
    return lines[0][len("npuforge: error: "):]


# -- parameters ------------------------------------------------------------------------------------

def test_flat_parameters_cover_every_field():
    names = {f for f in SnnCoreParameters.__dataclass_fields__}
    assert names == {"preset", *CORE_FIELDS, *NEURON_FIELDS}
    assert SnnCoreParameters.from_dict({}) == SnnCoreConfig()


def test_preset_then_overrides():
    config = SnnCoreParameters.from_dict({"preset": "odin", "neurons": 16, "threshold": 100,
                                          "leak_sub": 3})
    assert config == SnnCoreConfig.odin(neurons=16, threshold=100, leak=3)
    loihi = SnnCoreParameters.from_dict({"preset": "loihi", "current_decay": 101})
    assert loihi.neuron == LifParams.loihi(du=100)
    with pytest.raises(ValueError, match="preset must be one of 'none', 'odin', 'loihi', not 'x'"):
        SnnCoreParameters.from_dict({"preset": "x"})
    with pytest.raises(ValueError, match=r"unknown snn-core parameter\(s\): colour"):
        SnnCoreParameters.from_dict({"colour": 1})


def test_toml_table(tmp_path):
    path = tmp_path / "core.toml"
    path.write_text('[snn-core]\npreset = "loihi"\nneurons = 8\naxons = 4\nrecurrent = true\n'
                    'recurrent_depth = "auto"\nthreshold = 1280\nbias = true\n')
    config = load_config(path, "snn-core")
    assert config == SnnCoreConfig(neurons=8, axons=4, recurrent=True,
                                   neuron=LifParams.loihi(vth=20, bias=True))
    path.write_text("[snn-core]\nthreshhold = 3\n")
    with pytest.raises(ConfigError, match="unknown snn-core parameter 'threshhold' "
                                          r"\(did you mean 'threshold'\?\)"):
        load_config(path, "snn-core")


# -- generate --------------------------------------------------------------------------------------

def test_generate_writes_verilog_rtlil_manifest(tmp_path, capsys):
    out = tmp_path / "core"
    argv = ["generate", "snn-core", "--preset", "odin", *SMALL, "--threshold", "100",
            "--name", "odin8", "-o", str(out)]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "odin8.il", "odin8.v"]
    assert re.search(r"^module odin8\(", (out / "odin8.v").read_text(), re.MULTILINE)
    manifest = json.loads((out / "manifest.json").read_text())
    expected = SnnCoreConfig.odin(neurons=8, axons=8, lanes=2, threshold=100)
    assert SnnCoreConfig.from_dict(manifest["config"]) == expected
    assert manifest["generator"]["name"] == "snn-core"
    names = {p["name"] for p in manifest["ports"]}
    assert {"clk", "rst", "events_in__payload", "events_out__valid", "load__ready"} <= names
    derived = manifest["derived"]
    assert derived["cycles_per_event"] == expected.sweep_cycles() == 8 // 2 + 2
    assert derived["memories"]["weights"]["words"] == 8 * 4
    text = capsys.readouterr().out
    assert f"content hash {manifest['content_hash']['hex'][:16]}" in text
    assert "1.333 SOPs/cycle (6 cycles per event)" in text      # 8 neurons in 8/2 + 2 cycles


# -- sim ---------------------------------------------------------------------------------------------

_PASS = re.compile(r"^PASS: (\d+) timesteps match the golden model \(output events, their order, "
                   r"counters(, membranes)?\); ([\d,]+) cycles, ([\d,]+) SOPs \(([\d.]+) SOPs/cycle\), "
                   r"([\d,]+) output spikes, ([\d,]+) simulated cycles/s \((amaranth|verilator)\)$",
                   re.MULTILINE)


def _int(text):
    return int(text.replace(",", ""))


@pytest.mark.parametrize("preset", ["none", "odin", "loihi"])
def test_sim_passes_and_plots(preset, tmp_path, capsys):
    plot = tmp_path / "raster.png"
    argv = ["sim", "snn-core", "--preset", preset, *SMALL, "--timesteps", "12", "--rate", "0.3",
            "--seed", "4", "--plot", str(plot)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    match = _PASS.search(out)
    assert match, out
    assert match[1] == "12" and match[2]
    cycles, sops, spikes = _int(match[3]), _int(match[4]), _int(match[6])
    config = SnnCoreParameters.from_dict({"preset": preset, "neurons": 8, "axons": 8, "lanes": 2})
    _, _, x = random_network(config, timesteps=12, rate=0.3, seed=4)
    events = int(x.sum())
    # Every input event costs N SOPs; the cycles follow the core's documented cost (exact when
    # firing once per timestep, the spikes' cycles partly hidden when firing after each event).
    assert sops == 8 * events
    assert spikes > 0
    if config.neuron.fire == "timestep":
        assert cycles == config.cycles_estimate(input_events=events, timesteps=12, output_spikes=spikes)
    else:
        assert config.cycles_estimate(input_events=events, timesteps=12) <= cycles \
            <= config.cycles_estimate(input_events=events, timesteps=12, output_spikes=spikes)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {plot}" in out


def test_random_network_is_seeded_and_fires():
    config = SnnCoreConfig(neurons=16, axons=16, neuron=LifParams(bias=True))
    a = random_network(config, timesteps=5, rate=0.5, seed=3)
    b = random_network(config, timesteps=5, rate=0.5, seed=3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    w, bias, x = a
    assert w.shape == (16, 16) and bias.shape == (16,) and x.shape == (5, 16)
    # The mean input of a timestep is about a third of the threshold.
    assert 0.1 < w.mean() * 0.5 * 16 / config.neuron.threshold < 0.6


def test_sim_reports_a_mismatch(monkeypatch, capsys):
    import npuforge.cmd_snn as cmd_snn

    golden = cmd_snn._golden

    def wrong(*args, **kwargs):
        result = golden(*args, **kwargs)
        result.events[2] = result.events[2] + [7]
        return result

    monkeypatch.setattr(cmd_snn, "_golden", wrong)
    assert main(["sim", "snn-core", *SMALL, "--timesteps", "4", "--rate", "0.5"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^FAIL: timestep 2: expected output events \[.*7\], got \[", out, re.MULTILINE)


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    cases = [
        (["sim", "snn-core", "--lanes", "3"],
         "lanes must be a power of two in 1..64 that divides neurons (64), not 3"),
        (["sim", "snn-core", "--rate", "2"], "rate must be a number in 0..1, not '2'"),
        (["sim", "snn-core", "--timesteps", "0"], "timesteps must be an integer in 1..100000, not '0'"),
        (["sim", "snn-core", "--seed", "-1"], "seed must be an integer >= 0, not '-1'"),
        (["sim", "snn-core", "--preset", "tinyodin"],
         "preset must be one of 'none', 'odin', 'loihi', not 'tinyodin'"),
        (["sim", "snn-core", "--leak", "exp"],
         "leak must be one of 'none', 'shift', 'mul', 'sub', not 'exp'"),
        (["sim", "snn-core", "--threshold", "x"], "threshold must be an integer, not 'x'"),
        (["sim", "snn-core", "--backend", "verilator", "--vcd", "a.vcd"], "--vcd needs --backend amaranth"),
        (["generate", "snn-core", "--neurons", "0", "-o", str(tmp_path / "o")],
         "neurons must be an integer in 1..4096, not 0"),
        (["build", "--design", "snn-core", "--rows", "4"],
         "--rows is not a parameter of snn-core; it applies to mac-array only"),
        (["build", "--design", "snn-core", "--fill"],
         "--fill is not a parameter of snn-core; it applies to mac-array only"),
        (["build", "--neurons", "4"],
         "--neurons is not a parameter of mac-array; it applies to snn-core only"),
        (["run", "--virtual", "--timesteps", "4"],
         "--timesteps is not a parameter of mac-array; it applies to snn-core only"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert _one_error_line(captured.err) == message, argv
        assert captured.out == ""
    assert not (tmp_path / "o").exists()


def test_help_lists_every_parameter(capsys):
    assert main(["sim", "snn-core", "--help"]) == 0
    text = capsys.readouterr().out
    for name in ("preset", *CORE_FIELDS, *NEURON_FIELDS):
        assert "--" + name.replace("_", "-") in text, name
    for option in ("--timesteps", "--rate", "--seed", "--plot", "--backend", "--config"):
        assert option in text


# -- board flow -------------------------------------------------------------------------------------

def test_build_plan_only(tmp_path, capsys):
    out = tmp_path / "build"
    argv = ["build", "--design", "snn-core", "--preset", "odin", "--neurons", "16", "--axons", "16",
            "--plan-only", "-o", str(out)]
    assert main(argv) == 0
    assert "SB_SPRAM256KA" not in (out / "top.il").read_text()   # 16 x 16 weights fit block RAM
    assert "plan written" in capsys.readouterr().out


def test_run_on_the_virtual_board(capsys):
    argv = ["run", "--virtual", "--design", "snn-core", *SMALL, "--recurrent", "--timesteps", "6",
            "--rate", "0.4", "--seed", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("connected: snn-core 8 neurons x 8 axons, recurrent, 2 lanes")
    assert re.search(r"^PASS: 6 timesteps match the golden model", out, re.MULTILINE), out
