"""The spiking demo: the digits MLP, converted to a spiking network, on the generated spiking core.

Steps (``npuforge demo digits-snn``):

1. train the same 64-32-10 MLP as the MAC-array demo on scikit-learn's 8x8 digits
   (:func:`~npuforge.models.train_digits_mlp` on :func:`~npuforge.models.load_digits_split`,
   seed 0);
2. convert it to integrate-and-fire neurons with rate-coded inputs (32 timesteps), all layers in
   one core linked by its recurrent axons (:func:`~npuforge.snn_digits.convert_mlp`);
3. classify the test split with the NumPy golden model;
4. run the same images through the virtual spiking board (the shell gateware simulated, Verilator
   when it is installed) over the UART protocol, and check every output event and counter
   against the golden model, image by image;
5. draw the spike raster and membrane traces of one inference, and build the bitstream for the
   board (in parallel with the simulation);
6. write the network, manifest, figures and picture to one folder.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DEMO_NAME", "DESCRIPTION", "SnnDemoResult", "run"]

#: Name of the demo (``npuforge demo digits-snn``).
DEMO_NAME = "digits-snn"
#: One-line description for ``npuforge demo --list``.
DESCRIPTION = ("64-32-10 MLP converted to a spiking network (rate-coded, 32 timesteps), on the "
               "spiking core over the UART protocol")

#: Counters that must equal the golden model's (``cycles`` is the hardware's alone).
_CHECKED = ("timesteps", "input_events", "recurrent_events", "sops", "output_spikes", "dropped")


@dataclass
class SnnDemoResult:
    """Figures the spiking demo measured (printed as a table, saved as JSON).

    Members
    -------
    samples : int
        Test images run.
    float_accuracy : float
        Accuracy of the float MLP on them.
    golden_accuracy : float
        Accuracy of the spiking network in the golden model.
    hw_accuracy : float
        Accuracy of the spiking network on the (virtual) board.
    bit_exact : bool
        Every output event, in order, and every counter equal the golden model's.
    mismatches : int
        Images whose events or counters differ.
    sops_per_inference, spikes_per_inference, input_events_per_inference : float
        Mean synaptic operations, output spikes (all layers) and input events per image.
    cycles_per_inference : float
        Mean busy cycles of the core per image (its ``cycles`` counter: host I/O excluded).
    timesteps, neurons, axons : int
        The network's timesteps per inference and the core's size.
    clock_hz : float
        Board clock for the throughput figures.
    backend : str
        Where the network ran.
    sim_seconds : float
        Wall time of the board runs.
    bytes_sent, bytes_received : int
        UART traffic of the board runs (weights included).
    build : dict
        Bitstream build outcome (``passed``, ``seconds``, ``bitstream``, ``error``, ...).
    raster : str
        The raster picture's file name.
    seconds : float
        Wall time of the whole demo.
    """

    samples: int
    float_accuracy: float
    golden_accuracy: float
    hw_accuracy: float
    bit_exact: bool
    mismatches: int
    sops_per_inference: float
    spikes_per_inference: float
    input_events_per_inference: float
    cycles_per_inference: float
    timesteps: int
    neurons: int
    axons: int
    clock_hz: float
    backend: str
    sim_seconds: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    build: dict = field(default_factory=dict)
    raster: str = "raster.png"
    seconds: float = 0.0

    @property
    def inferences_per_second(self):
        """Images per second at :attr:`clock_hz`, the core alone (no host I/O)."""
        return self.clock_hz / self.cycles_per_inference if self.cycles_per_inference else 0.0

    @property
    def sops_per_second(self):
        """Synaptic operations per second at :attr:`clock_hz` in this workload."""
        return self.sops_per_inference * self.inferences_per_second

    def rows(self):
        """(label, value) pairs for the table."""
        mhz = self.clock_hz / 1e6
        return [
            ("test samples", f"{self.samples}"),
            ("float MLP accuracy", f"{self.float_accuracy:.4f}"),
            ("spiking network, golden model accuracy", f"{self.golden_accuracy:.4f}"),
            ("spiking network, hardware accuracy", f"{self.hw_accuracy:.4f}"),
            ("hardware == golden model", "bit-exact (every output event and counter)"
             if self.bit_exact else f"MISMATCH ({self.mismatches} images)"),
            ("core", (f"{self.neurons} neurons x {self.axons} axons (+ recurrent), "
                      f"{self.timesteps} timesteps per inference")),
            ("SOPs per inference", f"{self.sops_per_inference:,.0f}"),
            ("spikes per inference (all layers)", f"{self.spikes_per_inference:,.1f}"),
            ("input events per inference", f"{self.input_events_per_inference:,.1f}"),
            ("core cycles per inference (no host I/O)", f"{self.cycles_per_inference:,.0f}"),
            (f"inferences/s at {mhz:g} MHz (core)", f"{self.inferences_per_second:,.0f}"),
            (f"SOPs/s at {mhz:g} MHz (this workload)", f"{self.sops_per_second / 1e6:,.1f} M"),
            ("UART bytes per inference",
             f"{(self.bytes_sent + self.bytes_received) / max(1, self.samples):,.0f}"),
            (f"simulation time ({self.backend})", f"{self.sim_seconds:.1f} s"),
        ]

    def table(self):
        """The figures as an aligned two-column text table."""
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)

    def to_dict(self):
        """The figures as plain values (for JSON)."""
        d = dict(self.__dict__)
        d.update(inferences_per_second=self.inferences_per_second,
                 sops_per_second=self.sops_per_second)
        return d


def _auto_backend():
    from .sim.verilator import verilator_available
    return "verilator" if verilator_available() else "amaranth"


def _build(config, spec, out_dir, box):
    """Build the core's bitstream, recording the outcome (or the error) in ``box``."""
    from .boards.build import build
    from .boards.snn_shell import SnnBoardTop, snn_shell_resources
    try:
        result = build(SnnBoardTop(config, spec), spec, out_dir, resources=snn_shell_resources(config))
        report = result.report
        box.update(report=report, cached=result.cached, seconds=result.seconds,
                   bitstream=str(result.bitstream), passed=report.passed,
                   resources={k: {"used": v.used, "available": v.available}
                              for k, v in report.resources.items()},
                   fmax_mhz={c.name: c.fmax_mhz for c in report.clocks.values()})
    except Exception as exc:  # reported in the demo's output, never lost in the thread
        box["error"] = f"{type(exc).__name__}: {exc}"


