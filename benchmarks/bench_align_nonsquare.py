"""Tilt-axis and shift errors of ``coarse_align`` on non-square frames with the tilt axis near x.

A cell phantom 96 along the axis × 64 across (slab 24), 41 tilts −60:60:3, projected in the aligned frame and
rotated into a raw 96 (x) × 64 (y) frame at α = 88°, −86° and 93° (seeds 4–7, shifts σ = 3 px, clean). These are
the frames for which the aligned canvas swaps its sides (:func:`stemtomo.core.geometry.aligned_shape`), while the
alignment criteria score on the raw-shaped canvas (:func:`stemtomo.align._filters.to_canvas`). Prints each series
and a summary; writes ``benchmarks/results/bench_align_nonsquare.csv``. Usage:
``python benchmarks/bench_align_nonsquare.py`` (one thread, about 5 s per series).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from bench_align_axis import ANGLES, gauge_free_rms

from stemtomo.align import AlignConfig, apply_xf, coarse_align, xf_from_alignment
from stemtomo.align.axis import axis_difference
from stemtomo.core.geometry import length_unit_px
from stemtomo.core.projector import forward_project
from stemtomo.simulate.misalign import shift_images
from stemtomo.simulate.phantoms import cell_phantom

RESULTS = Path(__file__).resolve().parent / "results"


def raw_series(seed: int, alpha_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw line integrals ``(41, 64, 96)`` and the true raw-frame shifts."""
    vol, _ = cell_phantom(96, 24, np.random.default_rng(seed))
    vol = vol[:, :, 16:80]  # 96 along the axis (y), 64 across
    lines = forward_project(torch.tensor(vol), ANGLES, thickness_px=24) / length_unit_px(96, 64)
    aligned = torch.exp(-7.0 * lines).float()
    xf = xf_from_alignment(alpha_deg, np.zeros((ANGLES.size, 2)))
    back = np.concatenate([np.linalg.inv(xf[:, :, :2]), np.zeros((ANGLES.size, 2, 1))], -1)
    shifts = np.random.default_rng(seed + 1).normal(0.0, 3.0, (ANGLES.size, 2))
    raw = shift_images(apply_xf(aligned, back, (64, 96)), shifts)
    return (-torch.log(raw.clamp_min(1e-3))).numpy(), shifts


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    print(" seed  alpha   err°   shift RMS px")
    for seed in (4, 5, 6, 7):
        for alpha in (88.0, -86.0, 93.0):
            lines, shifts = raw_series(seed, alpha)
            result = coarse_align(lines, ANGLES, AlignConfig())
            err = axis_difference(result.tilt_axis_angle_deg, alpha)
            rms = gauge_free_rms(result.shifts_xy, shifts, alpha)
            rows.append({"seed": seed, "alpha": alpha, "axis_error_deg": round(err, 3), "shift_rms_px": round(rms, 3)})
            print(f" {seed:4d} {alpha:6.1f} {err:+6.2f} {rms:8.2f}", flush=True)
    errors = np.abs([r["axis_error_deg"] for r in rows])
    print(f" |α error| mean {errors.mean():.2f}° max {errors.max():.2f}°, < 0.5° in {(errors < 0.5).sum()}/{len(rows)}; "
          f"shift RMS mean {np.mean([r['shift_rms_px'] for r in rows]):.2f} px")
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "bench_align_nonsquare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
