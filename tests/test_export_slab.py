"""Model export zeroes everything outside the training slab (DESIGN.md "Specimen"), at any --shape/--bin/crop."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
import yaml
from test_recon_phantom import THICKNESS, clean_series, phantom, series_image

from stemtomo.core.fields import FieldConfig, build_field, sample_volume
from stemtomo.core.geometry import length_unit_px
from stemtomo.errors import ParameterError
from stemtomo.recon.export import ExportSpec, field_blocks, load_field, plan, slab_planes
from stemtomo.recon.implicit import ReconConfig, reconstruct

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("export_slab") / "run"
    cfg = ReconConfig(method="l2", iterations=20, rays_per_batch=256, val_interval=10, patience=0)
    reconstruct(series_image(clean_series(phantom())), cfg, torch.device("cpu"), d)
    return d


def test_full_depth_export_is_zero_outside_the_slab_and_the_preview_inside(cli, workdir: Path, run_dir: Path) -> None:
    # 24² images, slab of THICKNESS = 10 px: --shape 24 is the full-depth cube at the same voxel size
    r = cli("export", run_dir, "-o", "full.mrc", "--shape", "24", "--chunk-z", "5")
    assert r.exit_code == 0, r.output
    full = mrcfile.read("full.mrc")
    preview = mrcfile.read(run_dir / "preview.mrc")
    assert full.shape == (24, 24, 24) and preview.shape == (THICKNESS, 24, 24)
    lo = (24 - THICKNESS) // 2  # planes 7..16 have centres |z| ≤ 4.5 ≤ 5
    assert np.array_equal(full[lo : lo + THICKNESS], preview)
    assert not full[:lo].any() and not full[lo + THICKNESS :].any()  # exactly 0, not merely small
    assert preview.min() > 0.05  # so the zeros above are the mask, not an empty model
    meta = yaml.safe_load(Path("full.mrc.yaml").read_text())
    assert meta["thickness_px"] == pytest.approx(THICKNESS) and meta["pixel_size_angstrom"] == pytest.approx(10.0)


def test_shape_keeps_cubic_voxels_and_crop_across_the_slab_edge(cli, workdir: Path, run_dir: Path) -> None:
    # --shape 12: in-plane voxels of 2 source voxels, so z too (was: the 10-px slab stretched over 12 planes)
    assert cli("export", run_dir, "-o", "s.mrc", "--shape", "12").exit_code == 0
    field, _, _ = load_field(run_dir, torch.device("cpu"))
    ref = sample_volume(field, (12, 12, 12), scale=2.0).numpy()
    inside = np.abs((np.arange(12) - 5.5) * 2.0) <= THICKNESS / 2  # planes 3..8
    out = mrcfile.read("s.mrc")
    assert np.array_equal(out[inside], ref[inside]) and not out[~inside].any()
    assert yaml.safe_load(Path("s.mrc.yaml").read_text())["thickness_px"] == pytest.approx(THICKNESS / 2)
    # a crop straddling the slab edge at full depth: the same numbers as the uncropped export
    assert cli("export", run_dir, "-o", "full.mrc", "--shape", "24").exit_code == 0
    assert cli("export", run_dir, "-o", "c.mrc", "--shape", "24", "--crop", "4:10,2:20,:", "--chunk-z", "4").exit_code == 0
    assert np.array_equal(mrcfile.read("c.mrc"), mrcfile.read("full.mrc")[4:10, 2:20, :])


def test_plan_shape_scales_z_like_x() -> None:
    assert plan((10, 24, 24), shape=(24, 24, 24)) == ((24, 24, 24), (1.0, 1.0, 1.0))
    assert plan((10, 24, 24), shape=(5, 12, 12)) == ((5, 12, 12), (2.0, 2.0, 2.0))
    assert plan((10, 24, 32), shape=(8, 12, 16)) == ((8, 12, 16), (2.0, 2.0, 2.0))
    # y and x voxels of different sizes: refused, one pixel size is recorded (was scale (4, 2, 4), header cubic)
    with pytest.raises(ParameterError, match=r"--shape 12×8 \(y×x\): not the model's in-plane aspect 24×32.*8,6,8"):
        plan((10, 24, 32), shape=(8, 12, 8))


@pytest.mark.parametrize(
    ("nz", "scale", "half", "expected"),
    [
        (24, 1.0, 5.0, (7, 17)),    # integer slab: centres ±4.5
        (24, 1.0, 4.3, (8, 16)),    # fractional slab: |k - 11.5| ≤ 4.3
        (24, 0.5, 4.3, (3, 21)),    # upsampled: |k - 11.5| ≤ 8.6
        (10, 1.0, 5.0, (0, 10)),    # the training grid itself: every plane
        (4, 1.0, None, (0, 4)),     # no slab (volume conversion)
        (24, 1.0, 0.2, (12, 12)),   # no plane centre inside: an empty range
    ],
)
def test_slab_planes(nz: int, scale: float, half: float | None, expected: tuple[int, int]) -> None:
    spec = ExportSpec(shape=(nz, 8, 8), scale=(scale, 1.0, 1.0), slab_half_px=half)
    assert slab_planes(spec) == expected


def test_field_blocks_mask_a_field_that_is_dense_beyond_the_slab() -> None:
    # a voxel field of ones 10 voxels deep, trained (say) in a slab of 8: planes at |z| > 4 must come out 0
    field = build_field(FieldConfig(kind="voxel", voxel_init=1.0), (10, 8, 8), length_unit_px(8, 8))
    spec = ExportSpec(shape=(16, 8, 8), scale=(1.0, 1.0, 1.0), slab_half_px=4.0)
    vol = np.concatenate([field_blocks(field, spec)(z0, min(16, z0 + 3)) for z0 in range(0, 16, 3)])
    z = np.arange(16) - 7.5
    assert np.allclose(vol[np.abs(z) <= 4.0], 1.0) and not vol[np.abs(z) > 4.0].any()
