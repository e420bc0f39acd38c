"""Detector noise for simulated tilt series: parametric STEM noise, or a fitted noise-model file.

Parametric model (no fitted model needed), applied to clean intensities ``I`` in [0, 1]:

1. shot noise: ``Poisson(dose·I) / dose`` (``dose`` = electrons per pixel at ``I = 1``; variance ``I/dose``);
2. read noise: ``+ N(0, read_noise²)``;
3. scan correlation: the noise field ``n = noisy - I`` is filtered along the fast scan direction x by the
   AR(1) recursion ``e_0 = n_0``, ``e_k = ρ·e_{k-1} + √(1-ρ²)·n_k``, which keeps the variance of a
   stationary noise and makes neighbouring pixels correlate with coefficient ρ (``scan_correlation``);
4. ``clip`` to [0, 1] (as the paper does after adding flow noise).

With a noise-model file (``stemtomo noise fit``): ``noisy = clip(clean + model.sample(clean), 0, 1)``.
Randomness comes from a ``torch.Generator`` on the data's device: same seed + device → same noise.
"""

from __future__ import annotations

import math
import os

import torch

from stemtomo.errors import ParameterError
from stemtomo.simulate.config import NoiseConfig


def ar1_filter(noise: torch.Tensor, rho: float) -> torch.Tensor:
    """AR(1)-filter ``noise (..., nx)`` along the last axis (x, fast scan) with coefficient ``rho``."""
    if rho == 0:
        return noise
    scale = math.sqrt(1.0 - rho * rho)
    cols = [noise[..., 0]]
    for k in range(1, noise.shape[-1]):
        cols.append(rho * cols[-1] + scale * noise[..., k])
    return torch.stack(cols, dim=-1)


def apply_parametric_noise(
    clean: torch.Tensor, config: NoiseConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noisy intensities from clean ones (module docstring); same shape/dtype/device as ``clean``.

    Raises
    ------
    ParameterError
        If the configuration is out of range.
    """
    config.validate()
    noisy = clean
    if config.dose is not None:
        rate = (clean.clamp(min=0.0) * config.dose).to(torch.float64)
        noisy = (torch.poisson(rate, generator=generator) / config.dose).to(clean.dtype)
    if config.read_noise > 0:
        g = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
        noisy = noisy + config.read_noise * g
    if config.scan_correlation > 0:
        noisy = clean + ar1_filter(noisy - clean, config.scan_correlation)
    return noisy.clamp(0.0, 1.0) if config.clip else noisy


def apply_noise_model(
    clean: torch.Tensor, model_path: str | os.PathLike[str], generator: torch.Generator | None = None
) -> torch.Tensor:
    """``clip(clean + model.sample(clean), 0, 1)`` with the model of a ``stemtomo noise fit`` file.

    Raises
    ------
    ModelFileError
        If the file is not a valid noise model.
    ParameterError
        If the noise-model package is not available in this installation.
    """
    try:
        from stemtomo.noise import load_noise_model
    except ImportError:  # pragma: no cover - depends on the installation
        raise ParameterError(
            f"--noise-model {model_path}: noise models are not available in this installation"
        ) from None
    model = load_noise_model(model_path).to(device=clean.device)
    with torch.no_grad():
        noise = model.sample(clean, generator=generator)
    return (clean + noise.to(clean.dtype)).clamp(0.0, 1.0)


__all__ = ["NoiseConfig", "apply_noise_model", "apply_parametric_noise", "ar1_filter"]
