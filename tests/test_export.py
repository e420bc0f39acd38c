"""``stemtomo export``: model sampling (shape, bin, crop, dtype, layout), re-projection, volume conversion."""

from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
import torch
import yaml
from test_recon_phantom import THICKNESS, clean_series, phantom, series_image

from stemtomo.core.fields import sample_volume
from stemtomo.core.geometry import length_unit_px
from stemtomo.core.imaging import intensity
from stemtomo.core.projector import forward_project
from stemtomo.io import Metadata, read_stack, read_volume, write_image
from stemtomo.recon.export import load_field
from stemtomo.recon.implicit import ReconConfig, reconstruct

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("export") / "run"
    cfg = ReconConfig(method="l2", iterations=30, rays_per_batch=256, val_interval=10, patience=0)
    reconstruct(series_image(clean_series(phantom())), cfg, torch.device("cpu"), d)
    return d


def _model_volume(run_dir: Path) -> np.ndarray:
    field, _, _ = load_field(run_dir, torch.device("cpu"))
    return sample_volume(field, field.volume_shape).numpy()


def test_export_matches_the_models_own_samples(cli, workdir: Path, run_dir: Path) -> None:
    r = cli("export", run_dir, "-o", "vol.mrc", "--chunk-z", "3", "--slices", "slices.png")
    assert r.exit_code == 0, r.output
    with mrcfile.open("vol.mrc") as mrc:
        assert mrcfile.validate("vol.mrc")
        out = mrc.data.copy()
        assert float(mrc.voxel_size.x) == pytest.approx(10.0)
    expected = _model_volume(run_dir)
    assert out.shape == (THICKNESS, 24, 24) and np.allclose(out, expected, atol=1e-6)
    # the preview written by recon is the same selected model
    assert np.allclose(read_volume(run_dir / "preview.mrc").data, expected, atol=1e-6)
    assert Path("slices.png").read_bytes()[:4] == b"\x89PNG"
    meta = yaml.safe_load(Path("vol.mrc.yaml").read_text())
    assert meta["kind"] == "volume" and meta["scaling"]["scale"] == 1.0 and meta["provenance"][-1]["command"] == "export"


def test_export_bin_crop_dtype_and_layout(cli, workdir: Path, run_dir: Path) -> None:
    ref = _model_volume(run_dir)
    assert cli("export", run_dir / "model.safetensors", "-o", "b.mrc", "--bin", "2").exit_code == 0
    field, _, _ = load_field(run_dir, torch.device("cpu"))
    binned = sample_volume(field, (5, 12, 12), scale=2.0).numpy()
    assert np.allclose(mrcfile.read("b.mrc"), binned, atol=1e-6)
    assert yaml.safe_load(Path("b.mrc.yaml").read_text())["pixel_size_angstrom"] == pytest.approx(20.0)
    # uint16: round(ρ·65535), scaling recorded
    assert cli("export", run_dir, "-o", "u.tif", "--dtype", "uint16").exit_code == 0
    u16 = tifffile.imread("u.tif")
    assert u16.dtype == np.uint16 and np.array_equal(u16, np.rint(np.clip(ref, 0, 1) * 65535).astype(np.uint16))
    assert yaml.safe_load(Path("u.tif.yaml").read_text())["scaling"]["scale"] == 65535.0
    # 8-bit MRC: mode 0 is signed int8 (MRC2014), so round(ρ·127), cropped (tests/test_export_dtype.py: reading back)
    assert cli("export", run_dir, "-o", "c.mrc", "--dtype", "uint8", "--crop", "2:8,:,4:20").exit_code == 0
    with mrcfile.open("c.mrc") as mrc:
        assert mrc.header.mode == 0 and mrc.data.dtype == np.int8
        assert np.array_equal(mrc.data, np.rint(np.clip(ref[2:8, :, 4:20], 0, 1) * 127).astype(np.int8))
    # xzy layout (CONVENTIONS §6): xzy[y, T-1-z, x] = xyz[z, y, x]
    assert cli("export", run_dir, "-o", "x.mrc", "--layout", "xzy").exit_code == 0
    xzy = mrcfile.read("x.mrc")
    assert xzy.shape == (24, THICKNESS, 24)
    assert np.allclose(xzy[5, THICKNESS - 1 - 3, 7], ref[3, 5, 7]) and np.allclose(xzy, ref[::-1].transpose(1, 0, 2))


