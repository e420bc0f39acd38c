"""Speed options of ``recon``: --compile (with its eager fallback), --precision, and batched host read-backs."""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import numpy as np
import pytest
import torch
from test_recon_phantom import clean_series, phantom, poisson_series, series_image

from stemtomo.core.fields import FieldConfig
from stemtomo.core.render import RenderConfig
from stemtomo.errors import ParameterError
from stemtomo.recon.implicit import accel
from stemtomo.recon.implicit.config import ReconConfig
from stemtomo.recon.implicit.run import build_trainer, reconstruct

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


@pytest.fixture
def warnings_log(caplog):
    """caplog at WARNING for the stemtomo logger."""
    caplog.set_level(logging.WARNING, logger="stemtomo")
    return caplog


@pytest.fixture(scope="module")
def image():
    return series_image(np.clip(poisson_series(clean_series(phantom())), 0, 1))


def cfg(**kw) -> ReconConfig:
    base = dict(method="l2", iterations=12, rays_per_batch=256, val_interval=4, render=RenderConfig(n_samples=8),
                field=FieldConfig(kind="grid"), lr=1e-2)
    return ReconConfig(**{**base, **kw})  # type: ignore[arg-type]


def losses(result) -> list[float]:
    return [row["loss"] for row in result.trainer.history]


def _failing_backend(gm, example_inputs):  # a torch.compile backend that cannot compile anything
    raise RuntimeError("no compiler here")


def test_a_failing_compile_backend_falls_back_to_the_eager_result(image, warnings_log) -> None:
    torch._dynamo.reset()
    torch._dynamo.register_backend(name="stemtomo_test_fails")(_failing_backend)
    eager = reconstruct(image, cfg(), CPU)
    fallback = reconstruct(image, cfg(compile_backend="stemtomo_test_fails"), CPU)
    # the failed first step is redone eagerly from the same random state: the run is the eager run exactly
    assert losses(fallback) == losses(eager)
    assert np.array_equal(fallback.preview, eager.preview)
    assert "training continues uncompiled" in warnings_log.text
    assert not accel.is_compiled(fallback.trainer.field)


def test_an_unknown_compile_backend_is_a_warning_not_an_error(image, warnings_log) -> None:
    run = reconstruct(image, cfg(iterations=2, compile_backend="no-such-backend"), CPU)
    assert run.state.iteration == 2 and "unavailable" in warnings_log.text


def test_compiled_field_trains_like_the_eager_field(image) -> None:
    # dynamo's "eager" backend traces and guards the field's forward without generating code: same numbers
    torch._dynamo.reset()
    eager = reconstruct(image, cfg(iterations=6), CPU)
    compiled = reconstruct(image, cfg(iterations=6, compile_backend="eager"), CPU)
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-6)
    assert np.abs(compiled.preview - eager.preview).max() < 1e-6
    assert not accel.is_compiled(compiled.trainer.field)  # uncompiled after training: export runs eagerly


def test_bf16_autocast_renders_close_to_float32(image) -> None:
    # bfloat16 holds 8 mantissa bits: the field's values carry ~0.4 % error, which exp(-κP) with κ = 7 turns
    # into up to ~2 % on the darkest rays; the sum along the ray, exp and the loss are float32
    run = reconstruct(image, cfg(iterations=4), CPU)
    tr = run.trainer
    u, v, th, _ = tr.data.sample(512, torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = tr.predict(u, v, th, jitter=False, generator=torch.Generator())
        tr.cfg = dataclasses.replace(tr.cfg, precision="bf16")
        half = tr.predict(u, v, th, jitter=False, generator=torch.Generator())
    assert half.dtype == torch.float32
    rel = (half - full).abs() / full
    assert 0 < rel.max() < 3e-2 and rel.mean() < 1.5e-2, (float(rel.max()), float(rel.mean()))  # measured 0.018, 0.0074
    bf16 = reconstruct(image, cfg(precision="bf16"), CPU)
    assert np.isfinite(losses(bf16)).all() and losses(bf16)[-1] < losses(bf16)[0]


def test_tf32_setting_is_restored_after_training() -> None:
    before = torch.backends.cuda.matmul.allow_tf32
    with accel.matmul_precision("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with pytest.raises(ParameterError, match="--precision"):
        cfg(precision="fp16").validate()


def test_batched_read_back_logs_the_same_rows(image) -> None:
    # sync_interval 5: losses are read back five at a time (no device wait per step on a GPU); the history,
    # the model and the callback rows equal the every-step run's, and a stop request lands at a read-back
    every = reconstruct(image, cfg(), CPU)
    rows: list[dict] = []
    grouped = reconstruct(image, cfg(sync_interval=5), CPU, callback=rows.append)
    assert losses(grouped) == losses(every) and [r["iteration"] for r in rows] == list(range(1, 13))
    assert np.array_equal(grouped.preview, every.preview)
    calls: list[dict] = []
    stopped = reconstruct(image, cfg(sync_interval=5, val_interval=100), CPU, callback=calls.append,
                          should_stop=lambda: len(calls) >= 1)
    assert stopped.state.stopped == "interrupted" and stopped.state.iteration == 5


_READ_BACKS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def _no_host_read_backs():
    """Make every Tensor → Python read-back raise (on a GPU each is a synchronization), except inside the
    optimizers' own step, whose step counters live on the host by design."""
    saved = {name: getattr(torch.Tensor, name) for name in _READ_BACKS}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name}() in the training step: a host synchronization on a GPU")
        return method

    def install(methods):
        for name, m in methods.items():
            setattr(torch.Tensor, name, m)

    steps = {cls: cls.step for cls in (torch.optim.Adam, torch.optim.SGD)}

    def unguarded(step):
        def run(self, *args, **kwargs):
            install(saved)
            try:
                return step(self, *args, **kwargs)
            finally:
                install({name: refuse(name) for name in _READ_BACKS})
        return run

    try:
        for cls, step in steps.items():
            cls.step = unguarded(step)  # type: ignore[method-assign]
        install({name: refuse(name) for name in _READ_BACKS})
        yield
    finally:
        install(saved)
        for cls, step in steps.items():
            cls.step = step  # type: ignore[method-assign]


@pytest.mark.parametrize(("method", "field", "extra"), [
    ("l2", "voxel", {}), ("l1", "grid", {}), ("ours", "voxel", {}), ("ours", "grid", {"coarse_to_fine": True}),
    ("l2", "mlp", {"render": RenderConfig(n_samples=4, n_importance=4)}), ("ours", "voxel", {"defocus_max_px": 1.5}),
])
def test_training_steps_read_nothing_back_to_the_host(image, method: str, field: str, extra: dict) -> None:
    # "no host synchronizations in the training loop": between read-backs (every sync_interval steps) a step
    # must queue device work only, for every method and field, warm-up (ours: flow fitted on detached
    # residuals) and main phase alike. The one exception is scheduled: the last warm-up step of ours measures
    # the NLL's TV rescale once (then again at each validation, which reads back anyway).
    tr = build_trainer(image, cfg(method=method, field=FieldConfig(kind=field, mlp_width=32, mlp_depth=2),
                                  warmup=3, **extra), CPU)
    with _no_host_read_backs():
        rows = [tr.step() for _ in range(2)]  # warm-up
    rows.append(tr.step())  # end of the warm-up: TV rescale (ours)
    with _no_host_read_backs():
        rows += [tr.step() for _ in range(2)]  # the method's own loss (the NLL for ours)
    assert [r["phase"] for r in rows][-1] == "main" and all(torch.is_tensor(r["loss"]) for r in rows)
