"""Registry of the iCE40 boards that amaranth-boards defines.

Each board is a frozen :class:`BoardSpec`: its device and package, the resource budget of that
device (as nextpnr counts it), the default clock, the UART pins, the LEDs and the programmer that
amaranth-boards uses for it. The facts are written out here so that listing boards imports
nothing; the tests check every one of them against the amaranth-boards platform classes, and the
budgets against nextpnr's own utilisation report.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = [
    "Budget",
    "UartPins",
    "BoardSpec",
    "DEVICE_BUDGETS",
    "DEFAULT_BOARD",
    "get_board",
    "all_boards",
    "board_names",
    "board_table",
]


@dataclass(frozen=True)
class Budget:
    """Hard resources of one iCE40 device.

    Members
    -------
    logic_cells : int
        Logic cells (one LUT4 + one flip-flop + carry each; ``ICESTORM_LC`` in nextpnr).
    bram : int
        4 kbit embedded block RAMs (EBR, ``SB_RAM40_4K``; ``ICESTORM_RAM`` in nextpnr).
    spram : int
        256 kbit single-port RAMs (``SB_SPRAM256KA``; UltraPlus only).
    dsp : int
        16x16 multiply-accumulate blocks (``SB_MAC16``; UltraPlus only).
    """

    logic_cells: int
    bram: int
    spram: int
    dsp: int

    def as_dict(self) -> Dict[str, int]:
        """Return the budget as ``{"logic_cells": n, "bram": n, "spram": n, "dsp": n}``."""
        return {"logic_cells": self.logic_cells, "bram": self.bram, "spram": self.spram,
                "dsp": self.dsp}


# Figures from nextpnr-ice40's "Device utilisation" table (the place-and-route tool is what
# decides whether a design fits). The HX4K is the HX8K die in a smaller package: nextpnr places
# it with `--hx8k --package tq144:4k` and offers all 7680 cells and 32 EBR, where Lattice's
# datasheet rates the part at 3520 cells and 20 EBR. The LP parts share their HX sibling's die.
DEVICE_BUDGETS: Dict[str, Budget] = {
    "iCE40UP5K": Budget(logic_cells=5280, bram=30, spram=4, dsp=8),
    "iCE40HX8K": Budget(logic_cells=7680, bram=32, spram=0, dsp=0),
    "iCE40LP8K": Budget(logic_cells=7680, bram=32, spram=0, dsp=0),
    "iCE40HX4K": Budget(logic_cells=7680, bram=32, spram=0, dsp=0),
    "iCE40HX1K": Budget(logic_cells=1280, bram=16, spram=0, dsp=0),
    "iCE40LP1K": Budget(logic_cells=1280, bram=16, spram=0, dsp=0),
}

# An FTDI FT2232H bridge runs its UART up to 3 Mbaud with the 12 MHz-derived divisors that a
# small FPGA UART uses; the microcontroller bridges (iCELink, the BlackIce STM32) are only
# specified for the usual rates.
FTDI_MAX_BAUD = 3_000_000
OTHER_MAX_BAUD = 115_200


@dataclass(frozen=True)
class UartPins:
    """Package pins of a board's ``uart`` 0 resource, seen from the FPGA.

    Members
    -------
    rx : str
        Pin the FPGA receives on.
    tx : str
        Pin the FPGA transmits on.
    """

    rx: str
    tx: str


@dataclass(frozen=True)
class BoardSpec:
    """One iCE40 board.

    Members
    -------
    name : str
        Name on the command line, e.g. ``"icebreaker"`` (also the amaranth-boards module name).
    platform_module : str
        Module of amaranth-boards that defines the platform, e.g. ``"amaranth_boards.icebreaker"``.
    platform_name : str
        Name of the platform class in that module, e.g. ``"ICEBreakerPlatform"``.
    device : str
        iCE40 device, e.g. ``"iCE40UP5K"``.
    package : str
        Package, e.g. ``"SG48"``.
    budget : Budget
        Hard resources of the device.
    clock : str
        Name of the default clock resource (``"SB_HFOSC"`` for the internal oscillator).
    clock_hz : float
        Frequency of the default clock in Hz.
    uart : UartPins or None
        Pins of ``uart`` 0, or ``None`` when amaranth-boards defines no UART for the board.
    uart_ftdi : bool
        Whether the UART reaches the host through an FTDI bridge (fast, up to 3 Mbaud).
    leds : int
        Number of ``led`` resources (single LEDs; RGB LEDs are not counted).
    programmer : str or None
        Programmer that amaranth-boards' ``toolchain_program`` runs, e.g. ``"iceprog"``, or
        ``None`` when the board has no on-board programmer.
    programmer_env : str or None
        Environment variable amaranth-boards reads to locate the programmer, or ``None`` when it
        calls a fixed command.
    notes : str
        Anything a user should know about the board.
    """

    name: str
    platform_module: str
    platform_name: str
    device: str
    package: str
    budget: Budget
    clock: str
    clock_hz: float
    uart: Optional[UartPins]
    uart_ftdi: bool
    leds: int
    programmer: Optional[str]
    programmer_env: Optional[str]
    notes: str = ""

    @property
    def platform_class(self) -> type:
        """The amaranth-boards platform class (imported on first use)."""
        module = importlib.import_module(self.platform_module)
        return getattr(module, self.platform_name)

    def platform(self):
        """Return a new instance of the platform (one per build: a platform prepares once)."""
        return self.platform_class()

    @property
    def has_dsp(self) -> bool:
        """Whether the device has ``SB_MAC16`` blocks."""
        return self.budget.dsp > 0

    @property
    def uart_max_baud(self) -> Optional[int]:
        """Highest UART baud rate the host bridge is expected to carry, or ``None``."""
        if self.uart is None:
            return None
        return FTDI_MAX_BAUD if self.uart_ftdi else OTHER_MAX_BAUD

    @property
    def clock_on_pll_pad(self) -> bool:
        """Whether the default clock pin is the PLL's input pad (``SB_PLL40_2_PAD``).

        Otherwise a PLL must take the clock from the global network (``SB_PLL40_CORE``).
        """
        return self.name in PLL_PAD_CLOCKS


def _board(name: str, cls: str, device: str, package: str, clock: str, clock_hz: float,
           uart: Optional[Tuple[str, str]], ftdi: bool, leds: int, programmer: Optional[str],
           programmer_env: Optional[str], notes: str = "") -> BoardSpec:
    return BoardSpec(
        name=name, platform_module=f"amaranth_boards.{name}", platform_name=cls,
        device=device, package=package, budget=DEVICE_BUDGETS[device], clock=clock, clock_hz=clock_hz,
        uart=None if uart is None else UartPins(rx=uart[0], tx=uart[1]), uart_ftdi=ftdi,
        leds=leds, programmer=programmer, programmer_env=programmer_env, notes=notes)


#: Boards whose default clock pin is a PLL input pad, as nextpnr places a ``SB_PLL40_2_PAD`` on it
#: (found by ``bench/probe_pll_pads.py``). Boards clocked from SB_HFOSC have no clock pin.
PLL_PAD_CLOCKS = frozenset({"blackice", "blackice_ii", "ice40_up5k_b_evn", "icebreaker",
                            "icebreaker_bitsy", "icesugar"})

_HFOSC = "default clock is the internal 48 MHz oscillator (SB_HFOSC)"

_BOARDS: Tuple[BoardSpec, ...] = (
    _board("icebreaker", "ICEBreakerPlatform", "iCE40UP5K", "SG48", "clk12", 12e6,
           ("6", "9"), True, 2, "iceprog", "ICEPROG"),
    _board("icebreaker_bitsy", "ICEBreakerBitsyPlatform", "iCE40UP5K", "SG48", "clk12", 12e6,
           None, False, 2, "dfu-util", "DFU_UTIL",
           "USB device port only: the host link needs a USB core in the design"),
    _board("icesugar", "ICESugarPlatform", "iCE40UP5K", "SG48", "clk12", 12e6,
           ("4", "6"), False, 3, "icesprog", None,
           "iCELink bridge: also flashes by copying top.bin onto its USB drive"),
    _board("icesugar_nano", "ICESugarNanoPlatform", "iCE40LP1K", "CM36", "clk12", 12e6,
           ("A3", "B3"), False, 1, "icesprog", "ICESPROG",
           "iCELink bridge: also flashes by copying top.bin onto its USB drive"),
    _board("upduino_v1", "UpduinoV1Platform", "iCE40UP5K", "SG48", "SB_HFOSC", 48e6,
           None, False, 3, None, None,
           "no on-board programmer; " + _HFOSC),
    _board("upduino_v2", "UpduinoV2Platform", "iCE40UP5K", "SG48", "SB_HFOSC", 48e6,
           None, False, 3, "iceprog", "ICEPROG", _HFOSC),
    _board("upduino_v3", "UpduinoV3Platform", "iCE40UP5K", "SG48", "SB_HFOSC", 48e6,
           None, False, 0, "iceprog", "ICEPROG", _HFOSC + "; one RGB LED (rgb_led 0)"),
    _board("fomu_hacker", "FomuHackerPlatform", "iCE40UP5K", "UWG30", "clk48", 48e6,
           None, False, 1, "dfu-util", "DFU_UTIL", "USB device port only"),
    _board("fomu_pvt", "FomuPVTPlatform", "iCE40UP5K", "UWG30", "clk48", 48e6,
           None, False, 1, "dfu-util", "DFU_UTIL", "USB device port only"),
    _board("icestick", "ICEStickPlatform", "iCE40HX1K", "TQ144", "clk12", 12e6,
           ("9", "8"), True, 5, "iceprog", "ICEPROG"),
    _board("ice40_hx1k_blink_evn", "ICE40HX1KBlinkEVNPlatform", "iCE40HX1K", "VQ100",
           "clk3p3", 3.3e6, None, False, 4, "iCEburn", "ICEBURN"),
    _board("ice40_hx8k_b_evn", "ICE40HX8KBEVNPlatform", "iCE40HX8K", "CT256", "clk12", 12e6,
           ("B10", "B12"), True, 8, "iceprog", "ICEPROG"),
    _board("ice40_up5k_b_evn", "ICE40UP5KBEVNPlatform", "iCE40UP5K", "SG48", "clk12", 12e6,
           None, False, 3, "iceprog", "ICEPROG"),
    _board("nandland_go", "NandlandGoPlatform", "iCE40HX1K", "VQ100", "clk25", 25e6,
           ("73", "74"), True, 4, "iceprog", "ICEPROG"),
    _board("blackice", "BlackIcePlatform", "iCE40HX4K", "TQ144", "clk100", 100e6,
           ("88", "85"), False, 4, "cp /dev/ttyACM0", None,
           "HX4K: nextpnr offers the whole HX8K die (datasheet: 3520 cells, 20 EBR)"),
    _board("blackice_ii", "BlackIceIIPlatform", "iCE40HX4K", "TQ144", "clk100", 100e6,
           ("88", "85"), False, 4, "cp /dev/ttyACM0", None,
           "HX4K: nextpnr offers the whole HX8K die (datasheet: 3520 cells, 20 EBR)"),
    _board("tinyfpga_bx", "TinyFPGABXPlatform", "iCE40LP8K", "CM81", "clk16", 16e6,
           None, False, 1, "tinyprog", "TINYPROG", "USB device port only"),
)

_BY_NAME: Dict[str, BoardSpec] = {spec.name: spec for spec in _BOARDS}

DEFAULT_BOARD = "icebreaker"


def board_names() -> Tuple[str, ...]:
    """Return the names of all boards, in registry order."""
    return tuple(_BY_NAME)


def all_boards() -> Tuple[BoardSpec, ...]:
    """Return every board, in registry order (UltraPlus boards first)."""
    return _BOARDS


def get_board(name: str) -> BoardSpec:
    """Look a board up by name.

    Parameters
    ----------
    name : str
        Board name, e.g. ``"icebreaker"``.

    Returns
    -------
    BoardSpec

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If no board has that name; the message lists the known names.
    """
    if not isinstance(name, str):
        raise TypeError(f"board must be a board name (str), not {name!r}")
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise ValueError(f"board must be one of {known}, not {name!r}") from None


def _format_hz(hz: float) -> str:
    mhz = hz / 1e6
    return f"{mhz:g} MHz"


def board_table() -> str:
    """Return a plain-text table of all boards, for ``npuforge boards``.

    Returns
    -------
    str
        One header line, a rule and one line per board: name, device, logic cells, EBR, SPRAM,
        DSP, default clock, UART and programmer.
    """
    header = ("board", "device", "LC", "EBR", "SPRAM", "DSP", "clock", "UART", "programmer")
    rows = []
    for spec in _BOARDS:
        budget = spec.budget
        clock = _format_hz(spec.clock_hz)
        if spec.clock == "SB_HFOSC":
            clock += " (osc)"
        if spec.uart is None:
            uart = "-"
        else:
            uart = f"rx {spec.uart.rx} tx {spec.uart.tx}" + (" FTDI" if spec.uart_ftdi else "")
        rows.append((spec.name, spec.device, str(budget.logic_cells), str(budget.bram),
                     str(budget.spram), str(budget.dsp), clock, uart, spec.programmer or "-"))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    numeric = {2, 3, 4, 5}

    def line(cells):
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
