"""Spike raster and membrane plot of a spiking-core run (matplotlib, imported only when used)."""

import numpy as np

__all__ = ["plot_raster"]


def plot_raster(result, path, *, membrane=None, input_spikes=None, threshold=None, layers=None,
                title=None, max_traces=6, neuron_labels=None):
    """Draw a spike raster (and membrane traces) to an image file.

    Parameters
    ----------
    result : SnnSimResult, GoldenResult or array_like
        A simulation or golden-model result (its ``spike_counts`` and, when recorded,
        ``membrane`` are used), or a ``T x N`` array of spike counts or booleans.
    path : str or path-like
        Output file; the format follows the extension (``.png``, ``.svg``, ``.pdf``).
    membrane : array_like, optional
        ``T x N`` membrane trace (default: the result's, when recorded).
    input_spikes : array_like, optional
        ``T x M`` input raster, drawn above the output raster.
    threshold : int, optional
        Firing threshold, drawn as a dashed line on the membrane panel.
    layers : sequence of (int, int), optional
        Neuron ranges of layers, separated by lines and labelled on the raster.
    title : str, optional
    max_traces : int
        Membrane traces drawn at most, 1..32: the neurons with the most spikes (of the last layer
        when ``layers`` is given), then those closest to firing.
    neuron_labels : sequence of str, optional
        Names of the layers (same length as ``layers``).

    Returns
    -------
    str
        ``path`` as a string.

    Raises
    ------
    ValueError
        Arrays of inconsistent shapes, or ``max_traces`` out of range.
    ImportError
        matplotlib is not installed (the ``demo`` extra).
    """
    if isinstance(max_traces, bool) or not isinstance(max_traces, int) or not 1 <= max_traces <= 32:
        raise ValueError(f"max_traces must be an integer in 1..32, not {max_traces!r}")
    if hasattr(result, "spike_counts"):
        counts = np.asarray(result.spike_counts)
        if membrane is None:
            membrane = getattr(result, "membrane", None)
    else:
        counts = np.asarray(result).astype(np.int64)
    if counts.ndim != 2:
        raise ValueError(f"spikes must be a T x N array, not of shape {counts.shape}")
    t_steps, n = counts.shape
    if membrane is not None:
        membrane = np.asarray(membrane)
        if membrane.shape != counts.shape:
            raise ValueError(f"membrane must have the spikes' shape {counts.shape}, not {membrane.shape}")
    if input_spikes is not None:
        input_spikes = np.asarray(input_spikes).astype(bool)
        if input_spikes.ndim != 2 or input_spikes.shape[0] != t_steps:
            raise ValueError(f"input_spikes must be a {t_steps} x M array, not of shape "
                             f"{input_spikes.shape}")

    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [("in", 1.0)] if input_spikes is not None else []
    panels.append(("out", 2.0))
    if membrane is not None:
        panels.append(("v", 1.4))
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(9, 2.2 * sum(h for _, h in panels)),
                             gridspec_kw={"height_ratios": [h for _, h in panels]}, squeeze=False)
    axes = {name: ax for (name, _), ax in zip(panels, axes[:, 0])}

    if input_spikes is not None:
        ax = axes["in"]
        ts, idx = np.nonzero(input_spikes)
        ax.scatter(ts, idx, s=4, marker="|", color="0.35", linewidths=0.8)
        ax.set_ylabel("input axon")
        ax.set_ylim(-1, input_spikes.shape[1])
        ax.set_title(f"{int(input_spikes.sum())} input spikes", fontsize=9, loc="left")

    ax = axes["out"]
    ts, idx = np.nonzero(counts)
    sizes = 10 + 8 * (counts[ts, idx] - 1)
    ax.scatter(ts, idx, s=sizes, marker="|", color="tab:blue", linewidths=1.2)
    ax.set_ylabel("neuron")
    ax.set_ylim(-1, n)
    ax.set_title(f"{int(counts.sum())} output spikes", fontsize=9, loc="left")
    if layers:
        labels = list(neuron_labels) if neuron_labels else [f"layer {i + 1}" for i in range(len(layers))]
        for (start, stop), label in zip(layers, labels):
            if start:
                ax.axhline(start - 0.5, color="0.7", linewidth=0.8)
            ax.text(1.005, (start + stop - 1) / 2 / max(1, n), label, transform=ax.transAxes,
                    fontsize=8, va="center", rotation=90)

    if membrane is not None:
        ax = axes["v"]
        # The most active neurons (of the last layer when layers are given), then those that
        # came closest to firing.
        pool = np.arange(*layers[-1]) if layers else np.arange(n)
        order = np.lexsort((-membrane[:, pool].max(axis=0), -counts[:, pool].sum(axis=0)))
        chosen = pool[order[:max_traces]]
        for nid in sorted(chosen):
            ax.step(np.arange(t_steps), membrane[:, nid], where="post", linewidth=1.0,
                    label=f"n{nid}")
        if threshold is not None:
            ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8, label="threshold")
            # Keep the threshold line in view even when no membrane reaches it.
            lo, hi = ax.get_ylim()
            ax.set_ylim(min(lo, threshold), max(hi, threshold * 1.05 if threshold > 0 else hi))
        ax.set_ylabel("membrane")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)

    ax = list(axes.values())[-1]
    ax.set_xlabel("timestep")
    ax.set_xlim(-0.5, t_steps - 0.5)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))     # timesteps are whole numbers
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)
    return str(path)
