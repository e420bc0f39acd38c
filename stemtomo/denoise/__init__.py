"""Per-projection 2D denoising (BM3D, Gaussian, median), parallel over projections."""

from stemtomo.denoise.denoise import (
    DenoiseConfig,
    DenoiseMethod,
    denoise_image,
    denoise_stack,
    estimate_noise_sigma,
)

__all__ = ["DenoiseConfig", "DenoiseMethod", "denoise_image", "denoise_stack", "estimate_noise_sigma"]
