"""A sweep's results, read from its directory: the trial table, its pictures, and promotion.

Everything here reads files the trials and the driver wrote (``trial.json``, each checkpoint's
``history.json`` and ``model.safetensors``, ``events.jsonl``), never Tune's in-memory objects, so
the same code summarises a finished sweep, a resumed one and one whose driver was killed.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from dotseg.checkpoint import HISTORY_FILE, MODEL_FILE
from dotseg.config import Config
from dotseg.files import copy_atomic, write_atomic
from dotseg.tuning.layout import TRIAL_FILE, SweepError, sweep_config

log = logging.getLogger(__name__)


#: Columns of results.csv before the parameters; ``dir`` is the trial's directory in the sweep.
COLUMNS = (
    "rank", "trial", "status", "best_val_dice", "best_epoch", "epochs_run", "last_val_dice", "time_s", "seed", "dir"
)  # fmt: skip


def _checkpoints(trial_dir: Path) -> list[Path]:
    """The trial's checkpoint directories (function trials: Tune's; trainer trials: their Train run's)."""
    return sorted(p.parent for p in trial_dir.rglob(f"checkpoint_*/{MODEL_FILE}"))


def _history(trial_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch metrics: the longest history among the checkpoints (the latest one holds them all)."""
    best: list[dict[str, Any]] = []
    for ckpt in _checkpoints(trial_dir):
        try:
            h = json.loads((ckpt / HISTORY_FILE).read_text())
        except (OSError, ValueError):
            continue
        if len(h) > len(best):
            best = h
    return best


def _status(events: list[dict[str, Any]], history: list[dict[str, Any]]) -> str:
    """The trial's last event: finished / stopped (scheduler, early stopping, collapse) / errored / retried."""
    final = [e for e in events if e["event"] in ("finished", "stopped", "errored", "retried", "started")]
    if not final:
        return "pending" if not history else "interrupted"
    last = final[-1]
    if last["event"] == "stopped":
        return str(last.get("status", "stopped"))
    if last["event"] == "started":
        return "running" if not history else "interrupted"
    return str(last["event"])


def collect(sweep_dir: Path, cfg: Config) -> list[dict[str, Any]]:
    """One row per trial: its parameters, status, best and last validation Dice, epochs, time; best first."""
    events: dict[str, list[dict[str, Any]]] = {}
    events_file = sweep_dir / "events.jsonl"
    if events_file.exists():
        for line in events_file.read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue  # a line cut by a killed driver
            events.setdefault(e["trial"], []).append(e)
    metric = cfg.tune.metric
    sign = 1.0 if cfg.tune.mode == "max" else -1.0
    # A trial's directory is usually its name; after a --resume it can be a suffixed one
    # (trial-002_51d6, see run_trial), next to what the killed driver left of the name's.
    # The trial is the directory that got further.
    trials: dict[str, tuple[tuple[int, float], Path, dict[str, Any], list[dict[str, Any]]]] = {}
    for trial_file in sorted(sweep_dir.glob(f"trial-*/{TRIAL_FILE}")):
        try:
            info = json.loads(trial_file.read_text())
            info["trial"], info["params"], info["seed"]  # the keys every row needs
        except (OSError, ValueError, KeyError, TypeError) as e:  # cut by a kill (older dotseg wrote it in place)
            log.warning(f"skipping {trial_file}: unreadable ({type(e).__name__}: {e}); its checkpoints are kept")
            continue
        history = _history(trial_file.parent)
        further = (len(history), trial_file.stat().st_mtime)
        if info["trial"] not in trials or further > trials[info["trial"]][0]:
            trials[info["trial"]] = (further, trial_file.parent, info, history)
    rows = []
    for _, trial_dir, info, history in trials.values():
        best = max(history, key=lambda h: sign * h.get(metric, -sign * float("inf")), default={})
        rows.append(
            {
                "dir": trial_dir.name,
                "trial": info["trial"],
                "params": info["params"],
                "seed": info["seed"],
                "status": _status(events.get(info["trial"], []), history),
                "best_val_dice": best.get(metric),
                "best_epoch": best.get("epoch"),
                "epochs_run": len(history),
                "last_val_dice": history[-1].get(metric) if history else None,
                "time_s": round(sum(h.get("epoch_time_s", 0.0) for h in history), 1),
                "history": history,
            }
        )
    rows.sort(key=lambda r: (r["best_val_dice"] is None, -sign * (r["best_val_dice"] or 0.0), r["trial"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def _fmt(v: Any, digits: str = ".4g") -> str:
    if v is None:
        return "-"
    return format(v, digits) if isinstance(v, float) else str(v)


def table_lines(rows: list[dict[str, Any]], keys: list[str], metric: str = "val_dice") -> list[str]:
    """The results as a Markdown table (what results.md holds and the console prints)."""
    label = {"val_dice": "val Dice", "labelled_dice": "held-out labelled Dice"}.get(metric, metric)
    head = ["#", "trial", *keys, f"{label} (best)", "epoch", "epochs run", "time s", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            str(r["rank"]),
            r["trial"],
            *[_fmt(r["params"].get(k)) for k in keys],
            _fmt(r["best_val_dice"], ".4f"),
            _fmt(r["best_epoch"]),
            str(r["epochs_run"]),
            _fmt(r["time_s"], ".0f"),
            r["status"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write(sweep_dir: Path, cfg: Config) -> list[dict[str, Any]]:
    """results.csv, results.md, parallel.png and curves.png in ``sweep_dir``; returns the rows."""
    from dotseg.plots import plot_parallel, plot_trial_curves

    rows = collect(sweep_dir, cfg)
    keys = [d.key for d in cfg.tune.space]
    with (sweep_dir / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*COLUMNS, *keys])
        for r in rows:
            w.writerow([r[c] if r[c] is not None else "" for c in COLUMNS] + [r["params"].get(k, "") for k in keys])
    title = f"# Sweep {sweep_dir.name}\n\nTrials by best validation Dice ({cfg.tune.metric}, {cfg.tune.scheduler}).\n\n"
    write_atomic(sweep_dir / "results.md", title + "\n".join(table_lines(rows, keys, cfg.tune.metric)) + "\n")
    if rows:
        plot_parallel(rows, keys, sweep_dir / "parallel.png")
        plot_trial_curves(rows, sweep_dir / "curves.png")
    return rows


def promote(sweep_dir: Path, out: Path) -> dict[str, Any]:
    """Copy the best trial's best checkpoint to ``out`` (a regular dotseg checkpoint whose
    provenance names the sweep and the trial); returns what was promoted."""
    from dotseg.checkpoint import load_checkpoint

    cfg = sweep_config(sweep_dir)
    rows = [r for r in collect(sweep_dir, cfg) if r["best_val_dice"] is not None]
    if not rows:
        raise SweepError(f"{sweep_dir} has no trial with a checkpoint yet; let the sweep run (or --resume it) first")
    best = rows[0]
    metric, sign = cfg.tune.metric, 1.0 if cfg.tune.mode == "max" else -1.0
    candidates = []
    for ckpt in _checkpoints(sweep_dir / best["dir"]):
        loaded = load_checkpoint(ckpt / MODEL_FILE)
        if metric in loaded.metrics:
            candidates.append((sign * loaded.metrics[metric], loaded.epoch, ckpt / MODEL_FILE))
    if not candidates:
        raise SweepError(f"{best['trial']} kept no checkpoint with {metric}; promote another sweep or resume it")
    _, epoch, path = max(candidates)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise SweepError(f"--out {out}: a dotseg checkpoint is a .safetensors file; name it *.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    copy_atomic(path, out)
    loaded = load_checkpoint(out)  # the copy is checked like any checkpoint a user passes
    return {
        "trial": best["trial"],
        "params": best["params"],
        "epoch": epoch,
        metric: loaded.metrics.get(metric),
        "metric": metric,
        "source": str(path),
        "out": str(out),
        "model_id": loaded.model_id,
    }
