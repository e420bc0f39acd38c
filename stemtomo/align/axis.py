"""Tilt-axis angle: the along-axis profile search and its refinement by the stretched-correlation criterion."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stemtomo.align._filters import _bandpass, shift_images, to_canvas, uv_to_raw
from stemtomo.align.shifts import neighbour_shifts


def axis_profile_score(images: torch.Tensor, angle_deg: float, ref: int, max_lag: int) -> float:
    """Mean peak correlation of the along-axis profiles with the reference tilt's, for one α."""
    aligned = to_canvas(images, angle_deg)
    prof = aligned.sum(dim=-1)  # (n, ny): sum across the axis
    prof = prof - prof.mean(dim=1, keepdim=True)
    prof = prof / prof.norm(dim=1, keepdim=True).clamp_min(1e-12)
    f = torch.fft.fft(prof, dim=-1)
    cc = torch.fft.ifft(f * f[ref].conj(), dim=-1).real
    lags = torch.fft.fftfreq(prof.shape[1], d=1.0 / prof.shape[1], device=prof.device).abs()
    cc = torch.where(lags <= max_lag, cc, torch.full_like(cc, -1.0))
    return float(cc.max(dim=1).values.mean())


def search_tilt_axis(
    images: torch.Tensor, ref: int, *, step_deg: float = 2.0, refine_step_deg: float = 0.1,
    centre_deg: float | None = None, half_range_deg: float = 90.0,
) -> tuple[float, np.ndarray]:
    """Find the tilt-axis angle α maximizing :func:`axis_profile_score`; returns ``(α, scores (k, 2))``.

    The search covers ``centre_deg ± half_range_deg`` (default the whole (−90°, 90°]) on a ``step_deg``
    grid, then ``± step_deg`` around the best angle at ``refine_step_deg``.
    """
    max_lag = int(0.3 * images.shape[-2])
    c = 0.0 if centre_deg is None else centre_deg
    coarse = np.arange(c - half_range_deg + step_deg, c + half_range_deg + 1e-9, step_deg)
    scored = [(float(a), axis_profile_score(images, float(a), ref, max_lag)) for a in coarse]
    best = max(scored, key=lambda t: t[1])[0]
    fine = np.arange(best - step_deg, best + step_deg + 1e-9, refine_step_deg)
    fine_scores = np.array([axis_profile_score(images, float(a), ref, max_lag) for a in fine])
    scored += list(zip(fine.tolist(), fine_scores.tolist(), strict=True))
    k = int(np.argmax(fine_scores))
    best = float(fine[k])
    if 0 < k < len(fine) - 1:  # parabola through the best grid point and its neighbours
        y0, y1, y2 = fine_scores[k - 1 : k + 2]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            best += refine_step_deg * float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
    return wrap_axis_angle(best), np.asarray(sorted(scored))


def axis_difference(a_deg: float, b_deg: float) -> float:
    """Signed difference ``a − b`` of two tilt-axis angles, in [−90°, 90°) (an axis is the same at +180°)."""
    return (a_deg - b_deg + 90.0) % 180.0 - 90.0


def wrap_axis_angle(angle_deg: float) -> float:
    """The same tilt axis with its angle in (−90°, 90°] (α and α + 180° give mirrored-sign projections)."""
    wrapped = axis_difference(angle_deg, 0.0)
    return wrapped + 180.0 if wrapped <= -90.0 + 1e-9 else wrapped


def stretch_score(images: torch.Tensor, angles_deg: np.ndarray, angle_deg: float, **kwargs: Any) -> float:
    """:func:`stretch_scores` for one tilt-axis angle α."""
    return float(stretch_scores(images, angles_deg, [angle_deg], **kwargs)[0])


