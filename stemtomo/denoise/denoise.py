"""Per-projection 2D denoising of image stacks: BM3D (the paper's L2Den / WBPDen input), Gaussian, median.

Each projection is denoised on its own (no information is shared across tilts), in the stack's own
intensity units. The noise level for BM3D is estimated per image from the data unless given.

Noise estimate
--------------
:func:`estimate_noise_sigma` is the wavelet MAD estimator of Donoho & Johnstone (1994):
``σ = median(|HH₁|) / 0.6745`` over the finest diagonal (HH) Daubechies-1 detail coefficients, as
implemented by ``skimage.restoration.estimate_sigma``. It assumes additive white Gaussian noise; for
Poisson-like STEM noise it measures an average noise level over the image (signal-dependent noise is
not modelled, as in the original paper, which does not state its BM3D σ).

Licence note: the ``bm3d`` package (Mäkinen, Azzari, Foi) is free for non-commercial use only; the
``gaussian`` and ``median`` methods have no such restriction.

References
----------
K. Dabov, A. Foi, V. Katkovnik, K. Egiazarian, "Image denoising by sparse 3-D transform-domain
collaborative filtering", IEEE TIP 16 (2007) 2080–2095.
Y. Mäkinen, L. Azzari, A. Foi, "Collaborative filtering of correlated noise: exact transform-domain
variance for improved shrinkage and patch matching", IEEE TIP 29 (2020) 8339–8354.
D. L. Donoho, I. M. Johnstone, "Ideal spatial adaptation by wavelet shrinkage", Biometrika 81 (1994) 425–455.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from enum import Enum

import numpy as np

from stemtomo.errors import ParameterError

log = logging.getLogger(__name__)


class DenoiseMethod(str, Enum):
    """2D denoiser applied to every projection."""

    bm3d = "bm3d"
    gaussian = "gaussian"
    median = "median"


@dataclasses.dataclass(frozen=True)
class DenoiseConfig:
    """Settings of ``stemtomo denoise``."""

    method: str = "bm3d"
    """bm3d (block matching and 3D filtering), gaussian (low-pass), or median."""
    sigma: float | None = None
    """BM3D noise standard deviation in the stack's intensity units; None: estimated per image."""
    profile: str = "np"
    """BM3D parameter profile of the ``bm3d`` package ('np' normal, 'refilter', 'vn', 'high', 'deb')."""
    gaussian_sigma_px: float = 1.0
    """Gaussian filter standard deviation in pixels (method gaussian)."""
    median_size_px: int = 3
    """Median filter window width in pixels (method median)."""
    jobs: int = 1
    """Worker processes (BM3D is CPU-bound; ~5 s per 512² image on one core)."""

    def validate(self) -> None:
        """Raise :class:`ParameterError` for out-of-range settings (named after the CLI options)."""
        try:
            DenoiseMethod(self.method)
        except ValueError:
            raise ParameterError(f"--method {self.method!r}: use bm3d, gaussian or median") from None
        if self.sigma is not None and not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ParameterError(f"--sigma {self.sigma:g}: the noise level must be > 0 (or omit it to estimate)")
        if self.profile not in ("np", "refilter", "vn", "vn_old", "high", "deb"):
            raise ParameterError(f"--profile {self.profile!r}: use np, refilter, vn, vn_old, high or deb")
        if not (math.isfinite(self.gaussian_sigma_px) and self.gaussian_sigma_px > 0):
            raise ParameterError(f"--gaussian-sigma-px {self.gaussian_sigma_px:g}: must be > 0")
        if self.median_size_px < 1:
            raise ParameterError(f"--median-size-px {self.median_size_px}: must be ≥ 1")
        if self.jobs < 1:
            raise ParameterError(f"--jobs {self.jobs}: need at least 1 worker process")


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Noise standard deviation of a 2D image (wavelet MAD estimator, see the module docstring).

    Parameters
    ----------
    image : ``(ny, nx)`` array in any intensity units.

    Returns
    -------
    σ in the image's units (0 for a noise-free constant image).
    """
    from skimage.restoration import estimate_sigma  # Donoho–Johnstone MAD on db1 HH coefficients

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ParameterError(f"estimate_noise_sigma expects a 2D image, got shape {img.shape}")
    return float(estimate_sigma(img))


def denoise_image(image: np.ndarray, config: DenoiseConfig, sigma: float | None = None) -> tuple[np.ndarray, float]:
    """Denoise one 2D image; returns ``(float32 image (ny, nx), σ used or estimated)``.

    ``sigma`` overrides ``config.sigma``; if both are None it is estimated from the image. BM3D returns a
    noise-free image (σ ≤ 1e-9 of its maximum, e.g. a constant one) unchanged.
    """
    img = np.asarray(image, dtype=np.float64)
    s = sigma if sigma is not None else config.sigma
    s = estimate_noise_sigma(img) if s is None else float(s)
    method = DenoiseMethod(config.method)
    if method is DenoiseMethod.gaussian:
        from scipy.ndimage import gaussian_filter

        out = gaussian_filter(img, config.gaussian_sigma_px, mode="reflect")
    elif method is DenoiseMethod.median:
        from scipy.ndimage import median_filter

        out = median_filter(img, size=config.median_size_px, mode="reflect")
    elif s <= 1e-9 * float(np.abs(img).max()):  # noise-free (e.g. constant) image: nothing to remove
        out = img
    else:
        import bm3d

        out = bm3d.bm3d(img, sigma_psd=s, profile=config.profile)
    return np.asarray(out, dtype=np.float32), s


def _denoise_task(index: int, image: np.ndarray, config: DenoiseConfig) -> tuple[int, np.ndarray, float]:
    out, s = denoise_image(image, config)
    return index, out, s


def denoise_stack(
    stack: np.ndarray,
    config: DenoiseConfig,
    *,
    clip: tuple[float, float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, list[float]]:
    """Denoise every image of a stack independently.

    Parameters
    ----------
    stack : ``(n, ny, nx)`` (or one ``(ny, nx)`` image) in any intensity units.
    config : method and parameters; ``config.jobs > 1`` runs images in that many worker processes
        (``spawn`` start method, so it is safe after torch/OpenMP have started threads).
    clip : ``(lo, hi)`` to clip the result to, e.g. ``(0, 1)`` for intensities normalized to [0, 1]
        (BM3D overshoot beyond the physical range is noise); None keeps every value.
    progress : ``callback(done, n)`` after each finished image (in completion order).

    Returns
    -------
    ``(denoised float32 (n, ny, nx), per-image σ)``: σ is the BM3D noise level used (given or estimated),
    and the estimated noise level for gaussian/median (for the record).

    Raises
    ------
    ParameterError
        Invalid config, or a stack that is not 2D/3D.
    """
    config.validate()
    arr = np.asarray(stack)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ParameterError(f"expected a stack (n, ny, nx), got shape {np.shape(stack)}")
    n = arr.shape[0]
    out = np.empty(arr.shape, dtype=np.float32)
    sigmas = [0.0] * n
    jobs = min(config.jobs, n)
    if jobs == 1:
        for i in range(n):
            out[i], sigmas[i] = denoise_image(arr[i], config)
            if progress is not None:
                progress(i + 1, n)
        return _clip(out, clip), sigmas
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = [pool.submit(_denoise_task, i, np.ascontiguousarray(arr[i]), config) for i in range(n)]
        for done, fut in enumerate(as_completed(futures), start=1):
            i, img, s = fut.result()
            out[i], sigmas[i] = img, s
            if progress is not None:
                progress(done, n)
    log.debug("denoised %d images with %s (%d jobs)", n, config.method, jobs)
    return _clip(out, clip), sigmas


def _clip(out: np.ndarray, clip: tuple[float, float] | None) -> np.ndarray:
    if clip is not None:
        np.clip(out, clip[0], clip[1], out=out)
    return out


__all__ = ["DenoiseConfig", "DenoiseMethod", "denoise_image", "denoise_stack", "estimate_noise_sigma"]
