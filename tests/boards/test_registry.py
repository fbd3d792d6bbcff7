import dataclasses
import importlib
import pkgutil
import re

import amaranth_boards
import pytest
from amaranth.build.plat import Platform
from amaranth.vendor import SiliconBluePlatform

from npuforge.boards.registry import (
    DEFAULT_BOARD,
    DEVICE_BUDGETS,
    Budget,
    all_boards,
    board_names,
    board_table,
    get_board,
)

BOARD_NAMES = [spec.name for spec in all_boards()]


def _ice40_platform_modules():
    """Every amaranth-boards module that defines an iCE40 platform class."""
    found = {}
    for info in pkgutil.iter_modules(amaranth_boards.__path__):
        if info.ispkg:
            continue
        module = importlib.import_module(f"amaranth_boards.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, SiliconBluePlatform)
                    and value.__module__ == module.__name__):
                found[info.name] = value.__name__
    return found


def test_registry_covers_every_ice40_board_of_amaranth_boards():
    found = _ice40_platform_modules()
    assert set(found) == set(board_names())
    for spec in all_boards():
        assert spec.platform_name == found[spec.name]


def test_names_are_unique_and_default_is_known():
    assert len(set(BOARD_NAMES)) == len(BOARD_NAMES) == 17
    assert DEFAULT_BOARD == "icebreaker"
    assert get_board(DEFAULT_BOARD).name == DEFAULT_BOARD


def test_unknown_board_lists_the_known_names():
    known = ", ".join(sorted(BOARD_NAMES))
    with pytest.raises(ValueError, match=re.escape(f"board must be one of {known}, not 'icebraker'")):
        get_board("icebraker")


def test_board_name_must_be_a_string():
    with pytest.raises(TypeError, match=r"board must be a board name \(str\), not 5"):
        get_board(5)


@pytest.mark.parametrize("name", BOARD_NAMES)
def test_spec_matches_the_amaranth_boards_platform(name):
    spec = get_board(name)
    platform_class = spec.platform_class
    platform = spec.platform()
    assert isinstance(platform, platform_class)
    assert spec.device == platform.device
    assert spec.package == platform.package
    assert spec.clock == platform.default_clk
    assert spec.clock_hz == platform.default_clk_frequency
    assert spec.budget == DEVICE_BUDGETS[platform.device]
    leds = sum(1 for (resource, _number) in platform.resources if resource == "led")
    assert spec.leds == leds
    if ("uart", 0) in platform.resources:
        uart = platform.lookup("uart", 0)
        pins = {sub.name: sub.ios[0].names for sub in uart.ios}
        assert spec.uart is not None
        assert [spec.uart.rx] == pins["rx"]
        assert [spec.uart.tx] == pins["tx"]
    else:
        assert spec.uart is None
        assert spec.uart_ftdi is False
    # A board without its own toolchain_program cannot be flashed by amaranth-boards.
    has_programmer = platform_class.toolchain_program is not Platform.toolchain_program
    assert (spec.programmer is not None) == has_programmer


def test_device_budgets():
    # Figures from nextpnr-ice40's utilisation table (checked by the slow builds in
    # test_build.py); the UltraPlus alone has SPRAM and DSP blocks.
    assert DEVICE_BUDGETS["iCE40UP5K"] == Budget(5280, 30, 4, 8)
    assert DEVICE_BUDGETS["iCE40HX8K"] == Budget(7680, 32, 0, 0)
    assert DEVICE_BUDGETS["iCE40LP8K"] == Budget(7680, 32, 0, 0)
    assert DEVICE_BUDGETS["iCE40HX4K"] == Budget(7680, 32, 0, 0)
    assert DEVICE_BUDGETS["iCE40HX1K"] == Budget(1280, 16, 0, 0)
    assert DEVICE_BUDGETS["iCE40LP1K"] == Budget(1280, 16, 0, 0)
    assert Budget(5280, 30, 4, 8).as_dict() == {"logic_cells": 5280, "bram": 30, "spram": 4,
                                                "dsp": 8}


def test_uart_baud_limits_follow_the_bridge():
    assert get_board("icebreaker").uart_max_baud == 3_000_000   # FT2232H
    assert get_board("icestick").uart_max_baud == 3_000_000
    assert get_board("icesugar").uart_max_baud == 115_200       # iCELink microcontroller
    assert get_board("tinyfpga_bx").uart_max_baud is None       # no UART resource


def test_dsp_only_on_ultraplus():
    for spec in all_boards():
        assert spec.has_dsp == (spec.device == "iCE40UP5K")


def test_spec_is_frozen():
    spec = get_board("icebreaker")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.device = "iCE40HX1K"


def test_board_table_has_one_row_per_board():
    lines = board_table().splitlines()
    assert lines[0].split() == ["board", "device", "LC", "EBR", "SPRAM", "DSP", "clock", "UART",
                                "programmer"]
    assert set(lines[1]) == {"-", " "}
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == BOARD_NAMES
    assert rows["icestick"] == ["icestick", "iCE40HX1K", "1280", "16", "0", "0", "12", "MHz",
                                "rx", "9", "tx", "8", "FTDI", "iceprog"]
    assert rows["upduino_v1"] == ["upduino_v1", "iCE40UP5K", "5280", "30", "4", "8", "48", "MHz",
                                  "(osc)", "-", "-"]
    assert rows["ice40_hx1k_blink_evn"][6:8] == ["3.3", "MHz"]
