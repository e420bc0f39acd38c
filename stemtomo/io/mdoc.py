"""SerialEM ``.mdoc`` files (IMOD autodoc format): tilt angles, pixel size and tilt axis.

Format (SerialEM ``about_formats.htm``, CONVENTIONS.md §5): ``key = value`` lines; global keys first;
sections ``[ZValue = n]`` (0-based section of the stack) hold per-image keys such as ``TiltAngle``
(degrees) and ``PixelSpacing`` (Å); title sections ``[T = …]`` carry free text, e.g.
``Tilt axis angle = 85.3, binning = 1 …`` (IMOD RotationAngle convention, CCW from image +y).
``RotationAngle`` is measured from the image X axis, so the IMOD tilt-axis angle is ``RotationAngle − 90``
(used only when no title gives the angle). Other sections (``[FrameSet = …]``, ``[MontSection = …]``)
are kept but ignored. Values are kept as text; unknown keys are preserved.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from stemtomo.errors import FileFormatError, InputError
from stemtomo.io.exthdr import title_tilt_axis


@dataclasses.dataclass
class MdocFile:
    """A parsed ``.mdoc``.

    Attributes
    ----------
    global_keys : keys before the first section, values as text.
    titles : the text of every ``[T = …]`` section, in file order.
    sections : ``{z_value: {key: text}}`` of the ``[ZValue = n]`` sections.
    other_sections : ``(name, value, keys)`` of every other section, in file order.
    """

    global_keys: dict[str, str] = dataclasses.field(default_factory=dict)
    titles: list[str] = dataclasses.field(default_factory=list)
    sections: dict[int, dict[str, str]] = dataclasses.field(default_factory=dict)
    other_sections: list[tuple[str, str, dict[str, str]]] = dataclasses.field(default_factory=list)


def find_mdoc(stack_path: str | os.PathLike[str]) -> Path | None:
    """The ``.mdoc`` beside a stack: ``ts.mrc.mdoc`` (SerialEM's name) or ``ts.mdoc``; None if absent."""
    p = Path(stack_path)
    for cand in (p.with_name(p.name + ".mdoc"), p.with_suffix(".mdoc")):
        if cand.is_file():
            return cand
    return None


def read_mdoc(path: str | os.PathLike[str]) -> MdocFile:
    """Parse an ``.mdoc`` file.

    Raises
    ------
    InputError
        If the file is missing.
    FileFormatError
        If a line is neither blank, a section header nor ``key = value``, or a ZValue is not an integer
        or appears twice.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: .mdoc file not found; check the path")
    doc = MdocFile()
    current: dict[str, str] = doc.global_keys
    for lineno, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("[") and text.endswith("]"):
            name, _, value = text[1:-1].partition("=")
            name, value = name.strip(), value.strip()
            if name == "T":
                doc.titles.append(value)
                current = {}
            elif name == "ZValue":
                try:
                    z = int(value)
                except ValueError:
                    raise FileFormatError(f"{p}:{lineno}: [ZValue = {value}] is not an integer section") from None
                if z in doc.sections:
                    raise FileFormatError(f"{p}:{lineno}: [ZValue = {z}] appears twice; fix the .mdoc")
                current = doc.sections[z] = {}
            else:
                current = {}
                doc.other_sections.append((name, value, current))
            continue
        key, sep, value = text.partition("=")
        if not sep:
            raise FileFormatError(f"{p}:{lineno}: {text!r} is not a 'key = value' line; is this an .mdoc file?")
        current[key.strip()] = value.strip()
    return doc


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.split()[0])
    except (ValueError, IndexError):
        return None


def read_mdoc_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Tilt angles, pixel size and tilt axis from an ``.mdoc``.

    Returns
    -------
    dict
        ``source`` and any of ``tilt_angles_deg`` (one per ZValue, in Z order), ``pixel_size_angstrom``
        and ``tilt_axis_angle_deg`` (IMOD convention).

    Raises
    ------
    FileFormatError
        If the ZValues are not 0…n−1, or some but not all sections have a ``TiltAngle``, or a value is
        not a number.
    """
    p = Path(path)
    doc = read_mdoc(p)
    out: dict[str, Any] = {"source": str(p)}
    zs = sorted(doc.sections)
    if zs and zs != list(range(len(zs))):
        raise FileFormatError(f"{p}: ZValue sections are {zs[0]}…{zs[-1]} with gaps; expected 0…{len(zs) - 1}")
    tilts = [_float(doc.sections[z].get("TiltAngle")) for z in zs]
    present = [t for t in tilts if t is not None]
    if present and len(present) != len(tilts):
        missing = [z for z, t in zip(zs, tilts, strict=True) if t is None]
        raise FileFormatError(f"{p}: TiltAngle missing or not a number in sections {missing[:5]}")
    if present:
        out["tilt_angles_deg"] = [float(t) for t in present]
    pixel = _float(doc.global_keys.get("PixelSpacing"))
    if pixel is None and zs:
        pixel = _float(doc.sections[zs[0]].get("PixelSpacing"))
    if pixel is not None and pixel > 0:
        out["pixel_size_angstrom"] = pixel
    axis = title_tilt_axis(doc.titles)
    if axis is None:
        rotations = [_float(doc.sections[z].get("RotationAngle")) for z in zs]
        known = [r for r in rotations if r is not None]
        if known:
            axis = (float(np.median(known)) - 90.0 + 180.0) % 360.0 - 180.0
    if axis is not None:
        out["tilt_axis_angle_deg"] = axis
    return out


__all__ = ["MdocFile", "find_mdoc", "read_mdoc", "read_mdoc_metadata"]
