"""Benchmark of ``stemtomo wbp``: WBP against scikit-image ``iradon`` slice by slice, and SIRT per iteration.

For each size N (volume N×N/2×N zyx, odd N so both centres agree; random balls; 41 tilts -60:60:3) it
projects the phantom once with :func:`stemtomo.core.projector.forward_project` (not timed), then times

- stemtomo WBP (:func:`stemtomo.recon.wbp.wbp`, all slices in one chunked ``grid_sample`` pass),
- scikit-image ``iradon`` on each xz-slice (one y row at a time; same ramp filter, linear interpolation,
  angles negated for stemtomo's convention, see tests/test_wbp.py),
- SIRT (:func:`stemtomo.recon.sirt.sirt`, positivity, rays clipped to the phantom's slab), s per iteration,

and reports the agreement of WBP with iradon (correlation; least-squares scale, which differs by the known
factor n·Δθ/π because iradon assumes the tilts span 180°) and each method's RMSE against the phantom
(iradon rescaled by that factor, so both are in units of ρ; ``rmse_wbp_slab``: WBP told the slab
thickness, i.e. masked and with ``restore_mean``). Prints a table and writes
``benchmarks/results/bench_wbp.csv``.

Usage: ``python benchmarks/bench_wbp.py [--quick] [--sizes 65 129] [--sirt-iterations 10] [--threads 1]``
(``--quick``: N = 33).
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
from skimage.transform import iradon

from stemtomo.core.projector import forward_project
from stemtomo.recon.sirt import sirt
from stemtomo.recon.wbp import wbp

RESULTS = Path(__file__).resolve().parent / "results"
ANGLES = np.arange(-60.0, 61.0, 3.0)


def phantom(n: int, seed: int = 0) -> np.ndarray:
    """``(n, n//2, n)`` volume: a slab |z| < n/4 of density 0.1 with 12 random balls of density 0.3–1."""
    rng = np.random.default_rng(seed)
    ny = max(2, n // 2)
    z, y, x = np.meshgrid(*(np.arange(k) - (k - 1) / 2 for k in (n, ny, n)), indexing="ij")
    vol = np.where(np.abs(z) < n / 4, 0.1, 0.0)
    for _ in range(12):
        c = rng.uniform([-n / 5, -ny / 3, -n / 3], [n / 5, ny / 3, n / 3])
        r = rng.uniform(n / 20, n / 8)
        vol[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r] = rng.uniform(0.3, 1.0)
    return vol.astype(np.float32)


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def iradon_volume(lines: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """scikit-image reference: ``iradon`` on each y row's sinogram ``lines[:, y, :].T`` → ``(nx, ny, nx)``."""
    n, ny, nx = lines.shape
    out = np.empty((nx, ny, nx))
    for y in range(ny):
        out[:, y, :] = iradon(lines[:, y, :].T, theta=-angles, filter_name="ramp", interpolation="linear",
                              circle=False, output_size=nx)
    return out


def run(n: int, sirt_iterations: int, device: str) -> dict[str, object]:
    vol = phantom(n)
    truth = torch.tensor(vol, device=device)
    t_proj, lines = timed(lambda: forward_project(truth, ANGLES))
    t_wbp, rec = timed(lambda: wbp(lines, ANGLES, n), repeats=3)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    rec_np = rec.cpu().numpy()
    lines_np = lines.cpu().numpy().astype(np.float64)
    t_sk, ref = timed(lambda: iradon_volume(lines_np, ANGLES))
    slab = float(2 * (n // 4))  # the phantom's slab |z| < n/4
    slab_rec = wbp(lines, ANGLES, n, thickness_px=slab, restore_mean=True).cpu().numpy()
    t_sirt, (srec, _) = timed(
        lambda: sirt(lines, ANGLES, n, iterations=sirt_iterations, positivity=True, thickness_px=slab)
    )
    srec_np = srec.cpu().numpy()

    def rmse(a: np.ndarray) -> float:
        return float(np.sqrt(np.mean((a - vol) ** 2)))

    return {
        "N": n, "shape_zyx": f"{n}x{vol.shape[1]}x{n}", "tilts": len(ANGLES), "device": device,
        "project_s": round(t_proj, 3), "wbp_s": round(t_wbp, 4), "iradon_s": round(t_sk, 3),
        "speedup": round(t_sk / t_wbp, 1),
        "corr_wbp_iradon": round(float(np.corrcoef(rec_np.ravel(), ref.ravel())[0, 1]), 6),
        # least-squares scale of WBP on iradon; iradon weights every tilt by π/(2n) as if the tilts spanned
        # 180°, stemtomo by Δθ/2, so the expected ratio is n·Δθ/π (0.683 for 41 tilts every 3°)
        "scale_wbp_vs_iradon": round(float((rec_np * ref).sum() / (ref * ref).sum()), 5),
        "expected_scale": round(len(ANGLES) * 3.0 / 180.0, 5),
        "rmse_wbp": round(rmse(rec_np), 4), "rmse_wbp_slab": round(rmse(slab_rec), 4), "rmse_iradon": round(rmse(ref * len(ANGLES) * 3.0 / 180.0), 4),
        "sirt_s_per_iter": round(t_sirt / sirt_iterations, 4), "sirt_iters": sirt_iterations,
        "rmse_sirt": round(rmse(srec_np), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 33 only")
    ap.add_argument("--sizes", type=int, nargs="+", default=[65, 129])
    ap.add_argument("--sirt-iterations", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the shared 2-core box thrashes with 2)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [33] if args.quick else args.sizes
    rows = [run(n, args.sirt_iterations, args.device) for n in sizes]
    keys = list(rows[0])
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}")
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "bench_wbp.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {RESULTS / 'bench_wbp.csv'}")


if __name__ == "__main__":
    main()
