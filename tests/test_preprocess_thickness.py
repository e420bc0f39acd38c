"""Thickness estimation from the z-profile of a WBP: simulated slabs (cell phantom → projector → WBP) and a
synthetic volume with a known slab; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemtomo.core.projector import forward_project
from stemtomo.errors import ParameterError
from stemtomo.preprocess import ThicknessConfig, estimate_thickness, slab_from_profile
from stemtomo.recon.wbp import wbp
from stemtomo.simulate.phantoms import cell_phantom

ANGLES = np.arange(-60.0, 61.0, 3.0)


@pytest.mark.parametrize(("thickness", "shift"), [(16, 5), (24, -4), (32, 0)])
def test_wbp_of_simulated_slab(thickness: int, shift: int) -> None:
    """64³ cell phantom, slab moved off-centre by ``shift`` voxels, −60:60:3 tilts, WBP of the full depth:
    the issue asks for the thickness within 10 %; the centre should be within 1 voxel."""
    vol, _ = cell_phantom(64, thickness, np.random.default_rng(thickness))
    vol = np.roll(vol, shift, axis=0)  # real specimens are not centred in z
    proj = forward_project(torch.from_numpy(vol), ANGLES)
    rec = wbp(proj, ANGLES, 64)
    est = estimate_thickness(rec)
    assert est.thickness_px == pytest.approx(thickness, rel=0.10)
    assert est.z_offset_px == pytest.approx(shift, abs=1.0)
    assert not est.touches_edge
    assert est.profile.shape == (64,)


def test_noisy_wbp_slab(rng: np.random.Generator) -> None:
    """Same with Poisson noise (200 electrons per vacuum pixel, BF): the noise floor of the profile
    rises everywhere, the estimate stays within 10 %."""
    vol, _ = cell_phantom(64, 24, np.random.default_rng(7))
    proj = forward_project(torch.from_numpy(vol), ANGLES).numpy()
    unit = 32.0  # voxels per normalized length unit (max(ny, nx)/2)
    noisy = rng.poisson(200.0 * np.exp(-7.0 * proj / unit)) / 200.0
    lines = torch.from_numpy(-np.log(np.clip(noisy, 1e-3, 1.0)) * unit / 7.0).float()
    est = estimate_thickness(wbp(lines, ANGLES, 64))
    assert est.thickness_px == pytest.approx(24, rel=0.10)
    assert abs(est.z_offset_px) < 1.0


def test_known_synthetic_slab(rng: np.random.Generator) -> None:
    """Random lateral structure exactly in planes 20..43 (faces at 19.5 and 43.5 → 24 voxels, centre
    31.5 = volume centre of 64 planes + 0), weak noise everywhere: exact to a small fraction of a voxel."""
    vol = 0.02 * rng.standard_normal((64, 40, 40)).astype(np.float32)
    vol[20:44] += rng.random((24, 40, 40)).astype(np.float32)
    est = estimate_thickness(vol, ThicknessConfig(smooth_sigma_px=0.0))
    assert est.thickness_px == pytest.approx(24.0, abs=0.5)
    assert est.z_low_px == pytest.approx(19.5, abs=0.25)
    assert est.z_high_px == pytest.approx(43.5, abs=0.25)
    assert est.z_offset_px == pytest.approx(0.0, abs=0.25)
    assert est.plateau > 10 * est.background
    record = est.as_dict()
    assert record["thickness_px"] == est.thickness_px and len(record["profile"]) == 64


def test_tensor_input_and_statistics(rng: np.random.Generator) -> None:
    """A torch tensor (float64 too) gives the same answer as numpy; every statistic finds a sharp slab."""
    vol = 0.01 * rng.standard_normal((40, 24, 24))
    vol[8:20] += rng.random((12, 24, 24))  # faces 7.5 and 19.5, centre 13.5 → offset −6
    ref = estimate_thickness(vol)
    same = estimate_thickness(torch.from_numpy(vol))
    assert same.thickness_px == pytest.approx(ref.thickness_px, abs=1e-6)
    for stat in ("p99", "std", "mad"):
        est = estimate_thickness(vol, ThicknessConfig(statistic=stat, smooth_sigma_px=0.0))
        assert est.thickness_px == pytest.approx(12.0, abs=0.5), stat
        assert est.z_offset_px == pytest.approx(-6.0, abs=0.25), stat


def test_slab_reaching_edge_is_flagged(rng: np.random.Generator, caplog: pytest.LogCaptureFixture) -> None:
    vol = 0.01 * rng.standard_normal((20, 16, 16))
    vol[:8] += rng.random((8, 16, 16))
    est = estimate_thickness(vol, ThicknessConfig(smooth_sigma_px=0.0))
    assert est.touches_edge
    assert est.z_low_px == -0.5
    assert "deeper volume" in caplog.text


@pytest.mark.parametrize(
    ("volume", "config", "match"),
    [
        (np.zeros((4, 8, 8)), ThicknessConfig(), r"nz ≥ 5"),
        (np.zeros((8, 8)), ThicknessConfig(), r"got shape \(8, 8\)"),
        (np.full((8, 8, 8), np.nan), ThicknessConfig(), "NaN"),
        (np.ones((8, 8, 8)), ThicknessConfig(), "flat"),
        (np.ones((8, 8, 8)), ThicknessConfig(fraction=1.0), r"fraction 1: must be in \(0, 1\)"),
        (np.ones((8, 8, 8)), ThicknessConfig(statistic="max"), "'max': use one of p99, std, mad"),
        (np.ones((8, 8, 8)), ThicknessConfig(margin_frac=0.5), "margin_frac"),
        (np.ones((8, 8, 8)), ThicknessConfig(smooth_sigma_px=-1), "smooth_sigma_px"),
    ],
)
def test_bad_input(volume: np.ndarray, config: ThicknessConfig, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        estimate_thickness(volume, config)


def test_flat_profile_direct() -> None:
    with pytest.raises(ParameterError, match="flat"):
        slab_from_profile(np.ones(10))
