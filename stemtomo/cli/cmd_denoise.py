"""``stemtomo denoise``: denoise every projection of a stack (BM3D, Gaussian or median)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from stemtomo.cli._common import (
    DebugOpt,
    OverwriteOpt,
    QuietOpt,
    VerboseOpt,
    handle_errors,
    info,
    options_dict,
    progress,
    setup,
)
from stemtomo.cli._prepare import (
    DefectThresholdOpt,
    NormalizeTilts,
    NormalizeTiltsOpt,
    RemoveDefectsOpt,
    XfOpt,
    prepare_option_values,
    prepare_options,
)


class Method(str, Enum):
    bm3d = "bm3d"
    gaussian = "gaussian"
    median = "median"


def denoise(
    stack: Annotated[Path, typer.Argument(help="Image stack or tilt series (MRC/TIFF).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Denoised stack (.mrc or .tif), same shape and units.")],
    method: Annotated[Method, typer.Option("--method", help="bm3d (non-commercial licence, see the docs), gaussian or median.")] = Method.bm3d,
    sigma: Annotated[float | None, typer.Option("--sigma", help="BM3D noise standard deviation in the stack's intensity units. Default: estimated per image (wavelet MAD).")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="BM3D profile of the bm3d package: np, refilter, vn, vn_old, high, deb [default: np].")] = None,
    gaussian_sigma_px: Annotated[float | None, typer.Option("--gaussian-sigma-px", help="Gaussian filter σ in pixels [default: 1].")] = None,
    median_size_px: Annotated[int | None, typer.Option("--median-size-px", help="Median filter window in pixels [default: 3].")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes, one projection each at a time (BM3D is CPU-bound).")] = 1,
    remove_defects: RemoveDefectsOpt = False,
    defect_threshold: DefectThresholdOpt = None,
    normalize_tilts: NormalizeTiltsOpt = NormalizeTilts.none,
    xf: XfOpt = None,
    angles: Annotated[Path | None, typer.Option("--angles", help="Angle file (.rawtlt/.tlt), for --normalize-tilts bf-slab/df-* when the stack carries no angles.")] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Denoise each projection independently (2D), e.g. for the paper's L2Den / WBPDen baselines.

    BM3D needs the noise level; it is estimated per image from the data (Donoho's wavelet MAD estimator,
    skimage.restoration.estimate_sigma) unless --sigma is given. The sidecar records the method and the
    per-image σ. Intensities whose sidecar says they are normalized to [0, 1] are clipped to [0, 1].
    Runs on the CPU. --remove-defects, --normalize-tilts and --xf prepare a raw series first (in that order).
    """
    setup(quiet, verbose, debug)
    from stemtomo.denoise import DenoiseConfig
    from stemtomo.io import check_output

    d = DenoiseConfig()
    config = DenoiseConfig(
        method=method.value,
        sigma=sigma,
        profile=d.profile if profile is None else profile,
        gaussian_sigma_px=d.gaussian_sigma_px if gaussian_sigma_px is None else gaussian_sigma_px,
        median_size_px=d.median_size_px if median_size_px is None else median_size_px,
        jobs=jobs,
    )
    config.validate()
    prep = prepare_options(remove_defects, defect_threshold, normalize_tilts, xf)
    check_output(output, overwrite)
    _run(stack, output, config, overwrite, prep, angles)


def _run(stack: Path, output: Path, config: Any, overwrite: bool, prep: Any = None, angles: Path | None = None) -> None:
    import dataclasses

    from stemtomo.cli._prepare import apply_records
    from stemtomo.core.imaging import is_normalized
    from stemtomo.denoise import denoise_stack
    from stemtomo.io import make_provenance, read_stack, write_image
    from stemtomo.io.stack import check_not_constant
    from stemtomo.preprocess.pipeline import PrepareOptions, prepare_tilt_series

    prep = prep or PrepareOptions()
    image = read_stack(stack, angles=angles)
    check_not_constant(image.data, image.path)
    data, records = prepare_tilt_series(image, prep, contrast=image.meta.contrast)
    meta = apply_records(image.meta, records) if prep.active else image.meta.copy()
    n = image.data.shape[0]
    with progress(f"denoise ({config.method})", total=float(n)) as advance:
        done = [0]

        def callback(k: int, total: int) -> None:
            advance(k - done[0])
            done[0] = k

        # intensities the sidecar declares normalized to [0, 1] stay in [0, 1] (so downstream commands
        # keep using them as-is instead of re-normalizing)
        clip = (0.0, 1.0) if is_normalized(meta.normalization) else None
        out, sigmas = denoise_stack(data if prep.active else image.data, config, clip=clip, progress=callback)
    meta.extra["denoise"] = {**dataclasses.asdict(config), "sigma_estimator":
                             None if config.sigma is not None else "wavelet MAD (skimage.restoration.estimate_sigma)",
                             "sigmas": [float(s) for s in sigmas], "clipped_to": list(clip) if clip else None}
    inputs = [stack] + ([angles] if angles is not None else []) + ([prep.xf] if prep.xf is not None else [])
    opts = options_dict(**dataclasses.asdict(config), **prepare_option_values(prep), angles=angles)
    provenance = make_provenance("denoise", opts, inputs)
    write_image(output, out, meta, overwrite=overwrite, provenance=provenance)
    info(f"denoised {n} images ({config.method}, median σ {sorted(sigmas)[n // 2]:.4g}) → {output}")


def register(app: typer.Typer) -> None:
    app.command("denoise")(handle_errors(denoise))
