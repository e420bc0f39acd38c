"""``stemtomo wbp``: classic tomogram from a tilt series (weighted back-projection, or SIRT)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

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
    progress,
    resolve_device,
    setup,
)
from stemtomo.cli._prepare import (
    DefectThresholdOpt,
    NormalizeTilts,
    NormalizeTiltsOpt,
    RemoveDefectsOpt,
    XfOpt,
    prepare_option_values,
    prepare_options,
)


class Method(str, Enum):
    wbp = "wbp"
    sirt = "sirt"




def half_set_paths(output: Path) -> tuple[Path, Path]:
    """``vol.mrc`` → ``vol_even.mrc``, ``vol_odd.mrc``."""
    return (output.with_name(f"{output.stem}_even{output.suffix}"),
            output.with_name(f"{output.stem}_odd{output.suffix}"))


def wbp(
    tilt_series: Annotated[Path, typer.Argument(help="Tilt series (MRC/TIFF), with angles from its sidecar, a .rawtlt/.tlt beside it, an .mdoc or the MRC extended header.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output volume (.mrc or .tif), (nz, ny, nx), density in units of ρ.")],
    angles: Annotated[Path | None, typer.Option("--angles", help="Angle file (.rawtlt/.tlt, one angle per line, degrees); overrides every other source.")] = None,
    tilt_axis_angle: Annotated[float | None, typer.Option("--tilt-axis-angle", help="In-plane tilt-axis angle of the images, degrees CCW from +y (IMOD RotationAngle; 90 = axis along x). Default: sidecar/header, else 0.")] = None,
    method: Annotated[Method, typer.Option("--method", help="wbp: weighted back-projection; sirt: iterative (SIRT).")] = Method.wbp,
    filter_: Annotated[str | None, typer.Option("--filter", help="WBP ramp apodization: ramp, shepp-logan, cosine, hamming or hann (scikit-image iradon names) [default: ramp].")] = None,
    thickness_px: Annotated[float | None, typer.Option("--thickness-px", help="Specimen slab thickness in input pixels; density outside it is 0. Default: sidecar thickness_px, else the image width (a generous slab).")] = None,
    nz: Annotated[int | None, typer.Option("--nz", help="Volume depth in output voxels (≥ slab). Default: the slab thickness rounded up.")] = None,
    bin_factor: Annotated[int, typer.Option("--bin", help="Average-bin the images by N before reconstruction (pixel size × N).")] = 1,
    iterations: Annotated[int | None, typer.Option("--iterations", help="SIRT iterations [default: 20].")] = None,
    relaxation: Annotated[float | None, typer.Option("--relaxation", help="SIRT relaxation λ in (0, 2) [default: 1].")] = None,
    positivity: Annotated[bool, typer.Option("--positivity/--no-positivity", help="SIRT: clamp the density at 0 after each iteration.")] = False,
    restore_mean: Annotated[bool | None, typer.Option("--restore-mean/--no-restore-mean", help="WBP with a known slab thickness: restore the slab's mean density (lost in the missing wedge) from the least-tilted image [default: on].")] = None,
    half_sets: Annotated[bool, typer.Option("--half-sets", help="Also write <output>_even/_odd reconstructions from the even/odd tilts in angle order (for FSC).")] = False,
    contrast: Annotated[ContrastOpt | None, typer.Option("--contrast", help="Image contrast (bf: I = exp(-κP), df: I = 1 - exp(-κP)). Default: sidecar, else --normalize-tilts's kind, else guessed from the images (BF darkens with tilt, DF brightens; once aligned, or with --xf, from the aligned images), else bf.")] = None,
    kappa: Annotated[float | None, typer.Option("--kappa", help="Attenuation κ of the image model. Default: sidecar, else 7.")] = None,
    estimate_thickness: Annotated[bool, typer.Option("--estimate-thickness", help="Estimate the slab thickness and z-offset from a full-depth WBP first (z-profile), record them in the sidecar and reconstruct with that slab (centred, enclosing the estimate).")] = False,
    remove_defects: RemoveDefectsOpt = False,
    defect_threshold: DefectThresholdOpt = None,
    normalize_tilts: NormalizeTiltsOpt = NormalizeTilts.none,
    xf: XfOpt = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Reconstruct a tomogram with weighted back-projection (WBP) or SIRT.

    Intensities are normalized to [0, 1], linearized (bright field −log(I)/κ, dark field −log(1−I)/κ) into
    line integrals, optionally binned and rotated so the tilt axis is y, then reconstructed. The volume
    follows IMOD's trimvol -rx orientation (positive tilt moves material above the centre toward +x).

    Raw series: --remove-defects, --normalize-tilts and --xf prepare the images first (in that order);
    --estimate-thickness finds the specimen slab from a full-depth WBP and records it in the sidecar.
    """
    setup(quiet, verbose, debug)
    from stemtomo.errors import ParameterError
    from stemtomo.io import check_outputs
    from stemtomo.recon.sirt import SIRTConfig
    from stemtomo.recon.wbp import WBPConfig

    defaults = SIRTConfig()
    sirt_cfg = SIRTConfig(
        iterations=defaults.iterations if iterations is None else iterations,
        relaxation=defaults.relaxation if relaxation is None else relaxation,
        positivity=positivity,
    )
    if bin_factor < 1:
        raise ParameterError(f"--bin {bin_factor}: the binning factor must be ≥ 1")
    if thickness_px is not None and not thickness_px > 0:
        raise ParameterError(f"--thickness-px {thickness_px:g}: the slab thickness must be > 0 pixels")
    if estimate_thickness and thickness_px is not None:
        raise ParameterError("--estimate-thickness and --thickness-px: use one of them (estimate the slab, or give it)")
    if xf is not None and tilt_axis_angle is not None:
        raise ParameterError("--xf already rotates the images so the tilt axis is y; drop --tilt-axis-angle")
    prep = prepare_options(remove_defects, defect_threshold, normalize_tilts, xf)
    base = WBPConfig()
    probe = WBPConfig(method=method.value, filter=base.filter if filter_ is None else filter_, nz=nz,
                      bin_factor=bin_factor, sirt=sirt_cfg,
                      restore_mean=base.restore_mean if restore_mean is None else restore_mean)
    probe.validate()
    outputs = [output, *half_set_paths(output)] if half_sets else [output]
    check_outputs(outputs, overwrite)
    # enum values passed as plain str: options_dict keeps str-Enums as Enum objects (not YAML-safe)
    opts = options_dict(angles=angles, tilt_axis_angle=tilt_axis_angle, method=method.value, filter=probe.filter,
                        thickness_px=thickness_px, nz=nz, bin=bin_factor, iterations=sirt_cfg.iterations,
                        relaxation=sirt_cfg.relaxation, positivity=positivity, restore_mean=probe.restore_mean,
                        half_sets=half_sets,
                        contrast=contrast.value if contrast else None, kappa=kappa,
                        estimate_thickness=estimate_thickness, **prepare_option_values(prep), device=device)
    _run(tilt_series, outputs, probe, opts, angles=angles, tilt_axis_angle=tilt_axis_angle,
         thickness_px=thickness_px, contrast=contrast.value if contrast else None, kappa=kappa,
         device=device, overwrite=overwrite, prep=prep, estimate=estimate_thickness)


