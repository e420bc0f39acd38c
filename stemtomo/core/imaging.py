"""STEM image formation and intensity normalization (DESIGN.md "Conventions").

Bright field (the paper's model): ``I = exp(-κ·P)``; dark field / HAADF: ``I = 1 - exp(-κ·P)``, where
``P = ∫ρ ds`` is the line integral of the density ρ ∈ [0, 1] in normalized length units
(:func:`stemtomo.core.geometry.length_unit_px`) and κ = 7 by default.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

import numpy as np
import torch

from stemtomo.errors import ParameterError

DEFAULT_KAPPA = 7.0


class Contrast(str, Enum):
    """Detector contrast: bright field (transmitted) or dark field (scattered, HAADF)."""

    bf = "bf"
    df = "df"


def _contrast(contrast: str | Contrast) -> Contrast:
    try:
        return Contrast(contrast)
    except ValueError:
        raise ParameterError(f"--contrast {contrast!r}: use bf (bright field) or df (dark field)") from None


def intensity(line_integral: torch.Tensor, contrast: str | Contrast = "bf", kappa: float = DEFAULT_KAPPA) -> torch.Tensor:
    """Detector intensity from the line integral ``P`` (normalized units): BF ``exp(-κP)``, DF ``1-exp(-κP)``."""
    att = torch.exp(-kappa * line_integral)
    return att if _contrast(contrast) is Contrast.bf else 1.0 - att


def linearize(
    intensity_: torch.Tensor, contrast: str | Contrast = "bf", kappa: float = DEFAULT_KAPPA, eps: float = 1e-3
) -> torch.Tensor:
    """Invert :func:`intensity`: the line integral ``P`` (normalized units) from normalized intensities.

    BF: ``-log(clip(I, eps, 1)) / κ``; DF: ``-log(clip(1 - I, eps, 1)) / κ``. The clip keeps dark (or
    saturated) pixels finite.
    """
    x = intensity_ if _contrast(contrast) is Contrast.bf else 1.0 - intensity_
    return -torch.log(x.clamp(min=eps, max=1.0)) / kappa


def robust_normalize(
    stack: np.ndarray, lo_percentile: float = 0.1, hi_percentile: float = 99.9
) -> tuple[np.ndarray, dict[str, Any]]:
    """Global robust min–max over the whole stack into [0, 1] (clipped), and the record for the sidecar.

    One pair of percentiles for all images keeps the relative intensities between tilts (Beer–Lambert
    consistency), unlike per-image stretching.

    Raises
    ------
    ParameterError
        If the stack is constant (nothing to normalize).
    """
    lo = float(np.percentile(stack, lo_percentile))
    hi = float(np.percentile(stack, hi_percentile))
    if not hi > lo:
        lo, hi = float(stack.min()), float(stack.max())
    if not hi > lo:
        raise ParameterError("the stack is constant: it holds no image information to normalize")
    out = _by_images(lambda part: np.clip((part - lo) / (hi - lo), 0.0, 1.0), stack)
    record = {
        "method": "robust_minmax",
        "lo": lo,
        "hi": hi,
        "lo_percentile": lo_percentile,
        "hi_percentile": hi_percentile,
    }
    return out, record


def is_normalized(meta_normalization: dict[str, Any] | None) -> bool:
    """True if a sidecar's ``normalization`` record says the intensities are already in [0, 1]."""
    if not meta_normalization:
        return False
    return bool(meta_normalization.get("range01", False) or meta_normalization.get("method"))


def normalized_intensities(stack: np.ndarray, meta_normalization: dict[str, Any] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Intensities in [0, 1] ready for the forward model.

    - ``calibrated: true`` in the record (e.g. a per-tilt I0 correction, where vacuum = 1 and noise may
      exceed 1): clipped to [0, 1], never re-stretched — a stretch would undo the calibration;
    - already normalized (``stemtomo simulate`` output, a record with a method) and inside [0, 1]: as is;
    - otherwise :func:`robust_normalize`.
    """
    record = dict(meta_normalization or {})
    if record.get("calibrated") or (is_normalized(record) and float(stack.min()) >= -1e-6 and float(stack.max()) <= 1 + 1e-6):
        return _by_images(lambda part: np.clip(part, 0.0, 1.0), stack), record
    return robust_normalize(stack)


def _by_images(fn: Callable[[np.ndarray], np.ndarray], stack: np.ndarray, chunk: int = 8) -> np.ndarray:
    """``fn(stack).astype(float32)`` computed ``chunk`` images (first-axis entries) at a time, so a large stack
    costs one float32 copy instead of one per intermediate; elementwise ``fn`` gives identical values."""
    out = np.empty(np.shape(stack), dtype=np.float32)
    for i in range(0, len(out), chunk):
        out[i : i + chunk] = fn(stack[i : i + chunk])
    return out


__all__ = [
    "DEFAULT_KAPPA",
    "Contrast",
    "intensity",
    "is_normalized",
    "linearize",
    "normalized_intensities",
    "robust_normalize",
]
