"""Noise models of STEM detector noise: a conditional normalizing flow (the paper's), Gaussian and scaled
Poisson baselines; model files; fitting on paired clean/noisy stacks; sampling; divergence metrics.

All models describe ``noise = noisy - clean`` given ``clean`` (normalized [0, 1] intensities), elementwise.
Names are imported lazily (PEP 562) so that ``stemtomo.noise.config`` can be read without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stemtomo.noise.base import (
        NOISE_SCHEMA,
        NoiseModel,
        build_noise_model,
        load_noise_model,
        noise_model_kinds,
        register_noise_model,
        save_noise_model,
    )
    from stemtomo.noise.calibration import Calibration, calibrate
    from stemtomo.noise.config import FitConfig
    from stemtomo.noise.fit import FitResult, fit_noise_model
    from stemtomo.noise.flow import FlowNoiseModel
    from stemtomo.noise.gaussian import GaussianNoiseModel
    from stemtomo.noise.metrics import compare, divergences, evaluate_noise_model
    from stemtomo.noise.pairs import PairedData, prepare_pairs
    from stemtomo.noise.poisson import PoissonNoiseModel

_WHERE = {
    "NOISE_SCHEMA": "base",
    "NoiseModel": "base",
    "build_noise_model": "base",
    "load_noise_model": "base",
    "noise_model_kinds": "base",
    "register_noise_model": "base",
    "save_noise_model": "base",
    "Calibration": "calibration",
    "calibrate": "calibration",
    "FitConfig": "config",
    "FitResult": "fit",
    "fit_noise_model": "fit",
    "FlowNoiseModel": "flow",
    "GaussianNoiseModel": "gaussian",
    "compare": "metrics",
    "divergences": "metrics",
    "evaluate_noise_model": "metrics",
    "PairedData": "pairs",
    "prepare_pairs": "pairs",
    "PoissonNoiseModel": "poisson",
}

__all__ = [
    "Calibration",
    "FitConfig",
    "FitResult",
    "FlowNoiseModel",
    "GaussianNoiseModel",
    "NOISE_SCHEMA",
    "NoiseModel",
    "PairedData",
    "PoissonNoiseModel",
    "build_noise_model",
    "calibrate",
    "compare",
    "divergences",
    "evaluate_noise_model",
    "fit_noise_model",
    "load_noise_model",
    "noise_model_kinds",
    "prepare_pairs",
    "register_noise_model",
    "save_noise_model",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"stemtomo.noise.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'stemtomo.noise' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
