# amaranth: UnusedElaboratable=no
import random
import re

import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from npuforge.hdl.spram import Spram, spram_blocks


class _Platform:
    """Stand-in for a build platform: :class:`Spram` only checks that one is given."""


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(width=0, depth=16), ValueError, "width must be an integer in 1..64, not 0"),
    (dict(width=16, depth=65537), ValueError, "depth must be an integer in 1..65536, not 65537"),
    (dict(width=16.0, depth=16), TypeError, "width must be an integer in 1..64, not 16.0"),
    (dict(width=48, depth=32768), ValueError,
     "width x depth must fit 4 SB_SPRAM256KA blocks, not 6 (48 x 32768)"),
])
def test_parameters_rejected(kwargs, exc, message):
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        Spram(**kwargs)


def test_block_count():
    assert spram_blocks(16, 16384) == 1
    assert spram_blocks(17, 16384) == 2
    assert spram_blocks(32, 16385) == 4
    assert spram_blocks(4, 100) == 1


def test_model_reads_writes_holds_and_garbles_after_write():
    dut = Spram(12, 64, init=[5, 6, 7])
    rng = random.Random(3)
    shadow = {i: v for i, v in enumerate([5, 6, 7])}

    async def bench(ctx):
        # Initial contents are readable (simulation only).
        for addr in range(3):
            ctx.set(dut.en, 1)
            ctx.set(dut.addr, addr)
            await ctx.tick()
            assert ctx.get(dut.rdata) == shadow[addr]
        # A write leaves the output undefined (all ones in the model).
        ctx.set(dut.we, 1)
        ctx.set(dut.addr, 10)
        ctx.set(dut.wdata, 0x123)
        await ctx.tick()
        shadow[10] = 0x123
        assert ctx.get(dut.rdata) == 0xFFF
        # Without en the output holds, whatever the address, and nothing is written.
        ctx.set(dut.we, 0)
        ctx.set(dut.addr, 10)
        await ctx.tick()
        held = ctx.get(dut.rdata)
        assert held == 0x123
        ctx.set(dut.en, 0)
        ctx.set(dut.we, 1)
        ctx.set(dut.addr, 0)
        ctx.set(dut.wdata, 0xABC)
        for _ in range(3):
            await ctx.tick()
            assert ctx.get(dut.rdata) == held
        ctx.set(dut.we, 0)
        # Random traffic against a dictionary.
        for _ in range(200):
            addr = rng.randrange(64)
            ctx.set(dut.en, 1)
            ctx.set(dut.addr, addr)
            if rng.random() < 0.5:
                value = rng.randrange(4096)
                ctx.set(dut.we, 1)
                ctx.set(dut.wdata, value)
                await ctx.tick()
                shadow[addr] = value
            else:
                ctx.set(dut.we, 0)
                await ctx.tick()
                assert ctx.get(dut.rdata) == shadow.get(addr, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("width,depth,blocks", [(16, 16384, 1), (4, 100, 1), (32, 16384, 2),
                                                (16, 65536, 4), (20, 20000, 4)])
def test_hardware_uses_sb_spram256ka(width, depth, blocks):
    text = rtlil.convert(Spram(width, depth), platform=_Platform(), name="top")
    assert len(re.findall(r"cell \\SB_SPRAM256KA ", text)) == blocks
    # Full-word writes, never powered down or put to sleep.
    assert "connect \\MASKWREN 4'1111" in text
    assert "connect \\POWEROFF 1'1" in text


def test_hardware_refuses_init():
    with pytest.raises(ValueError, match=r"^init must be None when building for hardware"):
        rtlil.convert(Spram(16, 16, init=[1]), platform=_Platform(), name="top")
