"""Writing large volumes through a memory map: bounded memory whatever the output size.

Used by ``stemtomo export``: blocks are written into a memory-mapped MRC (mrcfile) or TIFF (tifffile), header
statistics accumulate block by block (:class:`RunningStats`; mrcfile's ``update_header_stats`` would build a
full-volume temporary), and written pages are flushed and dropped from the resident set (:func:`release_pages`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stemtomo.errors import InputError

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".st", ".ali")
_IMOD_STAMP = 1146047817
_IMOD_SIGNED_BYTES, _IMOD_MRC2014_ORIGIN = 1, 4


class RunningStats:
    """Running min / max / mean / standard deviation of the stored values (float64 sums), so the MRC header
    statistics need no full-volume temporary (mrcfile's ``update_header_stats`` makes one)."""

    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, 0.0, 0.0
        self.lo, self.hi = math.inf, -math.inf

    def add(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        self.n += block.size
        self.total += float(np.sum(block, dtype=np.float64))
        self.squares += float(np.sum(np.square(block, dtype=np.float64)))
        self.lo, self.hi = min(self.lo, float(np.min(block))), max(self.hi, float(np.max(block)))

    def header(self) -> tuple[float, float, float, float]:
        """``(dmin, dmax, dmean, rms)`` as mrcfile defines them (rms = standard deviation)."""
        mean = self.total / max(self.n, 1)
        return self.lo, self.hi, mean, math.sqrt(max(self.squares / max(self.n, 1) - mean * mean, 0.0))


def release_pages(arr: np.ndarray) -> None:
    """Write the mapped output's dirty pages back and drop them from this process's resident set, so peak
    RSS stays bounded by a few chunks whatever the output size (the page cache keeps them)."""
    import mmap

    flush = getattr(arr, "flush", None)
    if flush is not None:
        flush()
    mm = getattr(arr, "_mmap", None)  # numpy.memmap's mapping (tifffile and mrcfile both return numpy.memmap)
    if isinstance(mm, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def open_volume_for_writing(tmp: Path, suffix: str, shape: tuple[int, int, int], dtype: Any,
               pixel: float | None) -> tuple[Any, Callable[[RunningStats], None]]:
    """A memory-mapped output array ``shape`` of ``dtype`` at ``tmp`` (TIFF by suffix, else MRC) and a closer
    that writes the header statistics from a :class:`RunningStats` and releases the mapping."""
    if suffix in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.memmap(str(tmp), shape=shape, dtype=dtype, imagej=True,
                              resolution=(1 / pixel, 1 / pixel) if pixel else None)
        return arr, lambda stats: release_pages(arr)
    if suffix not in MRC_SUFFIXES:
        raise InputError(f"{tmp.name}: unknown output type {suffix!r}; use .mrc/.rec/.map or .tif")
    import mrcfile

    mode = {np.float32: 2, np.uint16: 6, np.int8: 0}[dtype]
    mrc = mrcfile.new_mmap(str(tmp), shape=shape, mrc_mode=mode, overwrite=True)
    mrc.set_volume()
    if pixel:
        mrc.voxel_size = float(pixel)
    if mode == 0:  # CONVENTIONS §6: IMOD stamp, flags 4 (MRC2014 origin) + 1 (signed bytes)
        words = np.array([_IMOD_STAMP, _IMOD_MRC2014_ORIGIN | _IMOD_SIGNED_BYTES], dtype=mrc.header.nversion.dtype)
        mrc.header.extra2 = bytes(40) + words.tobytes() + bytes(36)  # bytes 152..160 of the header

    def close(stats: RunningStats) -> None:
        h = mrc.header
        h.dmin, h.dmax, h.dmean, h.rms = (np.float32(v) for v in stats.header())
        release_pages(mrc.data)
        mrc.close()

    return mrc.data, close


__all__ = ["MRC_SUFFIXES", "RunningStats", "open_volume_for_writing", "release_pages"]
