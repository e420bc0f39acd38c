"""Tilts without usable signal (blank, noise) are found and left out of the alignment."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
import yaml
from test_align import ANGLES, _gauge_free_rms, _misaligned_series

from stemtomo.align import AlignConfig, coarse_align
from stemtomo.align._filters import _bandpass, _edge_weight, fill_regions
from stemtomo.align.quality import usable_tilts
from stemtomo.errors import InputError
from stemtomo.preprocess.defects import DefectConfig, remove_defects

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BAD = 15  # −15°


@pytest.fixture(scope="module")
def series() -> tuple[np.ndarray, np.ndarray]:
    """64² cell slab, axis 7°, shifts σ = 3 px: line integrals and true shifts."""
    lines, shifts = _misaligned_series(64, 20, 7.0, 3.0, seed=5)
    return lines.numpy(), shifts


def _usable(lines: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    imgs, valid = fill_regions(torch.as_tensor(lines))
    filtered = _bandpass(imgs, 1.0, 4.0) * _edge_weight(valid, 3.0)
    return usable_tilts(filtered, ANGLES, [19, 19])


def test_good_tilts_are_all_usable(series: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> None:
    lines, _ = series
    assert _usable(lines)[0].all()
    counts = rng.poisson(np.exp(-lines) * 10)  # Poisson dose 10
    noisy = -np.log(np.clip(counts / 10, 0.05, None)).astype(np.float32)
    assert _usable(noisy)[0].all()


def test_blank_and_noise_tilts_are_found(series: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> None:
    lines, _ = series
    bad = lines.copy()
    bad[BAD] = 0.0  # beam blanked
    bad[30] = rng.random(bad[30].shape) * lines.std()  # a frame of noise
    bad[31] = rng.random(bad[31].shape) * lines.std()  # and its neighbour
    bad[33] = rng.random(bad[33].shape) * lines.std()  # 32 is a good tilt between two bad ones
    usable, reasons = _usable(bad)
    assert sorted(reasons) == [BAD, 30, 31, 33]
    assert reasons[BAD].startswith("blank") and "uncorrelated" in reasons[30]
    assert usable.sum() == ANGLES.size - 4 and usable[32]


def test_a_blank_tilt_is_left_out_and_the_others_keep_their_shifts(series: tuple[np.ndarray, np.ndarray]) -> None:
    lines, shifts = series
    given = AlignConfig(tilt_axis_angle_deg=7.0)
    clean = coarse_align(lines, ANGLES, given)
    bad = lines.copy()
    bad[BAD] = 0.0
    result = coarse_align(bad, ANGLES, given)
    others = np.arange(ANGLES.size) != BAD
    assert list(result.excluded) == [BAD]
    assert _gauge_free_rms(result.shifts_xy[others], shifts[others], 7.0, ANGLES[others]) < 0.3
    np.testing.assert_allclose(result.shifts_xy[BAD], (result.shifts_xy[BAD - 1] + result.shifts_xy[BAD + 1]) / 2)
    everything = coarse_align(bad, ANGLES, AlignConfig(tilt_axis_angle_deg=7.0, drop_unusable=False))
    assert (_gauge_free_rms(everything.shifts_xy[others], shifts[others], 7.0, ANGLES[others])
            > 3 * _gauge_free_rms(clean.shifts_xy[others], shifts[others], 7.0, ANGLES[others]))  # the test is real
    with pytest.raises(InputError, match="only 1 of 41 tilts carry usable signal"):
        coarse_align(np.concatenate([lines[:1], np.zeros_like(lines[1:])]), ANGLES, given)


def test_align_cli_drops_an_unusable_tilt_from_the_aligned_stack(workdir: Path, cli,
                                                                   series: tuple[np.ndarray, np.ndarray]) -> None:
    lines, _ = series
    intensity = np.exp(-lines).astype(np.float32)
    intensity[BAD] = 1.0  # no specimen signal at all
    mrcfile.new("raw.mrc", intensity).close()
    Path("raw.rawtlt").write_text("\n".join(f"{a:g}" for a in ANGLES) + "\n")
    res = cli("align", "raw.mrc", "-o", "ali.mrc", "--tilt-axis-angle", "7", "--contrast", "bf", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "tilt 15 (-15.00°) left out of the alignment: blank" in res.output.replace("\n", " ").replace("  ", " ")
    meta = yaml.safe_load(Path("ali.mrc.yaml").read_text())
    assert meta["alignment"]["excluded_tilts"][0]["index"] == BAD
    assert meta["tilt_angles_deg"] == [float(a) for a in ANGLES if a != ANGLES[BAD]]
    with mrcfile.open("ali.mrc") as f:
        assert f.data.shape[0] == ANGLES.size - 1
    assert len(Path("ali.xf").read_text().splitlines()) == ANGLES.size  # IMOD applies it to the raw stack
    res = cli("align", "raw.mrc", "-o", "all.mrc", "--tilt-axis-angle", "7", "--contrast", "bf", "--keep-unusable",
              "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    with mrcfile.open("all.mrc") as f:
        assert f.data.shape[0] == ANGLES.size
    assert "excluded_tilts" not in yaml.safe_load(Path("all.mrc.yaml").read_text())["alignment"]
    intensity[1:] = 1.0  # one image with signal
    mrcfile.new("blank.mrc", intensity).close()
    Path("blank.rawtlt").write_text(Path("raw.rawtlt").read_text())
    res = cli("align", "blank.mrc", "-o", "b.mrc", "--contrast", "bf", "--device", "cpu")
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: blank.mrc: only 1 of 41 tilts carry usable signal"), lines
    assert not [p.name for p in Path(".").iterdir() if p.name.startswith("b.") or p.name.startswith("b_")]


def test_per_tilt_records_of_the_aligned_stack_describe_its_images(workdir: Path, cli,
                                                                   series: tuple[np.ndarray, np.ndarray]) -> None:
    lines, _ = series
    intensity = np.exp(-lines).astype(np.float32)
    intensity[BAD] = 1.0
    hot = 20  # after BAD: the 19th image of the aligned stack
    intensity[hot, 30, 33] = 40.0
    mrcfile.new("raw.mrc", intensity).close()
    Path("raw.rawtlt").write_text("\n".join(f"{a:g}" for a in ANGLES) + "\n")
    res = cli("align", "raw.mrc", "-o", "ali.mrc", "--tilt-axis-angle", "7", "--contrast", "bf", "--remove-defects",
              "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    meta = yaml.safe_load(Path("ali.mrc.yaml").read_text())
    defects = meta["defects"]
    assert len(meta["tilt_angles_deg"]) == ANGLES.size - 1
    assert all(len(defects[k]) == ANGLES.size - 1 for k in ("replaced", "hot", "dead", "noise_sigma"))
    report = remove_defects(intensity, DefectConfig())[1].as_dict()  # of the input stack
    assert report["hot"][hot] >= 1
    for key in ("replaced", "hot", "dead", "line", "noise_sigma"):
        assert defects[key] == pytest.approx(report[key][:BAD] + report[key][BAD + 1:]), key
    assert defects["replaced_total"] == report["replaced_total"] - report["replaced"][BAD]
    assert meta["alignment"]["excluded_tilts"][0]["index"] == BAD  # indices into the input stack, as the .xf


def test_a_blank_tilt_in_a_stack_aligned_elsewhere_is_named(workdir: Path, cli,
                                                            series: tuple[np.ndarray, np.ndarray]) -> None:
    """``wbp --xf`` (an IMOD alignment) keeps every tilt the .xf has, but names the one without signal."""
    lines, _ = series
    intensity = np.exp(-lines).astype(np.float32)
    Path("raw.rawtlt").write_text("\n".join(f"{a:g}" for a in ANGLES) + "\n")
    Path("raw.xf").write_text("1 0 0 1 0 0\n" * ANGLES.size)
    mrcfile.new("raw.mrc", intensity).close()
    res = cli("wbp", "raw.mrc", "--xf", "raw.xf", "-o", "good.mrc", "--contrast", "bf", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "no usable signal" not in res.output
    intensity[BAD] = 1.0
    mrcfile.new("raw.mrc", intensity, overwrite=True).close()
    res = cli("wbp", "raw.mrc", "--xf", "raw.xf", "-o", "bad.mrc", "--contrast", "bf", "--device", "cpu")
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "tilt 15 (-15.00°) carries no usable signal (blank" in said and said.count("no usable signal") == 1
    with mrcfile.open("bad.mrc") as f, mrcfile.open("good.mrc") as g:  # a warning: the volume is still written
        assert f.data.shape == g.data.shape
