"""Summaries of files for ``stemtomo info`` (library side: returns plain dicts, prints nothing).

Handles MRC/TIFF tilt series and volumes (with or without sidecar, including FEI and SerialEM files),
model files (``.safetensors``, ``.pt``/``.pth`` with their sidecar), angle files and ``.mdoc`` files,
and YAML/JSON documents stemtomo writes (sidecars, metrics). Problems that do not stop a summary (NaN/Inf values, an angle count that
does not match, a permissively read header) are listed under ``warnings`` instead of raised.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from stemtomo.errors import FileFormatError, InputError
from stemtomo.io.angles import ANGLE_SUFFIXES, read_angle_file
from stemtomo.io.sidecar import load_sidecar_dict, read_sidecar, sidecar_path
from stemtomo.io.stack import _sidecar_meta, read_array, resolve_stack_metadata

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth")
DOC_SUFFIXES = (".yaml", ".yml", ".json")
_MODE_NAMES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}


def _base(path: Path, kind: str) -> dict[str, Any]:
    return {
        "path": str(path),
        "kind": kind,
        "shape": None,
        "dtype": None,
        "pixel_size_angstrom": None,
        "tilt_angles_deg": None,
        "tilt_axis_angle_deg": None,
        "provenance": [],
        "warnings": [],
    }


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-ready summary of a file.

    Keys always present: ``path``, ``kind``, ``shape`` (list or None), ``dtype`` (str or None),
    ``pixel_size_angstrom``, ``tilt_angles_deg`` (list or None), ``tilt_axis_angle_deg``, ``provenance``
    and ``warnings`` (list of str). Arrays add ``min``, ``max``, ``mean``, ``std`` (over finite values),
    ``non_finite``, ``thickness_px``, ``contrast``, ``sources``; MRC files add ``mrc_mode``,
    ``extended_header``, ``y_inverted``; model files add ``tensors`` and ``n_parameters``.

    Raises
    ------
    InputError
        If the file is missing, a directory, empty, unreadable or malformed.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a file")
    suffix = p.suffix.lower()
    if suffix in MODEL_SUFFIXES:
        return _describe_model(p)
    if suffix in ANGLE_SUFFIXES or p.name.endswith("_TLT.txt") or suffix == ".mdoc":
        return _describe_angles(p)
    if suffix in DOC_SUFFIXES:
        data_file = p.with_name(p.stem) if suffix == ".yaml" else None
        if data_file is not None and data_file.is_file() and sidecar_path(data_file) == p:
            return describe(data_file)  # the sidecar of an array: describe the pair
        return _describe_document(p)
    return _describe_array(p)


def _describe_array(p: Path) -> dict[str, Any]:
    raw, header_pixel, header = read_array(p)
    sidecar = load_sidecar_dict(p)
    kind = str(sidecar.get("kind")) if sidecar and sidecar.get("kind") else (
        "volume" if header is not None and header.ispg >= 1 else "tilt_series")
    out = _base(p, kind)
    warnings: list[str] = out["warnings"]
    if kind == "volume" and not sidecar:
        # no sidecar and ispg says volume: many microscope stacks say so too; angles found anywhere
        # (angle file, .mdoc, extended header) make it a tilt series
        _, found = resolve_stack_metadata(p, raw, header, header_pixel)
        if "tilt_angles_deg" in found:
            kind = out["kind"] = "tilt_series"
    if kind == "tilt_series":
        meta, sources = resolve_stack_metadata(p, raw, header, header_pixel)
        if meta.tilt_angles_deg is not None and len(meta.tilt_angles_deg) != raw.shape[0]:
            warnings.append(
                f"{len(meta.tilt_angles_deg)} tilt angles (from {sources.get('tilt_angles_deg')}) but "
                f"{raw.shape[0]} images: commands will refuse this file"
            )
        if "header_tilt_axis_angle_deg" in sources:
            warnings.append(
                f"extended header tilt axis {float(sources['header_tilt_axis_angle_deg']):.2f}° "
                "(FEI convention, unverified) not applied"
            )
    else:
        meta, _ = _sidecar_meta(p, raw, kind)
        meta.pixel_size_angstrom = meta.pixel_size_angstrom or header_pixel
        sources = {}
    finite = raw[np.isfinite(raw)].astype(np.float64)
    bad = int(raw.size - finite.size)
    if bad:
        warnings.append(f"{bad} NaN/Inf values")
    if header is not None:
        warnings.extend(f"MRC header read permissively: {w}" for w in header.warnings)
        if header.y_inverted:
            warnings.append("rows stored top-first (FEI/Thermo MRC2014 or mapr = -2): flipped on read, as IMOD does")
    out.update(
        shape=list(raw.shape),
        dtype=_MODE_NAMES.get(header.mode, f"mode {header.mode}") if header is not None else _tiff_dtype(p),
        min=float(finite.min()) if finite.size else None,
        max=float(finite.max()) if finite.size else None,
        mean=float(finite.mean()) if finite.size else None,
        std=float(finite.std()) if finite.size else None,
        non_finite=bad,
        pixel_size_angstrom=meta.pixel_size_angstrom,
        tilt_angles_deg=meta.tilt_angles_deg,
        tilt_axis_angle_deg=meta.tilt_axis_angle_deg,
        thickness_px=meta.thickness_px,
        contrast=meta.contrast,
        provenance=meta.provenance,
        sources=sources,
        extra=meta.extra,
    )
    if kind == "tilt_series" and meta.contrast is None and meta.tilt_angles_deg is not None \
            and len(meta.tilt_angles_deg) == raw.shape[0] and raw.ndim == 3:
        from stemtomo.preprocess.contrast import guess_contrast

        guess = guess_contrast(raw, np.asarray(meta.tilt_angles_deg))  # what the commands would use
        out["contrast"] = guess.contrast or "bf"
        sources["contrast"] = (f"the images: {guess.describe()}" if guess.contrast
                               else "the default; not clear from the raw images (align reads its aligned images "
                                    "again), --contrast df for HAADF")
    if header is not None:
        if header.mode == 0 and header.unsigned_bytes:
            out["dtype"] = "uint8"
        out.update(mrc_mode=header.mode, extended_header=header.exttyp or None, y_inverted=header.y_inverted)
    return out


def _tiff_dtype(p: Path) -> str:
    import tifffile

    with tifffile.TiffFile(p) as tf:
        return str(tf.pages[0].dtype)  # type: ignore[union-attr]


def _describe_model(p: Path) -> dict[str, Any]:
    from stemtomo.io.modelfile import _load_tensors

    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")
    meta = read_sidecar(p)
    out = _base(p, meta.kind if meta else "model")
    tensors = _load_tensors(p)  # never executes code from the file
    out["tensors"] = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in tensors.items()}
    out["n_parameters"] = int(sum(int(v.numel()) for v in tensors.values()))
    if meta is None:
        out["warnings"].append(f"no sidecar {sidecar_path(p).name}: the model class is unknown")
        return out
    out.update(
        pixel_size_angstrom=meta.pixel_size_angstrom,
        tilt_angles_deg=meta.tilt_angles_deg,
        tilt_axis_angle_deg=meta.tilt_axis_angle_deg,
        provenance=meta.provenance,
        extra=meta.extra,
    )
    return out


def _describe_angles(p: Path) -> dict[str, Any]:
    """An angle file (``.rawtlt``/``.tlt``/``_TLT.txt``) or a SerialEM ``.mdoc``."""
    if p.suffix.lower() == ".mdoc":
        from stemtomo.io.mdoc import read_mdoc_metadata

        found = read_mdoc_metadata(p)
        out = _base(p, "mdoc")
        out.update(
            pixel_size_angstrom=found.get("pixel_size_angstrom"),
            tilt_angles_deg=found.get("tilt_angles_deg"),
            tilt_axis_angle_deg=found.get("tilt_axis_angle_deg"),
        )
        return out
    out = _base(p, "angles")
    out["tilt_angles_deg"] = read_angle_file(p)
    return out


def _describe_document(p: Path) -> dict[str, Any]:
    import yaml

    try:
        text = p.read_text(encoding="utf-8")
        doc = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FileFormatError(f"{p}: not valid {p.suffix[1:].upper()} ({first})") from None
    if not isinstance(doc, dict):
        raise FileFormatError(f"{p}: expected a mapping at the top level, got {type(doc).__name__}")
    out = _base(p, str(doc.get("kind", "document")))
    out.update(
        pixel_size_angstrom=doc.get("pixel_size_angstrom"),
        tilt_angles_deg=doc.get("tilt_angles_deg"),
        tilt_axis_angle_deg=doc.get("tilt_axis_angle_deg"),
        provenance=doc.get("provenance") or [],
        content={k: v for k, v in doc.items() if k != "provenance"},
    )
    return out


def angle_summary(angles: list[float] | None) -> dict[str, float | int] | None:
    """``{count, min, max, step}`` of tilt angles, or None.

    ``step`` is the median spacing of the sorted angles, so dose-symmetric orders (0, 3, −3, 6, …) give
    the increment too.
    """
    if not angles:
        return None
    a = np.asarray(angles, dtype=np.float64)
    step = float(np.median(np.diff(np.sort(a)))) if a.size > 1 else 0.0
    return {"count": int(a.size), "min": float(a.min()), "max": float(a.max()), "step": step}


__all__ = ["angle_summary", "describe"]
