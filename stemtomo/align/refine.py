"""Projection-matching refinement of per-tilt shifts and the held-out reprojection error.

Both reconstruct with WBP (:func:`stemtomo.recon.wbp.wbp`) and reproject with the shared forward projector
(:func:`stemtomo.core.projector.forward_project`), in the aligned frame (tilt axis along y).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stemtomo.align._filters import _bandpass, _xcorr_shift, shift_images
from stemtomo.core.projector import forward_project
from stemtomo.errors import ParameterError
from stemtomo.recon.filters import angular_weights, filter_rows
from stemtomo.recon.wbp import back_project_slices, wbp

RELAX = 0.5
"""Damping of each round's correction (a full step overshoots: the leave-one-out prediction follows the
neighbouring tilts, which carry the same error)."""


def _centred(images: torch.Tensor) -> torch.Tensor:
    return images - images.mean(dim=(1, 2), keepdim=True)


def loo_reprojections(images: torch.Tensor, tilt_angles_deg: np.ndarray, nz: int) -> torch.Tensor:
    """Leave-one-out reprojections: image i predicted from a WBP of all *other* tilts, ``(n, ny, n_u)``.

    WBP is linear, so the prediction is the reprojection of the full WBP minus the reprojection of tilt i's
    own back-projection (computed with the same operators), which costs about two WBPs in total. Leaving the
    image out removes the bias of an image toward its own current position.
    """
    n_u = images.shape[-1]
    filtered = filter_rows(images, "ramp")
    weights = angular_weights(tilt_angles_deg)
    full = forward_project(back_project_slices(filtered, tilt_angles_deg, nz, weights=weights),
                           tilt_angles_deg, image_width=n_u)
    own = torch.stack([
        forward_project(back_project_slices(filtered[i : i + 1], tilt_angles_deg[i : i + 1], nz,
                                            weights=weights[i : i + 1]), tilt_angles_deg[i : i + 1], image_width=n_u)[0]
        for i in range(images.shape[0])
    ])
    return full - own


def refine_projection_matching(
    aligned: torch.Tensor,
    tilt_angles_deg: np.ndarray,
    shifts_uv: np.ndarray,
    *,
    iterations: int = 2,
    lowpass_sigma_px: float = 1.0,
    highpass_sigma_px: float = 16.0,
    max_shift: Sequence[int] = (8, 8),
    nz: int | None = None,
) -> tuple[np.ndarray, float]:
    """Refine aligned-frame shifts ``(n, 2)`` by matching each image to its leave-one-out reprojection.

    ``aligned`` should hold line integrals (or DF intensities) in the aligned frame. Each round removes the
    current shifts, predicts every tilt from a WBP of the others (:func:`loo_reprojections`, a slab of
    ``nz`` voxels, default half the image width) and adds the residual shift found by band-passed
    cross-correlation, damped by ``RELAX`` and with its rigid-translation (gauge) component removed. Returns
    the ``(shifts, residual)`` of the round with the lowest residual, the normalized RMS mismatch of the
    band-passed images and predictions (lower is better).

    Measured (cell phantom, 41 tilts ±60°, axis 7°, σ = 5 px; gauge-free RMS after 0/1/2/4 rounds):
    96² slab 32: 0.20/0.18/0.20/0.27 px; 128² slab 40: 0.21/0.17/0.16/0.22 px. The leave-one-out residual
    keeps falling while the error grows again (the prediction of a tilt follows its neighbours, which carry
    correlated errors), so the best-residual choice does not stop the drift: use 1–2 rounds at most.
    """
    shifts = np.asarray(shifts_uv, dtype=np.float64).copy()
    depth = nz or max(8, aligned.shape[-1] // 2)
    theta = np.deg2rad(np.asarray(tilt_angles_deg, dtype=np.float64))
    gauge = np.c_[np.cos(theta), np.sin(theta)]
    best, best_residual = shifts.copy(), float("inf")
    for _ in range(iterations + 1):
        current = _centred(shift_images(aligned, shifts))
        a = _bandpass(current, lowpass_sigma_px, highpass_sigma_px)
        b = _bandpass(loo_reprojections(current, tilt_angles_deg, depth), lowpass_sigma_px, highpass_sigma_px)
        residual = _fit_residual(a, b)
        if residual < best_residual:
            best, best_residual = shifts.copy(), residual
        d = np.array([_xcorr_shift(a[i], b[i], max_shift)[::-1] for i in range(aligned.shape[0])])
        # a rigid 3D translation of the specimen (u: dx·cosθ + dz·sinθ, v: common dy) is not determined
        d[:, 0] -= gauge @ np.linalg.lstsq(gauge, d[:, 0], rcond=None)[0]
        d[:, 1] -= d[:, 1].mean()
        shifts = shifts + RELAX * d
    return best, best_residual


def _fit_residual(target: torch.Tensor, pred: torch.Tensor) -> float:
    """``sqrt(Σ (t − s·p)² / Σ t²)`` with a least-squares scale s per image."""
    dims = (1, 2)
    scale = (pred * target).sum(dim=dims, keepdim=True) / (pred * pred).sum(dim=dims, keepdim=True).clamp_min(1e-30)
    resid = target - scale * pred
    return float(torch.sqrt((resid**2).sum() / (target**2).sum().clamp_min(1e-30)))


def holdout_reprojection_error(
    aligned: torch.Tensor, tilt_angles_deg: Sequence[float] | np.ndarray, *, nz: int | None = None
) -> float:
    """Normalized RMS error of odd tilts predicted from a WBP of the even tilts (alignment score, lower is better).

    Tilts are split in sorted angle order; each odd image and its reprojection are compared after removing
    their means and fitting a scale (least squares), and ``sqrt(Σ residual² / Σ image²)`` is returned.
    """
    angles = np.asarray(tilt_angles_deg, dtype=np.float64)
    if angles.size < 4:
        raise ParameterError("held-out reprojection error needs at least 4 tilts")
    order = np.argsort(angles, kind="stable")
    even, odd = np.sort(order[0::2]), np.sort(order[1::2])
    depth = nz or max(8, aligned.shape[-1] // 2)
    data = _centred(aligned.to(torch.float64))
    vol = wbp(data[even], angles[even], depth)
    pred = _centred(forward_project(vol, angles[odd], image_width=aligned.shape[-1]))
    return _fit_residual(data[odd], pred)


__all__ = ["holdout_reprojection_error", "loo_reprojections", "refine_projection_matching"]
