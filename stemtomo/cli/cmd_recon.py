"""``stemtomo recon``: implicit reconstruction of a tilt series (Ours, OursSup, L2, L1; any field)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
)
from stemtomo.cli._prepare import (
    DefectThresholdOpt,
    NormalizeTilts,
    NormalizeTiltsOpt,
    RemoveDefectsOpt,
    XfOpt,
    prepare_option_values,
    prepare_options,
)

if TYPE_CHECKING:
    from stemtomo.recon.implicit.config import ReconConfig

DEFAULTS: dict[str, Any] = {
    "iterations": 2000, "rays_per_batch": 1024, "lr": 3e-2, "optimizer": "adam", "tv": 0.005, "flow_lr": 1e-3,
    "flow_optimizer": "adam", "warmup": 50, "val_every_kth_tilt": 7, "val_interval": 50, "patience": 10,
    "checkpoint_interval": 200, "defocus_rays": 1, "precision": "fp32",
    "field.grid_levels": 4, "field.mlp_width": 256, "render.n_samples": 32, "render.n_importance": 0,
}
"""Option defaults, literally: the config dataclasses (ReconConfig, FieldConfig, RenderConfig) import torch,
which ``stemtomo --help`` must not. ``tests/test_cli_imports.py`` checks every value against the dataclasses."""
_D = DEFAULTS


def recon(
    tiltseries: Annotated[Path, typer.Argument(help="Tilt series (MRC/TIFF) with angles (sidecar, .rawtlt or --angles).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (model, checkpoint, preview.mrc, train.csv, loss.png).")],
    method: Annotated[str | None, typer.Option("--method", help="ours | ours-sup | l2 | l1 (default ours; on --resume: the checkpoint's).")] = None,
    field: Annotated[str | None, typer.Option("--field", help="voxel (explicit grid, default) | grid (multi-resolution grid + MLP) | mlp (the paper's).")] = None,
    noise_model: Annotated[Path | None, typer.Option("--noise-model", help="Fitted noise model (required for ours-sup; initializes the flow for ours).")] = None,
    angles: Annotated[Path | None, typer.Option("--angles", help="Tilt angle file (.rawtlt/.tlt), overrides the sidecar.")] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", help=f"Optimizer steps [default: {_D['iterations']}].")] = None,
    rays_per_batch: Annotated[int, typer.Option("--rays-per-batch", help="Rays per step.")] = _D["rays_per_batch"],
    samples: Annotated[int, typer.Option("--samples", help="Stratified samples per ray inside the slab.")] = _D["render.n_samples"],
    importance: Annotated[int, typer.Option("--importance", help="Extra importance samples per ray (0 = off).")] = _D["render.n_importance"],
    lr: Annotated[float | None, typer.Option("--lr", help="Field learning rate [default: voxel 3e-2, grid 1e-2, mlp 5e-4].")] = None,
    optimizer: Annotated[str, typer.Option("--optimizer", help="Field optimizer: adam | sgd.")] = _D["optimizer"],
    flow_lr: Annotated[float, typer.Option("--flow-lr", help="Flow learning rate (ours).")] = _D["flow_lr"],
    flow_optimizer: Annotated[str, typer.Option("--flow-optimizer", help="Flow optimizer: adam | sgd.")] = _D["flow_optimizer"],
    flow_free_mean: Annotated[bool, typer.Option("--flow-free-mean", help="Let the jointly trained flow have a free mean (the paper's form).")] = False,
    warmup: Annotated[int, typer.Option("--warmup", help="L2 warm-up steps before the NLL (ours, ours-sup).")] = _D["warmup"],
    tv: Annotated[float | None, typer.Option("--tv", help=f"TV weight (rescaled by 1/(2·residual variance) under the NLL) [default: {_D['tv']:g}].")] = None,
    coarse_to_fine: Annotated[bool, typer.Option("--coarse-to-fine", help="Grid field: fade in finer levels.")] = False,
    grid_levels: Annotated[int, typer.Option("--grid-levels", help="Grid field: levels.")] = _D["field.grid_levels"],
    mlp_width: Annotated[int, typer.Option("--mlp-width", help="MLP field: hidden width.")] = _D["field.mlp_width"],
    defocus_max_px: Annotated[float, typer.Option("--defocus-max-px", help="Defocus-aware rendering: largest blur σ in pixels (0 = off).")] = 0.0,
    defocus_rays: Annotated[int, typer.Option("--defocus-rays", help="Jittered sub-rays per pixel with --defocus-max-px.")] = _D["defocus_rays"],
    thickness_px: Annotated[float | None, typer.Option("--thickness-px", help="Slab thickness in pixels [default: sidecar, else image width].")] = None,
    bin_factor: Annotated[int, typer.Option("--bin", help="Average-bin the images by this factor in x and y before training (after --xf); the model's voxels are that much larger, and --thickness-px, --defocus-max-px and the sidecar's thickness are read in input pixels.")] = 1,
    contrast: Annotated[str | None, typer.Option("--contrast", help="bf | df [default: sidecar, else --normalize-tilts's kind, else guessed from the images (BF darkens with tilt, DF brightens; once aligned, or with --xf, from the aligned images), else bf].")] = None,
    kappa: Annotated[float | None, typer.Option("--kappa", help="Attenuation constant κ [default: sidecar, else 7].")] = None,
    val_every: Annotated[int, typer.Option("--val-every", help="Hold out every k-th tilt for validation (0 = off).")] = _D["val_every_kth_tilt"],
    val_interval: Annotated[int, typer.Option("--val-interval", help="Validate every N steps.")] = _D["val_interval"],
    patience: Annotated[int, typer.Option("--patience", help="Early stop after N validations without improvement (0 = never).")] = _D["patience"],
    checkpoint_interval: Annotated[int, typer.Option("--checkpoint-interval", help="Checkpoint every N steps.")] = _D["checkpoint_interval"],
    max_time: Annotated[float | None, typer.Option("--max-time", help="Stop after this many seconds (checkpointed).")] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="Phantom volume: logs 3D PSNR to train.csv (never used for selection).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run whose checkpoint is in this folder (pass the same preparation options as the first run). With a larger --iterations the learning-rate schedule is recomputed for the new total, so the rate rises again if the old run had decayed.")] = None,
    precision: Annotated[str, typer.Option("--precision", help="Field arithmetic: fp32 | tf32 (TF32 matmuls on CUDA) | bf16 (bfloat16 autocast of the field; losses stay float32).")] = _D["precision"],
    compile_field: Annotated[bool, typer.Option("--compile", help="torch.compile the field (falls back to eager with a warning when compilation fails).")] = False,
    remove_defects: RemoveDefectsOpt = False,
    defect_threshold: DefectThresholdOpt = None,
    normalize_tilts: NormalizeTiltsOpt = NormalizeTilts.none,
    xf: XfOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Reconstruct a clean tomogram: a density field trained through the STEM forward model (Kniesel et al. 2022).

    Raw series: --remove-defects, --normalize-tilts and --xf prepare the images first (in that order, as
    `stemtomo wbp` does); what they did is recorded in the provenance of every output sidecar.

    Several GPUs or nodes: `torchrun --nproc-per-node N -m stemtomo recon ...` trains data-parallel
    (--rays-per-batch is the total over all ranks; rank 0 writes the outputs).
    """
    setup(quiet, verbose, debug)
    skip = ("quiet", "verbose", "debug", "remove_defects", "defect_threshold", "normalize_tilts", "xf")
    opts = options_dict(**{k: v for k, v in locals().items() if k not in skip})
    prep = prepare_options(remove_defects, defect_threshold, normalize_tilts, xf)
    opts.update(prepare_option_values(prep))
    import dataclasses

    from stemtomo.errors import ParameterError
    from stemtomo.io import check_output_dir, make_provenance, read_volume
    from stemtomo.recon.implicit import run as R

    if bin_factor < 1:
        raise ParameterError(f"--bin {bin_factor}: the binning factor must be ≥ 1")
    if contrast is not None and contrast not in ("bf", "df"):
        raise ParameterError(f"--contrast {contrast!r}: use bf or df")
    resume_state = None
    if resume is not None:
        saved, tensors, rinfo = R.load_resume(resume)
        R.check_resume_compatible(saved, method, field)
        _check_resume_preparation(resume, opts)
        cfg = dataclasses.replace(saved, iterations=iterations or saved.iterations, max_time_s=max_time,
                                  precision=precision, compile_backend="inductor" if compile_field else None)
        resume_state = (tensors, rinfo)
    else:
        cfg = _build_config(opts)
        if bin_factor > 1:  # pixel lengths of the input → voxels of the binned images
            cfg = dataclasses.replace(cfg, thickness_px=None if cfg.thickness_px is None else cfg.thickness_px / bin_factor,
                                      defocus_max_px=cfg.defocus_max_px / bin_factor)
    cfg.validate()
    if iterations is not None and iterations < 1:
        raise ParameterError(f"--iterations {iterations}: must be ≥ 1")
    same_dir = resume is not None and resume.resolve() == output.resolve()
    check_output_dir(output, R.OUTPUT_NAMES, overwrite or same_dir)
    with _joined_ranks(device, verbose, debug) as (dist, dev):
        # prepared on the CPU whatever the training device: the .xf resampling then gives the same bits
        # everywhere, so the data fingerprint of a checkpoint lets it be resumed on another device
        image, preparation = _prepared_image(tiltseries, angles, prep, contrast, "cpu", bin_factor)
        cfg = _with_sidecar_physics(cfg, image.meta, contrast, kappa)
        nm = _load_noise(noise_model, cfg.method) if noise_model is not None else None
        ref = read_volume(reference).data if reference is not None else None
        inputs = [p for p in (tiltseries, noise_model, angles, xf) if p is not None]
        prov = make_provenance("recon", {**opts, "resolved_config": cfg.to_dict(), "preparation": preparation}, inputs)
        stop = _StopFlag()
        r = cfg.render
        sub_rays = cfg.defocus_rays if cfg.defocus_max_px > 0 else 1
        samples_per_step = cfg.rays_per_batch * (r.n_samples + r.n_importance) * sub_rays
        with progress("recon", total=cfg.iterations) as advance, stop.installed():
            if resume_state is not None:
                advance(int(resume_state[1]["state"]["iteration"]))

            def callback(row: dict[str, Any]) -> None:
                score = next((f"{k}={v:.4g}" for k, v in row.items() if k.startswith("val_")), "")
                psnr = f" psnr3d={row['psnr3d']:.2f}" if "psnr3d" in row else ""
                rate = row["iteration"] * samples_per_step / max(float(row["time_s"]), 1e-9)
                advance(1, status=f"loss={row['loss']:.4g} {score}{psnr} {rate:,.0f} samples/s")

            result = R.reconstruct(image, cfg, dev, output, noise_model=nm, reference=ref, resume=resume_state,
                                   provenance=prov, callback=callback, should_stop=stop, dist=dist)
        st = result.state
        if st.stopped == "interrupted":  # outputs and checkpoint are written; a shell pipeline must still stop
            signum = stop.signum or signal.SIGINT
            if not dist.is_main:
                raise typer.Exit(128 + signum)
            from stemtomo.errors import Interrupted

            raise Interrupted(f"interrupted by {signal.Signals(signum).name} at step {st.iteration}; outputs and "
                              f"checkpoint are in {output}: continue with --resume {output}", signum)
        ranks = f" on {dist.world_size} ranks" if dist.enabled else ""
        info(f"recon {cfg.method}/{cfg.field.kind}: {st.iteration} steps ({st.stopped}){ranks}, best step "
             f"{st.best_iteration} score {st.best_score:.5g}, {st.elapsed_s:.1f} s → {output}")


