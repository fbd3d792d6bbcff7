"""The spiking core's parameters as one flat set: TOML ``[snn-core]`` tables and command-line flags.

:class:`~npuforge.generators.snn_core.SnnCoreConfig` nests the neuron's semantics in a
:class:`~npuforge.hdl.lif.LifParams`. For files and flags every parameter of both sits at one
level, beside a ``preset`` that picks the starting point::

    [snn-core]
    preset = "odin"        # "none" (the defaults), "odin" or "loihi"
    neurons = 128
    threshold = 100        # a neuron parameter, next to the core's

:class:`SnnCoreParameters` lists those fields (with the dataclasses' own defaults, so the two
never drift apart) and builds the nested config with :meth:`SnnCoreParameters.from_dict`. Only
the parameters that are given override the preset.
"""

import dataclasses

from .generators.snn_core import COUNTER_NAMES, MEMORY_KINDS, SnnCoreConfig
from .hdl.lif import (
    FIRE_MODES,
    LEAK_MODES,
    OVERFLOW_MODES,
    RESET_MODES,
    SYNAPSE_MODES,
    THRESHOLD_MODES,
    LifParams,
)

__all__ = ["CORE_FIELDS", "NEURON_FIELDS", "PRESETS", "SNN_CHOICES", "SNN_HELP", "SNN_LIMITS",
           "SnnCoreParameters", "snn_core_figures"]

#: Starting points of ``preset``: the defaults, and the published neuron models' cores.
PRESETS = {"none": SnnCoreConfig, "odin": SnnCoreConfig.odin, "loihi": SnnCoreConfig.loihi}

#: Fields of :class:`SnnCoreConfig` given as flags (``neuron`` is flattened).
CORE_FIELDS = tuple(f.name for f in dataclasses.fields(SnnCoreConfig) if f.name != "neuron")
#: Fields of :class:`LifParams`.
NEURON_FIELDS = tuple(f.name for f in dataclasses.fields(LifParams))

SNN_HELP = {
    "preset": "starting point: none = the defaults below, odin = ODIN's 256x256 core (8-bit "
              "unsigned membrane, 4-bit weights, leak events, fire after each event), loihi = "
              "Loihi's CUBA LIF as Lava models it bit-accurately; other flags override it",
    "neurons": "N, neurons of the core",
    "axons": "M, input axons",
    "lanes": "P, parallel neuron lanes: a power of two dividing neurons (N/P cycles per event)",
    "recurrent": "add N axons carrying the core's own spikes, delayed by one timestep",
    "recurrent_depth": "recurrent spikes queued per timestep; 'auto' = neurons",
    "weight_memory": "where the weights live: auto = SPRAM when they need more than 8 block RAMs",
    "state_memory": "where the neuron state lives: auto = SPRAM when it needs more than 16 block RAMs",
    "counter_width": "bits of each hardware counter",
    "weight_width": "bits of a signed synaptic weight",
    "membrane_width": "bits of the membrane potential",
    "membrane_signed": "signed (two's complement) or unsigned membrane",
    "overflow": "membrane overflow: saturate (signed: symmetric) or wrap",
    "leak": "none (integrate-and-fire), shift (v -= v >> leak_shift), mul (v = v*(4096-leak_decay) "
            ">> 12 toward zero) or sub (linear toward 0 by leak_sub)",
    "leak_shift": "k of the shift leak",
    "leak_decay": "d of the multiplicative leak (factor (4096-d)/4096)",
    "leak_sub": "constant of the linear leak, 0..largest membrane value",
    "synapse": "none, or current: a decaying synaptic current between weights and membrane",
    "current_width": "bits of the signed synaptic current",
    "current_decay": "decay of the current (factor (4096-d)/4096)",
    "current_overflow": "overflow of the current: saturate or wrap",
    "input_shift": "left shift of the summed weights before they enter current or membrane",
    "threshold": "firing threshold, 0..largest membrane value",
    "threshold_mode": "fire when v >= threshold, or v > threshold",
    "reset": "after a spike: zero, or subtract the threshold",
    "refractory": "refractory period in timesteps",
    "bias": "each neuron has a bias (loaded with the weights)",
    "bias_width": "bits of a signed bias",
    "bias_shift": "left shift of the bias",
    "fire": "timestep = integrate events, update and test once per timestep (Loihi); event = "
            "update and test after every event, the end of a timestep being a leak event (ODIN)",
}

