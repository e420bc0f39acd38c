"""Coarse marker-free alignment of a tilt series: tilt-axis angle search and per-tilt shifts.

1. **Tilt-axis angle.** In the aligned frame every image row ``v`` sees the same volume row ``y = v`` at
   every tilt, so the profiles ``p_i(v) = Σ_u A_i(u, v)`` of all tilts share their features. For each candidate
   α the raw images are rotated by ``R(α)`` (:func:`~stemtomo.core.geometry.raw_to_aligned`) and scored by the
   mean peak cross-correlation of each tilt's profile with the 0° profile (a lag is allowed, which absorbs
   shifts along the axis). A coarse grid is refined around its best value. α and α + 180° give the same
   projections up to a mirror of the tilt sign and are not distinguished: α is reported in (−90°, 90°].
   The profile criterion is then refined (:func:`refine_tilt_axis`) by how well each tilt matches a less
   tilted one compressed perpendicular to the axis (:func:`stretch_score`), which is less fooled by
   material entering the field of view and by noise, and combined with the α at which local displacements
   between neighbouring tilts have no component along the axis (:mod:`stemtomo.align.flow`).
2. **Shifts.** Tilts are cross-correlated with their neighbours (up to ``neighbours`` on each side) after
   band-pass filtering, with the image nearer 0° stretched by ``cosθ_i / cosθ_j`` perpendicular to the tilt
   axis (as IMOD ``tiltxcorr``); all pair measurements are solved jointly by least squares
   (:func:`neighbour_shifts`), with the tilt nearest 0° as the reference (shift 0).
3. **Refinement** (optional, :func:`refine_projection_matching`): each image is matched to the leave-one-out
   reprojection of a WBP of the current alignment.

Shifts are returned in the raw image frame (pixels, x then y); :func:`stemtomo.align.xf.xf_from_alignment`
turns them into IMOD ``.xf`` transforms.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from stemtomo.align._filters import (
    _bandpass,
    canvas_shape,
    fill_regions,
    filtered_for_alignment,
    shift_images,
    shift_limits,
    to_canvas,
    uv_to_raw,
)
from stemtomo.align.axis import (
    axis_difference,
    axis_profile_score,
    refine_tilt_axis,
    search_tilt_axis,
    stretch_score,
    wrap_axis_angle,
)
from stemtomo.align.flow import refine_axis_by_flow, remove_shifts
from stemtomo.align.quality import usable_tilts
from stemtomo.align.shifts import cumulative_shifts, neighbour_shifts
from stemtomo.core.geometry import binning_factor, check_angles
from stemtomo.errors import InputError, ParameterError
from stemtomo.io.angles import check_axis_search_range, check_tilt_axis_angle

log = logging.getLogger(__name__)

TWIN_MIN_FRACTION = 0.42
"""Slabs at least this fraction of the image width thick get only the displacement direction twin-corrected below
:data:`STRETCH_ALONE_PX` (:attr:`AlignConfig.twin_correction`): set between the bench's cell slabs, a third, where
correcting the stretch criterion too pays, and ``simulate``'s default, a half, where it does not. From
:data:`STRETCH_ALONE_PX` both are corrected on thick slabs too and their mean is taken (not the stretch α alone)."""
AGREE_DEG = 3.0
"""The stretch-refined and the displacement-direction α are averaged when they are this close, and the latter
is used alone otherwise (see :attr:`AlignConfig.flow_axis`)."""
STRETCH_ALONE_PX = 192
"""From this image size (the smaller side, after ``max_size_px`` binning) the stretch-refined α is kept alone when
the displacement-direction α agrees within :data:`AGREE_DEG` (the latter still replaces it when they disagree):
the stretch criterion's precision grows with the pixel count, the flow estimate's bias from overlapping features
does not. Measured |error| mean / max, average → stretch alone: 24 cell slabs at 192² 0.33° / 1.22° → 0.31° /
1.25°; 8 HAADF-like series at 256² 0.35° / 1.07° → 0.32° / 0.53°, at 512² 0.53° / 1.29° → 0.18° / 0.27°; 4
``simulate`` series at 256² (slab N/2) 1.26° / 2.26° → 0.95° / 2.03°. Below it the average stays (bench 96²/128²:
0.56° against 0.79° for this rule). Measured without the twin correction; with it (the default since 2026-12-03
also from this size) the twin-corrected α of each criterion is what is kept or averaged."""


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    """Settings of ``stemtomo align``."""

    tilt_axis_angle_deg: float | None = None
    """Known in-plane tilt-axis angle (CCW from +y); None: search for it. With ``axis_search_range_deg``: the
    starting point of a local search instead."""
    axis_search_range_deg: float | None = None
    """Refine ``tilt_axis_angle_deg`` (e.g. a microscope's recorded RotationAngle) within ± this many degrees:
    the global profile search is skipped and the stretch and flow refinements start there. An estimate
    outside the range is not trusted: the given angle is kept, with a warning. None: use the given angle as is."""
    axis_search_step_deg: float = 2.0
    """Step of the coarse tilt-axis search over (−90°, 90°]; refined to ``axis_refine_step_deg``."""
    axis_refine_step_deg: float = 0.1
    """Final resolution of the tilt-axis angle."""
    refine_axis: bool = True
    """Refine the profile-searched α with :func:`refine_tilt_axis` (stretch criterion). Measured on 96²/128²
    cell phantoms (axis 7°, seeds 3/5/7, clean and Poisson dose 40): mean |error| 2.2° → 0.9°, worst
    5.8° → 2.2°; on 8 ``simulate`` series (64², axes 30°/90°, seeds 1–4): 4.7° → 1.1°, worst 7.9° → 2.3°."""
    flow_axis: bool = True
    """Combine the refined α with the α at which the local displacements between neighbouring tilts run
    perpendicular to the axis (:func:`~stemtomo.align.flow.refine_axis_by_flow`): averaged when the two lie
    within :data:`AGREE_DEG` (their errors are of similar size and nearly uncorrelated), the displacement α
    alone otherwise (the stretch criterion assumes a thin specimen and fails on thick slabs); from
    :data:`STRETCH_ALONE_PX` the stretch α is kept when they agree. Measured |error|
    mean (max, count < 0.5°) against the stretch refinement alone, cell phantoms with σ = 5 px shifts, clean
    and Poisson dose 40 (``benchmarks/bench_align_axis.py``): 24 series 96²/128² 1.08° (4.44°, 9) → 0.56°
    (1.51°, 12); 14 held-out series 0.73° (1.75°, 6) → 0.58° (1.14°, 7); 14 ``stemtomo simulate`` default
    series (64²/128², slab N/2, 67 tilts ±50°) 3.57° (9.90°, 0) → 1.67° (3.96°, 2) (after the span weights of
    :func:`~stemtomo.align.shifts.neighbour_shifts`: 3.85° (9.90°, 0) → 1.68° (4.21°, 2)). With it the whole of
    coarse_align took 2.7 s at 96² and 8.3 s at 192² (41 tilts), 8.6 s on a 128² simulate series (67
    tilts), one thread (2.4 s, 8.3 s and 5.8 s with the previous flow criterion)."""
    twin_correction: bool = True
    """Correct the axis criteria for the bias of the specimen's overlaps, measured on a "twin" series reprojected
    from a WBP of the data aligned at the uncorrected α (:func:`~stemtomo.align.twin.twin_corrected_axes`). Its
    depth is the slab (``thickness_px``, else estimated from the data: :func:`~stemtomo.align.twin.estimated_slab_px`;
    none found: no correction). On thin slabs both criteria are corrected and combined as before; on thick ones
    (at least :data:`TWIN_MIN_FRACTION` of the width), where the stretch criterion's reading on the twin does not
    help, only the displacement direction below :data:`STRETCH_ALONE_PX`; from there both, averaged (within
    :data:`AGREE_DEG`; the displacement α alone otherwise) instead of keeping the stretch α. Measured on thick
    slabs at 192² (2026-12-03; old rule → this one, |α error| mean / max / count < 0.5°): 12 held-out cell
    slabs half the width (``--cases thick --size 192``) 1.00° / 1.64° / 1 → 0.60° / 1.26° / 4; 24 ROI series at
    192² (half of them thick) 0.48° / 1.26° / 14 → 0.38° / 1.05° / 18. The twin runs on images binned to at most
    :data:`~stemtomo.align.twin.TWIN_MAX_PX` wide. False: never. (Until
    2026-12-03 the default skipped it from :data:`STRETCH_ALONE_PX` when the two criteria agreed; with the
    binned twin, |α error| mean / max / count < 0.5° went 0.81° / 1.57° / 8 → 0.48° / 1.26° / 14 on 24 ROI
    series at 192² and 0.18° / 0.27° / 8 → 0.08° / 0.14° / 8 on 8 HAADF-like series at 512².)
    Measured |error| mean (max, count < 0.5°), False → on (``benchmarks/bench_align_axis.py --off``,
    2026-12-02): 24 bench cell slabs a third of the width 0.56° (1.51°, 12) → 0.38° (1.27°, 17); 14 held-out
    ones 0.58° (1.14°, 7) → 0.28° (0.79°, 12); 14 ``stemtomo simulate`` default series (slab half the width)
    1.68° (4.21°, 2) → 0.73° (2.05°, 8); 12 held-out thick slabs (``--cases thick``) 1.37° (4.79°, 3) → 0.99°
    (2.06°, 3); 8 HAADF-like 256² series unchanged, 0.32° (0.53°, 6). With the twin volume wider than the
    field (:data:`~stemtomo.align.twin.PAD_FRACTION`, 2026-12-03) the default gave 0.35°, 0.31°, 0.82°, 0.89° on
    those four sets, and 1.34° → 0.93° mean on 24 series whose specimen extends beyond the field (``--cases
    roi``). Costs a slab estimate, a WBP and three more criterion readings: about 2× the alignment time below
    192 px (bench 2.9 s → 6.2 s per series)."""
    lowpass_sigma_px: float = 1.0
    """Gaussian low-pass (real-space σ, pixels) applied before correlation, against noise."""
    highpass_sigma_px: float = 0.0
    """Gaussian high-pass σ (pixels) removing slow intensity gradients; 0 → ``image size / 16`` (the coarse
    shape of a thick slab changes with tilt by parallax; 12 phantom cases, 96²/128², clean and noisy: the
    chain's mean RMS shift error 0.38 px with size/8, 0.26 px with size/16)."""
    neighbours: int = 3
    """Each tilt is correlated with this many neighbours on each side; all pairs are solved jointly by
    least squares, the pairs of each span weighted by their agreement (1: the cumulative chain of IMOD
    ``tiltxcorr``). Same 12 cases: mean 0.26 → 0.22 px (one 128² case worsens, 0.30 → 0.36). On slabs half
    the width thick at 256² (2° steps) 1 was better on clean data (0.35 and 0.66 against 0.51 and 0.84 px) and worse at
    low dose; see ``benchmarks/README.md``."""
    max_shift_fraction: float = 0.3
    """Largest shift searched, as a fraction of the image size."""
    refine_iterations: int = 0
    """Rounds of projection matching against a WBP after the cumulative shifts (0: off)."""
    max_size_px: int = 512
    """Images larger than this are binned for the alignment (shifts are scaled back)."""
    drop_unusable: bool = True
    """Leave tilts without usable signal (blank or dark, or uncorrelated with their neighbours:
    :func:`~stemtomo.align.quality.usable_tilts`) out of the alignment, with a warning each; their shifts are
    interpolated (and ``stemtomo align`` leaves them out of the aligned stack). False: align every tilt."""
    thickness_px: float | None = None
    """Specimen thickness (input pixels) for the WBP of the projection matching and of the twin correction;
    None: half the width. ``stemtomo align`` takes it from the input's sidecar when it has one."""

    def validate(self) -> None:
        if self.tilt_axis_angle_deg is not None:
            check_tilt_axis_angle(self.tilt_axis_angle_deg)
        if self.axis_search_range_deg is not None:
            check_axis_search_range(self.axis_search_range_deg)
            if self.tilt_axis_angle_deg is None:
                raise ParameterError("--axis-search-range needs a starting angle: give --tilt-axis-angle "
                                     "(or a tilt axis in the sidecar/.mdoc)")
        if not 0 < self.max_shift_fraction <= 0.5:
            raise ParameterError(f"max shift fraction {self.max_shift_fraction:g}: must be in (0, 0.5]")
        if self.neighbours < 1:
            raise ParameterError(f"--neighbours {self.neighbours}: must be ≥ 1")
        if self.refine_iterations < 0:
            raise ParameterError(f"--refine {self.refine_iterations}: must be ≥ 0")


@dataclasses.dataclass
class Alignment:
    """Result of :func:`coarse_align`.

    Attributes
    ----------
    tilt_axis_angle_deg : the in-plane tilt-axis angle α used (searched or given).
    shifts_xy : ``(n, 2)`` specimen shift of each raw image in pixels (x, y), raw frame; 0 for the reference.
    axis_scores : ``(k, 2)`` searched angles and their profile scores (empty when α was given).
    reference_index : index of the reference tilt (nearest usable one to 0°).
    excluded : the tilts left out as carrying no usable signal (:func:`usable_tilts`), index → reason; their
        shifts are interpolated from their neighbours'.
    twin_depth_px : depth (input pixels) of the twin series that corrected the displacement-direction α
        (:attr:`AlignConfig.twin_correction`), None when no twin correction was made.
    """

    tilt_axis_angle_deg: float
    shifts_xy: np.ndarray
    axis_scores: np.ndarray
    reference_index: int
    excluded: dict[int, str] = dataclasses.field(default_factory=dict)
    twin_depth_px: float | None = None


def coarse_align(
    stack: np.ndarray | torch.Tensor,
    tilt_angles_deg: Sequence[float] | np.ndarray,
    config: AlignConfig = AlignConfig(),
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> Alignment:
    """Estimate the tilt-axis angle (unless given; near the given one with ``config.axis_search_range_deg``)
    and per-tilt shifts of a raw tilt series.

    Parameters
    ----------
    stack : ``(n, ny, nx)`` raw images (any intensity scale; BF or DF).
    tilt_angles_deg : ``(n,)`` tilt angles in stack order.
    config : :class:`AlignConfig`.
    progress : optional callback receiving a short stage name.

    Returns
    -------
    :class:`Alignment` with raw-frame shifts in pixels of the input images.

    Raises
    ------
    ParameterError
        Fewer than 2 images, mismatched angle count, or invalid settings.
    InputError
        Fewer than 2 tilts carry usable signal (with ``config.drop_unusable``).
    """
    config.validate()
    angles = check_angles(np.asarray(tilt_angles_deg, dtype=np.float64).tolist(), option="tilt angles")
    imgs = torch.as_tensor(stack, dtype=torch.float32, device=device)
    if imgs.ndim != 3 or imgs.shape[0] < 2:
        raise ParameterError("alignment needs a tilt series of at least 2 images")
    if len(angles) != imgs.shape[0]:
        raise ParameterError(f"{len(angles)} tilt angles for {imgs.shape[0]} images; the counts must match")
    factor = binning_factor(imgs.shape, config.max_size_px)
    imgs, valid, weight, filtered, high = filtered_for_alignment(imgs, config.lowpass_sigma_px,
                                                                 config.highpass_sigma_px, factor)
    angles = np.asarray(angles, dtype=np.float64)
    usable, reasons = np.ones(len(angles), dtype=bool), dict[int, str]()
    if config.drop_unusable:
        usable, reasons = usable_tilts(filtered, angles, shift_limits(imgs.shape, config.max_shift_fraction))
        if usable.sum() < 2:
            raise InputError(f"only {int(usable.sum())} of {len(angles)} tilts carry usable signal "
                                 f"({'; '.join(f'{angles[i]:g}°: {r}' for i, r in list(reasons.items())[:3])}); "
                                 "nothing to align")
        for i, why in reasons.items():
            log.warning("tilt %d (%.2f°) left out of the alignment: %s", i, angles[i], why)
    if not usable.all():
        keep = torch.as_tensor(np.flatnonzero(usable), device=imgs.device)
        sub = _align_prepared(imgs[keep], valid[keep], weight[keep], filtered[keep], angles[usable], config, factor,
                              high, progress)
        return Alignment(sub.tilt_axis_angle_deg, _interpolate_shifts(sub.shifts_xy, angles, usable), sub.axis_scores,
                         int(np.flatnonzero(usable)[sub.reference_index]), reasons, sub.twin_depth_px)
    return _align_prepared(imgs, valid, weight, filtered, angles, config, factor, high, progress)


def _align_prepared(imgs: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor, filtered: torch.Tensor,
                    angles: np.ndarray, config: AlignConfig, factor: int, high: float,
                    progress: Callable[[str], None] | None) -> Alignment:
    """:func:`coarse_align` on binned, fill-neutralized images, their valid masks, edge weights and band-passed
    versions (``high``: the high-pass σ used)."""
    ref = int(np.argmin(np.abs(angles)))
    max_shift = shift_limits(imgs.shape, config.max_shift_fraction)
    slab_nz = None if config.thickness_px is None else max(4, round(config.thickness_px / factor))
    solved: dict[tuple[float, tuple[int, ...]], tuple[np.ndarray, int]] = {}

    def shifts_at(a: float, limits: Sequence[int]) -> tuple[np.ndarray, int]:
        """:func:`neighbour_shifts` in the frame of α = ``a``, solved once per (α, limits)."""
        key = (a, tuple(limits))
        if key not in solved:
            solved[key] = neighbour_shifts(to_canvas(filtered, a), angles, limits, neighbours=config.neighbours)
        return solved[key]

    given = config.tilt_axis_angle_deg
    twin_depth = None
    if given is None or config.axis_search_range_deg is not None:
        if progress:
            progress("tilt axis")
        if given is None:
            # shifts first (raw frame, unstretched): uncorrected shifts move material across the field of view
            # and spoil the along-axis profiles; a fine band-pass then makes the profile peak sharper.
            raw_shifts, _ = cumulative_shifts(filtered, angles, max_shift, stretch=False)
            fine_band = _bandpass(shift_images(imgs, raw_shifts), config.lowpass_sigma_px, 4 * config.lowpass_sigma_px)
            fine_band = fine_band * weight
            alpha, scores = search_tilt_axis(fine_band, ref, step_deg=config.axis_search_step_deg,
                                             refine_step_deg=config.axis_refine_step_deg)
        else:
            alpha, scores = float(given), np.zeros((0, 2))
        if config.refine_axis:
            alpha, fine_scores = refine_tilt_axis(imgs, filtered, angles, alpha, max_shift,
                                                  neighbours=config.neighbours,
                                                  lowpass_sigma_px=config.lowpass_sigma_px)
            scores = np.concatenate([scores, fine_scores])
        if config.flow_axis:
            stretch_alpha = alpha
            s_raw = uv_to_raw(shifts_at(alpha, max_shift)[0], alpha)
            flow_alpha = refine_axis_by_flow(*remove_shifts(imgs, valid, s_raw), angles, alpha)
            log.debug("tilt axis: stretch %.2f°, displacement direction %s", alpha,
                      "none" if flow_alpha is None else f"{flow_alpha:.2f}°")
            alone = min(imgs.shape[-2:]) >= STRETCH_ALONE_PX
            if flow_alpha is not None:
                alpha = _combine(stretch_alpha, flow_alpha, alone)
            plan = None
            if flow_alpha is not None and config.twin_correction:
                s_alpha = uv_to_raw(shifts_at(alpha, max_shift)[0], alpha)
                plan = _twin_plan(imgs, valid, angles, alpha, s_alpha, slab_nz)
            if plan is not None:
                from stemtomo.align.twin import twin_corrected_axes

                nz, thick = plan
                # thick slabs: the stretch criterion is corrected from STRETCH_ALONE_PX only, and averaged in
                flow_c, stretch_c = twin_corrected_axes(imgs, valid, angles, alpha, s_alpha, nz,
                                                        stretch=not thick or alone,
                                                        lowpass_sigma_px=config.lowpass_sigma_px)
                log.debug("tilt axis: twin-corrected displacement direction %s, stretch %s",
                          "none" if flow_c is None else f"{flow_c:.2f}°",
                          "none" if stretch_c is None else f"{stretch_c:.2f}°")
                if flow_c is not None:
                    twin_depth = float(nz * factor)
                    alpha = _combine(stretch_alpha if stretch_c is None else stretch_c, flow_c, alone and not thick)
        alpha = wrap_axis_angle(alpha)
        if given is not None and config.axis_search_range_deg is not None:
            off = axis_difference(alpha, given)
            if abs(off) > config.axis_search_range_deg:
                log.warning("tilt axis: the estimate %.2f° lies %.2f° from the given %.2f°, outside "
                            "--axis-search-range %g; keeping %.2f°", alpha, abs(off), given,
                            config.axis_search_range_deg, given)
                alpha = float(given)
    else:
        alpha, scores = float(given), np.zeros((0, 2))
    if progress:
        progress("shifts")
    max_shift = shift_limits(canvas_shape(imgs.shape, alpha), config.max_shift_fraction)
    shifts_uv, ref = shifts_at(alpha, max_shift)
    if config.refine_iterations:
        from stemtomo.align.refine import refine_projection_matching

        if progress:
            progress("projection matching")
        shifts_uv, _ = refine_projection_matching(
            to_canvas(imgs, alpha), angles, shifts_uv, iterations=config.refine_iterations,
            lowpass_sigma_px=config.lowpass_sigma_px, highpass_sigma_px=high, max_shift=max_shift,
            nz=slab_nz,
        )
        shifts_uv = shifts_uv - shifts_uv[ref]
    log.debug("tilt axis %.2f°, shifts up to %.1f px", alpha, float(np.abs(shifts_uv).max()) * factor)
    return Alignment(alpha, uv_to_raw(shifts_uv, alpha) * factor, scores, ref, twin_depth_px=twin_depth)


def _twin_plan(imgs: torch.Tensor, valid: torch.Tensor, angles: np.ndarray, alpha: float, shifts_xy: np.ndarray,
               slab_nz: int | None) -> tuple[int, bool] | None:
    """``(depth of the twin's WBP in binned pixels, thick)`` for the slab (given, else estimated from the data
    aligned at ``alpha``), or None when no slab is found. Thick: at least :data:`TWIN_MIN_FRACTION` of the image
    width, where only the displacement direction is corrected below :data:`STRETCH_ALONE_PX`
    (:attr:`AlignConfig.twin_correction`)."""
    width = min(imgs.shape[-2:])
    if slab_nz is not None:
        thickness, enclosing = float(slab_nz), float(slab_nz)
    else:
        from stemtomo.align.twin import estimated_slab_px

        found = estimated_slab_px(imgs, valid, angles, alpha, shifts_xy)
        if found is None:
            log.debug("tilt axis: no slab found, no twin correction")
            return None
        thickness, enclosing = found
    thick = thickness >= TWIN_MIN_FRACTION * width
    (log.info if thick else log.debug)(
        "tilt axis: slab ≈ %.0f%% of the width: correcting %s by a twin series", 100.0 * thickness / width,
        "the displacement direction" if thick else "both criteria")
    return max(4, min(round(enclosing), max(imgs.shape[-2:]))), thick


def _interpolate_shifts(shifts_xy: np.ndarray, angles: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Shifts of all tilts from those of the usable ones: linear in the tilt angle between the nearest usable
    neighbours, held constant beyond the ends."""
    order = np.argsort(angles[usable])
    a = angles[usable][order]
    return np.stack([np.interp(angles, a, shifts_xy[order, k]) for k in range(2)], axis=1)


def _combine(stretch_alpha: float, flow_alpha: float, stretch_alone: bool = False) -> float:
    """Within :data:`AGREE_DEG` the two errors are of similar size and nearly uncorrelated on small images: their
    mean (``stretch_alone``, from :data:`STRETCH_ALONE_PX`: the stretch α); farther apart the stretch criterion
    has failed (thick slabs) and the flow estimate is taken alone."""
    if abs(flow_alpha - stretch_alpha) > AGREE_DEG:
        return flow_alpha
    return stretch_alpha if stretch_alone else (stretch_alpha + flow_alpha) / 2


__all__ = [
    "AlignConfig",
    "Alignment",
    "axis_profile_score",
    "coarse_align",
    "cumulative_shifts",
    "fill_regions",
    "neighbour_shifts",
    "refine_tilt_axis",
    "search_tilt_axis",
    "stretch_score",
    "shift_images",
    "uv_to_raw",
]