@contextlib.contextmanager
def _joined_ranks(device: str, verbose: bool, debug: bool) -> Iterator[tuple[Any, Any]]:
    """``(DistContext, device)`` for the run: under torchrun join the process group for its duration (ranks > 0
    stay quiet), else a single process on ``--device``."""
    from stemtomo.recon.implicit import distributed as D

    if not D.launched_by_torchrun():
        yield D.SINGLE, resolve_device(device)
        return
    ctx, dev = D.init_from_env(device)
    if not ctx.is_main:
        setup(True, verbose, debug)
    try:
        yield ctx, dev
    except BaseException:
        D.shutdown(wait=False)  # the other ranks may never reach a barrier; torchrun stops them
        raise
    D.shutdown()


def _prepared_image(
    path: Path, angles: Path | None, prep: Any, contrast: str | None, device: Any, bin_factor: int = 1
) -> tuple[Any, dict[str, Any]]:
    """The tilt series read and prepared (defects, per-tilt intensities, ``.xf``, then ``bin_factor``
    average binning, which scales the pixel size and the sidecar's thickness) as an ``Image`` whose
    metadata carry the preparation records, and those records' ``extra`` part (for the provenance)."""
    from stemtomo.cli._prepare import apply_records, prepare_with_contrast
    from stemtomo.errors import InputError
    from stemtomo.io import Image, read_stack

    image = read_stack(path, angles=angles, require_angles=True)
    if image.tilt_angles_deg.size < 2:
        raise InputError(f"{path}: {image.tilt_angles_deg.size} projection; a reconstruction needs a tilt series "
                         "of ≥ 2 images")
    stack, records, contrast = prepare_with_contrast(image, prep, contrast, device)
    meta = apply_records(image.meta, records).copy(contrast=contrast)
    if bin_factor > 1:
        import numpy as np
        import torch

        from stemtomo.recon.wbp import bin_images

        stack = bin_images(torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32)), bin_factor).numpy()
        meta = meta.copy(
            pixel_size_angstrom=None if meta.pixel_size_angstrom is None else meta.pixel_size_angstrom * bin_factor,
            thickness_px=None if meta.thickness_px is None else meta.thickness_px / bin_factor)
        records["extra"]["bin"] = bin_factor
    return Image(data=stack, meta=meta, path=image.path, header=image.header, sources=image.sources), records["extra"]


