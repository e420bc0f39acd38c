"""Paired clean (long exposure) / noisy (short exposure) stacks: checks, normalization, registration, split.

The residual ``noisy - clean`` of two normalized images of the same area is the noise sample the models are
fitted to, so the pair must show the same area on the same intensity scale:

- normalization (DESIGN.md): stacks whose sidecars say they are already normalized are used as is;
  otherwise :func:`stemtomo.core.imaging.robust_normalize`, either one min–max for both
  stacks (``joint``; right when the exposures are already on one scale) or one per stack (``independent``;
  the paper's default, right when the two exposures differ in dose or gain);
- optional sub-pixel registration by phase correlation: the CLEAN image is shifted onto the noisy one
  (interpolating the smooth long exposure leaves the noise statistics of the short one untouched), and a
  border as wide as the largest shift is cropped from both.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from stemtomo.errors import InputError, ParameterError


@dataclasses.dataclass(frozen=True)
class PairedData:
    """Normalized, registered pairs and the held-out split.

    Attributes
    ----------
    clean, noisy : float32 ``(n, ny, nx)`` normalized to [0, 1].
    heldout : boolean ``(n, ny, nx)``; True for held-out pixels (whole images or a bottom strip).
    record : how the pairs were prepared (normalization, shifts in pixels (dy, dx), split), for reports.
    """

    clean: np.ndarray
    noisy: np.ndarray
    heldout: np.ndarray
    record: dict[str, Any]


def check_pair(clean: np.ndarray, noisy: np.ndarray, names: tuple[str, str] = ("CLEAN", "NOISY")) -> None:
    """Check that two stacks can be paired.

    Raises
    ------
    InputError
        Different shapes or image counts, NaN/Inf values, or a constant image.
    """
    if clean.shape != noisy.shape:
        raise InputError(
            f"{names[0]} has shape {clean.shape} but {names[1]} has {noisy.shape}; the stacks must show the same "
            "areas image by image (same count and size)"
        )
    for arr, name in zip((clean, noisy), names, strict=True):
        if arr.ndim != 3 or min(arr.shape) < 1:
            raise InputError(f"{name}: expected a stack (n, ny, nx), got shape {arr.shape}")
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(f"{name}: {bad} NaN/Inf values; clean the file first")
        flat = arr.reshape(arr.shape[0], -1)
        const = np.flatnonzero(flat.max(axis=1) == flat.min(axis=1))
        if const.size:
            raise InputError(
                f"{name}: image {int(const[0])} is constant ({float(flat[const[0], 0]):g}); it holds no noise to "
                "fit; remove it from both stacks"
            )


def normalize_pair(
    clean: np.ndarray,
    noisy: np.ndarray,
    joint: bool,
    records: tuple[dict[str, Any] | None, dict[str, Any] | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Intensities in [0, 1] for both stacks.

    When ``records`` (the sidecars' ``normalization``) say BOTH stacks are already normalized or calibrated
    (e.g. ``stemtomo simulate`` output), they are used as is (clipped to [0, 1]): the same intensities the
    reconstruction sees (:func:`stemtomo.core.imaging.normalized_intensities`). Otherwise a robust min–max:
    one transform for both stacks (``joint``) or one each.
    """
    from stemtomo.core.imaging import is_normalized, robust_normalize

    def ready(stack: np.ndarray, rec: dict[str, Any] | None) -> bool:
        if rec and rec.get("calibrated"):
            return True
        return is_normalized(rec) and float(stack.min()) >= -1e-6 and float(stack.max()) <= 1 + 1e-6

    if records is not None and ready(clean, records[0]) and ready(noisy, records[1]):
        c, s = (np.clip(a, 0.0, 1.0).astype(np.float32) for a in (clean, noisy))
        return c, s, {"mode": "sidecar", "clean": dict(records[0] or {}), "noisy": dict(records[1] or {})}
    if joint:
        both, rec = robust_normalize(np.concatenate([clean, noisy], axis=0))
        n = clean.shape[0]
        return both[:n], both[n:], {"mode": "joint", "both": rec}
    c, rc = robust_normalize(clean)
    s, rn = robust_normalize(noisy)
    return c, s, {"mode": "independent", "clean": rc, "noisy": rn}


