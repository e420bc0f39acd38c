"""Run by ``tests/test_recon_ddp.py`` under ``torchrun`` (not collected by pytest): train l2 and ours with
fixed quadrature (no stratified jitter) on every rank and let rank 0 save the previews and logged losses."""

from __future__ import annotations

import sys

import numpy as np
import torch
from test_recon_ddp import exact_configs  # noqa: I001 (tests/ is on sys.path: the caller sets PYTHONPATH)

from stemtomo.io import read_stack
from stemtomo.recon.implicit import distributed as D
from stemtomo.recon.implicit.run import reconstruct


def main(data: str, out: str) -> None:
    torch.set_num_threads(1)
    ctx, dev = D.init_from_env("cpu") if D.launched_by_torchrun() else (D.SINGLE, torch.device("cpu"))
    image = read_stack(data)
    arrays = {}
    for name, cfg in exact_configs().items():
        result = reconstruct(image, cfg, dev, dist=ctx)
        arrays[name] = result.preview
        arrays[name + "_loss"] = np.array([row["loss"] for row in result.trainer.history])
    if ctx.is_main:
        np.savez(out, **arrays)
    D.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
