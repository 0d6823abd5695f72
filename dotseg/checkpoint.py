"""The one checkpoint format of dotseg: a single ``.safetensors`` file that describes itself.

    save_checkpoint("runs/x/best.safetensors", model, cfg, threshold=0.5, metrics={"val_dice": 0.88}, epoch=12)
    model, ckpt = build_from_checkpoint("runs/x/best.safetensors")  # eval mode; ckpt.cfg, ckpt.threshold

The tensors are the model's ``state_dict`` (parameters and BatchNorm buffers, contiguous, on CPU).
The safetensors header metadata (``str -> str``) holds, each value JSON-encoded:

=================  ============================================================================
``format``         ``"dotseg-checkpoint"``
``format_version`` int, :data:`FORMAT_VERSION` when written; a newer one is refused
``config``         the resolved root config, ``to_dict(cfg)``
``config_hash``    ``config_hash(cfg)``; checked against ``config`` on load
``model_variant``  ``cfg.model.variant``
``normalization``  :data:`dotseg.normalize.NORMALIZATION`; another one is refused
``threshold``      decision threshold on the foreground probability, in (0, 1)
``metrics``        validation metrics of this model, e.g. ``{"val_dice": 0.88}``
``epoch``          epoch (1-based) after which it was saved
``created``        ISO-8601 UTC time of writing
``dotseg_version`` version of the package that wrote it
=================  ============================================================================

Why not ``torch.save``: a PyTorch ``.pt``/``.pth`` file is a pickle, and unpickling can run any
code; safetensors is only a JSON header and raw tensor bytes. And why validate so much on load: the
seed lost days to a "checkpoint" that was an HTML page (``invalid load key, 'E'``), to a model
trained under a config other than the one it was served with, and to renamed state-dict keys.
Every such case here is a :class:`CheckpointError` with one line saying what the file is and what
was expected, raised before any model is built.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotseg.config import Config, config_from_dict
from dotseg.configbase import ConfigError, config_hash, diff_keys, get_path, to_dict
from dotseg.models.config import ModelConfig
from dotseg.normalize import NORMALIZATION

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["FORMAT", "FORMAT_VERSION", "KEY_MIGRATIONS", "CheckpointError", "LoadedCheckpoint",
           "save_checkpoint", "load_checkpoint", "build_from_checkpoint", "migrate_keys"]

FORMAT = "dotseg-checkpoint"
#: Version of the layout described above. Raise it when the meaning of a field or of a tensor name
#: changes, and add a :data:`KEY_MIGRATIONS` entry for every rename.
FORMAT_VERSION = 1

#: State-dict renames, ``(format_version_below, old_prefix, new_prefix)``: a key starting with
#: ``old_prefix`` is renamed when the checkpoint's ``format_version`` is below the first value, or
#: when the file holds no key with ``new_prefix`` at all (weights named by older code). ``{i}`` in a
#: prefix stands for a list index and is carried over.
#:
#: The seed saved its gates as a list ``attention_gates.<i>.`` (and ``attn_gates.<i>.`` elsewhere);
#: our U-Net keeps gate ``i`` inside decoder stage ``i`` (deepest first), so both map to
#: ``decoder.<i>.gate.``. Version 1 is our first format, so these renames never apply by version,
#: only to files that lack the new names.
KEY_MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "attention_gates.{i}.", "decoder.{i}.gate."),
    (1, "attn_gates.{i}.", "decoder.{i}.gate."),
)

_META_KEYS = ("format", "format_version", "config", "config_hash", "model_variant", "normalization",
              "threshold", "metrics", "epoch", "created", "dotseg_version")
#: A safetensors header is JSON describing the tensors; a longer one means the file is something else.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_SNIFF_BYTES = 4096


class CheckpointError(ValueError):
    """A file is not a usable dotseg checkpoint; the one-line message says what it is and what was expected."""


@dataclass(frozen=True, slots=True)
class LoadedCheckpoint:
    state_dict: dict[str, torch.Tensor]
    """Tensors by (migrated) parameter name, on ``map_location``."""
    cfg: Config
    """The resolved config the model was trained with."""
    meta: dict[str, Any]
    """The decoded metadata (every field of the table in the module docstring)."""
    path: Path
    """The file it was read from."""

    @property
    def threshold(self) -> float:
        """Decision threshold on the foreground probability."""
        return float(self.meta["threshold"])

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.meta["metrics"])


# -- saving ---------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, model: nn.Module, cfg: Config, *, threshold: float,
                    metrics: Mapping[str, float], epoch: int) -> Path:
    """Write ``model``'s weights and ``cfg`` to ``path`` (``*.safetensors``) atomically.

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
    expected = _expected_shapes(cfg.model)
    problem = _state_dict_problem(state_shapes={k: tuple(v.shape) for k, v in state.items()}, expected=expected)
    if problem:
        raise ValueError(f"the model does not match cfg.model ({_describe_model(cfg.model)}): {problem}")
    # safetensors stores each tensor's bytes once and refuses views of shared memory: clone to own them.
    tensors = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in state.items()}

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "model_variant": cfg.model.variant,
        "normalization": NORMALIZATION,
        "threshold": float(threshold),
        "metrics": clean_metrics,
        "epoch": int(epoch),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dotseg_version": _dotseg_version(),
    }
    header = {k: json.dumps(v, sort_keys=True) for k, v in meta.items()}

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


