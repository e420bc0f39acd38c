"""Conditional 1D normalizing flow of radial layers: the paper's learned noise model (METHOD.md §5.1–5.4).

Density direction: the residual ``n = noisy - clean`` passes through ``n_uncond`` unconditional radial
layers and then ``n_cond`` layers whose parameters are an MLP of the clean intensity, giving ``z``; with a
standard normal base, ``log p(n | c) = log N(z; 0, 1) + Σ log f'(x_l)`` where ``x_l`` is each layer's
INPUT (the original code evaluated ``f'`` at the layer output, a bug; ``logdet_at_output=True`` mimics it).
Sampling inverts every layer exactly in reverse order.

With ``zero_mean=True`` every layer's centre ``z0`` is fixed at 0, so every layer is an odd function and
the noise density is symmetric about 0 (hence zero-mean) for every clean value: the reconstruction uses
this by default because a free intensity-dependent mean biases the field (FINDINGS.md lesson 3).

Example
-------
Joint training in the reconstruction (the residual's gradient reaches the field through both arguments)::

    flow = FlowNoiseModel(zero_mean=True).to(pred.device)
    loss = -flow.log_prob(measured - pred, pred).mean()

References
----------
Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015 (radial flows).
Kniesel et al., "Clean Implicit 3D Structure from Noisy 2D STEM Images", CVPR 2022.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from stemtomo.errors import ParameterError
from stemtomo.noise.base import NoiseModel, register_noise_model, standard_normal

LOG_DERIV_FLOOR = 1e-12
"""f' is clamped at this value before the log (FINDINGS.md lesson 6)."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def radial_constrain(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Constrained radial parameters: ``α̃ = exp(α)``, ``β̃ = softplus(β) - α̃`` (so ``β̃ ≥ -α̃``: invertible)."""
    a = torch.exp(alpha)
    return a, F.softplus(beta) - a


