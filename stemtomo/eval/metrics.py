"""Image/volume similarity metrics: min–max normalization, MSE, PSNR, SSIM and DSSIM (METHOD.md §8.2–8.3).

Conventions
-----------
- Both arrays are min–max normalized to [0, 1] first (:func:`minmax`), as in the paper's protocol, so the
  metrics are invariant to affine intensity changes (WBP in line-integral units, inverted scales aside).
- PSNR uses ``data_range = 1`` (the range after min–max normalization): ``PSNR = 10·log10(1 / MSE)``;
  identical arrays give ``+inf``.
- SSIM is the Wang et al. (2004) index with a uniform ``7^ndim`` window and the sample covariance, exactly
  as :func:`skimage.metrics.structural_similarity` computes it (``gaussian_weights=False``): the SSIM map is
  averaged over the windows that lie fully inside the array. Its ``data_range`` sets the stabilizing
  constants ``C1 = (0.01·R)²``, ``C2 = (0.03·R)²``. After min–max normalization the right value is 1;
  the paper's numbers were computed with skimage 0.19, which inferred ``R = 2`` for float input
  (METHOD.md §8.2), so ``data_range = 2`` reproduces them.
- DSSIM = (1 − SSIM) / 2.

The SSIM is computed with torch (``avg_pool`` = the valid part of the uniform filter), in float64, on the
device of the input tensors, in chunks along the first axis so large volumes fit in memory.

References
----------
Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4), 2004.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from stemtomo.errors import ParameterError

SSIM_WINDOW = 7
"""Side of the uniform SSIM window (skimage's default, the paper's)."""
_K1, _K2 = 0.01, 0.03


def minmax(x: np.ndarray) -> np.ndarray:
    """Min–max normalize to [0, 1] as float64; a constant array becomes all zeros."""
    a = np.asarray(x, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if not hi > lo:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def minmax_torch(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Min–max normalize a tensor over ``dims`` (per remaining index); constant slices become zeros."""
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))


def mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error (float64), over the voxels where ``mask`` is True if given.

    Raises
    ------
    ParameterError
        If the shapes differ or the mask selects nothing.
    """
    _same_shape(a, b)
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if mask is not None:
        m = _check_mask(mask, d.shape)
        return float(np.mean(d[m] ** 2))
    return float(np.mean(d * d))


def psnr_from_mse(mse_value: float, data_range: float = 1.0) -> float:
    """``10·log10(data_range² / MSE)`` in dB; ``+inf`` for MSE = 0."""
    if mse_value <= 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse_value)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB of ``a`` against ``b`` (symmetric); ``+inf`` if they are equal."""
    return psnr_from_mse(mse(a, b, mask), data_range)


def dssim(ssim_value: float) -> float:
    """Structural dissimilarity ``(1 − SSIM) / 2`` (0 for identical images)."""
    return (1.0 - ssim_value) / 2.0


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win_size: int = SSIM_WINDOW) -> torch.Tensor:
    """The SSIM map over all fully contained windows.

    Parameters
    ----------
    a, b : tensors of the same shape, ``(N, H, W)`` (a batch of 2D images) or ``(N, D, H, W)``
        (a batch of volumes), float64 recommended.
    data_range, win_size : see the module docstring.

    Returns
    -------
    Tensor ``(N, H - w + 1, W - w + 1)`` (or the 3D analogue): the local SSIM of the window whose first
    corner is at that index, i.e. skimage's map cropped by ``(w - 1) / 2`` on every side.
    """
    nd = a.dim() - 1
    pool = F.avg_pool2d if nd == 2 else F.avg_pool3d
    x, y = a.unsqueeze(1), b.unsqueeze(1)
    np_ = win_size**nd
    cov_norm = np_ / (np_ - 1)

    def filt(t: torch.Tensor) -> torch.Tensor:  # separable box filter: nd 1D passes instead of one w^nd pass
        for axis in range(nd):
            kernel = tuple(win_size if a == axis else 1 for a in range(nd))
            t = pool(t, kernel_size=kernel, stride=1)
        return t

    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.squeeze(1)


