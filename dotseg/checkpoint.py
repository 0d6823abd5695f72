"""The one checkpoint format of dotseg: a single ``.safetensors`` file that describes itself.

    save_checkpoint("runs/x/best.safetensors", model, cfg, threshold=0.5, metrics={"val_dice": 0.88}, epoch=12)
    model, ckpt = build_from_checkpoint("runs/x/best.safetensors")  # eval mode; ckpt.contract, ckpt.model_id

The tensors are the model's ``state_dict`` (parameters and BatchNorm buffers, contiguous, on CPU).
The safetensors header metadata (``str -> str``) holds, each value JSON-encoded (format 2):

=================  ============================================================================
``format``         ``"dotseg-checkpoint"``
``format_version`` int, :data:`FORMAT_VERSION` when written; a newer one is refused
``contract``       the :class:`ModelContract`: what a Predictor needs to reproduce the
                   predictions (model section, input normalization, threshold, training input
                   size). Validated strictly: a wrong contract refuses the load.
``run_id``         the training run's identity (:attr:`dotseg.config.Config.run_id`)
``epoch``          epoch (1-based) after which it was saved
``model_id``       digest of contract, run_id and epoch: the model's identity, checked on load
``provenance``     the :class:`Provenance`: resolved config, metrics, time, dotseg version, and
                   for a promoted sweep trial its sweep and trial. Stored and shown, never able to
                   block a load: a future dotseg may rename any of its keys.
=================  ============================================================================

Format 1 (dotseg 0.1, the shipped model among them) stored the whole config as the contract; it is
still read: its contract is taken from the config's ``model`` section and ``synthesis.size``, the
rest becomes provenance, and its ``config_hash`` guards the metadata as before.

Why not ``torch.save``: a PyTorch ``.pt``/``.pth`` file is a pickle, and unpickling can run any
code; safetensors is only a JSON header and raw tensor bytes. And why validate so much on load: the
seed lost days to a "checkpoint" that was an HTML page (``invalid load key, 'E'``), to a model
trained under a config other than the one it was served with, and to renamed state-dict keys.
Every such case here is a :class:`CheckpointError` with one line saying what the file is and what
was expected, raised before any model is built.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dotseg.config import Config, run_identity
from dotseg.configbase import ConfigError, Section, config_hash, describe_error, diff_keys, get_path
from dotseg.files import write_atomic
from dotseg.models.config import ModelConfig
from dotseg.normalize import NORMALIZATION
from dotseg.storage import StorageError, is_uri, local_copy, local_copy_path
from dotseg.synthesis.config import SynthesisConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "ModelContract",
    "Provenance",
    "CheckpointMeta",
    "LoadedCheckpoint",
    "save_checkpoint",
    "load_checkpoint",
    "build_from_checkpoint",
    "model_identity",
]

FORMAT: Literal["dotseg-checkpoint"] = "dotseg-checkpoint"
#: Version of the layout described above. Raise it when the meaning of a field or of a tensor name
#: changes, and keep reading the older versions.
FORMAT_VERSION = 2
#: A safetensors header is JSON describing the tensors; a longer one means the file is something else.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_SNIFF_BYTES = 4096


class CheckpointError(ValueError):
    """A file is not a usable dotseg checkpoint; the one-line message says what it is and what was expected."""


class ModelContract(Section):
    """What a :class:`~dotseg.inference.predictor.Predictor` needs to reproduce a model's predictions."""

    model: ModelConfig
    """The network the weights belong to."""
    normalization: str = NORMALIZATION
    """Version of the input mapping the model was trained with (:data:`dotseg.normalize.NORMALIZATION`)."""
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Decision threshold on the foreground probability."""
    input_size: int = Field(512, ge=32, le=4096)
    """Side (px) of the images it was trained on: predictions are best at this scale."""

    @classmethod
    def of(cls, cfg: Config, threshold: float | None = None) -> ModelContract:
        """The contract of a model trained under ``cfg`` (threshold: ``cfg.train.threshold`` unless given)."""
        return cls(
            model=cfg.model,
            threshold=cfg.train.threshold if threshold is None else threshold,
            input_size=cfg.synthesis.size,
        )


class Provenance(BaseModel):
    """Where a model came from. Lenient on purpose: unknown keys are kept, nothing here blocks a load."""

    model_config = ConfigDict(frozen=True, extra="allow")

    config: dict[str, Any] = {}
    """The resolved root config of the run, as written by the dotseg that trained it."""
    config_hash: str | None = None
    """``Config.hash`` of that config."""
    metrics: dict[str, Any] = {}
    """Validation metrics of this model, e.g. ``{"val_dice": 0.88}``."""
    created: str | None = None
    """ISO-8601 UTC time of writing."""
    dotseg_version: str | None = None
    """Version of the package that wrote it."""
    sweep: str | None = None
    """For a promoted sweep trial: the sweep's directory name."""
    trial: str | None = None
    """For a promoted sweep trial: the trial's name."""
    datasets: dict[str, str] = {}
    """For a run fine-tuned on users' labelled images (``data.labelled``): each dataset's path and
    content digest (:func:`dotseg.labelled.pairs_digest`)."""


