"""IMOD ``.xf`` transforms: read, write, compose from (tilt-axis angle, shifts) and apply as ``newstack`` does.

One line per view, ``A11 A12 A21 A22 DX DY``, mapping a raw image position to the aligned one
(CONVENTIONS.md §1.3)::

    X' = A11·(X − Xc) + A12·(Y − Yc) + DX + Xc'
    Y' = A21·(X − Xc) + A22·(Y − Yc) + DY + Yc'

with centres at ``(n − 1)/2`` in 0-based pixel-centre coordinates (IMOD's ``n/2`` in its 0.5-offset
coordinates). For a raw tilt axis at angle α (CCW from +y) and a specimen shift ``s`` in the raw frame, the
alignment is ``A = R(−α)``, ``D = −R(−α)·s`` (what AreTomo writes), and the aligned image has its tilt axis
along +y: the frame of :mod:`stemtomo.core.geometry`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stemtomo.core.geometry import centre
from stemtomo.errors import InputError


def read_xf(path: str | os.PathLike[str], n_views: int | None = None) -> np.ndarray:
    """Read an ``.xf`` file as an ``(n, 2, 3)`` array ``[[A11, A12, DX], [A21, A22, DY]]``.

    Raises
    ------
    InputError
        Missing file, a line without 6 numbers, a view count ≠ ``n_views``, or a non-invertible matrix.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: .xf file not found; check the path")
    rows: list[list[float]] = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise InputError(f"{p}:{lineno}: {line.strip()!r} is not six numbers (A11 A12 A21 A22 DX DY)") from None
        if len(values) != 6:
            raise InputError(f"{p}:{lineno}: expected 6 numbers (A11 A12 A21 A22 DX DY), found {len(values)}")
        rows.append(values)
    if not rows:
        raise InputError(f"{p}: .xf file holds no transforms")
    if n_views is not None and len(rows) != n_views:
        raise InputError(f"{p}: {len(rows)} transforms but the stack has {n_views} images; the counts must match")
    a = np.asarray(rows, dtype=np.float64)
    xf = np.stack([np.stack([a[:, 0], a[:, 1], a[:, 4]], -1), np.stack([a[:, 2], a[:, 3], a[:, 5]], -1)], 1)
    det = xf[:, 0, 0] * xf[:, 1, 1] - xf[:, 0, 1] * xf[:, 1, 0]
    bad = np.flatnonzero(np.abs(det) < 1e-6)
    if bad.size:
        raise InputError(f"{p}: transform of view {int(bad[0])} is not invertible (determinant {det[bad[0]]:.3g})")
    return xf


def format_xf(xf: np.ndarray) -> str:
    """IMOD text for ``(n, 2, 3)`` transforms (same column layout as IMOD's own files)."""
    lines = []
    for m in np.asarray(xf, dtype=np.float64):
        lines.append(
            f"{m[0, 0]:12.7f}{m[0, 1]:12.7f}{m[1, 0]:12.7f}{m[1, 1]:12.7f}{m[0, 2]:12.3f}{m[1, 2]:12.3f}\n"
        )
    return "".join(lines)


