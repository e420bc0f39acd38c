"""A slab-only tomogram is scored against a deeper reference on the reference's full grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stemtomo.eval.metrics import minmax, psnr
from stemtomo.io import Metadata, write_image


def test_slab_only_volume_is_zero_padded_not_the_reference_cropped(workdir: Path, cli) -> None:
    rng = np.random.default_rng(0)
    ref = np.zeros((16, 12, 12), np.float32)
    ref[4:12] = rng.random((8, 12, 12)) * 0.8 + 0.2
    vol = ref[4:12] + rng.normal(0, 0.05, (8, 12, 12)).astype(np.float32)
    write_image("ref.mrc", ref, Metadata(kind="volume"))
    write_image("vol.mrc", vol, Metadata(kind="volume"))
    res = cli("eval", "vol.mrc", "-r", "ref.mrc", "--projections", "0", "--json", "-q")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)["psnr_3d"]
    padded = np.zeros_like(ref)
    padded[4:12] = vol
    expected = float(psnr(minmax(padded), minmax(ref)))
    cropped = float(psnr(minmax(vol), minmax(ref[4:12])))
    assert abs(got - expected) < 0.01
    assert abs(expected - cropped) > 1.0  # the two conventions really differ here