def test_reprojection_at_new_angles(cli, workdir: Path, run_dir: Path) -> None:
    r = cli("export", run_dir, "-o", "proj.mrc", "--project", "--tilts", "-30:30:15")
    assert r.exit_code == 0, r.output
    stack = read_stack("proj.mrc")
    assert stack.meta.tilt_angles_deg == [-30.0, -15.0, 0.0, 15.0, 30.0]
    vol = torch.from_numpy(_model_volume(run_dir))
    expected = intensity(forward_project(vol, [-30, -15, 0, 15, 30], thickness_px=THICKNESS) / length_unit_px(24, 24))
    assert np.allclose(stack.data, expected.numpy(), atol=1e-5)


def test_volume_conversion_mrc_to_tiff_binned(cli, workdir: Path) -> None:
    vol = phantom()
    write_image("ph.mrc", vol, Metadata(kind="volume", pixel_size_angstrom=5.0))
    assert cli("export", "ph.mrc", "-o", "ph.tif", "--bin", "2").exit_code == 0
    out = tifffile.imread("ph.tif")
    assert np.allclose(out, vol.reshape(12, 2, 12, 2, 12, 2).mean(axis=(1, 3, 5)), atol=1e-6)
    assert yaml.safe_load(Path("ph.tif.yaml").read_text())["pixel_size_angstrom"] == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dtype", "int7"), "--dtype 'int7'"),
        (("--layout", "zyx"), "--layout 'zyx'"),
        (("--crop", "0:99,:,:"), "outside the axis"),
        (("--bin", "2", "--shape", "8"), "only one of"),
        (("--project", "--tilts", "10:0:5"), "STOP ≥ START"),
        (("--shape", "12,24,12"), "--shape 24×12 (y×x): not the model's in-plane aspect 24×24"),  # MRC said cubic
        (("--pixel-size", "0"), "--pixel-size 0.0: must be a positive size in Å"),  # was exit 70
        (("--pixel-size", "nan"), "--pixel-size nan: must be a positive size in Å"),  # was exit 70
        (("--slices", "s.mrc"), "--slices s.mrc: the montage is a PNG image"),  # wrote a PNG named s.mrc
        (("--project", "--dtype", "uint8", "--layout", "xzy"), "--dtype, --layout: not used with --project"),
        (("--project", "--bin", "2"), "--bin: not used with --project"),  # silently ignored
        (("--project", "--bin", "2"), "drop it or export a volume"),
        (("--project", "--dtype", "uint8", "--bin", "2"), "drop them or export a volume"),
    ],
)
def test_bad_export_options(cli, workdir: Path, run_dir: Path, args: tuple[str, ...], message: str) -> None:
    r = cli("export", run_dir, "-o", "bad.mrc", *args)
    assert r.exit_code == 1 and message in r.output, r.output
    assert len(r.stderr.strip().splitlines()) == 1
    assert not Path("bad.mrc").exists() and not Path("s.mrc").exists()


def test_export_refuses_non_models_and_volume_only_options(cli, workdir: Path) -> None:
    write_image("v.mrc", phantom(), Metadata(kind="volume"))
    r = cli("export", "v.mrc", "-o", "p.mrc", "--project")
    assert r.exit_code == 1 and "need a trained model" in r.output
    Path("fake.safetensors").write_bytes(b"0")
    Path("fake.safetensors.yaml").write_text("kind: noise_model\n")
    r = cli("export", "fake.safetensors", "-o", "f.mrc")
    assert r.exit_code == 1 and "expected a 'model' file" in r.output


@pytest.mark.parametrize(
    ("args", "output", "message"),
    [
        (("--bin", "30"), "o.mrc", "--bin 30: larger than the volume (24×24×24 zyx); use at most 24"),  # was exit 70
        (("--bin", "0"), "o.mrc", "--bin 0: must be ≥ 1"),
        ((), "o.xyz", "o.xyz: unknown output type '.xyz'; use .mrc/.rec/.map or .tif"),  # named the temporary file
    ],
)
def test_volume_conversion_bad_input_is_one_line_and_writes_nothing(
    cli, workdir: Path, args: tuple[str, ...], output: str, message: str
) -> None:
    write_image("v.mrc", phantom(), Metadata(kind="volume"))
    before = set(os.listdir(workdir))
    r = cli("export", "v.mrc", "-o", output, *args)
    assert r.exit_code == 1, r.output
    assert r.stderr.strip().splitlines() == [f"error: {message}"]
    assert set(os.listdir(workdir)) == before
