"""``stemtomo align``: marker-free coarse alignment of a raw tilt series, or application of an IMOD ``.xf``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from stemtomo.cli._common import (
    ContrastChoice as ContrastOpt,
)
from stemtomo.cli._common import (
    DebugOpt,
    DeviceOpt,
    OverwriteOpt,
    QuietOpt,
    VerboseOpt,
    handle_errors,
    info,
    options_dict,
    resolve_device,
    setup,
)
from stemtomo.cli._prepare import (
    DefectThresholdOpt,
    NormalizeTilts,
    NormalizeTiltsOpt,
    RemoveDefectsOpt,
    apply_records,
    prepare_option_values,
    prepare_options,
    prepare_with_contrast,
)


def output_paths(output: Path) -> tuple[Path, Path]:
    """``ali.mrc`` → ``ali.xf``, ``ali_shifts.png``."""
    return output.with_suffix(".xf"), output.with_name(f"{output.stem}_shifts.png")


def align(
    tilt_series: Annotated[Path, typer.Argument(help="Raw tilt series (MRC/TIFF) with tilt angles (sidecar, .rawtlt/.tlt, .mdoc or header).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Aligned tilt series (.mrc/.ali/.tif); also writes <stem>.xf and <stem>_shifts.png.")],
    angles: Annotated[Path | None, typer.Option("--angles", help="Angle file (.rawtlt/.tlt); overrides every other source.")] = None,
    tilt_axis_angle: Annotated[float | None, typer.Option("--tilt-axis-angle", help="Known tilt-axis angle, degrees CCW from +y (IMOD RotationAngle). Default: searched.")] = None,
    axis_search_range: Annotated[float | None, typer.Option("--axis-search-range", help="Refine the tilt-axis angle within ± this many degrees of --tilt-axis-angle (or of the sidecar's/.mdoc's tilt axis, else 0°) instead of searching all angles or using it as is; an estimate outside the range keeps the given angle (with a warning).", show_default=False)] = None,
    xf: Annotated[Path | None, typer.Option("--xf", help="Apply this IMOD .xf (one line per image) instead of aligning (use with --apply).")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Only apply the transforms given by --xf (IMOD newstack -xform) and write the aligned stack.")] = False,
    refine: Annotated[int, typer.Option("--refine", help="Rounds of leave-one-out projection matching against a WBP after the coarse alignment (0: off; experimental, 1-2 rounds at most).")] = 0,
    neighbours: Annotated[int | None, typer.Option("--neighbours", help="Correlate each tilt with this many neighbours per side and solve all pairs by least squares (1: the cumulative chain). Default: AlignConfig.neighbours (3).")] = None,
    refine_axis: Annotated[bool | None, typer.Option("--refine-axis/--no-refine-axis", help="Refine the searched tilt-axis angle by the stretched-correlation criterion. Default: AlignConfig.refine_axis (on).")] = None,
    flow_axis: Annotated[bool | None, typer.Option("--flow-axis/--no-flow-axis", help="Combine the searched tilt-axis angle with the angle at which local displacements between neighbouring tilts run perpendicular to the axis (within 3°: their mean on images under 192 px, the searched angle from 192 px; else the latter). Default: AlignConfig.flow_axis (on).")] = None,
    twin_correction: Annotated[bool | None, typer.Option("--twin-correction/--no-twin-correction", help="Correct the tilt-axis criteria for the bias of overlapping features, measured on a series reprojected from a WBP of the data as deep as the slab (the sidecar's thickness_px, else estimated). Default: on (the twin binned to at most 256 px). --no-twin-correction: about half the time on small images.")] = None,
    drop_unusable: Annotated[bool, typer.Option("--drop-unusable/--keep-unusable", help="Leave tilts without usable signal (blank or dark, or uncorrelated with their neighbours, like AreTomo's dark-image removal) out of the alignment and of the aligned stack, with a warning each; the .xf keeps a line for every image (interpolated shifts). --keep-unusable aligns and writes every tilt.")] = True,
    contrast: Annotated[ContrastOpt | None, typer.Option("--contrast", help="Image contrast (bf/df). Default: sidecar, else --normalize-tilts's kind, else guessed from the images (BF darkens with tilt, DF brightens; once aligned, or with --xf, from the aligned images), else bf.")] = None,
    remove_defects: RemoveDefectsOpt = False,
    defect_threshold: DefectThresholdOpt = None,
    normalize_tilts: NormalizeTiltsOpt = NormalizeTilts.none,
    estimate_thickness: Annotated[bool, typer.Option("--estimate-thickness", help="Estimate the specimen slab from a full-depth WBP of the aligned stack and write it to the aligned stack's sidecar as thickness_px (input pixels; wbp and recon then clip to it).")] = False,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Align a raw tilt series: tilt-axis search, stretched cross-correlation of neighbouring tilts
    (as IMOD tiltxcorr), projection matching against a WBP; or apply an existing IMOD .xf with --apply.

    The aligned stack has its tilt axis along +y (the frame wbp and recon expect); the .xf maps raw to aligned
    images exactly as IMOD newstack applies it, so IMOD can use it too. The held-out reprojection error
    (odd tilts predicted from a WBP of the even tilts; lower is better) is reported before and after.
    --remove-defects and --normalize-tilts clean the raw images first (in that order); the aligned stack
    keeps the cleaned intensities and their records.
    """
    setup(quiet, verbose, debug)
    from stemtomo.errors import ParameterError

    if apply and xf is None:
        raise ParameterError("--apply needs --xf FILE.xf (the transforms to apply)")
    if xf is not None and not apply:
        raise ParameterError("--xf is applied only with --apply; add --apply (or drop --xf to align)")
    from stemtomo.io.angles import check_axis_search_range, check_tilt_axis_angle

    if tilt_axis_angle is not None:
        check_tilt_axis_angle(tilt_axis_angle)
    if axis_search_range is not None:
        check_axis_search_range(axis_search_range)
    if axis_search_range is not None and apply:
        raise ParameterError("--axis-search-range searches the tilt axis; --apply only applies --xf (drop one)")
    if refine < 0:
        raise ParameterError(f"--refine {refine}: must be ≥ 0")
    if neighbours is not None and neighbours < 1:
        raise ParameterError(f"--neighbours {neighbours}: must be ≥ 1")
    prep = prepare_options(remove_defects, defect_threshold, normalize_tilts, xf if apply else None)
    from stemtomo.io import check_outputs

    xf_path, png_path = output_paths(output)
    check_outputs([output] if apply else [output, xf_path, png_path], overwrite)
    opts = options_dict(angles=angles, tilt_axis_angle=tilt_axis_angle, axis_search_range=axis_search_range,
                        xf=xf, apply=apply, refine=refine,
                        neighbours=neighbours, refine_axis=refine_axis, flow_axis=flow_axis,
                        twin_correction=twin_correction, drop_unusable=drop_unusable,
                        contrast=contrast.value if contrast else None, estimate_thickness=estimate_thickness,
                        **{k: v for k, v in prepare_option_values(prep).items() if k != "xf"}, device=device)
    if apply:
        assert xf is not None
        _apply(tilt_series, output, xf, angles, opts, device, overwrite, prep,
               contrast.value if contrast else None, estimate_thickness)
    else:
        tuning = {k: v for k, v in {"neighbours": neighbours, "refine_axis": refine_axis, "flow_axis": flow_axis,
                                    "twin_correction": twin_correction}.items() if v is not None}
        tuning["drop_unusable"] = drop_unusable
        _align(tilt_series, output, angles, tilt_axis_angle, refine, contrast.value if contrast else None,
               opts, device, overwrite, prep, estimate_thickness, tuning, axis_search_range)


