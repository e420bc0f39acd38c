"""MRC extended headers (FEI1/FEI2, SerialEM SERI, Agard/old FEI) built byte by byte from the specifications.

The records are built here with numpy structured dtypes at the byte offsets of CONVENTIONS.md §2.4–2.6
(FEI: Alpha tilt f8 @100, tilt axis f8 @140, pixel size X f8 @156 in metres; SERI: int16 tilt × 100 at
the start of an nint-byte record; Agard: nint int32 then nreal float32, tilt = first float), written
into real MRC files with mrcfile, and read back through ``read_stack``.
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from stemtomo.io import read_stack
from stemtomo.io.exthdr import is_serialem_layout, seri_bytes_for_flags
from stemtomo.io.mrc import read_mrc

TILTS = np.array([-30.0, -15.5, 0.0, 14.25, 30.0])


def _stack(n: int = 5, ny: int = 6, nx: int = 8) -> np.ndarray:
    return np.arange(n * ny * nx, dtype=np.float32).reshape(n, ny, nx)


def _write(path: Path, data: np.ndarray, ext: bytes, exttyp: bytes, nint: int = 0, nreal: int = 0,
           nversion: int = 20141, labels: tuple[str, ...] = ()) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.set_image_stack()
        mrc.voxel_size = 2.0  # header pixel size: the extended header must win over it
        mrc.set_extended_header(np.frombuffer(ext, dtype="V1"))
        mrc.header.exttyp = exttyp
        mrc.header.nversion = nversion
        for label in labels:
            mrc.add_label(label)
        order = "<" if mrc.header.mode.dtype.byteorder in "<=|" else ">"
    # nint/nreal (int16 at bytes 128/130) are not fields of mrcfile's MRC2014 header: patch the bytes
    with open(path, "r+b") as fh:
        fh.seek(128)
        fh.write(np.array([nint, nreal], dtype=order + "i2").tobytes())
    return path


FEI_VALID = (1 << 7) | (1 << 12) | (1 << 14) | (1 << 15)  # Bitmask 1: alpha tilt, tilt axis, pixel X/Y


def _fei_records(n: int, size: int, order: str, tilts: np.ndarray, pixel_m: float, axis: float,
                 mask: int = FEI_VALID, app_version: bytes = b"2.12.1") -> bytes:
    dt = np.dtype({
        "names": ["size", "version", "mask", "appver", "alpha", "axis", "px", "py"],
        "formats": [order + "i4", order + "i4", "<u4", "S16", order + "f8", order + "f8", order + "f8",
                    order + "f8"],
        "offsets": [0, 4, 8, 68, 100, 140, 156, 164],
        "itemsize": size,
    })
    rec = np.zeros(n, dtype=dt)
    rec["size"], rec["version"], rec["mask"], rec["appver"] = size, 0 if size == 768 else 2, mask, app_version
    rec["alpha"], rec["axis"], rec["px"], rec["py"] = tilts, axis, pixel_m, pixel_m
    return rec.tobytes()


def test_fei_bitmask_and_legacy_angle_unit(workdir: Path) -> None:
    """Fields flagged invalid in Bitmask 1 are ignored; EPU 4.4.0.4981 tilts are scaled by π/180 (IMOD)."""
    rec = _fei_records(5, 768, "<", TILTS, 3.2e-10, 0.0, mask=1 << 14)  # pixel valid, alpha not
    img = read_stack(_write(workdir / "a.mrc", _stack(), rec, b"FEI1"))
    assert img.meta.tilt_angles_deg is None
    assert img.meta.pixel_size_angstrom == pytest.approx(3.2)
    rec = _fei_records(5, 768, "<", TILTS * 180 / np.pi, 3.2e-10, 0.0, app_version=b"4.4.0.4981")
    img = read_stack(_write(workdir / "b.mrc", _stack(), rec, b"FEI1"))
    np.testing.assert_allclose(img.tilt_angles_deg, TILTS)
    rec = _fei_records(5, 768, "<", TILTS, 3.2e-10, 0.0, mask=0)  # writer left the mask empty: trusted
    np.testing.assert_allclose(read_stack(_write(workdir / "c.mrc", _stack(), rec, b"FEI1")).tilt_angles_deg, TILTS)


@pytest.mark.parametrize(("exttyp", "size"), [(b"FEI1", 768), (b"FEI2", 888)])
@pytest.mark.parametrize("order", ["<", ">"])
def test_fei_extended_header_gives_tilts_and_pixel_size(workdir: Path, exttyp: bytes, size: int, order: str) -> None:
    path = _write(workdir / "fei.mrc", _stack(), _fei_records(5, size, order, TILTS, 3.2e-10, 86.0), exttyp)
    img = read_stack(path)
    np.testing.assert_allclose(img.tilt_angles_deg, TILTS)
    assert img.meta.pixel_size_angstrom == pytest.approx(3.2)  # 3.2e-10 m, not the header's 2.0 Å
    assert img.sources["tilt_angles_deg"] == f"{exttyp.decode()} extended header"
    # the FEI tilt axis convention is unverified: reported, never applied
    assert img.meta.tilt_axis_angle_deg == 0.0
    assert float(img.sources["header_tilt_axis_angle_deg"]) == 86.0


def test_fei_records_agree_with_mrcfile_reader(workdir: Path) -> None:
    """mrcfile's own FEI1 dtype (an independent reading of the spec) finds our Alpha tilt and pixel size."""
    path = _write(workdir / "fei.mrc", _stack(), _fei_records(5, 768, "<", TILTS, 3.2e-10, 0.0), b"FEI1")
    with mrcfile.open(path, permissive=True) as mrc:
        ext = mrc.indexed_extended_header
        np.testing.assert_allclose(ext["Alpha tilt"], TILTS)
        np.testing.assert_allclose(ext["Pixel size X"], 3.2e-10)


