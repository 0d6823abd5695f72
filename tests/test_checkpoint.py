"""The checkpoint format: round trip, and one clear line for every file that is not a usable checkpoint.

The bad files are the seed's real failures (an HTML page saved as the checkpoint, renamed attention
gate keys, a config other than the one trained with) plus the other ways a file goes wrong. A tiny
model (base 4, depth 3) keeps every case to milliseconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dotseg import checkpoint as ckpt_mod
from dotseg.checkpoint import (FORMAT_VERSION, CheckpointError, build_from_checkpoint, load_checkpoint,
                               migrate_keys, save_checkpoint)
from dotseg.config import Config
from dotseg.configbase import config_hash, to_dict
from dotseg.models import build_model
from dotseg.normalize import NORMALIZATION


def _cfg(**overrides: object) -> Config:
    base = {"model.base_channels": 4, "model.depth": 3, "synthesis.size": 64}
    return Config().replace(**{**base, **overrides})


def _model(cfg: Config, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    # Non-default BatchNorm statistics, so a checkpoint without its buffers would give other outputs.
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.normal_()
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module, Config]:
    cfg = _cfg()
    model = _model(cfg)
    path = save_checkpoint(tmp_path / "best.safetensors", model, cfg, threshold=0.4,
                           metrics={"val_dice": 0.75, "clean_dice": 0.9}, epoch=7)
    return path, model, cfg


def _rewrite(src: Path, dest: Path, *, tensors: dict | None = None, meta: dict | None = None,
             rename: tuple[str, str] | None = None) -> Path:
    """A copy of the checkpoint ``src`` with tensors and/or (JSON-encoded) metadata fields replaced."""
    state = load_file(str(src)) if tensors is None else tensors
    if rename is not None:
        state = {k.replace(*rename): v for k, v in state.items()}
    with safe_open(str(src), "pt") as f:
        header = dict(f.metadata())
    for key, value in (meta or {}).items():
        if value is None:
            header.pop(key, None)
        else:
            header[key] = json.dumps(value)
    save_file(state, str(dest), metadata=header)
    return dest


def _error(path: Path, **kwargs: object) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    assert isinstance(info.value, ValueError)
    return message


# -- round trip ------------------------------------------------------------------------------------


def test_round_trip_gives_identical_outputs(saved: tuple[Path, torch.nn.Module, Config]) -> None:
    path, model, cfg = saved
    restored, ckpt = build_from_checkpoint(path)
    assert not restored.training
    x = torch.randn(2, 1, 37, 53, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))

    assert ckpt.cfg == cfg
    assert ckpt.threshold == 0.4
    assert ckpt.metrics == {"val_dice": 0.75, "clean_dice": 0.9}
    assert ckpt.meta["epoch"] == 7
    assert ckpt.meta["format"] == "dotseg-checkpoint"
    assert ckpt.meta["format_version"] == FORMAT_VERSION
    assert ckpt.meta["config_hash"] == config_hash(cfg)
    assert ckpt.meta["model_variant"] == "attention_unet"
    assert ckpt.meta["normalization"] == NORMALIZATION
    assert ckpt.meta["created"].endswith("+00:00")
    assert ckpt.path == path
    assert set(ckpt.state_dict) == set(model.state_dict())  # BN buffers included
    assert any(k.endswith("num_batches_tracked") for k in ckpt.state_dict)


def test_metadata_is_plain_json_readable_without_dotseg(saved: tuple[Path, torch.nn.Module, Config]) -> None:
    path, _, cfg = saved
    with safe_open(str(path), "pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
        tensors_on_cpu = all(f.get_tensor(k).is_contiguous() for k in f.keys())
    assert meta["config"] == to_dict(cfg)
    assert tensors_on_cpu


def test_save_is_atomic_and_leaves_no_temp_files(saved: tuple[Path, torch.nn.Module, Config],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path, model, cfg = saved
    before = path.read_bytes()

    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, cfg, threshold=0.5, metrics={}, epoch=8)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


class _CompiledLike(torch.nn.Module):
    """Holds the model as ``_orig_mod``, as ``torch.compile``'s wrapper does (without importing dynamo,
    which costs seconds), so its names carry the ``_orig_mod.`` prefix."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self._orig_mod = model


def test_save_unwraps_data_parallel_and_compile(tmp_path: Path) -> None:
    cfg = _cfg()
    model = _model(cfg)
    plain = set(model.state_dict())
    assert all(k.startswith("_orig_mod.") for k in _CompiledLike(model).state_dict())
    for wrapped in (torch.nn.DataParallel(model), _CompiledLike(model), torch.nn.DataParallel(_CompiledLike(model))):
        path = save_checkpoint(tmp_path / "w.safetensors", wrapped, cfg, threshold=0.5, metrics={}, epoch=1)
        assert set(load_checkpoint(path).state_dict) == plain


