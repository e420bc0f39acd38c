"""Noise-model calibration: fit one or several models to prepared pairs and compare them on held-out pixels.

This is the library side of ``stemtomo noise fit``: :func:`calibrate` fits each requested model kind
(:mod:`stemtomo.noise.fit`), evaluates the held-out NLL and the divergence metrics
(:mod:`stemtomo.noise.metrics`) on one common bin set, and returns everything the report and figure need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from stemtomo.noise.base import NoiseModel, build_noise_model
from stemtomo.noise.fit import FitConfig, FitResult, ProgressCallback, fit_from_arrays
from stemtomo.noise.metrics import LOG_BASE, common_edges, compare, sample_model
from stemtomo.noise.pairs import PairedData


@dataclasses.dataclass
class Calibration:
    """Fitted models, their fit results and metrics, and the held-out data they were compared on.

    Attributes
    ----------
    models, results, metrics : per model kind.
    heldout_noise, heldout_clean : the evaluation pixels (a fixed random subset of the held-out split).
    samples : per kind, model noise conditioned on ``heldout_clean``.
    edges : the common histogram bin edges.
    """

    models: dict[str, NoiseModel]
    results: dict[str, FitResult]
    metrics: dict[str, dict[str, Any]]
    heldout_noise: np.ndarray
    heldout_clean: np.ndarray
    samples: dict[str, np.ndarray]
    edges: np.ndarray

    def table(self) -> list[dict[str, Any]]:
        """One row per model: held-out NLL and overall JSD, BC, d_BC (nats, unscaled), fit time, steps."""
        rows = []
        for kind, res in self.results.items():
            o = self.metrics[kind]["overall"]
            rows.append({"model": kind, "heldout_nll": res.heldout_nll, "jsd": o["jsd"], "bc": o["bc"],
                         "d_bc": o["d_bc"], "fit_seconds": res.seconds, "steps": res.steps})
        return rows

    def report(self, prepared: Mapping[str, Any]) -> dict[str, Any]:
        """Plain dictionary for ``MODEL.report.yaml``."""
        return {
            "data": dict(prepared),
            "heldout_pixels_evaluated": int(self.heldout_noise.size),
            "metrics_note": (f"JSD, d_BC in nats (log base {LOG_BASE}), unscaled; the paper's Table 1 values "
                             "are likely x10 (METHOD.md 5.6). NLL in nats/pixel, normalized intensity units."),
            "comparison": self.table(),
            "models": {
                kind: {"config": self.models[kind].config(), "fit": self.results[kind].to_dict(),
                       "metrics": self.metrics[kind]}
                for kind in self.models
            },
        }


def calibrate(
    pairs: PairedData,
    kinds: Sequence[str],
    *,
    model_configs: Mapping[str, Mapping[str, Any]] | None = None,
    fit: FitConfig | None = None,
    device: torch.device | str = "cpu",
    bins: int = 128,
    n_bands: int = 4,
    callback: Callable[[str], ProgressCallback | None] | None = None,
) -> Calibration:
    """Fit each of ``kinds`` to ``pairs`` and compare all on the same held-out pixels and bins.

    Parameters
    ----------
    model_configs : per kind, constructor arguments (e.g. ``{"flow": {"zero_mean": True}}``).
    fit : :class:`FitConfig`; ``fit.seed`` also seeds model initialization, subsets and sampling.
    device : where data and models live (the caller's choice).
    callback : ``callback(kind)`` returns the progress callback for that model's fit (or None).

    Raises
    ------
    ParameterError
        Unknown kind, bad configuration or settings.
    """
    cfg = fit or FitConfig()
    cfg.check()
    configs = dict(model_configs or {})
    for k in kinds:  # validate every configuration before any long computation
        build_noise_model(k, **dict(configs.get(k, {})))
    models: dict[str, NoiseModel] = {}
    h_noise = (pairs.noisy - pairs.clean)[pairs.heldout]
    h_clean = pairs.clean[pairs.heldout]
    sel = np.random.default_rng(cfg.seed + 7).permutation(h_noise.size)[: cfg.max_eval_pixels]
    h_noise, h_clean = h_noise[sel], h_clean[sel]
    results, samples = {}, {}
    for i, kind in enumerate(kinds):
        with torch.random.fork_rng(devices=[]):  # seeded initialization without touching the global RNG
            torch.manual_seed(cfg.seed + i)
            model = models[kind] = build_noise_model(kind, **dict(configs.get(kind, {})))
        cb = callback(kind) if callback is not None else None
        results[kind] = fit_from_arrays(model, pairs.clean, pairs.noisy, pairs.heldout, cfg, cb, device)
        samples[kind] = sample_model(model, h_clean, seed=cfg.seed + 100 + i)
    edges = common_edges(np.concatenate([h_noise, *samples.values()]), h_noise, bins)
    metrics = {k: compare(h_noise, s, h_clean, n_bands=n_bands, edges=edges) for k, s in samples.items()}
    return Calibration(models, results, metrics, h_noise, h_clean, samples, edges)


__all__ = ["Calibration", "calibrate"]
