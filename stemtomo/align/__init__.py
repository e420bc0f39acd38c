"""Tilt-series alignment: IMOD ``.xf`` import/export and application, coarse marker-free alignment
(tilt-axis search, stretched neighbour cross-correlation), projection-matching refinement, and the held-out
reprojection error used to score an alignment."""

from stemtomo.align.coarse import AlignConfig, Alignment, coarse_align, shift_images
from stemtomo.align.refine import holdout_reprojection_error, refine_projection_matching
from stemtomo.align.xf import apply_xf, format_xf, read_xf, xf_coverage, xf_from_alignment

__all__ = [
    "AlignConfig",
    "Alignment",
    "apply_xf",
    "coarse_align",
    "format_xf",
    "holdout_reprojection_error",
    "read_xf",
    "refine_projection_matching",
    "shift_images",
    "xf_coverage",
    "xf_from_alignment",
]
