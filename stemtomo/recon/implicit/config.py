"""Configuration of the implicit reconstruction (``stemtomo recon``): one frozen dataclass, one docstring per
field; the CLI takes its defaults from here and the resolved config is saved in every output sidecar."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from stemtomo.core.fields import FieldConfig
from stemtomo.core.render import RenderConfig
from stemtomo.errors import ParameterError


class Method(str, Enum):
    """Reconstruction loss: flow NLL trained jointly (ours), with a fixed fitted flow (ours-sup), L2 or L1."""

    ours = "ours"
    ours_sup = "ours-sup"
    l2 = "l2"
    l1 = "l1"


@dataclasses.dataclass(frozen=True)
class ReconConfig:
    """Everything that defines a reconstruction run (besides the data)."""

    method: str = "ours"
    """Loss: ``ours`` (joint flow NLL), ``ours-sup`` (fixed flow NLL), ``l2`` (MSE) or ``l1`` (MAE)."""
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    """Volume representation and its hyperparameters."""
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    """Samples per ray, importance samples, contrast, κ."""
    iterations: int = 2000
    """Optimizer steps (early stopping on the held-out tilts usually ends a run sooner)."""
    rays_per_batch: int = 1024
    """Rays per step, drawn at random from the training tilts."""
    lr: float = 3e-2
    """Field learning rate (Adam), constant then linear decay. Measured defaults per field: voxel 3e-2,
    grid 1e-2, mlp 5e-4 (the paper's recipe for the MLP is 5e-5 over 400k steps)."""
    lr_decay_start: float = 0.5
    """Fraction of the iterations after which the learning rate decays linearly."""
    lr_decay_factor: float = 100.0
    """The learning rate falls to lr / factor at the last iteration (the paper: 100)."""
    optimizer: str = "adam"
    """Field optimizer: ``adam`` or ``sgd`` (momentum 0.9)."""
    tv: float = 0.005
    """Total-variation weight (voxel and grid fields), on the MSE's scale. Under the NLL it is multiplied by
    the mean over rays of 1/(2·residual variance at the ray's intensity) (``losses.nll_tv_scale``: the
    harmonic mean, not 1/(2·mean variance), which left Ours under-regularized under signal-dependent
    noise), measured at the end of the warm-up and again at every validation on the current field, whose
    residuals approach the noise (at 64³ the warm-up's residuals are mostly model error: scale 50 vs ~70
    later). Paper benchmark, Ours 3D PSNR: 48³ seeds 7/8 15.84/15.56 → 16.53/16.74 dB, 64³ seed 7
    16.07 → 16.90 dB (L2Noisy 15.92/15.95 and 15.85)."""
    coarse_to_fine: bool = False
    """Grid field: fade the finer levels in over the first half of training."""
    flow_lr: float = 1e-3
    """Flow learning rate (FINDINGS lesson 4: ~1e-3 with Adam)."""
    flow_optimizer: str = "adam"
    """Flow optimizer: ``adam`` or ``sgd`` (momentum 0.9, as the paper)."""
    flow_zero_mean: bool = True
    """Constrain the flow to zero-mean, symmetric noise (FINDINGS lesson 3); off = the paper's free flow."""
    flow_clip: float = 100.0
    """Gradient-norm clip for the flow (the paper: 100)."""
    flow_steps_warmup: int = 2
    """Flow steps per field step during the L2 warm-up, on detached residuals."""
    warmup: int = 50
    """L2 warm-up steps before the NLL (ours / ours-sup)."""
    val_every_kth_tilt: int = 7
    """Hold out every k-th tilt for validation (never trained on); 0 = no validation."""
    val_interval: int = 50
    """Validate every this many steps."""
    val_max_rays: int = 8192
    """Validation rays (a fixed random subset of the held-out pixels)."""
    patience: int = 10
    """Stop after this many validations without improvement (0 = never)."""
    checkpoint_interval: int = 200
    """Write the checkpoint every this many steps (and on interruption and at the end)."""
    defocus_max_px: float = 0.0
    """Defocus-aware rendering: largest blur σ (pixels) at the highest tilt and the image edge; 0 = off."""
    defocus_rays: int = 1
    """Jittered sub-rays per pixel whose intensities are averaged (defocus-aware rendering)."""
    thickness_px: float | None = None
    """Slab thickness (voxels); None = from the sidecar, else the image width."""
    max_time_s: float | None = None
    """Stop after this many seconds of training (checkpointed like the end of training)."""
    seed: int = 0
    """Seed of initialization, ray sampling and validation pixels."""
    precision: str = "fp32"
    """Field arithmetic: ``fp32``, ``tf32`` (TF32 matmuls on CUDA) or ``bf16`` (bfloat16 autocast of the field;
    line integrals, image formation and losses stay float32). See :mod:`stemtomo.recon.implicit.accel`."""
    compile_backend: str | None = None
    """``torch.compile`` backend for the field (``inductor`` with ``--compile``); None = eager. A backend that
    fails is dropped with a warning and training continues eagerly."""
    train_jitter: bool = True
    """Jitter the stratified samples of the training rays (off: bin centres every step, a fixed quadrature;
    then a data-parallel run reproduces the single-process run to rounding, which its test checks)."""
    sync_interval: int = 0
    """Read the losses back to the host, report progress and check stop requests every N steps; 0 = every
    step for one CPU process (free there), else every 25 steps (each read-back waits for the GPU, and under
    DDP costs two collectives)."""

    def validate(self) -> ReconConfig:
        """Check value ranges; raise :class:`ParameterError` naming the option and the fix."""
        try:
            Method(self.method)
        except ValueError:
            raise ParameterError(f"--method {self.method!r}: use one of {', '.join(m.value for m in Method)}") from None
        checks = [
            (self.iterations >= 1, f"--iterations {self.iterations}: must be ≥ 1"),
            (self.rays_per_batch >= 1, f"--rays-per-batch {self.rays_per_batch}: must be ≥ 1"),
            (self.render.n_samples >= 2, f"--samples {self.render.n_samples}: must be ≥ 2"),
            (self.render.n_importance >= 0, f"--importance {self.render.n_importance}: must be ≥ 0"),
            (self.lr > 0 and self.flow_lr > 0, "--lr / --flow-lr: learning rates must be > 0"),
            (self.lr_decay_factor >= 1, f"--lr-decay-factor {self.lr_decay_factor}: must be ≥ 1"),
            (self.tv >= 0, f"--tv {self.tv}: must be ≥ 0"),
            (self.optimizer in ("adam", "sgd"), f"--optimizer {self.optimizer!r}: use adam or sgd"),
            (self.flow_optimizer in ("adam", "sgd"), f"--flow-optimizer {self.flow_optimizer!r}: use adam or sgd"),
            (self.val_every_kth_tilt >= 0 and self.val_every_kth_tilt != 1, "--val-every: use 0 (off) or k ≥ 2"),
            (self.val_interval >= 1, f"--val-interval {self.val_interval}: must be ≥ 1"),
            (self.defocus_max_px >= 0, f"--defocus-max-px {self.defocus_max_px}: must be ≥ 0"),
            (self.defocus_rays >= 1, f"--defocus-rays {self.defocus_rays}: must be ≥ 1"),
            (self.thickness_px is None or self.thickness_px > 0,
             f"--thickness-px {self.thickness_px}: must be > 0 (the slab thickness in pixels)"),
            (self.max_time_s is None or self.max_time_s > 0, f"--max-time {self.max_time_s}: must be > 0"),
            (self.checkpoint_interval >= 1, f"--checkpoint-interval {self.checkpoint_interval}: must be ≥ 1"),
            (self.precision in ("fp32", "tf32", "bf16"), f"--precision {self.precision!r}: use fp32, tf32 or bf16"),
            (self.sync_interval >= 0, f"--sync-interval {self.sync_interval}: must be ≥ 0 (0 = automatic)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParameterError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dictionary (for sidecars)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReconConfig:
        """Inverse of :meth:`to_dict` (unknown keys ignored, so old sidecars still load)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["field"] = _sub(FieldConfig, data.get("field") or {})
        kw["render"] = _sub(RenderConfig, data.get("render") or {})
        return cls(**kw)


def _sub(cls: Any, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


__all__ = ["Method", "ReconConfig"]
