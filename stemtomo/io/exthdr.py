"""MRC extended headers: tilt angles, pixel size and tilt axis from SerialEM, FEI/Thermo and Agard files.

Three layouts are decoded, following CONVENTIONS.md §2.4–2.6 (IMOD ``mrc_format.txt``,
``get_extra_header_tilts.f``; mrcfile ``dtypes.py``; AreTomo2 ``CLoadExtHeader.cpp``):

``SERI`` (SerialEM)
    ``nint`` = bytes per section, ``nreal`` = bit flags; items appear in flag order. Flag 1: tilt angle
    in degrees × 100 as int16 at the start of each record. Used whenever the flags add up to ``nint``
    (IMOD's test), whatever ``exttyp`` says. The tilt-axis angle comes from SerialEM's title label
    ``Tilt axis angle = …`` (IMOD RotationAngle convention).
``FEI1`` / ``FEI2`` (EPU, Tomography 5; MRC2014 ``exttyp``)
    One record per section, its length in the first field "Metadata size" (768 / 888 bytes).
    Alpha tilt f8 at byte 100 (degrees), pixel size X f8 at byte 156 (metres), used when "Bitmask 1"
    marks them valid (bits 7 and 14; an all-zero mask is trusted). As IMOD does
    (``extraheader.c``: ``getFeiExtHeadAngleScale``), tilts of files whose application version is
    ``4.4.0.4981`` are scaled by π/180. The byte order is the file's unless the size field only makes
    sense swapped. The FEI "Tilt axis angle" (f8 at 140) is reported but NOT applied: its convention
    relative to IMOD's is unverified.
Agard / old FEI (Xplore3D, TIA; ``AGAR`` or no type)
    ``nint`` int32 then ``nreal`` float32 per section; the tilt is the first float. When there are at
    least 12 floats (old FEI), float 11 is the pixel size in metres and float 10 the tilt axis (reported,
    not applied). IMOD's work-around for the FEI bug ``nint = 128, nreal = 32`` (set nint = 0) is applied,
    and a 131072-byte block (1024 × 128) with ``nint = nreal = 0``, as old FEI writers leave it, is read
    as the old FEI layout (32 floats per record).

Values are sanity-checked (tilts finite and within ±90°, not all zero; pixel size 0.01–10⁶ Å); a
layout that fails is ignored with a log warning rather than trusted.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from stemtomo.io.mrc import MrcHeaderInfo

log = logging.getLogger(__name__)

#: Bytes of each SerialEM item, in flag-bit order (IMOD ``nbytes_and_flags``).
SERI_ITEM_BYTES = (2, 6, 4, 2, 2, 4, 2, 4, 2, 4, 2)
#: Record length of FEI1 / FEI2 extended headers.
FEI_RECORD_BYTES = {"FEI1": 768, "FEI2": 888}
#: Size of the old FEI extended header: always 1024 records of 128 bytes.
OLD_FEI_BYTES = 1024 * 128
_FEI_ALPHA, _FEI_AXIS, _FEI_PIXEL = 100, 140, 156
_TITLE_AXIS = re.compile(r"tilt\s*axis\s*angle\s*=\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)", re.IGNORECASE)


def seri_bytes_for_flags(flags: int) -> int | None:
    """Bytes per section implied by SerialEM flags, or None if a flag is outside the known 11 bits."""
    if flags < 0 or flags >= 1 << len(SERI_ITEM_BYTES):
        return None
    return sum(n for bit, n in enumerate(SERI_ITEM_BYTES) if flags & (1 << bit))


def is_serialem_layout(nint: int, nreal: int) -> bool:
    """IMOD's test: ``nint`` bytes per section equal to what the ``nreal`` flags add up to."""
    implied = seri_bytes_for_flags(nreal)
    return implied is not None and implied > 0 and implied == nint


