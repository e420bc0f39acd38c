#!/usr/bin/env python
"""Generate roff man pages for stemtomo from the live Typer app.

One page per command: ``stemtomo.1`` for the program, ``stemtomo-info.1`` for ``stemtomo info``,
``stemtomo-noise-fit.1`` for the sub-command ``stemtomo noise fit``, and so on, found by walking the
click command tree (``typer.main.get_command(app)``). Output is deterministic (no dates), so the pages can
be checked in CI:

    python scripts/gen_man.py            # (re)write man/*.1, removing pages of commands that are gone
    python scripts/gen_man.py --check    # exit 1 naming stale, missing or extra pages
    python scripts/gen_man.py --out DIR  # another folder

View a page with ``man -l man/stemtomo-info.1``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "man"
PROGRAM = "stemtomo"

# rich console markup ([bold], [/], [red]text[/red], [link=...]) is stripped; anything else in brackets
# ([OPTIONS], [ZValue = n], [default: 3]) is kept.
_STYLE_WORDS = (
    "bold|italic|dim|underline|strike|reverse|blink|b|i|u|s|code|not|on|"
    "red|green|yellow|blue|magenta|cyan|white|black|grey\\d*|gray\\d*|bright_\\w+"
)
_RICH_TAG = re.compile(rf"\[/?(?:(?:{_STYLE_WORDS})(?: (?:{_STYLE_WORDS}))*|link=[^\]]*)?\]")


def strip_markup(text: str) -> str:
    """Remove rich markup tags and click's ``\\b`` no-rewrap markers."""
    lines = [line for line in text.splitlines() if line.strip() != "\b"]
    return _RICH_TAG.sub("", "\n".join(lines))


def roff_escape(text: str) -> str:
    """Escape text for roff: backslashes, hyphens (so options copy-paste), leading dots and quotes."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in out.splitlines())


def _paragraphs(text: str) -> list[str]:
    """Docstring text → roff paragraphs (bullet lines become ``.IP`` items)."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", strip_markup(text).strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if any(line.startswith(("- ", "* ")) for line in lines):
            items: list[list[str]] = []
            for line in lines:
                if line.startswith(("- ", "* ")) or not items:
                    items.append([line.lstrip("-* ").strip()])
                else:
                    items[-1].append(line)
            out.extend(".IP \\(bu 2\n" + roff_escape(" ".join(item)) for item in items)
        else:
            out.append(".PP\n" + roff_escape(" ".join(lines)))
    return out


def _default_text(param: Any) -> str | None:
    """``[default: …]`` text of an option, or None when there is nothing useful to show."""
    if getattr(param, "show_default", True) is False or getattr(param, "required", False):
        return None
    default = param.default
    if default is None or callable(default) or getattr(param, "is_flag", False) and default is False:
        return None
    if isinstance(default, Enum):
        default = default.value
    if isinstance(default, (list, tuple)):
        if not default:
            return None
        default = ", ".join(str(d.value if isinstance(d, Enum) else d) for d in default)
    if isinstance(default, bool):
        return "true" if default else "false"
    text = str(default)
    return text if text and "Sentinel" not in text else None


