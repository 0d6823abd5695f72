"""The root config: one section per component, composed, loaded from YAML plus ``--set`` overrides.

    cfg = load_config("configs/cpu.yaml", ["train.lr=3e-4"])
    cfg.synthesis.size, cfg.train.lr, cfg.hash, cfg.run_id

A function receives only its own section (``make_batch(cfg.synthesis, ...)``). Cross-section
consistency (a curriculum phase that would start after the last epoch, a sweep key that does not
exist) is checked here, once, so every entry point rejects the same mistakes the same way.

Two digests identify what a config makes:

* :attr:`Config.hash` covers every value: two configs with the same hash are the same config.
* :attr:`Config.run_id` covers only what changes the trained weights (:data:`NOT_IN_RUN_IDENTITY`
  lists what it leaves out: where runs are stored, logging, serving, sweeps, parallelism knobs
  of the synthesis pipeline). Two runs that differ only in ``train.storage_path`` or the W&B
  project have the same run identity; resume refuses a change to it (except
  :data:`CHANGEABLE_ON_RESUME`).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import model_validator

from dotseg.baseline.config import BaselineConfig
from dotseg.configbase import (
    ConfigError,
    Section,
    apply_override,
    check,
    config_hash,
    dict_value,
    drop_paths,
    has_key,
    load_yaml,
    set_path,
    to_dict,
)
from dotseg.curriculum import CurriculumConfig
from dotseg.data import DataConfig
from dotseg.losses.config import LossConfig
from dotseg.models.config import ModelConfig
from dotseg.serving.config import ServeConfig
from dotseg.synthesis.config import SynthesisConfig
from dotseg.training.config import TrainConfig
from dotseg.tuning.config import TuneConfig

__all__ = [
    "Override",
    "Config",
    "ConfigError",
    "load_config",
    "config_from_dict",
    "config_hash",
    "run_identity",
    "check_space",
    "to_dict",
    "dump_yaml",
    "CONFIG_DIR",
    "NOT_IN_RUN_IDENTITY",
    "CHANGEABLE_ON_RESUME",
]


#: The Serve application builder that Serve config files name.
SERVE_IMPORT = "serve_app:build"


def _shipped_configs() -> Path:
    from importlib.resources import files

    packaged = Path(str(files(__package__ or "dotseg") / "configs"))
    # A checkout where git wrote the symlink as a text file: its configs/ is one level up.
    return packaged.resolve() if packaged.is_dir() else Path(__file__).resolve().parent.parent / "configs"


#: The shipped YAML files, the package's ``configs`` resources: in a wheel, copies made at build time
#: (pyproject.toml's package-data); in a checkout or an editable install, ``dotseg/configs`` is a
#: symlink to the repository's top-level ``configs/``, so the same files.
CONFIG_DIR = _shipped_configs()

#: Keys that do not change the trained weights, left out of :func:`run_identity`: where and how a
#: run is stored and logged, how fast synthesis runs, when it stops (the epoch is part of a model's
#: identity anyway), the validation set and threshold (they judge weights, they do not make them),
#: and the sections of other components.
NOT_IN_RUN_IDENTITY: tuple[str, ...] = (
    "train.storage_path",
    "train.wandb",
    "train.keep_checkpoints",
    "train.max_failures",
    "train.cpus_per_worker",
    "train.torch_threads",
    "train.early_stopping",
    "train.collapse",
    "train.val_samples",
    "train.threshold",
    # data: how samples are made, not which (data.labelled is identity, below); augment predates it
    "data.synth_tasks",
    "data.rows_per_block",
    "data.cpus_per_task",
    "data.prefetch_batches",
    "data.augment",
    "data.priority",
    "baseline",
    "tune",
    "serve",
)
#: Keys added after runs and checkpoints were made (the synthesis variation fields, fine-tuning), whose defaults
#: reproduce exactly what those runs did: at their default they stay out of the run identity, so an
#: existing run, its checkpoints and a config that leaves these keys alone keep one identity.
IDENTITY_NEUTRAL: tuple[str, ...] = (
    "synthesis.shape.kinds",
    "synthesis.shape.exponent",
    "synthesis.shape.position",
    "synthesis.dots.profile",
    "synthesis.dots.aspect",
    "synthesis.dots.amplitude",
    "synthesis.noise.correlation",
    "synthesis.image",
    "synthesis.seed_fraction",
    "train.init",
    "data.labelled",
    "data.labelled_fraction",
    "data.labelled_holdout",
    "loss.resolution",
)
#: Run-identity keys a resumed run may change: extending (or shortening) a run, and moving it to
#: more workers or to GPUs. Everything else in the identity must stay, or the checkpoint would be
#: continued under settings it was not trained with (the seed's config drift).
CHANGEABLE_ON_RESUME: tuple[str, ...] = ("train.epochs", "train.num_workers", "train.use_gpu", "train.amp")


class Config(Section):
    synthesis: SynthesisConfig = SynthesisConfig()
    """Synthetic dot-blob images: shapes, dots, noise."""
    model: ModelConfig = ModelConfig()
    """The segmentation network."""
    loss: LossConfig = LossConfig()
    """Compound loss and its weight schedules."""
    curriculum: CurriculumConfig = CurriculumConfig()
    """Noise curriculum phases."""
    train: TrainConfig = TrainConfig()
    """Optimisation, validation, checkpoints, W&B."""
    data: DataConfig = DataConfig()
    """Ray Data synthesis parallelism."""
    baseline: BaselineConfig = BaselineConfig()
    """The classical baseline that evaluation compares the model with."""
    tune: TuneConfig = TuneConfig()
    """Ray Tune sweeps."""
    serve: ServeConfig = ServeConfig()
    """Ray Serve deployment."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        epochs = self.train.epochs
        for i, phase in enumerate(self.curriculum.phases):
            check(
                phase.start_epoch <= epochs,
                f"curriculum.phases[{i}].start_epoch",
                f"phase {phase.name!r} starts at epoch {phase.start_epoch}, after the last epoch "
                f"(train.epochs={epochs}); lower it or raise train.epochs",
            )
        for name in ("dice", "bce", "boundary"):
            sched = getattr(self.loss, name)
            check(
                sched.from_epoch <= epochs,
                f"loss.{name}.from_epoch",
                f"ramp starts at epoch {sched.from_epoch}, after the last epoch (train.epochs={epochs})",
            )
        multiple = 2 ** (self.model.depth - 1) * self.model.downscale
        check(
            self.loss.resolution == "input" or self.model.downscale == 1 or self.synthesis.size % multiple == 0,
            "loss.resolution",
            f"the loss on the network's grid needs synthesis.size ({self.synthesis.size}) to be a multiple of "
            f"2**(model.depth-1) * model.downscale = {multiple}; pick such a size or use loss.resolution=input",
        )
        check(
            not (self.tune.trial_style == "function" and self.train.num_workers > 1),
            "tune.trial_style",
            f"function trials run in one process, but train.num_workers={self.train.num_workers}; "
            f"use tune.trial_style=trainer (or auto) for DDP trials",
        )
        check(
            self.tune.metric not in ("labelled_dice", "labelled_iou") or bool(self.data.labelled),
            "tune.metric",
            f"{self.tune.metric} is reported only by runs that train on labelled images; set data.labelled "
            f"or optimise val_dice",
        )
        for i, dim in enumerate(self.tune.space):
            check(
                has_key(Config, dim.key),
                f"tune.space[{i}].key",
                f"{dim.key!r} is not a config key (use a full path such as loss.boundary.end)",
            )
            check(not dim.key.startswith("tune."), f"tune.space[{i}].key", "a sweep cannot vary tune.* itself")
        return self

    @property
    def hash(self) -> str:
        """Digest of every value (see the module docstring)."""
        return config_hash(self)

    @property
    def run_id(self) -> str:
        """Digest of what changes the trained weights (see the module docstring)."""
        return run_identity(self.to_dict())


