"""A spiking version of the digits MLP: rate-coded inputs, converted weights, one spiking core.

Conversion
----------
A ReLU network ``a_l = relu(a_{l-1} @ W_l + b_l)`` becomes integrate-and-fire neurons (no leak,
reset by subtraction, threshold ``θ``) whose firing rates approximate ``a_l / λ_l``, where ``λ_l``
is a high percentile of layer ``l``'s activations on calibration data (data-based normalization,
Diehl et al. 2015; Rueckauer et al. 2017). With one threshold for the whole core, layer ``l`` gets
the integer weights and biases::

    w_l = round(W_l * λ_{l-1} / λ_l * θ),   b_l = round(b_l / λ_l * θ)

where ``λ_0`` is the largest input feature (``input_max * input_scale``), and ``θ`` is the
largest value for which every ``|w_l|`` fits the core's weight width. An IF neuron with reset by
subtraction fires ``floor(Σ input / θ)`` times over a run, so its rate tracks its ReLU input.

Mapping
-------
All layers share one core: the neurons of layer 1 (then 2, ...) are numbered consecutively, layer 1
listens to the input axons (one per pixel) and every later layer to the *recurrent* axons of the
layer before it, so each layer adds a delay of one timestep. The neuron count is padded to a
multiple of the lane count with neurons that never fire.

Inputs are rate-coded deterministically: pixel ``k`` (0..``input_max``) fires at timestep ``t``
when ``floor((t+1) k / input_max) > floor(t k / input_max)``, i.e. ``floor(T k / input_max)`` times
in ``T`` timesteps, evenly spread. The predicted class is the output neuron with the most spikes
(the lowest index on a tie).
"""

import time
from dataclasses import dataclass, field

import numpy as np

from .generators.snn_core import SnnCoreConfig
from .hdl.lif import LifParams
from .sim.golden.snn import SnnModel

__all__ = ["SnnDigitsReport", "SpikingMLP", "convert_mlp", "encode_rate", "evaluate_snn",
           "run_digits_snn"]


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    return int(value)


