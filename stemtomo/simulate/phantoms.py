"""The cell-like phantom of the paper's synthetic experiment (METHOD.md §7.1), done right.

Ellipsoidal shells ("cells", "vesicles") in a large and a small size class and virus-like particles,
placed at random in a slab with full random 3D rotations, added to the volume, then a uniform background
inside the slab, zero outside, and a clip to [0, 1]. Deterministic for a given seed
(``np.random.default_rng(seed)``); vectorized over the voxels of each object's bounding box.

Differences to the research code (METHOD §7.1 and §10.5 item 10): uniformly random 3D rotations instead
of an integer angle about one axis; a fixed seed; the slab and sizes are arguments instead of globals;
attempt counts scale with the slab area so small volumes get a similar object density.

Coordinates are the centred voxel coordinates of :mod:`stemtomo.core.geometry`; volumes are
``(nz, ny, nx)`` with the slab ``|z| ≤ thickness_px/2`` (z = beam direction at 0° tilt).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from stemtomo.errors import ParameterError
from stemtomo.simulate.virion import random_rotation, rotate_map


@dataclasses.dataclass(frozen=True)
class CellPhantomConfig:
    """Parameters of :func:`cell_phantom` (defaults follow METHOD.md §7.1)."""

    large_radius_frac: tuple[float, float] = (0.15, 0.4)
    """Radius range of the large shells as fractions of the slab thickness (paper: int(0.15T)…int((0.8T-1)/2))."""
    small_radius_frac: tuple[float, float] = (0.05, 0.25)
    """Radius range of the small shells as fractions of the slab thickness (paper: 0.05T…0.25T)."""
    membrane_density: tuple[float, float] = (0.5, 0.98)
    """Range of the shell (membrane) density."""
    interior_density: tuple[float, float] = (0.1, 0.5)
    """Range of the interior ("fluid") density."""
    shell_ratio: tuple[float, float] = (0.85, 0.95)
    """Range of inner / outer semi-axis ratio (membrane thickness = (1 - ratio)·semi-axis)."""
    minor_axis_frac: tuple[float, float] = (0.7, 1.0)
    """Two of the three semi-axes are drawn from this fraction of the radius; one equals the radius."""
    large_attempts: float = 43.0
    """Placement attempts of large shells per (size / thickness)² (paper: 125 at 512 px, T = 300)."""
    small_attempts: float = 300.0
    """Placement attempts of small shells per (size / thickness)² (paper: 875)."""
    virus_attempts: float = 340.0
    """Placement attempts of virus-like particles per (size / thickness)² (paper: 1000)."""
    max_viruses: float = 69.0
    """Most viruses placed per (size / thickness)² (paper: 200)."""
    background: float = 0.2
    """Density added everywhere inside the slab (paper: +0.2)."""


def _box(centre_xyz: np.ndarray, half: float, shape: tuple[int, int, int]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Index box around a centre (centred voxel coords) and the xyz offsets ``(bz, by, bx, 3)`` of its voxels."""
    nz, ny, nx = shape
    sl, axes = [], []
    for c, n in zip(centre_xyz[::-1], (nz, ny, nx), strict=True):  # z, y, x
        ci = c + (n - 1) / 2.0
        lo, hi = max(0, int(math.floor(ci - half))), min(n, int(math.ceil(ci + half)) + 1)
        sl.append(slice(lo, max(lo, hi)))
        axes.append(np.arange(lo, max(lo, hi), dtype=np.float64) - ci)
    dz, dy, dx = np.meshgrid(*axes, indexing="ij")
    return tuple(sl), np.stack((dx, dy, dz), axis=-1)


def _random_centre(rng: np.random.Generator, r: float, shape: tuple[int, int, int], thickness: float) -> np.ndarray:
    """A centre (x, y, z) keeping a ball of radius r inside the volume laterally and inside the slab in z."""
    nz, ny, nx = shape

    def draw(half_extent: float) -> float:
        lim = half_extent - r
        return float(rng.uniform(-lim, lim)) if lim > 0 else 0.0

    return np.array([draw(nx / 2.0), draw(ny / 2.0), draw(thickness / 2.0)])


def paint_shell(
    vol: np.ndarray, rng: np.random.Generator, radius: float, thickness: float, cfg: CellPhantomConfig
) -> bool:
    """Try to add one randomly rotated ellipsoidal shell of the given radius; False if rejected.

    The shell holds the membrane density, its inside the interior density; both are *added*. The
    placement is rejected when the new interior would cover voxels of more than one value (so shells may
    overlap, or nest inside a uniform interior, but never cut through another object's inside).
    """
    axes = np.full(3, radius)
    minor = rng.permutation(3)[:2]
    axes[minor] = rng.uniform(*cfg.minor_axis_frac, size=2) * radius
    ratio = rng.uniform(*cfg.shell_ratio)
    membrane, interior = rng.uniform(*cfg.membrane_density), rng.uniform(*cfg.interior_density)
    rot = random_rotation(rng)
    centre = _random_centre(rng, radius, vol.shape, thickness)  # type: ignore[arg-type]
    sl, off = _box(centre, radius, vol.shape)  # type: ignore[arg-type]
    q = off @ rot  # body-frame coordinates: R^T·p
    rho2 = ((q / axes) ** 2).sum(axis=-1)
    outer = rho2 <= 1.0
    inner = rho2 <= ratio * ratio
    patch = vol[sl]
    if inner.any():
        values = patch[inner]
        if float(values.max() - values.min()) > 1e-6:
            return False
    patch += np.where(inner, interior, np.where(outer, membrane, 0.0)).astype(vol.dtype)
    return True


