"""The noise-model interface, the registry of model kinds, and noise-model files.

A noise model is a conditional density of the additive residual ``noise = noisy - clean`` given the clean
intensity ``clean`` (both in normalized [0, 1] intensity units), evaluated elementwise (pixels are
independent given the clean image). Every model can evaluate ``log p(noise | clean)`` and draw exact samples.

Model files hold tensors only (safetensors) plus a YAML sidecar with ``kind: noise_model`` and, under
``extra``: ``model_kind`` (``flow`` / ``gaussian`` / ``poisson``), ``config`` (the constructor arguments)
and ``noise_schema`` (this module's file layout version). Loading never executes code from the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from stemtomo.errors import InputError, ModelFileError, ParameterError

NOISE_SCHEMA = 1
"""Version of the noise-model file layout (``extra.noise_schema``); a newer one is refused on load."""

_REGISTRY: dict[str, type[NoiseModel]] = {}


class NoiseModel(torch.nn.Module):
    """Base class: a conditional density ``p(noise | clean)`` over elementwise residuals.

    Subclasses set ``kind`` and implement :meth:`log_prob`, :meth:`sample` and :meth:`config`, and
    register with :func:`register_noise_model`. Parameters live on the module's device; move the module
    with ``.to(device)`` to where the data are (library code never chooses a device).
    """

    kind: ClassVar[str] = ""
    full_batch_mle: ClassVar[bool] = False
    """True for low-dimensional models fitted exactly by full-batch MLE (see :mod:`stemtomo.noise.fit`)."""

    def log_prob(self, noise: Tensor, clean: Tensor) -> Tensor:
        """Elementwise log density (nats, per unit of normalized intensity) of ``noise`` given ``clean``.

        Parameters
        ----------
        noise : residuals ``noisy - clean``, any shape.
        clean : clean intensities in [0, 1], same shape as ``noise``.

        Returns
        -------
        Tensor of the same shape as ``noise``.
        """
        raise NotImplementedError

    def sample(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw noise (same shape, dtype and device as ``clean``) conditioned on ``clean``."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Plain hyperparameters such that ``type(self)(**config())`` rebuilds the architecture."""
        raise NotImplementedError

    def init_from_data(self, noise: Tensor, clean: Tensor) -> None:
        """Optional data-driven initialization before gradient fitting (closed-form MLE where one exists)."""
        return None

    def forward(self, noise: Tensor, clean: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(noise, clean)


def register_noise_model(cls: type[NoiseModel]) -> type[NoiseModel]:
    """Class decorator adding a :class:`NoiseModel` subclass to the registry under ``cls.kind``."""
    if not cls.kind:
        raise TypeError(f"{cls.__name__} must set a non-empty 'kind'")
    _REGISTRY[cls.kind] = cls
    return cls


def noise_model_kinds() -> list[str]:
    """Names of the registered model kinds (``flow``, ``gaussian``, ``poisson``)."""
    _import_builtin()
    return sorted(_REGISTRY)


def _import_builtin() -> None:
    # Importing registers the built-in models (kept here to avoid import cycles).
    from stemtomo.noise import flow, gaussian, poisson  # noqa: F401


def build_noise_model(kind: str, **config: Any) -> NoiseModel:
    """Build a noise model of ``kind`` with constructor arguments ``config``.

    Raises
    ------
    ParameterError
        If ``kind`` is unknown or the configuration does not fit the model.
    """
    _import_builtin()
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise ParameterError(f"noise model {kind!r} is unknown; use one of {', '.join(sorted(_REGISTRY))}")
    try:
        return cls(**config)
    except TypeError as exc:
        raise ParameterError(f"noise model {kind!r}: bad configuration {config!r} ({exc})") from None


def save_noise_model(
    path: str | os.PathLike[str],
    model: NoiseModel,
    *,
    overwrite: bool = False,
    provenance: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as tensors (safetensors) plus its sidecar (``kind: noise_model``), atomically.

    Parameters
    ----------
    path : output file, normally ``*.safetensors``.
    extra : further plain values for the sidecar (e.g. the normalization used while fitting, fit summary).

    Raises
    ------
    OutputError
        If the file or its sidecar exists and ``overwrite`` is False, or the folder is not writable.
    """
    from stemtomo.io import Metadata, save_model

    info: dict[str, Any] = dict(extra or {})
    info.update({"model_kind": model.kind, "config": model.config(), "noise_schema": NOISE_SCHEMA})
    meta = Metadata(kind="noise_model", extra=info)
    return save_model(path, model.state_dict(), meta, overwrite=overwrite, provenance=provenance)


def load_noise_model(path: str | os.PathLike[str]) -> NoiseModel:
    """Load a noise model written by :func:`save_noise_model` (on the CPU; move it with ``.to``).

    Raises
    ------
    ModelFileError
        Missing file or sidecar, a file of another kind, a newer schema, an unknown ``model_kind``,
        or tensors that do not match the configured architecture.
    """
    from stemtomo.io import load_model

    try:
        state, meta = load_model(path, kind="noise_model")
    except ModelFileError:
        raise
    except InputError as exc:  # e.g. a sidecar with a newer schema version
        raise ModelFileError(str(exc)) from None
    schema = meta.extra.get("noise_schema", NOISE_SCHEMA)
    if not isinstance(schema, int) or schema > NOISE_SCHEMA:
        raise ModelFileError(
            f"{path}: noise model schema {schema!r} is newer than this stemtomo understands ({NOISE_SCHEMA}); "
            "upgrade stemtomo"
        )
    kind = meta.extra.get("model_kind")
    config = meta.extra.get("config") or {}
    _import_builtin()
    if kind not in _REGISTRY:
        raise ModelFileError(
            f"{path}: unknown noise model_kind {kind!r} in the sidecar; expected one of {', '.join(sorted(_REGISTRY))}"
        )
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: sidecar 'config' must be a mapping, got {type(config).__name__}")
    try:
        model = build_noise_model(str(kind), **config)
        model.load_state_dict(state, strict=True)
    except (ParameterError, RuntimeError) as exc:
        first = str(exc).splitlines()[0]
        raise ModelFileError(f"{path}: tensors do not match the {kind} model in the sidecar ({first})") from None
    model.eval()
    return model


def standard_normal(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, 1) draws of ``shape`` with ``like``'s dtype/device, using ``generator`` wherever it lives."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    z = torch.randn(shape, dtype=like.dtype, device=generator.device, generator=generator)
    return z.to(like.device)


__all__ = [
    "NOISE_SCHEMA",
    "NoiseModel",
    "build_noise_model",
    "load_noise_model",
    "noise_model_kinds",
    "register_noise_model",
    "save_noise_model",
    "standard_normal",
]
