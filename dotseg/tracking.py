"""Weights & Biases, in one place: offline unless told otherwise, one run per training run or evaluation.

Every run goes through :func:`_init`, so the rules are written once:

* the mode comes from the config (``train.wandb.mode``: ``offline`` by default, runs land on disk and
  ``wandb sync`` uploads them later), or from ``WANDB_MODE`` when the user sets it;
* ``online`` without credentials (``WANDB_API_KEY`` or ``wandb login``) logs offline instead, with a
  one-line notice, rather than hanging on a login prompt inside a Ray worker;
* W&B's own console output and system metrics are off: dotseg prints what matters.

Training: Ray Train V2 runs the loop without the V1 session, so ``setup_wandb(rank_zero_only=True)``
would open a run on every rank; the loop calls :func:`start_training_run` on rank 0 only. The run
id is the run directory's name, so a resumed run (same directory) continues the same W&B run
(``resume="allow"``); offline, each attempt writes its own ``offline-run-*-<id>`` folder and
``wandb sync`` merges them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dotseg.config import Config
from dotseg.training.config import WandbConfig

log = logging.getLogger(__name__)


def _has_credentials() -> bool:
    """An API key in the environment or from ``wandb login`` (stored in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_BASE_URL"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def resolve_mode(configured: str) -> Literal["online", "offline", "disabled"]:
    """The mode a run uses: ``WANDB_MODE`` if set, else the configured one; online without credentials -> offline."""
    mode = os.environ.get("WANDB_MODE", configured)
    if mode == "online" and not _has_credentials():
        log.info(
            "W&B: online mode requested but no API key (WANDB_API_KEY or `wandb login`); "
            "logging offline instead (upload later with `wandb sync`)"
        )
        mode = "offline"
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)  # W&B's older spellings
    if mode not in ("online", "offline", "disabled"):
        log.warning(f"W&B: unknown WANDB_MODE {mode!r}; logging offline (use online, offline or disabled)")
        mode = "offline"
    return mode  # type: ignore[return-value]  # narrowed by the check above


def _init(wcfg: WandbConfig, directory: Path, **kwargs: Any) -> Any | None:
    mode = resolve_mode(wcfg.mode)
    if mode == "disabled":
        return None
    import wandb

    (directory / "wandb").mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=wcfg.project,
        group=wcfg.group,
        dir=str(directory),
        mode=mode,
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        **kwargs,
    )


def start_training_run(cfg: Config, run_dir: Path, run_name: str) -> Any | None:
    """The W&B run of a training run (call on rank 0 only); None with ``train.wandb.mode=disabled``."""
    wcfg = cfg.train.wandb
    return _init(
        wcfg,
        run_dir,
        name=wcfg.name or run_name,
        id=run_name,
        resume="allow",
        config={**cfg.to_dict(), "config_hash": cfg.hash, "run_id": cfg.run_id},
    )


def start_trial_run(cfg: Config, sweep_dir: Path, sweep: str, trial: str, params: dict[str, Any]) -> Any | None:
    """The W&B run of a sweep trial, opened by the sweep's driver (which sees every trial's
    results): one run per trial, in the sweep's group, its id unique in the project
    (``<sweep>-<trial>``, so a resumed sweep continues it), the sampled values as top-level config
    keys too (``loss.boundary.end``), which W&B's parallel-coordinates and parameter-importance
    panels pick from. The driver, not the trial, logs: Tune ends a trial's process as soon as it
    stops the trial, which would cut off the trial's own W&B writer. Every trial's offline run lands
    in ``<sweep_dir>/wandb/``, so ``wandb sync <sweep_dir>/wandb`` uploads the whole sweep."""
    wcfg = cfg.train.wandb
    return _init(
        wcfg.model_copy(update={"group": wcfg.group or sweep}),
        sweep_dir,
        name=trial,
        id=f"{sweep}-{trial}",
        resume="allow",
        reinit="create_new",  # one driver holds a run per running trial
        job_type="sweep-trial",
        config={**cfg.to_dict(), "config_hash": cfg.hash, "run_id": cfg.run_id, "sweep": sweep, "trial": trial}
        | params,
    )


def log_epoch(
    run: Any | None, epoch: int, metrics: dict[str, Any], panels: list[tuple[np.ndarray, str]] | None = None
) -> None:
    """Per-epoch scalars (x-axis: epoch) and prediction overlays (image | truth | prediction)."""
    if run is None:
        return
    import wandb

    data: dict[str, Any] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    if panels:
        data["predictions"] = [wandb.Image(p, caption=c) for p, c in panels]
    run.log(data, step=epoch)


def finish(run: Any | None) -> None:
    if run is not None:
        run.finish()


def log_evaluation(report: dict[str, Any], out_dir: Path, wcfg: WandbConfig | None = None) -> None:
    """An evaluation report as one W&B run: the per-bin tables, the goals and the plots as one
    history step, and the overall metrics in the run summary, where the runs table shows them side
    by side across evaluations."""
    run = _init(
        wcfg or WandbConfig(),
        out_dir,
        job_type="evaluate",
        config={**report["benchmark"], "model": report.get("about", {})},
    )
    if run is None:
        return
    import wandb

    names = report["segmenters"]
    payload: dict[str, Any] = {}
    for key in ("by_snr_bin", "by_noise", "by_dots"):
        table = wandb.Table(columns=["group", *[f"dice_{n}" for n in names], *[f"iou_{n}" for n in names]])
        for group, per in report[key].items():
            if per[names[0]]["n"]:
                table.add_data(group, *[per[n]["dice"] for n in names], *[per[n]["iou"] for n in names])
        payload[key] = table
    if report.get("goals"):
        payload["goals"] = wandb.Table(
            columns=["goal", "measured", "met"],
            data=[[g["description"], g["measured"], g["met"]] for g in report["goals"]],
        )
    payload.update({p.stem: wandb.Image(str(p)) for p in sorted(out_dir.glob("*.png"))})
    run.log(payload)
    run.summary.update({f"{n}/{k}": v for n in names for k, v in report["overall"][n].items() if v is not None})
    run.finish()
