"""Data-parallel training across processes (``torchrun --nproc-per-node N -m stemtomo recon …``).

Every rank holds the whole tilt series and an identical copy of the field (and flow): same seed, same
initialization. Each step every rank draws the *same* random batch of ``rays_per_batch`` rays (one shared
ray generator, so the union over ranks is exactly the single-process batch) and renders its own share
(rays ``rank, rank + N, …``); each rank's data loss is weighted by its share of the batch and the
regularizer by ``1 / N``, so the all-reduced *sum* of the gradients is the gradient of the single-process
loss. Identical gradients and optimizers keep the replicas identical (checked at the end of training).
The stratified jitter of each rank comes from its own generator, re-seeded every step from (seed, step,
rank), so a resumed run continues exactly. Rank 0 writes the checkpoints and outputs.

Backends: NCCL when the ranks train on CUDA devices (rank r on ``cuda:LOCAL_RANK``), gloo on the CPU.
Launch with ``torchrun`` (single node or multi-node, see ``examples/slurm_recon.sh``); it sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

from stemtomo.errors import DeviceError, StemtomoError


@dataclasses.dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run."""

    rank: int = 0
    """Global rank (0 writes outputs)."""
    world_size: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this node (selects the GPU)."""

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and reports progress."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's items of a batch of ``n``: ``rank, rank + world_size, …``."""
        return slice(self.rank, n, self.world_size)


SINGLE = DistContext()
"""The single-process context."""


def launched_by_torchrun() -> bool:
    """True when the environment of a multi-process ``torchrun`` launch is present: ``WORLD_SIZE`` > 1 with
    ``RANK`` and ``MASTER_ADDR`` (a stray ``WORLD_SIZE`` alone, as some cluster setups export, is ignored)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return False
    return world > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def device_for_rank(spec: str, local_rank: int) -> torch.device:
    """The device of this rank for ``--device spec``: ``cuda:LOCAL_RANK`` for ``auto``/``cuda`` when CUDA is
    present, else the CPU for ``auto``/``cpu``.

    Raises
    ------
    DeviceError
        ``cuda:N`` (each rank takes its own GPU), or ``cuda`` without enough GPUs.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec not in ("auto", "cuda"):
        raise DeviceError(f"--device {spec}: under torchrun every rank uses cuda:LOCAL_RANK; pass --device cuda "
                          "(or auto, or cpu) and choose GPUs with CUDA_VISIBLE_DEVICES")
    if not torch.cuda.is_available():
        raise DeviceError("--device cuda: CUDA is not available on this machine; use --device cpu")
    if local_rank >= torch.cuda.device_count():
        raise DeviceError(f"torchrun: local rank {local_rank} but only {torch.cuda.device_count()} CUDA device(s) on "
                          "this node; lower --nproc-per-node")
    return torch.device("cuda", local_rank)


def init_from_env(spec: str, timeout_s: float = 1800.0) -> tuple[DistContext, torch.device]:
    """Join the process group of a ``torchrun`` launch: ``(context, this rank's device)``.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; NCCL on CUDA devices, gloo on the CPU.

    Raises
    ------
    DeviceError
        See :func:`device_for_rank`.
    """
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = device_for_rank(spec, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s)
        if device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
            dist.init_process_group(backend, timeout=timeout, device_id=device)  # binds NCCL to this GPU eagerly
        else:
            dist.init_process_group(backend, timeout=timeout)
    return DistContext(rank=rank, world_size=world, local_rank=local), device


def shutdown(*, wait: bool = True) -> None:
    """Leave the process group (no-op when none was joined).

    ``wait``: first meet every rank at a barrier, so that no rank tears its connections down while a peer
    still uses them (gloo then aborts the peer: "terminate called without an active exception"). Pass
    False on an error path, where the other ranks may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_grads(params: Iterable[torch.nn.Parameter], ctx: DistContext) -> None:
    """Sum the gradients of ``params`` over the ranks, in one flat buffer (one collective per call).

    Parameters without a gradient take part as zeros, so every rank sends the same layout.
    """
    if not ctx.enabled:
        return
    ps = list(params)
    if not ps:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in ps])
    dist.all_reduce(flat)
    offset = 0
    for p in ps:
        n = p.numel()
        g = flat[offset:offset + n].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n


def all_reduced(values: torch.Tensor, ctx: DistContext, op: str = "sum") -> torch.Tensor:
    """A small tensor reduced over the ranks (``sum`` or ``max``, element-wise), as a new tensor; the input
    is left unchanged. Single process: a copy."""
    out = values.clone()
    if ctx.enabled:
        dist.all_reduce(out, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return out


class ReplicaDivergedError(StemtomoError):
    """The ranks of a data-parallel run no longer hold the same parameters."""


def check_replicas_equal(params: Iterable[torch.Tensor], ctx: DistContext, atol: float = 1e-5) -> float:
    """Compare every rank's parameters with rank 0's; return the largest difference.

    Raises
    ------
    ReplicaDivergedError
        If any rank differs by more than ``atol`` (a bug: identical gradients must keep replicas equal).
    """
    if not ctx.enabled:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1).float() for p in params])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = torch.tensor([float((flat - ref).abs().max()) if flat.numel() else 0.0], device=flat.device)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    worst = float(diff.item())
    if worst > atol:
        raise ReplicaDivergedError(f"data-parallel replicas diverged (max parameter difference {worst:.3g}); "
                                   "report this with the command line")
    return worst


__all__ = [
    "SINGLE",
    "DistContext",
    "ReplicaDivergedError",
    "all_reduce_grads",
    "all_reduced",
    "check_replicas_equal",
    "device_for_rank",
    "init_from_env",
    "launched_by_torchrun",
    "shutdown",
]
