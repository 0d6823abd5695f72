"""What a checkpoint says about itself: the metadata types, the model identity and the error type.

No torch, no root config: the types here are what every reader of a checkpoint shares, and a new
config section never ripples into them (:class:`RunConfig` is the little a writer reads of a run).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from dotseg.configbase import Section, config_hash
from dotseg.models.config import ModelConfig
from dotseg.normalize import NORMALIZATION
from dotseg.synthesis.config import SynthesisConfig

FORMAT: Literal["dotseg-checkpoint"] = "dotseg-checkpoint"
#: Version of the layout described in :mod:`dotseg.checkpoint`. Raise it when the meaning of a field
#: or of a tensor name changes, and keep reading the older versions.
FORMAT_VERSION = 2


class CheckpointError(ValueError):
    """A file is not a usable dotseg checkpoint; the one-line message says what it is and what was expected."""


class _TrainSection(Protocol):
    @property
    def threshold(self) -> float: ...


class RunConfig(Protocol):
    """What a checkpoint writer reads of a run's root config (:class:`dotseg.config.Config`):
    duck-typed, so that the checkpoint code does not import the root config."""

    @property
    def model(self) -> ModelConfig: ...
    @property
    def synthesis(self) -> SynthesisConfig: ...
    @property
    def train(self) -> _TrainSection: ...
    @property
    def run_id(self) -> str: ...
    @property
    def hash(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...


class ModelContract(Section):
    """What a :class:`~dotseg.inference.predictor.Predictor` needs to reproduce a model's predictions."""

    model: ModelConfig
    """The network the weights belong to."""
    normalization: str = NORMALIZATION
    """Version of the input mapping the model was trained with (:data:`dotseg.normalize.NORMALIZATION`)."""
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Decision threshold on the foreground probability."""
    input_size: int = Field(512, ge=32, le=4096)
    """Side (px) of the images it was trained on: predictions are best at this scale."""

    @classmethod
    def of(cls, cfg: RunConfig, threshold: float | None = None) -> ModelContract:
        """The contract of a model trained under ``cfg`` (threshold: ``cfg.train.threshold`` unless given)."""
        return cls(
            model=cfg.model,
            threshold=cfg.train.threshold if threshold is None else threshold,
            input_size=cfg.synthesis.size,
        )


class Provenance(BaseModel):
    """Where a model came from. Lenient on purpose: unknown keys are kept, nothing here blocks a load."""

    model_config = ConfigDict(frozen=True, extra="allow")

    config: dict[str, Any] = {}
    """The resolved root config of the run, as written by the dotseg that trained it."""
    config_hash: str | None = None
    """``Config.hash`` of that config."""
    metrics: dict[str, Any] = {}
    """Validation metrics of this model, e.g. ``{"val_dice": 0.88}``."""
    created: str | None = None
    """ISO-8601 UTC time of writing."""
    dotseg_version: str | None = None
    """Version of the package that wrote it."""
    sweep: str | None = None
    """For a promoted sweep trial: the sweep's directory name."""
    trial: str | None = None
    """For a promoted sweep trial: the trial's name."""
    datasets: dict[str, str] = {}
    """For a run fine-tuned on users' labelled images (``data.labelled``): each dataset's path and
    content digest (:func:`dotseg.labelled.pairs_digest`)."""


class CheckpointMeta(BaseModel):
    """The decoded metadata of a checkpoint (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["dotseg-checkpoint"] = FORMAT
    format_version: int = FORMAT_VERSION
    contract: ModelContract
    run_id: str
    epoch: int = Field(ge=0)
    model_id: str
    provenance: Provenance = Provenance()


def model_identity(contract: ModelContract, run_id: str, epoch: int) -> str:
    """The model's identity: the same weights-defining settings give the same id wherever the run was stored."""
    return config_hash({"contract": contract.to_dict(), "run_id": run_id, "epoch": epoch})
