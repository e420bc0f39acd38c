"""The one place that owns stemtomo's geometry convention (DESIGN.md "Conventions", CONVENTIONS.md §6).

Frames and axes
---------------
- Volumes are ``(nz, ny, nx)``; tilt series ``(n_tilts, ny, nx)``; numpy/mrcfile order, no flips on I/O.
- Centred voxel coordinates: ``x = ix - (nx-1)/2``, ``y = iy - (ny-1)/2``, ``z = iz - (nz-1)/2``.
- z is the beam direction at 0° tilt (specimen thickness), y runs along the tilt axis, x across it.
- **Aligned frame** (tilt axis = image +y): a point (x, y, z) at tilt θ lands at image
  ``u = x·cosθ + z·sinθ``, ``v = y`` (centred image coordinates). A positive θ moves material above the
  centre (z > 0) toward +x. This is IMOD ``tilt`` + ``trimvol -rx`` (AreTomo ``-FlipVol 1``, cryotypes).
- The ray through aligned pixel (u, v) runs along ``d = (-sinθ, 0, cosθ)`` (x, y, z) through the foot
  point ``p0 = (u·cosθ, v, u·sinθ)``: points ``p0 + s·d``, s in voxel units.
- **Raw frame** with tilt-axis angle α (CCW from image +y, IMOD RotationAngle): raw position
  ``(x_r, y_r) = R(α)·(u, v)``. α = 90° puts the tilt axis along the image x axis.
- Path lengths are measured in *normalized units*: the longer in-plane half-width of the volume is 1
  (:func:`length_unit_px`), so ``I = exp(-κ·∫ρ ds)`` with κ = 7 means the same thing at every size.
- The specimen is a slab ``|z| ≤ thickness_px/2`` (centred); density outside it is zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stemtomo.errors import ParameterError


def centre(n: int) -> float:
    """Centre of an axis of ``n`` pixels in 0-based pixel-centre coordinates: ``(n - 1) / 2``."""
    return (n - 1) / 2.0


def length_unit_px(ny: int, nx: int) -> float:
    """Voxels per normalized length unit: the longer in-plane half-width, ``max(ny, nx) / 2``."""
    return max(ny, nx) / 2.0


def binning_factor(shape: Sequence[int], max_px: int) -> int:
    """Smallest binning factor that brings images of ``shape`` (``(..., ny, nx)``) to ≤ ``max_px`` pixels on
    their longer side (the estimates of ``align`` and ``--estimate-thickness`` run binned)."""
    return max(1, math.ceil(max(int(shape[-2]), int(shape[-1])) / max_px))


def check_angles(tilt_angles_deg: Sequence[float], option: str = "--tilts") -> np.ndarray:
    """Validate tilt angles: finite, strictly inside (-90°, 90°), at least one."""
    a = np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ParameterError(f"{option}: no tilt angles")
    if not np.all(np.isfinite(a)):
        raise ParameterError(f"{option}: tilt angles must be finite numbers")
    if np.any(np.abs(a) >= 90.0):
        bad = float(a[np.argmax(np.abs(a))])
        raise ParameterError(f"{option}: tilt angle {bad:g}° is outside the allowed range (-90°, 90°)")
    return a


def project_u(x: torch.Tensor, z: torch.Tensor, theta_rad: torch.Tensor | float) -> torch.Tensor:
    """Aligned-frame image coordinate ``u = x·cosθ + z·sinθ`` (centred voxel units)."""
    th = torch.as_tensor(theta_rad, dtype=x.dtype, device=x.device)
    return x * torch.cos(th) + z * torch.sin(th)


def slab_interval(
    u: torch.Tensor, theta_rad: torch.Tensor, half_thickness_px: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray parameters ``(s_near, s_far)`` where the ray of aligned coordinate ``u`` at tilt θ crosses the slab.

    The ray is ``p0 + s·d`` with ``p0 = (u cosθ, v, u sinθ)`` and ``d = (-sinθ, 0, cosθ)``; its z is
    ``u sinθ + s cosθ``, so ``|z| ≤ h`` gives ``s ∈ [(-h - u sinθ)/cosθ, (h - u sinθ)/cosθ]``.
    """
    c = torch.cos(theta_rad)
    s = torch.sin(theta_rad)
    near = (-half_thickness_px - u * s) / c
    far = (half_thickness_px - u * s) / c
    return near, far


