"""Tiny synthetic tilt series shared by the recon/export tests (helpers + a sanity test of the helper)."""

from __future__ import annotations

import numpy as np
import torch

from stemtomo.core.geometry import length_unit_px
from stemtomo.core.imaging import intensity
from stemtomo.core.projector import forward_project
from stemtomo.io import Image, Metadata

N = 24
THICKNESS = 10
ANGLES = np.arange(-60.0, 60.1, 6.0)  # 21 tilts


def phantom(n: int = N, thickness: int = THICKNESS) -> np.ndarray:
    """Balls of densities 0.5–1 in a slab of background 0.2 (zero outside the slab), ``(n, n, n)``."""
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2.0
    s = n / 24.0
    vol = np.zeros((n, n, n), np.float32)
    slab = np.abs(z) <= thickness / 2.0
    vol[slab] = 0.2
    for (cz, cy, cx), r, d in [((0, 4, 4), 3.5, 0.9), ((1, -5, -3), 2.5, 0.7), ((-1, 0, -7), 3.0, 0.5),
                               ((1, -6, 6), 2.0, 1.0)]:
        vol[(z - cz * s) ** 2 + (y - cy * s) ** 2 + (x - cx * s) ** 2 <= (r * s) ** 2] = d
    vol[~slab] = 0.0
    return vol


def clean_series(vol: np.ndarray, angles: np.ndarray = ANGLES, thickness: float = THICKNESS) -> np.ndarray:
    """Bright-field intensities ``exp(-7 P)``, P in normalized units, aligned frame ``(n_tilts, ny, nx)``."""
    p = forward_project(torch.from_numpy(vol), angles, thickness_px=thickness)
    return intensity(p / length_unit_px(vol.shape[1], vol.shape[2])).numpy().astype(np.float32)


def poisson_series(clean: np.ndarray, dose: float = 30.0, seed: int = 0) -> np.ndarray:
    """Low-dose noise as FINDINGS: Poisson(dose·I)/dose (many high-tilt rays see 1–2 electrons)."""
    rng = np.random.default_rng(seed)
    return (rng.poisson(dose * clean) / dose).astype(np.float32)


def series_meta(angles: np.ndarray = ANGLES, thickness: float = THICKNESS) -> Metadata:
    """Metadata of the test series: angles, slab, 10 Å pixels, bright field κ = 7, intensities used as they are."""
    return Metadata(kind="tilt_series", tilt_angles_deg=[float(a) for a in angles], thickness_px=float(thickness),
                    pixel_size_angstrom=10.0, contrast="bf", kappa=7.0, normalization={"range01": True})


def series_image(data: np.ndarray, angles: np.ndarray = ANGLES, thickness: float = THICKNESS) -> Image:
    """An in-memory tilt series with its metadata (:func:`series_meta`)."""
    return Image(data=data, meta=series_meta(angles, thickness))


def test_phantom_series_is_beer_lambert() -> None:
    # At 0° a ray crossing only background (0.2 over the 10-voxel slab) has P = 0.2·10/12 normalized units.
    vol = phantom()
    clean = clean_series(vol)
    zero = int(np.argmin(np.abs(ANGLES)))
    corner = clean[zero, 0, 0]
    assert abs(corner - np.exp(-7 * 0.2 * THICKNESS / (N / 2))) < 1e-3
    assert clean.min() > 0 and clean.max() <= 1
