"""The preparation options of wbp / align / denoise end to end on tiny simulated series (CLI round trips)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stemtomo.align.xf import format_xf, xf_from_alignment
from stemtomo.cli.app import app
from stemtomo.io import read_sidecar, read_stack, read_volume, write_image

SLAB = 16


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32³ cell phantom, 16-voxel slab, 21 tilts −60…60°, 200 e⁻/pixel BF (clean.mrc, noisy.mrc)."""
    out = tmp_path_factory.mktemp("sim") / "sim"
    res = _invoke("simulate", "-o", out, "--size", 32, "--thickness-px", SLAB, "--tilts", "-60:60:6",
                  "--dose", 200, "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def sim_misaligned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, with the tilt axis along x (90°) and random shifts σ = 2 px (noise-free)."""
    out = tmp_path_factory.mktemp("mis") / "mis"
    res = _invoke("simulate", "-o", out, "--size", 32, "--thickness-px", SLAB, "--tilts", "-60:60:6",
                  "--tilt-axis-angle", 90, "--shift-sigma-px", 2, "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    return out


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_wbp_remove_defects_undoes_hot_pixels(workdir: Path, cli, sim: Path) -> None:
    """30 hot pixels (intensity 1, the vacuum level, over a ~0.3 specimen) per 32² image: each back-projects
    into a streak. With --remove-defects the volume is much closer to the WBP of the untouched series
    (measured RMSE 0.138 → 0.034). Of the 621 distinct injected pixels 565 are found (577, RMSE 0.033,
    before the variance-stabilized z): at 32² the sharp phantom's edges inflate the fitted noise-vs-level
    slope, so e.g. 200 counts over a median of 47 on an edge from 3 to 118 counts scores 6.7σ, under the
    threshold 7; the hot pixels left are on bright or steep parts of the specimen."""
    image = read_stack(sim / "noisy.mrc")
    g = np.random.default_rng(5)
    hot = image.data.copy()
    for t in range(hot.shape[0]):
        hot[t, g.integers(2, 30, 30), g.integers(2, 30, 30)] = 1.0
    write_image("hot.mrc", hot, image.meta)
    assert cli("wbp", sim / "noisy.mrc", "-o", "ref.mrc", "--device", "cpu").exit_code == 0
    assert cli("wbp", "hot.mrc", "-o", "raw.mrc", "--device", "cpu").exit_code == 0
    res = cli("wbp", "hot.mrc", "-o", "fixed.mrc", "--remove-defects", "--device", "cpu")
    assert res.exit_code == 0, res.output
    ref, raw, fixed = (read_volume(p) for p in ("ref.mrc", "raw.mrc", "fixed.mrc"))
    err_raw, err_fixed = _rmse(raw.data, ref.data), _rmse(fixed.data, ref.data)
    assert err_fixed < 0.3 * err_raw, (err_raw, err_fixed)
    defects = fixed.meta.extra["defects"]
    assert defects["replaced_total"] >= 0.85 * 21 * 30 and len(defects["replaced"]) == 21
    prov = fixed.meta.provenance[-1]
    assert prov["command"] == "wbp" and prov["options"]["remove_defects"] is True


def test_wbp_xf_equals_align_apply_then_wbp(workdir: Path, cli, sim_misaligned: Path) -> None:
    """The ground-truth transforms (axis 90°, recorded shifts) applied inside wbp give the same volume as
    align --apply followed by wbp; and the result matches the phantom far better than ignoring them
    (measured correlation 0.66 vs 0.36)."""
    ts = sim_misaligned / "clean.mrc"
    meta = read_sidecar(ts)
    assert meta is not None
    shifts = np.asarray(meta.extra["shifts_px"], dtype=np.float64)
    Path("truth.xf").write_text(format_xf(xf_from_alignment(90.0, shifts)))
    res = cli("wbp", ts, "-o", "direct.mrc", "--xf", "truth.xf", "--device", "cpu")
    assert res.exit_code == 0, res.output
    res = cli("align", ts, "-o", "ali.mrc", "--apply", "--xf", "truth.xf", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert cli("wbp", "ali.mrc", "-o", "twostep.mrc", "--device", "cpu").exit_code == 0
    direct, twostep = read_volume("direct.mrc"), read_volume("twostep.mrc")
    np.testing.assert_allclose(direct.data, twostep.data, atol=1e-5)
    ali = read_sidecar("ali.mrc")
    assert ali is not None and ali.tilt_axis_angle_deg == 0.0
    assert direct.meta.extra["alignment"]["xf_sha256"] == ali.extra["alignment"]["xf_sha256"]
    assert direct.meta.extra["source_tilt_axis_angle_deg"] == 0.0
    assert cli("wbp", ts, "-o", "noxf.mrc", "--device", "cpu").exit_code == 0  # rotates by 90°, no shifts
    phantom = read_volume(sim_misaligned / "phantom.mrc").data
    nz = direct.data.shape[0]
    lo = (phantom.shape[0] - nz) // 2
    truth = phantom[lo:lo + nz]
    corr = [np.corrcoef(read_volume(p).data.ravel(), truth.ravel())[0, 1] for p in ("direct.mrc", "noxf.mrc")]
    assert corr[0] > corr[1] + 0.1, corr


def test_estimate_thickness_wbp_and_align(workdir: Path, cli, sim: Path) -> None:
    """wbp --estimate-thickness on the 16-voxel slab: within 10 %, written to the sidecar, used for the
    volume (measured 15.2, offset +0.24); align --apply --estimate-thickness writes thickness_px into the
    aligned stack, which wbp uses."""
    res = cli("wbp", sim / "noisy.mrc", "-o", "est.mrc", "--estimate-thickness", "--half-sets", "--device", "cpu")
    assert res.exit_code == 0, res.output
    vol = read_volume("est.mrc")
    est = vol.meta.extra["thickness_estimate"]
    assert est["thickness_px"] == pytest.approx(SLAB, rel=0.10)
    assert abs(est["z_offset_px"]) < 1.0
    assert vol.meta.thickness_px == pytest.approx(est["slab_used_px"])
    assert vol.data.shape[0] == int(np.ceil(est["slab_used_px"] - 1e-6)) and vol.data.shape[0] < 32
    assert read_volume("est_odd.mrc").meta.extra["thickness_estimate"] == est  # one estimate for all sets
    Path("id.xf").write_text(format_xf(xf_from_alignment(0.0, np.zeros((21, 2)))))
    res = cli("align", sim / "noisy.mrc", "-o", "ali.mrc", "--apply", "--xf", "id.xf", "--estimate-thickness",
              "--device", "cpu")
    assert res.exit_code == 0, res.output
    ali = read_sidecar("ali.mrc")
    assert ali is not None and ali.thickness_px == pytest.approx(SLAB, rel=0.10)
    assert ali.extra["thickness_estimate"]["enclosing_thickness_px"] == ali.thickness_px
    assert cli("wbp", "ali.mrc", "-o", "fromali.mrc", "--device", "cpu").exit_code == 0
    assert read_volume("fromali.mrc").meta.thickness_px == pytest.approx(ali.thickness_px)


def test_denoise_prepares_first(workdir: Path, cli, sim: Path) -> None:
    image = read_stack(sim / "noisy.mrc")
    hot = image.data.copy()
    hot[:, 10, 12] = 1.0
    write_image("hot.mrc", hot, image.meta)
    res = cli("denoise", "hot.mrc", "-o", "den.mrc", "--method", "gaussian", "--remove-defects",
              "--normalize-tilts", "bf-vacuum")
    assert res.exit_code == 0, res.output
    den = read_stack("den.mrc")
    assert den.meta.extra["defects"]["hot"][0] >= 1
    assert len(den.meta.extra["intensity_normalization"]["factors"]) == 21
    assert den.meta.normalization["calibrated"] is True
    assert float(den.data.min()) >= 0.0 and float(den.data.max()) <= 1.0
    assert den.meta.provenance[-1]["options"]["normalize_tilts"] == "bf-vacuum"


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("wbp", ["--estimate-thickness", "--thickness-px", "10"], "--estimate-thickness and --thickness-px: use one of"),
        ("wbp", ["--xf", "three.xf"], "3 transforms but the stack has 21 images"),
        ("wbp", ["--xf", "three.xf", "--tilt-axis-angle", "90"], "drop --tilt-axis-angle"),
        ("wbp", ["--defect-threshold", "5"], "has no effect without --remove-defects"),
        ("wbp", ["--remove-defects", "--defect-threshold", "0"], "--defect-threshold 0: must be > 0"),
        ("wbp", ["--normalize-tilts", "df-cos"], "the series is bf contrast"),
        ("align", ["--apply", "--xf", "three.xf"], "3 transforms but the stack has 21 images"),
        ("align", ["--normalize-tilts", "df-total"], "the series is bf contrast"),
        ("denoise", ["--xf", "three.xf", "--method", "median"], "3 transforms but the stack has 21 images"),
    ],
)
def test_bad_input_one_line_nothing_written(workdir: Path, cli, sim: Path, command: str, args: list[str],
                                            message: str) -> None:
    Path("three.xf").write_text(format_xf(xf_from_alignment(0.0, np.zeros((3, 2)))))
    res = cli(command, sim / "noisy.mrc", "-o", "out.mrc", *args, *(["--device", "cpu"] if command != "denoise" else []))
    assert res.exit_code == 1, res.output
    lines = _error_lines(res.output)
    assert len(lines) == 1 and message in lines[0], res.output
    assert sorted(p.name for p in workdir.iterdir()) == ["three.xf"]


def test_estimate_thickness_of_an_aligned_stack_with_and_without_sidecar(workdir: Path, cli) -> None:
    """A noisy series with σ = 3 px shifts and a 7° axis, aligned with its true .xf: the fill of the aligned
    stack (known from the sidecar's transforms, or found in the images of a copy with no sidecar, as an IMOD
    .ali) is not scored, and both estimates find the 16-voxel slab near the centre (measured 16.4 and 17.0 px,
    offsets +0.02/−0.07; before the fill was left out 14.4 and 14.9 px; with the detected fill taken for the
    measured pixels the second one failed: "no plane … seen whole")."""
    import mrcfile

    res = cli("simulate", "-o", "mis", "--size", 48, "--thickness-px", SLAB, "--tilts", "-60:60:4",
              "--tilt-axis-angle", 7, "--shift-sigma-px", 3, "--dose", 200, "--seed", 3, "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    meta = read_sidecar(Path("mis/noisy.mrc"))
    assert meta is not None
    Path("truth.xf").write_text(format_xf(xf_from_alignment(7.0, np.asarray(meta.extra["shifts_px"]))))
    res = cli("align", "mis/noisy.mrc", "-o", "ali.mrc", "--apply", "--xf", "truth.xf", "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    assert "transforms" in read_sidecar(Path("ali.mrc")).extra["alignment"]
    with mrcfile.new("elsewhere.ali") as mrc:
        mrc.set_data(read_stack("ali.mrc").data.astype(np.float32))
    Path("elsewhere.tlt").write_text("\n".join(f"{a:g}" for a in meta.tilt_angles_deg))
    for name in ("ali.mrc", "elsewhere.ali"):
        res = cli("wbp", name, "-o", f"{name}.rec", "--estimate-thickness", "--contrast", "bf", "--device", "cpu")
        assert res.exit_code == 0, res.output
        est = read_volume(f"{name}.rec").meta.extra["thickness_estimate"]
        assert est["thickness_px"] == pytest.approx(SLAB, rel=0.10), (name, est)
        assert abs(est["z_offset_px"]) < 1.5, (name, est)