def register_pair(clean: np.ndarray, noisy: np.ndarray, upsample: int = 20) -> tuple[np.ndarray, np.ndarray, list]:
    """Shift each clean image onto its noisy partner (sub-pixel phase correlation) and crop the border.

    Both images are mean-subtracted and Hann-windowed for the correlation (plain cross-correlation: the
    short exposure is too noisy for phase normalization). Returns the cropped ``(clean, noisy)`` and the shifts ``[(dy, dx), ...]`` applied to the clean images.
    Uses scikit-image's phase correlation and scipy's spline shift (cubic).
    """
    from scipy.ndimage import shift as nd_shift
    from skimage.registration import phase_cross_correlation

    out = np.empty_like(clean)
    shifts = []
    window = np.outer(np.hanning(clean.shape[1]), np.hanning(clean.shape[2]))  # no wrap-around edges
    for i in range(clean.shape[0]):
        ref, mov = (noisy[i] - noisy[i].mean()) * window, (clean[i] - clean[i].mean()) * window
        s, _, _ = phase_cross_correlation(ref, mov, upsample_factor=upsample, normalization=None)
        shifts.append((float(s[0]), float(s[1])))
        out[i] = nd_shift(clean[i], s, order=3, mode="nearest")
    m = int(math.ceil(max((max(abs(a), abs(b)) for a, b in shifts), default=0.0)))
    ny, nx = clean.shape[1:]
    if 2 * m >= min(ny, nx) - 4:
        raise InputError(f"registration shifts up to {m} px leave no overlap in {ny}×{nx} images; check the pairing")
    if m:
        out, noisy = out[:, m : ny - m, m : nx - m], noisy[:, m : ny - m, m : nx - m]
    return np.ascontiguousarray(out), np.ascontiguousarray(noisy), shifts


def heldout_mask(shape: tuple[int, int, int], fraction: float, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Held-out pixels: ``round(fraction·n)`` whole images (at least 1) when there are ≥ 5 images, else
    the bottom ``fraction`` of the rows of every image."""
    if not 0.0 < fraction < 1.0:
        raise ParameterError(f"--heldout {fraction}: must be in (0, 1)")
    n, ny, _ = shape
    mask = np.zeros(shape, dtype=bool)
    if n >= 5:
        k = max(1, int(round(fraction * n)))
        idx = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
        mask[idx] = True
        return mask, {"split": "images", "heldout_images": [int(i) for i in idx]}
    rows = max(1, int(round(fraction * ny)))
    mask[:, ny - rows :, :] = True
    return mask, {"split": "rows", "heldout_rows": rows}


def prepare_pairs(
    clean: np.ndarray,
    noisy: np.ndarray,
    *,
    joint_normalization: bool = False,
    records: tuple[dict[str, Any] | None, dict[str, Any] | None] | None = None,
    register: bool = False,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    names: tuple[str, str] = ("CLEAN", "NOISY"),
) -> PairedData:
    """Check, normalize, optionally register and split paired stacks ``(n, ny, nx)`` (2D images accepted).

    ``records``: the two sidecars' ``normalization`` records; see :func:`normalize_pair`.

    Raises
    ------
    InputError
        Unpaired stacks (shapes differ), NaN/Inf, constant images, or registration leaving no overlap.
    ParameterError
        ``heldout_fraction`` outside (0, 1).
    """
    clean = np.asarray(clean, dtype=np.float32)
    noisy = np.asarray(noisy, dtype=np.float32)
    if clean.ndim == 2:
        clean = clean[None]
    if noisy.ndim == 2:
        noisy = noisy[None]
    check_pair(clean, noisy, names)
    c, s, norm = normalize_pair(clean, noisy, joint_normalization, records)
    record: dict[str, Any] = {"normalization": norm}
    if register:
        c, s, shifts = register_pair(c, s)
        record["registration_shifts_px"] = [list(x) for x in shifts]
    mask, split = heldout_mask(c.shape, heldout_fraction, seed)
    record.update(split, heldout_fraction=heldout_fraction)
    return PairedData(clean=c, noisy=s, heldout=mask, record=record)


__all__ = ["PairedData", "check_pair", "heldout_mask", "normalize_pair", "prepare_pairs", "register_pair"]
