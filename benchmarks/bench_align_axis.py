"""Benchmark of ``stemtomo align``'s tilt-axis angle and shifts on simulated misaligned series (issue #9).

Each case is a cell phantom (:func:`stemtomo.simulate.phantoms.cell_phantom`, N² images, slab N/3, 41 tilts
-60:60:3) projected in the aligned frame, rotated into a raw frame with tilt-axis angle α (bilinear, as in
tests/test_align.py) and shifted by Gaussian per-tilt shifts (σ = 5 px); "dose 40" adds Poisson noise of 40
counts per pixel to the intensities before taking −log. For each case it runs
:func:`stemtomo.align.coarse_align` side by side with the default :class:`~stemtomo.align.AlignConfig`
("default": stretch refinement averaged with the displacement-direction estimate) and with
``flow_axis=False`` ("stretch": the stretch refinement alone), and reports the signed axis errors (α modulo
180°), the gauge-free RMS shift error of the default (a 3D translation of the specimen removed) and its wall
time. Prints a table and writes ``benchmarks/results/bench_align_axis[_TAG].csv``.

Case sets (``--cases``): ``bench`` (the 12 phantoms above × clean/noisy), ``heldout`` (seeds 11/13 at 96²,
axes 7°/90°/−20°, plus 128² α = 30° seed 11: 14 series never used to choose a setting), ``simulate``
(:func:`stemtomo.simulate.simulate` with its defaults, i.e. ``stemtomo simulate --tilt-axis-angle 7
--shift-sigma-px 5 --dose 40``: cell phantom with viruses, slab N/2, 67 tilts −50…49°, at 64² seeds 1–4
and 128² seeds 1–3; its noisy series is the "dose 40" row), ``haadf`` (like real HAADF series with the tilt
axis near x: ``stemtomo simulate --phantom nanoparticles --contrast df --tilts -60:60:2 --size 256`` with axes
86° and −87.5°, seeds 1/2, σ = 5 px, clean and Poisson dose 200), ``haadf512`` (the same at 512², the size
``align`` bins 1k–4k images to), or ``--size N`` (the bench axes with seeds
3/5/7/11 at N², slab N/3).

``thick`` (held out for the automatic twin correction: cell slabs half the width and more, 96² slab 48 at
axes 7°/−20° seeds 17/19, slab 56 at 90° seed 17, 128² slab 64 at 30° seed 17); with ``--size N`` the bench
axes at N², slab N/2, seeds 31/33 (CSV suffix ``_thick_N``; made to check the thick-slab rule from 192 px).

``roi`` (region-of-interest geometry, as in real data: the specimen extends beyond the field of view on all
sides, so no box edge enters the images): the cell phantom built and misaligned in a field 1.6× as wide,
then the central N² cropped; 96², slabs 32 and 48, axes 7°/90°/−20°, seeds 21/23 (made after the defaults
were chosen); with ``--size N`` at N², slabs N/3 and N/2 (CSV suffix ``_roi_N``).

``--off`` adds a column with ``AlignConfig(twin_correction=False)``, no twin correction (the default before
2026-12-02; CSV suffix ``_off``).
``--twin`` adds a column with ``AlignConfig(twin_correction=True)`` (CSV suffix ``_twin``); with
``--true-slab`` that run is also given the true slab thickness (as a sidecar's ``thickness_px`` would;
suffix ``_twin_slab``).
``--prior-offset D`` adds a column: ``align --tilt-axis-angle (α + D) --axis-search-range 5`` (a
recorded axis D degrees off, refined locally); its CSV gets the suffix ``_prior``.

Usage: ``python benchmarks/bench_align_axis.py [--quick] [--cases bench|heldout|simulate|haadf|haadf512|thick|roi] [--size N]
[--threads 1] [--prior-offset D] [--off] [--twin [--true-slab]]`` (``--quick``: seed 3 only).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from stemtomo.align import AlignConfig, apply_xf, coarse_align, ground_truth, xf_from_alignment
from stemtomo.align.axis import axis_difference
from stemtomo.core.geometry import length_unit_px
from stemtomo.core.projector import forward_project
from stemtomo.simulate.misalign import shift_images
from stemtomo.simulate.phantoms import cell_phantom

RESULTS = Path(__file__).resolve().parent / "results"
ANGLES = np.arange(-60.0, 61.0, 3.0)
CASES = [(96, 32, alpha, seed) for alpha in (7.0, 90.0, -20.0) for seed in (3, 5, 7)] + [
    (128, 40, 7.0, seed) for seed in (3, 5, 7)
]
HELDOUT = [(96, 32, alpha, seed) for alpha in (7.0, 90.0, -20.0) for seed in (11, 13)] + [(128, 42, 30.0, 11)]
SIMULATE = [(64, 32, 7.0, seed) for seed in (1, 2, 3, 4)] + [(128, 64, 7.0, seed) for seed in (1, 2, 3)]
HAADF = [(256, 128, alpha, seed) for alpha in (86.0, -87.5) for seed in (1, 2)]
HAADF512 = [(512, 256, alpha, seed) for alpha in (86.0, -87.5) for seed in (1, 2)]
THICK = [(96, 48, alpha, seed) for alpha in (7.0, -20.0) for seed in (17, 19)] + [(96, 56, 90.0, 17), (128, 64, 30.0, 17)]
ROI = [(96, slab, alpha, seed) for slab in (32, 48) for alpha in (7.0, 90.0, -20.0) for seed in (21, 23)]
ROI_MARGIN = 1.6
HAADF_DOSE = 200.0


def sized_cases(size: int, cases: str = "bench") -> list[tuple[int, int, float, int]]:
    """The bench axes, seeds 3/5/7/11, at ``size²`` (slab N/3); for ``roi`` its axes and seeds (slabs N/3, N/2);
    for ``thick`` the bench axes with seeds 31/33 (slab N/2)."""
    if cases == "thick":
        return [(size, size // 2, alpha, seed) for alpha in (7.0, 90.0, -20.0) for seed in (31, 33)]
    if cases == "roi":
        return [(size, slab, alpha, seed) for slab in (size // 3, size // 2) for alpha in (7.0, 90.0, -20.0)
                for seed in (21, 23)]
    return [(size, size // 3, alpha, seed) for alpha in (7.0, 90.0, -20.0) for seed in (3, 5, 7, 11)]


def misaligned_series(size: int, thickness: int, alpha_deg: float, seed: int, dose: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw line integrals ``(41, size, size)`` and the true raw-frame shifts ``(41, 2)`` (as tests/test_align.py)."""
    vol, _ = cell_phantom(size, thickness, np.random.default_rng(seed))
    lines = forward_project(torch.tensor(vol), ANGLES, thickness_px=thickness) / length_unit_px(size, size)
    aligned = torch.exp(-7.0 * lines).float()
    shifts = np.random.default_rng(seed + 1).normal(0.0, 5.0, (ANGLES.size, 2))
    rot = xf_from_alignment(alpha_deg, np.zeros((ANGLES.size, 2)))[:, :, :2]
    rotate_back = np.concatenate([np.linalg.inv(rot), np.zeros((ANGLES.size, 2, 1))], -1)
    raw = -torch.log(shift_images(apply_xf(aligned, rotate_back), shifts).clamp_min(1e-3))
    if dose:
        counts = torch.poisson(torch.exp(-raw.double()) * dose, generator=torch.Generator().manual_seed(seed))
        raw = -torch.log((counts / dose).clamp_min(1 / (2 * dose)))
    return raw.float().numpy(), shifts


