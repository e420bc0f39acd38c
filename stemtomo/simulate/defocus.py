"""Tilt-dependent defocus blur of a tilt series (METHOD.md §7.4, corrected).

In a tilted specimen only the tilt axis is in focus: a point at distance ``|u|`` from the axis sits
``|u|·tan|θ|`` away from the focal plane, so its blur grows linearly with that defocus. Here every pixel
gets a Gaussian blur with standard deviation

    σ(θ, u) = defocus_max_px · (tan|θ| / tan θ_max) · (|u| / u_max)        (pixels)

where ``θ_max`` is the largest |tilt| of the series and ``u_max = (n_u - 1)/2`` the largest distance from
the axis in the image: no blur on the tilt axis or at 0°, ``defocus_max_px`` at the edge of the most
tilted image. Differences to the research code (§7.4): σ (not the window size) grows with the defocus,
the kernel is always centred and normalized, and the computation is vectorized: σ is quantized into
buckets of ``bucket_px``; for every bucket an image uses, the band of columns in that bucket (plus a
margin of 3σ, so the result equals blurring the whole image) is blurred with a separable Gaussian
(replicate padding at the image borders) and the band's columns are taken from it.
Images are in the aligned frame (tilt axis = image y).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stemtomo.errors import ParameterError

DEFAULT_BUCKET_PX = 0.25
"""Quantization step of the blur σ (pixels)."""


def defocus_sigma_px(tilt_angles_deg: Sequence[float] | np.ndarray, n_u: int, defocus_max_px: float) -> np.ndarray:
    """Blur σ in pixels for every (tilt, column): ``(n_tilts, n_u)`` float64 (see the module docstring).

    Raises
    ------
    ParameterError
        If ``defocus_max_px`` is negative or not finite.
    """
    d = float(defocus_max_px)
    if not (math.isfinite(d) and d >= 0):
        raise ParameterError(f"--defocus-max-px {defocus_max_px!r}: must be a number ≥ 0 (0 = off)")
    th = np.deg2rad(np.abs(np.asarray(tilt_angles_deg, dtype=np.float64)))
    t = np.tan(th)
    t_max = float(t.max()) if t.size else 0.0
    u = np.abs(np.arange(n_u, dtype=np.float64) - (n_u - 1) / 2.0)
    u_max = (n_u - 1) / 2.0
    if d == 0 or t_max == 0 or u_max == 0:
        return np.zeros((t.size, n_u))
    return d * (t / t_max)[:, None] * (u / u_max)[None, :]


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, ny, nx)`` images (replicate padding, kernel radius ⌈3σ⌉)."""
    if sigma_px <= 0:
        return images
    r = max(1, int(math.ceil(3.0 * sigma_px)))
    x = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = k / k.sum()
    img = images[:, None]
    img = F.conv2d(F.pad(img, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    img = F.conv2d(F.pad(img, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return img[:, 0]


def apply_defocus(
    images: torch.Tensor,
    tilt_angles_deg: Sequence[float] | np.ndarray,
    defocus_max_px: float,
    *,
    bucket_px: float = DEFAULT_BUCKET_PX,
) -> torch.Tensor:
    """Blur each image column with its tilt- and distance-dependent Gaussian (module docstring).

    Parameters
    ----------
    images : ``(n_tilts, ny, nx)`` tensor (any device), aligned frame.
    tilt_angles_deg : ``(n_tilts,)`` tilts in degrees.
    defocus_max_px : σ at the image edge of the most tilted image, pixels; 0 returns a copy.
    bucket_px : σ quantization step; columns with σ < bucket_px/2 are left unchanged.

    Returns
    -------
    tensor of the same shape, dtype and device.

    Raises
    ------
    ParameterError
        Negative/NaN ``defocus_max_px`` or ``bucket_px``, or angle count ≠ number of images.
    """
    if images.ndim != 3 or images.shape[0] != len(tilt_angles_deg):
        raise ParameterError(f"defocus: images {tuple(images.shape)} do not match {len(tilt_angles_deg)} tilt angles")
    if not (math.isfinite(bucket_px) and bucket_px > 0):
        raise ParameterError(f"defocus bucket {bucket_px!r}: must be positive")
    sigma = defocus_sigma_px(tilt_angles_deg, images.shape[-1], defocus_max_px)
    level = np.rint(sigma / bucket_px).astype(np.int64)
    out = images.clone()
    n_u = images.shape[-1]
    for i in range(level.shape[0]):
        for lv in np.unique(level[i]):
            if lv == 0:
                continue
            sig = float(lv) * bucket_px
            r = max(1, int(math.ceil(3.0 * sig)))
            for a, b in _runs(np.nonzero(level[i] == lv)[0]):
                lo, hi = max(0, a - r), min(n_u, b + r + 1)  # margin r: same result as blurring the whole image
                blurred = gaussian_blur(images[i : i + 1, :, lo:hi], sig)[0]
                out[i, :, a : b + 1] = blurred[:, a - lo : b + 1 - lo]
    return out


def _runs(cols: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs ``(first, last)`` of sorted column indices."""
    if cols.size == 0:
        return []
    breaks = np.nonzero(np.diff(cols) > 1)[0]
    starts = np.concatenate(([cols[0]], cols[breaks + 1]))
    ends = np.concatenate((cols[breaks], [cols[-1]]))
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]

__all__ = ["DEFAULT_BUCKET_PX", "apply_defocus", "defocus_sigma_px", "gaussian_blur"]
