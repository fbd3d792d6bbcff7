"""Single-port RAM on the iCE40UP5K's 256 kbit SPRAM blocks, with a simulation model.

The UP5K has four ``SB_SPRAM256KA`` blocks of 16384 words x 16 bits beside its thirty 4 kbit block
RAMs: eight times the block RAM in total, but each block has a single port (a read or a write per
cycle), no initial contents (the bitstream cannot preload it) and an undefined output after a
write. :class:`Spram` puts as many blocks side by side (for width) and one above another (for
depth) as a memory needs, and models all of the above when elaborated without a platform.
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["SPRAM_BLOCKS_UP5K", "SPRAM_DEPTH", "SPRAM_WIDTH", "Spram", "spram_blocks"]

SPRAM_WIDTH = 16
SPRAM_DEPTH = 16384
#: SB_SPRAM256KA blocks on an iCE40UP5K.
SPRAM_BLOCKS_UP5K = 4


def spram_blocks(width, depth):
    """Number of ``SB_SPRAM256KA`` blocks a ``width x depth`` memory occupies."""
    return -(-width // SPRAM_WIDTH) * -(-depth // SPRAM_DEPTH)


class Spram(wiring.Component):
    """Single-port synchronous RAM built from ``SB_SPRAM256KA`` blocks.

    A clock edge with ``en`` and not ``we`` reads row ``addr`` into ``rdata``; with ``en`` and
    ``we`` it writes ``wdata`` to row ``addr`` and leaves ``rdata`` undefined (all ones in the
    model, so that a design relying on it fails in simulation); without ``en``, ``rdata`` holds.

    Parameters
    ----------
    width : int
        Bits per row, 1..64.
    depth : int
        Rows, 1..65536; at most four blocks in all.
    init : iterable of int, optional
        Initial contents, honoured by the simulation model only (SPRAM has no bitstream
        initialisation); elaborating with a platform and ``init`` raises ``ValueError``.

    Members
    -------
    addr : ``In(range of depth)``
    wdata : ``In(width)``
    we : ``In(1)``
    en : ``In(1)``
    rdata : ``Out(width)``

    Raises
    ------
    TypeError, ValueError
        A parameter is out of range, or the memory needs more than four blocks.
    """

    def __init__(self, width, depth, *, init=None):
        for name, value, hi in (("width", width, 64), ("depth", depth, 65536)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer in 1..{hi}, not {value!r}")
            if not 1 <= value <= hi:
                raise ValueError(f"{name} must be an integer in 1..{hi}, not {value!r}")
        blocks = spram_blocks(width, depth)
        if blocks > SPRAM_BLOCKS_UP5K:
            raise ValueError(f"width x depth must fit {SPRAM_BLOCKS_UP5K} SB_SPRAM256KA blocks, not "
                             f"{blocks} ({width} x {depth})")
        self.width = width
        self.depth = depth
        self.init = None if init is None else list(init)
        self.blocks = blocks
        super().__init__({
            "addr": In(max(1, ceil_log2(depth))),
            "wdata": In(width),
            "we": In(1),
            "en": In(1),
            "rdata": Out(width),
        })

    def elaborate(self, platform):
        if platform is not None and self.init is not None:
            raise ValueError("init must be None when building for hardware: SB_SPRAM256KA has "
                             "no initial contents")
        m = Module()
        if platform is None:
            self._elaborate_model(m)
        else:
            self._elaborate_blocks(m)
        return m

    def _elaborate_model(self, m):
        m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=self.init or [])
        rp = mem.read_port()
        wp = mem.write_port()
        garbage = Signal()
        m.d.comb += [
            rp.addr.eq(self.addr), rp.en.eq(self.en & ~self.we),
            wp.addr.eq(self.addr), wp.data.eq(self.wdata), wp.en.eq(self.en & self.we),
            self.rdata.eq(Mux(garbage, Const(-1, self.width), rp.data)),
        ]
        with m.If(self.en):
            m.d.sync += garbage.eq(self.we)

    def _elaborate_blocks(self, m):
        n_wide = -(-self.width // SPRAM_WIDTH)
        n_deep = -(-self.depth // SPRAM_DEPTH)
        wdata = Signal(n_wide * SPRAM_WIDTH)
        m.d.comb += wdata.eq(self.wdata)
        low = self.addr[:min(len(self.addr), 14)]
        bank = self.addr[14:] if n_deep > 1 else Const(0, 1)
        bank_q = Signal.like(bank, name="bank_q")
        with m.If(self.en & ~self.we):
            m.d.sync += bank_q.eq(bank)
        rows = []
        for d in range(n_deep):
            outs = []
            for w in range(n_wide):
                dout = Signal(SPRAM_WIDTH, name=f"dout_{d}_{w}")
                m.submodules[f"spram_{d}_{w}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=low,
                    i_DATAIN=wdata[w * SPRAM_WIDTH:(w + 1) * SPRAM_WIDTH],
                    i_MASKWREN=Const(0b1111, 4),
                    i_WREN=self.we,
                    i_CHIPSELECT=self.en & (bank == d),
                    i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=Const(0, 1),
                    i_SLEEP=Const(0, 1),
                    i_POWEROFF=Const(1, 1),
                    o_DATAOUT=dout,
                )
                outs.append(dout)
            row = Signal(n_wide * SPRAM_WIDTH, name=f"row_{d}")
            m.d.comb += row.eq(Cat(*outs))
            rows.append(row)
        out = rows[0]
        for d in range(1, n_deep):
            out = Mux(bank_q == d, rows[d], out)
        m.d.comb += self.rdata.eq(out)
