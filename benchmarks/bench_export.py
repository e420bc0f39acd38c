"""Benchmark of ``stemtomo export`` at scale: peak memory (RSS) and wall time of a 512³ export (issue #8 item 6).

It simulates a small series (``stemtomo simulate``, 32², 21 tilts, slab of 16 px), trains tiny models on it
(``stemtomo recon --method l2``, voxel and grid fields, a few iterations: the export cost does not depend on
how well a model is trained), then exports each at ``--shape N`` (a full-depth N³ cube; the slab fills the
central N/2 planes, the rest is written as zeros without sampling) as float32 and uint16, each in its own
process, and records that process's peak RSS (``os.wait4`` → ``ru_maxrss``, which includes the resident
pages of the memory-mapped output file) and wall time. For comparison, the same volume sampled in memory at
once (``sample_volume`` of the whole grid + ``write_image``), the way a naive export works, and the RSS of
a process that only imports torch and loads the model (the floor under every export).

Target (issue #8): a 512³ export with peak RSS < 2 GB. Prints a table and writes
``benchmarks/results/bench_export.csv`` (``--quick``: N = 128, ``bench_export_quick.csv``).

Measured (2026-11-25, shared 2-core x86_64 box under load, 1 thread, 512³ = 134 M voxels, slab in 256 planes):
chunked export peak RSS 360 MiB (voxel field, float32 and uint16, 5–6 s) and 420–440 MiB (grid field, 29–34 s)
over a 228 MiB floor (torch + model); the in-memory export 1260–1270 MiB (8 s / 85 s). Before the page release
and the running header statistics, the same chunked export peaked at 1300 (float32) / 1050 (uint16) MiB for the
voxel field and 1375 / 1160 MiB for the grid field: mrcfile's ``update_header_stats`` made a full-volume
temporary, and every written page of the mapped file stayed resident.

Usage: ``python benchmarks/bench_export.py [--quick] [--size 512] [--threads 1] [--no-naive]``
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

RESULTS = Path(__file__).resolve().parent / "results"
LOAD_ONLY = """
import sys, torch
from stemtomo.recon.export import load_field
load_field(sys.argv[1], torch.device("cpu"))
"""
NAIVE = """
import sys, torch
from stemtomo.core.fields import sample_volume
from stemtomo.io import write_image
from stemtomo.recon.export import load_field, plan
field, meta, _ = load_field(sys.argv[1], torch.device("cpu"))
n = int(sys.argv[3])
shape, scale = plan(field.volume_shape, shape=(n, n, n))
vol = sample_volume(field, shape, scale=scale).numpy()
write_image(sys.argv[2], vol, meta.copy(kind="volume", tilt_angles_deg=None))
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``cmd`` in a fresh process: ``(wall s, peak RSS MiB of that process, output)``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}")
    return wall, usage.ru_maxrss / 1024.0, out  # Linux: KiB


def stemtomo(*args: object) -> list[str]:
    return [sys.executable, "-m", "stemtomo", *(str(a) for a in args)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 128")
    ap.add_argument("--size", type=int, default=512, help="export N³ (default 512)")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of every process (default 1)")
    ap.add_argument("--iterations", type=int, default=30, help="training steps of the tiny models")
    ap.add_argument("--fields", nargs="+", default=["voxel", "grid"])
    ap.add_argument("--no-naive", action="store_true", help="skip the in-memory comparison")
    args = ap.parse_args()
    n = 128 if args.quick else args.size
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        d = Path(tmp)
        run(stemtomo("simulate", "-o", d / "sim", "--size", 32, "--thickness-px", 16, "--tilts", "-60:60:6",
                     "--dose", 200, "--device", "cpu", "-q"), env)
        for kind in args.fields:
            model = d / f"run_{kind}"
            wall, rss, _ = run(stemtomo("recon", d / "sim" / "noisy.mrc", "-o", model, "--method", "l2", "--field", kind,
                                        "--iterations", args.iterations, "--val-every", 0, "--device", "cpu", "-q"), env)
            print(f"trained {kind}: {wall:.1f} s, peak RSS {rss:.0f} MiB", flush=True)
            jobs = [("export chunked", dtype, stemtomo("export", model, "-o", d / f"v_{dtype}.mrc", "--shape", n,
                                                         "--dtype", dtype, "--device", "cpu", "-q"))
                    for dtype in ("float32", "uint16")]
            jobs.insert(0, ("load model only", "-", [sys.executable, "-c", LOAD_ONLY, str(model)]))
            if not args.no_naive:
                jobs.append(("in memory (naive)", "float32",
                             [sys.executable, "-c", NAIVE, str(model), str(d / "naive.mrc"), str(n)]))
            for method, dtype, cmd in jobs:
                wall, rss, _ = run(cmd, env)
                out = next(d.glob("v_*.mrc"), None) or d / "naive.mrc"
                size_mib = out.stat().st_size / 2**20 if out.exists() else 0.0
                for p in d.glob("*.mrc*"):
                    p.unlink()
                exported = dtype != "-"
                rows.append({"field": kind, "method": method, "dtype": dtype, "shape": f"{n}^3" if exported else "-",
                             "wall_s": round(wall, 2), "peak_rss_mib": round(rss, 1),
                             "file_mib": round(size_mib, 1) if exported else "-",
                             "mvoxel_per_s": round(n**3 / 1e6 / wall, 2) if exported else "-",
                             "under_2gb": rss < 2048, "threads": args.threads})
                print(f"  {method:18s} {dtype:8s} {wall:7.1f} s  peak RSS {rss:7.0f} MiB", flush=True)
    header = list(rows[0])
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in header}
    print()
    print("  ".join(h.ljust(widths[h]) for h in header))
    for r in rows:
        print("  ".join(str(r[h]).ljust(widths[h]) for h in header))
    print(f"\nmachine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs (shared, loaded), "
          f"python {platform.python_version()}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / ("bench_export_quick.csv" if args.quick else "bench_export.csv")
    with target.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
