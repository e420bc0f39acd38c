"""Parallel-beam forward projector and its exact adjoint (back-projector) for single-axis tilt series.

Geometry is the one of :mod:`stemtomo.core.geometry` (aligned frame, tilt axis = image +y): the ray through
image pixel ``(u, v)`` at tilt θ is ``p0 + s·d`` with ``p0 = (u cosθ, v, u sinθ)`` and
``d = (-sinθ, 0, cosθ)`` in centred voxel coordinates ``(x, y, z)``.

Discretization
--------------
- The volume is the union of its voxel *cells* (width 1): inside the hull of the voxel centres the
  density is bilinear in ``(x, z)``; in the outer half-voxel it is constant (edge value); beyond the
  cell boundaries ``|x| > nx/2`` it is zero. In z the same holds for the slab: samples with
  ``(t-1)/2 < |z| ≤ t/2`` (``t = thickness_px``) take the value at ``|z| = (t-1)/2``, the outermost voxel
  centre inside the slab when ``t`` and ``nz`` have the same parity. So a volume of ones, or ones on the
  ``t`` central z-planes, projects to the exact chord length of the box ``|x| ≤ nx/2, |z| ≤ t/2``.
- Rays are clipped to the slab ``|z| ≤ thickness_px/2`` (default: ``nz/2``, the whole volume). At tilt θ
  every ray crosses the slab over the same length ``thickness_px / cosθ``; it is split into
  ``S = ceil(samples_per_voxel · thickness_px / cosθ)`` equal steps ``Δ`` sampled at their midpoints,
  and ``P(u, v) = Σ ρ(p_k)·Δ`` (midpoint rule; exact for a density that is constant along the ray).
- Tilt axis = y is a volume axis, so image row ``v`` sees only volume row ``y = v``: every y-row is an
  independent 2D problem in the xz-plane. The y rows are the *channels* of one 2D
  :func:`torch.nn.functional.grid_sample` call per batch of tilts (no interpolation along y).
- Work is split into chunks of at most ``max_batch_elems`` interpolated values (several tilts per call,
  or part of the samples of one tilt) to bound memory.

Line integrals are in *voxel* length units. Divide by :func:`stemtomo.core.geometry.length_unit_px` for
the normalized units of the image formation model (:func:`stemtomo.core.imaging.intensity`).

The back-projector is the adjoint of exactly this discretization, obtained per chunk with
:func:`torch.autograd.grad` (the vector–Jacobian product of the linear map), so
``⟨A x, y⟩ = ⟨x, Aᵀ y⟩`` holds to rounding error. On CUDA the adjoint uses atomic adds (grid_sample
backward) and is not bitwise deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stemtomo.errors import ParameterError

DEFAULT_SAMPLES_PER_VOXEL = 2.0
DEFAULT_MAX_BATCH_ELEMS = 2**26


@dataclass(frozen=True)
class _Piece:
    """Samples ``k0 ≤ k < k1`` of the ``n_samples`` midpoints of tilt ``index``."""

    index: int
    k0: int
    k1: int
    n_samples: int


def _angles_rad(tilt_angles_deg: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(tilt_angles_deg, torch.Tensor):
        tilt_angles_deg = tilt_angles_deg.detach().cpu().numpy()
    a = np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ParameterError("tilt angles: none given")
    if not np.all(np.isfinite(a)) or np.any(np.abs(a) >= 90.0):
        raise ParameterError(f"tilt angles must be finite and inside (-90°, 90°), got {a.min():g}…{a.max():g}")
    return np.deg2rad(a)


def _half_thickness(thickness_px: float | None, nz: int) -> float:
    if thickness_px is None:
        return nz / 2.0
    t = float(thickness_px)
    if not (math.isfinite(t) and t > 0):
        raise ParameterError(f"--thickness-px {thickness_px!r}: must be a positive number of voxels")
    if t > nz + 1e-6:
        raise ParameterError(
            f"--thickness-px {t:g}: larger than the volume depth nz = {nz}; use at most {nz}"
        )
    return t / 2.0


def _plan(theta: np.ndarray, half: float, ny: int, n_u: int, spv: float, max_elems: int) -> list[list[_Piece]]:
    """Group (tilt, sample-range) pieces into batches of at most ``max_elems`` interpolated values."""
    if not (math.isfinite(spv) and spv > 0):
        raise ParameterError(f"samples_per_voxel {spv!r}: must be positive")
    per_row = ny * n_u
    cap = max(1, int(max_elems) // max(per_row, 1))
    pieces: list[_Piece] = []
    for i, th in enumerate(theta):
        n = max(1, math.ceil(spv * 2.0 * half / math.cos(th) - 1e-9))
        pieces.extend(_Piece(i, k0, min(k0 + cap, n), n) for k0 in range(0, n, cap))
    pieces.sort(key=lambda p: p.k1 - p.k0)  # similar sample counts together: little padding per batch
    batches: list[list[_Piece]] = []
    cur: list[_Piece] = []
    widest = 0
    for p in pieces:
        w = max(widest, p.k1 - p.k0)
        if cur and w * (len(cur) + 1) > cap:
            batches.append(cur)
            cur, w = [], p.k1 - p.k0
        cur.append(p)
        widest = w
    if cur:
        batches.append(cur)
    return batches


def _batch_grid(
    batch: list[_Piece], theta: np.ndarray, half: float, shape: tuple[int, int, int], n_u: int,
    dtype: torch.dtype, device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_sample grid ``(1, S, B·n_u, 2)`` (x, z) and weights ``(S, B·n_u)`` (step × inside mask)."""
    nz, _, nx = shape
    kw: dict[str, Any] = {"dtype": dtype, "device": device}
    th = torch.tensor([theta[p.index] for p in batch], **kw)[:, None, None]
    k0 = torch.tensor([p.k0 for p in batch], **kw)[:, None, None]
    k1 = torch.tensor([p.k1 for p in batch], **kw)[:, None, None]
    step = torch.tensor([2.0 * half / math.cos(theta[p.index]) / p.n_samples for p in batch], **kw)[:, None, None]
    n_s = max(p.k1 - p.k0 for p in batch)
    k = k0 + torch.arange(n_s, **kw)[None, :, None]  # (B, S, 1)
    u = (torch.arange(n_u, **kw) - (n_u - 1) / 2.0)[None, None, :]  # (1, 1, n_u)
    c, sn = torch.cos(th), torch.sin(th)
    s = (-half - u * sn) / c + (k + 0.5) * step  # (B, S, n_u)
    x = u * c - s * sn
    z = u * sn + s * c
    inside = (x.abs() <= nx / 2.0) & (k < k1)
    weight = torch.where(inside, step, torch.zeros((), **kw))
    cx, cz = (nx - 1) / 2.0, (nz - 1) / 2.0
    zc = min(cz, max(half - 0.5, 0.0))  # outermost voxel centre of the slab: constant in its outer half cell
    gx = x.clamp(-cx, cx) / cx if cx > 0 else torch.zeros_like(x)
    gz = z.clamp(-zc, zc) / cz if cz > 0 else torch.zeros_like(z)
    grid = torch.stack((gx, gz), dim=-1).permute(1, 0, 2, 3).reshape(1, n_s, len(batch) * n_u, 2)
    return grid, weight.permute(1, 0, 2).reshape(n_s, len(batch) * n_u)


