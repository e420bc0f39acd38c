"""``stemtomo simulate``: a ground-truth phantom and its clean / defocused / noisy STEM tilt series."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stemtomo.cli._common import (
    ContrastChoice as ContrastOpt,
)
from stemtomo.cli._common import (
    DebugOpt,
    DeviceOpt,
    OverwriteOpt,
    QuietOpt,
    SeedOpt,
    VerboseOpt,
    handle_errors,
    info,
    options_dict,
    progress,
    resolve_device,
    setup,
    warn,
)
from stemtomo.simulate.config import NoiseConfig, SimulationConfig

_D = SimulationConfig()
_N = NoiseConfig()

OUTPUT_NAMES = ("phantom.mrc", "clean.mrc", "angles.rawtlt", "defocus.mrc", "noisy.mrc")




def simulate(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (created if missing).")],
    phantom: Annotated[str, typer.Option("--phantom", help="cell (shells + viruses, the paper's), nanoparticles, shepp-logan, or a volume FILE.mrc (density in [0, 1]) to project.")] = _D.phantom,
    size: Annotated[int, typer.Option("--size", help="N: phantom N³ voxels, images N×N pixels.")] = _D.size,
    thickness_px: Annotated[float | None, typer.Option("--thickness-px", help="Slab thickness in voxels (≤ N). Default: N/2 rounded to even (a phantom file: its sidecar, else nz).")] = None,
    tilts: Annotated[str, typer.Option("--tilts", help="Tilt range START:STOP:STEP in degrees; STOP is included when it lies on the grid (-50:50:1.5 gives the paper's 67 angles, -50…49).")] = _D.tilts,
    angles: Annotated[Path | None, typer.Option("--angles", help="Angle file (.rawtlt/.tlt, one angle per line, degrees); overrides --tilts.")] = None,
    contrast: Annotated[ContrastOpt, typer.Option("--contrast", help="bf: I = exp(-κP); df (HAADF): I = 1 - exp(-κP); P in normalized length units.")] = ContrastOpt(_D.contrast),
    kappa: Annotated[float, typer.Option("--kappa", help="Attenuation κ of the image model.")] = _D.kappa,
    defocus_max_px: Annotated[float, typer.Option("--defocus-max-px", help="Defocus blur σ (pixels) at the image edge of the most tilted image; 0 = off. Writes defocus.mrc.")] = _D.defocus_max_px,
    dose: Annotated[float | None, typer.Option("--dose", help="Poisson shot noise: electrons per pixel at I = 1. Writes noisy.mrc.")] = _N.dose,
    read_noise: Annotated[float, typer.Option("--read-noise", help="Gaussian read noise σ (intensity units). Writes noisy.mrc.")] = _N.read_noise,
    scan_correlation: Annotated[float, typer.Option("--scan-correlation", help="Correlation of neighbouring pixels along the fast scan x (AR(1) noise), in [0, 1).")] = _N.scan_correlation,
    noise_model: Annotated[Path | None, typer.Option("--noise-model", help="Noise model file from `stemtomo noise fit` (instead of the parametric noise). Writes noisy.mrc.")] = None,
    pixel_size_angstrom: Annotated[float | None, typer.Option("--pixel-size-angstrom", help="Pixel size in Å (sizes the 50 nm virion). Default: chosen so the virion is 1/4 of the slab.")] = None,
    particle_map: Annotated[Path | None, typer.Option("--particle-map", help="Cubic density map (.mrc) placed instead of the procedural virion (cell phantom).")] = None,
    tilt_axis_angle: Annotated[float, typer.Option("--tilt-axis-angle", help="Write raw-frame images with the tilt axis at this angle, degrees CCW from +y (IMOD RotationAngle; 90 = axis along x). Multiples of 90° are exact; other angles leave the corners at 0.")] = _D.tilt_axis_angle_deg,
    shift_sigma_px: Annotated[float, typer.Option("--shift-sigma-px", help="σ (pixels) of random per-tilt image shifts, recorded in the sidecars as ground truth (shifts_px: content moved by +(dx, dy)).")] = _D.shift_sigma_px,
    seed: SeedOpt = _D.seed,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Simulate a phantom and its STEM tilt series: phantom.mrc, clean.mrc, angles.rawtlt (+ defocus.mrc, noisy.mrc).

    Intensities follow the Beer–Lambert model with no per-projection stretching (bright field
    I = exp(-κ·∫ρ ds), the longer in-plane half-width = 1 length unit), projected with the same projector
    that reconstruction and evaluation use. Order: clean → defocus → noise → clip to [0, 1].
    """
    setup(quiet, verbose, debug)
    from stemtomo.io import check_output_dir, read_angle_file

    tilt_list = tuple(read_angle_file(angles)) if angles is not None else None
    cfg = SimulationConfig(
        phantom=phantom, size=size, thickness_px=thickness_px, tilts=tilts, tilt_angles_deg=tilt_list,
        contrast=contrast.value, kappa=kappa, defocus_max_px=defocus_max_px,
        noise=NoiseConfig(dose=dose, read_noise=read_noise, scan_correlation=scan_correlation),
        noise_model=None if noise_model is None else str(noise_model),
        pixel_size_angstrom=pixel_size_angstrom, particle_map=None if particle_map is None else str(particle_map),
        seed=seed, tilt_axis_angle_deg=tilt_axis_angle, shift_sigma_px=shift_sigma_px,
    )
    cfg.validate()
    _check_inputs(cfg)
    check_output_dir(output, OUTPUT_NAMES, overwrite)
    opts = options_dict(output=output, phantom=phantom, size=size, thickness_px=thickness_px, tilts=tilts,
                        angles=angles, contrast=contrast.value, kappa=kappa, defocus_max_px=defocus_max_px,
                        dose=dose, read_noise=read_noise, scan_correlation=scan_correlation,
                        noise_model=noise_model, pixel_size_angstrom=pixel_size_angstrom,
                        particle_map=particle_map, tilt_axis_angle=tilt_axis_angle, shift_sigma_px=shift_sigma_px,
                        seed=seed, device=device)
    inputs = [p for p in (angles, noise_model, particle_map) if p is not None]
    if phantom and Path(phantom).suffix:
        inputs.append(Path(phantom))
    _run(cfg, output, opts, inputs, device, overwrite)


