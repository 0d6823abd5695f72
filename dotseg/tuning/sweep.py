"""The sweep driver: a Ray Tune experiment whose trials are dotseg training runs.

A sweep lives in ``<train.storage_path>/<tune.name>/``, which is also Ray Tune's experiment
directory: ``sweep.yaml`` (the resolved config and its hash), ``events.jsonl`` (one line per trial
event, what the console showed), Tune's own state files (for ``--resume``), one directory per
trial (``trial-000`` ...: its ``trial.json``, ``config.yaml``, checkpoints, ``worker_log.jsonl``
and W&B offline run) and at the end ``results.csv``, ``results.md``, ``parallel.png`` and
``curves.png`` (:mod:`dotseg.tuning.results`).

Two trial styles run the same per-worker loop as ``dotseg train``:

* ``function``: the loop runs in the trial's own process (a Tune function trainable). No Train
  controller, worker group or placement group per trial: the cheapest, for single-worker trials.
* ``trainer``: the trial builds a ``TorchTrainer`` with ``TuneReportCallback`` (Ray 2.60's way to
  put Train inside Tune), for DDP trials (``train.num_workers > 1``).

How many trials run at once is derived from the cluster before anything starts, so a sweep can
never wait forever for resources that will not come (trial CPUs/GPUs plus the CPUs of their Ray
Data synthesis tasks must fit).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickletools
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dotseg.config import Config, config_from_dict, dump_yaml, load_yaml
from dotseg.files import write_atomic
from dotseg.training.run import TrainError, check_labelled
from dotseg.tuning.config import SearchDim
from dotseg.tuning.results import TRIAL_FILE

log = logging.getLogger("dotseg.sweep")

SWEEP_FILE, EVENTS_FILE = "sweep.yaml", "events.jsonl"
#: CPU a trainer-style trial's driver reserves: it only waits on its Train run. Tune refuses {"CPU": 0}.
DRIVER_CPU = 0.01


class SweepError(RuntimeError):
    """A sweep cannot start, resume or be promoted; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class SweepResult:
    sweep_dir: Path
    rows: list[dict[str, Any]]
    """One row per trial, best first (:func:`dotseg.tuning.results.collect`)."""
    wall_s: float


# -- planning ---------------------------------------------------------------------------------------


def trial_style(cfg: Config) -> str:
    """``function`` or ``trainer`` (``auto``: function for one worker; the config refuses function + DDP)."""
    style = cfg.tune.trial_style
    if style == "auto":
        return "function" if cfg.train.num_workers == 1 else "trainer"
    return style


def trial_resources(cfg: Config, style: str) -> dict[str, float]:
    """What one trial holds while it runs (its Ray Data synthesis tasks come on top)."""
    t = cfg.train
    if style == "function":
        return {"CPU": t.cpus_per_worker, **({"GPU": 1.0} if t.use_gpu else {})}
    return {"CPU": DRIVER_CPU}  # the Train run's workers reserve their own placement group


def trial_cpus(cfg: Config, style: str) -> float:
    """CPUs one running trial takes: its workers, its Ray Data synthesis tasks, a trainer's driver."""
    t, d = cfg.train, cfg.data
    return (
        t.num_workers * t.cpus_per_worker
        + d.synth_tasks * d.cpus_per_task
        + (DRIVER_CPU if style == "trainer" else 0.0)
    )


def concurrency(cfg: Config, style: str, resources: dict[str, float]) -> int:
    """Trials that can run at once on a cluster with ``resources``: at most
    ``tune.max_concurrent_trials``, never more than fit; an error with the numbers if none fits."""
    t, d = cfg.train, cfg.data
    per_trial = trial_cpus(cfg, style)
    cpus = resources.get("CPU", 0.0)
    fit = math.floor(cpus / per_trial + 1e-9)
    if t.use_gpu:
        fit = min(fit, math.floor(resources.get("GPU", 0.0) / t.num_workers + 1e-9))
    if fit < 1:
        gpus = f" and {t.num_workers} GPU(s)" if t.use_gpu else ""
        raise SweepError(
            f"one trial needs {per_trial:g} CPUs{gpus} ({t.num_workers} worker(s) x {t.cpus_per_worker:g} "
            f"+ {d.synth_tasks} synthesis task(s) x {d.cpus_per_task:g}) but the cluster has {cpus:g} CPUs"
            f"{' and ' + format(resources.get('GPU', 0.0), 'g') + ' GPUs' if t.use_gpu else ''}; lower "
            f"train.num_workers / train.cpus_per_worker / data.cpus_per_task or add nodes"
        )
    return max(1, min(cfg.tune.max_concurrent_trials, fit, cfg.tune.num_trials))


