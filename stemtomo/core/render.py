"""Differentiable STEM rendering of rays through a density field.

For pixel rays of the aligned frame (``core.geometry``: foot point ``p0 = (u cosθ, v, u sinθ)``, direction
``d = (-sinθ, 0, cosθ)``, s in voxels), the renderer samples only inside the slab segment
(:func:`stemtomo.core.geometry.slab_interval`), evaluates the field at the points in normalized
coordinates and forms the line integral ``P = Σ ρ_i Δs_i`` with Δs in normalized units
(:func:`stemtomo.core.geometry.length_unit_px`). The detector intensity is
:func:`stemtomo.core.imaging.intensity` (BF ``exp(-κP)`` / DF ``1 - exp(-κP)``).
"""

from __future__ import annotations

import dataclasses

import torch

from stemtomo.core import samplers
from stemtomo.core.fields import Field
from stemtomo.core.geometry import ray_points, slab_interval
from stemtomo.core.imaging import DEFAULT_KAPPA, intensity


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """How rays are rendered."""

    n_samples: int = 32
    """Stratified samples per ray inside the slab."""
    n_importance: int = 0
    """Extra importance samples per ray (hierarchical sampling; 0 = off)."""
    contrast: str = "bf"
    """Detector contrast: ``bf`` (I = exp(-κP)) or ``df`` (I = 1 - exp(-κP))."""
    kappa: float = DEFAULT_KAPPA
    """Attenuation constant κ."""


def line_integrals(
    field: Field,
    u: torch.Tensor,
    v: torch.Tensor,
    theta_rad: torch.Tensor,
    half_thickness_px: float,
    cfg: RenderConfig,
    *,
    jitter: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Line integrals ``P`` (normalized units) of ``field`` along pixel rays.

    Parameters
    ----------
    u, v : ``(R,)`` aligned image coordinates (centred, voxel units).
    theta_rad : ``(R,)`` tilt angle of each ray (radians).
    half_thickness_px : half slab thickness in voxels; density outside the slab is zero.
    jitter : stratified jitter (training) or bin centres (deterministic evaluation).

    Returns
    -------
    ``(R,)`` tensor on the inputs' device.
    """
    near, far = slab_interval(u, theta_rad, half_thickness_px)
    s = samplers.stratified(near, far, cfg.n_samples, jitter=jitter, generator=generator)
    unit = field.length_unit_px
    if cfg.n_importance > 0:
        with torch.no_grad():
            rho = field(ray_points(u, v, theta_rad, s) / unit)
            w = rho * samplers.interval_lengths(s, near, far)
        s = samplers.importance(s, w, near, far, cfg.n_importance, jitter=jitter, generator=generator)
    pts = ray_points(u, v, theta_rad, s) / unit
    rho = field(pts)
    ds = samplers.interval_lengths(s, near, far) / unit
    return (rho * ds).sum(dim=-1)


def render(
    field: Field,
    u: torch.Tensor,
    v: torch.Tensor,
    theta_rad: torch.Tensor,
    half_thickness_px: float,
    cfg: RenderConfig,
    *,
    jitter: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Detector intensities ``(R,)`` of pixel rays: ``imaging.intensity(line_integrals(...))``."""
    p = line_integrals(field, u, v, theta_rad, half_thickness_px, cfg, jitter=jitter, generator=generator)
    return intensity(p, cfg.contrast, cfg.kappa)


__all__ = ["RenderConfig", "line_integrals", "render"]
