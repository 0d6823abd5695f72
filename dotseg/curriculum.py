"""The noise curriculum: which phase, noise_scale and mixed_prob apply at each epoch.

Epochs are 1-based everywhere a user sees them (the seed's "Easy 1-5, Medium 6-20, ...").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dotseg.configbase import check, check_range

if TYPE_CHECKING:
    from dotseg.losses.config import LossConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class Phase:
    name: str
    """Label shown in logs and W&B."""
    start_epoch: int
    """First epoch of the phase (1-based); the phase lasts until the next one starts."""
    noise_scale: float
    """0 = mildest noise parameters only, 1 = the full range up to the harshest."""
    mixed_prob: float
    """Probability that a sample gets 2-3 composed noise types instead of one."""

    def __post_init__(self) -> None:
        check(bool(self.name), "name", "must not be empty")
        check_range(self.start_epoch, "start_epoch", 1)
        check_range(self.noise_scale, "noise_scale", 0.0, 1.0)
        check_range(self.mixed_prob, "mixed_prob", 0.0, 1.0)


def _seed_phases() -> tuple[Phase, ...]:
    return (
        Phase(name="easy", start_epoch=1, noise_scale=0.10, mixed_prob=0.0),
        Phase(name="medium", start_epoch=6, noise_scale=0.35, mixed_prob=0.2),
        Phase(name="hard", start_epoch=21, noise_scale=0.70, mixed_prob=0.4),
        Phase(name="extreme", start_epoch=46, noise_scale=1.00, mixed_prob=0.6),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class CurriculumConfig:
    phases: tuple[Phase, ...] = field(default_factory=_seed_phases)
    """Phases in order; the first starts at epoch 1."""

    def __post_init__(self) -> None:
        check(len(self.phases) > 0, "phases", "needs at least one phase")
        check(self.phases[0].start_epoch == 1, "phases[0].start_epoch",
              f"the first phase must start at epoch 1, got {self.phases[0].start_epoch}")
        for i in range(1, len(self.phases)):
            check(self.phases[i].start_epoch > self.phases[i - 1].start_epoch, f"phases[{i}].start_epoch",
                  f"must be after phases[{i - 1}].start_epoch ({self.phases[i - 1].start_epoch}), "
                  f"got {self.phases[i].start_epoch}")

    def phase_at(self, epoch: int) -> Phase:
        """The phase in force at ``epoch`` (1-based)."""
        current = self.phases[0]
        for p in self.phases:
            if p.start_epoch <= epoch:
                current = p
        return current


def schedule_table(phases: CurriculumConfig, loss: "LossConfig", epochs: int) -> list[dict[str, object]]:
    """One row per epoch: phase, noise_scale, mixed_prob and the loss weights in force."""
    rows = []
    for epoch in range(1, epochs + 1):
        p = phases.phase_at(epoch)
        rows.append({"epoch": epoch, "phase": p.name, "noise_scale": p.noise_scale, "mixed_prob": p.mixed_prob,
                     "dice": loss.dice.at(epoch, epochs), "bce": loss.bce.at(epoch, epochs),
                     "boundary": loss.boundary.at(epoch, epochs)})
    return rows
