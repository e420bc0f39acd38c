"""``stemtomo simulate`` end to end on tiny data: files, sidecars, MRC validity, re-projection, bad input."""

from __future__ import annotations

import io
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from stemtomo.io import read_angle_file, read_stack, read_volume, write_image
from stemtomo.io.sidecar import Metadata
from stemtomo.simulate.simulate import project_intensities

TINY = ("--size", "32", "--tilts", "-60:60:20", "--seed", "3", "--device", "cpu")


def _valid(path: Path) -> bool:
    return bool(mrcfile.validate(str(path), print_file=io.StringIO()))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from stemtomo.cli.app import app

    out = tmp_path_factory.mktemp("sim") / "run"
    res = CliRunner().invoke(app, ["simulate", "-o", str(out), *TINY, "--dose", "200", "--defocus-max-px", "1.5"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def test_outputs_and_sidecars(simulated: Path) -> None:
    for name in ("phantom.mrc", "clean.mrc", "defocus.mrc", "noisy.mrc"):
        assert (simulated / name).is_file() and (simulated / (name + ".yaml")).is_file()
        assert _valid(simulated / name), name
    angles = read_angle_file(simulated / "angles.rawtlt")
    assert angles == pytest.approx([-60, -40, -20, 0, 20, 40, 60])
    clean = read_stack(simulated / "clean.mrc")
    assert clean.data.shape == (7, 32, 32)
    m = clean.meta
    assert m.tilt_angles_deg == pytest.approx(angles) and m.thickness_px == 16.0
    assert m.contrast == "bf" and m.kappa == 7.0 and m.tilt_axis_angle_deg == 0.0
    assert m.normalization == {"method": "physical", "range01": True}
    assert m.pixel_size_angstrom is not None and m.pixel_size_angstrom > 0
    assert m.extra["seed"] == 3 and m.extra["phantom"]["phantom"] == "cell"
    assert m.provenance[-1]["command"] == "simulate"
    noisy = read_stack(simulated / "noisy.mrc")
    assert noisy.meta.extra["noise"]["dose"] == 200.0
    assert float(noisy.data.min()) >= 0 and float(noisy.data.max()) <= 1


def test_reprojection_of_written_phantom_equals_clean(simulated: Path) -> None:
    # our own projection of phantom.mrc with the sidecar's parameters reproduces clean.mrc
    vol = read_volume(simulated / "phantom.mrc")
    clean = read_stack(simulated / "clean.mrc")
    assert float(vol.data.min()) >= 0 and float(vol.data.max()) <= 1
    m = clean.meta
    img = project_intensities(torch.from_numpy(vol.data), clean.tilt_angles_deg, m.thickness_px, m.contrast, m.kappa)
    assert np.allclose(img.numpy(), clean.data, rtol=1e-5, atol=1e-6)
    # no per-projection min-max: at 0° every ray crosses the whole slab and its 0.2 background, so the
    # brightest pixel is at most exp(-κ·0.2·t/L) = exp(-7·0.2·16/16) (a stretched image would reach 1)
    zero = int(np.argmin(np.abs(clean.tilt_angles_deg)))
    assert float(clean.data[zero].max()) <= np.exp(-1.4) + 1e-6


def test_refuses_existing_outputs(simulated: Path, cli) -> None:
    before = (simulated / "clean.mrc").stat().st_mtime_ns
    res = cli("simulate", "-o", simulated, *TINY)
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert (simulated / "clean.mrc").stat().st_mtime_ns == before


def test_phantom_file_and_overwrite(simulated: Path, workdir: Path, cli) -> None:
    res = cli("simulate", "-o", "again", "--phantom", simulated / "phantom.mrc", "--tilts", "-60:60:20",
              "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert np.allclose(read_stack(workdir / "again" / "clean.mrc").data, read_stack(simulated / "clean.mrc").data,
                       atol=1e-6)
    res = cli("simulate", "-o", "again", "--phantom", "shepp-logan", "--size", "16", "--tilts", "0:0:1",
              "--overwrite", "--contrast", "df")
    assert res.exit_code == 0, res.output
    assert read_stack(workdir / "again" / "clean.mrc").data.shape == (1, 16, 16)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tilts", "10:-10:2"), "--tilts"),
        (("--tilts", "-95:95:5"), "outside the allowed range"),
        (("--thickness-px", "40"), "--thickness-px 40"),
        (("--dose", "-1"), "--dose"),
        (("--kappa", "nan"), "--kappa"),
        (("--read-noise", "-0.1"), "--read-noise"),
        (("--scan-correlation", "1.5"), "--scan-correlation"),
        (("--defocus-max-px", "-2"), "--defocus-max-px"),
        (("--phantom", "blob"), "--phantom"),
        (("--tilt-axis-angle", "400"), "--tilt-axis-angle 400.0: must be a finite angle within ±180°"),
        (("--noise-model", "missing.safetensors"), "no such file"),
    ],
)
def test_bad_input_one_line_error_nothing_written(workdir: Path, cli, args: tuple[str, ...], message: str) -> None:
    res = cli("simulate", "-o", "out", "--size", "16", *args)
    assert res.exit_code == 1
    assert message in res.output and "Traceback" not in res.output
    assert not (workdir / "out").exists()


