"""MRC reading and writing (MRC2014 via :mod:`mrcfile`).

Reading checks the header against the file size before any data is read, opens legacy headers
permissively with a warning, and returns float32 arrays in file order (``[section, row, column]``).
Writing produces valid MRC2014 (``mrcfile.validate`` passes): voxel size set, stacks flagged as image stacks
(ispg 0), volumes as volumes (ispg 1), origin 0, float32 unless asked otherwise.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stemtomo.errors import FileFormatError, InputError, ParameterError
from stemtomo.io._dtypes import cast_for_output

log = logging.getLogger(__name__)

MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali", ".rec", ".map", ".preali", ".mrcz")
HEADER_BYTES = 1024
_MODE_DTYPES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}
_MODE_NAMES = {3: "complex int16", 4: "complex float32", 16: "RGB", 101: "4-bit packed"}
_MAX_DIM = 1 << 17  # 131072 px along any axis is beyond any detector
IMOD_STAMP = 1146047817
#: dtypes :func:`write_mrc` accepts (MRC modes 2, 1, 6, 12, 0).
WRITE_DTYPES = (np.float32, np.int16, np.uint16, np.float16, np.int8)


@dataclass
class MrcHeaderInfo:
    """What stemtomo reads from an MRC header besides the data."""

    shape: tuple[int, int, int]
    mode: int
    pixel_size_angstrom: float | None
    ispg: int
    exttyp: str
    nversion: int
    extended_header: bytes = b""
    nint: int = 0
    nreal: int = 0
    labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    byte_order: str = "<"
    imod_stamp: bool = False
    imod_flags: int = 0
    y_inverted: bool = False
    unsigned_bytes: bool = False


def _read_raw_header(path: Path) -> dict[str, Any]:
    """Parse the fixed 1024-byte header with numpy, checking sizes before anything is allocated."""
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise FileFormatError(
            f"{path}: not an MRC file ({size} bytes, shorter than the 1024-byte header); check the file"
        )
    with open(path, "rb") as fh:
        raw = fh.read(HEADER_BYTES)
    stamp = raw[212:214]
    endian = ">" if stamp[:1] == b"\x11" else "<"
    ints = np.frombuffer(raw[:56], dtype=endian + "i4")
    nx, ny, nz, mode = (int(v) for v in ints[:4])
    if not (0 < nx <= _MAX_DIM and 0 < ny <= _MAX_DIM and 0 < nz <= _MAX_DIM * 8):
        # maybe the other byte order
        other = "<" if endian == ">" else ">"
        ints2 = np.frombuffer(raw[:56], dtype=other + "i4")
        if all(0 < int(v) <= _MAX_DIM * 8 for v in ints2[:3]):
            endian, ints = other, ints2
            nx, ny, nz, mode = (int(v) for v in ints[:4])
        else:
            raise FileFormatError(
                f"{path}: not a valid MRC file (header dimensions {nx}×{ny}×{nz} are absurd); check the file"
            )
    if mode not in _MODE_DTYPES:
        what = f" ({_MODE_NAMES[mode]})" if mode in _MODE_NAMES else ""
        raise FileFormatError(
            f"{path}: unsupported MRC mode {mode}{what}; supported modes are 0, 1, 2, 6, 12 "
            "(convert with IMOD newstack -mode 2)"
        )
    nsymbt = int(np.frombuffer(raw[92:96], dtype=endian + "i4")[0])
    if nsymbt < 0 or nsymbt > size:
        raise FileFormatError(f"{path}: extended header size {nsymbt} is invalid; the file is corrupt")
    itemsize = np.dtype(_MODE_DTYPES[mode]).itemsize
    need = HEADER_BYTES + nsymbt + nx * ny * nz * itemsize
    if size < need:
        raise FileFormatError(
            f"{path}: truncated MRC file: header promises {nx}×{ny}×{nz} mode-{mode} values "
            f"({need} bytes) but the file has {size} bytes; re-copy the file"
        )
    return {"raw": raw, "endian": endian, "shape": (nz, ny, nx), "mode": mode, "nsymbt": nsymbt, **_imod_fields(raw, endian)}


def _imod_fields(raw: bytes, endian: str) -> dict[str, Any]:
    """Fields IMOD interprets beyond MRC2014: byte signedness and Y inversion (CONVENTIONS §2.3, §2.6).

    Both follow IMOD's reader (``mrcfiles.c`` ``mrc_head_read``, ``b3dutil.c`` ``readBytesSigned``):
    rows are inverted in files without the IMOD stamp that are FEI-typed MRC2014 (nversion 20140) or
    have ``mapr = -2``; mode-0 bytes are signed when the IMOD flag says so or, without the IMOD stamp,
    when the header's min/max look signed.
    """

    def i4(offset: int) -> int:
        return int(np.frombuffer(raw[offset : offset + 4], dtype=endian + "i4")[0])

    nint, nreal = (int(v) for v in np.frombuffer(raw[128:132], dtype=endian + "i2"))
    stamp = i4(152) == IMOD_STAMP
    flags = i4(156) if stamp else 0
    nversion = i4(108)
    mapr = i4(68)
    exttyp = raw[104:108].decode("ascii", "replace")
    y_inverted = not stamp and ((exttyp.startswith("FEI") and nversion == 20140) or mapr == -2)
    if stamp:  # IMOD b3dutil.c readBytesSigned: the flag decides ...
        signed = bool(flags & 1)
    else:  # ... else the header's min/max: negative values and none above 127 mean signed
        dmin, dmax = (float(v) for v in np.frombuffer(raw[76:84], dtype=endian + "f4"))
        signed = (dmin < 0 and dmax < 128) or (dmin < 0 and dmax >= 128 and -dmin > dmax - 128)
    unsigned = not signed
    return {"nint": nint, "nreal": nreal, "imod_stamp": stamp, "imod_flags": flags,
            "y_inverted": y_inverted, "unsigned_bytes": unsigned}


def read_mrc(path: str | os.PathLike[str]) -> tuple[np.ndarray, MrcHeaderInfo]:
    """Read an MRC file as ``float32`` ``[section, row, column]`` plus header information.

    The header is checked against the file size before any data is read. Non-conforming headers
    (legacy files without ``MAP ``, bad machine stamp or axis map, zero grid size) are read permissively;
    each problem is logged as a warning and listed in ``MrcHeaderInfo.warnings``. FEI/Thermo files that
    IMOD reads as top-row-first are flipped in y (see ``MrcHeaderInfo.y_inverted``); mode-0 files are
    read as unsigned bytes where IMOD would (``unsigned_bytes``).

    Raises
    ------
    FileFormatError
        If the file is not MRC, truncated, or has an unsupported mode.
    """
    import mrcfile

    p = Path(path)
    raw = _read_raw_header(p)  # size and sanity checks before mrcfile maps anything
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mrc = mrcfile.mmap(p, mode="r", permissive=True)
        except (ValueError, OSError) as exc:
            raise FileFormatError(f"{p}: cannot read MRC file ({exc})") from None
        try:
            arr = _data_as_float32(p, mrc, raw, notes)
            info = _header_info(p, mrc.header, raw, arr.shape, notes)
        finally:
            mrc.close()
    notes.extend(str(w.message) for w in caught)
    for note in notes:
        log.warning("%s: read permissively: %s", p, note)
    return arr, info


def _data_as_float32(p: Path, mrc: Any, raw: dict[str, Any], notes: list[str]) -> np.ndarray:
    if mrc.data is None:
        raise FileFormatError(f"{p}: MRC header is invalid and no data could be mapped; check the file")
    data = np.asarray(mrc.data)
    if data.ndim == 2:
        data = data[None]
    elif data.ndim == 4:  # a volume stack (ispg 401): sections in file order, as IMOD reads them
        notes.append(f"volume stack of shape {data.shape} read as {data.shape[0] * data.shape[1]} sections")
        data = data.reshape(-1, *data.shape[2:])
    if raw["mode"] == 0 and raw["unsigned_bytes"]:
        data = data.view(np.uint8)  # IMOD: unsigned bytes (see _imod_fields)
    if raw["y_inverted"]:
        data = data[:, ::-1, :]  # FEI/Thermo top-row-first file: flip as IMOD does
        log.info("%s: rows stored top-first (FEI/Thermo MRC2014 or mapr = -2); flipped as IMOD does", p)
    with np.errstate(invalid="ignore"):  # signalling NaNs in float16 data: counted later, not warned
        return np.array(data, dtype=np.float32)  # copy out of the memory map


def _header_pixel_size(raw: bytes, endian: str) -> float | None:
    """IMOD's pixel spacing xlen/mx (Å), or None when the header does not define it."""
    mx = int(np.frombuffer(raw[28:32], dtype=endian + "i4")[0])
    xlen = float(np.frombuffer(raw[40:44], dtype=endian + "f4")[0])
    if mx <= 0 or not np.isfinite(xlen) or xlen <= 0:
        return None
    return xlen / mx


