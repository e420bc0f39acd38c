"""Pre-processing of real tilt series and reconstructions (issue #9): hot/dead pixel replacement
(:mod:`~stemtomo.preprocess.defects`), per-tilt intensity normalization (:mod:`~stemtomo.preprocess.intensity`)
specimen thickness estimation (:mod:`~stemtomo.preprocess.thickness`) and, for a raw stack without a
sidecar, a guess of its contrast (:mod:`~stemtomo.preprocess.contrast`).

Each function works on arrays and returns its result together with a small record for the output sidecar
(``as_dict()``: plain Python, YAML-safe). Typical order on a raw series: :func:`remove_defects` (detector
pixels, before anything resamples the images) → :func:`normalize_tilt_intensities` → alignment →
WBP → :func:`estimate_thickness` on the WBP. :func:`prepare_tilt_series`
(:mod:`~stemtomo.preprocess.pipeline`) runs the first steps in that order for the commands.
"""

from __future__ import annotations

from stemtomo.preprocess.contrast import ContrastGuess, guess_contrast, resolve_contrast
from stemtomo.preprocess.defects import DefectConfig, DefectReport, local_noise_sigma, remove_defects
from stemtomo.preprocess.intensity import (
    BF_MODELS,
    DF_MODES,
    IntensityConfig,
    IntensityCorrection,
    background_levels,
    mean_log_intensity,
    normalize_bf,
    normalize_df,
    normalize_tilt_intensities,
)
from stemtomo.preprocess.pipeline import (
    NORMALIZE_CHOICES,
    PrepareOptions,
    enclosing_thickness,
    estimate_slab,
    prepare_tilt_series,
    thickness_record,
)
from stemtomo.preprocess.thickness import (
    ThicknessConfig,
    ThicknessEstimate,
    estimate_thickness,
    slab_from_profile,
    z_profile,
)

__all__ = [
    "BF_MODELS",
    "ContrastGuess",
    "guess_contrast",
    "resolve_contrast",
    "NORMALIZE_CHOICES",
    "PrepareOptions",
    "enclosing_thickness",
    "estimate_slab",
    "prepare_tilt_series",
    "thickness_record",
    "DF_MODES",
    "DefectConfig",
    "DefectReport",
    "IntensityConfig",
    "IntensityCorrection",
    "ThicknessConfig",
    "ThicknessEstimate",
    "background_levels",
    "estimate_thickness",
    "local_noise_sigma",
    "mean_log_intensity",
    "normalize_bf",
    "normalize_df",
    "normalize_tilt_intensities",
    "remove_defects",
    "slab_from_profile",
    "z_profile",
]