def paint_particle(vol: np.ndarray, rng: np.random.Generator, particle: np.ndarray, thickness: float) -> bool:
    """Try to add a randomly rotated copy of ``particle`` (cubic map in [0, 1]); False if rejected.

    Rejected unless the volume is uniform (one value) under the particle's support, as in the paper.
    """
    n = particle.shape[0]
    rotated = rotate_map(particle, random_rotation(rng))
    centre = _random_centre(rng, n / 2.0, vol.shape, thickness)  # type: ignore[arg-type]
    ci = [c + (s - 1) / 2.0 for c, s in zip(centre[::-1], vol.shape, strict=True)]
    lo = [int(round(c - (n - 1) / 2.0)) for c in ci]
    src, dst = [], []
    for lo_i, size in zip(lo, vol.shape, strict=True):
        a, b = max(0, lo_i), min(size, lo_i + n)
        if b <= a:
            return False
        dst.append(slice(a, b))
        src.append(slice(a - lo_i, b - lo_i))
    piece = rotated[tuple(src)]
    patch = vol[tuple(dst)]
    support = piece > 0.01
    if support.any():
        values = patch[support]
        if float(values.max() - values.min()) > 1e-6:
            return False
    patch += piece
    return True


def slab_coverage(nz: int, thickness_px: float) -> np.ndarray:
    """Fraction ``(nz,)`` of each z-plane's voxel cell inside the slab ``|z| ≤ thickness_px/2``."""
    z = np.arange(nz, dtype=np.float64) - (nz - 1) / 2.0
    return np.clip(thickness_px / 2.0 - np.abs(z) + 0.5, 0.0, 1.0)


def finish_slab(vol: np.ndarray, thickness_px: float, background: float) -> np.ndarray:
    """Zero outside the slab, ``+background`` inside it, clip to [0, 1]; returns float32."""
    cov = slab_coverage(vol.shape[0], thickness_px)[:, None, None]
    return np.clip((vol + background) * cov, 0.0, 1.0).astype(np.float32)


def check_size_thickness(size: int, thickness_px: float) -> None:
    """Raise ParameterError unless ``4 ≤ size`` and ``0 < thickness_px ≤ size``."""
    if int(size) < 4:
        raise ParameterError(f"--size {size}: must be at least 4 voxels")
    t = float(thickness_px)
    if not (math.isfinite(t) and 0 < t <= size):
        raise ParameterError(f"--thickness-px {thickness_px:g}: must be in (0, {size}] (the volume size)")


def _radii(rng: np.random.Generator, frac: tuple[float, float], thickness: float, n: int) -> np.ndarray:
    lo, hi = max(1.5, frac[0] * thickness), max(2.0, frac[1] * thickness)
    return np.sort(rng.uniform(lo, max(lo, hi), size=n))[::-1]


def cell_phantom(
    size: int,
    thickness_px: float,
    rng: np.random.Generator,
    *,
    particle: np.ndarray | None = None,
    config: CellPhantomConfig = CellPhantomConfig(),
) -> tuple[np.ndarray, dict[str, Any]]:
    """The cell-like phantom: large shells, then viruses, then small shells, then the slab treatment.

    Parameters
    ----------
    size : N, the volume is ``(N, N, N)`` voxels.
    thickness_px : slab thickness T in voxels, ``0 < T ≤ N``.
    rng : the random generator (``np.random.default_rng(seed)``): same seed → same phantom.
    particle : cubic map in [0, 1] of the virus-like particle (e.g. :func:`procedural_virion`), or None
        for no viruses.
    config : shape and count parameters.

    Returns
    -------
    (volume float32 ``(N, N, N)`` in [0, 1], parameters dict with the objects placed for the sidecar)

    Raises
    ------
    ParameterError
        If the size or thickness are out of range.

    References
    ----------
    Kniesel et al., "Clean Implicit 3D Structure from Noisy 2D STEM Images", CVPR 2022 (synthetic data).
    """
    check_size_thickness(size, thickness_px)
    n, t = int(size), float(thickness_px)
    vol = np.zeros((n, n, n), dtype=np.float32)
    scale = (n / t) ** 2
    counts = {"large_shells": 0, "viruses": 0, "small_shells": 0}
    for r in _radii(rng, config.large_radius_frac, t, max(1, round(config.large_attempts * scale))):
        counts["large_shells"] += paint_shell(vol, rng, float(r), t, config)
    if particle is not None and particle.shape[0] <= t:
        max_v = max(1, round(config.max_viruses * scale))
        for _ in range(max(1, round(config.virus_attempts * scale))):
            if counts["viruses"] >= max_v:
                break
            counts["viruses"] += paint_particle(vol, rng, particle, t)
    for r in _radii(rng, config.small_radius_frac, t, max(1, round(config.small_attempts * scale))):
        counts["small_shells"] += paint_shell(vol, rng, float(r), t, config)
    out = finish_slab(vol, t, config.background)
    params: dict[str, Any] = {
        "phantom": "cell",
        "size": n,
        "thickness_px": t,
        "placed": counts,
        "particle_size_px": None if particle is None else int(particle.shape[0]),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
    }
    return out, params


__all__ = [
    "CellPhantomConfig",
    "cell_phantom",
    "check_size_thickness",
    "finish_slab",
    "paint_particle",
    "paint_shell",
    "slab_coverage",
]