def _apply(tilt_series: Path, output: Path, xf: Path, angles: Path | None, opts: dict, device: str,
           overwrite: bool, prep: Any, contrast: str | None, estimate: bool) -> None:
    from stemtomo.io import make_provenance, read_stack, write_image

    dev = resolve_device(device)
    image = read_stack(tilt_series, angles=angles)
    aligned, records, contrast = prepare_with_contrast(image, prep, contrast, dev)
    meta = apply_records(image.meta, records).copy(contrast=contrast)
    if estimate:
        _thickness(aligned, image.tilt_angles_deg, meta, contrast, dev)
    write_image(output, aligned, meta, overwrite=overwrite,
                provenance=make_provenance("align", opts, [tilt_series, xf]))
    info(f"applied {xf} to {image.data.shape[0]} images → {output}")


def _thickness(aligned: np.ndarray, tilts: np.ndarray, meta: Any, contrast: str, dev: Any) -> None:
    """Estimate the slab from a full-depth WBP of the aligned stack (binned to ≤ 256 px) into ``meta``:
    ``thickness_px`` = the centred slab enclosing the estimate (input pixels), details under ``extra``."""
    from stemtomo.core.imaging import DEFAULT_KAPPA
    from stemtomo.preprocess.fill import prepared_support
    from stemtomo.preprocess.pipeline import estimate_binning, estimate_slab, thickness_record
    from stemtomo.recon.wbp import line_integrals_from_stack

    factor = estimate_binning(aligned.shape)
    measured = prepared_support(aligned, meta, 0.0, bin_factor=factor, device=dev)
    lines, _ = line_integrals_from_stack(
        aligned, contrast=contrast, kappa=meta.kappa if meta.kappa is not None else DEFAULT_KAPPA,
        normalization=meta.normalization, tilt_axis_angle_deg=0.0, bin_factor=factor, device=dev,
    )
    record = thickness_record(estimate_slab(lines, tilts, measured=measured), factor)
    meta.thickness_px = record["enclosing_thickness_px"]
    meta.extra["thickness_estimate"] = record
    logging.getLogger("stemtomo.align").info(
        "estimated slab: %.1f px thick, centre offset %+.1f px; thickness_px %.1f written to the sidecar",
        record["thickness_px"], record["z_offset_px"], meta.thickness_px)


