"""Man pages: generated from the live Typer app by scripts/gen_man.py, deterministic, checked for staleness."""

from __future__ import annotations

import enum
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import pytest
import typer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gen_man() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_man", REPO / "scripts" / "gen_man.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_man"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_man_pages_match_the_live_app(gen_man: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """CI check: regenerate with `python scripts/gen_man.py` when a command's options or help change."""
    code = gen_man.main(["--check"])
    assert code == 0, capsys.readouterr().err


class Method(str, enum.Enum):
    fast = "fast"
    slow = "slow"


def _toy_app() -> typer.Typer:
    app = typer.Typer(rich_markup_mode="rich", help="Toy program.")
    noise = typer.Typer(help="Noise tools.")

    @app.command("run")
    def run(
        src: Annotated[Path, typer.Argument(help="Input [bold]stack[/bold].")],
        method: Annotated[Method, typer.Option("--method", help="Which method.")] = Method.fast,
        steps: Annotated[int, typer.Option("--steps", "-n", help="Steps.")] = 3,
        out: Annotated[Path, typer.Option("--out", "-o", help="Output.")] = ...,  # type: ignore[assignment]
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace.")] = False,
    ) -> None:
        """Run it, e.g. quickly. Reads [ZValue = n] sections.

        .dots at the start of a line and a back\\slash must be escaped.

        - first item
        - second item
        """

    @noise.command("fit")
    def fit(stack: Annotated[Path, typer.Argument(help="Stack.")]) -> None:
        """Fit a model."""

    app.add_typer(noise, name="noise")
    return app


def test_pages_for_every_command_including_sub_commands(gen_man: ModuleType) -> None:
    pages = gen_man.render_pages(_toy_app())
    assert set(pages) == {"stemtomo.1", "stemtomo-run.1", "stemtomo-noise.1", "stemtomo-noise-fit.1"}
    run = pages["stemtomo-run.1"]
    assert '.TH "STEMTOMO-RUN" "1" ""' in run
    assert "stemtomo\\-run \\- Run it, e.g. quickly. Reads [ZValue = n] sections." in run  # not cut at "e.g."
    assert ".B stemtomo run\n[OPTIONS] SRC" in run
    assert "\\fB\\-\\-method\\fR \\fI[fast|slow]\\fR\nWhich method. [default: fast]" in run
    assert "\\fB\\-\\-steps, \\-n\\fR \\fIINT\\fR\nSteps. [default: 3]" in run
    assert "Output. [required]" in run
    assert "\\fB\\-\\-overwrite\\fR\nReplace." in run  # a flag: no placeholder, no "default: false"
    assert "Input stack." in run and "[bold]" not in run  # rich markup stripped, other brackets kept
    assert "\\&.dots at the start" in run and "back\\eslash" in run  # roff escapes
    assert run.count(".IP \\(bu 2") == 2
    assert ".BR stemtomo (1)" in run
    root = pages["stemtomo.1"]
    assert "\\fBrun\\fR\nRun it" in root and "\\fBnoise\\fR\nNoise tools." in root
    assert ".BR stemtomo\\-noise\\-fit (1)" in pages["stemtomo-noise.1"]
    assert ".B stemtomo noise fit\n[OPTIONS] STACK" in pages["stemtomo-noise-fit.1"]


def test_output_is_deterministic(gen_man: ModuleType) -> None:
    first, second = gen_man.render_pages(_toy_app()), gen_man.render_pages(_toy_app())
    assert first == second
    text = "".join(first.values())
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text)  # no dates
    assert not re.search(r"\b(January|February|March|April|May|June|July|August|September|October|November|December)\b", text)


def test_check_names_stale_missing_and_extra_pages(gen_man: ModuleType, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pages = gen_man.render_pages(_toy_app())
    assert gen_man.write_pages(tmp_path, pages) == [f"missing {n}" for n in sorted(pages)]
    assert gen_man.check_pages(tmp_path, pages) == []
    (tmp_path / "stemtomo-run.1").write_text(pages["stemtomo-run.1"].replace("Steps.", "Iterations."))
    (tmp_path / "stemtomo-noise-fit.1").unlink()
    (tmp_path / "stemtomo-gone.1").write_text("old command\n")
    (tmp_path / "README").write_text("not a page\n")
    problems = gen_man.check_pages(tmp_path, pages)
    assert problems == ["missing stemtomo-noise-fit.1", "stale stemtomo-run.1", "extra stemtomo-gone.1"]
    gen_man.write_pages(tmp_path, pages)
    assert gen_man.check_pages(tmp_path, pages) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*pages, "README"])


def test_check_mode_exit_code_and_message(gen_man: ModuleType, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert gen_man.main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "missing stemtomo-info.1" in err and "run python scripts/gen_man.py" in err
    assert gen_man.main(["--out", str(tmp_path)]) == 0
    assert gen_man.main(["--check", "--out", str(tmp_path)]) == 0
    assert "man pages up to date" in capsys.readouterr().out
