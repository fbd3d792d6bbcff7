"""The spiking digits network: conversion, rate code, accuracy, bit-exact hardware, plots."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from npuforge.models import load_digits_split, train_digits_mlp  # noqa: E402
from npuforge.sim.snn_plot import plot_raster  # noqa: E402
from npuforge.sim.verilator import verilator_available  # noqa: E402
from npuforge.snn_digits import (  # noqa: E402
    convert_mlp,
    encode_rate,
    evaluate_snn,
    run_digits_snn,
)


@pytest.fixture(scope="module")
def trained():
    split = load_digits_split()
    return split, train_digits_mlp(split=split, max_iter=300)


def test_rate_code_hand_vectors():
    r = encode_rate([0, 16, 8, 4, 20], 8)
    assert r.shape == (8, 5)
    assert r[:, 0].tolist() == [False] * 8
    assert r[:, 1].tolist() == [True] * 8
    assert np.flatnonzero(r[:, 2]).tolist() == [1, 3, 5, 7]       # floor((t+1)*8/16) steps up
    assert np.flatnonzero(r[:, 3]).tolist() == [3, 7]
    assert r[:, 4].tolist() == [True] * 8                         # clipped to input_max
    batch = encode_rate(np.array([[0, 16], [8, 4]]), 8)
    assert batch.shape == (2, 8, 2) and (batch[1, :, 0] == r[:, 2]).all()
    with pytest.raises(ValueError, match=r"^timesteps must be an integer in 1\.\.100000, not 0$"):
        encode_rate([1], 0)


def test_conversion_of_a_hand_network():
    # One layer W = [1, -0.5], b = [0, 0.25]; calibration input 16 (full rate) gives activations
    # [16, -7.75]: λ0 = 16 (input_max), λ1 = 16, so w = W * θ with θ = 127 // 1 for 8-bit weights,
    # b = b / 16 * θ.
    net = convert_mlp(([np.array([[1.0, -0.5]])], [np.array([0.0, 0.25])]), np.array([[16.0]]),
                      lanes=2, weight_width=8)
    assert net.config.neuron.threshold == 127
    assert net.weights[:1].tolist() == [[127, -64]]
    assert net.bias.tolist() == [0, 2]
    assert net.layers == ((0, 2),) and list(net.outputs) == [0, 1]
    assert net.config.neuron.reset == "subtract" and net.config.recurrent


def test_converted_digits_network_layout(trained):
    split, model = trained
    net = convert_mlp(model, split.x_train, lanes=4)
    cfg = net.config
    assert net.layers == ((0, 32), (32, 42)) and cfg.neurons == 44 and cfg.axons == 64
    w = net.weights
    assert w.shape == (64 + 44, 44)
    assert not w[:64, 32:].any()                 # inputs reach the hidden layer only
    assert not w[64:64 + 32, :32].any()          # hidden spikes reach the output layer only
    assert w[64:64 + 32, 32:42].any() and not w[64 + 32:].any()
    lim = 2 ** (cfg.neuron.weight_width - 1) - 1
    assert np.abs(w).max() <= lim
    assert not net.bias[42:].any()               # padding neurons never fire
    est = cfg.estimate_resources()
    assert est["bram"] <= 30 and est["logic_cells"] <= 5280 and est["spram"] <= 4


def test_spiking_digits_reach_090_accuracy(trained):
    split, model = trained
    net = convert_mlp(model, split.x_train, timesteps=32)
    report = evaluate_snn(net, split.x_test, split.y_test)
    assert report.images == len(split.y_test) == 360
    assert report.accuracy >= 0.90
    assert report.sops_per_inference > 0 and report.spikes_per_inference > 0
    # Every input spike is an event; each event, input or recurrent, costs N SOPs.
    assert report.input_events_per_inference == net.encode(split.x_test).sum() / report.images
    assert report.sops_per_inference > net.config.neurons * report.input_events_per_inference


def test_hardware_is_bit_exact_with_golden(trained):
    split, model = trained
    net = convert_mlp(model, split.x_train, timesteps=8, lanes=4)
    golden = evaluate_snn(net, split.x_test, split.y_test, limit=2)
    hardware = evaluate_snn(net, split.x_test, split.y_test, backend="hardware", limit=2)
    assert hardware.events == golden.events
    assert (hardware.predictions == golden.predictions).all()
    assert hardware.sops_per_inference == golden.sops_per_inference
    assert hardware.cycles_per_inference > 0


@pytest.mark.slow
def test_run_digits_snn_end_to_end(trained):
    split, model = trained
    result = run_digits_snn(split=split, model=model, hardware_images=3, simulator="amaranth")
    assert result["golden"].accuracy >= 0.90 and result["bit_exact"]
    assert result["hardware"].images == 3 and result["hardware"].simulator == "amaranth"


@pytest.mark.slow
@pytest.mark.toolchain
@pytest.mark.skipif(not verilator_available(), reason="needs Verilator, make and a C++ compiler")
def test_whole_test_set_on_the_rtl(trained):
    # Every test image through the generated core (compiled by Verilator), spike for spike.
    split, model = trained
    result = run_digits_snn(split=split, model=model, hardware_images=360, simulator="verilator")
    hw, golden = result["hardware"], result["golden"]
    assert result["bit_exact"] and hw.images == 360
    assert hw.accuracy == golden.accuracy >= 0.90
    assert hw.sops_per_inference == golden.sops_per_inference


def test_raster_plot(tmp_path, trained):
    split, model = trained
    net = convert_mlp(model, split.x_train, timesteps=24)
    gm = net.golden_model()
    raster = net.encode(split.x_test[0])
    res = gm.run(raster, record_membrane=True)
    path = plot_raster(res, tmp_path / "raster.png", input_spikes=raster, layers=net.layers,
                       neuron_labels=["hidden", "output"], threshold=net.config.neuron.threshold,
                       title="digit")
    data = (tmp_path / "raster.png").read_bytes()
    assert path.endswith("raster.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    plot_raster(res.spikes, tmp_path / "plain.svg")
    assert (tmp_path / "plain.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match=r"^membrane must have the spikes' shape"):
        plot_raster(res.spikes, tmp_path / "x.png", membrane=np.zeros((2, 2)))
