"""The training driver: run directories, resume checks, and one ``TorchTrainer.fit()``.

A run lives in ``<train.storage_path>/<name>/``: ``config.yaml`` (the resolved config and its
hash), Ray Train's ``checkpoint_*`` directories (each with ``model.safetensors``, the training
state and the history so far), and at the end ``best.safetensors``, ``history.json`` and
``curves.png``. ``--resume RUN_DIR`` re-runs the same Train run name on the same storage, which
Ray Train V2 restores from the latest checkpoint.

Logging: dotseg's lines are records of the ``dotseg.*`` loggers; those the workers log (per-epoch
line, resume, collapse, stop) are appended to ``worker_log.jsonl`` and re-emitted on the driver
while ``fit()`` runs. Ray's own output goes to ``ray.log`` (the driver's Ray log records, and the
path of the Ray session's log directory, where workers', the Train controller's and the core
workers' output stays) and reaches the console only with ``verbose``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dotseg import storage
from dotseg.config import (
    CHANGEABLE_ON_RESUME,
    NOT_IN_RUN_IDENTITY,
    Config,
    Override,
    config_from_dict,
    dump_yaml,
    load_config,
    load_yaml,
    to_dict,
)
from dotseg.configbase import dict_value, diff_keys, drop_paths
from dotseg.files import copy_atomic, write_atomic
from dotseg.plots import plot_history
from dotseg.training.resources import RunNeed
from dotseg.training.stopping import monitored

#: In the run directory: the driver's Ray log, and the records dotseg code logged in the workers.
RAY_LOG = "ray.log"

log = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """A run cannot start or resume; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class TrainResult:
    run_dir: Path
    best_checkpoint: Path | None
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    stop_reason: str
    wall_s: float
    remote: str | None = None
    """The run's bucket URI (``run_dir`` is then its local staging copy); None for a directory."""

    def where(self, file: str) -> str:
        """A file of the run, where a user finds it (in the bucket for a bucket run)."""
        return storage.join(self.remote, file) if self.remote else str(self.run_dir / file)


#: A run or sweep name: a plain directory name, never "." or "..".
RUN_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"


def new_run_dir(cfg: Config, name: str | None = None) -> Path:
    """The directory of a new run (not created yet): under ``train.storage_path``, or for a bucket
    its local staging directory (:func:`run_uri` says where in the bucket)."""
    name = name or f"train-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{cfg.hash[:6]}"
    if not re.fullmatch(RUN_NAME, name):  # '..' or '.' would name a directory above or the storage itself
        raise TrainError(
            f"run name {name!r}: a plain name, starting with a letter or digit, of letters, digits, '.', '_' and '-'"
        )
    if storage.is_uri(cfg.train.storage_path):
        uri = storage.join(cfg.train.storage_path, name)
        if _storage(storage.exists, uri):
            raise TrainError(f"{uri} already exists; pick another --name or resume it with --resume {uri}")
        path = storage.staging_dir(uri)
        shutil.rmtree(path, ignore_errors=True)  # what an attempt that never reached the bucket left
        return path
    path = Path(cfg.train.storage_path).expanduser().resolve() / name
    if path.exists():
        raise TrainError(f"{path} already exists; pick another --name or resume it with --resume {path}")
    return path


def run_uri(cfg: Config, run_dir: Path) -> str | None:
    """Where a new run of ``cfg`` lives in its bucket; None when ``train.storage_path`` is a directory."""
    root = cfg.train.storage_path
    return storage.join(root, run_dir.name) if storage.is_uri(root) else None


