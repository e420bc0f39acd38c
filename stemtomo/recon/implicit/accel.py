"""Speed options of the implicit reconstruction: reduced-precision arithmetic and ``torch.compile``.

- ``precision``: ``fp32`` (default), ``tf32`` (TF32 matrix products and convolutions on CUDA; no effect on
  the CPU) or ``bf16`` (the field's forward pass under ``torch.autocast`` with bfloat16; the line
  integrals, the image formation ``exp(-κP)``, the losses and the optimizer stay float32, since a
  bfloat16 sum over 32+ samples would lose most of its 8-bit mantissa).
- ``compile_backend``: ``torch.compile`` of the field's forward (``nn.Module.compile``, so parameter
  names and checkpoints are unchanged). A backend that fails (no C++ compiler, an unsupported op) is
  dropped with a warning and training continues eagerly: :func:`uncompile`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from enum import Enum
from typing import Any

import torch

log = logging.getLogger(__name__)


class Precision(str, Enum):
    """Arithmetic of the field during training (``--precision``)."""

    fp32 = "fp32"
    tf32 = "tf32"
    bf16 = "bf16"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context the field is evaluated in: bfloat16 autocast for ``bf16``, else nothing."""
    if precision == Precision.bf16.value and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Allow TF32 on CUDA for the duration (``tf32``); the previous settings are restored afterwards."""
    if precision != Precision.tf32.value:
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def compile_module(module: torch.nn.Module, backend: str) -> bool:
    """``torch.compile`` the forward of ``module`` in place; False (with a warning) when it cannot be set up.

    Compilation itself happens at the first call; a failure there is the caller's to catch (then
    :func:`uncompile`).
    """
    try:
        module.compile(backend=backend)
    except Exception as exc:  # an unknown backend, dynamo unavailable on this platform
        log.warning("--compile: torch.compile(backend=%r) is unavailable (%s); training uncompiled", backend,
                    describe_failure(exc))
        uncompile(module)
        return False
    return True


def uncompile(module: torch.nn.Module) -> None:
    """Undo :func:`compile_module` (back to the eager forward)."""
    # nn.Module.compile stores the compiled call here; None restores the eager path
    module._compiled_call_impl = None  # type: ignore[assignment]


def is_compiled(module: torch.nn.Module) -> bool:
    """True while :func:`compile_module` is in effect."""
    return getattr(module, "_compiled_call_impl", None) is not None


def describe_failure(exc: BaseException) -> str:
    """One line for a warning about a failed compilation: the exception's type and first line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


__all__ = ["Precision", "autocast", "compile_module", "describe_failure", "is_compiled", "matmul_precision",
           "uncompile"]
