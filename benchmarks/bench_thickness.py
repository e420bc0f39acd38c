"""Benchmark of the slab-thickness estimate on aligned stacks with fill (issue #9: within 10 % on simulated slabs).

``stemtomo align --estimate-thickness`` and ``wbp --estimate-thickness`` estimate the slab from a full-depth
WBP of an *aligned* stack, whose shifted and rotated borders are filled with the image mean. This runs
:func:`stemtomo.preprocess.pipeline.estimate_slab` side by side with three scorings, on the misaligned
series of ``benchmarks/bench_align_axis.py``:

- ``seen``: only voxels that every tilt sees inside its measured pixels, those being known from the
  transforms (:func:`stemtomo.align.xf_coverage`; what a stack aligned by stemtomo records in its sidecar);
- ``detect``: the same with the fill found in the images (:func:`stemtomo.preprocess.fill.fill_mask`; what
  ``wbp`` does for a stack aligned elsewhere, with no sidecar);
- ``every``: every voxel of the margin-cropped planes (the estimate before 2026-12-02).

Each series is aligned twice: with its true transforms (``true xf``) and with ``coarse_align``'s estimate
(``est xf``, as ``align`` does). Cases: the bench and held-out cell slabs (96²/128², slab N/3, 41 tilts,
σ = 5 px shifts, axes 7°/90°/−20°/30°; clean and Poisson dose 40) and ``simulate``'s defaults (64²/128²,
slab N/2, 67 tilts −50…49°, axis 7°). Reports the estimated thickness / true slab and the centre offset
(px); an offset of the *estimated* alignment is partly the alignment's free z-translation (its shifts
are fixed only up to dz·sinθ), so only the true-xf offsets should be near 0. Prints a table and writes
``benchmarks/results/bench_thickness.csv``.

Usage: ``python benchmarks/bench_thickness.py [--quick] [--threads 1]`` (``--quick``: the 96² bench cases only).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from bench_align_axis import ANGLES, CASES, HELDOUT, SIMULATE, misaligned_series, simulated_series

from stemtomo.align import AlignConfig, apply_xf, coarse_align, xf_coverage, xf_from_alignment
from stemtomo.core.geometry import aligned_shape
from stemtomo.preprocess.fill import fill_mask
from stemtomo.preprocess.pipeline import estimate_slab

RESULTS = Path(__file__).resolve().parent / "results"


SCORINGS = ("seen", "detect", "every")


def _estimates(raw: torch.Tensor, angles: np.ndarray, axis: float, shifts: np.ndarray) -> tuple[tuple[float, float], ...]:
    xf = xf_from_alignment(axis, shifts)
    shape = aligned_shape(raw.shape, axis)
    aligned = apply_xf(raw, xf, shape)
    masks = {"seen": xf_coverage(xf, raw.shape, shape), "detect": ~fill_mask(aligned), "every": None}
    out = []
    for scoring in SCORINGS:
        mask = masks[scoring]
        est = estimate_slab(aligned, angles, measured=mask, seen_by_all=scoring != "every")
        out.append((est.thickness_px, est.z_offset_px))
    return tuple(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 96² bench cases only")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [("bench", c) for c in CASES + HELDOUT] + [("simulate", c) for c in SIMULATE]
    if args.quick:
        cases = [(kind, c) for kind, c in cases if kind == "bench" and c[0] == 96 and c[3] in (3, 5, 7)]
    rows = []
    print(f"{'set':>8} {'N':>4} {'slab':>4} {'α':>6} {'seed':>4} {'dose':>4} | true xf: {'seen':>13} {'detect':>13} {'every':>13} |"
          f" est xf: {'seen':>13} {'detect':>13} {'every':>13} | {'time':>5}")
    for kind, (size, thickness, alpha, seed) in cases:
        for dose in (0, 40):
            if kind == "simulate":
                raw_np, shifts, angles = simulated_series(size, alpha, seed, dose)
            else:
                (raw_np, shifts), angles = misaligned_series(size, thickness, alpha, seed, dose), ANGLES
            raw = torch.from_numpy(raw_np)
            t0 = time.perf_counter()
            truth = _estimates(raw, angles, alpha, shifts)
            seconds = time.perf_counter() - t0
            found = coarse_align(raw, angles, AlignConfig())
            est = _estimates(raw, angles, found.tilt_axis_angle_deg, found.shifts_xy)
            row = {"set": kind, "size": size, "slab_px": thickness, "alpha_deg": alpha, "seed": seed, "dose": dose}
            for label, pairs in (("true", truth), ("est", est)):
                for scoring, (t, z) in zip(SCORINGS, pairs, strict=True):
                    row[f"{label}_{scoring}_ratio"] = round(t / thickness, 3)
                    row[f"{label}_{scoring}_offset_px"] = round(z, 2)
            row["seconds_true_xf"] = round(seconds, 2)
            rows.append(row)
            cells = " ".join(f"{t / thickness:6.2f} {z:+6.1f}" for t, z in truth)
            cells_est = " ".join(f"{t / thickness:6.2f} {z:+6.1f}" for t, z in est)
            print(f"{kind:>8} {size:4d} {thickness:4d} {alpha:6.1f} {seed:4d} {dose:4g} | {cells} | {cells_est} | "
                  f"{seconds:5.1f}", flush=True)
    for label in ("true", "est"):
        for scoring in SCORINGS:
            ratio = np.array([r[f"{label}_{scoring}_ratio"] for r in rows])
            offset = np.abs([r[f"{label}_{scoring}_offset_px"] for r in rows])
            within = int((np.abs(ratio - 1.0) <= 0.10).sum())
            print(f"{label + ' xf':>7} {scoring:>5}: thickness/slab {ratio.min():.2f}–{ratio.max():.2f}, within 10 % in "
                  f"{within}/{ratio.size}; |offset| median {np.median(offset):.1f} px, max {offset.max():.1f} px")
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"bench_thickness{'_quick' if args.quick else ''}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
