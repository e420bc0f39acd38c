"""Configuration of ``stemtomo simulate`` (light module: stdlib only at import, so the CLI can take its
defaults from here without importing torch)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

from stemtomo.errors import ParameterError
from stemtomo.io.angles import check_tilt_axis_angle

if TYPE_CHECKING:
    import numpy as np

DEFAULT_KAPPA = 7.0
"""κ default; equals :data:`stemtomo.core.imaging.DEFAULT_KAPPA` (a test checks it)."""
DEFAULT_SAMPLES_PER_VOXEL = 2.0
"""Equals :data:`stemtomo.core.projector.DEFAULT_SAMPLES_PER_VOXEL` (a test checks it)."""


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """Parameters of :func:`apply_parametric_noise`; all off by default."""

    dose: float | None = None
    """Electrons per pixel at intensity 1 (Poisson shot noise); None = no shot noise."""
    read_noise: float = 0.0
    """Standard deviation of additive Gaussian noise (normalized intensity units)."""
    scan_correlation: float = 0.0
    """AR(1) correlation of neighbouring pixels along x (fast scan), in [0, 1)."""
    clip: bool = True
    """Clip the noisy intensities to [0, 1]."""

    def validate(self) -> None:
        """Raise ParameterError naming the option for out-of-range or NaN values."""
        if self.dose is not None and not (math.isfinite(self.dose) and self.dose > 0):
            raise ParameterError(f"--dose {self.dose!r}: must be a positive number of electrons per pixel")
        if not (math.isfinite(self.read_noise) and self.read_noise >= 0):
            raise ParameterError(f"--read-noise {self.read_noise!r}: must be a number ≥ 0")
        if not (math.isfinite(self.scan_correlation) and 0 <= self.scan_correlation < 1):
            raise ParameterError(f"--scan-correlation {self.scan_correlation!r}: must be in [0, 1)")

    @property
    def active(self) -> bool:
        """True if any noise is switched on."""
        return self.dose is not None or self.read_noise > 0


PHANTOMS = ("cell", "nanoparticles", "shepp-logan")
DEFAULT_TILTS = "-50:50:1.5"
"""The paper's tilt range ``np.arange(-50, 50, 1.5)``: 67 angles -50…49 (50 is not on the 1.5° grid)."""
VIRION_FRACTION_OF_THICKNESS = 0.25
"""With no pixel size given, the procedural virion's diameter is this fraction of the slab thickness."""