_PREP_KEYS = ("remove_defects", "defect_threshold", "normalize_tilts", "bin_factor")
_PREP_DEFAULTS = {"bin_factor": 1}
"""Values of preparation options that runs recorded before the option existed."""


def _check_resume_preparation(resume: Path, opts: dict[str, Any]) -> None:
    """A resumed run must see the images prepared as before: compare the preparation options (and the
    ``.xf`` file's SHA-256) with the ``recon`` provenance of ``RESUME/model.safetensors`` when there is one
    (a run killed before its end has none: then nothing can be checked)."""
    from stemtomo.errors import ParameterError
    from stemtomo.io import read_sidecar
    from stemtomo.preprocess.pipeline import file_sha256

    model = resume / "model.safetensors"
    meta = read_sidecar(model) if model.is_file() else None
    runs = [p for p in (meta.provenance if meta else []) if p.get("command") == "recon"]
    saved = runs[-1].get("options", {}) if runs else {}
    if "remove_defects" not in saved:  # no record (or written before these options existed)
        return
    saved_xf = ((saved.get("preparation") or {}).get("alignment") or {}).get("xf_sha256")
    now_xf = file_sha256(opts["xf"]) if opts["xf"] is not None and Path(opts["xf"]).is_file() else None
    changed = [k for k in _PREP_KEYS if saved.get(k, _PREP_DEFAULTS.get(k)) != opts[k]] + (["xf"] if saved_xf != now_xf else [])
    if changed:
        was = ", ".join(f"--{_option(k)} {saved.get(k, _PREP_DEFAULTS.get(k))!s}" for k in changed if k != "xf")
        raise ParameterError(f"--resume {resume}: the run was trained on images prepared otherwise ({', '.join(changed)} "
                             f"differ{'; it had ' + was if was else ''}); pass the same preparation options "
                             "(and the same .xf) as the first run")


