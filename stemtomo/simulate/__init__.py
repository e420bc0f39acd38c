"""Simulation of ground-truth data: phantoms, STEM tilt series (clean, defocused, noisy), misalignment.

Entry point: :func:`run_simulation` (= :func:`stemtomo.simulate.simulate.simulate`; the package does not
re-export it as ``simulate`` because that name is the submodule's) with a :class:`SimulationConfig`. Heavy submodules (torch, scipy) load on
first use, so importing the configuration (as the CLI does for its defaults) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from stemtomo.simulate.config import DEFAULT_TILTS, PHANTOMS, NoiseConfig, SimulationConfig, parse_tilt_range

_LAZY = {
    "SimulationResult": "stemtomo.simulate.simulate",
    "run_simulation": "stemtomo.simulate.simulate",
    "make_phantom": "stemtomo.simulate.simulate",
    "project_intensities": "stemtomo.simulate.simulate",
    "CellPhantomConfig": "stemtomo.simulate.phantoms",
    "cell_phantom": "stemtomo.simulate.phantoms",
    "NanoparticleConfig": "stemtomo.simulate.simple_phantoms",
    "nanoparticle_phantom": "stemtomo.simulate.simple_phantoms",
    "shepp_logan_phantom": "stemtomo.simulate.simple_phantoms",
    "procedural_virion": "stemtomo.simulate.virion",
    "prepare_particle_map": "stemtomo.simulate.virion",
    "random_rotation": "stemtomo.simulate.virion",
    "apply_defocus": "stemtomo.simulate.defocus",
    "defocus_sigma_px": "stemtomo.simulate.defocus",
    "apply_parametric_noise": "stemtomo.simulate.noise",
    "apply_noise_model": "stemtomo.simulate.noise",
    "random_shifts": "stemtomo.simulate.misalign",
    "shift_images": "stemtomo.simulate.misalign",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), "simulate" if name == "run_simulation" else name)
    raise AttributeError(f"module 'stemtomo.simulate' has no attribute {name!r}")


__all__ = ["DEFAULT_TILTS", "PHANTOMS", "NoiseConfig", "SimulationConfig", "parse_tilt_range", *sorted(_LAZY)]
