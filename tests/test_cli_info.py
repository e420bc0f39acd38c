"""``stemtomo info`` on every kind of file stemtomo reads or writes (tiny data, in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
import yaml

from stemtomo.io import Metadata, make_provenance, save_model, write_image

ANGLES = [-60.0, -30.0, 0.0, 30.0, 60.0]


def _json(cli, *args: str) -> dict:
    result = cli("info", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # exactly one JSON object on stdout


def test_tilt_series_with_sidecar(workdir: Path, cli, rng: np.random.Generator) -> None:
    data = rng.random((5, 6, 7), dtype=np.float32)
    transforms = [[1.0, 0.0, 0.0, 1.0, float(i), -1.5] for i in range(12)]  # as the alignment record holds
    meta = Metadata(kind="tilt_series", tilt_angles_deg=ANGLES, pixel_size_angstrom=2.5, tilt_axis_angle_deg=90.0,
                    contrast="df", extra={"noise": {"dose": 50}, "alignment": {"transforms": transforms, "applied": True}})
    write_image("ts.mrc", data, meta, provenance=make_provenance("simulate", {"seed": 1}))
    out = _json(cli, "ts.mrc")
    assert out["shape"] == [5, 6, 7] and out["dtype"] == "float32"
    assert out["pixel_size_angstrom"] == 2.5
    assert out["tilt_angles_deg"] == ANGLES
    assert out["tilt_axis_angle_deg"] == 90.0
    assert out["contrast"] == "df"
    assert out["min"] == pytest.approx(float(data.min())) and out["max"] == pytest.approx(float(data.max()))
    assert out["tilt_angle_summary"] == {"count": 5, "min": -60.0, "max": 60.0, "step": 30.0}
    assert [r["command"] for r in out["provenance"]] == ["simulate"]
    assert out["sources"]["tilt_angles_deg"] == "sidecar"
    assert out["extra"] == {"noise": {"dose": 50}, "alignment": {"transforms": transforms, "applied": True}}
    table = cli("info", "ts.mrc")
    assert table.exit_code == 0
    for text in ("tilt_series", "[5, 6, 7]", "2.5", "5: -60.00 … 60.00, step 30.00", "simulate (stemtomo", "dose=50",
                 "transforms=[12 × 6 values"):
        assert text in table.stdout, text
    assert "-1.5" not in table.stdout  # long per-tilt lists are summarized in the table
    assert table.stderr == ""


def test_volume_and_tiff(workdir: Path, cli) -> None:
    write_image("v.rec", np.zeros((4, 6, 8), np.float32), Metadata(kind="volume", pixel_size_angstrom=3.0,
                                                                    thickness_px=4.0))
    out = _json(cli, "v.rec")
    assert (out["kind"], out["shape"], out["tilt_angles_deg"], out["thickness_px"]) == ("volume", [4, 6, 8], None, 4.0)
    write_image("ts.tif", np.ones((5, 4, 4), np.float32) * 7, Metadata(tilt_angles_deg=ANGLES), dtype=np.uint16)
    out = _json(cli, "ts.tif")
    assert (out["dtype"], out["min"], out["max"]) == ("uint16", 7.0, 7.0)


def test_mrc_volume_without_sidecar_uses_ispg(workdir: Path, cli) -> None:
    with mrcfile.new("imod.rec") as mrc:
        mrc.set_data(np.zeros((4, 5, 6), np.int16))
        mrc.set_volume()
        mrc.voxel_size = 10.8
    out = _json(cli, "imod.rec")
    assert out["kind"] == "volume" and out["dtype"] == "int16"
    assert out["pixel_size_angstrom"] == pytest.approx(10.8, rel=1e-6)


def test_serialem_stack_with_mdoc_and_fei_stack(workdir: Path, cli) -> None:
    with mrcfile.new("sem.st") as mrc:
        mrc.set_data(np.zeros((3, 4, 4), np.float32))
        mrc.set_image_stack()
    Path("sem.st.mdoc").write_text(
        "PixelSpacing = 5.4\n[T = Tilt axis angle = -94.2, binning = 2]\n"
        "[ZValue = 0]\nTiltAngle = -3\n[ZValue = 1]\nTiltAngle = 0\n[ZValue = 2]\nTiltAngle = 3\n")
    out = _json(cli, "sem.st")
    assert out["tilt_angles_deg"] == [-3.0, 0.0, 3.0]
    assert (out["pixel_size_angstrom"], out["tilt_axis_angle_deg"]) == (5.4, -94.2)
    assert out["sources"]["tilt_angles_deg"].endswith("sem.st.mdoc")
    # FEI1: Alpha tilt f8 @100, pixel size f8 @156 (m), one 768-byte record per image
    rec = np.zeros((3, 768), np.uint8)
    rec[:, 0:4] = np.frombuffer(np.int32(768).tobytes(), np.uint8)
    for i, tilt in enumerate((-2.0, 0.0, 2.0)):
        rec[i, 100:108] = np.frombuffer(np.float64(tilt).tobytes(), np.uint8)
        rec[i, 156:164] = np.frombuffer(np.float64(1.1e-10).tobytes(), np.uint8)
    with mrcfile.new("fei.mrc") as mrc:
        mrc.set_data(np.zeros((3, 4, 4), np.float32))
        mrc.set_extended_header(rec.reshape(-1).view("V1"))
        mrc.header.exttyp = b"FEI1"
        mrc.header.nversion = 20140  # as written by older EPU / Tomography versions
    out = _json(cli, "fei.mrc")
    assert out["tilt_angles_deg"] == [-2.0, 0.0, 2.0]
    assert out["pixel_size_angstrom"] == pytest.approx(1.1)
    assert out["extended_header"] == "FEI1"
    assert out["y_inverted"] is True  # FEI MRC2014 (nversion 20140) without IMOD stamp: rows flipped
    result = cli("info", "fei.mrc")
    assert "rows stored top-first" in result.stderr


def test_model_file(workdir: Path, cli) -> None:
    save_model("noise.safetensors", {"a": torch.zeros(2, 3), "b": torch.ones(4)},
               Metadata(kind="noise_model", extra={"class": "flow", "n_layers": 4}),
               provenance=make_provenance("noise fit", {}))
    out = _json(cli, "noise.safetensors")
    assert out["kind"] == "noise_model"
    assert out["tensors"] == {"a": [[2, 3], "float32"], "b": [[4], "float32"]}
    assert out["n_parameters"] == 10
    assert out["extra"]["class"] == "flow"
    assert [r["command"] for r in out["provenance"]] == ["noise fit"]
    table = cli("info", "noise.safetensors").stdout
    assert "a (2, 3) float32" in table and "flow" in table


def test_model_file_without_sidecar_and_pickles_refused(workdir: Path, cli) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, "bare.safetensors")
    out = _json(cli, "bare.safetensors")
    assert out["n_parameters"] == 3 and out["warnings"] == ["no sidecar bare.safetensors.yaml: the model class is unknown"]
    torch.save({"w": torch.zeros(2), "obj": object.__new__(Metadata)}, "evil.pt")
    result = cli("info", "evil.pt")
    assert result.exit_code == 1 and "refused to load" in result.stderr


def test_yaml_documents_and_sidecar_path(workdir: Path, cli) -> None:
    Path("metrics.yaml").write_text(yaml.safe_dump({"kind": "metrics", "psnr_3d_db": 21.5}))
    out = _json(cli, "metrics.yaml")
    assert out["kind"] == "metrics" and out["content"]["psnr_3d_db"] == 21.5
    write_image("ts.mrc", np.zeros((5, 4, 4), np.float32), Metadata(tilt_angles_deg=ANGLES))
    assert _json(cli, "ts.mrc.yaml")["shape"] == [5, 4, 4]  # a sidecar describes its array
    Path("bad.json").write_text("{not json")
    result = cli("info", "bad.json")
    assert result.exit_code == 1 and "bad.json: not valid JSON" in result.stderr


def test_angle_files_and_mdoc(workdir: Path, cli) -> None:
    Path("ts.rawtlt").write_text("-6\n-3\n0\n3\n6\n")
    out = _json(cli, "ts.rawtlt")
    assert out["kind"] == "angles" and out["tilt_angle_summary"] == {"count": 5, "min": -6.0, "max": 6.0, "step": 3.0}
    Path("ts.mdoc").write_text("PixelSpacing = 2.5\n[ZValue = 0]\nTiltAngle = 1\nRotationAngle = 175\n")
    out = _json(cli, "ts.mdoc")
    assert (out["kind"], out["tilt_angles_deg"], out["pixel_size_angstrom"], out["tilt_axis_angle_deg"]) == (
        "mdoc", [1.0], 2.5, 85.0)
    assert "1: 1.00 … 1.00" in cli("info", "ts.mdoc").stdout


def test_json_is_strict_with_nan_data(workdir: Path, cli) -> None:
    data = np.full((5, 4, 4), np.nan, np.float32)
    write_image("nan.mrc", data, Metadata(tilt_angles_deg=ANGLES))
    out = _json(cli, "nan.mrc")  # json.loads would also accept NaN tokens; check the text too
    assert out["non_finite"] == 80 and out["min"] is None and out["warnings"] == ["80 NaN/Inf values"]
    assert "NaN" not in cli("info", "nan.mrc", "--json").stdout.replace("NaN/Inf", "")


def test_info_help_is_fast_to_build(cli) -> None:
    result = cli("info", "--help")
    assert result.exit_code == 0 and "--json" in result.stdout
