"""Saving and loading a checkpoint: the tensors, the metadata decoded and validated, and the model
built from both. Nothing in a file is executed; every refusal is one :class:`CheckpointError` line,
raised before any model is built."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from dotseg.checkpoint.format1 import from_format_1
from dotseg.checkpoint.meta import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    CheckpointMeta,
    ModelContract,
    Provenance,
    RunConfig,
    model_identity,
)
from dotseg.checkpoint.sniff import read_header
from dotseg.configbase import ConfigError, describe_error, diff_keys, get_path
from dotseg.files import write_atomic
from dotseg.models.config import ModelConfig
from dotseg.normalize import NORMALIZATION
from dotseg.storage import StorageError, is_uri, local_copy, local_copy_path, one_line
from dotseg.synthesis.config import SynthesisConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dotseg.config import Config


@dataclass(frozen=True, eq=False)
class LoadedCheckpoint:
    state_dict: dict[str, torch.Tensor]
    """Tensors by parameter name, on ``map_location``."""
    meta: CheckpointMeta
    """The decoded, validated metadata."""
    path: Path
    """The file it was read from."""

    @property
    def contract(self) -> ModelContract:
        return self.meta.contract

    @property
    def threshold(self) -> float:
        """Decision threshold on the foreground probability."""
        return self.meta.contract.threshold

    @property
    def model_id(self) -> str:
        return self.meta.model_id

    @property
    def epoch(self) -> int:
        return self.meta.epoch

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.meta.provenance.metrics)

    @cached_property
    def cfg(self) -> Config | None:
        """The run's full config if this dotseg can read it (provenance: None when it cannot)."""
        return run_config(self.meta)

    @property
    def synthesis(self) -> SynthesisConfig:
        """The image distribution the model was trained on (defaults at its input size if unknown)."""
        return trained_synthesis(self.meta, self.cfg)

    def about(self) -> dict[str, Any]:
        """A short, JSON-able description for reports and logs."""
        p = self.meta.provenance
        return {
            "checkpoint": self.path.name,
            "model_id": self.model_id,
            "run_id": self.meta.run_id,
            "variant": self.contract.model.variant,
            "epoch": self.epoch,
            "config_hash": p.config_hash,
            **({"sweep": p.sweep, "trial": p.trial} if p.sweep else {}),
        }


def run_config(meta: CheckpointMeta) -> Config | None:
    """The run's full config from a checkpoint's provenance, if this dotseg can read it."""
    from dotseg.config import Config  # provenance only: the checkpoint itself never needs it

    try:
        return Config.from_dict(meta.provenance.config)
    except ConfigError:
        return None


def trained_synthesis(meta: CheckpointMeta, cfg: Config | None = None) -> SynthesisConfig:
    """The image distribution a model was trained on (the seed's at its input size if unknown)."""
    cfg = cfg if cfg is not None else run_config(meta)
    return cfg.synthesis if cfg is not None else SynthesisConfig(size=meta.contract.input_size)


# -- saving ---------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    cfg: RunConfig,
    *,
    threshold: float,
    metrics: Mapping[str, float],
    epoch: int,
    origin: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights, its contract and ``cfg`` as provenance to ``path`` (``*.safetensors``), atomically.

    ``origin`` adds provenance fields (``{"sweep": ..., "trial": ...}`` for a promoted sweep trial).
    DDP / DataParallel (``.module``) and ``torch.compile`` (``_orig_mod``) wrappers are unwrapped, so
    the names are those of the plain model. The file appears complete or not at all: it is written
    to a temporary file in the same directory and moved into place with ``os.replace``
    (:func:`dotseg.files.write_atomic`).

    Raises:
        ValueError: on a path not ending in ``.safetensors``, a threshold outside (0, 1), a model
            whose variant does not match ``cfg.model``, or metrics that are not JSON numbers.
    """
    import torch

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a dotseg checkpoint is a .safetensors file; name it *.safetensors")
    if not (isinstance(threshold, (int, float)) and 0.0 < float(threshold) < 1.0):
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    clean_metrics = {str(k): _json_number(v, f"metrics[{k!r}]") for k, v in metrics.items()}

    state = _plain_state_dict(model)
    problem = _state_dict_problem({k: tuple(v.shape) for k, v in state.items()}, _expected_shapes(cfg.model))
    if problem:
        raise ValueError(f"the model does not match cfg.model ({_describe_model(cfg.model)}): {problem}")
    # safetensors stores each tensor's bytes once and refuses views of shared memory: clone to own them.
    tensors = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in state.items()}

    contract = ModelContract.of(cfg, float(threshold))
    meta = CheckpointMeta(
        contract=contract,
        run_id=cfg.run_id,
        epoch=int(epoch),
        model_id=model_identity(contract, cfg.run_id, epoch),
        provenance=Provenance(
            config=cfg.to_dict(),
            config_hash=cfg.hash,
            metrics=clean_metrics,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            dotseg_version=_dotseg_version(),
            **dict(origin or {}),
        ),
    )
    return write_checkpoint(path, tensors, meta)


def write_checkpoint(path: Path, tensors: Mapping[str, torch.Tensor], meta: CheckpointMeta) -> Path:
    """Write ``tensors`` (contiguous, on CPU) with ``meta`` as the header metadata, atomically."""
    from safetensors.torch import save

    header = {k: json.dumps(v, sort_keys=True, allow_nan=False) for k, v in meta.model_dump(mode="json").items()}
    write_atomic(path, save(dict(tensors), metadata=header))  # 2x the model's bytes in memory, briefly
    return path


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the model inside any DDP/DataParallel/compile wrappers, with plain names."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = _ddp_inner(model)
        if inner is None:
            break
        model = inner
    state = model.state_dict()
    # A compiled *submodule* still leaves ``_orig_mod.`` in the middle of its names.
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}


def _ddp_inner(model: nn.Module) -> nn.Module | None:
    from torch.nn import DataParallel
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, (DataParallel, DistributedDataParallel)) else None


def _json_number(value: Any, name: str) -> float | int | None:
    """A metric as a JSON number; NaN/inf (e.g. an undefined grad norm) become null."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else number


