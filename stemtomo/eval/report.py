"""Evaluation reports: one plain dictionary, written as YAML (``-o``) or JSON (``--json``).

Encoding of non-finite numbers
------------------------------
- YAML keeps them as YAML floats: ``.inf`` / ``-.inf`` / ``.nan`` (``yaml.safe_load`` reads them back as floats).
- JSON has no infinity, so :func:`to_json` writes ``+inf`` as the **string** ``"inf"`` (``-inf`` as ``"-inf"``)
  and NaN as ``null``. ``float("inf")`` parses the string back. PSNR of identical inputs is the usual case.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPORT_SCHEMA_VERSION = "1.0"

METRIC_KEYS = (
    "psnr_3d",
    "mse_3d",
    "ssim_3d",
    "dssim_3d",
    "psnr_2d",
    "mse_2d",
    "dssim_2d",
    "fsc_0143_angstrom",
    "fsc_05_angstrom",
    "holdout_error",
)
"""The flat keys a report may carry (plus ``psnr_2d_std``, ``mse_2d_std``, ``dssim_2d_std``, ``fsc_*_px``)."""


def plain(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and Paths to plain Python types, recursively."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_safe(value: Any) -> Any:
    """:func:`plain`, with ``±inf`` → ``"inf"``/``"-inf"`` and NaN → ``None`` (valid JSON)."""
    value = plain(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def to_json(report: Mapping[str, Any]) -> str:
    """The report as strict JSON (``allow_nan=False``: the encoding above is enforced)."""
    return json.dumps(json_safe(report), allow_nan=False)


def to_yaml(report: Mapping[str, Any]) -> str:
    """The report as plain YAML (``safe_dump``, keys in insertion order)."""
    return yaml.safe_dump(plain(report), sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)


def build_report(
    *,
    volume: str | None,
    reference: str | None,
    mode: str,
    results: Mapping[str, Any] | None,
    fsc: Mapping[str, Any] | None,
    notes: list[str],
    provenance: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Assemble the report: flat metric keys first, then details, notes and provenance.

    ``mode`` is ``volume``, ``stack`` or ``fsc``; ``results`` comes from
    :func:`~stemtomo.eval.evaluate.evaluate_volumes` / :func:`~stemtomo.eval.evaluate.evaluate_stacks`,
    ``fsc`` from :meth:`~stemtomo.eval.fsc.FscResult.to_dict` (plus the half-map paths).
    """
    out: dict[str, Any] = {"schema_version": REPORT_SCHEMA_VERSION, "kind": "metrics", "mode": mode}
    out["volume"] = volume
    out["reference"] = reference
    res = dict(results or {})
    for key in list(res):
        if key in METRIC_KEYS or key.endswith("_std"):
            out[key] = res.pop(key)
    if fsc is not None:
        f = dict(fsc)
        for key in list(f):
            if key.startswith("fsc_"):
                out[key] = f.pop(key)
        out["fsc"] = f
    out |= res
    out["notes"] = list(notes)
    out["provenance"] = [dict(provenance)] if provenance else []
    return out


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(metric, value, ± std)`` rows for a table, in a fixed order, only for metrics present."""
    rows: list[tuple[str, str, str]] = []
    for key in METRIC_KEYS + ("fsc_0143_px", "fsc_05_px"):
        if key not in report or report[key] is None:
            continue
        std = report.get(f"{key}_std")
        rows.append((key, _fmt(report[key]), "" if std is None else f"± {_fmt(std)}"))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


__all__ = ["METRIC_KEYS", "REPORT_SCHEMA_VERSION", "build_report", "json_safe", "plain", "summary_rows", "to_json", "to_yaml"]
