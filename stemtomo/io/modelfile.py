"""Model files: tensors only (safetensors) plus a YAML sidecar naming the class and hyperparameters.

Loading never executes code from the file: safetensors holds raw tensors, and a ``.pt`` file is only
accepted through ``torch.load(weights_only=True)``, which refuses pickled objects.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Any

from stemtomo.errors import ModelFileError
from stemtomo.io.safety import AtomicOutputs, check_output
from stemtomo.io.sidecar import Metadata, dump_sidecar, read_sidecar, sidecar_path


def save_model(
    path: str | os.PathLike[str],
    state_dict: dict[str, Any],
    meta: Metadata,
    *,
    overwrite: bool = False,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``state_dict`` (tensors) to ``path`` (.safetensors) and ``meta`` to its sidecar, atomically."""
    from safetensors.torch import save_file

    p = check_output(path, overwrite)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    out_meta = meta.copy()
    if provenance is not None:
        out_meta.provenance = [*out_meta.provenance, provenance]
    with AtomicOutputs() as out:
        tmp, tmp_sidecar = out.temp(p), out.temp(sidecar_path(p))
        save_file(tensors, str(tmp))
        tmp_sidecar.write_text(dump_sidecar(out_meta), encoding="utf-8")
        # safetensors creates its file owner-only (0600); give it the mode of every other output (umask)
        os.chmod(tmp, stat.S_IMODE(os.stat(tmp_sidecar).st_mode))
    return p


def load_model(path: str | os.PathLike[str], *, kind: str | None = None) -> tuple[dict[str, Any], Metadata]:
    """Load ``(state_dict, metadata)`` without executing any code from the file.

    Parameters
    ----------
    kind : expected ``meta.kind`` (e.g. ``"noise_model"``); a mismatch is an error.

    Raises
    ------
    ModelFileError
        Missing file or sidecar, wrong kind, newer schema, or a file that is not plain tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: model file not found; check the path")
    # a model is unusable without its sidecar (it names the model class): "delete it" is no fix here
    meta = read_sidecar(p, advice="restore it or re-run the command that wrote the model")
    if meta is None:
        raise ModelFileError(f"{p}: model sidecar {sidecar_path(p).name} is missing; it names the model class")
    if kind is not None and meta.kind != kind:
        raise ModelFileError(f"{p}: is a {meta.kind!r} file, expected a {kind!r} file")
    state = _load_tensors(p)
    return state, meta


def _load_tensors(p: Path) -> dict[str, Any]:
    import torch

    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(f"{p}: not a valid safetensors file ({exc})") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr: one line only
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # torch raises UnpicklingError/RuntimeError subclasses here
        # torch's own message suggests retrying with weights_only=False, i.e. running the file's code: not repeated
        raise ModelFileError(
            f"{p}: refused to load: it is not a plain tensor file (it holds pickled objects or is damaged); "
            "model files must hold tensors only: use the .safetensors file stemtomo wrote"
        ) from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{p}: expected a dictionary of tensors (a state_dict)")
    return obj


__all__ = ["load_model", "save_model"]
