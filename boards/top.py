"""Top level for a real board: the platform's clock and reset, UART pins, LEDs, and a shell."""

from amaranth.hdl import Elaboratable, Module, Signal

from ..generators.mac_array import MacArrayConfig
from ..hdl.uart import divisor_for
from .registry import BoardSpec, get_board
from .shell import MacArrayShell, config_hash, info_payload

__all__ = ["SHELL_RESOURCES", "BoardTop", "NoUart", "shell_resources"]

#: What the shell around a design costs (UART, frame receiver and transmitter, dispatcher),
#: measured on the UP5K and rounded up; added to a generator's estimate before a build.
SHELL_RESOURCES = {"logic_cells": 900, "bram": 1, "spram": 0, "dsp": 0}


class NoUart(ValueError):
    """The board has no UART for the host link."""


def shell_resources(config):
    """Pre-synthesis estimate of a complete shell design (generator plus shell)."""
    est = config.estimate_resources()
    return {key: est.get(key, 0) + SHELL_RESOURCES[key] for key in SHELL_RESOURCES}


class BoardTop(Elaboratable):
    """A MAC-array shell on a board.

    The ``sync`` domain is left to the platform, which drives it from the board's default clock
    and adds a power-on reset long enough for iCE40 block RAM to become readable.

    Parameters
    ----------
    config : MacArrayConfig
    board : str or BoardSpec
    baud : int
        UART bit rate (115200 by default; FTDI boards take up to 3 Mbaud).
    content_hash : str, optional
        The design's content hash for INFO (hex); defaults to the configuration's hash.

    Raises
    ------
    NoUart
        If the board has no UART.
    ValueError
        If the baud rate cannot be made from the board clock within 2 %, or exceeds what the
        board's USB-serial bridge carries.
    """

    def __init__(self, config, board, *, baud=115200, content_hash=None):
        if not isinstance(config, MacArrayConfig):
            raise TypeError(f"config must be a MacArrayConfig, not {config!r}")
        spec = board if isinstance(board, BoardSpec) else get_board(board)
        if spec.uart is None:
            raise NoUart(f"board {spec.name} has no UART in amaranth-boards; the host link needs one "
                         f"(boards with one: see 'npuforge boards')")
        if baud > spec.uart_max_baud:
            raise ValueError(f"baud must be at most {spec.uart_max_baud} on {spec.name}, not {baud}")
        self.divisor = divisor_for(spec.clock_hz, baud)
        self.config = config
        self.board = spec
        self.baud = baud
        self.content_hash = content_hash or config_hash(config)

    def elaborate(self, platform):
        m = Module()
        info = info_payload(self.config, self.content_hash, self.board.clock_hz, self.baud)
        m.submodules.shell = shell = MacArrayShell(self.config, info=info, divisor=self.divisor)
        uart = platform.request("uart", 0)
        m.d.comb += [shell.rx.eq(uart.rx.i), uart.tx.o.eq(shell.tx)]
        # LED 0 blinks at about 1.5 Hz (the bitstream runs), the others show the shell's status.
        heartbeat = Signal(range(int(self.board.clock_hz) // 3 + 1))
        beat = Signal()
        with m.If(heartbeat == 0):
            m.d.sync += [heartbeat.eq(int(self.board.clock_hz) // 3), beat.eq(~beat)]
        with m.Else():
            m.d.sync += heartbeat.eq(heartbeat - 1)
        status = [beat, shell.leds[0] | shell.leds[1], shell.leds[2]]
        for i in range(min(self.board.leds, len(status))):
            led = platform.request("led", i)
            m.d.comb += led.o.eq(status[i])
        return m
