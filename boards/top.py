"""Top level for a real board: the platform's clock and reset, UART pins, LEDs, and a shell."""

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from ..generators.mac_array import MacArrayConfig
from ..hdl._params import reject
from ..hdl.uart import divisor_for
from .registry import BoardSpec, get_board
from .shell import MacArrayShell, config_hash, info_payload

__all__ = ["SHELL_RESOURCES", "SPLIT_RESOURCES", "BoardTop", "NoUart", "board_link", "connect_pins",
           "fill_config", "pll_parameters", "shell_resources", "synth_options"]

#: What the shell around a design costs (UART, frame receiver and transmitter, dispatcher,
#: heartbeat), measured on the UP5K (about 1300 LUT4s) and rounded up; added to a generator's
#: estimate before a build.
SHELL_RESOURCES = {"logic_cells": 1050, "bram": 1, "spram": 0, "dsp": 0}


class NoUart(ValueError):
    """The board has no UART for the host link."""


def board_link(component, board, baud):
    """Check that ``board`` can carry the host link at ``baud``; return ``(spec, divisor)``.

    Errors are raised for ``component`` (an elaboratable being constructed, silenced so that a
    refused top does not warn about never being used).
    """
    try:
        spec = board if isinstance(board, BoardSpec) else get_board(board)
    except ValueError as exc:
        raise reject(component, exc) from None
    if spec.uart is None:
        raise reject(component, NoUart(f"board {spec.name} has no UART in amaranth-boards; the host "
                                       f"link needs one (boards with one: see 'npuforge boards')"))
    if baud > spec.uart_max_baud:
        raise reject(component, ValueError(f"baud must be at most {spec.uart_max_baud} on "
                                           f"{spec.name}, not {baud}"))
    try:
        return spec, divisor_for(spec.clock_hz, baud)
    except ValueError as exc:
        raise reject(component, exc) from None


