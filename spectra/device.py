"""Where computations run: the one resolver of ``--device`` strings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spectra.errors import SpectraError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def resolve_device(device: str | Any = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available (else ``mps``, else ``cpu``); ``cpu``; ``cuda[:N]``; ``mps``.

    Raises:
        SpectraError: an unknown device string, or CUDA asked for but not available.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise SpectraError(f"--device {device!r}: unknown device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpectraError(f"--device {device}: CUDA is not available on this machine (use --device cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpectraError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type not in ("cpu", "mps"):
        raise SpectraError(f"--device {device!r}: unsupported device type {dev.type!r} (use auto, cpu or cuda[:N])")
    return dev
