"""Fitting settings (no torch import, so the CLI can take its defaults from here while ``--help`` stays fast)."""

from __future__ import annotations

import dataclasses
import math

from stemtomo.errors import ParameterError


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of :func:`stemtomo.noise.fit.fit_noise_model`.

    Defaults measured with benchmarks/bench_noise.py (20 images of 64², synthetic low-dose STEM noise, 1 CPU
    thread): Adam at 1e-2 reached held-out NLL -0.77 / -0.83 / -0.88 / -0.89 nats after 500 / 1000 / 2000 /
    4000 steps, better than Adam 3e-2 (-0.57), 3e-3 (-0.83) and 1e-3 (-0.79) at 4000 steps; SGD 1e-3 reached
    -0.53 and the original SGD 5e-7 was still at +4.4 (from +7 at initialization). 4000 steps took ~35 s on
    the loaded 2-core machine; early stopping ends flat runs sooner.
    """

    iterations: int = 4000
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
    """Seed of patch sampling, subsets and (in :func:`~stemtomo.noise.calibration.calibrate`) initialization."""
    cpu_threads: int = 1
    """torch intra-op threads while fitting on the CPU (restored afterwards); 0 keeps torch's setting. The
    flow's tensors are tiny (batch·patch² values), so threads only add overhead: 200 steps took 1.8 s with
    1 thread and 11 s with 2 on the shared 2-core machine."""

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
        if self.cpu_threads < 0:
            raise ParameterError(f"cpu_threads {self.cpu_threads}: must be ≥ 0 (0 keeps torch's setting)")
        if not 0 < self.lr_decay <= 1:
            raise ParameterError(f"--lr-decay {self.lr_decay}: must be in (0, 1]")


__all__ = ["FitConfig"]
