"""``stemtomo info``: what is in a file (shape, dtype, range, pixel size, angles, provenance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stemtomo.cli._common import DebugOpt, QuietOpt, VerboseOpt, handle_errors, setup, stdout_console


def info(
    file: Annotated[Path, typer.Argument(help="An MRC/TIFF stack or volume, or a stemtomo model file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show shape, dtype, value range, pixel size (Å), tilt angles, tilt axis, contrast and provenance."""
    setup(quiet, verbose, debug)
    from stemtomo.io.info import describe

    summary = describe(file)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    _print_table(summary)


def _print_table(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=str(summary.get("path", "")), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    angles = summary.get("tilt_angles_deg")
    for key, value in summary.items():
        if key in ("path", "tilt_angles_deg", "provenance"):
            continue
        table.add_row(key, _fmt(value))
    if angles:
        steps = [b - a for a, b in zip(angles, angles[1:], strict=False)]
        step = f", step {sum(steps) / len(steps):.2f}" if steps else ""
        table.add_row("tilt angles", f"{len(angles)}: {min(angles):.2f} … {max(angles):.2f}{step}")
    for record in summary.get("provenance") or []:
        table.add_row("provenance", f"{record.get('command')} (stemtomo {record.get('version')}, {record.get('time')})")
    stdout_console().print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], float):
        return ", ".join(f"{v:.6g}" for v in value)
    return str(value)


def register(app: typer.Typer) -> None:
    app.command("info")(handle_errors(info))
