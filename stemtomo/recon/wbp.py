"""Weighted (filtered) back-projection of parallel-beam STEM tilt series, and the tilt-series pipeline
shared with SIRT (normalize → bin → align → linearize → reconstruct).

Geometry is :mod:`stemtomo.core.geometry`: volumes ``(nz, ny, nx)``, centred voxel coordinates, the tilt
axis along y, and a point ``(x, y, z)`` lands at ``u = x·cosθ + z·sinθ``, ``v = y`` at tilt θ.
Back-projection is its adjoint ``vol[z, y, x] += w_θ · img_θ[y, u(x, z, θ)]`` with linear interpolation in
u and zero outside the detector.

Units: the volume is a density estimate in the units of ρ. Intensities are linearized into line integrals
``P = ∫ρ ds`` in normalized length units (:mod:`stemtomo.core.imaging`) and multiplied by the voxels per
unit (:func:`~stemtomo.core.geometry.length_unit_px`), so line integrals are in voxel units and WBP
(Δθ-weighted ramp-filtered back-projection) returns ρ per voxel.

References
----------
A. C. Kak and M. Slaney, *Principles of Computerized Tomographic Imaging*, IEEE Press, 1988, ch. 3.
R. A. Crowther, D. J. DeRosier, A. Klug, Proc. R. Soc. Lond. A 317 (1970) 319–340 (weighted back-projection).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stemtomo.core.geometry import (
    aligned_shape,
    check_angles,
    is_quarter_turn,
    length_unit_px,
    raw_to_aligned,
)
from stemtomo.core.imaging import DEFAULT_KAPPA, linearize, normalized_intensities
from stemtomo.errors import ParameterError
from stemtomo.recon.filters import angular_weights, filter_name, filter_rows
from stemtomo.recon.sirt import SIRTConfig, sirt

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""``callback(done, total)``: called after each chunk of work."""


@dataclasses.dataclass(frozen=True)
class WBPConfig:
    """Settings of a classic reconstruction (``stemtomo wbp``)."""

    method: str = "wbp"
    """``wbp`` (weighted back-projection) or ``sirt`` (simultaneous iterative reconstruction)."""
    filter: str = "ramp"
    """WBP ramp apodization: ramp, shepp-logan, cosine, hamming, hann (scikit-image names)."""
    thickness_px: float | None = None
    """Specimen slab thickness in voxels of the reconstruction; None: the volume depth (no masking)."""
    nz: int | None = None
    """Volume depth in voxels; None: ``thickness_px`` rounded, or the image width if that is None too."""
    bin_factor: int = 1
    """Average-bin the images by this factor in x and y before reconstruction (pixel size × factor)."""
    sirt: SIRTConfig = dataclasses.field(default_factory=SIRTConfig)
    """SIRT settings (used when ``method == "sirt"``)."""
    restore_mean: bool = True
    """WBP with a known slab thickness: set the slab's mean density from the least-tilted image (see :func:`wbp`)."""
    chunk_elements: int = 1 << 24
    """Memory bound: elements of the per-chunk back-projection buffer (tilts × y-slices × nz × nx)."""

    def validate(self) -> None:
        """Raise :class:`ParameterError` for out-of-range settings (named after the CLI options)."""
        if self.method not in ("wbp", "sirt"):
            raise ParameterError(f"--method {self.method!r}: use wbp or sirt")
        filter_name(self.filter)
        if self.thickness_px is not None and not (math.isfinite(self.thickness_px) and self.thickness_px > 0):
            raise ParameterError(f"--thickness-px {self.thickness_px:g}: the slab thickness must be > 0 pixels")
        if self.nz is not None and self.nz < 1:
            raise ParameterError(f"--nz {self.nz}: the volume depth must be ≥ 1 voxel")
        if self.bin_factor < 1:
            raise ParameterError(f"--bin {self.bin_factor}: the binning factor must be ≥ 1")
        if self.nz is not None and self.thickness_px is not None and self.thickness_px > self.nz + 1e-6:
            raise ParameterError(
                f"--thickness-px {self.thickness_px:g} is larger than --nz {self.nz}; the slab must fit in the volume"
            )
        if self.sirt.iterations < 1:
            raise ParameterError(f"--iterations {self.sirt.iterations}: SIRT needs at least 1 iteration")
        if not 0.0 < self.sirt.relaxation < 2.0:
            raise ParameterError(f"--relaxation {self.sirt.relaxation:g}: SIRT converges only for 0 < λ < 2")
        if self.chunk_elements < 1:
            raise ParameterError(f"chunk_elements {self.chunk_elements}: must be ≥ 1")


