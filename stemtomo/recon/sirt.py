"""SIRT: simultaneous iterative reconstruction with the shared projector.

``x ← x + λ·C·Aᵀ(R·(b − A x))`` with ``A`` = :func:`stemtomo.core.projector.forward_project` (line integrals
in voxel units, rays clipped to the slab), ``Aᵀ`` its exact adjoint, ``R = 1/(A 1)`` and ``C = 1/(Aᵀ 1)``
the inverse row and column sums (zero where a sum is zero). For 0 < λ < 2 this is a preconditioned
gradient descent on ``½‖b − A x‖²_R`` and the weighted residual decreases monotonically; with
``positivity`` the clamp at 0 is the projection in the same (diagonal) metric, so for λ ≤ 1 it still
decreases.

References
----------
P. Gilbert, "Iterative methods for the three-dimensional reconstruction of an object from projections",
J. Theor. Biol. 36 (1972) 105–117.
J. Gregor and T. Benson, "Computational analysis and improvement of SIRT", IEEE TMI 27 (2008) 918–924.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from stemtomo.core.geometry import check_angles
from stemtomo.core.projector import back_project, forward_project
from stemtomo.errors import ParameterError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SIRTConfig:
    """SIRT settings."""

    iterations: int = 20
    """Number of iterations (each: one forward and one back-projection)."""
    relaxation: float = 1.0
    """Relaxation λ in (0, 2); λ ≤ 1 keeps the residual monotone also with positivity."""
    positivity: bool = False
    """Clamp the density at 0 after every iteration."""
    samples_per_voxel: float = 2.0
    """Projector samples per voxel of path length."""


def _safe_inverse(t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return torch.where(t > eps, 1.0 / t.clamp(min=eps), torch.zeros_like(t))


def sirt(
    line_integrals: torch.Tensor,
    tilt_angles_deg: Sequence[float] | np.ndarray,
    nz: int,
    *,
    iterations: int = 20,
    relaxation: float = 1.0,
    positivity: bool = False,
    thickness_px: float | None = None,
    samples_per_voxel: float = 2.0,
    initial: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Reconstruct a density volume from aligned line integrals with SIRT.

    Parameters
    ----------
    line_integrals : ``b``, ``(n_tilts, ny, n_u)`` line integrals in voxel units (tilt axis = y).
    tilt_angles_deg : ``(n_tilts,)`` degrees in (-90°, 90°).
    nz : volume depth; the volume is ``(nz, ny, n_u)``.
    iterations, relaxation, positivity, samples_per_voxel : see :class:`SIRTConfig`.
    thickness_px : slab thickness in voxels (≤ nz); rays are clipped to it (default nz).
    initial : starting volume ``(nz, ny, n_u)`` (default zeros).
    progress : ``callback(iteration, iterations)`` after each iteration.

    Returns
    -------
    ``(volume (nz, ny, n_u), residual_norms)`` where ``residual_norms[k] = ‖b − A x_k‖_R`` for
    ``k = 0 … iterations`` (``x_0`` the initial volume), i.e. ``sqrt(Σ R·r²)``.

    Raises
    ------
    ParameterError
        Out-of-range iterations/relaxation, fewer than 2 tilts, count mismatch, bad thickness.
    """
    angles = check_angles(np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1).tolist(), option="tilt angles")
    if iterations < 1:
        raise ParameterError(f"--iterations {iterations}: SIRT needs at least 1 iteration")
    if not 0.0 < relaxation < 2.0:
        raise ParameterError(f"--relaxation {relaxation:g}: SIRT converges only for 0 < λ < 2")
    n, ny, nu = line_integrals.shape
    if angles.size != n or n < 2:
        raise ParameterError(f"{angles.size} tilt angles for {n} images; SIRT needs ≥ 2 matching tilts")
    shape = (int(nz), ny, nu)

    def project(v: torch.Tensor) -> torch.Tensor:
        return forward_project(v, angles, thickness_px=thickness_px, image_width=nu,
                               samples_per_voxel=samples_per_voxel)

    def adjoint(p: torch.Tensor) -> torch.Tensor:
        return back_project(p, angles, shape, thickness_px=thickness_px, samples_per_voxel=samples_per_voxel)

    b = line_integrals
    row = _safe_inverse(project(torch.ones(shape, dtype=b.dtype, device=b.device)))
    col = _safe_inverse(adjoint(torch.ones_like(b)))
    x = torch.zeros(shape, dtype=b.dtype, device=b.device) if initial is None else initial.clone()
    norms: list[float] = []
    for k in range(iterations):
        r = b - project(x)
        norms.append(float(torch.sqrt((row * r * r).sum())))
        x = x + relaxation * col * adjoint(row * r)
        if positivity:
            x = x.clamp(min=0.0)
        if progress is not None:
            progress(k + 1, iterations)
    r = b - project(x)
    norms.append(float(torch.sqrt((row * r * r).sum())))
    log.debug("SIRT residual %.4g → %.4g over %d iterations", norms[0], norms[-1], iterations)
    return x, norms


__all__ = ["SIRTConfig", "sirt"]