class CheckpointMeta(BaseModel):
    """The decoded metadata of a checkpoint (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["dotseg-checkpoint"] = FORMAT
    format_version: int = FORMAT_VERSION
    contract: ModelContract
    run_id: str
    epoch: int = Field(ge=0)
    model_id: str
    provenance: Provenance = Provenance()


def model_identity(contract: ModelContract, run_id: str, epoch: int) -> str:
    """The model's identity: the same weights-defining settings give the same id wherever the run was stored."""
    return config_hash({"contract": contract.to_dict(), "run_id": run_id, "epoch": epoch})


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
        try:
            return Config.from_dict(self.meta.provenance.config)
        except ConfigError:
            return None

    @property
    def synthesis(self) -> SynthesisConfig:
        """The image distribution the model was trained on (defaults at its input size if unknown)."""
        return self.cfg.synthesis if self.cfg is not None else SynthesisConfig(size=self.contract.input_size)

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


# -- saving ---------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    cfg: Config,
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
    to a temporary file in the same directory and moved into place with ``os.replace``.

    Raises:
        ValueError: on a path not ending in ``.safetensors``, a threshold outside (0, 1), a model
            whose variant does not match ``cfg.model``, or metrics that are not JSON numbers.
    """
    import torch
    from safetensors.torch import save_file

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
    header = {k: json.dumps(v, sort_keys=True, allow_nan=False) for k, v in meta.model_dump(mode="json").items()}

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp_name, metadata=header)
        with open(tmp_name, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
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
    header, data_bytes = _read_header(path)
    meta = _decode_meta(path, header.pop("__metadata__", None))
    model_cfg = meta.contract.model
    if expect is not None:
        differ = diff_keys(expect, model_cfg, "model")
        if differ:
            details = ", ".join(
                f"{k}={get_path(model_cfg, k.partition('.')[2])!r} (expected {get_path(expect, k.partition('.')[2])!r})"
                for k in differ
            )
            raise CheckpointError(f"{path}: checkpoint holds another model than expected: {details}")

    shapes = {k: tuple(info["shape"]) for k, info in header.items()}
    problem = _state_dict_problem(shapes, _expected_shapes(model_cfg))
    if problem:
        raise CheckpointError(f"{path}: tensors do not fit {_describe_model(model_cfg)}: {problem}")

    size = path.stat().st_size
    if data_bytes > size:
        raise CheckpointError(
            f"{path}: truncated: the header describes {data_bytes} bytes but the file has "
            f"{size} (an interrupted download or copy?)"
        )
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device=str(map_location))
    except Exception as e:  # safetensors raises its own error type, OSError or RuntimeError
        raise CheckpointError(f"{path}: corrupt safetensors data: {_one_line(str(e))}") from None
    return LoadedCheckpoint(state_dict=tensors, meta=meta, path=path)


def read_meta(path: str | Path) -> CheckpointMeta:
    """A checkpoint's metadata (its model id, contract, provenance) from the header alone, without
    reading the tensors; errors as :func:`load_checkpoint`'s."""
    if is_uri(path):
        path = local_copy(str(path))
    path = Path(path)
    header, _ = _read_header(path)
    return _decode_meta(path, header.get("__metadata__"))


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
        fields = _from_format_1(path, fields)
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
        raise CheckpointError(f"{path}: its model contract is not valid for this dotseg: {_one_line(str(e))}") from None
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