def parse_extended_header(header: MrcHeaderInfo) -> dict[str, Any]:
    """Tilt angles, pixel size and tilt axis from an MRC extended header (and SerialEM title labels).

    Parameters
    ----------
    header : the header information of :func:`stemtomo.io.mrc.read_mrc`; uses ``extended_header``
        (raw bytes), ``exttyp``, ``nint``, ``nreal``, ``shape`` (one record per section), ``byte_order``
        and ``labels``.

    Returns
    -------
    dict
        Any of ``tilt_angles_deg`` (list, one per section, degrees), ``pixel_size_angstrom`` (Å),
        ``tilt_axis_angle_deg`` (IMOD convention: CCW from image +y), ``header_tilt_axis_angle_deg``
        (FEI/Agard value, convention unverified, not applied) and ``source`` (a short description).
        Empty when nothing usable is found. Never raises on malformed content: it is logged and skipped.
    """
    ext = header.extended_header
    n = int(header.shape[0])
    exttyp = (header.exttyp or "").upper()
    order = getattr(header, "byte_order", "<")
    with np.errstate(all="ignore"):  # garbage bytes (signalling NaNs, ...) are checked, not warned about
        out: dict[str, Any] = _parse_layout(header, ext, n, exttyp, order) if ext and n > 0 else {}
    axis = title_tilt_axis(header.labels)
    if axis is not None:
        out["tilt_axis_angle_deg"] = axis
        out.setdefault("source", "MRC title label")
    return out


def _parse_layout(header: MrcHeaderInfo, ext: bytes, n: int, exttyp: str, order: str) -> dict[str, Any]:
    """Decode the records by layout: FEI1/FEI2 by type, SerialEM by IMOD's flag test, else Agard."""
    if exttyp in FEI_RECORD_BYTES:
        return _parse_fei(ext, n, exttyp, order)
    if is_serialem_layout(header.nint, header.nreal):
        return _parse_seri(ext, n, header.nint, header.nreal, order)
    if header.nreal > 0 or exttyp == "AGAR":
        return _parse_agard(ext, n, header.nint, header.nreal, order)
    if header.nint == 0 and header.nreal == 0 and len(ext) == OLD_FEI_BYTES and n <= 1024:
        # old FEI writers (Xplore3D/TIA) may leave nint = nreal = 0: the fixed 1024 × 128-byte block
        return _parse_agard(ext, n, 0, 32, order)
    return {}


def title_tilt_axis(labels: list[str]) -> float | None:
    """The ``Tilt axis angle = …`` value of a SerialEM title label (IMOD RotationAngle), or None."""
    for label in labels:
        m = _TITLE_AXIS.search(label)
        if m:
            return float(m.group(1))
    return None


def _valid_tilts(tilts: np.ndarray, what: str) -> list[float] | None:
    if tilts.size == 0:
        return None
    if not np.all(np.isfinite(tilts)) or np.any(np.abs(tilts) > 90.0):
        log.warning("%s extended header: tilt angles outside ±90° or not finite; ignored", what)
        return None
    if tilts.size > 1 and not np.any(tilts):
        log.warning("%s extended header: all tilt angles are 0; ignored", what)
        return None
    return [float(t) for t in tilts]


def _valid_pixel(metres: float, what: str) -> float | None:
    angstrom = float(metres) * 1e10
    if np.isfinite(angstrom) and 0.01 <= angstrom <= 1e6:
        return angstrom
    if metres != 0:
        log.warning("%s extended header: pixel size %g m is implausible; ignored", what, metres)
    return None


