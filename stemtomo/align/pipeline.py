"""Tilt series in, aligned tilt series out: what ``stemtomo align`` runs on arrays."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from stemtomo.align.coarse import AlignConfig, Alignment, coarse_align
from stemtomo.align.refine import holdout_reprojection_error
from stemtomo.align.xf import apply_xf, xf_from_alignment
from stemtomo.core.geometry import aligned_shape, binning_factor, raw_to_aligned
from stemtomo.core.imaging import DEFAULT_KAPPA, linearize, normalized_intensities
from stemtomo.recon.wbp import bin_images


@dataclasses.dataclass
class AlignResult:
    """Aligned stack, the alignment, its ``.xf`` transforms (one per input image) and the held-out scores
    before/after; ``kept``: the input images in ``aligned`` (all but the tilts the alignment left out)."""

    aligned: np.ndarray
    alignment: Alignment
    xf: np.ndarray
    score_before: float
    score_after: float
    kept: np.ndarray


def line_integral_stack(
    stack: np.ndarray, contrast: str, kappa: float, normalization: dict[str, Any] | None
) -> np.ndarray:
    """Normalized intensities → line integrals (BF −log I/κ, DF −log(1−I)/κ), float32; computed in place,
    a few images at a time (a large stack costs one float32 copy)."""
    lines, _ = normalized_intensities(stack, normalization)
    for i in range(0, lines.shape[0], 8):
        lines[i : i + 8] = linearize(torch.from_numpy(lines[i : i + 8]), contrast, kappa).numpy()
    return lines


def holdout_score(lines: torch.Tensor, angles: np.ndarray, max_px: int = 256, *,
                  transform: Callable[[torch.Tensor, np.ndarray], torch.Tensor] | None = None, chunk: int = 8,
                  indices: np.ndarray | None = None) -> float:
    """Held-out reprojection error of aligned line integrals, binned to at most ``max_px`` pixels for speed.

    ``transform(images, idx)`` (e.g. the alignment's resampling of the images ``idx``, an index array) is
    applied first, to ``chunk`` images at a time that are binned at once, so a large stack is never resampled
    whole. ``indices``: score only those images (e.g. without the tilts the alignment left out)."""
    idx = np.arange(lines.shape[0]) if indices is None else np.asarray(indices, dtype=np.int64)
    angles = np.asarray(angles)[idx]
    if transform is None:
        factor = binning_factor(lines.shape, max_px)
        return holdout_reprojection_error(bin_images(lines if indices is None else lines[idx], factor), angles)
    binned = []
    for i in range(0, idx.size, chunk):
        part = transform(lines[idx[i : i + chunk]], idx[i : i + chunk])
        binned.append(bin_images(part, binning_factor(part.shape, max_px)))
    return holdout_reprojection_error(torch.cat(binned), angles)


def align_tilt_series(
    stack: np.ndarray,
    tilt_angles_deg: np.ndarray,
    config: AlignConfig,
    *,
    contrast: str = "bf",
    kappa: float = DEFAULT_KAPPA,
    normalization: dict[str, Any] | None = None,
    prior_axis_deg: float = 0.0,
    device: torch.device | str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> AlignResult:
    """Align a raw tilt series ``(n, ny, nx)``: estimate the tilt axis (unless given) and shifts, resample.

    Alignment runs on line integrals (linear in the density). The output keeps the input's intensities,
    resampled like IMOD ``newstack -xform`` into the aligned frame (tilt axis along +y). ``score_before`` is
    the held-out reprojection error of the input taken as aligned with ``prior_axis_deg`` and no shifts,
    ``score_after`` that of the result (:func:`~stemtomo.align.refine.holdout_reprojection_error`), both over
    the tilts the alignment used. Tilts it left out (``config.drop_unusable``) are not in ``aligned``.
    """
    lines = torch.as_tensor(line_integral_stack(stack, contrast, kappa, normalization), device=device)
    result = coarse_align(lines, tilt_angles_deg, config, device=device, progress=progress)
    xf = xf_from_alignment(result.tilt_axis_angle_deg, result.shifts_xy)
    out_shape = aligned_shape(stack.shape, result.tilt_axis_angle_deg)
    kept = np.setdiff1d(np.arange(stack.shape[0]), list(result.excluded))
    if progress:
        progress("scores")
    before = holdout_score(lines, tilt_angles_deg, transform=lambda x, _: raw_to_aligned(x, prior_axis_deg),
                           indices=kept)
    after = holdout_score(lines, tilt_angles_deg, transform=lambda x, idx: apply_xf(x, xf[idx], out_shape),
                          indices=kept)
    del lines  # peak memory: the input, its line integrals or the output at full size, not all three
    if progress:
        progress("resample")
    raw = torch.as_tensor(np.asarray(stack[kept] if len(kept) < stack.shape[0] else stack, dtype=np.float32),
                          device=device)
    aligned = apply_xf(raw, xf[kept], out_shape)
    return AlignResult(aligned.cpu().numpy(), result, xf, before, after, kept)


__all__ = ["AlignResult", "align_tilt_series", "holdout_score", "line_integral_stack"]
