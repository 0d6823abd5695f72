"""The sweep driver: a Ray Tune experiment whose trials are dotseg training runs
(:mod:`~dotseg.tuning.trial`), its directory laid out by :mod:`~dotseg.tuning.layout`, its
console lines by :mod:`~dotseg.tuning.events`, Tune's state kept whole by :mod:`~dotseg.tuning.state`.

How many trials run at once is derived from the cluster before anything starts, with the same
accounting as ``dotseg train`` (:class:`~dotseg.training.resources.RunNeed`), so a sweep can never
wait forever for resources that will not come.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotseg.config import Config, check_space, dump_yaml
from dotseg.configbase import ConfigError
from dotseg.files import write_atomic
from dotseg.training.run import TrainError, check_labelled
from dotseg.tuning.layout import SWEEP_FILE, SweepError, new_sweep_dir, sweep_config
from dotseg.tuning.state import repair_state
from dotseg.tuning.trial import param_space, run_trial, trial_name, trial_need, trial_resources, trial_style

__all__ = ["SweepError", "SweepResult", "concurrency", "sweep", "sweep_config"]

log = logging.getLogger("dotseg.sweep")


@dataclass(frozen=True, slots=True)
class SweepResult:
    sweep_dir: Path
    rows: list[dict[str, Any]]
    """One row per trial, best first (:func:`dotseg.tuning.results.collect`)."""
    wall_s: float


def concurrency(cfg: Config, style: str, resources: dict[str, float]) -> int:
    """Trials that can run at once on a cluster with ``resources``: at most
    ``tune.max_concurrent_trials``, never more than fit; an error with the numbers if none fits."""
    need = trial_need(cfg, style)
    problem = need.unfit(resources)
    if problem:
        raise SweepError(f"one trial cannot start: {problem}")
    return max(1, min(cfg.tune.max_concurrent_trials, need.how_many_fit(resources), cfg.tune.num_trials))


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
    from dotseg.logs import ray_logs_to
    from dotseg.runtime import init_ray
    from dotseg.tuning import results
    from dotseg.tuning.events import TrialEvents

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
    try:  # every trial's config valid (load_config checked a YAML sweep; a Config built in code is checked here)
        check_space(cfg)
    except ConfigError as e:
        raise SweepError(str(e)) from None
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
            num_cpus=None
            if address
            else trial_need(cfg, style).local_cpus(min(tc.max_concurrent_trials, tc.num_trials)),
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
                    callbacks=[TrialEvents(cfg, sweep_dir, epochs, quiet)],
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
