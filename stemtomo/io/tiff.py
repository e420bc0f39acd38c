"""Multi-page TIFF reading and writing with ImageJ metadata (spacing and unit)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from stemtomo.errors import FileFormatError, ParameterError
from stemtomo.io._dtypes import cast_for_output

TIFF_SUFFIXES = (".tif", ".tiff")
#: Decoded size above which a TIFF is refused as corrupt before anything is allocated.
MAX_TIFF_BYTES = 1 << 40


def read_tiff(path: str | os.PathLike[str]) -> tuple[np.ndarray, float | None]:
    """Read a (multi-page) TIFF as float32 ``(n, ny, nx)`` and the pixel size in Å if recorded.

    Raises
    ------
    FileFormatError
        If the file is not a TIFF or its pages differ in shape.
    """
    import tifffile

    p = Path(path)
    try:
        with tifffile.TiffFile(p) as tf:
            shapes = {tuple(page.shape) for page in tf.pages}  # type: ignore[union-attr]
            if len(shapes) > 1:
                raise FileFormatError(
                    f"{p}: TIFF pages differ in shape ({', '.join(str(s) for s in sorted(shapes))}); "
                    "all images of a stack must have the same size"
                )
            _check_tiff_size(tf, p)
            arr = tf.asarray()
            pixel = _pixel_size_angstrom(tf)
            page0 = tf.pages[0]
            rgb = int(getattr(page0, "photometric", 0)) == 2 and int(getattr(page0, "samplesperpixel", 1)) in (3, 4)
    except FileFormatError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise FileFormatError(f"{p}: not a readable TIFF file ({exc})") from None
    arr = np.asarray(arr)
    if rgb and arr.ndim in (3, 4) and arr.shape[-1] in (3, 4):
        # RGB(A) pages (photometric RGB, samples last): Rec. 709 luma
        arr = arr[..., :3].astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise FileFormatError(f"{p}: expected a stack of 2D images, got an array of shape {arr.shape}")
    return np.asarray(arr, dtype=np.float32), pixel


def _check_tiff_size(tf: Any, p: Path) -> None:
    """Refuse absurd decoded sizes and pages whose data lies beyond the end of the file, before reading."""
    size = p.stat().st_size
    pixels = 0
    for index, page in enumerate(tf.pages):
        dtype = getattr(page, "dtype", None)
        pixels += math.prod(int(n) for n in page.shape) * (np.dtype(dtype).itemsize if dtype is not None else 1)
        if pixels > MAX_TIFF_BYTES:
            raise FileFormatError(
                f"{p}: TIFF pages claim more than {pixels} bytes of pixels ({size} bytes on disk, limit "
                f"{MAX_TIFF_BYTES}); the file is corrupt"
            )
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        end = max((int(o) + int(c) for o, c in zip(offsets, counts, strict=False)), default=0)
        if end > size:
            raise FileFormatError(
                f"{p}: truncated TIFF: page {index} needs {end} bytes but the file has {size}; re-copy the file"
            )


def _pixel_size_angstrom(tf: object) -> float | None:
    ij = getattr(tf, "imagej_metadata", None) or {}
    unit = str(ij.get("unit", "")).lower().replace("\\u00c5", "å")
    page = tf.pages[0]  # type: ignore[attr-defined]
    tags = page.tags
    if "XResolution" not in tags:
        return None
    num, den = tags["XResolution"].value
    if num == 0:
        return None
    spacing = den / num  # units per pixel
    factor = {"angstrom": 1.0, "å": 1.0, "a": 1.0, "nm": 10.0, "nanometer": 10.0, "micron": 1e4, "um": 1e4, "µm": 1e4}
    if unit in factor:
        return float(spacing * factor[unit])
    return None


def write_tiff(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    pixel_size_angstrom: float | None = None,
    dtype: Any = np.float32,
) -> None:
    """Write a stack as an ImageJ-compatible multi-page TIFF (spacing in Å when known).

    ``dtype`` is float32 (default), uint16 or uint8 (what ImageJ reads); integer output is rounded and
    must fit the dtype.

    Raises
    ------
    ParameterError
        If ``dtype`` is not one of those or the values do not fit it.
    """
    import tifffile

    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.uint16), np.dtype(np.uint8)):
        raise ParameterError(
            f"{path}: TIFF output dtype {np.dtype(dtype).name} is not supported; use float32, uint16 or uint8"
        )
    arr = cast_for_output(data, dtype, path)
    if arr.ndim == 2:
        arr = arr[None]
    kwargs: dict[str, object] = {"imagej": True, "metadata": {"axes": "ZYX"}}
    if pixel_size_angstrom:
        kwargs["resolution"] = (1.0 / pixel_size_angstrom, 1.0 / pixel_size_angstrom)
        kwargs["metadata"] = {"axes": "ZYX", "unit": "angstrom", "spacing": pixel_size_angstrom}
    tifffile.imwrite(Path(path), arr, **kwargs)  # type: ignore[arg-type]


__all__ = ["TIFF_SUFFIXES", "read_tiff", "write_tiff"]
