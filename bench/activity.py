"""Datapath activity: what operand gating saves, counted from simulation waveforms.

Each workload runs on a 4x4 int8 array with and without ``operand_gating``, in both dataflows;
``npuforge.sim.activity.datapath_activity`` counts the bit toggles of the datapath (every PE
multiplier's nets: operands, internal nodes, product; accumulators and their adders;
weight-stationary column sums and accumulator memory data), each net once, settled values only.
The control that gating adds (zero flags, load enables, product clears) is counted apart, and the
saving is given without and with it. Workloads:

* ``relu-uniform``: activations uniform in -128..127 with the negatives set to 0 (post-ReLU, about
  50 % zeros, independent), random int8 weights;
* ``digits-layer1``: the demo network's first layer on 16 test images (pixel codes 0..16, 49.5 %
  zeros, in runs: image borders), its trained int8 weights;
* ``dense``: no zeros at all (what gating costs when it has nothing to skip);
* ``ragged``: ``relu-uniform`` activations in a GEMM that leaves PEs of the 4x4 array idle
  (M = 10, N = 6);
* ``relu-uniform-dsp``: ``relu-uniform`` on ``SB_MAC16`` PE models (latency 2): the DSPs'
  internal multiplier nodes are not in the model, only their ports and registers.

Why the saving is bounded: a gated PE skips the transitions into and out of a zero, but the next
non-zero operand still differs from the held one. With independent zeros of probability ``z`` and
``C`` toggles per transition between two values (about as many between a value and zero), the
toggles of a multiplier's nodes and product drop from ``(1 - z**2) C`` to ``(1 - z) C`` per beat: a
third at ``z = 1/2``. Output-stationary accumulators change only on non-zero products with or
without gating; weight-stationary PEs also stop computing on the data that streams past them
between tiles. Zeros in runs (real images) leave fewer transitions to skip.

Writes ``bench/results/activity.json`` and ``activity.md``.

Usage: ``python bench/activity.py [--out DIR]``
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _report import markdown_report, write_results  # noqa: E402

from npuforge.generators import MacArrayConfig  # noqa: E402
from npuforge.sim.activity import datapath_activity  # noqa: E402

ARRAY = dict(rows=4, cols=4)


def _relu_uniform(rng, m, k, n):
    x = rng.integers(-128, 128, (m, k))
    x[x < 0] = 0
    return x, rng.integers(-128, 128, (k, n))


def workloads():
    """``(name, x, w, extra config)`` of every workload."""
    rng = np.random.default_rng(5)
    x, w = _relu_uniform(rng, 16, 16, 8)
    yield "relu-uniform", x, w, {}
    yield "relu-uniform-dsp", x, w, {"multiplier": "dsp", "mul_latency": 2}
    yield "ragged", *_relu_uniform(rng, 10, 16, 6), {}
    yield "dense", rng.integers(1, 128, (16, 16)), rng.integers(-128, 128, (16, 8)), {}
    from npuforge.models import load_digits_split, quantize_mlp, train_digits_mlp
    split = load_digits_split(seed=0)
    qmodel = quantize_mlp(train_digits_mlp(seed=0, split=split), split.x_train)
    yield ("digits-layer1", qmodel.quantize_input(split.x_test[:16]), np.asarray(qmodel.layers[0].w),
           {})


def measure():
    rows = []
    for name, x, w, extra in workloads():
        m, k = x.shape
        n = w.shape[1]
        for dataflow in ("os", "ws"):
            cfg = dict(ARRAY, dataflow=dataflow, max_m=m, max_k=k, max_n=n, **extra)
            base = datapath_activity(MacArrayConfig(**cfg), x, w)
            gated = datapath_activity(MacArrayConfig(operand_gating=True, **cfg), x, w)
            row = {
                "workload": name, "dataflow": dataflow, "gemm": f"{m}x{k}x{n}",
                "zero_activations": float(np.mean(x == 0)), "macs": base.macs,
                "toggles": base.toggles, "toggles_gated": gated.toggles,
                "control_gated": gated.control_toggles,
                "per_mac": base.per_mac, "per_mac_gated": gated.per_mac,
                "control_per_mac": gated.control_toggles / gated.macs,
                "saving": 1 - gated.toggles / base.toggles,
                "saving_with_control": 1 - gated.total / base.total,
            }
            rows.append(row)
            print(f"  {name:16s} {dataflow}  {row['per_mac']:6.1f} -> {row['per_mac_gated']:6.1f} "
                  f"+ {row['control_per_mac']:4.1f} toggles/MAC  ({row['saving']:+.1%} datapath, "
                  f"{row['saving_with_control']:+.1%} with control)", flush=True)
    return rows


def markdown(rows, meta):
    intro = (f"`python bench/activity.py` — {meta['date']}; 4x4 int8 array, tree logic multipliers "
             "(latency 1) unless the workload says `dsp`, Amaranth simulator waveforms, each datapath "
             "net counted once, settled values. *Control*: the zero flags, load enables and product "
             "clears that gating adds.")
    columns = [("workload", False), ("dataflow", False), ("GEMM", False), ("zero activations", True),
               ("toggles/MAC", True), ("gated", True), ("saved", True), ("control/MAC", True),
               ("saved with control", True)]
    cells = [[r["workload"], r["dataflow"], r["gemm"], f"{r['zero_activations']:.1%}", f"{r['per_mac']:.1f}",
              f"{r['per_mac_gated']:.1f}", f"{r['saving']:.1%}", f"{r['control_per_mac']:.1f}",
              f"{r['saving_with_control']:.1%}"] for r in rows]
    return markdown_report("Datapath activity with and without operand gating", intro, columns, cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    rows = measure()
    meta = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version()}
    write_results(args.out, "activity", rows, meta, markdown(rows, meta))


if __name__ == "__main__":
    main()