def connect_pins(m, platform, shell, spec):
    """Wire a shell's ``rx``/``tx`` to the board's UART and its ``leds`` to the board's LEDs.

    LED 0 blinks at about 1.5 Hz (the bitstream runs), LED 1 shows a command or a computation,
    LED 2 an error frame.
    """
    # Raw ports for every line of the resource (some boards also route RTS/CTS/DTR...).
    lines = [sub.name for sub in platform.lookup("uart", 0).ios if hasattr(sub, "name")]
    uart = platform.request("uart", 0, dir={name: "-" for name in lines})
    m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
    m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
    m.d.comb += [shell.rx.eq(rx_buf.i), tx_buf.o.eq(shell.tx)]
    # Two short counters instead of one long one: a 10-bit prescaler whose registered wrap steps
    # the beat counter, so neither carry chain limits the shell clock.
    prescale = Signal(10)
    tick = Signal()
    m.d.sync += [prescale.eq(prescale + 1), tick.eq(prescale == (1 << 10) - 1)]
    heartbeat = Signal(range(max(1, int(spec.clock_hz) // 3 >> 10) + 1))
    beat = Signal()
    with m.If(tick):
        with m.If(heartbeat == 0):
            m.d.sync += [heartbeat.eq(max(1, int(spec.clock_hz) // 3 >> 10)), beat.eq(~beat)]
        with m.Else():
            m.d.sync += heartbeat.eq(heartbeat - 1)
    status = [beat, shell.leds[0] | shell.leds[1], shell.leds[2]]
    for i in range(min(spec.leds, len(status))):
        led = platform.request("led", i, dir="-")
        m.submodules[f"led_buf_{i}"] = buf = io.Buffer("o", led)
        m.d.comb += buf.o.eq(status[i])


def synth_options(config, board):
    """Yosys ``synth_ice40`` options for a MAC-array design on ``board``.

    Yosys' ``-dsp`` (its ice40_dsp pass) also rewrites hand-instantiated SB_MAC16 blocks, dropping
    their dual 8x8 mode and registers. Only a design whose multiplies Yosys must map itself
    (``multiplier="infer"``) asks for it; the others have no ``*`` left to map.
    """
    spec = board if isinstance(board, BoardSpec) else get_board(board)
    return "-dsp" if config.multiplier == "infer" and spec.has_dsp else ""


#: What running the array core on the PLL adds (`SplitMacArray`'s two asynchronous FIFOs and
#: their synchronizers; measured with Yosys on a 2x2 array: 77 LUTs, 92 flip-flops, 3 EBR).
SPLIT_RESOURCES = {"logic_cells": 100, "bram": 3}


def shell_resources(config, *, split=False):
    """Pre-synthesis estimate of a complete shell design (generator plus shell).

    ``split``: the array core runs in its own PLL clock domain (``BoardTop(array_clock_hz=...)``).
    """
    est = config.estimate_resources()
    extra = SPLIT_RESOURCES if split else {}
    return {key: est.get(key, 0) + SHELL_RESOURCES[key] + extra.get(key, 0) for key in SHELL_RESOURCES}


def pll_parameters(f_in, f_out):
    """iCE40 PLL divider settings (simple feedback) for the output closest to ``f_out``.

    ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)`` with the phase detector at 10..133 MHz and
    the VCO at 533..1066 MHz (iCE40 sysCLOCK PLL guide).

    Returns
    -------
    dict
        ``divr``, ``divf``, ``divq``, ``filter_range`` and the achieved ``f_out``.

    Raises
    ------
    ValueError
        If ``f_out`` is outside 16..275 MHz or cannot be reached within 1 %.
    """
    if not 16e6 <= f_out <= 275e6:
        raise ValueError(f"array clock must be in 16..275 MHz (iCE40 PLL), not {f_out / 1e6:g} MHz")
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                got = f_vco / 2 ** divq
                if best is None or abs(got - f_out) < abs(best[3] - f_out):
                    best = (divr, divf, divq, got, f_pfd)
    if best is None or abs(best[3] - f_out) > 0.01 * f_out:
        raise ValueError(f"array clock {f_out / 1e6:g} MHz cannot be made from {f_in / 1e6:g} MHz")
    divr, divf, divq, got, f_pfd = best
    # Loop filter setting by phase-detector frequency (icepll's table).
    bounds = [17e6, 26e6, 44e6, 66e6, 101e6]
    filter_range = 1 + sum(f_pfd >= b for b in bounds)
    return {"divr": divr, "divf": divf, "divq": divq, "filter_range": filter_range, "f_out": got}


def fill_config(board, base=None, *, headroom=0.92, split=False):
    """The biggest array (most MACs per cycle) whose shell design fits ``board`` by the estimate.

    PEs go to the board's DSP blocks first (two int8 PEs per SB_MAC16 in dual 8x8 mode), then to
    logic cells, as carry-chain multipliers (``lut_multiplier="carry"``, at least three pipeline
    stages) unless ``base`` asks for operand gating, which they do not offer; results are
    requantized by the bit-serial unit (``requant_radix=0``: a board's UART is slower still).
    Shapes at most twice as long as wide; among the same MACs per cycle the squarest wins.
    Every other parameter comes from ``base``. ``headroom`` keeps a margin of logic cells for
    placement and timing (the estimate is within about 10 % of nextpnr's count); ``split`` counts
    the clock-domain crossing of an array core on the PLL.

    Returns
    -------
    MacArrayConfig

    Raises
    ------
    ValueError
        If not even a 1x1 array fits.
    """
    from dataclasses import replace

    spec = board if isinstance(board, BoardSpec) else get_board(board)
    base = base or MacArrayConfig()
    compact = {"requant_radix": 0}
    if not base.operand_gating:
        compact.update(lut_multiplier="carry", mul_latency=max(3, base.mul_latency))
    base = replace(base, **compact)
    budget = spec.budget.as_dict()
    best = None
    for rows in range(1, 17):
        for cols in range(1, 17):
            pes = rows * cols
            if max(rows, cols) > 2 * max(1, min(rows, cols)):
                # Arrays at most twice as long as wide: they tile matrices of any shape with
                # little waste, and their operand lines stay short.
                continue
            per_dsp = 2 if base.in_bits <= 8 and base.w_bits <= 8 else 1
            blocks = min(budget["dsp"], -(-pes // per_dsp))
            if blocks == 0:
                alloc = {"multiplier": "lut", "dsp_blocks": None}
            elif blocks * per_dsp >= pes:
                alloc = {"multiplier": "dsp", "dsp_blocks": None}
            else:
                alloc = {"multiplier": "mixed", "dsp_blocks": blocks}
            cand = None
            # 16x16 DSP PEs offer two pipeline stages, not the carry PEs' three.
            for latency in dict.fromkeys((base.mul_latency, 2)):
                try:
                    cand = replace(base, rows=rows, cols=cols, mul_latency=latency, **alloc)
                    break
                except ValueError:
                    continue
            if cand is None:
                continue
            need = shell_resources(cand, split=split)
            if need["logic_cells"] > headroom * budget["logic_cells"] or any(
                    need[k] > budget[k] for k in ("bram", "spram", "dsp")):
                continue
            key = (pes, -abs(rows - cols))
            if best is None or key > best[0]:
                best = (key, cand)
    if best is None:
        raise ValueError(f"no MAC array fits {spec.name} ({spec.device}) inside the board shell")
    return best[1]


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
    array_clock_hz : float, optional
        Run the array core from the PLL at this frequency (the shell stays on the board clock;
        operands and results cross in asynchronous FIFOs). ``None``: everything on the board clock.

    Raises
    ------
    NoUart
        If the board has no UART.
    ValueError
        If the baud rate cannot be made from the board clock within 2 %, or exceeds what the
        board's USB-serial bridge carries.
    """

    def __init__(self, config, board, *, baud=115200, content_hash=None, array_clock_hz=None):
        if not isinstance(config, MacArrayConfig):
            raise reject(self, TypeError(f"config must be a MacArrayConfig, not {config!r}"))
        spec, self.divisor = board_link(self, board, baud)
        self.config = config
        self.board = spec
        self.baud = baud
        self.content_hash = content_hash or config_hash(config)
        self.synth_opts = synth_options(config, spec)
        self.pll = None
        if array_clock_hz is not None:
            try:
                self.pll = pll_parameters(spec.clock_hz, array_clock_hz)
            except ValueError as exc:
                raise reject(self, exc) from None
        self.array_clock_hz = None if self.pll is None else self.pll["f_out"]

    def elaborate(self, platform):
        m = Module()
        info = info_payload(self.config, self.content_hash, self.board.clock_hz, self.baud)
        array_domain = "sync"
        if self.pll is not None:
            array_domain = "array"
            self._clocks_from_pll(m, platform)
        # The INFO reply stays in logic (about 45 LUTs): weight-stationary designs can need every
        # block RAM of the device.
        m.submodules.shell = shell = MacArrayShell(self.config, info=info, divisor=self.divisor,
                                                   info_bram=False,
                                                   array_domain=array_domain)
        connect_pins(m, platform, shell, self.board)
        return m

    def _clocks_from_pll(self, m, platform):
        """``sync`` at the board clock and ``array`` from the PLL, with their own power-on reset.

        SB_PLL40_2_PAD passes the reference clock through on port A and generates port B. A design
        that makes its own ``sync`` domain also makes its own reset: held until the PLL locks and
        long enough for block RAM to become readable after configuration.
        """
        pll = self.pll
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.domains.array = cd_array = ClockDomain("array")
        lock = Signal()
        params = dict(
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=pll["divr"], p_DIVF=pll["divf"], p_DIVQ=pll["divq"],
            p_FILTER_RANGE=pll["filter_range"],
            i_RESETB=1, i_BYPASS=0, o_LOCK=lock,
        )
        if self.board.clock_on_pll_pad:
            # The clock pin is the PLL's own input pad: the PLL takes the pad and passes the
            # reference clock through on port A.
            clk_pin = platform.request(platform.default_clk, dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_2_PAD", **params, i_PACKAGEPIN=clk_pin.io,
                o_PLLOUTGLOBALA=cd_sync.clk, o_PLLOUTGLOBALB=cd_array.clk)
        else:
            # Any other pin: the board clock enters through its input buffer and global network,
            # and the PLL core takes it from there.
            clk_pin = platform.request(platform.default_clk, dir="-")
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
            m.d.comb += cd_sync.clk.eq(clk_buf.i)
            m.submodules.pll = Instance(
                "SB_PLL40_CORE", **params, i_REFERENCECLK=clk_buf.i,
                o_PLLOUTGLOBAL=cd_array.clk)
        platform.add_clock_constraint(cd_sync.clk, self.board.clock_hz)
        platform.add_clock_constraint(cd_array.clk, pll["f_out"])
        m.domains.por = ClockDomain("por", reset_less=True)
        m.d.comb += ClockSignal("por").eq(cd_sync.clk)
        delay = Signal(range(4096), init=4095)
        with m.If(delay != 0):
            m.d.por += delay.eq(delay - 1)
        m.d.comb += cd_sync.rst.eq((delay != 0) | ~lock)
        m.submodules.array_reset = ResetSynchronizer(cd_sync.rst, domain="array")
