"""Speed options of ``recon`` side by side: precision (fp32 / bf16 autocast), ``--compile`` and data-parallel ranks.

One synthetic series (the time-to-quality series: cell phantom N³, 41 tilts, Poisson dose 30). Part 1 trains
each field with ``l2`` for a fixed number of steps in this process, once per variant (fp32, bf16, compiled
with inductor), and reports steps/s (the first step, where compilation happens, timed apart) and the 3D
PSNR of the validation-selected model: bf16 is an accuracy question on any device, its speed a GPU question.
Part 2 runs ``stemtomo recon`` on the same series as one process and under ``torchrun`` with 2 ranks (the
same total batch), and reports the training time from ``train.csv``.

Writes ``benchmarks/results/bench_accel[_TAG].csv`` and prints both tables.

Usage: ``python benchmarks/bench_accel.py [--quick] [--device cpu|cuda] [--tag gpu] [--ranks 2]``
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from time_to_quality import LR, make_series, selected_psnr

from stemtomo.core.device import resolve_device
from stemtomo.core.fields import FieldConfig
from stemtomo.io import write_image
from stemtomo.recon.implicit import ReconConfig, reconstruct

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"fp32": {}, "bf16": {"precision": "bf16"}, "compiled": {"compile_backend": "inductor"}}


def run_variant(vol, image, field: str, variant: str, steps: int, device: torch.device) -> dict:
    cfg = ReconConfig(method="l2", field=FieldConfig(kind=field), lr=LR[field], iterations=steps, patience=0,
                      val_interval=max(steps // 6, 1), rays_per_batch=512 if field == "mlp" else 1024,
                      **VARIANTS[variant])  # type: ignore[arg-type]
    times: list[float] = []
    t0 = time.monotonic()
    res = reconstruct(image, cfg, device, callback=lambda r: times.append(time.monotonic() - t0))
    first = times[0]
    rest = (times[-1] - first) / max(len(times) - 1, 1)
    return {"part": "variant", "field": field, "variant": variant, "steps": res.state.iteration,
            "first_step_s": first, "steps_per_s": 1.0 / max(rest, 1e-9),
            "psnr_selected": selected_psnr(res.preview, vol)}


def run_ranks(path: Path, field: str, ranks: int, steps: int, device: str, threads: int) -> dict:
    out = path.parent / f"ranks{ranks}_{field}"
    args = ["recon", str(path), "-o", str(out), "--method", "l2", "--field", field, "--iterations", str(steps),
            "--patience", "0", "--device", device, "--overwrite", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
               "-m", "stemtomo", *args]
    else:
        cmd = [sys.executable, "-m", "stemtomo", *args]
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, check=True)
    wall = time.monotonic() - t0
    rows = list(csv.DictReader((out / "train.csv").read_text().splitlines()))
    train_s = float(rows[-1]["time_s"])
    return {"part": "ranks", "field": field, "variant": f"{ranks} rank(s) x {threads} thread(s)", "steps": steps,
            "first_step_s": float(rows[0]["time_s"]), "steps_per_s": steps / train_s, "wall_s": wall,
            "val_mse": float(rows[-1]["val_mse"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 24, fewer steps")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ranks", type=int, default=2, help="ranks of the torchrun part (0 = skip it)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of the single process (ranks get 1 each)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    size = 24 if args.quick else args.size
    steps = {"grid": 60 if args.quick else 300, "mlp": 10 if args.quick else 40}
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    vol, image, _ = make_series(size)
    for field in ("grid", "mlp"):  # untimed warm-up: the first run in a process pays one-off initialization
        run_variant(vol, image, field, "fp32", 3, device)
    results = []
    for field in ("grid", "mlp"):
        for variant in VARIANTS:
            torch._dynamo.reset()
            r = run_variant(vol, image, field, variant, steps[field], device)
            results.append(r)
            print(f"  {field:5s} {variant:9s} {r['steps_per_s']:8.2f} steps/s  {r['psnr_selected']:.2f} dB", flush=True)
    if args.ranks > 1:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "series.mrc"
            write_image(path, image.data, image.meta)
            for field in ("voxel", "grid"):
                n = 10 * steps["grid"] if field == "voxel" else steps["grid"]
                results.append(run_ranks(path, field, 1, n, args.device, args.threads))
                results.append(run_ranks(path, field, args.ranks, n, args.device, 1))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"\nN = {size}, 41 tilts, l2, {where}, load {os.getloadavg()[0]:.1f}")
    print(f"{'part':8s} {'field':6s} {'variant':24s} {'steps':>6s} {'1st step s':>10s} {'steps/s':>8s} {'quality':>9s}")
    for r in results:
        q = f"{r['psnr_selected']:.2f} dB" if "psnr_selected" in r else f"{r['val_mse']:.5f}"
        print(f"{r['part']:8s} {r['field']:6s} {r['variant']:24s} {r['steps']:6d} {r['first_step_s']:10.2f} "
              f"{r['steps_per_s']:8.2f} {q:>9s}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    keys = ["part", "field", "variant", "steps", "first_step_s", "steps_per_s", "psnr_selected", "val_mse", "wall_s"]
    with open(RESULTS / f"bench_accel{'_' + args.tag if args.tag else ''}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(results)


if __name__ == "__main__":
    main()