def _dotseg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dotseg")
    except PackageNotFoundError:
        return "unknown"


# -- loading --------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, expect: ModelConfig | None = None
) -> LoadedCheckpoint:
    """Read and validate a checkpoint; nothing in it is executed.

    Args:
        path: the ``.safetensors`` file, or its URI in a bucket (``s3://``, ``gs://``; see :mod:`dotseg.storage`).
        map_location: device the tensors are loaded onto.
        expect: if given, the checkpoint's model config must equal it (variant, widths, ...).

    Raises:
        CheckpointError: (a ``ValueError``) with one line, for a missing path, a directory, an HTML
            page or other text, a PyTorch pickle, a truncated or corrupt file, a safetensors file
            without dotseg metadata, a newer format, another normalization, an invalid model
            contract, edited metadata, a model other than ``expect``, or tensors that do not fit
            the model the contract builds. Provenance (the run's config, metrics, ...) never fails a load.
    """
    if is_uri(path):  # s3://, gs://: read from a local copy, errors still name the URI
        try:
            return load_checkpoint(local_copy(str(path)), map_location, expect=expect)
        except (CheckpointError, StorageError) as e:
            raise CheckpointError(str(e).replace(str(local_copy_path(str(path))), str(path))) from None
    path = Path(path)
    meta = _check(path, expect)
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device=str(map_location))
    except Exception as e:  # safetensors raises its own error type, OSError or RuntimeError
        raise CheckpointError(f"{path}: corrupt safetensors data: {one_line(e)}") from None
    return LoadedCheckpoint(state_dict=tensors, meta=meta, path=path)


def read_meta(path: str | Path, *, expect: ModelConfig | None = None) -> CheckpointMeta:
    """A checkpoint's metadata (its model id, contract, provenance), checked as :func:`load_checkpoint`
    checks it (the same errors) from the header alone, without reading the tensors. The header read
    is cached by the file's identity, so checking a file and then loading it reads it once."""
    if is_uri(path):
        try:
            return read_meta(local_copy(str(path)), expect=expect)
        except (CheckpointError, StorageError) as e:
            raise CheckpointError(str(e).replace(str(local_copy_path(str(path))), str(path))) from None
    return _check(Path(path), expect)


def _check(path: Path, expect: ModelConfig | None) -> CheckpointMeta:
    """Everything a header tells: what the file is, its metadata, the model, the tensors' names and
    shapes against that model, and whether the file holds all the bytes the header describes."""
    header, data_bytes = read_header(path)
    meta = _decode_meta(path, header.get("__metadata__"))
    model_cfg = meta.contract.model
    if expect is not None:
        differ = diff_keys(expect, model_cfg, "model")
        if differ:
            details = ", ".join(
                f"{k}={get_path(model_cfg, k.partition('.')[2])!r} (expected {get_path(expect, k.partition('.')[2])!r})"
                for k in differ
            )
            raise CheckpointError(f"{path}: checkpoint holds another model than expected: {details}")

    shapes = {k: tuple(info["shape"]) for k, info in header.items() if k != "__metadata__"}
    problem = _state_dict_problem(shapes, _expected_shapes(model_cfg))
    if problem:
        raise CheckpointError(f"{path}: tensors do not fit {_describe_model(model_cfg)}: {problem}")

    size = path.stat().st_size
    if data_bytes > size:
        raise CheckpointError(
            f"{path}: truncated: the header describes {data_bytes} bytes but the file has "
            f"{size} (an interrupted download or copy?)"
        )
    return meta


