"""Which pixels of a tilt series are measurements: not the fill of an alignment, not outside a rotation.

IMOD's ``newstack`` and :func:`stemtomo.align.apply_xf` (``stemtomo align``, ``--xf``) fill the positions a
shift or rotation brings in from outside the raw image with the image's mean; a non-quarter-turn
:func:`~stemtomo.core.geometry.raw_to_aligned` pads them with zeros. Those pixels are not data. Trained on,
they pull the implicit volume's borders toward the fill value (on a 64² `simulate` series aligned with its
true transforms, 14 % fill, ``recon --method l2``: 3D PSNR 15.40 → 16.15 dB, 2D 22.3 → 25.8 dB when left
out); back-projected, their edges make sheets far from the slab that threw the slab-thickness estimate 35 px
off (``benchmarks/bench_thickness.py``).

Where the pixels come from:

- a stack aligned by stemtomo records its transforms in the sidecar (``alignment.transforms``,
  ``alignment.raw_shape``): the measured pixels are exactly :func:`~stemtomo.align.xf.xf_coverage`;
- a stack read from a file without a sidecar (e.g. an IMOD ``.ali``) is searched for fill by
  :func:`fill_mask` (``detect``);
- any other stack is taken as measured everywhere.

:func:`aligned_support` then follows the pixels through the binning and tilt-axis rotation that the
commands apply to the images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from stemtomo.errors import ParameterError
from stemtomo.io import Metadata
from stemtomo.io.sidecar import sidecar_path

log = logging.getLogger(__name__)


def alignment_coverage_record(transforms: np.ndarray, raw_shape: Sequence[int],
                              aligned_shape: Sequence[int]) -> dict[str, Any]:
    """Sidecar entries (under ``alignment``) from which :func:`measured_pixels` rebuilds the coverage: the
    transforms of the images in the stack (IMOD order a11 a12 a21 a22 dx dy), the raw and the aligned
    image shapes ``(ny, nx)``."""
    m = np.asarray(transforms, dtype=np.float64).reshape(-1, 2, 3)
    rows = np.concatenate([m[:, :, :2].reshape(-1, 4), m[:, :, 2]], axis=1)
    return {"transforms": np.round(rows, 6).tolist(), "raw_shape": [int(raw_shape[-2]), int(raw_shape[-1])],
            "aligned_shape": [int(aligned_shape[-2]), int(aligned_shape[-1])]}


def _transforms(record: Any) -> tuple[np.ndarray, tuple[int, int], tuple[int, int] | None] | None:
    """``(transforms (n, 2, 3), raw shape, aligned shape or None)`` of an alignment record, or None."""
    if not isinstance(record, dict):
        return None
    try:
        rows = np.asarray(record["transforms"], dtype=np.float64)
        ny, nx = (int(v) for v in record["raw_shape"])
        out = record.get("aligned_shape")
        out_shape = None if out is None else (int(out[0]), int(out[1]))
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if rows.ndim != 2 or rows.shape[1] != 6 or ny < 1 or nx < 1:
        return None
    m = np.zeros((rows.shape[0], 2, 3))
    m[:, :, :2] = rows[:, :4].reshape(-1, 2, 2)
    m[:, :, 2] = rows[:, 4:]
    return m, (ny, nx), out_shape


def fill_mask(images: torch.Tensor, *, dilate_px: int = 2, max_fraction: float = 0.5, rtol: float = 1e-6,
              mean_tolerance: float = 0.5) -> torch.Tensor:
    """Boolean ``(n, ny, nx)``, True at the detected fill of aligned images (no transforms known).

    A fill region is a run of exactly constant pixels (every 3×3 neighbourhood equal to within
    ``rtol · max|image|``) that is connected to the image border and whose value lies within
    ``mean_tolerance`` standard deviations of the image's other pixels (fill is the mean; plateaus of zero
    counts or saturation lie at an extreme). It is widened by ``dilate_px`` (1 gives back its rim, whose
    neighbourhood reaches the seam; 2 also covers the interpolated seam). An image where more than
    ``max_fraction`` would be fill is taken as having none. Meant for measured (noisy) images: noise-free
    simulations can have constant runs near their mean.

    Raises
    ------
    ParameterError
        Not a real ``(n, ny, nx)`` stack, or bad settings.
    """
    if images.ndim != 3 or images.is_complex() or not images.is_floating_point():
        raise ParameterError(f"fill mask: expected real (n, ny, nx) images, got {images.dtype} {tuple(images.shape)}")
    if dilate_px < 0 or not 0.0 < max_fraction <= 1.0 or not rtol >= 0.0 or not mean_tolerance > 0.0:
        raise ParameterError(f"fill mask: dilate_px {dilate_px}, max_fraction {max_fraction:g}, rtol {rtol:g}, "
                             f"mean_tolerance {mean_tolerance:g} out of range")
    x = images[:, None].float()
    spread = F.max_pool2d(x, 3, stride=1, padding=1) + F.max_pool2d(-x, 3, stride=1, padding=1)
    constant = (spread <= rtol * x.abs().amax(dim=(1, 2, 3), keepdim=True))[:, 0].cpu().numpy()
    pixels = images.detach().float().cpu().numpy()
    out = np.zeros(constant.shape, dtype=bool)
    for i, plane in enumerate(constant):
        if not plane.any():
            continue
        labels, _ = ndimage.label(plane, structure=np.ones((3, 3), dtype=bool))
        edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        runs = np.isin(labels, np.unique(edge[edge > 0]))
        rest = pixels[i][~runs]
        if rest.size < 2 or not runs.any():
            continue
        near_mean = np.abs(pixels[i] - rest.mean()) <= mean_tolerance * max(float(rest.std()), 1e-12)
        out[i] = runs & near_mean
    mask = torch.from_numpy(out).to(images.device)
    if dilate_px:
        mask = F.max_pool2d(mask[:, None].float(), 2 * dilate_px + 1, stride=1, padding=dilate_px)[:, 0] > 0
    mask[mask.float().mean(dim=(1, 2)) > max_fraction] = False
    return mask


def has_no_sidecar(path: str | Path | None) -> bool:
    """True for a file read without a sidecar beside it (its fill, if any, must be detected)."""
    return path is not None and not sidecar_path(path).exists()


def measured_pixels(images: np.ndarray | torch.Tensor, meta: Metadata, *, detect: bool = False,
                    device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Boolean ``(n, ny, nx)`` in the stack's own frame, True at measured pixels, or None for all (see the
    module notes for the sources; ``detect``: run :func:`fill_mask` when no alignment is recorded). A
    recorded alignment whose output shape is an integer multiple of the stack's (a binned stack) is binned
    like :func:`~stemtomo.recon.wbp.bin_images` (a block is measured when all its pixels are)."""
    from stemtomo.align.xf import xf_coverage

    shape = tuple(int(v) for v in np.shape(images))
    found = _transforms(meta.extra.get("alignment"))
    if found is not None and found[0].shape[0] == shape[0]:
        xf, raw_shape, recorded = found
        out_shape = recorded if recorded is not None else (shape[1], shape[2])
        factor = int(out_shape[0]) // shape[1] if shape[1] else 0
        if factor < 1 or int(out_shape[0]) // factor != shape[1] or int(out_shape[1]) // factor != shape[2]:
            log.debug("alignment coverage of shape %s does not bin to %s; all pixels used", out_shape, shape)
            return None
        cover = xf_coverage(xf, raw_shape, out_shape, device=device)
        if factor > 1:
            cover = bin_measured(cover, factor)
        return None if bool(cover.all()) else cover
    if not detect:
        return None
    fill = fill_mask(torch.as_tensor(np.asarray(images, dtype=np.float32), device=device))
    return ~fill if bool(fill.any()) else None


