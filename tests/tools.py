"""Shared test helpers for external tools (Icarus Verilog, Verilator).

A test that needs a tool calls :func:`require_tool`. On a machine without it the test is skipped
with a reason saying what to install; when the environment variable ``NPUFORGE_REQUIRE_TOOLS=1``
is set (CI sets it) the test fails instead, so that a missing tool cannot silently turn the
Verilog checks off.
"""

import os
import shutil
import subprocess

import pytest

__all__ = ["require_tool", "run_tool", "tools_required"]

_INSTALL_HINTS = {
    "iverilog": "Icarus Verilog (apt install iverilog)",
    "vvp": "Icarus Verilog (apt install iverilog)",
    "verilator": "Verilator 5 (apt install verilator)",
}


def tools_required():
    """True when ``NPUFORGE_REQUIRE_TOOLS=1``: missing tools fail tests instead of skipping them."""
    return os.environ.get("NPUFORGE_REQUIRE_TOOLS", "") == "1"


def require_tool(name):
    """Return the path of the program ``name``, or skip (fail under CI) the calling test.

    Parameters
    ----------
    name : str
        Program name looked up on ``PATH``.

    Returns
    -------
    str
        Absolute path of the program.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    what = _INSTALL_HINTS.get(name, name)
    if tools_required():
        pytest.fail(f"{name} not found on PATH, and NPUFORGE_REQUIRE_TOOLS=1 requires it: install {what}")
    pytest.skip(f"{name} not found on PATH: install {what} to run this test")


def run_tool(args, *, cwd, timeout=120):
    """Run a tool, returning the completed process (stdout and stderr as text, never raising on failure)."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
