"""The simulation pipeline: phantom → line integrals → STEM intensities → (defocus) → (noise).

Order of operations as in the paper (METHOD.md §7.2): clean projection → defocus blur → noise → clip.
Projection and defocus happen in the aligned frame (tilt axis = +y); optional raw-frame output (tilt axis
at ``tilt_axis_angle_deg``) and per-tilt shifts are applied before the noise, so the noise (and its scan
correlation along the detector's x) lives in the raw detector frame.
Differences to the research code: the projector is :func:`stemtomo.core.projector.forward_project`
(the same one reconstruction and evaluation use), trilinear instead of truncated nearest-voxel lookup;
intensities follow the Beer–Lambert model of :mod:`stemtomo.core.imaging` in normalized length units
with κ (no /100, /7 magic numbers) and **no per-projection min–max stretching**, so the clean series is
exactly consistent across tilts; the tilt range is inclusive of STOP when it lies on the grid.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from stemtomo.core.geometry import aligned_to_raw, length_unit_px
from stemtomo.core.imaging import intensity
from stemtomo.core.projector import DEFAULT_SAMPLES_PER_VOXEL, forward_project
from stemtomo.errors import InputError, ParameterError
from stemtomo.simulate.config import (
    DEFAULT_TILTS,
    PHANTOMS,
    VIRION_FRACTION_OF_THICKNESS,
    NoiseConfig,
    SimulationConfig,
    parse_tilt_range,
)
from stemtomo.simulate.defocus import apply_defocus
from stemtomo.simulate.misalign import random_shifts, shift_images
from stemtomo.simulate.noise import apply_noise_model, apply_parametric_noise
from stemtomo.simulate.phantoms import cell_phantom
from stemtomo.simulate.simple_phantoms import nanoparticle_phantom, shepp_logan_phantom
from stemtomo.simulate.virion import VIRION_DIAMETER_ANGSTROM, prepare_particle_map, procedural_virion

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SimulationResult:
    """Arrays of one simulation (float32 numpy) and the parameters to record."""

    phantom: np.ndarray
    """Density ``(nz, ny, nx)`` in [0, 1]."""
    clean: np.ndarray
    """Clean intensities ``(n_tilts, ny, nx)`` in [0, 1]."""
    defocused: np.ndarray | None
    """Defocus-blurred intensities, or None."""
    noisy: np.ndarray | None
    """Noisy intensities (of the defocused series if any), or None."""
    tilt_angles_deg: np.ndarray
    thickness_px: float
    pixel_size_angstrom: float | None
    phantom_params: dict[str, Any]
    shifts_px: np.ndarray | None = None
    """Applied per-tilt shifts ``(n_tilts, 2)`` as (dx, dy) pixels (content moved by +d), or None."""


def _particle(cfg: SimulationConfig, thickness: float) -> tuple[np.ndarray | None, float | None]:
    """The virus-like particle map and the (possibly derived) pixel size."""
    if cfg.particle_map is not None:
        from stemtomo.io import read_volume

        img = read_volume(cfg.particle_map)
        zoom = 1.0
        if img.meta.pixel_size_angstrom and cfg.pixel_size_angstrom:
            zoom = float(img.meta.pixel_size_angstrom) / cfg.pixel_size_angstrom
        particle = prepare_particle_map(img.data, cfg.particle_map, zoom)
        if particle.shape[0] > thickness:
            log.warning("--particle-map %s: %d px exceeds the slab (%g px): no viruses placed",
                        cfg.particle_map, particle.shape[0], thickness)
        return particle, cfg.pixel_size_angstrom
    pixel = cfg.pixel_size_angstrom
    if pixel is None:
        pixel = VIRION_DIAMETER_ANGSTROM / max(4.0, VIRION_FRACTION_OF_THICKNESS * thickness)
    diameter = VIRION_DIAMETER_ANGSTROM / pixel
    if diameter > thickness:  # do not build a map that cannot be placed (it could be huge)
        log.warning("virion diameter %.1f px exceeds the slab (%g px): no viruses placed", diameter, thickness)
        return None, pixel
    return procedural_virion(max(4.0, diameter)), pixel


def make_phantom(cfg: SimulationConfig) -> tuple[np.ndarray, float, float | None, dict[str, Any]]:
    """``(volume (nz, ny, nx) float32 in [0, 1], thickness_px, pixel_size_angstrom, parameters)``.

    Raises
    ------
    InputError
        A phantom file that is not a 3D volume in [0, 1], or a bad particle map.
    ParameterError
        Thickness larger than the volume.
    """
    rng = np.random.default_rng(cfg.seed)
    if cfg.phantom not in PHANTOMS:
        return _phantom_from_file(cfg)
    n = int(cfg.size)
    t = cfg.default_thickness(n)
    if cfg.phantom == "cell":
        particle, pixel = _particle(cfg, t)
        vol, params = cell_phantom(n, t, rng, particle=particle)
    elif cfg.phantom == "nanoparticles":
        (vol, params), pixel = nanoparticle_phantom(n, t, rng), cfg.pixel_size_angstrom
    else:
        (vol, params), pixel = shepp_logan_phantom(n, t), cfg.pixel_size_angstrom
    params["seed"] = int(cfg.seed)
    return vol, t, pixel, params


def _phantom_from_file(cfg: SimulationConfig) -> tuple[np.ndarray, float, float | None, dict[str, Any]]:
    from stemtomo.io import read_volume

    img = read_volume(cfg.phantom)
    vol = np.asarray(img.data, dtype=np.float32)
    if vol.ndim != 3 or min(vol.shape) < 2:
        raise InputError(f"--phantom {cfg.phantom}: shape {vol.shape} is not a 3D volume (nz, ny, nx)")
    lo, hi = float(vol.min()), float(vol.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise InputError(
            f"--phantom {cfg.phantom}: densities {lo:g}…{hi:g} are outside [0, 1]; rescale the volume to [0, 1] first"
        )
    t = cfg.thickness_px if cfg.thickness_px is not None else (img.meta.thickness_px or vol.shape[0])
    if t > vol.shape[0]:
        raise ParameterError(
            f"--thickness-px {t:g}: larger than the volume depth nz = {vol.shape[0]} of {cfg.phantom}"
        )
    pixel = cfg.pixel_size_angstrom or img.meta.pixel_size_angstrom
    return np.clip(vol, 0.0, 1.0), float(t), pixel, {"phantom": "file", "file": str(cfg.phantom)}


def project_intensities(
    volume: torch.Tensor,
    angles: np.ndarray,
    thickness_px: float,
    contrast: str,
    kappa: float,
    samples_per_voxel: float = DEFAULT_SAMPLES_PER_VOXEL,
) -> torch.Tensor:
    """Clean intensities ``(n_tilts, ny, nx)``: ``intensity(forward_project(ρ) / length_unit_px, contrast, κ)``."""
    p = forward_project(volume, angles, thickness_px=thickness_px, samples_per_voxel=samples_per_voxel)
    return intensity(p / length_unit_px(volume.shape[1], volume.shape[2]), contrast, kappa)


def simulate(
    cfg: SimulationConfig, device: torch.device | str = "cpu", progress: Callable[[str], None] | None = None
) -> SimulationResult:
    """Run the whole simulation on ``device`` (the caller resolves it); see the module docstring.

    Raises
    ------
    ParameterError, InputError
        Invalid configuration or input files (checked before any heavy work).
    """
    cfg.validate()
    angles = cfg.angles()
    step = progress or (lambda _stage: None)
    step("phantom")
    vol, t, pixel, params = make_phantom(cfg)
    step("projection")
    vol_t = torch.from_numpy(vol).to(device)
    clean = project_intensities(vol_t, angles, t, cfg.contrast, cfg.kappa, cfg.samples_per_voxel)
    defocused = None
    if cfg.defocus_max_px > 0:
        step("defocus")
        defocused = apply_defocus(clean, angles, cfg.defocus_max_px)
    shifts = random_shifts(len(angles), cfg.shift_sigma_px, cfg.seed) if cfg.shift_sigma_px > 0 else None
    clean = _to_raw(clean, cfg.tilt_axis_angle_deg, shifts)
    defocused = None if defocused is None else _to_raw(defocused, cfg.tilt_axis_angle_deg, shifts)
    noisy = None
    base = clean if defocused is None else defocused
    gen = torch.Generator(device=vol_t.device).manual_seed(int(cfg.seed))
    if cfg.noise_model is not None:
        step("noise")
        noisy = apply_noise_model(base, cfg.noise_model, gen)
    elif cfg.noise.active:
        step("noise")
        noisy = apply_parametric_noise(base, cfg.noise, gen)

    def host(x: torch.Tensor | None) -> np.ndarray | None:
        return None if x is None else x.detach().cpu().numpy().astype(np.float32)

    return SimulationResult(
        phantom=vol,
        clean=clean.detach().cpu().numpy().astype(np.float32),
        defocused=host(defocused),
        noisy=host(noisy),
        tilt_angles_deg=angles,
        thickness_px=t,
        pixel_size_angstrom=pixel,
        phantom_params=params,
        shifts_px=shifts,
    )


def _to_raw(images: torch.Tensor, tilt_axis_angle_deg: float, shifts: np.ndarray | None) -> torch.Tensor:
    """Aligned-frame images → raw frame (tilt axis at the given angle), then the per-tilt shifts.

    Quarter turns are exact; other angles resample bilinearly and leave corners outside the aligned field
    of view at 0 (see :func:`stemtomo.core.geometry.aligned_to_raw`).
    """
    out = aligned_to_raw(images, tilt_axis_angle_deg) if tilt_axis_angle_deg else images
    return out if shifts is None else shift_images(out, shifts)


__all__ = [
    "DEFAULT_TILTS",
    "PHANTOMS",
    "NoiseConfig",
    "SimulationConfig",
    "SimulationResult",
    "make_phantom",
    "parse_tilt_range",
    "project_intensities",
    "simulate",
]
