"""Gaussian noise baselines: signal-independent ``N(μ, σ²)`` and heteroscedastic ``N(μ, a + b·clean)``.

The paper's supplemental Table 1 compares the flow with "a Gaussian with MLE-fitted parameters"; the
heteroscedastic variant (variance affine in the clean intensity, as for shot + read noise) is a stronger
baseline. Both are fitted by maximum likelihood: :meth:`GaussianNoiseModel.init_from_data` gives the
closed-form MLE (homoscedastic) or a moment estimate (heteroscedastic), refined by gradient ascent.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from stemtomo.noise.base import NoiseModel, register_noise_model, standard_normal

MIN_VARIANCE = 1e-10
"""Lower clamp of the variance (normalized intensity units squared)."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@register_noise_model
class GaussianNoiseModel(NoiseModel):
    """``noise ~ N(μ, σ²(clean))`` with ``σ² = exp(log_var)`` or ``σ² = max(a + b·clean, MIN_VARIANCE)``.

    Parameters
    ----------
    heteroscedastic : variance affine in the clean intensity (``a + b·clean``) instead of constant.
    """

    kind: ClassVar[str] = "gaussian"
    full_batch_mle: ClassVar[bool] = True

    def __init__(self, heteroscedastic: bool = False) -> None:
        super().__init__()
        self.heteroscedastic = bool(heteroscedastic)
        self.mean = torch.nn.Parameter(torch.zeros(()))
        if self.heteroscedastic:
            self.var_a = torch.nn.Parameter(torch.tensor(1e-2))
            self.var_b = torch.nn.Parameter(torch.tensor(0.0))
        else:
            self.log_var = torch.nn.Parameter(torch.tensor(math.log(1e-2)))

    def config(self) -> dict[str, Any]:
        return {"heteroscedastic": self.heteroscedastic}

    def variance(self, clean: Tensor) -> Tensor:
        """σ² for each clean value (shape of ``clean``)."""
        if self.heteroscedastic:
            return (self.var_a + self.var_b * clean).clamp(min=MIN_VARIANCE)
        return torch.exp(self.log_var).expand_as(clean)

    def log_prob(self, noise: Tensor, clean: Tensor) -> Tensor:
        var = self.variance(clean)
        return -0.5 * (noise - self.mean) ** 2 / var - 0.5 * torch.log(var) - _HALF_LOG_2PI

    def sample(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        z = standard_normal(clean.shape, clean, generator)
        return (self.mean + torch.sqrt(self.variance(clean)) * z).to(clean.dtype)

    @torch.no_grad()
    def init_from_data(self, noise: Tensor, clean: Tensor) -> None:
        """Closed-form MLE (homoscedastic) or least squares of squared residuals on clean (heteroscedastic)."""
        n, c = noise.reshape(-1).double(), clean.reshape(-1).double()
        mu = n.mean()
        self.mean.fill_(float(mu))
        sq = (n - mu) ** 2
        if not self.heteroscedastic:
            self.log_var.fill_(math.log(max(float(sq.mean()), MIN_VARIANCE)))
            return
        design = torch.stack([torch.ones_like(c), c], dim=1)
        coef = torch.linalg.lstsq(design, sq.unsqueeze(1)).solution.squeeze(1)
        a, b = float(coef[0]), float(coef[1])
        if a + min(b, 0.0) <= MIN_VARIANCE:  # keep the variance positive on [0, 1]
            a, b = float(sq.mean()), 0.0
        self.var_a.fill_(a)
        self.var_b.fill_(b)


__all__ = ["MIN_VARIANCE", "GaussianNoiseModel"]
