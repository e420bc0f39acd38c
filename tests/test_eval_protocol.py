"""The 2D test-projection protocol, alignment, resampling and the volume/stack evaluation (stemtomo.eval)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from stemtomo.core.geometry import length_unit_px
from stemtomo.core.imaging import DEFAULT_KAPPA
from stemtomo.errors import ParameterError
from stemtomo.eval.align import align_volume, apply_transform
from stemtomo.eval.config import AlignConfig, EvalConfig, ProjectionConfig
from stemtomo.eval.evaluate import evaluate_stacks, evaluate_volumes, match_grids, resample_to_shape
from stemtomo.eval.metrics import minmax, psnr
from stemtomo.eval.projections import paper_test_angles, project, projection_metrics, rotation_matrix

PAPER_ANGLES = [(102, 348), (270, 106), (71, 188), (20, 102), (121, 214), (330, 87), (99, 359), (151, 130),
                (149, 308), (257, 343), (293, 191), (276, 160), (313, 21), (252, 235), (344, 48), (58, 169),
                (187, 270), (189, 174), (50, 54), (243, 319)]  # METHOD.md §8.3


def phantom(rng: np.random.Generator, shape: tuple[int, int, int] = (32, 32, 32)) -> np.ndarray:
    return minmax(gaussian_filter(rng.random(shape), 1.5)).astype(np.float32)


def blob(shape: tuple[int, int, int], centre_xyz: tuple[float, float, float], sigma: float = 1.5) -> np.ndarray:
    nz, ny, nx = shape
    z, y, x = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    r2 = (x - centre_xyz[0]) ** 2 + (y - centre_xyz[1]) ** 2 + (z - centre_xyz[2]) ** 2
    return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)


# ---- orientations and projection geometry ---------------------------------------------------------------
def test_test_angles_reproduce_the_papers_seed_42_list() -> None:
    angles = paper_test_angles()
    assert tuple(angles[0]) == (102, 348)
    assert [tuple(int(v) for v in a) for a in angles] == PAPER_ANGLES
    np.testing.assert_array_equal(paper_test_angles(5), angles[:5])  # a smaller count takes a prefix
    assert not np.array_equal(paper_test_angles(20, seed=7), angles)
    with pytest.raises(ParameterError, match="at least 1"):
        paper_test_angles(0)


def test_rotation_is_ry_times_rx() -> None:
    r = rotation_matrix(30.0, 50.0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation_matrix(90, 0) @ [0, 1, 0], [0, 0, 1], atol=1e-12)  # R_x(90): y → z
    np.testing.assert_allclose(rotation_matrix(0, 90) @ [0, 0, 1], [1, 0, 0], atol=1e-12)  # R_y(90): z → x
    np.testing.assert_allclose(r, rotation_matrix(0, 50) @ rotation_matrix(30, 0), atol=1e-12)


def test_projection_at_identity_is_the_sum_along_z_in_normalized_units(rng: np.random.Generator) -> None:
    vol = torch.as_tensor(phantom(rng, (16, 24, 20)))
    p = project(vol[None], np.eye(3))[0]
    # detector is max(ny, nx) = 24 square; the volume's 20 columns sit in the middle (2 empty columns each side)
    expected = vol.sum(0) / length_unit_px(24, 20)
    torch.testing.assert_close(p[:, 2:22], expected, atol=1e-5, rtol=1e-5)
    assert float(p[:, :2].abs().max()) < 1e-5  # outside the volume: zero (up to rounding of grid coordinates)


def test_an_off_centre_point_lands_at_x_cos_ay(rng: np.random.Generator) -> None:
    # the sampling grid is rotated: a point p is seen at (u, v) = first two components of Rᵀp
    shape = (32, 32, 32)
    vol = torch.as_tensor(blob(shape, (8.0, 0.0, 0.0)))[None]
    c = np.arange(32) - 15.5
    for a_y in (0.0, 60.0, 90.0):
        p = project(vol, rotation_matrix(0.0, a_y))[0].numpy()
        u_centroid = float((p.sum(0) * c).sum() / p.sum())
        assert u_centroid == pytest.approx(8.0 * math.cos(math.radians(a_y)), abs=0.05)


def test_projection_conserves_mass_at_any_orientation(rng: np.random.Generator) -> None:
    vol = blob((24, 24, 24), (2.0, -1.0, 1.0), sigma=2.0)
    for a_x, a_y in PAPER_ANGLES[:4]:
        p = project(torch.as_tensor(vol)[None], rotation_matrix(a_x, a_y))[0]
        assert float(p.sum()) * length_unit_px(24, 24) == pytest.approx(float(vol.sum()), rel=0.02)


def test_chunking_along_the_ray_does_not_change_projections(rng: np.random.Generator) -> None:
    vol = torch.as_tensor(phantom(rng, (16, 16, 16)))[None]
    r = rotation_matrix(*PAPER_ANGLES[3])
    small = project(vol, r, ProjectionConfig(max_points=300))
    torch.testing.assert_close(small, project(vol, r), atol=1e-5, rtol=1e-5)


# ---- the 2D protocol ------------------------------------------------------------------------------------
def test_2d_protocol_is_deterministic_under_its_seed(rng: np.random.Generator) -> None:
    ref = torch.as_tensor(phantom(rng, (16, 16, 16)))
    vol = torch.as_tensor(minmax(ref.numpy() + 0.1 * rng.standard_normal(ref.shape)).astype(np.float32))
    cfg = ProjectionConfig(count=4)
    a, b = projection_metrics(vol, ref, cfg), projection_metrics(vol, ref, cfg)
    assert a == b
    assert [(p["a_x"], p["a_y"]) for p in a["per_projection"]] == PAPER_ANGLES[:4]  # type: ignore[union-attr]
    other = projection_metrics(vol, ref, dataclasses.replace(cfg, seed=1))
    assert other["psnr_2d"] != a["psnr_2d"]
    psnrs = [p["psnr"] for p in a["per_projection"]]  # type: ignore[union-attr]
    assert a["psnr_2d"] == pytest.approx(np.mean(psnrs)) and a["psnr_2d_std"] == pytest.approx(np.std(psnrs))


def test_2d_protocol_of_identical_volumes_is_perfect(rng: np.random.Generator) -> None:
    ref = torch.as_tensor(phantom(rng, (16, 16, 16)))
    m = projection_metrics(ref, ref.clone(), ProjectionConfig(count=3))
    assert m["psnr_2d"] == math.inf and m["mse_2d"] == 0.0
    assert m["dssim_2d"] == pytest.approx(0.0, abs=1e-12)


def test_image_metrics_ignore_affine_intensity_changes(rng: np.random.Generator) -> None:
    # per-image min–max normalization: 3·I + 2 is the same image (up to float rounding)
    stack = torch.as_tensor(rng.random((3, 16, 16)))
    res = evaluate_stacks(3.0 * stack + 2.0, stack)
    assert res["psnr_2d"] > 250.0 and res["dssim_2d"] == pytest.approx(0.0, abs=1e-12)


# ---- alignment ------------------------------------------------------------------------------------------
def test_align_finds_flips_and_shift(rng: np.random.Generator) -> None:
    ref = phantom(rng, (24, 32, 28))
    moved = np.roll(np.flip(ref, axis=(0, 2)), (2, -1, 3), axis=(0, 1, 2))
    res = align_volume(moved, ref)
    assert res.flip_zyx == (True, False, True) and not res.transpose_yx
    np.testing.assert_array_equal(apply_transform(moved, res.flip_zyx, res.transpose_yx, res.shift_zyx), ref)
    assert res.correlation == pytest.approx(1.0) and res.correlation_before < 0.5


def test_align_finds_a_transpose_and_keeps_identity(rng: np.random.Generator) -> None:
    ref = phantom(rng, (16, 24, 24))
    res = align_volume(np.swapaxes(ref, 1, 2), ref)
    assert res.transpose_yx and res.correlation == pytest.approx(1.0)
    same = align_volume(ref, ref)
    assert same.is_identity and same.correlation == pytest.approx(1.0)


def test_align_searches_only_within_max_shift(rng: np.random.Generator) -> None:
    ref = phantom(rng, (24, 24, 24))
    moved = np.roll(ref, 6, axis=2)
    assert align_volume(moved, ref, AlignConfig(max_shift_px=6)).shift_zyx == (0, 0, -6)
    assert align_volume(moved, ref, AlignConfig(max_shift_px=4)).correlation < 0.99


def test_align_errors(rng: np.random.Generator) -> None:
    with pytest.raises(ParameterError, match="same shape"):
        align_volume(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))
    with pytest.raises(ParameterError, match="constant"):
        align_volume(np.zeros((8, 8, 8)), rng.random((8, 8, 8)))


# ---- volume / stack evaluation --------------------------------------------------------------------------
def test_evaluate_identical_volumes() -> None:
    ref = torch.as_tensor(blob((16, 16, 16), (1.0, 2.0, -1.0), 3.0))
    res = evaluate_volumes(ref, ref.clone(), EvalConfig(projections=ProjectionConfig(count=2)))
    assert res["psnr_3d"] == math.inf and res["mse_3d"] == 0.0
    assert res["ssim_3d"] == pytest.approx(1.0) and res["dssim_3d"] == pytest.approx(0.0, abs=1e-12)
    assert res["psnr_2d"] == math.inf


def test_inverted_volume_is_reported_anticorrelated(rng: np.random.Generator, caplog: pytest.LogCaptureFixture) -> None:
    ref = phantom(rng, (16, 16, 16))
    cfg = EvalConfig(projections=ProjectionConfig(count=0))
    with caplog.at_level("WARNING", logger="stemtomo.eval.evaluate"):
        res = evaluate_volumes(torch.as_tensor(1.0 - ref), torch.as_tensor(ref), cfg)
    assert res["pearson_3d"] == pytest.approx(-1.0)
    assert "inverted" in caplog.text


def test_evaluate_with_align_recovers_a_flipped_noisy_volume(rng: np.random.Generator) -> None:
    ref = phantom(rng)
    noisy = minmax(ref + 0.05 * rng.standard_normal(ref.shape)).astype(np.float32)
    flipped = torch.as_tensor(np.flip(noisy, axis=1).copy())
    cfg = EvalConfig(projections=ProjectionConfig(count=0))
    plain = evaluate_volumes(flipped, torch.as_tensor(ref), cfg)
    aligned = evaluate_volumes(flipped, torch.as_tensor(ref), dataclasses.replace(cfg, align=True))
    assert aligned["align"]["flip_zyx"] == [False, True, False]
    assert aligned["psnr_3d"] == pytest.approx(psnr(noisy, ref), abs=1e-6)
    assert aligned["psnr_3d"] > plain["psnr_3d"] + 5.0


def test_evaluate_with_a_mask_scores_only_inside(rng: np.random.Generator) -> None:
    ref = phantom(rng, (16, 16, 16))
    vol = ref.copy()
    vol[:3] = rng.random((3, 16, 16))  # garbage outside the slab only
    mask = np.zeros(ref.shape, bool)
    mask[4:12] = True
    cfg = EvalConfig(projections=ProjectionConfig(count=0))
    inside = evaluate_volumes(torch.as_tensor(vol), torch.as_tensor(ref), cfg, mask=mask)
    # min–max of the whole volume is unchanged here (garbage stays in [0, 1] and extremes are elsewhere)
    assert inside["mse_3d"] == pytest.approx(float(((minmax(vol) - minmax(ref))[mask] ** 2).mean()))
    assert inside["settings_3d"]["masked_voxels"] == 8 * 256
    assert evaluate_volumes(torch.as_tensor(vol), torch.as_tensor(ref), cfg)["mse_3d"] > inside["mse_3d"]


def test_evaluate_stacks_per_image(rng: np.random.Generator) -> None:
    ref = torch.as_tensor(rng.random((4, 16, 16)))
    stack = ref.clone()
    stack[2] = ref[2] + 0.1 * torch.as_tensor(rng.standard_normal((16, 16)))
    res = evaluate_stacks(stack, ref)
    per = res["per_image"]
    assert len(per) == 4 and per[0]["psnr"] == math.inf and math.isfinite(per[2]["psnr"])
    with pytest.raises(ParameterError, match="same number and size"):
        evaluate_stacks(stack[:3], ref)


def test_resample_reference_is_centre_aligned_and_linear() -> None:
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, 64, dtype=np.float32), (64, 64, 64))
    out = resample_to_shape(np.ascontiguousarray(ramp), (32, 32, 32))
    assert out.shape == (32, 32, 32)
    # output voxel i samples the reference at 31.5 + (i - 15.5)·2 = 2i + 0.5 (same field of view, centred)
    np.testing.assert_allclose(out[5, 7], (2 * np.arange(32) + 0.5) / 63, atol=1e-6)


def test_resample_crops_or_pads_a_reference_of_another_thickness(rng: np.random.Generator) -> None:
    ref = rng.random((32, 16, 16)).astype(np.float32)
    # a slab-only tomogram (nz = 16) meets a cubic phantom: the central 16 planes, exactly
    np.testing.assert_array_equal(resample_to_shape(ref, (16, 16, 16)), ref[8:24])
    # odd difference: planes fall half-way between reference planes → their mean
    np.testing.assert_allclose(resample_to_shape(ref, (15, 16, 16)), (ref[8:23] + ref[9:24]) / 2, atol=1e-6)
    padded = resample_to_shape(ref[8:24], (32, 16, 16))  # thinner reference: zero outside
    np.testing.assert_array_equal(padded[8:24], ref[8:24])
    assert not padded[:8].any() and not padded[24:].any()


def test_match_grids_pads_a_slab_or_resamples_the_reference(rng: np.random.Generator) -> None:
    ref = rng.random((32, 16, 16)).astype(np.float32)
    slab = rng.random((16, 16, 16)).astype(np.float32)
    vol, same_ref, how = match_grids(slab, ref)  # even difference: the slab zero-padded onto the reference grid
    assert how == "padded" and same_ref is ref and vol.shape == (32, 16, 16)
    np.testing.assert_array_equal(vol[8:24], slab)
    assert not vol[:8].any() and not vol[24:].any()
    vol, resampled, how = match_grids(slab[:15], ref)  # odd: the reference onto the slab's centred grid
    assert how == "resampled" and vol is not None and vol.shape == (15, 16, 16)
    np.testing.assert_allclose(resampled, (ref[8:23] + ref[9:24]) / 2, atol=1e-6)
    assert match_grids(ref, ref)[2] is None


def test_resample_refuses_distortion_and_other_ndim() -> None:
    with pytest.raises(ParameterError, match="cannot be resampled"):
        resample_to_shape(np.zeros((64, 64, 64), np.float32), (64, 32, 64))
    with pytest.raises(ParameterError, match="cannot compare"):
        resample_to_shape(np.zeros((64, 64), np.float32), (16, 64, 64))


def test_config_defaults_agree_with_the_shared_model() -> None:
    assert ProjectionConfig().kappa == DEFAULT_KAPPA
    assert ProjectionConfig().count == 20 and ProjectionConfig().seed == 42  # the paper's protocol