def check_space(cfg: Config) -> Config:
    """``cfg`` if every value its sweep may give a trial (each choice, both bounds of a range) makes
    a valid config, else a :class:`ConfigError` naming the first that does not. Outside the
    validator: a trial's config is a whole config (a value may clash with another section, e.g. a
    curriculum phase after a swept ``train.epochs``), built here once per value, never recursively."""
    base = {**cfg.to_dict(), "tune": {"space": []}}
    for i, dim in enumerate(cfg.tune.space):
        for value in dim.values:
            data = copy.deepcopy(base)
            try:
                set_path(data, dim.key, value, Config)
                Config.from_dict(data)
            except ConfigError as e:
                raise ConfigError(f"tune.space[{i}].values: {dim.key}={value!r} is not valid: {e}") from None
    return cfg


def run_identity(data: dict[str, Any]) -> str:
    """The run identity of a resolved config in dict form (as stored in checkpoints and runs)."""
    defaults = _neutral_defaults()
    neutral = tuple(k for k in IDENTITY_NEUTRAL if dict_value(data, k, _MISSING) in (_MISSING, defaults[k]))
    kept = drop_paths(data, NOT_IN_RUN_IDENTITY + neutral)
    if kept.get("data") == {}:  # no labelled data: no data section, as before data.labelled existed
        del kept["data"]
    return config_hash(kept)


