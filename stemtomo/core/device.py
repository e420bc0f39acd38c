"""Device resolution. Only the CLI (or a user) picks a device; library functions follow their inputs."""

from __future__ import annotations

import torch

from stemtomo.errors import DeviceError


def available_devices() -> list[str]:
    """Names of the usable devices, e.g. ``["cpu", "cuda:0"]``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a :class:`torch.device`.

    ``auto`` picks the first CUDA device when present, else the CPU.

    Raises
    ------
    DeviceError
        If the device is unknown or not available; the message lists the available ones.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise DeviceError(
            f"--device {spec!r} is not a device name; use auto, cpu or cuda[:N] (available: {', '.join(available_devices())})"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {spec}: CUDA is not available on this machine (available: {', '.join(available_devices())}); "
                "use --device cpu or install a CUDA build of PyTorch"
            )
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) (available: {', '.join(available_devices())})"
            )
        return torch.device("cuda", index)
    if dev.type == "mps" and "mps" not in available_devices():
        raise DeviceError(f"--device {spec}: MPS is not available (available: {', '.join(available_devices())})")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {spec}: unsupported device type; use auto, cpu or cuda[:N]")
    return dev


__all__ = ["available_devices", "resolve_device"]