def test_fei_mrc2014_20140_is_flipped_in_y_like_imod(workdir: Path) -> None:
    data = _stack()
    path = _write(workdir / "fei.mrc", data, _fei_records(5, 768, "<", TILTS, 3e-10, 0.0), b"FEI1",
                  nversion=20140)
    arr, info = read_mrc(path)
    assert info.y_inverted
    np.testing.assert_array_equal(arr, data[:, ::-1, :])  # IMOD reads these files top-row-first
    path2 = _write(workdir / "fei2.mrc", data, _fei_records(5, 768, "<", TILTS, 3e-10, 0.0), b"FEI1")
    arr2, info2 = read_mrc(path2)  # nversion 20141: stored bottom-row-first, no flip
    assert not info2.y_inverted
    np.testing.assert_array_equal(arr2, data)


def test_fei_with_implausible_values_is_ignored(workdir: Path) -> None:
    bad = TILTS.copy()
    bad[2] = 1e30  # garbage alpha
    path = _write(workdir / "fei.mrc", _stack(), _fei_records(5, 768, "<", bad, 5.0, 0.0), b"FEI1")
    img = read_stack(path)
    assert img.meta.tilt_angles_deg is None
    assert img.meta.pixel_size_angstrom == pytest.approx(2.0)  # 5 m is absurd: header value kept


def test_serialem_flags_arithmetic() -> None:
    assert seri_bytes_for_flags(1) == 2
    assert seri_bytes_for_flags(1 | 2 | 4 | 8 | 16) == 2 + 6 + 4 + 2 + 2  # SerialEM's usual 16-byte record
    assert is_serialem_layout(16, 1 | 2 | 4 | 8 | 16)
    assert not is_serialem_layout(0, 32)  # Agard: 32 floats
    assert seri_bytes_for_flags(1 << 11) is None


