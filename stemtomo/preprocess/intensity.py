"""Per-tilt intensity normalization of STEM tilt series (beam current drift, detector gain changes).

Bright field (``I = I0·exp(−κP)``, :mod:`stemtomo.core.imaging`): the forward model needs ``I0 = 1`` at
every tilt. Two models (``bf_model``):

* ``vacuum`` (default): each image sees vacuum (or an unobstructed beam) somewhere. Its **background
  level** is the ``percentile`` (default 99th) of the image smoothed by a Gaussian of ``smooth_sigma_px``
  (smoothing shrinks the noise, so the percentile sits close to the true vacuum level; the percentile
  ignores up to 1 % of hot pixels and bright outliers). The level *is* ``I0`` of that tilt and the image
  is divided by it. Needs ≳ 2 % vacuum pixels at every tilt.
* ``slab``: a laterally extended specimen that fills the view at every tilt (no vacuum). Beer–Lambert is
  linear in the log domain, and the mean line integral of a laterally extended slab grows as ``1/cosθ``
  (the same argument as the dark-field mass consistency below), so the mean log-intensity of the
  (smoothed) image follows ``L_i = log I0 + log g_i − μ/cosθ_i``. A robust straight-line fit of ``L_i``
  against ``1/cosθ_i`` gives ``log I0`` and ``μ`` (the mean attenuation at 0°); the residuals are the
  per-tilt gains ``g_i``. After division by ``I0·g_i`` every tilt obeys ``exp(−κP)``. Only the part of
  the gain errors not of the form ``exp(c0 + c1/cosθ)`` is identifiable (a drift ∝ 1/cosθ looks like
  specimen attenuation). Pixels ≤ 0 are clipped to 1e-6 of the image's mean before the log.

Dark field / HAADF (signal ≈ proportional to projected mass, dark level 0): **projected-mass
consistency**. For a laterally extended slab that fills the field of view at every tilt, the total
signal grows as the path length ``1/cosθ``, so ``M_i = cosθ_i · Σ I_i`` is the same for all tilts
(``mode="cos"``). For an isolated object that stays inside the field of view, the plain total
``M_i = Σ I_i`` is conserved instead (``mode="total"``). Each tilt is scaled to the median of the
``M_i``. Subtract any detector dark offset first; the ``1 − exp(−κP)`` saturation of very thick or
heavy specimens breaks the proportionality.

Neither BF model nor the DF ``cos`` mode fits a series simulated from a finite cube (``stemtomo simulate``):
its high-tilt rays leave the cube sideways, so the images brighten (BF) or lose mass (DF) with tilt;
such data need no per-tilt correction.

Both return the corrected stack (float32) and an :class:`IntensityCorrection` whose
:meth:`~IntensityCorrection.as_dict` is meant for the sidecar's ``normalization`` record.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from stemtomo.core.geometry import check_angles
from stemtomo.errors import ParameterError

log = logging.getLogger(__name__)

BF_MODELS = ("vacuum", "slab")
DF_MODES = ("cos", "total")


@dataclasses.dataclass(frozen=True)
class IntensityConfig:
    """Settings of :func:`normalize_bf` and :func:`normalize_df`."""

    bf_model: str = "vacuum"
    """Bright field: ``vacuum`` (divide by each image's background level) or ``slab`` (fit the mean
    log-intensity's ``log I0 − μ/cosθ`` trend and divide by ``I0`` and the per-tilt deviation from it)."""
    percentile: float = 99.0
    """Bright field: percentile of the smoothed image taken as its background (vacuum) level, in (50, 100]."""
    smooth_sigma_px: float = 2.0
    """Bright field: Gaussian smoothing before the percentile, pixels (0: none)."""
    df_mode: str = "cos"
    """Dark field: ``cos`` (Σ I·cosθ constant: extended slab) or ``total`` (Σ I constant: object in view)."""

    def validate(self) -> None:
        """Raise :class:`ParameterError` for out-of-range settings."""
        if self.bf_model not in BF_MODELS:
            raise ParameterError(f"bright-field model {self.bf_model!r}: use {' or '.join(BF_MODELS)}")
        if self.df_mode not in DF_MODES:
            raise ParameterError(f"dark-field mode {self.df_mode!r}: use {' or '.join(DF_MODES)}")
        if not 50.0 < self.percentile <= 100.0:
            raise ParameterError(f"background percentile {self.percentile:g}: must be in (50, 100] (e.g. 99)")
        if not (math.isfinite(self.smooth_sigma_px) and self.smooth_sigma_px >= 0):
            raise ParameterError(f"background smoothing {self.smooth_sigma_px:g}: must be ≥ 0 pixels")


@dataclasses.dataclass(frozen=True)
class IntensityCorrection:
    """What was applied: ``corrected[i] = stack[i] · factors[i]``."""

    method: str
    """``bf_vacuum``, ``bf_slab``, ``df_cos`` or ``df_total``."""
    factors: np.ndarray
    """``(n_tilts,)`` multiplicative factors applied per tilt."""
    levels: np.ndarray
    """``(n_tilts,)`` measured per-tilt quantity: BF vacuum level, BF slab geometric-mean intensity
    ``exp(L_i)``, DF (cos-weighted) total."""
    fit: dict[str, float]
    """Model parameters (``bf_slab``: ``log_i0`` and ``mu`` of ``L = log_i0 − mu/cosθ``; else empty)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python record for a sidecar's ``normalization`` field."""
        return {
            "method": f"per_tilt_{self.method}",
            "factors": [float(f) for f in self.factors],
            "levels": [float(v) for v in self.levels],
            **{k: float(v) for k, v in self.fit.items()},
        }


def _check_stack(stack: np.ndarray, n_angles: int | None) -> np.ndarray:
    arr = np.asarray(stack)
    if arr.ndim != 3 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ParameterError(f"intensity normalization: expected a real (n, ny, nx) stack, got {arr.dtype} {arr.shape}")
    if n_angles is not None and n_angles != arr.shape[0]:
        raise ParameterError(f"intensity normalization: {n_angles} tilt angles for a stack of {arr.shape[0]} images")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise ParameterError("intensity normalization: the stack holds NaN or infinite pixels")
    return out


def _angles(tilt_angles_deg: Sequence[float] | np.ndarray) -> np.ndarray:
    return check_angles(np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1).tolist(), option="tilt angles")