def local_cpus(cfg: Config, style: str) -> int:
    """Logical CPUs for an embedded local Ray: room for ``tune.max_concurrent_trials`` trials (they
    share the machine's cores; the limit is what the user asked to run at once)."""
    want = min(cfg.tune.max_concurrent_trials, cfg.tune.num_trials) * trial_cpus(cfg, style)
    return max(os.cpu_count() or 1, math.ceil(want - 1e-9))


def param_space(space: tuple[SearchDim, ...]) -> dict[str, Any]:
    from ray import tune

    out: dict[str, Any] = {}
    for d in space:
        if d.kind == "grid":
            out[d.key] = tune.grid_search(list(d.values))
        elif d.kind == "choice":
            out[d.key] = tune.choice(list(d.values))
        elif d.kind == "uniform":
            out[d.key] = tune.uniform(*d.values)
        else:
            out[d.key] = tune.loguniform(*d.values)
    return out


def trial_name(trial: Any) -> str:
    """``trial-007``: Tune's per-experiment trial counter (the suffix of the trial id), which
    follows the order trials are generated in, so names are the same on every run of a config."""
    return f"trial-{int(str(trial.trial_id).rsplit('_', 1)[-1]):03d}"


# -- the trial --------------------------------------------------------------------------------------


def run_trial(
    params: dict[str, Any],
    *,
    base: dict[str, Any],
    sweep: str,
    sweep_dir: str,
    style: str,
    datasets: dict[str, str] | None = None,
) -> None:
    """One trial (runs in a Ray Tune trial process): the base config with the sampled ``params``,
    trained in the trial's directory by the same loop as ``dotseg train``."""
    import ray.tune

    from dotseg.runtime import records_to
    from dotseg.training.loop import WORKER_LOG, LoopArgs, run_loop, tune_session

    context = ray.tune.get_context()
    name = context.get_trial_name()
    # Tune's directory name, not always the trial's name: a driver killed just after it made a
    # trial's directory (before its state was saved) leaves that behind, and on --resume Tune gives
    # the trial a suffixed one (trial-002_51d6). Its checkpoints go there, so everything else must.
    # (get_trial_dir() is the driver's staging copy; only its name is the same in sweep_dir.)
    run_dir = Path(sweep_dir) / Path(context.get_trial_dir()).name
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = config_from_dict(base).replace(**params)
    write_atomic(run_dir / "config.yaml", f"# dotseg sweep trial config, hash {cfg.hash}\n" + dump_yaml(cfg))
    record = {
        "trial": name,
        "sweep": sweep,
        "params": params,
        "seed": cfg.train.seed,
        "style": style,
        "config_hash": cfg.hash,
        "run_id": cfg.run_id,
    }
    write_atomic(run_dir / TRIAL_FILE, json.dumps(record, indent=1))
    origin = {"sweep": sweep, "trial": name, "params": params}
    if style == "function":
        args = LoopArgs(cfg=cfg, run_dir=run_dir, origin=origin, datasets=dict(datasets or {}))
        with records_to(run_dir / WORKER_LOG):
            run_loop(args, tune_session(cfg))
        return
    # trainer: a Train run inside the trial directory; Train V2 resumes it from its own latest
    # checkpoint when Tune restarts the trial (same name, same storage).
    from ray.tune.integration.ray_train import TuneReportCallback

    from dotseg.training.run import trainer

    (run_dir / "run").mkdir(exist_ok=True)
    trainer(cfg, run_dir / "run", None, origin=origin, callbacks=[TuneReportCallback()], datasets=datasets).fit()


# -- progress lines ---------------------------------------------------------------------------------


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


def _event_callback(base: Config, sweep_dir: Path, epochs: int, quiet: bool) -> Any:
    """A Tune callback that prints one line per trial event (instead of Tune's status tables),
    appends it to ``events.jsonl``, and keeps each trial's W&B run."""
    from ray.tune import Callback

    from dotseg import tracking

    class TrialEvents(Callback):
        def __init__(self) -> None:
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
                    base.replace(**params), sweep_dir, sweep_dir.name, name, params
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
            with (sweep_dir / EVENTS_FILE).open("a") as f:
                f.write(json.dumps(line) + "\n")
            if not quiet or event in ("errored",):
                (log.warning if event == "errored" else log.info)(f"{name} {text}")

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            # After Tune's (background) copy of its state; a few looks a second are plenty.
            if time.monotonic() >= self.state_look:
                self.state_look = time.monotonic() + 0.2
                back_up_state(sweep_dir, self.state_seen)

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
                f"epoch {result['epoch']}/{epochs} val dice {result['val_dice']:.4f} "
                f"(clean {result.get('clean_dice', float('nan')):.4f}, {result.get('epoch_time_s', 0):.0f} s)",
                epoch=result["epoch"],
                val_dice=result["val_dice"],
            )

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            last = self.last.get(trial.trial_id) or trial.last_result or {}
            epoch, reason = last.get("epoch", 0), last.get("stop_reason", "completed")
            took = time.time() - self.t0.get(trial.trial_id, time.time())
            if reason == "completed" and epoch < epochs:
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

    return TrialEvents()


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


