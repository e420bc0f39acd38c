"""The evaluation protocol on arrays: volume vs reference (3D + 2D metrics) and stack vs stack.

Steps for volumes (METHOD.md §8.2–8.3):

1. the reference is resampled to the volume's grid if needed (:func:`resample_to_shape`: trilinear,
   centre-aligned, isotropic; a thicker/thinner reference is cropped/zero-padded in z);
2. optionally the volume is aligned to the reference (:mod:`stemtomo.eval.align`);
3. both are min–max normalized to [0, 1];
4. 3D: MSE, PSNR (data_range 1), SSIM (7³ uniform window, ``ssim_data_range``), DSSIM, optionally on a mask;
5. 2D: the test-projection protocol (:mod:`stemtomo.eval.projections`) on the normalized volumes.

Result dictionaries use flat metric keys (``psnr_3d``, ``mse_3d``, ``ssim_3d``, ``dssim_3d``, ``psnr_2d``,
``mse_2d``, ``dssim_2d`` and ``*_std``) plus detail sections; PSNR of identical inputs is ``+inf``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from stemtomo.errors import ParameterError
from stemtomo.eval.align import align_volume, apply_transform
from stemtomo.eval.config import EvalConfig
from stemtomo.eval.metrics import SSIM_WINDOW, dssim, minmax_torch, psnr_from_mse, ssim
from stemtomo.eval.projections import images_metrics, projection_metrics

log = logging.getLogger(__name__)

MAX_ANISOTROPY = 1.1
"""Largest ratio between the y and the x size ratios (reference / volume) accepted when resampling."""


def resample_to_shape(reference: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample a reference volume onto the voxel grid of a volume of ``shape`` (trilinear, centre-aligned).

    Both volumes are taken to cover the same field of view in y and x and to share the centred voxel
    convention (:mod:`stemtomo.core.geometry`). The scale is the in-plane size ratio ``s = n_ref / n_vol``
    (mean of y and x), applied to all three axes (isotropic voxels): output voxel ``i`` samples the reference
    at ``c_ref + (i - c_vol)·s`` with ``c = (n - 1) / 2``. Along z this crops or zero-pads a thicker or
    thinner reference around the centre, which is how a slab-only tomogram (nz = thickness) meets a cubic
    phantom. Where only a zoom is needed this equals ``scipy.ndimage.zoom(order=1, grid_mode=True)``.
    Samples more than half a voxel outside the reference are 0 (density outside the specimen).

    Raises
    ------
    ParameterError
        If the number of axes differs or the y and x size ratios differ by more than 10 % (resampling
        would distort the specimen: crop or pad one of the volumes instead).
    """
    if reference.ndim != 3 or len(shape) != 3:
        raise ParameterError(f"reference has shape {reference.shape} but the volume {tuple(shape)}: cannot compare")
    ry, rx = reference.shape[1] / shape[1], reference.shape[2] / shape[2]
    if max(ry, rx) / min(ry, rx) > MAX_ANISOTROPY:
        raise ParameterError(
            f"reference shape {reference.shape} cannot be resampled to the volume shape {tuple(shape)} without "
            f"distorting it (y and x size ratios {ry:.3g} and {rx:.3g} differ); crop or pad one of them"
        )
    scale = (ry + rx) / 2.0
    out = np.asarray(reference, dtype=np.float32)
    for axis in range(3):
        out = _resample_axis(out, axis, int(shape[axis]), scale)
    return out


