"""Fitting noise models to paired clean/noisy images by maximum likelihood, with held-out early stopping.

- Models with ``full_batch_mle`` (Gaussian, Poisson: a handful of parameters) are fitted exactly: the
  closed-form / moment initialization followed by full-batch L-BFGS (strong Wolfe) in float64 on up to
  ``max_train_pixels`` training pixels.
- The flow is fitted by minibatch optimization on random ``patch × patch`` crops (same location in both
  images) of the training pixels: Adam (or SGD with momentum 0.9) with an exponential learning-rate decay
  from ``lr`` to ``lr·lr_decay``, gradient-norm clipping, and the held-out NLL evaluated every
  ``eval_every`` steps; the best held-out state is kept and training stops after ``patience`` evaluations
  without improvement. (The original 400k SGD steps at lr 5e-7 are far too slow; see benchmarks/bench_noise.py.)

Losses are the mean negative log density per pixel in nats, with noise in normalized intensity units.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stemtomo.errors import ParameterError
from stemtomo.noise.base import NoiseModel
from stemtomo.noise.config import FitConfig

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]
"""``callback(step, total_steps, status)`` called during fitting (the CLI attaches a progress bar)."""


@dataclasses.dataclass
class FitResult:
    """Outcome of a fit. ``history`` rows: ``(step, train_nll, heldout_nll)`` (nats per pixel)."""

    heldout_nll: float
    best_step: int
    steps: int
    seconds: float
    method: str
    stopped_early: bool = False
    history: list[tuple[int, float, float]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["history"] = [list(r) for r in self.history]
        return d


def _split(clean: Tensor, noisy: Tensor, heldout: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Training images, their usable height (rows above any held-out row), and held-out (noise, clean)."""
    n, ny, _ = clean.shape
    train_imgs = [i for i in range(n) if not bool(heldout[i].all())]
    if not train_imgs or not bool(heldout.any()):
        raise ParameterError("the held-out split left no training or no held-out pixels; use more/larger images")
    rows_bad = heldout[train_imgs].any(dim=(0, 2))
    height = int(torch.nonzero(rows_bad)[0]) if bool(rows_bad.any()) else ny
    idx = torch.tensor(train_imgs, device=clean.device)
    tc, tn = clean[idx, :height], noisy[idx, :height]
    return tc, tn, (noisy - clean)[heldout], clean[heldout], height


def _subset(n: int, k: int, seed: int, device: torch.device) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: min(n, k)].to(device)


def heldout_nll(model: NoiseModel, noise: Tensor, clean: Tensor, chunk: int = 1 << 18) -> float:
    """Mean negative log density (nats/pixel) of ``noise`` given ``clean`` under ``model``."""
    total = 0.0
    with torch.no_grad():
        for s in range(0, noise.numel(), chunk):
            total += float(-model.log_prob(noise[s : s + chunk], clean[s : s + chunk]).double().sum())
    return total / max(1, noise.numel())


def _full_batch_mle(model: NoiseModel, noise: Tensor, clean: Tensor, max_iter: int = 200) -> None:
    """Exact MLE for low-dimensional models: data-driven init, then L-BFGS in float64."""
    model.init_from_data(noise, clean)
    dtype = next(model.parameters()).dtype
    model.double()
    n, c = noise.double(), clean.double()
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = -model.log_prob(n, c).mean()
        loss.backward()
        return loss

    opt.step(closure)
    model.to(dtype)


