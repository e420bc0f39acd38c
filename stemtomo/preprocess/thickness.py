"""Specimen (slab) thickness and z-offset from the z-profile of a reconstruction.

The volume is ``(nz, ny, nx)`` (:mod:`stemtomo.core.geometry`: z = beam direction at 0° tilt, centred
voxel coordinates). A WBP of a limited tilt range does not reconstruct the slab's mean density (its
Fourier components lie on the k_z axis, inside the missing wedge), so the slab is found from its
*structure*: for every z-plane a statistic of the lateral deviation from the plane's median, by default
the 99th percentile of ``|ρ − median(ρ_plane)|`` ("is there any dense structure in this plane?").
The profile is smoothed, a background level (the ``background_percentile`` of the profile: the planes
outside the slab) and a plateau level (the median of the planes above half-way to the maximum) are
measured, and the slab is the run of planes around the maximum above
``background + fraction·(plateau − background)``. Its edges are interpolated linearly between planes.

Measured on simulated cell phantoms (64³, slabs of 16/24/32 voxels, −60:60:3 tilts, WBP ramp,
clean and Poisson-noisy): the default (99th percentile, fraction 0.4) estimated 0.96–1.02 × the true
thickness and the centre within 0.7 voxel. A fraction of 0.5 or the per-plane standard deviation
underestimate (≈ 0.85–0.95 ×), because objects of the phantom, like real ones, thin out toward the faces.
Requires background planes on both sides of the slab (a volume deeper than the specimen), and
projections whose per-tilt offsets are consistent with the geometry: hot pixels (streaks through every
z; remove them first) or per-tilt offsets in the line integrals that the slab does not explain (e.g. each
projection's mean removed) back-project into structure far from the slab and can take the estimate
anywhere (measured on a 24-voxel slab: 9.4 and 10.6 voxels).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from stemtomo.errors import ParameterError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ThicknessConfig:
    """Settings of :func:`estimate_thickness`."""

    statistic: str = "p99"
    """Per-plane statistic of ``|ρ − plane median|``: ``p99`` (99th percentile), ``std`` (standard deviation)
    or ``mad`` (median absolute deviation)."""
    fraction: float = 0.4
    """Threshold between background (0) and plateau (1) at which the slab faces are placed, in (0, 1)."""
    smooth_sigma_px: float = 1.0
    """Gaussian smoothing of the z-profile, voxels (0: none)."""
    margin_frac: float = 0.1
    """Fraction of ny and nx left out on each lateral side (edge artefacts of back-projection), in [0, 0.5)."""
    background_percentile: float = 10.0
    """Percentile of the profile taken as the background (outside-slab) level."""

    def validate(self) -> None:
        """Raise :class:`ParameterError` for out-of-range settings."""
        if self.statistic not in _STATISTICS:
            raise ParameterError(f"thickness statistic {self.statistic!r}: use one of {', '.join(_STATISTICS)}")
        if not 0.0 < self.fraction < 1.0:
            raise ParameterError(f"thickness fraction {self.fraction:g}: must be in (0, 1)")
        if not (math.isfinite(self.smooth_sigma_px) and self.smooth_sigma_px >= 0):
            raise ParameterError(f"thickness smooth_sigma_px {self.smooth_sigma_px:g}: must be ≥ 0")
        if not 0.0 <= self.margin_frac < 0.5:
            raise ParameterError(f"thickness margin_frac {self.margin_frac:g}: must be in [0, 0.5)")
        if not 0.0 <= self.background_percentile < 50.0:
            raise ParameterError(f"thickness background_percentile {self.background_percentile:g}: must be in [0, 50)")


@dataclasses.dataclass(frozen=True)
class ThicknessEstimate:
    """Result of :func:`estimate_thickness` (voxel units of the input volume)."""

    thickness_px: float
    """Slab thickness, voxels (distance between the two interpolated faces)."""
    z_offset_px: float
    """Slab centre minus the volume centre ``(nz − 1)/2``, voxels (positive: toward higher z indices)."""
    z_low_px: float
    """Lower face, z index (fractional)."""
    z_high_px: float
    """Upper face, z index (fractional)."""
    profile: np.ndarray
    """Smoothed per-plane statistic ``(nz,)``."""
    background: float
    """Background level of the profile."""
    plateau: float
    """Plateau (inside-slab) level of the profile."""
    touches_edge: bool
    """True if the slab run reaches the first or last plane (the volume may be too shallow: an underestimate)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python record for a sidecar (the profile as a list)."""
        d = dataclasses.asdict(self)
        d["profile"] = [float(v) for v in self.profile]
        return d


def _plane_statistic(vol: torch.Tensor, statistic: str) -> torch.Tensor:
    flat = vol.reshape(vol.shape[0], -1)
    dev = (flat - flat.median(dim=1, keepdim=True).values).abs()
    if statistic == "std":
        return flat.std(dim=1)
    if statistic == "mad":
        return dev.median(dim=1).values
    k = max(1, min(dev.shape[1], math.ceil(0.99 * dev.shape[1])))
    return dev.kthvalue(k, dim=1).values  # the 99th percentile (nearest rank; no size limit unlike quantile)


def _supported_statistic(vol: torch.Tensor, support: torch.Tensor, statistic: str, min_voxels: int) -> np.ndarray:
    """Per-plane statistic over the supported voxels only; NaN for planes with fewer than ``min_voxels``."""
    out = np.full(vol.shape[0], np.nan)
    counts = support.reshape(support.shape[0], -1).sum(dim=1).tolist()
    for z, count in enumerate(counts):
        if count >= min_voxels:
            out[z] = float(_plane_statistic(vol[z][support[z]][None], statistic)[0])
    return out


_STATISTICS = ("p99", "std", "mad")


def z_profile(volume: np.ndarray | torch.Tensor, config: ThicknessConfig = ThicknessConfig(), *,
              support: torch.Tensor | None = None) -> np.ndarray:
    """The smoothed per-plane structure statistic ``(nz,)`` of a volume ``(nz, ny, nx)`` (see module notes).

    ``support``: boolean ``(nz, ny, nx)``, the voxels to score (e.g. those that every tilt sees inside its
    data, :func:`stemtomo.preprocess.pipeline.estimate_slab`); planes with fewer than
    :data:`MIN_SUPPORT_FRACTION` of the scored area are NaN in the result (not smoothed into the others).
    Computed on the volume's device (torch), returned as a float64 numpy array.

    Raises
    ------
    ParameterError
        Not a 3D real volume with ≥ 5 planes, non-finite values, a support of another shape, bad config.
    """
    config.validate()
    vol = torch.as_tensor(volume)
    if vol.ndim != 3 or vol.is_complex() or vol.shape[0] < 5 or min(vol.shape[1:]) < 1:
        raise ParameterError(f"thickness: expected a real volume (nz ≥ 5, ny, nx), got shape {tuple(vol.shape)}")
    if support is not None and tuple(support.shape) != tuple(vol.shape):
        raise ParameterError(f"thickness: support of shape {tuple(support.shape)} for a volume of {tuple(vol.shape)}")
    vol = vol.to(torch.float64 if vol.dtype == torch.float64 else torch.float32)
    if not bool(torch.isfinite(vol).all()):
        raise ParameterError("thickness: the volume holds NaN or infinite values; reconstruct it again")
    my, mx = (int(config.margin_frac * n) for n in vol.shape[1:])
    core = vol[:, my : vol.shape[1] - my, mx : vol.shape[2] - mx]
    if support is None:
        prof = _plane_statistic(core, config.statistic).double().cpu().numpy()
    else:
        seen = support[:, my : vol.shape[1] - my, mx : vol.shape[2] - mx].to(device=vol.device, dtype=torch.bool)
        prof = _supported_statistic(core, seen, config.statistic, max(16, math.ceil(MIN_SUPPORT_FRACTION * core[0].numel())))
    known = np.isfinite(prof)
    if not known.any():
        raise ParameterError("thickness: no plane of the volume is seen whole by every tilt; nothing to measure")
    if config.smooth_sigma_px > 0:
        filled = np.where(known, prof, np.percentile(prof[known], config.background_percentile))
        prof = np.where(known, ndimage.gaussian_filter1d(filled, config.smooth_sigma_px, mode="nearest"), np.nan)
    return prof


MIN_SUPPORT_FRACTION = 0.01
"""A plane is scored when at least this fraction of its (margin-cropped) area is supported."""


def _crossing(p: np.ndarray, inside: int, outside: int, level: float) -> float:
    """Fractional index between neighbouring planes where ``p`` crosses ``level``."""
    a, b = p[inside], p[outside]
    t = 0.5 if a == b else float(np.clip((a - level) / (a - b), 0.0, 1.0))
    return inside + t * (outside - inside)


def slab_from_profile(profile: np.ndarray, config: ThicknessConfig = ThicknessConfig()) -> ThicknessEstimate:
    """Slab faces from a z-profile ``(nz,)`` (already smoothed), see the module notes.

    NaN planes (not measured, :func:`z_profile` with a support) end the slab like the volume's edges do.

    Raises
    ------
    ParameterError
        A flat profile (no structure: nothing distinguishes the slab from the background).
    """
    p = np.asarray(profile, dtype=np.float64)
    nz = p.size
    known = np.isfinite(p)
    if not known.any():
        raise ParameterError("thickness: the z-profile has no measured plane")
    bg = float(np.percentile(p[known], config.background_percentile))
    top = float(p[known].max())
    if not top > bg + 1e-12 * max(abs(top), 1.0):
        raise ParameterError("thickness: the volume's z-profile is flat; no slab can be found (empty volume?)")
    plateau = float(np.median(p[known & (p >= bg + 0.5 * (top - bg))]))
    level = bg + config.fraction * (plateau - bg)
    k = int(np.nanargmax(p))
    lo = k
    while lo > 0 and p[lo - 1] >= level:  # NaN compares False: the run stops at an unmeasured plane
        lo -= 1
    hi = k
    while hi < nz - 1 and p[hi + 1] >= level:
        hi += 1
    open_lo, open_hi = lo == 0 or not known[lo - 1], hi == nz - 1 or not known[hi + 1]
    z_lo = lo - 0.5 if open_lo else _crossing(p, lo, lo - 1, level)
    z_hi = hi + 0.5 if open_hi else _crossing(p, hi, hi + 1, level)
    touches = open_lo or open_hi
    if touches:
        log.warning("thickness: the slab reaches the volume's z-edge or planes no tilt sees whole; reconstruct "
                    "a deeper volume (larger nz) or crop the images less")
    return ThicknessEstimate(
        thickness_px=float(z_hi - z_lo),
        z_offset_px=float((z_lo + z_hi) / 2.0 - (nz - 1) / 2.0),
        z_low_px=float(z_lo),
        z_high_px=float(z_hi),
        profile=p,
        background=bg,
        plateau=plateau,
        touches_edge=touches,
    )


def estimate_thickness(
    volume: np.ndarray | torch.Tensor, config: ThicknessConfig = ThicknessConfig(), *,
    support: torch.Tensor | None = None,
) -> ThicknessEstimate:
    """Estimate the specimen slab thickness and its z-offset from a reconstruction.

    Parameters
    ----------
    volume : ``(nz, ny, nx)`` density (e.g. a WBP, :func:`stemtomo.recon.wbp.wbp`), numpy or torch on any
        device; reconstruct it deeper than the specimen (e.g. ``nz`` = image width) so that background
        planes exist on both sides.
    config : :class:`ThicknessConfig`.
    support : boolean ``(nz, ny, nx)``: score only these voxels (see :func:`z_profile`).

    Returns
    -------
    :class:`ThicknessEstimate`: ``thickness_px`` and ``z_offset_px`` in voxels of ``volume`` (multiply by
    the binning factor for unbinned pixels).

    Raises
    ------
    ParameterError
        Bad shape, non-finite values, flat profile, bad config.

    Notes
    -----
    Accuracy depends on the structure near the faces: a specimen whose faces carry no structure (e.g. a
    uniform embedding layer) is estimated by its structured part. Gold beads on the surfaces help.
    """
    est = slab_from_profile(z_profile(volume, config, support=support), config)
    log.debug("thickness: %.1f voxels, centre offset %+.1f voxels", est.thickness_px, est.z_offset_px)
    return est


__all__ = ["ThicknessConfig", "ThicknessEstimate", "estimate_thickness", "slab_from_profile", "z_profile"]