def _header_info(p: Path, h: Any, raw: dict[str, Any], shape: tuple[int, ...], notes: list[str]) -> MrcHeaderInfo:
    nlabl = min(10, max(0, int(h.nlabl)))
    return MrcHeaderInfo(
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        mode=int(h.mode),
        pixel_size_angstrom=_header_pixel_size(raw["raw"], raw["endian"]),
        ispg=int(h.ispg),
        exttyp=bytes(h.exttyp).decode("ascii", "replace").strip("\x00 "),
        nversion=int(h.nversion),
        extended_header=_read_extended_bytes(p, raw["nsymbt"]),
        nint=raw["nint"],
        nreal=raw["nreal"],
        labels=[bytes(lab).decode("ascii", "replace").strip("\x00 ") for lab in h.label[:nlabl]],
        warnings=notes,
        byte_order=raw["endian"],
        imod_stamp=raw["imod_stamp"],
        imod_flags=raw["imod_flags"],
        y_inverted=raw["y_inverted"],
        unsigned_bytes=raw["mode"] == 0 and raw["unsigned_bytes"],
    )


def _read_extended_bytes(path: Path, nbytes: int) -> bytes:
    """The raw extended header (``nbytes`` after the 1024-byte header; size already checked)."""
    if nbytes <= 0:
        return b""
    with open(path, "rb") as fh:
        fh.seek(HEADER_BYTES)
        return fh.read(nbytes)


