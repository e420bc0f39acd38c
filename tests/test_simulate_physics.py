"""Physics of the simulation: Beer–Lambert intensities, geometry, defocus blur, noise statistics, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stemtomo.core.geometry import length_unit_px
from stemtomo.errors import ParameterError
from stemtomo.simulate.config import NoiseConfig, SimulationConfig, parse_tilt_range
from stemtomo.simulate.defocus import apply_defocus, defocus_sigma_px, gaussian_blur
from stemtomo.simulate.noise import apply_noise_model, apply_parametric_noise, ar1_filter
from stemtomo.simulate.phantoms import finish_slab
from stemtomo.simulate.simulate import make_phantom, project_intensities, simulate


def test_uniform_slab_beer_lambert() -> None:
    # background-only phantom: ρ = 0.2 on the t central planes -> P = 0.2·t/cosθ voxels, I = exp(-κ P / L)
    n, t, kappa = 32, 12.0, 7.0
    vol = torch.from_numpy(finish_slab(np.zeros((n, n, n), np.float32), t, 0.2)).double()
    angles = np.array([-50.0, -15.0, 0.0, 30.0, 50.0])
    img = project_intensities(vol, angles, t, "bf", kappa)
    big_l = length_unit_px(n, n)
    expect = np.exp(-kappa * 0.2 * t / np.cos(np.deg2rad(angles)) / big_l)
    centre = img[:, :, n // 2 - 3 : n // 2 + 3].numpy()
    assert np.allclose(centre, expect[:, None, None], rtol=1e-6)
    df = project_intensities(vol, angles, t, "df", kappa)
    assert np.allclose(df[:, :, n // 2].numpy(), 1 - expect[:, None], rtol=1e-6)


@pytest.mark.parametrize("theta", [30.0, -30.0])
def test_point_phantom_position_in_intensities(theta: float) -> None:
    # a dense voxel above the centre (z0 > 0) darkens the BF image at u = x0 cosθ + z0 sinθ:
    # right of its x at +30°, left at -30° (DESIGN.md Conventions)
    n = 32
    vol = torch.zeros(n, n, n, dtype=torch.float64)
    iz, iy, ix = 24, 10, 15  # z0 = 8.5, y0 = -5.5, x0 = -0.5
    vol[iz, iy, ix] = 1.0
    img = project_intensities(vol, [theta], n, "bf", 7.0)[0]
    absorb = 1.0 - img  # weight of the darkening
    row = int(absorb.sum(dim=1).argmax())
    assert row == iy
    u = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    got = float((absorb[row] * u).sum() / absorb[row].sum())
    th = math.radians(theta)
    x0, z0 = ix - (n - 1) / 2, iz - (n - 1) / 2
    assert got == pytest.approx(x0 * math.cos(th) + z0 * math.sin(th), abs=0.1)
    assert (got > x0) == (theta > 0)


def test_plus_minus_theta_symmetry_of_simulation() -> None:
    cfg = SimulationConfig(size=24, thickness_px=12, seed=4)
    vol, t, _, _ = make_phantom(cfg)
    v = torch.from_numpy(vol).double()
    a = project_intensities(v.flip(0), [40.0], t, "bf", 7.0)
    b = project_intensities(v, [-40.0], t, "bf", 7.0)
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_defocus_sigma_profile() -> None:
    angles = [-50.0, -10.0, 0.0, 25.0, 50.0]
    sig = defocus_sigma_px(angles, 33, 4.0)
    assert sig.shape == (5, 33)
    assert float(sig.max()) == pytest.approx(4.0)  # at the image edge of the most tilted image
    assert np.all(sig[:, 16] == 0) and np.all(sig[2] == 0)  # tilt axis column, and 0° tilt
    # σ grows with tan|θ| (at equal distance): ratio tan25/tan50
    assert sig[3, 0] / sig[4, 0] == pytest.approx(math.tan(math.radians(25)) / math.tan(math.radians(50)))
    assert np.all(defocus_sigma_px(angles, 33, 0.0) == 0)


def test_defocus_blur_on_images() -> None:
    g = torch.Generator().manual_seed(0)
    angles = [0.0, 10.0, 50.0]
    img = torch.rand(3, 16, 41, generator=g, dtype=torch.float64)
    out = apply_defocus(img, angles, 3.0)
    assert torch.equal(out[0], img[0])  # 0°: in focus everywhere
    assert torch.equal(out[:, :, 20], img[:, :, 20])  # the tilt axis column is in focus
    change = (out - img).abs().mean(dim=1)  # (tilt, column)
    edge = slice(0, 4)
    assert float(change[2, edge].mean()) > 2 * float(change[1, edge].mean()) > 0  # more blur at high tilt
    # blur smooths: the high-tilt image edge loses variance
    assert float(out[2, :, :4].var()) < 0.5 * float(img[2, :, :4].var())
    with pytest.raises(ParameterError, match="--defocus-max-px"):
        apply_defocus(img, angles, -1.0)
    with pytest.raises(ParameterError, match="--defocus-max-px"):
        apply_defocus(img, angles, float("nan"))


def test_gaussian_blur_keeps_constants_and_mass() -> None:
    const = torch.full((1, 20, 20), 0.37, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(const, 2.0), const, atol=1e-12)
    spot = torch.zeros(1, 31, 31, dtype=torch.float64)
    spot[0, 15, 15] = 1.0
    b = gaussian_blur(spot, 2.0)
    assert float(b.sum()) == pytest.approx(1.0, abs=1e-9)
    u = torch.arange(31, dtype=torch.float64) - 15
    var_x = float((b[0].sum(dim=0) * u**2).sum())
    assert var_x == pytest.approx(4.0, rel=0.02)  # σ² of the kernel (truncated at 3σ)


def test_poisson_noise_statistics() -> None:
    # Poisson(dose·I)/dose has mean I and variance I/dose
    g = torch.Generator().manual_seed(1)
    for level, dose in ((0.5, 100.0), (0.2, 30.0)):
        clean = torch.full((4, 64, 64), level, dtype=torch.float64)
        noisy = apply_parametric_noise(clean, NoiseConfig(dose=dose), g)
        assert float(noisy.mean()) == pytest.approx(level, rel=0.02)
        assert float(noisy.var()) == pytest.approx(level / dose, rel=0.06)


def test_read_noise_and_scan_correlation() -> None:
    g = torch.Generator().manual_seed(2)
    clean = torch.full((8, 64, 128), 0.5, dtype=torch.float64)
    noisy = apply_parametric_noise(clean, NoiseConfig(read_noise=0.03, scan_correlation=0.6), g)
    e = noisy - clean
    assert float(e.std()) == pytest.approx(0.03, rel=0.05)  # AR(1) scaling keeps the variance
    lag_x = float((e[..., 1:] * e[..., :-1]).mean() / e.var())
    lag_y = float((e[:, 1:] * e[:, :-1]).mean() / e.var())
    assert lag_x == pytest.approx(0.6, abs=0.03)
    assert abs(lag_y) < 0.03  # correlation only along the fast scan direction x
    # white read noise has no neighbour correlation
    white = apply_parametric_noise(clean, NoiseConfig(read_noise=0.03), g) - clean
    assert abs(float((white[..., 1:] * white[..., :-1]).mean() / white.var())) < 0.03
    assert torch.equal(ar1_filter(e, 0.0), e)


def test_noise_clipping_and_determinism() -> None:
    clean = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(3))
    cfg = NoiseConfig(dose=5.0, read_noise=0.2)
    a = apply_parametric_noise(clean, cfg, torch.Generator().manual_seed(7))
    b = apply_parametric_noise(clean, cfg, torch.Generator().manual_seed(7))
    c = apply_parametric_noise(clean, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_noise_model_file(tmp_path) -> None:
    noise_mod = pytest.importorskip("stemtomo.noise")
    model = noise_mod.build_noise_model("gaussian")
    with torch.no_grad():
        model.log_var.fill_(math.log(0.02**2))
    path = noise_mod.save_noise_model(tmp_path / "g.safetensors", model)
    clean = torch.full((4, 32, 32), 0.5)
    noisy = apply_noise_model(clean, path, torch.Generator().manual_seed(0))
    assert float((noisy - clean).std()) == pytest.approx(0.02, rel=0.08)
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0


def test_simulate_same_seed_same_output() -> None:
    cfg = SimulationConfig(size=16, thickness_px=8, tilts="-30:30:30", noise=NoiseConfig(dose=50.0), seed=9)
    a, b = simulate(cfg), simulate(cfg)
    c = simulate(SimulationConfig(size=16, thickness_px=8, tilts="-30:30:30", noise=NoiseConfig(dose=50.0), seed=10))
    assert np.array_equal(a.phantom, b.phantom) and np.array_equal(a.noisy, b.noisy)  # type: ignore[arg-type]
    assert not np.array_equal(a.phantom, c.phantom)
    assert a.clean.shape == (3, 16, 16) and a.defocused is None
    assert float(a.clean.min()) >= 0 and float(a.clean.max()) <= 1


def test_tilt_range_parsing() -> None:
    paper = parse_tilt_range("-50:50:1.5")
    assert paper.size == 67 and paper[0] == -50 and paper[-1] == pytest.approx(49.0)
    assert parse_tilt_range("-60:60:3").size == 41  # STOP on the grid is included
    assert parse_tilt_range("60:-60:-30").tolist() == [60, 30, 0, -30, -60]
    assert parse_tilt_range("0:0:1").tolist() == [0.0]


@pytest.mark.parametrize(
    ("text", "match"),
    [("10:-10:2", "empty"), ("0:10:0", "empty"), ("-95:95:5", "outside"), ("-60:60", "START:STOP:STEP"),
     ("a:b:c", "START:STOP:STEP"), ("-90:90:10", "outside"), ("nan:1:1", "START:STOP:STEP")],
)
def test_bad_tilt_ranges(text: str, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        parse_tilt_range(text)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"thickness_px": 40.0}, "--thickness-px 40: larger than --size 32"),
        ({"thickness_px": -4.0}, "--thickness-px"),
        ({"thickness_px": float("nan")}, "--thickness-px"),
        ({"kappa": -1.0}, "--kappa"),
        ({"kappa": float("nan")}, "--kappa"),
        ({"defocus_max_px": -0.5}, "--defocus-max-px"),
        ({"pixel_size_angstrom": 0.0}, "--pixel-size-angstrom"),
        ({"noise": NoiseConfig(dose=-3.0)}, "--dose"),
        ({"noise": NoiseConfig(dose=float("nan"))}, "--dose"),
        ({"noise": NoiseConfig(read_noise=-0.1)}, "--read-noise"),
        ({"noise": NoiseConfig(scan_correlation=1.0)}, "--scan-correlation"),
        ({"contrast": "xx"}, "--contrast"),
        ({"phantom": "blob"}, "--phantom"),
        ({"size": 2}, "--size"),
        ({"tilt_angles_deg": (10.0, 91.0)}, "--angles"),
    ],
)
def test_bad_simulation_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        SimulationConfig(**{"size": 32, **kwargs}).validate()


def test_light_config_defaults_match_core() -> None:
    from stemtomo.core.imaging import DEFAULT_KAPPA
    from stemtomo.core.projector import DEFAULT_SAMPLES_PER_VOXEL
    from stemtomo.simulate import config

    assert config.DEFAULT_KAPPA == DEFAULT_KAPPA
    assert config.DEFAULT_SAMPLES_PER_VOXEL == DEFAULT_SAMPLES_PER_VOXEL


def test_raw_frame_output_and_shifts() -> None:
    from stemtomo.core.geometry import raw_to_aligned
    from stemtomo.simulate.misalign import random_shifts, shift_images

    base = dict(size=16, thickness_px=8, tilts="-30:30:30", seed=2)
    aligned = simulate(SimulationConfig(**base))
    raw = simulate(SimulationConfig(**base, tilt_axis_angle_deg=90.0))
    # tilt axis along x: the raw images are the aligned ones turned by a quarter, exactly invertible
    back = raw_to_aligned(torch.from_numpy(raw.clean), 90.0).numpy()
    assert np.array_equal(back, aligned.clean) and not np.array_equal(raw.clean, aligned.clean)
    assert np.array_equal(raw.phantom, aligned.phantom)
    shifted = simulate(SimulationConfig(**base, shift_sigma_px=1.5))
    assert shifted.shifts_px is not None and shifted.shifts_px.shape == (3, 2)
    assert np.array_equal(shifted.phantom, aligned.phantom)  # shifts use their own random stream
    assert np.allclose(shifted.shifts_px, random_shifts(3, 1.5, 2))
    # content moves by +(dx, dy): an integer shift of a spot is exact
    spot = torch.zeros(1, 9, 9, dtype=torch.float64)
    spot[0, 4, 3] = 1.0
    moved = shift_images(spot, np.array([[2.0, -1.0]]))
    assert moved[0, 3, 5] == 1.0 and float(moved.sum()) == 1.0
    with pytest.raises(ParameterError, match="--shift-sigma-px"):
        SimulationConfig(shift_sigma_px=-1.0).validate()
    with pytest.raises(ParameterError, match="--tilt-axis-angle"):
        SimulationConfig(tilt_axis_angle_deg=float("inf")).validate()


def test_particle_map_file_is_placed(tmp_path) -> None:
    from stemtomo.io import Metadata, write_image
    from stemtomo.simulate.virion import procedural_virion

    path = write_image(tmp_path / "p.mrc", 3.0 * procedural_virion(5.0) - 1.0, Metadata(kind="volume"))
    vol, _, _, params = make_phantom(SimulationConfig(size=32, thickness_px=16, particle_map=str(path)))
    assert params["placed"]["viruses"] > 0 and params["particle_size_px"] == 7  # min-max normalized, as is
    assert float(vol.max()) <= 1.0
    # a map larger than the slab cannot be placed: no viruses, no error
    _, _, _, params = make_phantom(SimulationConfig(size=32, thickness_px=4, particle_map=str(path)))
    assert params["placed"]["viruses"] == 0
