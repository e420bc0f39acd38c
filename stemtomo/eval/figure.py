"""Evaluation figures (matplotlib, Agg, no pyplot state): orthoslices + error map, FSC curve.

Volumes are shown min–max normalized, central slices: xy (z = nz/2), xz (y = ny/2), zy (x = nx/2), with
the absolute error ``|volume − reference|`` on its own colour scale. Stacks show the central image.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from stemtomo.eval.fsc import THRESHOLDS, FscResult
from stemtomo.eval.metrics import minmax


def _orthoslices(vol: np.ndarray) -> list[tuple[str, np.ndarray]]:
    nz, ny, nx = vol.shape
    return [
        (f"xy (z={nz // 2})", vol[nz // 2]),
        (f"xz (y={ny // 2})", vol[:, ny // 2, :]),
        (f"zy (x={nx // 2})", vol[:, :, nx // 2].T),
    ]


def save_figure(
    path: str | os.PathLike[str],
    *,
    pair: tuple[np.ndarray, np.ndarray] | None = None,
    stacks: bool = False,
    fsc: FscResult | None = None,
    title: str = "",
) -> None:
    """Write a PNG with the comparison of ``pair = (volume, reference)`` and/or an FSC curve.

    Parameters
    ----------
    pair : two arrays ``(nz, ny, nx)`` (volumes) or ``(n, ny, nx)`` (stacks, with ``stacks=True``) of equal shape.
    fsc : an FSC curve to plot (thresholds 0.143 and 0.5 drawn).
    """
    from matplotlib.figure import Figure

    rows = 0 if pair is None else 3
    cols = 1 if pair is None or stacks else 3
    extra = 1 if fsc is not None else 0
    fig = Figure(figsize=(3.2 * max(cols, 2), 3.0 * (rows + extra) + 0.4), layout="constrained")
    gs = fig.add_gridspec(rows + extra, max(cols, 1))
    if pair is not None:
        _pair_panels(fig, gs, pair, stacks)
    if fsc is not None:
        ax = fig.add_subplot(gs[rows, :])
        _fsc_panel(ax, fsc)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(os.fspath(path), format="png", dpi=100)


def _pair_panels(fig: Any, gs: Any, pair: tuple[np.ndarray, np.ndarray], stacks: bool) -> None:
    vol, ref = (minmax(a) for a in pair)
    err = np.abs(vol - ref)
    emax = float(err.max()) or 1.0
    if stacks:
        i = vol.shape[0] // 2
        views = {name: [(f"image {i}", a[i])] for name, a in (("volume", vol), ("reference", ref), ("|error|", err))}
    else:
        views = {"volume": _orthoslices(vol), "reference": _orthoslices(ref), "|error|": _orthoslices(err)}
    for r, (name, panels) in enumerate(views.items()):
        for c, (label, img) in enumerate(panels):
            ax = fig.add_subplot(gs[r, c])
            vmax = emax if name == "|error|" else 1.0
            im = ax.imshow(img, cmap="magma" if name == "|error|" else "gray", vmin=0.0, vmax=vmax,
                           interpolation="nearest", origin="lower")
            ax.set_title(f"{name}: {label}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "|error|" and c == len(panels) - 1:
                fig.colorbar(im, ax=ax, shrink=0.8)


def _fsc_panel(ax: Any, fsc: FscResult) -> None:
    f = fsc.frequency_per_px
    unit = "1/px"
    if fsc.pixel_size_angstrom is not None:
        f = f / fsc.pixel_size_angstrom
        unit = "1/Å"
    ax.plot(f, fsc.fsc, "-o", ms=3, lw=1.2, color="C0", label="FSC")
    for t, color in zip(THRESHOLDS, ("C3", "C2"), strict=True):
        res_px, at_nyq = fsc.resolution_px(t)
        res = fsc.resolution_angstrom(t)
        text = f"{res:.3g} Å" if res is not None else f"{res_px:.3g} px"
        ax.axhline(t, color=color, ls="--", lw=0.8, label=f"{t:g}: {'≤ ' if at_nyq else ''}{text}")
    ax.set_xlabel(f"spatial frequency ({unit})")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


__all__ = ["save_figure"]