def ssim(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    data_range: float = 1.0,
    mask: np.ndarray | None = None,
    win_size: int = SSIM_WINDOW,
    max_elements: int = 1 << 24,
) -> float:
    """Mean SSIM of two 2D images or 3D volumes (skimage's definition, see the module docstring).

    Computed in float64 on the device of ``a`` (numpy input: CPU), in chunks along axis 0 of at most
    ``max_elements`` voxels. With ``mask``, the mean is taken over the windows whose centre voxel is in the mask.

    Raises
    ------
    ParameterError
        If shapes differ, an axis is shorter than the window, or the mask is empty inside the valid region.
    """
    _same_shape(a, b)
    ta = torch.as_tensor(a).to(torch.float64)
    tb = torch.as_tensor(b).to(device=ta.device, dtype=torch.float64)
    if ta.dim() not in (2, 3):
        raise ParameterError(f"SSIM needs a 2D image or a 3D volume, got shape {tuple(ta.shape)}")
    if min(ta.shape) < win_size:
        raise ParameterError(
            f"SSIM: every axis must be at least {win_size} long (the window), got shape {tuple(ta.shape)}"
        )
    pad = (win_size - 1) // 2
    valid = None
    if mask is not None:
        m = _check_mask(mask, tuple(ta.shape))
        inner = m[tuple(slice(pad, n - pad) for n in m.shape)]
        if not inner.any():
            raise ParameterError(f"SSIM: the mask has no voxel at least {pad} voxels away from the border")
        valid = torch.as_tensor(inner, device=ta.device)
    n_out = ta.shape[0] - win_size + 1
    per_row = int(np.prod(ta.shape[1:]))
    step = max(1, max_elements // max(per_row, 1) - win_size + 1)
    total, count = 0.0, 0
    for o0 in range(0, n_out, step):
        o1 = min(n_out, o0 + step)
        s = ssim_map(ta[None, o0 : o1 + win_size - 1], tb[None, o0 : o1 + win_size - 1], data_range, win_size)[0]
        if valid is not None:
            sel = valid[o0:o1]
            total += float(s[sel].sum())
            count += int(sel.sum())
        else:
            total += float(s.sum())
            count += s.numel()
    return total / count


def ssim_batch_2d(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win_size: int = SSIM_WINDOW) -> torch.Tensor:
    """Mean SSIM per image of two image batches ``(N, H, W)`` → ``(N,)`` float64 (no mask)."""
    _same_shape(a, b)
    if min(a.shape[-2:]) < win_size:
        raise ParameterError(f"SSIM: images must be at least {win_size}×{win_size}, got {tuple(a.shape[-2:])}")
    s = ssim_map(a.to(torch.float64), b.to(torch.float64), data_range, win_size)
    return s.mean(dim=(-2, -1))


def slab_mask(shape: tuple[int, ...], thickness_px: float) -> np.ndarray:
    """Boolean mask of the specimen slab ``|z| ≤ thickness_px / 2`` (centred voxel z, geometry convention).

    Raises
    ------
    ParameterError
        If the thickness is not positive.
    """
    if not (math.isfinite(thickness_px) and thickness_px > 0):
        raise ParameterError(f"--thickness-px {thickness_px:g}: the slab thickness must be a positive number of voxels")
    nz = shape[0]
    z = np.arange(nz) - (nz - 1) / 2.0
    inside = np.abs(z) <= thickness_px / 2.0 + 1e-9
    return np.broadcast_to(inside[:, None, None], shape).copy()


def _same_shape(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ParameterError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}; resample one of them first")


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask).astype(bool)
    if m.shape != tuple(shape):
        raise ParameterError(f"mask shape {m.shape} does not match the data shape {tuple(shape)}")
    if not m.any():
        raise ParameterError("the mask selects no voxel; check --mask / --slab-only")
    return m


__all__ = [
    "SSIM_WINDOW",
    "dssim",
    "minmax",
    "minmax_torch",
    "mse",
    "psnr",
    "psnr_from_mse",
    "slab_mask",
    "ssim",
    "ssim_batch_2d",
    "ssim_map",
]
