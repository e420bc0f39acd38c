"""Divergences between the data's noise distribution and a noise model's (supplemental Table 1 of the paper).

Both distributions are histograms on ONE fixed bin set over the joint range of the two samples: the data's
held-out residuals ``noisy - clean`` and noise sampled from the model conditioned on the SAME clean values.
Then, with bin probabilities ``p`` (data) and ``q`` (model) and ``m = (p + q)/2``:

- Jensen–Shannon divergence ``JSD = ½ KL(p‖m) + ½ KL(q‖m)``, natural log (nats; ≤ ln 2 ≈ 0.693);
- Bhattacharyya coefficient ``BC = Σ √(p·q)`` (1 for identical histograms);
- Bhattacharyya distance ``d_BC = -ln BC`` (nats).

Values are reported unscaled. The paper's JSD 0.58–1.07 and d_BC 0.03–0.15 cannot be unscaled standard values
(JSD in nats is ≤ 0.693); they are most likely ×10 (METHOD.md §5.6, unverified). Because the noise is signal
dependent the metrics are also given per clean-intensity band (equal-count quantile bands of ``clean``).
The joint range is the [0.01, 99.99] percentile range of both samples together; values outside it are counted
in the edge bins, so no mass is lost. Finite samples give JSD > 0 even for a perfect model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from stemtomo.noise.base import NoiseModel

LOG_BASE = "e"
"""All divergences are in nats (natural logarithm), unscaled."""


def common_edges(a: np.ndarray, b: np.ndarray, bins: int = 128, tail_percent: float = 0.01) -> np.ndarray:
    """``bins + 1`` equally spaced edges over the joint robust range of two samples."""
    both = np.concatenate([np.ravel(a), np.ravel(b)])
    lo, hi = np.percentile(both, [tail_percent, 100.0 - tail_percent])
    if not hi > lo:
        lo, hi = float(both.min()), float(both.max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def histogram(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin probabilities of ``x`` on ``edges``; values outside go to the edge bins."""
    x = np.clip(np.ravel(x), edges[0], edges[-1])
    h, _ = np.histogram(x, bins=edges)
    total = h.sum()
    return h / total if total else h.astype(np.float64)


def divergences(p: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """JSD (nats), BC and d_BC = -ln BC between two probability vectors on the same bins."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    jsd = 0.5 * kl(p) + 0.5 * kl(q)
    bc = float(np.sum(np.sqrt(p * q)))
    return {"jsd": max(jsd, 0.0), "bc": min(bc, 1.0), "d_bc": -math.log(bc) if bc > 0 else math.inf}


def sample_model(
    model: NoiseModel, clean: np.ndarray, seed: int = 0, chunk: int = 1 << 18
) -> np.ndarray:
    """Noise from ``model`` conditioned on ``clean`` (any shape; numpy, on the model's device)."""
    device = next(iter(model.parameters()), torch.zeros(())).device
    gen = torch.Generator(device=device).manual_seed(seed)
    flat = torch.as_tensor(np.ravel(clean), dtype=torch.float32, device=device)
    out = []
    with torch.no_grad():
        for s in range(0, flat.numel(), chunk):
            out.append(model.sample(flat[s : s + chunk], generator=gen).cpu().numpy())
    return np.concatenate(out).reshape(np.shape(clean)) if out else np.zeros(np.shape(clean), np.float32)


def band_edges(clean: np.ndarray, n_bands: int) -> np.ndarray:
    """Equal-count band edges of the clean intensities (``n_bands + 1`` values, first/last = min/max)."""
    edges = np.quantile(np.ravel(clean), np.linspace(0.0, 1.0, n_bands + 1))
    return np.maximum.accumulate(edges)


def compare(
    noise: np.ndarray,
    model_noise: np.ndarray,
    clean: np.ndarray,
    *,
    bins: int = 128,
    n_bands: int = 4,
    edges: np.ndarray | None = None,
) -> dict[str, Any]:
    """Divergences of data noise vs model noise (same clean values), overall and per clean band.

    Parameters
    ----------
    noise : data residuals ``noisy - clean`` (held out), any shape.
    model_noise : model samples conditioned on ``clean``, same shape.
    clean : the clean intensities both are conditioned on.
    edges : bin edges; default :func:`common_edges` of ``noise`` and ``model_noise``.

    Returns
    -------
    ``{"log_base": "e", "scaling": 1, "bins": ..., "overall": {jsd, bc, d_bc, data_mean, data_var,
    model_mean, model_var, n}, "bands": [{clean_lo, clean_hi, ...}, ...]}``
    """
    noise, model_noise, clean = (np.ravel(np.asarray(a, dtype=np.float64)) for a in (noise, model_noise, clean))
    e = common_edges(noise, model_noise, bins) if edges is None else np.asarray(edges)

    def stats(sel: np.ndarray | slice) -> dict[str, Any]:
        a, b = noise[sel], model_noise[sel]
        d = divergences(histogram(a, e), histogram(b, e)) if a.size else {"jsd": math.nan, "bc": math.nan, "d_bc": math.nan}
        d.update(
            n=int(a.size),
            data_mean=float(a.mean()) if a.size else math.nan,
            data_var=float(a.var()) if a.size else math.nan,
            model_mean=float(b.mean()) if b.size else math.nan,
            model_var=float(b.var()) if b.size else math.nan,
        )
        return d

    bands = []
    be = band_edges(clean, n_bands)
    for k in range(n_bands):
        hi_ok = clean <= be[k + 1] if k == n_bands - 1 else clean < be[k + 1]
        entry = {"clean_lo": float(be[k]), "clean_hi": float(be[k + 1])}
        entry.update(stats((clean >= be[k]) & hi_ok))
        bands.append(entry)
    return {
        "log_base": LOG_BASE,
        "scaling": 1,
        "bins": int(len(e) - 1),
        "range": [float(e[0]), float(e[-1])],
        "overall": stats(slice(None)),
        "bands": bands,
    }


def evaluate_noise_model(
    model: NoiseModel, noise: np.ndarray, clean: np.ndarray, *, bins: int = 128, n_bands: int = 4, seed: int = 0
) -> dict[str, Any]:
    """Sample ``model`` on ``clean`` and :func:`compare` with the data residuals ``noise``."""
    return compare(noise, sample_model(model, clean, seed), clean, bins=bins, n_bands=n_bands)


__all__ = [
    "LOG_BASE",
    "band_edges",
    "common_edges",
    "compare",
    "divergences",
    "evaluate_noise_model",
    "histogram",
    "sample_model",
]
