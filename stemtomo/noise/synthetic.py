"""A synthetic STEM detector noise process and smooth test images, for tests and benchmarks.

The process is signal dependent, non-Gaussian and scan correlated, like a real short-exposure STEM image:

``noisy = gain · (Σ_{i ≤ N} h_i) / dose + read + line + offset``,  ``N ~ Poisson(dose · clean)``

- shot noise at a low ``dose`` (electrons per pixel at intensity 1): skewed and discrete at low counts;
- optional pulse-height variation of the detector (scintillator/PMT): each electron contributes
  ``h_i ~ Gamma(pulse_shape, 1/pulse_shape)`` (mean 1), so the sum is ``Gamma(N·pulse_shape, 1/pulse_shape)``
  (a compound Poisson–gamma); ``pulse_shape = 0`` means ``h_i = 1`` (pure Poisson);
- Gaussian read noise ``read ~ N(0, read_std²)``, filtered along the fast scan axis x by an AR(1) process
  with coefficient ``scan_corr`` (detector/amplifier bandwidth; variance kept at ``read_std²``);
- a per-scan-line offset ``line ~ N(0, line_std²)`` (flyback jitter), shared by the pixels of a row.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class StemNoiseProcess:
    """Parameters of :func:`stem_noise` (intensities in normalized [0, 1] units)."""

    dose: float = 30.0
    """Expected electrons per pixel at clean intensity 1."""
    gain: float = 1.0
    """Detector gain applied to the shot-noise term."""
    offset: float = 0.0
    """Constant detector offset."""
    read_std: float = 0.02
    """Standard deviation of the read noise."""
    scan_corr: float = 0.5
    """AR(1) coefficient of the read noise along x (0 = white)."""
    line_std: float = 0.0
    """Standard deviation of the per-row offset."""
    pulse_shape: float = 0.0
    """Gamma shape of the per-electron pulse height (0: every electron counts exactly 1)."""


def stem_noise(clean: np.ndarray, process: StemNoiseProcess, rng: np.random.Generator) -> np.ndarray:
    """Noisy image(s) ``(..., ny, nx)`` from clean intensities under ``process`` (float32, not clipped)."""
    c = np.clip(np.asarray(clean, dtype=np.float64), 0.0, None)
    counts = rng.poisson(process.dose * c).astype(np.float64)
    if process.pulse_shape > 0:
        k = process.pulse_shape
        pos = counts > 0
        counts[pos] = rng.gamma(counts[pos] * k, 1.0 / k)
    shot = process.gain * counts / process.dose
    white = rng.normal(0.0, 1.0, size=c.shape)
    read = np.empty_like(white)
    rho = float(process.scan_corr)
    read[..., 0] = white[..., 0]
    innov = np.sqrt(max(0.0, 1.0 - rho * rho))
    for j in range(1, c.shape[-1]):  # recursion along x (one vectorized step per column)
        read[..., j] = rho * read[..., j - 1] + innov * white[..., j]
    line = rng.normal(0.0, process.line_std, size=c.shape[:-1] + (1,)) if process.line_std > 0 else 0.0
    return (shot + process.read_std * read + line + process.offset).astype(np.float32)


def smooth_images(n: int, ny: int, nx: int, rng: np.random.Generator, blobs: int = 12) -> np.ndarray:
    """``n`` smooth test images ``(n, ny, nx)`` in [0, 1]: Gaussian blobs on a gradient, spanning the range."""
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    out = np.empty((n, ny, nx), dtype=np.float32)
    for i in range(n):
        img = 0.2 + 0.3 * xx / max(1, nx - 1)
        for _ in range(blobs):
            cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
            s = rng.uniform(2.0, max(3.0, min(ny, nx) / 5))
            img += rng.uniform(-0.5, 0.8) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        lo, hi = np.percentile(img, [0.5, 99.5])
        out[i] = np.clip((img - lo) / (hi - lo), 0.0, 1.0)
    return out


__all__ = ["StemNoiseProcess", "smooth_images", "stem_noise"]