def test_non_cubic_particle_map(workdir: Path, cli) -> None:
    write_image(workdir / "map.mrc", np.random.default_rng(0).random((6, 8, 8), dtype=np.float32),
                Metadata(kind="volume"))
    res = cli("simulate", "-o", "out", "--size", "16", "--particle-map", "map.mrc", "--pixel-size-angstrom", "100")
    assert res.exit_code == 1 and "not a cubic" in res.output
    assert not (workdir / "out").exists()


def test_phantom_file_outside_unit_range(workdir: Path, cli) -> None:
    write_image(workdir / "vol.mrc", np.full((8, 8, 8), 3.0, dtype=np.float32), Metadata(kind="volume"))
    res = cli("simulate", "-o", "out", "--phantom", "vol.mrc", "--tilts", "0:0:1")
    assert res.exit_code == 1 and "outside [0, 1]" in res.output
    write_image(workdir / "ok.mrc", np.full((8, 8, 8), 0.5, dtype=np.float32), Metadata(kind="volume"))
    res = cli("simulate", "-o", "out", "--phantom", "ok.mrc", "--thickness-px", "12")
    assert res.exit_code == 1 and "--thickness-px 12: larger than the volume depth nz = 8" in res.output
    assert not (workdir / "out").exists()


def test_raw_frame_and_shift_sidecar(workdir: Path, cli) -> None:
    res = cli("simulate", "-o", "raw", "--size", "16", "--tilts", "-20:20:20", "--tilt-axis-angle", "90",
              "--shift-sigma-px", "1", "--read-noise", "0.01")
    assert res.exit_code == 0, res.output
    for name in ("clean.mrc", "noisy.mrc"):
        meta = read_stack(workdir / "raw" / name).meta
        assert meta.tilt_axis_angle_deg == 90.0
        assert np.asarray(meta.extra["shifts_px"]).shape == (3, 2)
    assert "shifts_px" not in read_volume(workdir / "raw" / "phantom.mrc").meta.extra


def test_noise_model_and_parametric_noise_are_alternatives(workdir: Path, cli) -> None:
    from stemtomo.noise import GaussianNoiseModel, save_noise_model

    save_noise_model(workdir / "m.safetensors", GaussianNoiseModel())
    res = cli("simulate", "-o", "out", "--size", "16", "--tilts", "-20:20:20", "--noise-model", "m.safetensors",
              "--dose", "10")  # the dose was silently ignored, yet recorded in noisy.mrc.yaml
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        "error: --noise-model replaces the parametric noise: give either --noise-model or "
        "--dose/--read-noise/--scan-correlation, not both"
    ]
    assert not (workdir / "out").exists()