def stretch_scores(images: torch.Tensor, angles_deg: np.ndarray, candidates_deg: Sequence[float], *,
                   partner_fractions: Sequence[float] = (0.0, 0.7), max_lag: int = 3,
                   radius_fraction: float = 0.42) -> np.ndarray:
    """For each candidate α, the mean normalized correlation of every tilt ``i`` with its partners ``j``
    (for each fraction ``f`` the tilt nearest ``f · θ_i``; ``f = 0``: the tilt nearest 0°) compressed by
    ``cosθ_i/cosθ_j`` perpendicular to a tilt axis at α, in the raw frame.

    ``images`` are band-passed raw images with their shifts removed. For a thin specimen a tilted view is a
    less tilted one compressed perpendicular to the tilt axis; compressing along a wrong direction adds a
    shear/rotation of about ``δα·(1 − cosθ_i/cosθ_j)`` that lowers the correlation, so each pair is weighted
    by ``|1 − cosθ_i/cosθ_j|`` (its sensitivity to α). Partners at a fraction of the angle have less
    thick-slab parallax than the 0° image but are less robust on small images; both are used. Measured mean
    |α error| (max) on 12 cell-phantom series (96²/128², clean and Poisson dose 40) and 8 ``simulate``
    series (64², axes 30°/90°): fractions (0,): 1.11° (2.5°) and 0.90° (1.8°); (0.7,): 0.59° (1.4°) and
    1.87° (5.9°); (0, 0.7): 0.87° (2.2°) and 1.06° (2.3°). Working in the raw frame inside a circle
    (``radius_fraction · min(ny, nx)``) means no image is rotated, so zero-filled corners never enter. The
    peak is taken within ``max_lag`` pixels (residual shifts). The tilted images do not depend on α: their
    spectra are computed once for all candidates.
    """
    n, ny, nx = images.shape
    dev, dt = images.device, images.dtype
    yy, xx = torch.meshgrid(torch.arange(ny, device=dev, dtype=dt) - (ny - 1) / 2,
                            torch.arange(nx, device=dev, dtype=dt) - (nx - 1) / 2, indexing="ij")
    r = torch.stack([xx, yy], dim=-1)
    mask = (radius_fraction * min(ny, nx) + 0.5 - r.norm(dim=-1)).clamp(0, 1)
    cos = np.cos(np.deg2rad(angles_deg))
    own = np.concatenate([np.arange(n)] * len(partner_fractions))
    partner = np.concatenate([[int(np.argmin(np.abs(angles_deg - f * t))) for t in angles_deg]
                              for f in partner_fractions])
    factors = torch.as_tensor(cos[own] / cos[partner], device=dev, dtype=dt)
    weight = (1 - factors).abs()  # sensitivity to α grows with the compression; a self-pair has none
    c = images[torch.as_tensor(own, device=dev)] * mask
    c = c - c.mean(dim=(1, 2), keepdim=True)
    c_hat, c_norm = torch.fft.rfft2(c), c.norm(dim=(1, 2))
    partners = images[torch.as_tensor(partner, device=dev)][:, None]
    scale = torch.tensor([(nx - 1) / 2, (ny - 1) / 2], device=dev, dtype=dt)
    scores = []
    for angle_deg in candidates_deg:
        a = math.radians(angle_deg)
        perp = torch.tensor([math.cos(a), math.sin(a)], device=dev, dtype=dt)  # R(α)·x̂ in (x, y)
        along = (r @ perp)[..., None] * perp
        src = r[None] + (1 / factors - 1)[:, None, None, None] * along[None]
        b = torch.nn.functional.grid_sample(partners, src / scale, align_corners=True)[:, 0] * mask
        b = b - b.mean(dim=(1, 2), keepdim=True)
        cc = torch.fft.irfft2(c_hat * torch.fft.rfft2(b).conj(), s=(ny, nx))
        cc = torch.fft.fftshift(cc, dim=(-2, -1))[:, ny // 2 - max_lag : ny // 2 + max_lag + 1,
                                                  nx // 2 - max_lag : nx // 2 + max_lag + 1]
        norm = (b.norm(dim=(1, 2)) * c_norm).clamp_min(1e-30)
        scores.append(float((cc.amax(dim=(1, 2)) / norm * weight).sum() / weight.sum().clamp_min(1e-30)))
    return np.asarray(scores)


def _parabola_max(grid: np.ndarray, scores: np.ndarray) -> float:
    k = int(np.argmax(scores))
    best = float(grid[k])
    if 0 < k < len(grid) - 1:
        y0, y1, y2 = scores[k - 1 : k + 2]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            best += float(grid[1] - grid[0]) * float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
    return best


def refine_tilt_axis(
    imgs: torch.Tensor, filtered: torch.Tensor, angles_deg: np.ndarray, alpha_deg: float,
    max_shift: Sequence[int], *, neighbours: int = 3, lowpass_sigma_px: float = 1.0,
) -> tuple[float, np.ndarray]:
    """Refine α near a first estimate: twice, estimate the shifts at α (:func:`neighbour_shifts`), score
    ``α ± 6°`` on a 1° grid with :func:`stretch_scores` of the shift-corrected, finely band-passed images,
    and move α to the vertex of a least-squares parabola through the scores (the criterion peaks broadly,
    so a wide fit is more precise than the best grid point). Returns ``(α, scores (k, 2))``."""
    alpha = alpha_deg
    scored: list[tuple[float, float]] = []
    for _ in range(2):
        s_uv, _ = neighbour_shifts(to_canvas(filtered, alpha), angles_deg, max_shift,
                                   neighbours=neighbours)
        fine = _bandpass(shift_images(imgs, uv_to_raw(s_uv, alpha)), lowpass_sigma_px,
                         4 * lowpass_sigma_px)
        offsets = np.arange(-6.0, 6.0 + 1e-9, 1.0)
        vals = stretch_scores(fine, angles_deg, (alpha + offsets).tolist())
        scored += list(zip((alpha + offsets).tolist(), vals.tolist(), strict=True))
        c2, c1, _ = np.polyfit(offsets, vals, 2)
        if c2 < 0:
            alpha += float(np.clip(-c1 / (2 * c2), offsets[0], offsets[-1]))
        else:
            alpha += float(offsets[int(np.argmax(vals))])
    return alpha, np.asarray(sorted(scored))


__all__ = ["axis_difference", "axis_profile_score", "refine_tilt_axis", "search_tilt_axis", "stretch_score", "stretch_scores",
           "wrap_axis_angle"]
