"""The end-to-end demo: a quantized digits MLP on a generated NPU, bit-exact, with a bitstream.

Steps (``npuforge demo`` / ``make demo``):

1. train a 64-32-10 MLP on scikit-learn's 8x8 digits (ships with the library, no download);
2. quantize it post-training to int8 in the array's format (:mod:`npuforge.models`);
3. run the whole test split, batched, through a board over the UART protocol — the
   :class:`~npuforge.boards.host.VirtualBoard` (simulated shell gateware) or, with ``--port``, a
   flashed real board — and check every hidden and output activation against the NumPy int8
   reference, bit for bit;
4. build the bitstream for the board (in parallel with the simulation) and print its report;
5. write the model, manifest, reports and a confusion-matrix picture to one folder.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .generators.mac_array import MacArrayConfig

__all__ = ["DEMOS", "DemoResult", "demo_config", "run_digits_mlp", "run_network"]

#: Available demos: name -> one-line description.
DEMOS = {
    "digits-mlp": "64-32-10 int8 MLP on the 8x8 digits, on the MAC array over the UART protocol",
    "digits-snn": "the same MLP converted to a rate-coded spiking network, on the spiking core",
}


def demo_config(board="icebreaker"):
    """The MAC-array configuration the demo uses on ``board``.

    A board with 8 or more DSP blocks gets a 4x4 int8 array on SB_MAC16s (two PEs per block);
    others a 2x2 array in logic. Buffers hold the digits network's largest layer (K = 64,
    N = 32); the host splits the batch into runs of ``max_m`` samples.
    """
    from .boards.registry import get_board
    spec = get_board(board) if isinstance(board, str) else board
    if spec.budget.dsp >= 8:
        return MacArrayConfig(rows=4, cols=4, multiplier="dsp", max_m=32, max_k=64, max_n=32)
    return MacArrayConfig(rows=2, cols=2, max_m=32, max_k=64, max_n=32)


def array_cycles(config, qmodel, x_q, *, backend="amaranth"):
    """Cycles the array alone needs for the network on ``x_q`` (host I/O excluded).

    Every layer runs as the host driver splits it (runs of ``max_m`` samples) through
    :func:`~npuforge.sim.gemm.simulate_gemm`, which keeps the output always ready: UART stalls,
    which a board's DONE count includes, do not count here.
    """
    from .sim.gemm import simulate_gemm
    total = 0
    h = x_q
    for layer in qmodel.layers:
        outs = []
        for m0 in range(0, len(h), config.max_m):
            res = simulate_gemm(config, h[m0:m0 + config.max_m], layer.w, layer.bias, layer.requant,
                                backend=backend)
            total += res.cycles
            outs.append(res.y)
        h = np.concatenate(outs)
    return total


@dataclass
class DemoResult:
    """Figures the demo measured (printed as a table, saved as JSON)."""

    samples: int
    float_accuracy: float
    int8_accuracy: float
    hw_accuracy: float
    bit_exact: bool
    mismatches: int
    macs_per_inference: int
    array_cycles: int
    sim_seconds: float
    clock_hz: float
    backend: str
    bytes_sent: int = 0
    bytes_received: int = 0
    build: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def cycles_per_inference(self):
        return self.array_cycles / self.samples

    @property
    def inferences_per_second(self):
        return self.clock_hz / self.cycles_per_inference

    def rows(self):
        """(label, value) pairs for the table."""
        mhz = self.clock_hz / 1e6
        return [
            ("test samples", f"{self.samples}"),
            ("float accuracy", f"{self.float_accuracy:.4f}"),
            ("int8 reference accuracy", f"{self.int8_accuracy:.4f}"),
            ("hardware accuracy", f"{self.hw_accuracy:.4f}"),
            ("hardware == int8 reference", "bit-exact (every activation)" if self.bit_exact
             else f"MISMATCH ({self.mismatches} values)"),
            ("MACs per inference", f"{self.macs_per_inference}"),
            ("array cycles per inference (no host I/O)", f"{self.cycles_per_inference:.1f}"),
            (f"inferences/s at {mhz:g} MHz (array)", f"{self.inferences_per_second:,.0f}"),
            ("UART bytes per inference", f"{(self.bytes_sent + self.bytes_received) / self.samples:.0f}"),
            (f"simulation time ({self.backend})", f"{self.sim_seconds:.1f} s"),
        ]

    def table(self):
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)

    def to_dict(self):
        d = {k: v for k, v in self.__dict__.items()}
        d.update(cycles_per_inference=self.cycles_per_inference,
                 inferences_per_second=self.inferences_per_second)
        return d


def run_network(board, qmodel, x_q):
    """Run every layer of ``qmodel`` on ``board``; the int8 activations of every layer."""
    activations = []
    h = x_q
    for layer in qmodel.layers:
        h = board.gemm(h, layer.w, layer.bias, layer.requant)
        activations.append(h)
    return activations


def _confusion_png(path, labels, predicted, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.zeros((10, 10), dtype=int)
    np.add.at(cm, (labels, predicted), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=120)
    im = ax.imshow(cm, cmap="Blues")
    for i in range(10):
        for j in range(10):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_digits_mlp(out_dir, *, board_name="icebreaker", port=None, backend="auto", limit=None,
                   build=True, seed=0, log=print):
    """Run the digits-MLP demo; return a :class:`DemoResult`.

    Parameters
    ----------
    out_dir : path
        Folder for the model (``.npz``), manifest, build, reports and pictures.
    board_name : str
        Board to build for (and, with ``port``, to run on).
    port : str, optional
        Serial port of a real board: flash it and run the test split there.
    backend : str
        Simulator of the virtual board: ``"verilator"``, ``"amaranth"`` or ``"auto"`` (Verilator
        when it is installed).
    limit : int, optional
        Run only the first ``limit`` test samples.
    build : bool
        Build the bitstream.
    """
    from .boards.registry import get_board
    from .models import load_digits_split, quantize_mlp, train_digits_mlp

    t_start = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_board(board_name)
    config = demo_config(board_name)

    # -- bitstream in the background: the tools run in their own processes ------------------------
    build_box = {}
    build_thread = None
    if build:
        build_thread = threading.Thread(target=_build, args=(config, spec, out / "build", build_box),
                                        daemon=True)
        build_thread.start()

    log("[1/4] training a 64-32-10 MLP on the digits training split")
    split = load_digits_split(seed=seed)
    fmodel = train_digits_mlp(seed=seed, split=split)
    float_acc = float(np.mean(fmodel.predict(split.x_test) == split.y_test))
    log("[2/4] quantizing to int8 (per-channel weights, requantization in the array's format)")
    qmodel = quantize_mlp(fmodel, split.x_train)
    x_test, y_test = split.x_test, split.y_test
    if limit is not None:
        x_test, y_test = x_test[:limit], y_test[:limit]
    x_q = qmodel.quantize_input(x_test)
    reference = qmodel.forward_int8(x_q)
    int8_acc = float(np.mean(np.argmax(reference[-1], axis=1) == y_test))
    fmodel.save_npz(out / "digits_mlp_float.npz")
    qmodel.save_npz(out / "digits_mlp_int8.npz")

    # -- the network on the board ----------------------------------------------------------------------
    if port is not None:
        from .boards.host import SerialBoard
        if build_thread is not None:
            build_thread.join()
            if "error" in build_box:
                raise RuntimeError(f"cannot flash: the build failed: {build_box['error']}")
            from .boards.flash import flash
            log(f"      flashing {spec.name} on {port}")
            flash(spec, out / "build")
        board = SerialBoard(port, 115200, timeout=30.0)
        backend_name = f"board on {port}"
    else:
        from .boards.host import VirtualBoard
        if backend == "auto":
            backend = _auto_backend()
        board = VirtualBoard(config, backend=backend)
        backend_name = f"virtual board, {backend}"
    if backend == "auto":
        backend = _auto_backend()
    log(f"[3/4] running {len(x_q)} test samples through the {backend_name} over the UART protocol "
        f"({config.rows}x{config.cols} {config.multiplier} array)")
    t0 = time.monotonic()
    with board:
        info = board.info()
        activations = run_network(board, qmodel, x_q)
        sent, received = board.bytes_sent, board.bytes_received
    sim_seconds = time.monotonic() - t0
    log(f"      measuring the array's own cycles (no host I/O) with the {backend} simulator")
    cycles = array_cycles(config, qmodel, x_q, backend=backend)
    mismatches = sum(int(np.count_nonzero(a != r)) for a, r in zip(activations, reference))
    hw_pred = np.argmax(activations[-1], axis=1)
    hw_acc = float(np.mean(hw_pred == y_test))

    result = DemoResult(samples=len(x_q), float_accuracy=float_acc, int8_accuracy=int8_acc,
                        hw_accuracy=hw_acc, bit_exact=mismatches == 0, mismatches=mismatches,
                        macs_per_inference=qmodel.macs_per_inference, array_cycles=cycles,
                        sim_seconds=sim_seconds, clock_hz=spec.clock_hz, backend=backend_name,
                        bytes_sent=sent, bytes_received=received)
    _confusion_png(out / "confusion.png", y_test, hw_pred,
                   f"digits MLP on the {config.rows}x{config.cols} array: accuracy {hw_acc:.3f}")

    # -- bitstream report --------------------------------------------------------------------------
    if build_thread is not None:
        log("[4/4] waiting for the bitstream build" if build_thread.is_alive() else "[4/4] bitstream built")
        build_thread.join()
        result.build = {k: v for k, v in build_box.items() if k != "report"}
    manifest = {
        "demo": "digits-mlp",
        "board": spec.name,
        "design": {"generator": "mac-array", "config": config.to_dict(), "hash": info.get("hash")},
        "model": {"layers": list(qmodel.layer_sizes), "files": ["digits_mlp_float.npz",
                                                                 "digits_mlp_int8.npz"]},
    }
    result.seconds = time.monotonic() - t_start
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "demo.json").write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    result.build_report = build_box.get("report")
    return result


def _auto_backend():
    try:
        from .sim.verilator import verilator_available
    except ImportError:
        return "amaranth"
    return "verilator" if verilator_available() else "amaranth"


def _build(config, spec, out_dir, box):
    """Build the demo's bitstream, recording the report (or the error) in ``box``."""
    from .boards.build import build
    from .boards.top import BoardTop, shell_resources
    try:
        result = build(BoardTop(config, spec), spec, out_dir, resources=shell_resources(config))
        box["report"] = result.report
        box["cached"] = result.cached
        box["seconds"] = result.seconds
        box["bitstream"] = str(result.bitstream)
        box["passed"] = result.report.passed
    except Exception as exc:  # reported in the demo's output, never lost in the thread
        box["error"] = f"{type(exc).__name__}: {exc}"
