"""Shared CLI pieces: the one rich console, common options, logging, progress bars and the error handler.

Each command module defines ``register(app)`` and wraps its function with :func:`handle_errors`, so that a
:class:`~stemtomo.errors.StemtomoError` becomes one red line on stderr and exit code 1 (a traceback only
with ``--debug``), also under ``typer.testing.CliRunner``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.exceptions import TyperException

from stemtomo.errors import StemtomoError

F = TypeVar("F", bound=Callable[..., Any])


class _State:
    quiet: bool = False
    verbose: bool = False
    debug: bool = False


STATE = _State()


def console() -> Console:
    """The CLI's console (stderr, so stdout stays clean for ``--json`` and pipes).

    ``emoji=False``: rich would otherwise turn ``:b:`` in a file name or option value (``--tilts a:b:c``)
    into an emoji, which :func:`rich.markup.escape` does not prevent.
    """
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def stdout_console() -> Console:
    """A console on stdout for tables and JSON the user asked for (no emoji codes, see :func:`console`)."""
    return Console(highlight=False, soft_wrap=True, emoji=False)


class ContrastChoice(str, Enum):
    """The ``--contrast`` choices: bright field (I = exp(-κP)) or dark field / HAADF (I = 1 - exp(-κP))."""

    bf = "bf"
    df = "df"


# ---- common options (Annotated aliases so every command spells them the same) ---------------------------
DeviceOpt = Annotated[
    str, typer.Option("--device", help="Compute device: auto (GPU if present), cpu, cuda or cuda:N.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; same inputs + seed → same outputs.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing outputs (refused by default).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only print errors.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Print debug log messages.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]


def setup(quiet: bool = False, verbose: bool = False, debug: bool = False) -> None:
    """Apply the verbosity options (per command; the top-level options are OR-ed in)."""
    STATE.quiet = STATE.quiet or quiet
    STATE.verbose = STATE.verbose or verbose or debug
    STATE.debug = STATE.debug or debug
    level = logging.ERROR if STATE.quiet else logging.DEBUG if STATE.verbose else logging.INFO
    root = logging.getLogger("stemtomo")
    root.handlers.clear()
    handler = RichHandler(console=console(), show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def info(message: str) -> None:
    """A one-line summary (suppressed by --quiet)."""
    if not STATE.quiet:
        console().print(message)


def _one_line(message: str) -> str:
    """Collapse a message to one line and escape rich markup (file names may contain ``[...]``)."""
    return escape(" ".join(part.strip() for part in str(message).splitlines() if part.strip()))


def warn(message: str) -> None:
    """A warning line (suppressed by --quiet); ``message`` is plain text, never rich markup."""
    if not STATE.quiet:
        console().print(f"[yellow]warning:[/yellow] {_one_line(message)}", markup=True, highlight=False)


def _error_line(message: str) -> None:
    console().print(f"[bold red]error:[/bold red] {_one_line(message)}", markup=True, highlight=False)


def handle_errors(fn: F) -> F:
    """Wrap a command: StemtomoError/OSError → one red line + exit 1 (``exc.exit_code``); Ctrl-C → exit 130.

    Usage errors raised inside the command (``typer.BadParameter``, ...) and ``typer.Exit``/``Abort``
    pass through to Typer (exit 2 for usage errors). Any other exception is an internal error: one line
    and exit 70, with the traceback under ``--debug``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except StemtomoError as exc:
            if STATE.debug:
                traceback.print_exc()
            _error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # disk full, permission denied, ... : name the file
            if STATE.debug:
                traceback.print_exc()
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            _error_line(f"{where}{exc.strerror or exc}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _error_line("interrupted")
            raise typer.Exit(130) from None
        except MemoryError:
            if STATE.debug:
                traceback.print_exc()
            _error_line("out of memory; use a smaller input, --device cpu, or a machine with more memory")
            raise typer.Exit(1) from None
        except Exception as exc:
            if STATE.debug:
                traceback.print_exc()
            if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (GPU), torch not imported here
                _error_line(f"out of GPU memory ({str(exc).splitlines()[0] if str(exc) else 'CUDA'}); reduce the "
                            "batch/chunk size or use --device cpu")
                raise typer.Exit(1) from None
            _error_line(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
            raise typer.Exit(70) from None
        finally:
            STATE.quiet = STATE.verbose = STATE.debug = False

    return wrapper  # type: ignore[return-value]


def resolve_device(spec: str) -> Any:
    """Resolve ``--device`` once (torch imported lazily so ``--help`` stays instant)."""
    from stemtomo.core.device import resolve_device as _resolve

    dev = _resolve(spec)
    logging.getLogger("stemtomo").debug("device: %s", dev)
    return dev


def options_dict(**kwargs: Any) -> dict[str, Any]:
    """Resolved options for provenance: Paths as strings, enums as values."""
    out: dict[str, Any] = {}
    for k, v in kwargs.items():
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, Enum):  # str-Enums too: YAML must get the plain value
            v = v.value
        elif isinstance(v, (list, tuple)):
            v = [str(x) if isinstance(x, Path) else x for x in v]
        out[k] = v
    return out


@contextmanager
def progress(description: str, total: float | None = None) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``advance(n=1, total=None, **fields)``. Disabled by --quiet."""
    disabled = STATE.quiet or not sys.stderr.isatty() and os.environ.get("STEMTOMO_PROGRESS") != "1"
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console(), disable=disabled, transient=False) as bar:
        task = bar.add_task(description, total=total, status="")

        def advance(n: float = 1, total: float | None = None, status: str | None = None) -> None:
            kw: dict[str, Any] = {"advance": n}
            if total is not None:
                kw["total"] = total
            if status is not None:
                kw["status"] = status
            bar.update(task, **kw)

        yield advance


def parse_shape(text: str, option: str, ndim: int = 3) -> tuple[int, ...]:
    """Parse ``"64"`` or ``"32,64,64"`` into a positive int tuple of length ``ndim``."""
    from stemtomo.errors import ParameterError

    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        raise ParameterError(f"{option} {text!r}: expected integers like 64 or 32,64,64") from None
    if len(parts) == 1:
        parts = parts * ndim
    if len(parts) != ndim or any(p <= 0 for p in parts):
        raise ParameterError(f"{option} {text!r}: expected {ndim} positive integers")
    return tuple(parts)


def first_line(items: Sequence[str]) -> str:
    return items[0] if items else ""


__all__ = [
    "STATE",
    "ContrastChoice",
    "DebugOpt",
    "DeviceOpt",
    "OverwriteOpt",
    "QuietOpt",
    "SeedOpt",
    "VerboseOpt",
    "console",
    "handle_errors",
    "info",
    "options_dict",
    "parse_shape",
    "progress",
    "resolve_device",
    "setup",
    "stdout_console",
    "warn",
]
