"""8-bit export follows each format's standard: MRC mode 0 is signed int8 (ρ·127), TIFF uint8 (ρ·255)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
import yaml

from stemtomo.errors import ParameterError
from stemtomo.io import Metadata, read_volume, write_image
from stemtomo.io.mrc import IMOD_STAMP
from stemtomo.recon.export import ExportSpec, storage_dtype, write_volume_chunks


@pytest.fixture
def ramp(workdir: Path) -> np.ndarray:
    """ρ from 0 to 1 (the range where a wrongly signed byte goes negative above ρ ≈ 0.5), as rho.mrc."""
    vol = np.linspace(0.0, 1.0, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    write_image("rho.mrc", vol, Metadata(kind="volume", pixel_size_angstrom=2.0))
    return vol


def test_uint8_mrc_is_signed_int8_that_every_reader_gives_back(cli, workdir: Path, ramp: np.ndarray) -> None:
    r = cli("export", "rho.mrc", "-o", "b.mrc", "--dtype", "uint8")
    assert r.exit_code == 0, r.output
    expected = np.rint(ramp * 127.0)
    # our reader (IMOD's signedness rule) gives the intended, non-negative values up to ρ = 1 → 127
    back = read_volume("b.mrc")
    assert back.header is not None and back.header.mode == 0 and not back.header.unsigned_bytes
    assert back.header.imod_stamp and back.header.imod_flags & 1  # IMOD stamp, signed-bytes flag
    assert np.array_equal(back.data, expected) and back.data.max() == 127 and back.data.min() == 0
    scaling = back.meta.extra["scaling"]
    assert scaling["dtype"] == "int8" and scaling["scale"] == 127.0
    assert np.abs(back.data / scaling["scale"] - ramp).max() <= 0.5 / 127 + 1e-7
    # mrcfile (MRC2014) reads the same numbers and finds the file valid; header min/max are 0…127
    assert mrcfile.validate("b.mrc", print_file=io.StringIO())
    with mrcfile.open("b.mrc") as mrc:
        assert mrc.data.dtype == np.int8 and np.array_equal(mrc.data, expected)
        assert (float(mrc.header.dmin), float(mrc.header.dmax)) == (0.0, 127.0)
        raw = mrc.header.tobytes()
        assert np.frombuffer(raw[152:160], dtype=mrc.header.nversion.dtype).tolist() == [IMOD_STAMP, 5]
    # `stemtomo info` shows the stored type and the values
    info = cli("info", "b.mrc", "--json")
    assert info.exit_code == 0, info.output
    shown = json.loads(info.output)
    assert shown["dtype"] == "int8" and shown["max"] == 127 and shown["min"] == 0


def test_uint8_tiff_keeps_unsigned_bytes(cli, workdir: Path, ramp: np.ndarray) -> None:
    assert cli("export", "rho.mrc", "-o", "b.tif", "--dtype", "uint8").exit_code == 0
    out = tifffile.imread("b.tif")
    assert out.dtype == np.uint8 and np.array_equal(out, np.rint(ramp * 255.0)) and out.max() == 255
    assert yaml.safe_load(Path("b.tif.yaml").read_text())["scaling"]["scale"] == 255.0
    assert np.array_equal(read_volume("b.tif").data, np.rint(ramp * 255.0))


def test_storage_dtype_and_refused_combinations(tmp_path: Path) -> None:
    assert storage_dtype("uint8", "v.mrc") == "int8" and storage_dtype("uint8", "v.REC") == "int8"
    assert storage_dtype("uint8", "v.tif") == "uint8" and storage_dtype("uint16", "v.mrc") == "uint16"
    with pytest.raises(ParameterError, match="--dtype 'int8': use float32, uint16 or uint8"):
        storage_dtype("int8", "v.mrc")
    meta = Metadata(kind="volume")
    for name, enc in (("a.tif", "int8"), ("a.mrc", "uint8")):
        with pytest.raises(ParameterError, match=f"{enc} cannot be stored"):
            write_volume_chunks(tmp_path / name, ExportSpec(shape=(2, 4, 4), scale=(1, 1, 1), dtype=enc),
                                lambda z0, z1: np.zeros((z1 - z0, 4, 4), np.float32), meta)
        assert not (tmp_path / name).exists()
