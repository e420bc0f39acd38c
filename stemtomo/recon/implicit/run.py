"""Set up and run an implicit reconstruction from a tilt series, and write its outputs.

Outputs in ``OUTDIR``: ``model.safetensors`` (selected field + flow, kind ``model``, resolved config in the
sidecar), ``checkpoint.safetensors`` (full training state), ``preview.mrc`` (the selected field at the data's
resolution, ρ ∈ [0, 1]), ``train.csv`` (one row per logged step) and ``loss.png``. Every file but the CSV and
PNG has a YAML sidecar.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemtomo.core.fields import build_field, sample_volume
from stemtomo.core.geometry import check_angles, length_unit_px, raw_to_aligned
from stemtomo.core.imaging import normalized_intensities
from stemtomo.errors import InputError, ModelFileError, ParameterError
from stemtomo.io import Image, Metadata, write_image, write_text_atomic
from stemtomo.io.safety import atomic_file
from stemtomo.noise import FlowNoiseModel, NoiseModel
from stemtomo.preprocess.fill import has_no_sidecar, prepared_support
from stemtomo.recon.implicit import distributed as D
from stemtomo.recon.implicit.checkpoint import (
    read_recon_file,
    restore_checkpoint,
    save_checkpoint,
    save_model_file,
)
from stemtomo.recon.implicit.config import ReconConfig
from stemtomo.recon.implicit.data import RayData
from stemtomo.recon.implicit.trainer import Trainer, TrainState
from stemtomo.recon.wbp import slab_depth

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("model.safetensors", "checkpoint.safetensors", "preview.mrc", "train.csv", "loss.png")
"""Files ``stemtomo recon`` writes into its output folder."""


@dataclasses.dataclass
class ReconResult:
    """What a finished (or stopped) run produced."""

    trainer: Trainer
    state: TrainState
    outdir: Path | None
    preview: np.ndarray


def resolve_thickness(cfg: ReconConfig, meta: Metadata, nx: int) -> float:
    """Slab thickness (voxels): the option, else the sidecar's ``thickness_px``, else the image width."""
    t = cfg.thickness_px if cfg.thickness_px is not None else meta.thickness_px
    if t is None:
        log.warning("no slab thickness in the sidecar; using the image width (%d px); set --thickness-px", nx)
        t = float(nx)
    if not t > 0:
        raise ParameterError(f"--thickness-px {t}: must be > 0 (the slab thickness in pixels)")
    return float(t)


