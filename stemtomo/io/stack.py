"""Read and write arrays together with their sidecars: the one entry point commands use.

``read_stack`` resolves tilt angles, pixel size and tilt-axis angle field by field with the precedence
explicit option > sidecar > angle file beside the stack (same stem: ``.tlt`` > ``.rawtlt`` >
``_TLT.txt``; angles only) > ``.mdoc`` beside the stack > MRC extended header (FEI1/FEI2, SerialEM,
Agard/old FEI; see :mod:`stemtomo.io.exthdr`) > the header's voxel size (pixel size only), cross-checks
the sidecar against the array, and checks that the angle count matches the number of images.
``write_image`` writes array + sidecar atomically (see :mod:`stemtomo.io.safety`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stemtomo.errors import InputError
from stemtomo.io.angles import check_tilt_axis_angle, find_angle_file, read_angle_file
from stemtomo.io.mrc import MRC_SUFFIXES, MrcHeaderInfo, read_mrc, write_mrc
from stemtomo.io.safety import AtomicOutputs, check_output
from stemtomo.io.sidecar import Metadata, dump_sidecar, load_sidecar_dict, sidecar_path
from stemtomo.io.tiff import TIFF_SUFFIXES, read_tiff, write_tiff

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Image:
    """An array read from disk with its metadata.

    Attributes
    ----------
    data : float32 array, ``(n_tilts, ny, nx)`` for tilt series, ``(nz, ny, nx)`` for volumes.
    meta : resolved metadata (sidecar merged with header, angle files and explicit options).
    path : the file it came from (None for arrays made in memory).
    header : MRC header information when read from MRC.
    sources : where each resolved field came from (``tilt_angles_deg`` → ``"sidecar"``, ...).
    """

    data: np.ndarray
    meta: Metadata
    path: Path | None = None
    header: MrcHeaderInfo | None = None
    sources: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def tilt_angles_deg(self) -> np.ndarray:
        """Tilt angles as a float64 array; raises if unknown."""
        if self.meta.tilt_angles_deg is None:
            raise InputError(
                f"{self.path}: no tilt angles found; pass --angles FILE (.rawtlt/.tlt) or put a .rawtlt beside it"
            )
        return np.asarray(self.meta.tilt_angles_deg, dtype=np.float64)


def _check_input_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an MRC or TIFF file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")


def read_array(path: str | os.PathLike[str]) -> tuple[np.ndarray, float | None, MrcHeaderInfo | None]:
    """Read MRC or TIFF by suffix: ``(float32 array (n, ny, nx), pixel size Å or None, MRC header or None)``."""
    p = Path(path)
    _check_input_file(p)
    suffix = p.suffix.lower()
    if suffix in (".gz", ".bz2", ".xz", ".zip", ".mrcz"):
        raise InputError(f"{p}: compressed files are not read directly; decompress it first (e.g. gunzip)")
    if suffix in MRC_SUFFIXES:
        data, info = read_mrc(p)
        return data, info.pixel_size_angstrom, info
    if suffix in TIFF_SUFFIXES:
        data, pixel = read_tiff(p)
        return data, pixel, None
    raise InputError(
        f"{p}: unknown file type {suffix!r}; use MRC ({', '.join(MRC_SUFFIXES)}) or TIFF (.tif, .tiff)"
    )


def check_finite(data: np.ndarray, path: Path | None, *, allow: bool = False) -> int:
    """Count non-finite values; raise unless ``allow`` (then a warning with the count is logged).

    Raises
    ------
    InputError
        If there are NaN/Inf values and ``allow`` is False; the message gives the count.
    """
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad and not allow:
        raise InputError(f"{path}: {bad} NaN/Inf values in the data; clean the file (e.g. IMOD clip) first")
    if bad:
        log.warning("%s: %d NaN/Inf values in the data", path, bad)
    return bad


def check_not_constant(data: np.ndarray, path: Path | None, what: str = "stack", consequence: str = "") -> None:
    """Raise :class:`InputError` naming the file if all values are equal (nothing to reconstruct, denoise, add
    noise to or correlate). ``what`` names the input ("stack", "half map"); ``consequence`` is appended."""
    if data.size and float(data.min()) == float(data.max()):
        unit = "pixel" if what == "stack" else "voxel"
        raise InputError(f"{path}: every {unit} is {float(data.min()):g}; a constant {what} holds no image "
                         f"information{consequence}")


def _sidecar_meta(path: Path, data: np.ndarray, kind: str) -> tuple[Metadata, set[str]]:
    """The sidecar's metadata (or defaults) and the keys it set, cross-checked against the array."""
    raw = load_sidecar_dict(path)
    if raw is None:
        return Metadata(kind=kind), set()
    meta = Metadata.from_dict(raw, source=str(sidecar_path(path)))
    if meta.shape is not None:
        shape = list(data.shape)
        if meta.shape != shape and not (data.shape[0] == 1 and meta.shape == shape[1:]):
            raise InputError(
                f"{path}: sidecar {sidecar_path(path).name} says shape {tuple(meta.shape)} but the file holds "
                f"{tuple(shape)}; the sidecar belongs to another file: fix or delete it"
            )
    return meta, {k for k, v in raw.items() if v is not None}


