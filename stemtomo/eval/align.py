"""Orientation and shift alignment of a volume to a reference before scoring (METHOD.md §8.2).

The original code had no alignment: tomograms "probably need to be transposed/inverted" by hand. Here the
candidates are the 8 combinations of axis flips (z, y, x), times the y↔x transpose when ``ny == nx``
(16 candidates), each combined with the best *circular* integer shift within ``±max_shift_px`` per axis.
The score is the Pearson correlation with the reference, evaluated for every shift at once through an
FFT cross-correlation (exact for circular shifts, whose mean and variance do not change). The winner is the
candidate with the highest correlation; the identity is kept on ties.

The transform applied to the volume is ``roll(flip(transpose(volume)), shift)``, in that order.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import TypeVar

import numpy as np
import torch

from stemtomo.errors import ParameterError
from stemtomo.eval.config import AlignConfig

log = logging.getLogger(__name__)
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclasses.dataclass(frozen=True)
class AlignResult:
    """The transform that maps the volume onto the reference, and how well it fits."""

    flip_zyx: tuple[bool, bool, bool]
    """Which axes (z, y, x) were flipped."""
    transpose_yx: bool
    """Whether y and x were swapped (applied before the flips)."""
    shift_zyx: tuple[int, int, int]
    """Circular integer shift (voxels) applied last, ``np.roll`` convention."""
    correlation: float
    """Pearson correlation with the reference after the transform."""
    correlation_before: float
    """Pearson correlation without any transform."""

    @property
    def is_identity(self) -> bool:
        return not any(self.flip_zyx) and not self.transpose_yx and not any(self.shift_zyx)

    def to_dict(self) -> dict[str, object]:
        return {
            "flip_zyx": list(self.flip_zyx),
            "transpose_yx": self.transpose_yx,
            "shift_zyx": list(self.shift_zyx),
            "shift_mode": "circular",
            "correlation": self.correlation,
            "correlation_before": self.correlation_before,
        }


def apply_transform(
    volume: ArrayT, flip_zyx: tuple[bool, bool, bool], transpose_yx: bool, shift_zyx: tuple[int, int, int]
) -> ArrayT:
    """``roll(flip(transpose(volume)), shift)`` on a ``(nz, ny, nx)`` numpy array or tensor (a copy)."""
    axes = tuple(i for i, f in enumerate(flip_zyx) if f)
    if isinstance(volume, torch.Tensor):
        t = volume.transpose(1, 2) if transpose_yx else volume
        t = torch.flip(t, axes) if axes else t
        t = torch.roll(t, shift_zyx, dims=(0, 1, 2)) if any(shift_zyx) else t
        return t.contiguous().clone()  # type: ignore[return-value]
    out = np.swapaxes(volume, 1, 2) if transpose_yx else volume
    if axes:
        out = np.flip(out, axis=axes)
    if any(shift_zyx):
        out = np.roll(out, shift_zyx, axis=(0, 1, 2))
    return np.array(out, copy=True)  # type: ignore[return-value]


def _best_shift(ref_f: torch.Tensor, cand: torch.Tensor, max_shift: int, norm: float) -> tuple[float, tuple[int, ...]]:
    """Highest circular Pearson correlation over shifts within ±max_shift, and that shift."""
    shape = tuple(cand.shape)
    cc = torch.fft.irfftn(ref_f * torch.conj(torch.fft.rfftn(cand)), s=shape) / norm
    idx = [torch.arange(-min(max_shift, (n - 1) // 2), min(max_shift, n // 2) + 1, device=cc.device) for n in shape]
    window = cc[torch.meshgrid(*[i % n for i, n in zip(idx, shape, strict=True)], indexing="ij")]
    flat = int(torch.argmax(window))
    pos = np.unravel_index(flat, tuple(window.shape))
    shift = tuple(int(idx[a][pos[a]]) for a in range(3))
    return float(window.flatten()[flat]), shift


def align_volume(
    volume: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    config: AlignConfig = AlignConfig(),
) -> AlignResult:
    """Find the flip/transpose/shift of ``volume`` that best matches ``reference``.

    Parameters
    ----------
    volume, reference : arrays ``(nz, ny, nx)`` of the same shape (any intensity scale; the correlation is
        invariant to affine scaling). Torch tensors are processed on their device.

    Returns
    -------
    AlignResult; apply it with :func:`apply_transform`.

    Raises
    ------
    ParameterError
        If the shapes differ, are not 3D, or an array is constant.
    """
    vol = torch.as_tensor(volume).to(torch.float64)
    ref = torch.as_tensor(reference).to(device=vol.device, dtype=torch.float64)
    if vol.dim() != 3 or tuple(vol.shape) != tuple(ref.shape):
        raise ParameterError(f"--align needs two volumes of the same shape, got {tuple(vol.shape)} and {tuple(ref.shape)}")
    if config.max_shift_px < 0:
        raise ParameterError(f"--max-shift {config.max_shift_px}: must be 0 or more")
    vol = vol - vol.mean()
    ref = ref - ref.mean()
    norm = float(torch.sqrt((vol * vol).sum() * (ref * ref).sum()))
    if norm == 0.0:
        raise ParameterError("--align: a volume is constant; there is nothing to align")
    ref_f = torch.fft.rfftn(ref)
    before = float((vol * ref).sum()) / norm
    transposes = [False, True] if config.allow_transpose and vol.shape[1] == vol.shape[2] else [False]
    best: tuple[float, tuple[bool, ...], bool, tuple[int, ...]] | None = None
    for transpose in transposes:
        base = vol.transpose(1, 2) if transpose else vol
        for flips in itertools.product((False, True), repeat=3):
            dims = [i for i, f in enumerate(flips) if f]
            cand = torch.flip(base, dims) if dims else base
            score, shift = _best_shift(ref_f, cand.contiguous(), config.max_shift_px, norm)
            log.debug("align: transpose=%s flips=%s shift=%s r=%.4f", transpose, flips, shift, score)
            if best is None or score > best[0] + 1e-9:
                best = (score, flips, transpose, shift)
    assert best is not None
    score, flips, transpose, shift = best
    return AlignResult(
        flip_zyx=(bool(flips[0]), bool(flips[1]), bool(flips[2])),
        transpose_yx=transpose,
        shift_zyx=(int(shift[0]), int(shift[1]), int(shift[2])),
        correlation=score,
        correlation_before=before,
    )


__all__ = ["AlignResult", "align_volume", "apply_transform"]
