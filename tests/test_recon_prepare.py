"""`stemtomo recon` with the raw-series preparation options (--remove-defects, --normalize-tilts, --xf)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stemtomo.align.xf import format_xf, xf_from_alignment
from stemtomo.cli._prepare import prepare_options
from stemtomo.cli.app import app
from stemtomo.cli.cmd_recon import _prepared_image
from stemtomo.io import read_sidecar, read_stack, read_volume, write_image

FAST = ("--method", "l2", "--iterations", "6", "--rays-per-batch", "256", "--samples", "8", "--val-every", "0",
        "--device", "cpu", "--seed", "3")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Noise-free 32² series, 16-px slab, 21 tilts: aligned (axis 0°) and misaligned (axis 90°, σ = 2 px)."""
    d = tmp_path_factory.mktemp("recon_prepare")
    common = ("--size", 32, "--thickness-px", 16, "--tilts", "-60:60:6", "--device", "cpu", "-q")
    assert _invoke("simulate", "-o", d / "ok", *common).exit_code == 0
    assert _invoke("simulate", "-o", d / "mis", *common, "--tilt-axis-angle", 90, "--shift-sigma-px", 2).exit_code == 0
    return d / "ok" / "clean.mrc", d / "mis" / "clean.mrc"


def _with_hot_pixels(src: Path, dst: str) -> np.ndarray:
    """30 hot pixels (intensity 1, the vacuum level, over a ~0.3 specimen) per image; returns their mask."""
    image = read_stack(src)
    g = np.random.default_rng(5)
    hot = image.data.copy()
    mask = np.zeros(hot.shape, bool)
    for t in range(hot.shape[0]):
        mask[t, g.integers(2, 30, 30), g.integers(2, 30, 30)] = True
    hot[mask] = 1.0
    write_image(dst, hot, image.meta)
    return mask


def test_remove_defects_reaches_the_reconstruction_and_is_recorded(workdir: Path, cli, sims) -> None:
    clean = sims[0]
    mask = _with_hot_pixels(clean, "hot.mrc")
    # what recon trains on: the hot pixels replaced, close to the clean images again
    prepared, records = _prepared_image(Path("hot.mrc"), None, prepare_options(True, None, "none"), None, "cpu")
    truth = read_stack(clean).data
    assert np.abs(prepared.data[mask] - truth[mask]).mean() < 0.1 * np.abs(1.0 - truth[mask]).mean()
    assert records["defects"]["hot"][0] >= 1 and records["defects"]["replaced_total"] >= 0.9 * mask.sum()
    for name, extra in (("clean", ()), ("raw", ()), ("fixed", ("--remove-defects",))):
        src = clean if name == "clean" else "hot.mrc"
        r = cli("recon", src, "-o", name, *FAST, *extra)
        assert r.exit_code == 0, r.output
    prov = read_sidecar("fixed/model.safetensors").provenance[-1]  # type: ignore[union-attr]
    assert prov["command"] == "recon" and prov["options"]["remove_defects"] is True
    assert prov["options"]["preparation"]["defects"]["replaced_total"] == records["defects"]["replaced_total"]
    assert read_sidecar("raw/model.safetensors").provenance[-1]["options"]["remove_defects"] is False  # type: ignore[union-attr]
    # same seed, same rays: only the data differ, and the fixed data train a model closer to the clean one
    ref = read_volume("clean/preview.mrc").data
    err = {n: float(np.abs(read_volume(f"{n}/preview.mrc").data - ref).mean()) for n in ("raw", "fixed")}
    assert err["fixed"] < 0.5 * err["raw"], err  # measured 3e-5 vs 3.1e-3 (6 steps)


