"""Image operations shared by the alignment steps: fill detection, band-pass, sub-pixel cross-correlation,
stretching, Fourier shifts and the aligned→raw shift rotation (all per image, device follows the input)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from stemtomo.core.geometry import aligned_shape, is_quarter_turn, raw_to_aligned


def fill_regions(images: torch.Tensor, min_fraction: float = 0.02, *, bin_factor: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Find and neutralize constant fill (e.g. zero-filled corners left by rotating images with zero padding).

    A value is taken as fill when it is the image's minimum or maximum (to 1e-6 of the range), occupies at least ``min_fraction`` of
    the border pixels *exactly*, and is at least ten times rarer in the central quarter of the image than on
    the border (quantized data, e.g. counts or 8-bit images, repeat values everywhere; padding does not).
    Returns ``(images, valid)``: the images with fill pixels set to the mean of their valid pixels, and the
    ``(n, ny, nx)`` float mask of valid pixels (1 = data). Fill fixed in the raw frame otherwise dominates
    every correlation and pins the shifts at zero.

    ``bin_factor`` > 1 average-bins each result (the valid mask by its minimum; remainder rows and columns
    cropped) image by image, so a large stack is never copied at full size.
    """
    n, ny, nx = images.shape
    f = bin_factor
    by, bx = ny // f, nx // f
    out = images.new_empty((n, by, bx))
    valid = images.new_ones((n, by, bx))
    for i in range(n):
        img = images[i]
        fill = _fill_mask(img, min_fraction)
        if fill is None:
            out[i] = img[: by * f, : bx * f].reshape(by, f, bx, f).mean((1, 3)) if f > 1 else img
            continue
        filled = torch.where(fill, img[~fill].mean(), img)
        mask = (~fill).to(images.dtype)
        if f > 1:
            filled = filled[: by * f, : bx * f].reshape(by, f, bx, f).mean((1, 3))
            mask = mask[: by * f, : bx * f].reshape(by, f, bx, f).amin((1, 3))
        out[i], valid[i] = filled, mask
    return out, valid


def _fill_mask(img: torch.Tensor, min_fraction: float) -> torch.Tensor | None:
    """The fill pixels of one image (see :func:`fill_regions`), or None when it has none."""
    ny, nx = img.shape
    border = torch.cat([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    values, counts = torch.unique(border, return_counts=True)
    k = int(counts.argmax())
    value = values[k]
    lo, hi = float(img.min()), float(img.max())
    tol = 1e-6 * (hi - lo)
    extreme = abs(float(value) - lo) <= tol or abs(float(value) - hi) <= tol
    if counts[k] < max(3, min_fraction * border.numel()) or not extreme:
        return None
    centre = img[ny // 4 : ny - ny // 4, nx // 4 : nx - nx // 4]
    if float((centre == value).float().mean()) * 10 > float(counts[k]) / border.numel():
        return None
    return img == value


def _edge_weight(valid: torch.Tensor, width_px: float) -> torch.Tensor:
    """Smooth weight that is 0 on fill and rises to 1 over about ``2·width_px`` inside the valid region."""
    if bool((valid > 0.5).all()):
        return torch.ones_like(valid)
    return ((circular_gaussian_blur(valid, width_px) - 0.5) * 2).clamp(0, 1) * valid


def circular_gaussian_blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Circular Gaussian blur (σ in pixels) of images ``(..., ny, nx)`` in Fourier space."""
    ny, nx = x.shape[-2:]
    ky = torch.fft.fftfreq(ny, device=x.device, dtype=x.dtype)[:, None]
    kx = torch.fft.rfftfreq(nx, device=x.device, dtype=x.dtype)[None, :]
    g = torch.exp(-2 * (math.pi * sigma_px) ** 2 * (ky**2 + kx**2))
    return torch.fft.irfft2(torch.fft.rfft2(x) * g, s=(ny, nx))


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


def filtered_for_alignment(images: torch.Tensor, lowpass_sigma_px: float, highpass_sigma_px: float,
                           bin_factor: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The inputs of the alignment criteria: ``(binned images, valid, edge weight, band-passed × weight, high-pass
    σ)`` of ``images`` binned by ``bin_factor`` with the fill masked (:func:`fill_regions`); a high-pass σ of 0
    means the binned size / 16."""
    imgs, valid = fill_regions(images, bin_factor=bin_factor)  # binned image by image: no full-size copies
    high = highpass_sigma_px or max(imgs.shape[-2:]) / 16
    weight = _edge_weight(valid, 2 * lowpass_sigma_px + 1)
    return imgs, valid, weight, _bandpass(imgs, lowpass_sigma_px, high) * weight, high


def to_canvas(images: torch.Tensor, tilt_axis_angle_deg: float) -> torch.Tensor:
    """:func:`~stemtomo.core.geometry.raw_to_aligned` onto the raw shape, the canvas the alignment criteria
    score on at every candidate α (a non-square frame is not swapped near 90°, so the criteria do not jump
    at 45°; the twin correction also erred more on the swapped canvas: 12 non-square 96 × 64 series at
    88°/−86°/93°, mean |α error| 0.71° against 0.39°)."""
    return raw_to_aligned(images, tilt_axis_angle_deg, out_shape=images.shape[-2:])


def canvas_shape(raw_shape: Sequence[int], tilt_axis_angle_deg: float) -> tuple[int, int]:
    """Shape ``(ny, nx)`` of :func:`to_canvas`'s images: the raw shape, swapped only by odd quarter turns."""
    if is_quarter_turn(tilt_axis_angle_deg):
        return aligned_shape(raw_shape, tilt_axis_angle_deg)
    return int(raw_shape[-2]), int(raw_shape[-1])


def shift_limits(shape: Sequence[int], max_shift_fraction: float) -> list[int]:
    """Largest shift searched along y and x (pixels, ≥ 1) in images of ``shape``."""
    return [max(1, int(max_shift_fraction * d)) for d in shape[-2:]]


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


__all__ = ["canvas_shape", "circular_gaussian_blur", "fill_regions", "filtered_for_alignment", "shift_images", "shift_limits",
           "to_canvas", "uv_to_raw"]
