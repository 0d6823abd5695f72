"""The root config: one section per component, composed, loaded from YAML plus ``--set`` overrides.

    cfg = load_config("configs/cpu.yaml", ["train.lr=3e-4"])
    cfg.synthesis.size, cfg.train.lr, config_hash(cfg)

A function receives only its own section (``make_batch(cfg.synthesis, ...)``). Cross-section
consistency (a curriculum phase that would start after the last epoch, a sweep key that does not
exist) is checked here, once, so every entry point rejects the same mistakes the same way.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dotseg.configbase import (ConfigError, apply_override, check, config_hash, from_dict, load_yaml, set_path,
                               to_dict, type_hints)
from dotseg.curriculum import CurriculumConfig
from dotseg.losses.config import LossConfig
from dotseg.models.config import ModelConfig
from dotseg.serving.config import ServeConfig
from dotseg.synthesis.config import SynthesisConfig
from dotseg.training.config import DataConfig, TrainConfig
from dotseg.tuning.config import TuneConfig

__all__ = ["Config", "ConfigError", "load_config", "config_hash", "to_dict", "dump_yaml", "CONFIG_DIR"]

def _shipped_configs() -> Path:
    from importlib.resources import files

    packaged = Path(str(files(__package__ or "dotseg") / "configs"))
    # A checkout where git wrote the symlink as a text file: its configs/ is one level up.
    return packaged.resolve() if packaged.is_dir() else Path(__file__).resolve().parent.parent / "configs"


#: The shipped YAML files, the package's ``configs`` resources: in a wheel, copies made at build time
#: (pyproject.toml's package-data); in a checkout or an editable install, ``dotseg/configs`` is a
#: symlink to the repository's top-level ``configs/``, so the same files.
CONFIG_DIR = _shipped_configs()


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    """Synthetic dot-blob images: shapes, dots, noise."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The segmentation network."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Compound loss and its weight schedules."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    """Noise curriculum phases."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, validation, checkpoints, W&B."""
    data: DataConfig = field(default_factory=DataConfig)
    """Ray Data synthesis parallelism."""
    tune: TuneConfig = field(default_factory=TuneConfig)
    """Ray Tune sweeps."""
    serve: ServeConfig = field(default_factory=ServeConfig)
    """Ray Serve deployment."""

    def __post_init__(self) -> None:
        epochs = self.train.epochs
        for i, phase in enumerate(self.curriculum.phases):
            check(phase.start_epoch <= epochs, f"curriculum.phases[{i}].start_epoch",
                  f"phase {phase.name!r} starts at epoch {phase.start_epoch}, after the last epoch "
                  f"(train.epochs={epochs}); lower it or raise train.epochs")
        for name in ("dice", "bce", "boundary"):
            sched = getattr(self.loss, name)
            check(sched.from_epoch <= epochs, f"loss.{name}.from_epoch",
                  f"ramp starts at epoch {sched.from_epoch}, after the last epoch (train.epochs={epochs})")
        for i, dim in enumerate(self.tune.space):
            check(_has_key(Config, dim.key), f"tune.space[{i}].key",
                  f"{dim.key!r} is not a config key (use a full path such as loss.boundary.end)")
            check(not dim.key.startswith("tune."), f"tune.space[{i}].key", "a sweep cannot vary tune.* itself")

    @property
    def hash(self) -> str:
        return config_hash(self)

    def replace(self, **overrides: Any) -> "Config":
        """A copy with dotted keys replaced, checked like ``--set``: ``cfg.replace(**{"train.lr": 1e-3})``."""
        data = to_dict(self)
        for key, value in overrides.items():
            set_path(data, key, value, Config)
        return from_dict(Config, data)


def _has_key(cls: type, key: str) -> bool:
    tp: Any = cls
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp):
            return False
        names = {f.name: f for f in dataclasses.fields(tp)}
        if part not in names:
            return False
        tp = type_hints(tp)[part]
    return not dataclasses.is_dataclass(tp)


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


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``KEY=VALUE`` overrides, all checked."""
    data: dict[str, Any] = {}
    if path is not None:
        p = resolve_path(path)
        data = load_yaml(p.read_text(), source=str(p))
    data = copy.deepcopy(data)
    for item in overrides:
        apply_override(data, item, Config)
    return from_dict(Config, data)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a resolved config (from a checkpoint or a run directory), checked like a YAML file."""
    return from_dict(Config, data)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=100)
