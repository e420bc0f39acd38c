"""Two more phantoms: nanoparticles on a thin support film, and a 3D Shepp–Logan-like head phantom.

Both are ``(N, N, N)`` float32 volumes in [0, 1], zero outside the slab ``|z| ≤ thickness_px/2``
(centred voxel coordinates of :mod:`stemtomo.core.geometry`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from stemtomo.simulate.phantoms import _box, check_size_thickness, finish_slab
from stemtomo.simulate.virion import random_rotation


@dataclasses.dataclass(frozen=True)
class NanoparticleConfig:
    """Parameters of :func:`nanoparticle_phantom`."""

    radius_frac: tuple[float, float] = (0.025, 0.08)
    """Particle radius range as fractions of the volume size N (at least 1.5 voxels)."""
    density: tuple[float, float] = (0.85, 1.0)
    """Particle density range (dense metal particles)."""
    support_density: float = 0.3
    """Density of the support film (e.g. amorphous carbon)."""
    support_frac: float = 0.08
    """Support film thickness as a fraction of the slab thickness (at least 2 voxels)."""
    particles_per_area: float = 2.5e-3
    """Placement attempts per voxel² of the slab area (N²)."""


def _shape_mask(q: np.ndarray, r: float, kind: str) -> np.ndarray:
    """Inside-mask of a sphere, cube (half-edge 0.8r) or octahedron (|x|+|y|+|z| ≤ 1.3r) in body coords."""
    if kind == "sphere":
        return (q**2).sum(axis=-1) <= r * r
    if kind == "cube":
        return np.abs(q).max(axis=-1) <= 0.8 * r
    return np.abs(q).sum(axis=-1) <= 1.3 * r


def nanoparticle_phantom(
    size: int, thickness_px: float, rng: np.random.Generator, *, config: NanoparticleConfig = NanoparticleConfig()
) -> tuple[np.ndarray, dict[str, Any]]:
    """Dense spheres, cubes and octahedra resting on a thin support film at the bottom of the slab.

    Particles do not overlap each other (a placement over existing particle voxels is rejected); they
    keep a random 3D orientation. No background outside the film (vacuum).

    Returns
    -------
    (volume float32 ``(N, N, N)`` in [0, 1], parameters dict for the sidecar)

    Raises
    ------
    ParameterError
        If the size or thickness are out of range.
    """
    check_size_thickness(size, thickness_px)
    n, t = int(size), float(thickness_px)
    vol = np.zeros((n, n, n), dtype=np.float32)
    z = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    film = max(2.0, config.support_frac * t)
    top = -t / 2.0 + film
    vol[(z >= -t / 2.0) & (z < top)] = config.support_density
    placed = {"sphere": 0, "cube": 0, "octahedron": 0}
    for _ in range(max(1, round(config.particles_per_area * n * n))):
        r = max(1.5, rng.uniform(*config.radius_frac) * n)
        kind = str(rng.choice(list(placed)))
        rot = random_rotation(rng)
        dens = rng.uniform(*config.density)
        lim = n / 2.0 - r
        cx, cy = (rng.uniform(-lim, lim, size=2) if lim > 0 else (0.0, 0.0))
        centre = np.array([cx, cy, min(top + r, t / 2.0 - r)])
        sl, off = _box(centre, 1.35 * r, vol.shape)  # type: ignore[arg-type]
        mask = _shape_mask(off @ rot, r, kind)
        patch = vol[sl]
        if np.any(patch[mask] > config.support_density + 1e-6):
            continue
        patch[mask] = dens
        placed[kind] += 1
    out = finish_slab(vol, t, 0.0)
    return out, {"phantom": "nanoparticles", "size": n, "thickness_px": t, "placed": placed,
                 "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}}


# Modified 3D Shepp–Logan (Toft's contrast-enhanced values): density, semi-axes (a, b, c), centre
# (x0, y0, z0), in-plane rotation φ (degrees), all in units of the half-extent.
_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.81, 0.0, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.78, 0.0, -0.0184, 0.0, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.22, 0.0, 0.0, -18.0),
    (-0.2, 0.16, 0.41, 0.28, -0.22, 0.0, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.41, 0.0, 0.35, -0.15, 0.0),
    (0.1, 0.046, 0.046, 0.05, 0.0, 0.1, 0.25, 0.0),
    (0.1, 0.046, 0.046, 0.05, 0.0, -0.1, 0.25, 0.0),
    (0.1, 0.046, 0.023, 0.05, -0.08, -0.605, 0.0, 0.0),
    (0.1, 0.023, 0.023, 0.02, 0.0, -0.606, 0.0, 0.0),
    (0.1, 0.023, 0.046, 0.02, 0.06, -0.605, 0.0, 0.0),
)


def shepp_logan_phantom(size: int, thickness_px: float) -> tuple[np.ndarray, dict[str, Any]]:
    """A 3D Shepp–Logan-like phantom squeezed into the slab (deterministic, no randomness).

    The ten ellipsoids of the modified 3D Shepp–Logan phantom are laid out in x, y over the volume's
    half-width and in z over the slab's half-thickness; densities add up and are clipped to [0, 1]
    (outer shell 1, inside 0.2, features 0–0.4).

    References
    ----------
    Shepp & Logan, IEEE Trans. Nucl. Sci. 21 (1974); Toft, "The Radon Transform" (1996) for the
    modified contrast; Kak & Slaney, "Principles of Computerized Tomographic Imaging" (1988) for 3D.
    """
    check_size_thickness(size, thickness_px)
    n, t = int(size), float(thickness_px)
    c = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    zz, yy, xx = np.meshgrid(c / (t / 2.0), c / (n / 2.0), c / (n / 2.0), indexing="ij", sparse=True)
    vol = np.zeros((n, n, n), dtype=np.float64)
    for dens, a, b, cc, x0, y0, z0, phi in _SHEPP_LOGAN:
        ph = math.radians(phi)
        dx, dy = xx - x0, yy - y0
        xr = dx * math.cos(ph) + dy * math.sin(ph)
        yr = -dx * math.sin(ph) + dy * math.cos(ph)
        vol += dens * (((xr / a) ** 2 + (yr / b) ** 2 + ((zz - z0) / cc) ** 2) <= 1.0)
    out = finish_slab(np.clip(vol, 0.0, 1.0), t, 0.0)
    return out, {"phantom": "shepp-logan", "size": n, "thickness_px": t}


__all__ = ["NanoparticleConfig", "nanoparticle_phantom", "shepp_logan_phantom"]
