"""Contrast of a raw stack without a sidecar: guessed from how the intensity follows the path length 1/cos θ,
used by align/wbp/recon/eval and recorded in the aligned stack's sidecar."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import yaml

from stemtomo.align.ground_truth import gauge_free_rms
from stemtomo.io import Image, Metadata
from stemtomo.preprocess.contrast import ContrastChoice, guess_contrast, recheck_on_aligned, resolve_contrast
from stemtomo.simulate.config import NoiseConfig, SimulationConfig
from stemtomo.simulate.simulate import simulate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _series(phantom: str, contrast: str, dose: float | None = 20.0, **kw):
    cfg = SimulationConfig(phantom=phantom, size=48, contrast=contrast, tilts="-60:60:3", seed=2,
                           noise=NoiseConfig(dose=dose) if dose else NoiseConfig(), **kw)
    result = simulate(cfg)
    return (result.noisy if dose else result.clean), result.tilt_angles_deg


@pytest.mark.parametrize("phantom", ["cell", "nanoparticles"])
@pytest.mark.parametrize("contrast", ["bf", "df"])
def test_the_tilt_trend_tells_bright_from_dark_field(phantom: str, contrast: str) -> None:
    stack, angles = _series(phantom, contrast)
    guess = guess_contrast(stack, angles)
    assert guess.contrast == contrast, guess
    assert abs(guess.trend) > 0.5
    # a detector offset and gain (raw counts) do not change it
    raw = guess_contrast(1000.0 + 250.0 * stack, angles)
    assert raw.contrast == contrast and raw.trend == pytest.approx(guess.trend, abs=1e-6)


def test_no_trend_or_too_few_tilts_is_no_guess(rng: np.random.Generator) -> None:
    angles = np.arange(-60.0, 61.0, 3.0)
    flat = rng.random((angles.size, 32, 32))
    guess = guess_contrast(flat, angles)
    assert guess.contrast is None and abs(guess.trend) < 0.5
    stack, angles = _series("cell", "df")
    assert guess_contrast(stack[:4], angles[:4]).contrast is None  # fewer than 5 images
    middle = np.abs(angles) <= 12  # 1/cos θ spreads by 0.02 only
    assert guess_contrast(stack[middle], angles[middle]).contrast is None
    assert guess_contrast(np.ones((9, 8, 8)), np.linspace(-60, 60, 9)).contrast is None  # constant


def _image(stack: np.ndarray, angles: np.ndarray, name: str, contrast: str | None = None) -> Image:
    return Image(data=stack, meta=Metadata(tilt_angles_deg=angles.tolist(), contrast=contrast), path=Path(name))


def test_what_is_stated_wins_over_the_guess(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stemtomo")
    stack, angles = _series("cell", "df")
    assert resolve_contrast("bf", _image(stack, angles, "x.mrc", "df")) == "bf"  # the option
    assert resolve_contrast(None, _image(stack, angles, "x.mrc", "bf")) == "bf"  # the sidecar
    assert resolve_contrast(None, _image(stack, angles, "x.mrc"), "bf-vacuum") == "bf"  # --normalize-tilts' kind
    assert not caplog.text
    assert resolve_contrast(None, _image(stack, angles, "x.mrc"), "none") == "df"
    assert "x.mrc: no contrast recorded; the images look dark-field" in caplog.text
    caplog.clear()
    flat = np.random.default_rng(0).random((angles.size, 16, 16))
    assert resolve_contrast(None, _image(flat, angles, "y.mrc")) == "bf"
    assert "y.mrc: no contrast recorded and none clear" in caplog.text and "--contrast df" in caplog.text


def _raw_copy(path: Path, stack: np.ndarray, angles: np.ndarray) -> None:
    """What a microscope writes: the images and a .rawtlt beside them, no sidecar."""
    mrcfile.new(path, np.asarray(stack, dtype=np.float32), overwrite=True).close()
    path.with_suffix(".rawtlt").write_text("\n".join(f"{a:.2f}" for a in angles) + "\n")


def test_a_dark_field_stack_without_sidecar_is_aligned_and_reconstructed_as_dark_field(workdir: Path, cli) -> None:
    res = cli("simulate", "-o", "sim", "--phantom", "nanoparticles", "--size", "48", "--contrast", "df",
              "--tilts", "-60:60:3", "--tilt-axis-angle", "90", "--shift-sigma-px", "2", "--dose", "50",
              "--seed", "1", "-q")
    assert res.exit_code == 0, res.output
    with mrcfile.open("sim/noisy.mrc") as f:
        stack = f.data.copy()
    angles = np.array(yaml.safe_load(Path("sim/noisy.mrc.yaml").read_text())["tilt_angles_deg"])
    _raw_copy(Path("raw.mrc"), stack, angles)
    res = cli("info", "--json", "raw.mrc")
    summary = json.loads(res.stdout)
    assert summary["contrast"] == "df" and summary["sources"]["contrast"].startswith("the images: intensity rises")
    res = cli("align", "raw.mrc", "-o", "guessed.mrc", "--tilt-axis-angle", "90", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "look dark-field" in res.output
    res = cli("align", "raw.mrc", "-o", "stated.mrc", "--tilt-axis-angle", "90", "--contrast", "df",
              "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    with mrcfile.open("guessed.mrc") as a, mrcfile.open("stated.mrc") as b:
        np.testing.assert_array_equal(a.data, b.data)
    assert yaml.safe_load(Path("guessed.mrc.yaml").read_text())["contrast"] == "df"  # downstream commands know
    res = cli("align", "raw.mrc", "-o", "as_bf.mrc", "--tilt-axis-angle", "90", "--contrast", "bf",
              "--device", "cpu", "-q")
    with mrcfile.open("guessed.mrc") as a, mrcfile.open("as_bf.mrc") as b:
        assert not np.array_equal(a.data, b.data)  # the contrast matters to the shifts: the test is real
    # a dark-field normalization on a raw stack names the contrast (it used to be refused as "bf contrast")
    res = cli("wbp", "raw.mrc", "-o", "w.mrc", "--normalize-tilts", "df-total", "--tilt-axis-angle", "90", "-q")
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(Path("w.mrc.yaml").read_text())["contrast"] == "df"
    res = cli("eval", "--holdout", "raw.mrc", "-o", "h.yaml", "-q")
    assert res.exit_code == 0, res.output


def test_apply_of_a_stack_without_angles_needs_no_contrast(workdir: Path, cli, rng: np.random.Generator) -> None:
    """``align --apply`` only resamples: a bare stack with no tilt angles anywhere is not refused for the guess."""
    mrcfile.new("bare.mrc", rng.random((5, 16, 16)).astype(np.float32)).close()
    Path("bare.xf").write_text("1 0 0 1 0.5 0\n" * 5)
    res = cli("align", "bare.mrc", "--xf", "bare.xf", "--apply", "-o", "ali.mrc")
    assert res.exit_code == 0, res.output
    assert "assuming bright field" in " ".join(res.output.split())  # rich wraps the line
    assert yaml.safe_load(Path("ali.mrc.yaml").read_text())["contrast"] == "bf"


def _drifting_df_series(seed: int = 3, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A DF nanoparticle series (axis 86°, dose 200) whose frame drifts as a random walk from the 0° tilt
    (steps of 2.5 % of the width, up to 16 %), borders filled with each image's mean; and the drift ``(n, 2)``
    (x, y pixels: the content of image i sits ``drift[i]`` from where it is at 0°)."""
    from scipy import ndimage

    cfg = SimulationConfig(phantom="nanoparticles", size=size, contrast="df", tilts="-60:60:3", seed=seed,
                           noise=NoiseConfig(dose=200.0), tilt_axis_angle_deg=86.0)
    result = simulate(cfg)
    angles = result.tilt_angles_deg
    steps = np.random.default_rng(seed).normal(0.0, size / 40, (angles.size, 2))
    centre = int(np.argmin(np.abs(angles)))
    drift = np.zeros((angles.size, 2))
    for i in range(centre + 1, angles.size):
        drift[i] = drift[i - 1] + steps[i]
    for i in range(centre - 1, -1, -1):
        drift[i] = drift[i + 1] + steps[i]
    stack = np.stack([ndimage.shift(img.astype(np.float64), (dy, dx), order=1, mode="constant", cval=float(img.mean()))
                      for img, (dx, dy) in zip(result.noisy, drift, strict=True)]).astype(np.float32)
    return stack, angles, drift


