"""Hot and dead pixel replacement in tilt series (like IMOD ``ccderaser``'s automatic mode).

For each image independently:

1. ``m`` = median filter of the image (``window_px`` × ``window_px``, reflecting edges);
   residual ``r = I − m``.
2. Local noise ``σ`` (:func:`local_noise_sigma`): ``1.4826 · median(|r|)`` in blocks of ``noise_block_px``
   pixels (where the median is 0, i.e. sparse counts, the RMS of ``r`` without its largest 1 %), raised
   where needed to a per-image fit ``σ² = a + b·m`` (shot + read noise) evaluated at the pixel's own level
   ``m``. The fit runs on the pixels binned by level, wherever they lie, so that the bright pixels of a
   block that is mostly dark (a Poisson-limited bright-field image at a few tens of counts) and a bright
   bead inside a dark block are each judged against their own noise.
3. Variance-stabilized z-score ``z = r / σ``: the σ of step 2 (at the median ``m``) times
   ``½(1 + σ_model(I)/σ_model(m))``, where ``σ_model(l) = √(c + b·l)`` and ``c = a + 3b²/8``; with the
   model alone, ``z`` is then the difference of the generalized Anscombe transforms of ``I`` and ``m``,
   which has unit variance under Poisson + Gaussian noise. A bright pixel is judged against the noise of
   its own level, so a 1-px feature at a few counts that the median misses is not a hot pixel, and a 0
   where the mean is 30 counts (5.5 σ of the median's noise, e^−30 under Poisson) is a dead one. The
   factor is capped at :data:`STABILIZED_MAX_FACTOR` (2): on images with little or no shot noise the
   fitted "model" is the structure's, and a hot pixel far above it must still stand out. Candidates
   ``|z| > threshold`` (hot: z > 0, cold/dead: z < 0).
4. Candidates are grouped into 8-connected clusters of one sign. A cluster is replaced only if it is
   small (``≤ max_cluster_px`` pixels) **and isolated**: every pixel of a hot cluster exceeds the
   brightest non-candidate pixel touching the cluster by more than ``isolation · |r|`` (half its own
   deviation from the median by default; dead clusters: the darkest, mirrored). This keeps corners and
   edges of real sharp features (gold beads), which a median filter always flags, but whose neighbours
   are as bright (or as dark) as they are. In a cluster that is kept, a single-pixel spike (exceeding all
   8 neighbours, candidates included, by that margin) is still replaced: a hot pixel touching structure.
5. Optionally (``dead_lines``), runs of ≥ ``dead_run_px`` identical values along a row or a column
   (dead/stuck detector lines) are replaced as a whole, whatever their size, when at least half of their
   pixels are candidates that are darker (or brighter) than both parallel neighbour lines while those
   vary. Saturated plateaus are constant too, but not candidates; the constant edge columns of a
   noise-free image, the border lines and the edge of a constant fill have no varying neighbour on both
   sides, so none of them is a line.

Replaced pixels take the median-filter value ``m``; **all other pixels are returned bit-identical** and
the dtype is kept.

Limits: a z-score cannot tell a hot pixel from a legitimate Poisson outlier at very low counts (< ~1
electron per pixel, where the noise is far from Gaussian): there, raise ``threshold`` or skip this step.
Features smaller than the clusters replaced (≤ ``max_cluster_px`` pixels, brighter than everything
around them) are indistinguishable from hot pixels and are replaced too. On noise-free (simulated clean)
images, ``σ`` measures the phantom's own fine structure, so its sharpest 1-px extremes can pass the
threshold (measured: 3 pixels in a 31 × 48² ``simulate`` series, 37 in a 67 × 128² one), and a dead pixel
in a dark region is not significant.

References
----------
D. N. Mastronarde, IMOD ``ccderaser`` manual (automatic peak finding: deviation from the local mean in
units of the local standard deviation, size limits for the objects replaced),
https://bio3d.colorado.edu/imod/doc/man/ccderaser.html

M. Mäkitalo, A. Foi, "Optimal inversion of the generalized Anscombe transformation for Poisson-Gaussian
noise", IEEE Trans. Image Process. 22(1), 91–103 (2013) (the transform ``2/b·√(b·x + 3b²/8 + σ²)``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from stemtomo.errors import ParameterError

log = logging.getLogger(__name__)

_EIGHT = np.ones((3, 3), dtype=bool)
STABILIZED_MAX_FACTOR = 2.0
"""Largest factor by which the variance stabilization raises the σ of a pixel brighter than its median."""
_RING8 = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=bool)


@dataclasses.dataclass(frozen=True)
class DefectConfig:
    """Settings of :func:`remove_defects`."""

    threshold: float = 7.0
    """Variance-stabilized robust z-score above which a pixel is a candidate hot (or, below minus it, dead)
    pixel."""
    window_px: int = 5
    """Median filter size, odd, ≥ 3 (5 replaces clusters up to 2×2 with a clean median)."""
    noise_block_px: int = 32
    """Block size for the local noise estimate, pixels (≥ 8)."""
    max_cluster_px: int = 4
    """Largest connected cluster of candidates replaced (larger ones are real structure and are kept)."""
    isolation: float = 0.5
    """Each pixel of a replaced cluster must exceed its brightest (dead: darkest) non-candidate neighbour by
    more than this fraction of its own deviation from the local median."""
    dead_lines: bool = True
    """Also replace runs of identical values along rows/columns that are mostly candidates (dead lines)."""
    dead_run_px: int = 8
    """Shortest run of identical values counted as a dead line, pixels (≥ 2)."""
    return_coordinates: bool = False
    """Return the (tilt, y, x) indices of every replaced pixel in the report."""

    def validate(self) -> None:
        """Raise :class:`ParameterError` for out-of-range settings."""
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ParameterError(f"hot-pixel threshold {self.threshold:g}: must be a positive z-score (e.g. 7)")
        if self.window_px < 3 or self.window_px % 2 == 0:
            raise ParameterError(f"hot-pixel window {self.window_px}: must be odd and ≥ 3 (e.g. 5)")
        if self.noise_block_px < 8:
            raise ParameterError(f"hot-pixel noise block {self.noise_block_px}: must be ≥ 8 pixels")
        if self.max_cluster_px < 1:
            raise ParameterError(f"hot-pixel max cluster {self.max_cluster_px}: must be ≥ 1 pixel")
        if not (math.isfinite(self.isolation) and self.isolation >= 0):
            raise ParameterError(f"hot-pixel isolation {self.isolation:g}: must be ≥ 0")
        if self.dead_run_px < 2:
            raise ParameterError(f"dead-line run {self.dead_run_px}: must be ≥ 2 pixels")


@dataclasses.dataclass(frozen=True)
class DefectReport:
    """What :func:`remove_defects` replaced, per image."""

    replaced: np.ndarray
    """``(n,)`` int: pixels replaced per image (hot + dead + dead-line)."""
    hot: np.ndarray
    """``(n,)`` int: replaced pixels brighter than their surroundings."""
    dead: np.ndarray
    """``(n,)`` int: replaced pixels darker than their surroundings (isolated, not in a dead line)."""
    line: np.ndarray
    """``(n,)`` int: replaced pixels in dead rows/columns."""
    kept_clusters: np.ndarray
    """``(n,)`` int: candidate clusters left alone (too large or not isolated: real structure)."""
    noise_sigma: np.ndarray
    """``(n,)`` float: median local noise σ of each image (input units)."""
    coordinates: np.ndarray | None
    """``(k, 3)`` int (tilt, y, x) of every replaced pixel, or None if not requested."""

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python record for a sidecar (per-image counts; coordinates left out)."""
        return {
            "replaced_total": int(self.replaced.sum()),
            "replaced": self.replaced.tolist(),
            "hot": self.hot.tolist(),
            "dead": self.dead.tolist(),
            "line": self.line.tolist(),
            "kept_clusters": self.kept_clusters.tolist(),
            "noise_sigma": [float(s) for s in self.noise_sigma],
        }


