"""The ``stemtomo`` Typer application.

Command modules are imported by name and each registers itself through ``register(app)``; heavy imports
(torch, scipy) live inside the command functions so ``stemtomo --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

import typer

from stemtomo import __version__
from stemtomo.cli._common import DebugOpt, QuietOpt, VerboseOpt, setup

app = typer.Typer(
    name="stemtomo",
    help="Clean 3D tomograms from noisy STEM tilt series (Kniesel et al., CVPR 2022) and the toolchain around it.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

# Order here is the order in `stemtomo --help`: the natural pipeline.
COMMAND_MODULES = (
    "simulate",
    "noise",
    "denoise",
    "align",
    "wbp",
    "recon",
    "export",
    "eval",
    "info",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stemtomo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """stemtomo: STEM tilt series → clean tomograms. Commands read and write MRC/TIFF with YAML sidecars."""
    setup(quiet, verbose, debug)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"stemtomo.cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"stemtomo.cli.cmd_{name}":
                continue  # command not implemented yet: not registered
            raise
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())  # typer handles usage errors with exit code 2


if __name__ == "__main__":  # pragma: no cover
    main()
