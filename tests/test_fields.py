"""Fields, samplers and the renderer: architecture, box masking, trilinear exactness, sampling
distributions, and the rendered line integrals against analytic values and the forward projector."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stemtomo.core import samplers
from stemtomo.core.fields import FieldConfig, GridField, MLPField, VoxelField, build_field, sample_volume
from stemtomo.core.projector import forward_project
from stemtomo.core.render import RenderConfig, line_integrals, render
from stemtomo.errors import ParameterError

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_paper_mlp_architecture() -> None:
    f = MLPField((8, 16, 16), 8.0, FieldConfig(kind="mlp"))
    # 9 hidden layers of 256, input 6L = 60 (raw xyz dropped), skip concat after the 5th
    assert len(f.layers) == 9 and all(layer.out_features == 256 for layer in f.layers)
    assert f.layers[0].in_features == 60 and f.layers[5].in_features == 256 + 60
    assert f.encode(torch.zeros(1, 3)).shape == (1, 60)
    # encoding of p=0 is sin=0, cos=1 (raw coordinates not included)
    assert torch.equal(f.encode(torch.zeros(1, 3)), torch.cat((torch.zeros(1, 30), torch.ones(1, 30)), dim=1))
    rho = f(torch.rand(100, 3) * 0.4 - 0.2)
    assert rho.shape == (100,) and bool(((rho > 0) & (rho < 1)).all())


def test_fields_are_zero_outside_their_box() -> None:
    for kind in ("mlp", "voxel", "grid"):
        f = build_field(FieldConfig(kind=kind, mlp_width=16, mlp_depth=2), (8, 16, 16), 8.0)
        # box half extents: x, y = 8/8 = 1, z = 4/8 = 0.5
        out = f(torch.tensor([[0.0, 0.0, 0.6], [1.1, 0.0, 0.0], [0.0, -1.05, 0.0]]))
        assert torch.equal(out, torch.zeros(3)), kind
        assert float(f(torch.tensor([[0.0, 0.0, 0.4]])).detach()) > 0


def test_voxel_field_is_exact_at_voxel_centres_and_sample_volume_returns_the_grid(rng: np.random.Generator) -> None:
    f = VoxelField((6, 10, 12), 6.0, FieldConfig(kind="voxel"))
    values = torch.from_numpy(rng.random((6, 10, 12)).astype(np.float32))
    with torch.no_grad():
        f.grid.copy_(values[None])
    vol = sample_volume(f, (6, 10, 12), chunk=37)
    assert torch.allclose(vol, values, atol=1e-5)
    # half-way between two x-neighbours: their mean (trilinear)
    pt = torch.tensor([[(3 - 5.5 + 0.5) / 6.0, (4 - 4.5) / 6.0, (2 - 2.5) / 6.0]])
    assert float(f(pt).detach()) == pytest.approx(float(values[2, 4, 3:5].mean()), abs=1e-5)


def test_voxel_projection_keeps_densities_in_unit_interval() -> None:
    f = VoxelField((4, 4, 4), 2.0, FieldConfig(kind="voxel"))
    with torch.no_grad():
        f.grid.fill_(1.7)
        f.grid[0, 0, 0, 0] = -0.3
    f.project_()
    assert float(f.grid.detach().max()) == 1.0 and float(f.grid.detach().min()) == 0.0


def test_grid_field_tv_and_gradients_reach_every_level() -> None:
    f = GridField((8, 16, 16), 8.0, FieldConfig(kind="grid", grid_levels=3, grid_base_res=4))
    shapes = [tuple(g.shape[1:]) for g in f.grids]
    assert shapes[0] == (2, 4, 4) and shapes[-1] == (8, 16, 16)  # coarse to the volume's size
    loss = f(torch.rand(64, 3) * 0.8 - 0.4).sum() + f.tv()
    loss.backward()
    assert all(g.grad is not None and float(g.grad.abs().sum()) > 0 for g in f.grids)


def test_grid_coarse_to_fine_fades_levels_in() -> None:
    f = GridField((8, 16, 16), 8.0, FieldConfig(kind="grid", grid_levels=4, grid_base_res=4), coarse_to_fine=True)
    f.set_progress(0.0)
    assert f.level_weights.tolist() == [1.0, 0.0, 0.0, 0.0]
    f.set_progress(0.5)
    assert f.level_weights.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_build_field_rejects_unknown_kind() -> None:
    with pytest.raises(ParameterError, match="--field 'nerf'"):
        build_field(FieldConfig(kind="nerf"), (4, 4, 4), 2.0)


def test_stratified_samples_lie_in_their_bins() -> None:
    near, far = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 8.0])
    s = samplers.stratified(near, far, 8, generator=torch.Generator().manual_seed(0))
    bins = (s - near[:, None]) / (far - near)[:, None] * 8
    assert torch.equal(bins.floor(), torch.arange(8.0).expand(2, -1))
    d = samplers.interval_lengths(s, near, far)
    assert torch.allclose(d.sum(-1), far - near)


def test_importance_sampling_follows_the_weights() -> None:
    near, far = torch.zeros(1), torch.full((1,), 10.0)
    coarse = samplers.stratified(near, far, 10, jitter=False)  # centres 0.5 … 9.5, intervals [k, k+1]
    w = torch.zeros(1, 10)
    w[0, 3] = 1.0  # all mass on [3, 4]
    s = samplers.importance(coarse, w, near, far, 200, generator=torch.Generator().manual_seed(1))
    assert s.shape == (1, 210) and bool((s.diff(dim=-1) >= 0).all())
    fine = s[0][~torch.isin(s[0], coarse[0])]
    inside = ((fine >= 3) & (fine <= 4)).float().mean()
    assert float(inside) > 0.99
    # within the bin the CDF is inverted linearly: the draws are spread uniformly over [3, 4]
    assert abs(float(fine.mean()) - 3.5) < 0.06


def test_render_constant_slab_is_beer_lambert() -> None:
    # constant density c in a slab of T voxels: P = c·T/cosθ voxels = c·T/(cosθ·L) normalized units
    f = VoxelField((10, 64, 64), 32.0, FieldConfig(kind="voxel", voxel_init=0.4))
    th = torch.tensor([0.0, math.radians(30), math.radians(-45)])
    u, v = torch.tensor([0.0, 3.0, -2.0]), torch.tensor([0.0, 1.0, 5.0])
    with torch.no_grad():
        p = line_integrals(f, u, v, th, 4.0, RenderConfig(n_samples=16))  # slab |z| ≤ 4 (inside the 10-voxel box)
        i = render(f, u, v, th, 4.0, RenderConfig(n_samples=16))
        df = render(f, u, v, th, 4.0, RenderConfig(n_samples=16, contrast="df"))
    expected = 0.4 * 8.0 / torch.cos(th) / 32.0
    assert torch.allclose(p, expected, rtol=1e-5)
    assert torch.allclose(i, torch.exp(-7 * expected), rtol=1e-5)
    assert torch.allclose(df, 1 - torch.exp(-7 * expected), rtol=1e-5)


def test_render_matches_the_forward_projector(rng: np.random.Generator) -> None:
    # smooth random volume: rendered rays ≈ core.projector line integrals / length unit
    vol = torch.from_numpy(rng.random((8, 16, 16)).astype(np.float32))
    vol = torch.nn.functional.avg_pool3d(vol[None, None], 3, 1, 1)[0, 0]
    f = VoxelField((8, 16, 16), 8.0, FieldConfig(kind="voxel"))
    with torch.no_grad():
        f.grid.copy_(vol[None])
    angles = [-40.0, 0.0, 25.0]
    ref = forward_project(vol, angles, thickness_px=6.0) / 8.0
    iy, ix = torch.meshgrid(torch.arange(3, 13), torch.arange(4, 12), indexing="ij")
    for k, a in enumerate(angles):
        u, v = ix.reshape(-1) - 7.5, iy.reshape(-1) - 7.5
        th = torch.full_like(u, math.radians(a))
        with torch.no_grad():
            p = line_integrals(f, u.float(), v.float(), th, 3.0, RenderConfig(n_samples=64), jitter=False)
        assert torch.allclose(p, ref[k, 3:13, 4:12].reshape(-1), atol=0.02 * float(ref.max())), a


def test_hierarchical_rendering_is_unbiased_for_constant_density() -> None:
    f = VoxelField((10, 32, 32), 16.0, FieldConfig(kind="voxel", voxel_init=0.25))
    th = torch.tensor([0.3, -0.5])
    with torch.no_grad():
        p = line_integrals(f, torch.tensor([1.0, -2.0]), torch.zeros(2), th, 4.0,
                           RenderConfig(n_samples=8, n_importance=16), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(p, 0.25 * 8.0 / torch.cos(th) / 16.0, rtol=1e-5)
