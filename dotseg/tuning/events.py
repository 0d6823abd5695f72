"""The sweep's console and records: one line per trial event (instead of Tune's status tables),
``events.jsonl``, one W&B run per trial, and the state backup on every driver step."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from dotseg import tracking
from dotseg.config import Config
from dotseg.tuning.layout import EVENTS_FILE
from dotseg.tuning.state import back_up_state

log = logging.getLogger("dotseg.sweep")


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in params.items())


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


#: Keys Tune adds to every result; the rest is what the loop reported.
_TUNE_KEYS = frozenset(
    {
        "timestamp", "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
        "iterations_since_restore", "training_iteration", "trial_id", "date", "done", "checkpoint_dir_name",
        "should_checkpoint", "experiment_tag", "config", "checkpoint_path",
    }
)  # fmt: skip


def _params(trial: Any) -> dict[str, Any]:
    return dict(trial.config)


def _error_line(trial: Any) -> str:
    """The last line of a trial's error (the exception), not Tune's 'see the error file' text."""
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "unknown error"
    except OSError:
        return "unknown error (no error file)"


class TrialEvents(Callback):
    """A Tune callback that prints one line per trial event (instead of Tune's status tables),
    appends it to ``events.jsonl``, keeps each trial's W&B run and a whole copy of Tune's state."""

    def __init__(self, base: Config, sweep_dir: Path, epochs: int, quiet: bool) -> None:
        self.base, self.sweep_dir, self.epochs, self.quiet = base, sweep_dir, epochs, quiet
        self.t0: dict[str, float] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, Any] = {}
        self.state_seen: dict[str, int] = {}
        self.state_look = 0.0

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        return {**self.__dict__, "runs": {}}

    def _wandb_start(self, trial: Any) -> None:
        name, params = trial.custom_trial_name or str(trial), _params(trial)
        try:
            self.runs[trial.trial_id] = tracking.start_trial_run(
                self.base.replace(**params), self.sweep_dir, self.sweep_dir.name, name, params
            )
        except Exception as e:  # W&B trouble must not stop the sweep
            log.warning(f"{name}: W&B run not started ({str(e).splitlines()[0]}); the trial still runs")

    def _wandb_end(self, trial: Any, status: str) -> None:
        run = self.runs.pop(trial.trial_id, None)
        if run is None:
            return
        last = self.last.get(trial.trial_id, {})
        run.summary.update({"status": status, "epochs_run": last.get("epoch", 0)})
        tracking.finish(run)

    def _emit(self, trial: Any, event: str, text: str, **fields: Any) -> None:
        name = trial.custom_trial_name or str(trial)
        line = {"time": time.time(), "trial": name, "event": event, **fields}
        with (self.sweep_dir / EVENTS_FILE).open("a") as f:
            f.write(json.dumps(line) + "\n")
        if not self.quiet or event in ("errored",):
            (log.warning if event == "errored" else log.info)(f"{name} {text}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # After Tune's (background) copy of its state; a few looks a second are plenty.
        if time.monotonic() >= self.state_look:
            self.state_look = time.monotonic() + 0.2
            back_up_state(self.sweep_dir, self.state_seen)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.t0[trial.trial_id] = time.time()
        self._emit(trial, "started", f"started ({_params_text(_params(trial))})", params=_params(trial))
        self._wandb_start(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "val_dice" not in result:
            return
        self.last[trial.trial_id] = result
        run = self.runs.get(trial.trial_id)
        if run is not None:
            metrics = {k: v for k, v in result.items() if k not in _TUNE_KEYS}
            tracking.log_epoch(run, int(result["epoch"]), metrics)
            best = max(run.summary.get("best_val_dice", -1.0), result["val_dice"])
            run.summary.update({"best_val_dice": best})
        self._emit(
            trial,
            "epoch",
            f"epoch {result['epoch']}/{self.epochs} val dice {result['val_dice']:.4f} "
            f"(clean {result.get('clean_dice', float('nan')):.4f}, {result.get('epoch_time_s', 0):.0f} s)",
            epoch=result["epoch"],
            val_dice=result["val_dice"],
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = self.last.get(trial.trial_id) or trial.last_result or {}
        epoch, reason = last.get("epoch", 0), last.get("stop_reason", "completed")
        took = time.time() - self.t0.get(trial.trial_id, time.time())
        if reason == "completed" and epoch < self.epochs:
            event, status, text = "stopped", "stopped (ASHA)", f"stopped by ASHA after epoch {epoch}"
        elif reason in ("early_stopping", "collapse"):
            how = reason.replace("_", " ")
            event, status, text = "stopped", f"stopped ({how})", f"stopped itself after epoch {epoch} ({how})"
        else:
            event, status, text = "finished", "finished", f"finished {epoch} epochs"
        self._emit(
            trial,
            event,
            f"{text}: val dice {last.get('val_dice', float('nan')):.4f} ({took:.0f} s)",
            epoch=epoch,
            status=status,
        )
        self._wandb_end(trial, status)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._emit(trial, "errored", f"errored: {_error_line(trial)}", error=_error_line(trial))
        self._wandb_end(trial, "errored")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._emit(
            trial,
            "retried",
            f"errored ({_error_line(trial)}); retrying from its last checkpoint",
            error=_error_line(trial),
        )
