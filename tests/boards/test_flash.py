"""Flashing with stand-in programmers: no real board is attached to a test machine."""

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from npuforge.boards.flash import FlashError, flash, flash_command, programmer_executable
from npuforge.boards.registry import all_boards, get_board

# The package may re-export the function `flash` under the module's name: fetch the module itself.
flash_module = importlib.import_module("npuforge.boards.flash")

WITH_PROGRAMMER = [spec.name for spec in all_boards()
                   if spec.programmer is not None and spec.programmer != "cp /dev/ttyACM0"]

BITSTREAM = b"\xff\x00\x00\xff\x7e\xaa\x99\x7e stand-in bitstream"


@pytest.fixture
def build_dir(tmp_path):
    path = tmp_path / "build"
    path.mkdir()
    (path / "top.bin").write_bytes(BITSTREAM)
    return path


def fake_programmer(directory: Path, name: str, *, exit_code=0, message=""):
    """A programmer that records its arguments and the bitstream it was given."""
    directory.mkdir(parents=True, exist_ok=True)
    record = directory / f"{name}.json"
    script = directory / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "data = open(sys.argv[-1], 'rb').read().hex()\n"
        f"json.dump({{'argv': sys.argv, 'data': data}}, open({str(record)!r}, 'w'))\n"
        f"print({message!r}, file=sys.stderr)\n"
        f"sys.exit({exit_code})\n")
    script.chmod(0o755)
    return script, record


@pytest.fixture
def no_programmer_variables(monkeypatch):
    for variable in ("ICEPROG", "DFU_UTIL", "TINYPROG", "ICESPROG", "ICEBURN"):
        monkeypatch.delenv(variable, raising=False)


def test_missing_bitstream(tmp_path):
    with pytest.raises(FlashError, match=re.escape(
            f"no bitstream at {tmp_path / 'top.bin'}: build it first "
            f"(npuforge build --board icebreaker)")):
        flash("icebreaker", tmp_path)


def test_board_without_programmer(build_dir):
    with pytest.raises(FlashError, match=re.escape(
            f"upduino_v1 has no on-board programmer: write {build_dir / 'top.bin'} to the "
            "board's SPI flash with an external programmer")):
        flash("upduino_v1", build_dir)


def test_missing_programmer_says_how_to_install_and_flash_by_hand(
        build_dir, tmp_path, monkeypatch, no_programmer_variables):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    bitstream = build_dir / "top.bin"
    with pytest.raises(FlashError) as info:
        flash("icebreaker", build_dir)
    assert str(info.value) == (
        "cannot flash icebreaker: programmer 'iceprog' not found; install it: `apt-get install "
        "fpga-icestorm` (Debian/Ubuntu) or any IceStorm build, or set ICEPROG to its path. "
        f"Then flash by hand: iceprog {bitstream}")
    assert info.value.bitstream == bitstream
    with pytest.raises(FlashError, match=re.escape(
            "programmer 'tinyprog' not found; install it: `pip install tinyprog`, or set TINYPROG "
            f"to its path. Then flash by hand: tinyprog -p {bitstream}")):
        flash("tinyfpga_bx", build_dir)
    # amaranth-boards runs a fixed `icesprog` for the iCESugar: there is no variable to set.
    with pytest.raises(FlashError, match=re.escape(
            "or copy top.bin onto the iCELink USB drive the board shows. Then flash by hand: "
            f"icesprog {bitstream}")):
        flash("icesugar", build_dir)


def test_missing_programmer_named_by_its_variable(build_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DFU_UTIL", str(tmp_path / "nowhere" / "dfu-util"))
    with pytest.raises(FlashError, match=re.escape(
            f"cannot flash fomu_pvt: programmer '{tmp_path / 'nowhere' / 'dfu-util'}' not found")):
        flash("fomu_pvt", build_dir)


@pytest.mark.parametrize("name", WITH_PROGRAMMER)
def test_programmer_gets_the_bitstream_as_amaranth_boards_calls_it(
        name, build_dir, tmp_path, monkeypatch, no_programmer_variables):
    spec = get_board(name)
    executable = programmer_executable(spec)
    bin_dir = tmp_path / "bin"
    _script, record = fake_programmer(bin_dir, executable)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert flash(name, build_dir) == build_dir / "top.bin"
    called = json.loads(record.read_text())
    assert bytes.fromhex(called["data"]) == BITSTREAM
    argv = called["argv"]
    assert Path(argv[0]).name == executable
    # flash_command (shown to users for flashing by hand) matches what amaranth-boards runs.
    expected = flash_command(spec, "BITSTREAM")
    assert argv[1:-1] == expected[1:-1] and expected[-1] == "BITSTREAM"


def test_programmer_variable_is_honoured(build_dir, tmp_path, monkeypatch):
    script, record = fake_programmer(tmp_path / "tools", "my-iceprog")
    monkeypatch.setenv("ICEPROG", str(script))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    flash("ice40_hx8k_b_evn", build_dir)
    argv = json.loads(record.read_text())["argv"]
    assert argv[0] == str(script) and argv[1] == "-S"
    assert flash_command("ice40_hx8k_b_evn", "x.bin") == [str(script), "-S", "x.bin"]


def test_programmer_failure_means_no_board(build_dir, tmp_path, monkeypatch,
                                           no_programmer_variables):
    bin_dir = tmp_path / "bin"
    fake_programmer(bin_dir, "iceprog", exit_code=2, message="Can't find iCE FTDI USB device")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(FlashError) as info:
        flash("icestick", build_dir)
    assert str(info.value) == (
        "iceprog failed with exit code 2 while flashing icestick: is the board attached, and may "
        "this user open it (USB permissions, udev rules)? See the programmer's output above; to "
        f"retry by hand: iceprog {build_dir / 'top.bin'}")


def test_serial_copy_board_needs_its_port(build_dir, tmp_path, monkeypatch):
    port = tmp_path / "ttyACM0"
    monkeypatch.setattr(flash_module, "_SERIAL_PORT", port)
    with pytest.raises(FlashError, match=re.escape(
            f"cannot flash blackice: no board attached at {port}; connect it and run: "
            f"cp {build_dir / 'top.bin'} {port}")):
        flash("blackice", build_dir)


def test_serial_copy_board_uses_amaranth_boards_command(build_dir, tmp_path, monkeypatch):
    port = tmp_path / "ttyACM0"
    port.write_bytes(b"")
    monkeypatch.setattr(flash_module, "_SERIAL_PORT", port)
    calls = []
    # The platform copies to the real /dev/ttyACM0: record the command instead of running it.
    monkeypatch.setattr(subprocess, "check_call", lambda argv: calls.append(argv))
    flash("blackice_ii", build_dir)
    (argv,) = calls
    assert argv[0] == "cp" and argv[2] == "/dev/ttyACM0"
    assert Path(argv[1]).suffix == ".bin"