# -- Tune's state files -----------------------------------------------------------------------------

#: Tune's state files in the sweep directory, per driver session: the experiment state (JSON) and
#: the searcher's (a pickle). Tune rewrites them in place (a copy from its staging directory, every
#: second here), so a driver killed mid-copy leaves one cut short, and Tune, failing to read it,
#: would restart the sweep from nothing: new trials with the base config, over the finished trials'
#: directories. --resume puts back a whole set: Tune's staging copy, or the set the driver kept.
STATE_FILES = ("experiment_state-*.json", "basic-variant-state-*.json")
STATE_BACKUP = ".state-backup"


def _state_files(directory: Path) -> list[Path]:
    return sorted(p for pattern in STATE_FILES for p in directory.glob(pattern))


def _whole(path: Path) -> bytes | None:
    """The file's bytes if they are complete (a cut copy is not), else None. The searcher's state
    is a pickle despite its name: its opcodes are walked to the end, nothing is unpickled."""
    try:
        data = path.read_bytes()
        if data[:1] == b"\x80":  # a pickle's protocol opcode
            ops = list(pickletools.genops(data))
            if not ops or ops[-1][0].name != "STOP":
                return None
        else:
            json.loads(data)
    except (OSError, ValueError):
        return None
    return data


def back_up_state(sweep_dir: Path, seen: dict[str, int], settle_s: float = 0.05) -> None:
    """Copy Tune's state files into ``.state-backup/`` when they changed since ``seen`` (name ->
    mtime), all together and only as a set that is whole and at rest: the experiment state and the
    searcher's must be from the same save, or a resumed sweep could lose or repeat a trial."""
    try:
        paths = _state_files(sweep_dir)
        before = {p.name: p.stat().st_mtime_ns for p in paths}
        if not paths or all(seen.get(n) == m for n, m in before.items()):
            return
        if time.time_ns() - max(before.values()) < settle_s * 1e9:  # Tune may be copying them now
            return
        data = {p.name: _whole(p) for p in paths}
        if any(d is None for d in data.values()) or before != {p.name: p.stat().st_mtime_ns for p in paths}:
            return  # the next look gets a whole set
    except OSError:
        return
    backup = sweep_dir / STATE_BACKUP
    backup.mkdir(exist_ok=True)
    for name, d in data.items():
        if seen.get(name) != before[name]:
            assert d is not None
            write_atomic(backup / name, d)
    seen.update(before)


def _staging_copies(sweep_dir: Path) -> list[Path]:
    """Tune's own staging directories for a sweep of this name on this machine, newest first
    (``<ray temp>/session_*/artifacts/<time>/<name>/driver_artifacts``): the driver writes its state
    there before copying it to the sweep directory, so a copy cut by a kill is whole there."""
    roots = {Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray", Path("/tmp/ray")}
    found = [d for root in roots for d in root.glob(f"session_*/artifacts/*/{sweep_dir.name}/driver_artifacts")]
    return sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)


def repair_state(sweep_dir: Path) -> tuple[list[str], str]:
    """Before --resume: if a kill cut any of Tune's state files short, put back a whole set of them
    (the cut file and its partners from the same save); returns the names put back and where they
    came from. First choice: Tune's staging copy on this machine (its latest state); else the set
    the driver kept. A cut file with neither is an error: Tune would start over."""
    current = {p.name: _whole(p) for p in _state_files(sweep_dir)}
    cut = [name for name, data in current.items() if data is None]
    if not cut:
        return [], ""
    sources = [(d, "Ray's staging copy on this machine") for d in _staging_copies(sweep_dir)]
    sources.append((sweep_dir / STATE_BACKUP, "the last whole copy the driver kept"))
    for source, what in sources:
        kept = {p.name: _whole(p) for p in _state_files(source)}
        if any(d is None for d in kept.values()) or any(name not in kept for name in cut):
            continue
        restored = []
        for name, data in kept.items():
            assert data is not None
            if current.get(name) != data:
                write_atomic(sweep_dir / name, data)
                restored.append(name)
        return restored, what
    raise SweepError(
        f"{sweep_dir / cut[0]} was cut short when the sweep's driver was killed and no whole copy of it was "
        f"kept; delete it to resume from the state before it (trials since then run again)"
    )


# -- driving ----------------------------------------------------------------------------------------


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


