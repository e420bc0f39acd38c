"""Device resolution. Only the CLI (or a user) picks a device; library functions follow their inputs."""

from __future__ import annotations

import torch

from stemtomo.errors import DeviceError, ResourceError


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


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can use on ``device``: free CUDA memory, the kernel's ``MemAvailable`` for the
    CPU (Linux), None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(nbytes: int, device: torch.device, what: str, advice: str) -> None:
    """Refuse work that cannot fit: ``nbytes`` (the large arrays it must hold at once) against
    :func:`available_memory_bytes`; nothing is checked where the available memory is unknown.

    Raises
    ------
    ResourceError
        One line naming ``what``, both sizes and ``advice`` (the option that makes it smaller).
    """
    free = available_memory_bytes(device)
    if free is not None and nbytes > free:
        raise ResourceError(f"{what} needs {_size(nbytes)} but {device} has {_size(free)} available; {advice}")


def _size(nbytes: int) -> str:
    for unit, power in (("GiB", 30), ("MiB", 20)):
        if nbytes >= 2**power:
            return f"{nbytes / 2**power:.1f} {unit}"
    return f"{nbytes / 2**10:.0f} KiB"


__all__ = ["available_devices", "available_memory_bytes", "check_memory", "resolve_device"]