def _option(key: str) -> str:
    return "bin" if key == "bin_factor" else key.replace("_", "-")


def _build_config(o: dict[str, Any]) -> ReconConfig:
    from stemtomo.core.fields import FieldConfig
    from stemtomo.core.render import RenderConfig
    from stemtomo.recon.implicit.config import ReconConfig

    method = o["method"] or "ours"
    kind = o["field"] or "voxel"
    tv = o["tv"] if o["tv"] is not None else _D["tv"]
    lr = o["lr"] if o["lr"] is not None else {"mlp": 5e-4, "grid": 1e-2}.get(kind, _D["lr"])
    return ReconConfig(
        method=method, field=FieldConfig(kind=kind, grid_levels=o["grid_levels"], mlp_width=o["mlp_width"]),
        render=RenderConfig(n_samples=o["samples"], n_importance=o["importance"]),
        iterations=o["iterations"] if o["iterations"] is not None else _D["iterations"],
        rays_per_batch=o["rays_per_batch"], lr=lr, optimizer=o["optimizer"], tv=tv,
        coarse_to_fine=o["coarse_to_fine"], flow_lr=o["flow_lr"], flow_optimizer=o["flow_optimizer"],
        flow_zero_mean=not o["flow_free_mean"], warmup=o["warmup"], val_every_kth_tilt=o["val_every"],
        val_interval=o["val_interval"], patience=o["patience"], checkpoint_interval=o["checkpoint_interval"],
        defocus_max_px=o["defocus_max_px"], defocus_rays=o["defocus_rays"], thickness_px=o["thickness_px"],
        max_time_s=o["max_time"], seed=o["seed"], precision=o["precision"],
        compile_backend="inductor" if o["compile_field"] else None,
    )