def _json_number(value: Any, name: str) -> float | int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else number


def _dotseg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dotseg")
    except PackageNotFoundError:
        return "unknown"


# -- loading --------------------------------------------------------------------------------------


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    expect: ModelConfig | None = None) -> LoadedCheckpoint:
    """Read and validate a checkpoint; nothing in it is executed.

    Args:
        path: the ``.safetensors`` file.
        map_location: device the tensors are loaded onto.
        expect: if given, the checkpoint's model config must equal it (variant, widths, ...).

    Raises:
        CheckpointError: (a ``ValueError``) with one line, for a missing path, a directory, an HTML
            page or other text, a PyTorch pickle, a truncated or corrupt file, a safetensors file
            without dotseg metadata, a newer format, another normalization, an invalid config, a
            model other than ``expect``, or tensors that do not fit the model the config builds.
    """
    path = Path(path)
    header, data_bytes = _read_header(path)
    meta = _decode_meta(path, header.pop("__metadata__", None))

    try:
        cfg = config_from_dict(meta["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its stored config is not valid for this dotseg: "
                              f"{_one_line(str(e))}") from None
    if config_hash(meta["config"]) != meta["config_hash"]:
        raise CheckpointError(f"{path}: its config does not match its config_hash {meta['config_hash']!r} "
                              "(the metadata was edited or corrupted)")
    if meta["model_variant"] != cfg.model.variant:
        raise CheckpointError(f"{path}: model_variant {meta['model_variant']!r} disagrees with its config's "
                              f"model.variant {cfg.model.variant!r} (corrupt metadata)")
    if expect is not None:
        differ = diff_keys(expect, cfg.model, "model")
        if differ:
            details = ", ".join(f"{k}={get_path(cfg.model, k.partition('.')[2])!r} "
                                f"(expected {get_path(expect, k.partition('.')[2])!r})" for k in differ)
            raise CheckpointError(f"{path}: checkpoint holds another model than expected: {details}")

    version = meta["format_version"]
    renames = migrate_keys(list(header), version)
    shapes = {renames.get(k, k): tuple(info["shape"]) for k, info in header.items()}
    if len(shapes) != len(header):
        raise CheckpointError(f"{path}: renaming old parameter names gives duplicates (corrupt state dict)")
    problem = _state_dict_problem(shapes, _expected_shapes(cfg.model))
    if problem:
        raise CheckpointError(f"{path}: tensors do not fit {_describe_model(cfg.model)}: {problem}")

    size = path.stat().st_size
    if data_bytes > size:
        raise CheckpointError(f"{path}: truncated: the header describes {data_bytes} bytes but the file has "
                              f"{size} (an interrupted download or copy?)")
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device=str(map_location))
    except Exception as e:  # safetensors raises its own error type, OSError or RuntimeError
        raise CheckpointError(f"{path}: corrupt safetensors data: {_one_line(str(e))}") from None
    state = {renames.get(k, k): v for k, v in tensors.items()}
    return LoadedCheckpoint(state_dict=state, cfg=cfg, meta=meta, path=path)


