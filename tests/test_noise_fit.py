"""Divergence metrics, pair preparation, and the flow beating both baselines on non-Gaussian STEM noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stemtomo.errors import InputError, ParameterError
from stemtomo.noise import FitConfig, calibrate, prepare_pairs
from stemtomo.noise.metrics import common_edges, compare, divergences, histogram
from stemtomo.noise.pairs import heldout_mask, register_pair
from stemtomo.noise.synthetic import StemNoiseProcess, smooth_images, stem_noise

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_divergence_identities() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4])
    same = divergences(p, p)
    assert same["jsd"] == pytest.approx(0.0, abs=1e-15) and same["bc"] == pytest.approx(1.0)
    assert same["d_bc"] == pytest.approx(0.0, abs=1e-12)
    disjoint = divergences(np.array([0.5, 0.5, 0, 0]), np.array([0, 0, 0.5, 0.5]))
    assert disjoint["jsd"] == pytest.approx(math.log(2))  # the maximum, in nats
    assert disjoint["bc"] == 0.0 and disjoint["d_bc"] == math.inf
    # two bins, p = (1, 0), q = (½, ½): m = (¾, ¼); JSD = ½ ln(4/3) + ½(½ ln(2/3) + ½ ln 2); BC = √½
    d = divergences(np.array([1.0, 0.0]), np.array([0.5, 0.5]))
    assert d["jsd"] == pytest.approx(0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2))
    assert d["bc"] == pytest.approx(math.sqrt(0.5)) and d["d_bc"] == pytest.approx(0.5 * math.log(2))


def test_histogram_keeps_out_of_range_mass_and_bands_partition(rng: np.random.Generator) -> None:
    a, b = rng.normal(size=10_000), rng.normal(0.5, 2.0, size=10_000)
    edges = common_edges(a, b, bins=32)
    assert histogram(b, edges).sum() == pytest.approx(1.0)
    clean = rng.uniform(size=10_000)
    out = compare(a, b, clean, edges=edges, n_bands=4)
    assert sum(band["n"] for band in out["bands"]) == 10_000
    assert out["log_base"] == "e" and out["scaling"] == 1
    assert out["overall"]["model_var"] == pytest.approx(4.0, rel=0.05)


def test_unpaired_constant_and_nan_stacks_are_refused(rng: np.random.Generator) -> None:
    clean = rng.uniform(size=(3, 16, 16)).astype(np.float32)
    with pytest.raises(InputError, match=r"shape \(3, 16, 16\) but NOISY has \(2, 16, 16\)"):
        prepare_pairs(clean, clean[:2])
    const = clean.copy()
    const[1] = 0.5
    with pytest.raises(InputError, match="image 1 is constant"):
        prepare_pairs(clean, const)
    nan = clean.copy()
    nan[0, 3, 3] = np.nan
    with pytest.raises(InputError, match="1 NaN/Inf"):
        prepare_pairs(nan, clean)
    with pytest.raises(ParameterError, match="--heldout 1.5"):
        prepare_pairs(clean, clean, heldout_fraction=1.5)


def test_heldout_split_whole_images_or_bottom_rows() -> None:
    mask, rec = heldout_mask((10, 8, 8), 0.2, seed=0)
    assert rec["split"] == "images" and len(rec["heldout_images"]) == 2 and mask.sum() == 2 * 64
    mask, rec = heldout_mask((2, 20, 8), 0.1, seed=0)
    assert rec["split"] == "rows" and mask[:, 18:].all() and not mask[:, :18].any()


def test_registration_recovers_a_subpixel_shift(rng: np.random.Generator) -> None:
    from scipy.ndimage import gaussian_filter
    from scipy.ndimage import shift as nd_shift

    texture = gaussian_filter(rng.uniform(size=(64, 64)), 1.5)  # STEM images have fine structure to lock on
    clean = ((texture - texture.min()) / np.ptp(texture))[None].astype(np.float32)
    noisy = nd_shift(clean[0], (1.5, -2.25), order=3, mode="nearest")[None] + rng.normal(0, 0.05, (1, 64, 64))
    out_c, out_n, shifts = register_pair(clean, noisy.astype(np.float32))
    assert shifts[0][0] == pytest.approx(1.5, abs=0.15) and shifts[0][1] == pytest.approx(-2.25, abs=0.15)
    assert out_c.shape == out_n.shape == (1, 58, 58)  # border of ceil(2.25) = 3 px cropped
    assert np.std(out_n - out_c) < 0.07  # aligned: only the noise (σ = 0.05) and a little interpolation error


def test_fit_config_is_validated() -> None:
    with pytest.raises(ParameterError, match="--optimizer 'rmsprop'"):
        FitConfig(optimizer="rmsprop").check()
    with pytest.raises(ParameterError, match="--lr -1"):
        FitConfig(lr=-1).check()


def test_flow_beats_gaussian_and_poisson_on_non_gaussian_stem_noise(rng: np.random.Generator) -> None:
    # Low dose (2 e⁻/px at intensity 1) with gamma pulse heights (shape ½) + read noise: signal dependent,
    # skewed, with a near-atom at zero counts; neither a Gaussian nor a scaled Poisson has this shape.
    torch.manual_seed(0)
    clean = smooth_images(10, 48, 48, rng)
    noisy = stem_noise(clean, StemNoiseProcess(dose=2.0, read_std=0.02, scan_corr=0.0, pulse_shape=0.5), rng)
    pairs = prepare_pairs(clean, noisy, joint_normalization=True, heldout_fraction=0.3, seed=0)
    cal = calibrate(pairs, ["flow", "gaussian", "poisson"], fit=FitConfig(iterations=300, eval_every=50), bins=48)
    jsd = {k: m["overall"]["jsd"] for k, m in cal.metrics.items()}
    nll = {k: r.heldout_nll for k, r in cal.results.items()}
    # measured: JSD flow ≈ 0.02, Poisson ≈ 0.06, Gaussian ≈ 0.12 (nats, 48 bins, 6912 held-out pixels)
    assert jsd["flow"] < 0.6 * jsd["poisson"] and jsd["flow"] < 0.6 * jsd["gaussian"]
    assert nll["flow"] < nll["poisson"] - 0.3 and nll["flow"] < nll["gaussian"] - 0.3
    assert cal.metrics["flow"]["overall"]["bc"] > cal.metrics["poisson"]["overall"]["bc"]


def test_non_finite_loss_stops_with_the_best_state(caplog) -> None:
    # Residuals of ±1e30 overflow the density: training must stop and keep a finite initial state.
    from stemtomo.noise import FlowNoiseModel, fit_noise_model

    clean = torch.rand(2, 32, 32)
    noisy = clean + 1e30 * torch.randn(2, 32, 32)
    held = torch.zeros(2, 32, 32, dtype=torch.bool)
    held[:, 28:] = True
    model = FlowNoiseModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = fit_noise_model(model, clean, noisy, held, FitConfig(iterations=50, eval_every=10))
    assert res.stopped_early and res.steps == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "non-finite training loss" in caplog.text


def test_same_seed_same_fit(rng: np.random.Generator) -> None:
    clean = smooth_images(5, 32, 32, rng)
    noisy = stem_noise(clean, StemNoiseProcess(dose=10.0), rng)
    pairs = prepare_pairs(clean, noisy, seed=3)
    runs = [calibrate(pairs, ["flow"], fit=FitConfig(iterations=20, eval_every=10, seed=3)) for _ in range(2)]
    a, b = (r.models["flow"].state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].results["flow"].heldout_nll == runs[1].results["flow"].heldout_nll


def test_cpu_thread_setting_is_restored_after_fitting(rng: np.random.Generator) -> None:
    from stemtomo.noise import FlowNoiseModel, fit_noise_model

    clean = torch.rand(2, 16, 16)
    held = torch.zeros(2, 16, 16, dtype=torch.bool)
    held[:, 12:] = True
    torch.set_num_threads(2)
    fit_noise_model(FlowNoiseModel(), clean, clean + 0.05 * torch.randn(2, 16, 16), held,
                    FitConfig(iterations=3, eval_every=1, cpu_threads=1))
    assert torch.get_num_threads() == 2


def test_stacks_already_normalized_by_their_sidecars_are_used_as_is(rng: np.random.Generator) -> None:
    clean = smooth_images(2, 16, 16, rng)
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    rec = {"method": "robust_minmax", "range01": True}
    pairs = prepare_pairs(clean, noisy, records=(rec, rec))
    assert pairs.record["normalization"]["mode"] == "sidecar"
    assert np.array_equal(pairs.clean, clean) and np.array_equal(pairs.noisy, noisy)
    # one stack without a record: both are normalized by the robust min–max (independent by default)
    pairs = prepare_pairs(clean, noisy, records=(rec, None))
    assert pairs.record["normalization"]["mode"] == "independent"
