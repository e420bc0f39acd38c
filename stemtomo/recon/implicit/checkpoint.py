"""Checkpoints and model files of the implicit reconstruction: tensors in safetensors, everything else
(configuration, counters, optimizer hyperparameters and step counts) in the YAML sidecar. Never pickled.

Tensor keys: ``field.*`` and ``flow.*`` (current), ``best.field.*`` and ``best.flow.*`` (selected model),
``optim.field.<param>.<name>`` / ``optim.flow.<param>.<name>`` (optimizer state), ``rng.rays`` (the ray
generator's state), ``state.iteration`` (the step, checked against the sidecar's on restore: tensors and
sidecar are renamed one after the other, and a crash between the two must not resume a mixed state). A model
file holds only ``field.*`` and ``flow.*`` of the selected model.
Writes are atomic (temporary files renamed), so an interrupted write never corrupts the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from stemtomo.errors import ModelFileError
from stemtomo.io import Metadata, load_model, save_model
from stemtomo.recon.implicit.trainer import Trainer, TrainState

CHECKPOINT_SCHEMA = 1
"""Version of the checkpoint layout (``extra.recon.schema``)."""


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state → (tensors, plain scalars for YAML)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def restore_optimizer(
    opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], info: dict[str, Any]
) -> None:
    """Inverse of :func:`flatten_optimizer` (tensors move to the parameters' device)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in _unprefixed(prefix, tensors).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for key, value in (info.get("scalars") or {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in info["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def model_info(trainer: Trainer, extra: dict[str, Any]) -> dict[str, Any]:
    """The ``recon`` block of a sidecar: config, volume geometry, noise model, selection."""
    nm = trainer.noise_model
    return {
        "schema": CHECKPOINT_SCHEMA,
        "config": trainer.cfg.to_dict(),
        "volume_shape": list(trainer.field.volume_shape),
        "length_unit_px": trainer.field.length_unit_px,
        "half_thickness_px": trainer.half_thickness_px,
        "noise_model": None if nm is None else {"kind": nm.kind, "config": nm.config()},
        "state": dataclasses.asdict(trainer.state),
        **extra,
    }


def save_checkpoint(path: str | os.PathLike[str], trainer: Trainer, meta: Metadata, extra: dict[str, Any]) -> Path:
    """Write the full training state to ``path`` (+ sidecar) atomically, replacing the previous one."""
    tensors = _prefixed("field", trainer.field.state_dict())
    tensors.update(_prefixed("best.field", trainer.best_field))
    opt_t, opt_field = flatten_optimizer("optim.field", trainer.opt_field)
    tensors.update(opt_t)
    info = model_info(trainer, extra)
    info["role"] = "checkpoint"
    info["optim_field"] = opt_field
    if trainer.noise_model is not None:
        tensors.update(_prefixed("flow", trainer.noise_model.state_dict()))
        tensors.update(_prefixed("best.flow", trainer.best_flow or {}))
    if trainer.opt_flow is not None:
        opt_t, info["optim_flow"] = flatten_optimizer("optim.flow", trainer.opt_flow)
        tensors.update(opt_t)
    tensors["rng.rays"] = trainer.generator.get_state()
    tensors["state.iteration"] = torch.tensor([trainer.state.iteration], dtype=torch.int64)
    info["history"] = trainer.history
    out = meta.copy(kind="model")
    out.extra["recon"] = info
    return save_model(path, tensors, out, overwrite=True)


def save_model_file(
    path: str | os.PathLike[str], trainer: Trainer, meta: Metadata, extra: dict[str, Any], *, overwrite: bool,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write the selected (best-validation) field and flow as a model file (kind ``model``)."""
    tensors = _prefixed("field", trainer.best_field)
    if trainer.best_flow is not None:
        tensors.update(_prefixed("flow", trainer.best_flow))
    info = model_info(trainer, extra)
    info["role"] = "model"
    out = meta.copy(kind="model")
    out.extra["recon"] = info
    return save_model(path, tensors, out, overwrite=overwrite, provenance=provenance)


def read_recon_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], Metadata, dict[str, Any]]:
    """Load a model or checkpoint file: ``(tensors, metadata, recon info)``; never unpickles.

    Raises
    ------
    ModelFileError
        Not a stemtomo reconstruction model/checkpoint, or a newer layout.
    """
    tensors, meta = load_model(path, kind="model")
    info = meta.extra.get("recon")
    if not isinstance(info, dict) or "config" not in info or "volume_shape" not in info:
        raise ModelFileError(f"{path}: not a stemtomo recon model (no 'recon' block in its sidecar)")
    if int(info.get("schema", 0)) > CHECKPOINT_SCHEMA:
        raise ModelFileError(f"{path}: checkpoint layout {info.get('schema')} is newer than this stemtomo; upgrade")
    return tensors, meta, info


def restore_checkpoint(trainer: Trainer, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Put a checkpoint's state into a freshly built trainer of the same configuration."""
    dev = trainer.data.stack.device
    stamp = tensors.get("state.iteration")
    if stamp is not None and int(stamp.reshape(-1)[0]) != int(info["state"]["iteration"]):
        raise ModelFileError(f"checkpoint tensors are from step {int(stamp.reshape(-1)[0])} but its sidecar from step "
                             f"{info['state']['iteration']} (a crash between the two renames); start a new run")
    try:
        trainer.field.load_state_dict(_unprefixed("field", tensors))
        trainer.best_field = {k: v.to(dev) for k, v in _unprefixed("best.field", tensors).items()}
        if trainer.noise_model is not None:
            trainer.noise_model.load_state_dict(_unprefixed("flow", tensors))
            trainer.best_flow = {k: v.to(dev) for k, v in _unprefixed("best.flow", tensors).items()}
        restore_optimizer(trainer.opt_field, "optim.field", tensors, info["optim_field"])
        if trainer.opt_flow is not None:
            restore_optimizer(trainer.opt_flow, "optim.flow", tensors, info["optim_flow"])
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"checkpoint does not match the configured model ({first})") from None
    trainer.generator.set_state(tensors["rng.rays"])
    names = {f.name for f in dataclasses.fields(TrainState)}
    trainer.state = TrainState(**{k: v for k, v in info["state"].items() if k in names})
    trainer.history = list(info.get("history") or [])


__all__ = [
    "CHECKPOINT_SCHEMA",
    "flatten_optimizer",
    "read_recon_file",
    "restore_checkpoint",
    "restore_optimizer",
    "save_checkpoint",
    "save_model_file",
]
