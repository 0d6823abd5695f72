"""Inference without Ray: a trained model plus the preprocessing and threshold it was trained with.

    predictor = Predictor.from_checkpoint("runs/x/best.safetensors", device="auto", threads=2)
    pred = predictor.predict(image)        # (H, W) any dtype -> Prediction(mask bool, prob float32), (H, W)

Serving wraps this object; evaluation compares it with the classical baseline through the
:class:`dotseg.inference.segmenter.Segmenter` protocol. Preprocessing is exactly
:func:`dotseg.normalize.normalize`, the function training uses, and nothing else: its version is
stored in every checkpoint and checked on load, so train/serve skew cannot creep in here.
Device choice is :func:`dotseg.device.resolve_device` (re-exported here), the helper training uses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dotseg.checkpoint import CheckpointError, LoadedCheckpoint, ModelContract, build_from_checkpoint
from dotseg.device import configure_cpu, resolve_device
from dotseg.inference import engines, precision
from dotseg.inference.images import to_grey
from dotseg.inference.segmenter import Prediction
from dotseg.normalize import NORMALIZATION, normalize
from dotseg.synthesis.config import SynthesisConfig

__all__ = ["Predictor", "resolve_device", "shipped_checkpoint", "resolve_checkpoint", "SHIPPED_MODELS"]

log = logging.getLogger(__name__)

#: The models installed with the package (``dotseg/assets/``), by the names every ``--checkpoint``
#: accepts: ``shipped`` is the default model; every version stays loadable by its version's name
#: (v1 keeps the file name it had when it was the default).
SHIPPED_MODELS: dict[str, str] = {
    "shipped": "model-v2.safetensors",
    "shipped-v2": "model-v2.safetensors",
    "shipped-v1": "model.safetensors",
}


def shipped_checkpoint(name: str = "shipped") -> Path:
    """A model installed with the package, by name (default: ``shipped``, the newest version).

    Raises:
        CheckpointError: for an unknown name, or if that model is not installed.
    """
    if name not in SHIPPED_MODELS:
        raise CheckpointError(f"no shipped model is called {name!r}; the shipped ones are {', '.join(SHIPPED_MODELS)}")
    asset = resources.files("dotseg").joinpath("assets", SHIPPED_MODELS[name])
    if not asset.is_file():
        raise CheckpointError(
            f"no shipped model is installed (dotseg/assets/{SHIPPED_MODELS[name]} is missing); "
            "pass a checkpoint (--checkpoint PATH on the command line)"
        )
    return Path(str(asset))


def resolve_checkpoint(spec: str | Path | None) -> str | Path:
    """What a ``--checkpoint`` names: None and the :data:`SHIPPED_MODELS` names are installed models;
    anything else (a path, an ``s3://`` / ``gs://`` URI) is returned as it is."""
    if spec is None:
        return shipped_checkpoint()
    if isinstance(spec, str) and spec.startswith("shipped") and not Path(spec).exists():
        return shipped_checkpoint(spec)  # a known name, or one line listing the known ones
    return spec


class Predictor:
    """A model in eval mode with its decision threshold, on one device; implements ``Segmenter``.

    Args:
        model: the network, ``(B, 1, H, W)`` float32 -> ``(B, 1, H, W)`` logits.
        contract: what the model needs (its config, input normalization, threshold, input size).
        threshold: ``mask = prob >= threshold``; None = the contract's.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (see :func:`resolve_device`).
        threads: CPU threads for torch ops (``torch.set_num_threads``, process-wide); ``None`` keeps
            torch's setting.
        channels_last: run the model in channels-last (NHWC) memory layout, which oneDNN's convs
            prefer: 1.15-1.2x faster on a 2-core AVX2 CPU at base 16 and 64, and 1.07-1.2x for the
            shipped model, probabilities within ~1e-6 of the default layout (``benchmarks/model.py``).
            ``None`` (default): on for CPU, off for CUDA. Only the eager engine runs the model itself.
        engine: how the forward pass runs (:mod:`dotseg.inference.engines`): ``auto`` (default) = the
            fastest measured CPU engine that is installed (OpenVINO with ``dotseg[fast]``, ~1.5x eager
            at 1 thread with the same masks; else ONNX Runtime), else ``eager`` with a one-line notice;
            ``eager`` = the PyTorch model; ``openvino``, ``onnxruntime`` = that engine or a ValueError
            naming what to install. The exported model is cached under the model's identity (beside
            the checkpoint, else in the user cache dir) and reused at the next start.
        precision: ``auto`` (default) = the fastest reduced precision that passed the precision
            gate for this model on this CPU (:mod:`dotseg.inference.precision`; ``dotseg evaluate
            --gate`` runs it), else fp32; ``fp32`` = exact; ``bf16`` = bf16, refused unless it passed.
            With ``engine="auto"`` the gate's fastest passed engine is taken; a named engine keeps.
        require_gate: False only for the gate itself (it measures precisions before they pass).

    On CUDA the forward pass runs under fp16 autocast; on CPU in fp32 unless a gate passed a
    reduced precision. Probabilities are returned as float32 either way.
    """

    name = "model"

    def __init__(
        self,
        model: nn.Module,
        contract: ModelContract,
        threshold: float | None = None,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        checkpoint: LoadedCheckpoint | None = None,
        channels_last: bool | None = None,
        engine: str = "auto",
        precision: str = "auto",
        *,
        require_gate: bool = True,
    ) -> None:
        threshold = contract.threshold if threshold is None else threshold
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        if contract.normalization != NORMALIZATION:
            raise ValueError(
                f"the model expects input normalization {contract.normalization!r}, this dotseg has {NORMALIZATION!r}"
            )
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        configure_cpu(threads, flush_denormal=False)  # flushed around the forward pass only
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack it
        self.contract = contract
        self.threshold = float(threshold)
        self.checkpoint = checkpoint
        """The checkpoint the model came from (its path, metrics, ...), if any."""
        self.engine = engines.resolve_engine(engine, self.device)
        """The engine the forward pass runs on (``auto`` resolved)."""
        self.packaged = checkpoint is not None and is_shipped(checkpoint.path)
        self.precision = self._precision(precision, engine != "auto", require_gate)
        """The arithmetic of the forward pass: ``fp32`` or a gated reduced precision (``bf16``)."""
        run: engines.Engine | None = None
        if self.engine != "eager":
            if checkpoint is not None:
                model_id = checkpoint.model_id
                cache = engines.cache_dir(checkpoint.path, packaged=self.packaged)
            else:
                model_id, cache = engines.model_digest(self.model), engines.cache_dir(None)
            n_threads = threads if threads is not None else torch.get_num_threads()
            try:
                run = engines.build_engine(
                    self.engine,
                    engines.EngineContext(
                        self.model,
                        self.device,
                        n_threads,
                        model_id,
                        cache,
                        precision=self.precision,
                        synthesis=self.synthesis,
                    ),
                )
            except Exception as exc:  # auto: any engine that cannot start leaves eager, which always works
                if engine != "auto":
                    raise
                reason = (str(exc).strip().splitlines() or [""])[0][:200]
                log.warning(
                    "the %s engine did not start (%s: %s); running eager PyTorch",
                    self.engine,
                    type(exc).__name__,
                    reason,
                )
                self.engine = "eager"
                if engines.precision_problem("eager", self.precision, self.device):
                    self.precision = "fp32"
        if run is None:
            run = engines.build_engine(
                "eager",
                engines.EngineContext(
                    self.model, self.device, 1, "", Path(), self.channels_last, precision=self.precision
                ),
            )
        self._run = run

    def _precision(self, requested: str, engine_fixed: bool, require_gate: bool) -> str:
        """The precision to run (and, under ``engine="auto"``, the gate's engine in :attr:`engine`)."""
        if requested not in precision.PRECISIONS:
            raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(precision.PRECISIONS)}")
        if requested == "fp32" or (requested == "auto" and self.device.type != "cpu"):
            return "fp32"  # CUDA's fp16 autocast is the eager engine's own, not a gated precision
        if not require_gate:
            problem = engines.precision_problem(self.engine, requested, self.device)
            if problem:
                raise ValueError(problem)
            return requested
        if self.checkpoint is not None:
            model_id, caches = self.checkpoint.model_id, engines.cache_dirs(self.checkpoint.path, self.packaged)
        else:
            model_id, caches = engines.model_digest(self.model), engines.cache_dirs(None)
        record = precision.load_record(caches, model_id)
        engine, chosen = precision.choose(record, self.engine, requested, engine_fixed)
        if chosen != "fp32" and (
            engines.precision_problem(engine, chosen, self.device) or not engines.installed(engine)
        ):
            return "fp32"  # the record's pair cannot run here after all (a package removed since)
        self.engine = engine
        return chosen

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        threshold: float | None = None,
        channels_last: bool | None = None,
        engine: str = "auto",
        precision: str = "auto",
        *,
        require_gate: bool = True,
    ) -> Predictor:
        """Load a checkpoint (``None``: the shipped model; a :data:`SHIPPED_MODELS` name: that one)
        and use its config and threshold.

        ``threshold`` overrides the checkpoint's. Raises :class:`CheckpointError` for any unusable file.
        """
        dev = resolve_device(device)  # before loading: a wrong device should fail fast
        if engine != "auto":
            engines.resolve_engine(engine, dev)  # likewise an unknown engine or a missing package
        model, ckpt = build_from_checkpoint(resolve_checkpoint(path))
        return cls(
            model,
            ckpt.contract,
            threshold,
            dev,
            threads,
            ckpt,
            channels_last,
            engine,
            precision,
            require_gate=require_gate,
        )

    @property
    def synthesis(self) -> SynthesisConfig:
        """The image distribution the model was trained on (defaults at its input size if unknown)."""
        if self.checkpoint is not None:
            return self.checkpoint.synthesis
        return SynthesisConfig(size=self.contract.input_size)

    def predict(self, image: np.ndarray) -> Prediction:
        """One image -> its prediction at the same size.

        Args:
            image: (H, W) of any real dtype (bool, uint8, uint16, int, float32/64), any size; or
                (H, W, 3|4) RGB(A), which is converted to grey by luma (0.299 R + 0.587 G + 0.114 B,
                alpha ignored).

        Returns:
            ``Prediction(mask (H, W) bool, prob (H, W) float32)``.

        Raises:
            ValueError: another shape, an empty image, NaN/inf or a non-numeric dtype.
        """
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[Prediction]:
        """Several images (sizes may differ) -> one prediction each, in input order.

        Images of equal size run together, up to ``batch_size`` per forward pass.
        """
        inputs = [normalize(to_grey(im)) for im in images]  # each (H_i, W_i) float32
        out: list[Prediction | None] = [None] * len(inputs)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(x.shape, []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                probs = self._forward(np.stack([inputs[i] for i in chunk]))  # (b, H, W)
                for i, prob in zip(chunk, probs, strict=True):
                    out[i] = Prediction(mask=prob >= self.threshold, prob=prob)
        return out  # type: ignore[return-value]

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """(B, H, W) normalized float32 -> (B, H, W) float32 probabilities, on :attr:`engine`."""
        return self._run(batch[:, None])[:, 0]  # (B, 1, H, W) in and out


def is_shipped(path: Path) -> bool:
    """Whether ``path`` is a model installed inside the package (its cache goes to the user cache dir)."""
    assets = resources.files("dotseg").joinpath("assets")
    return any(path.resolve() == Path(str(assets.joinpath(name))).resolve() for name in set(SHIPPED_MODELS.values()))
