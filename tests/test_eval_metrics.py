"""Metric identities and known values, skimage agreement, FSC, report encoding (stemtomo.eval)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stemtomo.errors import ParameterError
from stemtomo.eval.fsc import fourier_shell_correlation
from stemtomo.eval.metrics import dssim, minmax, mse, psnr, psnr_from_mse, slab_mask, ssim, ssim_batch_2d
from stemtomo.eval.report import json_safe, summary_rows, to_json, to_yaml


def smooth(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 1.5) -> np.ndarray:
    return minmax(gaussian_filter(rng.random(shape), sigma))


# ---- MSE / PSNR -----------------------------------------------------------------------------------------
def test_psnr_of_identical_arrays_is_infinite(rng: np.random.Generator) -> None:
    x = rng.random((8, 9, 10))
    assert psnr(x, x) == math.inf
    assert psnr_from_mse(0.0) == math.inf
    assert mse(x, x) == 0.0


def test_mse_of_constant_offset_is_offset_squared(rng: np.random.Generator) -> None:
    x = rng.random((16, 16, 16))
    assert mse(x, x + 0.1) == pytest.approx(0.01, rel=1e-12)
    # PSNR of a known MSE: 10 log10(1 / 0.01) = 20 dB; with data_range 2 it gains 20 log10(2) = 6.0206 dB
    assert psnr(x, x + 0.1) == pytest.approx(20.0, abs=1e-9)
    assert psnr_from_mse(0.01, data_range=2.0) == pytest.approx(20.0 + 20 * math.log10(2), abs=1e-9)


def test_psnr_3d_matches_skimage_within_001_db(rng: np.random.Generator) -> None:
    ref = smooth(rng, (24, 28, 32))
    vol = minmax(ref + 0.1 * rng.standard_normal(ref.shape))
    ours = psnr(vol, ref)
    theirs = peak_signal_noise_ratio(ref, vol, data_range=1.0)
    assert abs(ours - theirs) < 0.01
    assert 10 < ours < 40  # sanity: a visible but moderate noise level


def test_mse_on_a_mask_only_counts_masked_voxels(rng: np.random.Generator) -> None:
    x = rng.random((10, 10, 10))
    y = x.copy()
    y[:5] += 1.0  # differ only in the first half
    mask = np.zeros(x.shape, bool)
    mask[5:] = True
    assert mse(x, y, mask) == 0.0
    assert mse(x, y) == pytest.approx(0.5)


def test_minmax_maps_to_unit_range_and_constant_to_zero(rng: np.random.Generator) -> None:
    x = 3.0 + 5.0 * rng.random((5, 6))
    y = minmax(x)
    assert y.min() == 0.0 and y.max() == 1.0
    assert np.all(minmax(np.full((3, 3), 7.0)) == 0.0)


# ---- SSIM / DSSIM ---------------------------------------------------------------------------------------
def test_ssim_of_identical_volumes_is_one(rng: np.random.Generator) -> None:
    x = smooth(rng, (16, 16, 16))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert dssim(ssim(x, x)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_ssim_matches_skimage_3d_and_2d(rng: np.random.Generator, data_range: float) -> None:
    ref = smooth(rng, (14, 18, 20))
    vol = minmax(ref + 0.2 * rng.standard_normal(ref.shape))
    # skimage with gaussian_weights=False is the paper's uniform 7-window SSIM
    assert ssim(vol, ref, data_range) == pytest.approx(structural_similarity(vol, ref, data_range=data_range), abs=1e-10)
    assert ssim(vol[3], ref[3], data_range) == pytest.approx(
        structural_similarity(vol[3], ref[3], data_range=data_range), abs=1e-10
    )
    batch = ssim_batch_2d(torch.as_tensor(vol), torch.as_tensor(ref), data_range).numpy()
    expected = [structural_similarity(v, r, data_range=data_range) for v, r in zip(vol, ref, strict=True)]
    np.testing.assert_allclose(batch, expected, atol=1e-10)


def test_data_range_2_gives_higher_ssim_than_1(rng: np.random.Generator) -> None:
    # larger data_range → larger stabilizing constants → SSIM closer to 1 (why the paper's DSSIM is lower)
    ref = smooth(rng, (12, 12, 12))
    vol = minmax(ref + 0.3 * rng.standard_normal(ref.shape))
    assert ssim(vol, ref, 2.0) > ssim(vol, ref, 1.0)


def test_ssim_chunking_does_not_change_the_value(rng: np.random.Generator) -> None:
    ref = smooth(rng, (20, 12, 12))
    vol = minmax(ref + 0.2 * rng.standard_normal(ref.shape))
    assert ssim(vol, ref, max_elements=12 * 12) == pytest.approx(ssim(vol, ref), abs=1e-12)


def test_masked_ssim_is_the_mean_of_the_map_over_masked_window_centres(rng: np.random.Generator) -> None:
    ref = smooth(rng, (16, 16, 16))
    vol = minmax(ref + 0.2 * rng.standard_normal(ref.shape))
    _, smap = structural_similarity(vol, ref, data_range=1.0, full=True)
    mask = np.zeros(ref.shape, bool)
    mask[5:11, 3:13, 3:13] = True
    assert ssim(vol, ref, mask=mask) == pytest.approx(float(smap[mask].mean()), abs=1e-10)
    assert ssim(vol, ref, mask=np.ones(ref.shape, bool)) == pytest.approx(ssim(vol, ref), abs=1e-12)


def test_ssim_of_anticorrelated_images_is_negative(rng: np.random.Generator) -> None:
    x = smooth(rng, (12, 12, 12))
    assert ssim(x, 1.0 - x) < 0.0


def test_metric_errors() -> None:
    with pytest.raises(ParameterError, match="shapes differ"):
        mse(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ParameterError, match="at least 7"):
        ssim(np.zeros((5, 16, 16)), np.zeros((5, 16, 16)))
    with pytest.raises(ParameterError, match="selects no voxel"):
        mse(np.zeros((4, 4)), np.ones((4, 4)), np.zeros((4, 4), bool))
    with pytest.raises(ParameterError, match="border"):
        mask = np.zeros((9, 9, 9), bool)
        mask[0] = True  # only border voxels: no full window is centred there
        ssim(np.zeros((9, 9, 9)), np.zeros((9, 9, 9)), mask=mask)
    with pytest.raises(ParameterError, match="--thickness-px 0: the slab thickness must be a positive number"):
        slab_mask((8, 8, 8), 0.0)


def test_slab_mask_keeps_the_central_planes() -> None:
    m = slab_mask((32, 4, 4), 8.0)
    # centred z = -15.5 … 15.5; |z| ≤ 4 keeps z = -3.5 … 3.5: the 8 central planes 12 … 19
    assert np.flatnonzero(m[:, 0, 0]).tolist() == list(range(12, 20))


# ---- FSC ------------------------------------------------------------------------------------------------
def test_fsc_of_a_volume_with_itself_is_one_everywhere(rng: np.random.Generator) -> None:
    x = rng.random((16, 16, 16))
    res = fourier_shell_correlation(x, x, pixel_size_angstrom=1.5)
    np.testing.assert_allclose(res.fsc, 1.0, atol=1e-12)
    # never drops below a threshold: limited by Nyquist (2 px = 3 Å) and flagged
    assert res.resolution_px(0.143) == (2.0, True)
    assert res.resolution_angstrom(0.143) == pytest.approx(3.0)
    assert fourier_shell_correlation(x, -x).fsc[1:] == pytest.approx(-1.0)


def test_fsc_matches_a_full_fft_reference_on_a_non_cubic_volume(rng: np.random.Generator) -> None:
    a = rng.random((10, 16, 13))
    b = a + rng.standard_normal(a.shape)
    res = fourier_shell_correlation(a, b)
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    kz, ky, kx = np.meshgrid(*[np.fft.fftfreq(n) for n in a.shape], indexing="ij")
    shell = np.rint(np.sqrt(kz**2 + ky**2 + kx**2) * 16).astype(int)
    for k in range(len(res.fsc)):
        s = shell == k
        expected = np.real(np.sum(fa[s] * np.conj(fb[s]))) / np.sqrt(np.sum(abs(fa[s]) ** 2) * np.sum(abs(fb[s]) ** 2))
        assert res.fsc[k] == pytest.approx(expected, abs=1e-10)
        assert res.n_coefficients[k] == s.sum()


def test_fsc_of_volume_plus_noise_falls_off(rng: np.random.Generator) -> None:
    x = gaussian_filter(rng.random((32, 32, 32)), 1.5)
    noise = 0.02
    res = fourier_shell_correlation(x + noise * rng.standard_normal(x.shape), x + noise * rng.standard_normal(x.shape), 2.0)
    assert res.fsc[1] > 0.95  # low frequencies: signal dominates
    assert np.mean(res.fsc[-4:]) < 0.3  # near Nyquist the smooth signal is gone, noise is uncorrelated
    r0143, nyq = res.resolution_px(0.143)
    r05, _ = res.resolution_px(0.5)
    assert not nyq and 2.0 < r0143 < r05 < 16.0  # 0.5 is the stricter criterion
    d = res.to_dict()
    assert d["fsc_0143_angstrom"] == pytest.approx(2.0 * r0143)
    curve = d["curve"]
    assert isinstance(curve, dict)
    assert curve["frequency_per_angstrom"][-1] == pytest.approx(0.25)  # Nyquist of 2 Å pixels
    more_noise = fourier_shell_correlation(x + 0.1 * rng.standard_normal(x.shape), x + 0.1 * rng.standard_normal(x.shape))
    assert more_noise.resolution_px(0.143)[0] > r0143  # noisier half maps → worse resolution


def test_fsc_without_pixel_size_has_no_angstrom_values(rng: np.random.Generator) -> None:
    x = rng.random((8, 8, 8))
    d = fourier_shell_correlation(x, x).to_dict()
    assert d["fsc_0143_angstrom"] is None and d["fsc_0143_px"] == 2.0
    with pytest.raises(ParameterError, match="same shape"):
        fourier_shell_correlation(x, x[:-1])
    with pytest.raises(ParameterError, match="--pixel-size"):
        fourier_shell_correlation(x, x, pixel_size_angstrom=-1.0)


# ---- report encoding ------------------------------------------------------------------------------------
def test_json_encodes_infinity_as_string_and_nan_as_null() -> None:
    report = {"psnr_3d": math.inf, "x": [-math.inf, math.nan, np.float32(1.5)], "n": np.int64(3)}
    text = to_json(report)
    back = json.loads(text)  # valid JSON (allow_nan=False in to_json)
    assert back == {"psnr_3d": "inf", "x": ["-inf", None, 1.5], "n": 3}
    assert float(back["psnr_3d"]) == math.inf
    assert json_safe(math.inf) == "inf"


def test_yaml_keeps_infinity_as_a_float() -> None:
    back = yaml.safe_load(to_yaml({"psnr_3d": math.inf, "mse_3d": 0.0}))
    assert back["psnr_3d"] == math.inf and back["mse_3d"] == 0.0


def test_summary_rows_show_std_and_skip_absent_metrics() -> None:
    rows = summary_rows({"psnr_2d": 20.0, "psnr_2d_std": 1.5, "mse_3d": None, "psnr_3d": math.inf})
    assert rows == [("psnr_3d", "inf", ""), ("psnr_2d", "20.0000", "± 1.5000")]
