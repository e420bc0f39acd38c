"""``stemtomo eval`` through CliRunner on tiny volumes: reports, JSON, figures, FSC, stacks, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from stemtomo.cli.cmd_eval import register
from stemtomo.eval.metrics import minmax, psnr
from stemtomo.io import Metadata, write_image


@pytest.fixture
def run():
    """Invoke ``eval`` on an app holding only this command (other commands are being written in parallel)."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    register(app)
    runner = CliRunner()

    def invoke(*args: object):
        return runner.invoke(app, ["eval", *[str(a) for a in args]], catch_exceptions=False)

    return invoke


@pytest.fixture
def data(workdir: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ref = minmax(gaussian_filter(rng.random((16, 16, 16)), 1.5)).astype(np.float32)
    noisy = (ref + 0.05 * rng.standard_normal(ref.shape)).astype(np.float32)
    write_image("ref.mrc", ref, Metadata(kind="volume", pixel_size_angstrom=2.0, thickness_px=8.0))
    write_image("vol.mrc", noisy, Metadata(kind="volume", pixel_size_angstrom=2.0))
    write_image("flipped.mrc", np.flip(noisy, axis=2).copy(), Metadata(kind="volume"))
    return {"ref": ref, "noisy": noisy}


def test_volume_report_figure_and_table(run, data: dict[str, np.ndarray], workdir: Path) -> None:
    r = run("vol.mrc", "--reference", "ref.mrc", "-o", "rep.yaml", "--figure", "fig.png", "--projections", "3")
    assert r.exit_code == 0, r.output
    rep = yaml.safe_load(Path("rep.yaml").read_text(encoding="utf-8"))
    assert rep["kind"] == "metrics" and rep["mode"] == "volume"
    assert rep["psnr_3d"] == pytest.approx(psnr(minmax(data["noisy"]), data["ref"]), abs=1e-6)
    for key in ("mse_3d", "ssim_3d", "dssim_3d", "psnr_2d", "mse_2d", "dssim_2d", "psnr_2d_std"):
        assert math.isfinite(rep[key])
    assert len(rep["details_2d"]["per_projection"]) == 3
    assert rep["settings_3d"]["ssim_data_range"] == 1.0
    assert rep["provenance"][0]["command"] == "eval" and len(rep["provenance"][0]["inputs"]) == 2
    assert Path("fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "psnr_3d" in r.stdout and "dssim_2d" in r.stdout  # the table
    # outputs are refused without --overwrite, before any work
    again = run("vol.mrc", "--reference", "ref.mrc", "-o", "rep.yaml", "--projections", "0")
    assert again.exit_code == 1 and "output exists" in again.stderr


def test_json_is_the_only_stdout_and_encodes_infinity(run, data: dict[str, np.ndarray]) -> None:
    r = run("ref.mrc", "--reference", "ref.mrc", "--json", "--projections", "2")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # the whole stdout is one JSON object: no table mixed in
    assert out["psnr_3d"] == "inf" and out["psnr_2d"] == "inf" and out["mse_3d"] == 0.0
    assert out["ssim_3d"] == pytest.approx(1.0)


def test_data_range_2_is_recorded_and_raises_ssim(run, data: dict[str, np.ndarray]) -> None:
    one = json.loads(run("vol.mrc", "-r", "ref.mrc", "--json", "--projections", "0").stdout)
    two = json.loads(run("vol.mrc", "-r", "ref.mrc", "--json", "--projections", "0", "--data-range", "2").stdout)
    assert two["settings_3d"]["ssim_data_range"] == 2.0 and two["ssim_3d"] > one["ssim_3d"]
    assert two["psnr_3d"] == one["psnr_3d"]  # PSNR always uses data_range 1


def test_align_finds_a_flipped_volume(run, data: dict[str, np.ndarray]) -> None:
    r = run("flipped.mrc", "-r", "ref.mrc", "--align", "--json", "--projections", "0")
    out = json.loads(r.stdout)
    assert out["align"]["flip_zyx"] == [False, False, True]
    assert out["psnr_3d"] == pytest.approx(psnr(minmax(data["noisy"]), data["ref"]), abs=1e-6)


def test_slab_only_takes_the_thickness_from_the_reference_sidecar(run, data: dict[str, np.ndarray]) -> None:
    out = json.loads(run("vol.mrc", "-r", "ref.mrc", "--slab-only", "--json", "--projections", "0").stdout)
    assert out["settings_3d"]["masked_voxels"] == 8 * 16 * 16
    ok = run("ref.mrc", "-r", "vol.mrc", "--slab-only", "--projections", "0")
    assert ok.exit_code == 0  # the reference vol.mrc has no thickness, but ref.mrc (the VOLUME here) has one
    none = run("vol.mrc", "-r", "flipped.mrc", "--slab-only", "--projections", "0")
    assert none.exit_code == 1 and "--thickness-px" in none.stderr
    zero = run("vol.mrc", "-r", "ref.mrc", "--slab-only", "--thickness-px", "0", "--projections", "0")
    assert zero.exit_code == 1  # the message named a non-existent option --thickness
    assert zero.stderr.strip().splitlines() == ["error: --thickness-px 0: the slab thickness must be a positive "
                                                "number of voxels"]


def test_mask_file(run, data: dict[str, np.ndarray]) -> None:
    mask = np.zeros((16, 16, 16), np.float32)
    mask[4:12, 4:12, 4:12] = 1
    write_image("mask.mrc", mask, Metadata(kind="volume"))
    out = json.loads(run("vol.mrc", "-r", "ref.mrc", "--mask", "mask.mrc", "--json", "--projections", "0").stdout)
    assert out["settings_3d"]["masked_voxels"] == 512
    write_image("small.mrc", mask[:8], Metadata(kind="volume"))
    r = run("vol.mrc", "-r", "ref.mrc", "--mask", "small.mrc", "--projections", "0")
    assert r.exit_code == 1 and "differs from the volume" in r.stderr


def test_reference_of_another_size_is_resampled_and_said_so(run, data: dict[str, np.ndarray], rng) -> None:
    big = minmax(gaussian_filter(rng.random((32, 32, 32)), 3)).astype(np.float32)
    write_image("big.mrc", big, Metadata(kind="volume"))
    r = run("vol.mrc", "-r", "big.mrc", "--json", "--projections", "0")
    assert r.exit_code == 0
    assert "resampled from [32, 32, 32] to [16, 16, 16]" in r.stderr
    assert any("resampled" in n for n in json.loads(r.stdout)["notes"])
    write_image("slab.mrc", big[:8], Metadata(kind="volume"))  # thinner in z: zero-padded, fine
    assert run("vol.mrc", "-r", "slab.mrc", "--projections", "0").exit_code == 0
    write_image("wide.mrc", big[:, :, :16], Metadata(kind="volume"))  # y and x ratios 2 and 1: distorted
    bad = run("vol.mrc", "-r", "wide.mrc", "--projections", "0")
    assert bad.exit_code == 1 and "cannot be resampled" in bad.stderr


def test_recon_folder_as_reference_uses_its_preview(run, data: dict[str, np.ndarray], workdir: Path) -> None:
    (workdir / "recon").mkdir()
    write_image("recon/preview.mrc", data["ref"], Metadata(kind="volume"))
    out = json.loads(run("ref.mrc", "-r", "recon", "--json", "--projections", "0").stdout)
    assert out["psnr_3d"] == "inf" and out["reference"].endswith("preview.mrc")
    (workdir / "empty").mkdir()
    r = run("ref.mrc", "-r", "empty")
    assert r.exit_code == 1 and "without preview.mrc" in r.stderr


def test_stacks_are_compared_image_by_image(run, workdir: Path, rng: np.random.Generator) -> None:
    angles = [-30.0, 0.0, 30.0]
    ts = rng.random((3, 16, 16)).astype(np.float32)
    write_image("ts.mrc", ts, Metadata(kind="tilt_series", tilt_angles_deg=angles))
    other = ts.copy()
    other[1] += 0.1 * rng.standard_normal((16, 16)).astype(np.float32)
    write_image("ts2.mrc", other, Metadata(kind="tilt_series", tilt_angles_deg=angles))
    r = run("ts2.mrc", "-r", "ts.mrc", "--json", "--figure", "s.png")
    out = json.loads(r.stdout)
    assert out["mode"] == "stack" and len(out["per_image"]) == 3
    assert out["per_image"][0]["psnr"] == "inf" and isinstance(out["per_image"][1]["psnr"], float)
    assert out["psnr_2d"] == "inf" and "psnr_3d" not in out  # mean of a set with +inf
    assert Path("s.png").stat().st_size > 1000


def test_fsc_with_and_without_pixel_size(run, workdir: Path, rng: np.random.Generator) -> None:
    x = gaussian_filter(rng.random((16, 16, 16)), 1.5).astype(np.float32)
    halves = [x + 0.02 * rng.standard_normal(x.shape).astype(np.float32) for _ in range(2)]
    write_image("h1.mrc", halves[0], Metadata(kind="volume", pixel_size_angstrom=2.5))
    write_image("h2.mrc", halves[1], Metadata(kind="volume", pixel_size_angstrom=2.5))
    r = run("--fsc", "h1.mrc", "h2.mrc", "--json", "--figure", "fsc.png")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["mode"] == "fsc"
    assert out["fsc_0143_angstrom"] == pytest.approx(2.5 * out["fsc_0143_px"])
    assert out["fsc_05_px"] >= out["fsc_0143_px"] >= 2.0
    assert len(out["fsc"]["curve"]["frequency_per_angstrom"]) == 9  # shells 0 … 8 (Nyquist)
    assert Path("fsc.png").read_bytes()[:4] == b"\x89PNG"
    write_image("n1.mrc", halves[0], Metadata(kind="volume"))
    write_image("n2.mrc", halves[1], Metadata(kind="volume"))
    r = run("--fsc", "n1.mrc", "n2.mrc", "--json")
    out = json.loads(r.stdout)
    assert out["fsc_0143_angstrom"] is None and out["fsc_0143_px"] >= 2.0
    assert "no pixel size" in r.stderr and "1/px" in r.stderr
    px = json.loads(run("--fsc", "n1.mrc", "n2.mrc", "--json", "--pixel-size", "3").stdout)
    assert px["fsc_0143_angstrom"] == pytest.approx(3.0 * px["fsc_0143_px"])


def test_fsc_of_a_constant_half_map_is_refused(run, workdir: Path) -> None:
    # every shell past DC is 0/0: no resolution may be reported (it said Nyquist, at_nyquist: true)
    write_image("c.mrc", np.full((16, 16, 16), 0.3, np.float32), Metadata(kind="volume"))
    r = run("--fsc", "c.mrc", "c.mrc", "--json")
    assert r.exit_code == 1 and r.stdout == ""
    assert "c.mrc: every voxel is 0.3; a constant half map holds no image information; the FSC is undefined" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("vol.mrc",), "missing reference"),
        (("vol.mrc", "-r", "nope.mrc"), "no such file"),
        ((), "nothing to evaluate"),
        (("-r", "ref.mrc"), "without VOLUME"),
        (("vol.mrc", "-r", "ref.mrc", "--data-range", "0"), "--data-range"),
        (("vol.mrc", "-r", "ref.mrc", "--projections", "-1"), "--projections"),
        (("--fsc", "vol.mrc", "missing.mrc"), "no such file"),
        (("vol.mrc", "-r", "ref.mrc", "-o", "rep.mrc"), "-o rep.mrc: the report is YAML text, not an image"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(run, data: dict[str, np.ndarray], args: tuple[str, ...], message: str) -> None:
    r = run(*args)
    assert r.exit_code == 1
    assert message in r.stderr and "Traceback" not in r.output
    assert not Path("rep.yaml").exists() and not Path("rep.mrc").exists()


def test_registered_in_the_real_app(cli) -> None:
    r = cli("eval", "--help")
    assert r.exit_code == 0 and "--fsc" in r.output and "--data-range" in r.output