def ray_points(
    u: torch.Tensor, v: torch.Tensor, theta_rad: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """Points ``(x, y, z)`` (centred voxel units) at ray parameters ``s``.

    Shapes: ``u, v, theta_rad`` broadcast to ``(R,)``; ``s`` is ``(R, S)``; returns ``(R, S, 3)``.
    """
    c = torch.cos(theta_rad)[:, None]
    sn = torch.sin(theta_rad)[:, None]
    x = u[:, None] * c - s * sn
    z = u[:, None] * sn + s * c
    y = v[:, None].expand_as(s)
    return torch.stack((x, y, z), dim=-1)


def to_grid_coords(points_xyz: torch.Tensor, volume_shape: Sequence[int]) -> torch.Tensor:
    """Centred voxel coordinates → ``grid_sample`` coordinates in [-1, 1] (align_corners=True), xyz order."""
    nz, ny, nx = volume_shape
    scale = torch.tensor(
        [2.0 / max(nx - 1, 1), 2.0 / max(ny - 1, 1), 2.0 / max(nz - 1, 1)],
        dtype=points_xyz.dtype,
        device=points_xyz.device,
    )
    return points_xyz * scale


# ---- in-plane rotation between the raw and the aligned frame ------------------------------------------
def is_quarter_turn(angle_deg: float) -> bool:
    """True for multiples of 90° (exact resampling by ``rot90``, no padding)."""
    return _quarter_turns(angle_deg) is not None


def _quarter_turns(angle_deg: float) -> int | None:
    k = angle_deg / 90.0
    r = round(k)
    return int(r) % 4 if abs(k - r) < 1e-9 else None


def aligned_shape(raw_shape: Sequence[int], tilt_axis_angle_deg: float) -> tuple[int, int]:
    """Image shape ``(ny, nx)`` in the aligned frame: swapped when the nearest quarter turn is odd (|α| nearer
    90° than 0° or 180°), so that the side of the raw image that lies along the tilt axis stays along it. An
    axis along x (α ≈ ±90°) of a 2048 × 1536 (x × y) frame gives 2048 rows along the axis, not 1536 (which cut
    the specimen along the axis and padded the perpendicular). Square images keep their shape."""
    ny, nx = int(raw_shape[-2]), int(raw_shape[-1])
    return (nx, ny) if round(tilt_axis_angle_deg / 90.0) % 2 else (ny, nx)


def raw_to_aligned(images: torch.Tensor, tilt_axis_angle_deg: float,
                   out_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Resample raw images ``(..., ny, nx)`` into the aligned frame (tilt axis along +y).

    ``aligned(u, v) = raw(R(α)·(u, v))``. Multiples of 90° are exact (``rot90``); other angles use
    bilinear interpolation with zero padding outside the raw image, onto :func:`aligned_shape` (centres on
    centres) or ``out_shape``.
    """
    return _rotate(images, tilt_axis_angle_deg, inverse=False, out_shape=out_shape)


def aligned_to_raw(images: torch.Tensor, tilt_axis_angle_deg: float, raw_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Inverse of :func:`raw_to_aligned`: ``raw(x_r, y_r) = aligned(R(-α)·(x_r, y_r))``, onto ``raw_shape``
    (default: the shape whose :func:`aligned_shape` the images have)."""
    return _rotate(images, tilt_axis_angle_deg, inverse=True, out_shape=raw_shape)


def _rotate(
    images: torch.Tensor, angle_deg: float, *, inverse: bool, out_shape: Sequence[int] | None = None
) -> torch.Tensor:
    k = _quarter_turns(angle_deg)
    if k is not None:
        # aligned = rot90(raw, k) in array index space (rows = y, columns = x).
        return torch.rot90(images, -k if inverse else k, dims=(-2, -1))
    ny, nx = images.shape[-2:]
    # the swap of aligned_shape is its own inverse: raw → aligned and aligned → raw default alike
    oy, ox = aligned_shape((ny, nx), angle_deg) if out_shape is None else (int(out_shape[-2]), int(out_shape[-1]))
    a = math.radians(-angle_deg if inverse else angle_deg)
    dev, dt = images.device, images.dtype if images.is_floating_point() else torch.float32
    yy = torch.arange(oy, device=dev, dtype=dt) - centre(oy)
    xx = torch.arange(ox, device=dev, dtype=dt) - centre(ox)
    v, u = torch.meshgrid(yy, xx, indexing="ij")
    xs = u * math.cos(a) - v * math.sin(a)
    ys = u * math.sin(a) + v * math.cos(a)
    grid = torch.stack((xs / max(centre(nx), 0.5), ys / max(centre(ny), 0.5)), dim=-1)
    flat = images.reshape(-1, 1, ny, nx).to(dt)
    out = F.grid_sample(
        flat, grid.expand(flat.shape[0], oy, ox, 2), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out.reshape(*images.shape[:-2], oy, ox)


__all__ = [
    "aligned_shape",
    "aligned_to_raw",
    "binning_factor",
    "centre",
    "check_angles",
    "is_quarter_turn",
    "length_unit_px",
    "project_u",
    "raw_to_aligned",
    "ray_points",
    "slab_interval",
    "to_grid_coords",
]
