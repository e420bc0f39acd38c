"""Time to quality of the implicit reconstruction: 3D PSNR against wall time for each field and method.

One synthetic series: the cell-like phantom (:func:`stemtomo.simulate.phantoms.cell_phantom`, N³, slab
N·3/8), 41 tilts -60:60:3 projected with :func:`stemtomo.core.projector.forward_project`, bright field
``exp(-7P)``, low-dose noise ``Poisson(30·I)/30`` (FINDINGS). For each field (``mlp`` = the paper's
9×256 MLP with L = 10, ``grid``, ``voxel``) and method (``l2``, ``ours``) it trains for a fixed wall-time
budget with the CLI defaults (per-field learning rate, TV 0.005) and logs, at every
validation, the 3D PSNR (min–max normalized volumes) of the current field; the model selected by the
held-out-tilt validation is scored at the end. The reference is never used for selection.

Writes ``benchmarks/results/time_to_quality.csv`` (one row per validation) and ``time_to_quality.png``,
and prints a summary table (steps/s, PSNR of the selected model, best PSNR seen, time to reach it).

Usage: ``python benchmarks/time_to_quality.py [--quick] [--budget 60] [--size 32] [--fields mlp grid voxel]``
(``--quick``: N = 24, 12 s per run); on a GPU add ``--device cuda --tag gpu`` (and ``--precision``,
``--compile``) so the CPU results stay. Timings depend on the machine and its load; the table says which.
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

from stemtomo.core.device import resolve_device
from stemtomo.core.fields import FieldConfig
from stemtomo.core.geometry import length_unit_px
from stemtomo.core.imaging import intensity
from stemtomo.core.projector import forward_project
from stemtomo.io import Image, Metadata
from stemtomo.recon.implicit import ReconConfig, reconstruct
from stemtomo.simulate.phantoms import cell_phantom

RESULTS = Path(__file__).resolve().parent / "results"
ANGLES = np.arange(-60.0, 61.0, 3.0)
LR = {"mlp": 5e-4, "grid": 1e-2, "voxel": 3e-2}
TV = {"l2": 0.005, "ours": 0.005}


def make_series(n: int, seed: int = 0) -> tuple[np.ndarray, Image, float]:
    thickness = round(n * 3 / 8)
    vol, _ = cell_phantom(n, thickness, np.random.default_rng(seed))
    p = forward_project(torch.from_numpy(vol), ANGLES, thickness_px=thickness) / length_unit_px(n, n)
    clean = intensity(p).numpy()
    noisy = (np.random.default_rng(seed + 1).poisson(30.0 * clean) / 30.0).astype(np.float32)
    meta = Metadata(kind="tilt_series", tilt_angles_deg=ANGLES.tolist(), thickness_px=float(thickness),
                    normalization={"range01": True})
    return vol, Image(data=noisy, meta=meta), float(thickness)


def run_one(vol: np.ndarray, image: Image, field: str, method: str, budget: float, val_interval: int,
            device: torch.device, precision: str = "fp32", compile_backend: str | None = None) -> dict:
    cfg = ReconConfig(method=method, field=FieldConfig(kind=field), lr=LR[field], tv=TV[method],
                      iterations=100_000, val_interval=val_interval, patience=0, max_time_s=budget,
                      rays_per_batch=512 if field == "mlp" else 1024, warmup=50, precision=precision,
                      compile_backend=compile_backend)
    rows: list[dict] = []
    t0 = time.monotonic()
    res = reconstruct(image, cfg, device, reference=vol,
                      callback=lambda r: rows.append(dict(r)) if "psnr3d" in r else None)
    wall = time.monotonic() - t0
    st = res.state
    selected = res.trainer.reference_psnr()  # the selected model, scored as the curve's points are
    best = max(rows, key=lambda r: r["psnr3d"]) if rows else {"psnr3d": float("nan"), "time_s": float("nan")}
    return {"field": field, "method": method, "steps": st.iteration, "train_s": st.elapsed_s, "wall_s": wall,
            "steps_per_s": st.iteration / max(st.elapsed_s, 1e-9), "selected_iteration": st.best_iteration,
            "psnr_selected": selected, "psnr_best_seen": best["psnr3d"], "time_best_seen_s": best["time_s"],
            "curve": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 24 and 12 s per run")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--budget", type=float, default=60.0, help="wall-time budget per run (s)")
    ap.add_argument("--fields", nargs="+", default=["mlp", "grid", "voxel"])
    ap.add_argument("--methods", nargs="+", default=["l2", "ours"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (a GPU run: use --tag gpu)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the field (inductor)")
    ap.add_argument("--tag", default="", help="suffix of the result files (time_to_quality_TAG.csv, ...)")
    args = ap.parse_args()
    size, budget = (24, 12.0) if args.quick else (args.size, args.budget)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    stem = "time_to_quality" + (f"_{args.tag}" if args.tag else "")
    vol, image, _ = make_series(size)
    results = []
    for field in args.fields:
        for method in args.methods:
            r = run_one(vol, image, field, method, budget, val_interval=10 if field == "mlp" else 25, device=device,
                        precision=args.precision, compile_backend="inductor" if args.compile else None)
            results.append(r)
            print(f"  {field:6s} {method:5s} {r['steps']:6d} steps  {r['psnr_selected']:.2f} dB", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{stem}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["field", "method", "iteration", "time_s", "psnr3d", "val_score"])
        for r in results:
            for row in r["curve"]:
                val = next((v for k, v in row.items() if k.startswith("val_")), "")
                w.writerow([r["field"], r["method"], row["iteration"], f"{row['time_s']:.3f}", f"{row['psnr3d']:.3f}", val])
    _plot(results, RESULTS / f"{stem}.png")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"\nN = {size}, {len(ANGLES)} tilts, Poisson dose 30, budget {budget:.0f} s/run, {where}, "
          f"{args.threads} threads, {args.precision}{' compiled' if args.compile else ''}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'field':6s} {'method':6s} {'steps':>6s} {'steps/s':>8s} {'sel.it':>7s} {'PSNR sel':>9s} "
          f"{'PSNR best':>10s} {'t best':>7s}")
    for r in results:
        print(f"{r['field']:6s} {r['method']:6s} {r['steps']:6d} {r['steps_per_s']:8.2f} {r['selected_iteration']:7d} "
              f"{r['psnr_selected']:9.2f} {r['psnr_best_seen']:10.2f} {r['time_best_seen_s']:7.1f}")
    with open(RESULTS / f"{stem}_summary.csv", "w", newline="") as fh:
        keys = [k for k in results[0] if k != "curve"]
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows([{k: r[k] for k in keys} for r in results])


def _plot(results: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r in results:
        c = r["curve"]
        if c:
            ax.plot([x["time_s"] for x in c], [x["psnr3d"] for x in c], "-" if r["method"] == "ours" else "--",
                    label=f"{r['field']} {r['method']}")
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("3D PSNR vs phantom (dB)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)


if __name__ == "__main__":
    main()
