"""``stemtomo export``: a trained model (or a volume) → tomogram at any size/dtype/layout, slices, re-projections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stemtomo.cli._common import (
    DebugOpt,
    DeviceOpt,
    OverwriteOpt,
    QuietOpt,
    VerboseOpt,
    handle_errors,
    info,
    options_dict,
    parse_shape,
    progress,
    resolve_device,
    setup,
)


def export(
    source: Annotated[Path, typer.Argument(help="A recon OUTDIR, model.safetensors / checkpoint, or a volume (MRC/TIFF).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output volume (.mrc/.rec/.tif) or, with --project, tilt series.")],
    shape: Annotated[str | None, typer.Option("--shape", help="Output shape nz,ny,nx (or one number): ny×nx resample the same in-plane box; voxels stay cubic, so nz sets the depth around the slab centre (e.g. full depth; zeros outside the slab).")] = None,
    bin_factor: Annotated[int, typer.Option("--bin", help="Bin by this factor (model: sample at binned centres; volume: block mean).")] = 1,
    pixel_size: Annotated[float | None, typer.Option("--pixel-size", help="Output voxel size in Å (model only).")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float32 | uint16 (ρ·65535) | uint8: 8-bit, stored as the format's standard says — TIFF uint8 (ρ·255), MRC mode 0 = signed int8 (ρ·127, MRC2014). Scaling in the sidecar.")] = "float32",
    crop: Annotated[str | None, typer.Option("--crop", help="Keep z0:z1,y0:y1,x0:x1 of the output grid.")] = None,
    layout: Annotated[str, typer.Option("--layout", help="xyz (stemtomo/IMOD trimvol -rx) | xzy (IMOD tilt raw order).")] = "xyz",
    slices: Annotated[Path | None, typer.Option("--slices", help="Also write a PNG montage of the central orthoslices.")] = None,
    project: Annotated[bool, typer.Option("--project", help="Write re-projections at --tilts instead of a volume (model only).")] = False,
    tilts: Annotated[str, typer.Option("--tilts", help="Re-projection angles START:STOP:STEP (degrees).")] = "-60:60:3",
    chunk_z: Annotated[int, typer.Option("--chunk-z", help="z-planes computed and written at once (bounds memory).")] = 8,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Sample a trained model into a tomogram (chunked, memory-mapped), convert volumes, or re-project."""
    setup(quiet, verbose, debug)
    opts = options_dict(**{k: v for k, v in locals().items() if k not in ("quiet", "verbose", "debug")})
    from stemtomo.errors import ParameterError
    from stemtomo.io import check_output, make_provenance
    from stemtomo.recon import export as E

    stored = E.storage_dtype(dtype, output)
    if layout not in E.LAYOUTS:
        raise ParameterError(f"--layout {layout!r}: use xyz or xzy")
    if chunk_z < 1:
        raise ParameterError(f"--chunk-z {chunk_z}: must be ≥ 1")
    if project:
        _refuse_volume_options(shape=shape is not None, bin=bin_factor != 1, pixel_size=pixel_size is not None,
                               dtype=dtype != "float32", crop=crop is not None, layout=layout != "xyz",
                               slices=slices is not None)
    check_output(output, overwrite)
    if slices is not None:
        if slices.suffix.lower() != ".png":
            raise ParameterError(f"--slices {slices}: the montage is a PNG image; give a .png file name")
        check_output(slices, overwrite, with_sidecar=False)
    is_model = source.is_dir() or source.suffix in (".safetensors", ".pt")
    prov = make_provenance("export", opts, [source / "model.safetensors" if source.is_dir() else source])
    if not is_model:
        if project or pixel_size is not None:
            raise ParameterError("--project and --pixel-size need a trained model, not a volume")
        _convert(source, output, bin_factor, shape, crop, stored, layout, slices, overwrite, prov)
        return
    dev = resolve_device(device)
    field, meta, rinfo = E.load_field(source, dev)
    meta = meta.copy(provenance=[*meta.provenance, prov])
    if project:
        _project(field, meta, output, tilts, overwrite)
        return
    out_shape, scale = E.plan(field.volume_shape, shape=parse_shape(shape, "--shape") if shape else None,
                              bin_factor=bin_factor, pixel_size_angstrom=pixel_size,
                              source_pixel_angstrom=meta.pixel_size_angstrom)
    half = E.slab_half_thickness(field, meta, rinfo)
    spec = E.ExportSpec(shape=out_shape, scale=scale, crop=E.parse_crop(crop, out_shape), dtype=stored,
                        layout=layout, slab_half_px=half)
    src_px = meta.pixel_size_angstrom
    vmeta = meta.copy(kind="volume", tilt_angles_deg=None, thickness_px=2.0 * half / scale[0],
                      pixel_size_angstrom=src_px * scale[2] if src_px else None)
    vmeta.extra.pop("recon", None)
    vmeta.extra["scaling"] = E.scaling_record(stored)
    vmeta.extra["layout"] = layout
    with progress("export", total=spec.crop[0].stop - spec.crop[0].start if spec.crop else out_shape[0]) as advance:
        E.write_volume_chunks(output, spec, E.field_blocks(field, spec), vmeta, chunk_z=chunk_z, progress=advance)
    if slices is not None:
        _montage(output, slices, layout)
    info(f"export: {source} → {output} {out_shape} {stored} {layout}")


