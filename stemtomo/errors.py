"""Exception hierarchy. The CLI turns every :class:`StemtomoError` into one red line and exit code 1 (its
``exit_code``: 128 + the signal for :class:`Interrupted`).

Messages say what went wrong, name the file or option and the bad value, and say how to fix it.
"""

from __future__ import annotations


class StemtomoError(Exception):
    """Base class of all errors stemtomo raises on purpose."""

    exit_code: int = 1
    """Exit status of the CLI for this error."""


class InputError(StemtomoError):
    """An input file is missing, unreadable, malformed or inconsistent."""


class FileFormatError(InputError):
    """A file exists but is not a valid file of the expected format."""


class OutputError(StemtomoError):
    """An output cannot be written (exists without overwrite, folder not writable, ...)."""


class ParameterError(StemtomoError):
    """An option or parameter value is out of its allowed range."""


class ResourceError(StemtomoError):
    """The requested work needs more memory than the machine (or GPU) has available."""


class DeviceError(StemtomoError):
    """The requested compute device is not available."""


class ModelFileError(InputError):
    """A model or checkpoint file is of the wrong kind, a newer schema, or unsafe to load."""


class Interrupted(StemtomoError):
    """A run stopped by a signal after saving its state; exit status 128 + the signal number, as shells do."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


__all__ = [
    "DeviceError",
    "FileFormatError",
    "InputError",
    "Interrupted",
    "ModelFileError",
    "OutputError",
    "ParameterError",
    "StemtomoError",
]
