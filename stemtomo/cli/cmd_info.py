"""``stemtomo info``: what is in a file (shape, dtype, range, pixel size, angles, provenance)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from stemtomo.cli._common import DebugOpt, QuietOpt, VerboseOpt, handle_errors, setup, stdout_console, warn


def info(
    file: Annotated[
        Path,
        typer.Argument(
            help="An MRC/TIFF stack or volume, a model file (.safetensors/.pt), an angle file "
            "(.rawtlt/.tlt), a SerialEM .mdoc, or a stemtomo YAML/JSON file."
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout (keys: shape, dtype, pixel_size_angstrom, tilt_angles_deg, tilt_axis_angle_deg, ...).")
    ] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show shape, dtype, value range, pixel size (Å), tilt angles, tilt axis, contrast and provenance.

    Tilt angles and pixel size are resolved as every command resolves them: sidecar > angle file beside
    the stack (.tlt/.rawtlt) > .mdoc > MRC extended header (FEI1/FEI2, SerialEM, Agard).
    """
    setup(quiet, verbose, debug)
    from stemtomo.io.info import angle_summary, describe

    summary = describe(file)
    summary["tilt_angle_summary"] = angle_summary(summary.get("tilt_angles_deg"))
    if as_json:
        typer.echo(json.dumps(_jsonable(summary), default=str, allow_nan=False))
        return
    for message in summary.get("warnings") or []:
        warn(f"{file}: {message}")
    _print_table(summary)


def _jsonable(value: Any) -> Any:
    """Strict JSON: NaN/Inf become null (``json.dumps`` would write invalid ``NaN`` tokens)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


_SKIP = {"path", "tilt_angles_deg", "tilt_angle_summary", "provenance", "warnings", "sources", "extra",
         "content", "tensors"}


def _print_table(summary: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(str(summary.get("path", ""))), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    sources = summary.get("sources") or {}
    for key, value in summary.items():
        if key in _SKIP or value is None:
            continue
        origin = f"  (from {sources[key]})" if key in sources else ""
        table.add_row(key, Text(_fmt(value) + origin))
    stats = summary.get("tilt_angle_summary")
    if stats:
        origin = f"  (from {sources['tilt_angles_deg']})" if "tilt_angles_deg" in sources else ""
        table.add_row("tilt angles", Text(
            f"{stats['count']}: {stats['min']:.2f} … {stats['max']:.2f}, step {stats['step']:.2f}{origin}"))
    elif summary.get("shape") is not None and summary.get("kind") == "tilt_series":
        table.add_row("tilt angles", Text("unknown (pass --angles to commands, or put a .rawtlt beside the file)"))
    for name, (shape, dtype) in (summary.get("tensors") or {}).items():
        table.add_row("tensor", Text(f"{name} {tuple(shape)} {dtype}"))
    for key, value in {**(summary.get("extra") or {}), **(summary.get("content") or {})}.items():
        if key not in summary:  # kind, pixel size, ... already shown
            table.add_row(str(key), Text(_fmt(value)))
    for record in summary.get("provenance") or []:
        if isinstance(record, dict):
            inputs = ", ".join(Path(str(i.get("path", "?"))).name for i in record.get("inputs") or [] if isinstance(i, dict))
            text = f"{record.get('command')} (stemtomo {record.get('version')}, {record.get('time')})"
            table.add_row("provenance", Text(text + (f" ← {inputs}" if inputs else "")))
    stdout_console().print(table)


_LONG_LIST = 8
"""Longer lists (per-tilt shifts, transforms) are summarized in the table; ``--json`` gives them whole."""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and len(value) > _LONG_LIST:
        first = value[0]
        shape = f"{len(value)} × {len(first)}" if isinstance(first, (list, tuple)) else str(len(value))
        return f"[{shape} values: --json lists them]"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, float) for v in value):
        return ", ".join(f"{v:.6g}" for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def register(app: typer.Typer) -> None:
    app.command("info")(handle_errors(info))
