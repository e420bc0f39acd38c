"""Phantoms of stemtomo.simulate: value ranges, slab, background, determinism, shapes, rotations."""

from __future__ import annotations

import numpy as np
import pytest

from stemtomo.errors import InputError, ParameterError
from stemtomo.simulate.phantoms import (
    CellPhantomConfig,
    cell_phantom,
    finish_slab,
    paint_shell,
    slab_coverage,
)
from stemtomo.simulate.simple_phantoms import nanoparticle_phantom, shepp_logan_phantom
from stemtomo.simulate.virion import prepare_particle_map, procedural_virion, random_rotation, rotate_map

N, T = 32, 16


def _slab_mask(n: int, t: float) -> np.ndarray:
    z = np.arange(n) - (n - 1) / 2
    return np.abs(z) <= t / 2


@pytest.fixture(scope="module")
def cell() -> tuple[np.ndarray, dict]:
    return cell_phantom(N, T, np.random.default_rng(5), particle=procedural_virion(5.0))


def test_cell_phantom_range_slab_background(cell: tuple[np.ndarray, dict]) -> None:
    vol, params = cell
    assert vol.shape == (N, N, N) and vol.dtype == np.float32
    assert float(vol.min()) >= 0.0 and float(vol.max()) <= 1.0
    inside = _slab_mask(N, T)
    assert float(np.abs(vol[~inside]).max()) == 0.0  # zero outside the slab
    # every slab voxel has the +0.2 background (objects only add density), and plenty are background only
    assert float(vol[inside].min()) == pytest.approx(0.2, abs=1e-6)
    assert 0.1 < float(np.mean(np.isclose(vol[inside], 0.2))) < 0.95
    assert params["placed"]["large_shells"] > 0 and params["placed"]["small_shells"] > 0
    assert params["placed"]["viruses"] > 0


def test_cell_phantom_deterministic_by_seed(cell: tuple[np.ndarray, dict]) -> None:
    again, _ = cell_phantom(N, T, np.random.default_rng(5), particle=procedural_virion(5.0))
    other, _ = cell_phantom(N, T, np.random.default_rng(6), particle=procedural_virion(5.0))
    assert np.array_equal(cell[0], again)
    assert float(np.abs(cell[0] - other).mean()) > 0.01


def test_shell_densities_and_rejection() -> None:
    # one large shell in an empty volume: the membrane ring holds the membrane density, the inside the
    # interior density (configured as fixed values here)
    cfg = CellPhantomConfig(membrane_density=(0.7, 0.7), interior_density=(0.3, 0.3), shell_ratio=(0.8, 0.8))
    vol = np.zeros((24, 24, 24), dtype=np.float32)
    assert paint_shell(vol, np.random.default_rng(0), 10.0, 24.0, cfg)
    assert set(np.round(np.unique(vol).astype(np.float64), 6).tolist()) == {0.0, 0.3, 0.7}
    assert vol[12, 12, 12] == pytest.approx(0.3)  # centre of the volume is inside the (near-centred) shell
    # rejection: in a 24³ box a radius-10 shell is centred within ±2 voxels, so its interior (semi-axes
    # ≥ 0.8·0.7·10 = 5.6) always straddles the plane x = 11.5 where the volume changes value -> rejected
    split = np.zeros((24, 24, 24), dtype=np.float32)
    split[:, :, :12] = 0.5
    before = split.copy()
    assert not any(paint_shell(split, np.random.default_rng(s), 10.0, 24.0, cfg) for s in range(5))
    assert np.array_equal(split, before)


def test_random_rotation_is_uniform_3d() -> None:
    rng = np.random.default_rng(0)
    rots = np.stack([random_rotation(rng) for _ in range(2000)])
    eye = np.einsum("nij,nkj->nik", rots, rots)
    assert np.allclose(eye, np.eye(3), atol=1e-10)
    assert np.allclose(np.linalg.det(rots), 1.0)
    # for a uniform rotation the image of e_z is uniform on the sphere: each coordinate has mean 0 and
    # variance 1/3 (a rotation about one axis only would keep one coordinate fixed)
    ez = rots[:, :, 2]
    assert np.allclose(ez.mean(axis=0), 0.0, atol=0.05)
    assert np.allclose(ez.var(axis=0), 1 / 3, atol=0.03)


