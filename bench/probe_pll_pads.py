"""Which boards' clock pins are PLL input pads: place a ``SB_PLL40_2_PAD`` on each with nextpnr.

A board whose clock pin is not the PLL's pad makes nextpnr refuse the pad PLL ("... is not
connected to any PLL BEL"); the board shell then uses ``SB_PLL40_CORE`` from the global clock
network instead (see ``npuforge.boards.top.BoardTop``). The result is the table
``PLL_PAD_CLOCKS`` in ``boards/registry.py``.

Usage: ``python bench/probe_pll_pads.py [--out build/pll-probe]``
"""

import argparse
import json
from pathlib import Path

from amaranth.hdl import ClockDomain, Elaboratable, Instance, Module, Signal

from npuforge.boards.build import BuildError, build
from npuforge.boards.registry import all_boards
from npuforge.boards.top import pll_parameters


class PadPllProbe(Elaboratable):
    """The board clock pin into ``SB_PLL40_2_PAD``, a counter on the PLL clock driving LED 0."""

    def __init__(self, clock_hz):
        for target in (24e6, 30e6, 36e6, 48e6):
            try:
                self.pll = pll_parameters(clock_hz, target)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"no PLL setting for a {clock_hz / 1e6:g} MHz board clock")

    def elaborate(self, platform):
        m = Module()
        m.domains.fast = cd = ClockDomain("fast", reset_less=True)
        clk = platform.request(platform.default_clk, dir="-")
        m.submodules.pll = Instance(
            "SB_PLL40_2_PAD", p_FEEDBACK_PATH="SIMPLE", p_DIVR=self.pll["divr"],
            p_DIVF=self.pll["divf"], p_DIVQ=self.pll["divq"],
            p_FILTER_RANGE=self.pll["filter_range"], i_PACKAGEPIN=clk.io, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBALB=cd.clk)
        count = Signal(24)
        m.d.fast += count.eq(count + 1)
        led = platform.request("led", 0, dir="o")
        m.d.comb += led.o.eq(count[-1])
        return m


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/pll-probe")
    args = parser.parse_args(argv)
    results = {}
    for spec in all_boards():
        if spec.clock == "SB_HFOSC":
            results[spec.name] = "no clock pin"
            continue
        try:
            probe = PadPllProbe(spec.clock_hz)
        except ValueError as exc:
            results[spec.name] = f"no PLL: {exc}"
        else:
            try:
                build(probe, spec, Path(args.out) / spec.name,
                      allow_timing_fail=True)
                results[spec.name] = "pad"
            except BuildError as exc:
                text = str(exc)
                results[spec.name] = "core" if "PLL BEL" in text else f"error: {text[:120]}"
        print(f"{spec.name:24s} {results[spec.name]}", flush=True)
    print(json.dumps(sorted(k for k, v in results.items() if v == "pad")))


if __name__ == "__main__":
    main()
