"""Report parsers on excerpts of real nextpnr-ice40 / Yosys logs (tests/boards/data)."""

import json
from pathlib import Path

import pytest

from npuforge.boards.registry import get_board
from npuforge.boards.report import (
    BuildReport,
    ClockTiming,
    ResourceUse,
    parse_errors,
    parse_fmax,
    parse_unplaced_cell_type,
    parse_utilisation,
)
from npuforge.boards.toolchain import parse_nextpnr_version, parse_yosys_version

DATA = Path(__file__).parent / "data"


def fixture(name):
    return (DATA / name).read_text()


# -- utilisation ------------------------------------------------------------------------------

def test_utilisation_of_a_small_up5k_design():
    table = parse_utilisation(fixture("nextpnr_up5k_pass.log"))
    assert table["ICESTORM_LC"] == ResourceUse(43, 5280)
    assert table["ICESTORM_RAM"] == ResourceUse(0, 30)
    assert table["SB_IO"] == ResourceUse(2, 39)
    assert table["ICESTORM_DSP"] == ResourceUse(0, 8)
    assert table["ICESTORM_SPRAM"] == ResourceUse(0, 4)
    assert len(table) == 15   # every row of nextpnr's UP5K table, none of the other lines


def test_utilisation_with_ebr_spram_and_dsp():
    table = parse_utilisation(fixture("nextpnr_up5k_two_clocks.log"))
    assert table["ICESTORM_LC"] == ResourceUse(183, 5280)
    assert table["ICESTORM_RAM"] == ResourceUse(2, 30)
    assert table["ICESTORM_DSP"] == ResourceUse(1, 8)
    assert table["ICESTORM_SPRAM"] == ResourceUse(1, 4)
    assert table["ICESTORM_HFOSC"] == ResourceUse(1, 1)


def test_utilisation_over_budget():
    assert parse_utilisation(fixture("nextpnr_up5k_dsp_overflow.log"))["ICESTORM_DSP"] == \
        ResourceUse(12, 8)
    table = parse_utilisation(fixture("nextpnr_hx1k_lc_overflow.log"))
    assert table["ICESTORM_LC"] == ResourceUse(4340, 1280)
    assert "ICESTORM_DSP" not in table   # HX parts have none, nextpnr lists none


def test_utilisation_last_table_wins_and_empty_log():
    text = fixture("nextpnr_up5k_pass.log") + fixture("nextpnr_up5k_two_clocks.log")
    assert parse_utilisation(text)["ICESTORM_LC"] == ResourceUse(183, 5280)
    assert parse_utilisation("") == {}
    assert parse_utilisation("Info: Device utilisation:\n") == {}


def test_resource_percent():
    assert ResourceUse(1320, 5280).percent == 25.0
    assert ResourceUse(0, 0).percent == 0.0


# -- timing -----------------------------------------------------------------------------------

def test_fmax_takes_the_post_route_figure():
    # The log reports 91.95 MHz after placement and 79.74 MHz after routing.
    assert parse_fmax(fixture("nextpnr_up5k_pass.log")) == {
        "cd_sync.clk": ClockTiming("cd_sync.clk", 79.74, 12.0, True)}


def test_fmax_of_two_clocks_with_aligned_names():
    clocks = parse_fmax(fixture("nextpnr_up5k_two_clocks.log"))
    assert list(clocks) == ["cd_sync.clk", "fast_clk"]
    assert clocks["cd_sync.clk"] == ClockTiming("cd_sync.clk", 66.94, 12.0, True)
    assert clocks["fast_clk"] == ClockTiming("fast_clk", 87.50, 24.0, True)


def test_fmax_of_a_global_buffer_clock_name():
    clocks = parse_fmax(fixture("nextpnr_lp8k_pass.log"))
    assert clocks == {"cd_sync.clk_$glb_clk":
                      ClockTiming("cd_sync.clk_$glb_clk", 131.73, 16.0, True)}


def test_fmax_fail_as_error_and_as_warning():
    for name in ("nextpnr_hx4k_timing_fail.log", "nextpnr_hx4k_timing_allow_fail.log"):
        assert parse_fmax(fixture(name)) == {
            "cd_sync.clk": ClockTiming("cd_sync.clk", 70.13, 100.0, False)}


# -- errors -----------------------------------------------------------------------------------

def test_errors_and_unplaced_cell_type():
    text = fixture("nextpnr_up5k_dsp_overflow.log")
    assert parse_unplaced_cell_type(text) == "ICESTORM_DSP"
    assert parse_errors(text) == [
        ("Unable to place cell 'p1_SB_DFFSR_Q_D_SB_MAC16_O_DSP', no BELs remaining to implement "
         "cell type 'ICESTORM_DSP'")]
    assert parse_unplaced_cell_type(fixture("nextpnr_hx1k_lc_overflow.log")) == "ICESTORM_LC"
    assert parse_unplaced_cell_type(fixture("nextpnr_up5k_pass.log")) is None
    assert parse_errors(fixture("nextpnr_up5k_pass.log")) == []


