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
Integer dtypes store ``round(ρ·scale)``, with the scale recorded in the sidecar (``extra.scaling``).
"""

from __future__ import annotations

import dataclasses
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

DTYPES = {"float32": np.float32, "uint16": np.uint16, "uint8": np.uint8}
_INT_MAX = {"uint16": 65535.0, "uint8": 255.0}
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
    """``float32``, ``uint16`` (ρ·65535) or ``uint8`` (ρ·255)."""
    layout: str = "xyz"
    """``xyz`` (stemtomo/IMOD-rotated) or ``xzy`` (IMOD tilt raw order)."""


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
    """Output shape and per-axis scale (output voxel / source voxel) from ``--shape``/``--bin``/pixel size."""
    src = tuple(int(n) for n in source_shape)
    given = sum(x is not None for x in (shape, pixel_size_angstrom)) + (bin_factor != 1)
    if given > 1:
        raise ParameterError("use only one of --shape, --bin and --pixel-size")
    if bin_factor < 1:
        raise ParameterError(f"--bin {bin_factor}: must be ≥ 1")
    if shape is not None:
        out = tuple(int(n) for n in shape)
        return (out[0], out[1], out[2]), (src[0] / out[0], src[1] / out[1], src[2] / out[2])
    if pixel_size_angstrom is not None:
        if not source_pixel_angstrom:
            raise ParameterError("--pixel-size: the source pixel size is unknown; use --shape or --bin")
        f = pixel_size_angstrom / source_pixel_angstrom
        out = tuple(max(1, round(n / f)) for n in src)
        return (out[0], out[1], out[2]), (f, f, f)
    out = tuple(max(1, n // bin_factor) for n in src)
    return (out[0], out[1], out[2]), (float(bin_factor),) * 3


def _encode(block: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return block.astype(np.float32)
    top = _INT_MAX[dtype]
    return np.rint(np.clip(block, 0.0, 1.0) * top).astype(DTYPES[dtype])


def scaling_record(dtype: str, lo: float = 0.0, hi: float = 1.0) -> dict[str, Any]:
    """How stored values map back to density: ``ρ = lo + value / scale · (hi - lo)``."""
    scale = _INT_MAX.get(dtype, 1.0)
    return {"dtype": dtype, "scale": scale, "lo": lo, "hi": hi, "meaning": "rho = lo + value / scale * (hi - lo)"}


def write_volume_chunks(
    path: Path, spec: ExportSpec, blocks: Callable[[int, int], np.ndarray], meta: Metadata, *,
    chunk_z: int = 8, progress: Callable[[int], None] | None = None,
) -> Path:
    """Write a volume assembled from z-blocks ``blocks(z0, z1) -> (z1-z0, ny, nx)`` (values in output
    units, cropped grid) into a memory-mapped MRC/TIFF, temporary file renamed with its sidecar."""
    if spec.dtype not in DTYPES:
        raise ParameterError(f"--dtype {spec.dtype!r}: use float32, uint16 or uint8")
    if spec.layout not in LAYOUTS:
        raise ParameterError(f"--layout {spec.layout!r}: use xyz or xzy")
    nz, ny, nx = spec.shape
    if spec.crop is not None:
        nz, ny, nx = (s.stop - s.start for s in spec.crop)
    out_shape = (nz, ny, nx) if spec.layout == "xyz" else (ny, nz, nx)
    suffix = path.suffix.lower()
    with AtomicOutputs() as out:
        tmp = out.temp(path)
        arr, closer = _open_mmap(tmp, suffix, out_shape, DTYPES[spec.dtype], meta.pixel_size_angstrom)
        try:
            for z0 in range(0, nz, chunk_z):
                z1 = min(nz, z0 + chunk_z)
                block = _encode(blocks(z0, z1), spec.dtype)
                if spec.layout == "xyz":
                    arr[z0:z1] = block
                else:  # xzy[y, T-1-z, x] = xyz[z, y, x]
                    arr[:, nz - z1 : nz - z0, :] = block[::-1].transpose(1, 0, 2)
                if progress is not None:
                    progress(z1 - z0)
        finally:
            closer()
        m = meta.copy(kind="volume", shape=list(out_shape), axes="zyx" if spec.layout == "xyz" else "yzx")
        out.temp(sidecar_path(path)).write_text(dump_sidecar(m), encoding="utf-8")
    return path


def _open_mmap(tmp: Path, suffix: str, shape: tuple[int, int, int], dtype: Any,
               pixel: float | None) -> tuple[Any, Callable[[], None]]:
    if suffix in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.memmap(str(tmp), shape=shape, dtype=dtype, imagej=True,
                              resolution=(1 / pixel, 1 / pixel) if pixel else None)
        return arr, arr.flush
    if suffix not in (".mrc", ".rec", ".map"):
        raise InputError(f"{tmp.name}: unknown output type {suffix!r}; use .mrc/.rec/.map or .tif")
    import mrcfile

    # uint8 goes to mode 0, whose bytes IMOD reads as unsigned (mrcfile shows them as int8)
    mode = {np.float32: 2, np.uint16: 6, np.uint8: 0}[dtype]
    mrc = mrcfile.new_mmap(str(tmp), shape=shape, mrc_mode=mode, overwrite=True)
    mrc.set_volume()
    if pixel:
        mrc.voxel_size = float(pixel)

    def close() -> None:
        mrc.update_header_stats()
        mrc.close()

    return (mrc.data.view(np.uint8) if dtype is np.uint8 else mrc.data), close


def field_blocks(field: Field, spec: ExportSpec) -> Callable[[int, int], np.ndarray]:
    """z-block sampler of ``field`` on the output grid of ``spec`` (crop applied)."""
    crop = spec.crop or (slice(0, spec.shape[0]), slice(0, spec.shape[1]), slice(0, spec.shape[2]))

    def blocks(z0: int, z1: int) -> np.ndarray:
        zs = (crop[0].start + z0, crop[0].start + z1)
        vol = sample_volume(field, spec.shape, scale=spec.scale, z_range=zs)
        return vol[:, crop[1], crop[2]].cpu().numpy()

    return blocks


def bin_volume(volume: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean binning ``(nz, ny, nx)`` → ``(nz//f, ny//f, nx//f)`` (edge remainders dropped)."""
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
    """Read-only memory map of an MRC/TIFF volume written by :func:`write_volume_chunks` (mode-0 MRC bytes
    as unsigned), and its closer."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.memmap(str(path), mode="r")
        return arr, lambda: None
    import mrcfile

    mrc = mrcfile.mmap(str(path), mode="r", permissive=True)
    data = mrc.data.view(np.uint8) if mrc.data.dtype == np.int8 else mrc.data
    return data, mrc.close


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
    "write_volume_chunks",
]
