"""CPU inference engines of the :class:`~dotseg.inference.predictor.Predictor`: one registry entry each.

    run = build_engine("onnxruntime", EngineContext(model, device, threads=1, model_id=..., cache_dir=...))
    prob = run(batch)  # (B, 1, H, W) normalized float32 -> (B, 1, H, W) float32 probabilities

========================  ===============================================================================
``eager``                 the PyTorch model itself (channels-last on CPU, fp16 autocast on CUDA): the
                          reference every other engine is measured against, and the only one on CUDA
``openvino``              the model exported to ONNX once, compiled by OpenVINO's CPU plugin at fp32
                          (dynamic shapes, plus models compiled for each recurring input shape,
                          one for single images and one for batches)
``onnxruntime``           the same ONNX file, run by ONNX Runtime's CPU execution provider
========================  ===============================================================================

``auto`` is the first of :data:`AUTO_ORDER` whose packages import, else ``eager`` with a one-line
notice naming the extra to install. The order is measured, not guessed: ``python benchmarks/model.py
--tables engines`` (README, "Benchmarks"). Both exported engines are within 1e-4 of eager's
probabilities (~3e-6) with identical masks on the evaluation set; at 1 thread, batch 1, OpenVINO
runs ~1.5x eager and ONNX Runtime ~1.4x, so OpenVINO comes first. OpenVINO's lead needs a model
compiled for the input shape (~0.3 s; its dynamic-shape model is no faster than ONNX Runtime), so
a shape runs on the dynamic model until it recurs (:data:`OPENVINO_PROMOTE_AT`).

The exported graph takes any batch and any ``H, W`` that are multiples of the model's
``size_multiple``; the engine pads the input with the model's own ``_pad`` (exactly what the eager
forward does first) and crops the logits, so every input size works. A model with a down-scaling stem
(``UNet.coarse_logits``) is exported without its last op, the bilinear upsampling of the one-channel
logits: OpenVINO spent ~4-5 of its ~25 ms per 512 px image (bf16 and fp32 alike, 1 thread) in that
Interpolate, torch takes 0.8 ms for it with the sigmoid, and it then runs in fp32 at every precision.
The upsampling and the sigmoid run in torch, as in eager, so thresholds see the same function of the
logits. The export (15 s on 2 cores) happens once per model: the file is cached under the model's
identity (:func:`cache_dir`), written atomically and checked against eager on a small probe every
time it is loaded, so a stale or damaged file is re-exported instead of served.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import logging
import os
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dotseg.device import autocast, denormals_flushed, native_bf16
from dotseg.synthesis.config import SynthesisConfig

__all__ = [
    "Engine",
    "EngineContext",
    "EngineSpec",
    "ENGINES",
    "AUTO_ORDER",
    "EXTRA",
    "PROBE_TOLERANCE",
    "register_engine",
    "engine_names",
    "resolve_engine",
    "build_engine",
    "installed",
    "cache_dirs",
    "precision_problem",
    "cache_dir",
    "export_path",
    "model_digest",
]

log = logging.getLogger(__name__)

#: A built engine: (B, 1, H, W) normalized float32 numpy -> (B, 1, H, W) float32 probabilities.
Engine = Callable[[np.ndarray], np.ndarray]

#: The optional dependencies that bring the fast engines (``pip install 'dotseg[fast]'``).
EXTRA = "fast"
INSTALL_HINT = f"pip install 'dotseg[{EXTRA}]'"
#: Largest |prob - prob_eager| an exported model may show on the load-time probe.
PROBE_TOLERANCE = 1e-4
#: The probe's bound in a reduced precision: it catches a stale or damaged file (whose probabilities
#: are off by ~0.1-1), not bf16's rounding (~1e-2); whether bf16 is good enough is the gate's call.
REDUCED_PROBE_TOLERANCE = 0.05
#: Cache subdirectory beside a checkpoint.
CACHE_SUBDIR = ".dotseg-cache"
#: What the exported graph computes, in its file name: 2 = the network up to its coarse logits
#: (:class:`_Exported`). A file of another format is simply not looked up (and never deleted: an
#: older dotseg on the same cache keeps its own).
EXPORT_FORMAT = 2


@dataclass(frozen=True)
class EngineContext:
    """What an engine is built from.

    Args:
        model: the network in eval mode, ``(B, 1, H, W)`` -> ``(B, 1, H, W)`` logits.
        device: where the eager model runs (the exported engines run on the CPU only).
        threads: intra-op threads of an exported engine's runtime (eager uses torch's setting).
        model_id: the model's identity, the cache key of the exported file.
        cache_dir: directory of the exported file (see :func:`cache_dir`).
        channels_last: eager only: feed the model channels-last input.
        precision: the arithmetic of the forward pass, one of the engine's :attr:`EngineSpec.precisions`:
            ``fp32`` (exact) or a reduced one (``bf16``) that only a passed gate
            (:mod:`dotseg.inference.precision`) lets a Predictor use.
    """

    model: nn.Module
    device: torch.device
    threads: int
    model_id: str
    cache_dir: Path
    channels_last: bool = False
    precision: str = "fp32"
    synthesis: SynthesisConfig | None = None
    """``int8`` only: the model's training distribution, whose images calibrate the quantization
    (None: the seed's generator at 512 px)."""


@dataclass(frozen=True)
class EngineSpec:
    """A registry entry: an engine's name, the modules it needs (and how to install them), how to build it."""

    name: str
    requires: tuple[str, ...]
    build: Callable[[EngineContext], Engine]
    summary: str
    install: str = INSTALL_HINT
    precisions: tuple[str, ...] = ("fp32",)
    """The arithmetic it can run: ``fp32`` and, where the CPU computes it natively, ``bf16``."""


ENGINES: dict[str, EngineSpec] = {}
#: ``auto`` takes the first of these whose packages import (the fastest measured first), else eager.
AUTO_ORDER: tuple[str, ...] = ("openvino", "onnxruntime")


def register_engine(spec: EngineSpec) -> EngineSpec:
    if spec.name in ENGINES or spec.name == "auto":
        raise ValueError(f"engine {spec.name!r} is already registered")
    ENGINES[spec.name] = spec
    return spec


def engine_names() -> list[str]:
    """``auto`` and every registered engine: the choices of ``--engine``."""
    return ["auto", *ENGINES]


def _missing(spec: EngineSpec) -> str | None:
    """The first module of ``spec.requires`` that does not import, or None."""
    for module in spec.requires:
        try:
            importlib.import_module(module)
        except ImportError:
            return module
    return None


def resolve_engine(name: str, device: torch.device) -> str:
    """The engine ``name`` stands for here: ``auto`` -> the fastest installed one (eager on CUDA).

    Raises:
        ValueError: an unknown name, a CPU-only engine on CUDA, or an engine whose package is missing.
    """
    if name == "auto":
        if device.type != "cpu":
            return "eager"
        for candidate in AUTO_ORDER:
            if candidate in ENGINES and _missing(ENGINES[candidate]) is None:
                return candidate
        log.info(
            "no fast CPU inference engine is installed (%s adds %s); running eager PyTorch",
            INSTALL_HINT,
            AUTO_ORDER[0],
        )
        return "eager"
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(engine_names())}")
    if name != "eager" and device.type != "cpu":
        raise ValueError(f"engine {name!r} runs on the CPU only, not on {device}; use engine 'eager' there")
    module = _missing(ENGINES[name])
    if module is not None:
        raise ValueError(
            f"engine {name!r} needs the Python package {module!r}, which is not installed: {ENGINES[name].install}"
        )
    return name


