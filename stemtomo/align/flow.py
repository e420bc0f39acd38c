"""Tilt-axis angle from the direction of the local displacements between neighbouring tilts.

Whatever the specimen's thickness, a tilt about the axis moves every point perpendicular to the axis only:
in the aligned frame (tilt axis along v) its v coordinate is the same in every tilt. If the assumed axis is
off by δ, each local displacement ``(d_u, d_v)`` between two tilts has ``d_v = tan δ · d_u`` (plus the pair's
residual translation). :func:`displacement_slope` measures that slope by Lucas–Kanade flow in small windows
between each tilt and its neighbours within a few degrees (the farther tilt first stretched by
``cosθ_j/cosθ_i`` perpendicular to the axis, so only parallax and residuals are left for the flow), regressing
``d_v`` on the known stretch displacement, and :func:`refine_axis_by_flow` finds the α at which the slope
vanishes.

Overlapping features at different depths slide past each other between tilts, and in windows where they
mix the flow's v component picks up an error that depends on the specimen's structure (not on the method's
orientation: mirroring the images mirrors the estimate exactly; a Tukey-reweighted regression and smaller
windows did not reduce it). On 96²–128² cell phantoms 32–42 px thick (``benchmarks/bench_align_axis.py``)
the flow estimate alone was off by 0.6–0.9° on average and by up to 1.8°, like the stretch criterion
(:func:`~stemtomo.align.axis.stretch_score`), but the two errors were nearly uncorrelated (correlation 0.0
on 24 series, −0.4 on 14 others), so :func:`~stemtomo.align.coarse.coarse_align` averages them when they
agree. On ``stemtomo simulate``'s default series (slab half the width thick) it was off by 1.6° on average
and up to 5.3°, and the stretch criterion by much more. On thin slabs (8 px of 96, seeds 3/5/7) it was within 0.18°.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from stemtomo.align._filters import _bandpass, circular_gaussian_blur, shift_images, to_canvas
from stemtomo.align.shifts import tilt_pairs


def _gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences along u (columns) and v (rows); 0 on the border."""
    gu, gv = torch.zeros_like(x), torch.zeros_like(x)
    gu[..., 1:-1] = (x[..., 2:] - x[..., :-2]) / 2
    gv[..., 1:-1, :] = (x[..., 2:, :] - x[..., :-2, :]) / 2
    return gu, gv


def displacement_slope(
    aligned: torch.Tensor, angles_deg: np.ndarray, *, valid: torch.Tensor | None = None, span_deg: float = 6.0,
    window_px: float = 3.0, lowpass_sigma_px: float = 1.0, highpass_sigma_px: float | None = None,
    radius_fraction: float = 0.40, chunk: int = 16,
) -> float:
    """Angle (degrees) of the local displacements between neighbouring tilts from the u axis: 0 when the
    images' v axis is the tilt axis; ≈ −g·δ (g ≈ 0.4–0.9) when it is rotated by δ from it.

    ``aligned`` ``(n, ny, nx)`` are shift-corrected images in the assumed aligned frame (line integrals);
    ``valid`` an optional ``(n, ny, nx)`` mask (1 = data) of the same frame. For each pair ``(i, j)`` of
    tilts up to ``span_deg`` apart (:func:`~stemtomo.align.shifts.tilt_pairs` with ``span_deg`` / the median
    step neighbours, at least 2), image ``j`` is resampled at ``u·cosθ_j/cosθ_i``, and a Lucas–Kanade flow in
    Gaussian windows (σ ``window_px``) of the band-passed images gives ``(d_u, d_v)`` per pixel. Windows with
    a weak smaller structure-tensor eigenvalue (< 5 % of the pair's largest), flows of 1 px or more, pixels
    outside a central circle (``radius_fraction · min(ny, nx)``) or outside ``valid`` are dropped. The slope
    of ``d_v`` against the stretch displacement ``u·(cosθ_j/cosθ_i − 1)``, each pair about its own means, is
    pooled over all pairs with the smaller eigenvalue as weight.

    The regressor is the stretch alone, which is known exactly, not the stretch plus the measured ``d_u``:
    the flow's ``d_u`` and ``d_v`` carry errors of the same windows (features at different depths moving
    apart), and with ``d_u`` in the regressor they leaked into the slope. Together with the fixed angular span
    (the step of ``stemtomo simulate``'s default series is 1.5°, where 2 neighbours span only 3°) this cut
    the error of the flow estimate alone by about a third on that geometry: on 22 ``simulate`` series
    (64²/128², slab N/2, axes 7°/30°/−20°) mean |error| 2.28° → 1.60°, worst 6.74° → 5.26°; on 24 cell
    phantoms at 96²/128² with 3° steps the mean rose a little, 0.59° → 0.64°, the worst fell, 2.16° → 1.84°.
    """
    n, ny, nx = aligned.shape
    dev, dt = aligned.device, aligned.dtype
    high = highpass_sigma_px or max(ny, nx) / 16
    f = _bandpass(aligned, lowpass_sigma_px, high)
    cos = np.cos(np.deg2rad(angles_deg))
    yy, xx = torch.meshgrid(torch.arange(ny, device=dev, dtype=dt) - (ny - 1) / 2,
                            torch.arange(nx, device=dev, dtype=dt) - (nx - 1) / 2, indexing="ij")
    inside = ((yy**2 + xx**2).sqrt() < radius_fraction * min(ny, nx)).to(dt)
    steps = np.diff(np.sort(np.asarray(angles_deg, dtype=np.float64)))
    step = float(np.median(steps[steps > 0])) if (steps > 0).any() else span_deg
    first, second = tilt_pairs(angles_deg, max(2, round(span_deg / step)))
    num = torch.zeros((), device=dev, dtype=torch.float64)
    den = torch.zeros((), device=dev, dtype=torch.float64)
    for start in range(0, len(first), chunk):
        i = torch.as_tensor(first[start : start + chunk], device=dev)
        j = torch.as_tensor(second[start : start + chunk], device=dev)
        fac = torch.as_tensor(cos[second[start : start + chunk]] / cos[first[start : start + chunk]], device=dev, dtype=dt)
        su = xx[None] * fac[:, None, None]  # pixel u of image i sees u·fac in image j
        grid = torch.stack([su / ((nx - 1) / 2), (yy / ((ny - 1) / 2)).expand_as(su)], dim=-1)
        a = f[i]
        b = torch.nn.functional.grid_sample(f[j][:, None], grid, align_corners=True)[:, 0]
        gu, gv = _gradient((a + b) / 2)
        t = b - a
        guu, guv, gvv = (circular_gaussian_blur(p, window_px) for p in (gu * gu, gu * gv, gv * gv))
        hu, hv = circular_gaussian_blur(gu * t, window_px), circular_gaussian_blur(gv * t, window_px)
        det = (guu * gvv - guv**2).clamp_min(1e-30)
        du = -(gvv * hu - guv * hv) / det
        dv = -(guu * hv - guv * hu) / det
        half = (guu + gvv) / 2
        lmin = half - (half**2 - det).clamp_min(0).sqrt()
        w = inside * lmin * (lmin > 0.05 * lmin.amax(dim=(1, 2), keepdim=True)) * (du**2 + dv**2 < 1.0)
        if valid is not None:
            vj = torch.nn.functional.grid_sample(valid[j][:, None].to(dt), grid, align_corners=True)[:, 0]
            w = w * (valid[i] > 0.99) * (vj > 0.99)
        stretch_u = xx[None] * (fac[:, None, None] - 1)
        weight = w.sum(dim=(1, 2)).clamp_min(1e-30)
        mu = (w * stretch_u).sum(dim=(1, 2)) / weight
        mv = (w * dv).sum(dim=(1, 2)) / weight
        cu = stretch_u - mu[:, None, None]
        num += (w * cu * (dv - mv[:, None, None])).sum().double()
        den += (w * cu**2).sum().double()
    return math.degrees(math.atan(float(num / den.clamp_min(1e-30))))