def _with_sidecar_physics(cfg: ReconConfig, meta: Any, contrast: str | None, kappa: float | None) -> ReconConfig:
    import dataclasses

    from stemtomo.core.imaging import DEFAULT_KAPPA, Contrast
    from stemtomo.errors import ParameterError

    c = contrast or meta.contrast or "bf"
    if c not in {x.value for x in Contrast}:
        raise ParameterError(f"--contrast {c!r}: use bf or df")
    k = kappa if kappa is not None else (meta.kappa or DEFAULT_KAPPA)
    if not k > 0:
        raise ParameterError(f"--kappa {k}: must be > 0")
    return dataclasses.replace(cfg, render=dataclasses.replace(cfg.render, contrast=c, kappa=float(k)))


def _load_noise(path: Path, method: str) -> Any:
    from stemtomo.errors import ParameterError
    from stemtomo.noise import load_noise_model

    if method in ("l2", "l1"):
        raise ParameterError(f"--noise-model is only used by --method ours / ours-sup, not {method}")
    return load_noise_model(path)


class _StopFlag:
    """First Ctrl-C / SIGTERM: finish the step, checkpoint, stop. A second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = 0
        """The first signal received (0: none)."""

    def __call__(self) -> bool:
        return self.requested

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum

    def installed(self) -> Any:
        import contextlib
        import threading

        @contextlib.contextmanager
        def cm() -> Any:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

        return cm()


def register(app: typer.Typer) -> None:
    app.command("recon")(handle_errors(recon))