def build_trainer(
    image: Image,
    cfg: ReconConfig,
    device: torch.device,
    *,
    noise_model: NoiseModel | None = None,
    reference: np.ndarray | None = None,
    dist: D.DistContext = D.SINGLE,
) -> Trainer:
    """Put the normalized, aligned stack on ``device`` and build field, noise model, rays and trainer
    (under DDP every rank calls this with the same arguments and its own ``dist``).

    Raises
    ------
    InputError
        No tilt angles, or a reference that is not a volume.
    ParameterError
        Bad configuration, ``ours-sup`` without a noise model, or ``ours`` with a noise model that is not a flow.
    """
    cfg = cfg.validate()
    angles = check_angles(image.tilt_angles_deg.tolist(), option="tilt angles")
    norm, _ = normalized_intensities(image.data, image.meta.normalization)
    stack = raw_to_aligned(torch.from_numpy(norm).to(device), image.meta.tilt_axis_angle_deg).contiguous()
    n, ny, nx = stack.shape
    thickness = resolve_thickness(cfg, image.meta, nx)
    torch.manual_seed(cfg.seed)
    shape = (slab_depth(thickness), ny, nx)  # as wbp: the grid of both tomograms is the same for one slab
    field = build_field(cfg.field, shape, length_unit_px(ny, nx), coarse_to_fine=cfg.coarse_to_fine).to(device)
    if cfg.method == "ours-sup" and noise_model is None:
        raise ParameterError("--method ours-sup needs --noise-model FILE (a fitted noise model, see `stemtomo noise fit`)")
    if cfg.method == "ours" and noise_model is None:
        noise_model = FlowNoiseModel(zero_mean=cfg.flow_zero_mean)
    if cfg.method == "ours" and noise_model is not None and noise_model.kind != "flow":
        raise ParameterError(f"--noise-model: a {noise_model.kind} model cannot initialize the flow --method ours "
                             "trains; give a flow model, or use --method ours-sup to keep it fixed")
    if cfg.method in ("l2", "l1"):
        noise_model = None
    if noise_model is not None:
        noise_model = noise_model.to(device)
    ref = None
    if reference is not None:
        if reference.ndim != 3:
            raise InputError(f"--reference: expected a volume (nz, ny, nx), got shape {reference.shape}")
        ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32)).to(device)
    # an alignment's fill and a rotation's padding are not measurements: never trained on
    measured = prepared_support(image.data, image.meta, image.meta.tilt_axis_angle_deg,
                                detect=has_no_sidecar(image.path), device=device)
    if measured is not None:
        log.info("leaving out %.1f %% of the pixels: the fill of the alignment or rotation",
                 100.0 * (1.0 - float(measured.float().mean())))
    data = RayData(stack, angles.tolist(), val_every_kth_tilt=cfg.val_every_kth_tilt,
                   val_max_rays=cfg.val_max_rays, seed=cfg.seed, valid=measured)
    return Trainer(cfg, data, field, noise_model, thickness / 2.0, reference=ref, dist=dist)


def data_fingerprint(image: Image) -> str:
    """BLAKE2b of the prepared stack, its tilt angles and tilt-axis angle (recorded in checkpoints and model
    files as ``data_fingerprint``): a resumed run must train on the very images the checkpoint saw."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(image.data, dtype=np.float32).data)
    h.update(np.asarray(image.tilt_angles_deg, dtype=np.float64).tobytes())
    h.update(np.float64(image.meta.tilt_axis_angle_deg or 0.0).tobytes())
    return h.hexdigest()


def load_resume(outdir: str | os.PathLike[str]) -> tuple[ReconConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``OUTDIR/checkpoint.safetensors``: ``(config, tensors, recon info)``."""
    path = Path(outdir) / "checkpoint.safetensors"
    if not path.is_file():
        raise InputError(f"--resume {outdir}: no checkpoint.safetensors in that folder; check the path")
    tensors, _, info = read_recon_file(path)
    if info.get("role") != "checkpoint":
        raise ModelFileError(f"{path}: is a model file, not a training checkpoint")
    return ReconConfig.from_dict(info["config"]), tensors, info