def run(out_dir, *, limit=None, backend="auto", build=True, log=print, board_name="icebreaker",
        seed=0, timesteps=32):
    """Run the spiking digits demo; return a :class:`SnnDemoResult`.

    Parameters
    ----------
    out_dir : path
        Folder for the network (``digits_snn.npz``), ``manifest.json``, ``demo.json``,
        ``raster.png`` and the build.
    limit : int, optional
        Run only the first ``limit`` test images (default: the whole test split, 360).
    backend : str
        Simulator of the virtual board: ``"verilator"``, ``"amaranth"`` or ``"auto"`` (Verilator
        when it is installed).
    build : bool
        Build the bitstream for the board.
    log : callable
        Progress messages (``print`` by default).
    board_name : str
        Board to build for; its clock gives the throughput figures.
    seed : int
        Seed of the data split and of the training.
    timesteps : int
        Timesteps per inference.

    Returns
    -------
    SnnDemoResult

    Raises
    ------
    ValueError
        ``backend`` or ``limit`` out of range.
    """
    from .boards.registry import get_board
    from .boards.snn_host import VirtualSnnBoard
    from .models import load_digits_split, train_digits_mlp
    from .sim.snn_plot import plot_raster
    from .snn_digits import convert_mlp

    if backend not in ("auto", "verilator", "amaranth"):
        raise ValueError(f"backend must be one of 'auto', 'verilator', 'amaranth', not {backend!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, not {limit!r}")
    t_start = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_board(board_name)

    log("[1/5] training a 64-32-10 MLP on the digits training split")
    split = load_digits_split(seed=seed)
    fmodel = train_digits_mlp(seed=seed, split=split)
    log(f"[2/5] converting it to a spiking network ({timesteps} timesteps, rate-coded inputs)")
    net = convert_mlp(fmodel, split.x_train, timesteps=timesteps)
    config = net.config
    np.savez(out / "digits_snn.npz", weights=net.weights, bias=net.bias,
             layers=np.asarray(net.layers), threshold=config.neuron.threshold, timesteps=timesteps)

    build_box, build_thread = {}, None
    if build:
        build_thread = threading.Thread(target=_build, args=(config, spec, out / "build", build_box),
                                        daemon=True)
        build_thread.start()

    x_test, y_test = split.x_test, split.y_test
    if limit is not None:
        x_test, y_test = x_test[:limit], y_test[:limit]
    rasters = net.encode(x_test)
    float_acc = float(np.mean(fmodel.predict(x_test) == y_test))

    log(f"[3/5] golden model on {len(y_test)} test images")
    model = net.golden_model()
    golden = []
    for raster in rasters:
        model.reset()
        golden.append(model.run(raster))
    golden_pred = np.array([net.decode(g.spike_counts) for g in golden], dtype=np.int64)

    if backend == "auto":
        backend = _auto_backend()
    log(f"[4/5] the same images on the virtual spiking board ({backend}) over the UART protocol")
    t0 = time.monotonic()
    runs = []
    with VirtualSnnBoard(config, backend=backend) as board:
        info = board.info()
        board.load_weights(net.weights, net.bias)
        for raster in rasters:
            runs.append(board.run(raster))
        sent, received = board.bytes_sent, board.bytes_received
    sim_seconds = time.monotonic() - t0
    hw_pred = np.array([net.decode(r.spike_counts) for r in runs], dtype=np.int64)
    mismatches = sum(1 for r, g in zip(runs, golden)
                     if r.events != g.events or any(r.counters[k] != g.counters[k] for k in _CHECKED))

    log("[5/5] raster of the first inference" + (", waiting for the bitstream build"
                                                  if build_thread is not None else ""))
    first = net.golden_model().run(rasters[0], record_membrane=True)
    label = int(y_test[0])
    plot_raster(runs[0].spike_counts, out / "raster.png", membrane=first.membrane,
                input_spikes=rasters[0], threshold=config.neuron.threshold, layers=net.layers,
                max_traces=3,
                neuron_labels=[f"hidden ({b - a})" for a, b in net.layers[:-1]]
                + [f"output ({net.layers[-1][1] - net.layers[-1][0]})"],
                title=f"spiking digits on the core: a {label}, classified as {int(hw_pred[0])} "
                      f"({int(runs[0].counters['output_spikes'])} spikes, "
                      f"{int(runs[0].counters['sops']):,} SOPs)")

    n = len(y_test)
    result = SnnDemoResult(
        samples=n, float_accuracy=float_acc,
        golden_accuracy=float(np.mean(golden_pred == y_test)),
        hw_accuracy=float(np.mean(hw_pred == y_test)), bit_exact=mismatches == 0,
        mismatches=mismatches,
        sops_per_inference=float(np.mean([r.counters["sops"] for r in runs])),
        spikes_per_inference=float(np.mean([r.counters["output_spikes"] for r in runs])),
        input_events_per_inference=float(np.mean([r.counters["input_events"] for r in runs])),
        cycles_per_inference=float(np.mean([r.counters["cycles"] for r in runs])),
        timesteps=timesteps, neurons=config.neurons, axons=config.axons, clock_hz=spec.clock_hz,
        backend=f"virtual board, {backend}", sim_seconds=sim_seconds, bytes_sent=sent,
        bytes_received=received)

    if build_thread is not None:
        build_thread.join()
        result.build = {k: v for k, v in build_box.items() if k != "report"}
    manifest = {
        "demo": DEMO_NAME,
        "board": spec.name,
        "design": {"generator": "snn-core", "config": config.to_dict(), "hash": info.get("hash")},
        "network": {"layers": [list(layer) for layer in net.layers], "timesteps": timesteps,
                    "input_max": net.input_max, "threshold": config.neuron.threshold,
                    "file": "digits_snn.npz"},
    }
    result.seconds = time.monotonic() - t_start
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "demo.json").write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    result.build_report = build_box.get("report")
    return result