def refine_axis_by_flow(
    shifted: torch.Tensor, valid: torch.Tensor, angles_deg: np.ndarray, alpha_deg: float, *,
    step_deg: float = 1.0, max_change_deg: float = 15.0, rounds: int = 3, **kwargs: float,
) -> float | None:
    """α where :func:`displacement_slope` vanishes: the zero of a line through its values at ``α``,
    ``α ± step_deg``; when that zero lies more than ``step_deg`` away the line is refitted around it (up to
    ``rounds`` fits).

    ``shifted`` are the raw images with their shifts removed, ``valid`` their data mask. Returns None when
    the slope does not fall with α (no usable signal) or the zero lies more than ``max_change_deg`` from
    ``alpha_deg``.
    """
    offsets = np.array([-step_deg, 0.0, step_deg])
    centre = alpha_deg
    for _ in range(rounds):
        slopes = np.array([
            displacement_slope(to_canvas(shifted, centre + d), angles_deg,
                               valid=to_canvas(valid, centre + d), **kwargs)  # type: ignore[arg-type]
            for d in offsets
        ])
        gain, offset = np.polyfit(offsets, slopes, 1)
        if not gain < 0:
            return None
        zero = centre - offset / gain
        if abs(zero - alpha_deg) > max_change_deg:
            return None
        done = abs(zero - centre) <= step_deg
        centre = zero
        if done:
            break
    return centre


def remove_shifts(imgs: torch.Tensor, valid: torch.Tensor, shifts_xy: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw images with their raw-frame shifts removed (Fourier shift) and the mask of their data: ``valid``
    moved along, without the border the shift wrapped around (:func:`in_bounds`)."""
    mask = shift_images(valid, shifts_xy) * in_bounds(imgs.shape, shifts_xy, device=imgs.device)
    return shift_images(imgs, shifts_xy), mask


def in_bounds(shape: Sequence[int], shifts_xy: np.ndarray, margin: float = 2.0, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(n, ny, nx)`` mask of the pixels whose source ``r + s`` after removing shifts ``s`` (as
    :func:`~stemtomo.align._filters.shift_images`) lies inside the image, ``margin`` pixels from its edge:
    elsewhere the Fourier shift has wrapped the other side of the image in."""
    n, ny, nx = shape
    yy = torch.arange(ny, device=device, dtype=torch.float32)[None, :, None]
    xx = torch.arange(nx, device=device, dtype=torch.float32)[None, None, :]
    s = torch.as_tensor(np.asarray(shifts_xy), device=device, dtype=torch.float32)
    sx, sy = s[:, 0, None, None], s[:, 1, None, None]
    inside_x = (xx + sx >= margin) & (xx + sx <= nx - 1 - margin)
    inside_y = (yy + sy >= margin) & (yy + sy <= ny - 1 - margin)
    return (inside_x & inside_y).float()


__all__ = ["displacement_slope", "in_bounds", "refine_axis_by_flow", "remove_shifts"]
