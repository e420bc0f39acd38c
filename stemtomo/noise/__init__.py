"""Noise models of STEM detector noise: a conditional normalizing flow (the paper's), Gaussian and scaled
Poisson baselines; model files; fitting on paired clean/noisy stacks; sampling; divergence metrics.

All models describe ``noise = noisy - clean`` given ``clean`` (normalized [0, 1] intensities), elementwise.
"""

from stemtomo.noise.base import (
    NOISE_SCHEMA,
    NoiseModel,
    build_noise_model,
    load_noise_model,
    noise_model_kinds,
    register_noise_model,
    save_noise_model,
)
from stemtomo.noise.flow import FlowNoiseModel
from stemtomo.noise.gaussian import GaussianNoiseModel
from stemtomo.noise.poisson import PoissonNoiseModel

__all__ = [
    "NOISE_SCHEMA",
    "FlowNoiseModel",
    "GaussianNoiseModel",
    "NoiseModel",
    "PoissonNoiseModel",
    "build_noise_model",
    "load_noise_model",
    "noise_model_kinds",
    "register_noise_model",
    "save_noise_model",
]
