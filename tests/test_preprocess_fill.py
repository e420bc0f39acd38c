"""Measured pixels of aligned stacks (:mod:`stemtomo.preprocess.fill`: the coverage of the transforms, the
detected fill) and the slab estimate that scores only voxels every tilt sees measured
(:func:`stemtomo.preprocess.pipeline.estimate_slab`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_align import ANGLES, _misaligned_series

from stemtomo.align import apply_xf, xf_from_alignment
from stemtomo.align.xf import xf_coverage
from stemtomo.core.geometry import aligned_shape
from stemtomo.errors import ParameterError
from stemtomo.io import Metadata
from stemtomo.preprocess.fill import aligned_support, alignment_coverage_record, fill_mask, measured_pixels
from stemtomo.preprocess.pipeline import estimate_binning, estimate_slab
from stemtomo.preprocess.thickness import slab_from_profile, z_profile
from stemtomo.recon.wbp import bin_images


def _shifted(images: torch.Tensor, shifts_xy: np.ndarray) -> torch.Tensor:
    """What ``align`` writes for measured shifts and a 0° axis: the content moved by −shift, the uncovered
    border filled with the image's mean."""
    return apply_xf(images, xf_from_alignment(0.0, shifts_xy))


def test_fill_of_a_shifted_noisy_image_is_the_uncovered_border(rng: np.random.Generator) -> None:
    """A noisy 40×50 image aligned for measured shifts (+6, −4) px, i.e. its content moved by (−6, +4): the
    fill is the 6 right columns and the 4 top rows (up to the 2-px rim that covers the interpolated seam),
    and nothing of the original stack is fill."""
    img = torch.from_numpy(rng.normal(1.0, 0.1, (2, 40, 50))).float()
    moved = _shifted(img, np.array([[6.0, -4.0], [0.0, 0.0]]))
    mask = fill_mask(moved).numpy()
    expected = np.zeros((40, 50), dtype=bool)
    expected[:, -6:] = True
    expected[:4, :] = True
    assert mask[0][expected].all()
    near = np.zeros_like(expected)
    near[:, -8:] = True
    near[:6, :] = True
    assert not mask[0][~near].any()  # at most the 2-px rim beyond the uncovered region
    assert not mask[1].any()  # a zero shift leaves no fill
    assert not fill_mask(img).any()


def test_plateaus_are_not_fill(rng: np.random.Generator) -> None:
    """Constant runs that are not a fill: inside the image (not connected to the border), far from the
    image's mean (zero counts, saturation), or covering more than half of it."""
    img = rng.normal(1.0, 0.1, (3, 32, 32)).astype(np.float32)
    img[0, 10:20, 10:20] = 1.0  # the mean, but not connected to the border
    img[1, :, :8] = 0.0  # at the border, but 10 standard deviations below the mean (e.g. zero counts)
    img[2, :, :20] = 1.0  # at the border and at the mean, but more than half of the image
    assert not fill_mask(torch.from_numpy(img)).any()
    img[2, :, 12:20] = rng.normal(1.0, 0.1, (32, 8))  # now 12 columns: a fill
    assert fill_mask(torch.from_numpy(img))[2].float().mean() == pytest.approx(13 / 32)  # 11 constant + 2-px rim


def test_fill_survives_binning(rng: np.random.Generator) -> None:
    """Binned 2× (block means round): the fill is still found, its seam covered by the rim."""
    img = torch.from_numpy(rng.normal(1.0, 0.1, (1, 64, 64))).float()
    moved = bin_images(_shifted(img, np.array([[10.3, 0.0]])), 2)
    mask = fill_mask(moved)[0].numpy()
    assert mask[:, -5:].all() and not mask[:, :-8].any()


def test_bad_input() -> None:
    with pytest.raises(ParameterError, match="real"):
        fill_mask(torch.zeros(4, 4))
    with pytest.raises(ParameterError, match="max_fraction"):
        fill_mask(torch.zeros(1, 4, 4), max_fraction=0.0)


def test_coverage_of_a_shift_and_a_rotation() -> None:
    """``xf_coverage`` is False exactly where ``apply_xf`` reads outside the raw image: for a shift of
    (+2.5, 0) px the 3 right columns (2.5 px out, and the one blended with the fill); for a 7° rotation
    the four corners, as the fill's value there shows."""
    xf = xf_from_alignment(0.0, np.array([[2.5, 0.0]]))
    cover = xf_coverage(xf, (8, 10))[0].numpy()
    assert cover[:, :7].all() and not cover[:, 7:].any()
    rot = xf_from_alignment(7.0, np.zeros((1, 2)))
    ramp = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64)
    out = apply_xf(ramp, rot)[0]
    cover = xf_coverage(rot, (64, 64))[0]
    assert not cover[0, 0] and not cover[-1, -1] and cover[6:58, 6:58].all()
    assert torch.allclose(out[~cover].median(), ramp.mean(), rtol=0.05)  # mostly the fill
    assert 0.05 < 1 - float(cover.float().mean()) < 0.2


