"""Coarse marker-free alignment of a tilt series: tilt-axis angle search and per-tilt shifts.

1. **Tilt-axis angle.** In the aligned frame every image row ``v`` sees the same volume row ``y = v`` at
   every tilt, so the profiles ``p_i(v) = Σ_u A_i(u, v)`` of all tilts share their features. For each candidate
   α the raw images are rotated by ``R(α)`` (:func:`~stemtomo.core.geometry.raw_to_aligned`) and scored by the
   mean peak cross-correlation of each tilt's profile with the 0° profile (a lag is allowed, which absorbs
   shifts along the axis). A coarse grid is refined around its best value. α and α + 180° give the same
   projections up to a mirror of the tilt sign and are not distinguished: α is reported in (−90°, 90°].
   The profile criterion is then refined (:func:`refine_tilt_axis`) by how well each tilt matches the 0°
   image compressed by ``cosθ`` perpendicular to the axis (:func:`stretch_score`), which is less fooled by
   material entering the field of view and by noise.
2. **Shifts.** Tilts are cross-correlated with their neighbours (up to ``neighbours`` on each side) after
   band-pass filtering, with the image nearer 0° stretched by ``cosθ_i / cosθ_j`` perpendicular to the tilt
   axis (as IMOD ``tiltxcorr``); all pair measurements are solved jointly by least squares
   (:func:`neighbour_shifts`), with the tilt nearest 0° as the reference (shift 0).
3. **Refinement** (optional, :func:`refine_projection_matching`): each image is matched to the leave-one-out
   reprojection of a WBP of the current alignment.

Shifts are returned in the raw image frame (pixels, x then y); :func:`stemtomo.align.xf.xf_from_alignment`
turns them into IMOD ``.xf`` transforms.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from stemtomo.core.geometry import check_angles, raw_to_aligned
from stemtomo.errors import ParameterError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    """Settings of ``stemtomo align``."""

    tilt_axis_angle_deg: float | None = None
    """Known in-plane tilt-axis angle (CCW from +y); None: search for it."""
    axis_search_step_deg: float = 2.0
    """Step of the coarse tilt-axis search over (−90°, 90°]; refined to ``axis_refine_step_deg``."""
    axis_refine_step_deg: float = 0.1
    """Final resolution of the tilt-axis angle."""
    refine_axis: bool = True
    """Refine the profile-searched α with :func:`refine_tilt_axis` (stretch criterion). Measured on 96²/128²
    cell phantoms (axis 7°, seeds 3/5/7, clean and Poisson dose 40): mean |error| 2.2° → 1.1°, worst
    5.8° → 2.5°; the error left is a seed-dependent bias of about ±2° (thick-slab parallax)."""
    lowpass_sigma_px: float = 1.0
    """Gaussian low-pass (real-space σ, pixels) applied before correlation, against noise."""
    highpass_sigma_px: float = 0.0
    """Gaussian high-pass σ (pixels) removing slow intensity gradients; 0 → ``image size / 16`` (the coarse
    shape of a thick slab changes with tilt by parallax; 12 phantom cases, 96²/128², clean and noisy: the
    chain's mean RMS shift error 0.38 px with size/8, 0.26 px with size/16)."""
    neighbours: int = 3
    """Each tilt is correlated with this many neighbours on each side; all pairs are solved jointly by
    least squares (1: the cumulative chain of IMOD ``tiltxcorr``). Same 12 cases: mean 0.26 → 0.22 px
    (one 128² case worsens, 0.30 → 0.36)."""
    max_shift_fraction: float = 0.3
    """Largest shift searched, as a fraction of the image size."""
    refine_iterations: int = 0
    """Rounds of projection matching against a WBP after the cumulative shifts (0: off)."""
    max_size_px: int = 512
    """Images larger than this are binned for the alignment (shifts are scaled back)."""
    thickness_px: float | None = None
    """Specimen thickness (input pixels) for the projection-matching reconstruction; None: half the width."""

    def validate(self) -> None:
        if self.tilt_axis_angle_deg is not None and not (-180.0 <= self.tilt_axis_angle_deg <= 180.0):
            raise ParameterError(f"--tilt-axis-angle {self.tilt_axis_angle_deg:g}: must be within ±180°")
        if not 0 < self.max_shift_fraction <= 0.5:
            raise ParameterError(f"max shift fraction {self.max_shift_fraction:g}: must be in (0, 0.5]")
        if self.neighbours < 1:
            raise ParameterError(f"--neighbours {self.neighbours}: must be ≥ 1")
        if self.refine_iterations < 0:
            raise ParameterError(f"--refine {self.refine_iterations}: must be ≥ 0")


@dataclasses.dataclass
class Alignment:
    """Result of :func:`coarse_align`.

    Attributes
    ----------
    tilt_axis_angle_deg : the in-plane tilt-axis angle α used (searched or given).
    shifts_xy : ``(n, 2)`` specimen shift of each raw image in pixels (x, y), raw frame; 0 for the reference.
    axis_scores : ``(k, 2)`` searched angles and their profile scores (empty when α was given).
    reference_index : index of the reference tilt (nearest 0°).
    """

    tilt_axis_angle_deg: float
    shifts_xy: np.ndarray
    axis_scores: np.ndarray
    reference_index: int


def fill_regions(images: torch.Tensor, min_fraction: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """Find and neutralize constant fill (e.g. zero-filled corners left by rotating images with zero padding).

    A value is taken as fill when it is the image's minimum or maximum (to 1e-6 of the range), occupies at least ``min_fraction`` of
    the border pixels *exactly*, and is at least ten times rarer in the central quarter of the image than on
    the border (quantized data, e.g. counts or 8-bit images, repeat values everywhere; padding does not).
    Returns ``(images, valid)``: the images with fill pixels set to the mean of their valid pixels, and the
    ``(n, ny, nx)`` float mask of valid pixels (1 = data). Fill fixed in the raw frame otherwise dominates
    every correlation and pins the shifts at zero.
    """
    valid = torch.ones_like(images)
    out = images.clone()
    ny, nx = images.shape[-2:]
    for i in range(images.shape[0]):
        img = images[i]
        border = torch.cat([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
        values, counts = torch.unique(border, return_counts=True)
        k = int(counts.argmax())
        value = values[k]
        lo, hi = float(img.min()), float(img.max())
        tol = 1e-6 * (hi - lo)
        extreme = abs(float(value) - lo) <= tol or abs(float(value) - hi) <= tol
        if counts[k] < max(3, min_fraction * border.numel()) or not extreme:
            continue
        centre = img[ny // 4 : ny - ny // 4, nx // 4 : nx - nx // 4]
        if float((centre == value).float().mean()) * 10 > float(counts[k]) / border.numel():
            continue
        fill = img == value
        valid[i] = (~fill).to(images.dtype)
        out[i] = torch.where(fill, img[~fill].mean(), img)
    return out, valid


def _edge_weight(valid: torch.Tensor, width_px: float) -> torch.Tensor:
    """Smooth weight that is 0 on fill and rises to 1 over about ``2·width_px`` inside the valid region."""
    if bool((valid > 0.5).all()):
        return torch.ones_like(valid)
    n, ny, nx = valid.shape
    ky = torch.fft.fftfreq(ny, device=valid.device, dtype=valid.dtype)[:, None]
    kx = torch.fft.rfftfreq(nx, device=valid.device, dtype=valid.dtype)[None, :]
    g = torch.exp(-2 * (math.pi * width_px) ** 2 * (ky**2 + kx**2))
    blurred = torch.fft.irfft2(torch.fft.rfft2(valid) * g, s=(ny, nx))
    return ((blurred - 0.5) * 2).clamp(0, 1) * valid


def _bandpass(images: torch.Tensor, low_sigma: float, high_sigma: float) -> torch.Tensor:
    """Gaussian band-pass in Fourier space, with a cosine edge taper, per image."""
    n, ny, nx = images.shape
    x = images - images.mean(dim=(1, 2), keepdim=True)
    ky = torch.fft.fftfreq(ny, device=x.device, dtype=x.dtype)[:, None]
    kx = torch.fft.rfftfreq(nx, device=x.device, dtype=x.dtype)[None, :]
    k2 = (2 * math.pi) ** 2 * (ky**2 + kx**2)
    h = torch.exp(-k2 * low_sigma**2 / 2) * (1 - torch.exp(-k2 * high_sigma**2 / 2))
    x = torch.fft.irfft2(torch.fft.rfft2(x) * h, s=(ny, nx))
    return x * _taper(ny, nx, x.device, x.dtype)


def _taper(ny: int, nx: int, device: torch.device, dtype: torch.dtype, frac: float = 0.1) -> torch.Tensor:
    def win(n: int) -> torch.Tensor:
        m = max(1, int(frac * n))
        w = torch.ones(n, device=device, dtype=dtype)
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(m, device=device, dtype=dtype) + 0.5) / m)
        w[:m] = ramp
        w[n - m :] = ramp.flip(0)
        return w

    return win(ny)[:, None] * win(nx)[None, :]


def _peak(cc: torch.Tensor, max_shift: Sequence[int]) -> tuple[float, ...]:
    """Sub-pixel location of the maximum of a circular cross-correlation (fftshifted offsets)."""
    dims = cc.shape
    c = torch.fft.fftshift(cc)
    centre = [d // 2 for d in dims]
    mask = torch.ones_like(c, dtype=torch.bool)
    for ax, (d, m) in enumerate(zip(dims, max_shift, strict=True)):
        idx = torch.arange(d, device=c.device) - centre[ax]
        shape = [1] * len(dims)
        shape[ax] = d
        mask &= (idx.abs() <= m).reshape(shape)
    flat = torch.where(mask, c, torch.full_like(c, -torch.inf)).argmax()
    pos = np.unravel_index(int(flat), dims)
    out = []
    for ax, p in enumerate(pos):
        lo = list(pos)
        hi = list(pos)
        lo[ax] = (p - 1) % dims[ax]
        hi[ax] = (p + 1) % dims[ax]
        y0, y1, y2 = float(c[tuple(lo)]), float(c[tuple(pos)]), float(c[tuple(hi)])
        denom = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / denom if denom < 0 else 0.0
        out.append(p - centre[ax] + max(-0.5, min(0.5, frac)))
    return tuple(out)


def _xcorr_shift(a: torch.Tensor, b: torch.Tensor, max_shift: Sequence[int]) -> tuple[float, ...]:
    """Shift ``d`` such that ``a(x) ≈ b(x − d)`` (sub-pixel), 1D or 2D."""
    dims = tuple(range(-a.ndim, 0))
    fa, fb = torch.fft.fftn(a, dim=dims), torch.fft.fftn(b, dim=dims)
    cc = torch.fft.ifftn(fa * fb.conj(), dim=dims).real
    return _peak(cc, max_shift)


def _stretch_x(image: torch.Tensor, factor: float) -> torch.Tensor:
    """``out(u, v) = image(u / factor, v)`` about the centre column (linear interpolation)."""
    ny, nx = image.shape
    c = (nx - 1) / 2
    u = (torch.arange(nx, device=image.device, dtype=image.dtype) - c) / factor + c
    u0 = u.floor().clamp(0, nx - 1)
    w = (u - u0).clamp(0, 1)
    i0 = u0.long()
    i1 = (i0 + 1).clamp(max=nx - 1)
    inside = ((u >= 0) & (u <= nx - 1)).to(image.dtype)
    return (image[:, i0] * (1 - w) + image[:, i1] * w) * inside


def axis_profile_score(images: torch.Tensor, angle_deg: float, ref: int, max_lag: int) -> float:
    """Mean peak correlation of the along-axis profiles with the reference tilt's, for one α."""
    aligned = raw_to_aligned(images, angle_deg)
    prof = aligned.sum(dim=-1)  # (n, ny): sum across the axis
    prof = prof - prof.mean(dim=1, keepdim=True)
    prof = prof / prof.norm(dim=1, keepdim=True).clamp_min(1e-12)
    f = torch.fft.fft(prof, dim=-1)
    cc = torch.fft.ifft(f * f[ref].conj(), dim=-1).real
    lags = torch.fft.fftfreq(prof.shape[1], d=1.0 / prof.shape[1], device=prof.device).abs()
    cc = torch.where(lags <= max_lag, cc, torch.full_like(cc, -1.0))
    return float(cc.max(dim=1).values.mean())


def stretch_score(images: torch.Tensor, angles_deg: np.ndarray, angle_deg: float, ref: int, *, max_lag: int = 3,
                  radius_fraction: float = 0.42) -> float:
    """Mean normalized correlation of every tilt with the reference image compressed by ``cosθ_i/cosθ_ref``
    perpendicular to a tilt axis at α, in the raw frame, for one α.

    ``images`` are band-passed raw images with their shifts removed. For a thin specimen a tilted view is
    the untilted one compressed perpendicular to the tilt axis; compressing along a wrong direction adds a
    shear/rotation of about ``δα·(1 − cosθ)`` that lowers the correlation at high tilt, so each tilt is
    weighted by ``|1 − cosθ_i/cosθ_ref|`` (its sensitivity to α). Working in the raw
    frame inside a circle (``radius_fraction · min(ny, nx)``) means no image is rotated, so zero-filled
    corners never enter. The peak is taken within ``max_lag`` pixels (residual shifts).
    """
    n, ny, nx = images.shape
    dev, dt = images.device, images.dtype
    a = math.radians(angle_deg)
    perp = torch.tensor([math.cos(a), math.sin(a)], device=dev, dtype=dt)  # R(α)·x̂ in (x, y)
    yy, xx = torch.meshgrid(torch.arange(ny, device=dev, dtype=dt) - (ny - 1) / 2,
                            torch.arange(nx, device=dev, dtype=dt) - (nx - 1) / 2, indexing="ij")
    r = torch.stack([xx, yy], dim=-1)
    mask = (radius_fraction * min(ny, nx) + 0.5 - r.norm(dim=-1)).clamp(0, 1)
    along = (r @ perp)[..., None] * perp
    cos = np.cos(np.deg2rad(angles_deg))
    factors = torch.as_tensor(cos / cos[ref], device=dev, dtype=dt)
    src = r[None] + (1 / factors - 1)[:, None, None, None] * along[None]
    grid = src / torch.tensor([(nx - 1) / 2, (ny - 1) / 2], device=dev, dtype=dt)
    refs = torch.nn.functional.grid_sample(images[ref].expand(n, 1, ny, nx), grid, align_corners=True)[:, 0]
    b = refs * mask
    c = images * mask
    b = b - b.mean(dim=(1, 2), keepdim=True)
    c = c - c.mean(dim=(1, 2), keepdim=True)
    cc = torch.fft.ifft2(torch.fft.fft2(c) * torch.fft.fft2(b).conj()).real
    cc = torch.fft.fftshift(cc, dim=(-2, -1))[:, ny // 2 - max_lag : ny // 2 + max_lag + 1,
                                              nx // 2 - max_lag : nx // 2 + max_lag + 1]
    norm = (b.norm(dim=(1, 2)) * c.norm(dim=(1, 2))).clamp_min(1e-30)
    weight = (1 - factors).abs()  # sensitivity to α grows with the compression; the reference has none
    return float((cc.amax(dim=(1, 2)) / norm * weight).sum() / weight.sum().clamp_min(1e-30))


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
    imgs: torch.Tensor, filtered: torch.Tensor, angles_deg: np.ndarray, alpha_deg: float, config: AlignConfig,
    max_shift: Sequence[int], ref: int,
) -> tuple[float, np.ndarray]:
    """Refine α near a first estimate: twice, estimate the shifts at α (:func:`neighbour_shifts`), score
    ``α ± 6°`` on a 1° grid with :func:`stretch_score` of the shift-corrected, finely band-passed images,
    and move α to the vertex of a least-squares parabola through the scores (the criterion peaks broadly,
    so a wide fit is more precise than the best grid point). Returns ``(α, scores (k, 2))``."""
    alpha = alpha_deg
    scored: list[tuple[float, float]] = []
    for _ in range(2):
        s_uv, _ = neighbour_shifts(raw_to_aligned(filtered, alpha), angles_deg, max_shift,
                                   neighbours=config.neighbours)
        fine = _bandpass(shift_images(imgs, uv_to_raw(s_uv, alpha)), config.lowpass_sigma_px,
                         4 * config.lowpass_sigma_px)
        offsets = np.arange(-6.0, 6.0 + 1e-9, 1.0)
        vals = np.array([stretch_score(fine, angles_deg, alpha + float(d), ref) for d in offsets])
        scored += list(zip((alpha + offsets).tolist(), vals.tolist(), strict=True))
        c2, c1, _ = np.polyfit(offsets, vals, 2)
        if c2 < 0:
            alpha += float(np.clip(-c1 / (2 * c2), offsets[0], offsets[-1]))
        else:
            alpha += float(offsets[int(np.argmax(vals))])
    return alpha, np.asarray(sorted(scored))


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
    wrapped = (best + 90.0) % 180.0 - 90.0
    if wrapped <= -90.0 + 1e-9:
        wrapped += 180.0
    return wrapped, np.asarray(sorted(scored))


def cumulative_shifts(
    aligned: torch.Tensor, angles_deg: np.ndarray, max_shift: Sequence[int], *, stretch: bool = True
) -> tuple[np.ndarray, int]:
    """Shifts ``(n, 2)`` (x, y) by neighbour correlation, accumulated from the tilt nearest 0° (shift 0).

    ``aligned`` must be band-pass filtered images. With ``stretch`` they must be in the aligned frame (tilt
    axis along y) and the image nearer 0° is stretched by ``cosθ_i/cosθ_j`` along x before correlating;
    without it (tilt axis still unknown) the images are correlated as they are.
    """
    order = np.argsort(angles_deg)
    ref_pos = int(np.argmin(np.abs(angles_deg[order])))
    shifts = np.zeros((len(angles_deg), 2))
    cos = np.cos(np.deg2rad(angles_deg))
    for direction in (1, -1):
        pos = ref_pos + direction
        while 0 <= pos < len(order):
            i, j = int(order[pos]), int(order[pos - direction])
            factor = float(cos[i] / cos[j]) if stretch else 1.0
            dv, du = _xcorr_shift(aligned[i], _stretch_x(aligned[j], factor), max_shift)
            shifts[i, 0] = du + shifts[j, 0] * factor
            shifts[i, 1] = dv + shifts[j, 1]
            pos += direction
    return shifts, int(order[ref_pos])


def neighbour_shifts(
    aligned: torch.Tensor, angles_deg: np.ndarray, max_shift: Sequence[int], *, neighbours: int = 3
) -> tuple[np.ndarray, int]:
    """Shifts ``(n, 2)`` (u, v) by stretched correlation of every tilt with its ``neighbours`` nearest
    neighbours on each side (in angle order), solved jointly by least squares; shift 0 at the tilt nearest 0°.

    ``aligned`` must be band-pass filtered images in the aligned frame (tilt axis along y). For each pair
    ``(i, j)`` with ``j`` nearer 0°, image ``j`` is stretched by ``f = cosθ_i / cosθ_j`` along u (as IMOD
    ``tiltxcorr``) and correlated with image ``i``; the measured offset ``(du, dv)`` gives the equations
    ``s_i,u − f·s_j,u = du`` and ``s_i,v − s_j,v = dv``. With ``neighbours = 1`` this is the classic
    cumulative chain, whose errors add up like a random walk toward high tilts; the extra pairs tie distant
    tilts together (cell phantoms, 41 tilts ±60°, 96²/128², clean and Poisson dose 40: mean gauge-free RMS
    0.26 px → 0.22 px with 3 neighbours, on the default band-pass).
    """
    if neighbours < 1:
        raise ParameterError(f"neighbours {neighbours}: must be ≥ 1")
    order = np.argsort(angles_deg)
    n = len(angles_deg)
    ref = int(order[int(np.argmin(np.abs(angles_deg[order])))])
    cos = np.cos(np.deg2rad(angles_deg))
    rows_u, rows_v, rhs = [], [], []
    for pos in range(n):
        for k in range(1, neighbours + 1):
            if pos + k >= n:
                break
            i, j = int(order[pos]), int(order[pos + k])
            if cos[i] > cos[j]:
                i, j = j, i  # j is the tilt nearer 0°: it is the one compressed
            factor = float(cos[i] / cos[j])
            dv, du = _xcorr_shift(aligned[i], _stretch_x(aligned[j], factor), max_shift)
            rows_u.append(_pair_row(n, i, j, factor))
            rows_v.append(_pair_row(n, i, j, 1.0))
            rhs.append((du, dv))
    gauge = np.zeros((1, n))
    gauge[0, ref] = 1.0
    b = np.asarray(rhs)
    su = np.linalg.lstsq(np.vstack([rows_u, gauge]), np.r_[b[:, 0], 0.0], rcond=None)[0]
    sv = np.linalg.lstsq(np.vstack([rows_v, gauge]), np.r_[b[:, 1], 0.0], rcond=None)[0]
    shifts = np.c_[su, sv]
    return shifts - shifts[ref], ref


def _pair_row(n: int, i: int, j: int, factor: float) -> np.ndarray:
    row = np.zeros(n)
    row[i] = 1.0
    row[j] = -factor
    return row


def shift_images(images: torch.Tensor, shifts_uv: np.ndarray) -> torch.Tensor:
    """``out_i(u, v) = images_i(u + s_u, v + s_v)``: remove shifts by Fourier phase ramps (sub-pixel)."""
    n, ny, nx = images.shape
    ky = torch.fft.fftfreq(ny, device=images.device, dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(nx, device=images.device, dtype=torch.float64)[None, :]
    s = torch.as_tensor(shifts_uv, dtype=torch.float64, device=images.device)
    phase = torch.exp(2j * math.pi * (kx[None] * s[:, 0, None, None] + ky[None] * s[:, 1, None, None]))
    f = torch.fft.rfft2(images.to(torch.float64)) * phase
    return torch.fft.irfft2(f, s=(ny, nx)).to(images.dtype)


def uv_to_raw(shifts_uv: np.ndarray, tilt_axis_angle_deg: float) -> np.ndarray:
    """Aligned-frame shifts → raw-frame shifts: ``s_raw = R(α)·s_uv``."""
    a = math.radians(tilt_axis_angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.asarray(shifts_uv) @ rot.T


def coarse_align(
    stack: np.ndarray | torch.Tensor,
    tilt_angles_deg: Sequence[float] | np.ndarray,
    config: AlignConfig = AlignConfig(),
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> Alignment:
    """Estimate the tilt-axis angle (unless given) and per-tilt shifts of a raw tilt series.

    Parameters
    ----------
    stack : ``(n, ny, nx)`` raw images (any intensity scale; BF or DF).
    tilt_angles_deg : ``(n,)`` tilt angles in stack order.
    config : :class:`AlignConfig`.
    progress : optional callback receiving a short stage name.

    Returns
    -------
    :class:`Alignment` with raw-frame shifts in pixels of the input images.

    Raises
    ------
    ParameterError
        Fewer than 2 images, mismatched angle count, or invalid settings.
    """
    config.validate()
    angles = check_angles(np.asarray(tilt_angles_deg, dtype=np.float64).tolist(), option="tilt angles")
    imgs = torch.as_tensor(stack, dtype=torch.float32, device=device)
    if imgs.ndim != 3 or imgs.shape[0] < 2:
        raise ParameterError("alignment needs a tilt series of at least 2 images")
    if len(angles) != imgs.shape[0]:
        raise ParameterError(f"{len(angles)} tilt angles for {imgs.shape[0]} images; the counts must match")
    imgs, valid = fill_regions(imgs)
    factor = max(1, math.ceil(max(imgs.shape[-2:]) / config.max_size_px))
    if factor > 1:
        ny, nx = imgs.shape[-2] // factor * factor, imgs.shape[-1] // factor * factor
        imgs = imgs[:, :ny, :nx].reshape(imgs.shape[0], ny // factor, factor, nx // factor, factor).mean((2, 4))
        valid = valid[:, :ny, :nx].reshape(imgs.shape[0], ny // factor, factor, nx // factor, factor).amin((2, 4))
    high = config.highpass_sigma_px or max(imgs.shape[-2:]) / 16
    weight = _edge_weight(valid, 2 * config.lowpass_sigma_px + 1)
    filtered = _bandpass(imgs, config.lowpass_sigma_px, high) * weight
    ref = int(np.argmin(np.abs(angles)))
    max_shift = [max(1, int(config.max_shift_fraction * d)) for d in imgs.shape[-2:]]
    if config.tilt_axis_angle_deg is None:
        if progress:
            progress("tilt axis")
        # shifts first (raw frame, unstretched): uncorrected shifts move material across the field of view
        # and spoil the along-axis profiles; a fine band-pass then makes the profile peak sharper.
        raw_shifts, _ = cumulative_shifts(filtered, angles, max_shift, stretch=False)
        fine_band = _bandpass(shift_images(imgs, raw_shifts), config.lowpass_sigma_px, 4 * config.lowpass_sigma_px)
        fine_band = fine_band * weight
        alpha, scores = search_tilt_axis(fine_band, ref, step_deg=config.axis_search_step_deg,
                                         refine_step_deg=config.axis_refine_step_deg)
        if config.refine_axis:
            alpha, fine_scores = refine_tilt_axis(imgs, filtered, angles, alpha, config, max_shift, ref)
            scores = np.concatenate([scores, fine_scores])
            alpha = (alpha + 90.0) % 180.0 - 90.0
            if alpha <= -90.0 + 1e-9:
                alpha += 180.0
    else:
        alpha, scores = float(config.tilt_axis_angle_deg), np.zeros((0, 2))
    if progress:
        progress("shifts")
    aligned = raw_to_aligned(filtered, alpha)
    max_shift = [max(1, int(config.max_shift_fraction * d)) for d in aligned.shape[-2:]]
    shifts_uv, ref = neighbour_shifts(aligned, angles, max_shift, neighbours=config.neighbours)
    if config.refine_iterations:
        from stemtomo.align.refine import refine_projection_matching

        if progress:
            progress("projection matching")
        shifts_uv, _ = refine_projection_matching(
            raw_to_aligned(imgs, alpha), angles, shifts_uv, iterations=config.refine_iterations,
            lowpass_sigma_px=config.lowpass_sigma_px, highpass_sigma_px=high, max_shift=max_shift,
            nz=None if config.thickness_px is None else max(4, round(config.thickness_px / factor)),
        )
        shifts_uv = shifts_uv - shifts_uv[ref]
    log.debug("tilt axis %.2f°, shifts up to %.1f px", alpha, float(np.abs(shifts_uv).max()) * factor)
    return Alignment(alpha, uv_to_raw(shifts_uv, alpha) * factor, scores, ref)


__all__ = [
    "AlignConfig",
    "Alignment",
    "axis_profile_score",
    "coarse_align",
    "cumulative_shifts",
    "neighbour_shifts",
    "search_tilt_axis",
    "shift_images",
    "uv_to_raw",
]