def installed(name: str) -> bool:
    """Whether engine ``name``'s packages import here."""
    return _missing(ENGINES[name]) is None


def build_engine(name: str, ctx: EngineContext) -> Engine:
    """Build a resolved engine (see :func:`resolve_engine`) in ``ctx.precision``
    (see :func:`precision_problem`)."""
    problem = precision_problem(name, ctx.precision, ctx.device)
    if problem:
        raise ValueError(problem)
    return ENGINES[name].build(ctx)


def precision_problem(engine: str, precision: str, device: torch.device) -> str | None:
    """Why ``engine`` cannot run ``precision`` here (one line), or None when it can."""
    spec = ENGINES[engine]
    if precision not in spec.precisions:
        return f"engine {engine!r} runs {', '.join(spec.precisions)}, not {precision!r}"
    if precision == "bf16" and (device.type != "cpu" or not native_bf16()):
        return (
            "bf16 needs a CPU that computes it natively (AVX512-BF16 or AMX); here it would be emulated "
            "and run many times slower than fp32"
        )
    if precision == "int8" and importlib.util.find_spec("nncf") is None:
        return f"int8 is quantized by NNCF, which is not installed: {INSTALL_HINT.replace(EXTRA, 'int8')}"
    return None


# --- cache location and model identity ----------------------------------------------------------


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dotseg``, else ``~/.cache/dotseg``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dotseg"


