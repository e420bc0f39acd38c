"""prepare_tilt_series: order of the steps, the sidecar records, and its bad-input paths (on arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stemtomo.align.xf import apply_xf, format_xf, xf_from_alignment
from stemtomo.core.imaging import is_normalized, normalized_intensities
from stemtomo.core.projector import forward_project
from stemtomo.errors import InputError, ParameterError
from stemtomo.io import Image, Metadata
from stemtomo.preprocess import PrepareOptions, estimate_slab, prepare_tilt_series
from stemtomo.preprocess.pipeline import enclosing_thickness, file_sha256, thickness_record

ANGLES = np.arange(-60.0, 61.0, 6.0)


def _image(data: np.ndarray, **meta: object) -> Image:
    m = Metadata(kind="tilt_series", tilt_angles_deg=[float(a) for a in ANGLES[: data.shape[0]]], **meta)  # type: ignore[arg-type]
    return Image(data=data, meta=m, path=Path("ts.mrc"))


def _bf_with_vacuum(rng: np.random.Generator, gains: np.ndarray) -> np.ndarray:
    """BF images, I0 = gains[i]: a dark disc (I = 0.4) in vacuum (I = 1), mild Gaussian noise."""
    yy, xx = np.mgrid[:32, :32]
    disc = np.where((yy - 16) ** 2 + (xx - 16) ** 2 < 81, 0.4, 1.0)
    clean = gains[:, None, None] * disc[None]
    return (clean + rng.normal(0, 0.01, clean.shape)).astype(np.float32)


def test_nothing_asked_returns_the_stack_unchanged(rng: np.random.Generator) -> None:
    data = rng.random((5, 16, 16)).astype(np.float64)
    out, rec = prepare_tilt_series(_image(data, normalization={"range01": True}), PrepareOptions())
    assert out.dtype == np.float32 and np.array_equal(out, data.astype(np.float32))
    assert rec == {"normalization": {"range01": True}, "tilt_axis_angle_deg": 0.0, "extra": {}}
    assert not PrepareOptions().active


def test_defects_then_bf_vacuum_recovers_gains_and_is_calibrated(rng: np.random.Generator) -> None:
    """Hot pixels must go before the I0 estimate; the corrected vacuum is 1 at every tilt (within the noise),
    the factors are 1/gain, and the record makes normalized_intensities clip instead of re-stretching."""
    gains = np.linspace(0.7, 1.3, 6)
    data = _bf_with_vacuum(rng, gains)
    data[:, 3, 5] = 50.0  # one hot pixel per image, far above the vacuum
    opts = PrepareOptions(remove_defects=True, normalize_tilts="bf-vacuum")
    out, rec = prepare_tilt_series(_image(data, contrast="bf", normalization={"method": "physical"}), opts,
                                   contrast="bf")
    extra = rec["extra"]
    assert extra["defects"]["replaced_total"] >= 6 and extra["defects"]["hot"][0] >= 1
    assert out[:, 3, 5].max() < 1.2
    factors = np.array(extra["intensity_normalization"]["factors"])
    # 99th percentile of the smoothed vacuum sits ~1 σ/√(smoothing area) above 1: well within 2 %
    np.testing.assert_allclose(factors * gains, 1.0, rtol=0.02)
    assert np.all(np.abs(np.median(out[:, :4, :4], axis=(1, 2)) - 1.0) < 0.02)
    norm = rec["normalization"]
    assert norm["calibrated"] is True and norm["input"] == {"method": "physical"}
    clipped, _ = normalized_intensities(out, norm)
    assert np.array_equal(clipped, np.clip(out, 0, 1))  # no stretch: the disc stays at 0.4
    assert abs(float(np.median(clipped[:, 14:18, 14:18])) - 0.4) < 0.02
    yaml.safe_load(yaml.safe_dump(rec))  # YAML-safe


def test_df_scaling_keeps_raw_units_and_is_not_marked_normalized(rng: np.random.Generator) -> None:
    """DF total-mass mode: an object in view, per-tilt gains 0.5…2 → every image ends with the median
    total; the record has no 'method', so downstream commands still stretch globally (and denoise won't
    clip raw counts to [0, 1])."""
    gains = np.array([0.5, 1.0, 2.0, 1.0, 1.5])
    base = rng.random((16, 16)) * 100
    data = (gains[:, None, None] * base[None]).astype(np.float32)
    out, rec = prepare_tilt_series(_image(data, contrast="df", normalization={"range01": True}),
                                   PrepareOptions(normalize_tilts="df-total"), contrast="df")
    totals = out.reshape(5, -1).sum(axis=1)
    np.testing.assert_allclose(totals, np.median(totals), rtol=1e-5)
    np.testing.assert_allclose(out, np.broadcast_to(base, out.shape), rtol=1e-5)  # median gain is 1
    assert not is_normalized(rec["normalization"]) and rec["normalization"]["per_tilt"] == "df_total"


def test_xf_after_intensity_steps_gives_aligned_frame(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.random((4, 20, 24)).astype(np.float32)
    xf = xf_from_alignment(90.0, rng.normal(0, 2, (4, 2)))
    path = tmp_path / "a.xf"
    path.write_text(format_xf(xf))
    img = _image(data, tilt_axis_angle_deg=90.0)
    out, rec = prepare_tilt_series(img, PrepareOptions(xf=path))
    from stemtomo.align.xf import read_xf

    expected = apply_xf(torch.from_numpy(data), read_xf(path)).numpy()
    assert np.array_equal(out, expected)
    assert rec["tilt_axis_angle_deg"] == 0.0
    al = rec["extra"]["alignment"]
    assert al["xf_sha256"] == file_sha256(path) and al["source_tilt_axis_angle_deg"] == 90.0


def test_bad_inputs(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.random((4, 16, 16)).astype(np.float32) + 0.5
    with pytest.raises(ParameterError, match="--normalize-tilts 'bf'"):
        PrepareOptions(normalize_tilts="bf").validate()
    with pytest.raises(ParameterError, match="--defect-threshold -1: must be > 0"):
        prepare_tilt_series(_image(data), PrepareOptions(remove_defects=True, defect_threshold=-1))
    with pytest.raises(ParameterError, match="the series is bf contrast; use bf-vacuum or bf-slab"):
        prepare_tilt_series(_image(data), PrepareOptions(normalize_tilts="df-cos"), contrast="bf")
    no_angles = Image(data=data, meta=Metadata(kind="tilt_series"), path=Path("x.mrc"))
    with pytest.raises(InputError, match="x.mrc: --normalize-tilts bf-slab needs the tilt angles"):
        prepare_tilt_series(no_angles, PrepareOptions(normalize_tilts="bf-slab"))
    out, _ = prepare_tilt_series(no_angles, PrepareOptions(normalize_tilts="bf-vacuum"))  # needs none
    assert out.shape == data.shape
    xf = tmp_path / "three.xf"
    xf.write_text(format_xf(xf_from_alignment(0.0, np.zeros((3, 2)))))
    with pytest.raises(InputError, match="3 transforms but the stack has 4 images"):
        prepare_tilt_series(_image(data), PrepareOptions(xf=xf))


def test_estimate_slab_on_projected_slab() -> None:
    """A 12-voxel-thick slab of random structure, offset +3 voxels in z, in a 40-deep field: the
    full-depth WBP z-profile finds its thickness within 10 % and its offset within 1 voxel."""
    g = np.random.default_rng(3)
    vol = np.zeros((40, 32, 40), dtype=np.float32)
    vol[17:29] = (g.random((12, 32, 40)) > 0.7) * 0.5
    lines = forward_project(torch.from_numpy(vol), ANGLES)
    est = estimate_slab(lines, ANGLES)
    assert est.thickness_px == pytest.approx(12, rel=0.10)
    assert est.z_offset_px == pytest.approx(3.0, abs=1.0)
    rec = thickness_record(est, 2)
    assert rec["thickness_px"] == pytest.approx(2 * est.thickness_px)
    assert rec["enclosing_thickness_px"] == pytest.approx(2 * enclosing_thickness(est))
    assert enclosing_thickness(est) >= est.thickness_px + 2 * 2.0
    with pytest.raises(ParameterError, match="≥ 2 images"):
        estimate_slab(lines[:1], ANGLES[:1])