def fit_noise_model(
    model: NoiseModel,
    clean: Tensor,
    noisy: Tensor,
    heldout: Tensor,
    config: FitConfig | None = None,
    callback: ProgressCallback | None = None,
) -> FitResult:
    """Fit ``model`` in place to paired normalized images and return the held-out NLL and history.

    Parameters
    ----------
    model : a :class:`NoiseModel`; it is moved to ``clean``'s device.
    clean, noisy : float tensors ``(n, ny, nx)`` in [0, 1] on one device (see :mod:`stemtomo.noise.pairs`).
    heldout : boolean ``(n, ny, nx)``: held-out pixels (whole images or a bottom strip of rows).
    config : :class:`FitConfig`.
    callback : ``callback(step, total, status)`` for progress.

    Raises
    ------
    ParameterError
        Bad settings, or a split with no training or no held-out pixels.
    """
    cfg = config or FitConfig()
    cfg.check()
    model.to(clean.device)
    t0 = time.perf_counter()
    tc, tn, h_noise, h_clean = _split(clean, noisy, heldout.to(clean.device).bool())[:4]
    sel = _subset(h_noise.numel(), cfg.max_eval_pixels, cfg.seed + 1, clean.device)
    h_noise, h_clean = h_noise[sel], h_clean[sel]
    if getattr(model, "full_batch_mle", False):
        flat_c, flat_n = tc.reshape(-1), (tn - tc).reshape(-1)
        sel = _subset(flat_c.numel(), cfg.max_train_pixels, cfg.seed, clean.device)
        _full_batch_mle(model, flat_n[sel], flat_c[sel])
        nll = heldout_nll(model, h_noise, h_clean)
        train = heldout_nll(model, flat_n[sel], flat_c[sel])
        if callback is not None:
            callback(1, 1, f"held-out NLL {nll:.4f}")
        return FitResult(nll, 0, 0, time.perf_counter() - t0, "mle-lbfgs", history=[(0, train, nll)])
    with _cpu_threads(cfg.cpu_threads if clean.device.type == "cpu" else 0):
        return _fit_minibatch(model, tc, tn, h_noise, h_clean, cfg, callback, t0)


@contextlib.contextmanager
def _cpu_threads(n: int) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``n = 0``: leave it)."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _optimizer(model: NoiseModel, cfg: FitConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def _fit_minibatch(
    model: NoiseModel,
    tc: Tensor,
    tn: Tensor,
    h_noise: Tensor,
    h_clean: Tensor,
    cfg: FitConfig,
    callback: ProgressCallback | None,
    t0: float,
) -> FitResult:
    n, height, width = tc.shape
    ph, pw = min(cfg.patch, height), min(cfg.patch, width)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    gamma = cfg.lr_decay ** (1.0 / max(1, cfg.iterations))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    dy, dx = torch.meshgrid(torch.arange(ph), torch.arange(pw), indexing="ij")
    best, best_state, best_step, bad, history = math.inf, copy.deepcopy(model.state_dict()), 0, 0, []
    running, step, stopped = 0.0, 0, False
    model.train()
    for step in range(1, cfg.iterations + 1):
        i = torch.randint(0, n, (cfg.batch, 1, 1), generator=gen)
        y = torch.randint(0, height - ph + 1, (cfg.batch, 1, 1), generator=gen) + dy
        x = torch.randint(0, width - pw + 1, (cfg.batch, 1, 1), generator=gen) + dx
        i, y, x = (t.to(tc.device) for t in (i, y, x))
        c, s = tc[i, y, x], tn[i, y, x]
        loss = -model.log_prob(s - c, c).mean()
        if not bool(torch.isfinite(loss)):  # keep the best finite state rather than training on NaN/Inf
            log.warning("non-finite training loss at step %d; stopping with the best held-out state", step)
            stopped = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        value = float(loss.detach())
        running = value if step == 1 else 0.95 * running + 0.05 * value
        if step % cfg.eval_every == 0 or step == cfg.iterations:
            nll = heldout_nll(model, h_noise, h_clean)
            history.append((step, running, nll))
            if nll < best - 1e-5:
                best, best_state, best_step, bad = nll, copy.deepcopy(model.state_dict()), step, 0
            else:
                bad += 1
            log.debug("step %d: train NLL %.4f, held-out NLL %.4f", step, running, nll)
            if cfg.patience and bad >= cfg.patience:
                stopped = True
        if callback is not None:
            callback(step, cfg.iterations, f"NLL {running:.3f} (held-out best {best:.3f})")
        if stopped:
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best, best_step, step, time.perf_counter() - t0, cfg.optimizer, stopped, history)


def fit_from_arrays(
    model: NoiseModel,
    clean: np.ndarray,
    noisy: np.ndarray,
    heldout: np.ndarray,
    config: FitConfig | None = None,
    callback: ProgressCallback | None = None,
    device: torch.device | str = "cpu",
) -> FitResult:
    """:func:`fit_noise_model` on numpy arrays placed on ``device`` (the caller's choice)."""
    t = [torch.as_tensor(a, device=device) for a in (clean, noisy, heldout)]
    return fit_noise_model(model, t[0].float(), t[1].float(), t[2].bool(), config, callback)


__all__ = ["FitConfig", "FitResult", "ProgressCallback", "fit_from_arrays", "fit_noise_model", "heldout_nll"]
