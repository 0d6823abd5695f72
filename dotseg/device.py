"""Device handling in one place: which device, which autocast, whether a GradScaler.

Mixed precision differs by device and the difference matters: CUDA runs fp16, whose narrow
exponent needs a GradScaler to keep small gradients from flushing to zero; CPUs run bf16, which
has fp32's exponent range and needs no scaler. Everything that runs a model (training, the
Predictor, benchmarks) goes through these helpers so the rule is written once.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch


class DeviceError(ValueError):
    """A requested device is not available here."""


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available here "
                              f"(torch {torch.__version__}); use --device cpu")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return dev
    raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def amp_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA, bf16 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast(device: torch.device, enabled: bool) -> ContextManager:
    """The mixed-precision context for ``device`` (a no-op when disabled)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device))


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A GradScaler that is active only for CUDA fp16; elsewhere a pass-through with the same API."""
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")


def set_threads(threads: int | None) -> None:
    """Pin intra-op CPU threads (None/0 leaves torch's default)."""
    if threads:
        torch.set_num_threads(int(threads))
