"""One sweep trial: its style and resources, the search space in Tune's terms, its name, and the
function Tune runs, which trains it with the same loop as ``dotseg train``.

Two trial styles run the same per-worker loop:

* ``function``: the loop runs in the trial's own process (a Tune function trainable). No Train
  controller, worker group or placement group per trial: the cheapest, for single-worker trials.
* ``trainer``: the trial builds a ``TorchTrainer`` with ``TuneReportCallback`` (Ray 2.60's way to
  put Train inside Tune), for DDP trials (``train.num_workers > 1``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dotseg.config import Config, config_from_dict, dump_yaml
from dotseg.files import write_atomic
from dotseg.training.resources import RunNeed
from dotseg.tuning.config import SearchDim
from dotseg.tuning.layout import TRIAL_FILE

#: CPU a trainer-style trial's driver reserves: it only waits on its Train run. Tune refuses {"CPU": 0}.
DRIVER_CPU = 0.01


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


def trial_need(cfg: Config, style: str) -> RunNeed:
    """What one running trial takes: its workers, its synthesis tasks, a trainer's driver."""
    return RunNeed.of(cfg, DRIVER_CPU if style == "trainer" else 0.0)


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

    from dotseg.logs import records_to
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
