"""Data terms of the implicit reconstruction and the scores used for validation.

- ``l2``: mean squared error; ``l1``: mean absolute error (on intensities in [0, 1]).
- ``ours`` / ``ours-sup``: negative log likelihood of the residual ``observed - rendered`` under the noise
  model conditioned on the rendered intensity, ``-mean log p(y - I | I)`` (METHOD §5.3, with the exact
  change-of-variables density of :class:`stemtomo.noise.FlowNoiseModel`). Gradients reach the field through
  both the residual and the conditioning input.
"""

from __future__ import annotations

import torch

from stemtomo.noise import NoiseModel

NLL_METHODS = ("ours", "ours-sup")


def data_loss(method: str, pred: torch.Tensor, target: torch.Tensor, noise_model: NoiseModel | None) -> torch.Tensor:
    """Mean data term of ``method`` over the batch (``pred``, ``target``: ``(R,)`` intensities)."""
    if method == "l2":
        return (pred - target).square().mean()
    if method == "l1":
        return (pred - target).abs().mean()
    if noise_model is None:
        raise ValueError(f"method {method!r} needs a noise model")
    return -noise_model.log_prob(target - pred, pred).mean()


def flow_fit_loss(noise_model: NoiseModel, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """NLL of the detached residuals: fits the noise model without moving the field (L2 warm-up)."""
    p = pred.detach()
    return -noise_model.log_prob(target - p, p).mean()


def score_name(method: str) -> str:
    """Name of the validation criterion of ``method`` (its own loss)."""
    return {"l2": "mse", "l1": "mae"}.get(method, "nll")


__all__ = ["NLL_METHODS", "data_loss", "flow_fit_loss", "score_name"]