def _writable_dir(path: Path) -> bool:
    """Whether ``path`` exists (or can be created) and accepts new files."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            return True
    except OSError:
        return False


def cache_dir(checkpoint: Path | None, packaged: bool = False) -> Path:
    """Where exported models of ``checkpoint`` are cached.

    ``<checkpoint dir>/.dotseg-cache`` when that can be written; the user cache dir
    (:func:`user_cache_dir`) when it cannot, for a model without a file, and for the model shipped
    inside the package (``packaged``: a wheel's directory may be read-only, and a source checkout
    should not collect generated files).
    """
    if checkpoint is not None and not packaged:
        beside = Path(checkpoint).resolve().parent / CACHE_SUBDIR
        if _writable_dir(beside):
            return beside
    return user_cache_dir()


def cache_dirs(checkpoint: Path | None, packaged: bool = False) -> list[Path]:
    """Where :func:`cache_dir` may have put ``checkpoint``'s files, without creating anything."""
    dirs = [] if checkpoint is None or packaged else [Path(checkpoint).resolve().parent / CACHE_SUBDIR]
    return [*dirs, user_cache_dir()]


def model_digest(model: nn.Module) -> str:
    """A 12-hex identity of a model without a checkpoint: its class, parameters and buffers."""
    h = hashlib.blake2b(type(model).__qualname__.encode(), digest_size=6)
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


# --- shared pieces of the exported engines ------------------------------------------------------


class _Padding:
    """Pads input to the model's ``size_multiple`` with the model's own ``_pad``, and crops back."""

    def __init__(self, model: nn.Module) -> None:
        self.multiple = int(getattr(model, "size_multiple", 1))
        self._pad: Callable[[torch.Tensor], torch.Tensor] | None = getattr(model, "_pad", None)
        if self.multiple > 1 and self._pad is None:
            raise ValueError(f"{type(model).__name__} has a size_multiple but no _pad")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._pad is None or (x.shape[-2] % self.multiple == 0 and x.shape[-1] % self.multiple == 0):
            return np.ascontiguousarray(x)
        with torch.inference_mode():
            return self._pad(torch.from_numpy(x)).contiguous().numpy()


