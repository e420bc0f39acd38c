"""Evaluation: 3D/2D similarity metrics (PSNR, MSE, SSIM/DSSIM), the paper's 2D test-projection protocol,
orientation/shift alignment, Fourier shell correlation, reports and figures (METHOD.md §8).

Everything works on numpy arrays / torch tensors (device follows the input); ``stemtomo eval`` wraps it.
Names are imported lazily (PEP 562), so ``stemtomo.eval.config`` can be read without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stemtomo.eval.align import AlignResult, align_volume, apply_transform
    from stemtomo.eval.config import AlignConfig, EvalConfig, ProjectionConfig
    from stemtomo.eval.evaluate import evaluate_stacks, evaluate_volumes, match_grids, resample_to_shape
    from stemtomo.eval.fsc import FscResult, fourier_shell_correlation
    from stemtomo.eval.metrics import dssim, minmax, mse, psnr, psnr_from_mse, slab_mask, ssim
    from stemtomo.eval.projections import paper_test_angles, project, projection_metrics, rotation_matrix
    from stemtomo.eval.report import build_report, json_safe, to_json, to_yaml

_WHERE = {
    "align": ("AlignResult", "align_volume", "apply_transform"),
    "config": ("AlignConfig", "EvalConfig", "ProjectionConfig"),
    "evaluate": ("evaluate_stacks", "evaluate_volumes", "match_grids", "resample_to_shape"),
    "fsc": ("FscResult", "fourier_shell_correlation"),
    "metrics": ("dssim", "minmax", "mse", "psnr", "psnr_from_mse", "slab_mask", "ssim"),
    "projections": ("paper_test_angles", "project", "projection_metrics", "rotation_matrix"),
    "report": ("build_report", "json_safe", "to_json", "to_yaml"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'stemtomo.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stemtomo.eval.{module}"), name)


__all__ = [
    "AlignConfig",
    "AlignResult",
    "EvalConfig",
    "FscResult",
    "ProjectionConfig",
    "align_volume",
    "apply_transform",
    "build_report",
    "dssim",
    "evaluate_stacks",
    "evaluate_volumes",
    "fourier_shell_correlation",
    "json_safe",
    "match_grids",
    "minmax",
    "mse",
    "paper_test_angles",
    "project",
    "projection_metrics",
    "psnr",
    "psnr_from_mse",
    "resample_to_shape",
    "rotation_matrix",
    "slab_mask",
    "ssim",
    "to_json",
    "to_yaml",
]