def _run(
    tilt_series: Path, outputs: list[Path], probe: Any, opts: dict[str, Any], *, angles: Path | None,
    tilt_axis_angle: float | None, thickness_px: float | None, contrast: str | None, kappa: float | None,
    device: str, overwrite: bool, prep: Any, estimate: bool,
) -> None:
    import dataclasses

    import numpy as np

    from stemtomo.cli._prepare import apply_records, prepare_with_contrast
    from stemtomo.core.device import check_memory
    from stemtomo.core.imaging import DEFAULT_KAPPA
    from stemtomo.errors import InputError
    from stemtomo.io import Metadata, make_provenance, read_stack, write_image
    from stemtomo.io.stack import check_not_constant
    from stemtomo.recon.wbp import default_geometry, half_set_indices, line_integrals_from_stack, reconstruct

    dev = resolve_device(device)
    image = read_stack(tilt_series, angles=angles, tilt_axis_angle_deg=tilt_axis_angle, require_angles=True)
    tilts = image.tilt_angles_deg
    if tilts.size < 2:
        raise InputError(f"{tilt_series}: {tilts.size} projection; a reconstruction needs a tilt series of ≥ 2 images")
    check_not_constant(image.data, image.path)
    stack, records, contrast = prepare_with_contrast(image, prep, contrast, dev)
    meta = apply_records(image.meta, records)
    thickness_in = thickness_px if thickness_px is not None else meta.thickness_px
    config = dataclasses.replace(
        probe, thickness_px=None if thickness_in is None or estimate else thickness_in / probe.bin_factor
    )
    config.validate()
    kappa = kappa if kappa is not None else (meta.kappa if meta.kappa is not None else DEFAULT_KAPPA)
    lines, norm = line_integrals_from_stack(
        stack, contrast=contrast, kappa=kappa, normalization=meta.normalization,
        tilt_axis_angle_deg=meta.tilt_axis_angle_deg, bin_factor=config.bin_factor, device=dev,
    )
    prep_extra = dict(records["extra"])
    if estimate:
        from stemtomo.preprocess.fill import has_no_sidecar, prepared_support

        measured = prepared_support(stack, meta, meta.tilt_axis_angle_deg, bin_factor=config.bin_factor,
                                    detect=has_no_sidecar(image.path), device=dev)
        config, prep_extra["thickness_estimate"] = _estimate(lines, tilts, config, measured)
    sets: list[tuple[Path, np.ndarray, str | None]] = [(outputs[0], np.arange(tilts.size), None)]
    if len(outputs) == 3:
        even, odd = half_set_indices(tilts)
        sets += [(outputs[1], even, "even"), (outputs[2], odd, "odd")]
    nz_out, _ = default_geometry(config, int(lines.shape[-1]))
    # the volume, about as much again for writing it (SIRT: its work arrays), and for the half sets the
    # previous volume until the next is done
    check_memory(4 * nz_out * int(lines.shape[-2]) * int(lines.shape[-1]) * (2 if len(sets) == 1 else 3), dev,
                 f"{config.method} of a {nz_out}×{lines.shape[-2]}×{lines.shape[-1]} (zyx) volume",
                 f"bin it (--bin {2 * config.bin_factor} needs 8× less) or give the slab (--thickness-px, --estimate-thickness, --nz)")
    inputs = [tilt_series] + ([angles] if angles is not None else []) + ([prep.xf] if prep.xf is not None else [])
    provenance = make_provenance("wbp", opts, inputs)
    pixel = None if meta.pixel_size_angstrom is None else meta.pixel_size_angstrom * config.bin_factor
    for path, idx, half in sets:
        with progress(f"{config.method} {half or ''}".strip(), total=float(idx.size)) as advance:
            done = [0]

            def callback(n: int, total: int, _advance: Any = advance, _done: list[int] = done) -> None:
                _advance(n - _done[0], total=float(total))
                _done[0] = n

            vol, rinfo = reconstruct(lines[idx], tilts[idx], config, progress=callback)
        extra: dict[str, Any] = {"method": config.method, "bin": config.bin_factor,
                                 "source_tilt_axis_angle_deg": meta.tilt_axis_angle_deg,
                                 "n_tilts": int(idx.size), "input_normalization": norm, **prep_extra}
        if config.method == "wbp":
            extra["filter"] = config.filter
            extra["restore_mean"] = config.restore_mean and rinfo["thickness_px"] is not None
        else:
            extra["sirt"] = dataclasses.asdict(config.sirt)
            extra["sirt_residual_norms"] = rinfo["residual_norms"]
        if half is not None:
            extra["half_set"] = half
        out_meta = Metadata(kind="volume", axes="zyx", pixel_size_angstrom=pixel,
                            thickness_px=rinfo["thickness_px"] if rinfo["thickness_px"] is not None else float(rinfo["nz"]),
                            contrast=contrast, kappa=kappa,
                            provenance=list(meta.provenance), extra=extra)
        write_image(path, np.asarray(vol.detach().cpu().numpy(), dtype=np.float32), out_meta, overwrite=overwrite,
                    provenance=provenance)
    v = vol.shape
    info(f"{config.method.upper()}: {tilts.size} tilts → {outputs[0]} ({v[0]}×{v[1]}×{v[2]} zyx"
         f"{'' if pixel is None else f', {pixel:g} Å/voxel'})" + (" + even/odd half sets" if len(sets) == 3 else ""))


