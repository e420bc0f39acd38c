"""``stemtomo noise fit`` / ``noise sample`` through the CLI: outputs, statistics, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stemtomo.io import Metadata, read_sidecar, read_stack, write_image
from stemtomo.noise import GaussianNoiseModel, load_noise_model, save_noise_model
from stemtomo.noise.synthetic import StemNoiseProcess, smooth_images, stem_noise

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def pair(workdir: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    clean = smooth_images(6, 32, 32, rng)
    noisy = stem_noise(clean, StemNoiseProcess(dose=20.0, read_std=0.02), rng)
    write_image("clean.mrc", clean, Metadata())
    write_image("noisy.mrc", noisy, Metadata())
    return Path("clean.mrc"), Path("noisy.mrc")


def test_fit_all_writes_models_report_and_figure(cli, pair: tuple[Path, Path]) -> None:
    res = cli("noise", "fit", *pair, "-o", "nm.safetensors", "--model", "all", "--iterations", "30", "--joint-norm", "--renormalize",
              "--register")
    assert res.exit_code == 0, res.output
    for kind in ("flow", "gaussian", "poisson"):
        model = load_noise_model(f"nm_{kind}.safetensors")
        assert model.kind == kind
        meta = read_sidecar(f"nm_{kind}.safetensors")
        assert meta is not None and meta.provenance[-1]["command"] == "stemtomo noise fit"
        assert len(meta.provenance[-1]["inputs"]) == 2 and meta.normalization is not None and meta.normalization["mode"] == "joint"
    report = yaml.safe_load(Path("nm.report.yaml").read_text())
    assert len(report["data"]["registration_shifts_px"]) == 6  # one (dy, dx) per image pair
    rows = {r["model"]: r for r in report["comparison"]}
    assert set(rows) == {"flow", "gaussian", "poisson"}
    for r in rows.values():
        assert 0.0 <= r["jsd"] <= np.log(2) and 0.0 <= r["bc"] <= 1.0 and np.isfinite(r["heldout_nll"])
    assert rows["flow"]["steps"] == 30
    assert len(report["models"]["flow"]["metrics"]["bands"]) == 4
    assert Path("nm.hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "held-out NLL" in res.output  # the printed comparison table
    # outputs exist now: a second run is refused before any work, and nothing changes
    before = Path("nm_flow.safetensors").read_bytes()
    res = cli("noise", "fit", *pair, "-o", "nm.safetensors", "--model", "all")
    assert res.exit_code == 1 and "output exists" in res.output
    assert Path("nm_flow.safetensors").read_bytes() == before


def test_sample_reproduces_the_model_statistics_per_band(cli, workdir: Path, rng: np.random.Generator) -> None:
    # A heteroscedastic Gaussian with known σ²(c) = a + b·c: sampled noise must match mean and variance per band.
    model = GaussianNoiseModel(heteroscedastic=True)
    with torch.no_grad():
        model.mean.fill_(0.01)
        model.var_a.fill_(1e-3)
        model.var_b.fill_(4e-3)
    save_noise_model("g.safetensors", model)
    clean = rng.uniform(0, 1, (4, 64, 64)).astype(np.float32)
    write_image("c.mrc", clean, Metadata(normalization={"method": "robust_minmax", "range01": True}))
    res = cli("noise", "sample", "c.mrc", "--model", "g.safetensors", "-o", "s.mrc", "--seed", "5", "--no-clip")
    assert res.exit_code == 0, res.output
    noise = read_stack("s.mrc").data - clean
    for lo in (0.0, 0.25, 0.5, 0.75):
        sel = (clean >= lo) & (clean < lo + 0.25)
        c_mid = float(clean[sel].mean())
        var = 1e-3 + 4e-3 * c_mid
        # ~4000 pixels per band: SE of the mean √(var/n) ≈ 1e-3, of the variance ≈ 2.2 % (plus the band's spread)
        assert float(noise[sel].mean()) == pytest.approx(0.01, abs=4e-3)
        assert float(noise[sel].var()) == pytest.approx(var, rel=0.12)
    meta = read_sidecar("s.mrc")
    assert meta is not None
    inputs = meta.provenance[-1]["inputs"]
    assert [Path(i["path"]).name for i in inputs] == ["c.mrc", "g.safetensors"] and len(inputs[1]["sha256"]) == 64
    assert meta.extra["noise"]["model_kind"] == "gaussian"


def test_sample_with_a_fitted_flow_matches_its_density_moments(cli, pair: tuple[Path, Path]) -> None:
    res = cli("noise", "fit", *pair, "-o", "f.safetensors", "--iterations", "60", "--zero-mean")
    assert res.exit_code == 0, res.output
    model = load_noise_model("f.safetensors").double()
    clean = np.full((2, 64, 64), 0.5, np.float32)
    write_image("half.mrc", clean, Metadata(normalization={"range01": True}))
    clean[1] = 0.3  # a second conditioning value (image 1)
    write_image("two.mrc", clean, Metadata(normalization={"range01": True}))
    res = cli("noise", "sample", "two.mrc", "--model", "f.safetensors", "-o", "s.mrc", "--no-clip", "--seed", "1")
    assert res.exit_code == 0, res.output
    noise = read_stack("s.mrc").data - clean
    grid = torch.sinh(torch.linspace(-8.0, 8.0, 40_001, dtype=torch.float64))
    for i, c in ((0, 0.5), (1, 0.3)):
        with torch.no_grad():
            p = model.log_prob(grid, torch.full_like(grid, c)).exp()
        mean = torch.trapezoid(grid * p, grid).item()
        var = torch.trapezoid((grid - mean) ** 2 * p, grid).item()
        assert abs(mean) < 1e-6  # zero-mean flow
        assert float(noise[i].mean()) == pytest.approx(mean, abs=4 * (var / noise[i].size) ** 0.5)
        assert float(noise[i].var()) == pytest.approx(var, rel=0.1)
    # same seed → same output; clipping by default keeps [0, 1]
    cli("noise", "sample", "two.mrc", "--model", "f.safetensors", "-o", "s2.mrc", "--no-clip", "--seed", "1")
    assert np.array_equal(read_stack("s2.mrc").data, read_stack("s.mrc").data)
    cli("noise", "sample", "two.mrc", "--model", "f.safetensors", "-o", "s3.mrc", "--seed", "1")
    data = read_stack("s3.mrc").data
    assert data.min() >= 0.0 and data.max() <= 1.0


def _assert_refused(res, text: str, workdir: Path, before: set[str]) -> None:
    assert res.exit_code == 1, res.output
    assert text in res.output and len(res.output.strip().splitlines()) == 1
    assert {p.name for p in workdir.iterdir()} == before  # nothing written


def test_bad_input_is_one_line_exit_1_and_writes_nothing(cli, workdir: Path, pair: tuple[Path, Path]) -> None:
    clean = read_stack(pair[0]).data
    write_image("short.mrc", clean[:4], Metadata())
    const = clean.copy()
    const[2] = 0.25
    write_image("const.mrc", const, Metadata())
    nan = clean.copy()
    nan[0, 0, 0] = np.nan
    write_image("nan.mrc", nan, Metadata())
    before = {p.name for p in workdir.iterdir()}
    _assert_refused(cli("noise", "fit", "clean.mrc", "short.mrc", "-o", "m.safetensors"), "same areas", workdir, before)
    _assert_refused(cli("noise", "fit", "clean.mrc", "const.mrc", "-o", "m.safetensors"), "image 2 is constant",
                    workdir, before)
    _assert_refused(cli("noise", "fit", "nan.mrc", "noisy.mrc", "-o", "m.safetensors"), "NaN", workdir, before)
    _assert_refused(cli("noise", "fit", *pair, "-o", "m.pt"), "use MODEL.safetensors", workdir, before)
    _assert_refused(cli("noise", "fit", *pair, "-o", "m.safetensors", "--layers", "4"), "--layers '4'", workdir, before)
    _assert_refused(cli("noise", "fit", *pair, "-o", "m.safetensors", "--lr", "0"), "--lr 0", workdir, before)
    # a model file of the wrong kind, or with a newer schema, for noise sample
    save_noise_model("g.safetensors", GaussianNoiseModel())
    sc = Path("g.safetensors.yaml")
    original = sc.read_text()
    before = {p.name for p in workdir.iterdir()}
    sc.write_text(original.replace("kind: noise_model", "kind: model"))
    _assert_refused(cli("noise", "sample", "clean.mrc", "--model", "g.safetensors", "-o", "s.mrc"),
                    "expected a 'noise_model' file", workdir, before)
    sc.write_text(original.replace("schema_version: '1.0'", "schema_version: '9.0'"))
    _assert_refused(cli("noise", "sample", "clean.mrc", "--model", "g.safetensors", "-o", "s.mrc"), "newer",
                    workdir, before)
    sc.write_text(original)  # a constant clean stack: the error line names it (it named no file)
    write_image("flat.mrc", np.full((2, 8, 8), 0.4, np.float32), Metadata())
    before = {p.name for p in workdir.iterdir()}
    _assert_refused(cli("noise", "sample", "flat.mrc", "--model", "g.safetensors", "-o", "s.mrc"),
                    "error: flat.mrc: every pixel is 0.4; a constant stack holds no image information",
                    workdir, before)
