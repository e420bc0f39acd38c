"""Chunked, memory-mapped volume writing: header statistics without a full-volume pass, page release."""

from __future__ import annotations

import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

from stemtomo.io import Metadata
from stemtomo.recon.export import ExportSpec, write_volume_chunks


@pytest.mark.parametrize(("dtype", "layout"), [("float32", "xyz"), ("uint16", "xzy"), ("int8", "xyz")])
def test_header_statistics_equal_mrcfiles_and_page_release_changes_nothing(
    tmp_path: Path, dtype: str, layout: str
) -> None:
    rng = np.random.default_rng(1)
    vol = rng.uniform(0.0, 1.0, (7, 6, 5)).astype(np.float32)
    spec = ExportSpec(shape=vol.shape, scale=(1.0, 1.0, 1.0), dtype=dtype, layout=layout)  # type: ignore[arg-type]
    meta = Metadata(kind="volume", pixel_size_angstrom=3.0)
    # release_bytes=1: flush + drop the pages after every 2-plane block; the default: never in so small a file
    write_volume_chunks(tmp_path / "a.mrc", spec, lambda z0, z1: vol[z0:z1], meta, chunk_z=2, release_bytes=1)
    write_volume_chunks(tmp_path / "b.mrc", spec, lambda z0, z1: vol[z0:z1], meta, chunk_z=3)
    a, b = (tmp_path / "a.mrc").read_bytes(), (tmp_path / "b.mrc").read_bytes()
    # byte-identical except the 10 x 80-byte label block (offset 224): mrcfile stamps it with the wall-clock second
    assert len(a) == len(b) and a[:224] == b[:224] and a[1024:] == b[1024:]
    shutil.copy(tmp_path / "a.mrc", tmp_path / "ref.mrc")
    with mrcfile.open(tmp_path / "ref.mrc", mode="r+") as ref:
        ref.update_header_stats()  # mrcfile's own (full-volume) statistics of the stored values
        want = [float(ref.header.dmin), float(ref.header.dmax), float(ref.header.dmean), float(ref.header.rms)]
    with mrcfile.open(tmp_path / "a.mrc") as got:
        have = [float(got.header.dmin), float(got.header.dmax), float(got.header.dmean), float(got.header.rms)]
        stored = got.data.astype(np.float64)
    assert have == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert have[0] == stored.min() and have[1] == stored.max() and have[3] > 0


def test_tiff_with_page_release(tmp_path: Path) -> None:
    vol = np.linspace(0, 1, 4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    spec = ExportSpec(shape=(4, 3, 2), scale=(1.0, 1.0, 1.0), dtype="uint16")
    write_volume_chunks(tmp_path / "v.tif", spec, lambda z0, z1: vol[z0:z1], Metadata(kind="volume"), chunk_z=1,
                        release_bytes=1)
    assert np.array_equal(tifffile.imread(tmp_path / "v.tif"), np.rint(vol * 65535).astype(np.uint16))