def locate_run(location: str | Path) -> tuple[Path, str | None]:
    """A run given as a directory or a bucket URI: its local directory and its URI (None for a
    directory). A bucket run's ``config.yaml`` is fetched into its staging directory."""
    if not storage.is_uri(location):
        return Path(location).expanduser().resolve(), None
    uri = str(location).rstrip("/")
    run_dir = storage.staging_dir(uri)
    if not _storage(storage.exists, storage.join(uri, "config.yaml")):
        raise TrainError(
            f"{uri} is not a dotseg run (no config.yaml there); "
            f"pass the URI `dotseg train` printed when the run started"
        )
    _storage(storage.download, storage.join(uri, "config.yaml"), run_dir / "config.yaml")
    from dotseg.training.loop import WORKER_LOG

    for log_file in (WORKER_LOG, RAY_LOG):  # appended to, then uploaded again: keep what earlier attempts wrote
        if _storage(storage.exists, storage.join(uri, log_file)):
            _storage(storage.download, storage.join(uri, log_file), run_dir / log_file)
    return run_dir, uri


#: A run directory's results, which only the machine that got furthest may upload.
RESULTS = ("history.json", "best.safetensors", "curves.png")


def _epochs(history_json: str) -> int:
    """The last epoch in a run's history.json text (0 when empty or unreadable)."""
    try:
        return max((int(h.get("epoch", 0)) for h in json.loads(history_json)), default=0)
    except (ValueError, TypeError, AttributeError):
        return 0


def upload_run(run_dir: Path, remote: str) -> None:
    """Upload a bucket run's staging directory, but never older results over newer ones: when the
    bucket's history.json reaches a later epoch than this machine's (another machine resumed the run
    further), this machine's results stay here, with one line saying why; its logs still go up."""
    theirs_uri, ours_path = storage.join(remote, "history.json"), run_dir / "history.json"
    theirs = _epochs(storage.read_text(theirs_uri)) if storage.exists(theirs_uri) else 0
    ours = _epochs(ours_path.read_text()) if ours_path.is_file() else 0
    if theirs > ours:
        log.warning(
            f"not uploading this machine's results of {remote}: the bucket's history reaches epoch {theirs}, "
            f"this machine's {ours or 'none'} (another machine resumed the run further); they stay in {run_dir}"
        )
        for f in sorted(run_dir.iterdir()):
            if f.name not in RESULTS:
                storage.upload(f, storage.join(remote, f.name))
        return
    storage.upload(run_dir, remote)


