"""Casting arrays to an output dtype without silent wrap-around (shared by the MRC and TIFF writers)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from stemtomo.errors import ParameterError


def cast_for_output(data: Any, dtype: Any, path: str | os.PathLike[str]) -> np.ndarray:
    """Return ``data`` as a C-contiguous array of ``dtype``.

    Float outputs are a plain cast. Integer outputs are rounded to the nearest integer, and values that
    are not finite or fall outside the dtype's range are refused (a cast would wrap them silently).

    Raises
    ------
    ParameterError
        If an integer ``dtype`` cannot hold the values; the message gives the value range and the fix.
    """
    target = np.dtype(dtype)
    arr = np.asarray(data)
    if target.kind not in "iu" or arr.dtype == target:
        return np.ascontiguousarray(arr, dtype=target)
    lo: float
    hi: float
    if arr.dtype.kind in "iu":
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    else:
        if arr.size and not np.all(np.isfinite(arr)):
            raise ParameterError(f"{path}: NaN/Inf values cannot be written as {target.name}; use float32")
        arr = np.rint(arr)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    info = np.iinfo(target)
    if lo < info.min or hi > info.max:
        raise ParameterError(
            f"{path}: values {lo:g}…{hi:g} do not fit {target.name} ({info.min}…{info.max}); "
            "rescale the data first or write float32"
        )
    return np.ascontiguousarray(arr, dtype=target)


__all__ = ["cast_for_output"]
