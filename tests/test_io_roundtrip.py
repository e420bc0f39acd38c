"""Write → read round trips: MRC and TIFF, float32 and integer dtypes, sidecars, provenance, model files."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
import yaml

from stemtomo.errors import InputError, ModelFileError, ParameterError
from stemtomo.io import (
    Metadata,
    load_model,
    make_provenance,
    read_sidecar,
    read_stack,
    read_volume,
    save_model,
    sidecar_path,
    write_image,
)
from stemtomo.io.mrc import read_mrc
from stemtomo.io.sidecar import sha256_file

ANGLES = [-30.0, -15.0, 0.0, 15.0, 30.0]


def _valid(path: str) -> bool:
    out = io.StringIO()
    ok = bool(mrcfile.validate(path, print_file=out))
    assert ok, out.getvalue()
    return ok


def _ts_meta() -> Metadata:
    return Metadata(kind="tilt_series", tilt_angles_deg=ANGLES, pixel_size_angstrom=2.5, tilt_axis_angle_deg=90.0,
                    contrast="bf", kappa=7.0, thickness_px=12.0)


@pytest.mark.parametrize("suffix", [".mrc", ".mrcs", ".st", ".ali", ".tif", ".tiff"])
@pytest.mark.parametrize("as_str", [False, True])
def test_tilt_series_float32_round_trip(workdir: Path, rng: np.random.Generator, suffix: str, as_str: bool) -> None:
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    target: str | Path = f"ts{suffix}" if as_str else workdir / f"ts{suffix}"
    out = write_image(target, data, _ts_meta())
    assert out == Path(target)
    img = read_stack(target)
    np.testing.assert_array_equal(img.data, data)  # float32 is lossless, no flips or transposes
    assert img.meta.tilt_angles_deg == ANGLES
    assert img.meta.pixel_size_angstrom == pytest.approx(2.5, rel=1e-6)
    assert (img.meta.tilt_axis_angle_deg, img.meta.contrast, img.meta.kappa) == (90.0, "bf", 7.0)
    assert img.meta.shape == [5, 6, 7]


@pytest.mark.parametrize("suffix", [".rec", ".map", ".mrc", ".tif"])
def test_volume_round_trip(workdir: Path, rng: np.random.Generator, suffix: str) -> None:
    vol = rng.random((4, 6, 8), dtype=np.float32)
    write_image(f"v{suffix}", vol, Metadata(kind="volume", pixel_size_angstrom=3.0))
    img = read_volume(f"v{suffix}")
    np.testing.assert_array_equal(img.data, vol)
    assert img.meta.kind == "volume" and img.meta.axes == "zyx"
    assert img.meta.pixel_size_angstrom == pytest.approx(3.0, rel=1e-6)


def test_mrc_header_is_valid_mrc2014(workdir: Path, rng: np.random.Generator) -> None:
    write_image("ts.mrc", rng.random((5, 6, 7), dtype=np.float32), _ts_meta())
    write_image("v.rec", rng.random((4, 6, 8), dtype=np.float32), Metadata(kind="volume", pixel_size_angstrom=3.0))
    for name, ispg in (("ts.mrc", 0), ("v.rec", 1)):
        assert _valid(name)
        with mrcfile.open(name) as mrc:
            assert int(mrc.header.ispg) == ispg  # stack flagged as image stack, volume as volume
            assert int(mrc.header.mode) == 2
            # IMOD's pixel spacing is xlen/mx, ylen/my, zlen/mz: all equal to the pixel size
            h = mrc.header
            for length, count in ((h.cella.x, h.mx), (h.cella.y, h.my), (h.cella.z, h.mz)):
                assert float(length) / int(count) == pytest.approx(2.5 if ispg == 0 else 3.0)
            assert (int(h.mapc), int(h.mapr), int(h.maps)) == (1, 2, 3)
            assert tuple(float(v) for v in h.origin.item()) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(("suffix", "dtype", "mode"), [(".mrc", np.uint16, 6), (".mrc", np.int16, 1),
                                                        (".mrc", np.float16, 12), (".tif", np.uint16, None)])
def test_integer_and_half_dtypes(workdir: Path, suffix: str, dtype: type, mode: int | None) -> None:
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7) + 0.4  # rounds to 0..209
    if dtype is np.float16:
        data /= 100  # mrcfile.validate sums squares in float16: keep them far below 65504
    write_image(f"ts{suffix}", data, _ts_meta(), dtype=dtype)
    img = read_stack(f"ts{suffix}")
    # integers are rounded, not truncated; float16 keeps its 11-bit mantissa
    expected = data.astype(np.float16).astype(np.float32) if dtype is np.float16 else np.rint(data)
    np.testing.assert_array_equal(img.data, expected)
    if mode is not None:
        assert read_mrc(f"ts{suffix}")[1].mode == mode
        assert _valid(f"ts{suffix}")
    else:
        with tifffile.TiffFile(f"ts{suffix}") as tf:
            assert tf.pages[0].dtype == np.uint16


def test_integer_output_refuses_out_of_range(workdir: Path) -> None:
    data = np.full((5, 4, 4), 70000.0, np.float32)
    with pytest.raises(ParameterError, match=r"values 70000…70000 do not fit uint16"):
        write_image("ts.mrc", data, _ts_meta(), dtype=np.uint16)
    with pytest.raises(ParameterError, match="NaN/Inf values cannot be written as int16"):
        write_image("ts.mrc", np.full((5, 4, 4), np.nan, np.float32), _ts_meta(), dtype=np.int16)
    with pytest.raises(ParameterError, match="dtype int32 is not supported"):
        write_image("ts.mrc", data, _ts_meta(), dtype=np.int32)
    with pytest.raises(ParameterError, match="TIFF output dtype int16 is not supported"):
        write_image("ts.tif", data, _ts_meta(), dtype=np.int16)
    assert list(workdir.iterdir()) == []  # nothing written, no temporary files left


def test_tiff_has_imagej_spacing_and_unit(workdir: Path) -> None:
    write_image("ts.tif", np.zeros((5, 4, 4), np.float32), _ts_meta())
    with tifffile.TiffFile("ts.tif") as tf:
        assert tf.is_imagej
        assert tf.imagej_metadata["unit"] == "angstrom"
        assert tf.imagej_metadata["spacing"] == pytest.approx(2.5)
        num, den = tf.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(2.5, rel=1e-6)


def test_tiff_pixel_size_in_nm_and_micron(workdir: Path) -> None:
    for unit, factor in (("nm", 10.0), ("micron", 1e4)):
        tifffile.imwrite(f"{unit}.tif", np.zeros((2, 4, 4), np.float32), imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                         metadata={"unit": unit})
        assert read_stack(f"{unit}.tif").meta.pixel_size_angstrom == pytest.approx(0.5 * factor, rel=1e-6)


def test_tiff_narrow_stack_is_not_mistaken_for_rgb(workdir: Path) -> None:
    """A stack of images 3 or 4 pixels wide stays a stack; only photometric-RGB pages become luma."""
    data = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    write_image("narrow.tif", data, Metadata(kind="volume"))
    np.testing.assert_array_equal(read_volume("narrow.tif").data, data)
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 50, 10
    tifffile.imwrite("rgb.tif", rgb, photometric="rgb")
    img = read_volume("rgb.tif")
    assert img.data.shape == (1, 6, 5)
    np.testing.assert_allclose(img.data, 0.2126 * 100 + 0.7152 * 50 + 0.0722 * 10, rtol=1e-6)  # Rec. 709 luma


def test_sidecar_unknown_keys_and_provenance_are_kept(workdir: Path, rng: np.random.Generator) -> None:
    data = rng.random((5, 4, 4), dtype=np.float32)
    write_image("a.mrc", data, _ts_meta(), provenance=make_provenance("simulate", {"seed": 3}))
    text = sidecar_path("a.mrc").read_text()
    doc = yaml.safe_load(text)
    assert doc["schema_version"] == "1.0" and list(doc)[0] == "schema_version"
    doc["lab_notebook"] = {"page": 17, "who": "me"}  # a key stemtomo does not know
    sidecar_path("a.mrc").write_text(yaml.safe_dump(doc))
    img = read_stack("a.mrc")
    write_image("b.mrc", img.data, img.meta, provenance=make_provenance("denoise", {"method": "bm3d"}, ["a.mrc"]))
    meta = read_sidecar("b.mrc")
    assert meta is not None
    assert meta.extra["lab_notebook"] == {"page": 17, "who": "me"}  # preserved through read and write
    assert [r["command"] for r in meta.provenance] == ["simulate", "denoise"]  # appended, oldest first
    record = meta.provenance[1]
    assert record["options"] == {"method": "bm3d"}
    assert record["inputs"] == [{"path": str((workdir / "a.mrc").resolve()), "sha256": sha256_file("a.mrc")}]
    assert set(record) >= {"command", "version", "time", "options", "inputs"}


def test_sidecar_minor_version_newer_is_read(workdir: Path) -> None:
    write_image("a.mrc", np.zeros((5, 4, 4), np.float32), _ts_meta())
    doc = yaml.safe_load(sidecar_path("a.mrc").read_text())
    doc["schema_version"] = "1.7"
    sidecar_path("a.mrc").write_text(yaml.safe_dump(doc))
    assert read_stack("a.mrc").meta.tilt_angles_deg == ANGLES


def test_mrc_without_sidecar_uses_header(workdir: Path) -> None:
    with mrcfile.new("plain.mrc") as mrc:
        mrc.set_data(np.ones((3, 4, 5), np.int16))
        mrc.voxel_size = 1.75
    img = read_stack("plain.mrc")
    assert img.data.dtype == np.float32 and img.data.shape == (3, 4, 5)
    assert img.meta.pixel_size_angstrom == pytest.approx(1.75)
    assert img.meta.tilt_angles_deg is None


def test_legacy_header_opens_permissively_with_a_warning(workdir: Path, cli, caplog: pytest.LogCaptureFixture) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    with mrcfile.new("ok.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 2.0
    raw = bytearray(Path("ok.mrc").read_bytes())
    raw[208:216] = bytes(8)  # no 'MAP ' and no machine stamp (pre-2000 writers)
    raw[28:40] = bytes(12)  # mx = my = mz = 0: no pixel spacing (and no division by zero)
    Path("old.mrc").write_bytes(bytes(raw))
    arr, info = read_mrc("old.mrc")
    np.testing.assert_array_equal(arr, data)
    assert info.pixel_size_angstrom is None
    assert any("machine stamp" in w for w in info.warnings)
    assert "old.mrc: read permissively" in caplog.text
    result = cli("info", "old.mrc")
    assert result.exit_code == 0 and "MRC header read permissively" in result.stderr


def test_volume_stack_is_read_as_sections(workdir: Path) -> None:
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    with mrcfile.new("vs.mrc") as mrc:
        mrc.set_data(data)  # ispg 401, mz = 3
    arr, info = read_mrc("vs.mrc")
    np.testing.assert_array_equal(arr, data.reshape(6, 4, 5))
    assert info.shape == (6, 4, 5)


def test_imod_byte_signedness(workdir: Path) -> None:
    """Mode 0 follows IMOD's readBytesSigned: the IMOD flag, else the header min/max."""
    data = np.array([[[0, 100, 200, 255]]], dtype=np.uint8)

    def write(name: str, dmin: float, dmax: float, stamp_flags: int | None = None) -> None:
        with mrcfile.new(name) as mrc:
            mrc.set_data(data.view(np.int8))
            mrc.header.dmin, mrc.header.dmax = dmin, dmax
        if stamp_flags is not None:
            with open(name, "r+b") as fh:
                fh.seek(152)
                fh.write(np.array([1146047817, stamp_flags], "<i4").tobytes())

    write("legacy.mrc", 0, 255)  # an unsigned writer's statistics
    np.testing.assert_array_equal(read_mrc("legacy.mrc")[0], data.astype(np.float32))
    write("signed.mrc", -56, 100)  # negative values, none above 127: signed
    np.testing.assert_array_equal(read_mrc("signed.mrc")[0], data.view(np.int8).astype(np.float32))
    write("imod_u.mrc", -56, 100, stamp_flags=0)  # IMOD stamp without the signed flag: unsigned
    assert read_mrc("imod_u.mrc")[1].unsigned_bytes
    write("imod_s.mrc", 0, 255, stamp_flags=1)
    np.testing.assert_array_equal(read_mrc("imod_s.mrc")[0], data.view(np.int8).astype(np.float32))


