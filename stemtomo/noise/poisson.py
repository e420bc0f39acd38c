"""Scaled Poisson (shot-noise) baseline: ``noisy = gain·N/k + offset`` with ``N ~ Poisson(k·clean)``.

``k`` is the dose (electrons per pixel at clean intensity 1), ``gain`` and ``offset`` map counts back to the
normalized intensity scale. Then ``E[noisy] = gain·clean + offset`` and ``Var[noisy] = gain²·clean/k``,
so the three parameters are identifiable from the mean and the variance of the residuals against clean.

Likelihood used for fitting and for ``log_prob`` (a documented choice): the exact Poisson mass is not a
density over the continuous residuals of real (or read-noise corrupted) data, and a continuous Poisson via
``lgamma`` is neither normalized nor defined below ``N = -1``. We use the moment-matched Gaussian
approximation ``noise ~ N((gain - 1)·clean + offset, gain²·(k·clean + λ0)/k²)`` with a floor of
``λ0 = 0.25`` counts of variance, which keeps dark pixels finite. Sampling is exact (``torch.poisson``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from stemtomo.noise.base import NoiseModel, register_noise_model

COUNT_VARIANCE_FLOOR = 0.25
"""λ0: variance floor in counts added in the Gaussian approximation (dark pixels stay finite)."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@register_noise_model
class PoissonNoiseModel(NoiseModel):
    """Scaled Poisson noise with MLE gain, offset and dose ``k`` (learned as ``log_k``)."""

    kind: ClassVar[str] = "poisson"
    full_batch_mle: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.log_k = torch.nn.Parameter(torch.tensor(math.log(100.0)))
        self.gain = torch.nn.Parameter(torch.tensor(1.0))
        self.offset = torch.nn.Parameter(torch.tensor(0.0))

    def config(self) -> dict[str, Any]:
        return {}

    @property
    def dose(self) -> float:
        """k: expected counts per pixel at clean intensity 1."""
        return float(torch.exp(self.log_k.detach()))

    def moments(self, clean: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of the noise for each clean value (model's approximation for log_prob)."""
        k = torch.exp(self.log_k)
        c = clean.clamp(min=0.0)
        mean = (self.gain - 1.0) * c + self.offset
        var = self.gain**2 * (k * c + COUNT_VARIANCE_FLOOR) / k**2
        return mean, var

    def log_prob(self, noise: Tensor, clean: Tensor) -> Tensor:
        mean, var = self.moments(clean)
        return -0.5 * (noise - mean) ** 2 / var - 0.5 * torch.log(var) - _HALF_LOG_2PI

    def sample(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Exact draw: ``gain·Poisson(k·clean)/k + offset - clean`` (clean clamped at 0 for the rate)."""
        k = torch.exp(self.log_k).detach()
        rate = (k * clean.detach().clamp(min=0.0)).to(torch.float64)
        if generator is not None:
            counts = torch.poisson(rate.to(generator.device), generator=generator).to(clean.device)
        else:
            counts = torch.poisson(rate)
        noisy = self.gain.detach().double() * counts / k.double() + self.offset.detach().double()
        return (noisy - clean.double()).to(clean.dtype)

    @torch.no_grad()
    def init_from_data(self, noise: Tensor, clean: Tensor) -> None:
        """Moment estimates: least-squares line of noisy on clean (gain, offset), then ``k`` from
        the residual variance ``≈ gain²·mean(clean)/k``."""
        c = clean.reshape(-1).double()
        noisy = noise.reshape(-1).double() + c
        design = torch.stack([c, torch.ones_like(c)], dim=1)
        coef = torch.linalg.lstsq(design, noisy.unsqueeze(1)).solution.squeeze(1)
        gain, offset = float(coef[0]), float(coef[1])
        if not gain > 1e-3:
            gain, offset = 1.0, 0.0
        resid = noisy - (gain * c + offset)
        var = float((resid**2).mean())
        k = gain**2 * max(float(c.clamp(min=0).mean()), 1e-6) / max(var, 1e-12)
        self.gain.fill_(gain)
        self.offset.fill_(offset)
        self.log_k.fill_(math.log(min(max(k, 1e-3), 1e9)))


__all__ = ["COUNT_VARIANCE_FLOOR", "PoissonNoiseModel"]