def test_timing_error_line():
    assert parse_errors(fixture("nextpnr_hx4k_timing_fail.log")) == [
        "Max frequency for clock 'cd_sync.clk': 70.13 MHz (FAIL at 100.00 MHz)"]


def test_yosys_error_line():
    assert parse_errors(fixture("yosys_unknown_cell.log")) == [
        ("Module `\\NO_SUCH_CELL' referenced in module `\\top' in cell `\\x' is not part of "
         "the design.")]


def test_tool_version_banners():
    assert parse_yosys_version(fixture("yosys_version.txt")) == "Yosys 0.70 (28ba3cb92)"
    assert parse_nextpnr_version(fixture("nextpnr_version.txt")) == "nextpnr-0.11.1"
    assert parse_yosys_version("") == "unknown"
    assert parse_nextpnr_version("something else\n") == "something else"


# -- BuildReport ------------------------------------------------------------------------------

def _report(log="nextpnr_up5k_pass.log", board="icebreaker", **kwargs):
    fields = dict(seed=3, content_hash="ab" * 32,
                  tool_versions={"yosys": "Yosys 0.70", "nextpnr-ice40": "nextpnr-0.11.1"},
                  stage_seconds={"elaborate": 0.2, "yosys": 3.0, "nextpnr": 2.5, "icepack": 0.5},
                  synth_opts="-dsp", bitstream="top.bin", bitstream_bytes=104090,
                  bitstream_sha256="cd" * 32)
    fields.update(kwargs)
    return BuildReport.from_nextpnr_log(fixture(log), board=get_board(board), **fields)


def test_report_from_log():
    report = _report()
    assert report.board == "icebreaker"
    assert (report.device, report.package) == ("iCE40UP5K", "SG48")
    assert report.resources == {
        "logic_cells": ResourceUse(43, 5280), "bram": ResourceUse(0, 30),
        "spram": ResourceUse(0, 4), "dsp": ResourceUse(0, 8), "io": ResourceUse(2, 39)}
    assert report.required_clock == "clk12"
    assert report.required_clock_hz == 12e6
    assert report.passed and report.status == "PASS"
    assert report.total_seconds == pytest.approx(6.2)


def test_report_fills_resources_the_device_lacks():
    report = _report("nextpnr_hx1k_lc_overflow.log", board="icestick",
                     error="design does not fit")
    assert report.resources["logic_cells"] == ResourceUse(4340, 1280)
    assert report.resources["spram"] == ResourceUse(0, 0)
    assert report.resources["dsp"] == ResourceUse(0, 0)
    assert report.status == "FAIL"


def test_report_fails_when_a_clock_fails():
    report = _report("nextpnr_hx4k_timing_allow_fail.log", board="blackice")
    assert report.error is None
    assert not report.timing_met
    assert report.status == "FAIL"


def test_report_json_round_trip():
    report = _report("nextpnr_up5k_two_clocks.log")
    data = json.loads(report.to_json())
    assert data["status"] == "PASS"
    assert data["resources"]["bram"] == {"used": 2, "available": 30}
    assert data["clocks"]["fast_clk"] == {"fmax_mhz": 87.5, "target_mhz": 24.0, "passed": True}
    assert data["stage_seconds"]["elaborate"] == 0.2
    assert BuildReport.from_json(report.to_json()) == report


def test_report_from_dict_names_a_missing_field():
    data = _report().to_dict()
    del data["content_hash"]
    with pytest.raises(ValueError, match="build report is missing the field 'content_hash'"):
        BuildReport.from_dict(data)


def test_report_markdown():
    text = _report("nextpnr_up5k_two_clocks.log").to_markdown()
    lines = text.splitlines()
    assert lines[0] == "# Build report: icebreaker"
    assert lines[2].startswith("**PASS**: icebreaker (iCE40UP5K-SG48), seed 3")
    assert "| logic cells | 183 | 5280 | 3% |" in lines
    assert "| EBR (4 kbit) | 2 | 30 | 7% |" in lines
    assert "| SPRAM (256 kbit) | 1 | 4 | 25% |" in lines
    assert "| DSP (SB_MAC16) | 1 | 8 | 12% |" in lines
    assert "| `fast_clk` | 87.50 | 24.00 | PASS |" in lines
    assert "| total | 6.2 |" in lines
    assert "| nextpnr-ice40 | nextpnr-0.11.1 |" in lines


def test_report_terminal_table():
    text = _report().table()
    lines = text.splitlines()
    assert lines[0].startswith("PASS  icebreaker (iCE40UP5K-SG48)")
    rows = {line.rsplit(None, 3)[0].strip(): line.split()[-3:] for line in lines[4:9]}
    assert rows["logic cells"] == ["43", "5280", "1%"]
    assert rows["I/O (SB_IO)"] == ["2", "39", "5%"]
    assert any(line.split() == ["cd_sync.clk", "79.74", "12.00", "PASS"] for line in lines)
    assert "bitstream: top.bin (104090 bytes)" in lines