def test_model_file_round_trip(workdir: Path) -> None:
    import torch

    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    save_model("m.safetensors", state, Metadata(kind="noise_model", extra={"class": "gaussian", "sigma": 0.1}))
    loaded, meta = load_model("m.safetensors", kind="noise_model")
    assert torch.equal(loaded["w"], state["w"])
    assert meta.extra["class"] == "gaussian"
    with pytest.raises(ModelFileError, match="is a 'noise_model' file, expected a 'model' file"):
        load_model("m.safetensors", kind="model")
    # a damaged sidecar: deleting it (the advice for images, which read without one) would lose the model
    Path("m.safetensors.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(InputError, match=r"malformed YAML sidecar \(.*\); restore it or re-run the command"):
        load_model("m.safetensors")


def test_model_files_get_the_same_permissions_as_other_outputs(workdir: Path) -> None:
    # safetensors writes owner-only (0600) files: a model a colleague could not read, unlike its sidecar
    import torch

    old = os.umask(0o022)
    try:
        save_model("m.safetensors", {"w": torch.zeros(3)}, Metadata(kind="noise_model"))
        write_image("v.mrc", np.zeros((2, 4, 4), np.float32), Metadata(kind="volume"))
    finally:
        os.umask(old)
    modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in ("m.safetensors", "m.safetensors.yaml", "v.mrc")}
    assert set(modes.values()) == {0o644}, modes