def test_procedural_virion_shape() -> None:
    v = procedural_virion(20.0)
    assert v.shape == (22, 22, 22) and v.dtype == np.float32
    assert float(v.min()) == 0.0 and float(v.max()) <= 1.0
    c = 22 // 2
    assert v[c, c, c] == pytest.approx(0.95, abs=0.05)  # dense core
    support = np.argwhere(v > 0.05) - 10.5
    radius = np.linalg.norm(support, axis=1).max()
    assert 8.5 <= radius <= 11.0  # spike tips at ≈ diameter/2
    # a rotated particle keeps its mass (analytic evaluation, no resampling)
    vr = procedural_virion(20.0, random_rotation(np.random.default_rng(1)))
    assert float(vr.sum()) == pytest.approx(float(v.sum()), rel=0.03)


def test_rotate_map_keeps_mass_and_identity() -> None:
    v = procedural_virion(12.0)
    assert np.allclose(rotate_map(v, np.eye(3)), v, atol=1e-6)
    r = rotate_map(v, random_rotation(np.random.default_rng(2)))
    assert float(r.sum()) == pytest.approx(float(v.sum()), rel=0.05)


def test_particle_map_must_be_cubic() -> None:
    with pytest.raises(InputError, match="not a cubic"):
        prepare_particle_map(np.zeros((4, 5, 5)), "m.mrc")
    with pytest.raises(InputError, match="constant"):
        prepare_particle_map(np.ones((4, 4, 4)), "m.mrc")
    m = prepare_particle_map(np.arange(27.0).reshape(3, 3, 3) - 5, "m.mrc", zoom=2.0)
    assert m.shape == (6, 6, 6) and float(m.min()) == 0.0 and float(m.max()) == 1.0


def test_nanoparticles() -> None:
    vol, params = nanoparticle_phantom(N, T, np.random.default_rng(0))
    inside = _slab_mask(N, T)
    assert float(np.abs(vol[~inside]).max()) == 0.0
    assert float(vol.max()) <= 1.0 and float(vol.min()) >= 0.0
    first = np.argmax(inside)
    assert np.allclose(vol[first], 0.3) or float(np.mean(np.isclose(vol[first], 0.3))) > 0.5  # support film
    assert float(vol.max()) >= 0.85 and sum(params["placed"].values()) > 0  # dense particles
    assert float(vol[np.nonzero(inside)[0][-1]].max()) == 0.0  # vacuum at the top of the slab


def test_shepp_logan() -> None:
    vol, _ = shepp_logan_phantom(N, T)
    again, _ = shepp_logan_phantom(N, T)
    assert np.array_equal(vol, again)
    inside = _slab_mask(N, T)
    assert float(np.abs(vol[~inside]).max()) == 0.0
    assert float(vol.max()) == 1.0 and float(vol.min()) == 0.0
    assert vol[N // 2, N // 2, N // 2] == pytest.approx(0.2)  # inside the skull: 1 - 0.8


def test_slab_coverage_and_finish() -> None:
    assert slab_coverage(8, 4.0).tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    # odd thickness in an even volume: the two boundary planes are half inside; total = thickness
    assert slab_coverage(8, 5.0).tolist() == [0, 0.5, 1, 1, 1, 1, 0.5, 0]
    assert float(slab_coverage(9, 5.0).sum()) == 5.0
    out = finish_slab(np.full((8, 2, 2), 0.95, dtype=np.float32), 4.0, 0.2)
    assert float(out.max()) == 1.0 and float(out[0].max()) == 0.0


@pytest.mark.parametrize(("size", "thickness", "match"), [(32, 40.0, "must be in"), (32, -2.0, "must be in"),
                                                          (2, 1.0, "at least 4"), (32, float("nan"), "must be in")])
def test_bad_size_thickness(size: int, thickness: float, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        cell_phantom(size, thickness, np.random.default_rng(0))
