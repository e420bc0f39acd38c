"""Bias correction of the tilt-axis criteria by a "twin" series.

The flow estimate of :mod:`stemtomo.align.flow` and the stretch criterion of :mod:`stemtomo.align.axis` err by
amounts set by the specimen's overlaps (features at different depths sliding past each other), not by the alignment
around them. A twin series with the same overlaps but, by construction, no axis error is the reprojection of a WBP
of the aligned data at the current α (a volume wider than the field: :data:`PAD_FRACTION`): its axis is exactly the
aligned frame's v axis, so a criterion's reading on the twin measures its bias alone, and
:func:`twin_corrected_axes` subtracts it from the data's. The twin is not a perfect copy (WBP of a limited tilt
range, noise, the data's own axis error), so the correction adds an error of its own. On perfect data (96², slab
32; a field-wide twin) the flow estimate's error fell from 0.80° to 0.33° (seeds 3/5/7/11/13), the stretch
criterion's from 1.68°/−0.91°/0.91° to −0.10°/−0.49°/0.10° (seeds 3/5/7). On slabs half the width thick the stretch
reading of the twin does not help below 192 px, so only the flow estimate is corrected there
(:attr:`~stemtomo.align.coarse.AlignConfig.twin_correction`, ``benchmarks/bench_align_axis.py``).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from stemtomo.align._filters import _bandpass, to_canvas
from stemtomo.align.axis import stretch_scores
from stemtomo.align.flow import refine_axis_by_flow, remove_shifts
from stemtomo.core.geometry import binning_factor
from stemtomo.core.projector import forward_project
from stemtomo.errors import ParameterError
from stemtomo.recon.wbp import bin_images, wbp

log = logging.getLogger(__name__)

PAD_FRACTION = 0.5
"""The twin's WBP volume reaches this fraction of the image width beyond the field on each side across the axis.
A real specimen extends beyond the field, and what lies beyond enters it as the tilt grows; a volume as wide as
the field holds none of that (its WBP also piles the truncated views' edges onto its sides), so the twin's
overlaps differed from the data's near the edges. The wider volume reconstructs that material, roughly, from the
tilts that see it. Measured with the slab given (``bench_align_axis.py --cases roi``, the specimen beyond every
edge), |α error| mean / max / count under 0.5°, field-wide → padded: 24 series at 96² 1.22° / 3.13° / 3 → 0.83° /
2.29° / 8; 8 at 192² 1.23° / 4.42° / 4 → 0.53° / 1.02° / 5. A full width (1.0) was no better at 96² (0.91°)."""
TWIN_MAX_PX = 256
"""Images are binned to at most this width for the twin and the four criterion readings (a 512² twin costs
minutes). Measured on 8 HAADF-like series at 512² (``benchmarks/bench_align_axis.py --cases haadf512``),
|α error| mean / max without the twin (the stretch α) → twin at 256²: 0.18° / 0.27° → 0.08° / 0.14°, for
about 20 s more per series (about 90 s) on one thread. On 24 ROI series at 192² a twin binned to 96²
did worse than one at full size (mean 0.60° against 0.48°)."""
ESTIMATE_MAX_PX = 128
"""Images are binned to at most this width for the slab estimate that decides on the correction."""


def twin_corrected_axes(
    imgs: torch.Tensor, valid: torch.Tensor, angles_deg: np.ndarray, alpha_deg: float, shifts_xy: np.ndarray,
    nz: int, *, stretch: bool = True, lowpass_sigma_px: float = 1.0,
) -> tuple[float | None, float | None]:
    """``(flow α, stretch α)``, each criterion's reading on the data aligned at ``alpha_deg`` minus its reading
    on the twin series (None where a criterion gives no estimate; the stretch one only with ``stretch``).
    The stretch reading is the vertex of a parabola through :func:`~stemtomo.align.axis.stretch_scores` at
    ±6° (1° steps) of the finely band-passed images, as :func:`~stemtomo.align.axis.refine_tilt_axis` scores.

    ``imgs`` ``(n, ny, nx)`` are raw line integrals with fill neutralized and ``valid`` their data mask;
    ``shifts_xy`` the raw-frame specimen shifts at ``alpha_deg`` (as :class:`~stemtomo.align.coarse.Alignment`);
    ``nz`` the depth of the WBP slab (pixels). All is binned to at most :data:`TWIN_MAX_PX` wide first.
    """
    factor = binning_factor(imgs.shape, TWIN_MAX_PX)
    if factor > 1:
        imgs, valid = bin_images(imgs, factor), (bin_images(valid.to(imgs.dtype), factor) > 0.99).to(imgs.dtype)
        shifts_xy, nz = np.asarray(shifts_xy) / factor, max(4, round(nz / factor))
    shifted, mask = remove_shifts(imgs, valid, shifts_xy)
    aligned = to_canvas(shifted, alpha_deg)
    inside = (to_canvas(mask, alpha_deg) > 0.99).to(aligned.dtype)
    if float(inside.sum()) == 0:
        return None, None
    filled = _mean_filled(aligned, inside)
    twin = _twin_series(filled, angles_deg, nz)
    data, bias = (refine_axis_by_flow(x, inside, angles_deg, 0.0) for x in (aligned, twin))
    log.debug("tilt axis twin: data flow %s, twin bias %s", data, bias)
    flow = None if data is None or bias is None else alpha_deg + data - bias
    if not stretch:
        return flow, None
    data_s, bias_s = (_stretch_vertex(x, angles_deg, lowpass_sigma_px) for x in (filled, _mean_filled(twin, inside)))
    log.debug("tilt axis twin: data stretch %+.2f°, twin bias %+.2f°", data_s, bias_s)
    return flow, alpha_deg + data_s - bias_s


def _twin_series(filled: torch.Tensor, angles_deg: np.ndarray, nz: int) -> torch.Tensor:
    """Reprojection of a WBP (slab ``nz``) of the aligned, :func:`_mean_filled` images ``filled``, the volume
    :data:`PAD_FRACTION` of the width wider than the field on each side across the axis (the images padded with
    their mean, which is their fill), cropped back."""
    nx = filled.shape[-1]
    pad = round(PAD_FRACTION * nx)
    wide = torch.nn.functional.pad(filled, (pad, pad), value=float(filled.mean()))
    twin = forward_project(wbp(wide, angles_deg, nz), angles_deg, image_width=nx + 2 * pad)
    return twin[..., pad : pad + nx].to(filled.dtype)


def _mean_filled(images: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """``images`` where ``inside`` (> 0), their mean over ``inside`` elsewhere."""
    return torch.where(inside > 0, images, (images * inside).sum() / inside.sum())


def _stretch_vertex(images: torch.Tensor, angles_deg: np.ndarray, lowpass_sigma_px: float) -> float:
    """The offset (°, within ±6°) at which the stretch criterion of aligned images peaks."""
    offsets = np.arange(-6.0, 6.0 + 1e-9, 1.0)
    vals = stretch_scores(_bandpass(images, lowpass_sigma_px, 4 * lowpass_sigma_px), angles_deg, offsets.tolist())
    c2, c1, _ = np.polyfit(offsets, vals, 2)
    return float(np.clip(-c1 / (2 * c2), offsets[0], offsets[-1])) if c2 < 0 else float(offsets[int(np.argmax(vals))])


def estimated_slab_px(
    imgs: torch.Tensor, valid: torch.Tensor, angles_deg: np.ndarray, alpha_deg: float, shifts_xy: np.ndarray,
) -> tuple[float, float] | None:
    """``(thickness, enclosing thickness)`` in pixels of ``imgs`` of the slab of the data aligned at
    ``alpha_deg`` (:func:`~stemtomo.preprocess.pipeline.estimate_slab` on its measured pixels, binned to at
    most :data:`ESTIMATE_MAX_PX` wide; the enclosing thickness also spans the slab's offset from the centre,
    which a depth-centred twin must hold); None when no slab is found. Arguments as :func:`twin_corrected_axes`."""
    from stemtomo.preprocess.pipeline import enclosing_thickness, estimate_slab

    shifted, mask = remove_shifts(imgs, valid, shifts_xy)
    aligned = to_canvas(shifted, alpha_deg)
    inside = to_canvas(mask, alpha_deg)
    factor = binning_factor(aligned.shape, ESTIMATE_MAX_PX)
    measured = bin_images(inside, factor) > 0.99
    try:
        est = estimate_slab(bin_images(aligned, factor), angles_deg, measured=measured)
    except ParameterError as err:  # a flat profile: nothing to go by
        log.debug("tilt axis twin: no slab estimate (%s)", err)
        return None
    return est.thickness_px * factor, enclosing_thickness(est) * factor


__all__ = ["estimated_slab_px", "twin_corrected_axes"]