def _estimate(lines: Any, tilts: Any, config: Any, measured: Any) -> tuple[Any, dict[str, Any]]:
    """Slab from a full-depth WBP of ``lines`` (binned voxels; ``measured``: their measured pixels or None)
    → (config with that slab, sidecar record)."""
    import dataclasses
    import logging

    from stemtomo.preprocess.fill import bin_measured
    from stemtomo.preprocess.pipeline import (
        enclosing_thickness,
        estimate_binning,
        estimate_slab,
        thickness_record,
    )
    from stemtomo.recon.wbp import bin_images

    extra = estimate_binning(lines.shape)  # a full-depth WBP is nx³: binned as align's, lengths scaled back
    with progress("thickness estimate (full-depth WBP)", total=None):
        est = estimate_slab(bin_images(lines, extra) / extra, tilts, filter=config.filter,
                            measured=None if measured is None else bin_measured(measured, extra))
    depth = config.nz if config.nz is not None else int(lines.shape[-1])
    used = min(enclosing_thickness(est) * extra, float(depth))
    record = {**thickness_record(est, config.bin_factor * extra), "slab_used_px": used * config.bin_factor}
    logging.getLogger("stemtomo.wbp").info(
        "estimated slab: %.1f px thick, centre offset %+.1f px (input pixels); reconstructing a centred slab of "
        "%.1f px", record["thickness_px"], record["z_offset_px"], record["slab_used_px"])
    return dataclasses.replace(config, thickness_px=used), record


def register(app: typer.Typer) -> None:
    app.command("wbp")(handle_errors(wbp))
