"""SerialEM ``.mdoc`` parsing, IMOD angle files and the metadata precedence of ``read_stack``.

Precedence (issue #2): explicit option > sidecar > angle file beside the stack > .mdoc > extended header.
Each source below carries different angles, so the winner is identified by its values.
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from stemtomo.errors import FileFormatError, InputError
from stemtomo.io import Metadata, find_angle_file, read_angle_file, read_stack, write_image
from stemtomo.io.mdoc import find_mdoc, read_mdoc, read_mdoc_metadata

MDOC = """PixelSpacing = 3.42
Voltage = 300
ImageFile = ts.mrc
ImageSize = 8 6
DataMode = 2

[T = SerialEM: Digitized on EMBL Krios                    24-Nov-26  10:01:59    ]

[T =     Tilt axis angle = 84.7, binning = 1  spot = 8  camera = 0]

[ZValue = 0]
TiltAngle = -20.0
StagePosition = 12.1 -4.3
Magnification = 42000
RotationAngle = 175.3
ExposureDose = 3.1

[ZValue = 1]
TiltAngle = 0.02
RotationAngle = 175.3

[ZValue = 2]
TiltAngle = 19.99
RotationAngle = 175.3
SubFramePath = X:\\frames\\ts_002.tif
"""


def _mrc(path: Path, n: int = 3) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.zeros((n, 6, 8), np.float32))
        mrc.set_image_stack()
        mrc.voxel_size = 1.5
    return path


def test_read_mdoc_sections_titles_and_unknown_keys(workdir: Path) -> None:
    (workdir / "ts.mrc.mdoc").write_text(MDOC)
    doc = read_mdoc(workdir / "ts.mrc.mdoc")
    assert doc.global_keys["PixelSpacing"] == "3.42"
    assert len(doc.titles) == 2
    assert sorted(doc.sections) == [0, 1, 2]
    assert doc.sections[2]["SubFramePath"] == "X:\\frames\\ts_002.tif"  # unknown keys kept verbatim
    meta = read_mdoc_metadata(workdir / "ts.mrc.mdoc")
    assert meta["tilt_angles_deg"] == [-20.0, 0.02, 19.99]
    assert meta["pixel_size_angstrom"] == pytest.approx(3.42)
    assert meta["tilt_axis_angle_deg"] == pytest.approx(84.7)  # the title wins over RotationAngle − 90


def test_mdoc_tilt_axis_from_rotation_angle(workdir: Path) -> None:
    """Without a title: IMOD tilt axis = RotationAngle − 90 (SerialEM about_formats, CONVENTIONS §5)."""
    text = MDOC.replace("Tilt axis angle = 84.7,", "")
    (workdir / "a.mdoc").write_text(text)
    assert read_mdoc_metadata(workdir / "a.mdoc")["tilt_axis_angle_deg"] == pytest.approx(85.3)


def test_mdoc_sections_out_of_order_are_sorted(workdir: Path) -> None:
    (workdir / "a.mdoc").write_text("[ZValue = 1]\nTiltAngle = 5\n\n[ZValue = 0]\nTiltAngle = -5\n")
    assert read_mdoc_metadata(workdir / "a.mdoc")["tilt_angles_deg"] == [-5.0, 5.0]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[ZValue = 0]\nTiltAngle = 1\n[ZValue = 2]\nTiltAngle = 3\n", "with gaps"),
        ("[ZValue = 0]\nTiltAngle = 1\n[ZValue = 0]\nTiltAngle = 3\n", "appears twice"),
        ("[ZValue = a]\n", "not an integer"),
        ("[ZValue = 0]\nTiltAngle = 1\n[ZValue = 1]\nStagePosition = 1 2\n", "TiltAngle missing"),
        ("this is not an autodoc\n", "not a 'key = value' line"),
    ],
)
def test_malformed_mdoc(workdir: Path, text: str, match: str) -> None:
    (workdir / "bad.mdoc").write_text(text)
    with pytest.raises(FileFormatError, match=match):
        read_mdoc_metadata(workdir / "bad.mdoc")


def test_find_mdoc_names(workdir: Path) -> None:
    _mrc(workdir / "ts.mrc")
    assert find_mdoc(workdir / "ts.mrc") is None
    (workdir / "ts.mdoc").write_text(MDOC)
    assert find_mdoc(workdir / "ts.mrc") == workdir / "ts.mdoc"
    (workdir / "ts.mrc.mdoc").write_text(MDOC)
    assert find_mdoc(workdir / "ts.mrc") == workdir / "ts.mrc.mdoc"  # SerialEM's own name first


def test_angle_file_parsing(workdir: Path) -> None:
    f = workdir / "ts.rawtlt"
    f.write_text("  -60.00\n\n-58.5   1\n# comment\n  0\n 3.5e1\n\n")
    assert read_angle_file(f) == [-60.0, -58.5, 0.0, 35.0]  # blank lines ignored, first column only
    f.write_text("1.0\nabc\n")
    with pytest.raises(InputError, match=r"ts.rawtlt:2: 'abc' is not a tilt angle"):
        read_angle_file(f)
    f.write_text("\n\n")
    with pytest.raises(InputError, match="holds no angles"):
        read_angle_file(f)
    f.write_text("1\nnan\n")
    with pytest.raises(InputError, match="not finite"):
        read_angle_file(f)
    with pytest.raises(InputError, match="angle file not found"):
        read_angle_file(workdir / "missing.tlt")
    f.write_text("0\n" + "x" * 5000 + "\n")  # the message shows the start of a bad line, not all of it
    with pytest.raises(InputError, match=r"ts.rawtlt:2: 'x{40}…' is not a tilt angle in degrees$"):
        read_angle_file(f)


def test_binary_file_passed_as_angle_file(workdir: Path) -> None:
    write_image("ts.mrc", np.zeros((3, 4, 4), np.float32), Metadata(kind="tilt_series"))
    with pytest.raises(InputError, match=r"^ts.mrc: binary data, not an angle file \(text, one angle"):
        read_angle_file("ts.mrc")  # was: the whole 1 kB header quoted in the error line


def test_tlt_preferred_over_rawtlt(workdir: Path) -> None:
    _mrc(workdir / "ts.mrc")
    (workdir / "ts_TLT.txt").write_text("# AreTomo3: tilt, acquisition order, dose\n-3 2 3.1\n0 1 3.1\n3 3 3.1\n")
    assert find_angle_file(workdir / "ts.mrc") == workdir / "ts_TLT.txt"
    assert read_stack(workdir / "ts.mrc").meta.tilt_angles_deg == [-3.0, 0.0, 3.0]  # first column only
    (workdir / "ts.rawtlt").write_text("1\n2\n3\n")
    assert find_angle_file(workdir / "ts.mrc") == workdir / "ts.rawtlt"
    (workdir / "ts.tlt").write_text("1\n2\n3\n")
    assert find_angle_file(workdir / "ts.mrc") == workdir / "ts.tlt"  # refined angles win


def test_precedence_chain(workdir: Path) -> None:
    """Remove the winning source one by one and check that the next one takes over."""
    ts = _mrc(workdir / "ts.mrc")
    # extended header (SERI, tilt×100 int16) says 1, 2, 3
    with mrcfile.open(ts, "r+") as mrc:
        mrc.set_extended_header(np.frombuffer(np.array([100, 200, 300], "<i2").tobytes(), dtype="V1"))
        mrc.header.exttyp = b"SERI"
    with open(ts, "r+b") as fh:
        fh.seek(128)
        fh.write(np.array([2, 1], "<i2").tobytes())  # nint = 2 bytes, nreal = flag 1 (tilt)
    assert read_stack(ts).meta.tilt_angles_deg == [1.0, 2.0, 3.0]
    assert read_stack(ts).meta.pixel_size_angstrom == pytest.approx(1.5)  # header voxel size
    (workdir / "ts.mrc.mdoc").write_text(MDOC)
    img = read_stack(ts)
    assert img.meta.tilt_angles_deg == [-20.0, 0.02, 19.99]  # .mdoc beats extended header
    assert img.meta.pixel_size_angstrom == pytest.approx(3.42)  # and the header voxel size
    assert img.meta.tilt_axis_angle_deg == pytest.approx(84.7)
    (workdir / "ts.rawtlt").write_text("-10\n0\n10\n")
    img = read_stack(ts)
    assert img.meta.tilt_angles_deg == [-10.0, 0.0, 10.0]  # angle file beats .mdoc for angles
    assert img.meta.pixel_size_angstrom == pytest.approx(3.42)  # but the .mdoc still gives the pixel size
    meta = Metadata(kind="tilt_series", tilt_angles_deg=[-5.0, 0.0, 5.0], pixel_size_angstrom=9.0,
                    tilt_axis_angle_deg=-3.0)
    write_image(workdir / "side.mrc", img.data, meta)
    for name in ("side.rawtlt", "side.mrc.mdoc"):
        (workdir / name).write_text((workdir / ("ts.rawtlt" if name.endswith("rawtlt") else "ts.mrc.mdoc")).read_text())
    img = read_stack(workdir / "side.mrc")
    assert img.meta.tilt_angles_deg == [-5.0, 0.0, 5.0]  # sidecar beats angle file and .mdoc
    assert img.meta.pixel_size_angstrom == 9.0
    assert img.meta.tilt_axis_angle_deg == -3.0
    assert img.sources["tilt_angles_deg"] == "sidecar"
    img = read_stack(workdir / "side.mrc", angles=[7.0, 8.0, 9.0], pixel_size_angstrom=1.25, tilt_axis_angle_deg=90)
    assert img.meta.tilt_angles_deg == [7.0, 8.0, 9.0]  # explicit beats everything
    assert (img.meta.pixel_size_angstrom, img.meta.tilt_axis_angle_deg) == (1.25, 90.0)
    img = read_stack(workdir / "side.mrc", angles=workdir / "ts.rawtlt")
    assert img.meta.tilt_angles_deg == [-10.0, 0.0, 10.0]


def test_malformed_mdoc_is_not_read_when_sidecar_has_everything(workdir: Path) -> None:
    meta = Metadata(kind="tilt_series", tilt_angles_deg=[1.0, 2.0, 3.0], pixel_size_angstrom=2.0)
    write_image(workdir / "ts.mrc", np.zeros((3, 4, 4), np.float32), meta)
    (workdir / "ts.mrc.mdoc").write_text("garbage\n")
    assert read_stack(workdir / "ts.mrc").meta.tilt_angles_deg == [1.0, 2.0, 3.0]
    (workdir / "u.mrc.mdoc").write_text("garbage\n")
    _mrc(workdir / "u.mrc")
    with pytest.raises(FileFormatError, match=r"u.mrc.mdoc:1: .* is not a 'key = value' line"):
        read_stack(workdir / "u.mrc")


def test_sources_are_logged_for_inputs_without_sidecar(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    _mrc(workdir / "ts.mrc")
    (workdir / "ts.rawtlt").write_text("1\n2\n3\n")
    with caplog.at_level(logging.DEBUG, logger="stemtomo"):  # shown with -v; `stemtomo info` lists the sources
        read_stack(workdir / "ts.mrc")
    assert "tilt_angles_deg from" in caplog.text and "ts.rawtlt" in caplog.text
    assert "pixel_size_angstrom from MRC/TIFF header" in caplog.text


def test_explicit_mdoc_as_angle_file(workdir: Path) -> None:
    _mrc(workdir / "ts.mrc")
    (workdir / "other.mdoc").write_text(MDOC)
    assert read_stack(workdir / "ts.mrc", angles=workdir / "other.mdoc").meta.tilt_angles_deg == [-20.0, 0.02, 19.99]
    (workdir / "empty.mdoc").write_text("PixelSpacing = 2\n")
    with pytest.raises(InputError, match="empty.mdoc: the .mdoc has no TiltAngle entries"):
        read_stack(workdir / "ts.mrc", angles=workdir / "empty.mdoc")


def test_mdoc_count_mismatch_names_both_counts(workdir: Path) -> None:
    _mrc(workdir / "ts.mrc", n=4)
    (workdir / "ts.mrc.mdoc").write_text(MDOC)
    with pytest.raises(InputError, match=r"3 tilt angles \(from .*ts.mrc.mdoc\) but 4 images"):
        read_stack(workdir / "ts.mrc")
