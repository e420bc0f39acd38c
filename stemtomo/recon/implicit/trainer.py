"""The training loop of the implicit reconstruction: one step = a random batch of rays, the method's loss,
one optimizer step; held-out-tilt validation, best-model selection, early stopping, time limit, and
checkpoint hooks. The library never prints: progress goes to a callback with one dictionary per step.

"Ours" (METHOD §6, FINDINGS): an L2 warm-up during which the flow is fitted on detached residuals, then
the flow NLL with the flow trained jointly (gradients zeroed every step, clipped); the TV weight is
rescaled by the mean over rays of 1/(2·residual variance at the ray's intensity) at the end of the warm-up
and at every validation (:func:`~stemtomo.recon.implicit.losses.nll_tv_scale`), so that it sits on the
MSE's scale under signal-dependent noise too.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from stemtomo.core.fields import Field, sample_volume
from stemtomo.core.render import render
from stemtomo.noise import NoiseModel
from stemtomo.recon.implicit.config import ReconConfig
from stemtomo.recon.implicit.data import RayData, defocus_sigma_px, jitter_rays
from stemtomo.recon.implicit.losses import NLL_METHODS, data_loss, flow_fit_loss, nll_tv_scale, score_name


@dataclasses.dataclass
class TrainState:
    """Counters that a checkpoint carries besides tensors."""

    iteration: int = 0
    best_score: float = math.inf
    best_iteration: int = -1
    bad_validations: int = 0
    tv_scale: float = 1.0
    elapsed_s: float = 0.0
    stopped: str = ""


def make_optimizer(kind: str, params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam or SGD with momentum 0.9 (the paper's two choices)."""
    params = list(params)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def psnr_minmax(volume: torch.Tensor, reference: torch.Tensor) -> float:
    """3D PSNR (dB) of min–max normalized volumes (METHOD §8.2; for synthetic data)."""

    def mm(x: torch.Tensor) -> torch.Tensor:
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo).clamp(min=1e-12)

    mse = float((mm(volume.float()) - mm(reference.float())).square().mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


class Trainer:
    """Fit ``field`` (and a trainable noise model) to the rays of ``data``.

    Parameters
    ----------
    cfg : the run's configuration (validated here).
    data : training/validation rays on the training device.
    field : the density field (already on the device).
    noise_model : required for ``ours`` (trained) and ``ours-sup`` (frozen).
    half_thickness_px : half slab thickness in voxels.
    reference : optional phantom ``(nz, ny, nx)`` on the device; only logged as ``psnr3d``, never used
        for selection.
    """

    def __init__(
        self,
        cfg: ReconConfig,
        data: RayData,
        field: Field,
        noise_model: NoiseModel | None,
        half_thickness_px: float,
        reference: torch.Tensor | None = None,
    ) -> None:
        self.cfg = cfg.validate()
        self.data, self.field, self.noise_model = data, field, noise_model
        self.half_thickness_px = float(half_thickness_px)
        self.reference = reference
        self.nll = cfg.method in NLL_METHODS
        if self.nll and noise_model is None:
            raise ValueError(f"method {cfg.method} needs a noise model")
        self.train_flow = cfg.method == "ours"
        self.generator = torch.Generator(device=data.stack.device).manual_seed(cfg.seed)
        self.opt_field = make_optimizer(cfg.optimizer, field.parameters(), cfg.lr)
        self.opt_flow: torch.optim.Optimizer | None = None
        if noise_model is not None:
            noise_model.requires_grad_(self.train_flow)
            if self.train_flow:
                self.opt_flow = make_optimizer(cfg.flow_optimizer, noise_model.parameters(), cfg.flow_lr)
        self.state = TrainState()
        self.history: list[dict[str, Any]] = []
        self.best_field = copy.deepcopy(field.state_dict())
        self.best_flow = copy.deepcopy(noise_model.state_dict()) if noise_model is not None else None
        self.theta_max = float(data.theta.abs().max())

    # ---- schedule and rendering -------------------------------------------------------------------
    def lr_factor(self, it: int) -> float:
        """Constant until ``lr_decay_start``·iterations, then linear down to 1/``lr_decay_factor``."""
        n = self.cfg.iterations
        start = int(self.cfg.lr_decay_start * n)
        if it < start or n - start <= 0:
            return 1.0
        frac = min(1.0, (it - start) / max(n - start - 1, 1))
        return 1.0 - frac * (1.0 - 1.0 / self.cfg.lr_decay_factor)

    def predict(
        self, u: torch.Tensor, v: torch.Tensor, th: torch.Tensor, *, jitter: bool, generator: torch.Generator
    ) -> torch.Tensor:
        """Rendered intensities; with defocus, the mean over jittered sub-rays (blur kernel of the data)."""
        cfg = self.cfg
        if cfg.defocus_max_px <= 0:
            return render(self.field, u, v, th, self.half_thickness_px, cfg.render, jitter=jitter, generator=generator)
        sigma = defocus_sigma_px(u, th, cfg.defocus_max_px, self.theta_max, (self.data.nx - 1) / 2.0)
        k = cfg.defocus_rays if jitter else max(cfg.defocus_rays, 8)
        acc = torch.zeros_like(u)
        for _ in range(k):
            uj, vj = jitter_rays(u, v, sigma, generator, (self.data.nx - 1) / 2.0, (self.data.ny - 1) / 2.0)
            acc = acc + render(self.field, uj, vj, th, self.half_thickness_px, cfg.render, jitter=jitter,
                               generator=generator)
        return acc / k

    # ---- one step ---------------------------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        """One optimizer step on a fresh random batch; returns the step's log row."""
        cfg, st = self.cfg, self.state
        it = st.iteration
        self.field.set_progress(it / cfg.iterations)
        f = self.lr_factor(it)
        for g in self.opt_field.param_groups:
            g["lr"] = cfg.lr * f
        u, v, th, y = self.data.sample(cfg.rays_per_batch, self.generator)
        pred = self.predict(u, v, th, jitter=True, generator=self.generator)
        warm = self.nll and it < cfg.warmup
        loss_data = (pred - y).square().mean() if warm else data_loss(cfg.method, pred, y, self.noise_model)
        loss = loss_data
        if cfg.tv > 0:
            loss = loss + cfg.tv * st.tv_scale * self.field.tv()
        self.opt_field.zero_grad(set_to_none=True)
        if self.opt_flow is not None:
            self.opt_flow.zero_grad(set_to_none=True)
        loss.backward()
        if self.opt_flow is not None and not warm:
            self._flow_step(f)
        self.opt_field.step()
        self.field.project_()
        if warm and self.opt_flow is not None:
            for _ in range(cfg.flow_steps_warmup):
                self.opt_flow.zero_grad(set_to_none=True)
                assert self.noise_model is not None
                flow_fit_loss(self.noise_model, pred, y).backward()
                self._flow_step(1.0)
        if self.nll and it == max(cfg.warmup, 1) - 1:
            st.tv_scale = self._nll_tv_scale()
        st.iteration += 1
        return {"iteration": st.iteration, "loss": float(loss_data.detach()), "lr": cfg.lr * f,
                "phase": "warmup" if warm else "main"}

    @torch.no_grad()
    def _nll_tv_scale(self, n_rays: int = 8192) -> float:
        """TV rescale for the NLL (:func:`nll_tv_scale`) on ``n_rays`` rays of the warm-up's field, drawn
        with their own generator so the training batches do not change."""
        gen = torch.Generator(device=self.data.stack.device).manual_seed(self.cfg.seed + 15485863)
        u, v, th, y = self.data.sample(n_rays, gen)
        pred = torch.cat([self.predict(u[s:s + 4096], v[s:s + 4096], th[s:s + 4096], jitter=False, generator=gen)
                          for s in range(0, n_rays, 4096)])
        return nll_tv_scale(pred, y)

    def _flow_step(self, lr_factor: float) -> None:
        assert self.opt_flow is not None and self.noise_model is not None
        for g in self.opt_flow.param_groups:
            g["lr"] = self.cfg.flow_lr * lr_factor
        torch.nn.utils.clip_grad_norm_(self.noise_model.parameters(), self.cfg.flow_clip)
        self.opt_flow.step()

    # ---- validation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> float | None:
        """The method's own criterion (MSE / MAE / NLL) on the held-out tilts; None without validation."""
        if self.data.val is None:
            return None
        u, v, th, y = self.data.val
        gen = torch.Generator(device=u.device).manual_seed(self.cfg.seed + 104729)
        total, n = 0.0, 0
        for s in range(0, u.shape[0], 4096):
            sl = slice(s, s + 4096)
            pred = self.predict(u[sl], v[sl], th[sl], jitter=False, generator=gen)
            total += float(data_loss(self.cfg.method, pred, y[sl], self.noise_model)) * pred.shape[0]
            n += pred.shape[0]
        return total / n

    def _rescore_best(self) -> float:
        """Validation score of the selected field under the *current* noise model.

        With a jointly trained flow the NLL also falls because the flow improves; re-scoring the incumbent
        with the same flow keeps the comparison about the field.
        """
        current = copy.deepcopy(self.field.state_dict())
        self.field.load_state_dict(self.best_field)
        try:
            score = self.validate()
        finally:
            self.field.load_state_dict(current)
        return math.inf if score is None else score

    def _select(self, score: float | None, force: bool = False) -> None:
        st = self.state
        if self.nll and st.iteration < self.cfg.warmup and not force:
            return  # the NLL is not comparable with the warm-up's
        if score is not None and self.train_flow and st.best_iteration >= 0:
            st.best_score = self._rescore_best()
        if score is None or score < st.best_score:
            st.best_score = st.best_score if score is None else score
            st.best_iteration = st.iteration
            st.bad_validations = 0
            self.best_field = copy.deepcopy(self.field.state_dict())
            if self.noise_model is not None:
                self.best_flow = copy.deepcopy(self.noise_model.state_dict())
        else:
            st.bad_validations += 1

    def evaluate(self, row: dict[str, Any]) -> None:
        """Validate, select the best model, log the reference PSNR into ``row``; under the NLL also
        re-measure the TV rescale on the current field (its residuals approach the noise as it improves)."""
        if self.nll and self.state.iteration >= self.cfg.warmup:
            self.state.tv_scale = self._nll_tv_scale()
            row["tv_scale"] = self.state.tv_scale
        score = self.validate()
        if score is not None:
            row[f"val_{score_name(self.cfg.method)}"] = score
        self._select(score)
        if self.reference is not None:
            with torch.no_grad():
                s = self.field.volume_shape[2] / self.reference.shape[2]
                vol = sample_volume(self.field, self.reference.shape, scale=s)
            row["psnr3d"] = psnr_minmax(vol, self.reference)

    # ---- the loop ------------------------------------------------------------------------------------
    def run(
        self,
        callback: Callable[[dict[str, Any]], None] | None = None,
        checkpoint: Callable[[Trainer], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainState:
        """Train until ``cfg.iterations``, early stopping, ``max_time_s`` or ``should_stop()``.

        ``checkpoint(self)`` is called every ``checkpoint_interval`` steps, at the end, and on
        KeyboardInterrupt (which is then re-raised).
        """
        cfg, st = self.cfg, self.state
        t0, e0 = time.monotonic(), st.elapsed_s
        st.stopped = ""
        try:
            while st.iteration < cfg.iterations and not st.stopped:
                row = self.step()
                last = st.iteration == cfg.iterations
                if st.iteration % cfg.val_interval == 0 or last:
                    self.evaluate(row)
                st.elapsed_s = e0 + time.monotonic() - t0
                row["time_s"] = st.elapsed_s
                self.history.append(row)
                if callback is not None:
                    callback(row)
                if cfg.patience and st.bad_validations >= cfg.patience:
                    st.stopped = "early_stop"
                elif cfg.max_time_s is not None and st.elapsed_s >= cfg.max_time_s:
                    st.stopped = "time"
                elif should_stop is not None and should_stop():
                    st.stopped = "interrupted"
                if checkpoint is not None and st.iteration % cfg.checkpoint_interval == 0 and not st.stopped:
                    checkpoint(self)
        except KeyboardInterrupt:
            st.stopped = "interrupted"
            if checkpoint is not None:
                checkpoint(self)
            raise
        if not st.stopped:
            st.stopped = "done"
        if self.data.val is None or st.best_iteration < 0:
            self._select(None, force=True)  # no (usable) validation: the final model is the result
        if checkpoint is not None:
            checkpoint(self)
        return st


__all__ = ["TrainState", "Trainer", "make_optimizer", "psnr_minmax"]
