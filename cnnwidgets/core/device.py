"""Choosing the device the probe computes on."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable

import torch

__all__ = ["available_devices", "release_memory", "resolve_device", "synchronize"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Device names usable on this machine, best first (``cuda``, ``mps``, ``cpu``)."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn a device request into a concrete :class:`torch.device`.

    Args:
        spec: ``"auto"`` (CUDA if available, then MPS, then CPU), or any name or
            :class:`torch.device` torch accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``);
            names in any case (``"CPU"``).

    Returns:
        The device.

    Raises:
        ValueError: if the name is not a device, or the device is not available here (also
            ``"cpu:1"``: there is one CPU device).
    """
    if isinstance(spec, str):
        spec = spec.strip().lower()  # "CPU", " cuda:1 " as "cpu", "cuda:1" (torch takes lower case only)
        if spec == "auto":
            return torch.device(available_devices()[0])
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError, OverflowError) as exc:  # an index past int64: ValueError
        raise ValueError(
            f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {spec!r} requested but CUDA is not available here; "
                f"available: {', '.join(available_devices())}"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type == "mps" and not _mps_available():
        raise ValueError(
            f"device {spec!r} requested but MPS is not available here; "
            f"available: {', '.join(available_devices())}"
        )
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device type {device.type!r} is not supported; use cpu, cuda or mps")
    if device.type != "cuda" and device.index not in (None, 0):
        # there is one CPU and one MPS device; torch would run on it whatever the index says
        raise ValueError(
            f"device {spec!r} does not exist: there is one {device.type} device, {device.type!r} "
            f"(or {device.type + ':0'!r}); available: {', '.join(available_devices())}"
        )
    return device


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_memory(device: torch.device | str = "cpu") -> bool:
    """Give memory that dropped tensors freed back to the system, after a model copy is let go.

    Freed memory otherwise stays with the process: glibc keeps the freed heap blocks of a
    copy's many small weight tensors (about 320 MB of a VGG16's copies stayed after closing an
    explorer), and torch keeps freed CUDA and MPS blocks cached for reuse. This trims the C heap
    (Linux with glibc) and, for a CUDA or MPS ``device``, empties torch's cache of that kind.
    Cheap (a few milliseconds at most, after a fragmented heap); tensors still in use are not touched.

    Does nothing while the interpreter shuts down (widgets left open are closed then, by
    ``Widget.__del__``): the process's memory goes back with it, and finding the C library
    would need imports that no longer work.

    Returns:
        Whether anything could be asked to give memory back.
    """
    if sys.is_finalizing():
        return False
    device = torch.device(device)
    released = False
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
        released = True
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        released = True
    elif device.type == "mps" and _mps_available():
        torch.mps.empty_cache()
        released = True
    return released


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished the work queued on it (nothing to wait for on the CPU).

    GPU kernels run after the Python call that queued them returns: a time taken without this
    counts the launch, not the work.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps" and _mps_available():
        torch.mps.synchronize()
