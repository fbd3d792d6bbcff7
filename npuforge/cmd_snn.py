"""The spiking core on the command line: ``generate snn-core``, ``sim snn-core``, and the board flow.

``npuforge generate snn-core [parameters] [--name NAME] -o DIR`` writes the core's Verilog, RTLIL
and ``manifest.json``. ``npuforge sim snn-core [parameters] --timesteps T --seed S --rate P
[--plot raster.png]`` draws a seeded random network and Bernoulli input spikes, runs them through
the simulated core, compares every output event (and the counters) with the golden model and
prints one line::

    PASS: 16 timesteps, 412 output spikes match the golden model (events, order, counters); ...

``npuforge build --design snn-core`` and ``npuforge run --design snn-core`` put the core in the
board shell (:mod:`npuforge.boards.snn_shell`) and drive it over the host protocol.

The parameters are those of :class:`~npuforge.generators.snn_core.SnnCoreConfig` with the neuron's
(:class:`~npuforge.hdl.lif.LifParams`) beside them, plus ``--preset none|odin|loihi`` (see
:mod:`npuforge.snn_config`); a TOML file gives them in a ``[snn-core]`` table.
"""

import sys

import numpy as np

from ._cli_common import (
    add_output_arguments,
    board_spec,
    build_and_report,
    build_dir,
    check_seed,
    convert_design,
    fail,
    module_name,
    open_board,
    output_dir,
    write_outputs,
)

__all__ = ["check_design_flags", "random_network", "register_generate", "register_sim",
           "run_board_build", "run_board_run", "run_generate", "run_sim", "snn_manifest",
           "add_snn_workload_arguments"]

DESIGN = "snn-core"

_GENERATE_DESCRIPTION = """\
Write the Verilog and RTLIL of an event-driven spiking-neuron core (time-multiplexed LIF neurons,
address events in and out, weights and state in block RAM or SPRAM) and a manifest.json
describing it (config, ports with their Verilog names, SOPs per cycle, memories, estimated
resources, tool versions, content hash).

files written to DIR (created if missing):
  <name>.v         Verilog of module <name> (clock `clk`, synchronous active-high reset `rst`)
  <name>.il        the same design in Yosys RTLIL
  manifest.json    what the design is and how to drive it

presets: --preset odin (256 neurons x 256 axons, 4-bit weights, ODIN's neuron) or --preset loihi
(Loihi's CUBA LIF as Lava models it); any other flag overrides the preset's value.
"""

_SIM_DESCRIPTION = """\
Draw a seeded random network (normal weights whose mean input brings a neuron to its threshold
in about three timesteps, so that neurons fire now and then; small random biases) and Bernoulli
input spikes (each axon fires in each timestep with probability --rate), run them through the
generated core in
simulation and compare every output event, its order, and the counters with the NumPy golden
model. Prints PASS or FAIL with the core's cycles, synaptic operations (SOPs), output spikes and
the simulation speed (simulated cycles per wall-clock second).

exit status: 0 PASS, 1 FAIL (a mismatch), 2 bad input.
"""


# -- argument groups ---------------------------------------------------------------------------

def add_snn_workload_arguments(parser, *, seed=True):
    """Add ``--timesteps``, ``--rate`` (and ``--seed``): a random spiking workload.

    Returns
    -------
    argparse._ArgumentGroup
    """
    group = parser.add_argument_group(
        "workload", "The random network and input: weights, biases and Bernoulli input spikes.")
    group.add_argument("--timesteps", metavar="T", default=None,
                       help="timesteps to run, 1..100000 (default: 16)")
    group.add_argument("--rate", metavar="P", default=None,
                       help="probability that an axon fires in a timestep, 0..1 (default: 0.1)")
    if seed:
        group.add_argument("--seed", metavar="S", default=None,
                           help="random seed, an integer >= 0 (default: 1)")
    return group


