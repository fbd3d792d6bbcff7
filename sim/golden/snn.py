"""Golden model of the spiking-neuron core (NumPy only, no Amaranth).

This is the reference the generated hardware is checked against bit by bit, written from the
equations below and not from the hardware description. It is usable on its own, for example to
map and tune a network in software before loading it on a board.

Neuron
------
State per neuron: membrane ``v``, synaptic current ``u`` (``synapse="current"``), the sum ``acc``
of the weights received in the current timestep (``fire="timestep"``) and a refractory counter
``ref``. ``s = input_shift``, ``θ = threshold``, ``b`` the neuron's bias.

``ovf_v(x)``: with ``overflow="saturate"`` clip ``x`` to ``[0, 2**n - 1]`` (unsigned membrane of
``n`` bits) or to ``[-(2**(n-1) - 1), 2**(n-1) - 1]`` (signed; symmetric as on Loihi); with
``"wrap"`` keep the low ``n`` bits. ``ovf_u`` likewise with ``current_width``/``current_overflow``.

Leak ``L(v)``:

- ``none``: ``v`` (integrate-and-fire)
- ``shift``: ``v - (v >> k)`` with an arithmetic shift, ``k = leak_shift``
- ``mul``: ``sgn(v) * ((|v| * (4096 - d)) >> 12)``, rounding toward zero, ``d = leak_decay``
- ``sub``: ``max(v - c, 0)`` for ``v > 0``, ``min(v + c, 0)`` for ``v < 0``, ``c = leak_sub``

Current decay ``D(u) = sgn(u) * ((|u| * (4096 - current_decay)) >> 12)``.

``fire="timestep"``: an event only does ``acc += w`` (saturating at ``±(2**(a-1) - 1)`` with
``a = accumulator_width(...)``, which no timestep in which every axon fires at most once reaches).
At the end of the timestep::

    I  = acc << s
    u' = ovf_u(D(u) + I); I = u'                      (synapse="current" only)
    v1 = ovf_v(L(v) + I + (b << bias_shift))
    spike = (ref == 0) and (v1 >= θ, or v1 > θ with threshold_mode=">")
    v' = v if ref > 0 else (0 or v1 - θ if spike else v1)
    ref' = ref - 1 if ref > 0 else (refractory if spike else 0);  acc' = 0

``fire="event"``: each event ``v1 = ovf_v(v + (w << s))``, tested and reset at once; the end of the
timestep is an event of its own, ``v1 = ovf_v(L(v) + (b << bias_shift))``, tested and reset alike.
A spike caused by an input event loads ``ref`` with ``refractory + 1`` (the end of the same
timestep counts it down once), one at the end of a timestep with ``refractory``. A neuron with
``ref > 0`` ignores events, does not leak and does not fire; its current still evolves.

Presets: ODIN (Frenkel et al., "A 0.086-mm² 12.7-pJ/SOP 64k-synapse 256-neuron online-learning
digital spiking neuromorphic processor in 28-nm CMOS", IEEE TBioCAS 13(1), 2019) is
``fire="event"``, an 8-bit unsigned saturating membrane, ``leak="sub"``, ``>=`` and reset to 0:
``v = clip(v + w, 0, 255)`` per event, ``v = max(v - leak, 0)`` per time reference, a spike as soon
as ``v >= θ``. Loihi as modelled by Lava's ``PyLifModelBitAcc``: ``fire="timestep"``, current
synapse with ``current_decay = du + 1``, 24-bit wrapping current, 24-bit membrane clipped to
``±(2**23 - 1)``, ``leak="mul"`` with ``leak_decay = dv``, ``input_shift = 6``, threshold
``vth << 6`` tested with ``>``, reset to 0.

Core
----
``N`` neurons, ``M`` input axons and, with ``recurrent``, ``N`` more axons ``M + n`` carrying the
spikes of neuron ``n``. ``weights[a, n]`` is the weight from axon ``a`` onto neuron ``n``. A
timestep is processed in this order:

1. The spikes emitted during the previous timestep, in emission order, as events of axons
   ``M + n`` (at most ``recurrent_depth`` of them per timestep; further spikes are counted in
   ``dropped`` and not delivered). A recurrent connection therefore delays by one timestep.
2. The external input events, in arrival order (ascending axon order for a ``T x M`` raster).
3. The end-of-timestep update of every neuron.

Spikes are emitted, and numbered for recurrence, in processing order: for each event (and for
the end-of-timestep update) the neurons that fire, by ascending address. Every event costs ``N``
synaptic operations (SOPs), zero weights included.
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "NEURON_DEFAULTS",
    "GoldenResult",
    "SnnModel",
    "accumulator_width",
    "end_update",
    "event_update",
    "neuron_params",
]

#: Every neuron parameter with its default; the same names as the hardware's parameter set.
NEURON_DEFAULTS = {
    "weight_width": 8,
    "membrane_width": 16,
    "membrane_signed": True,
    "overflow": "saturate",
    "leak": "none",
    "leak_shift": 4,
    "leak_decay": 0,
    "leak_sub": 0,
    "synapse": "none",
    "current_width": 16,
    "current_decay": 0,
    "current_overflow": "wrap",
    "input_shift": 0,
    "threshold": 64,
    "threshold_mode": ">=",
    "reset": "zero",
    "refractory": 0,
    "bias": False,
    "bias_width": 8,
    "bias_shift": 0,
    "fire": "timestep",
}

_CHOICES = {
    "overflow": ("saturate", "wrap"),
    "leak": ("none", "shift", "mul", "sub"),
    "synapse": ("none", "current"),
    "current_overflow": ("saturate", "wrap"),
    "threshold_mode": (">=", ">"),
    "reset": ("zero", "subtract"),
    "fire": ("timestep", "event"),
}


def neuron_params(params=None, **changes):
    """Complete a set of neuron parameters with defaults.

    Parameters
    ----------
    params : dict or object with ``to_dict()``, optional
        Parameters by name (as written by the hardware parameter set's ``to_dict``).
    **changes
        Parameters overriding those in ``params``.

    Returns
    -------
    dict
        Every parameter of :data:`NEURON_DEFAULTS`.

    Raises
    ------
    ValueError
        An unknown parameter name or an unknown mode.
    """
    if params is None:
        given = {}
    elif hasattr(params, "to_dict"):
        given = dict(params.to_dict())
    else:
        given = dict(params)
    given.update(changes)
    unknown = sorted(set(given) - set(NEURON_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown neuron parameter(s): {', '.join(unknown)}")
    p = dict(NEURON_DEFAULTS)
    p.update(given)
    for name, choices in _CHOICES.items():
        if p[name] not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {p[name]!r}")
    return p


def accumulator_width(weight_width, max_events):
    """Signed width that holds any sum of ``max_events`` weights of ``weight_width`` bits."""
    max_abs = max(1, max_events) * 2 ** (weight_width - 1)
    return int(max_abs).bit_length() + 1


def _membrane_range(p):
    n = p["membrane_width"]
    if not p["membrane_signed"]:
        return 0, 2**n - 1
    hi = 2 ** (n - 1) - 1
    return (-hi if p["overflow"] == "saturate" else -(2 ** (n - 1))), hi


def _wrap(x, width, signed):
    x = np.asarray(x, dtype=np.int64)
    if signed:
        half = 2 ** (width - 1)
        return ((x + half) % (2 * half)) - half
    return x % (2**width)


def _ovf_v(p, x):
    lo, hi = _membrane_range(p)
    if p["overflow"] == "saturate":
        return np.clip(x, lo, hi)
    return _wrap(x, p["membrane_width"], p["membrane_signed"])


def _ovf_u(p, x):
    n = p["current_width"]
    if p["current_overflow"] == "saturate":
        hi = 2 ** (n - 1) - 1
        return np.clip(x, -hi, hi)
    return _wrap(x, n, True)


def _decay(x, d):
    """``sgn(x) * ((|x| * (4096 - d)) >> 12)``: multiplicative decay rounding toward zero."""
    return np.sign(x) * ((np.abs(x) * (4096 - d)) >> 12)


def _leak(p, v):
    mode = p["leak"]
    if mode == "none":
        return v
    if mode == "shift":
        return v - (v >> p["leak_shift"])
    if mode == "mul":
        return _decay(v, p["leak_decay"])
    c = p["leak_sub"]
    return np.where(v > 0, np.maximum(v - c, 0), np.where(v < 0, np.minimum(v + c, 0), 0))


def _fires(p, v1):
    if p["threshold_mode"] == ">=":
        return v1 >= p["threshold"]
    return v1 > p["threshold"]


def _after_spike(p, v1, spike):
    reset = np.zeros_like(v1) if p["reset"] == "zero" else v1 - p["threshold"]
    return np.where(spike, reset, v1)


def event_update(p, state, weights, acc_width):
    """Apply one input event to every neuron.

    Parameters
    ----------
    p : dict
        Neuron parameters (see :func:`neuron_params`).
    state : dict of numpy.ndarray
        ``v``, ``u``, ``acc``, ``ref`` (int64 arrays of one length); updated in place.
    weights : numpy.ndarray
        The event's weight onto each neuron.
    acc_width : int
        Width of the timestep accumulator.

    Returns
    -------
    numpy.ndarray
        Boolean spike vector (all false with ``fire="timestep"``).
    """
    w = np.asarray(weights, dtype=np.int64)
    if p["fire"] == "timestep":
        amax = 2 ** (acc_width - 1) - 1
        state["acc"] = np.clip(state["acc"] + w, -amax, amax)
        return np.zeros(w.shape, dtype=bool)
    v, ref = state["v"], state["ref"]
    active = ref == 0
    v1 = _ovf_v(p, v + (w << p["input_shift"]))
    spike = active & _fires(p, v1)
    state["v"] = np.where(active, _after_spike(p, v1, spike), v)
    if p["refractory"]:
        state["ref"] = np.where(spike, p["refractory"] + 1, ref)
    return spike


def end_update(p, state, bias=None):
    """Apply the end-of-timestep update to every neuron.

    Parameters
    ----------
    p : dict
        Neuron parameters.
    state : dict of numpy.ndarray
        ``v``, ``u``, ``acc``, ``ref``; updated in place.
    bias : numpy.ndarray, optional
        Per-neuron bias (ignored unless ``p["bias"]``).

    Returns
    -------
    numpy.ndarray
        Boolean spike vector.
    """
    v, ref = state["v"], state["ref"]
    b = 0
    if p["bias"] and bias is not None:
        b = np.asarray(bias, dtype=np.int64) << p["bias_shift"]
    if p["fire"] == "timestep":
        drive = state["acc"] << p["input_shift"]
        if p["synapse"] == "current":
            state["u"] = _ovf_u(p, _decay(state["u"], p["current_decay"]) + drive)
            drive = state["u"]
        state["acc"] = np.zeros_like(state["acc"])
        v1 = _ovf_v(p, _leak(p, v) + drive + b)
    else:
        v1 = _ovf_v(p, _leak(p, v) + b)
    active = ref == 0
    spike = active & _fires(p, v1)
    state["v"] = np.where(active, _after_spike(p, v1, spike), v)
    if p["refractory"]:
        state["ref"] = np.where(active, np.where(spike, p["refractory"], 0), ref - 1)
    return spike


@dataclass
class GoldenResult:
    """Outcome of :meth:`SnnModel.run`.

    Members
    -------
    spikes : numpy.ndarray
        ``T x N`` bool, neuron fired at least once in the timestep.
    spike_counts : numpy.ndarray
        ``T x N`` int, spikes per neuron and timestep (more than one only with ``fire="event"``).
    events : list of list of int
        Per timestep, the output spike addresses in emission order.
    membrane : numpy.ndarray or None
        ``T x N`` membrane after each timestep's end-of-timestep update (after reset).
    current : numpy.ndarray or None
        ``T x N`` synaptic current after each timestep (``synapse="current"``).
    counters : dict
        ``timesteps, input_events, recurrent_events, sops, output_spikes, dropped``.
    """

    spikes: np.ndarray
    spike_counts: np.ndarray
    events: list
    membrane: "np.ndarray | None" = None
    current: "np.ndarray | None" = None
    counters: dict = field(default_factory=dict)

    @property
    def sops(self):
        """Synaptic operations performed."""
        return self.counters["sops"]


class SnnModel:
    """The spiking core, event by event.

    Parameters
    ----------
    params : dict or object with ``to_dict()``
        Neuron parameters (see :func:`neuron_params`).
    weights : array_like
        ``(M + N) x N`` with ``recurrent``, else ``M x N``; signed integers of ``weight_width``.
    recurrent : bool
        Whether the last ``N`` axons carry the neurons' own spikes (delayed by one timestep).
    recurrent_depth : int, optional
        Recurrent spikes delivered per timestep at most (default ``N``).
    bias : array_like, optional
        ``N`` signed integers of ``bias_width`` (with ``params["bias"]``; default zeros).

    Raises
    ------
    ValueError
        Weights or bias of the wrong shape or out of range.
    """

    def __init__(self, params, weights, *, recurrent=False, recurrent_depth=None, bias=None):
        self.p = neuron_params(params)
        w = np.asarray(weights)
        if w.ndim != 2 or not np.issubdtype(w.dtype, np.integer):
            raise ValueError(f"weights must be a 2-D integer array, not {w.dtype} of shape {w.shape}")
        self.neurons = n = w.shape[1]
        self.recurrent = bool(recurrent)
        self.axons = w.shape[0] - (n if self.recurrent else 0)
        if self.axons < 1:
            raise ValueError(f"weights must have more than {n if recurrent else 0} rows, not {w.shape[0]}")
        ww = self.p["weight_width"]
        lo, hi = -(2 ** (ww - 1)), 2 ** (ww - 1) - 1
        if w.size and (w.min() < lo or w.max() > hi):
            raise ValueError(f"weights must be integers in {lo}..{hi}")
        self.weights = w.astype(np.int64)
        self.recurrent_depth = n if recurrent_depth is None else int(recurrent_depth)
        if bias is None:
            bias = np.zeros(n, dtype=np.int64)
        b = np.asarray(bias)
        bw = self.p["bias_width"]
        blo, bhi = -(2 ** (bw - 1)), 2 ** (bw - 1) - 1
        if b.shape != (n,) or not np.issubdtype(b.dtype, np.integer):
            raise ValueError(f"bias must be {n} integers, not {b.dtype} of shape {b.shape}")
        if b.size and (b.min() < blo or b.max() > bhi):
            raise ValueError(f"bias must be integers in {blo}..{bhi}")
        self.bias = b.astype(np.int64)
        max_events = self.axons + (self.recurrent_depth if self.recurrent else 0)
        self.acc_width = accumulator_width(ww, max_events)
        self.reset()

    def reset(self):
        """Zero every neuron's state, the recurrent queue and the counters."""
        n = self.neurons
        self.state = {k: np.zeros(n, dtype=np.int64) for k in ("v", "u", "acc", "ref")}
        self._queue = []
        self.counters = dict(timesteps=0, input_events=0, recurrent_events=0, sops=0,
                             output_spikes=0, dropped=0)

    def _event(self, axon, emitted, queue):
        spike = event_update(self.p, self.state, self.weights[axon], self.acc_width)
        self.counters["sops"] += self.neurons
        self._emit(spike, emitted, queue)

    def _emit(self, spike, emitted, queue):
        for nid in np.flatnonzero(spike):
            emitted.append(int(nid))
            self.counters["output_spikes"] += 1
            if self.recurrent:
                if len(queue) < self.recurrent_depth:
                    queue.append(int(nid))
                else:
                    self.counters["dropped"] += 1

    def _accumulate(self, axons):
        """Events of a timestep with ``fire="timestep"``: only the accumulator changes."""
        if not axons:
            return
        amax = 2 ** (self.acc_width - 1) - 1
        sums = self.state["acc"] + np.cumsum(self.weights[axons], axis=0)
        if np.abs(sums).max() <= amax:
            # No partial sum saturates: the result is the exact sum (the common, fast case).
            self.state["acc"] = sums[-1]
            return
        for a in axons:
            event_update(self.p, self.state, self.weights[a], self.acc_width)

    def step(self, events=()):
        """Run one timestep.

        Parameters
        ----------
        events : iterable of int
            External axon addresses in arrival order (``0 <= a < M``; others are ignored, as the
            hardware ignores them).

        Returns
        -------
        list of int
            Output spike addresses in emission order.
        """
        emitted, queue = [], []
        replayed = [self.axons + nid for nid in self._queue]
        external = [int(a) for a in events if 0 <= int(a) < self.axons]
        self.counters["recurrent_events"] += len(replayed)
        self.counters["input_events"] += len(external)
        axons = replayed + external
        if self.p["fire"] == "timestep":
            self._accumulate(axons)
            self.counters["sops"] += self.neurons * len(axons)
        else:
            for a in axons:
                self._event(a, emitted, queue)
        spike = end_update(self.p, self.state, self.bias)
        self._emit(spike, emitted, queue)
        self._queue = queue
        self.counters["timesteps"] += 1
        return emitted

    def run(self, input_spikes, *, record_membrane=False):
        """Run a ``T x M`` spike raster from the current state.

        Parameters
        ----------
        input_spikes : array_like
            ``T x M`` booleans; row ``t`` lists the axons firing in timestep ``t``.
        record_membrane : bool
            Record membrane (and current) after every timestep.

        Returns
        -------
        :class:`GoldenResult`
        """
        x = np.asarray(input_spikes).astype(bool)
        if x.ndim != 2 or x.shape[1] != self.axons:
            raise ValueError(f"input_spikes must be T x {self.axons}, not of shape {x.shape}")
        t_steps, n = x.shape[0], self.neurons
        counts = np.zeros((t_steps, n), dtype=np.int64)
        membrane = np.zeros((t_steps, n), dtype=np.int64) if record_membrane else None
        current = None
        if record_membrane and self.p["synapse"] == "current":
            current = np.zeros((t_steps, n), dtype=np.int64)
        events = []
        for t in range(t_steps):
            out = self.step(np.flatnonzero(x[t]))
            events.append(out)
            for nid in out:
                counts[t, nid] += 1
            if membrane is not None:
                membrane[t] = self.state["v"]
            if current is not None:
                current[t] = self.state["u"]
        return GoldenResult(spikes=counts > 0, spike_counts=counts, events=events,
                            membrane=membrane, current=current, counters=dict(self.counters))
