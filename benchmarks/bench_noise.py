"""Benchmark: noise models on a synthetic STEM noise process (held-out NLL, JSD, BC, d_BC, fit time).

The process (stemtomo.noise.synthetic): low-dose shot noise with gamma pulse heights (compound
Poisson–gamma), a detector gain and offset, and Gaussian read noise correlated along the scan (AR(1) in x)
— signal dependent, skewed, non-Gaussian and scan correlated. Clean images are smooth random blob images.

Part 1 fits every model (flow, zero-mean flow, Gaussian, heteroscedastic Gaussian, Poisson) with the
library defaults and compares them on the same held-out pixels and bins.
Part 2 is the flow optimizer study behind the defaults: held-out NLL after N steps for Adam and SGD at
several learning rates, including the original recipe (SGD, lr 5e-7).

Usage::

    python benchmarks/bench_noise.py [--quick] [--threads 1]

Writes benchmarks/results/bench_noise.csv, bench_noise_optim.csv and bench_noise.png.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from stemtomo.noise import FitConfig, calibrate, prepare_pairs
from stemtomo.noise.base import build_noise_model
from stemtomo.noise.fit import fit_from_arrays
from stemtomo.noise.plot import plot_noise_histograms
from stemtomo.noise.synthetic import StemNoiseProcess, smooth_images, stem_noise

RESULTS = Path(__file__).resolve().parent / "results"
PROCESS = StemNoiseProcess(dose=4.0, gain=0.9, offset=0.03, read_std=0.03, scan_corr=0.5, pulse_shape=1.0)


def make_data(n: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    clean = smooth_images(n, size, size, rng)
    noisy = stem_noise(clean, PROCESS, rng)
    return prepare_pairs(clean, noisy, joint_normalization=True, heldout_fraction=0.2, seed=seed)


def compare_models(pairs, fit: FitConfig) -> list[dict]:
    variants = [("flow", "flow", {}), ("flow (zero mean)", "flow", {"zero_mean": True}),
                ("gaussian", "gaussian", {}), ("gaussian (heteroscedastic)", "gaussian", {"heteroscedastic": True}),
                ("poisson", "poisson", {})]
    rows, samples, cal = [], {}, None
    for name, kind, cfg in variants:
        cal = calibrate(pairs, [kind], model_configs={kind: cfg}, fit=fit, bins=128)
        res, met = cal.results[kind], cal.metrics[kind]["overall"]
        rows.append({"model": name, "heldout_nll": res.heldout_nll, "jsd": met["jsd"], "bc": met["bc"],
                     "d_bc": met["d_bc"], "fit_s": res.seconds, "steps": res.steps,
                     "worst_band_jsd": max(b["jsd"] for b in cal.metrics[kind]["bands"])})
        samples[name] = cal.samples[kind]
    assert cal is not None
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "bench_noise.png"
    png.unlink(missing_ok=True)
    plot_noise_histograms(png, cal.heldout_noise, cal.heldout_clean,
                          {k: samples[k] for k in ("flow", "gaussian", "poisson")}, cal.edges)
    return rows


def optimizer_study(pairs, steps: list[int]) -> list[dict]:
    settings = [("adam", 3e-2), ("adam", 1e-2), ("adam", 3e-3), ("adam", 1e-3), ("sgd", 1e-3), ("sgd", 5e-7)]
    rows = []
    for opt, lr in settings:
        torch.manual_seed(0)
        model = build_noise_model("flow")
        cfg = FitConfig(iterations=max(steps), optimizer=opt, lr=lr, eval_every=50, patience=0)
        res = fit_from_arrays(model, pairs.clean, pairs.noisy, pairs.heldout, cfg)
        at = {s: nll for s, _, nll in res.history}
        row = {"optimizer": opt, "lr": lr, "seconds": res.seconds, "best_step": res.best_step}
        row.update({f"nll@{s}": at.get(s, float("nan")) for s in steps})
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])
    fmt = [max(len(c), *(len(_f(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(n) for c, n in zip(cols, fmt, strict=True)))
    for r in rows:
        print("  ".join(_f(r[c]).ljust(n) for c, n in zip(cols, fmt, strict=True)))


def _f(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 images of 48², 500-step optimizer study")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny tensors)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, size = (10, 48) if args.quick else (20, 64)
    steps = [100, 250, 500] if args.quick else [250, 500, 1000, 2000, 4000]
    pairs = make_data(n, size, args.seed)
    print(f"synthetic STEM noise: {dataclasses.asdict(PROCESS)}; {n} images of {size}², "
          f"{int(pairs.heldout.sum())} held-out pixels; torch threads {args.threads}")
    t0 = time.perf_counter()
    rows = compare_models(pairs, FitConfig(seed=args.seed))
    print("\nmodels (library defaults; NLL nats/pixel; JSD, d_BC nats, unscaled; 128 bins):")
    print_table(rows)
    write_csv(RESULTS / "bench_noise.csv", rows)
    optim = optimizer_study(pairs, steps)
    print("\nflow optimizer study (held-out NLL after N steps; batch 16 patches of 16²):")
    print_table(optim)
    write_csv(RESULTS / "bench_noise_optim.csv", optim)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; wrote {RESULTS}/bench_noise.csv, bench_noise_optim.csv, bench_noise.png")


if __name__ == "__main__":
    main()
