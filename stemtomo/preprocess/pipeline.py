"""Preparation of a raw tilt series on read, shared by every command that reads one (issue #9).

:func:`prepare_tilt_series` applies, in this order and only when asked:

1. hot/dead pixel replacement (:func:`~stemtomo.preprocess.defects.remove_defects`; detector pixels, so
   before anything resamples the images);
2. per-tilt intensity normalization (:func:`~stemtomo.preprocess.intensity.normalize_tilt_intensities`:
   bright-field ``I0`` from the vacuum level or the slab fit, dark-field projected-mass consistency);
3. an IMOD ``.xf`` alignment (:func:`~stemtomo.align.xf.apply_xf`, as IMOD ``newstack -xform``): the
   output is in the aligned frame, so its tilt-axis angle is 0.

It returns the stack and the records for the output sidecar. The bright-field correction divides every
tilt by its own ``I0`` (vacuum ≈ 1), so its normalization record says ``calibrated: true``:
:func:`~stemtomo.core.imaging.normalized_intensities` then clips to [0, 1] and never re-stretches. The
dark-field scaling keeps the raw units (only the ratios between tilts change); its record has no
``method`` key, so downstream commands still apply one global (tilt-independent) min–max stretch.

:func:`estimate_slab` reconstructs line integrals once at full depth (WBP, no slab mask) and runs
:func:`~stemtomo.preprocess.thickness.estimate_thickness` on the result; ``stemtomo wbp`` and
``stemtomo align`` use it for ``--estimate-thickness``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stemtomo.core.geometry import binning_factor
from stemtomo.errors import InputError, ParameterError
from stemtomo.preprocess.defects import DefectConfig, remove_defects
from stemtomo.preprocess.fill import alignment_coverage_record
from stemtomo.preprocess.intensity import IntensityConfig, normalize_bf, normalize_tilt_intensities
from stemtomo.preprocess.thickness import ThicknessConfig, ThicknessEstimate, estimate_thickness

if TYPE_CHECKING:
    import torch

    from stemtomo.io import Image

log = logging.getLogger(__name__)

NORMALIZE_CHOICES = ("none", "bf-vacuum", "bf-slab", "df-cos", "df-total")
"""Values of ``PrepareOptions.normalize_tilts`` (the ``--normalize-tilts`` option)."""


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """What :func:`prepare_tilt_series` does to a raw tilt series (all off by default)."""

    remove_defects: bool = False
    """Replace hot/dead pixels and dead lines by the local median (IMOD ccderaser-like)."""
    defect_threshold: float = DefectConfig().threshold
    """Robust z-score above which a pixel is a hot (below minus it: dead) candidate."""
    normalize_tilts: str = "none"
    """Per-tilt intensity normalization: ``none``, ``bf-vacuum`` (divide by each image's vacuum level),
    ``bf-slab`` (extended slab without vacuum), ``df-cos`` (HAADF, Σ I·cosθ constant: extended slab) or
    ``df-total`` (HAADF, Σ I constant: object in view)."""
    xf: Path | None = None
    """IMOD ``.xf`` file (one line per image) to apply after the intensity steps; None: none."""

    def validate(self) -> None:
        """Raise :class:`ParameterError` for out-of-range settings (named after the CLI options)."""
        if self.normalize_tilts not in NORMALIZE_CHOICES:
            raise ParameterError(f"--normalize-tilts {self.normalize_tilts!r}: use one of {', '.join(NORMALIZE_CHOICES)}")
        if not (math.isfinite(self.defect_threshold) and self.defect_threshold > 0):
            raise ParameterError(f"--defect-threshold {self.defect_threshold:g}: must be > 0 (e.g. 7)")

    @property
    def active(self) -> bool:
        """True if any step is on."""
        return self.remove_defects or self.normalize_tilts != "none" or self.xf is not None

    def intensity_config(self) -> tuple[str, IntensityConfig]:
        """``(contrast, IntensityConfig)`` for ``normalize_tilts`` (not ``none``)."""
        contrast, model = self.normalize_tilts.split("-", 1)
        if contrast == "bf":
            return contrast, IntensityConfig(bf_model=model)
        return contrast, IntensityConfig(df_mode=model)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (for the sidecar record of an ``.xf``)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prepare_tilt_series(
    image: Image, options: PrepareOptions, *, contrast: str | None = None, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply the requested preparation steps to a tilt series read by :func:`stemtomo.io.read_stack`.

    Parameters
    ----------
    image : the tilt series; ``image.data`` ``(n_tilts, ny, nx)`` raw intensities, ``image.meta`` its
        metadata (tilt angles are needed by ``bf-slab``, ``df-cos`` and ``df-total``).
    options : :class:`PrepareOptions`.
    contrast : the series' contrast (``bf``/``df``: option, else sidecar); a ``--normalize-tilts`` of the
        other contrast is refused. None: not checked.
    device : where the ``.xf`` resampling runs.

    Returns
    -------
    ``(stack float32 (n_tilts, ny, nx), records)``. ``records`` (plain Python, YAML-safe) holds
    ``normalization`` (the record for the output sidecar's ``normalization`` field: the input's record,
    or a per-tilt one), ``tilt_axis_angle_deg`` (0.0 after an ``.xf``, else the input's) and ``extra``
    (``defects``: the per-image counts of :class:`~stemtomo.preprocess.defects.DefectReport`;
    ``intensity_normalization``: method, per-tilt factors and levels; ``alignment``: ``.xf`` file,
    SHA-256 and :func:`~stemtomo.preprocess.fill.alignment_coverage_record`), to merge into the sidecar's ``extra``. Without any step the stack is returned unchanged
    (as float32).

    Raises
    ------
    ParameterError
        Bad options, ``--normalize-tilts`` for the other contrast, or what the steps raise (NaN pixels, a
        background ≤ 0, ...).
    InputError
        ``.xf`` missing, malformed, non-invertible or with a view count ≠ the number of images; tilt
        angles needed but unknown.
    """
    options.validate()
    stack = np.asarray(image.data)
    meta = image.meta
    normalization: dict[str, Any] | None = dict(meta.normalization) if meta.normalization else None
    extra: dict[str, Any] = {}
    axis = float(meta.tilt_axis_angle_deg or 0.0)
    if options.remove_defects:
        stack, report = remove_defects(stack, DefectConfig(threshold=options.defect_threshold))
        extra["defects"] = {"threshold": options.defect_threshold, **report.as_dict()}
    if options.normalize_tilts != "none":
        stack, normalization, extra["intensity_normalization"] = _normalize(image, stack, options, contrast,
                                                                             normalization)
    if options.xf is not None:
        raw_shape = stack.shape[-2:]
        stack, transforms = _apply_xf(stack, options.xf, device)
        _warn_unusable(stack, meta.tilt_angles_deg, options.xf)
        extra["alignment"] = {"xf_file": str(options.xf), "xf_sha256": file_sha256(options.xf), "applied": True,
                              "source_tilt_axis_angle_deg": axis,
                              **alignment_coverage_record(transforms, raw_shape, stack.shape[-2:])}
        axis = 0.0
    return np.asarray(stack, dtype=np.float32), {"normalization": normalization, "tilt_axis_angle_deg": axis,
                                                 "extra": extra}


PER_TILT_FIELDS = {"defects": ("replaced", "hot", "dead", "line", "kept_clusters", "noise_sigma"),
                   "intensity_normalization": ("factors", "levels")}
"""The per-image lists in the ``extra`` records of :func:`prepare_tilt_series`, by record."""


def kept_tilt_records(extra: dict[str, Any], kept: Sequence[int] | np.ndarray, n_input: int) -> dict[str, Any]:
    """Copy of ``extra`` (records of :func:`prepare_tilt_series` for a stack of ``n_input`` images) whose
    per-image lists (:data:`PER_TILT_FIELDS`) describe only the images at the indices ``kept``, for the sidecar
    of a stack that lacks the others (``align`` leaving unusable tilts out). ``defects.replaced_total`` is
    recounted over them."""
    index = [int(i) for i in kept]
    out = dict(extra)
    for name, fields in PER_TILT_FIELDS.items():
        if not isinstance(extra.get(name), dict):
            continue
        record = dict(extra[name])
        for field in fields:
            if field in record and len(record[field]) == n_input:
                record[field] = [record[field][i] for i in index]
        if name == "defects" and "replaced" in record:
            record["replaced_total"] = int(sum(record["replaced"]))
        out[name] = record
    return out


def _normalize(
    image: Image, stack: np.ndarray, options: PrepareOptions, contrast: str | None,
    previous: dict[str, Any] | None,
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    kind, config = options.intensity_config()
    if contrast is not None and contrast != kind:
        raise ParameterError(
            f"--normalize-tilts {options.normalize_tilts}: the series is {contrast} contrast; "
            f"use {'bf-vacuum or bf-slab' if contrast == 'bf' else 'df-cos or df-total'} (or --contrast {kind})"
        )
    angles = image.meta.tilt_angles_deg
    if angles is None and options.normalize_tilts != "bf-vacuum":
        raise InputError(f"{image.path}: --normalize-tilts {options.normalize_tilts} needs the tilt angles; give --angles")
    if angles is None:  # bf-vacuum needs no angles
        out, corr = normalize_bf(stack, None, config)
    else:
        out, corr = normalize_tilt_intensities(stack, angles, kind, config)
    record: dict[str, Any] = {"per_tilt": corr.method}
    if kind == "bf":
        # vacuum (I0) = 1 at every tilt: the intensities are calibrated, clip to [0, 1] and never re-stretch
        record.update(method=f"per_tilt_{corr.method}", calibrated=True)
    if previous:
        record["input"] = previous
    log.info("per-tilt %s normalization: factors %.3g … %.3g", corr.method, float(corr.factors.min()),
             float(corr.factors.max()))
    return out, record, corr.as_dict()


def _warn_unusable(stack: np.ndarray, angles: Sequence[float] | None, xf: Path) -> None:
    """One warning per tilt without usable signal in a stack aligned elsewhere (``align`` leaves such tilts out
    of its own alignments; here they stay in, as the ``.xf`` has them)."""
    import torch

    from stemtomo.align.quality import unusable_tilts_in

    if angles is None or len(angles) < 3:
        return
    for i, why in unusable_tilts_in(torch.from_numpy(np.asarray(stack, dtype=np.float32)), np.asarray(angles)).items():
        log.warning("tilt %d (%.2f°) carries no usable signal (%s) but is used as %s aligns it; leave it out "
                    "of the stack (IMOD excludelist), or align here with stemtomo align", i, angles[i], why, xf.name)


def _apply_xf(stack: np.ndarray, xf: Path, device: torch.device | str) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from stemtomo.align.xf import apply_xf, read_xf

    transforms = read_xf(xf, stack.shape[0])
    t = torch.as_tensor(np.asarray(stack, dtype=np.float32), device=device)
    return apply_xf(t, transforms).cpu().numpy(), transforms


ESTIMATE_MAX_PX = 256
"""The full-depth WBP of a slab estimate is ``n_u³``: images are binned to at most this many pixels for it."""


def estimate_binning(shape: Sequence[int]) -> int:
    """Binning factor that brings images of ``shape`` (``(..., ny, nx)``) to ≤ :data:`ESTIMATE_MAX_PX` for
    :func:`estimate_slab`."""
    return binning_factor(shape, ESTIMATE_MAX_PX)


def estimate_slab(
    line_integrals: torch.Tensor,
    tilt_angles_deg: Sequence[float] | np.ndarray,
    *,
    filter: str = "ramp",
    config: ThicknessConfig = ThicknessConfig(),
    measured: torch.Tensor | None = None,
    seen_by_all: bool = True,
) -> ThicknessEstimate:
    """Specimen slab from a full-depth WBP of aligned line integrals.

    With ``seen_by_all`` only the voxels that every tilt sees inside its measured pixels are scored: inside
    the image and outside the fill of an alignment (``measured``, from
    :func:`~stemtomo.preprocess.fill.aligned_support`). Elsewhere a back-projection holds structure the
    specimen does not have: the edges of mean-filled regions (an aligned stack's shifted and rotated
    borders) back-project into sheets far from the slab. ``benchmarks/bench_thickness.py``: within 10 % of
    the slab in 51 of 52 series aligned with their true transforms this way, 24 of 52 scoring every voxel
    (slabs of a fifth to half the thickness, up to 47 px off centre).

    Parameters
    ----------
    line_integrals : ``(n_tilts, ny, n_u)`` aligned line integrals in voxel units (tilt axis = y), e.g.
        from :func:`stemtomo.recon.wbp.line_integrals_from_stack`; bin them first for speed.
    tilt_angles_deg : ``(n_tilts,)`` degrees.
    filter : WBP ramp apodization.
    config : :class:`~stemtomo.preprocess.thickness.ThicknessConfig`.
    measured : boolean ``(n_tilts, ny, n_u)``, the measured pixels of ``line_integrals`` (None: all).
    seen_by_all : score only voxels every tilt sees measured (False: every voxel, as before 2026-12-02).

    Returns
    -------
    :class:`~stemtomo.preprocess.thickness.ThicknessEstimate` in voxels of the given images (multiply by
    their binning factor for raw pixels). The volume is ``nz = n_u`` deep (no slab mask), so that
    background planes exist on both sides of any specimen thinner than the image is wide.

    Raises
    ------
    ParameterError
        Fewer than 2 tilts, a flat z-profile (nothing to find), bad angles.
    """
    from stemtomo.recon.wbp import back_project_slices, wbp

    if line_integrals.shape[0] < 2:
        raise ParameterError("--estimate-thickness: needs a tilt series of ≥ 2 images")
    nz = int(line_integrals.shape[-1])
    vol = wbp(line_integrals, tilt_angles_deg, nz, filter=filter)
    support = None
    if seen_by_all:
        data = line_integrals.new_ones(line_integrals.shape) if measured is None else measured.to(vol.dtype)
        support = back_project_slices(data, tilt_angles_deg, nz) >= line_integrals.shape[0] - 0.01
    est = estimate_thickness(vol, config, support=support)
    if est.touches_edge:
        log.warning("thickness estimate %.1f voxels reaches the edge of the %d-plane volume: it may be an "
                    "underestimate (a specimen as thick as the image is wide?)", est.thickness_px, vol.shape[0])
    return est


def enclosing_thickness(est: ThicknessEstimate) -> float:
    """Thickness of the slab centred at ``z = 0`` that contains the estimated (possibly off-centre) slab:
    ``thickness + 2·|z_offset|`` (reconstruction and rendering clip to a centred slab)."""
    return float(est.thickness_px + 2.0 * abs(est.z_offset_px))


def thickness_record(est: ThicknessEstimate, scale: float) -> dict[str, Any]:
    """Sidecar record of an estimate, lengths × ``scale`` (the binning factor → raw pixels)."""
    return {
        "thickness_px": float(est.thickness_px * scale),
        "z_offset_px": float(est.z_offset_px * scale),
        "enclosing_thickness_px": float(enclosing_thickness(est) * scale),
        "touches_edge": bool(est.touches_edge),
        "units": "input pixels",
        "method": "WBP z-profile (stemtomo.preprocess.thickness)",
    }


__all__ = [
    "ESTIMATE_MAX_PX",
    "NORMALIZE_CHOICES",
    "PrepareOptions",
    "enclosing_thickness",
    "estimate_binning",
    "estimate_slab",
    "PER_TILT_FIELDS",
    "file_sha256",
    "kept_tilt_records",
    "prepare_tilt_series",
    "thickness_record",
]
