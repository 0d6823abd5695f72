"""Weights & Biases logging for a training run: rank 0 only, offline unless told otherwise.

Ray Train V2 runs the loop without the V1 session, so ``setup_wandb(rank_zero_only=True)``
would open a run on every rank; the rank check is ours. The run id is the run directory's name,
so a resumed run (same directory) continues the same W&B run (``resume="allow"``); offline, each
attempt writes its own ``offline-run-*-<id>`` folder and ``wandb sync`` merges them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dotseg.config import Config, to_dict


def start_run(cfg: Config, run_dir: Path, run_id: str, rank: int) -> Any | None:
    """The W&B run on rank 0 (None on other ranks or with ``train.wandb.mode=disabled``)."""
    wcfg = cfg.train.wandb
    if rank != 0 or wcfg.mode == "disabled":
        return None
    mode = os.environ.get("WANDB_MODE", wcfg.mode)
    if mode == "online" and not _has_credentials():
        import logging

        logging.getLogger(__name__).info("W&B: online mode requested but no API key (WANDB_API_KEY or "
                                         "`wandb login`); logging offline instead (upload later with `wandb sync`)")
        mode = "offline"
    import wandb

    wandb_dir = run_dir / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=wcfg.project, group=wcfg.group, name=wcfg.name or run_dir.name, id=run_id,
        resume="allow", dir=str(run_dir), mode=mode,
        config={**to_dict(cfg), "config_hash": cfg.hash},
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
    )


def _has_credentials() -> bool:
    """An API key in the environment or from ``wandb login`` (stored in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text() or bool(os.environ.get("WANDB_BASE_URL"))
    except OSError:
        return bool(os.environ.get("WANDB_BASE_URL"))


def log_epoch(run: Any | None, epoch: int, metrics: dict[str, Any],
              panels: list[tuple[np.ndarray, str]] | None = None) -> None:
    """Per-epoch scalars (x-axis: epoch) and prediction overlays (image | truth | prediction)."""
    if run is None:
        return
    import wandb

    data = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    if panels:
        data["predictions"] = [wandb.Image(p, caption=c) for p, c in panels]
    run.log(data, step=epoch)


def finish(run: Any | None) -> None:
    if run is not None:
        run.finish()
