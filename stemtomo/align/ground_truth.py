"""Scoring an alignment against known shifts (simulated series, benchmarks, tests)."""

from __future__ import annotations

import numpy as np

from stemtomo.align._filters import uv_to_raw


def gauge_free_rms(error_xy: np.ndarray, tilt_angles_deg: np.ndarray, tilt_axis_angle_deg: float = 0.0) -> float:
    """RMS of per-tilt shift errors ``(n, 2)`` (pixels, x then y) after removing what no alignment can
    determine: a 3D translation of the specimen, which moves tilt θ by ``dx·cosθ + dz·sinθ`` perpendicular to
    the tilt axis and by a common ``dy`` along it.

    ``error_xy`` are raw-frame errors (estimated minus true shifts), rotated by ``−tilt_axis_angle_deg`` into
    the aligned frame (tilt axis along y); pass 0 for errors already in that frame (e.g. ``.xf`` translations).
    """
    d = uv_to_raw(np.asarray(error_xy, dtype=np.float64), -tilt_axis_angle_deg)  # the inverse: raw → aligned
    theta = np.deg2rad(np.asarray(tilt_angles_deg, dtype=np.float64))
    basis = np.c_[np.cos(theta), np.sin(theta)]
    du = d[:, 0] - basis @ np.linalg.lstsq(basis, d[:, 0], rcond=None)[0]
    dv = d[:, 1] - d[:, 1].mean()
    return float(np.sqrt((du**2 + dv**2).mean()))


__all__ = ["gauge_free_rms"]