def bin_measured(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """A boolean mask binned like :func:`~stemtomo.recon.wbp.bin_images`: a block is True when all its
    pixels are."""
    from stemtomo.recon.wbp import bin_images

    return bin_images(mask.to(torch.float32), factor) >= 1.0 - 1e-6


def aligned_support(measured: torch.Tensor | None, shape: Sequence[int], tilt_axis_angle_deg: float, *,
                    bin_factor: int = 1, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """The measured pixels after the commands' preparation of the images: ``bin_factor`` average binning,
    then :func:`~stemtomo.core.geometry.raw_to_aligned` (zero-padded outside the raw image unless a quarter
    turn). ``measured``: from :func:`measured_pixels` (None: all). Returns None when every pixel is measured."""
    from stemtomo.core.geometry import is_quarter_turn, raw_to_aligned

    if measured is None:
        if is_quarter_turn(tilt_axis_angle_deg):
            return None
        measured = torch.ones(tuple(int(v) for v in shape), dtype=torch.bool, device=device)
    m = measured.to(device)
    if bin_factor > 1:
        m = bin_measured(m, bin_factor)
    out = raw_to_aligned(m.to(torch.float32), tilt_axis_angle_deg) >= 1.0 - 1e-4
    return None if bool(out.all()) else out


def prepared_support(images: np.ndarray | torch.Tensor, meta: Metadata, tilt_axis_angle_deg: float, *,
                     bin_factor: int = 1, detect: bool = False,
                     device: torch.device | str = "cpu") -> torch.Tensor | None:
    """:func:`measured_pixels` of a stack followed through ``bin_factor`` and the rotation to the aligned
    frame (:func:`aligned_support`): the mask of the images the commands compute with, or None for all."""
    measured = measured_pixels(images, meta, detect=detect, device=device)
    return aligned_support(measured, np.shape(images), tilt_axis_angle_deg, bin_factor=bin_factor, device=device)


__all__ = ["aligned_support", "alignment_coverage_record", "bin_measured", "fill_mask", "has_no_sidecar",
           "measured_pixels", "prepared_support"]
