"""Shared CLI options for preparing a raw tilt series on read (hot pixels, per-tilt intensities, ``.xf``).

Usage in a command module (see ``cmd_wbp.py``)::

    from stemtomo.cli._prepare import (DefectThresholdOpt, NormalizeTilts, NormalizeTiltsOpt, RemoveDefectsOpt,
                                       XfOpt, apply_records, prepare_options)
    from stemtomo.preprocess.pipeline import prepare_tilt_series

    def cmd(..., remove_defects: RemoveDefectsOpt = False, defect_threshold: DefectThresholdOpt = None,
            normalize_tilts: NormalizeTiltsOpt = NormalizeTilts.none, xf: XfOpt = None, ...):
        prep = prepare_options(remove_defects, defect_threshold, normalize_tilts, xf)   # validated
        ...
        stack, records = prepare_tilt_series(image, prep, contrast=contrast, device=dev)
        meta = apply_records(image.meta, records)

Defaults come from :class:`stemtomo.preprocess.pipeline.PrepareOptions`; this module imports nothing heavy.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from stemtomo.io import Metadata
    from stemtomo.preprocess.pipeline import PrepareOptions


class NormalizeTilts(str, Enum):
    """Choices of ``--normalize-tilts`` (= ``stemtomo.preprocess.pipeline.NORMALIZE_CHOICES``)."""

    none = "none"
    bf_vacuum = "bf-vacuum"
    bf_slab = "bf-slab"
    df_cos = "df-cos"
    df_total = "df-total"


RemoveDefectsOpt = Annotated[bool, typer.Option(
    "--remove-defects/--no-remove-defects",
    help="Replace hot/dead pixels and dead lines by the local median before anything else (IMOD ccderaser-like).",
)]
DefectThresholdOpt = Annotated[float | None, typer.Option(
    "--defect-threshold",
    help="Variance-stabilized robust z-score above which a pixel counts as hot (below minus it: dead), with "
    "--remove-defects [default: 7].",
)]
NormalizeTiltsOpt = Annotated[NormalizeTilts, typer.Option(
    "--normalize-tilts",
    help="Per-tilt intensity normalization: bf-vacuum (divide each image by its vacuum level I0), bf-slab "
         "(extended slab, no vacuum), df-cos (HAADF, Σ I·cosθ constant: extended slab), df-total (HAADF, Σ I "
         "constant: object in view) or none.",
)]
XfOpt = Annotated[Path | None, typer.Option(
    "--xf",
    help="IMOD .xf transforms (one line per image) applied after the intensity steps, as IMOD newstack does; "
         "the images then have their tilt axis along y (the tilt-axis angle becomes 0).",
)]


def prepare_options(
    remove_defects: bool, defect_threshold: float | None, normalize_tilts: NormalizeTilts | str,
    xf: Path | None = None,
) -> PrepareOptions:
    """Validated :class:`~stemtomo.preprocess.pipeline.PrepareOptions` from the CLI values.

    Raises
    ------
    ParameterError
        ``--defect-threshold`` without ``--remove-defects``, or out of range; an unknown normalization.
    """
    from stemtomo.errors import ParameterError
    from stemtomo.preprocess.pipeline import PrepareOptions

    if defect_threshold is not None and not remove_defects:
        raise ParameterError(f"--defect-threshold {defect_threshold:g} has no effect without --remove-defects; add it")
    d = PrepareOptions()
    opts = PrepareOptions(
        remove_defects=remove_defects,
        defect_threshold=d.defect_threshold if defect_threshold is None else defect_threshold,
        normalize_tilts=normalize_tilts.value if isinstance(normalize_tilts, NormalizeTilts) else str(normalize_tilts),
        xf=xf,
    )
    opts.validate()
    return opts


def prepare_option_values(opts: PrepareOptions) -> dict[str, Any]:
    """The options as plain values for ``options_dict(...)`` / provenance."""
    return {"remove_defects": opts.remove_defects,
            "defect_threshold": opts.defect_threshold if opts.remove_defects else None,
            "normalize_tilts": opts.normalize_tilts, "xf": None if opts.xf is None else str(opts.xf)}


def apply_records(meta: Metadata, records: dict[str, Any]) -> Metadata:
    """Copy of ``meta`` with the records of :func:`~stemtomo.preprocess.pipeline.prepare_tilt_series`:
    its normalization record, tilt-axis angle and ``extra`` entries (merged over the input's)."""
    out = meta.copy(normalization=records["normalization"], tilt_axis_angle_deg=records["tilt_axis_angle_deg"])
    out.extra = {**meta.extra, **records["extra"]}
    return out


def prepare_with_contrast(image: Any, prep: PrepareOptions, option: str | None,
                          device: Any) -> tuple[Any, dict[str, Any], str]:
    """:func:`~stemtomo.preprocess.pipeline.prepare_tilt_series` with the contrast it is checked against,
    ``(stack, records, contrast)``: ``--contrast``, sidecar, ``--normalize-tilts`` or a guess, and a guess read
    again on the images an ``.xf`` aligned (:func:`~stemtomo.preprocess.contrast.recheck_on_aligned`; not
    without tilt angles, e.g. ``align --apply`` of a bare stack)."""
    from stemtomo.preprocess.contrast import choose_contrast, recheck_on_aligned
    from stemtomo.preprocess.pipeline import prepare_tilt_series

    recheck = prep.xf is not None and image.meta.tilt_angles_deg is not None
    choice = choose_contrast(option, image, prep.normalize_tilts, recheck=recheck)
    stack, records = prepare_tilt_series(image, prep, contrast=choice.contrast, device=device)
    if recheck:  # the guess read the raw images, whose centres a drift moves over the specimen
        source = str(image.path) if image.path is not None else "the tilt series"
        choice = recheck_on_aligned(choice, stack, image.tilt_angles_deg, source)
    return stack, records, choice.contrast


__all__ = [
    "DefectThresholdOpt",
    "NormalizeTilts",
    "NormalizeTiltsOpt",
    "RemoveDefectsOpt",
    "XfOpt",
    "apply_records",
    "prepare_option_values",
    "prepare_options",
    "prepare_with_contrast",
]

