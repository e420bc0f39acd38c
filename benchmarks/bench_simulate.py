"""Benchmark of ``stemtomo simulate``'s pieces: phantom generation and projection, with a naive reference.

For each size N (phantom N³, slab N/2, 67 tilts -50:50:1.5 as in the paper) it times

- cell phantom generation (:func:`stemtomo.simulate.phantoms.cell_phantom` with the procedural virion),
- stemtomo's projector (:func:`stemtomo.core.projector.forward_project`, chunked ``grid_sample``),
- a naive reference: scikit-image ``radon`` on every xz-slice (one y row at a time),

and checks that the two projectors agree (relative RMS difference of the line integrals over the
central image columns, where both see the whole slab). Prints a table and writes
``benchmarks/results/bench_simulate.csv``.

Usage: ``python benchmarks/bench_simulate.py [--quick] [--sizes 128 256] [--threads 2]``
(``--quick``: N = 64 only).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from skimage.transform import radon

from stemtomo.core.projector import forward_project
from stemtomo.simulate.config import parse_tilt_range
from stemtomo.simulate.phantoms import cell_phantom
from stemtomo.simulate.virion import procedural_virion

RESULTS = Path(__file__).resolve().parent / "results"


def radon_reference(volume: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Line integrals ``(n_tilts, ny, nx)`` by scikit-image ``radon`` on each xz-slice ``volume[:, y, :]``.

    ``radon`` rotates the (square) slice, rows z and columns x, about pixel ``n//2`` and sums over rows;
    with ``circle=False`` it pads to the diagonal and puts the rotation centre at detector bin ``L//2``.
    Its angle runs opposite to stemtomo's θ for this layout (``-angles``), and its centre differs from
    stemtomo's ``(n-1)/2`` by ``δ = (n-1)/2 - n//2`` (-0.5 for even n), so a point at stemtomo's ``u``
    lies at radon's ``u + δ(cosθ + sinθ)``; each projection is resampled there (linear interpolation).
    """
    nz, ny, nx = volume.shape
    if nz != nx:
        raise ValueError("radon_reference needs square xz-slices (nz == nx)")
    th = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    delta = (nx - 1) / 2 - nx // 2
    u = np.arange(nx) - (nx - 1) / 2
    out = np.empty((len(th), ny, nx), dtype=np.float64)
    for y in range(ny):
        sino = radon(volume[:, y, :].astype(np.float64), theta=-np.rad2deg(th), circle=False)
        bins = np.arange(sino.shape[0]) - sino.shape[0] // 2
        for i, t in enumerate(th):
            out[i, y] = np.interp(u + delta * (np.cos(t) + np.sin(t)), bins, sino[:, i], left=0.0, right=0.0)
    return out


def _time(fn, *args, **kwargs):  # noqa: ANN001, ANN202 - tiny local helper
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def bench_size(n: int, angles: np.ndarray, seed: int) -> dict[str, float | int]:
    t = float(n // 2 // 2 * 2)
    particle = procedural_virion(0.25 * t)
    (vol, params), t_phantom = _time(cell_phantom, n, t, np.random.default_rng(seed), particle=particle)
    vt = torch.from_numpy(vol)
    proj, t_ours = _time(forward_project, vt, angles, thickness_px=t)
    ref, t_radon = _time(radon_reference, vol, angles)
    ours = proj.double().numpy()
    # compare where the ray crosses the whole slab inside the volume: |u| ≤ nx/2 - (t/2)·tan(50°)
    margin = int(np.ceil(t / 2 * np.tan(np.deg2rad(np.abs(angles).max())))) + 2
    sl = slice(margin, n - margin)
    diff = ours[:, :, sl] - ref[:, :, sl]
    rel_rms = float(np.sqrt(np.mean(diff**2)) / np.sqrt(np.mean(ref[:, :, sl] ** 2)))
    return {
        "size": n, "thickness_px": t, "n_tilts": len(angles),
        "objects": int(sum(params["placed"].values())),
        "phantom_s": t_phantom, "project_ours_s": t_ours, "project_radon_s": t_radon,
        "speedup": t_radon / t_ours, "rel_rms_diff": rel_rms,
    }


def check_orientation() -> float:
    """Centroid offset (pixels) between the two projectors for a point above the centre at +30°."""
    vol = np.zeros((32, 4, 32))
    vol[24, 2, 15] = 1.0
    a = forward_project(torch.from_numpy(vol), [30.0])[0, 2].numpy()
    b = radon_reference(vol, np.array([30.0]))[0, 2]
    u = np.arange(32) - 15.5
    return float((a * u).sum() / a.sum() - (b * u).sum() / b.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 64 only")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--tilts", default="-50:50:1.5")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [64] if args.quick else args.sizes
    angles = parse_tilt_range(args.tilts)
    offset = check_orientation()
    print(f"orientation check: centroid offset ours - radon = {offset:+.3f} px (point at z0 > 0, +30°)")
    rows = []
    for n in sizes:
        row = bench_size(n, angles, args.seed)
        rows.append(row)
        print(f"  N={n}: done", flush=True)
    head = ["size", "thickness_px", "n_tilts", "objects", "phantom_s", "project_ours_s", "project_radon_s",
            "speedup", "rel_rms_diff"]
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    print(" | ".join(f"{h:>15}" for h in head))
    for r in rows:
        print(" | ".join(f"{r[h]:>15.4g}" if isinstance(r[h], float) else f"{r[h]:>15}" for h in head))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "bench_simulate.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=head)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
