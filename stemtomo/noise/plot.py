"""Figure comparing the data's noise histogram with each model's (like the paper's supplemental Fig. 4)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from stemtomo.noise.metrics import band_edges, histogram


def plot_noise_histograms(
    path: str | os.PathLike[str],
    noise: np.ndarray,
    clean: np.ndarray,
    model_noise: Mapping[str, np.ndarray],
    edges: np.ndarray,
    n_bands: int = 4,
) -> None:
    """Write a PNG: one panel for all pixels and one per clean-intensity band, log-scale densities.

    Parameters
    ----------
    path : output PNG (written atomically; the caller checks overwrite first).
    noise, clean : held-out residuals and their clean values (same shape).
    model_noise : model name → samples conditioned on the same ``clean``.
    edges : the bin edges used for the metrics.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg canvas)

    from stemtomo.io import atomic_file

    noise, clean = np.ravel(noise), np.ravel(clean)
    be = band_edges(clean, n_bands)
    sels = [("all pixels", np.ones(noise.shape, bool))]
    for k in range(n_bands):
        hi = clean <= be[k + 1] if k == n_bands - 1 else clean < be[k + 1]
        sels.append((f"clean {be[k]:.2f}–{be[k + 1]:.2f}", (clean >= be[k]) & hi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    width = float(edges[1] - edges[0])
    fig = Figure(figsize=(3.2 * len(sels), 3.0))
    axes = fig.subplots(1, len(sels), squeeze=False)[0]
    for ax, (title, sel) in zip(axes, sels, strict=True):
        ax.fill_between(centres, histogram(noise[sel], edges) / width, step="mid", color="0.75", label="data")
        for name, samples in model_noise.items():
            ax.step(centres, histogram(np.ravel(samples)[sel], edges) / width, where="mid", lw=1.2, label=name)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("noise (normalized intensity)")
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


__all__ = ["plot_noise_histograms"]
