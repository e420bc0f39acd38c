"""Bias correction of the displacement-direction axis estimate by a "twin" series (automatic for thick slabs).

The flow estimate of :mod:`stemtomo.align.flow` errs by an amount set by the specimen's overlaps (features at
different depths sliding past each other), not by the alignment around it. A twin series with the same
overlaps but, by construction, no axis error is the reprojection of a WBP of the aligned data at the current
α: its axis is exactly the aligned frame's v axis, so the flow estimate on the twin measures the bias alone,
and :func:`corrected_flow_axis` subtracts it from the data's. The twin is not a perfect copy (WBP of a
limited tilt range, noise, the data's own axis error), so the correction adds an error of its own; it pays
where the bias is large, i.e. on thick slabs: on ``stemtomo simulate``'s default series (slab half the width)
the combined axis error fell from 1.67° to 0.74° on average, on slabs a third of the width it rose from
0.56° to 0.71° (``benchmarks/bench_align_axis.py --twin``). So by default it is applied only where
:func:`estimated_slab_px` finds a slab at least :data:`~stemtomo.align.coarse.TWIN_MIN_FRACTION` of the width
thick (:attr:`~stemtomo.align.coarse.AlignConfig.twin_correction`).
On perfect data (96², slab 32, seeds 3/5/7/11/13) the flow estimate's error fell from 0.80° to 0.33°.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from stemtomo.align.flow import refine_axis_by_flow, remove_shifts
from stemtomo.core.geometry import raw_to_aligned
from stemtomo.core.projector import forward_project
from stemtomo.errors import ParameterError
from stemtomo.recon.wbp import wbp

log = logging.getLogger(__name__)

ESTIMATE_MAX_PX = 128
"""Images are binned to at most this width for the slab estimate that decides on the correction."""


def corrected_flow_axis(
    imgs: torch.Tensor, valid: torch.Tensor, angles_deg: np.ndarray, alpha_deg: float, shifts_xy: np.ndarray,
    nz: int,
) -> float | None:
    """α of the data's flow criterion minus the same criterion's reading on the twin series, both near
    ``alpha_deg``; None when either gives no estimate.

    ``imgs`` ``(n, ny, nx)`` are raw line integrals with fill neutralized and ``valid`` their data mask;
    ``shifts_xy`` the raw-frame specimen shifts at ``alpha_deg`` (as :class:`~stemtomo.align.coarse.Alignment`);
    ``nz`` the depth of the WBP slab (pixels).
    """
    shifted, mask = remove_shifts(imgs, valid, shifts_xy)
    aligned = raw_to_aligned(shifted, alpha_deg)
    inside = (raw_to_aligned(mask, alpha_deg) > 0.99).to(aligned.dtype)
    if float(inside.sum()) == 0:
        return None
    filled = torch.where(inside > 0, aligned, (aligned * inside).sum() / inside.sum())
    data = refine_axis_by_flow(aligned, inside, angles_deg, 0.0)
    twin = forward_project(wbp(filled, angles_deg, nz), angles_deg, image_width=aligned.shape[-1]).to(aligned.dtype)
    bias = refine_axis_by_flow(twin, inside, angles_deg, 0.0)
    log.debug("tilt axis twin: data flow %s, twin bias %s", data, bias)
    if data is None or bias is None:
        return None
    return alpha_deg + data - bias


def estimated_slab_px(
    imgs: torch.Tensor, valid: torch.Tensor, angles_deg: np.ndarray, alpha_deg: float, shifts_xy: np.ndarray,
) -> tuple[float, float] | None:
    """``(thickness, enclosing thickness)`` in pixels of ``imgs`` of the slab of the data aligned at
    ``alpha_deg`` (:func:`~stemtomo.preprocess.pipeline.estimate_slab` on its measured pixels, binned to at
    most :data:`ESTIMATE_MAX_PX` wide; the enclosing thickness also spans the slab's offset from the centre,
    which a depth-centred twin must hold); None when no slab is found. Arguments as :func:`corrected_flow_axis`."""
    from stemtomo.preprocess.pipeline import enclosing_thickness, estimate_slab
    from stemtomo.recon.wbp import bin_images

    shifted, mask = remove_shifts(imgs, valid, shifts_xy)
    aligned = raw_to_aligned(shifted, alpha_deg)
    inside = raw_to_aligned(mask, alpha_deg)
    factor = max(1, math.ceil(max(aligned.shape[-2:]) / ESTIMATE_MAX_PX))
    measured = bin_images(inside, factor) > 0.99
    try:
        est = estimate_slab(bin_images(aligned, factor), angles_deg, measured=measured)
    except ParameterError as err:  # a flat profile: nothing to go by
        log.debug("tilt axis twin: no slab estimate (%s)", err)
        return None
    return est.thickness_px * factor, enclosing_thickness(est) * factor


__all__ = ["corrected_flow_axis", "estimated_slab_px"]
