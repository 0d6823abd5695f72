"""Device handling in one place: which device, which autocast, whether a GradScaler.

Mixed precision differs by device and the difference matters: CUDA runs fp16, whose narrow
exponent needs a GradScaler to keep small gradients from flushing to zero; CPUs run bf16, which
has fp32's exponent range and needs no scaler. Everything that runs a model (training, the
Predictor, benchmarks) goes through these helpers so the rule is written once.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextlib import AbstractContextManager

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
            raise DeviceError(
                f"device {spec!r} requested but CUDA is not available here "
                f"(torch {torch.__version__}); use --device cpu"
            )
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return dev
    raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def amp_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA, bf16 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 / AMX). Without it oneDNN emulates
    bf16, and autocast makes convolutions 5-20x slower instead of faster (measured on an AVX2 EPYC)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


#: The CPU features that decide which kernels run (and whether bf16 is native): named in every
#: benchmark table and in the precision gate's records.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@functools.cache
def cpu_info() -> tuple[str, tuple[str, ...]]:
    """This CPU's model name and which of :data:`CPU_FEATURES` it has (from /proc/cpuinfo)."""
    import platform
    from pathlib import Path

    name, flags = "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name or platform.processor() or "unknown CPU", tuple(f for f in CPU_FEATURES if f in flags)


def cpu_line() -> str:
    """The CPU, its core count, its features and whether bf16 is native: a benchmark table's header."""
    import os

    name, features = cpu_info()
    have = ", ".join(features) or "none of " + ", ".join(CPU_FEATURES)
    return f"{name}, {os.cpu_count()} cores; features: {have}; native bf16 (oneDNN): {'yes' if native_bf16() else 'no'}"


def amp_active(device: torch.device, enabled: bool) -> bool:
    """Mixed precision actually used: always on CUDA when enabled; on CPU only with native bf16."""
    if not enabled:
        return False
    if device.type == "cpu" and not native_bf16():
        _warn_once(
            "mixed precision requested, but this CPU has no native bf16 (AVX512-BF16/AMX): running "
            "fp32, which is several times faster here (benchmarks/train.py measures both)"
        )
        return False
    return True


def memory_format(device: torch.device, amp: bool) -> torch.memory_format:
    """The layout training runs the model in. Channels-last (NHWC), which oneDNN's convolutions
    prefer, where the CPU trains in fp32: 1.14x samples/s for the shipped model's step on a 2-core
    EPYC (benchmarks/train.py). Not under CPU bf16 autocast, where it measured 0.92x, nor on CUDA,
    where it has not been measured here."""
    if device.type == "cpu" and not amp_active(device, amp):
        return torch.channels_last
    return torch.contiguous_format


def autocast(device: torch.device, enabled: bool, force: bool = False) -> AbstractContextManager:
    """The mixed-precision context for ``device``: a no-op when disabled or (unless ``force``) when
    the CPU would only emulate bf16."""
    if not (amp_active(device, enabled) or (force and enabled)):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device))


@functools.cache
def _warn_once(message: str) -> None:
    import logging

    logging.getLogger(__name__).info(f"note: {message}")


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A GradScaler that is active only for CUDA fp16; elsewhere a pass-through with the same API."""
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")


def configure_cpu(threads: int | None = None, flush_denormal: bool = True) -> None:
    """Process-wide CPU settings for running a model: intra-op threads (None/0 keeps torch's
    default) and flush-to-zero for denormal floats. Denormals appear in the small activations and
    gradients of a fresh U-Net and cost 3-10x in conv throughput on x86 (measured here: 3.5 vs
    35 samples/s fwd+bwd for a base-8 model at 128 px); flushing them changes nothing a model can tell.

    Process-wide flushing is for processes that only train (Ray Train workers). Anywhere else use
    :func:`denormals_flushed` around the model call: scipy's ``cKDTree`` (the classical baseline
    uses it) crashes the process on some point sets while denormals are flushed (scipy 1.17)."""
    if threads:
        torch.set_num_threads(int(threads))
    if flush_denormal:
        torch.set_flush_denormal(True)


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """Flush denormals to zero for the duration of the block only (see :func:`configure_cpu`)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