def sweep(
    cfg: Config | None = None,
    *,
    resume: Path | None = None,
    address: str | None = None,
    quiet: bool = False,
    verbose: bool = False,
) -> SweepResult:
    """Run the sweep ``cfg`` describes (or continue ``resume``) and summarise it."""
    from ray import tune

    from dotseg import storage
    from dotseg.runtime import init_ray, ray_logs_to
    from dotseg.tuning import results

    t0 = time.perf_counter()
    if cfg is not None and storage.is_uri(cfg.train.storage_path):
        raise SweepError(
            f"train.storage_path {cfg.train.storage_path!r}: a sweep's files (Tune's state, every trial's "
            f"records, the results) live in a directory; on a cluster, use a mount every node shares (NFS, "
            f"EFS, or the bucket through a FUSE mount such as mountpoint-s3 or gcsfuse). Bucket URIs work "
            f"for dotseg train"
        )
    if resume is not None:
        sweep_dir = Path(resume).expanduser().resolve()
        cfg = sweep_config(sweep_dir)
    assert cfg is not None
    try:  # every labelled dataset whole, before anything starts; digests for the trials' checkpoints
        datasets = check_labelled(cfg)
    except TrainError as e:
        raise SweepError(str(e)) from None
    if resume is not None:
        restored, source = repair_state(sweep_dir)
        if restored:
            log.warning(f"Tune's state was cut short by the kill; resuming from {source} ({', '.join(restored)})")
    else:
        sweep_dir = new_sweep_dir(cfg)
        sweep_dir.mkdir(parents=True)
        write_atomic(sweep_dir / SWEEP_FILE, f"# dotseg sweep config, hash {cfg.hash}\n" + dump_yaml(cfg))
    style = trial_style(cfg)
    tc = cfg.tune
    epochs = max([cfg.train.epochs, *[int(v) for d in tc.space if d.key == "train.epochs" for v in d.values]])

    with ray_logs_to(sweep_dir / "ray.log", console=verbose):
        resources = init_ray(
            address,
            num_cpus=None if address else local_cpus(cfg, style),
            quiet=not verbose,
            logging_level=logging.INFO,
        )
        at_once = concurrency(cfg, style, resources)
        try:
            storage.check_shared_storage(cfg.train.storage_path, storage.cluster_hosts())
        except storage.StorageError as e:
            raise SweepError(str(e)) from None
        if not quiet:
            log.info(
                f"sweep {sweep_dir}  ({tc.num_trials} trials, {at_once} at a time, {style} trials, "
                f"{tc.scheduler.upper()} on {tc.metric}, {int(resources.get('CPU', 0))} CPUs in the cluster)"
            )
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial,
                base=cfg.to_dict(),
                sweep=sweep_dir.name,
                sweep_dir=str(sweep_dir),
                style=style,
                datasets=datasets,
            ),
            trial_resources(cfg, style),
        )
        if resume is not None:
            tuner = tune.Tuner.restore(
                str(sweep_dir),
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=tc.max_failures > 0,
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(tc.space),
                tune_config=tune.TuneConfig(
                    metric=tc.metric,
                    mode=tc.mode,
                    num_samples=tc.num_samples,
                    scheduler=_scheduler(cfg, epochs),
                    # The limit goes here: Tune ignores max_concurrent_trials next to a generator.
                    search_alg=tune.search.BasicVariantGenerator(max_concurrent=at_once, random_state=tc.seed),
                    trial_name_creator=trial_name,
                    trial_dirname_creator=trial_name,
                    reuse_actors=False,
                ),
                run_config=tune.RunConfig(
                    name=sweep_dir.name,
                    storage_path=str(sweep_dir.parent),
                    verbose=0,
                    callbacks=[_event_callback(cfg, sweep_dir, epochs, quiet)],
                    failure_config=tune.FailureConfig(max_failures=tc.max_failures),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=cfg.train.keep_checkpoints,
                        checkpoint_score_attribute=tc.metric,
                        checkpoint_score_order=tc.mode,
                    ),
                ),
            )
        # Tune saves its experiment state at most this often (its default: every 10 s or more). A
        # driver killed within that window of a trial finishing would, on --resume, start that trial
        # again; it would load its last checkpoint and train nothing, but start nonetheless.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
        # Tune's console tables and banners off: the event lines above say what happens.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        try:
            tuner.fit()
        except Exception as e:
            raise SweepError(
                f"sweep failed: {str(e).strip().splitlines()[-1]} (resume with --resume {sweep_dir})"
            ) from e
        finally:
            for d in sweep_dir.glob("trial-*"):  # the empty directory a killed driver left behind
                with contextlib.suppress(OSError):
                    d.rmdir()
    rows = results.write(sweep_dir, cfg)
    return SweepResult(sweep_dir=sweep_dir, rows=rows, wall_s=time.perf_counter() - t0)


def _scheduler(cfg: Config, epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    tc = cfg.tune
    if tc.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch", max_t=epochs, grace_period=min(tc.grace_period, epochs), reduction_factor=tc.reduction_factor
    )
