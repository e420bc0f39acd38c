"""Small helpers of the training loop: the optimizers the paper uses and the 3D PSNR logged against a phantom."""

from __future__ import annotations

import math
from typing import Any

import torch


def make_optimizer(kind: str, params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam or SGD with momentum 0.9 (the paper's two choices)."""
    params = list(params)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def psnr_minmax(volume: torch.Tensor, reference: torch.Tensor) -> float:
    """3D PSNR (dB) of min–max normalized volumes (METHOD §8.2; for synthetic data)."""

    def mm(x: torch.Tensor) -> torch.Tensor:
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo).clamp(min=1e-12)

    mse = float((mm(volume.float()) - mm(reference.float())).square().mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


__all__ = ["make_optimizer", "psnr_minmax"]