def encode_rate(x, timesteps, *, input_max=16):
    """Deterministic rate code of non-negative integer inputs.

    Parameters
    ----------
    x : array_like
        ``(M,)`` or ``(B, M)`` integers in ``0..input_max`` (larger values are clipped).
    timesteps : int
        ``T``, 1..100000.
    input_max : int
        The value that fires at every timestep, 1..65535.

    Returns
    -------
    numpy.ndarray
        ``(T, M)`` or ``(B, T, M)`` booleans.
    """
    timesteps = _check_int("timesteps", timesteps, 1, 100000)
    input_max = _check_int("input_max", input_max, 1, 65535)
    k = np.clip(np.rint(np.asarray(x, dtype=np.float64)), 0, input_max).astype(np.int64)
    t = np.arange(timesteps, dtype=np.int64).reshape((timesteps,) + (1,) * 1)
    if k.ndim == 1:
        return ((t + 1) * k[None, :] // input_max - t * k[None, :] // input_max) > 0
    if k.ndim != 2:
        raise ValueError(f"x must be a 1-D or 2-D array, not of shape {k.shape}")
    kk = k[:, None, :]
    tt = t[None, :, :]
    return ((tt + 1) * kk // input_max - tt * kk // input_max) > 0


@dataclass(frozen=True, eq=False)
class SpikingMLP:
    """A converted network, ready for the core.

    Members
    -------
    config : :class:`~npuforge.generators.snn_core.SnnCoreConfig`
        The core (recurrent, IF neurons with bias, reset by subtraction).
    weights : numpy.ndarray
        ``(M + N) x N`` integer weights.
    bias : numpy.ndarray
        ``N`` integer biases.
    layers : tuple of (int, int)
        Neuron index range ``[start, stop)`` of each layer; the last is the output layer.
    timesteps : int
        Timesteps per inference.
    input_max : int
        Input value of the highest rate.
    scales : tuple of float
        The normalization ``λ_l`` of each layer.
    """

    config: SnnCoreConfig
    weights: np.ndarray
    bias: np.ndarray
    layers: tuple
    timesteps: int
    input_max: int
    scales: tuple = field(default=())

    @property
    def outputs(self):
        """Neuron index range of the output layer."""
        start, stop = self.layers[-1]
        return range(start, stop)

    def encode(self, x):
        """Rate-coded raster(s) for raw input(s) ``x`` (see :func:`encode_rate`)."""
        return encode_rate(x, self.timesteps, input_max=self.input_max)

    def decode(self, spike_counts):
        """Predicted class from a ``T x N`` spike-count array (argmax of output spikes)."""
        start, stop = self.layers[-1]
        return int(np.argmax(np.asarray(spike_counts)[:, start:stop].sum(axis=0)))

    def golden_model(self):
        """A fresh :class:`~npuforge.sim.golden.snn.SnnModel` of the network."""
        return SnnModel(self.config.neuron, self.weights, recurrent=True,
                        recurrent_depth=self.config.queue_depth, bias=self.bias)


def _layers_of(model):
    if hasattr(model, "weights") and hasattr(model, "biases"):
        weights, biases = model.weights, model.biases
        scale = float(getattr(model, "input_scale", 1.0))
    else:
        weights, biases = model
        scale = 1.0
    weights = [np.asarray(w, dtype=np.float64) for w in weights]
    biases = [np.asarray(b, dtype=np.float64) for b in biases]
    if not weights or len(weights) != len(biases):
        raise ValueError("model must have one bias vector per weight matrix, and at least one layer")
    for i, (w, b) in enumerate(zip(weights, biases)):
        if w.ndim != 2 or b.shape != (w.shape[1],) or (i and w.shape[0] != weights[i - 1].shape[1]):
            raise ValueError(f"layer {i} has weights of shape {w.shape} and bias of shape {b.shape}, "
                             "which do not chain")
    return weights, biases, scale


def convert_mlp(model, calib_x, *, timesteps=32, input_max=16, weight_width=8, lanes=4,
                percentile=99.9, membrane_width=16, bias_width=16):
    """Convert a trained ReLU MLP into a :class:`SpikingMLP`.

    Parameters
    ----------
    model : FloatMLP or (weights, biases)
        A float network: ``weights[l]`` of shape ``(K, N)``, ``biases[l]`` of shape ``(N,)``,
        ReLU between layers. A ``FloatMLP`` (:mod:`npuforge.models`) also gives ``input_scale``,
        the factor from raw inputs to the features the first layer sees (1 otherwise).
    calib_x : array_like
        Raw inputs (e.g. training images) for the activation percentiles.
    timesteps : int
        Timesteps per inference, 1..100000.
    input_max : int
        Raw input value that fires at every timestep (16 for the digits' pixels).
    weight_width : int
        Width of the core's weights, 2..16.
    lanes : int
        Lanes of the core (a power of two, 1..64); the neuron count is padded to a multiple.
    percentile : float
        Activation percentile used as each layer's full-scale rate, in (0, 100].
    membrane_width, bias_width : int
        Widths of the core's membrane (8..32) and biases (2..24).

    Returns
    -------
    :class:`SpikingMLP`

    Raises
    ------
    TypeError, ValueError
        Bad arguments, or a network that does not fit a core.
    """
    timesteps = _check_int("timesteps", timesteps, 1, 100000)
    input_max = _check_int("input_max", input_max, 1, 65535)
    weight_width = _check_int("weight_width", weight_width, 2, 16)
    membrane_width = _check_int("membrane_width", membrane_width, 8, 32)
    bias_width = _check_int("bias_width", bias_width, 2, 24)
    if not (isinstance(percentile, (int, float)) and 0.0 < percentile <= 100.0):
        raise ValueError(f"percentile must be a number in (0, 100], not {percentile!r}")
    weights, biases, input_scale = _layers_of(model)
    x = np.asarray(calib_x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != weights[0].shape[0]:
        raise ValueError(f"calib_x must be an array of shape (n, {weights[0].shape[0]}), not {x.shape}")

    # Activations of the float network on the calibration data.
    acts, a = [], x * input_scale
    for i, (w, b) in enumerate(zip(weights, biases)):
        a = a @ w + b
        if i != len(weights) - 1:
            a = np.maximum(a, 0.0)
        acts.append(a)
    scales = [input_max * input_scale]
    for a in acts:
        positive = a[a > 0]
        scales.append(float(np.percentile(positive, percentile)) if positive.size else 1.0)
    scaled_w = [w * scales[i] / scales[i + 1] for i, w in enumerate(weights)]
    scaled_b = [b / scales[i + 1] for i, b in enumerate(biases)]
    w_max = max(float(np.abs(w).max()) for w in scaled_w) or 1.0
    threshold = int((2 ** (weight_width - 1) - 1) / w_max)
    v_max = 2 ** (membrane_width - 1) - 1
    threshold = max(1, min(threshold, v_max // 2))

    sizes = [w.shape[1] for w in weights]
    n_real = sum(sizes)
    n = -(-n_real // lanes) * lanes
    m = weights[0].shape[0]
    if n > 4096 or m > 4096:
        raise ValueError(f"the network needs {n} neurons and {m} axons; a core has at most 4096 of each")
    w_int = np.zeros((m + n, n), dtype=np.int64)
    b_int = np.zeros(n, dtype=np.int64)
    layers, start = [], 0
    for i, size in enumerate(sizes):
        stop = start + size
        rows = slice(0, m) if i == 0 else slice(m + layers[-1][0], m + layers[-1][1])
        w_int[rows, start:stop] = np.rint(scaled_w[i] * threshold)
        b_int[start:stop] = np.rint(scaled_b[i] * threshold)
        layers.append((start, stop))
        start = stop
    w_lim = 2 ** (weight_width - 1) - 1
    b_lim = 2 ** (bias_width - 1) - 1
    w_int = np.clip(w_int, -w_lim, w_lim)
    b_int = np.clip(b_int, -b_lim, b_lim)
    neuron = LifParams(weight_width=weight_width, membrane_width=membrane_width, overflow="saturate",
                       leak="none", threshold=threshold, threshold_mode=">=", reset="subtract",
                       bias=True, bias_width=bias_width, fire="timestep")
    config = SnnCoreConfig(neurons=n, axons=m, lanes=lanes, recurrent=True, neuron=neuron)
    return SpikingMLP(config=config, weights=w_int, bias=b_int, layers=tuple(layers),
                      timesteps=timesteps, input_max=input_max, scales=tuple(scales))


@dataclass
class SnnDigitsReport:
    """Accuracy and activity of a spiking network on a labelled set.

    Members
    -------
    backend : str
        ``"golden"`` or ``"hardware"`` (a simulation of the generated core).
    simulator : str or None
        ``"amaranth"`` or ``"verilator"`` for the hardware backend.
    images : int
    accuracy : float
    predictions : numpy.ndarray
    sops_per_inference : float
        Synaptic operations per image.
    spikes_per_inference : float
        Output events of the core (all layers) per image.
    input_events_per_inference : float
    cycles_per_inference : float or None
        Core cycles per image (hardware only).
    spike_counts : list of numpy.ndarray
        ``T x N`` spike counts of every image (for plots and bit-exact comparisons).
    events : list
        Per image, the per-timestep output events in emission order.
    seconds : float
        Host time.
    """

    backend: str
    images: int
    accuracy: float
    predictions: np.ndarray
    sops_per_inference: float
    spikes_per_inference: float
    input_events_per_inference: float
    cycles_per_inference: "float | None" = None
    simulator: "str | None" = None
    spike_counts: list = field(default_factory=list, repr=False)
    events: list = field(default_factory=list, repr=False)
    seconds: float = 0.0

    def to_dict(self):
        """Figures as plain values (for JSON)."""
        return {
            "backend": self.backend, "images": self.images, "accuracy": self.accuracy,
            "sops_per_inference": self.sops_per_inference,
            "spikes_per_inference": self.spikes_per_inference,
            "input_events_per_inference": self.input_events_per_inference,
            "cycles_per_inference": self.cycles_per_inference, "simulator": self.simulator,
            "seconds": self.seconds,
        }


def evaluate_snn(net, x, y, *, backend="golden", limit=None, simulator="amaranth"):
    """Classify images with the spiking network.

    Parameters
    ----------
    net : :class:`SpikingMLP`
    x : array_like
        ``(B, M)`` raw inputs.
    y : array_like
        ``(B,)`` labels.
    backend : str
        ``"golden"`` (NumPy model, fast) or ``"hardware"`` (the generated core in the Amaranth
        simulator, bit-exact with the golden model, slow).
    limit : int, optional
        Evaluate the first ``limit`` images only.
    simulator : str
        For ``backend="hardware"``: ``"amaranth"``, ``"verilator"`` (the same RTL compiled to
        C++, fast enough for the whole test set) or ``"auto"`` (Verilator when installed).

    Returns
    -------
    :class:`SnnDigitsReport`
    """
    if backend not in ("golden", "hardware"):
        raise ValueError(f"backend must be one of 'golden', 'hardware', not {backend!r}")
    if simulator not in ("amaranth", "verilator", "auto"):
        raise ValueError(f"simulator must be one of 'amaranth', 'verilator', 'auto', not {simulator!r}")
    if simulator == "auto":
        from .sim.verilator import verilator_available
        simulator = "verilator" if verilator_available() else "amaranth"
    x = np.asarray(x)
    y = np.asarray(y)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    rasters = net.encode(x)
    start = time.perf_counter()
    counts, events, counters = [], [], []
    cycles = None
    if backend == "golden":
        model = net.golden_model()
        for raster in rasters:
            model.reset()
            res = model.run(raster)
            counts.append(res.spike_counts)
            events.append(res.events)
            counters.append(res.counters)
    else:
        from .sim.snn import simulate_snn_batch
        results = simulate_snn_batch(net.config, net.weights, list(rasters), bias=net.bias,
                                     load="port" if simulator == "verilator" else "init",
                                     backend=simulator)
        for res in results:
            counts.append(res.spike_counts)
            events.append(res.events)
            counters.append(res.counters)
        cycles = float(np.mean([res.cycles for res in results])) if results else 0.0
    predictions = np.array([net.decode(c) for c in counts], dtype=np.int64)
    images = len(y)
    return SnnDigitsReport(
        backend=backend, images=images,
        accuracy=float(np.mean(predictions == y)) if images else 0.0, predictions=predictions,
        sops_per_inference=float(np.mean([c["sops"] for c in counters])) if images else 0.0,
        spikes_per_inference=float(np.mean([c["output_spikes"] for c in counters])) if images else 0.0,
        input_events_per_inference=float(np.mean([c["input_events"] for c in counters]))
        if images else 0.0,
        cycles_per_inference=cycles, simulator=simulator if backend == "hardware" else None,
        spike_counts=counts, events=events,
        seconds=time.perf_counter() - start)


def run_digits_snn(*, seed=0, hidden=(32,), timesteps=32, weight_width=8, lanes=4, max_iter=500,
                   hardware_images=3, split=None, model=None, simulator="auto"):
    """Train (or take) the digits MLP, convert it, and evaluate the spiking version.

    The golden model classifies the whole test split; the generated core, simulated, classifies
    the first ``hardware_images`` test images, and its spikes must equal the golden model's.

    Parameters
    ----------
    seed, hidden, max_iter :
        Passed to :func:`npuforge.models.train_digits_mlp` (unless ``model`` is given).
    timesteps, weight_width, lanes :
        Passed to :func:`convert_mlp`.
    hardware_images : int
        Test images run on the simulated core, 0..100000.
    split : DigitsSplit, optional
        Data (default :func:`npuforge.models.load_digits_split`).
    model : FloatMLP, optional
        A trained network to convert instead of training one.
    simulator : str
        ``"amaranth"``, ``"verilator"`` or ``"auto"`` (see :func:`evaluate_snn`).

    Returns
    -------
    dict
        ``net`` (:class:`SpikingMLP`), ``float_accuracy``, ``golden`` and ``hardware``
        (:class:`SnnDigitsReport`, the latter ``None`` with ``hardware_images=0``) and
        ``bit_exact`` (bool or ``None``).
    """
    from .models import load_digits_split, train_digits_mlp

    hardware_images = _check_int("hardware_images", hardware_images, 0, 100000)
    if split is None:
        split = load_digits_split()
    if model is None:
        model = train_digits_mlp(hidden=hidden, seed=seed, split=split, max_iter=max_iter)
    net = convert_mlp(model, split.x_train, timesteps=timesteps, weight_width=weight_width,
                      lanes=lanes)
    golden = evaluate_snn(net, split.x_test, split.y_test)
    hardware, bit_exact = None, None
    if hardware_images:
        hardware = evaluate_snn(net, split.x_test, split.y_test, backend="hardware",
                                limit=hardware_images, simulator=simulator)
        bit_exact = hardware.events == golden.events[:hardware.images]
    float_accuracy = float(np.mean(model.predict(split.x_test) == split.y_test))
    return {"net": net, "float_accuracy": float_accuracy, "golden": golden, "hardware": hardware,
            "bit_exact": bit_exact}