#: Inclusive ranges of the integer parameters, for help texts and messages.
SNN_LIMITS = {
    "neurons": (1, 4096), "axons": (1, 4096), "lanes": (1, 64), "recurrent_depth": (1, 4096),
    "counter_width": (8, 48), "weight_width": (1, 16), "membrane_width": (2, 32),
    "leak_shift": (0, 31), "leak_decay": (0, 4096), "current_width": (2, 32),
    "current_decay": (0, 4096), "input_shift": (0, 16), "refractory": (0, 255),
    "bias_width": (1, 24), "bias_shift": (0, 16),
}

#: Allowed values of the string parameters.
SNN_CHOICES = {
    "preset": tuple(PRESETS), "weight_memory": MEMORY_KINDS, "state_memory": MEMORY_KINDS,
    "overflow": OVERFLOW_MODES, "leak": LEAK_MODES, "synapse": SYNAPSE_MODES,
    "current_overflow": OVERFLOW_MODES, "threshold_mode": THRESHOLD_MODES, "reset": RESET_MODES,
    "fire": FIRE_MODES,
}


def _from_dict(cls, values):
    """Build the :class:`SnnCoreConfig` of flat parameters (unknown names are an error).

    Returns
    -------
    SnnCoreConfig

    Raises
    ------
    TypeError, ValueError
        An unknown name, an unknown preset, or a value out of range; the message names the
        parameter.
    """
    values = dict(values)
    preset = values.pop("preset", "none")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(repr, PRESETS))}, not {preset!r}")
    unknown = sorted(set(values) - set(CORE_FIELDS) - set(NEURON_FIELDS))
    if unknown:
        raise ValueError(f"unknown snn-core parameter(s): {', '.join(unknown)}")
    base = PRESETS[preset]()
    neuron = base.neuron.replace(**{k: v for k, v in values.items() if k in NEURON_FIELDS})
    return base.replace(neuron=neuron, **{k: v for k, v in values.items() if k in CORE_FIELDS})


def _flat_fields():
    out = [("preset", str, dataclasses.field(default="none"))]
    for cls, names in ((SnnCoreConfig, CORE_FIELDS), (LifParams, NEURON_FIELDS)):
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        for name in names:
            f = by_name[name]
            out.append((name, f.type, dataclasses.field(default=f.default)))
    return out


SnnCoreParameters = dataclasses.make_dataclass(
    "SnnCoreParameters", _flat_fields(), frozen=True, namespace={"from_dict": classmethod(_from_dict)})
SnnCoreParameters.__module__ = __name__
SnnCoreParameters.__doc__ = """The spiking core's parameters at one level (see the module docstring).

Only its fields and :meth:`from_dict` are used: ``SnnCoreParameters.from_dict({"preset": "odin",
"threshold": 100})`` returns the :class:`~npuforge.generators.snn_core.SnnCoreConfig`.
"""


def snn_core_figures(config):
    """Derived figures of a core, for manifests and summaries.

    Returns
    -------
    dict
        Memory sizes and kinds, throughput (SOPs per cycle), load and event formats, the
        resource estimate.
    """
    p = config.neuron
    sweep = config.sweep_cycles()
    return {
        "rows": config.rows,
        "sops_per_event": config.neurons,
        "cycles_per_event": sweep,
        "sops_per_cycle": round(config.neurons / sweep, 3),
        "accumulator_bits": config.acc_width,
        "state_bits_per_neuron": config.state_width,
        "memories": {
            "weights": {"kind": config.weight_memory_kind, "words": config.weight_words,
                        "width": config.weight_word_width},
            "state": {"kind": config.state_memory_kind, "words": config.rows,
                      "width": config.state_word_width},
            "bias": {"kind": "bram", "words": config.bias_words,
                     "width": config.lanes * p.bias_width if p.bias else 0},
        },
        "memory_bits": config.memory_bits(),
        "spram_blocks": config.spram_blocks,
        "estimated_resources": config.estimate_resources(),
        "load": {"words": config.load_words, "data_bits": config.load_data_width,
                 "order": "weight words (axon-major: address = axon * N/P + row, lane p in bits "
                          "p*w..), then bias words; see SnnCoreConfig.pack_weights"},
        "events_in": "{addr, eot}: an axon address, or eot = 1 to end the timestep",
        "events_out": "{addr, eot}: a neuron address, ascending within each sweep; eot = 1 ends the "
                      "timestep",
        "counters": list(COUNTER_NAMES),
    }
