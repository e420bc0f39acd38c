"""Fitting settings (no torch import, so the CLI can take its defaults from here while ``--help`` stays fast)."""

from __future__ import annotations

import dataclasses
import math

from stemtomo.errors import ParameterError


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of :func:`fit_noise_model` (defaults measured with benchmarks/bench_noise.py)."""

    iterations: int = 2000
    """Maximum optimizer steps for minibatch models (the flow)."""
    optimizer: str = "adam"
    """``adam`` or ``sgd`` (momentum 0.9) for minibatch models."""
    lr: float = 1e-2
    """Initial learning rate."""
    lr_decay: float = 0.05
    """Final learning rate as a fraction of ``lr`` (exponential decay over ``iterations``)."""
    batch: int = 16
    """Patches per step."""
    patch: int = 16
    """Patch side in pixels (clipped to the image size)."""
    eval_every: int = 100
    """Steps between held-out evaluations."""
    patience: int = 6
    """Held-out evaluations without improvement before stopping early (0 disables early stopping)."""
    grad_clip: float = 100.0
    """Gradient-norm clip (the original's 100)."""
    max_eval_pixels: int = 200_000
    """Held-out pixels used for the NLL (a fixed random subset when there are more)."""
    max_train_pixels: int = 2_000_000
    """Training pixels used by full-batch MLE (a fixed random subset when there are more)."""
    seed: int = 0
    """Seed of patch sampling and subsets (model initialization uses torch's global seed)."""

    def check(self) -> None:
        """Raise :class:`ParameterError` for out-of-range settings, naming the CLI option."""
        if self.optimizer not in ("adam", "sgd"):
            raise ParameterError(f"--optimizer {self.optimizer!r}: use adam or sgd")
        for name, value in (("--iterations", self.iterations), ("--batch", self.batch), ("--patch", self.patch),
                            ("--eval-every", self.eval_every)):
            if value < 1:
                raise ParameterError(f"{name} {value}: must be ≥ 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ParameterError(f"--lr {self.lr}: must be a positive number")
        if not 0 < self.lr_decay <= 1:
            raise ParameterError(f"--lr-decay {self.lr_decay}: must be in (0, 1]")


__all__ = ["FitConfig"]
