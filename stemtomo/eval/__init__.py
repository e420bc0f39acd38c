"""Evaluation: 3D/2D similarity metrics (PSNR, MSE, SSIM/DSSIM), the paper's 2D test-projection protocol,
orientation/shift alignment, Fourier shell correlation, reports and figures (METHOD.md §8).

Everything works on numpy arrays / torch tensors (device follows the input); ``stemtomo eval`` wraps it.
"""

from stemtomo.eval.align import AlignConfig, AlignResult, align_volume, apply_transform
from stemtomo.eval.evaluate import EvalConfig, evaluate_stacks, evaluate_volumes, resample_to_shape
from stemtomo.eval.fsc import FscResult, fourier_shell_correlation
from stemtomo.eval.metrics import dssim, minmax, mse, psnr, psnr_from_mse, slab_mask, ssim
from stemtomo.eval.projections import (
    ProjectionConfig,
    paper_test_angles,
    project,
    projection_metrics,
    rotation_matrix,
)
from stemtomo.eval.report import build_report, json_safe, to_json, to_yaml

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