def _blocks(a: np.ndarray, block_px: int) -> np.ndarray:
    """``(nby, nbx, block_px²)`` blocks of a 2D array (the last partial blocks padded symmetrically)."""
    ny, nx = a.shape
    nby, nbx = math.ceil(ny / block_px), math.ceil(nx / block_px)
    p = np.pad(a, ((0, nby * block_px - ny), (0, nbx * block_px - nx)), mode="symmetric")
    return p.reshape(nby, block_px, nbx, block_px).transpose(0, 2, 1, 3).reshape(nby, nbx, -1)


def _robust_sigma(absdev: np.ndarray) -> np.ndarray:
    """Robust σ of deviations ``|r|`` along the last axis: ``1.4826 · median(|r|)``; where the median is 0
    (sparse counts, most pixels 0), the RMS of ``r`` without its largest 1 % (a mean of ``|r|`` would
    underestimate a Poisson σ at λ ≪ 1 several times over: ``E|r| = λ`` against ``σ = √λ``)."""
    rows = absdev.reshape(-1, absdev.shape[-1])
    sig = 1.4826 * np.median(rows, axis=-1)
    sparse = sig <= 0
    if np.any(sparse):
        sq = np.sort(rows[sparse] ** 2, axis=-1)
        keep = max(1, math.ceil(0.99 * sq.shape[-1]))
        sig[sparse] = np.sqrt(sq[..., :keep].mean(axis=-1))
    return sig.reshape(absdev.shape[:-1])


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y ≈ a + b·x`` in closed form; ``(mean y, 0)`` when ``x`` does not vary."""
    xm, ym = float(x.mean()), float(y.mean())
    sxx = float(np.sum((x - xm) ** 2))
    if sxx <= 1e-12 * max(xm * xm, 1e-300) * x.size:
        return ym, 0.0
    b = float(np.sum((x - xm) * (y - ym))) / sxx
    return ym - b * xm, b


def _signal_variance_fit(level: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    """Robust straight line ``var ≈ a + b·level`` (three rounds of 3-MAD outlier rejection); ``(a, b)`` with
    ``a, b ≥ 0``; ``(median var, 0)`` when the levels do not vary.

    A negative intercept (from structure or discrete counts) made the model σ 0 at low levels and doubled
    the z of any dark pixel there: the line goes through the origin instead. Values of exactly 0 (a
    constant fill, a vacuum without counts) carry no noise and are left out: many of them made the median
    residual 0 and rejected every other value, so the fit said "no noise"."""
    valid = np.isfinite(var) & (var > 0)
    if not valid.any():
        return 0.0, 0.0
    keep = valid
    a, b = float(np.median(var[keep])), 0.0
    for _ in range(3):
        if keep.sum() < 3:
            break
        a, b = _line_fit(level[keep], var[keep])
        if b < 0:
            a, b = float(np.median(var[keep])), 0.0
        elif a < 0:  # no negative read noise: the line through the origin instead
            lv = level[keep]
            a, b = 0.0, max(0.0, float(np.sum(lv * var[keep]) / max(float(np.sum(lv * lv)), 1e-300)))
        res = var - (a + b * level)
        mad = float(np.median(np.abs(res[keep]))) + 1e-30
        keep = valid & (np.abs(res) <= 3 * 1.4826 * mad)
    return a, b


def _level_bins(level: np.ndarray, residual: np.ndarray, n_bins: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Median level and robust residual variance in ``n_bins`` equal-count bins of pixels sorted by level
    (at most 2¹⁸ pixels, evenly strided, are used)."""
    lv, rv = level.ravel(), residual.ravel()
    step = max(1, lv.size >> 18)
    lv, rv = lv[::step], rv[::step]
    order = np.argsort(lv, kind="stable")
    levels, variances = [], []
    for chunk in np.array_split(order, min(n_bins, max(1, lv.size // 64))):
        r = rv[chunk]
        levels.append(float(np.median(lv[chunk])))
        variances.append(float(_robust_sigma(np.abs(r - np.median(r)))) ** 2)
    return np.asarray(levels), np.asarray(variances)


def local_noise_sigma(
    residual: np.ndarray, block_px: int, level: np.ndarray | None = None, value: np.ndarray | None = None
) -> np.ndarray:
    """Robust local noise σ ``(ny, nx)`` of a residual image (input units).

    Block σ: ``1.4826 · median(|r|)`` per ``block_px`` block (where the median is 0, i.e. sparse counts,
    the RMS of ``r`` without its largest 1 %), piecewise constant. With ``level`` (the local median
    image), the variance of the residuals is also fitted as a function of the level, ``σ² = a + b·level``
    (shot + read noise), on the pixels binned by level (wherever they lie), and each pixel gets the larger
    of its block σ and the model σ at its own level: in a block that is mostly dark, the bright pixels are
    judged against their own (larger) Poisson noise. With ``value`` (the image itself) as well, that σ is
    multiplied by ``½(1 + σ_model(value)/σ_model(level))``, at most :data:`STABILIZED_MAX_FACTOR` (the
    variance-stabilized z-score of the module notes, step 3).
    """
    ny, nx = residual.shape
    sig = _robust_sigma(np.abs(_blocks(residual, block_px)))
    out = np.repeat(np.repeat(sig, block_px, axis=0), block_px, axis=1)[:ny, :nx]
    if level is None:
        return out
    a, b = _signal_variance_fit(*_level_bins(level, residual))
    c = a + 0.375 * b * b  # the generalized Anscombe transform's constant (Poisson gain b, Gaussian variance a)
    at_level = np.clip(c + b * level, 0.0, None)
    sigma = np.maximum(out, np.sqrt(at_level).astype(out.dtype))
    if value is None:
        return sigma
    # variance-stabilized: σ at the median times ½(1 + σ(value)/σ(median)) of the noise model, so that
    # r / σ is the difference of the generalized Anscombe transforms of the value and the median; the
    # factor is capped at 2, since on images with little or no shot noise the model fits structure
    ratio = np.sqrt(np.clip(c + b * value, 0.0, None) / np.where(at_level > 0, at_level, 1.0))
    factor = np.where(at_level > 0, np.minimum(0.5 * (1.0 + ratio), STABILIZED_MAX_FACTOR), 1.0)
    return (sigma * factor).astype(out.dtype)


def _stands_out(b: np.ndarray) -> np.ndarray:
    """For lines along axis 0 of ``b``: pixels darker or brighter than both their neighbours across (axis 1)
    where at least one of those neighbour lines is not constant. False on the two border lines (one
    neighbour only)."""
    change = np.zeros(b.shape, dtype=bool)
    step = b[1:] != b[:-1]
    change[1:] |= step
    change[:-1] |= step
    out = np.zeros(b.shape, dtype=bool)
    mid, lo, hi = b[:, 1:-1], b[:, :-2], b[:, 2:]
    out[:, 1:-1] = (((mid < lo) & (mid < hi)) | ((mid > lo) & (mid > hi))) & (change[:, :-2] | change[:, 2:])
    return out


def _dead_runs(img: np.ndarray, cand: np.ndarray, axis: int, min_run: int) -> np.ndarray:
    """Pixels in runs of ≥ ``min_run`` identical values along ``axis`` of which at least half are candidates
    that stand out from both parallel neighbour lines while those vary (:func:`_stands_out`). A noise-free
    image has constant columns at its edges and in flat parts, and a constant fill has a constant edge:
    none of those is a dead line."""
    b = np.moveaxis(img, axis, 0)
    start = np.ones(b.shape, dtype=bool)
    start[1:] = b[1:] != b[:-1]
    run_id = np.cumsum(start.ravel(order="F")).reshape(b.shape, order="F")  # column-major: runs never span columns
    lengths = np.bincount(run_id.ravel())
    hit = np.moveaxis(cand, axis, 0) & _stands_out(b)
    hits = np.bincount(run_id.ravel(), weights=hit.ravel())
    dead = (lengths >= min_run) & (hits >= 0.5 * lengths)
    return np.moveaxis(dead[run_id], 0, axis)


def _isolated_clusters(
    img: np.ndarray, cand: np.ndarray, sign: int, margin: np.ndarray, config: DefectConfig
) -> tuple[np.ndarray, int]:
    """Mask of the small isolated clusters among ``cand`` (one sign) and the number of clusters kept."""
    labels, n = ndimage.label(cand, structure=_EIGHT)
    if n == 0:
        return np.zeros_like(cand), 0
    idx = np.arange(1, n + 1)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    # the extreme non-candidate value touching each pixel (candidates masked out by ∓inf)
    s_img = sign * img
    neigh = ndimage.maximum_filter(np.where(cand, -np.inf, s_img), footprint=_EIGHT, mode="nearest")
    ring = np.asarray(ndimage.maximum(neigh, labels, idx))
    weakest = np.asarray(ndimage.minimum(s_img - margin, labels, idx))
    ok = np.zeros(n + 1, dtype=bool)
    ok[1:] = (sizes[1:] <= config.max_cluster_px) & (weakest > ring)
    # a single-pixel spike inside a cluster that is kept (a hot pixel touching a structure candidate) still
    # goes: it exceeds all 8 neighbours, candidates included, by the margin (the border has fewer neighbours)
    kept = n - int(ok[1:].sum())
    if kept == 0:
        return ok[labels], 0
    all_neigh = ndimage.maximum_filter(s_img, footprint=_RING8, mode="constant", cval=-np.inf)
    spikes = cand & ~ok[labels] & (s_img - margin > all_neigh)
    return ok[labels] | spikes, kept


def _clean_image(img: np.ndarray, config: DefectConfig) -> tuple[np.ndarray, dict[str, Any]]:
    med = ndimage.median_filter(img, size=config.window_px, mode="reflect")
    work = np.float64 if img.dtype == np.float64 else np.float32
    x, level = img.astype(work), med.astype(work)
    resid = x - level
    sig = local_noise_sigma(resid, config.noise_block_px, level, x)
    z = np.zeros_like(resid)  # σ = 0 (a perfectly flat block): any deviation is infinitely significant
    z[resid > 0], z[resid < 0] = np.inf, -np.inf
    np.divide(resid, sig, out=z, where=sig > 0)
    hot_c, cold_c = z > config.threshold, z < -config.threshold
    line = np.zeros_like(hot_c)
    if config.dead_lines:
        cand = hot_c | cold_c
        line = _dead_runs(img, cand, 0, config.dead_run_px) | _dead_runs(img, cand, 1, config.dead_run_px)
    margin = config.isolation * np.abs(resid)
    hot, kept_h = _isolated_clusters(x, hot_c & ~line, 1, margin, config)
    dead, kept_d = _isolated_clusters(x, cold_c & ~line, -1, margin, config)
    mask = hot | dead | line
    out = img.copy()
    out[mask] = med[mask]
    stats = {"hot": int(hot.sum()), "dead": int(dead.sum()), "line": int(line.sum()),
             "kept": kept_h + kept_d, "sigma": float(np.median(sig)), "mask": mask}
    return out, stats


def remove_defects(
    stack: np.ndarray,
    config: DefectConfig = DefectConfig(),
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, DefectReport]:
    """Replace hot and dead pixels (and optionally dead lines) in each image by the local median.

    Parameters
    ----------
    stack : ``(n_tilts, ny, nx)`` (or one ``(ny, nx)`` image), raw intensities of any real dtype, before
        any normalization or alignment (defects are detector pixels).
    config : :class:`DefectConfig`.
    progress : ``callback(done, total)`` after each image.

    Returns
    -------
    (cleaned stack, same shape and dtype; :class:`DefectReport`). Pixels not replaced are bit-identical.

    Raises
    ------
    ParameterError
        Not a 2D/3D real array, images smaller than the median window, NaN/inf values, bad config.
    """
    config.validate()
    arr = np.asarray(stack)
    if arr.ndim not in (2, 3) or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ParameterError(f"hot-pixel removal: expected a real (n, ny, nx) stack, got {arr.dtype} {arr.shape}")
    single = arr.ndim == 2
    arr3 = arr[None] if single else arr
    if min(arr3.shape[1:]) < config.window_px:
        raise ParameterError(
            f"hot-pixel removal: images {arr3.shape[1]}×{arr3.shape[2]} are smaller than the window {config.window_px}"
        )
    if np.issubdtype(arr3.dtype, np.floating) and not np.isfinite(arr3).all():
        raise ParameterError("hot-pixel removal: the stack holds NaN or infinite pixels; replace them first")
    out = np.empty_like(arr3)
    n = arr3.shape[0]
    counts = {k: np.zeros(n, dtype=np.int64) for k in ("hot", "dead", "line", "kept")}
    sigma = np.zeros(n)
    coords = []
    for i in range(n):
        out[i], st = _clean_image(arr3[i], config)
        for k in counts:
            counts[k][i] = st[k]
        sigma[i] = st["sigma"]
        if config.return_coordinates:
            yx = np.argwhere(st["mask"])
            coords.append(np.column_stack((np.full(len(yx), i), yx)))
        if progress is not None:
            progress(i + 1, n)
    report = DefectReport(
        replaced=counts["hot"] + counts["dead"] + counts["line"], hot=counts["hot"], dead=counts["dead"],
        line=counts["line"], kept_clusters=counts["kept"], noise_sigma=sigma,
        coordinates=(np.concatenate(coords).astype(np.int64) if coords else np.zeros((0, 3), np.int64))
        if config.return_coordinates else None,
    )
    log.info("defects: replaced %d pixels in %d images", int(report.replaced.sum()), n)
    return (out[0] if single else out), report


__all__ = ["DefectConfig", "DefectReport", "local_noise_sigma", "remove_defects"]