def _parse_seri(ext: bytes, n: int, nint: int, flags: int, order: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not flags & 1:
        return out  # no tilt angles recorded
    count = min(n, len(ext) // nint)
    if count < n:
        log.warning("SerialEM extended header holds %d records for %d sections; tilts ignored", count, n)
        return out
    records = np.frombuffer(ext[: n * nint], dtype=np.uint8).reshape(n, nint)
    tilts = records[:, :2].copy().view(order + "i2").reshape(n).astype(np.float64) / 100.0
    valid = _valid_tilts(tilts, "SerialEM")
    if valid is not None:
        out["tilt_angles_deg"] = valid
        out["source"] = "SerialEM extended header"
    return out


def _parse_fei(ext: bytes, n: int, exttyp: str, order: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if len(ext) < 8:
        return out
    other = ">" if order == "<" else "<"
    size = 0
    sizes = {bo: int(np.frombuffer(ext[:4], dtype=bo + "i4")[0]) for bo in (order, other)}
    for bo, cand in sizes.items():  # a known record length in either byte order
        if cand in FEI_RECORD_BYTES.values():
            size, order = cand, bo
            break
    else:
        for bo, cand in sizes.items():  # a future metadata version: any length that holds our fields
            if _FEI_PIXEL + 16 <= cand <= len(ext):
                size, order = cand, bo
                break
    if size == 0:
        log.warning("%s extended header: record size field is invalid; ignored", exttyp)
        return out
    if len(ext) < n * size:
        log.warning("%s extended header: %d bytes for %d records of %d; ignored", exttyp, len(ext), n, size)
        return out
    records = np.frombuffer(ext[: n * size], dtype=np.uint8).reshape(n, size)

    def field(offset: int) -> np.ndarray:
        return records[:, offset : offset + 8].copy().view(order + "f8").reshape(n)

    # Bitmask 1 (little-endian u4 @8) marks valid fields, in field order: bit 7 alpha tilt, bit 12 tilt
    # axis, bit 14 pixel size X (IMOD uses bit 7). A writer that leaves it all zero is trusted, with checks.
    mask = int(records[0, 8:12].copy().view("<u4")[0])

    def valid(bit: int) -> bool:
        return mask == 0 or bool(mask >> bit & 1)

    if valid(7):
        alpha = field(_FEI_ALPHA)
        if bytes(records[0, 68:78]) == b"4.4.0.4981":
            alpha = alpha * (np.pi / 180.0)  # IMOD getFeiExtHeadAngleScale: this EPU version's unit bug
        tilts = _valid_tilts(alpha, exttyp)
        if tilts is not None:
            out["tilt_angles_deg"] = tilts
    pixel = _valid_pixel(float(field(_FEI_PIXEL)[0]), exttyp) if valid(14) else None
    if pixel is not None:
        out["pixel_size_angstrom"] = pixel
    axis = float(field(_FEI_AXIS)[0])
    if valid(12) and np.isfinite(axis) and axis != 0.0:
        out["header_tilt_axis_angle_deg"] = axis
    if out:
        out["source"] = f"{exttyp} extended header"
    return out


def _parse_agard(ext: bytes, n: int, nint: int, nreal: int, order: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if nint == 128 and nreal == 32:
        nint = 0  # FEI bug worked around by IMOD (libiimod/mrcfiles.c)
    if nint < 0 or nreal <= 0:
        return out
    record = 4 * (nint + nreal)
    if len(ext) < n * record:
        log.warning("Agard extended header: %d bytes for %d records of %d; ignored", len(ext), n, record)
        return out
    raw = np.frombuffer(ext[: n * record], dtype=np.uint8).reshape(n, record)
    floats = raw[:, 4 * nint :].copy().view(order + "f4").reshape(n, nreal).astype(np.float64)
    tilts = _valid_tilts(floats[:, 0], "Agard/FEI")
    if tilts is not None:
        out["tilt_angles_deg"] = tilts
    if nreal >= 12:
        pixel = _valid_pixel(float(floats[0, 11]), "Agard/FEI")
        if pixel is not None:
            out["pixel_size_angstrom"] = pixel
        axis = float(floats[0, 10])
        if np.isfinite(axis) and axis != 0.0:
            out["header_tilt_axis_angle_deg"] = axis
    if out:
        out["source"] = "Agard/FEI extended header"
    return out


__all__ = [
    "FEI_RECORD_BYTES",
    "OLD_FEI_BYTES",
    "SERI_ITEM_BYTES",
    "is_serialem_layout",
    "parse_extended_header",
    "seri_bytes_for_flags",
    "title_tilt_axis",
]
