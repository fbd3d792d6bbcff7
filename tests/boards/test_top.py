"""The board top: plan-only shell builds for every board, PLL settings, filling a board."""

import json
from pathlib import Path

import pytest

from npuforge.boards.build import DoesNotFit, build
from npuforge.boards.registry import all_boards, get_board
from npuforge.boards.top import BoardTop, NoUart, fill_config, pll_parameters, shell_resources
from npuforge.generators import MacArrayConfig

SMALL = MacArrayConfig(rows=1, cols=2, max_m=8, max_k=16, max_n=8, requant_radix=0)


@pytest.mark.parametrize("spec", all_boards(), ids=lambda s: s.name)
def test_plan_only_shell_build_every_board(spec, tmp_path):
    need = shell_resources(SMALL)
    fits = all(need[k] <= v for k, v in spec.budget.as_dict().items())
    if spec.uart is None:
        with pytest.raises(NoUart, match=f"^board {spec.name} has no UART"):
            BoardTop(SMALL, spec)
        return
    top = BoardTop(SMALL, spec)
    if not fits:
        with pytest.raises(DoesNotFit, match=r"^design needs \d+ "):
            build(top, spec, tmp_path, plan_only=True, resources=need)
        return
    result = build(top, spec, tmp_path, plan_only=True, resources=need)
    assert result.plan_only and (tmp_path / "top.il").exists()


def test_pll_top_plans_two_clock_domains(tmp_path):
    top = BoardTop(SMALL, "icebreaker", array_clock_hz=42e6)
    assert top.array_clock_hz == 42e6
    build(top, "icebreaker", tmp_path, plan_only=True)
    text = (tmp_path / "top.il").read_text()
    assert "SB_PLL40_2_PAD" in text
    assert "AsyncFIFO" in text or "async" in text.lower()


@pytest.mark.parametrize("board,cell", [("icebreaker", "SB_PLL40_2_PAD"),
                                        ("ice40_hx8k_b_evn", "SB_PLL40_CORE")])
def test_pll_primitive_follows_the_clock_pin(tmp_path, board, cell):
    # A clock pin that is not the PLL's input pad feeds SB_PLL40_CORE from the global network.
    build(BoardTop(SMALL, board, array_clock_hz=42e6), board, tmp_path, plan_only=True)
    text = (tmp_path / "top.il").read_text()
    assert cell in text
    other = ({"SB_PLL40_2_PAD", "SB_PLL40_CORE"} - {cell}).pop()
    assert other not in text


def test_pll_parameters_follow_the_datasheet_equation():
    for target in (16e6, 30e6, 42e6, 48e6, 100e6):
        p = pll_parameters(12e6, target)
        f_pfd = 12e6 / (p["divr"] + 1)
        f_vco = f_pfd * (p["divf"] + 1)
        assert 10e6 <= f_pfd <= 133e6 and 533e6 <= f_vco <= 1066e6
        assert p["f_out"] == f_vco / 2 ** p["divq"]
        assert abs(p["f_out"] - target) <= 0.01 * target
    with pytest.raises(ValueError, match=r"^array clock must be in 16\.\.275 MHz"):
        pll_parameters(12e6, 300e6)


def test_fill_config_uses_dsp_blocks_first_and_fits():
    up5k = fill_config("icebreaker")
    assert up5k.multiplier in ("dsp", "mixed") and up5k.dsp_count == 8
    assert up5k.macs_per_cycle >= 16
    hx8k = fill_config("ice40_hx8k_b_evn")
    assert hx8k.multiplier == "lut" and hx8k.dsp_count == 0
    for spec, cfg in ((get_board("icebreaker"), up5k), (get_board("ice40_hx8k_b_evn"), hx8k)):
        need = shell_resources(cfg)
        assert all(need[k] <= v for k, v in spec.budget.as_dict().items())
    with pytest.raises(ValueError, match="^no MAC array fits icestick"):
        fill_config("icestick")


def test_fill_config_picks_the_compact_variants():
    # Carry-chain logic PEs (three stages) and the serial requantizer, unless the base asks for
    # operand gating (which carry PEs do not offer); 16x16 DSP PEs cap the latency at 2.
    cfg = fill_config("icebreaker")
    assert (cfg.lut_multiplier, cfg.mul_latency, cfg.requant_radix) == ("carry", 3, 0)
    gated = fill_config("icebreaker", MacArrayConfig(operand_gating=True))
    assert gated.lut_multiplier == "tree" and gated.operand_gating
    wide = fill_config("icebreaker", MacArrayConfig(in_bits=12))
    assert wide.pes_per_dsp == 1 and wide.mul_latency == 2 and wide.dsp_count == 8


def test_baud_limits():
    with pytest.raises(ValueError, match="^baud must be at most"):
        BoardTop(SMALL, "icebreaker", baud=12_000_000)


def test_placer_overflow_is_reported_as_does_not_fit():
    from npuforge.boards.build import nextpnr_failure
    log = ("Info: Packing constants..\n"
           "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5449 ICESTORM_LCs\n"
           "ERROR: Packing design failed.\n")
    err = nextpnr_failure(log, get_board("icebreaker"))
    assert isinstance(err, DoesNotFit)
    assert str(err).startswith("design needs 5449 logic cells but icebreaker (iCE40UP5K) has 5280")


def test_estimates_follow_the_measured_builds():
    # bench/results/qor.json holds nextpnr's counts for complete builds (bench/qor.py); the
    # estimate that refuses designs before synthesis and sizes `--fill` must stay close to them.
    rows = json.loads((Path(__file__).parents[2] / "bench" / "results" / "qor.json").read_text())["rows"]
    built = [row for row in rows if row["status"] in ("PASS", "FAIL")]
    assert len(built) >= 6
    for row in built:
        est = shell_resources(MacArrayConfig.from_dict(row["config"]), split=row["split"])
        used = {key: row["resources"][key]["used"] for key in ("logic_cells", "bram", "dsp")}
        assert abs(est["logic_cells"] / used["logic_cells"] - 1) < 0.10, (row["name"], est, used)
        # Yosys may mix block RAM geometries in one memory; the estimate uses one.
        assert used["bram"] <= est["bram"] <= used["bram"] + 2, (row["name"], est, used)
        assert est["dsp"] == used["dsp"], row["name"]


def test_fill_config_shapes():
    # At most twice as long as wide; the clock-domain crossing of a PLL design is counted.
    for board in ("icebreaker", "ice40_hx8k_b_evn"):
        for split in (False, True):
            for dataflow in ("os", "ws"):
                cfg = fill_config(board, MacArrayConfig(dataflow=dataflow), split=split)
                assert max(cfg.rows, cfg.cols) <= 2 * min(cfg.rows, cfg.cols)
                need = shell_resources(cfg, split=split)
                budget = get_board(board).budget.as_dict()
                assert need["logic_cells"] <= 0.92 * budget["logic_cells"]
                assert need["bram"] <= budget["bram"]
    plain = shell_resources(MacArrayConfig())
    split = shell_resources(MacArrayConfig(), split=True)
    assert split["bram"] == plain["bram"] + 3 and split["logic_cells"] > plain["logic_cells"]
