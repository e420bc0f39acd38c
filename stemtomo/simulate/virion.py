"""Virus-like particles: a procedural icosahedral virion, user density maps, and random 3D rotations.

All maps are cubic ``(n, n, n)`` float32 arrays in [0, 1] in (z, y, x) order with the particle centred.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from stemtomo.errors import InputError, ParameterError

VIRION_DIAMETER_ANGSTROM = 500.0
"""Outer diameter of the procedural virion (≈ 50 nm, e.g. flaviviruses such as Zika, PDB 6MID)."""

_PHI = (1.0 + math.sqrt(5.0)) / 2.0


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed 3D rotation matrix ``(3, 3)`` (normalized Gaussian quaternion)."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _icosahedron_vertices() -> np.ndarray:
    """The 12 unit vertex directions of an icosahedron: cyclic permutations of (0, ±1, ±φ)."""
    out = []
    for a in (-1.0, 1.0):
        for b in (-_PHI, _PHI):
            out += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    v = np.array(out)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _face_normals() -> np.ndarray:
    """The 20 unit face normals of the icosahedron (= dodecahedron vertex directions)."""
    out: list[tuple[float, float, float]] = [
        (a, b, c) for a in (-1.0, 1.0) for b in (-1.0, 1.0) for c in (-1.0, 1.0)
    ]
    for a in (-1.0, 1.0):
        for b in (-1.0, 1.0):
            out += [(0.0, a / _PHI, b * _PHI), (a / _PHI, b * _PHI, 0.0), (b * _PHI, 0.0, a / _PHI)]
    n = np.array(out, dtype=np.float64)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def _soft_inside(signed_distance: np.ndarray) -> np.ndarray:
    """Partial-volume indicator of ``distance ≤ 0`` with a one-voxel linear edge."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0)


def procedural_virion(diameter_px: float, rotation: np.ndarray | None = None) -> np.ndarray:
    """A virus-like particle: icosahedral capsid shell with surface spikes, a lipid-like gap and a dense core.

    Parameters
    ----------
    diameter_px : outer diameter (spike tips) in voxels, ≥ 4.
    rotation : optional ``(3, 3)`` rotation applied to the particle (evaluated analytically, no resampling).

    Returns
    -------
    float32 array ``(n, n, n)``, ``n = ceil(diameter_px) + 2``, values in [0, 1]: capsid 0.85, spikes
    0.7, gap 0.25, core 0.95, zero outside.

    Raises
    ------
    ParameterError
        If ``diameter_px`` is not a finite number ≥ 4.
    """
    d = float(diameter_px)
    if not (math.isfinite(d) and d >= 4.0):
        raise ParameterError(f"virion diameter {diameter_px!r} px: must be at least 4 voxels")
    n = int(math.ceil(d)) + 2
    c = (n - 1) / 2.0
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float64) - c,) * 3, indexing="ij")
    p = np.stack((xx, yy, zz), axis=-1)
    if rotation is not None:
        p = p @ np.asarray(rotation, dtype=np.float64)  # rows: R^T applied to each point
    r = np.linalg.norm(p, axis=-1)
    r_tip = d / 2.0
    r_caps = 0.82 * r_tip  # icosahedron in-radius of the capsid
    ico = (p @ _face_normals().T).max(axis=-1)  # polyhedral "radius": ≤ r_caps inside
    shell_w = max(1.0, 0.12 * r_tip)
    capsid = _soft_inside(ico - r_caps) * (1.0 - _soft_inside(ico - (r_caps - shell_w)))
    core = _soft_inside(r - 0.5 * r_tip)
    gap = _soft_inside(ico - (r_caps - shell_w)) * (1.0 - core)
    spikes = np.zeros_like(r)
    spike_r = max(0.75, 0.12 * r_tip)
    for v in _icosahedron_vertices():  # 12 spikes at the five-fold vertices, tips at r_tip
        centre = v * (r_tip - spike_r)
        spikes = np.maximum(spikes, _soft_inside(np.linalg.norm(p - centre, axis=-1) - spike_r))
    spikes *= 1.0 - _soft_inside(ico - r_caps)
    out = 0.85 * capsid + 0.25 * gap + 0.95 * core + 0.7 * spikes
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def prepare_particle_map(data: np.ndarray, source: str, zoom: float = 1.0) -> np.ndarray:
    """Check a user density map is cubic, min–max normalize it to [0, 1] and optionally rescale it.

    Raises
    ------
    InputError
        If the map is not a cubic 3D array, is constant, or holds NaN/Inf.
    ParameterError
        If ``zoom`` is not positive.
    """
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 3 or len(set(arr.shape)) != 1:
        raise InputError(f"--particle-map {source}: shape {arr.shape} is not a cubic 3D map; crop or pad it to n×n×n")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"--particle-map {source}: holds NaN/Inf values")
    lo, hi = float(arr.min()), float(arr.max())
    if not hi > lo:
        raise InputError(f"--particle-map {source}: the map is constant")
    if not (math.isfinite(zoom) and zoom > 0):
        raise ParameterError(f"particle map zoom {zoom!r}: must be positive")
    arr = (arr - lo) / (hi - lo)
    if abs(zoom - 1.0) > 1e-6:
        arr = ndimage.zoom(arr, zoom, order=1)
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def rotate_map(particle: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate a cubic map about its centre (trilinear, zero outside), keeping its shape."""
    n = particle.shape[0]
    c = np.full(3, (n - 1) / 2.0)
    # zyx index order: the xyz rotation R becomes P·R·P with P reversing the axes
    rot_zyx = np.asarray(rotation)[::-1, ::-1]
    # output voxel o samples input at R^T (o - c) + c (rotation about the centre)
    mat = rot_zyx.T
    offset = c - mat @ c
    out = ndimage.affine_transform(particle, mat, offset=offset, order=1, mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


__all__ = [
    "VIRION_DIAMETER_ANGSTROM",
    "prepare_particle_map",
    "procedural_virion",
    "random_rotation",
    "rotate_map",
]
