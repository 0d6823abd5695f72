"""What a sweep directory holds, and reading it back: the one place that knows its layout.

A sweep lives in ``<train.storage_path>/<tune.name>/``, which is also Ray Tune's experiment
directory: ``sweep.yaml`` (the resolved config and its hash), ``events.jsonl`` (one line per trial
event, what the console showed), Tune's own state files (:mod:`dotseg.tuning.state`), one directory
per trial (``trial-000`` ...: its ``trial.json``, ``config.yaml``, checkpoints, ``worker_log.jsonl``
and W&B offline run) and at the end ``results.csv``, ``results.md``, ``parallel.png`` and
``curves.png`` (:mod:`dotseg.tuning.results`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from dotseg.config import Config, config_from_dict, load_yaml

SWEEP_FILE, EVENTS_FILE, TRIAL_FILE = "sweep.yaml", "events.jsonl", "trial.json"


class SweepError(RuntimeError):
    """A sweep cannot start, resume or be promoted; the message says why and what to do."""


def new_sweep_dir(cfg: Config) -> Path:
    root = Path(cfg.train.storage_path).expanduser().resolve()
    name = cfg.tune.name or f"sweep-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{cfg.hash[:6]}"
    path = root / name
    if path.exists():
        raise SweepError(f"{path} already exists; resume it with --resume {path} or pick another tune.name")
    return path


def sweep_config(sweep_dir: Path) -> Config:
    """The config a sweep directory was started with; a one-line error for anything else."""
    from ray.tune import Tuner

    saved = sweep_dir / SWEEP_FILE
    if not sweep_dir.is_dir():
        raise SweepError(f"{sweep_dir} does not exist; pass the directory `dotseg sweep` printed when it started")
    if not saved.exists():
        raise SweepError(
            f"{sweep_dir} is not a dotseg sweep directory (no {SWEEP_FILE}); "
            f"pass the directory `dotseg sweep` printed when it started"
        )
    try:
        cfg = config_from_dict(load_yaml(saved.read_text(), str(saved)))
    except Exception as e:  # a truncated or hand-edited file
        raise SweepError(f"{saved} is not a readable sweep config ({str(e).splitlines()[0]})") from None
    if not Tuner.can_restore(str(sweep_dir)):
        raise SweepError(
            f"{sweep_dir} has no Ray Tune experiment state (the sweep was stopped before its first "
            f"trial started, or the directory was truncated); start it again without --resume"
        )
    return cfg