def test_save_rejects_bad_arguments(tmp_path: Path) -> None:
    cfg = _cfg()
    model = _model(cfg)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_checkpoint(tmp_path / "best.pth", model, cfg, threshold=0.5, metrics={}, epoch=1)
    with pytest.raises(ValueError, match="threshold"):
        save_checkpoint(tmp_path / "b.safetensors", model, cfg, threshold=1.5, metrics={}, epoch=1)
    with pytest.raises(ValueError, match=r"does not match cfg\.model.*shape mismatch"):
        save_checkpoint(tmp_path / "b.safetensors", model, _cfg(**{"model.base_channels": 8}),
                        threshold=0.5, metrics={}, epoch=1)


# -- files that are not checkpoints --------------------------------------------------------------------


HTML = b"<!DOCTYPE html>\n<html><head><title>Hugging Face</title></head><body>Redirecting</body></html>\n"


@pytest.mark.parametrize("name, content, expected", [
    ("best.safetensors", HTML, "is an HTML page, not a dotseg checkpoint — a download that returned a web "
                               "page? (e.g. a hub URL without ?download=true)"),
    ("best.safetensors", b"  <html>\n<body>403</body></html>", "is an HTML page"),
    ("best.safetensors", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 379000000\n",
     "Git LFS pointer"),
    ("best.safetensors", b'{"error": "Entry not found"}', "is a text file (starts '{\"error\""),
    ("best.safetensors", b"", "is empty (0 bytes)"),
    ("best.safetensors", bytes(range(256)) * 4, "is not a safetensors file (starts with bytes 00 01 02"),
    ("best.safetensors", b"\x80", "is not a safetensors file (starts with bytes 80)"),
    ("best.safetensors", "ok ünïcödé ".encode() * 400, "is a text file (starts 'ok ünïcödé"),
    ("best.safetensors", (40).to_bytes(8, "little") + b"{ this is not json" + b" " * 40,
     "corrupt safetensors header"),
])
def test_non_checkpoint_files(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    message = _error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "nope.safetensors")
    assert "is a directory, not a dotseg checkpoint" in _error(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path, keep: float) -> None:
    path = saved[0]
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: int(len(data) * keep)])
    assert "truncated" in _error(cut)


def test_truncated_inside_the_header(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(saved[0].read_bytes()[:200])
    assert "truncated safetensors file: its header needs" in _error(cut)


def test_safetensors_without_dotseg_metadata(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file(load_file(str(saved[0])), str(plain))
    assert "is a safetensors file without dotseg metadata" in _error(plain)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "pt"})
    assert "metadata format is 'pt', expected 'dotseg-checkpoint'" in _error(other)


# -- pickles are never unpickled ---------------------------------------------------------------------


class _MkdirOnUnpickle:
    """A pickle payload that creates a directory when unpickled: proof that unpickling ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.marker,))


def _torch_style_zip(path: Path, payload: bytes) -> Path:
    """The layout torch.save writes: ``<name>/data.pkl`` in a ZIP archive, plus version and data files."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_pickle_is_refused_without_unpickling(tmp_path: Path, layout: str) -> None:
    # The payload is live: unpickling it does create its marker.
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(_MkdirOnUnpickle(canary)))
    assert canary.exists()

    marker = tmp_path / "pwned"
    payload = pickle.dumps(_MkdirOnUnpickle(marker), protocol=2)
    path = tmp_path / "best.pth"
    if layout == "zip":
        _torch_style_zip(path, payload)
    else:
        path.write_bytes(payload)
    message = _error(path)
    assert not marker.exists(), "load_checkpoint unpickled the file"
    assert "is a PyTorch pickle" in message
    assert "unpickling can run code" in message
    assert "torch.load(path, weights_only=True)" in message and "save_checkpoint" in message


def test_real_torch_save_is_refused_and_the_suggested_conversion_works(
        saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    _, model, cfg = saved
    for legacy in (False, True):
        pth = tmp_path / f"model{int(legacy)}.pt"
        torch.save(model.state_dict(), pth, _use_new_zipfile_serialization=not legacy)
        assert "is a PyTorch pickle" in _error(pth)

    # What the message tells the user to do, for a file they trust.
    fresh = build_model(cfg.model)
    fresh.load_state_dict(torch.load(tmp_path / "model0.pt", weights_only=True))
    converted = save_checkpoint(tmp_path / "converted.safetensors", fresh, cfg, threshold=0.5, metrics={}, epoch=0)
    restored, _ = build_from_checkpoint(converted)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))


