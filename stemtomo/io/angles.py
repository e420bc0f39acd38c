"""Tilt-angle files: IMOD ``.rawtlt``/``.tlt`` and AreTomo angle files (``_TLT.txt``, ``-AngFile``; first column used)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stemtomo.errors import InputError, ParameterError

ANGLE_SUFFIXES = (".tlt", ".rawtlt")


def check_tilt_axis_angle(value: float) -> float:
    """``--tilt-axis-angle`` as a float, checked to be finite and within ±180° (degrees CCW from +y).

    Raises
    ------
    ParameterError
        NaN, infinite or beyond ±180°.
    """
    a = float(value)
    if not (math.isfinite(a) and abs(a) <= 180.0):
        raise ParameterError(f"--tilt-axis-angle {a!r}: must be a finite angle within ±180° (degrees)")
    return a


def check_axis_search_range(value: float) -> float:
    """``--axis-search-range`` (degrees either side of a given tilt-axis angle) as a float in (0°, 90°].

    Raises
    ------
    ParameterError
        NaN, infinite, ≤ 0 or beyond 90°.
    """
    r = float(value)
    if not (math.isfinite(r) and 0 < r <= 90):
        raise ParameterError(f"--axis-search-range {r:g}: must be in (0°, 90°]")
    return r


def read_angle_file(path: str | os.PathLike[str]) -> list[float]:
    """Read one tilt angle (degrees) per line; blank lines and ``#`` comments are ignored.

    Only the first whitespace-separated column is used (AreTomo files may carry more columns).

    Raises
    ------
    InputError
        If the file is missing, empty, or a line is not a number.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: angle file not found; check the path or pass --angles")
    raw = p.read_bytes()
    if b"\0" in raw[:4096]:  # an image stack (or other binary file) passed as --angles
        raise InputError(f"{p}: binary data, not an angle file (text, one angle in degrees per line)")
    angles: list[float] = []
    for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            value = float(text.replace(",", " ").split()[0])
        except ValueError:
            shown = line.strip() if len(line.strip()) <= 40 else line.strip()[:40] + "…"
            raise InputError(f"{p}:{lineno}: {shown!r} is not a tilt angle in degrees") from None
        if not np.isfinite(value):
            raise InputError(f"{p}:{lineno}: tilt angle {value} is not finite")
        angles.append(value)
    if not angles:
        raise InputError(f"{p}: angle file holds no angles")
    return angles


def format_angles(angles: Sequence[float]) -> str:
    """IMOD-style text: one angle per line with two decimals."""
    return "".join(f"{float(a):.2f}\n" for a in angles)


def find_angle_file(stack_path: str | os.PathLike[str]) -> Path | None:
    """An angle file beside the stack with the same stem, or None.

    ``ts.mrc`` → ``ts.tlt`` (IMOD, refined) > ``ts.rawtlt`` (IMOD, nominal) > ``ts_TLT.txt`` (AreTomo3).
    """
    p = Path(stack_path)
    for cand in (*(p.with_suffix(s) for s in ANGLE_SUFFIXES), p.with_name(p.stem + "_TLT.txt")):
        if cand.is_file():
            return cand
    return None


__all__ = ["ANGLE_SUFFIXES", "check_axis_search_range", "check_tilt_axis_angle", "find_angle_file", "format_angles", "read_angle_file"]