def _workload(args):
    """``(timesteps, rate, seed)`` from :func:`add_snn_workload_arguments` flags."""
    from .config import ConfigError

    timesteps, rate, seed = 16, 0.1, 1
    text = getattr(args, "timesteps", None)
    if text is not None:
        try:
            timesteps = int(text, 10)
        except ValueError:
            timesteps = 0
        if not 1 <= timesteps <= 100000:
            raise ConfigError(f"timesteps must be an integer in 1..100000, not {text!r}")
    text = getattr(args, "rate", None)
    if text is not None:
        try:
            rate = float(text)
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"rate must be a number in 0..1, not {text!r}")
    text = getattr(args, "seed", None)
    if text is not None:
        try:
            seed = int(text, 10)
        except ValueError:
            seed = -1
        if seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, not {text!r}")
    return timesteps, rate, seed


def random_network(config, *, timesteps=16, rate=0.1, seed=1):
    """A seeded random network and input for ``config``, scaled so that neurons fire now and then.

    With ``θ' = max(1, threshold >> input_shift)`` (the threshold in weight units), the weights are
    normal with mean ``μ = θ' / (3 * max(1, rate * M))`` (the expected input brings a neuron to
    its threshold in about three timesteps) and standard deviation ``max(1, 2μ)``, rounded and
    clipped to the weight range; biases (with ``neuron.bias``) are uniform in ``±(θ / 8) >>
    bias_shift``, clipped likewise. Each axon fires in each timestep with probability ``rate``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray or None, numpy.ndarray)
        ``weights`` (``axon_rows x N``), ``bias`` (``N``) and ``input_spikes`` (``T x M`` bool).
    """
    rng = np.random.default_rng(seed)
    p = config.neuron
    lo, hi = -(1 << (p.weight_width - 1)), (1 << (p.weight_width - 1)) - 1
    theta = max(1, p.threshold >> p.input_shift)
    mean = theta / (3 * max(1.0, rate * config.axons))
    raw = rng.normal(mean, max(1.0, 2 * mean), (config.axon_rows, config.neurons))
    weights = np.clip(np.rint(raw), lo, hi).astype(np.int64)
    bias = None
    if p.bias:
        b = min((1 << (p.bias_width - 1)) - 1, max(1, (p.threshold // 8) >> p.bias_shift))
        bias = rng.integers(-b, b + 1, config.neurons, dtype=np.int64)
    spikes = rng.random((timesteps, config.axons)) < rate
    return weights, bias, spikes


def _golden(config, weights, bias, spikes, record_membrane=False):
    from .sim.golden.snn import SnnModel

    model = SnnModel(config.neuron, weights, recurrent=config.recurrent,
                     recurrent_depth=config.queue_depth if config.recurrent else None, bias=bias)
    return model.run(spikes, record_membrane=record_membrane)


def _compare(expected, events, counters):
    """The first difference between a golden result and a run, as a sentence, or ``None``."""
    for t, (want, got) in enumerate(zip(expected.events, events)):
        if want != got:
            return f"timestep {t}: expected output events {want}, got {got}"
    if len(expected.events) != len(events):
        return f"expected {len(expected.events)} timesteps, got {len(events)}"
    for name, value in expected.counters.items():
        if counters.get(name) != value:
            return f"counter {name}: expected {value}, got {counters.get(name)}"
    return None


def _describe(config):
    p = config.neuron
    mode = {"event": "fire after each event", "timestep": "fire per timestep"}[p.fire]
    leak = "IF" if p.leak == "none" else f"{p.leak} leak"
    synapse = ", current synapse" if p.synapse == "current" else ""
    rec = ", recurrent" if config.recurrent else ""
    return (f"snn-core {config.neurons} neurons x {config.axons} axons{rec}, {config.lanes} lanes, "
            f"{p.weight_width}-bit weights, {'' if p.membrane_signed else 'u'}int{p.membrane_width} "
            f"membrane, {leak}{synapse}, {mode}, v {p.threshold_mode} {p.threshold}, reset "
            f"{p.reset}")


# -- generate ----------------------------------------------------------------------------------

def register_generate(designs):
    """Add ``snn-core`` to the designs of ``npuforge generate``."""
    from .config import add_design_arguments

    parser = designs.add_parser(DESIGN, help="an event-driven spiking-neuron core (LIF, AER in/out)",
                                description=_GENERATE_DESCRIPTION)
    add_design_arguments(parser, DESIGN)
    add_output_arguments(parser, "snn_core")
    parser.set_defaults(handler=run_generate)


def generate_snn_core(config, name="snn_core"):
    """Elaborate a core and convert it to Verilog and RTLIL (with the pinned Yosys).

    Returns
    -------
    (str, str, SnnCore)
        Verilog, RTLIL and the component.
    """
    from amaranth.back import rtlil, verilog

    from .generators.snn_core import SnnCore
    from .verilog import _prefer_builtin_yosys, check_module_name

    check_module_name(name)
    component = SnnCore(config)
    il_text = rtlil.convert(component, name=name, emit_src=False)
    with _prefer_builtin_yosys():
        verilog_text = verilog.convert(component, name=name, emit_src=False)
    return verilog_text, il_text, component


def snn_manifest(config, verilog_text, component, name, *, files=None, tools=None):
    """The ``manifest.json`` of a generated core (the schema of :mod:`npuforge.manifest`).

    Returns
    -------
    dict
    """
    import hashlib

    from . import __version__
    from .manifest import (
        MANIFEST_SCHEMA,
        content_hash,
        hash_prefix64,
        port_list,
        tool_versions,
        verilog_ports,
    )
    from .snn_config import snn_core_figures

    ports = port_list(component)
    declared = verilog_ports(verilog_text, name)
    known = {p["name"] for p in ports}
    for port in ports:
        if port["name"] not in declared:
            raise ValueError(f"port {port['name']!r} of the signature is missing from module {name!r}")
    roles = {"clk": ("clock", "rising edge"), "rst": ("reset", "synchronous, active high")}
    extra = []
    for pname, (direction, width) in declared.items():
        if pname not in known:
            entry = {"name": pname, "path": None, "direction": "in" if direction == "input" else "out",
                     "width": width, "signed": False}
            if pname in roles:
                entry["role"], entry["note"] = roles[pname]
            extra.append(entry)
    digest = content_hash(verilog_text, config)
    return {
        "schema": MANIFEST_SCHEMA,
        "generator": {"name": DESIGN,
                      "class": f"{type(component).__module__}.{type(component).__qualname__}",
                      "version": __version__},
        "name": name,
        "config": config.to_dict(),
        "ports": extra + ports,
        "derived": snn_core_figures(config),
        "tools": tools if tools is not None else tool_versions(),
        "content_hash": {"algorithm": "sha256", "covers": "config (canonical JSON) and the Verilog text",
                         "hex": digest, "prefix64": f"0x{hash_prefix64(digest):016x}"},
        "files": {kind: {"path": fname, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
                  for kind, (fname, text) in (files or {}).items()},
    }


def run_generate(args):
    """Handle ``npuforge generate snn-core``; return the exit status."""
    from .config import config_from_args

    config = config_from_args(args, DESIGN)
    name = module_name(args)
    outdir = output_dir(args)
    converted = convert_design(generate_snn_core, config, name)
    if converted is None:
        return 1
    files, verilog_text, component = converted
    manifest = snn_manifest(config, verilog_text, component, name, files=files)
    d = manifest["derived"]
    mem = d["memories"]
    write_outputs(outdir, files, manifest,
                  f"{_describe(config)}: {d['sops_per_cycle']:g} SOPs/cycle ({d['cycles_per_event']} "
                  f"cycles per event), weights {mem['weights']['words']}x{mem['weights']['width']} in "
                  f"{mem['weights']['kind'].upper()}, state {mem['state']['words']}x"
                  f"{mem['state']['width']} in {mem['state']['kind'].upper()}")
    return 0


# -- sim ---------------------------------------------------------------------------------------

def register_sim(designs):
    """Add ``snn-core`` to the designs of ``npuforge sim``."""
    from .config import add_design_arguments

    parser = designs.add_parser(DESIGN, help="an event-driven spiking-neuron core (LIF, AER in/out)",
                                description=_SIM_DESCRIPTION)
    add_design_arguments(parser, DESIGN)
    group = add_snn_workload_arguments(parser)
    group.add_argument("--backend", choices=["amaranth", "verilator"], default="amaranth",
                       help="simulator: amaranth (waveforms) or verilator (the design compiled, for "
                            "long runs) (default: amaranth)")
    out = parser.add_argument_group("output")
    out.add_argument("--plot", metavar="FILE", default=None,
                     help="draw the input and output spike rasters and membrane traces to FILE "
                          "(.png, .svg or .pdf; needs matplotlib)")
    out.add_argument("--vcd", metavar="FILE", default=None,
                     help="write a waveform of the run to FILE (VCD; Amaranth back end only)")
    parser.set_defaults(handler=run_sim)


def run_sim(args):
    """Handle ``npuforge sim snn-core``; return the exit status."""
    from .config import ConfigError, config_from_args

    config = config_from_args(args, DESIGN)
    timesteps, rate, seed = _workload(args)
    if args.vcd and args.backend != "amaranth":
        raise ConfigError("--vcd needs --backend amaranth")

    from .sim.snn import simulate_snn

    weights, bias, spikes = random_network(config, timesteps=timesteps, rate=rate, seed=seed)
    record = args.plot is not None
    print(f"{_describe(config)}; {timesteps} timesteps, rate {rate:g}, seed {seed}: "
          f"{int(spikes.sum())} input events")
    try:
        result = simulate_snn(config, weights, spikes, bias=bias, record_membrane=record, vcd=args.vcd,
                              backend=args.backend)
    except RuntimeError as exc:       # a hang, or the Verilator model failed
        return fail(str(exc))
    expected = _golden(config, weights, bias, spikes, record_membrane=record)
    problem = _compare(expected, result.events, result.counters)
    if problem is None and record and not np.array_equal(expected.membrane, result.membrane):
        t, n = (int(v) for v in np.argwhere(expected.membrane != result.membrane)[0])
        problem = (f"membrane of neuron {n} after timestep {t}: expected {expected.membrane[t, n]}, "
                   f"got {result.membrane[t, n]}")
    sops_per_cycle = result.sops / result.cycles if result.cycles else 0.0
    figures = (f"{result.cycles:,} cycles, {result.sops:,} SOPs ({sops_per_cycle:.2f} SOPs/cycle), "
               f"{result.counters['output_spikes']:,} output spikes, "
               f"{result.cycles_per_second:,.0f} simulated cycles/s ({args.backend})")
    if problem is None:
        print(f"PASS: {timesteps} timesteps match the golden model (output events, their order, "
              f"counters{', membranes' if record else ''}); {figures}")
    else:
        print(f"FAIL: {problem}; {figures}")
    if args.vcd:
        print(f"wrote {args.vcd}")
    if record:
        from .sim.snn_plot import plot_raster

        p = config.neuron
        plot_raster(result, args.plot, input_spikes=spikes, threshold=p.threshold,
                    title=f"snn-core {config.neurons}x{config.axons}, {p.fire} firing, seed {seed}: "
                          f"{'PASS' if problem is None else 'FAIL'} vs the golden model")
        print(f"wrote {args.plot}")
    sys.stdout.flush()
    return 0 if problem is None else 1


# -- board flow --------------------------------------------------------------------------------

_SNN_ONLY = ("timesteps", "rate")


def check_design_flags(args, design):
    """Refuse flags of the other design in ``build``/``run`` (both designs' flags are offered).

    Raises
    ------
    ConfigError
        Naming the first flag that does not apply to ``design``.
    """
    from dataclasses import fields

    from .config import DESIGNS, ConfigError, _dest, _flag

    other = "mac-array" if design == DESIGN else DESIGN
    own = {f.name for f in fields(DESIGNS[design].config_cls)}
    given = [f.name for f in fields(DESIGNS[other].config_cls)
             if f.name not in own and getattr(args, _dest(f.name), None) is not None]
    if design == DESIGN:
        given += [name for name in ("m", "k", "n") if getattr(args, name, None) is not None]
        given += [name for name in ("requant", "fill") if getattr(args, name, False)]
        if getattr(args, "array_clock", None) is not None:
            given.append("array_clock")
    else:
        given += [name for name in _SNN_ONLY if getattr(args, name, None) is not None]
    if given:
        raise ConfigError(f"{_flag(given[0])} is not a parameter of {design}; it applies to "
                          f"{other} only")


def run_board_build(args):
    """Handle ``npuforge build --design snn-core``; return the exit status."""
    from .boards.snn_shell import SnnBoardTop, snn_shell_resources
    from .boards.top import NoUart
    from .config import ConfigError, config_from_args

    check_design_flags(args, DESIGN)
    spec = board_spec(args.board)
    config = config_from_args(args, DESIGN)
    check_seed(args.seed)
    try:
        top = SnnBoardTop(config, spec, baud=args.baud)
    except (NoUart, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    out = build_dir(args.output, spec)
    print(f"building {_describe(config)} for {spec.name} ({spec.device}) into {out}")

    def throughput(report):
        fmax = min((c.fmax_mhz for c in report.clocks.values()), default=None)
        clock = spec.clock_hz
        sops = config.neurons * clock / config.sweep_cycles()
        print(f"\nthroughput at {clock / 1e6:g} MHz: {sops / 1e6:.1f} M SOPs/s "
              f"({config.neurons} SOPs per input event in {config.sweep_cycles()} cycles)"
              + (f"; at Fmax {fmax:.1f} MHz: {config.neurons * fmax / config.sweep_cycles():.1f} M SOPs/s"
                 if fmax else ""))

    return build_and_report(top, spec, out, args, snn_shell_resources(config), after_table=throughput)


def run_board_run(args):
    """Handle ``npuforge run --design snn-core``; return the exit status."""
    from .boards.host import BoardTimeout, DeviceError
    from .boards.snn_host import SerialSnnBoard, VirtualSnnBoard
    from .config import ConfigError, config_from_args

    check_design_flags(args, DESIGN)
    config = config_from_args(args, DESIGN)
    timesteps, rate, seed = _workload(args)
    board = open_board(args, config, VirtualSnnBoard, SerialSnnBoard)
    if board is None:
        return 1
    with board:
        try:
            info = board.info()
            if info["design"] != DESIGN:
                return fail(f"the board runs a {info['design']}, not an {DESIGN}")
            dev = info["config"]
            print(f"connected: {_describe(dev)}, hash {info['hash']}")
            weights, bias, spikes = random_network(dev, timesteps=timesteps, rate=rate, seed=seed)
            board.load_weights(weights, bias)
            result = board.run(spikes)
        except (BoardTimeout, DeviceError, RuntimeError) as exc:
            return fail(str(exc))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    expected = _golden(dev, weights, bias, spikes)
    problem = _compare(expected, result.events, result.counters)
    figures = (f"{result.cycles:,} core cycles, {result.sops:,} SOPs, "
               f"{result.counters['output_spikes']:,} output spikes")
    if problem is not None:
        print(f"FAIL: {problem}; {figures}")
        return 1
    print(f"PASS: {timesteps} timesteps match the golden model (output events, their order, "
          f"counters); {figures}")
    return 0