def build_from_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                          expect: ModelConfig | None = None) -> tuple[nn.Module, LoadedCheckpoint]:
    """Load a checkpoint (see :func:`load_checkpoint`) and build its model with the weights, in eval mode."""
    from dotseg.models import build_model

    ckpt = load_checkpoint(path, map_location, expect=expect)
    model = build_model(ckpt.cfg.model)
    model.load_state_dict(ckpt.state_dict, strict=True)  # keys and shapes were checked already
    return model.to(map_location).eval(), ckpt


def migrate_keys(keys: list[str], format_version: int,
                 migrations: tuple[tuple[int, str, str], ...] = KEY_MIGRATIONS) -> dict[str, str]:
    """``{old_name: new_name}`` for the keys that :data:`KEY_MIGRATIONS` renames (the rest are absent)."""
    renames: dict[str, str] = {}
    for below, old, new in migrations:
        old_re, new_re = _prefix_regex(old), _prefix_regex(new)
        current = [renames.get(k, k) for k in keys]
        if format_version >= below and any(new_re.match(k) for k in current):
            continue
        for key in keys:
            name = renames.get(key, key)
            m = old_re.match(name)
            if m:
                prefix = new.replace("{i}", m.group("i")) if "{i}" in new else new
                renames[key] = prefix + name[m.end():]
    return renames


def _prefix_regex(prefix: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(prefix).replace(re.escape("{i}"), r"(?P<i>\d+)"))


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
                    raise CheckpointError(f"{path}: truncated safetensors file: its header needs {8 + n} bytes, "
                                          f"the file has {size} (an interrupted download or copy?)")
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
            return ("is an HTML page, not a dotseg checkpoint — a download that returned a web page? "
                    "(e.g. a hub URL without ?download=true)")
        if lower.startswith("version https://git-lfs"):
            return ("is a Git LFS pointer, not the checkpoint itself — fetch the real file "
                    "(git lfs pull) or download it directly")
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        return f"is a text file (starts {first[:60]!r}), not a dotseg checkpoint (expected a *.safetensors file)"
    return (f"is not a safetensors file (starts with bytes {head[:8].hex(' ')}); "
            "expected a dotseg checkpoint (*.safetensors) — corrupt, or another format?")


def _pickle_message(kind: str) -> str:
    return (f"is a PyTorch pickle ({kind}), which dotseg never loads because unpickling can run code; "
            "to convert a file you trust, load it yourself with torch.load(path, weights_only=True), "
            "put the state dict into build_model(cfg.model) and write it with "
            "dotseg.checkpoint.save_checkpoint")


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


def _decode_meta(path: Path, raw: Any) -> dict[str, Any]:
    """The metadata fields, JSON-decoded and type-checked; a newer format is refused first."""
    if not isinstance(raw, dict) or "format" not in raw:
        raise CheckpointError(f"{path}: is a safetensors file without dotseg metadata (plain weights from "
                              "another tool?); expected a checkpoint written by dotseg.checkpoint.save_checkpoint")
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except (TypeError, ValueError):
            meta[key] = value  # only dotseg's own fields must be JSON; checked below
    if meta["format"] != FORMAT:
        raise CheckpointError(f"{path}: metadata format is {meta['format']!r}, expected {FORMAT!r} "
                              "(a safetensors file from another tool?)")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: corrupt metadata: format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer dotseg (format {version} > {FORMAT_VERSION}); "
                              "upgrade dotseg")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: corrupt metadata: missing {', '.join(missing)}")
    types = {"config": dict, "config_hash": str, "model_variant": str, "normalization": str,
             "threshold": (int, float), "metrics": dict, "epoch": int}
    for key, tp in types.items():
        if isinstance(meta[key], bool) or not isinstance(meta[key], tp):
            raise CheckpointError(f"{path}: corrupt metadata: {key} is {meta[key]!r}")
    if meta["normalization"] != NORMALIZATION:
        raise CheckpointError(f"{path}: model was trained with input normalization {meta['normalization']!r}, "
                              f"this dotseg uses {NORMALIZATION!r}; its predictions would be meaningless")
    if not (0.0 < meta["threshold"] < 1.0) or math.isnan(meta["threshold"]):
        raise CheckpointError(f"{path}: corrupt metadata: threshold {meta['threshold']!r} is not in (0, 1)")
    return meta


# -- state dict vs model ---------------------------------------------------------------------------


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of the model ``cfg`` builds (on the meta device: no memory, no init)."""
    import torch

    from dotseg.models import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _state_dict_problem(state_shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                        show: int = 3) -> str:
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
