"""The 2D evaluation protocol: projections at random 3D orientations ("test projections", METHOD.md §8.3).

Both volumes are projected with the same forward model at ``count`` orientations, each projection is
min–max normalized on its own, and PSNR / MSE / DSSIM are averaged over the projections (mean ± std).

Orientations
    ``(a_x, a_y) = np.random.RandomState(seed).randint(0, 360, (count, 2))`` in degrees: with seed 42 and
    count 20 this is exactly the paper's list ((102, 348), (270, 106), …); a smaller count takes its first
    pairs. The rotation is ``R = R_y(a_y)·R_x(a_x)`` (x first, then y), acting on (x, y, z) column vectors.
Geometry (stemtomo's convention, :mod:`stemtomo.core.geometry`)
    A square detector of ``n = max(ny, nx)`` pixels (1 voxel each, centred); the ray through detector pixel
    ``(u, v)`` samples the volume at ``R·(u, v, s)`` for ``s`` spanning the volume diagonal in steps of
    ``step_px`` voxels. The sampling grid is rotated (the volume is not resampled), trilinear interpolation
    (``grid_sample``), zero outside the volume. (The paper: nearest voxel, 1024 samples over ±√2 half-widths,
    which can clip the corners of a cube at oblique orientations; here rays cover the full diagonal.)
Image formation
    ``P = Σ ρ·step / L`` with ``L`` = :func:`~stemtomo.core.geometry.length_unit_px` (normalized units) and
    ``I = intensity(P, contrast, κ)`` (:mod:`stemtomo.core.imaging`; bright field ``exp(-κP)``, κ = 7).
    The paper's evaluation used ``exp(-Σρ·step/100)`` on 1000³ volumes, i.e. κ = L/100 = 5 in these units;
    after the per-projection min–max only this contrast choice matters.

The work is chunked along the ray (bounded memory) and runs on the device of the input tensor.

References
----------
H. Kniesel, T. Ropinski, T. Bergner, et al., "Clean Implicit 3D Structure from Noisy 2D STEM Images",
CVPR 2022 (the 2D evaluation protocol; ``Results.py`` / ``Evaluation2D.ipynb`` of its code).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from stemtomo.core.geometry import length_unit_px, to_grid_coords
from stemtomo.core.imaging import intensity
from stemtomo.errors import ParameterError
from stemtomo.eval.config import ProjectionConfig
from stemtomo.eval.metrics import dssim, minmax_torch, psnr_from_mse, ssim_batch_2d

log = logging.getLogger(__name__)


def paper_test_angles(count: int = 20, seed: int = 42) -> np.ndarray:
    """The test orientations ``(a_x, a_y)`` in degrees, int array ``(count, 2)``.

    ``np.random.RandomState(seed).randint(0, 360, (count, 2))``: for seed 42 the first pair is (102, 348),
    bit-identical to the paper's ``np.random.seed(42)`` list (METHOD.md §8.3).
    """
    if count < 1:
        raise ParameterError(f"--projections {count}: need at least 1 orientation")
    return np.random.RandomState(seed).randint(0, 360, (count, 2))


def rotation_matrix(a_x_deg: float, a_y_deg: float) -> np.ndarray:
    """``R_y(a_y)·R_x(a_x)`` (3×3, float64) acting on column vectors (x, y, z); right-handed, CCW."""
    ax, ay = math.radians(a_x_deg), math.radians(a_y_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    return ry @ rx


def project(
    volumes: torch.Tensor,
    rotation: np.ndarray,
    config: ProjectionConfig = ProjectionConfig(),
) -> torch.Tensor:
    """Line integrals of ``C`` volumes at one orientation.

    Parameters
    ----------
    volumes : ``(C, nz, ny, nx)`` float tensor (densities); several volumes share the sampling grid.
    rotation : 3×3 matrix mapping detector-frame (u, v, s) to volume (x, y, z), centred voxel units.

    Returns
    -------
    ``(C, n, n)`` line integrals ``P`` in normalized length units, ``n = max(ny, nx)``, rows = v, columns = u.
    """
    if volumes.dim() != 4:
        raise ParameterError(f"project: expected (C, nz, ny, nx), got shape {tuple(volumes.shape)}")
    _, nz, ny, nx = volumes.shape
    dev, dt = volumes.device, volumes.dtype
    n = max(ny, nx)
    n_s = max(2, int(math.ceil(math.sqrt(nz * nz + ny * ny + nx * nx) / config.step_px)) + 1)
    c = torch.arange(n, device=dev, dtype=dt) - (n - 1) / 2.0
    s_all = (torch.arange(n_s, device=dev, dtype=dt) - (n_s - 1) / 2.0) * config.step_px
    v, u = torch.meshgrid(c, c, indexing="ij")
    rot = torch.as_tensor(rotation, device=dev, dtype=dt)
    plane = u[..., None] * rot[:, 0] + v[..., None] * rot[:, 1]  # (n, n, 3): detector plane through the centre
    chunk = max(1, config.max_points // (n * n))
    total = torch.zeros((volumes.shape[0], n, n), device=dev, dtype=dt)
    inp = volumes[None]
    for k0 in range(0, n_s, chunk):
        s = s_all[k0 : k0 + chunk]
        pts = plane[None] + s[:, None, None, None] * rot[:, 2]  # (S, n, n, 3) xyz
        grid = to_grid_coords(pts, (nz, ny, nx))[None]
        vals = F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        total += vals[0].sum(dim=1)
    return total * (config.step_px / length_unit_px(ny, nx))


def projection_metrics(
    volume: torch.Tensor,
    reference: torch.Tensor,
    config: ProjectionConfig = ProjectionConfig(),
    callback: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """The 2D protocol on two volumes of the same shape ``(nz, ny, nx)`` (densities, ideally in [0, 1]).

    Parameters
    ----------
    callback : called as ``callback(done, total)`` after each orientation.

    Returns
    -------
    dict with ``psnr_2d``, ``mse_2d``, ``dssim_2d`` (means), ``*_std`` (population std, ddof = 0),
    ``per_projection`` (list of dicts with a_x, a_y (degrees), psnr, mse, dssim) and the protocol settings.

    Raises
    ------
    ParameterError
        Shapes differ, or the projections are smaller than the SSIM window.
    """
    if tuple(volume.shape) != tuple(reference.shape) or volume.dim() != 3:
        raise ParameterError(
            f"2D protocol: volumes must be 3D and of equal shape, got {tuple(volume.shape)} and {tuple(reference.shape)}"
        )
    angles = paper_test_angles(config.count, config.seed)
    pair = torch.stack((volume, reference.to(volume))).to(torch.float32)
    images = []
    for i, (a_x, a_y) in enumerate(angles):
        p = project(pair, rotation_matrix(float(a_x), float(a_y)), config)
        images.append(intensity(p, config.contrast, config.kappa))
        if callback is not None:
            callback(i + 1, len(angles))
    stack = torch.stack(images).to(torch.float64)  # (count, 2, n, n)
    out = images_metrics(stack[:, 0], stack[:, 1], config.ssim_data_range)
    per = out.pop("per_image")
    assert isinstance(per, list)
    return out | {
        "per_projection": [{"a_x": int(a), "a_y": int(b)} | m for (a, b), m in zip(angles, per, strict=True)],
        "protocol": {
            "count": config.count,
            "seed": config.seed,
            "rotation": "R_y(a_y) @ R_x(a_x)",
            "kappa": config.kappa,
            "contrast": config.contrast,
            "step_px": config.step_px,
            "normalization": "per-projection min-max",
            "ssim_data_range": config.ssim_data_range,
            "psnr_data_range": 1.0,
        },
    }


def images_metrics(images: torch.Tensor, references: torch.Tensor, ssim_data_range: float = 1.0) -> dict[str, object]:
    """Per-image min–max, then PSNR (data_range 1), MSE and DSSIM per image; means and stds.

    ``images`` and ``references`` are ``(N, H, W)``. Used for test projections and for tilt-series pairs.
    """
    a = minmax_torch(images.to(torch.float64), dims=(-2, -1))
    b = minmax_torch(references.to(a), dims=(-2, -1))
    mses = ((a - b) ** 2).mean(dim=(-2, -1)).cpu().numpy()
    ssims = ssim_batch_2d(a, b, ssim_data_range).cpu().numpy()
    psnrs = np.array([psnr_from_mse(float(m)) for m in mses])
    dss = np.array([dssim(float(s)) for s in ssims])
    per = [{"psnr": float(p), "mse": float(m), "dssim": float(d)} for p, m, d in zip(psnrs, mses, dss, strict=True)]
    return {
        "psnr_2d": _mean(psnrs),
        "psnr_2d_std": _std(psnrs),
        "mse_2d": float(np.mean(mses)),
        "mse_2d_std": float(np.std(mses)),
        "dssim_2d": float(np.mean(dss)),
        "dssim_2d_std": float(np.std(dss)),
        "per_image": per,
    }


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x))  # +inf if any image is identical to its reference


def _std(x: np.ndarray) -> float:
    return float(np.std(x)) if np.all(np.isfinite(x)) else math.nan


__all__ = ["images_metrics", "paper_test_angles", "project", "projection_metrics", "rotation_matrix"]