def xf_from_alignment(tilt_axis_angle_deg: float, shifts_xy: np.ndarray) -> np.ndarray:
    """Transforms ``A = R(−α)``, ``D = −R(−α)·s`` for raw-frame shifts ``s`` of shape ``(n, 2)`` (x, y)."""
    a = math.radians(-tilt_axis_angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    s = np.asarray(shifts_xy, dtype=np.float64).reshape(-1, 2)
    d = -(s @ rot.T)
    out = np.zeros((s.shape[0], 2, 3))
    out[:, :, :2] = rot
    out[:, :, 2] = d
    return out


def _sampling_grids(
    xf: np.ndarray | torch.Tensor, raw_shape: Sequence[int], out_shape: Sequence[int] | None, max_points: int,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(images slice, grid_sample grid (n_chunk, ny', nx', 2) float64 on the host)`` for chunks of images
    whose grids stay under ``max_points`` output pixels (at least one image)."""
    n = int(np.shape(xf)[0])
    ny, nx = int(raw_shape[-2]), int(raw_shape[-1])
    oy, ox = (ny, nx) if out_shape is None else (int(out_shape[-2]), int(out_shape[-1]))
    m = torch.as_tensor(np.asarray(xf), dtype=torch.float64)
    a, d = m[:, :, :2], m[:, :, 2]
    inv = torch.linalg.inv(a)
    yy = torch.arange(oy, dtype=torch.float64) - centre(oy)
    xx = torch.arange(ox, dtype=torch.float64) - centre(ox)
    gy, gx = torch.meshgrid(yy, xx, indexing="ij")
    target = torch.stack((gx, gy), -1).reshape(1, -1, 2)
    scale = torch.tensor([max(centre(nx), 0.5), max(centre(ny), 0.5)], dtype=torch.float64)
    step = max(1, int(max_points) // max(1, oy * ox))
    for i in range(0, n, step):
        sl = slice(i, min(n, i + step))
        raw = torch.einsum("nij,npj->npi", inv[sl], target - d[sl, None, :])  # raw position, raw centre = 0
        yield sl, (raw / scale).reshape(-1, oy, ox, 2)


def _check_count(xf: np.ndarray | torch.Tensor, n: int) -> None:
    if tuple(np.shape(xf)) != (n, 2, 3):
        raise InputError(f".xf: {np.shape(xf)[0]} transforms for {n} images; the counts must match")


def _whole_pixel_offsets(
    xf: np.ndarray, raw_shape: tuple[int, int], out_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(exact, k)``: ``exact`` ``(n,)`` bool, the views whose transform is the identity matrix with a
    whole-pixel shift (centres included), and for those ``k`` ``(n, 2)`` int ``(ky, kx)`` with
    ``raw = out + k``."""
    m = np.asarray(xf, dtype=np.float64)
    k = np.stack([centre(raw_shape[0]) - centre(out_shape[0]) - m[:, 1, 2],
                  centre(raw_shape[1]) - centre(out_shape[1]) - m[:, 0, 2]], -1)
    exact = np.all(m[:, :, :2] == np.eye(2), axis=(1, 2)) & np.all(np.abs(k - np.round(k)) < 1e-9, axis=1)
    return exact, np.where(exact[:, None], np.round(k), 0).astype(np.int64)


def apply_xf(
    images: torch.Tensor, xf: np.ndarray | torch.Tensor, out_shape: Sequence[int] | None = None, *,
    max_points: int = 1 << 24,
) -> torch.Tensor:
    """Resample raw images ``(n, ny, nx)`` into the aligned frame, as IMOD ``newstack -xform`` does.

    Bilinear interpolation; positions outside the raw image are filled with the image's mean (newstack's
    default fill; :func:`xf_coverage` tells which pixels those are). ``out_shape`` ``(ny', nx')`` defaults to
    the raw shape. A view whose transform is the identity with a whole-pixel shift is copied exactly (an
    identity ``.xf`` returns the stack bit for bit). The sampling grid (float64 on the host, then the images'
    dtype and device) is built for as many images at a time as keep it under ``max_points`` output pixels
    (at least one image): for a 61 × 4096² series at once it would take ~16 GB.
    """
    n, ny, nx = images.shape
    _check_count(xf, n)
    oy, ox = (ny, nx) if out_shape is None else (int(out_shape[0]), int(out_shape[1]))
    dev, dt = images.device, images.dtype
    out = torch.empty((n, oy, ox), dtype=dt, device=dev)
    m = np.asarray(xf)
    exact, k = _whole_pixel_offsets(m, (ny, nx), (oy, ox))
    for i in np.flatnonzero(exact):
        ky, kx = int(k[i, 0]), int(k[i, 1])
        out[i] = images[i].mean()
        y0, y1 = max(0, -ky), min(oy, ny - ky)
        x0, x1 = max(0, -kx), min(ox, nx - kx)
        if y1 > y0 and x1 > x0:
            out[i, y0:y1, x0:x1] = images[i, y0 + ky : y1 + ky, x0 + kx : x1 + kx]
    interpolated = np.flatnonzero(~exact)
    if interpolated.size == 0:
        return out
    for sl, grid in _sampling_grids(m[interpolated], (ny, nx), (oy, ox), max_points):  # grids for these only
        views = torch.as_tensor(interpolated[sl])
        fill = images[views].mean(dim=(1, 2), keepdim=True)
        out[views] = F.grid_sample((images[views] - fill)[:, None], grid.to(device=dev, dtype=dt), mode="bilinear",
                                   padding_mode="zeros", align_corners=True)[:, 0] + fill
    return out


def xf_coverage(
    xf: np.ndarray | torch.Tensor, raw_shape: Sequence[int], out_shape: Sequence[int] | None = None, *,
    device: torch.device | str = "cpu", max_points: int = 1 << 24,
) -> torch.Tensor:
    """Boolean ``(n, ny', nx')``: the pixels of :func:`apply_xf`'s output that are measured, i.e. whose
    bilinear footprint lies entirely inside the raw image ``raw_shape`` ``(ny, nx)``; False where the output
    holds (or is blended with) the fill."""
    n = int(np.shape(xf)[0])
    _check_count(xf, n)
    ny, nx = int(raw_shape[-2]), int(raw_shape[-1])
    oy, ox = (ny, nx) if out_shape is None else (int(out_shape[-2]), int(out_shape[-1]))
    out = torch.empty((n, oy, ox), dtype=torch.bool, device=device)
    ones = torch.ones((1, 1, ny, nx), dtype=torch.float32, device=device)
    for sl, grid in _sampling_grids(xf, (ny, nx), (oy, ox), max_points):
        g = grid.to(device=device, dtype=torch.float32)
        inside = F.grid_sample(ones.expand(g.shape[0], 1, ny, nx), g, mode="bilinear", padding_mode="zeros",
                               align_corners=True)[:, 0]
        out[sl] = inside >= 1.0 - 1e-4
    return out


__all__ = ["apply_xf", "format_xf", "read_xf", "xf_coverage", "xf_from_alignment"]
