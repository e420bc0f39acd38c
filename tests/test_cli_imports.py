"""`stemtomo --help` stays instant: importing the CLI app loads no torch; recon's literal option defaults
equal the config dataclasses they stand for."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from stemtomo.cli.cmd_recon import DEFAULTS


def test_importing_the_cli_app_does_not_import_torch() -> None:
    code = ("import sys, stemtomo.cli.app\n"
            "heavy = sorted(m for m in ('torch', 'scipy', 'skimage', 'matplotlib', 'stemtomo.core.fields') "
            "if m in sys.modules)\n"
            "print(','.join(heavy) or 'none')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "none", out.stdout + out.stderr


def test_recon_defaults_match_the_config_dataclasses() -> None:
    from stemtomo.recon.implicit.config import ReconConfig

    cfg = ReconConfig()
    for key, value in DEFAULTS.items():
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        assert obj == value and type(obj) is type(value), key
    # every plain option default of the dataclass the CLI exposes is listed (no forgotten literal)
    exposed = {"iterations", "rays_per_batch", "lr", "optimizer", "tv", "flow_lr", "flow_optimizer", "warmup",
               "val_every_kth_tilt", "val_interval", "patience", "checkpoint_interval", "defocus_rays"}
    assert exposed <= set(DEFAULTS) and {f.name for f in dataclasses.fields(ReconConfig)} >= exposed


def test_recon_command_uses_those_defaults(cli) -> None:
    import typer.main

    from stemtomo.cli.app import app

    params = {p.name: p for p in typer.main.get_command(app).commands["recon"].params}  # type: ignore[attr-defined]
    assert params["rays_per_batch"].default == DEFAULTS["rays_per_batch"]
    assert params["samples"].default == DEFAULTS["render.n_samples"]
    assert params["val_every"].default == DEFAULTS["val_every_kth_tilt"]
    assert {"remove_defects", "defect_threshold", "normalize_tilts", "xf"} <= set(params)
    assert cli("recon", "--help").exit_code == 0
