"""``stemtomo recon`` through the CLI: outputs and sidecars, resume, and one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_recon_phantom import THICKNESS, clean_series, phantom, poisson_series, series_meta

from stemtomo.io import Metadata, write_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST = ("--iterations", "2", "--rays-per-batch", "128", "--samples", "8", "--val-interval", "1", "--device", "cpu")


@pytest.fixture(scope="module")
def series_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("recon_cli")
    vol = phantom()
    meta = series_meta()
    write_image(d / "ts.mrc", np.clip(poisson_series(clean_series(vol)), 0, 1), meta)
    write_image(d / "phantom.mrc", vol, Metadata(kind="volume", pixel_size_angstrom=10.0))
    return d / "ts.mrc"


def test_recon_writes_all_outputs_with_sidecars(cli, workdir: Path, series_file: Path) -> None:
    r = cli("recon", series_file, "-o", "out", "--method", "l2", "--reference", series_file.parent / "phantom.mrc", *FAST)
    assert r.exit_code == 0, r.output
    out = workdir / "out"
    for name in ("model.safetensors", "checkpoint.safetensors", "preview.mrc", "train.csv", "loss.png"):
        assert (out / name).is_file(), name
    model = yaml.safe_load((out / "model.safetensors.yaml").read_text())
    assert model["kind"] == "model" and model["recon"]["config"]["method"] == "l2"
    assert model["recon"]["volume_shape"] == [THICKNESS, 24, 24]
    assert model["provenance"][-1]["command"] == "recon"
    preview = yaml.safe_load((out / "preview.mrc.yaml").read_text())
    assert preview["kind"] == "volume" and preview["shape"] == [THICKNESS, 24, 24]
    header = (out / "train.csv").read_text().splitlines()[0].split(",")
    assert {"iteration", "loss", "val_mse", "psnr3d"} <= set(header)
    # outputs are refused without --overwrite
    again = cli("recon", series_file, "-o", "out", "--method", "l2", *FAST)
    assert again.exit_code == 1 and "pass --overwrite" in again.output


def test_resume_through_the_cli_and_method_mismatch(cli, workdir: Path, series_file: Path) -> None:
    assert cli("recon", series_file, "-o", "run", "--method", "ours", *FAST).exit_code == 0
    r = cli("recon", series_file, "-o", "run", "--resume", "run", "--iterations", "4", "--device", "cpu")
    assert r.exit_code == 0, r.output
    ckpt = yaml.safe_load((workdir / "run" / "checkpoint.safetensors.yaml").read_text())
    assert ckpt["recon"]["state"]["iteration"] == 4 and ckpt["recon"]["config"]["method"] == "ours"
    # fewer steps than the checkpoint has run: refused (was: the option ignored, outputs rewritten, exit 0)
    fewer = cli("recon", series_file, "-o", "run2", "--resume", "run", "--iterations", "3", "--device", "cpu")
    assert fewer.exit_code == 1 and "--iterations 3: the checkpoint has already run 4 steps" in fewer.output
    assert len(fewer.stderr.strip().splitlines()) == 1 and not (workdir / "run2").exists()
    # another tilt series of the same shape: refused (was: resumed on it without a word, even after kill -9
    # when no model file records the first run's inputs)
    from stemtomo.io import read_stack

    other = read_stack(series_file)
    write_image("other.mrc", (other.data * 0.9).astype(np.float32), other.meta)
    (workdir / "run" / "model.safetensors").unlink()  # as after kill -9: only the checkpoint
    wrong = cli("recon", "other.mrc", "-o", "run", "--resume", "run", "--iterations", "6", "--device", "cpu")
    assert wrong.exit_code == 1 and "the checkpoint was trained on other images" in wrong.output, wrong.output
    assert len(wrong.stderr.strip().splitlines()) == 1
    assert not (workdir / "run" / "model.safetensors").exists()
    bad = cli("recon", series_file, "-o", "run", "--resume", "run", "--method", "l2")
    assert bad.exit_code == 1 and "checkpoint is from --method ours" in bad.output
    bad = cli("recon", series_file, "-o", "run", "--resume", "run", "--field", "mlp")
    assert bad.exit_code == 1 and "checkpoint is from --field voxel" in bad.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--thickness-px", "0"), "--thickness-px 0"),
        (("--iterations", "0"), "--iterations 0"),
        (("--method", "ours-sup"), "ours-sup needs --noise-model"),
        (("--method", "mse"), "--method 'mse'"),
        (("--field", "nerf"), "--field 'nerf'"),
        (("--resume", "nowhere"), "no checkpoint.safetensors"),
    ],
)
def test_bad_options_are_one_line_errors(cli, workdir: Path, series_file: Path, args: tuple[str, ...], message: str) -> None:
    r = cli("recon", series_file, "-o", "bad", *args)
    assert r.exit_code == 1 and message in r.output, r.output
    assert "Traceback" not in r.output and not (workdir / "bad" / "model.safetensors").exists()


def test_noise_model_of_the_wrong_kind(cli, workdir: Path, series_file: Path) -> None:
    # a reconstruction model is not a noise model
    assert cli("recon", series_file, "-o", "m", "--method", "l2", *FAST).exit_code == 0
    r = cli("recon", series_file, "-o", "n", "--method", "ours-sup", "--noise-model", "m/model.safetensors", *FAST)
    assert r.exit_code == 1 and "expected a 'noise_model' file" in r.output
    # a gaussian model cannot initialize the flow of --method ours (was: a Gaussian trained jointly, exit 0);
    # --method ours-sup keeps it fixed, a valid parametric NLL
    from stemtomo.noise import GaussianNoiseModel, save_noise_model

    save_noise_model("g.safetensors", GaussianNoiseModel())
    r = cli("recon", series_file, "-o", "g", "--method", "ours", "--noise-model", "g.safetensors", *FAST)
    assert r.exit_code == 1 and "a gaussian model cannot initialize the flow" in r.output, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and not (workdir / "g").exists()
    r = cli("recon", series_file, "-o", "g", "--method", "ours-sup", "--noise-model", "g.safetensors", *FAST)
    assert r.exit_code == 0, r.output


def test_tilt_series_without_angles(cli, workdir: Path) -> None:
    write_image(workdir / "noangles.mrc", np.random.default_rng(0).random((5, 8, 8)).astype(np.float32),
                Metadata(kind="tilt_series"))
    r = cli("recon", "noangles.mrc", "-o", "x", *FAST)
    assert r.exit_code == 1 and "no tilt angles found" in r.output


def test_defocus_importance_and_coarse_to_fine_options_run(cli, workdir: Path, series_file: Path) -> None:
    r = cli("recon", series_file, "-o", "d", "--method", "l2", "--field", "grid", "--coarse-to-fine",
            "--defocus-max-px", "2", "--defocus-rays", "2", "--importance", "4", *FAST)
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((workdir / "d" / "model.safetensors.yaml").read_text())["recon"]["config"]
    assert cfg["defocus_max_px"] == 2.0 and cfg["render"]["n_importance"] == 4 and cfg["coarse_to_fine"] is True
    assert cfg["field"]["kind"] == "grid" and cfg["lr"] == pytest.approx(1e-2)  # the grid field's default


def test_sigterm_stops_with_a_checkpoint_and_exit_status_143(workdir: Path, series_file: Path) -> None:
    # `recon ... && export ...` must not go on with a half-trained model: after writing its outputs and the
    # checkpoint, an interrupted run exits 128 + signal with one line saying how to resume (it exited 0)
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "stemtomo", "recon", str(series_file), "-o", "run", "--method", "l2",
           "--iterations", "1000000", "--patience", "0", "--checkpoint-interval", "5", "--device", "cpu", "-q"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not Path("run/checkpoint.safetensors.yaml").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.splitlines() == [f"error: interrupted by SIGTERM at step {_steps('run')}; outputs and checkpoint are "
                                "in run: continue with --resume run"]
    assert {"model.safetensors", "preview.mrc", "train.csv"} <= {p.name for p in Path("run").iterdir()}


def _steps(outdir: str) -> int:
    return len(Path(outdir, "train.csv").read_text().splitlines()) - 1