def _chunks(
    volume_shape: tuple[int, int, int], tilt_angles_deg: Sequence[float] | np.ndarray | torch.Tensor,
    thickness_px: float | None, n_u: int, samples_per_voxel: float, max_batch_elems: int,
    dtype: torch.dtype, device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(tilt indices (B,), grid, weights)`` for every batch of the plan."""
    nz, ny, _ = volume_shape
    theta = _angles_rad(tilt_angles_deg)
    half = _half_thickness(thickness_px, nz)
    for batch in _plan(theta, half, ny, n_u, float(samples_per_voxel), max_batch_elems):
        grid, weight = _batch_grid(batch, theta, half, volume_shape, n_u, dtype, device)
        idx = torch.tensor([p.index for p in batch], dtype=torch.long, device=device)
        yield idx, grid, weight


def _project_batch(vol_c: torch.Tensor, grid: torch.Tensor, weight: torch.Tensor, n_u: int) -> torch.Tensor:
    """``vol_c`` is ``(1, ny, nz, nx)``; returns ``(B, ny, n_u)`` line integrals of one batch."""
    ny = vol_c.shape[1]
    vals = F.grid_sample(vol_c, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    line = vals[0].mul_(weight).sum(dim=1)  # (ny, B·n_u); in place is safe: grid_sample does not save its output
    return line.reshape(ny, -1, n_u).permute(1, 0, 2)


def _check_volume(volume: torch.Tensor) -> tuple[int, int, int]:
    if volume.ndim != 3:
        raise ParameterError(f"volume must be 3D (nz, ny, nx), got shape {tuple(volume.shape)}")
    if not volume.is_floating_point():
        raise ParameterError(f"volume must be a floating-point tensor, got {volume.dtype}")
    nz, ny, nx = (int(n) for n in volume.shape)
    return nz, ny, nx


def forward_project(
    volume: torch.Tensor,
    tilt_angles_deg: Sequence[float] | np.ndarray | torch.Tensor,
    *,
    thickness_px: float | None = None,
    image_width: int | None = None,
    samples_per_voxel: float = DEFAULT_SAMPLES_PER_VOXEL,
    max_batch_elems: int = DEFAULT_MAX_BATCH_ELEMS,
) -> torch.Tensor:
    """Line integrals ``P = ∫ρ ds`` (voxel units) of ``volume`` at each tilt (aligned frame, tilt axis +y).

    Parameters
    ----------
    volume : tensor ``(nz, ny, nx)``, floating point, any device; differentiable.
    tilt_angles_deg : ``(n_tilts,)`` tilt angles in degrees, each in (-90°, 90°).
    thickness_px : slab thickness in voxels (rays are clipped to ``|z| ≤ thickness_px/2``); default ``nz``.
    image_width : number of image columns ``n_u`` (centred at ``(n_u-1)/2``); default ``nx``.
    samples_per_voxel : midpoint samples per voxel of path length (≥ 2 recommended).
    max_batch_elems : bound on interpolated values held at once (memory ≈ 2-3× this × element size).

    Returns
    -------
    tensor ``(n_tilts, ny, n_u)``, same dtype and device as ``volume``: pixel ``(v, u)`` at tilt θ is the
    integral along ``(u cosθ - s sinθ, v, u sinθ + s cosθ)`` in voxel length units.

    Raises
    ------
    ParameterError
        Not a 3D float volume, angles outside (-90°, 90°), thickness ≤ 0 or > nz, bad sample density.

    Notes
    -----
    See the module docstring for the discretization. A point at ``(x0, y0, z0)`` lands at
    ``u = x0 cosθ + z0 sinθ``, ``v = y0``; projecting the z-flipped volume at +θ equals projecting the
    volume at -θ.
    """
    shape = _check_volume(volume)
    n_u = shape[2] if image_width is None else int(image_width)
    if n_u <= 0:
        raise ParameterError(f"image_width {image_width!r}: must be a positive number of pixels")
    vol_c = volume.permute(1, 0, 2).contiguous()[None]  # (1, ny, nz, nx): y rows are channels
    n_t = len(_angles_rad(tilt_angles_deg))
    out = volume.new_zeros((n_t, shape[1], n_u))
    for idx, grid, weight in _chunks(
        shape, tilt_angles_deg, thickness_px, n_u, samples_per_voxel, max_batch_elems, volume.dtype, volume.device
    ):
        out = out.index_add(0, idx, _project_batch(vol_c, grid, weight, n_u))
    return out


def back_project(
    images: torch.Tensor,
    tilt_angles_deg: Sequence[float] | np.ndarray | torch.Tensor,
    volume_shape: Sequence[int],
    *,
    thickness_px: float | None = None,
    samples_per_voxel: float = DEFAULT_SAMPLES_PER_VOXEL,
    max_batch_elems: int = DEFAULT_MAX_BATCH_ELEMS,
) -> torch.Tensor:
    """The exact adjoint ``Aᵀ`` of :func:`forward_project` (same discretization and parameters).

    Parameters
    ----------
    images : tensor ``(n_tilts, ny, n_u)``, floating point, any device (differentiable).
    tilt_angles_deg : ``(n_tilts,)`` tilt angles in degrees.
    volume_shape : ``(nz, ny, nx)`` of the volume the images were projected from.
    thickness_px, samples_per_voxel, max_batch_elems : as in :func:`forward_project`.

    Returns
    -------
    tensor ``(nz, ny, nx)`` with ``⟨forward_project(x), images⟩ = ⟨x, back_project(images)⟩``; same
    dtype/device as ``images``. Unfiltered (a smeared back-projection, not a reconstruction).

    Raises
    ------
    ParameterError
        Shape mismatch between ``images``, the angles and ``volume_shape``, or the errors of
        :func:`forward_project`.

    Notes
    -----
    Computed chunk by chunk as the vector–Jacobian product of the projector with
    :func:`torch.autograd.grad` (exact for a linear map, memory bounded by one chunk).
    """
    if len(volume_shape) != 3:
        raise ParameterError(f"volume_shape must be (nz, ny, nx), got {tuple(volume_shape)}")
    shape = (int(volume_shape[0]), int(volume_shape[1]), int(volume_shape[2]))
    n_t = len(_angles_rad(tilt_angles_deg))
    if images.ndim != 3 or images.shape[0] != n_t or images.shape[1] != shape[1]:
        raise ParameterError(
            f"images of shape {tuple(images.shape)} do not match {n_t} tilts and ny = {shape[1]}"
        )
    if not images.is_floating_point():
        raise ParameterError(f"images must be a floating-point tensor, got {images.dtype}")
    n_u = int(images.shape[2])
    create_graph = images.requires_grad
    result = images.new_zeros(shape)
    with torch.enable_grad():
        probe = torch.zeros((1, shape[1], shape[0], shape[2]), dtype=images.dtype, device=images.device,
                            requires_grad=True)
        for idx, grid, weight in _chunks(
            shape, tilt_angles_deg, thickness_px, n_u, samples_per_voxel, max_batch_elems, images.dtype,
            images.device,
        ):
            part = _project_batch(probe, grid, weight, n_u)
            (g,) = torch.autograd.grad(part, probe, grad_outputs=images[idx], create_graph=create_graph)
            result = result + g[0].permute(1, 0, 2)
    return result


__all__ = ["DEFAULT_MAX_BATCH_ELEMS", "DEFAULT_SAMPLES_PER_VOXEL", "back_project", "forward_project"]
