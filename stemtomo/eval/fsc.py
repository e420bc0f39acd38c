"""Fourier shell correlation between two half maps, and the resolution at 0.143 and 0.5.

``FSC(k) = Re Σ F1·conj(F2) / sqrt(Σ|F1|² · Σ|F2|²)``, the sums over the Fourier coefficients whose spatial
frequency lies in shell k. Frequencies are in cycles per pixel, ``f = sqrt((kz/nz)² + (ky/ny)² + (kx/nx)²)``
(so non-cubic volumes are handled), shells are ``1/n_max`` wide and centred on ``k/n_max``, up to Nyquist
(0.5 cycles/px). The real FFT is used; the coefficients it stores once for a conjugate pair are counted
twice, so the sums equal those of the full FFT.

The resolution at a threshold t is ``1/f_t`` where ``f_t`` is the first crossing of the curve below t
(linear interpolation between shells, shell 0 skipped), in pixels or, with a pixel size, in Å. If the
curve never drops below t, the resolution is limited by Nyquist (2 px) and flagged.

References
----------
M. van Heel, M. Schatz, "Fourier shell correlation threshold criteria", J. Struct. Biol. 151 (2005).
P. B. Rosenthal, R. Henderson, "Optimal determination of particle orientation, absolute hand, and contrast
loss in single-particle electron cryomicroscopy", J. Mol. Biol. 333 (2003) — the 0.143 criterion for half maps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from stemtomo.errors import ParameterError

THRESHOLDS = (0.143, 0.5)


@dataclasses.dataclass(frozen=True)
class FscResult:
    """An FSC curve."""

    frequency_per_px: np.ndarray
    """Shell centres, cycles per pixel, ``(n_shells,)`` from 0 to 0.5."""
    fsc: np.ndarray
    """Correlation per shell, ``(n_shells,)``; NaN where a shell is empty or a map has no power in it."""
    n_coefficients: np.ndarray
    """Fourier coefficients per shell (full-FFT count)."""
    pixel_size_angstrom: float | None = None
    """Voxel size in Å, or None (then resolutions are in pixels only)."""

    def resolution_px(self, threshold: float) -> tuple[float, bool]:
        """Resolution (pixels per cycle) where the curve first drops below ``threshold``; ``(2.0, True)`` if never."""
        f, c = self.frequency_per_px, self.fsc
        for k in range(1, len(c)):
            if np.isfinite(c[k]) and c[k] < threshold:
                prev = c[k - 1] if np.isfinite(c[k - 1]) else 1.0
                t = (prev - threshold) / (prev - c[k]) if prev != c[k] else 0.0
                fk = f[k - 1] + t * (f[k] - f[k - 1])
                return (float(1.0 / fk) if fk > 0 else float("inf")), False
        return 1.0 / float(f[-1]), True

    def resolution_angstrom(self, threshold: float) -> float | None:
        """Resolution in Å at ``threshold``, or None without a pixel size."""
        if self.pixel_size_angstrom is None:
            return None
        return self.resolution_px(threshold)[0] * self.pixel_size_angstrom

    def to_dict(self) -> dict[str, object]:
        """Plain dictionary for the report: resolutions and the curve."""
        out: dict[str, object] = {"pixel_size_angstrom": self.pixel_size_angstrom}
        for t in THRESHOLDS:
            key = _key(t)
            res_px, at_nyq = self.resolution_px(t)
            out[f"fsc_{key}_px"] = res_px
            out[f"fsc_{key}_angstrom"] = self.resolution_angstrom(t)
            out[f"fsc_{key}_at_nyquist"] = at_nyq
        curve: dict[str, object] = {
            "frequency_per_px": [float(x) for x in self.frequency_per_px],
            "fsc": [None if not np.isfinite(x) else float(x) for x in self.fsc],
            "n_coefficients": [int(x) for x in self.n_coefficients],
        }
        if self.pixel_size_angstrom is not None:
            curve["frequency_per_angstrom"] = [float(x) / self.pixel_size_angstrom for x in self.frequency_per_px]
        out["curve"] = curve
        return out


def _key(threshold: float) -> str:
    return f"{threshold:g}".replace(".", "")


def fourier_shell_correlation(
    half1: np.ndarray | torch.Tensor,
    half2: np.ndarray | torch.Tensor,
    pixel_size_angstrom: float | None = None,
) -> FscResult:
    """FSC of two volumes ``(nz, ny, nx)`` of equal shape (computed on the device of ``half1``).

    Raises
    ------
    ParameterError
        If the shapes differ, are not 3D, or the pixel size is not positive.
    """
    a = torch.as_tensor(half1).to(torch.float64)
    b = torch.as_tensor(half2).to(device=a.device, dtype=torch.float64)
    if a.dim() != 3 or tuple(a.shape) != tuple(b.shape):
        raise ParameterError(f"--fsc needs two volumes of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if pixel_size_angstrom is not None and not pixel_size_angstrom > 0:
        raise ParameterError(f"--pixel-size {pixel_size_angstrom!r}: must be positive (Å)")
    nz, ny, nx = a.shape
    fa, fb = torch.fft.rfftn(a), torch.fft.rfftn(b)
    dev = a.device
    kz = torch.fft.fftfreq(nz, device=dev, dtype=torch.float64)
    ky = torch.fft.fftfreq(ny, device=dev, dtype=torch.float64)
    kx = torch.fft.rfftfreq(nx, device=dev, dtype=torch.float64)
    freq = torch.sqrt(kz[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2)
    n_max = max(nz, ny, nx)
    n_shells = n_max // 2 + 1
    shell = torch.round(freq * n_max).to(torch.int64)
    # weight 2 for the x-columns that stand for a conjugate pair (all but x = 0 and the even Nyquist column)
    wx = torch.full((kx.numel(),), 2.0, device=dev, dtype=torch.float64)
    wx[0] = 1.0
    if nx % 2 == 0:
        wx[-1] = 1.0
    w = wx.expand_as(freq)
    keep = shell < n_shells
    idx = shell[keep]

    def shell_sum(values: torch.Tensor) -> np.ndarray:
        return torch.bincount(idx, weights=(values * w)[keep], minlength=n_shells).cpu().numpy()

    num = shell_sum((fa * torch.conj(fb)).real)
    pa = shell_sum(fa.abs() ** 2)
    pb = shell_sum(fb.abs() ** 2)
    count = shell_sum(torch.ones_like(freq))
    den = np.sqrt(pa * pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        fsc = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return FscResult(
        frequency_per_px=np.arange(n_shells) / n_max,
        fsc=fsc,
        n_coefficients=np.rint(count).astype(np.int64),
        pixel_size_angstrom=pixel_size_angstrom,
    )


__all__ = ["THRESHOLDS", "FscResult", "fourier_shell_correlation"]
