"""Volume → volume conversion of a previous export reads its sidecar: integer scaling and IMOD xzy layout undone."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
import yaml

from stemtomo.io import Metadata, write_image


@pytest.fixture
def rho(workdir: Path) -> np.ndarray:
    """ρ in [0, 0.8] (not the full unit range, so a relabelled scale shows), as rho.mrc."""
    rng = np.random.default_rng(0)
    vol = (0.8 * rng.random((6, 8, 10))).astype(np.float32)
    write_image("rho.mrc", vol, Metadata(kind="volume", pixel_size_angstrom=2.0))
    return vol


def _scaling(path: str) -> dict:
    return yaml.safe_load(Path(path + ".yaml").read_text())["scaling"]


@pytest.mark.parametrize("stored", ["u16.mrc", "u16.tif", "b8.mrc", "b8.tif"])
def test_integer_export_converts_back_to_density(cli, workdir: Path, rho: np.ndarray, stored: str) -> None:
    dtype = "uint16" if stored.startswith("u16") else "uint8"
    assert cli("export", "rho.mrc", "-o", stored, "--dtype", dtype).exit_code == 0
    scale = _scaling(stored)["scale"]
    # to float32: ρ again (was: the raw integers, labelled ρ = value)
    r = cli("export", stored, "-o", "back.mrc")
    assert r.exit_code == 0, r.output
    assert np.abs(mrcfile.read("back.mrc") - rho).max() <= 0.5 / scale + 1e-6
    assert _scaling("back.mrc")["scale"] == 1.0
    # integer → 8-bit TIFF: ρ·255 (was: min–max stretched raw integers, labelled hi = the largest integer)
    assert cli("export", stored, "-o", "again.tif", "--dtype", "uint8").exit_code == 0
    again = tifffile.imread("again.tif")
    assert np.abs(again / 255.0 - rho).max() <= 0.5 / scale + 0.5 / 255 + 1e-6
    rec = _scaling("again.tif")
    assert (rec["scale"], rec["lo"], rec["hi"]) == (255.0, 0.0, 1.0)


def test_xzy_export_converts_back_to_xyz(cli, workdir: Path, rho: np.ndarray) -> None:
    assert cli("export", "rho.mrc", "-o", "x.mrc", "--layout", "xzy").exit_code == 0
    assert cli("export", "x.mrc", "-o", "z.tif").exit_code == 0  # was: xzy data labelled layout xyz
    assert np.array_equal(tifffile.imread("z.tif"), rho)
    assert yaml.safe_load(Path("z.tif.yaml").read_text())["layout"] == "xyz"
    # and a crop of the converted volume is in (z, y, x)
    assert cli("export", "x.mrc", "-o", "c.mrc", "--crop", "1:3,:,2:5").exit_code == 0
    assert np.array_equal(mrcfile.read("c.mrc"), rho[1:3, :, 2:5])