def _align(tilt_series: Path, output: Path, angles: Path | None, tilt_axis_angle: float | None, refine: int,
           contrast: str | None, opts: dict, device: str, overwrite: bool, prep: Any, estimate: bool,
           tuning: dict[str, Any], search_range: float | None = None) -> None:
    from stemtomo.align.coarse import AlignConfig
    from stemtomo.align.pipeline import align_tilt_series
    from stemtomo.align.xf import format_xf
    from stemtomo.core.imaging import DEFAULT_KAPPA
    from stemtomo.errors import InputError
    from stemtomo.io import AtomicOutputs, make_provenance, read_stack, write_image
    from stemtomo.preprocess.contrast import choose_contrast, recheck_on_aligned
    from stemtomo.preprocess.fill import alignment_coverage_record
    from stemtomo.preprocess.pipeline import kept_tilt_records, prepare_tilt_series

    dev = resolve_device(device)
    image = read_stack(tilt_series, angles=angles, require_angles=True)
    if image.data.shape[0] < 2:
        raise InputError(f"{tilt_series}: a single image cannot be aligned; a tilt series needs ≥ 2 images")
    choice = choose_contrast(contrast, image, prep.normalize_tilts, recheck=True)
    stack, records = prepare_tilt_series(image, prep, contrast=choice.contrast, device=dev)
    meta = apply_records(image.meta, records)
    if search_range is not None and tilt_axis_angle is None:
        tilt_axis_angle = meta.tilt_axis_angle_deg or 0.0  # the sidecar's/.mdoc's axis is the starting point
    # the sidecar's slab (simulate's, or an earlier --estimate-thickness) sizes the WBP of --refine and
    # --twin-correction; half the width when there is none
    config = AlignConfig(tilt_axis_angle_deg=tilt_axis_angle, axis_search_range_deg=search_range,
                         refine_iterations=refine, thickness_px=meta.thickness_px, **tuning)
    log = logging.getLogger("stemtomo.align")

    def run(contrast: str) -> Any:
        try:
            return align_tilt_series(
                stack, image.tilt_angles_deg, config, contrast=contrast,
                kappa=meta.kappa if meta.kappa is not None else DEFAULT_KAPPA, normalization=meta.normalization,
                prior_axis_deg=meta.tilt_axis_angle_deg, device=dev,
                progress=lambda stage: log.debug("align: %s", stage),
            )
        except InputError as err:  # about the images (e.g. too few usable tilts): name the file
            raise InputError(f"{tilt_series}: {err}") from None

    result = run(choice.contrast)
    # a guessed contrast read the raw images, whose centres a drift moves over the specimen: the aligned
    # images tell it better, and a different answer is aligned again (the contrast matters to the shifts)
    checked = recheck_on_aligned(choice, result.aligned, image.tilt_angles_deg[result.kept], str(tilt_series))
    if checked.contrast != choice.contrast:
        result = run(checked.contrast)
    contrast = checked.contrast
    meta = meta.copy(contrast=contrast)
    xf_path, png_path = output_paths(output)
    al = result.alignment
    kept_angles = image.tilt_angles_deg[result.kept]
    out_meta = meta.copy(tilt_axis_angle_deg=0.0, tilt_angles_deg=kept_angles.tolist())
    out_meta.extra["alignment"] = {
        "tilt_axis_angle_deg": float(al.tilt_axis_angle_deg),
        "shifts_xy_px": np.round(al.shifts_xy, 3).tolist(),
        "reference_index": int(al.reference_index),
        "xf_file": xf_path.name,
        "holdout_error_before": result.score_before,
        "holdout_error_after": result.score_after,
        "twin_depth_px": al.twin_depth_px,
        **alignment_coverage_record(result.xf[result.kept], stack.shape, result.aligned.shape),
    }
    if al.excluded:  # indices into the input stack (and the .xf lines); the aligned stack lacks these images
        out_meta.extra = kept_tilt_records(out_meta.extra, result.kept, image.data.shape[0])
        out_meta.extra["alignment"]["excluded_tilts"] = [
            {"index": i, "tilt_angle_deg": float(image.tilt_angles_deg[i]), "reason": why} for i, why in al.excluded.items()]
    if estimate:
        _thickness(result.aligned, kept_angles, out_meta, contrast, dev)
    provenance = make_provenance("align", opts, [tilt_series] + ([angles] if angles else []))
    write_image(output, result.aligned, out_meta, overwrite=overwrite, provenance=provenance)
    with AtomicOutputs() as out:
        out.temp(xf_path).write_text(format_xf(result.xf), encoding="utf-8")
        _plot_shifts(out.temp(png_path), image.tilt_angles_deg, al.shifts_xy, al.tilt_axis_angle_deg, list(al.excluded))
    left_out = f"; {len(al.excluded)} unusable tilt{'s' * (len(al.excluded) > 1)} left out" if al.excluded else ""
    info(f"tilt axis {al.tilt_axis_angle_deg:.2f}°, shifts up to {np.abs(al.shifts_xy).max():.1f} px; "
         f"held-out reprojection error {result.score_before:.3f} → {result.score_after:.3f}{left_out}; "
         f"wrote {output}, {xf_path.name}")


def _plot_shifts(path: Path, angles: np.ndarray, shifts: np.ndarray, axis_deg: float, excluded: list[int]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    order = np.argsort(angles)
    ax.plot(angles[order], shifts[order, 0], "o-", ms=3, label="x shift")
    ax.plot(angles[order], shifts[order, 1], "s-", ms=3, label="y shift")
    if excluded:
        ax.plot(angles[excluded], shifts[excluded, 0], "kx", ms=7, label="left out (interpolated)")
        ax.plot(angles[excluded], shifts[excluded, 1], "kx", ms=7)
    ax.set_xlabel("tilt angle (°)")
    ax.set_ylabel("shift (px, raw frame)")
    ax.set_title(f"per-tilt shifts (tilt axis {axis_deg:.2f}°)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")


def register(app: typer.Typer) -> None:
    app.command("align")(handle_errors(align))
