"""The spiking digits demo: a few images through the virtual spiking board, checked independently."""

import json

import numpy as np
import pytest

from npuforge.demo_snn import DEMO_NAME, SnnDemoResult, run
from npuforge.generators import SnnCoreConfig
from npuforge.models import load_digits_split
from npuforge.sim.golden.snn import SnnModel
from npuforge.sim.snn import simulate_snn_batch
from npuforge.sim.verilator import verilator_available
from npuforge.snn_digits import encode_rate

LIMIT = 3
#: The demo's virtual board, and the core below, run on Verilator when it is installed; the
#: Amaranth simulator takes about a minute for the same images.
BACKEND = "verilator" if verilator_available() else "amaranth"
pytestmark = [] if BACKEND == "verilator" else [pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_snn")
    logs = []
    result = run(out, limit=LIMIT, backend=BACKEND, build=False, log=logs.append)
    return out, result, logs


def _network(out):
    manifest = json.loads((out / "manifest.json").read_text())
    config = SnnCoreConfig.from_dict(manifest["design"]["config"])
    data = np.load(out / "digits_snn.npz")
    return manifest, config, data


def test_small_run_is_bit_exact_and_reports(demo):
    out, result, logs = demo
    assert isinstance(result, SnnDemoResult)
    assert result.samples == LIMIT and result.bit_exact and result.mismatches == 0
    assert result.hw_accuracy == result.golden_accuracy
    assert len(logs) == 5 and logs[0].startswith("[1/5]")
    for name in ("digits_snn.npz", "manifest.json", "demo.json", "raster.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "raster.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "demo.json").read_text())
    assert saved["samples"] == LIMIT and saved["bit_exact"] is True
    assert saved["inferences_per_second"] == pytest.approx(12e6 / result.cycles_per_inference)
    table = result.table()
    for label in ("hardware == golden model", "SOPs per inference", "spikes per inference",
                  "core cycles per inference", "inferences/s at 12 MHz"):
        assert label in table
    assert json.loads(json.dumps(result.to_dict(), default=str))["samples"] == LIMIT
    manifest, _, _ = _network(out)
    assert manifest["demo"] == DEMO_NAME


def test_figures_agree_with_an_independent_run(demo):
    # The saved network, run by the golden model and by the core alone (no shell, no UART):
    # accuracy, SOPs, spikes and core cycles per inference must be the demo's.
    out, result, _ = demo
    _, config, data = _network(out)
    split = load_digits_split(seed=0)
    x, y = split.x_test[:LIMIT], split.y_test[:LIMIT]
    rasters = encode_rate(x, int(data["timesteps"]), input_max=16)
    model = SnnModel(config.neuron, data["weights"], recurrent=True, bias=data["bias"])
    start, stop = data["layers"][-1]
    predictions, sops, spikes = [], [], []
    for raster in rasters:
        model.reset()
        res = model.run(raster)
        predictions.append(int(np.argmax(res.spike_counts[:, start:stop].sum(axis=0))))
        sops.append(res.counters["sops"])
        spikes.append(res.counters["output_spikes"])
    assert result.golden_accuracy == pytest.approx(np.mean(np.array(predictions) == y))
    assert result.sops_per_inference == pytest.approx(np.mean(sops))
    assert result.spikes_per_inference == pytest.approx(np.mean(spikes))
    core = simulate_snn_batch(config, data["weights"], list(rasters), bias=data["bias"], backend=BACKEND)
    assert result.cycles_per_inference == pytest.approx(np.mean([r.cycles for r in core]))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'verilator', 'amaranth', not 'x'"):
        run(tmp_path, backend="x")
    with pytest.raises(ValueError, match="limit must be a positive integer or None, not 0"):
        run(tmp_path, limit=0)


@pytest.mark.slow
def test_whole_test_split_reaches_090(tmp_path):
    result = run(tmp_path, backend=BACKEND, build=False, log=lambda *_: None)
    assert result.samples == 360
    assert result.bit_exact
    assert result.hw_accuracy >= 0.90
