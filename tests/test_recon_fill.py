"""The implicit reconstruction never trains on (or validates with) the fill of an aligned stack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_recon_phantom import ANGLES, THICKNESS, clean_series, phantom, series_image

from stemtomo.align import apply_xf, xf_coverage, xf_from_alignment
from stemtomo.core.fields import FieldConfig
from stemtomo.errors import InputError
from stemtomo.preprocess.fill import alignment_coverage_record
from stemtomo.recon.implicit import ReconConfig, build_trainer
from stemtomo.recon.implicit.data import RayData

CPU = torch.device("cpu")
VOXEL = FieldConfig(kind="voxel")


def test_masked_pixels_are_never_drawn(rng: np.random.Generator) -> None:
    stack = torch.from_numpy(rng.random((6, 10, 12))).float()
    valid = torch.ones(stack.shape, dtype=torch.bool)
    valid[:, :, 8:] = False  # 4 right columns of every image
    valid[2, :3] = False
    data = RayData(stack, [-50, -30, -10, 10, 30, 50], val_every_kth_tilt=3, valid=valid)
    u, v, th, y = data.sample(20_000, torch.Generator().manual_seed(1))
    ix = (u + (12 - 1) / 2).round().long()
    iy = (v + (10 - 1) / 2).round().long()
    t = torch.as_tensor(np.searchsorted([-50, -30, -10, 10, 30, 50], np.degrees(th.numpy()).round()))
    assert valid[t, iy, ix].all()
    assert torch.equal(y, stack[t, iy, ix])
    assert set(t.tolist()) == set(data.train_tilts.tolist())  # tilts 0, 2, 3, 5 (1 and 4 held out)
    assert ((t == 2) & (iy < 3)).sum() == 0
    assert ((t == 0) & (ix == 7)).sum() > 0  # every valid pixel can be drawn
    assert data.val is not None
    vu, vv, vth, _ = data.val
    assert (vu + 5.5).round().long().max() <= 7  # validation rays are valid pixels too
    assert torch.isclose(torch.rad2deg(vth), torch.tensor([-30.0, 30.0])[:, None]).any(0).all()


def test_an_all_true_mask_draws_the_same_rays_as_none(rng: np.random.Generator) -> None:
    stack = torch.from_numpy(rng.random((5, 8, 8))).float()
    angles = [-40, -20, 0, 20, 40]
    plain = RayData(stack, angles, val_every_kth_tilt=2)
    masked = RayData(stack, angles, val_every_kth_tilt=2, valid=torch.ones(stack.shape, dtype=torch.bool))
    for a, b in zip(plain.sample(64, torch.Generator().manual_seed(3)), masked.sample(64, torch.Generator().manual_seed(3)),
                    strict=True):
        assert torch.equal(a, b)
    assert plain.val is not None and masked.val is not None
    assert all(torch.equal(a, b) for a, b in zip(plain.val, masked.val, strict=True))


def test_bad_masks(rng: np.random.Generator) -> None:
    stack = torch.from_numpy(rng.random((3, 4, 4))).float()
    with pytest.raises(InputError, match="mask of shape"):
        RayData(stack, [-10, 0, 10], valid=torch.ones(3, 4, 5, dtype=torch.bool))
    with pytest.raises(InputError, match="no measured pixel"):
        RayData(stack, [-10, 0, 10], valid=torch.zeros(3, 4, 4, dtype=torch.bool))


def test_build_trainer_leaves_out_the_fill_of_an_aligned_stack() -> None:
    """A clean 24² series moved by ±3/−2 px as ``align`` writes it (mean fill, its transforms in the
    sidecar record): the trainer's rays hold exactly the covered pixels; a raw series with a 7° tilt axis
    loses the corners its rotation pads; a series without either keeps every pixel (the unmasked path)."""
    clean = torch.from_numpy(clean_series(phantom())).float()
    n, ny, nx = clean.shape
    shifts = np.zeros((n, 2))
    shifts[::2, 0] = 3.0
    shifts[1::2, 1] = -2.0
    xf = xf_from_alignment(0.0, shifts)
    image = series_image(apply_xf(clean, xf).numpy())
    image.meta.extra["alignment"] = alignment_coverage_record(xf, (ny, nx), (ny, nx))
    cfg = ReconConfig(method="l2", iterations=1, field=VOXEL, val_every_kth_tilt=0)
    pixels = build_trainer(image, cfg, CPU).data.train_pixels
    assert pixels is not None
    per_tilt = torch.bincount(pixels.long() // (ny * nx), minlength=n)
    assert per_tilt[0] == ny * (nx - 3) and per_tilt[1] == (ny - 2) * nx
    rotated = series_image(clean.numpy())
    rotated.meta.tilt_axis_angle_deg = 7.0
    corners = build_trainer(rotated, cfg, CPU).data.train_pixels
    assert corners is not None and 0.85 * n * ny * nx < corners.numel() < n * ny * nx
    assert build_trainer(series_image(clean.numpy()), cfg, CPU).data.train_pixels is None


def test_build_trainer_detects_the_fill_of_a_stack_without_sidecar(tmp_path) -> None:
    """An aligned stack from elsewhere (an IMOD ``.ali``: mean fill, no sidecar, Poisson noise): the fill is
    found in the images and left out, the measured pixels are kept (not the other way round)."""
    import mrcfile

    from stemtomo.io import read_stack

    clean = torch.from_numpy(clean_series(phantom())).float()
    n, ny, nx = clean.shape
    noisy = torch.poisson(clean * 200.0, generator=torch.Generator().manual_seed(1)) / 200.0
    shifts = np.zeros((n, 2))
    shifts[:, 0] = 3.0
    xf = xf_from_alignment(0.0, shifts)
    aligned = apply_xf(noisy, xf).numpy()
    path = tmp_path / "elsewhere.ali"
    with mrcfile.new(str(path)) as mrc:
        mrc.set_data(aligned.astype(np.float32))
    image = read_stack(path, angles=ANGLES.tolist())
    image.meta.thickness_px = THICKNESS
    cfg = ReconConfig(method="l2", iterations=1, field=VOXEL, val_every_kth_tilt=0)
    pixels = build_trainer(image, cfg, CPU).data.train_pixels
    assert pixels is not None
    per_tilt = torch.bincount(pixels.long() // (ny * nx), minlength=n)
    # 3 fill columns, plus at most the 2-px dilation and the interpolated seam
    assert bool((per_tilt <= ny * (nx - 3)).all()) and bool((per_tilt >= ny * (nx - 6)).all()), per_tilt
    left_out = torch.ones(n, ny, nx, dtype=torch.bool)
    left_out.view(-1)[pixels.long()] = False
    assert bool(left_out[~xf_coverage(xf, (ny, nx))].all())  # the fill is never drawn


@pytest.mark.parametrize("thickness", [12.0, 12.5, 13.49])
def test_recon_and_wbp_build_one_grid_for_a_slab(thickness: float) -> None:
    """An estimated, fractional ``thickness_px`` gives the implicit field the depth of the WBP (ceil: the
    whole slab), so ``eval`` scores both tomograms of one series on one grid (23.49 px: recon had 23 planes,
    WBP 24, and recon's score was taken on the slab, WBP's on the phantom's full depth)."""
    from stemtomo.recon.wbp import WBPConfig, default_geometry

    image = series_image(clean_series(phantom()))
    image.meta.thickness_px = thickness
    cfg = ReconConfig(method="l2", iterations=1, field=VOXEL, val_every_kth_tilt=0)
    trainer = build_trainer(image, cfg, CPU)
    nz = default_geometry(WBPConfig(thickness_px=thickness), image.data.shape[-1])[0]
    assert trainer.field.volume_shape[0] == nz == int(np.ceil(thickness))
    assert trainer.half_thickness_px == pytest.approx(thickness / 2)
