"""Load a built bitstream onto a board with the programmer amaranth-boards names for it.

:func:`flash` checks what can be checked before touching hardware (the bitstream exists, the
board has a programmer, the programmer is installed) and then calls the platform's own
``toolchain_program``, so that the command line (``iceprog``, ``iceprog -S``, ``dfu-util -D``,
``tinyprog -p``, ...) is exactly the one amaranth-boards uses. Every failure becomes a
:class:`FlashError` that says which tool, how to install it, and how to flash ``top.bin`` by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

from amaranth.build.run import LocalBuildProducts

from .registry import BoardSpec, get_board

__all__ = ["FlashError", "Programmer", "PROGRAMMERS", "flash", "flash_command",
           "programmer_executable"]

_NAME = "top"


class FlashError(RuntimeError):
    """The bitstream could not be loaded onto the board.

    Members
    -------
    bitstream : pathlib.Path or None
        The bitstream that was to be flashed.
    """

    def __init__(self, message: str, *, bitstream: Optional[Path] = None):
        super().__init__(message)
        self.bitstream = bitstream


@dataclass(frozen=True)
class Programmer:
    """A programming tool.

    Members
    -------
    executable : str
        Command amaranth-boards runs when its variable is unset.
    install : str
        How to install it.
    """

    executable: str
    install: str


PROGRAMMERS: Dict[str, Programmer] = {
    "iceprog": Programmer(
        "iceprog", "`apt-get install fpga-icestorm` (Debian/Ubuntu) or any IceStorm build"),
    "dfu-util": Programmer("dfu-util", "`apt-get install dfu-util`"),
    "tinyprog": Programmer("tinyprog", "`pip install tinyprog`"),
    "icesprog": Programmer(
        "icesprog", "build icesprog from the iCESugar repository's tools folder; or copy "
                    "top.bin onto the iCELink USB drive the board shows"),
    "iCEburn": Programmer("iCEburn", "`pip install iceburn`"),
    "cp /dev/ttyACM0": Programmer(
        "cp", "nothing to install: the board loads a bitstream copied to its serial port"),
}

# Arguments amaranth-boards passes before the bitstream (the test suite checks these against
# the platforms' toolchain_program).
_ARGS: Dict[str, List[str]] = {
    "ice40_hx8k_b_evn": ["-S"],
    "icebreaker_bitsy": ["-d", ",1d50:6146", "-a", "0", "-R", "-D"],
    "fomu_hacker": ["-D"],
    "fomu_pvt": ["-D"],
    "tinyfpga_bx": ["-p"],
    "ice40_hx1k_blink_evn": ["-evw"],
}

_SERIAL_PORT = Path("/dev/ttyACM0")


def programmer_executable(board: Union[str, BoardSpec]) -> Optional[str]:
    """Return the programmer command for ``board`` (honouring its variable, e.g. ``ICEPROG``).

    Returns ``None`` for a board without an on-board programmer.
    """
    spec = board if isinstance(board, BoardSpec) else get_board(board)
    if spec.programmer is None:
        return None
    default = PROGRAMMERS[spec.programmer].executable
    if spec.programmer_env:
        return os.environ.get(spec.programmer_env, default)
    return default


def flash_command(board: Union[str, BoardSpec], bitstream: Union[str, os.PathLike]) -> List[str]:
    """Return the command line that loads ``bitstream`` onto ``board``, for doing it by hand.

    Raises
    ------
    FlashError
        If the board has no on-board programmer.
    """
    spec = board if isinstance(board, BoardSpec) else get_board(board)
    executable = programmer_executable(spec)
    if executable is None:
        raise FlashError(f"{spec.name} has no on-board programmer", bitstream=Path(bitstream))
    if spec.programmer == "cp /dev/ttyACM0":
        return [executable, str(bitstream), str(_SERIAL_PORT)]
    return [executable, *_ARGS.get(spec.name, []), str(bitstream)]


def flash(board: Union[str, BoardSpec], build_dir: Union[str, os.PathLike]) -> Path:
    """Flash ``build_dir/top.bin`` onto ``board``.

    Parameters
    ----------
    board : str or BoardSpec
        The board.
    build_dir : path
        Build directory holding ``top.bin`` (see :func:`~npuforge.boards.build.build`).

    Returns
    -------
    pathlib.Path
        The bitstream that was flashed.

    Raises
    ------
    FlashError
        If there is no bitstream, the board has no programmer, the programmer is not installed,
        or it fails (usually: no board attached, or no permission to open it). The message names
        the tool, how to install it and the bitstream path.
    """
    spec = board if isinstance(board, BoardSpec) else get_board(board)
    bitstream = Path(build_dir) / f"{_NAME}.bin"
    if not bitstream.is_file():
        raise FlashError(f"no bitstream at {bitstream}: build it first "
                         f"(npuforge build --board {spec.name})", bitstream=bitstream)
    if spec.programmer is None:
        raise FlashError(f"{spec.name} has no on-board programmer: write {bitstream} to the "
                         f"board's SPI flash with an external programmer (e.g. iceprog through an "
                         f"FTDI adapter)", bitstream=bitstream)
    programmer = PROGRAMMERS[spec.programmer]
    executable = programmer_executable(spec)
    by_hand = " ".join(flash_command(spec, bitstream))
    if shutil.which(executable) is None:
        variable = f", or set {spec.programmer_env} to its path" if spec.programmer_env else ""
        raise FlashError(f"cannot flash {spec.name}: programmer {executable!r} not found; install "
                         f"it: {programmer.install}{variable}. Then flash by hand: {by_hand}",
                         bitstream=bitstream)
    if spec.programmer == "cp /dev/ttyACM0" and not _SERIAL_PORT.exists():
        # Without this check `cp` would create a plain file in /dev and report success.
        raise FlashError(f"cannot flash {spec.name}: no board attached at {_SERIAL_PORT}; "
                         f"connect it and run: {by_hand}", bitstream=bitstream)
    platform = spec.platform()
    try:
        platform.toolchain_program(LocalBuildProducts(str(Path(build_dir))), _NAME)
    except subprocess.CalledProcessError as error:
        raise FlashError(f"{executable} failed with exit code {error.returncode} while flashing "
                         f"{spec.name}: is the board attached, and may this user open it (USB "
                         f"permissions, udev rules)? See the programmer's output above; to retry "
                         f"by hand: {by_hand}", bitstream=bitstream) from None
    except OSError as error:
        raise FlashError(f"cannot run {executable} to flash {spec.name}: {error}; install it: "
                         f"{programmer.install}. Then flash by hand: {by_hand}",
                         bitstream=bitstream) from None
    return bitstream