def _gauge_free_rms(xf_path: Path, drift: np.ndarray, angles: np.ndarray) -> float:
    """RMS of the .xf translations against the drift, up to the alignment's free 3D translation of the object
    (u: x0 cos θ + z0 sin θ, v: y0)."""
    xf = np.loadtxt(xf_path)  # IMOD lines: A11 A12 A21 A22 DX DY
    residual = xf[:, 4:] + np.einsum("nij,nj->ni", xf[:, :4].reshape(-1, 2, 2), drift)
    return gauge_free_rms(residual, angles)


def test_a_drifting_dark_field_stack_is_recognized_once_aligned(workdir: Path, cli) -> None:
    """The raw guess reads the image centres, which the drift moves over the particles: no trend there. The
    aligned images show it (r = +1.00), and the series is aligned again as DF: shifts 0.18 px RMS (measured),
    against 0.86 px aligned as bright field."""
    stack, angles, drift = _drifting_df_series()
    assert guess_contrast(stack, angles).contrast is None  # what makes this test real (measured r = −0.08)
    _raw_copy(Path("raw.mrc"), stack, angles)
    res = cli("align", "raw.mrc", "-o", "ali.mrc", "--tilt-axis-angle", "86", "--device", "cpu")
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "none clear from the raw images; the aligned images look dark-field" in said
    assert "assuming bright field" not in said
    assert yaml.safe_load(Path("ali.mrc.yaml").read_text())["contrast"] == "df"
    assert _gauge_free_rms(Path("ali.xf"), drift, angles) < 0.3
    res = cli("align", "raw.mrc", "-o", "bf.mrc", "--tilt-axis-angle", "86", "--contrast", "bf", "-q")
    assert res.exit_code == 0, res.output
    assert _gauge_free_rms(Path("bf.xf"), drift, angles) > 0.6  # the contrast matters to the shifts
    # the raw stack with that .xf: wbp reads the contrast off the images the .xf aligns
    res = cli("wbp", "raw.mrc", "--xf", "ali.xf", "-o", "w.mrc", "--thickness-px", "32", "-q")
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(Path("w.mrc.yaml").read_text())["contrast"] == "df"


def test_a_stated_contrast_is_not_rechecked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stemtomo")
    stack, angles = _series("cell", "df")
    for source in ("option", "sidecar", "normalize-tilts"):
        stated = ContrastChoice("bf", source)
        assert recheck_on_aligned(stated, stack, angles, "x.mrc") is stated
    assert not caplog.text
    guessed = recheck_on_aligned(ContrastChoice("bf", "images"), stack, angles, "x.mrc")
    assert guessed == ContrastChoice("df", "aligned images")
    assert "x.mrc: the aligned images look dark-field" in caplog.text and "instead of bf" in caplog.text
    caplog.clear()
    flat = np.random.default_rng(0).random((angles.size, 16, 16))
    assert recheck_on_aligned(ContrastChoice("bf", "default"), flat, angles, "y.mrc").contrast == "bf"
    assert "y.mrc: no contrast recorded and none clear from the raw or the aligned images" in caplog.text