def test_measured_pixels_from_the_sidecar_record(rng: np.random.Generator) -> None:
    """The record ``align`` writes gives the coverage back, also for a stack binned 2× after the alignment;
    without a record nothing is left out unless detection is asked for (a file without a sidecar)."""
    shifts = np.array([[3.0, 0.0], [0.0, -4.0]])
    xf = xf_from_alignment(0.0, shifts)
    raw = torch.from_numpy(rng.normal(1.0, 0.1, (2, 16, 20))).float()
    aligned = apply_xf(raw, xf)
    meta = Metadata(extra={"alignment": alignment_coverage_record(xf, (16, 20), (16, 20))})
    measured = measured_pixels(aligned.numpy(), meta)
    assert measured is not None and torch.equal(measured, xf_coverage(xf, (16, 20)))
    binned = measured_pixels(bin_images(aligned, 2).numpy(), meta)
    assert binned is not None and binned.shape == (2, 8, 10)
    assert torch.equal(binned, bin_images(measured.float(), 2) == 1.0)
    assert measured_pixels(aligned.numpy(), Metadata()) is None
    detected = measured_pixels(aligned.numpy(), Metadata(), detect=True)
    assert detected is not None and not bool((detected & ~measured).any())  # every uncovered pixel is found
    assert int((~detected & measured).sum()) <= 2 * 16 + 2 * 20  # and at most a 2-px rim more is left out
    assert float(detected.float().mean()) > 0.6  # True at the measured pixels, not at the fill
    assert measured_pixels(aligned.numpy(), Metadata(extra={"alignment": {"transforms": "bad"}})) is None


def test_support_follows_the_rotation_to_the_aligned_frame() -> None:
    """A raw stack with a 7° tilt axis and no alignment: the rotation's zero padding (the corners) is not
    measured; a quarter turn pads nothing."""
    support = aligned_support(None, (3, 40, 40), 7.0)
    assert support is not None and not support[:, 0, 0].any() and support[:, 20, 20].all()
    assert aligned_support(None, (3, 40, 40), 90.0) is None
    measured = torch.ones((3, 40, 40), dtype=torch.bool)
    measured[:, :, -4:] = False
    binned = aligned_support(measured, (3, 40, 40), 0.0, bin_factor=2)
    assert binned is not None and binned.shape == (3, 20, 20) and not binned[:, :, -2:].any() and binned[:, :, :-2].all()


@pytest.mark.parametrize(("alpha", "seed"), [(7.0, 3), (-20.0, 7)])
def test_slab_of_an_aligned_stack_with_fill(alpha: float, seed: int) -> None:
    """96² cell slab (32 px), 41 tilts, tilt axis α and σ = 5 px shifts, aligned with the true transforms
    (mean-filled corners and borders, as ``align`` writes them): with their coverage, within 10 % and 1 px
    of the centre (measured 32.2/31.3 px, +0.3/+0.1 px), and the same with the fill detected instead.
    Scoring every voxel put a 17 px slab 35 px off centre: the edges of the fill back-project into sheets
    far from the specimen."""
    raw, shifts = _misaligned_series(96, 32, alpha, 5.0, seed)
    xf = xf_from_alignment(alpha, shifts)
    shape = aligned_shape(raw.shape, alpha)
    aligned = apply_xf(raw, xf, shape)
    assert estimate_binning(aligned.shape) == 1
    covered = xf_coverage(xf, raw.shape, shape)
    est = estimate_slab(aligned, ANGLES, measured=covered)
    assert est.thickness_px == pytest.approx(32.0, rel=0.10)
    assert abs(est.z_offset_px) < 1.0
    assert not est.touches_edge
    detected = estimate_slab(aligned, ANGLES, measured=~fill_mask(aligned))
    assert detected.thickness_px == pytest.approx(est.thickness_px, abs=1.0)
    assert detected.z_offset_px == pytest.approx(est.z_offset_px, abs=0.5)
    every = estimate_slab(aligned, ANGLES, seen_by_all=False)
    assert abs(every.z_offset_px) > 10.0  # the failure this guards against


def test_profile_with_a_support_and_unmeasured_planes(rng: np.random.Generator) -> None:
    """Structure in planes 10..19; the support leaves planes 0–3 unmeasured (NaN) and scores only a quarter
    of the others: the slab is found as before; a slab reaching an unmeasured plane is flagged as open."""
    vol = 0.01 * rng.standard_normal((32, 24, 24))
    vol[10:20] += rng.random((10, 24, 24))
    support = torch.zeros(vol.shape, dtype=torch.bool)
    support[4:, :12, :12] = True
    prof = z_profile(vol, support=support)
    assert np.isnan(prof[:4]).all() and np.isfinite(prof[4:]).all()
    est = slab_from_profile(prof)
    assert est.thickness_px == pytest.approx(10.0, abs=1.0) and not est.touches_edge
    vol[4:10] += rng.random((6, 24, 24))  # the structure now reaches plane 4, next to the unmeasured ones
    open_slab = slab_from_profile(z_profile(vol, support=support))
    assert open_slab.touches_edge and open_slab.z_low_px == pytest.approx(3.5)
    with pytest.raises(ParameterError, match="support of shape"):
        z_profile(vol, support=support[1:])
    with pytest.raises(ParameterError, match="seen whole"):
        z_profile(vol, support=torch.zeros(vol.shape, dtype=torch.bool))