def write_mrc(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    pixel_size_angstrom: float | None = None,
    is_stack: bool = False,
    dtype: Any = np.float32,
    label: str | None = None,
) -> None:
    """Write ``data`` (2D or 3D) as MRC2014. ``path`` is written directly: wrap with an atomic writer.

    Parameters
    ----------
    is_stack : mark the file as an image stack (ispg 0, tilt series) rather than a volume (ispg 1).
    dtype : float32 (mode 2, default), int16 (1), uint16 (6), float16 (12) or int8 (0). Integer output
        is rounded; values that do not fit are an error (rescale first), never silently wrapped.

    Raises
    ------
    ParameterError
        If ``dtype`` is not one of the above or the values do not fit it.
    """
    import mrcfile

    if np.dtype(dtype) not in [np.dtype(d) for d in WRITE_DTYPES]:
        raise ParameterError(
            f"{path}: MRC output dtype {np.dtype(dtype).name} is not supported; use float32, int16, uint16, float16 or int8"
        )
    arr = cast_for_output(data, dtype, path)
    if arr.ndim not in (2, 3):
        raise InputError(f"{path}: can only write 2D or 3D arrays as MRC, got shape {arr.shape}")
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr))) if arr.dtype.kind == "f" else 0
    if bad:
        log.warning("%s: writing %d NaN/Inf values", path, bad)
    with warnings.catch_warnings(), mrcfile.new(Path(path), overwrite=True) as mrc:
        # mrcfile warns about NaN/Inf while computing header statistics: logged above instead
        warnings.filterwarnings("ignore", message="Data array contains", category=RuntimeWarning)
        mrc.set_data(arr)
        if arr.ndim == 3:
            if is_stack:
                mrc.set_image_stack()
            else:
                mrc.set_volume()
        if pixel_size_angstrom is not None and pixel_size_angstrom > 0:
            mrc.voxel_size = float(pixel_size_angstrom)
            if is_stack and arr.ndim == 3:
                # set_image_stack sets mz = 1: keep zlen/mz = pixel size for IMOD (CONVENTIONS §6)
                mrc.header.cella.z = float(pixel_size_angstrom)
        mrc.header.origin = (0.0, 0.0, 0.0)
        if label:
            mrc.add_label(label[:80])
        mrc.update_header_stats()


__all__ = ["IMOD_STAMP", "MRC_SUFFIXES", "WRITE_DTYPES", "MrcHeaderInfo", "read_mrc", "write_mrc"]
