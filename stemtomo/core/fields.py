"""Density fields: ``points (..., 3)`` in normalized coordinates (xyz) → density ρ ∈ [0, 1].

Normalized coordinates are centred voxel coordinates divided by the length unit
(:func:`stemtomo.core.geometry.length_unit_px`, the longer in-plane half-width), so the volume's longer
in-plane axis spans about [-1, 1]. Every field is zero outside its box ``half_extent`` (xyz, normalized),
which is the volume ``(nz, ny, nx)`` it reconstructs (DESIGN.md "Specimen").

Three fields share the small :class:`Field` base class:

- :class:`MLPField`: the paper's coordinate network (sin/cos positional encoding with L frequencies, raw
  xyz dropped, 9 hidden ReLU layers of 256 with one skip concat after the 5th, sigmoid output; METHOD §3).
- :class:`VoxelField`: an explicit grid at the data's resolution, trilinear lookup, values kept in [0, 1]
  by :meth:`Field.project_` after every optimizer step (METHOD §4, done with trilinear interpolation).
- :class:`GridField`: a multi-resolution dense feature grid (levels from ``base_res`` to the volume size,
  ``features`` per level, trilinear) and a small MLP with sigmoid output; optional coarse-to-fine level
  annealing; TV on every level (FINDINGS lesson 1). Pure PyTorch.

References
----------
Kniesel et al., "Clean Implicit 3D Structure from Noisy 2D STEM Images", CVPR 2022.
Müller et al., "Instant Neural Graphics Primitives", SIGGRAPH 2022 (multi-resolution grids; dense here).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from stemtomo.errors import ParameterError


class FieldKind(str, Enum):
    """Volume representation (``--field``)."""

    mlp = "mlp"
    voxel = "voxel"
    grid = "grid"


@dataclasses.dataclass(frozen=True)
class FieldConfig:
    """Hyperparameters of all fields (each field reads the ones it needs)."""

    kind: str = "voxel"
    """Which field: ``mlp`` (paper), ``voxel`` (explicit grid) or ``grid`` (multi-resolution grid + MLP)."""
    mlp_width: int = 256
    """Hidden width of the paper MLP (the paper: 256)."""
    mlp_depth: int = 9
    """Hidden layers of the paper MLP (the paper: 9)."""
    mlp_skip: int = 5
    """The encoding is concatenated again after this many hidden layers (the paper: 5; 0 = no skip)."""
    pe_frequencies: int = 10
    """Positional-encoding frequencies L (π·2^i, i < L) of the paper MLP (the paper: 10)."""
    grid_levels: int = 4
    """Levels of the multi-resolution grid."""
    grid_base_res: int = 8
    """Resolution (voxels along the longest axis) of the coarsest level."""
    grid_features: int = 4
    """Features per level."""
    grid_hidden: int = 64
    """Hidden width of the grid field's MLP (one hidden layer)."""
    voxel_init: float = 0.05
    """Initial density of the voxel field."""


class Field(nn.Module):
    """Base class: a density field on a box ``|p_i| ≤ half_extent_i`` (normalized xyz), zero outside.

    Parameters
    ----------
    volume_shape : ``(nz, ny, nx)`` of the volume the field represents (sets the box).
    length_unit_px : voxels per normalized unit (:func:`stemtomo.core.geometry.length_unit_px`).
    """

    half_extent: torch.Tensor

    def __init__(self, volume_shape: Sequence[int], length_unit_px: float) -> None:
        super().__init__()
        nz, ny, nx = (int(n) for n in volume_shape)
        if min(nz, ny, nx) < 1 or length_unit_px <= 0:
            raise ParameterError(f"field: bad volume shape {tuple(volume_shape)} or length unit {length_unit_px}")
        self.volume_shape = (nz, ny, nx)
        self.length_unit_px = float(length_unit_px)
        # half extents in normalized units, xyz (box edge = outer voxel faces)
        half = torch.tensor([nx / 2.0, ny / 2.0, nz / 2.0]) / self.length_unit_px
        self.register_buffer("half_extent", half, persistent=False)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density inside the box (subclasses implement); ``points (N, 3)`` → ``(N,)``."""
        raise NotImplementedError

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``points (..., 3)`` normalized xyz → density ``(...)`` in [0, 1], zero outside the box."""
        flat = points.reshape(-1, 3)
        inside = (flat.abs() <= self.half_extent).all(dim=-1)
        rho = self.density(flat) * inside.to(flat.dtype)
        return rho.reshape(points.shape[:-1])

    def tv(self) -> torch.Tensor:
        """Total-variation regularizer (anisotropic L1, mean over finite differences); 0 if not defined."""
        return self.half_extent.new_zeros(())

    @torch.no_grad()
    def project_(self) -> None:
        """Project parameters back to their admissible set after an optimizer step (default: no-op)."""

    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1] (for coarse-to-fine schedules; default: ignored)."""


def _tv3d(grid: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of ``(C, D, H, W)``: mean|Δz| + mean|Δy| + mean|Δx|."""
    out = grid.new_zeros(())
    for dim in (-3, -2, -1):
        if grid.shape[dim] > 1:
            out = out + grid.diff(dim=dim).abs().mean()
    return out


