"""Export trained reconstructions and convert volumes (``stemtomo export``).

- :func:`load_field`: rebuild the selected field of a recon model file (or OUTDIR, or a checkpoint).
- :func:`export_model_volume`: sample a field at any shape / binning / pixel size, z-chunk by z-chunk,
  into a memory-mapped MRC or TIFF (temporary file renamed on success), so memory stays bounded by one
  chunk whatever the output size.
- :func:`convert_volume`: volume → volume (MRC ↔ TIFF, binning, crop, dtype, layout).
- :func:`reproject`: re-projections of a field at new tilt angles with the forward model
  (:func:`stemtomo.core.projector.forward_project` + :func:`stemtomo.core.imaging.intensity`).
- :func:`orthoslice_montage`: central xy / xz / yz slices as one PNG.

Layouts (CONVENTIONS.md §6): ``xyz`` is stemtomo's ``(nz, ny, nx)`` (IMOD after ``trimvol -rx``);
``xzy`` is IMOD ``tilt``'s raw output order, ``xzy[y, T-1-z, x] = xyz[z, y, x]`` (shape ``(ny, nz, nx)``).
Integer dtypes store ``round(ρ·scale)``, with the scale recorded in the sidecar (``extra.scaling``). 8-bit
output is standard-conforming per format: MRC mode 0 is *signed* int8 in MRC2014 (CONVENTIONS §2.3/§6), so
MRC files get ``int8 = round(ρ·127)`` (values 0…127, which IMOD, mrcfile and :func:`stemtomo.io.read_volume`
read alike whichever signedness they assume; IMOD stamp with the signed-bytes flag set), TIFF files get
``uint8 = round(ρ·255)`` (:func:`storage_dtype`).

Model export zeroes everything outside the training slab ``|z| ≤ thickness/2`` (DESIGN.md "Specimen"): the
field was never constrained there. Planes outside are not even sampled, so a full-depth export of a thin slab
costs what the slab costs.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemtomo.core.fields import Field, FieldConfig, build_field, sample_volume
from stemtomo.errors import InputError, ParameterError
from stemtomo.io import Metadata
from stemtomo.io.safety import AtomicOutputs
from stemtomo.io.sidecar import dump_sidecar, sidecar_path
from stemtomo.io.volume_mmap import MRC_SUFFIXES, RunningStats, open_volume_for_writing, release_pages

DTYPES = {"float32": np.float32, "uint16": np.uint16, "uint8": np.uint8}
"""``--dtype`` choices (what the user asks for; see :func:`storage_dtype` for what is stored)."""
ENCODINGS = {**DTYPES, "int8": np.int8}
"""Stored encodings: the ``--dtype`` choices plus ``int8`` (8-bit MRC)."""
_INT_MAX = {"uint16": 65535.0, "uint8": 255.0, "int8": 127.0}
LAYOUTS = ("xyz", "xzy")


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """Output grid and encoding."""

    shape: tuple[int, int, int]
    """Output shape ``(nz, ny, nx)`` before cropping."""
    scale: tuple[float, float, float]
    """Output voxel size in source voxels, per axis (zyx)."""
    crop: tuple[slice, slice, slice] | None = None
    """Sub-block of the output grid to keep."""
    dtype: str = "float32"
    """Stored encoding: ``float32``, ``uint16`` (ρ·65535), ``uint8`` (ρ·255, TIFF) or ``int8`` (ρ·127, MRC);
    :func:`storage_dtype` maps ``--dtype`` to it."""
    layout: str = "xyz"
    """``xyz`` (stemtomo/IMOD-rotated) or ``xzy`` (IMOD tilt raw order)."""
    slab_half_px: float | None = None
    """Half thickness of the specimen slab in source voxels (model export): output planes whose centre lies
    at ``|z| > slab_half_px`` are exactly 0 and not sampled. None = no slab mask (volume conversion)."""


def storage_dtype(dtype: str, path: str | os.PathLike[str]) -> str:
    """The encoding written for ``--dtype`` into ``path``: ``uint8`` becomes signed ``int8`` (ρ·127) in MRC.

    MRC2014 defines mode 0 as signed int8 (CONVENTIONS §2.3/§6); writing unsigned bytes there makes readers
    that follow the standard (or IMOD's header-statistics rule) see values above 127 as negative. TIFF keeps
    ``uint8`` (ρ·255).

    Raises
    ------
    ParameterError
        ``dtype`` is not one of :data:`DTYPES`.
    """
    if dtype not in DTYPES:
        raise ParameterError(f"--dtype {dtype!r}: use float32, uint16 or uint8")
    if dtype == "uint8" and Path(path).suffix.lower() in MRC_SUFFIXES:
        return "int8"
    return dtype


def load_field(path: str | os.PathLike[str], device: torch.device) -> tuple[Field, Metadata, dict[str, Any]]:
    """The selected field of a recon model: ``path`` is OUTDIR, ``model.safetensors`` or a checkpoint.

    Raises
    ------
    ModelFileError
        Not a recon model, or tensors that do not fit its configuration.
    """
    from stemtomo.errors import ModelFileError
    from stemtomo.recon.implicit.checkpoint import read_recon_file

    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    tensors, meta, info = read_recon_file(p)
    cfg = info["config"]
    names = {f.name for f in dataclasses.fields(FieldConfig)}
    fcfg = FieldConfig(**{k: v for k, v in (cfg.get("field") or {}).items() if k in names})
    field = build_field(fcfg, info["volume_shape"], float(info["length_unit_px"]),
                        coarse_to_fine=bool(cfg.get("coarse_to_fine")))
    prefix = "best.field." if info.get("role") == "checkpoint" else "field."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        field.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"{p}: tensors do not match the {fcfg.kind} field in the sidecar "
                             f"({str(exc).splitlines()[0]})") from None
    field.set_progress(1.0)
    return field.to(device).eval(), meta, info


def parse_crop(text: str | None, shape: Sequence[int]) -> tuple[slice, slice, slice] | None:
    """``"z0:z1,y0:y1,x0:x1"`` (empty parts = whole axis) → slices within ``shape``."""
    if not text:
        return None
    parts = text.split(",")
    if len(parts) != 3:
        raise ParameterError(f"--crop {text!r}: expected z0:z1,y0:y1,x0:x1 (e.g. 10:50,:,:)")
    out = []
    for part, n in zip(parts, shape, strict=True):
        try:
            lo, hi = (part.split(":") + [""])[:2] if ":" in part else ("", "")
            a, b = int(lo) if lo.strip() else 0, int(hi) if hi.strip() else n
        except ValueError:
            raise ParameterError(f"--crop {text!r}: bounds must be integers") from None
        if not 0 <= a < b <= n:
            raise ParameterError(f"--crop {text!r}: {a}:{b} is outside the axis of {n} voxels")
        out.append(slice(a, b))
    return out[0], out[1], out[2]


def plan(
    source_shape: Sequence[int], *, shape: Sequence[int] | None = None, bin_factor: int = 1,
    pixel_size_angstrom: float | None = None, source_pixel_angstrom: float | None = None,
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Output shape and per-axis scale (output voxel / source voxel) from ``--shape``/``--bin``/pixel size.

    ``--shape nz,ny,nx`` resamples the in-plane box onto ``ny × nx`` voxels; the z voxel size equals the x
    voxel size (cubic voxels, as the single recorded pixel size says), so ``nz`` chooses the depth of the
    output around the slab centre: a full-depth ``--shape 64`` of a 32-px slab of 64² images holds the
    slab in its 32 central planes and zeros elsewhere. ``--bin``/``--pixel-size`` scale all axes alike.

    Raises
    ------
    ParameterError
        More than one of the three given, ``--bin`` < 1, ``--shape`` off the in-plane aspect, ``--pixel-size`` not
        > 0 or without a source pixel size.
    """
    src = tuple(int(n) for n in source_shape)
    given = sum(x is not None for x in (shape, pixel_size_angstrom)) + (bin_factor != 1)
    if given > 1:
        raise ParameterError("use only one of --shape, --bin and --pixel-size")
    if bin_factor < 1:
        raise ParameterError(f"--bin {bin_factor}: must be ≥ 1")
    if shape is not None:
        out = tuple(int(n) for n in shape)
        sx, sy = src[2] / out[2], src[1] / out[1]
        if abs(sy - sx) > 1e-6 * sx:  # one pixel size is recorded: y and x voxels must be equal
            raise ParameterError(f"--shape {out[1]}×{out[2]} (y×x): not the model's in-plane aspect {src[1]}×{src[2]} "
                                 f"(voxels would not be square); e.g. {out[0]},{max(1, round(src[1] / sx))},{out[2]}")
        return (out[0], out[1], out[2]), (sx, sy, sx)
    if pixel_size_angstrom is not None:
        if not (math.isfinite(pixel_size_angstrom) and pixel_size_angstrom > 0):
            raise ParameterError(f"--pixel-size {pixel_size_angstrom}: must be a positive size in Å")
        if not source_pixel_angstrom:
            raise ParameterError("--pixel-size: the source pixel size is unknown; use --shape or --bin")
        f = pixel_size_angstrom / source_pixel_angstrom
        out = tuple(max(1, round(n / f)) for n in src)
        return (out[0], out[1], out[2]), (f, f, f)
    out = tuple(max(1, n // bin_factor) for n in src)
    return (out[0], out[1], out[2]), (float(bin_factor),) * 3


def _encode(block: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return block.astype(np.float32, copy=False)
    top = _INT_MAX[dtype]
    return np.rint(np.clip(block, 0.0, 1.0) * top).astype(ENCODINGS[dtype])


def scaling_record(dtype: str, lo: float = 0.0, hi: float = 1.0) -> dict[str, Any]:
    """How stored values map back to density: ``ρ = lo + value / scale · (hi - lo)``; ``dtype`` is the stored
    encoding (:func:`storage_dtype`)."""
    scale = _INT_MAX.get(dtype, 1.0)
    return {"dtype": dtype, "scale": scale, "lo": lo, "hi": hi, "meaning": "rho = lo + value / scale * (hi - lo)"}


def write_volume_chunks(
    path: Path, spec: ExportSpec, blocks: Callable[[int, int], np.ndarray], meta: Metadata, *,
    chunk_z: int = 8, progress: Callable[[int], None] | None = None, release_bytes: int = 64 << 20,
) -> Path:
    """Write a volume assembled from z-blocks ``blocks(z0, z1) -> (z1-z0, ny, nx)`` (values in output
    units, cropped grid) into a memory-mapped MRC/TIFF, temporary file renamed with its sidecar.

    Memory stays bounded by one block plus ``release_bytes`` of written pages (flushed and dropped from the
    resident set every ``release_bytes``); the MRC header statistics are accumulated block by block.

    Raises
    ------
    ParameterError
        Unknown encoding or layout, or an encoding the output format cannot store (int8 TIFF, uint8 MRC).
    InputError
        Unknown output suffix.
    """
    if path.suffix.lower() not in (*MRC_SUFFIXES, ".tif", ".tiff"):  # before the temporary file gets a name
        raise InputError(f"{path}: unknown output type {path.suffix!r}; use .mrc/.rec/.map or .tif")
    if spec.dtype not in ENCODINGS:
        raise ParameterError(f"--dtype {spec.dtype!r}: use float32, uint16 or uint8")
    if spec.dtype in ("int8", "uint8") and storage_dtype("uint8", path) != spec.dtype:
        raise ParameterError(f"{path.name}: {spec.dtype} cannot be stored in {path.suffix} (MRC: int8, TIFF: uint8)")
    if spec.layout not in LAYOUTS:
        raise ParameterError(f"--layout {spec.layout!r}: use xyz or xzy")
    nz, ny, nx = spec.shape
    if spec.crop is not None:
        nz, ny, nx = (s.stop - s.start for s in spec.crop)
    out_shape = (nz, ny, nx) if spec.layout == "xyz" else (ny, nz, nx)
    suffix = path.suffix.lower()
    stats = RunningStats()
    with AtomicOutputs() as out:
        tmp = out.temp(path)
        arr, closer = open_volume_for_writing(tmp, suffix, out_shape, ENCODINGS[spec.dtype], meta.pixel_size_angstrom)
        try:
            pending = 0
            for z0 in range(0, nz, chunk_z):
                z1 = min(nz, z0 + chunk_z)
                block = _encode(blocks(z0, z1), spec.dtype)
                stats.add(block)
                if spec.layout == "xyz":
                    arr[z0:z1] = block
                else:  # xzy[y, T-1-z, x] = xyz[z, y, x]
                    arr[:, nz - z1 : nz - z0, :] = block[::-1].transpose(1, 0, 2)
                pending += block.nbytes
                if pending >= release_bytes:
                    release_pages(arr)
                    pending = 0
                if progress is not None:
                    progress(z1 - z0)
        finally:
            closer(stats)
        m = meta.copy(kind="volume", shape=list(out_shape), axes="zyx" if spec.layout == "xyz" else "yzx")
        out.temp(sidecar_path(path)).write_text(dump_sidecar(m), encoding="utf-8")
    return path


def slab_planes(spec: ExportSpec) -> tuple[int, int]:
    """Planes ``[k0, k1)`` of the full output grid (before cropping) whose centres lie inside the slab.

    Plane ``k`` sits at ``z = (k - (nz-1)/2) · scale_z`` source voxels; it is inside when ``|z| ≤ slab_half_px``
    (up to 1e-6 voxel). Without a slab every plane is inside.
    """
    nz = spec.shape[0]
    if spec.slab_half_px is None:
        return 0, nz
    centre, reach = (nz - 1) / 2.0, spec.slab_half_px / spec.scale[0]
    k0 = max(0, math.ceil(centre - reach - 1e-6))
    k1 = min(nz, math.floor(centre + reach + 1e-6) + 1)
    return k0, max(k0, k1)


def field_blocks(field: Field, spec: ExportSpec) -> Callable[[int, int], np.ndarray]:
    """z-block sampler of ``field`` on the output grid of ``spec`` (crop applied); planes outside the slab
    (:func:`slab_planes`) are exactly 0 and never evaluated."""
    crop = spec.crop or (slice(0, spec.shape[0]), slice(0, spec.shape[1]), slice(0, spec.shape[2]))
    k0, k1 = slab_planes(spec)
    ny, nx = (s.stop - s.start for s in crop[1:])

    def blocks(z0: int, z1: int) -> np.ndarray:
        out = np.zeros((z1 - z0, ny, nx), dtype=np.float32)
        a, b = max(crop[0].start + z0, k0), min(crop[0].start + z1, k1)
        if a < b:
            vol = sample_volume(field, spec.shape, scale=spec.scale, z_range=(a, b))
            out[a - crop[0].start - z0 : b - crop[0].start - z0] = vol[:, crop[1], crop[2]].cpu().numpy()
        return out

    return blocks


def slab_half_thickness(field: Field, meta: Metadata, info: dict[str, Any]) -> float:
    """Half slab thickness (source voxels) a recon model was trained in: the sidecar's ``half_thickness_px``,
    else ``thickness_px / 2``, else half the field's depth."""
    if info.get("half_thickness_px") is not None:
        return float(info["half_thickness_px"])
    if meta.thickness_px:
        return float(meta.thickness_px) / 2.0
    return field.volume_shape[0] / 2.0


def bin_volume(volume: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean binning ``(nz, ny, nx)`` → ``(nz//f, ny//f, nx//f)`` (edge remainders dropped).

    Raises
    ------
    ParameterError
        ``factor`` < 1, or larger than the smallest axis (nothing would be left of it).
    """
    if factor < 1:
        raise ParameterError(f"--bin {factor}: must be ≥ 1")
    if factor > min(volume.shape):
        shape = "×".join(str(n) for n in volume.shape)
        raise ParameterError(f"--bin {factor}: larger than the volume ({shape} zyx); use at most {min(volume.shape)}")
    if factor == 1:
        return volume
    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    return torch.nn.functional.avg_pool3d(t, factor).numpy()[0, 0]


def reproject(
    field: Field, tilt_angles_deg: Sequence[float], thickness_px: float, contrast: str, kappa: float
) -> np.ndarray:
    """Intensities ``(n_tilts, ny, nx)`` of the field's volume (at its own resolution) at new angles."""
    from stemtomo.core.geometry import check_angles, length_unit_px
    from stemtomo.core.imaging import intensity
    from stemtomo.core.projector import forward_project

    angles = check_angles(tilt_angles_deg, option="--tilts")
    vol = sample_volume(field, field.volume_shape)
    p = forward_project(vol, angles, thickness_px=min(thickness_px, vol.shape[0]))
    return intensity(p / length_unit_px(vol.shape[1], vol.shape[2]), contrast, kappa).cpu().numpy()


def parse_tilts(text: str) -> list[float]:
    """``START:STOP:STEP`` (inclusive of STOP when it falls on the grid) → angles in degrees."""
    try:
        a, b, c = (float(x) for x in text.split(":"))
    except ValueError:
        raise ParameterError(f"--tilts {text!r}: expected START:STOP:STEP, e.g. -60:60:3") from None
    if c <= 0 or b < a:
        raise ParameterError(f"--tilts {text!r}: need STEP > 0 and STOP ≥ START")
    n = int(np.floor((b - a) / c + 1e-9)) + 1
    return [a + i * c for i in range(n)]


def open_volume_mmap(path: Path) -> tuple[np.ndarray, Callable[[], None]]:
    """Read-only memory map of an MRC/TIFF volume written by :func:`write_volume_chunks`, and its closer."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.memmap(str(path), mode="r")
        return arr, lambda: None
    import mrcfile

    mrc = mrcfile.mmap(str(path), mode="r", permissive=True)
    return mrc.data, mrc.close


def orthoslice_montage(path: Path, volume: np.ndarray) -> None:
    """Central xy, xz and yz slices side by side (grey, min–max over the volume) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stemtomo.io.safety import atomic_file

    nz, ny, nx = volume.shape
    lo, hi = float(volume.min()), float(volume.max())
    views = [("xy (z centre)", volume[nz // 2]), ("xz (y centre)", volume[:, ny // 2, :]),
             ("yz (x centre)", volume[:, :, nx // 2])]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), dpi=100)
    for ax, (title, img) in zip(axes, views, strict=True):
        ax.imshow(np.asarray(img, dtype=np.float32), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1,
                  origin="lower")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


__all__ = [
    "DTYPES",
    "ENCODINGS",
    "LAYOUTS",
    "ExportSpec",
    "bin_volume",
    "field_blocks",
    "load_field",
    "open_volume_mmap",
    "orthoslice_montage",
    "parse_crop",
    "parse_tilts",
    "plan",
    "reproject",
    "scaling_record",
    "slab_half_thickness",
    "slab_planes",
    "storage_dtype",
    "write_volume_chunks",
]
