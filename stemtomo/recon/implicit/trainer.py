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
import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from stemtomo.core.fields import Field, sample_volume
from stemtomo.core.render import render
from stemtomo.noise import NoiseModel
from stemtomo.recon.implicit import accel
from stemtomo.recon.implicit import distributed as D
from stemtomo.recon.implicit.config import ReconConfig
from stemtomo.recon.implicit.data import RayData, defocus_sigma_px, jitter_rays
from stemtomo.recon.implicit.losses import NLL_METHODS, data_loss, flow_fit_loss, nll_tv_scale, score_name
from stemtomo.recon.implicit.optim import make_optimizer, psnr_minmax

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    dist : this process's place in a data-parallel run (:mod:`~stemtomo.recon.implicit.distributed`);
        every rank builds the trainer identically and renders its share of each batch.
    """

    def __init__(
        self,
        cfg: ReconConfig,
        data: RayData,
        field: Field,
        noise_model: NoiseModel | None,
        half_thickness_px: float,
        reference: torch.Tensor | None = None,
        dist: D.DistContext = D.SINGLE,
    ) -> None:
        self.cfg = cfg.validate()
        self.dist = dist
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
        dev = data.stack.device
        # one generator for ray indices and jitter in a single process; under DDP the ray generator is shared
        # (identical on every rank) and each rank's jitter comes from its own, re-seeded every step
        self.jitter_generator = torch.Generator(device=dev) if dist.enabled else self.generator
        # reading losses back waits for a GPU; under DDP each read-back is also two collectives
        self.sync_interval = cfg.sync_interval or (1 if dev.type == "cpu" and not dist.enabled else 25)
        self._compile_unverified = cfg.compile_backend is not None and accel.compile_module(field, cfg.compile_backend)

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
        with accel.autocast(cfg.precision, u.device):
            return self._render(u, v, th, jitter=jitter, generator=generator).float()

    def _render(
        self, u: torch.Tensor, v: torch.Tensor, th: torch.Tensor, *, jitter: bool, generator: torch.Generator
    ) -> torch.Tensor:
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
        """One optimizer step on a fresh random batch; returns the step's log row.

        The row's ``loss`` is a detached 0-d tensor (this rank's share of the batch loss under DDP): reading
        it would wait for the device, so :meth:`run` reads the losses back every ``sync_interval`` steps.
        The first step with ``compile_backend`` set falls back to eager when compilation fails.
        """
        if not self._compile_unverified:
            return self._step()
        gens = [self.generator] + ([self.jitter_generator] if self.jitter_generator is not self.generator else [])
        states = [g.get_state() for g in gens]

        def rewind() -> None:  # redo the step from the same random state: the run is then the eager run
            for g, state in zip(gens, states, strict=True):
                g.set_state(state)

        row = self._eager_retry(self._step, "the first step", rewind)  # compile errors surface here
        self._compile_unverified = False
        return row

    def _step(self) -> dict[str, Any]:
        cfg, st, dist = self.cfg, self.state, self.dist
        it = st.iteration
        self.field.set_progress(it / cfg.iterations)
        f = self.lr_factor(it)
        for g in self.opt_field.param_groups:
            g["lr"] = cfg.lr * f
        u, v, th, y = self.data.sample(cfg.rays_per_batch, self.generator)
        share = 1.0
        if dist.enabled:  # render this rank's rays; weights make the summed gradients the full batch's
            sl = dist.share(u.shape[0])
            u, v, th, y = u[sl], v[sl], th[sl], y[sl]
            share = u.shape[0] / cfg.rays_per_batch
            self.jitter_generator.manual_seed((cfg.seed * 1_000_003 + it) * dist.world_size + dist.rank)
        pred = self.predict(u, v, th, jitter=cfg.train_jitter, generator=self.jitter_generator)
        warm = self.nll and it < cfg.warmup
        loss_data = (pred - y).square().mean() if warm else data_loss(cfg.method, pred, y, self.noise_model)
        loss = loss_data * share
        if cfg.tv > 0:
            loss = loss + cfg.tv * st.tv_scale * self.field.tv() / dist.world_size
        self.opt_field.zero_grad(set_to_none=True)
        if self.opt_flow is not None:
            self.opt_flow.zero_grad(set_to_none=True)
        loss.backward()
        D.all_reduce_grads(self.field.parameters(), dist)
        if self.opt_flow is not None and not warm:
            self._flow_step(f)
        self.opt_field.step()
        self.field.project_()
        if warm and self.opt_flow is not None:
            for _ in range(cfg.flow_steps_warmup):
                self.opt_flow.zero_grad(set_to_none=True)
                assert self.noise_model is not None
                (flow_fit_loss(self.noise_model, pred, y) * share).backward()
                self._flow_step(1.0)
        if self.nll and it == max(cfg.warmup, 1) - 1:
            st.tv_scale = self._nll_tv_scale()
        st.iteration += 1
        return {"iteration": st.iteration, "loss": (loss_data * share).detach(), "lr": cfg.lr * f,
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
        D.all_reduce_grads(self.noise_model.parameters(), self.dist)
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
        gen = torch.Generator(device=u.device).manual_seed(self.cfg.seed + 104729 + self.dist.rank)
        acc = u.new_zeros(2, dtype=torch.float64)  # (sum of losses, count), summed over the ranks' chunks
        for i, s in enumerate(range(0, u.shape[0], 4096)):
            if i % self.dist.world_size != self.dist.rank:
                continue
            sl = slice(s, s + 4096)
            pred = self.predict(u[sl], v[sl], th[sl], jitter=False, generator=gen)
            loss = data_loss(self.cfg.method, pred, y[sl], self.noise_model)
            acc = acc + torch.stack((loss.double() * pred.shape[0], acc.new_tensor(float(pred.shape[0]))))
        total, n = D.all_reduced(acc, self.dist).tolist()
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
        if self.reference is not None and self.dist.is_main:
            row["psnr3d"] = self.reference_psnr()

    def reference_psnr(self) -> float:
        """3D PSNR of the current field against the reference, sampled on the reference's grid (the field is 0
        outside its slab, so this equals ``stemtomo eval`` of the preview zero-padded in z)."""
        if self.reference is None:
            raise ValueError("reference_psnr: the trainer has no reference")
        with torch.no_grad():
            s = self.field.volume_shape[2] / self.reference.shape[2]
            vol = sample_volume(self.field, self.reference.shape, scale=s)
        return psnr_minmax(vol, self.reference)

    # ---- the loop ------------------------------------------------------------------------------------
    def run(
        self,
        callback: Callable[[dict[str, Any]], None] | None = None,
        checkpoint: Callable[[Trainer], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainState:
        """Train until ``cfg.iterations``, early stopping, ``max_time_s`` or ``should_stop()``.

        ``checkpoint(self)`` is called every ``checkpoint_interval`` steps, at the end, and on
        KeyboardInterrupt (which is then re-raised). Rows reach ``callback`` (and the history) in groups of
        ``sync_interval`` steps, with their losses read back in one transfer; the time limit and
        ``should_stop`` are checked at the same points (and agreed by all ranks under DDP).
        """
        cfg, st = self.cfg, self.state
        t0, e0 = time.monotonic(), st.elapsed_s
        st.stopped = ""
        pending: list[dict[str, Any]] = []
        try:
            with accel.matmul_precision(cfg.precision):
                while st.iteration < cfg.iterations and not st.stopped:
                    row = self.step()
                    last = st.iteration == cfg.iterations
                    validated = st.iteration % cfg.val_interval == 0 or last
                    if validated:
                        self._eager_retry(functools.partial(self.evaluate, row), "validation")
                    st.elapsed_s = e0 + time.monotonic() - t0
                    row["time_s"] = st.elapsed_s
                    pending.append(row)
                    due = st.iteration % cfg.checkpoint_interval == 0
                    if not (validated or due or st.iteration % self.sync_interval == 0):
                        continue
                    self._flush(pending, callback)
                    self._check_stop(should_stop)
                    if checkpoint is not None and due and not st.stopped:
                        checkpoint(self)
        except KeyboardInterrupt:
            st.stopped = "interrupted"
            self._flush(pending, callback, collective=False)  # other ranks may be gone: no collective
            if checkpoint is not None:
                checkpoint(self)
            raise
        self._flush(pending, callback)
        if self.cfg.compile_backend is not None:
            accel.uncompile(self.field)  # preview, export and reference PSNR run eagerly
        if not st.stopped:
            st.stopped = "done"
        if self.data.val is None or st.best_iteration < 0:
            self._select(None, force=True)  # no (usable) validation: the final model is the result
        params = list(self.field.parameters()) + (list(self.noise_model.parameters()) if self.noise_model else [])
        D.check_replicas_equal(params, self.dist)
        if checkpoint is not None:
            checkpoint(self)
        return st

    def _eager_retry(self, fn: Callable[[], T], where: str, rewind: Callable[[], None] | None = None) -> T:
        """Run ``fn``; if the compiled field fails in it (compilation happens at the first call and again for
        new input shapes), uncompile, ``rewind`` and run it again eagerly. Validation and selection are
        idempotent; a training step needs its random state rewound."""
        if not accel.is_compiled(self.field):
            return fn()
        try:
            return fn()
        except Exception as exc:
            log.warning("--compile: the compiled field failed in %s (%s); training continues uncompiled", where,
                        accel.describe_failure(exc))
            accel.uncompile(self.field)
            if rewind is not None:
                rewind()
            return fn()

    def _flush(self, pending: list[dict[str, Any]], callback: Callable[[dict[str, Any]], None] | None,
               collective: bool = True) -> None:
        """Read the pending rows' losses back in one transfer (summed over the ranks), log and report them."""
        if not pending:
            return
        losses = torch.stack([r["loss"] for r in pending])
        if collective:
            losses = D.all_reduced(losses, self.dist)
        rows = list(pending)
        pending.clear()
        for row, value in zip(rows, losses.tolist(), strict=True):
            row["loss"] = value
        self.history += rows  # all logged before any callback runs (a callback may raise)
        if callback is not None:
            for row in rows:
                callback(row)

    def _check_stop(self, should_stop: Callable[[], bool] | None) -> None:
        """Early stop, time limit or a stop request (any rank's request stops every rank)."""
        cfg, st = self.cfg, self.state
        if cfg.patience and st.bad_validations >= cfg.patience:
            st.stopped = "early_stop"  # validation scores are identical on every rank
            return
        code = 0
        if cfg.max_time_s is not None and st.elapsed_s >= cfg.max_time_s:
            code = 1
        elif should_stop is not None and should_stop():
            code = 2
        if self.dist.enabled:
            t = torch.tensor([float(code)], device=self.data.stack.device)
            code = int(D.all_reduced(t, self.dist, op="max").item())
        st.stopped = {0: "", 1: "time", 2: "interrupted"}[code]


__all__ = ["TrainState", "Trainer", "make_optimizer", "psnr_minmax"]
