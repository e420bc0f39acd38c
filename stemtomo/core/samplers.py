"""Sample positions along rays, inside each ray's slab segment ``[near, far]`` (ray parameter s, any unit).

- :func:`stratified`: one sample per equal bin, uniformly jittered (or at bin centres for deterministic
  evaluation); an unbiased quadrature of ``∫ρ ds`` together with :func:`interval_lengths`.
- :func:`importance`: hierarchical sampling: draw extra samples per ray by inverting the piecewise-constant
  CDF of coarse weights (proper per-ray inverse transform inside the bins, unlike the original code's
  bin-start multinomial draw, METHOD §1.3).

All functions follow the device of their inputs and take an optional :class:`torch.Generator`.

References
----------
Mildenhall et al., "NeRF", ECCV 2020 (stratified + hierarchical sampling).
"""

from __future__ import annotations

import torch


def _uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)


def stratified(
    near: torch.Tensor,
    far: torch.Tensor,
    n_samples: int,
    *,
    jitter: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n_samples`` sorted positions per ray in ``[near, far]``: ``(R,)`` → ``(R, n_samples)``.

    Bin k covers ``near + (far - near)·[k, k+1)/n``; the sample lies uniformly in it (``jitter``) or at
    its centre.
    """
    r = near.shape[0]
    k = torch.arange(n_samples, device=near.device, dtype=near.dtype)
    offset = _uniform((r, n_samples), near, generator) if jitter else torch.full_like(k, 0.5).expand(r, -1)
    t = (k + offset) / n_samples
    return near[:, None] + (far - near)[:, None] * t


def interval_lengths(s: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """Length each sorted sample stands for: between the midpoints to its neighbours, the ends clipped to
    ``[near, far]``. ``(R, S)`` → ``(R, S)``; each row sums to ``far - near``."""
    mid = 0.5 * (s[:, 1:] + s[:, :-1])
    edges = torch.cat((near[:, None], mid, far[:, None]), dim=-1)
    return edges.diff(dim=-1).clamp(min=0.0)


def importance(
    s_coarse: torch.Tensor,
    weights: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    n_fine: int,
    *,
    jitter: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``n_fine`` positions per ray from the pdf ∝ ``weights`` over the coarse samples' intervals and
    return them merged with ``s_coarse``, sorted: ``(R, S)`` → ``(R, S + n_fine)``.

    The pdf is piecewise constant on the intervals of :func:`interval_lengths`; its CDF is inverted per
    ray (stratified in u when ``jitter`` is off). Rays with all-zero weights sample uniformly.
    """
    r = s_coarse.shape[0]
    mid = 0.5 * (s_coarse[:, 1:] + s_coarse[:, :-1])
    edges = torch.cat((near[:, None], mid, far[:, None]), dim=-1)  # (R, S+1)
    w = weights.detach().clamp(min=0.0) + 1e-6 * edges.diff(dim=-1).clamp(min=0.0)
    pdf = w / w.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    cdf = torch.cat((torch.zeros_like(pdf[:, :1]), pdf.cumsum(dim=-1)), dim=-1)
    cdf[:, -1] = 1.0
    if jitter:
        u = _uniform((r, n_fine), s_coarse, generator)
    else:
        u = ((torch.arange(n_fine, device=s_coarse.device, dtype=s_coarse.dtype) + 0.5) / n_fine).expand(r, -1)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    c0, c1 = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    e0, e1 = edges.gather(-1, idx - 1), edges.gather(-1, idx)
    frac = ((u - c0) / (c1 - c0).clamp(min=1e-12)).clamp(0.0, 1.0)
    fine = e0 + frac * (e1 - e0)
    return torch.sort(torch.cat((s_coarse, fine.detach()), dim=-1), dim=-1).values


__all__ = ["importance", "interval_lengths", "stratified"]