class _Lazy:
    """Header sources (``.mdoc``, extended header) parsed only when a field needs them."""

    def __init__(self, path: Path, header: MrcHeaderInfo | None) -> None:
        self.path, self.header = path, header
        self._mdoc: dict[str, Any] | None = None
        self._ext: dict[str, Any] | None = None

    def mdoc(self) -> dict[str, Any]:
        if self._mdoc is None:
            from stemtomo.io.mdoc import find_mdoc, read_mdoc_metadata

            found = find_mdoc(self.path)
            self._mdoc = read_mdoc_metadata(found) if found is not None else {}
        return self._mdoc

    def ext(self) -> dict[str, Any]:
        if self._ext is None:
            from stemtomo.io.exthdr import parse_extended_header

            self._ext = parse_extended_header(self.header) if self.header is not None else {}
        return self._ext


def resolve_stack_metadata(
    path: Path,
    data: np.ndarray,
    header: MrcHeaderInfo | None,
    header_pixel: float | None,
    *,
    angles: str | os.PathLike[str] | Sequence[float] | None = None,
    pixel_size_angstrom: float | None = None,
    tilt_axis_angle_deg: float | None = None,
) -> tuple[Metadata, dict[str, str]]:
    """Metadata of a tilt series and where each field came from (the angle count is not checked here).

    Precedence, per field: explicit argument > sidecar > angle file beside the stack (``.tlt`` >
    ``.rawtlt`` > ``_TLT.txt``, angles only) > ``.mdoc`` beside the stack > MRC extended header / title
    label > the MRC header's voxel size (pixel size only). Header sources are only parsed when needed, so a malformed
    ``.mdoc`` does not matter when the sidecar already has everything.

    Returns
    -------
    (Metadata, sources)
        ``sources`` maps ``tilt_angles_deg``, ``pixel_size_angstrom`` and ``tilt_axis_angle_deg`` to a
        description of their source (``"--angles"``, ``"sidecar"``, a file name, ...), and may hold
        ``header_tilt_axis_angle_deg``: an FEI header tilt axis that was not applied.
    """
    meta, keys = _sidecar_meta(path, data, "tilt_series")
    if meta.kind == "volume":
        raise InputError(f"{path}: sidecar says this is a volume, expected a tilt series")
    meta.kind, meta.axes, meta.shape = "tilt_series", "tyx", list(data.shape)
    lazy, sources = _Lazy(path, header), dict[str, str]()
    _resolve_angles(meta, keys, lazy, sources, angles)
    _resolve_pixel(meta, keys, lazy, sources, pixel_size_angstrom, header_pixel)
    _resolve_axis(meta, keys, lazy, sources, tilt_axis_angle_deg)
    return meta, sources


def _resolve_angles(meta: Metadata, keys: set[str], lazy: _Lazy, sources: dict[str, str],
                    angles: str | os.PathLike[str] | Sequence[float] | None) -> None:
    if angles is not None:
        if isinstance(angles, (str, os.PathLike)) and str(angles).lower().endswith(".mdoc"):
            from stemtomo.io.mdoc import read_mdoc_metadata

            found_angles = read_mdoc_metadata(angles).get("tilt_angles_deg")
            if found_angles is None:
                raise InputError(f"{angles}: the .mdoc has no TiltAngle entries; pass a .rawtlt/.tlt file")
            meta.tilt_angles_deg, sources["tilt_angles_deg"] = found_angles, str(angles)
        elif isinstance(angles, (str, os.PathLike)):
            meta.tilt_angles_deg, sources["tilt_angles_deg"] = read_angle_file(angles), str(angles)
        else:
            meta.tilt_angles_deg, sources["tilt_angles_deg"] = [float(a) for a in angles], "--angles"
    elif "tilt_angles_deg" in keys:
        sources["tilt_angles_deg"] = "sidecar"
    elif (found := find_angle_file(lazy.path)) is not None:
        meta.tilt_angles_deg, sources["tilt_angles_deg"] = read_angle_file(found), str(found)
    else:
        for src in (lazy.mdoc(), lazy.ext()):
            if src.get("tilt_angles_deg") is not None:
                meta.tilt_angles_deg = [float(a) for a in src["tilt_angles_deg"]]
                sources["tilt_angles_deg"] = src["source"]
                return


