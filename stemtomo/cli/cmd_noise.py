"""``stemtomo noise fit`` and ``stemtomo noise sample``: calibrate detector noise models and apply them."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from stemtomo.cli._common import (
    DebugOpt,
    DeviceOpt,
    OverwriteOpt,
    QuietOpt,
    SeedOpt,
    VerboseOpt,
    handle_errors,
    info,
    options_dict,
    progress,
    resolve_device,
    setup,
    stdout_console,
)
from stemtomo.noise.config import FitConfig

noise_app = typer.Typer(
    help="Noise models of the detector: fit them to paired clean/noisy stacks, sample noisy stacks.",
    no_args_is_help=True,
)

_F = FitConfig()
MODEL_KINDS = ("flow", "gaussian", "poisson")


class ModelChoice(str, Enum):
    flow = "flow"
    gaussian = "gaussian"
    poisson = "poisson"
    all = "all"


class OptimizerChoice(str, Enum):
    adam = "adam"
    sgd = "sgd"


def output_paths(model_path: Path, kinds: tuple[str, ...]) -> tuple[dict[str, Path], Path, Path]:
    """Model files per kind, the report and the PNG for ``-o MODEL`` (``MODEL_<kind>.safetensors`` for all)."""
    from stemtomo.errors import ParameterError

    if model_path.suffix not in ("", ".safetensors"):
        raise ParameterError(f"-o {model_path}: noise models are written as .safetensors; use MODEL.safetensors")
    base = model_path.with_suffix("")
    if len(kinds) == 1:
        models = {kinds[0]: base.with_name(base.name + ".safetensors")}
    else:
        models = {k: base.with_name(f"{base.name}_{k}.safetensors") for k in kinds}
    return models, base.with_name(base.name + ".report.yaml"), base.with_name(base.name + ".hist.png")


def fit(
    clean: Annotated[Path, typer.Argument(help="Clean (long-exposure) stack, MRC/TIFF (n, ny, nx).")],
    noisy: Annotated[Path, typer.Argument(help="Noisy (short-exposure) stack of the same areas, same shape.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file MODEL.safetensors.")],
    model: Annotated[ModelChoice, typer.Option("--model", help="Noise model; 'all' fits the three and compares.")] = ModelChoice.flow,
    joint_norm: Annotated[bool, typer.Option("--joint-norm/--independent-norm", help="One robust min–max for both stacks, or one each (the paper's default).")] = False,
    renormalize: Annotated[bool, typer.Option("--renormalize", help="Normalize even when both sidecars say the stacks already are (e.g. simulate output).")] = False,
    register: Annotated[bool, typer.Option("--register", help="Sub-pixel phase-correlation registration of each pair (clean shifted onto noisy).")] = False,
    heldout: Annotated[float, typer.Option("--heldout", help="Held-out fraction: whole images (≥ 5 images) or bottom rows.")] = 0.1,
    iterations: Annotated[int, typer.Option("--iterations", help="Maximum flow optimizer steps.")] = _F.iterations,
    optimizer: Annotated[OptimizerChoice, typer.Option("--optimizer", help="Flow optimizer.")] = OptimizerChoice(_F.optimizer),
    lr: Annotated[float, typer.Option("--lr", help="Initial learning rate (flow).")] = _F.lr,
    lr_decay: Annotated[float, typer.Option("--lr-decay", help="Final LR as a fraction of --lr (exponential decay).")] = _F.lr_decay,
    batch: Annotated[int, typer.Option("--batch", help="Patches per step (flow).")] = _F.batch,
    patch: Annotated[int, typer.Option("--patch", help="Patch side in pixels.")] = _F.patch,
    patience: Annotated[int, typer.Option("--patience", help="Held-out evaluations without improvement before stopping (0: never).")] = _F.patience,
    zero_mean: Annotated[bool, typer.Option("--zero-mean", help="Flow with z0 = 0 in every layer: symmetric, zero-mean noise.")] = False,
    layers: Annotated[str, typer.Option("--layers", help="Flow layers: UNCOND,COND.")] = "4,4",
    hidden: Annotated[int, typer.Option("--hidden", help="Hidden width of the conditional MLPs.")] = 16,
    heteroscedastic: Annotated[bool, typer.Option("--heteroscedastic", help="Gaussian variance affine in clean intensity.")] = False,
    bins: Annotated[int, typer.Option("--bins", help="Histogram bins for JSD/BC.")] = 128,
    bands: Annotated[int, typer.Option("--bands", help="Clean-intensity bands for the per-band metrics.")] = 4,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Fit noise models to paired clean/noisy stacks; write the model(s), MODEL.report.yaml and MODEL.hist.png."""
    setup(quiet, verbose, debug)
    from stemtomo.errors import ParameterError
    from stemtomo.io import check_output

    kinds = MODEL_KINDS if model is ModelChoice.all else (model.value,)
    model_paths, report_path, png_path = output_paths(output, kinds)
    n_uncond, n_cond = _parse_layers(layers)
    if not 0.0 < heldout < 1.0:
        raise ParameterError(f"--heldout {heldout}: must be in (0, 1)")
    if bins < 4 or bands < 1:
        raise ParameterError(f"--bins {bins} / --bands {bands}: need ≥ 4 bins and ≥ 1 band")
    cfg = FitConfig(iterations=iterations, optimizer=optimizer.value, lr=lr, lr_decay=lr_decay, batch=batch,
                    patch=patch, patience=patience, seed=seed)
    cfg.check()
    for p in model_paths.values():
        check_output(p, overwrite)
    check_output(report_path, overwrite, with_sidecar=False)
    check_output(png_path, overwrite, with_sidecar=False)
    dev = resolve_device(device)
    configs = {"flow": {"n_uncond": n_uncond, "n_cond": n_cond, "hidden": hidden, "zero_mean": zero_mean},
               "gaussian": {"heteroscedastic": heteroscedastic}}
    opts = options_dict(model=model.value, joint_norm=joint_norm, renormalize=renormalize, register=register, heldout=heldout, fit=_plain(cfg),
                        model_configs=configs, bins=bins, bands=bands, device=str(dev), seed=seed)
    _run_fit(clean, noisy, kinds, configs, cfg, dev, opts, (model_paths, report_path, png_path), overwrite)