@pytest.mark.parametrize("order", ["<", ">"])
def test_serialem_extended_header_tilts(workdir: Path, order: str) -> None:
    flags, nint = 1 | 2 | 4 | 8 | 16, 16
    dt = np.dtype({"names": ["tilt", "mag"], "formats": [order + "i2", order + "i2"], "offsets": [0, 12],
                   "itemsize": nint})
    rec = np.zeros(5, dtype=dt)
    rec["tilt"] = np.round(TILTS * 100).astype(np.int16)
    rec["mag"] = 300
    data = _stack()
    # a big-endian file (header and data swapped too): mrcfile follows the data's byte order
    path = _write(workdir / "seri.mrc", data.astype(order + "f4"), rec.tobytes(), b"SERI", nint, flags,
                  labels=("SerialEM: Digitized on EMBL Krios   Tilt axis angle = 85.3, binning = 1 spot = 8",))
    img = read_stack(path)
    np.testing.assert_allclose(img.tilt_angles_deg, np.round(TILTS * 100) / 100)
    assert img.meta.tilt_axis_angle_deg == pytest.approx(85.3)  # from the title label, IMOD convention
    assert img.meta.pixel_size_angstrom == pytest.approx(2.0)  # SERI has none: header voxel size
    np.testing.assert_array_equal(img.data, data)


def test_serialem_without_tilt_flag_gives_no_angles(workdir: Path) -> None:
    path = _write(workdir / "seri.mrc", _stack(), bytes(5 * 6), b"SERI", 6, 2)
    assert read_stack(path).meta.tilt_angles_deg is None


def test_agard_old_fei_header(workdir: Path) -> None:
    """Old FEI: 1024 records × (nreal 32 floats); IMOD's nint=128 bug work-around; float 11 = pixel (m)."""
    floats = np.zeros((1024, 32), dtype="<f4")
    floats[:5, 0] = TILTS
    floats[:, 10] = 12.5  # tilt axis (reported, not applied)
    floats[:, 11] = 4.5e-10
    path = _write(workdir / "agard.mrc", _stack(), floats.tobytes(), b"AGAR", 128, 32)
    img = read_stack(path)
    np.testing.assert_allclose(img.tilt_angles_deg, TILTS, atol=1e-5)
    assert img.meta.pixel_size_angstrom == pytest.approx(4.5, rel=1e-6)
    assert img.meta.tilt_axis_angle_deg == 0.0


def test_old_fei_block_without_nint_nreal(workdir: Path) -> None:
    """Old FEI writers leave nint = nreal = 0; the fixed 1024 × 128-byte block still identifies the layout."""
    floats = np.zeros((1024, 32), dtype="<f4")
    floats[:5, 0] = TILTS
    floats[:, 11] = 6.0e-10
    path = _write(workdir / "old.mrc", _stack(), floats.tobytes(), b"\0\0\0\0", 0, 0, nversion=0)
    img = read_stack(path)
    np.testing.assert_allclose(img.tilt_angles_deg, TILTS, atol=1e-5)
    assert img.meta.pixel_size_angstrom == pytest.approx(6.0, rel=1e-6)
    path = _write(workdir / "other.mrc", _stack(), bytes(1000), b"\0\0\0\0", 0, 0)  # unknown block: ignored
    assert read_stack(path).meta.tilt_angles_deg is None


def test_agard_with_ints_before_floats(workdir: Path) -> None:
    n, nint, nreal = 5, 2, 3
    rec = np.zeros(n, dtype=[("ints", "<i4", (nint,)), ("floats", "<f4", (nreal,))])
    rec["ints"] = 77  # must be skipped
    rec["floats"][:, 0] = TILTS
    path = _write(workdir / "agard.mrc", _stack(), rec.tobytes(), b"AGAR", nint, nreal)
    np.testing.assert_allclose(read_stack(path).tilt_angles_deg, TILTS, atol=1e-5)


def test_short_extended_header_is_ignored_not_fatal(workdir: Path) -> None:
    path = _write(workdir / "short.mrc", _stack(), _fei_records(2, 768, "<", TILTS[:2], 3e-10, 0), b"FEI1")
    img = read_stack(path)  # 2 records for 5 sections: ignored with a warning
    assert img.meta.tilt_angles_deg is None
