"""Fourier filters and angular weights for weighted (filtered) back-projection.

The filters follow scikit-image's ``iradon`` exactly (same names, same construction), so that a stemtomo
WBP slice and ``skimage.transform.iradon`` agree on the same sinogram:

- the ramp is built in real space (the band-limited Ram-Lak kernel of Kak & Slaney, eq. 61) and
  transformed, which avoids the DC offset of a naive ``|ω|`` sampled in Fourier space;
- it is ``2|ω|`` with ω in cycles per pixel (value 1 at Nyquist); the apodization windows multiply it;
- projections are zero-padded to ``max(64, next power of two ≥ 2·n_u)`` before filtering.

References
----------
A. C. Kak and M. Slaney, *Principles of Computerized Tomographic Imaging*, IEEE Press, 1988, ch. 3.
S. van der Walt et al., scikit-image: ``skimage/transform/radon_transform.py`` (``_get_fourier_filter``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np
import torch

from stemtomo.errors import ParameterError


class FilterName(str, Enum):
    """Apodization of the ramp filter (scikit-image ``iradon`` names)."""

    ramp = "ramp"
    shepp_logan = "shepp-logan"
    cosine = "cosine"
    hamming = "hamming"
    hann = "hann"


def filter_name(name: str | FilterName) -> FilterName:
    """Validate a filter name.

    Raises
    ------
    ParameterError
        If ``name`` is not one of ramp, shepp-logan, cosine, hamming, hann.
    """
    try:
        return FilterName(name)
    except ValueError:
        choices = ", ".join(f.value for f in FilterName)
        raise ParameterError(f"--filter {name!r}: unknown filter; use one of {choices}") from None


def padded_size(n_u: int) -> int:
    """FFT length for rows of ``n_u`` pixels: ``max(64, next power of two ≥ 2·n_u)`` (as scikit-image)."""
    return max(64, int(2 ** int(np.ceil(np.log2(2 * n_u)))))


def fourier_filter(size: int, name: str | FilterName = "ramp") -> np.ndarray:
    """The filter's frequency response, ``(size,)`` float64 in ``numpy.fft.fftfreq`` order.

    The response is ``2|ω|·W(ω)`` (ω in cycles/pixel, W the window); with the angular weight ``Δθ/2``
    applied in :func:`angular_weights` callers get the filtered back-projection formula
    ``f = ∫₀^π (p_θ ∗ h)(u) dθ`` with ``ĥ = |ω|``.
    """
    kind = filter_name(name)
    n = np.concatenate((np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int)))
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1 / (np.pi * n) ** 2
    response = 2 * np.real(np.fft.fft(f))
    if kind is FilterName.shepp_logan:
        omega = np.pi * np.fft.fftfreq(size)[1:]
        response[1:] *= np.sin(omega) / omega
    elif kind is FilterName.cosine:
        freq = np.linspace(0, np.pi, size, endpoint=False)
        response *= np.fft.fftshift(np.sin(freq))
    elif kind is FilterName.hamming:
        response *= np.fft.fftshift(np.hamming(size))
    elif kind is FilterName.hann:
        response *= np.fft.fftshift(np.hanning(size))
    return response


def filter_rows(projections: torch.Tensor, name: str | FilterName = "ramp") -> torch.Tensor:
    """Filter every row (last axis, perpendicular to the tilt axis) of ``projections`` in Fourier space.

    Parameters
    ----------
    projections : ``(..., n_u)`` real tensor, e.g. aligned line integrals ``(n_tilts, ny, n_u)``.
    name : filter name (:class:`FilterName`).

    Returns
    -------
    Tensor of the same shape, dtype and device: rows zero-padded to :func:`padded_size`, multiplied by
    :func:`fourier_filter`, transformed back and cropped.
    """
    n_u = projections.shape[-1]
    size = padded_size(n_u)
    full = fourier_filter(size, name)
    # Hermitian part (what the real part of a full complex FFT filter keeps; the Hann/Hamming windows
    # of scikit-image are off-centre by half a bin), restricted to the rfft half.
    response = (0.5 * (full + np.roll(full[::-1], 1)))[: size // 2 + 1]
    h = torch.as_tensor(response, dtype=projections.dtype, device=projections.device)
    spec = torch.fft.rfft(projections, n=size, dim=-1)
    return torch.fft.irfft(spec * h, n=size, dim=-1)[..., :n_u]


def angular_weights(tilt_angles_deg: Sequence[float] | np.ndarray) -> np.ndarray:
    """Angular quadrature weights ``Δθ_i / 2`` (radians) for unevenly spaced tilts.

    ``Δθ_i`` is half the sum of the gaps to the neighbouring tilts (in sorted order); the first and last
    tilt use their single gap twice. Evenly spaced tilts over 180° get ``π/n`` each, i.e. weights
    ``π/(2n)``, scikit-image's ``iradon`` scale. The factor 1/2 pairs with the ``2|ω|`` of
    :func:`fourier_filter`. Repeated angles share their gap.

    Raises
    ------
    ParameterError
        If fewer than two tilts are given, or all tilts are equal.
    """
    a = np.radians(np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1))
    if a.size < 2:
        raise ParameterError(f"tilt series has {a.size} projection(s); back-projection needs at least 2 tilts")
    order = np.argsort(a, kind="stable")
    gaps = np.diff(a[order])
    if not np.any(gaps > 0):
        raise ParameterError("all tilt angles are equal; back-projection needs at least 2 distinct tilts")
    padded = np.concatenate(([gaps[0]], gaps, [gaps[-1]]))
    delta_sorted = 0.5 * (padded[:-1] + padded[1:])
    delta = np.empty_like(delta_sorted)
    delta[order] = delta_sorted
    return 0.5 * delta


__all__ = ["FilterName", "angular_weights", "filter_name", "filter_rows", "fourier_filter", "padded_size"]