def radial_forward(x: Tensor, z0: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One radial layer ``f(x) = x + b·(x - z0)/(a + |x - z0|)`` and ``log f'(x)`` (clamped, at the input).

    ``f'(x) = 1 + a·b/(a + r)²`` with ``r = |x - z0|``. Parameters broadcast against ``x``.
    """
    d = x - z0
    r = d.abs()
    y = x + b * d / (a + r)
    deriv = 1.0 + a * b / (a + r) ** 2
    return y, torch.log(deriv.clamp(min=LOG_DERIV_FLOOR))


def radial_inverse(y: Tensor, z0: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Exact inverse of :func:`radial_forward` (vectorized).

    ``f`` keeps the side of ``z0``: with ``w = y - z0`` and ``r = |x - z0|``, ``|w| = r + b·r/(a + r)``,
    i.e. ``r² + (a + b - |w|)·r - a·|w| = 0``, whose product of roots is ``-a·|w| ≤ 0``, so exactly one
    root is ``≥ 0``. It is computed in the cancellation-free form for each sign of ``B = a + b - |w|``,
    and ``x = z0 + sign(w)·r``.
    """
    w = y - z0
    aw = w.abs()
    big_b = a + b - aw
    disc = torch.sqrt(big_b * big_b + 4.0 * a * aw)
    r_pos = 2.0 * a * aw / (big_b + disc).clamp(min=torch.finfo(y.dtype).tiny)  # B > 0: avoid cancellation
    r_neg = 0.5 * (disc - big_b)  # B ≤ 0: no cancellation
    r = torch.where(big_b > 0, r_pos, r_neg)
    return z0 + torch.sign(w) * r


@register_noise_model
class FlowNoiseModel(NoiseModel):
    """Conditional radial flow ``p(noise | clean)``: ``n_uncond`` free layers then ``n_cond`` conditioned ones.

    Parameters
    ----------
    n_uncond : number of unconditional layers (learnable scalars ``z0, α, β``, init U(-1, 1)).
    n_cond : number of conditional layers; their ``(z0, α, β) = scale·tanh(MLP(clean))``, MLP 1→hidden→3.
    hidden : hidden width of each conditional layer's MLP (ReLU between the two linear maps).
    scale : bound of the raw conditional parameters (the paper's 10).
    zero_mean : fix ``z0 = 0`` in every layer: symmetric, zero-mean noise for every clean value.
    logdet_at_output : reproduce the original code's bug of evaluating ``f'`` at each layer's output
        (not a normalized density; for bit-faithful comparison only).
    """

    kind: ClassVar[str] = "flow"

    def __init__(
        self,
        n_uncond: int = 4,
        n_cond: int = 4,
        hidden: int = 16,
        scale: float = 10.0,
        zero_mean: bool = False,
        logdet_at_output: bool = False,
    ) -> None:
        super().__init__()
        if n_uncond < 0 or n_cond < 0 or n_uncond + n_cond == 0 or hidden < 1 or not scale > 0:
            raise ParameterError(
                f"flow: need n_uncond, n_cond ≥ 0 with at least one layer, hidden ≥ 1 and scale > 0 "
                f"(got {n_uncond}, {n_cond}, {hidden}, {scale})"
            )
        self.n_uncond, self.n_cond, self.hidden = int(n_uncond), int(n_cond), int(hidden)
        self.scale, self.zero_mean, self.logdet_at_output = float(scale), bool(zero_mean), bool(logdet_at_output)
        n_raw = 2 if zero_mean else 3
        self.uncond = torch.nn.Parameter(torch.empty(self.n_uncond, n_raw).uniform_(-1.0, 1.0))
        self.cond = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_raw))
            for _ in range(self.n_cond)
        )

    def config(self) -> dict[str, Any]:
        return {
            "n_uncond": self.n_uncond,
            "n_cond": self.n_cond,
            "hidden": self.hidden,
            "scale": self.scale,
            "zero_mean": self.zero_mean,
            "logdet_at_output": self.logdet_at_output,
        }

    def _split(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw ``(..., 2|3)`` → constrained ``(z0, a, b)`` each ``(...)``."""
        if self.zero_mean:
            alpha, beta = raw.unbind(-1)
            z0 = torch.zeros_like(alpha)
        else:
            z0, alpha, beta = raw.unbind(-1)
        a, b = radial_constrain(alpha, beta)
        return z0, a, b

    def layer_params(self, clean: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Constrained ``(z0, a, b)`` of every layer in density order, broadcastable against ``clean``."""
        params = [self._split(self.uncond[i]) for i in range(self.n_uncond)]
        c = clean.unsqueeze(-1).to(self.uncond.dtype)
        for mlp in self.cond:
            params.append(self._split(self.scale * torch.tanh(mlp(c))))
        return params

    def transform(self, noise: Tensor, clean: Tensor) -> tuple[Tensor, Tensor]:
        """Density direction: ``z`` and the summed ``log f'`` (both shaped like ``noise``)."""
        x = noise
        logdet = torch.zeros_like(noise)
        for z0, a, b in self.layer_params(clean):
            y, ld = radial_forward(x, z0, a, b)
            if self.logdet_at_output:
                ld = radial_forward(y, z0, a, b)[1]
            logdet = logdet + ld
            x = y
        return x, logdet

    def inverse(self, z: Tensor, clean: Tensor) -> Tensor:
        """Sampling direction: map base values ``z`` back to noise, layers inverted in reverse order."""
        x = z
        for z0, a, b in reversed(self.layer_params(clean)):
            x = radial_inverse(x, z0, a, b)
        return x

    def log_prob(self, noise: Tensor, clean: Tensor) -> Tensor:
        z, logdet = self.transform(noise, clean)
        return -0.5 * z * z - _HALF_LOG_2PI + logdet

    def sample(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        z = standard_normal(clean.shape, clean, generator)
        return self.inverse(z, clean)


__all__ = ["LOG_DERIV_FLOOR", "FlowNoiseModel", "radial_constrain", "radial_forward", "radial_inverse"]