def roi_series(size: int, thickness: int, alpha_deg: float, seed: int, dose: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`misaligned_series` in a field :data:`ROI_MARGIN` × as wide, cropped to the central ``size²``:
    the specimen (and the shifts' fill, up to 5σ) lies beyond every edge of the images."""
    big = 2 * round(ROI_MARGIN * size / 2)
    raw, shifts = misaligned_series(big, thickness, alpha_deg, seed, dose)
    o = (big - size) // 2
    return np.ascontiguousarray(raw[:, o : o + size, o : o + size]), shifts


def simulated_series(size: int, alpha_deg: float, seed: int, dose: float, *, haadf: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``simulate``'s default series with axis α and σ = 5 px shifts: raw line integrals, shifts, angles.
    ``haadf``: nanoparticles, DF contrast, 61 tilts −60:60:2, Poisson dose :data:`HAADF_DOSE`."""
    from stemtomo.align.pipeline import line_integral_stack
    from stemtomo.simulate.config import NoiseConfig, SimulationConfig
    from stemtomo.simulate.simulate import simulate

    kind = dict(phantom="nanoparticles", contrast="df", tilts="-60:60:2") if haadf else {}
    cfg = SimulationConfig(size=size, tilt_axis_angle_deg=alpha_deg, shift_sigma_px=5.0, seed=seed,
                           noise=NoiseConfig(dose=HAADF_DOSE if haadf else 40.0), **kind)
    result = simulate(cfg)
    stack = result.noisy if dose else result.clean
    assert stack is not None and result.shifts_px is not None
    return line_integral_stack(stack, cfg.contrast, cfg.kappa, None), result.shifts_px, result.tilt_angles_deg


def gauge_free_rms(est_xy: np.ndarray, true_xy: np.ndarray, alpha_deg: float, angles: np.ndarray = ANGLES) -> float:
    """RMS shift error without the undeterminable 3D translation (:func:`stemtomo.align.ground_truth.gauge_free_rms`)."""
    return ground_truth.gauge_free_rms(est_xy - true_xy, angles, alpha_deg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 3 only")
    parser.add_argument("--cases", choices=("bench", "heldout", "simulate", "haadf", "haadf512", "thick", "roi"),
                        default="bench")
    parser.add_argument("--size", type=int, default=None, help="the bench axes, seeds 3/5/7/11, at N² (slab N/3); with --cases roi / thick, those sets at N²")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prior-offset", type=float, default=None,
                        help="also refine a given axis α + D within ±5° (--axis-search-range)")
    parser.add_argument("--off", action="store_true", help="also run without the twin correction (the previous default)")
    parser.add_argument("--twin", action="store_true", help="also run with the twin bias correction")
    parser.add_argument("--true-slab", action="store_true", help="give the twin run the true slab thickness")
    args = parser.parse_args()
    if args.size and args.cases not in ("bench", "roi", "thick"):
        parser.error("--size works with --cases bench, roi or thick")
    torch.set_num_threads(args.threads)
    sets = {"bench": CASES, "heldout": HELDOUT, "simulate": SIMULATE, "haadf": HAADF, "haadf512": HAADF512, "thick": THICK,
            "roi": ROI}
    cases = sized_cases(args.size, args.cases) if args.size else sets[args.cases]
    cases = [c for c in cases if c[3] == cases[0][3]] if args.quick else cases
    rows = []
    local_head = ((f" {'local':>8}" if args.prior_offset is not None else "") + (f" {'off':>8}" if args.off else "")
                  + (f" {'twin':>8}" if args.twin else ""))
    print(f"{'N':>4} {'α':>6} {'seed':>4} {'dose':>4} {'stretch':>8} {'default':>8}{local_head} {'shift RMS':>9} {'time':>6}")
    haadf = args.cases in ("haadf", "haadf512")
    for size, thickness, alpha, seed in cases:
        for dose in (0, HAADF_DOSE if haadf else 40):
            if args.cases in ("simulate", "haadf", "haadf512"):
                raw, shifts, angles = simulated_series(size, alpha, seed, dose, haadf=haadf)
            elif args.cases == "roi":
                (raw, shifts), angles = roi_series(size, thickness, alpha, seed, dose), ANGLES
            else:
                (raw, shifts), angles = misaligned_series(size, thickness, alpha, seed, dose), ANGLES
            stretch = coarse_align(raw, angles, AlignConfig(flow_axis=False)).tilt_axis_angle_deg
            t0 = time.perf_counter()
            result = coarse_align(raw, angles, AlignConfig())
            seconds = time.perf_counter() - t0
            error = axis_difference(result.tilt_axis_angle_deg, alpha)
            error_stretch = axis_difference(stretch, alpha)
            rms = gauge_free_rms(result.shifts_xy, shifts, alpha, angles)
            row = {"size": size, "alpha_deg": alpha, "seed": seed, "dose": dose,
                   "axis_error_stretch_deg": round(error_stretch, 3), "axis_error_deg": round(error, 3)}
            local_text = ""
            if args.prior_offset is not None:
                cfg = AlignConfig(tilt_axis_angle_deg=alpha + args.prior_offset, axis_search_range_deg=5.0)
                local = coarse_align(raw, angles, cfg).tilt_axis_angle_deg
                row["axis_error_local_deg"] = round(axis_difference(local, alpha), 3)
                local_text = f" {row['axis_error_local_deg']:+8.2f}"
            if args.off:
                t1 = time.perf_counter()
                off = coarse_align(raw, angles, AlignConfig(twin_correction=False)).tilt_axis_angle_deg
                row["axis_error_off_deg"] = round(axis_difference(off, alpha), 3)
                row["seconds_off"] = round(time.perf_counter() - t1, 2)
                local_text += f" {row['axis_error_off_deg']:+8.2f}"
            if args.twin:
                t1 = time.perf_counter()
                slab = thickness if args.true_slab else None  # the SIMULATE rows carry simulate's N/2
                twin = coarse_align(raw, angles, AlignConfig(twin_correction=True, thickness_px=slab)).tilt_axis_angle_deg
                row["axis_error_twin_deg"] = round(axis_difference(twin, alpha), 3)
                row["seconds_twin"] = round(time.perf_counter() - t1, 2)
                local_text += f" {row['axis_error_twin_deg']:+8.2f}"
            rows.append({**row, "shift_rms_px": round(rms, 3), "seconds": round(seconds, 2)})
            print(f"{size:4d} {alpha:6.1f} {seed:4d} {dose:4g} {error_stretch:+8.2f} {error:+8.2f}{local_text} {rms:9.2f} "
                  f"{seconds:6.1f}", flush=True)
    keys = [("axis_error_stretch_deg", "stretch"), ("axis_error_deg", "default")]
    if args.prior_offset is not None:
        keys.append(("axis_error_local_deg", "local"))
    if args.off:
        keys.append(("axis_error_off_deg", "off"))
    if args.twin:
        keys.append(("axis_error_twin_deg", "twin"))
    for key, label in keys:
        err = np.abs([r[key] for r in rows])
        print(f"{label:>8}: |α error| mean {err.mean():.2f}° max {err.max():.2f}°, < 0.5° in {(err < 0.5).sum()}/{err.size}")
    print(f"default shift RMS mean {np.mean([r['shift_rms_px'] for r in rows]):.2f} px")
    RESULTS.mkdir(exist_ok=True)
    tag = (f"_{args.cases}" if args.cases != "bench" else "") + (f"_{args.size}" if args.size else "")
    name = f"bench_align_axis{tag}{'_prior' if args.prior_offset is not None else ''}{'_off' if args.off else ''}{'_twin' if args.twin else ''}{'_slab' if args.twin and args.true_slab else ''}{'_quick' if args.quick else ''}.csv"
    with open(RESULTS / name, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
