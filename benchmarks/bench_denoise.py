"""Benchmark of ``stemtomo denoise``: BM3D throughput against ``--jobs`` (worker processes), with the cheap
Gaussian and median filters and their denoising quality for reference.

A stack of K noisy images (N×N, smooth pattern + Gaussian noise σ = 0.05) is denoised with
:func:`stemtomo.denoise.denoise_stack` for each (method, jobs); the time includes starting the worker
processes (``spawn``), as a user sees it. Prints a table and writes ``benchmarks/results/bench_denoise.csv``.

Usage: ``python benchmarks/bench_denoise.py [--quick] [--size 256] [--images 8] [--jobs 1 2]``
(``--quick``: 4 images of 64²).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import numpy as np

from stemtomo.denoise import DenoiseConfig, denoise_stack

RESULTS = Path(__file__).resolve().parent / "results"
SIGMA = 0.05


def noisy_stack(k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    clean = np.stack([0.5 + 0.3 * np.sin(xx / (6 + i)) * np.cos(yy / 9) for i in range(k)]).astype(np.float32)
    return clean, (clean + rng.normal(0, SIGMA, clean.shape)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 images of 64²")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    n, k = (64, 4) if args.quick else (args.size, args.images)
    clean, noisy = noisy_stack(k, n)
    rmse_in = float(np.sqrt(np.mean((noisy - clean) ** 2)))
    runs = [("bm3d", j) for j in args.jobs] + [("gaussian", 1), ("median", 1)]
    rows = []
    for method, jobs in runs:
        t0 = time.perf_counter()
        out, sigmas = denoise_stack(noisy, DenoiseConfig(method=method, jobs=jobs))
        dt = time.perf_counter() - t0
        rows.append({
            "method": method, "jobs": jobs, "images": k, "size": n, "seconds": round(dt, 3),
            "s_per_image": round(dt / k, 4), "images_per_s": round(k / dt, 3),
            "mean_sigma_est": round(float(np.mean(sigmas)), 5), "rmse_in": round(rmse_in, 5),
            "rmse_out": round(float(np.sqrt(np.mean((out - clean) ** 2))), 5),
        })
    keys = list(rows[0])
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, loaded)")
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[key]) for key in keys))
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "bench_denoise.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {RESULTS / 'bench_denoise.csv'}")


if __name__ == "__main__":
    main()
