"""Implicit reconstruction (the paper's method and its baselines): fields rendered through the STEM image
formation model, trained with L2/L1 or the noise-model NLL ("Ours", "OursSup")."""

from stemtomo.recon.implicit.accel import Precision
from stemtomo.recon.implicit.checkpoint import read_recon_file, save_checkpoint, save_model_file
from stemtomo.recon.implicit.config import Method, ReconConfig
from stemtomo.recon.implicit.data import RayData
from stemtomo.recon.implicit.distributed import DistContext, init_from_env, launched_by_torchrun
from stemtomo.recon.implicit.run import (
    OUTPUT_NAMES,
    ReconResult,
    build_trainer,
    check_resume_compatible,
    load_resume,
    reconstruct,
)
from stemtomo.recon.implicit.trainer import Trainer, TrainState, psnr_minmax

__all__ = [
    "OUTPUT_NAMES",
    "DistContext",
    "Method",
    "Precision",
    "RayData",
    "ReconConfig",
    "ReconResult",
    "TrainState",
    "Trainer",
    "build_trainer",
    "check_resume_compatible",
    "init_from_env",
    "launched_by_torchrun",
    "load_resume",
    "psnr_minmax",
    "read_recon_file",
    "reconstruct",
    "save_checkpoint",
    "save_model_file",
]
