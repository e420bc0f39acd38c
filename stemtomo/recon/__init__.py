"""Reconstruction: classic weighted back-projection and SIRT (:mod:`stemtomo.recon.wbp`,
:mod:`stemtomo.recon.sirt`), the implicit reconstruction of Kniesel et al. 2022 (:mod:`stemtomo.recon.implicit`),
and export of trained models and volumes (:mod:`stemtomo.recon.export`).

Names load lazily (PEP 562), so importing a configuration does not import torch.

- ``reconstruct_classic(line_integrals, angles, WBPConfig(...))``: WBP or SIRT on aligned line integrals
  (``line_integrals_from_stack`` makes them from a tilt series).
- ``reconstruct_implicit(image, ReconConfig(...), outdir=...)``: train a field (``ours``, ``ours-sup``, ``l2``, ``l1``).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, tuple[str, str]] = {
    "WBPConfig": ("stemtomo.recon.wbp", "WBPConfig"),
    "wbp": ("stemtomo.recon.wbp", "wbp"),
    "line_integrals_from_stack": ("stemtomo.recon.wbp", "line_integrals_from_stack"),
    "reconstruct_classic": ("stemtomo.recon.wbp", "reconstruct"),
    "SIRTConfig": ("stemtomo.recon.sirt", "SIRTConfig"),
    "sirt": ("stemtomo.recon.sirt", "sirt"),
    "ReconConfig": ("stemtomo.recon.implicit.config", "ReconConfig"),
    "Method": ("stemtomo.recon.implicit.config", "Method"),
    "reconstruct_implicit": ("stemtomo.recon.implicit.run", "reconstruct"),
    "read_recon_file": ("stemtomo.recon.implicit.checkpoint", "read_recon_file"),
    "ExportSpec": ("stemtomo.recon.export", "ExportSpec"),
    "load_field": ("stemtomo.recon.export", "load_field"),
    "reproject": ("stemtomo.recon.export", "reproject"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'stemtomo.recon' has no attribute {name!r}")
    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)


__all__ = sorted(_LAZY)
