"""Gaussian and Poisson baselines recover known parameters; model files round-trip and never unpickle code."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stemtomo.errors import ModelFileError
from stemtomo.io import Metadata, write_image
from stemtomo.noise import (
    FlowNoiseModel,
    GaussianNoiseModel,
    PoissonNoiseModel,
    build_noise_model,
    fit_noise_model,
    load_noise_model,
    save_noise_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _v(p: torch.Tensor) -> float:
    return float(p.detach())


def _fit(model, clean: np.ndarray, noisy: np.ndarray):
    """Fit with the last image held out."""
    held = np.zeros(clean.shape, bool)
    held[-1] = True
    t = [torch.as_tensor(a) for a in (clean, noisy, held)]
    return fit_noise_model(model, t[0].float(), t[1].float(), t[2])


def test_gaussian_mle_recovers_mean_and_variance(rng: np.random.Generator) -> None:
    clean = rng.uniform(0, 1, (6, 64, 64)).astype(np.float32)
    noisy = clean + rng.normal(0.01, 0.05, clean.shape).astype(np.float32)
    model = GaussianNoiseModel()
    res = _fit(model, clean, noisy)
    # ~20k training pixels: standard errors 0.05/√n ≈ 4e-4 (mean) and ~1 % (variance)
    assert _v(model.mean) == pytest.approx(0.01, abs=2e-3)
    assert math.exp(_v(model.log_var)) == pytest.approx(0.05**2, rel=0.04)
    # held-out NLL ≈ the Gaussian's entropy ½ ln(2πe σ²)
    assert res.heldout_nll == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 0.05**2), abs=0.03)


def test_heteroscedastic_gaussian_recovers_affine_variance(rng: np.random.Generator) -> None:
    clean = rng.uniform(0, 1, (6, 64, 64)).astype(np.float32)
    sd = np.sqrt(1e-3 + 4e-3 * clean)
    noisy = (clean + sd * rng.normal(size=clean.shape)).astype(np.float32)
    model = GaussianNoiseModel(heteroscedastic=True)
    _fit(model, clean, noisy)
    assert _v(model.var_a) == pytest.approx(1e-3, rel=0.1)
    assert _v(model.var_b) == pytest.approx(4e-3, rel=0.05)
    assert abs(_v(model.mean)) < 2e-3


def test_poisson_mle_recovers_dose_gain_offset(rng: np.random.Generator) -> None:
    # noisy = gain·Poisson(k·clean)/k + offset with k = 50 electrons at intensity 1
    k, gain, offset = 50.0, 0.8, 0.05
    clean = rng.uniform(0.2, 1.0, (6, 64, 64)).astype(np.float32)
    noisy = (gain * rng.poisson(k * clean) / k + offset).astype(np.float32)
    model = PoissonNoiseModel()
    _fit(model, clean, noisy)
    assert _v(model.gain) == pytest.approx(gain, rel=0.02)
    assert _v(model.offset) == pytest.approx(offset, abs=0.01)
    # the λ0 = 0.25-count variance floor of the Gaussian approximation biases k slightly low (≈ 0.25/(k·E[c]) ≈ 1 %)
    assert model.dose == pytest.approx(k, rel=0.06)


def test_poisson_samples_are_exact_scaled_counts() -> None:
    model = PoissonNoiseModel()
    with torch.no_grad():
        model.log_k.fill_(math.log(4.0))
        model.gain.fill_(2.0)
        model.offset.fill_(0.1)
    clean = torch.full((100_000,), 0.5)
    noisy = clean + model.sample(clean, torch.Generator().manual_seed(0))
    counts = (noisy - 0.1) * 4.0 / 2.0
    assert torch.allclose(counts, counts.round(), atol=1e-4)  # integer counts
    assert counts.mean().item() == pytest.approx(2.0, rel=0.02)  # Poisson(k·c = 2)
    assert counts.var().item() == pytest.approx(2.0, rel=0.03)


@pytest.mark.parametrize("kind,config", [("flow", {"zero_mean": True}), ("flow", {}), ("gaussian", {"heteroscedastic": True}),
                                         ("poisson", {})])
def test_save_load_round_trip_gives_identical_log_prob(workdir: Path, kind: str, config: dict) -> None:
    torch.manual_seed(0)
    model = build_noise_model(kind, **config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = save_noise_model(workdir / "m.safetensors", model, extra={"note": "x"})
    loaded = load_noise_model(path)
    assert type(loaded) is type(model) and loaded.config() == model.config()
    noise, clean = 0.1 * torch.randn(500), torch.rand(500)
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(noise, clean), model.log_prob(noise, clean))
    with pytest.raises(Exception, match="output exists"):
        save_noise_model(path, model)


class _Payload:
    def __reduce__(self):
        return (Path.write_text, (Path("PWNED"), "code ran"))


def _noise_sidecar(path: Path, **changes) -> None:
    meta = {"schema_version": "1.0", "kind": "noise_model", "model_kind": "flow", "config": {}, "noise_schema": 1}
    meta.update(changes)
    Path(str(path) + ".yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")


@pytest.mark.parametrize("name", ["evil.pt", "evil.safetensors"])
def test_pickled_payload_is_refused_and_never_runs(workdir: Path, name: str) -> None:
    path = workdir / name
    with open(path, "wb") as fh:
        pickle.dump({"uncond": _Payload()}, fh)
    _noise_sidecar(path)
    with pytest.raises(ModelFileError, match="refused to load|not a valid safetensors") as err:
        load_noise_model(path)
    assert "weights_only" not in str(err.value)  # torch's advice to retry unsafely is not passed on
    assert not (workdir / "PWNED").exists()


def test_pickled_payload_through_the_cli_is_one_line(workdir: Path, cli) -> None:
    with open("evil.pt", "wb") as fh:
        pickle.dump({"uncond": _Payload()}, fh, protocol=4)  # torch also warns about the protocol
    _noise_sidecar(workdir / "evil.pt")
    write_image("clean.mrc", np.random.default_rng(0).random((2, 8, 8), dtype=np.float32), Metadata(kind="tilt_series"))
    res = cli("noise", "sample", "clean.mrc", "--model", "evil.pt", "-o", "noisy.mrc")
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        "error: evil.pt: refused to load: it is not a plain tensor file (it holds pickled objects or is damaged); "
        "model files must hold tensors only: use the .safetensors file stemtomo wrote"
    ]
    assert not (workdir / "PWNED").exists() and not (workdir / "noisy.mrc").exists()


def test_model_file_of_wrong_kind_or_newer_schema_is_refused(workdir: Path) -> None:
    path = save_noise_model(workdir / "m.safetensors", FlowNoiseModel())
    sc = Path(str(path) + ".yaml")
    original = sc.read_text(encoding="utf-8")
    sc.write_text(original.replace("kind: noise_model", "kind: model"), encoding="utf-8")
    with pytest.raises(ModelFileError, match="expected a 'noise_model' file"):
        load_noise_model(path)
    sc.write_text(original.replace("schema_version: '1.0'", "schema_version: '2.0'"), encoding="utf-8")
    with pytest.raises(ModelFileError, match="newer"):
        load_noise_model(path)
    sc.write_text(original.replace("noise_schema: 1", "noise_schema: 7"), encoding="utf-8")
    with pytest.raises(ModelFileError, match="noise model schema 7 is newer"):
        load_noise_model(path)
    sc.write_text(original.replace("model_kind: flow", "model_kind: laplace"), encoding="utf-8")
    with pytest.raises(ModelFileError, match="unknown noise model_kind 'laplace'"):
        load_noise_model(path)
    sc.write_text(original.replace("hidden: 16", "hidden: 8"), encoding="utf-8")
    with pytest.raises(ModelFileError, match="tensors do not match"):
        load_noise_model(path)
