"""Safe output writing: refuse to overwrite, check the folder, write to a temporary file and rename.

A crash or Ctrl-C while writing never leaves a half-written output: data goes to a hidden temporary file
in the target folder (same file system, so the final :func:`os.replace` is atomic) and is renamed only when
complete. Array and sidecar are committed together by :class:`AtomicOutputs`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from stemtomo.errors import OutputError

log = logging.getLogger(__name__)


def check_output(path: str | os.PathLike[str], overwrite: bool = False, *, with_sidecar: bool = True) -> Path:
    """Check that ``path`` may be written; return it as a Path.

    Raises
    ------
    OutputError
        If the file (or its sidecar) exists and ``overwrite`` is False, if the path is a directory, or if
        the folder does not exist or is not writable.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: output path is a directory; give a file name")
    if not overwrite:
        for q in (p, p.with_name(p.name + ".yaml")) if with_sidecar else (p,):
            if q.exists():
                raise OutputError(f"{q}: output exists; pass --overwrite to replace it")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{p}: output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{p}: output folder {folder} is not writable; choose another -o")
    warn_leftovers(p)
    return p


def leftover_temps(path: Path) -> list[Path]:
    """Hidden temporary files of :func:`temp_path_for` for ``path`` or its sidecar still lying in its folder:
    left by a run that was killed (SIGKILL, power loss) while writing, when no clean-up could run."""
    folder = path.parent if str(path.parent) else Path(".")
    prefix = _temp_prefix(path.name)  # the sidecar's (".NAME.yaml.") starts with it too
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(folder / n for n in names if n.startswith(prefix) and _TEMP_MARK in n[len(prefix):])


_WARNED: set[Path] = set()


def warn_leftovers(path: Path) -> None:
    """Warn once per path (without deleting anything: another run might still be writing them) about
    :func:`leftover_temps`."""
    found = leftover_temps(path)
    key = path.resolve()
    if found and key not in _WARNED:
        _WARNED.add(key)
        size = 0
        for q in found:
            with contextlib.suppress(OSError):  # gone meanwhile (a live run renamed it)
                size += q.stat().st_size
        log.warning("%s: %d temporary file(s) of an interrupted earlier write lie beside it (%.1f MB: %s); "
                    "delete them to free the space", path, len(found), size / 1e6, ", ".join(q.name for q in found))


def check_outputs(paths: Sequence[str | os.PathLike[str]], overwrite: bool = False) -> list[Path]:
    """:func:`check_output` for several paths (all checked before anything is written)."""
    return [check_output(p, overwrite) for p in paths]


def check_output_dir(path: str | os.PathLike[str], names: Sequence[str], overwrite: bool = False) -> Path:
    """Check that folder ``path`` can take the files ``names`` (creating the folder is left to the caller)."""
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise OutputError(f"{d}: exists and is not a folder; choose another -o")
    parent = d if d.exists() else (d.parent if str(d.parent) else Path("."))
    if not parent.is_dir():
        raise OutputError(f"{d}: parent folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{d}: folder {parent} is not writable; choose another -o")
    if d.exists() and not overwrite:
        for n in names:
            for q in (d / n, d / (n + ".yaml")):
                if q.exists():
                    raise OutputError(f"{q}: output exists; pass --overwrite to replace it")
    if d.exists():
        for n in names:
            warn_leftovers(d / n)
    return d


_TEMP_MARK = ".tmp"


def _temp_prefix(name: str) -> str:
    """Start of the name of every temporary file of :func:`temp_path_for` for a target called ``name``."""
    return f".{name}."


def temp_path_for(path: Path) -> Path:
    """A fresh hidden temporary path in the folder of ``path``, keeping its suffix."""
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=_TEMP_MARK + "".join(path.suffixes[-1:]),
                               dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # writers want to create the file themselves
    return Path(tmp)


class AtomicOutputs:
    """Collect temporary files and rename them all onto their targets on success.

    Example
    -------
    >>> with AtomicOutputs() as out:                       # doctest: +SKIP
    ...     write_mrc(out.temp("vol.mrc"), data)
    ...     out.temp("vol.mrc.yaml").write_text(text)
    """

    def __init__(self) -> None:
        self._pairs: list[tuple[Path, Path]] = []

    def temp(self, target: str | os.PathLike[str]) -> Path:
        """Return a temporary path that becomes ``target`` when the block succeeds."""
        t = Path(target)
        tmp = temp_path_for(t)
        self._pairs.append((tmp, t))
        return tmp

    def __enter__(self) -> AtomicOutputs:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            for tmp, target in self._pairs:
                if tmp.exists():
                    os.replace(tmp, target)
        else:
            for tmp, _ in self._pairs:
                with contextlib.suppress(OSError):
                    tmp.unlink()


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Context manager yielding a temporary path renamed onto ``target`` on success."""
    with AtomicOutputs() as out:
        yield out.temp(target)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_with(target: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and rename the result onto ``target``."""
    with atomic_file(target) as tmp:
        writer(tmp)


__all__ = [
    "AtomicOutputs",
    "atomic_file",
    "check_output",
    "check_output_dir",
    "check_outputs",
    "leftover_temps",
    "temp_path_for",
    "warn_leftovers",
    "write_text_atomic",
    "write_with",
]