class _Exported(nn.Module):
    """What is exported: the model from padded input to its coarse logits (``coarse_logits``, no
    upsampling), or the whole model if it has no such part. :meth:`finish` does the rest in torch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        coarse, upsample = getattr(model, "coarse_logits", None), getattr(model, "upsample", None)
        split = callable(coarse) and callable(upsample)
        self._graph: Callable[[torch.Tensor], torch.Tensor] = coarse if split else model  # type: ignore[assignment]
        self._upsample: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] | None = upsample if split else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._graph(x)

    def finish(self, logits: np.ndarray, padded: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """The graph's logits -> probabilities (B, 1, *size), sigmoid in torch with denormals flushed,
        as the eager engine computes them."""
        with torch.inference_mode(), denormals_flushed():
            out = torch.from_numpy(logits)
            if self._upsample is not None:
                out = self._upsample(out, padded)
            out = out[..., : size[0], : size[1]]
            # In place where nothing is cropped (no new 1 MB array per 512 px image); a crop gets a
            # compact copy, as before.
            return (torch.sigmoid_(out) if out.is_contiguous() else torch.sigmoid(out)).numpy()


def export_path(cache: Path, model_id: str) -> Path:
    """Where the exported ONNX file of ``model_id`` lives in ``cache``."""
    return cache / f"{model_id}.x{EXPORT_FORMAT}.onnx"


def _export_onnx(model: nn.Module, path: Path, model_id: str) -> None:
    """Export ``model`` (eval, CPU, fp32) with the dynamo exporter to ``path``, atomically.

    Dynamic batch and ``H, W`` as multiples of ``size_multiple``: torch.export can then prove that
    the model's own padding is a no-op and the graph has no shape-dependent branches. (The legacy
    TorchScript exporter refuses the blur-pool, whose depthwise kernel is expanded at run time.)
    """
    from torch.export import Dim

    multiple = int(getattr(model, "size_multiple", 1))
    exported = _Exported(model).eval()
    batch, hq, wq = Dim("batch", min=1), Dim("hq", min=1), Dim("wq", min=1)
    height = hq * multiple if multiple > 1 else hq
    width = wq * multiple if multiple > 1 else wq
    example = torch.zeros(2, 1, 2 * multiple, 3 * multiple)  # 2, not 1: torch.export specializes sizes 0 and 1
    t0 = time.perf_counter()
    log.info("exporting the model to ONNX for the CPU engine (once per model) -> %s", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    sink = io.StringIO()
    # The exporter prints its progress, logs every graph rewrite at INFO and warns about unrelated
    # registrations (torchvision): none of it is news to a user.
    chatty = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in chatty]
    try:
        for logger in chatty:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                exported,
                (example,),
                dynamo=True,
                input_names=["x"],
                output_names=["logits"],
                dynamic_shapes=({0: batch, 2: height, 3: width},),
                external_data=False,
                verbose=False,
            )
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        program.model.metadata_props.update(
            {"dotseg.model_id": model_id, "dotseg.size_multiple": str(multiple), "torch": torch.__version__}
        )
        program.save(tmp, external_data=False)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from other users of a shared cache
        os.replace(tmp, path)
    finally:
        for logger, old in zip(chatty, levels, strict=True):
            logger.setLevel(old)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    log.info("exported in %.1f s", time.perf_counter() - t0)


def _probe(model: nn.Module, run: Engine, statistic: Callable[[np.ndarray], float] = np.max) -> float:
    """``statistic`` (max) of |prob - prob_eager| on a small fixed input of an awkward size (padding included)."""
    multiple = int(getattr(model, "size_multiple", 1))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, multiple + 3, 2 * multiple + 5), dtype=np.float32)
    with torch.inference_mode(), denormals_flushed():
        expected = torch.sigmoid(model(torch.from_numpy(x))).numpy()
    return float(statistic(np.abs(run(x).astype(np.float64) - expected)))


def _onnx_engine(ctx: EngineContext, open_runner: Callable[[Path], Callable[[np.ndarray], np.ndarray]]) -> Engine:
    """The cached ONNX file of ``ctx.model`` (exported if missing or failing the probe), run by the
    runner ``open_runner(path)`` returns (padded input -> the graph's logits), wrapped with padding,
    upsampling and sigmoid (:class:`_Exported`)."""
    if ctx.device.type != "cpu":
        raise ValueError(f"exported engines run on the CPU only, not on {ctx.device}")
    path = export_path(ctx.cache_dir, ctx.model_id)
    padding, graph = _Padding(ctx.model), _Exported(ctx.model)

    def make() -> Engine:
        runner = open_runner(path)

        def run(x: np.ndarray) -> np.ndarray:
            padded = padding(x)
            return graph.finish(runner(padded), padded.shape[-2:], x.shape[-2:])

        return run

    statistic, tolerance = _PROBE_RULE.get(ctx.precision, (np.max, REDUCED_PROBE_TOLERANCE))
    fresh = not path.is_file()
    if fresh:
        _export_onnx(ctx.model, path, ctx.model_id)
    try:
        run = make()
        diff = _probe(ctx.model, run, statistic)
    except Exception as exc:  # a damaged file: re-exported below; a fresh one that fails: raised
        if fresh:
            raise
        log.warning("the cached %s does not load (%s); exporting it again", path, exc)
        diff = float("inf")
    if diff > tolerance:
        if fresh:
            raise RuntimeError(f"the exported model differs from eager by {diff:.2g} (> {tolerance:g})")
        if diff != float("inf"):
            log.warning("the cached %s differs from this model (%.2g); exporting it again", path, diff)
        _export_onnx(ctx.model, path, ctx.model_id)
        run = make()
        diff = _probe(ctx.model, run, statistic)
        if diff > tolerance:
            raise RuntimeError(f"the exported model differs from eager by {diff:.2g} (> {tolerance:g})")
    return run


# --- the engines ------------------------------------------------------------------------------


def _eager(ctx: EngineContext) -> Engine:
    model, device, channels_last = ctx.model, ctx.device, ctx.channels_last
    # fp16 on CUDA; on CPU fp32, or bf16 autocast where the CPU computes it natively and the model
    # passed the precision gate (build_engine checked both).
    reduced = device.type == "cuda" or ctx.precision == "bf16"

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device)  # (B, 1, H, W)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), denormals_flushed():
            with autocast(device, enabled=reduced):
                logits = model(x)  # (B, 1, H, W)
            prob = torch.sigmoid_(logits.float())  # (B, 1, H, W), sigmoid in fp32, in place: the logits are ours
            return prob.cpu().numpy()

    return run


def _onnxruntime(ctx: EngineContext) -> Engine:
    ort: Any = importlib.import_module("onnxruntime")

    def open_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = ctx.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only
        # Workers would busy-wait between ops; on a shared machine that steals the other processes' time.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")  # as eager flushes them
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"x": x})[0]

    return _onnx_engine(ctx, open_runner)


#: OpenVINO: an image size seen this many times, in single images or in batches, gets a model compiled
#: for it, one for each (before: the dynamic-shape model).
OPENVINO_PROMOTE_AT = 3
#: OpenVINO: shape-specific compiled models kept (a size's single-image and any-batch ones count
#: apart), least recently used dropped (35-105 MB each at 512 px).
OPENVINO_SHAPES = 4


#: int8: images of the calibration set (NNCF's default subset is 300; 128 measured as good on the
#: shipped model: the same Dice and mask agreement as 300, in half the time).
INT8_CALIBRATION = 128
#: int8: the probe's bound, on the *mean* |prob - prob_eager|: on the probe's noise input (nothing like
#: an image) quantization moves single probabilities by up to ~0.6 but the mean by 0.003-0.08 (v1, v2);
#: a stale or damaged file moves the mean by ~0.3-0.5. How good int8 is on images is the gate's call.
INT8_PROBE_TOLERANCE = 0.15
#: How the load-time probe judges an engine, by precision: (statistic of |prob - prob_eager|, bound).
_PROBE_RULE: dict[str, tuple[Callable[[np.ndarray], float], float]] = {
    "fp32": (np.max, PROBE_TOLERANCE),
    "int8": (np.mean, INT8_PROBE_TOLERANCE),
}


def _calibration_set(synthesis: SynthesisConfig | None, n: int = INT8_CALIBRATION) -> list[np.ndarray]:
    """``n`` images of the model's training distribution across its noise range (seeded: the same
    set every time), normalized as the Predictor normalizes, ``(1, 1, H, W)``."""
    from dotseg.normalize import normalize
    from dotseg.synthesis import make_sample

    cfg = synthesis or SynthesisConfig()
    return [normalize(make_sample(cfg, 7, i, noise_scale=1.0, mixed_prob=0.3).image)[None, None] for i in range(n)]


def _int8_model(ov: Any, core: Any, onnx_path: Path, ctx: EngineContext) -> Any:
    """The int8 OpenVINO model of the exported ``onnx_path``: post-training quantized by NNCF on a
    calibration set of the model's own inputs, cached beside the ONNX file (keyed by the model and
    NNCF's version) and written atomically (the weights first, then the graph that names them)."""
    import importlib.metadata as md

    xml = onnx_path.with_name(f"{onnx_path.stem}.int8-nncf{md.version('nncf')}.xml")
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return core.read_model(str(xml))
    nncf: Any = importlib.import_module("nncf")
    padding = _Padding(ctx.model)
    images = _calibration_set(ctx.synthesis)
    t0 = time.perf_counter()
    log.info("quantizing the model to int8 for OpenVINO (once per model, %d images) -> %s", len(images), xml)
    # NNCF draws progress bars and warns about its backends: none of it is news to a user.
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(
            core.read_model(str(onnx_path)), nncf.Dataset([padding(x) for x in images]), subset_size=len(images)
        )
    tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.tmp.xml")
    try:
        ov.save_model(quantized, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    finally:
        for leftover in (tmp, tmp.with_suffix(".bin")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    log.info("quantized in %.1f s", time.perf_counter() - t0)
    return quantized


def openvino_config(precision: str, threads: int) -> dict[str, Any]:
    """The OpenVINO CPU plugin's settings for ``threads`` threads at ``precision``."""
    return {
        "INFERENCE_NUM_THREADS": threads,
        # OpenVINO's default is bf16 where the CPU has it (~1e-2 off, masks change): only a passed gate asks for it.
        # int8: the quantized ops run int8, the rest fp32.
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "CPU_DENORMALS_OPTIMIZATION": True,  # as eager flushes them
        # OpenVINO pins its threads to the first cores. Two processes with fewer threads than cores
        # (two 1-thread Serve replicas, two Ray Data actors on 2 cores) then share core 0 and leave
        # the other idle: each ran 2.2x slower than alone, together 0.9x of one process (measured on
        # the 2-core EPYC; unpinned: 1.8x of one). Pinning stays where one process takes every core.
        "ENABLE_CPU_PINNING": threads >= len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else False,
    }


def _openvino(ctx: EngineContext) -> Engine:
    ov: Any = importlib.import_module("openvino")

    def open_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
        core = ov.Core()
        source = _int8_model(ov, core, path, ctx) if ctx.precision == "int8" else core.read_model(str(path))
        config = openvino_config(ctx.precision, ctx.threads)
        # A model compiled for one image size runs ~10 % faster than the dynamic-shape one (~1.7x here
        # under bf16), but its compilation costs ~0.3 s: a size is served by the dynamic model until it
        # has recurred. Its batch dimension stays dynamic: a replica's batches come in every size from
        # 1 to max_batch_size, and a model per (batch, H, W) thrashed (random batch sizes ran 1.8x
        # slower per image than one size did). Single images, the latency case, get their own fully
        # static model: 6-9 % faster again than the dynamic batch, in fp32 and bf16 alike (v2 and a
        # base-16 unet_cbam on the 2-core EPYC, 1 thread).
        dynamic = core.compile_model(source, "CPU", config).create_infer_request()
        static: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        seen: dict[tuple[int, ...], int] = {}

        def runner(x: np.ndarray) -> np.ndarray:
            key = (1 if x.shape[0] == 1 else -1, *x.shape[1:])  # (1 | any batch, C, H, W)
            request = static.get(key)
            if request is not None:
                static.move_to_end(key)
            else:
                seen[key] = seen.get(key, 0) + 1
                request = dynamic
                if seen[key] >= OPENVINO_PROMOTE_AT:
                    model = source.clone()
                    model.reshape(list(key))
                    request = static[key] = core.compile_model(model, "CPU", config).create_infer_request()
                    log.debug(
                        "OpenVINO: compiled a model for %s %s inputs",
                        "single" if key[0] == 1 else "any batch of",
                        "x".join(map(str, key[1:])),
                    )
                    if len(static) > OPENVINO_SHAPES:
                        static.popitem(last=False)
                    if len(seen) > 1024:  # a stream of one-off sizes must not grow this forever
                        seen.clear()
            # share_inputs: OpenVINO reads x where it is (no copy of the image); the logits are copied
            # out, as the request reuses its output buffer at the next call.
            return request.infer({0: x}, share_inputs=True)[0].copy()

        return runner

    return _onnx_engine(ctx, open_runner)


register_engine(
    EngineSpec(
        "eager", (), _eager, "PyTorch (channels-last on CPU, fp16 autocast on CUDA)", precisions=("fp32", "bf16")
    )
)
register_engine(
    EngineSpec("onnxruntime", ("onnxruntime", "onnxscript"), _onnxruntime, "ONNX Runtime, CPU execution provider")
)
register_engine(
    EngineSpec(
        "openvino",
        ("openvino", "onnxscript"),
        _openvino,
        "OpenVINO CPU plugin, fp32 (bf16 or int8 once gated), recurring shapes compiled for their shape",
        install=f"{INSTALL_HINT} openvino",
        precisions=("fp32", "bf16", "int8"),
    )
)