def _angles(tilt_angles_deg: Sequence[float] | np.ndarray) -> np.ndarray:
    return check_angles(np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1).tolist(), option="tilt angles")


# ---- back-projection ------------------------------------------------------------------------------------
def back_project_slices(
    images: torch.Tensor,
    tilt_angles_deg: Sequence[float] | np.ndarray,
    nz: int,
    *,
    weights: Sequence[float] | np.ndarray | None = None,
    chunk_elements: int = 1 << 24,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Unfiltered, weighted back-projection ``vol[z, y, x] = Σ_i w_i · img_i[y, u(x, z, θ_i)]``.

    Parameters
    ----------
    images : ``(n_tilts, ny, n_u)`` aligned images (tilt axis = y); the volume gets ``nx = n_u``.
    tilt_angles_deg : ``(n_tilts,)`` tilt angles in degrees, in (-90°, 90°).
    nz : volume depth (voxels); z is centred at ``(nz - 1)/2``.
    weights : ``(n_tilts,)`` per-tilt weights (default 1).
    chunk_elements : bound on the intermediate buffer; tilts and, if needed, y-slices are chunked.
    progress : ``callback(done_tilts, n_tilts)`` after each tilt chunk.

    Returns
    -------
    ``(nz, ny, n_u)`` tensor on the images' device and dtype.

    Notes
    -----
    y (the tilt axis) is the channel dimension of one ``F.grid_sample`` call per chunk: input
    ``(n_chunk, ny, 1, n_u)`` sampled at ``u(x, z, θ)`` on the ``(nz, nx)`` grid, summed over tilts.
    The sample positions are computed once per tilt, not per slice.
    """
    angles = _angles(tilt_angles_deg)
    n, ny, nu = images.shape
    if angles.size != n:
        raise ParameterError(f"{angles.size} tilt angles for {n} images; the counts must match")
    dev, dt = images.device, images.dtype
    w = torch.ones(n, dtype=dt, device=dev) if weights is None else torch.as_tensor(
        np.asarray(weights, dtype=np.float64), dtype=dt, device=dev)
    theta = torch.as_tensor(np.radians(angles), dtype=dt, device=dev)
    x = torch.arange(nu, dtype=dt, device=dev) - (nu - 1) / 2.0
    z = torch.arange(nz, dtype=dt, device=dev) - (nz - 1) / 2.0
    half_width = max((nu - 1) / 2.0, 0.5)
    plane = nz * nu
    y_step = max(1, min(ny, chunk_elements // plane))
    t_step = max(1, min(n, chunk_elements // (plane * y_step)))
    out = torch.zeros(nz, ny, nu, dtype=dt, device=dev)
    for t0 in range(0, n, t_step):
        t1 = min(n, t0 + t_step)
        c, s = torch.cos(theta[t0:t1]), torch.sin(theta[t0:t1])
        u = x[None, None, :] * c[:, None, None] + z[None, :, None] * s[:, None, None]  # (c, nz, nx)
        grid = torch.stack((u / half_width, torch.zeros_like(u)), dim=-1)
        for y0 in range(0, ny, y_step):
            y1 = min(ny, y0 + y_step)
            src = (images[t0:t1, y0:y1] * w[t0:t1, None, None]).unsqueeze(2)  # (c, yc, 1, nu)
            sampled = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            out[:, y0:y1] += sampled.sum(dim=0).transpose(0, 1)  # (yc, nz, nu) → the volume's (nz, yc, nu)
        if progress is not None:
            progress(t1, n)
    return out


def slab_mask(nz: int, thickness_px: float | None, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(nz, 1, 1)`` mask: 1 where ``|z| ≤ thickness_px/2`` (centred z), 0 outside; all ones for None."""
    z = torch.arange(nz, dtype=dtype, device=device) - (nz - 1) / 2.0
    if thickness_px is None:
        return torch.ones(nz, 1, 1, dtype=dtype, device=device)
    return (z.abs() <= thickness_px / 2.0 + 1e-6).to(dtype).reshape(nz, 1, 1)


def wbp(
    line_integrals: torch.Tensor,
    tilt_angles_deg: Sequence[float] | np.ndarray,
    nz: int,
    *,
    filter: str = "ramp",
    thickness_px: float | None = None,
    restore_mean: bool = False,
    chunk_elements: int = 1 << 24,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Weighted back-projection of aligned line integrals into a density volume.

    Parameters
    ----------
    line_integrals : ``(n_tilts, ny, n_u)`` line integrals ``∫ρ ds`` in voxel units, tilt axis = y.
    tilt_angles_deg : ``(n_tilts,)`` degrees, any order, unevenly spaced allowed.
    nz : volume depth in voxels.
    filter : ramp apodization (:class:`~stemtomo.recon.filters.FilterName`).
    thickness_px : slab thickness in voxels; density outside ``|z| ≤ thickness_px/2`` is set to 0.
    restore_mean : with ``thickness_px``, shift the density inside the slab so that its mean equals
        ``mean(P₀)·cosθ₀ / thickness_px`` from the least-tilted image (see Notes).
    chunk_elements, progress : see :func:`back_project_slices`.

    Returns
    -------
    ``(nz, ny, n_u)`` density (units of ρ) on the input's device.

    Raises
    ------
    ParameterError
        Fewer than 2 tilts, angle/image count mismatch, angles outside (-90°, 90°), unknown filter.

    Notes
    -----
    Each row (perpendicular to the tilt axis) is filtered with ``2|ω|·W(ω)`` and back-projected with
    weight ``Δθ_i/2``, ``Δθ_i`` from the neighbouring gaps (:func:`~stemtomo.recon.filters.angular_weights`).
    For evenly spaced tilts over 180° this equals scikit-image ``iradon``. With a limited tilt range the
    missing wedge is not filled (the classic WBP artefacts).

    A thin, wide slab has most of its low-frequency content along k_z, inside the missing wedge, so
    limited-angle WBP loses its mean density (about half of it on a simulated ±60° cell slab). With a
    known thickness that mean is measurable: a ray at tilt θ₀ ≈ 0 crosses the whole slab, so the mean
    line integral of that image is ``ρ̄·thickness/cosθ₀``. ``restore_mean`` adds the missing constant
    inside the slab (exact mean; RMSE 0.244 → 0.164 on that example); the structure is unchanged.
    """
    angles = _angles(tilt_angles_deg)
    weights = angular_weights(angles)
    filtered = filter_rows(line_integrals, filter)
    vol = back_project_slices(filtered, angles, nz, weights=weights, chunk_elements=chunk_elements, progress=progress)
    mask = slab_mask(nz, thickness_px, dtype=vol.dtype, device=vol.device)
    vol.mul_(mask)  # in place, as below: a large volume is held once
    if restore_mean and thickness_px is not None:
        i0 = int(np.argmin(np.abs(angles)))
        target = line_integrals[i0].mean() * math.cos(math.radians(angles[i0])) / thickness_px
        planes = mask.reshape(-1) > 0
        inside_mean = vol.sum(dim=(1, 2))[planes].sum() / (int(planes.sum()) * vol.shape[1] * vol.shape[2])
        vol.add_((target - inside_mean) * mask)
    return vol


# ---- the tilt-series pipeline -----------------------------------------------------------------------------
def bin_images(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-bin ``(..., ny, nx)`` by ``factor`` in y and x (the remainder rows/columns are cropped)."""
    if factor < 1:
        raise ParameterError(f"--bin {factor}: the binning factor must be ≥ 1")
    if factor == 1:
        return images
    ny, nx = images.shape[-2] // factor, images.shape[-1] // factor
    if ny < 1 or nx < 1:
        raise ParameterError(f"--bin {factor}: larger than the image ({images.shape[-2]}×{images.shape[-1]})")
    cropped = images[..., : ny * factor, : nx * factor]
    return cropped.reshape(*images.shape[:-2], ny, factor, nx, factor).mean(dim=(-3, -1))


def line_integrals_from_stack(
    stack: np.ndarray,
    *,
    contrast: str = "bf",
    kappa: float = DEFAULT_KAPPA,
    normalization: dict[str, Any] | None = None,
    tilt_axis_angle_deg: float = 0.0,
    bin_factor: int = 1,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Tilt series → aligned line integrals in voxel units, ready for :func:`wbp` / SIRT.

    Steps: intensities into [0, 1] (:func:`~stemtomo.core.imaging.normalized_intensities`), average
    binning, linearization (BF ``-log I / κ``, DF ``-log(1 - I) / κ``, clipped away from 0), × voxels per
    unit, rotation into the aligned frame (tilt axis along y; :func:`~stemtomo.core.geometry.raw_to_aligned`).
    Rotating the line integrals, not the intensities, interpolates in the quantity that is linear in the
    density; the corners a non-quarter-turn rotation brings in hold each image's mean line integral (as an
    alignment's fill holds the image mean), not zero intensity, which in bright field linearizes to an
    opaque ``-log(eps) / κ`` whose edges back-project as streaks.

    Parameters
    ----------
    stack : ``(n_tilts, ny, nx)`` raw intensities.
    contrast, kappa : image formation model (sidecar values; defaults bf, κ = 7).
    normalization : the sidecar's normalization record (None: robust min–max over the stack).
    tilt_axis_angle_deg : in-plane tilt-axis angle α of the raw images (CCW from +y).
    bin_factor : average binning factor.
    device : where the tensors live.

    Returns
    -------
    ``(line integrals (n_tilts, ny_a, nx_a) float32, normalization record)``.
    """
    intensities, record = normalized_intensities(stack, normalization)
    t = bin_images(torch.as_tensor(intensities, dtype=torch.float32, device=device), bin_factor)
    ny, nx = aligned_shape(t.shape, tilt_axis_angle_deg)[-2:]
    lines = linearize(t, contrast, kappa) * length_unit_px(ny, nx)
    return rotate_mean_filled(lines, tilt_axis_angle_deg), record


def rotate_mean_filled(images: torch.Tensor, tilt_axis_angle_deg: float) -> torch.Tensor:
    """:func:`~stemtomo.core.geometry.raw_to_aligned` of ``(n, ny, nx)`` images padded with each image's
    mean instead of zeros (quarter turns are exact and need no padding)."""
    if is_quarter_turn(tilt_axis_angle_deg):
        return raw_to_aligned(images, tilt_axis_angle_deg)
    rotated = raw_to_aligned(images, tilt_axis_angle_deg)
    cover = raw_to_aligned(images.new_ones((1, *images.shape[-2:])), tilt_axis_angle_deg)
    mean = images.mean(dim=(-2, -1), keepdim=True)
    return rotated + (1.0 - cover) * mean


def default_geometry(config: WBPConfig, n_u: int) -> tuple[int, float | None]:
    """Volume depth and slab thickness (voxels) for a config and an aligned image width ``n_u``.

    Without a thickness the volume is a cube-like ``nz = n_u`` (a generous slab: any specimen thinner than
    the image is wide fits) and nothing is masked. With a thickness and no ``nz``, ``nz = ceil(thickness)``.
    """
    thickness = config.thickness_px
    if config.nz is not None:
        return config.nz, thickness
    if thickness is None:
        return n_u, None
    return slab_depth(thickness), thickness


def slab_depth(thickness_px: float) -> int:
    """Planes of a tomogram of a slab ``thickness_px`` voxels thick: ``ceil`` (a whole slab; up to 1e-6 voxel),
    the rule of ``wbp`` and ``recon`` alike, so that their tomograms of one series share a grid."""
    return max(1, math.ceil(thickness_px - 1e-6))


def half_set_indices(tilt_angles_deg: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the even and odd tilts **in sorted angle order** (so each half spans the full range,
    whatever the acquisition order, e.g. dose-symmetric)."""
    order = np.argsort(np.asarray(tilt_angles_deg, dtype=np.float64), kind="stable")
    return np.sort(order[0::2]), np.sort(order[1::2])


def reconstruct(
    line_integrals: torch.Tensor,
    tilt_angles_deg: Sequence[float] | np.ndarray,
    config: WBPConfig,
    *,
    progress: ProgressCallback | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Reconstruct with ``config.method`` (WBP or SIRT); returns ``(volume (nz, ny, nx), info)``.

    ``info`` holds ``nz``, ``thickness_px`` and, for SIRT, the residual norm per iteration.
    """
    config.validate()
    nz, thickness = default_geometry(config, line_integrals.shape[-1])
    info: dict[str, Any] = {"nz": nz, "thickness_px": thickness}
    if config.method == "wbp":
        vol = wbp(line_integrals, tilt_angles_deg, nz, filter=config.filter, thickness_px=thickness,
                  restore_mean=config.restore_mean, chunk_elements=config.chunk_elements, progress=progress)
        return vol, info
    sc = config.sirt
    vol, residuals = sirt(
        line_integrals, tilt_angles_deg, nz, iterations=sc.iterations, relaxation=sc.relaxation,
        positivity=sc.positivity, thickness_px=thickness, samples_per_voxel=sc.samples_per_voxel,
        progress=progress,
    )
    info["residual_norms"] = residuals
    return vol, info


__all__ = [
    "WBPConfig",
    "back_project_slices",
    "bin_images",
    "default_geometry",
    "half_set_indices",
    "line_integrals_from_stack",
    "reconstruct",
    "rotate_mean_filled",
    "slab_depth",
    "slab_mask",
    "wbp",
]
