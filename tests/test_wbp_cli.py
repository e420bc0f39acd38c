"""``stemtomo wbp`` end to end on a tiny simulated tilt series, and its bad-input paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stemtomo.core.geometry import aligned_to_raw, length_unit_px
from stemtomo.core.imaging import intensity
from stemtomo.core.projector import forward_project
from stemtomo.io import Metadata, read_sidecar, read_volume, write_image

ANGLES = np.arange(-84.0, 85.0, 6.0)  # 29 tilts, nearly full range so WBP is quantitative


def block_phantom() -> np.ndarray:
    vol = np.zeros((16, 24, 32), dtype=np.float32)
    vol[4:12, 6:18, 8:24] = 0.5
    return vol


def write_series(
    path: Path, *, angles: np.ndarray | None = ANGLES, axis_deg: float = 0.0, sidecar: bool = True
) -> Path:
    """BF intensities of :func:`block_phantom` (slab = whole 16-voxel depth), written with a sidecar."""
    vol = torch.tensor(block_phantom())
    a = ANGLES if angles is None else angles
    p = forward_project(vol, a) / length_unit_px(24, 32)
    stack = aligned_to_raw(intensity(p), axis_deg).numpy()
    meta = Metadata(kind="tilt_series", pixel_size_angstrom=2.0, thickness_px=16.0, contrast="bf",
                    kappa=7.0, normalization={"range01": True}, tilt_axis_angle_deg=axis_deg,
                    tilt_angles_deg=None if angles is None else [float(x) for x in angles])
    write_image(path, stack, meta)
    if not sidecar:
        path.with_name(path.name + ".yaml").unlink()
    return path


def test_wbp_smoke_and_sidecar(workdir: Path, cli) -> None:
    ts = write_series(workdir / "ts.mrc")
    res = cli("wbp", ts, "-o", "rec.mrc", "--half-sets", "--filter", "hann")
    assert res.exit_code == 0, res.output
    rec = read_volume("rec.mrc")
    assert rec.data.shape == (16, 24, 32)
    meta = rec.meta
    assert meta.kind == "volume" and meta.pixel_size_angstrom == 2.0 and meta.thickness_px == 16.0
    assert meta.extra["method"] == "wbp" and meta.extra["filter"] == "hann"
    assert meta.provenance[-1]["command"] == "wbp"
    truth = block_phantom()
    # The block comes back where it is, density in units of ρ (measured corr 0.95, interior mean 0.46:
    # the 16-voxel-deep field truncates the rays' view of the block at high tilt).
    assert np.corrcoef(rec.data.ravel(), truth.ravel())[0, 1] > 0.9
    assert np.mean(rec.data[5:11, 8:16, 10:22]) == pytest.approx(0.5, rel=0.12)
    even, odd = read_volume("rec_even.mrc"), read_volume("rec_odd.mrc")
    assert even.meta.extra["half_set"] == "even" and even.meta.extra["n_tilts"] == 15
    # WBP is linear and the half sets carry doubled Δθ weights: their mean ≈ the full reconstruction.
    assert np.corrcoef(((even.data + odd.data) / 2).ravel(), rec.data.ravel())[0, 1] > 0.99


def test_tilt_axis_90_and_binning(workdir: Path, cli) -> None:
    write_series(workdir / "a.mrc")
    write_series(workdir / "r.mrc", axis_deg=90.0)  # stored with the tilt axis along x
    assert cli("wbp", "a.mrc", "-o", "a_rec.mrc").exit_code == 0
    res = cli("wbp", "r.mrc", "-o", "r_rec.mrc")
    assert res.exit_code == 0, res.output
    a, r = read_volume("a_rec.mrc").data, read_volume("r_rec.mrc").data
    assert np.allclose(a, r, atol=1e-5)
    res = cli("wbp", "a.mrc", "-o", "b2.mrc", "--bin", "2", "--tilt-axis-angle", "0")
    assert res.exit_code == 0, res.output
    b2 = read_volume("b2.mrc")
    assert b2.data.shape == (8, 12, 16)  # thickness 16 input px → 8 output voxels
    assert b2.meta.pixel_size_angstrom == 4.0 and b2.meta.thickness_px == 8.0
    # Same density scale after binning (the length unit follows the binned size).
    assert np.mean(b2.data[2:6, 3:9, 4:12]) == pytest.approx(np.mean(a[4:12, 6:18, 8:24]), rel=0.1)


def test_sirt_smoke(workdir: Path, cli) -> None:
    write_series(workdir / "ts.mrc")
    res = cli("wbp", "ts.mrc", "-o", "s.mrc", "--method", "sirt", "--iterations", "3", "--positivity",
              "--thickness-px", "12", "--nz", "16")
    assert res.exit_code == 0, res.output
    s = read_volume("s.mrc")
    assert s.data.shape == (16, 24, 32) and s.data.min() >= 0
    # z = iz - 7.5; rays are clipped to |z| ≤ 6, so planes iz = 0, 15 (|z| = 7.5) are never touched
    assert s.data[0].max() == 0 and s.data[-1].max() == 0 and s.data[1].max() > 0
    norms = s.meta.extra["sirt_residual_norms"]
    assert len(norms) == 4 and norms[-1] < norms[0]
    assert s.meta.extra["sirt"]["iterations"] == 3


@pytest.mark.parametrize(
    "args,message",
    [
        (["--thickness-px", "0"], "--thickness-px 0"),
        (["--bin", "0"], "--bin 0"),
        (["--relaxation", "2.5"], "--relaxation 2.5"),
        (["--thickness-px", "30", "--nz", "10"], "larger than --nz"),
        (["--tilt-axis-angle", "nan"], "--tilt-axis-angle nan: must be a finite angle within ±180°"),  # was exit 70
        (["--tilt-axis-angle", "400"], "--tilt-axis-angle 400"),
    ],
)
def test_bad_options(workdir: Path, cli, args: list[str], message: str) -> None:
    write_series(workdir / "ts.mrc")
    res = cli("wbp", "ts.mrc", "-o", "out.mrc", *args)
    assert res.exit_code == 1
    assert res.stderr.strip().count("\n") == 0 and message in res.stderr
    assert not (workdir / "out.mrc").exists() and not (workdir / "out.mrc.yaml").exists()


def test_bad_inputs(workdir: Path, cli) -> None:
    write_series(workdir / "noang.mrc", angles=None)
    res = cli("wbp", "noang.mrc", "-o", "out.mrc")
    assert res.exit_code == 1 and "no tilt angles" in res.output
    (workdir / "wrong.tlt").write_text("\n".join(["0", "10", "20"]) + "\n")
    res = cli("wbp", "noang.mrc", "-o", "out.mrc", "--angles", "wrong.tlt")
    assert res.exit_code == 1 and "3 tilt angles" in res.output and "29 images" in res.output
    write_series(workdir / "one.mrc", angles=np.array([0.0]))
    res = cli("wbp", "one.mrc", "-o", "out.mrc")
    assert res.exit_code == 1 and "≥ 2 images" in res.output
    write_image("flat.mrc", np.full((29, 24, 32), 0.7, np.float32),  # the error line named no file
                Metadata(kind="tilt_series", tilt_angles_deg=[float(a) for a in ANGLES]))
    res = cli("wbp", "flat.mrc", "-o", "out.mrc")
    assert res.exit_code == 1 and "flat.mrc: every pixel is 0.7; a constant stack" in res.output
    write_image("vol.mrc", block_phantom(), Metadata(kind="volume"))
    res = cli("wbp", "vol.mrc", "-o", "out.mrc")
    assert res.exit_code == 1 and "expected a tilt series" in res.output
    res = cli("wbp", "noang.mrc", "-o", "out.mrc", "--filter", "gauss")
    assert res.exit_code == 1 and "--filter 'gauss': unknown filter; use one of ramp" in res.output
    assert not (workdir / "out.mrc").exists()
    write_series(workdir / "ts.mrc")
    assert cli("wbp", "ts.mrc", "-o", "out.mrc").exit_code == 0
    res = cli("wbp", "ts.mrc", "-o", "out.mrc")
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert read_sidecar("out.mrc") is not None


def test_a_volume_larger_than_the_free_memory_is_refused_up_front(workdir: Path, cli, monkeypatch) -> None:
    import stemtomo.core.device as device

    write_series(workdir / "ts.mrc")
    # 16 × 24 × 32 float32 = 48 KiB; with the half sets three volumes are held (144 KiB)
    monkeypatch.setattr(device, "available_memory_bytes", lambda dev: 100 * 1024)
    assert cli("wbp", "ts.mrc", "-o", "small.mrc").exit_code == 0
    res = cli("wbp", "ts.mrc", "-o", "out.mrc", "--half-sets")
    assert res.exit_code == 1 and res.stderr.strip().count("\n") == 0, res.output
    assert "wbp of a 16×24×32 (zyx) volume needs 144 KiB but cpu has 100 KiB available; bin it (--bin 2" in res.stderr
    assert not any(workdir.glob("out*"))


def test_available_memory_is_read_from_the_kernel() -> None:
    from stemtomo.core.device import available_memory_bytes

    free = available_memory_bytes(torch.device("cpu"))
    if Path("/proc/meminfo").exists():
        assert free is not None and 2**26 < free < 2**50
    assert available_memory_bytes(torch.device("meta")) is None