def _resolve_pixel(meta: Metadata, keys: set[str], lazy: _Lazy, sources: dict[str, str],
                   explicit: float | None, header_pixel: float | None) -> None:
    if explicit is not None:
        meta.pixel_size_angstrom, sources["pixel_size_angstrom"] = float(explicit), "--pixel-size"
    elif "pixel_size_angstrom" in keys:
        sources["pixel_size_angstrom"] = "sidecar"
    else:
        found = next((src() for src in (lazy.mdoc, lazy.ext) if src().get("pixel_size_angstrom")), None)
        if found is not None:
            meta.pixel_size_angstrom = float(found["pixel_size_angstrom"])
            sources["pixel_size_angstrom"] = found["source"]
        elif header_pixel is not None:
            meta.pixel_size_angstrom, sources["pixel_size_angstrom"] = header_pixel, "MRC/TIFF header"


def _resolve_axis(meta: Metadata, keys: set[str], lazy: _Lazy, sources: dict[str, str],
                  explicit: float | None) -> None:
    if explicit is not None:
        meta.tilt_axis_angle_deg = check_tilt_axis_angle(explicit)
        sources["tilt_axis_angle_deg"] = "--tilt-axis-angle"
        return
    if "tilt_axis_angle_deg" in keys:
        sources["tilt_axis_angle_deg"] = "sidecar"
        return
    found = next((src() for src in (lazy.mdoc, lazy.ext) if src().get("tilt_axis_angle_deg") is not None), None)
    if found is not None:
        meta.tilt_axis_angle_deg = float(found["tilt_axis_angle_deg"])
        sources["tilt_axis_angle_deg"] = found["source"]
    elif (unverified := lazy.ext().get("header_tilt_axis_angle_deg")) is not None:
        sources["header_tilt_axis_angle_deg"] = str(unverified)
        log.warning(
            "%s: the extended header gives a tilt axis of %.2f° (FEI convention, unverified against "
            "IMOD's); not applied: pass the tilt-axis angle explicitly to use it",
            lazy.path, unverified,
        )


def check_angle_count(meta: Metadata, n_images: int, path: Path | None, source: str | None = None) -> None:
    """Raise if the number of tilt angles differs from the number of images (naming both counts).

    Raises
    ------
    InputError
        If ``len(meta.tilt_angles_deg) != n_images``.
    """
    if meta.tilt_angles_deg is not None and len(meta.tilt_angles_deg) != n_images:
        where = f" (from {source})" if source else ""
        raise InputError(
            f"{path}: {len(meta.tilt_angles_deg)} tilt angles{where} but {n_images} images; "
            "the counts must match"
        )


def read_stack(
    path: str | os.PathLike[str],
    *,
    angles: str | os.PathLike[str] | Sequence[float] | None = None,
    pixel_size_angstrom: float | None = None,
    tilt_axis_angle_deg: float | None = None,
    require_angles: bool = False,
    allow_nonfinite: bool = False,
) -> Image:
    """Read a tilt series ``(n_tilts, ny, nx)`` with resolved angles, pixel size and tilt axis.

    Parameters
    ----------
    angles : an angle file (``.rawtlt``/``.tlt``/AreTomo text, or a SerialEM ``.mdoc``) or a sequence of
        angles (degrees); overrides every other source.
    pixel_size_angstrom, tilt_axis_angle_deg : explicit values override sidecar and headers.
    require_angles : raise if no angles can be found.
    allow_nonfinite : log a warning with the count of NaN/Inf values instead of raising.

    Precedence for each field: explicit argument > sidecar > angle file beside the stack (same stem)
    > ``.mdoc`` > extended header (see :func:`resolve_stack_metadata`).

    Raises
    ------
    InputError
        Missing/unreadable file, NaN/Inf values, a sidecar that does not match the array, angle count ≠
        image count, or (with require_angles) no angles.
    """
    p = Path(path)
    data, header_pixel, header = read_array(p)
    check_finite(data, p, allow=allow_nonfinite)
    meta, sources = resolve_stack_metadata(
        p, data, header, header_pixel,
        angles=angles, pixel_size_angstrom=pixel_size_angstrom, tilt_axis_angle_deg=tilt_axis_angle_deg,
    )
    check_angle_count(meta, data.shape[0], p, sources.get("tilt_angles_deg"))
    if any(src != "sidecar" for src in sources.values()):  # debug (-v): an error after this stays one line
        log.debug("%s: %s", p, "; ".join(f"{k} from {v}" for k, v in sources.items() if v != "sidecar"))
    if meta.tilt_angles_deg is None and require_angles:
        raise InputError(
            f"{p}: no tilt angles found; pass --angles FILE (.rawtlt/.tlt) or put "
            f"{p.with_suffix('.rawtlt').name} beside it"
        )
    return Image(data=data, meta=meta, path=p, header=header, sources=sources)


