"""Summaries of files for ``stemtomo info`` (library side: returns plain dicts, prints nothing)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from stemtomo.io.sidecar import read_sidecar
from stemtomo.io.stack import read_array, read_stack


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-ready summary of an MRC/TIFF file (or a model file with a sidecar).

    Keys always present: ``path``, ``kind``, ``shape``, ``dtype``, ``pixel_size_angstrom``,
    ``tilt_angles_deg`` (list or None), ``tilt_axis_angle_deg``.
    """
    p = Path(path)
    if p.suffix == ".safetensors":
        meta = read_sidecar(p)
        return {
            "path": str(p),
            "kind": meta.kind if meta else "model",
            "shape": None,
            "dtype": None,
            "pixel_size_angstrom": meta.pixel_size_angstrom if meta else None,
            "tilt_angles_deg": None,
            "tilt_axis_angle_deg": meta.tilt_axis_angle_deg if meta else None,
            "provenance": meta.provenance if meta else [],
            "extra": meta.extra if meta else {},
        }
    raw, _, header = read_array(p)
    sidecar = read_sidecar(p)
    kind = sidecar.kind if sidecar else ("volume" if header is not None and header.ispg == 1 else "tilt_series")
    if kind == "tilt_series":
        img = read_stack(p)
        meta = img.meta
    else:
        meta = sidecar
    finite = raw[np.isfinite(raw)]
    summary: dict[str, Any] = {
        "path": str(p),
        "kind": kind,
        "shape": list(raw.shape),
        "dtype": _file_dtype(header, p),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "mean": float(finite.mean()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
        "non_finite": int(raw.size - finite.size),
        "pixel_size_angstrom": (meta.pixel_size_angstrom if meta and meta.pixel_size_angstrom else
                                header.pixel_size_angstrom if header else None),
        "tilt_angles_deg": meta.tilt_angles_deg if meta else None,
        "tilt_axis_angle_deg": meta.tilt_axis_angle_deg if meta else 0.0,
        "thickness_px": meta.thickness_px if meta else None,
        "contrast": meta.contrast if meta else None,
        "provenance": meta.provenance if meta else [],
    }
    if header is not None:
        summary["mrc_mode"] = header.mode
        summary["extended_header"] = header.exttyp or None
    return summary


def _file_dtype(header: Any, p: Path) -> str:
    if header is not None:
        return {0: "int8", 1: "int16", 2: "float32", 4: "complex64", 6: "uint16", 12: "float16"}.get(
            header.mode, f"mode {header.mode}"
        )
    import tifffile

    with tifffile.TiffFile(p) as tf:
        return str(tf.pages[0].dtype)  # type: ignore[union-attr]


__all__ = ["describe"]
