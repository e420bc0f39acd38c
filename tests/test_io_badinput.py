"""Every bad input of issue #2: exit code 1, one line naming the file and the problem, no traceback,
nothing written. Library paths are checked with ``pytest.raises(match=...)``, the CLI through ``info``.
"""

from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
import yaml

from stemtomo.errors import FileFormatError, InputError, OutputError
from stemtomo.io import (
    Metadata,
    check_output,
    check_output_dir,
    read_stack,
    read_volume,
    sidecar_path,
    write_image,
)
from stemtomo.io.mrc import read_mrc


def _one_line_error(result, *fragments: str) -> None:
    """Exit 1, exactly one line on stderr containing every fragment, no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output


def _ts(path: Path, n: int = 3, meta: Metadata | None = None) -> Path:
    meta = meta or Metadata(kind="tilt_series", tilt_angles_deg=[-10.0, 0.0, 10.0][:n] + [20.0] * max(0, n - 3))
    write_image(path, np.zeros((n, 4, 5), np.float32), meta)
    return path


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ---- unreadable inputs ---------------------------------------------------------------------------------
def test_nonexistent_path(workdir: Path, cli) -> None:
    _one_line_error(cli("info", "missing.mrc"), "missing.mrc", "no such file")
    with pytest.raises(InputError, match="missing.mrc: no such file"):
        read_stack("missing.mrc")


def test_directory(workdir: Path, cli) -> None:
    (workdir / "d.mrc").mkdir()
    _one_line_error(cli("info", "d.mrc"), "d.mrc", "is a directory")
    with pytest.raises(InputError, match="is a directory"):
        read_volume("d.mrc")


def test_empty_file(workdir: Path, cli) -> None:
    for name in ("e.mrc", "e.tif", "e.safetensors"):
        (workdir / name).write_bytes(b"")
        _one_line_error(cli("info", name), name, "file is empty")


def test_truncated_mrc_is_refused_before_reading(workdir: Path, cli) -> None:
    _ts(workdir / "ts.mrc")
    raw = (workdir / "ts.mrc").read_bytes()
    (workdir / "cut.mrc").write_bytes(raw[:-7])
    _one_line_error(cli("info", "cut.mrc"), "cut.mrc", "truncated MRC file", f"the file has {len(raw) - 7} bytes")


def test_header_claiming_terabytes_is_an_error_not_an_allocation(workdir: Path) -> None:
    with mrcfile.new("big.mrc") as mrc:
        mrc.set_data(np.zeros((2, 4, 4), np.float32))
    with open("big.mrc", "r+b") as fh:  # claim 100000 × 100000 × 100000 float32 = 4 PB
        fh.write(np.array([100000, 100000, 100000], "<i4").tobytes())
    with pytest.raises(FileFormatError, match=r"big.mrc: truncated MRC file: header promises 100000×100000×100000"):
        read_mrc("big.mrc")
    with open("big.mrc", "r+b") as fh:
        fh.write(np.array([-5, 4, 2], "<i4").tobytes())
    with pytest.raises(FileFormatError, match=r"header dimensions .* are absurd"):
        read_mrc("big.mrc")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"hello, this is a text file\n" * 100, "not a valid MRC file"),
        (b"\x00" * 100, "shorter than the 1024-byte header"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "not a valid MRC file"),
    ],
)
def test_non_mrc_file_named_mrc(workdir: Path, cli, payload: bytes, match: str) -> None:
    (workdir / "fake.mrc").write_bytes(payload)
    _one_line_error(cli("info", "fake.mrc"), "fake.mrc", match)


def test_unsupported_mode_and_bad_extended_header_size(workdir: Path) -> None:
    with mrcfile.new("c.mrc") as mrc:
        mrc.set_data(np.zeros((2, 4, 4), np.complex64))
    with pytest.raises(FileFormatError, match=r"c.mrc: unsupported MRC mode 4 \(complex float32\)"):
        read_mrc("c.mrc")
    with mrcfile.new("x.mrc") as mrc:
        mrc.set_data(np.zeros((2, 4, 4), np.float32))
    with open("x.mrc", "r+b") as fh:
        fh.seek(92)
        fh.write(np.array([-40], "<i4").tobytes())
    with pytest.raises(FileFormatError, match="extended header size -40 is invalid"):
        read_mrc("x.mrc")


def test_unknown_suffix(workdir: Path, cli) -> None:
    (workdir / "a.png").write_bytes(b"123")
    _one_line_error(cli("info", "a.png"), "a.png", "unknown file type '.png'")


def test_tiff_pages_differ_in_shape(workdir: Path, cli) -> None:
    tifffile.imwrite("p.tif", np.zeros((4, 4), np.float32))
    tifffile.imwrite("p.tif", np.zeros((5, 4), np.float32), append=True)
    _one_line_error(cli("info", "p.tif"), "p.tif", "TIFF pages differ in shape", "(4, 4)", "(5, 4)")


def test_truncated_tiff(workdir: Path, cli) -> None:
    tifffile.imwrite("t.tif", np.ones((4, 16, 16), np.float32), photometric="minisblack")
    raw = Path("t.tif").read_bytes()
    Path("cut.tif").write_bytes(raw[: len(raw) // 2])
    result = cli("info", "cut.tif")
    _one_line_error(result, "cut.tif")
    assert "truncated TIFF" in result.stderr or "not a readable TIFF" in result.stderr


def test_tiff_claiming_too_many_pixels(workdir: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import stemtomo.io.tiff as tiff

    tifffile.imwrite("z.tif", np.zeros((2, 16, 16), np.float32), photometric="minisblack", compression="zlib")
    monkeypatch.setattr(tiff, "MAX_TIFF_BYTES", 1000)  # 2 × 16 × 16 × 4 = 2048 decoded bytes
    _one_line_error(cli("info", "z.tif"), "z.tif", "TIFF pages claim more than")


def test_tiff_garbage(workdir: Path, cli) -> None:
    Path("g.tif").write_bytes(b"not a tiff at all" * 10)
    _one_line_error(cli("info", "g.tif"), "g.tif", "not a readable TIFF file")


# ---- content problems ----------------------------------------------------------------------------------
def test_nan_inf_values(workdir: Path, cli) -> None:
    data = np.zeros((3, 4, 5), np.float32)
    data[0, 0, 0], data[1, 2, 3] = np.nan, np.inf
    write_image("n.mrc", data, Metadata(kind="tilt_series", tilt_angles_deg=[-1.0, 0.0, 1.0]))
    assert np.isnan(read_mrc("n.mrc")[0][0, 0, 0])  # written as is (mrcfile's warning is logged instead)
    with pytest.raises(InputError, match=r"n.mrc: 2 NaN/Inf values in the data"):
        read_stack("n.mrc")
    assert read_stack("n.mrc", allow_nonfinite=True).data.shape == (3, 4, 5)  # commands that can proceed
    result = cli("info", "n.mrc")  # info can proceed: a warning with the count
    assert result.exit_code == 0
    assert "warning: n.mrc: 2 NaN/Inf values" in result.stderr


def test_angle_count_mismatch_names_both_counts(workdir: Path, cli) -> None:
    write_image("ts.mrc", np.zeros((4, 4, 5), np.float32), Metadata(kind="tilt_series"))
    Path("ts.rawtlt").write_text("-10\n0\n10\n")
    with pytest.raises(InputError, match=r"ts.mrc: 3 tilt angles \(from ts.rawtlt\) but 4 images"):
        read_stack("ts.mrc")
    with pytest.raises(InputError, match=r"2 tilt angles \(from --angles\) but 4 images"):
        read_stack("ts.mrc", angles=[1.0, 2.0])
    result = cli("info", "ts.mrc")
    assert result.exit_code == 0 and "3 tilt angles (from ts.rawtlt) but 4 images" in result.stderr
    with pytest.raises(InputError, match=r"out.mrc: 3 tilt angles in the metadata but 4 images"):
        write_image("out.mrc", np.zeros((4, 4, 5), np.float32), Metadata(tilt_angles_deg=[1.0, 2.0, 3.0]))
    assert not Path("out.mrc").exists()


def test_require_angles(workdir: Path) -> None:
    write_image("ts.mrc", np.zeros((2, 4, 5), np.float32), Metadata(kind="tilt_series"))
    with pytest.raises(InputError, match=r"ts.mrc: no tilt angles found; pass --angles"):
        read_stack("ts.mrc", require_angles=True)


# ---- sidecars ------------------------------------------------------------------------------------------
def test_sidecar_unknown_major_version(workdir: Path, cli) -> None:
    _ts(workdir / "ts.mrc")
    doc = yaml.safe_load(sidecar_path("ts.mrc").read_text())
    doc["schema_version"] = "2.0"
    sidecar_path("ts.mrc").write_text(yaml.safe_dump(doc))
    _one_line_error(cli("info", "ts.mrc"), "ts.mrc.yaml", "schema version 2.0 is newer")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("kind: [unclosed\n", "malformed YAML sidecar"),
        ("- just\n- a list\n", "sidecar must be a YAML mapping, got list"),
        ("tilt_angles_deg: 5\n", "malformed sidecar field"),
        ("provenance: nope\n", "malformed sidecar field"),
        ("schema_version: one\n", "is not of the form MAJOR.MINOR"),
    ],
)
def test_malformed_sidecar(workdir: Path, cli, text: str, match: str) -> None:
    _ts(workdir / "ts.mrc")
    sidecar_path("ts.mrc").write_text(text)
    _one_line_error(cli("info", "ts.mrc"), "ts.mrc.yaml", match)


def test_sidecar_shape_differs_from_array(workdir: Path, cli) -> None:
    _ts(workdir / "ts.mrc")
    doc = yaml.safe_load(sidecar_path("ts.mrc").read_text())
    doc["shape"] = [3, 8, 8]
    sidecar_path("ts.mrc").write_text(yaml.safe_dump(doc))
    _one_line_error(cli("info", "ts.mrc"), "ts.mrc", "shape (3, 8, 8)", "holds (3, 4, 5)")
    with pytest.raises(InputError, match=r"says shape \(3, 8, 8\) but the file holds \(3, 4, 5\)"):
        read_stack("ts.mrc")


def test_sidecar_kind_mismatch(workdir: Path) -> None:
    write_image("v.mrc", np.zeros((3, 4, 5), np.float32), Metadata(kind="volume"))
    with pytest.raises(InputError, match="sidecar says this is a volume, expected a tilt series"):
        read_stack("v.mrc")
    _ts(workdir / "ts.mrc")
    with pytest.raises(InputError, match="sidecar says this is a tilt series, expected a volume"):
        read_volume("ts.mrc")


# ---- outputs -------------------------------------------------------------------------------------------
def test_existing_output_is_refused_and_kept(workdir: Path) -> None:
    _ts(workdir / "ts.mrc")
    before = Path("ts.mrc").read_bytes(), sidecar_path("ts.mrc").read_text()
    with pytest.raises(OutputError, match=r"ts.mrc: output exists; pass --overwrite"):
        write_image("ts.mrc", np.ones((3, 4, 5), np.float32), Metadata(kind="tilt_series"))
    assert (Path("ts.mrc").read_bytes(), sidecar_path("ts.mrc").read_text()) == before
    assert _files(workdir) == {"ts.mrc", "ts.mrc.yaml"}  # no temporary files left
    Path("ts.mrc").unlink()  # an orphan sidecar also blocks: it would be replaced
    with pytest.raises(OutputError, match=r"ts.mrc.yaml: output exists"):
        write_image("ts.mrc", np.ones((3, 4, 5), np.float32), Metadata(kind="tilt_series"))
    write_image("ts.mrc", np.ones((3, 4, 5), np.float32), Metadata(kind="tilt_series"), overwrite=True)
    assert read_stack("ts.mrc").data.max() == 1.0


def test_output_folder_missing_or_not_writable(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OutputError, match=r"output folder nodir does not exist"):
        check_output("nodir/ts.mrc")
    with pytest.raises(OutputError, match=r"parent folder a does not exist"):
        check_output_dir("a/b", ["x.mrc"])
    Path("ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == "ro" else real_access(p, mode))
    with pytest.raises(OutputError, match=r"ro/ts.mrc: output folder ro is not writable"):
        write_image("ro/ts.mrc", np.zeros((3, 4, 5), np.float32), Metadata(kind="tilt_series"))
    with pytest.raises(OutputError, match=r"folder ro is not writable"):
        check_output_dir("ro", ["x.mrc"])
    assert _files(workdir / "ro") == set()
    with pytest.raises(OutputError, match="output path is a directory"):
        check_output("ro")


def test_crash_while_writing_leaves_nothing(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that dies half-way (disk full, Ctrl-C) leaves neither the output nor a temporary file."""
    import stemtomo.io.stack as stack

    def broken(path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(stack, "write_mrc", broken)
    with pytest.raises(KeyboardInterrupt):
        write_image("ts.mrc", np.zeros((3, 4, 5), np.float32), Metadata(kind="tilt_series"))
    assert _files(workdir) == set()


def test_leftovers_of_a_killed_write_are_reported_not_deleted(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIGKILL leaves no chance to clean up: the next write of the same output names the hidden temporary files
    (of the array and of its sidecar) and their size, once, and deletes nothing (a live run may own them)."""
    from stemtomo.io.safety import temp_path_for

    stale = [temp_path_for(Path("ts.mrc")), temp_path_for(Path("ts.mrc.yaml"))]
    stale[0].write_bytes(b"x" * 2_000_000)
    stale[1].write_text("kind: tilt_series\n")
    Path(".other.mrc.ab.tmp.mrc").write_bytes(b"not ours")
    with caplog.at_level("WARNING", logger="stemtomo.io"):
        check_output("ts.mrc")
        check_output("ts.mrc")
        check_output("clean.mrc")
    assert len(caplog.records) == 1, caplog.text
    assert "ts.mrc: 2 temporary file(s) of an interrupted earlier write" in caplog.text and "2.0 MB" in caplog.text
    assert all(q.name in caplog.text for q in stale) and ".other" not in caplog.text
    assert all(q.exists() for q in stale)


def test_atomic_text_and_file_helpers(workdir: Path) -> None:
    from stemtomo.io import atomic_file, check_outputs, write_text_atomic

    write_text_atomic("a.txt", "one\n")
    write_text_atomic("a.txt", "two\n")  # the helpers replace; refusing is check_output's job
    assert Path("a.txt").read_text() == "two\n"
    with pytest.raises(RuntimeError), atomic_file("b.png") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert _files(workdir) == {"a.txt"}
    with pytest.raises(OutputError, match="a.txt: output exists"):
        check_outputs(["new.mrc", "a.txt"])  # all outputs are checked before anything is written


def test_unknown_output_suffix(workdir: Path) -> None:
    with pytest.raises(InputError, match=r"out.png: unknown output type '.png'"):
        write_image("out.png", np.zeros((3, 4, 5), np.float32), Metadata(kind="volume"))
    assert _files(workdir) == set()