def _refuse_volume_options(**given: bool) -> None:
    """--project writes float32 intensities at the model's own grid: volume options would be ignored."""
    from stemtomo.errors import ParameterError

    names = [f"--{k.replace('_', '-')}" for k, v in given.items() if v]
    if names:
        raise ParameterError(f"{', '.join(names)}: not used with --project (re-projections are float32 intensities "
                             f"on the model's own pixel grid); drop {'it' if len(names) == 1 else 'them'} or export a volume")


def _project(field: Any, meta: Any, output: Path, tilts: str, overwrite: bool) -> None:
    from stemtomo.io import write_image
    from stemtomo.recon import export as E

    angles = E.parse_tilts(tilts)
    images = E.reproject(field, angles, meta.thickness_px or field.volume_shape[0], meta.contrast or "bf",
                         meta.kappa or 7.0)
    smeta = meta.copy(kind="tilt_series", tilt_angles_deg=angles, axes="tyx",
                      normalization={"range01": True, "method": "forward_model"})
    smeta.extra.pop("recon", None)
    write_image(output, images, smeta, overwrite=overwrite)
    info(f"export: {len(angles)} re-projections → {output}")


def _convert(source: Path, output: Path, bin_factor: int, shape: str | None, crop: str | None, dtype: str,
             layout: str, slices: Path | None, overwrite: bool, prov: dict[str, Any]) -> None:
    import numpy as np

    from stemtomo.errors import ParameterError
    from stemtomo.io import read_volume
    from stemtomo.recon import export as E

    if shape is not None:
        raise ParameterError("--shape needs a trained model; for a volume use --bin and --crop")
    img = read_volume(source)
    vol = E.bin_volume(_as_density(img), bin_factor)
    lo, hi = float(vol.min()), float(vol.max())
    in_unit = 0.0 <= lo and hi <= 1.0
    if dtype != "float32" and not in_unit:
        vol = (vol - lo) / (hi - lo if hi > lo else 1.0)
    spec = E.ExportSpec(shape=tuple(vol.shape), scale=(1.0, 1.0, 1.0),  # type: ignore[arg-type]
                        crop=E.parse_crop(crop, vol.shape), dtype=dtype, layout=layout)
    c = spec.crop or (slice(None), slice(None), slice(None))
    cropped = vol[c]
    meta = img.meta.copy(kind="volume", provenance=[*img.meta.provenance, prov])
    if meta.pixel_size_angstrom:
        meta.pixel_size_angstrom *= bin_factor
    if meta.thickness_px:
        meta.thickness_px /= bin_factor
    meta.extra["scaling"] = E.scaling_record(dtype, *((0.0, 1.0) if in_unit or dtype == "float32" else (lo, hi)))
    meta.extra["layout"] = layout
    E.write_volume_chunks(output, spec, lambda z0, z1: np.asarray(cropped[z0:z1]), meta)
    if slices is not None:
        _montage(output, slices, layout)
    info(f"export: {source} → {output} {cropped.shape} {dtype} {layout}")


def _as_density(img: Any) -> Any:
    """The volume as stemtomo ``(z, y, x)`` densities: a previous export's integer scaling (``extra.scaling``)
    and IMOD ``xzy`` layout (``extra.layout``) undone, so conversions do not relabel stored values."""
    import numpy as np

    vol = img.data
    sc = img.meta.extra.get("scaling")
    if isinstance(sc, dict) and (sc.get("scale", 1.0), sc.get("lo", 0.0), sc.get("hi", 1.0)) != (1.0, 0.0, 1.0):
        lo, hi, scale = float(sc.get("lo", 0.0)), float(sc.get("hi", 1.0)), float(sc.get("scale", 1.0))
        vol = (lo + np.asarray(vol, dtype=np.float32) / scale * (hi - lo)).astype(np.float32)
    if img.meta.extra.get("layout") == "xzy":  # xzy[y, T-1-z, x] = xyz[z, y, x]
        vol = np.ascontiguousarray(vol[:, ::-1].transpose(1, 0, 2))
    return vol


def _montage(volume_path: Path, png: Path, layout: str) -> None:
    from stemtomo.recon import export as E

    vol, close = E.open_volume_mmap(volume_path)
    try:
        if layout == "xzy":  # back to (z, y, x) for the standard views
            vol = vol.transpose(1, 0, 2)[::-1]
        E.orthoslice_montage(png, vol)
    finally:
        close()


def register(app: typer.Typer) -> None:
    app.command("export")(handle_errors(export))
