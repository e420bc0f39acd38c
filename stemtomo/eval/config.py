"""Configuration of the evaluation protocol (frozen dataclasses; no torch import, so the CLI can take its
defaults from here while ``stemtomo --help`` stays instant)."""

from __future__ import annotations

import dataclasses

DEFAULT_KAPPA = 7.0
"""Equal to :data:`stemtomo.core.imaging.DEFAULT_KAPPA` (a test checks it; not imported to keep torch out)."""


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    """How hard :func:`align_volume` searches."""

    max_shift_px: int = 4
    """Largest integer shift tried along each axis (voxels); 0 searches orientations only."""
    allow_transpose: bool = True
    """Also try swapping y and x (only possible when ny == nx)."""


@dataclasses.dataclass(frozen=True)
class ProjectionConfig:
    """Settings of the 2D test-projection protocol."""

    count: int = 20
    """Number of random 3D orientations (the paper: 20)."""
    seed: int = 42
    """Seed of ``np.random.RandomState`` drawing the orientations (42 reproduces the paper's list)."""
    kappa: float = DEFAULT_KAPPA
    """Attenuation constant κ of the image formation model."""
    contrast: str = "bf"
    """``bf`` (I = exp(-κP), the paper's) or ``df`` (I = 1 - exp(-κP))."""
    step_px: float = 1.0
    """Sample spacing along the ray, in voxels."""
    ssim_data_range: float = 1.0
    """``data_range`` of the 2D SSIM (2 reproduces the paper's skimage-0.19 numbers)."""
    max_points: int = 1 << 22
    """Most sample points interpolated at once (bounds the memory: ~100 bytes per point)."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Settings of the evaluation protocol."""

    ssim_data_range: float = 1.0
    """SSIM ``data_range`` (3D and 2D). 1 is correct after min–max normalization; 2 reproduces the paper's
    skimage-0.19 numbers (METHOD.md §8.2). PSNR always uses 1."""
    align: bool = False
    """Search flips / transpose / integer shifts of the volume before scoring."""
    align_config: AlignConfig = dataclasses.field(default_factory=AlignConfig)
    """How the alignment searches."""
    projections: ProjectionConfig = dataclasses.field(default_factory=ProjectionConfig)
    """The 2D test-projection protocol (``count = 0`` skips it)."""
    metrics_3d: bool = True
    """Compute the 3D metrics."""


__all__ = ["DEFAULT_KAPPA", "AlignConfig", "EvalConfig", "ProjectionConfig"]