class MLPField(Field):
    """The paper's MLP: γ(p) = [sin(π2^i p), cos(π2^i p)]_{i<L} (raw p dropped), ReLU MLP with skip, sigmoid."""

    freqs: torch.Tensor

    def __init__(self, volume_shape: Sequence[int], length_unit_px: float, cfg: FieldConfig) -> None:
        super().__init__(volume_shape, length_unit_px)
        if cfg.mlp_width < 1 or cfg.mlp_depth < 1 or cfg.pe_frequencies < 1:
            raise ParameterError("--field mlp: width, depth and frequencies must be ≥ 1")
        self.register_buffer(
            "freqs", math.pi * 2.0 ** torch.arange(cfg.pe_frequencies, dtype=torch.float32), persistent=False
        )
        n_in = 6 * cfg.pe_frequencies
        self.skip = cfg.mlp_skip if 0 < cfg.mlp_skip < cfg.mlp_depth else 0
        layers = []
        for i in range(cfg.mlp_depth):
            fan_in = n_in if i == 0 else cfg.mlp_width
            if self.skip and i == self.skip:
                fan_in += n_in
            layers.append(nn.Linear(fan_in, cfg.mlp_width))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Linear(cfg.mlp_width, 1)

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        """``(N, 3)`` → ``(N, 6L)``: sin of xyz at every frequency, then cos (grouped as the paper)."""
        arg = (points[:, None, :] * self.freqs[:, None]).reshape(points.shape[0], -1)
        return torch.cat((torch.sin(arg), torch.cos(arg)), dim=-1)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        enc = self.encode(points)
        h = enc
        for i, layer in enumerate(self.layers):
            if self.skip and i == self.skip:
                h = torch.cat((enc, h), dim=-1)
            h = torch.relu(layer(h))
        return torch.sigmoid(self.out(h)).squeeze(-1)


def _lookup(grid: torch.Tensor, points: torch.Tensor, half_extent: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of ``grid (C, D, H, W)`` (z, y, x) at normalized ``points (N, 3)`` → ``(N, C)``.

    Grid node i of an axis with n nodes sits at the voxel centre ``(i - (n-1)/2)`` of a volume spanning
    ``±half_extent`` (align_corners=False maps the box faces to ±1).
    """
    g = (points / half_extent).to(grid.dtype)
    out = F.grid_sample(
        grid[None], g.view(1, -1, 1, 1, 3), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.view(grid.shape[0], -1).t()


class VoxelField(Field):
    """Explicit density grid ``(nz, ny, nx)`` at the volume's resolution, trilinear, clamped to [0, 1]."""

    def __init__(self, volume_shape: Sequence[int], length_unit_px: float, cfg: FieldConfig) -> None:
        super().__init__(volume_shape, length_unit_px)
        self.grid = nn.Parameter(torch.full((1, *self.volume_shape), float(cfg.voxel_init)))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return _lookup(self.grid, points, self.half_extent)[:, 0]

    def tv(self) -> torch.Tensor:
        return _tv3d(self.grid)

    @torch.no_grad()
    def project_(self) -> None:
        self.grid.clamp_(0.0, 1.0)


class GridField(Field):
    """Multi-resolution dense feature grids (coarse to the volume's size) + MLP ``(L·F → H → 1)`` + sigmoid.

    Level ``l`` has ``base_res · b^l`` nodes along the longest volume axis (b chosen so that the finest
    level matches the volume) and proportionally fewer along the others. With coarse-to-fine enabled
    (:meth:`set_progress`), level ``l`` fades in linearly over the first half of training.
    """

    level_weights: torch.Tensor

    def __init__(
        self, volume_shape: Sequence[int], length_unit_px: float, cfg: FieldConfig, coarse_to_fine: bool = False
    ) -> None:
        super().__init__(volume_shape, length_unit_px)
        if cfg.grid_levels < 1 or cfg.grid_features < 1 or cfg.grid_base_res < 2:
            raise ParameterError("--field grid: levels ≥ 1, features ≥ 1 and base resolution ≥ 2 are required")
        finest = max(self.volume_shape)
        base = min(cfg.grid_base_res, finest)
        growth = (finest / base) ** (1.0 / max(cfg.grid_levels - 1, 1))
        grids = []
        for level in range(cfg.grid_levels):
            res = base * growth**level
            shape = [max(2, round(n / finest * res)) for n in self.volume_shape]
            grids.append(nn.Parameter(1e-2 * torch.randn(cfg.grid_features, *shape)))
        self.grids = nn.ParameterList(grids)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.grid_levels * cfg.grid_features, cfg.grid_hidden), nn.ReLU(), nn.Linear(cfg.grid_hidden, 1)
        )
        self.coarse_to_fine = coarse_to_fine
        self.register_buffer("level_weights", torch.ones(cfg.grid_levels), persistent=False)

    def set_progress(self, fraction: float) -> None:
        if not self.coarse_to_fine:
            return
        n = len(self.grids)
        w = [min(1.0, max(0.0, 2.0 * fraction * n - (level - 1))) if level else 1.0 for level in range(n)]
        self.level_weights.copy_(torch.tensor(w))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        feats = [
            _lookup(g, points, self.half_extent) * self.level_weights[i] for i, g in enumerate(self.grids)
        ]
        return torch.sigmoid(self.mlp(torch.cat(feats, dim=-1))).squeeze(-1)

    def tv(self) -> torch.Tensor:
        return sum((_tv3d(g) for g in self.grids), self.half_extent.new_zeros(()))