def check_resume_compatible(saved: ReconConfig, method: str | None, field: str | None) -> None:
    """A checkpoint of another method or field cannot be continued."""
    if method is not None and method != saved.method:
        raise ParameterError(f"--resume: the checkpoint is from --method {saved.method}, not {method}; "
                             "drop --method or start a new run")
    if field is not None and field != saved.field.kind:
        raise ParameterError(f"--resume: the checkpoint is from --field {saved.field.kind}, not {field}; "
                             "drop --field or start a new run")


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """``train.csv`` (columns: union of the rows' keys, first-seen order) and ``loss.png`` beside it."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    write_text_atomic(path / "train.csv", buf.getvalue())
    _plot(path / "loss.png", history)


def _plot(target: Path, history: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    its = [r["iteration"] for r in history]
    ax.plot(its, [r["loss"] for r in history], lw=0.8, label="training loss")
    for key in [k for k in (history[-1] if history else {}) if k.startswith("val_")] or []:
        pts = [(r["iteration"], r[key]) for r in history if key in r]
        ax.plot(*zip(*pts, strict=True), "o-", ms=3, label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    psnr = [(r["iteration"], r["psnr3d"]) for r in history if "psnr3d" in r]
    if psnr:
        ax2 = ax.twinx()
        ax2.plot(*zip(*psnr, strict=True), "s-", color="tab:green", ms=3)
        ax2.set_ylabel("3D PSNR vs reference (dB)", color="tab:green")
    fig.tight_layout()
    with atomic_file(target) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def reconstruct(
    image: Image,
    cfg: ReconConfig,
    device: torch.device,
    outdir: str | os.PathLike[str] | None = None,
    *,
    noise_model: NoiseModel | None = None,
    reference: np.ndarray | None = None,
    resume: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
    overwrite: bool = False,
    provenance: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    dist: D.DistContext = D.SINGLE,
) -> ReconResult:
    """Train and (with ``outdir``) write model, checkpoint, preview, train.csv and loss.png.

    ``resume`` = (tensors, info) from :func:`load_resume` continues that run exactly. On
    KeyboardInterrupt the checkpoint is written and the exception propagates. Under DDP (``dist``, see
    :mod:`~stemtomo.recon.implicit.distributed`) every rank trains and only rank 0 writes files; the
    result's ``outdir`` is None on the other ranks. A checkpoint of other images (:func:`data_fingerprint`) or a
    ``cfg.iterations`` below its step count is a :class:`~stemtomo.errors.ParameterError`, raised before
    anything is written.
    """
    fingerprint = data_fingerprint(image)
    if resume is not None and resume[1].get("data_fingerprint") not in (None, fingerprint):
        raise ParameterError("--resume: the checkpoint was trained on other images (another tilt series, other angles "
                             "or another preparation); pass the same TILTSERIES and preparation options as the first run")
    trainer = build_trainer(image, cfg, device, noise_model=noise_model, reference=reference, dist=dist)
    if resume is not None:
        restore_checkpoint(trainer, *resume)
        if trainer.state.iteration > cfg.iterations:
            raise ParameterError(f"--iterations {cfg.iterations}: the checkpoint has already run "
                                 f"{trainer.state.iteration} steps; pass more to continue it, or drop --resume")
        if trainer.state.stopped == "early_stop":  # continuing on purpose: give it a fresh patience
            trainer.state.bad_validations = 0
    out = Path(outdir) if outdir is not None and dist.is_main else None
    base = _output_meta(image, trainer)
    ckpt = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

        def ckpt(t: Trainer) -> None:
            save_checkpoint(out / "checkpoint.safetensors", t, base, {"data_fingerprint": fingerprint})

    state = trainer.run(callback=callback, checkpoint=ckpt, should_stop=should_stop)
    trainer.field.load_state_dict(trainer.best_field)
    preview = sample_volume(trainer.field, trainer.field.volume_shape).cpu().numpy()
    if out is not None:
        extra = {"best_iteration": state.best_iteration, "best_score": state.best_score, "data_fingerprint": fingerprint}
        save_model_file(out / "model.safetensors", trainer, base, extra, overwrite=True, provenance=provenance)
        write_image(out / "preview.mrc", preview, base.copy(kind="volume", axes="zyx", tilt_angles_deg=None),
                    overwrite=True, provenance=provenance)
        write_history(out, trainer.history)
    return ReconResult(trainer=trainer, state=state, outdir=out, preview=preview)


def _output_meta(image: Image, trainer: Trainer) -> Metadata:
    m = image.meta
    return Metadata(
        kind="model", pixel_size_angstrom=m.pixel_size_angstrom, tilt_angles_deg=m.tilt_angles_deg,
        tilt_axis_angle_deg=0.0, thickness_px=2.0 * trainer.half_thickness_px,
        contrast=trainer.cfg.render.contrast, kappa=trainer.cfg.render.kappa, provenance=list(m.provenance),
        extra={"source_tilt_axis_angle_deg": m.tilt_axis_angle_deg},
    )


__all__ = [
    "OUTPUT_NAMES",
    "ReconResult",
    "build_trainer",
    "check_resume_compatible",
    "data_fingerprint",
    "load_resume",
    "reconstruct",
    "resolve_thickness",
    "write_history",
]