def _smoothed(arr: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return arr
    return ndimage.gaussian_filter(arr, (0, sigma_px, sigma_px), mode="reflect")


def background_levels(stack: np.ndarray, config: IntensityConfig = IntensityConfig()) -> np.ndarray:
    """Per-image bright-field background (vacuum) level ``(n,)``: the ``percentile`` of the smoothed image.

    Raises
    ------
    ParameterError
        Bad stack or config.
    """
    config.validate()
    arr = _smoothed(_check_stack(stack, None), config.smooth_sigma_px)
    return np.percentile(arr.reshape(arr.shape[0], -1), config.percentile, axis=1)


def mean_log_intensity(stack: np.ndarray, config: IntensityConfig = IntensityConfig()) -> np.ndarray:
    """Per-image mean of ``log I`` ``(n,)`` of the smoothed image (pixels clipped to ≥ 1e-6 × image mean).

    Raises
    ------
    ParameterError
        Bad stack or config; an image whose mean is ≤ 0.
    """
    config.validate()
    arr = _smoothed(_check_stack(stack, None), config.smooth_sigma_px).reshape(len(stack), -1)
    means = arr.mean(axis=1)
    if not np.all(means > 0):
        i = int(np.argmin(means))
        raise ParameterError(
            f"bright-field normalization: image {i} has mean {means[i]:g} ≤ 0; subtract the detector offset "
            "first or use dark-field normalization for HAADF data"
        )
    return np.log(np.maximum(arr, 1e-6 * means[:, None])).mean(axis=1)


def _robust_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``y ≈ c0 + c1·x`` by least squares with two rounds of 3.5-MAD outlier rejection; ``(c0, c1)``."""
    keep = np.ones(x.size, dtype=bool)
    c1, c0 = 0.0, float(np.median(y))
    for _ in range(3):
        if keep.sum() < 3 or np.ptp(x[keep]) <= 0:
            c1, c0 = 0.0, float(np.median(y[keep]))
            break
        c1, c0 = (float(c) for c in np.polyfit(x[keep], y[keep], 1))
        res = y - (c0 + c1 * x)
        mad = float(np.median(np.abs(res[keep])))
        if mad == 0:
            break
        keep = np.abs(res) <= 3.5 * 1.4826 * mad
    return c0, c1


def normalize_bf(
    stack: np.ndarray,
    tilt_angles_deg: Sequence[float] | np.ndarray | None = None,
    config: IntensityConfig = IntensityConfig(),
) -> tuple[np.ndarray, IntensityCorrection]:
    """Per-tilt bright-field ``I0`` normalization (see the module notes for the models).

    Parameters
    ----------
    stack : ``(n_tilts, ny, nx)`` raw BF intensities (dark offset 0; defects removed first helps).
    tilt_angles_deg : ``(n_tilts,)`` degrees; required for ``bf_model="slab"``, checked if given.
    config : :class:`IntensityConfig`.

    Returns
    -------
    (corrected float32 stack: vacuum ≈ 1 (vacuum model) or mean log-intensity ``−μ/cosθ`` (slab model);
    :class:`IntensityCorrection`)

    Raises
    ------
    ParameterError
        Bad stack/angles/config; a background level or mean ≤ 0 (subtract the dark offset / check the contrast).
    """
    config.validate()
    arr = _check_stack(stack, None if tilt_angles_deg is None else len(np.atleast_1d(tilt_angles_deg)))
    fit: dict[str, float] = {}
    if config.bf_model == "vacuum":
        levels = background_levels(arr, config)
        if not np.all(levels > 0):
            i = int(np.argmin(levels))
            raise ParameterError(
                f"bright-field normalization: image {i} has background level {levels[i]:g} ≤ 0; "
                "subtract the detector offset first or use dark-field normalization for HAADF data"
            )
        factors = 1.0 / levels
    else:
        if tilt_angles_deg is None:
            raise ParameterError("bright-field normalization: bf_model 'slab' needs the tilt angles")
        inv_cos = 1.0 / np.cos(np.deg2rad(_angles(tilt_angles_deg)))
        mean_log = mean_log_intensity(arr, config)
        log_i0, neg_mu = _robust_line(inv_cos, mean_log)
        fit = {"log_i0": log_i0, "mu": -neg_mu}
        if neg_mu > 0:
            log.warning("bright-field slab fit: the images brighten with tilt (μ = %.3g < 0); vacuum in view?",
                        -neg_mu)
        log_gains = mean_log - (log_i0 + neg_mu * inv_cos)
        factors = np.exp(-(log_i0 + log_gains))
        levels = np.exp(mean_log)
    return (arr * factors[:, None, None]).astype(np.float32), IntensityCorrection(
        method=f"bf_{config.bf_model}", factors=factors, levels=levels, fit=fit
    )


def normalize_df(
    stack: np.ndarray,
    tilt_angles_deg: Sequence[float] | np.ndarray,
    config: IntensityConfig = IntensityConfig(),
) -> tuple[np.ndarray, IntensityCorrection]:
    """Per-tilt dark-field (HAADF) scaling by projected-mass consistency (see the module notes).

    Parameters
    ----------
    stack : ``(n_tilts, ny, nx)`` DF intensities, dark level 0.
    tilt_angles_deg : ``(n_tilts,)`` degrees (used by ``df_mode="cos"``, checked always).
    config : :class:`IntensityConfig` (``df_mode``).

    Returns
    -------
    (corrected float32 stack whose ``M_i`` all equal the median; :class:`IntensityCorrection`)

    Raises
    ------
    ParameterError
        Bad stack/angles/config; a total signal ≤ 0 (subtract the dark offset / check the contrast).
    """
    config.validate()
    angles = _angles(tilt_angles_deg)
    arr = _check_stack(stack, angles.size)
    totals = arr.reshape(arr.shape[0], -1).sum(axis=1)
    mass = totals * np.cos(np.deg2rad(angles)) if config.df_mode == "cos" else totals
    if not np.all(mass > 0):
        i = int(np.argmin(mass))
        raise ParameterError(
            f"dark-field normalization: image {i} has total signal {totals[i]:g} ≤ 0; "
            "subtract the detector offset first or use bright-field normalization"
        )
    factors = float(np.median(mass)) / mass
    return (arr * factors[:, None, None]).astype(np.float32), IntensityCorrection(
        method=f"df_{config.df_mode}", factors=factors, levels=mass, fit={}
    )


def normalize_tilt_intensities(
    stack: np.ndarray,
    tilt_angles_deg: Sequence[float] | np.ndarray,
    contrast: str = "bf",
    config: IntensityConfig = IntensityConfig(),
) -> tuple[np.ndarray, IntensityCorrection]:
    """:func:`normalize_bf` or :func:`normalize_df` by ``contrast`` (``bf``/``df``, as in the sidecar)."""
    if contrast == "bf":
        return normalize_bf(stack, tilt_angles_deg, config)
    if contrast == "df":
        return normalize_df(stack, tilt_angles_deg, config)
    raise ParameterError(f"--contrast {contrast!r}: use bf (bright field) or df (dark field)")


__all__ = [
    "BF_MODELS",
    "DF_MODES",
    "IntensityConfig",
    "IntensityCorrection",
    "background_levels",
    "mean_log_intensity",
    "normalize_bf",
    "normalize_df",
    "normalize_tilt_intensities",
]