def build_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, expect: ModelConfig | None = None
) -> tuple[nn.Module, LoadedCheckpoint]:
    """Load a checkpoint (see :func:`load_checkpoint`) and build its model with the weights, in eval mode."""
    from dotseg.models import build_model

    ckpt = load_checkpoint(path, map_location, expect=expect)
    model = build_model(ckpt.contract.model)
    model.load_state_dict(ckpt.state_dict, strict=True)  # keys and shapes were checked already
    return model.to(map_location).eval(), ckpt


# -- metadata ---------------------------------------------------------------------------------------


def _decode_meta(path: Path, raw: Any) -> CheckpointMeta:
    """The metadata, decoded and validated; a newer format is refused first, provenance never blocks."""
    if not isinstance(raw, dict) or "format" not in raw:
        raise CheckpointError(
            f"{path}: is a safetensors file without dotseg metadata (plain weights from "
            "another tool?); expected a checkpoint written by dotseg.checkpoint.save_checkpoint"
        )
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            fields[key] = json.loads(value)
        except (TypeError, ValueError):
            fields[key] = value  # only dotseg's own fields must be JSON; checked below
    if fields["format"] != FORMAT:
        raise CheckpointError(
            f"{path}: metadata format is {fields['format']!r}, expected {FORMAT!r} "
            "(a safetensors file from another tool?)"
        )
    version = fields.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: corrupt metadata: format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer dotseg (format {version} > {FORMAT_VERSION}); upgrade dotseg"
        )
    if version == 1:
        fields = from_format_1(path, fields)
    missing = [k for k in ("contract", "run_id", "epoch", "model_id") if k not in fields]
    if missing:
        raise CheckpointError(f"{path}: corrupt metadata: missing {', '.join(missing)}")
    contract = fields["contract"]
    if isinstance(contract, dict) and contract.get("normalization", NORMALIZATION) != NORMALIZATION:
        raise CheckpointError(
            f"{path}: model was trained with input normalization {contract['normalization']!r}, "
            f"this dotseg uses {NORMALIZATION!r}; its predictions would be meaningless"
        )
    try:
        contract = ModelContract.from_dict(contract)
    except ConfigError as e:
        raise CheckpointError(f"{path}: its model contract is not valid for this dotseg: {one_line(e)}") from None
    try:
        provenance = Provenance.model_validate(fields.get("provenance") or {})
    except ValidationError:
        provenance = Provenance()  # unreadable provenance is only lost information
    try:
        meta = CheckpointMeta.model_validate(
            {
                **{k: fields[k] for k in ("run_id", "epoch", "model_id")},
                "format_version": version,
                "contract": contract,
                "provenance": provenance,
            }
        )
    except ValidationError as e:
        raise CheckpointError(f"{path}: corrupt metadata: {describe_error(CheckpointMeta, e)}") from None
    if model_identity(contract, meta.run_id, meta.epoch) != meta.model_id:
        raise CheckpointError(
            f"{path}: its contract, run_id and epoch do not match its model_id {meta.model_id!r} "
            "(the metadata was edited or corrupted)"
        )
    return meta


# -- state dict vs model ---------------------------------------------------------------------------


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of the model ``cfg`` builds (on the meta device: no memory, no init)."""
    return dict(_shapes_of(cfg.model_dump_json()))


@functools.lru_cache(maxsize=16)
def _shapes_of(model_json: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    import torch

    from dotseg.models import build_model

    with torch.device("meta"):
        model = build_model(ModelConfig.model_validate_json(model_json))
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _state_dict_problem(
    state_shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], show: int = 3
) -> str:
    """'' if the names and shapes agree, else one line listing a few missing/unexpected/mis-shaped keys."""
    missing = [k for k in expected if k not in state_shapes]
    unexpected = [k for k in state_shapes if k not in expected]
    wrong = [k for k in expected if k in state_shapes and tuple(state_shapes[k]) != tuple(expected[k])]

    def few(keys: list[str]) -> str:
        more = f" (+{len(keys) - show} more)" if len(keys) > show else ""
        return ", ".join(keys[:show]) + more

    parts = []
    if missing:
        parts.append(f"missing {few(missing)}")
    if unexpected:
        parts.append(f"unexpected {few(unexpected)}")
    if wrong:
        shown = [f"{k} {tuple(state_shapes[k])} (model: {tuple(expected[k])})" for k in wrong]
        parts.append(f"shape mismatch {few(shown)}")
    return "; ".join(parts)


def _describe_model(cfg: ModelConfig) -> str:
    return f"model {cfg.variant!r} (base_channels={cfg.base_channels}, depth={cfg.depth})"
