"""The radial flow noise model: exact inverse, correct change of variables, normalized density, zero mean."""

from __future__ import annotations

import math

import pytest
import torch

from stemtomo.errors import ParameterError
from stemtomo.noise import FlowNoiseModel, build_noise_model
from stemtomo.noise.flow import radial_constrain, radial_forward, radial_inverse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _grid() -> torch.Tensor:
    """Non-uniform quadrature grid, dense near 0 and reaching ±1490 (the radial flow's tails are wide)."""
    return torch.sinh(torch.linspace(-8.0, 8.0, 40_001, dtype=torch.float64))


def _flow(seed: int = 0, **kw) -> FlowNoiseModel:
    torch.manual_seed(seed)
    return FlowNoiseModel(**kw).double()


@pytest.mark.parametrize("zero_mean", [False, True])
def test_inverse_of_forward_is_identity(zero_mean: bool) -> None:
    # Sampling uses the closed-form inverse; it must undo the density direction to round-off.
    model = _flow(1, zero_mean=zero_mean)
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(5000, generator=g, dtype=torch.float64)
    noise = 0.3 * torch.randn(5000, generator=g, dtype=torch.float64)
    z, _ = model.transform(noise, clean)
    assert (model.inverse(z, clean) - noise).abs().max() <= 1e-5
    # and the other way round (base value → noise → base value), also in float32
    m32 = model.float()
    z32 = torch.randn(5000, generator=g)
    back, _ = m32.transform(m32.inverse(z32, clean.float()), clean.float())
    assert (back - z32).abs().max() <= 1e-4 * (1 + z32.abs().max())


def test_radial_inverse_near_the_non_invertible_limit() -> None:
    # b → -a makes f'(z0) → 0 (strong compression); the root choice must still be right on both sides of z0.
    z0, a = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    b = -a + 1e-6
    x = torch.linspace(-3, 3, 2001, dtype=torch.float64)
    y, _ = radial_forward(x, z0, a, b)
    assert (radial_inverse(y, z0, a, b) - x).abs().max() < 1e-5


def test_log_derivative_matches_autograd() -> None:
    # Per layer: log f'(x) at the layer INPUT equals log of autograd's dy/dx (exact change of variables).
    g = torch.Generator().manual_seed(2)
    x = (2 * torch.randn(1000, generator=g, dtype=torch.float64)).requires_grad_()
    z0 = torch.tensor(0.2, dtype=torch.float64)
    a, b = radial_constrain(torch.tensor(-0.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64))
    y, logd = radial_forward(x, z0, a, b)
    (dydx,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(logd, torch.log(dydx), rtol=1e-10, atol=1e-10)
    # Whole conditional flow: the transform is elementwise, so d z_i / d n_i is the gradient of z.sum().
    model = _flow(3)
    clean = torch.rand(1000, generator=g, dtype=torch.float64)
    noise = (0.2 * torch.randn(1000, generator=g, dtype=torch.float64)).requires_grad_()
    z, logdet = model.transform(noise, clean)
    (dzdn,) = torch.autograd.grad(z.sum(), noise)
    torch.testing.assert_close(logdet, torch.log(dzdn), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("zero_mean", [False, True])
def test_density_integrates_to_one(zero_mean: bool) -> None:
    # A normalized density for every conditioning value (trapezoid rule on a fine grid).
    model = _flow(4, zero_mean=zero_mean, scale=3.0)
    grid = _grid()
    with torch.no_grad():
        for c in (0.0, 0.25, 0.6, 1.0):
            p = model.log_prob(grid, torch.full_like(grid, c)).exp()
            assert torch.trapezoid(p, grid).item() == pytest.approx(1.0, abs=1e-4)


def test_compat_logdet_at_output_is_not_the_exact_density() -> None:
    # The original code's log f' at the layer output: same parameters, different (unnormalized) values.
    exact = _flow(5, scale=3.0)
    compat = FlowNoiseModel(scale=3.0, logdet_at_output=True).double()
    compat.load_state_dict(exact.state_dict())
    grid = _grid()
    c = torch.full_like(grid, 0.5)
    with torch.no_grad():
        diff = (exact.log_prob(grid, c) - compat.log_prob(grid, c)).abs().max().item()
        mass = torch.trapezoid(compat.log_prob(grid, c).exp(), grid).item()
    assert diff > 1e-3
    assert abs(mass - 1.0) > 1e-3


def test_zero_mean_flow_is_symmetric_with_zero_mean() -> None:
    # z0 = 0 in every layer makes each layer odd, so p(n | c) = p(-n | c) and E[n | c] = 0.
    model = _flow(6, zero_mean=True, scale=3.0)
    g = torch.Generator().manual_seed(7)
    n = torch.randn(2000, generator=g, dtype=torch.float64)
    c = torch.rand(2000, generator=g, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(n, c), model.log_prob(-n, c), rtol=0, atol=1e-9)
        grid = _grid()
        for cv in (0.1, 0.8):
            p = model.log_prob(grid, torch.full_like(grid, cv)).exp()
            assert abs(torch.trapezoid(grid * p, grid).item()) < 1e-6
        s = model.sample(torch.full((100_000,), 0.5, dtype=torch.float64), torch.Generator().manual_seed(1))
    assert abs(s.mean().item()) < 5 * s.std().item() / math.sqrt(s.numel())


def test_sample_shape_dtype_and_seed() -> None:
    model = FlowNoiseModel()
    clean = torch.rand(3, 8, 9)
    a = model.sample(clean, torch.Generator().manual_seed(3))
    b = model.sample(clean, torch.Generator().manual_seed(3))
    assert a.shape == clean.shape and a.dtype == clean.dtype and a.device == clean.device
    assert torch.equal(a, b)


def test_bad_flow_configuration() -> None:
    with pytest.raises(ParameterError, match="at least one layer"):
        FlowNoiseModel(n_uncond=0, n_cond=0)
    with pytest.raises(ParameterError, match="unknown"):
        build_noise_model("laplace")


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["flow", "gaussian", "poisson"])
def test_outputs_follow_the_input_device(device: str, kind: str) -> None:
    model = build_noise_model(kind).to(device)
    clean = torch.rand(4, 5, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    assert model.log_prob(0.1 * torch.randn_like(clean), clean).device == clean.device
    s = model.sample(clean, gen)
    assert s.device == clean.device and s.shape == clean.shape and s.dtype == clean.dtype
