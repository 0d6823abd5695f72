"""The noise curriculum: which phase, noise_scale and mixed_prob apply at each epoch.

Epochs are 1-based everywhere a user sees them (the seed's "Easy 1-5, Medium 6-20, ...").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Self

from pydantic import Field, model_validator

from dotseg.configbase import NONEMPTY, PositiveInt, Probability, Section, check

if TYPE_CHECKING:
    from dotseg.losses.config import LossConfig


class Phase(Section):
    name: str = Field(min_length=1)
    """Label shown in logs and W&B."""
    start_epoch: PositiveInt
    """First epoch of the phase (1-based); the phase lasts until the next one starts."""
    noise_scale: Probability
    """0 = mildest noise parameters only, 1 = the full range up to the harshest."""
    mixed_prob: Probability
    """Probability that a sample gets 2-3 composed noise types instead of one."""


def _seed_phases() -> tuple[Phase, ...]:
    return (
        Phase(name="easy", start_epoch=1, noise_scale=0.10, mixed_prob=0.0),
        Phase(name="medium", start_epoch=6, noise_scale=0.35, mixed_prob=0.2),
        Phase(name="hard", start_epoch=21, noise_scale=0.70, mixed_prob=0.4),
        Phase(name="extreme", start_epoch=46, noise_scale=1.00, mixed_prob=0.6),
    )


class CurriculumConfig(Section):
    phases: Annotated[tuple[Phase, ...], NONEMPTY] = _seed_phases()
    """Phases in order; the first starts at epoch 1."""

    @model_validator(mode="after")
    def _in_order(self) -> Self:
        check(
            self.phases[0].start_epoch == 1,
            "phases[0].start_epoch",
            f"the first phase must start at epoch 1, got {self.phases[0].start_epoch}",
        )
        for i in range(1, len(self.phases)):
            check(
                self.phases[i].start_epoch > self.phases[i - 1].start_epoch,
                f"phases[{i}].start_epoch",
                f"must be after phases[{i - 1}].start_epoch ({self.phases[i - 1].start_epoch}), "
                f"got {self.phases[i].start_epoch}",
            )
        return self

    def phase_at(self, epoch: int) -> Phase:
        """The phase in force at ``epoch`` (1-based)."""
        current = self.phases[0]
        for p in self.phases:
            if p.start_epoch <= epoch:
                current = p
        return current


def schedule_table(phases: CurriculumConfig, loss: LossConfig, epochs: int) -> list[dict[str, object]]:
    """One row per epoch: phase, noise_scale, mixed_prob and the loss weights in force."""
    rows = []
    for epoch in range(1, epochs + 1):
        p = phases.phase_at(epoch)
        rows.append(
            {
                "epoch": epoch,
                "phase": p.name,
                "noise_scale": p.noise_scale,
                "mixed_prob": p.mixed_prob,
                "dice": loss.dice.at(epoch, epochs),
                "bce": loss.bce.at(epoch, epochs),
                "boundary": loss.boundary.at(epoch, epochs),
            }
        )
    return rows