def parse_tilt_range(text: str, option: str = "--tilts") -> np.ndarray:
    """``"START:STOP:STEP"`` (degrees) → angles ``START, START+STEP, …`` up to and including STOP when
    STOP lies on the grid (unlike ``np.arange``; ``-60:60:3`` gives 41 angles, ``-50:50:1.5`` gives 67).

    Raises
    ------
    ParameterError
        Malformed text, zero/NaN step, a step pointing away from STOP (empty range), or angles outside
        (-90°, 90°).
    """
    import numpy as np

    from stemtomo.core.geometry import check_angles

    parts = text.split(":")
    try:
        start, stop, step = (float(p) for p in parts) if len(parts) == 3 else (math.nan,) * 3
    except ValueError:
        start = stop = step = math.nan
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise ParameterError(f"{option} {text!r}: expected START:STOP:STEP in degrees, e.g. -60:60:3")
    if step == 0 or (stop - start) * step < 0:
        raise ParameterError(
            f"{option} {text!r}: the range is empty; STEP must be non-zero and point from START to STOP"
        )
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    angles = start + step * np.arange(n, dtype=np.float64)
    return check_angles(np.round(angles, 10).tolist(), option)


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Everything ``stemtomo simulate`` needs; recorded in every output's sidecar."""

    phantom: str = "cell"
    """``cell``, ``nanoparticles``, ``shepp-logan``, or the path of a volume (.mrc) to project as is."""
    size: int = 64
    """N: phantoms are N³, images N×N (ignored for a phantom file, which brings its own shape)."""
    thickness_px: float | None = None
    """Slab thickness in voxels; default: N/2 rounded to an even number (the file's sidecar for a file)."""
    tilts: str = DEFAULT_TILTS
    """Tilt range START:STOP:STEP in degrees (STOP inclusive when on the grid)."""
    tilt_angles_deg: tuple[float, ...] | None = None
    """Explicit tilt angles (e.g. from --angles FILE); override ``tilts``."""
    contrast: str = "bf"
    """``bf``: I = exp(-κP); ``df``: I = 1 - exp(-κP) (P in normalized length units)."""
    kappa: float = DEFAULT_KAPPA
    """Attenuation constant κ of the image formation model."""
    defocus_max_px: float = 0.0
    """Gaussian blur σ (pixels) at the image edge of the most tilted image; 0 = no defocus series."""
    noise: NoiseConfig = NoiseConfig()
    """Parametric noise (dose, read noise, scan correlation)."""
    noise_model: str | None = None
    """A noise-model file from ``stemtomo noise fit`` (replaces the parametric noise)."""
    pixel_size_angstrom: float | None = None
    """Pixel size in Å; sizes the procedural virion (50 nm). None: virion = 0.25 × thickness."""
    particle_map: str | None = None
    """A cubic density map (.mrc) placed instead of the procedural virion (cell phantom)."""
    seed: int = 0
    """Random seed for the phantom (numpy) and the noise (torch generator on the device)."""
    samples_per_voxel: float = DEFAULT_SAMPLES_PER_VOXEL
    """Projector samples per voxel of path length."""
    tilt_axis_angle_deg: float = 0.0
    """Write raw-frame images whose tilt axis is at this angle, CCW from +y (IMOD RotationAngle)."""
    shift_sigma_px: float = 0.0
    """σ of random per-tilt image shifts (pixels, raw frame), recorded in the sidecar; 0 = aligned."""

    def angles(self) -> np.ndarray:
        """The tilt angles in degrees, validated."""
        from stemtomo.core.geometry import check_angles

        if self.tilt_angles_deg is not None:
            return check_angles(self.tilt_angles_deg, "--angles")
        return parse_tilt_range(self.tilts)

    def validate(self) -> None:
        """Check every parameter (raises ParameterError naming the option) before any work is done."""
        if self.phantom not in PHANTOMS and not Path(self.phantom).suffix:
            raise ParameterError(
                f"--phantom {self.phantom!r}: use {', '.join(PHANTOMS)} or a volume file (.mrc)"
            )
        if int(self.size) < 4:
            raise ParameterError(f"--size {self.size}: must be at least 4 voxels")
        if self.thickness_px is not None and not (math.isfinite(self.thickness_px) and self.thickness_px > 0):
            raise ParameterError(f"--thickness-px {self.thickness_px!r}: must be a positive number of voxels")
        if self.phantom in PHANTOMS and self.thickness_px is not None and self.thickness_px > self.size:
            raise ParameterError(
                f"--thickness-px {self.thickness_px:g}: larger than --size {self.size}; use at most {self.size}"
            )
        if self.contrast not in ("bf", "df"):
            raise ParameterError(f"--contrast {self.contrast!r}: use bf (bright field) or df (dark field)")
        for name, value in (("--kappa", self.kappa), ("--samples-per-voxel", self.samples_per_voxel)):
            if not (math.isfinite(value) and value > 0):
                raise ParameterError(f"{name} {value!r}: must be a positive number")
        if not (math.isfinite(self.defocus_max_px) and self.defocus_max_px >= 0):
            raise ParameterError(f"--defocus-max-px {self.defocus_max_px!r}: must be a number ≥ 0 (0 = off)")
        if self.pixel_size_angstrom is not None and not (
            math.isfinite(self.pixel_size_angstrom) and self.pixel_size_angstrom > 0
        ):
            raise ParameterError(
                f"--pixel-size-angstrom {self.pixel_size_angstrom!r}: must be a positive number"
            )
        check_tilt_axis_angle(self.tilt_axis_angle_deg)
        if not (math.isfinite(self.shift_sigma_px) and self.shift_sigma_px >= 0):
            raise ParameterError(f"--shift-sigma-px {self.shift_sigma_px!r}: must be a number ≥ 0 (0 = off)")
        self.noise.validate()
        if self.noise_model is not None and (self.noise.active or self.noise.scan_correlation > 0):
            raise ParameterError(
                "--noise-model replaces the parametric noise: give either --noise-model or "
                "--dose/--read-noise/--scan-correlation, not both"
            )
        self.angles()

    def default_thickness(self, nz: int) -> float:
        """The slab thickness used: the option, else N/2 rounded down to an even number (≥ 2)."""
        if self.thickness_px is not None:
            return float(self.thickness_px)
        return float(max(2, (nz // 2) // 2 * 2)) if nz >= 4 else float(nz)


__all__ = [
    "DEFAULT_KAPPA",
    "DEFAULT_SAMPLES_PER_VOXEL",
    "DEFAULT_TILTS",
    "PHANTOMS",
    "NoiseConfig",
    "SimulationConfig",
    "parse_tilt_range",
]