def _from_format_1(path: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Format-1 metadata (the whole config, unversioned fields) in format-2 form."""
    missing = [
        k for k in ("config", "config_hash", "normalization", "threshold", "metrics", "epoch") if k not in fields
    ]
    if missing:
        raise CheckpointError(f"{path}: corrupt metadata: missing {', '.join(missing)}")
    config = fields["config"]
    if not isinstance(config, dict) or config_hash(config) != fields["config_hash"]:
        raise CheckpointError(
            f"{path}: its config does not match its config_hash {fields['config_hash']!r} "
            "(the metadata was edited or corrupted)"
        )
    synthesis = config.get("synthesis")
    contract = {
        "model": config.get("model"),
        "normalization": fields["normalization"],
        "threshold": fields["threshold"],
        **({"input_size": synthesis["size"]} if isinstance(synthesis, dict) and "size" in synthesis else {}),
    }
    run_id = run_identity(config)
    epoch = fields["epoch"]
    try:
        model_id = model_identity(ModelContract.from_dict(contract), run_id, epoch)
    except ConfigError:
        model_id = ""  # the contract is refused with its reason right after
    return {
        "contract": contract,
        "run_id": run_id,
        "epoch": epoch,
        "model_id": model_id,
        "provenance": {
            "config": config,
            "config_hash": fields["config_hash"],
            "metrics": fields["metrics"],
            "created": fields.get("created"),
            "dotseg_version": fields.get("dotseg_version"),
        },
    }


# -- what the file is --------------------------------------------------------------------------------


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header of ``path`` and the total file size it implies, or a CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file (expected a dotseg checkpoint, *.safetensors)")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a dotseg checkpoint (expected a *.safetensors file)")
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
            size = os.fstat(f.fileno()).st_size
            if _looks_like_safetensors(head):
                (n,) = struct.unpack("<Q", head[:8])
                if 8 + n > size:
                    raise CheckpointError(
                        f"{path}: truncated safetensors file: its header needs {8 + n} bytes, "
                        f"the file has {size} (an interrupted download or copy?)"
                    )
                f.seek(8)
                raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read: {e.strerror or e}") from None
    if not _looks_like_safetensors(head):
        raise CheckpointError(f"{path}: {_what_is_it(path, head, size)}")
    try:
        header = json.loads(raw)
        assert isinstance(header, dict)
        ends = [int(info["data_offsets"][1]) for k, info in header.items() if k != "__metadata__"]
        for k, info in header.items():
            if k != "__metadata__":
                assert isinstance(info["shape"], list)
    except Exception:
        raise CheckpointError(f"{path}: corrupt safetensors header (not the JSON tensor table it should be)") from None
    return header, 8 + n + max(ends, default=0)


def _looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length (sane) followed by the header's opening brace."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= _MAX_HEADER_BYTES


def _what_is_it(path: Path, head: bytes, size: int) -> str:
    """One phrase naming what a non-safetensors file is, and what was expected instead."""
    if size == 0:
        return "is empty (0 bytes), not a dotseg checkpoint (an interrupted download or copy?)"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        if _zip_is_torch(path):
            return _pickle_message("a torch.save zip archive")
        return "is a ZIP archive, not a dotseg checkpoint (expected a *.safetensors file)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return _pickle_message("a pickle, as legacy torch.save writes")
    text = _as_text(head)
    if text is not None:
        lower = text.lstrip("\ufeff \t\r\n").lower()
        if lower.startswith("<!doctype html") or "<html" in lower[:1024]:
            return (
                "is an HTML page, not a dotseg checkpoint — a download that returned a web page? "
                "(e.g. a hub URL without ?download=true)"
            )
        if lower.startswith("version https://git-lfs"):
            return (
                "is a Git LFS pointer, not the checkpoint itself — fetch the real file "
                "(git lfs pull) or download it directly"
            )
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        return f"is a text file (starts {first[:60]!r}), not a dotseg checkpoint (expected a *.safetensors file)"
    return (
        f"is not a safetensors file (starts with bytes {head[:8].hex(' ')}); "
        "expected a dotseg checkpoint (*.safetensors) — corrupt, or another format?"
    )


def _pickle_message(kind: str) -> str:
    return (
        f"is a PyTorch pickle ({kind}), which dotseg never loads because unpickling can run code; "
        "to convert a file you trust, load it yourself with torch.load(path, weights_only=True), "
        "put the state dict into build_model(cfg.model) and write it with "
        "dotseg.checkpoint.save_checkpoint"
    )


def _zip_is_torch(path: Path) -> bool:
    """True if the ZIP's directory lists a ``data.pkl`` (torch.save's layout); reads names only."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return path.suffix in (".pt", ".pth", ".bin", ".ckpt")


