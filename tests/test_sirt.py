"""SIRT: monotone weighted residual, positivity, better than WBP on limited-angle data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemtomo.core.projector import forward_project
from stemtomo.errors import ParameterError
from stemtomo.recon.sirt import sirt
from stemtomo.recon.wbp import WBPConfig, reconstruct, wbp


@pytest.fixture(scope="module")
def limited_angle() -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Three discs in the xz-plane (4 y-rows), ±60° every 6°: the paper's kind of missing wedge."""
    nz, ny, nx = 32, 4, 32
    z, _, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in (nz, ny, nx)), indexing="ij")
    vol = np.zeros((nz, ny, nx))
    for cz, cx, r, v in [(0, 0, 6, 0.5), (4, -8, 3, 1.0), (-5, 7, 4, 0.8)]:
        vol[(z - cz) ** 2 + (x - cx) ** 2 <= r * r] = v
    truth = torch.tensor(vol)
    angles = np.arange(-60.0, 61.0, 6.0)
    return truth, angles, forward_project(truth, angles)


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.sqrt(((a - b) ** 2).mean()))


def test_residual_monotone_and_beats_wbp(limited_angle) -> None:
    truth, angles, b = limited_angle
    vol, norms = sirt(b, angles, 32, iterations=15, positivity=True)
    assert len(norms) == 16
    # Preconditioned gradient descent on ½‖b − Ax‖²_R with λ = 1 (positivity = projection): monotone.
    assert np.all(np.diff(norms) <= 1e-9 * norms[0])
    assert norms[-1] < 0.15 * norms[0]
    assert float(vol.min()) >= 0.0
    w = wbp(b, angles, 32)
    # measured: SIRT 0.10, WBP 0.16 RMSE (the missing wedge hurts WBP more)
    assert rmse(vol, truth) < 0.8 * rmse(w, truth)


def test_unconstrained_and_relaxation(limited_angle) -> None:
    truth, angles, b = limited_angle
    _, n1 = sirt(b, angles, 32, iterations=4)
    _, n15 = sirt(b, angles, 32, iterations=4, relaxation=1.5)
    assert np.all(np.diff(n1) < 0) and np.all(np.diff(n15) < 0)
    assert n15[-1] < n1[-1]  # over-relaxation converges faster on this problem


def test_reconstruct_dispatch_and_slab(limited_angle) -> None:
    truth, angles, b = limited_angle
    cfg = WBPConfig(method="sirt", thickness_px=20.0, nz=32)
    vol, info = reconstruct(b, angles, cfg)
    assert info["nz"] == 32 and len(info["residual_norms"]) == cfg.sirt.iterations + 1
    assert float(vol[:5].abs().max()) == 0.0 and float(vol[-5:].abs().max()) == 0.0  # outside |z| ≤ 10


def test_sirt_errors(limited_angle) -> None:
    _, angles, b = limited_angle
    with pytest.raises(ParameterError, match="--iterations 0"):
        sirt(b, angles, 32, iterations=0)
    with pytest.raises(ParameterError, match="--relaxation 2"):
        sirt(b, angles, 32, relaxation=2.0)
    with pytest.raises(ParameterError, match="SIRT needs ≥ 2 matching tilts"):
        sirt(b[:1], angles[:1], 32)
    with pytest.raises(ParameterError, match="thickness"):
        sirt(b, angles, 32, thickness_px=40.0)