def _metavar(param: Any, ctx: Any) -> str:
    """The value placeholder of an option: ``[a|b]`` for choices, else the type name (``INT``)."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if getattr(param, "metavar", None):
        return str(param.metavar)
    if hasattr(param, "display_type"):  # Typer ≥ 0.20 parameters: "<int>", "a|b", "list[<text>]"
        text = str(param.display_type(ctx) or "")
        if getattr(getattr(param, "type_descriptor", None), "is_choice", False):
            return f"[{text.strip('<>')}]"
        return re.sub(r"<([^<>]+)>", lambda m: m.group(1).upper(), text) or "VALUE"
    choices = getattr(getattr(param, "type", None), "choices", None)  # plain click parameters
    if choices:
        return "[" + "|".join(str(c.value if isinstance(c, Enum) else c) for c in choices) + "]"
    name = getattr(getattr(param, "type", None), "name", "value") or "value"
    return name.upper().replace(" ", "_")


def _option_entry(param: Any, ctx: Any) -> str:
    # long names first, then short ones (stable): Typer builds the help option's names from a set, so
    # their order would otherwise change between runs
    opts = sorted(param.opts, key=lambda n: not n.startswith("--"))
    names = ", ".join([*opts, *getattr(param, "secondary_opts", [])])
    head = f"\\fB{roff_escape(names)}\\fR"
    metavar = _metavar(param, ctx)
    if metavar:
        head += f" \\fI{roff_escape(metavar)}\\fR"
    help_text = " ".join(strip_markup(getattr(param, "help", None) or "").split())
    notes = []
    if getattr(param, "required", False):
        notes.append("required")
    default = _default_text(param)
    if default is not None:
        notes.append(f"default: {default}")
    if notes:
        help_text = (help_text + " " if help_text else "") + "[" + "; ".join(notes) + "]"
    return f".TP\n{head}\n{roff_escape(help_text) if help_text else ''}".rstrip("\n")


def _argument_name(param: Any) -> str:
    name = (getattr(param, "metavar", None) or param.name or "ARG").upper()
    return name + "..." if getattr(param, "nargs", 1) == -1 else name


def _argument_entry(param: Any) -> str:
    help_text = " ".join(strip_markup(getattr(param, "help", None) or "").split())
    if not param.required:
        help_text += " [optional]"
    return f".TP\n\\fI{roff_escape(_argument_name(param))}\\fR\n{roff_escape(help_text.strip())}"


def _usage(cmd: Any, ctx: Any) -> str:
    """``[OPTIONS] FILE`` / ``[OPTIONS] COMMAND [ARGS]...`` built from the parameters."""
    pieces = ["[OPTIONS]"]
    for param in cmd.get_params(ctx):
        if getattr(param, "param_type_name", "") == "argument" and not getattr(param, "hidden", False):
            name = _argument_name(param)
            pieces.append(name if param.required else f"[{name}]")
    if hasattr(cmd, "list_commands"):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def short_help(cmd: Any) -> str:
    """The first paragraph of a command's help on one line (click's own short help stops at "e.g.")."""
    text = strip_markup(getattr(cmd, "short_help", None) or getattr(cmd, "help", None) or "").strip()
    return " ".join(re.split(r"\n\s*\n", text)[0].split()) if text else ""


def _subcommands(cmd: Any, ctx: Any) -> list[tuple[str, Any]]:
    if not hasattr(cmd, "list_commands"):
        return []
    out = []
    for name in cmd.list_commands(ctx):
        sub = cmd.get_command(ctx, name)
        if sub is not None and not getattr(sub, "hidden", False):
            out.append((name, sub))
    return out


def render_page(path: Sequence[str], cmd: Any, ctx: Any, version: str) -> str:
    """The roff text of one command's page (``path`` = command words, e.g. ``["stemtomo", "noise", "fit"]``)."""
    page = "-".join(path)
    full = " ".join(path)
    short = short_help(cmd) or full
    parts = [
        f'.\\" {page}.1: generated by scripts/gen_man.py from the live stemtomo app; do not edit.',
        f'.TH "{page.upper()}" "1" "" "{PROGRAM} {version}" "{PROGRAM} manual"',
        ".SH NAME",
        f"{roff_escape(page)} \\- {roff_escape(short)}",
        ".SH SYNOPSIS",
        f".B {roff_escape(full)}\n" + roff_escape(_usage(cmd, ctx)),
    ]
    if cmd.help:
        parts += [".SH DESCRIPTION", *_paragraphs(cmd.help)]
    params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [p for p in params if getattr(p, "param_type_name", "") == "argument"]
    options = [p for p in params if getattr(p, "param_type_name", "") == "option"]
    if arguments:
        parts += [".SH ARGUMENTS", *(_argument_entry(p) for p in arguments)]
    if options:
        parts += [".SH OPTIONS", *(_option_entry(p, ctx) for p in options)]
    subs = _subcommands(cmd, ctx)
    if subs:
        parts.append(".SH COMMANDS")
        for name, sub in subs:
            text = short_help(sub)
            parts.append(f".TP\n\\fB{roff_escape(name)}\\fR\n{roff_escape(text)}")
        parts.append(f".PP\nSee \\fB{roff_escape(page)}\\-\\fICOMMAND\\fR(1) for each command.")
    see_also = [f"{page}-{name}" for name, _ in subs]
    if len(path) > 1:
        see_also.insert(0, "-".join(path[:-1]))
    if see_also:
        parts += [".SH SEE ALSO", ",\n".join(f".BR {roff_escape(s)} (1)" for s in see_also)]
    return "\n".join(parts) + "\n"


def _walk(cmd: Any, path: list[str], parent: Any) -> Iterator[tuple[list[str], Any, Any]]:
    """Depth-first ``(command words, command, context)``; contexts are built without parsing arguments."""
    if parent is None:
        ctx = cmd.make_context(path[-1], [], resilient_parsing=True)
    else:
        ctx = type(parent)(cmd, info_name=path[-1], parent=parent)
    yield path, cmd, ctx
    for name, sub in _subcommands(cmd, ctx):
        yield from _walk(sub, [*path, name], ctx)


def render_pages(app: Any = None) -> dict[str, str]:
    """``{file name: roff text}`` for every visible command of ``app`` (default: the stemtomo app)."""
    import typer.main

    from stemtomo import __version__

    if app is None:
        from stemtomo.cli.app import app
    root = typer.main.get_command(app)
    return {
        "-".join(path) + ".1": render_page(path, cmd, ctx, __version__)
        for path, cmd, ctx in _walk(root, [PROGRAM], None)
    }


def check_pages(out_dir: Path, pages: dict[str, str]) -> list[str]:
    """Problems with the pages in ``out_dir``: ``stale NAME``, ``missing NAME``, ``extra NAME``."""
    problems = []
    for name, text in sorted(pages.items()):
        f = out_dir / name
        if not f.is_file():
            problems.append(f"missing {name}")
        elif f.read_text(encoding="utf-8") != text:
            problems.append(f"stale {name}")
    for f in sorted(out_dir.glob(f"{PROGRAM}*.1")) if out_dir.is_dir() else []:
        if f.name not in pages:
            problems.append(f"extra {f.name}")
    return problems


def write_pages(out_dir: Path, pages: dict[str, str]) -> list[str]:
    """Write changed pages, remove pages of commands that no longer exist; return what changed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    changed = check_pages(out_dir, pages)
    for problem in changed:
        kind, name = problem.split(" ", 1)
        if kind == "extra":
            (out_dir / name).unlink()
        else:
            (out_dir / name).write_text(pages[name], encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the pages differ from the live app")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder of the pages (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    pages = render_pages()
    if args.check:
        problems = check_pages(args.out, pages)
        if problems:
            print(
                f"man pages in {args.out} differ from the live app: {', '.join(problems)}; "
                "run python scripts/gen_man.py",
                file=sys.stderr,
            )
            return 1
        print(f"{len(pages)} man pages up to date")
        return 0
    changed = write_pages(args.out, pages)
    print(f"{len(pages)} man pages in {args.out}; " + (", ".join(changed) if changed else "no changes"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