def read_volume(
    path: str | os.PathLike[str], *, pixel_size_angstrom: float | None = None, allow_nonfinite: bool = False
) -> Image:
    """Read a volume ``(nz, ny, nx)`` with its sidecar (pixel size: explicit > sidecar > header).

    Raises
    ------
    InputError
        Missing/unreadable file, NaN/Inf values (unless ``allow_nonfinite``), a sidecar of a tilt series or
        whose shape does not match the array.
    """
    p = Path(path)
    data, header_pixel, header = read_array(p)
    check_finite(data, p, allow=allow_nonfinite)
    meta, keys = _sidecar_meta(p, data, "volume")
    if meta.kind == "tilt_series":
        raise InputError(f"{p}: sidecar says this is a tilt series, expected a volume")
    meta.kind, meta.axes, meta.shape = "volume", "zyx", list(data.shape)
    if pixel_size_angstrom is not None:
        meta.pixel_size_angstrom = float(pixel_size_angstrom)
    elif "pixel_size_angstrom" not in keys:
        meta.pixel_size_angstrom = header_pixel
    return Image(data=data, meta=meta, path=p, header=header)


def write_image(
    path: str | os.PathLike[str],
    data: np.ndarray,
    meta: Metadata,
    *,
    overwrite: bool = False,
    provenance: dict[str, Any] | None = None,
    dtype: Any = np.float32,
) -> Path:
    """Write ``data`` (MRC or TIFF by suffix) and its sidecar atomically.

    The sidecar gets the array's shape, and ``provenance`` (from :func:`make_provenance`) is appended to
    ``meta.provenance``. Tilt series (``meta.kind == "tilt_series"``) are flagged as image stacks.

    Raises
    ------
    OutputError
        If the output (or its sidecar) exists without ``overwrite`` or the folder is not writable.
    InputError
        If the angle count in ``meta`` does not match the number of images.
    """
    p = check_output(path, overwrite)
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    is_stack = meta.kind == "tilt_series"
    if is_stack and meta.tilt_angles_deg is not None and len(meta.tilt_angles_deg) != arr.shape[0]:
        raise InputError(
            f"{p}: {len(meta.tilt_angles_deg)} tilt angles in the metadata but {arr.shape[0]} images"
        )
    out_meta = meta.copy()
    out_meta.shape = list(arr.shape)
    out_meta.axes = out_meta.axes or ("tyx" if is_stack else "zyx")
    if provenance is not None:
        out_meta.provenance = [*out_meta.provenance, provenance]
    suffix = p.suffix.lower()
    if suffix not in MRC_SUFFIXES + TIFF_SUFFIXES:
        raise InputError(f"{p}: unknown output type {suffix!r}; use .mrc (or .st/.ali/.rec/.map) or .tif")
    with AtomicOutputs() as out:
        tmp = out.temp(p)
        if suffix in MRC_SUFFIXES:
            write_mrc(tmp, arr, pixel_size_angstrom=meta.pixel_size_angstrom, is_stack=is_stack, dtype=dtype,
                      label=f"stemtomo: {meta.kind}")
        else:
            write_tiff(tmp, arr, pixel_size_angstrom=meta.pixel_size_angstrom, dtype=dtype)
        out.temp(sidecar_path(p)).write_text(dump_sidecar(out_meta), encoding="utf-8")
    return p


__all__ = [
    "Image",
    "check_angle_count",
    "check_finite",
    "check_not_constant",
    "read_array",
    "read_stack",
    "read_volume",
    "resolve_stack_metadata",
    "write_image",
]