def test_a_zip_that_is_not_torch(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert "is a ZIP archive, not a dotseg checkpoint" in _error(path)


# -- metadata and config ---------------------------------------------------------------------------


def test_newer_format_version_is_refused(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    newer = _rewrite(saved[0], tmp_path / "newer.safetensors", meta={"format_version": FORMAT_VERSION + 1})
    assert (f"written by a newer dotseg (format {FORMAT_VERSION + 1} > {FORMAT_VERSION}); upgrade dotseg"
            in _error(newer))


def test_invalid_stored_config_names_the_key(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    path, _, cfg = saved
    for key, value in (("lr", -1.0), ("lr_typo", 0.1)):
        data = to_dict(cfg)
        data["train"][key] = value
        bad = _rewrite(path, tmp_path / "bad.safetensors", meta={"config": data, "config_hash": config_hash(data)})
        message = _error(bad)
        assert "stored config is not valid" in message and f"train.{key}" in message


def test_edited_config_fails_the_hash_check(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    data = to_dict(saved[2])
    data["synthesis"]["size"] = 128  # config drift: the seed's failure 2
    edited = _rewrite(saved[0], tmp_path / "edited.safetensors", meta={"config": data})
    assert "does not match its config_hash" in _error(edited)


def test_other_normalization_is_refused(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    other = _rewrite(saved[0], tmp_path / "norm.safetensors", meta={"normalization": "minmax-v0"})
    message = _error(other)
    assert "'minmax-v0'" in message and NORMALIZATION in message


def test_missing_metadata_field(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    partial = _rewrite(saved[0], tmp_path / "partial.safetensors", meta={"threshold": None})
    assert "corrupt metadata: missing threshold" in _error(partial)


def test_expected_model_config_names_differing_keys(saved: tuple[Path, torch.nn.Module, Config]) -> None:
    path, _, cfg = saved
    assert load_checkpoint(path, expect=cfg.model).cfg.model == cfg.model
    other = dataclasses.replace(cfg.model, variant="unet", base_channels=8)
    message = _error(path, expect=other)
    assert "another model than expected" in message
    assert "model.variant='attention_unet' (expected 'unet')" in message
    assert "model.base_channels=4 (expected 8)" in message
    assert "model.depth" not in message


# -- state dict keys -------------------------------------------------------------------------------


def test_missing_unexpected_and_misshapen_tensors(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    path = saved[0]
    state = load_file(str(path))

    missing = dict(state)
    del missing["head.weight"]
    message = _error(_rewrite(path, tmp_path / "m.safetensors", tensors=missing))
    assert "tensors do not fit model 'attention_unet' (base_channels=4, depth=3): missing head.weight" in message

    extra = {**state, "extra.weight": torch.zeros(3), "extra2.bias": torch.zeros(1)}
    assert "unexpected extra.weight, extra2.bias" in _error(_rewrite(path, tmp_path / "u.safetensors", tensors=extra))

    misshapen = {**state, "head.weight": torch.zeros(1, 8, 1, 1)}
    message = _error(_rewrite(path, tmp_path / "s.safetensors", tensors=misshapen))
    assert "shape mismatch head.weight (1, 8, 1, 1) (model: (1, 4, 1, 1))" in message

    renamed = {k.replace("encoder.", "enc."): v for k, v in state.items()}
    message = _error(_rewrite(path, tmp_path / "r.safetensors", tensors=renamed))
    assert "missing encoder." in message and "(+" in message and "more)" in message


@pytest.mark.parametrize("old_prefix", ["attention_gates.", "attn_gates."])
def test_seed_gate_names_are_migrated(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path,
                                      old_prefix: str) -> None:
    """The seed's failure 7: gates saved as ``attention_gates.<i>.``; ours live at ``decoder.<i>.gate.``."""
    path, model, _ = saved
    state = load_file(str(path))
    old = {}
    for key, value in state.items():
        if ".gate." in key:
            stage, rest = key.removeprefix("decoder.").split(".gate.")
            key = f"{old_prefix}{stage}.{rest}"
        old[key] = value
    assert any(k.startswith(old_prefix) for k in old) and not any(".gate." in k for k in old)
    legacy = _rewrite(path, tmp_path / "legacy.safetensors", tensors=old)

    restored, ckpt = build_from_checkpoint(legacy)
    assert set(ckpt.state_dict) == set(state)
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))


def test_migration_table_applies_by_version_or_by_missing_new_keys() -> None:
    table = ((3, "enc.", "encoder."), (1, "gates.{i}.", "decoder.{i}.gate."))
    keys = ["enc.0.w", "encoder.1.w", "gates.0.psi.w", "gates.12.w_x.0.w"]
    # Format 2 < 3: renamed even though new names are present; the gates lack their new names.
    assert migrate_keys(keys, 2, table) == {"enc.0.w": "encoder.0.w", "gates.0.psi.w": "decoder.0.gate.psi.w",
                                           "gates.12.w_x.0.w": "decoder.12.gate.w_x.0.w"}
    # Format 3 with the new names present: already migrated, nothing to do.
    assert migrate_keys(["enc.0.w", "encoder.1.w"], 3, table) == {}
    # Format 3 without any new name: old-style names, renamed.
    assert migrate_keys(["enc.0.w"], 3, table) == {"enc.0.w": "encoder.0.w"}


def test_default_migrations_cover_the_seed_names() -> None:
    old = {old for _, old, _ in ckpt_mod.KEY_MIGRATIONS}
    assert {"attention_gates.{i}.", "attn_gates.{i}."} <= old
    assert all(new == "decoder.{i}.gate." for _, o, new in ckpt_mod.KEY_MIGRATIONS if o in old)
