"""``stemtomo eval``: score a volume (or tilt series) against a reference, or two half maps by FSC.

Library: :mod:`stemtomo.eval` (metrics, 2D test projections, alignment, FSC, report, figure).
"""

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
    SeedOpt,
    VerboseOpt,
    handle_errors,
    info,
    options_dict,
    progress,
    resolve_device,
    setup,
    stdout_console,
    warn,
)
from stemtomo.eval.config import AlignConfig, EvalConfig, ProjectionConfig

_EVAL, _ALIGN, _PROJ = EvalConfig(), AlignConfig(), ProjectionConfig()
PREVIEW_NAME = "preview.mrc"
"""The volume a ``stemtomo recon`` output folder holds; a folder given as VOLUME or --reference means it."""
_IMAGE_SUFFIXES = (".mrc", ".mrcs", ".rec", ".st", ".ali", ".map", ".tif", ".tiff", ".png")
"""Suffixes refused for ``-o``: the report is YAML, and a volume name there is a slip for another command."""


class Kind(str, Enum):
    auto = "auto"
    volume = "volume"
    stack = "stack"




def eval_command(
    volume: Annotated[Path | None, typer.Argument(help="Volume (nz, ny, nx) or tilt series to score (MRC/TIFF), or a `stemtomo recon` output folder (its preview.mrc).", show_default=False)] = None,
    reference: Annotated[Path | None, typer.Option("--reference", "-r", help="Ground truth of the same kind (volume or tilt series, or a recon folder). A volume of another size is resampled (trilinear, same field of view in y/x, centred; z cropped or zero-padded) to VOLUME's grid.", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report as YAML (non-finite numbers as .inf/.nan).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object on stdout (no table); PSNR = +inf is written as the string \"inf\", NaN as null.")] = False,
    figure: Annotated[Path | None, typer.Option("--figure", help="Write a PNG: orthoslices of volume, reference and |error|; the FSC curve.", show_default=False)] = None,
    kind: Annotated[Kind, typer.Option("--kind", help="What VOLUME is: auto (from its sidecar; volume if none), volume, or stack (compare tilt series image by image).")] = Kind.auto,
    data_range: Annotated[float, typer.Option("--data-range", help="SSIM data_range (3D and 2D). 1 = the range after min–max normalization; 2 reproduces the paper's skimage-0.19 numbers. PSNR always uses 1.")] = _EVAL.ssim_data_range,
    align: Annotated[bool, typer.Option("--align", help="Find the best of the 8 axis flips (× y/x transpose when ny = nx) and a circular integer shift before scoring; reported.")] = _EVAL.align,
    max_shift: Annotated[int, typer.Option("--max-shift", help="--align: largest shift searched per axis (voxels).")] = _ALIGN.max_shift_px,
    mask: Annotated[Path | None, typer.Option("--mask", help="Volume of VOLUME's shape; 3D metrics only where it is non-zero.", show_default=False)] = None,
    slab_only: Annotated[bool, typer.Option("--slab-only", help="3D metrics only inside the slab |z| ≤ thickness/2 (thickness from the sidecar or --thickness-px).")] = False,
    thickness_px: Annotated[float | None, typer.Option("--thickness-px", help="Slab thickness (voxels) for --slab-only. Default: thickness_px of VOLUME's sidecar, else the reference's.", show_default=False)] = None,
    projections: Annotated[int, typer.Option("--projections", help="Number of random 3D test orientations of the 2D protocol (0 skips it).")] = _PROJ.count,
    seed: SeedOpt = _PROJ.seed,
    kappa: Annotated[float, typer.Option("--kappa", help="Attenuation κ of the 2D protocol's image model.")] = _PROJ.kappa,
    contrast: Annotated[ContrastOpt, typer.Option("--contrast", help="Image model of the 2D protocol: bf exp(-κP), df 1 - exp(-κP).")] = ContrastOpt.bf,
    fsc: Annotated[tuple[Path, Path] | None, typer.Option("--fsc", help="Two half maps HALF1 HALF2: Fourier shell correlation, resolution at 0.143 and 0.5 (no ground truth needed).", show_default=False)] = None,
    holdout: Annotated[Path | None, typer.Option("--holdout", help="Tilt series (aligned, or with its tilt-axis angle in the sidecar): held-out reprojection error — odd tilts predicted from a WBP of the even tilts, normalized RMS, lower is better; an alignment score without ground truth.", show_default=False)] = None,
    pixel_size: Annotated[float | None, typer.Option("--pixel-size", help="Voxel size in Å for --fsc. Default: sidecar/header of HALF1; without one, resolutions are in pixels.", show_default=False)] = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Score VOLUME against --reference (3D PSNR/MSE/SSIM/DSSIM and the 2D test-projection protocol), a tilt series against a reference series, or two half maps with --fsc.

    Both inputs are min–max normalized to [0, 1] first (METHOD §8). The 2D protocol projects both volumes at --projections random 3D orientations drawn with --seed (42 reproduces the paper's list), min–max normalizes each projection and reports mean ± std.
    """
    setup(quiet, verbose, debug)
    from stemtomo.errors import ParameterError
    from stemtomo.io import check_output

    if volume is None and reference is not None:
        raise ParameterError("--reference given without VOLUME: pass the volume to score first")
    if volume is None and fsc is None and holdout is None:
        raise ParameterError("nothing to evaluate: give VOLUME --reference REF, --fsc HALF1 HALF2 or --holdout TILTSERIES")
    if volume is not None and reference is None:
        raise ParameterError(f"missing reference for {volume}: pass --reference REF (or --fsc HALF1 HALF2 without ground truth)")
    if not data_range > 0:
        raise ParameterError(f"--data-range {data_range:g}: must be > 0 (1, or 2 to match the paper)")
    if projections < 0 or max_shift < 0:
        raise ParameterError(f"--projections {projections} / --max-shift {max_shift}: must be 0 or more")
    if not kappa > 0:
        raise ParameterError(f"--kappa {kappa:g}: must be > 0")
    if output is not None and output.suffix.lower() in _IMAGE_SUFFIXES:
        raise ParameterError(f"-o {output}: the report is YAML text, not an image; give a .yaml path "
                             "(--figure writes the PNG)")
    for out in (output, figure):
        if out is not None:
            check_output(out, overwrite, with_sidecar=False)
    config = EvalConfig(
        ssim_data_range=data_range,
        align=align,
        align_config=AlignConfig(max_shift_px=max_shift),
        projections=ProjectionConfig(count=projections, seed=seed, kappa=kappa, contrast=contrast.value),
    )
    opts = options_dict(reference=reference, kind=kind.value, data_range=data_range, align=align, max_shift=max_shift,
                        mask=mask, slab_only=slab_only, thickness_px=thickness_px, projections=projections,
                        seed=seed, kappa=kappa, contrast=contrast.value, fsc=list(fsc) if fsc else None,
                        holdout=holdout, pixel_size=pixel_size, device=device)
    dev = resolve_device(device)
    _run(volume, reference, fsc, config, dev, opts, output=output, figure=figure, as_json=as_json, kind=kind,
         mask=mask, slab_only=slab_only, thickness_px=thickness_px, pixel_size=pixel_size, overwrite=overwrite,
         holdout=holdout)


def resolve_input(path: Path) -> Path:
    """A file as is; a ``stemtomo recon`` output folder → its ``preview.mrc``."""
    from stemtomo.errors import InputError

    if path.is_dir():
        if (path / PREVIEW_NAME).is_file():
            return path / PREVIEW_NAME
        raise InputError(f"{path}: is a folder without {PREVIEW_NAME}; give a volume file or a stemtomo recon output folder")
    return path


def _run(volume: Path | None, reference: Path | None, fsc: tuple[Path, Path] | None, config: EvalConfig, dev: Any,
         opts: dict[str, Any], *, output: Path | None, figure: Path | None, as_json: bool, kind: Kind,
         mask: Path | None, slab_only: bool, thickness_px: float | None, pixel_size: float | None,
         overwrite: bool, holdout: Path | None = None) -> None:
    from stemtomo.eval.report import build_report, to_json, to_yaml
    from stemtomo.io import make_provenance, write_text_atomic

    notes: list[str] = []
    inputs: list[Path] = []
    results: dict[str, Any] | None = None
    pair: tuple[Any, Any] | None = None
    mode = "fsc"
    if volume is not None and reference is not None:
        volume, reference = resolve_input(volume), resolve_input(reference)
        inputs += [volume, reference]
        mode, results, pair = _compare(volume, reference, config, dev, notes, kind=kind, mask=mask,
                                       slab_only=slab_only, thickness_px=thickness_px)
        if mask is not None:
            inputs.append(mask)
    fsc_result = None
    if fsc is not None:
        fsc_result = _fsc(fsc, pixel_size, dev, notes)
        inputs += list(fsc)
        mode = "fsc" if mode == "fsc" else f"{mode}+fsc"
    if holdout is not None:
        results = dict(results or {}) | _holdout(holdout, dev, notes)
        inputs.append(holdout)
        mode = "holdout" if mode == "fsc" and fsc is None else f"{mode}+holdout"
    fsc_dict: dict[str, Any] | None = None
    if fsc_result is not None:
        assert fsc is not None
        fsc_dict = {"half1": str(fsc[0]), "half2": str(fsc[1])} | fsc_result.to_dict()
    report = build_report(volume=str(volume) if volume else None, reference=str(reference) if reference else None,
                          mode=mode, results=results, fsc=fsc_dict, notes=notes,
                          provenance=make_provenance("eval", opts, inputs))
    if figure is not None:
        from stemtomo.eval.figure import save_figure
        from stemtomo.io import atomic_file

        with atomic_file(figure) as tmp:
            save_figure(tmp, pair=pair, stacks=mode.startswith("stack"), fsc=fsc_result,
                        title=f"{volume.name} vs {reference.name}" if volume and reference else "FSC")
    if output is not None:
        write_text_atomic(output, to_yaml(report))
    if as_json:
        typer.echo(to_json(report))
    else:
        _print_table(report)
    written = ", ".join(str(p) for p in (output, figure) if p is not None)
    info(f"eval ({mode}) done" + (f": wrote {written}" if written else ""))


def _holdout(path: Path, dev: Any, notes: list[str]) -> dict[str, Any]:
    """Held-out reprojection error of a tilt series (line integrals, aligned frame from its sidecar's tilt axis)."""
    import torch

    from stemtomo.align.pipeline import holdout_score, line_integral_stack
    from stemtomo.core.geometry import raw_to_aligned
    from stemtomo.core.imaging import DEFAULT_KAPPA
    from stemtomo.io import read_stack
    from stemtomo.preprocess.contrast import resolve_contrast

    image = read_stack(path, require_angles=True)
    meta = image.meta
    contrast = resolve_contrast(None, image)
    lines = line_integral_stack(image.data, contrast, meta.kappa or DEFAULT_KAPPA, meta.normalization)
    aligned = raw_to_aligned(torch.as_tensor(lines, device=dev), meta.tilt_axis_angle_deg)
    notes.append("holdout: odd tilts (in angle order) predicted from a WBP of the even tilts; normalized RMS")
    return {"holdout_error": holdout_score(aligned, image.tilt_angles_deg), "holdout_series": str(path)}


def _read_pair(volume: Path, reference: Path, kind: Kind) -> tuple[Any, Any, bool]:
    """Read VOLUME and the reference as volumes or stacks (``--kind``; auto: from VOLUME's sidecar)."""
    from stemtomo.io import read_sidecar, read_stack, read_volume

    is_stack = kind is Kind.stack
    if kind is Kind.auto:
        meta = read_sidecar(volume) if volume.is_file() else None
        is_stack = meta is not None and meta.kind == "tilt_series"
    reader = read_stack if is_stack else read_volume
    return reader(volume), reader(reference), is_stack


def _compare(volume: Path, reference: Path, config: EvalConfig, dev: Any, notes: list[str], *, kind: Kind,
             mask: Path | None, slab_only: bool, thickness_px: float | None) -> tuple[str, dict[str, Any], Any]:
    import torch

    from stemtomo.eval.align import apply_transform
    from stemtomo.eval.evaluate import evaluate_stacks, evaluate_volumes, match_grids

    vol_img, ref_img, is_stack = _read_pair(volume, reference, kind)
    vol_np, ref_np = vol_img.data, ref_img.data
    if is_stack:
        for flag, name in ((config.align, "--align"), (mask is not None, "--mask"), (slab_only, "--slab-only")):
            if flag:
                warn(f"{name} applies to volumes only; ignored for tilt series")
                notes.append(f"{name} ignored for tilt series")
        res = evaluate_stacks(torch.as_tensor(vol_np, device=dev), torch.as_tensor(ref_np, device=dev), config)
        return "stack", res, (vol_np, ref_np)
    ref_shape = list(ref_np.shape)
    vol_np, ref_np, how = match_grids(vol_np, ref_np)  # a slab-only tomogram is zero-padded to a deeper reference
    if how is not None:
        msg = (f"volume {volume} zero-padded in z from {vol_img.data.shape[0]} to {ref_np.shape[0]} (outside the slab)"
               if how == "padded" else f"reference {reference} resampled from {ref_shape} to {list(vol_np.shape)} "
               "(trilinear, centre-aligned; z cropped/zero-padded)")
        warn(msg)
        notes.append(msg)
    mask_np = _mask(mask, slab_only, thickness_px, vol_img, ref_img, vol_np.shape, notes)
    n = config.projections.count
    with progress("2D test projections", total=n) as advance:
        res = evaluate_volumes(torch.as_tensor(vol_np, device=dev), torch.as_tensor(ref_np, device=dev), config,
                               mask=mask_np, callback=lambda done, total: advance(1))
    if res["align"] is not None:
        a = res["align"]
        vol_np = apply_transform(vol_np, tuple(a["flip_zyx"]), a["transpose_yx"], tuple(a["shift_zyx"]))
        notes.append(f"aligned: flips z,y,x {a['flip_zyx']}, transpose y/x {a['transpose_yx']}, circular shift "
                     f"{a['shift_zyx']} (correlation {a['correlation_before']:.3f} → {a['correlation']:.3f})")
    notes.append(f"SSIM data_range = {config.ssim_data_range:g} (PSNR data_range = 1 after min–max normalization)")
    return "volume", res, (vol_np, ref_np)


def _mask(mask: Path | None, slab_only: bool, thickness_px: float | None, vol_img: Any, ref_img: Any,
          shape: tuple[int, ...], notes: list[str]) -> Any:
    """The 3D-metric mask from --mask and/or --slab-only (their intersection), or None."""
    import numpy as np

    from stemtomo.errors import ParameterError
    from stemtomo.eval.metrics import slab_mask
    from stemtomo.io import read_volume

    out = None
    if mask is not None:
        m = read_volume(mask).data
        if m.shape != tuple(shape):
            raise ParameterError(f"--mask {mask}: shape {list(m.shape)} differs from the volume's {list(shape)}")
        out = m != 0
        notes.append(f"3D metrics inside --mask {mask} ({int(out.sum())} voxels)")
    if slab_only:
        t = thickness_px if thickness_px is not None else vol_img.meta.thickness_px or ref_img.meta.thickness_px
        if t is None:
            raise ParameterError(
                f"--slab-only: no thickness_px in the sidecars of {vol_img.path} or {ref_img.path}; pass --thickness-px"
            )
        slab = slab_mask(tuple(shape), float(t))
        out = slab if out is None else np.logical_and(out, slab)
        notes.append(f"3D metrics inside the slab |z| ≤ {float(t) / 2:g} voxels")
    return out


def _fsc(halves: tuple[Path, Path], pixel_size: float | None, dev: Any, notes: list[str]) -> Any:
    import torch

    from stemtomo.eval.fsc import fourier_shell_correlation
    from stemtomo.io import read_volume
    from stemtomo.io.stack import check_not_constant

    h1, h2 = (read_volume(resolve_input(p)) for p in halves)
    for path, half in zip(halves, (h1, h2), strict=True):
        check_not_constant(half.data, path, "half map", "; the FSC is undefined (did its reconstruction fail?)")
    px = pixel_size if pixel_size is not None else h1.meta.pixel_size_angstrom
    other = h2.meta.pixel_size_angstrom
    if pixel_size is None and px is not None and other is not None and abs(other - px) > 1e-3 * px:
        warn(f"--fsc: pixel sizes differ ({px:g} Å in {halves[0]}, {other:g} Å in {halves[1]}); using {px:g} Å")
    if px is None:
        msg = f"--fsc: no pixel size in {halves[0]} (sidecar/header); resolutions in pixels, frequencies in 1/px"
        warn(msg + "; pass --pixel-size for Å")
        notes.append(msg)
    return fourier_shell_correlation(torch.as_tensor(h1.data, device=dev), torch.as_tensor(h2.data, device=dev), px)


def _print_table(report: dict[str, Any]) -> None:
    from rich.table import Table

    from stemtomo.cli._common import STATE
    from stemtomo.eval.report import summary_rows

    if STATE.quiet:
        return
    title = (f"{report.get('volume')} vs {report.get('reference')}" if report.get("volume")
             else "held-out reprojection" if report.get("mode") == "holdout" else "FSC")
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("std", justify="right")
    for row in summary_rows(report):
        table.add_row(*row)
    stdout_console().print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(handle_errors(eval_command))
