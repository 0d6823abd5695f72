"""Training checkpoints: the directory Ray Train stores for each reported epoch, with everything a
run needs to continue exactly where it was (the model as a regular checkpoint, the optimizer,
scheduler, scaler, RNG and loop state, and the history)."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotseg.checkpoint.meta import RunConfig
from dotseg.checkpoint.store import load_checkpoint, save_checkpoint
from dotseg.files import write_atomic
from dotseg.models.config import ModelConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Files of a training checkpoint directory (what Ray Train stores for each reported epoch): the
#: model as a regular checkpoint, the optimizer/scheduler/scaler/RNG/loop state, and the history.
MODEL_FILE, STATE_FILE, HISTORY_FILE = "model.safetensors", "train_state.pt", "history.json"


def save_training_checkpoint(
    directory: str | Path,
    model: nn.Module,
    cfg: RunConfig,
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
    state = io.BytesIO()
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "loop": dict(loop),
        },
        state,
    )
    write_atomic(directory / STATE_FILE, state.getvalue())
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