def test_xf_inside_recon_equals_align_apply_then_recon(workdir: Path, cli, sims) -> None:
    mis = sims[1]
    meta = read_sidecar(mis)
    assert meta is not None
    Path("truth.xf").write_text(format_xf(xf_from_alignment(90.0, np.asarray(meta.extra["shifts_px"]))))
    r = cli("recon", mis, "-o", "direct", "--xf", "truth.xf", *FAST)
    assert r.exit_code == 0, r.output
    assert cli("align", mis, "-o", "ali.mrc", "--apply", "--xf", "truth.xf", "--device", "cpu").exit_code == 0
    assert cli("recon", "ali.mrc", "-o", "twostep", *FAST).exit_code == 0
    np.testing.assert_allclose(read_volume("direct/preview.mrc").data, read_volume("twostep/preview.mrc").data,
                               atol=1e-5)
    model = read_sidecar("direct/model.safetensors")
    assert model is not None and model.extra["source_tilt_axis_angle_deg"] == 0.0  # the .xf put the axis on y
    prov = model.provenance[-1]
    assert prov["options"]["xf"] == "truth.xf" and prov["options"]["preparation"]["alignment"]["applied"] is True
    assert any(i["path"].endswith("truth.xf") for i in prov["inputs"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--xf", "short.xf"), "short.xf"),
        (("--defect-threshold", "5"), "--defect-threshold 5 has no effect without --remove-defects"),
        (("--normalize-tilts", "df-cos"), "df-cos"),
        (("--remove-defects", "--defect-threshold", "-1"), "--defect-threshold"),
    ],
)
def test_bad_preparation_options_write_nothing(workdir: Path, cli, sims, args: tuple[str, ...], message: str) -> None:
    Path("short.xf").write_text(format_xf(xf_from_alignment(0.0, np.zeros((5, 2)))))  # 5 lines for 21 images
    r = cli("recon", sims[0], "-o", "out", *FAST, *args)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and message in r.output, r.output
    assert not Path("out").exists()


def test_resume_needs_the_same_preparation(workdir: Path, cli, sims) -> None:
    mask = _with_hot_pixels(sims[0], "hot.mrc")
    assert mask.any()
    short = ("--iterations", "2", "--rays-per-batch", "64", "--samples", "4", "--val-every", "0", "--device", "cpu")
    assert cli("recon", "hot.mrc", "-o", "run", "--method", "l2", "--remove-defects", *short).exit_code == 0
    bad = cli("recon", "hot.mrc", "-o", "run", "--resume", "run", "--iterations", "3", "--device", "cpu")
    assert bad.exit_code == 1 and "remove_defects" in bad.output and "--remove-defects True" in bad.output, bad.output
    Path("id.xf").write_text(format_xf(xf_from_alignment(0.0, np.zeros((21, 2)))))
    bad = cli("recon", "hot.mrc", "-o", "run", "--resume", "run", "--iterations", "3", "--remove-defects",
              "--xf", "id.xf", "--device", "cpu")
    assert bad.exit_code == 1 and "(xf differ" in bad.output, bad.output
    ok = cli("recon", "hot.mrc", "-o", "run", "--resume", "run", "--iterations", "3", "--remove-defects",
             "--device", "cpu")
    assert ok.exit_code == 0, ok.output
    assert read_sidecar("run/checkpoint.safetensors").extra["recon"]["state"]["iteration"] == 3  # type: ignore[union-attr]


def test_bin_trains_on_binned_images_and_scales_the_pixel_lengths(workdir: Path, cli, sims) -> None:
    r = cli("recon", sims[0], "-o", "b2", *FAST, "--bin", "2")
    assert r.exit_code == 0, r.output
    full = read_stack(sims[0])
    preview = read_volume("b2/preview.mrc")
    # 32² images with a 16-px slab (sidecar) → 16² images, an 8-voxel slab
    assert preview.data.shape == (8, 16, 16)
    model = read_sidecar("b2/model.safetensors")
    assert model is not None and model.thickness_px == pytest.approx(8.0)
    assert full.meta.pixel_size_angstrom is not None  # simulate records one
    assert preview.meta.pixel_size_angstrom == pytest.approx(2 * full.meta.pixel_size_angstrom)
    image, extra = _prepared_image(sims[0], None, prepare_options(False, None, "none", None), None, "cpu", 2)
    np.testing.assert_allclose(image.data, full.data.reshape(21, 16, 2, 16, 2).mean((2, 4)), atol=1e-6)
    assert extra["bin"] == 2
    bad = cli("recon", sims[0], "-o", "b0", *FAST, "--bin", "0")
    assert bad.exit_code == 1 and "--bin 0: the binning factor must be ≥ 1" in bad.output and not Path("b0").exists()
    bad = cli("recon", sims[0], "-o", "b2", "--resume", "b2", "--iterations", "8", "--device", "cpu", "--bin", "1")
    assert bad.exit_code == 1 and "bin_factor" in bad.output and "--bin 2" in bad.output, bad.output
