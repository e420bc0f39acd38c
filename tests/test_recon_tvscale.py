"""The TV rescale under the NLL (losses.nll_tv_scale): on the MSE's scale for signal-dependent noise."""

from __future__ import annotations

import torch

from stemtomo.recon.implicit.losses import nll_tv_scale


def test_homoscedastic_noise_gives_one_over_two_variance() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(40000, generator=g)
    target = pred + 0.1 * torch.randn(40000, generator=g)
    # every bin has variance 0.01, so the mean precision is 1 / (2 · 0.01) = 50 (±2% sampling error)
    assert abs(nll_tv_scale(pred, target) - 50.0) < 2.0


def test_signal_dependent_noise_uses_the_harmonic_mean() -> None:
    g = torch.Generator().manual_seed(1)
    pred = torch.cat([torch.full((20000,), 0.1), torch.full((20000,), 0.9)])
    std = torch.where(pred < 0.5, torch.tensor(0.02), torch.tensor(0.2))
    target = pred + std * torch.randn(40000, generator=g)
    expected = 0.5 * (1 / (2 * 0.02**2)) + 0.5 * (1 / (2 * 0.2**2))  # 625 + 6.25
    homoscedastic = 1 / (2 * float((target - pred).var()))  # ≈ 24.8: 25× too small
    got = nll_tv_scale(pred, target)
    assert abs(got - expected) / expected < 0.05
    assert got > 20 * homoscedastic


def test_few_rays_fall_back_to_one_bin() -> None:
    pred = torch.linspace(0, 1, 100)
    target = pred + torch.tensor([0.1, -0.1]).repeat(50)
    assert abs(nll_tv_scale(pred, target) - 1 / (2 * 0.01)) < 1e-3
