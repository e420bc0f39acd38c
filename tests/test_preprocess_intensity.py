"""Per-tilt intensity normalization on synthetic series with known per-tilt gain errors (the issue asks for
recovery within 2 %): BF vacuum and slab models, DF projected-mass consistency (cosθ-weighted and plain);
bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemtomo.core.projector import forward_project
from stemtomo.errors import ParameterError
from stemtomo.preprocess import (
    IntensityConfig,
    mean_log_intensity,
    normalize_bf,
    normalize_df,
    normalize_tilt_intensities,
)
from stemtomo.simulate.phantoms import cell_phantom

ANGLES = np.arange(-60.0, 61.0, 6.0)  # 21 tilts
KAPPA, UNIT = 7.0, 32.0  # κ and voxels per normalized unit for 64-px-wide images


def _gains(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.85, 1.15, ANGLES.size)


def _central_object(size: int = 64) -> np.ndarray:
    """A cell phantom confined to |x|, |y| ≤ 14 and a 16-voxel slab: vacuum around it at every tilt
    (its projection spans |u| ≤ 14·cos60° + 8·sin60° ≈ 14 < 32)."""
    vol, _ = cell_phantom(size, 16, np.random.default_rng(3))
    c = size // 2
    out = np.zeros_like(vol)
    out[:, c - 14 : c + 14, c - 14 : c + 14] = vol[:, c - 14 : c + 14, c - 14 : c + 14]
    return out


def _periodic_slab_projections(seed: int) -> np.ndarray:
    """Line integrals (voxels) of a laterally periodic 16-voxel slab: a cell phantom's slab (32 rows) tiled 7×
    in x (period 64, 448 wide), imaged on its 192 central columns, so that every ray crosses the full slab
    inside the volume at every tilt up to 60° (a laterally infinite specimen, no vacuum). The window holds
    3/cosθ periods; the partial period biases the window mean by < 1 %."""
    vol, _ = cell_phantom(64, 16, np.random.default_rng(seed))
    slab = np.ascontiguousarray(np.tile(vol[22:42, 16:48], (1, 1, 7)))  # (20, 32, 448)
    return forward_project(torch.from_numpy(slab), ANGLES, image_width=192).numpy()


def _relative(x: np.ndarray) -> np.ndarray:
    return x / np.median(x)


def test_bf_vacuum_recovers_gains(rng: np.random.Generator) -> None:
    """I = g_i·exp(−κP) with Poisson noise (1000 e⁻ per vacuum pixel): 1/factor recovers g_i within 2 %
    (relative: within 1 %), and the vacuum of the corrected stack is 1 within 2 %."""
    proj = forward_project(torch.from_numpy(_central_object()), ANGLES).numpy()
    g = _gains(1)
    clean = g[:, None, None] * np.exp(-KAPPA * proj / UNIT)
    noisy = rng.poisson(1000 * clean) / 1000.0
    out, corr = normalize_bf(noisy, ANGLES)
    assert corr.method == "bf_vacuum"
    np.testing.assert_allclose(1.0 / corr.factors, g, rtol=0.02)
    np.testing.assert_allclose(_relative(1.0 / corr.factors), _relative(g), rtol=0.01)
    vacuum = out[:, :, :8].mean(axis=(1, 2))  # the left 8 columns never see the object
    np.testing.assert_allclose(vacuum, 1.0, rtol=0.02)
    assert out.dtype == np.float32
    record = corr.as_dict()
    assert record["method"] == "per_tilt_bf_vacuum" and len(record["factors"]) == ANGLES.size


def test_bf_slab_recovers_gains_up_to_the_identifiable_trend(rng: np.random.Generator) -> None:
    """A cell-phantom slab filling the view (no vacuum), I = I0·g_i·exp(−κP) with I0 = 0.8 and Poisson noise
    (1000 e⁻ at I = 1): the slab model recovers the gain errors within 2 % once their exp(c0 + c1/cosθ) part
    (not identifiable from the data) is removed from the truth, and μ within 3 % of the slab's true mean
    attenuation κ·mean(P·cosθ)/unit minus the 1/cosθ slope of the log-gains (which it absorbs; measured
    −1.5 % bias from the log of noisy smoothed data over 4 seeds)."""
    proj = _periodic_slab_projections(5)
    g = _gains(2)
    clean = 0.8 * g[:, None, None] * np.exp(-KAPPA * proj / UNIT)
    stack = rng.poisson(1000 * clean) / 1000.0
    out, corr = normalize_bf(stack, ANGLES, IntensityConfig(bf_model="slab"))
    assert corr.method == "bf_slab"
    cos = np.cos(np.deg2rad(ANGLES))
    log_err = np.log(0.8 * g * corr.factors)  # = −(c0 + c1/cosθ) + estimation error
    trend = np.polyval(np.polyfit(1.0 / cos, log_err, 1), 1.0 / cos)
    assert np.max(np.abs(log_err - trend)) < 0.02
    mu_true = KAPPA * float(np.mean(proj.mean(axis=(1, 2)) * cos)) / UNIT
    gain_slope = np.polyfit(1.0 / cos, np.log(g), 1)[0]
    assert corr.fit["mu"] == pytest.approx(mu_true - gain_slope, rel=0.03)
    corrected = mean_log_intensity(out)
    np.testing.assert_allclose(corrected, -corr.fit["mu"] / cos, atol=0.02)


def test_df_total_for_an_object_in_view() -> None:
    """Linear HAADF signal I = g_i·P of an object that stays in the field of view: Σ I is conserved, so
    mode 'total' recovers the relative gains within 2 %, and the cosθ weighting would be wrong here (it
    leaves the 1/cos60° = 2 spread)."""
    proj = forward_project(torch.from_numpy(_central_object()), ANGLES).numpy()
    g = _gains(3)
    stack = g[:, None, None] * proj
    _, corr = normalize_df(stack, ANGLES, IntensityConfig(df_mode="total"))
    np.testing.assert_allclose(_relative(g * corr.factors), 1.0, rtol=0.02)
    _, wrong = normalize_df(stack, ANGLES, IntensityConfig(df_mode="cos"))
    spread = g * wrong.factors
    assert spread.max() / spread.min() > 1.8


def test_df_cos_for_an_extended_slab() -> None:
    """A laterally periodic slab is a laterally infinite specimen: Σ I·cosθ is conserved, and mode 'cos'
    recovers the gains within 2 %."""
    proj = _periodic_slab_projections(6)
    g = _gains(4)
    stack = g[:, None, None] * proj
    out, corr = normalize_df(stack, ANGLES)
    assert corr.method == "df_cos"
    np.testing.assert_allclose(_relative(g * corr.factors), 1.0, rtol=0.02)
    _, plain = normalize_df(stack, ANGLES, IntensityConfig(df_mode="total"))
    spread = g * plain.factors
    assert spread.max() / spread.min() > 1.8, "the plain total is wrong for a slab (path length 1/cosθ)"
    mass = out.sum(axis=(1, 2)) * np.cos(np.deg2rad(ANGLES))
    np.testing.assert_allclose(mass, np.median(corr.levels), rtol=1e-5)


def test_dispatch_by_contrast(rng: np.random.Generator) -> None:
    stack = rng.uniform(0.5, 1.0, (ANGLES.size, 16, 16))
    assert normalize_tilt_intensities(stack, ANGLES, "bf")[1].method == "bf_vacuum"
    assert normalize_tilt_intensities(stack, ANGLES, "df")[1].method == "df_cos"
    with pytest.raises(ParameterError, match="--contrast 'xf'"):
        normalize_tilt_intensities(stack, ANGLES, "xf")


GOOD = np.ones((3, 8, 8))
ANG3 = [-30.0, 0.0, 30.0]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: normalize_bf(np.ones((8, 8))), r"expected a real \(n, ny, nx\) stack"),
        (lambda: normalize_bf(GOOD, [0.0, 1.0]), "2 tilt angles for a stack of 3 images"),
        (lambda: normalize_df(GOOD, [0.0, 1.0]), "2 tilt angles for a stack of 3 images"),
        (lambda: normalize_bf(np.full((3, 8, 8), np.nan)), "NaN or infinite"),
        (lambda: normalize_bf(-GOOD), "background level -1 ≤ 0"),
        (lambda: normalize_bf(-GOOD, ANG3, IntensityConfig(bf_model="slab")), "image 0 has mean -1 ≤ 0"),
        (lambda: normalize_df(-GOOD, ANG3), "total signal -64 ≤ 0"),
        (lambda: normalize_bf(GOOD, None, IntensityConfig(bf_model="slab")), "needs the tilt angles"),
        (lambda: normalize_bf(GOOD, [0.0, 0.0, 95.0], IntensityConfig(bf_model="slab")), "95°"),
        (lambda: normalize_bf(GOOD, ANG3, IntensityConfig(bf_model="flat")), "'flat': use vacuum or slab"),
        (lambda: normalize_df(GOOD, ANG3, IntensityConfig(df_mode="sum")), "'sum': use cos or total"),
        (lambda: normalize_bf(GOOD, ANG3, IntensityConfig(percentile=30)), "percentile 30"),
        (lambda: normalize_bf(GOOD, ANG3, IntensityConfig(smooth_sigma_px=-2)), "smoothing -2"),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        call()