def _parse_layers(text: str) -> tuple[int, int]:
    from stemtomo.errors import ParameterError

    try:
        a, b = (int(x) for x in text.split(","))
    except ValueError:
        raise ParameterError(f"--layers {text!r}: expected UNCOND,COND like 4,4") from None
    if a < 0 or b < 0 or a + b == 0:
        raise ParameterError(f"--layers {text!r}: need non-negative counts and at least one layer")
    return a, b


def _plain(cfg: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(cfg)


def _run_fit(clean_path: Path, noisy_path: Path, kinds: tuple[str, ...], configs: dict[str, Any], cfg: FitConfig,
             dev: Any, opts: dict[str, Any], outputs: tuple[dict[str, Path], Path, Path], overwrite: bool) -> None:
    """Read, prepare, calibrate, write (all outputs were checked by the caller)."""
    import yaml

    from stemtomo.io import make_provenance, read_stack, write_text_atomic
    from stemtomo.noise import save_noise_model
    from stemtomo.noise.calibration import calibrate
    from stemtomo.noise.pairs import prepare_pairs
    from stemtomo.noise.plot import plot_noise_histograms

    model_paths, report_path, png_path = outputs
    c_img, n_img = read_stack(clean_path), read_stack(noisy_path)
    records = None if opts["renormalize"] else (c_img.meta.normalization, n_img.meta.normalization)
    pairs = prepare_pairs(c_img.data, n_img.data, joint_normalization=bool(opts["joint_norm"]), records=records,
                          register=bool(opts["register"]), heldout_fraction=float(opts["heldout"]), seed=cfg.seed,
                          names=(str(clean_path), str(noisy_path)))
    total = sum(cfg.iterations if k == "flow" else 1 for k in kinds)
    with progress("fitting", total=total) as advance:

        def make_cb(kind: str) -> Any:
            done = [0]

            def cb(step: int, steps: int, status: str) -> None:
                advance(step - done[0], status=f"{kind}: {status}")
                done[0] = step

            return cb

        cal = calibrate(pairs, kinds, model_configs=configs, fit=cfg, device=dev, bins=int(opts["bins"]),
                        n_bands=int(opts["bands"]), callback=make_cb)
    prov = make_provenance("stemtomo noise fit", opts, [clean_path, noisy_path])
    report = cal.report(pairs.record)
    report["provenance"] = prov
    for kind, path in model_paths.items():
        extra = {"normalization": pairs.record["normalization"], "intensity_units": "normalized [0, 1]",
                 "fit": {"heldout_nll": cal.results[kind].heldout_nll, **cal.metrics[kind]["overall"]},
                 "report": report_path.name}
        save_noise_model(path, cal.models[kind].cpu(), overwrite=overwrite, provenance=prov, extra=extra)
    write_text_atomic(report_path, yaml.safe_dump(_yaml_plain(report), sort_keys=False, width=120))
    plot_noise_histograms(png_path, cal.heldout_noise, cal.heldout_clean, cal.samples, cal.edges, int(opts["bands"]))
    _print_table(cal.table())
    info(f"wrote {', '.join(str(p) for p in model_paths.values())}, {report_path}, {png_path}")


def _yaml_plain(value: Any) -> Any:
    import math

    if isinstance(value, dict):
        return {str(k): _yaml_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _yaml_plain(value.tolist())
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from stemtomo.cli._common import STATE

    if STATE.quiet:
        return
    table = Table(title="noise models on held-out pixels (JSD, d_BC in nats, unscaled)", title_justify="left")
    for col in ("model", "held-out NLL", "JSD", "BC", "d_BC", "fit s", "steps"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['heldout_nll']:.4f}", f"{r['jsd']:.4f}", f"{r['bc']:.4f}",
                      f"{r['d_bc']:.4f}", f"{r['fit_seconds']:.1f}", str(r["steps"]))
    stdout_console().print(table)


def sample(
    clean: Annotated[Path, typer.Argument(help="Clean stack (MRC/TIFF); normalized to [0, 1] unless its sidecar says it is.")],
    model: Annotated[Path, typer.Option("--model", help="Noise model file from `stemtomo noise fit`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Noisy stack to write (MRC/TIFF).")],
    clip: Annotated[bool, typer.Option("--clip/--no-clip", help="Clip noisy intensities to [0, 1].")] = True,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write noisy = clean + noise sampled from a fitted model (conditioned on the clean intensities)."""
    setup(quiet, verbose, debug)
    import numpy as np

    from stemtomo.core.imaging import normalized_intensities
    from stemtomo.io import check_output, make_provenance, read_stack, write_image
    from stemtomo.io.stack import check_not_constant
    from stemtomo.noise import load_noise_model
    from stemtomo.noise.metrics import sample_model

    check_output(output, overwrite)
    noise_model = load_noise_model(model)
    img = read_stack(clean)
    check_not_constant(img.data, img.path)
    dev = resolve_device(device)
    data, norm = normalized_intensities(img.data, img.meta.normalization)
    noisy = data + sample_model(noise_model.to(dev), data, seed=seed)
    if clip:
        noisy = np.clip(noisy, 0.0, 1.0)
    meta = img.meta.copy(normalization=norm)
    meta.extra["noise"] = {"model": str(model), "model_kind": noise_model.kind, "clipped": clip, "seed": seed}
    prov = make_provenance("stemtomo noise sample", options_dict(model=model, clip=clip, device=str(dev), seed=seed),
                           [clean, model])
    write_image(output, noisy.astype(np.float32), meta, overwrite=overwrite, provenance=prov)
    info(f"wrote {output} ({noise_model.kind} noise, seed {seed}{', clipped to [0, 1]' if clip else ''})")


def register(app: typer.Typer) -> None:
    noise_app.command("fit")(handle_errors(fit))
    noise_app.command("sample")(handle_errors(sample))
    app.add_typer(noise_app, name="noise")
