"""Configuration of a Ray Tune sweep over loss weights and attention variants."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from dotseg.configbase import NONEMPTY, NonNegInt, PositiveInt, Section, check


class SearchDim(Section):
    key: str
    """Full config key path to vary, e.g. ``loss.boundary.end`` or ``model.variant``."""
    kind: Literal["choice", "uniform", "loguniform", "grid"]
    """``choice``/``grid`` over ``values``; ``uniform``/``loguniform`` between values[0] and values[1]."""
    values: Annotated[tuple[Any, ...], NONEMPTY]
    """Candidates (choice, grid) or [low, high] (uniform, loguniform)."""

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.kind in ("uniform", "loguniform"):
            check(
                len(self.values) == 2 and all(isinstance(v, (int, float)) for v in self.values),
                "values",
                f"{self.kind} needs [low, high] numbers, got {list(self.values)}",
            )
            check(self.values[0] < self.values[1], "values", f"low must be < high, got {list(self.values)}")
            if self.kind == "loguniform":
                check(self.values[0] > 0, "values", "loguniform needs low > 0")
        return self


def _default_space() -> tuple[SearchDim, ...]:
    return (
        SearchDim(key="model.variant", kind="grid", values=("unet", "unet_gates", "unet_cbam", "attention_unet")),
        SearchDim(key="loss.boundary.end", kind="choice", values=(0.0, 0.25, 0.5, 1.0)),
        SearchDim(key="loss.bce.end", kind="uniform", values=(0.25, 1.0)),
    )


class TuneConfig(Section):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a plain name: never '..'
    """Sweep name: its directory under ``train.storage_path`` and its W&B group (default: sweep-<time>-<hash>)."""
    space: tuple[SearchDim, ...] = _default_space()
    """Dimensions of the search space; every key must exist in the config."""
    num_samples: PositiveInt = 1
    """Samples of the space (each grid point is repeated num_samples times)."""
    max_concurrent_trials: PositiveInt = 2
    """Trials running at once."""
    scheduler: Literal["asha", "fifo"] = "asha"
    """ASHA stops weak trials early; fifo runs every trial to the end."""
    grace_period: PositiveInt = 2
    """Epochs before ASHA may stop a trial."""
    reduction_factor: int = Field(2, ge=2)
    """ASHA's halving rate."""
    metric: str = "val_dice"
    """Reported metric to optimise."""
    mode: Literal["max", "min"] = "max"
    """Whether the metric is maximised or minimised."""
    seed: NonNegInt = 0
    """Seeds the sampling of choice/uniform/loguniform values (trial seeds are ``train.seed``, or a grid over it)."""
    trial_style: Literal["auto", "function", "trainer"] = "auto"
    """function: the training loop in the trial's own process; trainer: a TorchTrainer per trial
    (needed for train.num_workers > 1); auto picks function for one worker, trainer otherwise."""
    max_failures: NonNegInt = 1
    """Retries of an errored trial, from its last checkpoint (during the sweep and on --resume)."""

    @model_validator(mode="after")
    def _unique(self) -> Self:
        keys = [d.key for d in self.space]
        check(len(set(keys)) == len(keys), "space", f"a key appears twice: {keys}")
        return self

    @property
    def num_trials(self) -> int:
        """Trials the sweep runs: every grid point, ``num_samples`` times each."""
        n = self.num_samples
        for d in self.space:
            n *= len(d.values) if d.kind == "grid" else 1
        return n