_MISSING = object()


@functools.cache
def _neutral_defaults() -> dict[str, Any]:
    """The :data:`IDENTITY_NEUTRAL` keys' defaults in dict form (lists, as stored)."""
    data = Config().to_dict()
    return {k: dict_value(data, k, _MISSING) for k in IDENTITY_NEUTRAL}


def resolve_path(path: str | Path) -> Path:
    """A config path as given, or a bare name found in the shipped ``configs/`` (``cpu`` -> configs/cpu.yaml)."""
    p = Path(path)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.exists():
            return cand
    shipped = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))) if CONFIG_DIR.exists() else "none"
    raise ConfigError(f"config file {str(path)!r} not found (shipped configs: {shipped})")


#: A config override: ``"KEY=VALUE"`` (the value parsed as YAML, as ``--set`` gives it) or ``(KEY, value)``
#: (a value as it is: a flag's path, port or count, never re-parsed).
Override = str | tuple[str, Any]


def load_config(
    path: str | Path | None = None, overrides: Sequence[Override] = (), base: Config | None = None
) -> Config:
    """The YAML file at ``path`` over the defaults (or, without a file, the config ``base``), then
    the overrides in order, all checked."""
    data: dict[str, Any] = base.to_dict() if base is not None else {}
    if path is not None:
        p = resolve_path(path)
        data = load_yaml(p.read_text(), source=str(p))
        if "applications" in data:  # a Ray Serve config file (configs/serve.yaml): its app's args
            data = serve_file_section(data, str(p))
    data = copy.deepcopy(data)
    for item in overrides:
        if isinstance(item, tuple):
            set_path(data, item[0], item[1], Config)
        else:
            apply_override(data, item, Config)
    return check_space(Config.from_dict(data))


def serve_file_section(data: dict[str, Any], source: str = "<serve config>") -> dict[str, Any]:
    """The dotseg config in a Ray Serve config file: the ``args`` of the application whose import path
    is ``serve_app:build``, with ``http_options`` host, port and request timeout and its route prefix."""
    apps = [a for a in data.get("applications") or [] if isinstance(a, dict) and a.get("import_path") == SERVE_IMPORT]
    if len(apps) != 1:
        raise ConfigError(
            f"{source}: a Serve config file needs exactly one application with "
            f"import_path {SERVE_IMPORT!r}, found {len(apps)}"
        )
    serve = dict(apps[0].get("args") or {})
    http = data.get("http_options") or {}
    serve.update({k: http[k] for k in ("host", "port", "request_timeout_s") if k in http})
    if "route_prefix" in apps[0]:
        serve["route_prefix"] = apps[0]["route_prefix"]
    return {"serve": serve}


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a resolved config (from a run directory or a checkpoint's provenance), checked like a YAML file."""
    return Config.from_dict(data)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=100)
