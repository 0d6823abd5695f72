"""The checkpoint format: round trip, and one clear line for every file that is not a usable checkpoint.

The bad files are the seed's real failures (an HTML page saved as the checkpoint, renamed attention
gate keys, a config other than the one trained with) plus the other ways a file goes wrong. A tiny
model (base 4, depth 3) keeps every case to milliseconds.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dotseg.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    build_from_checkpoint,
    load_checkpoint,
    model_identity,
    save_checkpoint,
)
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


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module, Config]:
    cfg = _cfg()
    model = _model(cfg)
    path = save_checkpoint(
        tmp_path / "best.safetensors", model, cfg, threshold=0.4, metrics={"val_dice": 0.75, "clean_dice": 0.9}, epoch=7
    )
    return path, model, cfg


def _rewrite(
    src: Path,
    dest: Path,
    *,
    tensors: dict | None = None,
    meta: dict | None = None,
    rename: tuple[str, str] | None = None,
) -> Path:
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
    assert ckpt.epoch == 7
    assert ckpt.meta.format == "dotseg-checkpoint"
    assert ckpt.meta.format_version == FORMAT_VERSION == 2
    assert ckpt.contract.model == cfg.model and ckpt.contract.input_size == 64
    assert ckpt.contract.normalization == NORMALIZATION
    assert ckpt.meta.run_id == cfg.run_id
    assert ckpt.model_id == model_identity(ckpt.contract, cfg.run_id, 7)
    assert ckpt.meta.provenance.config_hash == config_hash(cfg)
    assert ckpt.meta.provenance.created.endswith("+00:00")
    assert ckpt.path == path
    assert set(ckpt.state_dict) == set(model.state_dict())  # BN buffers included
    assert any(k.endswith("num_batches_tracked") for k in ckpt.state_dict)


def test_metadata_is_plain_json_readable_without_dotseg(saved: tuple[Path, torch.nn.Module, Config]) -> None:
    path, _, cfg = saved
    with safe_open(str(path), "pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
        tensors_on_cpu = all(f.get_tensor(k).is_contiguous() for k in f.keys())  # noqa: SIM118 - safe_open has no __iter__
    assert meta["provenance"]["config"] == to_dict(cfg)
    assert meta["contract"]["model"] == to_dict(cfg.model)
    assert tensors_on_cpu


def test_save_is_atomic_and_leaves_no_temp_files(
    saved: tuple[Path, torch.nn.Module, Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, model, cfg = saved
    before = path.read_bytes()

    def disk_full(fd: int) -> None:  # the bytes are in the temporary file; flushing them fails
        raise OSError("disk full")

    import dotseg.files

    monkeypatch.setattr(dotseg.files.os, "fsync", disk_full)
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
        save_checkpoint(
            tmp_path / "b.safetensors", model, _cfg(**{"model.base_channels": 8}), threshold=0.5, metrics={}, epoch=1
        )


# -- files that are not checkpoints --------------------------------------------------------------------


HTML = b"<!DOCTYPE html>\n<html><head><title>Hugging Face</title></head><body>Redirecting</body></html>\n"


@pytest.mark.parametrize(
    "name, content, expected",
    [
        (
            "best.safetensors",
            HTML,
            "is an HTML page, not a dotseg checkpoint — a download that returned a web "
            "page? (e.g. a hub URL without ?download=true)",
        ),
        ("best.safetensors", b"  <html>\n<body>403</body></html>", "is an HTML page"),
        (
            "best.safetensors",
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 379000000\n",
            "Git LFS pointer",
        ),
        ("best.safetensors", b'{"error": "Entry not found"}', 'is a text file (starts \'{"error"'),
        ("best.safetensors", b"", "is empty (0 bytes)"),
        ("best.safetensors", bytes(range(256)) * 4, "is not a safetensors file (starts with bytes 00 01 02"),
        ("best.safetensors", b"\x80", "is not a safetensors file (starts with bytes 80)"),
        ("best.safetensors", "ok ünïcödé ".encode() * 400, "is a text file (starts 'ok ünïcödé"),
        (
            "best.safetensors",
            (40).to_bytes(8, "little") + b"{ this is not json" + b" " * 40,
            "corrupt safetensors header",
        ),
    ],
)
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
    saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path
) -> None:
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
    assert f"written by a newer dotseg (format {FORMAT_VERSION + 1} > {FORMAT_VERSION}); upgrade dotseg" in _error(
        newer
    )


def test_unknown_provenance_never_blocks_a_load(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    """A future dotseg renames a serve field and adds a section: the model still loads and predicts."""
    path, model, _ = saved
    with safe_open(str(path), "pt") as f:
        provenance = json.loads(f.metadata()["provenance"])
    provenance["config"]["serve"]["port_number"] = provenance["config"]["serve"].pop("port")
    provenance["config"]["tune"]["search"] = {"kind": "bohb"}
    provenance["config"]["train"]["lr"] = -1.0  # a range this dotseg would refuse
    provenance["future_field"] = [1, 2]
    newer = _rewrite(path, tmp_path / "newer.safetensors", meta={"provenance": provenance})
    restored, ckpt = build_from_checkpoint(newer)
    assert ckpt.cfg is None  # not readable as this dotseg's config...
    assert ckpt.meta.provenance.config["serve"]["port_number"] == 8000  # ...but kept and shown
    assert ckpt.synthesis.size == 64  # the contract still knows the input size
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))
    garbage = _rewrite(path, tmp_path / "garbage.safetensors", meta={"provenance": "not a mapping"})
    assert load_checkpoint(garbage).meta.provenance.config == {}


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("base_channels", 0, "model.base_channels: must be in [4, 256], got 0"),
        ("variant", "resnet", "model.variant: unknown variant 'resnet'"),
        ("width", 3, "model.width: unknown key"),
    ],
)
def test_invalid_model_contract_is_refused(
    saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path, key: str, value: object, expected: str
) -> None:
    path = saved[0]
    contract = load_checkpoint(path).contract.to_dict()
    contract["model"][key] = value
    bad = _rewrite(path, tmp_path / "bad.safetensors", meta={"contract": contract})
    message = _error(bad)
    assert f"its model contract is not valid for this dotseg: {expected}" in message


def test_edited_contract_fails_the_identity_check(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    contract = load_checkpoint(saved[0]).contract.to_dict()
    contract["input_size"] = 128  # config drift: the seed's failure 2
    edited = _rewrite(saved[0], tmp_path / "edited.safetensors", meta={"contract": contract})
    assert "do not match its model_id" in _error(edited)
    edited = _rewrite(saved[0], tmp_path / "epoch.safetensors", meta={"epoch": 8})
    assert "do not match its model_id" in _error(edited)


def test_other_normalization_is_refused(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    contract = load_checkpoint(saved[0]).contract.to_dict()
    contract["normalization"] = "minmax-v0"
    message = _error(_rewrite(saved[0], tmp_path / "norm.safetensors", meta={"contract": contract}))
    assert "'minmax-v0'" in message and NORMALIZATION in message


def test_missing_metadata_field(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    partial = _rewrite(saved[0], tmp_path / "partial.safetensors", meta={"model_id": None})
    assert "corrupt metadata: missing model_id" in _error(partial)
    bad = _rewrite(saved[0], tmp_path / "bad.safetensors", meta={"epoch": "seven"})
    assert "corrupt metadata: epoch" in _error(bad)


# -- format 1 (dotseg 0.1 and the shipped model) -----------------------------------------------------


def _format_1(path: Path, dest: Path, config: dict, **fields: object) -> Path:
    """The checkpoint ``path`` rewritten in format 1: the whole config is the metadata."""
    ckpt = load_checkpoint(path)
    header = {
        "format": "dotseg-checkpoint",
        "format_version": 1,
        "config": config,
        "config_hash": config_hash(config),
        "model_variant": config["model"]["variant"],
        "normalization": NORMALIZATION,
        "threshold": 0.4,
        "metrics": {"val_dice": 0.75},
        "epoch": 7,
        "created": "2026-01-01T00:00:00+00:00",
        "dotseg_version": "0.1.0",
        **fields,
    }
    save_file(load_file(str(path)), str(dest), metadata={k: json.dumps(v) for k, v in header.items()})
    assert ckpt.epoch == 7
    return dest


def test_format_1_loads_and_keeps_its_identity(saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path) -> None:
    path, model, cfg = saved
    old_style = to_dict(cfg)
    old_style.pop("baseline")  # dotseg 0.1 had no baseline section
    old_style["serve"]["renamed_later"] = old_style["serve"].pop("max_pixels")
    v1 = _format_1(path, tmp_path / "v1.safetensors", old_style)
    restored, ckpt = build_from_checkpoint(v1)
    assert ckpt.meta.format_version == 1 and ckpt.threshold == 0.4 and ckpt.epoch == 7
    assert ckpt.contract == load_checkpoint(path).contract
    assert ckpt.meta.run_id == cfg.run_id  # the serve section is not part of the run identity
    assert ckpt.cfg is None and ckpt.meta.provenance.config["serve"]["renamed_later"] > 0
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))

    edited = dict(old_style, synthesis={**old_style["synthesis"], "size": 128})
    bad = _format_1(path, tmp_path / "edited.safetensors", edited, config_hash=config_hash(old_style))
    assert "does not match its config_hash" in _error(bad)
    wrong = dict(old_style, model={**old_style["model"], "depth": 9})
    bad = _format_1(path, tmp_path / "wrong.safetensors", wrong)
    assert "its model contract is not valid for this dotseg: model.depth: must be in [2, 7], got 9" in _error(bad)


def test_expected_model_config_names_differing_keys(saved: tuple[Path, torch.nn.Module, Config]) -> None:
    path, _, cfg = saved
    assert load_checkpoint(path, expect=cfg.model).contract.model == cfg.model
    other = cfg.model.replace(variant="unet", base_channels=8)
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


def test_seed_gate_names_are_refused_naming_the_keys(
    saved: tuple[Path, torch.nn.Module, Config], tmp_path: Path
) -> None:
    """The seed's failure 7: gates saved as ``attention_gates.<i>.``; ours live at ``decoder.<i>.gate.``.
    Never renamed silently: the message lists what is missing and what is unexpected."""
    path = saved[0]
    old = {}
    for key, value in load_file(str(path)).items():
        if ".gate." in key:
            stage, rest = key.removeprefix("decoder.").split(".gate.")
            key = f"attention_gates.{stage}.{rest}"
        old[key] = value
    message = _error(_rewrite(path, tmp_path / "legacy.safetensors", tensors=old))
    assert "missing decoder.0.gate." in message and "unexpected attention_gates.0." in message


def test_identity_does_not_depend_on_where_the_run_was_stored(tmp_path: Path) -> None:
    """Two runs identical except train.storage_path (and logging, serving) have one run and model identity."""
    a = _cfg(**{"train.storage_path": "/runs/a"})
    b = _cfg(**{"train.storage_path": "/mnt/nfs/b", "train.wandb.project": "other", "serve.port": 9000})
    assert a.hash != b.hash and a.run_id == b.run_id
    model = _model(a)
    pa = load_checkpoint(save_checkpoint(tmp_path / "a.safetensors", model, a, threshold=0.5, metrics={}, epoch=3))
    pb = load_checkpoint(save_checkpoint(tmp_path / "b.safetensors", model, b, threshold=0.5, metrics={}, epoch=3))
    assert pa.meta.run_id == pb.meta.run_id and pa.model_id == pb.model_id
    # What shapes the weights, or which epoch, does change it.
    c = _cfg(**{"train.lr": 3e-4})
    pc = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", model, c, threshold=0.5, metrics={}, epoch=3))
    pd = load_checkpoint(save_checkpoint(tmp_path / "d.safetensors", model, a, threshold=0.5, metrics={}, epoch=4))
    assert len({pa.model_id, pc.model_id, pd.model_id}) == 3


def test_a_file_is_read_once_until_it_is_replaced(saved: tuple[Path, torch.nn.Module, Config]) -> None:
    """The driver checks a checkpoint, describes it and loads it: one header read, not one per step;
    a file replaced under the same name (a re-promotion) is read anew, never served from the cache."""
    from dotseg.checkpoint import read_meta
    from dotseg.checkpoint.sniff import _read_header

    path, model, cfg = saved
    _read_header.cache_clear()
    first = read_meta(path)
    read_meta(path, expect=cfg.model)
    assert load_checkpoint(path).model_id == first.model_id
    assert _read_header.cache_info().misses == 1
    save_checkpoint(path, model, cfg, threshold=0.4, metrics={}, epoch=9)  # os.replace: a new file
    assert read_meta(path).model_id != first.model_id and read_meta(path).epoch == 9
    assert _read_header.cache_info().misses == 2
    # A check that fails says so every time (errors are not cached as results).
    path.write_bytes(path.read_bytes()[:100])
    for _ in range(2):
        with pytest.raises(CheckpointError, match="truncated"):
            read_meta(path)