def _storage(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except storage.StorageError as e:
        raise TrainError(str(e)) from None


def resume_config(location: str | Path, config: str | Path | None = None, overrides: Sequence[Override] = ()) -> Config:
    """The config to resume the run at ``location`` (a directory or a bucket URI) with: its saved
    ``config.yaml``, or ``config`` if given, with ``overrides`` on top. Refused, naming the keys, if
    the run identity would change (anything that shapes the weights but
    :data:`~dotseg.config.CHANGEABLE_ON_RESUME`)."""
    run_dir, _ = locate_run(location)
    saved_file = run_dir / "config.yaml"
    if not saved_file.exists():
        raise TrainError(
            f"{run_dir} is not a dotseg run directory (no config.yaml); "
            f"pass the directory `dotseg train` printed when the run started"
        )
    saved = config_from_dict(load_yaml(saved_file.read_text(), str(saved_file)))
    requested = load_config(config, overrides, base=saved)
    ignored = NOT_IN_RUN_IDENTITY + CHANGEABLE_ON_RESUME
    drift = diff_keys(drop_paths(saved.to_dict(), ignored), drop_paths(requested.to_dict(), ignored))
    if drift:
        shown = ", ".join(f"{k} ({_value(saved, k)!r} -> {_value(requested, k)!r})" for k in drift[:6])
        more = f" and {len(drift) - 6} more" if len(drift) > 6 else ""
        raise TrainError(
            f"refusing to resume {run_dir.name}: settings that shape the weights differ from the run's "
            f"config.yaml: {shown}{more}. Resume without changing those keys (only "
            f"{', '.join(CHANGEABLE_ON_RESUME)} may change), or start a new run"
        )
    return requested


def _value(cfg: Config, key: str) -> Any:
    """The value at a diff_keys path (which may index into a list: ``curriculum.phases``)."""
    return dict_value(to_dict(cfg), key)


def check_init(cfg: Config) -> str | None:
    """Checks ``train.init`` on the driver, before anything starts: the file loads and holds the
    model ``model.*`` builds. Returns its model id (None without ``train.init``)."""
    if cfg.train.init is None:
        return None
    from dotseg.checkpoint import CheckpointError, read_meta
    from dotseg.inference.predictor import resolve_checkpoint

    try:
        return read_meta(resolve_checkpoint(cfg.train.init), expect=cfg.model).model_id
    except CheckpointError as e:
        raise TrainError(
            f"train.init: {e} (fine-tuning starts from a checkpoint of the model that model.* builds)"
        ) from None


def check_labelled(cfg: Config) -> dict[str, str]:
    """Checks every ``data.labelled`` dataset whole on the driver, before anything starts (the
    same one-line errors as ``dotseg data check``), and that each has at least 2 pairs (one to
    train on, one held out). Returns ``{path: content digest}`` for the checkpoint's provenance."""
    from dotseg import labelled

    digests: dict[str, str] = {}
    for i, source in enumerate(cfg.data.labelled):
        try:
            rows = labelled.load(source.path)
        except labelled.DatasetError as e:
            raise TrainError(f"data.labelled[{i}]: {e}") from None
        if len(rows) < 2:
            raise TrainError(
                f"data.labelled[{i}]: {source.path} has {len(rows)} pair(s); it needs 2 or more "
                f"(some are held out to validate on, data.labelled_holdout)"
            )
        digests[source.path] = labelled.pairs_digest([p for p, _, _ in rows])
    return digests


def train(
    cfg: Config,
    *,
    run_dir: Path | None = None,
    resume: str | Path | None = None,
    address: str | None = None,
    quiet: bool = False,
    verbose: bool = False,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train ``cfg`` (or resume ``resume``) and return where the best checkpoint is.

    Progress (the run line, and the workers' per-epoch lines relayed to this process) is logged to
    the ``dotseg`` loggers unless ``quiet``. Ray's own output goes to ``<run_dir>/ray.log`` and the
    Ray session's log files; ``verbose`` echoes it on the console too (when this call starts Ray).
    ``stop_after_epoch`` pauses the run after that epoch (its checkpoint written); resuming it
    continues exactly as if it had not stopped — for training in time slices. ``resume`` is a run
    directory or a bucket run's URI.
    """
    import ray

    from dotseg.logs import RecordRelay, ray_logs_to, start_record_sink
    from dotseg.runtime import init_ray
    from dotseg.training.loop import WORKER_LOG

    t0 = time.perf_counter()
    if resume is None:
        check_init(cfg)
    datasets = check_labelled(cfg)
    if resume is not None:
        run_dir, remote = locate_run(resume)
    else:
        run_dir = run_dir or new_run_dir(cfg)
        run_dir.mkdir(parents=True)
        remote = run_uri(cfg, run_dir)
    # On resume too: a run extended with --set train.epochs=N must stay extended on the next resume.
    write_atomic(run_dir / "config.yaml", f"# dotseg run config, hash {cfg.hash}\n" + dump_yaml(cfg))
    where = remote or str(run_dir)
    if remote:  # first: a wrong bucket or missing credentials fail here, and the run can be resumed from it
        _storage(storage.check_writable, remote)
        _storage(storage.upload, run_dir / "config.yaml", storage.join(remote, "config.yaml"))

    try:
        with ray_logs_to(run_dir / RAY_LOG, console=verbose):
            need = RunNeed.of(cfg)
            resources = init_ray(
                address, num_cpus=None if address else need.local_cpus(), quiet=not verbose, logging_level=logging.INFO
            )
            problem = need.unfit(resources)  # now, with numbers: Ray would wait forever
            if problem:
                raise TrainError(problem)
            _storage(storage.check_shared_storage, cfg.train.storage_path, storage.cluster_hosts())
            for source in cfg.data.labelled:  # every synthesis task reads the datasets itself
                _storage(
                    storage.check_shared_storage,
                    source.path,
                    storage.cluster_hosts(),
                    what="data.labelled path",
                    lost="training tasks on the other machines could not read it",
                )
            # Workers' log records reach this process through an actor on its node: no shared disk needed.
            records, sink = start_record_sink(run_dir / WORKER_LOG)
            trainer_ = trainer(cfg, run_dir, stop_after_epoch, records=records, remote=remote, datasets=datasets)
            if not quiet:
                log.info(
                    f"run {where}  (config hash {cfg.hash}, {cfg.train.num_workers} worker(s), "
                    f"{'GPU' if cfg.train.use_gpu else 'CPU'}, {int(resources.get('CPU', 0))} CPUs in the cluster)"
                )
            try:
                with RecordRelay(run_dir / WORKER_LOG) if not quiet else contextlib.nullcontext():
                    result = trainer_.fit()
            except Exception as e:  # TrainingFailedError carries the worker's traceback in its message
                raise TrainError(
                    f"training failed: {str(e).strip().splitlines()[-1]} (run {where}; "
                    f"fix the cause and resume with --resume {where})"
                ) from e
            finally:
                ray.kill(sink)
        return _finish(run_dir, result, time.perf_counter() - t0, remote)
    finally:
        if remote:  # the driver's files (logs, and on success best.safetensors, history, curves)
            try:
                upload_run(run_dir, remote)
            except storage.StorageError as e:
                log.warning(f"the run's files were not uploaded (they are in {run_dir}): {e}")


def trainer(
    cfg: Config,
    run_dir: Path,
    stop_after_epoch: int | None,
    *,
    origin: dict[str, Any] | None = None,
    callbacks: list[Any] | tuple[Any, ...] = (),
    records: str | None = None,
    remote: str | None = None,
    datasets: dict[str, str] | None = None,
) -> Any:
    """The ``TorchTrainer`` of a run in ``run_dir`` (its name and storage; ``remote``, the run's
    bucket URI, if it has one): ``dotseg train``'s, and a trainer-style sweep trial's (``origin``
    names the trial, ``callbacks`` report to Tune). ``records`` names the driver's record sink."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from dotseg.training.loop import LoopArgs, train_worker

    t = cfg.train
    return TorchTrainer(
        train_worker,  # type: ignore[arg-type]  # Train V2 returns its value as Result.return_value
        train_loop_config=LoopArgs(
            cfg=cfg,
            run_dir=run_dir,
            stop_after_epoch=stop_after_epoch,
            origin=dict(origin or {}),
            records=records,
            remote=remote,
            datasets=dict(datasets or {}),
        ).to_ray(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker={"CPU": t.cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name=run_dir.name,
            storage_path=storage.parent(remote) if remote else str(run_dir.parent),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=t.keep_checkpoints,
                checkpoint_score_attribute="labelled_dice" if cfg.data.labelled else "val_dice",  # stopping.monitored
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # type: ignore[call-arg]  # V2 RunConfig
            callbacks=list(callbacks),
        ),
        # NCCL for GPUs, gloo for CPU DDP.
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
    )


def _finish(run_dir: Path, result: Any, wall_s: float, remote: str | None = None) -> TrainResult:
    from dotseg.checkpoint import HISTORY_FILE, MODEL_FILE

    best_path, best_metrics = None, {}
    if result.best_checkpoints:
        ckpt, best_metrics = max(result.best_checkpoints, key=lambda cm: cm[1].get(monitored(cm[1]), -1.0))
        best_path = run_dir / "best.safetensors"
        with ckpt.as_directory() as d:  # a bucket's checkpoint is downloaded; a directory's is read in place
            copy_atomic(Path(d) / MODEL_FILE, best_path)
    history: list[dict[str, Any]] = []
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            history = json.loads((Path(d) / HISTORY_FILE).read_text())
        write_atomic(run_dir / "history.json", json.dumps(history, indent=1))
        if history:
            plot_history(history, run_dir / "curves.png")
    ret = result.return_value or {}
    return TrainResult(
        run_dir=run_dir,
        best_checkpoint=best_path,
        best_metrics=dict(best_metrics),
        history=history,
        stop_reason=ret.get("stop_reason", "completed"),
        wall_s=wall_s,
        remote=remote,
    )
