"""Ground-truth misalignment for simulated tilt series: per-tilt image shifts (raw frame).

A shift ``(dx, dy)`` (pixels) moves the image *content* by ``+dx`` columns (x) and ``+dy`` rows (y):
``shifted(x, y) = image(x - dx, y - dy)``. An aligner must find ``(-dx, -dy)`` (IMOD ``.xf`` translation).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from stemtomo.errors import ParameterError


def random_shifts(n_tilts: int, sigma_px: float, seed: int) -> np.ndarray:
    """Gaussian per-tilt shifts ``(n_tilts, 2)`` as ``(dx, dy)`` pixels, σ = ``sigma_px`` per axis.

    Drawn from their own stream ``np.random.default_rng([seed, 7])`` so the phantom does not change
    when shifts are switched on.

    Raises
    ------
    ParameterError
        If ``sigma_px`` is negative or not finite.
    """
    s = float(sigma_px)
    if not (math.isfinite(s) and s >= 0):
        raise ParameterError(f"--shift-sigma-px {sigma_px!r}: must be a number ≥ 0 (0 = off)")
    return np.random.default_rng([int(seed), 7]).normal(0.0, s, size=(int(n_tilts), 2))


def shift_images(images: torch.Tensor, shifts_px: np.ndarray) -> torch.Tensor:
    """Shift each image ``(n, ny, nx)`` by its ``(dx, dy)`` (bilinear, edge values repeated outside).

    Returns a tensor of the same shape, dtype and device. Integer shifts are exact.
    """
    n, ny, nx = images.shape
    sh = torch.as_tensor(np.asarray(shifts_px, dtype=np.float64), dtype=images.dtype, device=images.device)
    if sh.shape != (n, 2):
        raise ParameterError(f"shifts of shape {tuple(sh.shape)} do not match {n} images")
    yy = torch.arange(ny, dtype=images.dtype, device=images.device)
    xx = torch.arange(nx, dtype=images.dtype, device=images.device)
    src_x = xx[None, None, :] - sh[:, 0, None, None]  # (n, 1, nx)
    src_y = yy[None, :, None] - sh[:, 1, None, None]  # (n, ny, 1)
    gx = (2.0 * src_x / max(nx - 1, 1) - 1.0).expand(n, ny, nx)
    gy = (2.0 * src_y / max(ny - 1, 1) - 1.0).expand(n, ny, nx)
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, 0]


__all__ = ["random_shifts", "shift_images"]
