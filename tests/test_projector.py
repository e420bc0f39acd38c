"""Physics of the forward projector and its adjoint (stemtomo.core.projector)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stemtomo.core.projector import back_project, forward_project
from stemtomo.errors import ParameterError

ANGLES = np.linspace(-60.0, 60.0, 9)


def _centroid_u(image_row: torch.Tensor) -> float:
    n_u = image_row.shape[-1]
    u = torch.arange(n_u, dtype=image_row.dtype) - (n_u - 1) / 2
    return float((image_row * u).sum() / image_row.sum())


@pytest.mark.parametrize("max_elems", [2**26, 700])
def test_adjointness_float64(max_elems: int) -> None:
    # <A x, y> = <x, A^T y> for random x, y: the back-projector is the adjoint of the same discretization,
    # also when the work is split into many small chunks (700 values force splitting single tilts).
    g = torch.Generator().manual_seed(0)
    x = torch.rand(14, 10, 18, dtype=torch.float64, generator=g)
    for width, thick in ((18, None), (23, 9.0)):
        ax = forward_project(x, ANGLES, thickness_px=thick, image_width=width, max_batch_elems=max_elems)
        y = torch.rand(ax.shape, dtype=torch.float64, generator=g)
        aty = back_project(y, ANGLES, x.shape, thickness_px=thick, max_batch_elems=max_elems)
        lhs, rhs = float((ax * y).sum()), float((x * aty).sum())
        assert lhs == pytest.approx(rhs, rel=1e-10)


def test_chunking_does_not_change_result() -> None:
    x = torch.rand(12, 8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    full = forward_project(x, ANGLES)
    tiny = forward_project(x, ANGLES, max_batch_elems=300)
    assert torch.allclose(full, tiny, rtol=0, atol=1e-12)


@pytest.mark.parametrize("theta", [30.0, -30.0, 0.0, 55.0])
def test_point_phantom_lands_at_u(theta: float) -> None:
    # A voxel at (x0, y0, z0) with z0 > 0 lands at u = x0 cosθ + z0 sinθ, v = y0: at +30° it moves to +x
    # (right of the centre), at -30° to -x (DESIGN.md "Conventions", CONVENTIONS.md §6 oracle (a)).
    nz, ny, nx = 32, 16, 32
    x0, y0, z0 = 3.0, 2.0, 8.0
    vol = torch.zeros(nz, ny, nx, dtype=torch.float64)
    vol[int(z0 + (nz - 1) / 2 + 0.5), int(y0 + (ny - 1) / 2 + 0.5), int(x0 + (nx - 1) / 2 + 0.5)] = 1.0
    # exact centred coordinates of that voxel (centres are at half-integers for even sizes)
    xc = int(x0 + (nx - 1) / 2 + 0.5) - (nx - 1) / 2
    yc = int(y0 + (ny - 1) / 2 + 0.5) - (ny - 1) / 2
    zc = int(z0 + (nz - 1) / 2 + 0.5) - (nz - 1) / 2
    proj = forward_project(vol, [theta], samples_per_voxel=8)[0]
    rows = proj.sum(dim=1)
    assert int(rows.argmax()) == int(yc + (ny - 1) / 2)  # v = y0: no blur along the tilt axis
    assert float(rows.sum() - rows.max()) == pytest.approx(0.0, abs=1e-12)
    th = math.radians(theta)
    expect = xc * math.cos(th) + zc * math.sin(th)
    got = _centroid_u(proj[int(yc + (ny - 1) / 2)])
    assert got == pytest.approx(expect, abs=0.05)
    if theta == 30.0:
        assert got > xc  # material above the centre moves toward +x at positive tilt
    # mass: the bilinear voxel hat has area 1, and Σ_u ∫ds ≈ ∫∫du ds (a rotation); unit-spaced sampling of
    # the projected (piecewise quadratic) profile is off by a few % at oblique tilts, exact at 0°.
    assert float(proj.sum()) == pytest.approx(1.0, rel=0.05 if theta else 1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_slab_chord_length(dtype: torch.dtype) -> None:
    # A volume of ones in a slab of thickness t projects to P = t / cosθ (voxel units) away from the edges.
    nz, ny, nx, t = 16, 6, 48, 10.0
    vol = torch.ones(nz, ny, nx, dtype=dtype)
    angles = [-50.0, -20.0, 0.0, 35.0, 50.0]
    proj = forward_project(vol, angles, thickness_px=t)
    assert proj.dtype == dtype
    centre = proj[:, :, nx // 2 - 4 : nx // 2 + 4]
    expect = torch.tensor([t / math.cos(math.radians(a)) for a in angles], dtype=dtype)[:, None, None]
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(centre, expect.expand_as(centre), rtol=tol, atol=0)


def test_slab_of_voxel_planes_gives_exact_chord() -> None:
    # ones on the t central z-planes (the slab's voxel cells), zeros outside: P = t / cosθ exactly,
    # the case of a simulated phantom with its uniform background inside the slab.
    nz, t = 20, 8
    vol = torch.zeros(nz, 3, 40, dtype=torch.float64)
    vol[(nz - t) // 2 : (nz + t) // 2] = 1.0
    proj = forward_project(vol, [0.0, 45.0], thickness_px=t)
    assert float(proj[0, 1, 20]) == pytest.approx(t, rel=1e-12)
    assert float(proj[1, 1, 20]) == pytest.approx(t * math.sqrt(2.0), rel=1e-12)


def test_default_thickness_is_whole_volume() -> None:
    vol = torch.ones(12, 4, 40, dtype=torch.float64)
    proj = forward_project(vol, [0.0, 40.0])
    assert float(proj[0, 0, 20]) == pytest.approx(12.0, rel=1e-12)
    assert float(proj[1, 0, 20]) == pytest.approx(12.0 / math.cos(math.radians(40)), rel=1e-12)


def test_plus_minus_theta_symmetry() -> None:
    # Substituting s -> -s in the ray integral: P[ρ(x, y, -z)](θ, u) = P[ρ](-θ, u), and
    # P[ρ(-x, y, z)](θ, u) = P[ρ](-θ, -u). The midpoint samples map onto each other, so it holds exactly.
    x = torch.rand(14, 6, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for th in (12.0, 37.5, 60.0):
        a = forward_project(x.flip(0), [th], thickness_px=12)
        b = forward_project(x, [-th], thickness_px=12)
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
        c = forward_project(x.flip(2), [th], thickness_px=12)
        assert torch.allclose(c, b.flip(2), rtol=0, atol=1e-12)


def test_gradient_flows_and_matches_adjoint() -> None:
    x = torch.rand(10, 5, 12, dtype=torch.float64, requires_grad=True)
    y = torch.rand(len(ANGLES), 5, 12, dtype=torch.float64)
    (forward_project(x, ANGLES) * y).sum().backward()
    assert x.grad is not None
    assert torch.allclose(x.grad, back_project(y, ANGLES, x.shape), atol=1e-12)


def test_float32_matches_float64() -> None:
    x = torch.rand(12, 6, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    p64 = forward_project(x, ANGLES)
    p32 = forward_project(x.float(), ANGLES)
    assert p32.dtype == torch.float32
    assert torch.allclose(p32.double(), p64, rtol=1e-5, atol=1e-4)


def test_thickness_clips_density_outside_slab() -> None:
    # density placed outside the slab must not contribute
    vol = torch.zeros(20, 4, 20, dtype=torch.float64)
    vol[:3] = 1.0
    vol[-3:] = 1.0
    assert float(forward_project(vol, [0.0, 30.0], thickness_px=10).abs().max()) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"thickness_px": 40.0}, "larger than the volume"),
        ({"thickness_px": -1.0}, "positive"),
        ({"thickness_px": float("nan")}, "positive"),
        ({"samples_per_voxel": 0.0}, "samples_per_voxel"),
        ({"image_width": 0}, "image_width"),
    ],
)
def test_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        forward_project(torch.zeros(8, 4, 8), [0.0], **kwargs)


def test_bad_angles_and_shapes() -> None:
    with pytest.raises(ParameterError, match="inside"):
        forward_project(torch.zeros(8, 4, 8), [95.0])
    with pytest.raises(ParameterError, match="none"):
        forward_project(torch.zeros(8, 4, 8), [])
    with pytest.raises(ParameterError, match="3D"):
        forward_project(torch.zeros(8, 8), [0.0])
    with pytest.raises(ParameterError, match="do not match"):
        back_project(torch.zeros(2, 4, 8), [0.0], (8, 4, 8))
