"""Benchmark of ways to twin-correct the tilt-axis criteria (the study behind ``AlignConfig.twin_correction``).

For each misaligned series of ``bench_align_axis.py`` (``bench``, ``heldout``, ``thick``, ``simulate`` or ``192``:
the bench axes at 192², slab N/3): align with no twin (``default`` column: ``twin_correction=False``), build the
twin (WBP of the data aligned at that α, as deep as the estimated enclosing slab, reprojected) and read both
criteria on data and twin. Columns, signed α errors in degrees:

- ``stretch``: the stretch refinement alone (``flow_axis=False``);
- ``stretch_tw``: that minus the twin's stretch reading;
- ``stretch_tw_at0``: the data's stretch reading at the no-twin α minus the twin's (what ships);
- ``flow_tw``: the flow estimate minus the twin's reading (the earlier twin correction);
- ``mean_tw``, ``mean_tw2``: the mean of ``flow_tw`` with ``stretch_tw`` / ``stretch_tw_at0`` (``mean_tw2`` ships
  below 192 px on slabs under 42 % of the width).

Prints each row and a summary, writes ``benchmarks/results/bench_twin_variants_<set>.csv``. Usage:
``python benchmarks/bench_twin_variants.py bench|heldout|thick|simulate|192`` (one thread; 2–10 s per series).
The CSVs in ``results/`` were written on 2026-12-02 by the first version of this script: ``mean_tw`` did not yet
average across the ±90° wrap (one 90° series there reads about 89°), and three columns had other names (``th``
= ``slab_px``, ``est`` = ``twin_depth_px``, ``bias_s`` = ``stretch_bias_deg``).
"""

import csv
import sys
from pathlib import Path

import numpy as np
import torch
from bench_align_axis import (
    ANGLES,
    CASES,
    HELDOUT,
    SIMULATE,
    THICK,
    misaligned_series,
    simulated_series,
    sized_cases,
)

from stemtomo.align import AlignConfig, coarse_align
from stemtomo.align._filters import _bandpass, fill_regions
from stemtomo.align.axis import axis_difference, stretch_scores
from stemtomo.align.flow import refine_axis_by_flow, remove_shifts
from stemtomo.align.twin import estimated_slab_px
from stemtomo.core.geometry import raw_to_aligned
from stemtomo.core.projector import forward_project
from stemtomo.recon.wbp import wbp

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    torch.set_num_threads(1)
    which = sys.argv[1] if len(sys.argv) > 1 else "bench"
    sets = {"bench": CASES, "heldout": HELDOUT, "thick": THICK, "simulate": SIMULATE, "192": sized_cases(192)}[which]
    rows = []
    for size, th, alpha, seed in sets:
        for dose in (0, 40):
            if which == "simulate":
                raw, _, angles = simulated_series(size, alpha, seed, dose)
            else:
                (raw, _), angles = misaligned_series(size, th, alpha, seed, dose), ANGLES
            rows.append(_variants(raw, angles, size, th, alpha, seed, dose))
            print(rows[-1], flush=True)
    for key in KEYS:
        err = np.abs([r[key] for r in rows])
        print(f"{key:>15}: |α error| mean {err.mean():.2f}° max {err.max():.2f}°, < 0.5° in {(err < 0.5).sum()}/{err.size}")
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"bench_twin_variants_{which}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


KEYS = ("default", "stretch", "stretch_tw", "stretch_tw_at0", "flow_tw", "mean_tw", "mean_tw2")


def _vertex(images: torch.Tensor, angles: np.ndarray) -> float:
    """Offset (°, within ±6°) of the stretch criterion's parabola vertex for aligned images."""
    offsets = np.arange(-6.0, 6.0 + 1e-9, 1.0)
    vals = stretch_scores(_bandpass(images, 1.0, 4.0), angles, offsets.tolist())
    c2, c1, _ = np.polyfit(offsets, vals, 2)
    return float(np.clip(-c1 / (2 * c2), -6, 6)) if c2 < 0 else float(offsets[np.argmax(vals)])


def _variants(raw: np.ndarray, angles: np.ndarray, size: int, th: int, alpha: float, seed: int,
              dose: float) -> dict[str, float]:
    a_s = coarse_align(raw, angles, AlignConfig(flow_axis=False)).tilt_axis_angle_deg
    res = coarse_align(raw, angles, AlignConfig(twin_correction=False))
    a0 = res.tilt_axis_angle_deg
    imgs, valid = fill_regions(torch.as_tensor(raw))
    shifted, mask = remove_shifts(imgs, valid, res.shifts_xy)
    aligned = raw_to_aligned(shifted, a0)
    inside = (raw_to_aligned(mask, a0) > 0.99).to(aligned.dtype)
    filled = torch.where(inside > 0, aligned, (aligned * inside).sum() / inside.sum())
    est = estimated_slab_px(imgs, valid, angles, a0, res.shifts_xy)
    nz = max(4, round(est[1])) if est else size // 2
    twin = forward_project(wbp(filled, angles, nz), angles, image_width=aligned.shape[-1]).to(aligned.dtype)
    d, bf = (refine_axis_by_flow(x, inside, angles, 0.0) for x in (aligned, twin))
    bs = _vertex(twin * inside, angles)  # the twin zeroed outside the data (stemtomo fills it with its mean)
    a_f = a0 + d - bf if d is not None and bf is not None else a0
    a_sc, a_sc2 = a_s - bs, a0 + _vertex(filled, angles) - bs

    def err(a: float) -> float:
        return round(axis_difference(a, alpha), 3)

    def mean(a: float, b: float) -> float:  # across the ±90° wrap
        return a + axis_difference(b, a) / 2

    return {"size": size, "slab_px": th, "alpha_deg": alpha, "seed": seed, "dose": dose, "twin_depth_px": nz,
            "default": err(a0), "stretch": err(a_s), "stretch_tw": err(a_sc), "stretch_tw_at0": err(a_sc2),
            "flow_tw": err(a_f), "mean_tw": err(mean(a_sc, a_f)), "mean_tw2": err(mean(a_sc2, a_f)),
            "stretch_bias_deg": round(bs, 3)}

if __name__ == "__main__":
    main()