def build_field(
    cfg: FieldConfig, volume_shape: Sequence[int], length_unit_px: float, *, coarse_to_fine: bool = False
) -> Field:
    """Construct the field named by ``cfg.kind`` for a volume ``(nz, ny, nx)``.

    Raises
    ------
    ParameterError
        Unknown kind or bad hyperparameters.
    """
    try:
        kind = FieldKind(cfg.kind)
    except ValueError:
        raise ParameterError(f"--field {cfg.kind!r}: use one of {', '.join(k.value for k in FieldKind)}") from None
    if kind is FieldKind.mlp:
        return MLPField(volume_shape, length_unit_px, cfg)
    if kind is FieldKind.voxel:
        return VoxelField(volume_shape, length_unit_px, cfg)
    return GridField(volume_shape, length_unit_px, cfg, coarse_to_fine=coarse_to_fine)


@torch.no_grad()
def sample_volume(
    field: Field,
    shape: Sequence[int],
    *,
    length_unit_px: float | None = None,
    scale: float | Sequence[float] = 1.0,
    chunk: int = 1 << 16,
    out: torch.Tensor | None = None,
    z_range: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Evaluate ``field`` on a regular grid of voxel centres ``(nz, ny, nx)``.

    The grid shares the field's centre; voxel i of an axis with n voxels sits at ``(i - (n-1)/2) · scale``
    voxels of the field's own resolution (``scale`` = output voxel size / field voxel size, one value or
    one per axis zyx, e.g. 2 for ``--bin 2``). Only z-planes ``z_range`` are computed when given (chunked export). Returns float32 on
    the field's device, ``(z1 - z0, ny, nx)``.
    """
    nz, ny, nx = (int(n) for n in shape)
    z0, z1 = z_range or (0, nz)
    unit = field.length_unit_px if length_unit_px is None else length_unit_px
    dev = field.half_extent.device
    scales = [float(scale)] * 3 if isinstance(scale, (int, float)) else [float(s) for s in scale]
    ax = [
        (torch.arange(n, device=dev, dtype=torch.float32) - (n - 1) / 2.0) * sc / unit
        for n, sc in zip((nz, ny, nx), scales, strict=True)
    ]
    zs = ax[0][z0:z1]
    res = out if out is not None else torch.empty((z1 - z0, ny, nx), device=dev)
    plane = ny * nx
    yy, xx = torch.meshgrid(ax[1], ax[2], indexing="ij")
    pts_yx = torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=-1)
    for i, z in enumerate(zs):
        for s in range(0, plane, chunk):
            p = pts_yx[s : s + chunk]
            pts = torch.cat((p, z.expand(p.shape[0], 1)), dim=-1)
            res.view(z1 - z0, -1)[i, s : s + chunk] = field(pts)
    return res


__all__ = [
    "Field",
    "FieldConfig",
    "FieldKind",
    "GridField",
    "MLPField",
    "VoxelField",
    "build_field",
    "sample_volume",
]
