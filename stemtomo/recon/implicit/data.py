"""Rays built on the fly from a device-resident tilt series.

The stack lives on the device as one float32 tensor ``(n_tilts, ny, nx)`` in the aligned frame (tilt axis
along +y, :func:`stemtomo.core.geometry.raw_to_aligned`), intensities in [0, 1]. A batch is a set of random
``(tilt, row, col)`` indices drawn with a device :class:`torch.Generator`; each index gives the ray's aligned
coordinates ``(u, v)``, its angle θ and its target intensity; no per-ray arrays are stored and no batch
crosses the host–device boundary.

Validation uses held-out tilts (every k-th, never trained on) and a fixed random subset of their pixels.
Pixels marked as not measured (``valid`` False: the fill of an aligned stack or a rotation's padding,
:func:`stemtomo.preprocess.fill.prepared_support`) are never drawn, for training or validation; their flat indices
are then held as an int32 table on the device (4 bytes per measured pixel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from stemtomo.errors import InputError


class RayData:
    """Training and validation rays of one tilt series.

    Parameters
    ----------
    stack : ``(n_tilts, ny, nx)`` float32 intensities in [0, 1], aligned frame, on the training device.
    tilt_angles_deg : one angle per image.
    val_every_kth_tilt : hold out tilts ``k//2, k//2 + k, ...`` for validation; 0 = none.
    val_max_rays : size of the fixed validation pixel subset.
    seed : seed of the validation subset.
    valid : boolean ``(n_tilts, ny, nx)``, False at pixels to leave out (e.g. fill); None or all True: all.

    Raises
    ------
    InputError
        If fewer than two training tilts remain.
    """

    def __init__(
        self,
        stack: torch.Tensor,
        tilt_angles_deg: Sequence[float],
        *,
        val_every_kth_tilt: int = 0,
        val_max_rays: int = 8192,
        seed: int = 0,
        valid: torch.Tensor | None = None,
    ) -> None:
        self.stack = stack
        n, self.ny, self.nx = stack.shape
        dev = stack.device
        if valid is not None and tuple(valid.shape) != tuple(stack.shape):
            raise InputError(f"pixel mask of shape {tuple(valid.shape)} for a stack of {tuple(stack.shape)}")
        self.theta = torch.tensor([math.radians(a) for a in tilt_angles_deg], dtype=torch.float32, device=dev)
        k = val_every_kth_tilt
        is_val = torch.zeros(n, dtype=torch.bool)
        if k >= 2 and n >= 3:
            is_val[k // 2 :: k] = True
        self.train_tilts = torch.nonzero(~is_val).squeeze(1).to(dev)
        self.val_tilts = torch.nonzero(is_val).squeeze(1).to(dev)
        if self.train_tilts.numel() < 2:
            raise InputError(f"only {self.train_tilts.numel()} training tilt(s) left; use more tilts or --val-every 0")
        self.train_pixels: torch.Tensor | None = None
        self.val_pixels: torch.Tensor | None = None
        if valid is not None and not bool(valid.all()):
            use = valid.to(dev, torch.bool)
            self.train_pixels = self._pixel_table(use, self.train_tilts)
            self.val_pixels = self._pixel_table(use, self.val_tilts)
            if self.train_pixels.numel() == 0:
                raise InputError("no measured pixel left in the training tilts (all fill?)")
        self.val = self._validation_set(val_max_rays, seed)

    def _pixel_table(self, valid: torch.Tensor, tilts: torch.Tensor) -> torch.Tensor:
        """Flat indices ``t·ny·nx + iy·nx + ix`` (int32; int64 from 2³¹ pixels) of the valid pixels of ``tilts``."""
        per = self.ny * self.nx
        dtype = torch.int32 if valid.numel() < 2**31 else torch.int64
        parts = [torch.nonzero(valid[t].reshape(-1)).squeeze(1).to(dtype) + int(t) * per for t in tilts.tolist()]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=valid.device)

    def _validation_set(self, max_rays: int, seed: int) -> tuple[torch.Tensor, ...] | None:
        if self.val_tilts.numel() == 0:
            return None
        per = self.ny * self.nx
        total = self.val_tilts.numel() * per if self.val_pixels is None else self.val_pixels.numel()
        if total == 0:
            return None
        g = torch.Generator().manual_seed(seed + 7919)
        flat = torch.randperm(total, generator=g)[:max_rays] if total > max_rays else torch.arange(total)
        flat = flat.to(self.stack.device)
        if self.val_pixels is not None:
            pix = self.val_pixels[flat].long()
            return self.rays(pix // per, (pix % per) // self.nx, pix % self.nx)
        t = self.val_tilts[flat // per]
        return self.rays(t, (flat % per) // self.nx, flat % self.nx)

    def rays(
        self, t: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(u, v, θ, target)`` of pixel indices (tilt, row, col), each ``(R,)``."""
        u = ix.to(torch.float32) - (self.nx - 1) / 2.0
        v = iy.to(torch.float32) - (self.ny - 1) / 2.0
        return u, v, self.theta[t], self.stack[t, iy, ix]

    def sample(
        self, n_rays: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n_rays`` random training rays (uniform over the training tilts' valid pixels, with replacement)."""
        dev = self.stack.device
        per = self.ny * self.nx
        if self.train_pixels is not None:
            pick = torch.randint(0, self.train_pixels.numel(), (n_rays,), device=dev, generator=generator)
            pix = self.train_pixels[pick].long()
            return self.rays(pix // per, (pix % per) // self.nx, pix % self.nx)
        idx = torch.randint(0, self.train_tilts.numel() * per, (n_rays,), device=dev, generator=generator)
        t = self.train_tilts[idx // per]
        return self.rays(t, (idx % per) // self.nx, idx % self.nx)


def defocus_sigma_px(
    u: torch.Tensor, theta_rad: torch.Tensor, defocus_max_px: float, theta_max_rad: float, half_width_px: float
) -> torch.Tensor:
    """Defocus blur σ (pixels) of a ray: ``defocus_max_px · (tan|θ| / tan θ_max) · (|u| / half_width)``.

    The model of ``stemtomo simulate --defocus-max-px``: at tilt θ a pixel at distance |u| from the tilt
    axis is out of focus by ``|u|·tan|θ|``, and the blur grows linearly with that defocus, reaching
    ``defocus_max_px`` at the highest tilt and the image edge (METHOD §6.5, §7.4, with the intended
    max-blur value and a proper Gaussian).
    """
    if defocus_max_px <= 0 or theta_max_rad <= 0:
        return torch.zeros_like(u)
    ratio = torch.tan(theta_rad.abs()) / math.tan(theta_max_rad)
    return defocus_max_px * ratio * (u.abs() / max(half_width_px, 1e-6)).clamp(max=1.0)


def jitter_rays(
    u: torch.Tensor, v: torch.Tensor, sigma_px: torch.Tensor, generator: torch.Generator,
    u_max: float | None = None, v_max: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift each ray perpendicular to the beam, in the image plane (u, v), by an isotropic Gaussian offset
    of standard deviation ``sigma_px``: a one-sample Monte-Carlo estimate of the blurred intensity.

    Offsets that leave the image (``|u| > u_max``, ``|v| > v_max``) are clamped to its edge, the
    replicate padding of the simulated blur (``stemtomo.simulate.defocus``)."""
    noise = torch.randn((2, *u.shape), device=u.device, dtype=u.dtype, generator=generator)
    uj, vj = u + sigma_px * noise[0], v + sigma_px * noise[1]
    if u_max is not None:
        uj = uj.clamp(-u_max, u_max)
    if v_max is not None:
        vj = vj.clamp(-v_max, v_max)
    return uj, vj


__all__ = ["RayData", "defocus_sigma_px", "jitter_rays"]
