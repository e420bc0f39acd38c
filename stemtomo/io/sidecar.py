"""YAML sidecars: ``<file>.yaml`` beside every file stemtomo writes.

The sidecar holds what the array cannot: kind, pixel size, tilt angles, tilt-axis angle, slab thickness,
contrast, intensity normalization and a provenance list. Unknown keys are preserved on read and written
back unchanged. The schema is versioned ``MAJOR.MINOR``: a newer MAJOR is refused, a newer MINOR is read.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from stemtomo.errors import InputError

SCHEMA_VERSION = "1.0"
SCHEMA_MAJOR = 1
KINDS = ("tilt_series", "volume", "noise_model", "model", "metrics", "image")

_KNOWN = (
    "schema_version",
    "kind",
    "axes",
    "shape",
    "pixel_size_angstrom",
    "tilt_angles_deg",
    "tilt_axis_angle_deg",
    "thickness_px",
    "contrast",
    "kappa",
    "normalization",
    "provenance",
)


@dataclasses.dataclass
class Metadata:
    """Everything stemtomo knows about an array beyond its values.

    Attributes
    ----------
    kind : one of ``tilt_series``, ``volume``, ``noise_model``, ``model``, ``metrics``, ``image``.
    axes : axis names in array order, ``"tyx"`` for tilt series, ``"zyx"`` for volumes.
    shape : array shape, cross-checked against the array when both are known.
    pixel_size_angstrom : pixel (voxel) size in Å, or None if unknown.
    tilt_angles_deg : one angle per image in stack order (degrees), or None.
    tilt_axis_angle_deg : in-plane angle of the tilt axis, CCW from the image +y axis (IMOD RotationAngle).
    thickness_px : specimen slab thickness in pixels, or None if unknown.
    contrast : ``"bf"`` (bright field, I = exp(-κ∫ρ)) or ``"df"`` (dark field, I = 1 - exp(-κ∫ρ)), or None.
    kappa : attenuation constant κ of the image formation model, or None.
    normalization : how intensities were normalized (method, lo, hi, ...), or None.
    provenance : list of provenance records, oldest first (see :func:`make_provenance`).
    extra : every other key, preserved verbatim (command-specific parameters, unknown keys).
    """

    kind: str = "tilt_series"
    axes: str | None = None
    shape: list[int] | None = None
    pixel_size_angstrom: float | None = None
    tilt_angles_deg: list[float] | None = None
    tilt_axis_angle_deg: float = 0.0
    thickness_px: float | None = None
    contrast: str | None = None
    kappa: float | None = None
    normalization: dict[str, Any] | None = None
    provenance: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML dictionary (schema version first, extra keys last)."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = _plain(value)
        for key, value in self.extra.items():
            if key not in out:
                out[key] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "sidecar") -> Metadata:
        """Build from a parsed sidecar, checking the schema version and types."""
        version = str(data.get("schema_version", SCHEMA_VERSION))
        try:
            major = int(version.split(".")[0])
        except ValueError:
            raise InputError(f"{source}: schema_version {version!r} is not of the form MAJOR.MINOR") from None
        if major > SCHEMA_MAJOR:
            raise InputError(
                f"{source}: sidecar schema version {version} is newer than this stemtomo understands "
                f"({SCHEMA_VERSION}); upgrade stemtomo or remove the sidecar"
            )
        kw: dict[str, Any] = {}
        for key in _KNOWN[1:]:
            if key in data and data[key] is not None:
                kw[key] = data[key]
        try:
            meta = cls(**kw, extra={k: v for k, v in data.items() if k not in _KNOWN})
            meta._coerce()
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: malformed sidecar field ({exc}); fix or remove the sidecar") from None
        return meta

    def _coerce(self) -> None:
        if self.pixel_size_angstrom is not None:
            self.pixel_size_angstrom = float(self.pixel_size_angstrom)
        if self.tilt_angles_deg is not None:
            self.tilt_angles_deg = [float(a) for a in self.tilt_angles_deg]
        self.tilt_axis_angle_deg = float(self.tilt_axis_angle_deg)
        if self.thickness_px is not None:
            self.thickness_px = float(self.thickness_px)
        if self.kappa is not None:
            self.kappa = float(self.kappa)
        if self.shape is not None:
            self.shape = [int(s) for s in self.shape]
        if not isinstance(self.provenance, list):
            raise ValueError("provenance must be a list")

    def copy(self, **changes: Any) -> Metadata:
        """A deep copy with some fields replaced."""
        new = Metadata.from_dict(self.to_dict())
        return dataclasses.replace(new, **changes)


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays, Paths and tuples to plain YAML types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist())
    if isinstance(value, float) and value != value:  # NaN stays readable
        return float("nan")
    return value


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``ts.mrc`` → ``ts.mrc.yaml``."""
    p = Path(path)
    return p.with_name(p.name + ".yaml")


def read_sidecar(path: str | os.PathLike[str], *, advice: str = "fix or delete it") -> Metadata | None:
    """Read the sidecar of ``path`` (the data file, not the yaml), or None if there is none. ``advice`` ends
    the error message of a damaged sidecar (an image is readable without one; a model file is not).

    Raises
    ------
    InputError
        If the sidecar is not valid YAML, not a mapping, or has a newer major schema version.
    """
    data = load_sidecar_dict(path, advice=advice)
    return None if data is None else Metadata.from_dict(data, source=str(sidecar_path(path)))


def load_sidecar_dict(path: str | os.PathLike[str], *, advice: str = "fix or delete it") -> dict[str, Any] | None:
    """The parsed sidecar of ``path`` as a plain dictionary (None if there is none); schema not checked.

    Raises
    ------
    InputError
        If the sidecar is not valid YAML or not a mapping.
    """
    sc = sidecar_path(path)
    if not sc.exists():
        return None
    if not sc.is_file():
        raise InputError(f"{sc}: sidecar path is not a file; remove it")
    try:
        data = yaml.safe_load(sc.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{sc}: malformed YAML sidecar ({first}); {advice}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{sc}: sidecar must be a YAML mapping, got {type(data).__name__}; {advice}")
    return data


def dump_sidecar(meta: Metadata) -> str:
    """The YAML text of a sidecar."""
    return yaml.safe_dump(meta.to_dict(), sort_keys=False, default_flow_style=None, width=120)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def make_provenance(
    command: str,
    options: Mapping[str, Any] | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, Any]:
    """One provenance record: command, stemtomo version, UTC time, resolved options, inputs with SHA-256."""
    from stemtomo import __version__

    return {
        "command": command,
        "version": __version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "options": _plain(dict(options or {})),
        "inputs": [
            {"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in inputs if Path(p).is_file()
        ],
    }


__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "Metadata",
    "dump_sidecar",
    "load_sidecar_dict",
    "make_provenance",
    "read_sidecar",
    "sha256_file",
    "sidecar_path",
]