def _as_text(head: bytes) -> str | None:
    """``head`` decoded as UTF-8 if it looks like text (no NULs; a multibyte char cut by our read is fine)."""
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(head) == _SNIFF_BYTES and e.start >= len(head) - 3:  # we cut the file inside a character
            return head[: e.start].decode("utf-8")
        return None


# -- state dict vs model ---------------------------------------------------------------------------


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of the model ``cfg`` builds (on the meta device: no memory, no init)."""
    import torch

    from dotseg.models import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


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


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- training checkpoints ---------------------------------------------------------------------------

#: Files of a training checkpoint directory (what Ray Train stores for each reported epoch): the
#: model as a regular checkpoint, the optimizer/scheduler/scaler/RNG/loop state, and the history.
MODEL_FILE, STATE_FILE, HISTORY_FILE = "model.safetensors", "train_state.pt", "history.json"


def save_training_checkpoint(
    directory: str | Path,
    model: nn.Module,
    cfg: Config,
    *,
    metrics: Mapping[str, Any],
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    loop: Mapping[str, Any],
    origin: Mapping[str, Any] | None = None,
) -> Path:
    """Write everything a run needs to continue exactly where it is into ``directory``.

    ``loop`` is the loop's state in plain types (it is read back with ``weights_only=True``);
    ``origin`` names a sweep trial in the model's provenance (see :func:`save_checkpoint`).
    """
    import torch

    directory = Path(directory)
    save_checkpoint(
        directory / MODEL_FILE,
        model,
        cfg,
        threshold=cfg.train.threshold,
        epoch=epoch,
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        origin=origin,
    )
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "loop": dict(loop),
        },
        directory / STATE_FILE,
    )
    write_atomic(directory / HISTORY_FILE, json.dumps(list(loop.get("history", [])), indent=1))
    return directory


def load_training_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    *,
    expect: ModelConfig,
) -> dict[str, Any]:
    """Restore what :func:`save_training_checkpoint` wrote into the given objects; returns the loop state.

    The model must be ``expect`` (the run's model config), or :class:`CheckpointError` says how it differs.
    The state file is read with ``weights_only=True``: tensors and plain types, never arbitrary objects.
    """
    import torch

    directory = Path(directory)
    loaded = load_checkpoint(directory / MODEL_FILE, expect=expect)
    model.load_state_dict(loaded.state_dict)
    saved = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["torch_rng"])
    return dict(saved["loop"])