def match_grids(volume: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, str | None]:
    """A volume and its reference on one grid, as ``stemtomo eval`` scores them: ``(volume, reference, how)``.

    A slab-only volume (nz = thickness) against a deeper reference of the same y/x size, deeper by an even
    number of planes, is zero-padded in z (density outside the slab is 0 by convention), so every method is
    scored on the reference's grid (``how = "padded"``); any other difference in shape resamples the
    reference onto the volume's grid (:func:`resample_to_shape`, ``how = "resampled"``); equal shapes are
    returned as they are (``how = None``).
    """
    dz = reference.shape[0] - volume.shape[0]
    if reference.shape[1:] == volume.shape[1:] and dz > 0 and dz % 2 == 0:
        return np.pad(volume, ((dz // 2, dz // 2), (0, 0), (0, 0))), reference, "padded"
    if reference.shape != volume.shape:
        return volume, resample_to_shape(reference, volume.shape), "resampled"
    return volume, reference, None


def _resample_axis(a: np.ndarray, axis: int, n_out: int, scale: float) -> np.ndarray:
    """Linear interpolation along one axis at ``c_in + (i - c_out)·scale``; 0 beyond half a voxel outside."""
    n_in = a.shape[axis]
    if n_in == n_out and scale == 1.0:
        return a
    pos = (n_in - 1) / 2.0 + (np.arange(n_out) - (n_out - 1) / 2.0) * scale
    inside = (pos >= -0.5 - 1e-9) & (pos <= n_in - 0.5 + 1e-9)
    p = np.clip(pos, 0.0, n_in - 1.0)
    i0 = np.floor(p).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (p - i0) * inside
    w0 = (1.0 - (p - i0)) * inside
    bshape = [1, 1, 1]
    bshape[axis] = n_out
    out = np.take(a, i0, axis=axis) * w0.reshape(bshape) + np.take(a, i1, axis=axis) * w.reshape(bshape)
    return out.astype(np.float32)


def evaluate_volumes(
    volume: torch.Tensor,
    reference: torch.Tensor,
    config: EvalConfig = EvalConfig(),
    mask: np.ndarray | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """3D and 2D metrics of ``volume`` against ``reference`` (both ``(nz, ny, nx)``, same shape).

    Runs on the device of ``volume``. ``mask`` (bool, same shape, reference frame) restricts the 3D metrics;
    ``callback(done, total)`` reports the 2D projections.

    Returns
    -------
    dict: flat metric keys (see the module docstring), ``pearson_3d`` (correlation after alignment; negative
    means one volume looks inverted, a warning is logged), ``align`` (the transform found or None),
    ``settings_3d`` and ``details_2d`` (per-projection values, angles, protocol).

    Raises
    ------
    ParameterError
        Shapes differ, volumes are smaller than the SSIM window, empty mask.
    """
    if volume.dim() != 3 or tuple(volume.shape) != tuple(reference.shape):
        raise ParameterError(
            f"volume and reference must be 3D of equal shape, got {tuple(volume.shape)} and {tuple(reference.shape)}"
        )
    out: dict[str, Any] = {"shape": list(volume.shape)}
    vol = volume.to(torch.float64)
    ref = reference.to(device=vol.device, dtype=torch.float64)
    out["align"] = None
    if config.align:
        res = align_volume(vol, ref, config.align_config)
        vol = apply_transform(vol, res.flip_zyx, res.transpose_yx, res.shift_zyx)
        out["align"] = res.to_dict()
        log.info(
            "alignment: flips z,y,x %s, transpose y/x %s, shift %s (correlation %.3f → %.3f)",
            res.flip_zyx, res.transpose_yx, res.shift_zyx, res.correlation_before, res.correlation,
        )
    dims = (0, 1, 2)
    vol, ref = minmax_torch(vol, dims), minmax_torch(ref, dims)
    out["pearson_3d"] = _pearson(vol, ref)
    if out["pearson_3d"] < 0:
        log.warning(
            "volume and reference are anti-correlated (r = %.3f): is one inverted (bright = empty)? "
            "stemtomo volumes are bright = dense", out["pearson_3d"],
        )
    if config.metrics_3d:
        out |= _metrics_3d(vol, ref, config.ssim_data_range, mask)
    if config.projections.count > 0:
        pcfg = dataclasses.replace(config.projections, ssim_data_range=config.ssim_data_range)
        two = projection_metrics(vol, ref, pcfg, callback)
        details = {k: two.pop(k) for k in ("per_projection", "protocol")}
        out |= two
        out["details_2d"] = details
    return out


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two tensors (0 if one is constant)."""
    da, db = a - a.mean(), b - b.mean()
    den = float(torch.sqrt((da * da).sum() * (db * db).sum()))
    return float((da * db).sum()) / den if den > 0 else 0.0


def _metrics_3d(vol: torch.Tensor, ref: torch.Tensor, data_range: float, mask: np.ndarray | None) -> dict[str, Any]:
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        if m.shape != tuple(vol.shape):
            raise ParameterError(f"mask shape {m.shape} does not match the volume shape {tuple(vol.shape)}")
        if not m.any():
            raise ParameterError("the mask selects no voxel; check --mask / --slab-only")
        sel = torch.as_tensor(m, device=vol.device)
        mse_value = float(((vol - ref)[sel] ** 2).mean())
    else:
        mse_value = float(((vol - ref) ** 2).mean())
    ssim_value = ssim(vol, ref, data_range=data_range, mask=mask)
    return {
        "psnr_3d": psnr_from_mse(mse_value),
        "mse_3d": mse_value,
        "ssim_3d": ssim_value,
        "dssim_3d": dssim(ssim_value),
        "settings_3d": {
            "normalization": "min-max of each whole volume",
            "psnr_data_range": 1.0,
            "ssim_data_range": data_range,
            "ssim_window": SSIM_WINDOW,
            "masked_voxels": int(np.count_nonzero(mask)) if mask is not None else None,
        },
    }


def evaluate_stacks(stack: torch.Tensor, reference: torch.Tensor, config: EvalConfig = EvalConfig()) -> dict[str, Any]:
    """Image-by-image comparison of two tilt series ``(n, ny, nx)``: per-image min–max, PSNR (data_range 1),
    MSE, DSSIM; mean ± std and the per-image values (``per_image``).

    Raises
    ------
    ParameterError
        If the image counts or image shapes differ, or images are smaller than the SSIM window.
    """
    if stack.dim() != 3 or tuple(stack.shape) != tuple(reference.shape):
        raise ParameterError(
            f"stacks must have the same number and size of images, got {tuple(stack.shape)} and {tuple(reference.shape)}"
        )
    out = images_metrics(stack, reference.to(stack.device), config.ssim_data_range)
    out["settings_2d"] = {
        "normalization": "per-image min-max",
        "psnr_data_range": 1.0,
        "ssim_data_range": config.ssim_data_range,
        "ssim_window": SSIM_WINDOW,
    }
    return {"shape": list(stack.shape)} | out


__all__ = ["MAX_ANISOTROPY", "evaluate_stacks", "evaluate_volumes", "match_grids", "resample_to_shape"]