def _check_inputs(cfg: SimulationConfig) -> None:
    """Input files exist (before any work)."""
    from stemtomo.errors import InputError

    for option, value in (("--noise-model", cfg.noise_model), ("--particle-map", cfg.particle_map),
                          ("--phantom", cfg.phantom if Path(cfg.phantom).suffix else None)):
        if value is not None and not Path(value).is_file():
            raise InputError(f"{option} {value}: no such file; check the path")


def _run(cfg: SimulationConfig, output: Path, opts: dict[str, Any], inputs: list[Path], device: str,
         overwrite: bool) -> None:
    import dataclasses

    from stemtomo.io import Metadata, format_angles, make_provenance, write_image, write_text_atomic
    from stemtomo.simulate.simulate import simulate as run_simulation

    dev = resolve_device(device)
    stages = ["phantom", "projection"] + (["defocus"] if cfg.defocus_max_px > 0 else []) + (
        ["noise"] if cfg.noise_model is not None or cfg.noise.active else [])
    with progress("simulate", total=float(len(stages))) as advance:
        result = run_simulation(cfg, dev, progress=lambda stage: advance(1, status=stage))
    provenance = make_provenance("simulate", opts, inputs)
    extra: dict[str, Any] = {"seed": cfg.seed, "phantom": result.phantom_params,
                             "simulation": _plain(dataclasses.asdict(cfg))}
    output.mkdir(parents=True, exist_ok=True)
    pixel = result.pixel_size_angstrom
    vol_meta = Metadata(kind="volume", axes="zyx", pixel_size_angstrom=pixel, thickness_px=result.thickness_px,
                        extra=extra)
    if result.shifts_px is not None:
        extra = {**extra, "shifts_px": result.shifts_px.round(4).tolist()}
    ts_meta = Metadata(kind="tilt_series", axes="tyx", pixel_size_angstrom=pixel,
                       tilt_angles_deg=[float(a) for a in result.tilt_angles_deg],
                       tilt_axis_angle_deg=float(cfg.tilt_axis_angle_deg),
                       thickness_px=result.thickness_px, contrast=cfg.contrast, kappa=cfg.kappa,
                       normalization={"method": "physical", "range01": True}, extra=extra)
    written = [write_image(output / "phantom.mrc", result.phantom, vol_meta, overwrite=overwrite,
                           provenance=provenance)]
    written.append(write_image(output / "clean.mrc", result.clean, ts_meta, overwrite=overwrite,
                               provenance=provenance))
    write_text_atomic(output / "angles.rawtlt", format_angles(result.tilt_angles_deg.tolist()))
    if result.defocused is not None:
        written.append(write_image(output / "defocus.mrc", result.defocused,
                                   ts_meta.copy(extra={**extra, "defocus_max_px": cfg.defocus_max_px}),
                                   overwrite=overwrite, provenance=provenance))
    if result.noisy is not None:
        noise_rec = {"defocus_max_px": cfg.defocus_max_px, "noise": _plain(dataclasses.asdict(cfg.noise)),
                     "noise_model": cfg.noise_model}
        written.append(write_image(output / "noisy.mrc", result.noisy, ts_meta.copy(extra={**extra, **noise_rec}),
                                   overwrite=overwrite, provenance=provenance))
    stale = [name for name in ("defocus.mrc", "noisy.mrc") if (output / name).exists()
             and all(p.name != name for p in written)]
    if stale:
        warn(f"{output}: {', '.join(stale)} from an earlier run were left untouched (not made by this run)")
    n = result.clean.shape[0]
    info(f"simulate: {cfg.phantom} phantom {'×'.join(map(str, result.phantom.shape[::-1]))} (xyz), slab "
         f"{result.thickness_px:g} px, {n} tilts {result.tilt_angles_deg[0]:g}…{result.tilt_angles_deg[-1]:g}° → "
         f"{output}/ ({', '.join(p.name for p in written)}, angles.rawtlt)")


def _plain(value: Any) -> Any:
    """Tuples → lists (YAML-safe) recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def register(app: typer.Typer) -> None:
    app.command("simulate")(handle_errors(simulate))
