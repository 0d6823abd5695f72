"""Configuration of the compound Dice + BCE + boundary-Tversky loss and its per-epoch weights."""

from __future__ import annotations

from dataclasses import dataclass, field

from dotseg.configbase import check, check_range


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """A weight that moves linearly from ``start`` to ``end`` between two epochs (1-based, inclusive)
    and stays constant outside them."""

    start: float = 1.0
    """Value up to and including ``from_epoch``."""
    end: float = 1.0
    """Value from ``to_epoch`` on."""
    from_epoch: int = 1
    """First epoch of the ramp."""
    to_epoch: int | None = None
    """Last epoch of the ramp; null = the last training epoch."""

    def __post_init__(self) -> None:
        check_range(self.start, "start", 0.0)
        check_range(self.end, "end", 0.0)
        check_range(self.from_epoch, "from_epoch", 1)
        if self.to_epoch is not None:
            check(self.to_epoch >= self.from_epoch, "to_epoch",
                  f"must be >= from_epoch ({self.from_epoch}), got {self.to_epoch}")

    def at(self, epoch: int, total_epochs: int) -> float:
        """The weight at ``epoch`` (1-based) of a run of ``total_epochs``."""
        last = self.to_epoch if self.to_epoch is not None else total_epochs
        if epoch <= self.from_epoch or last <= self.from_epoch:
            return self.start if epoch <= self.from_epoch else self.end
        if epoch >= last:
            return self.end
        t = (epoch - self.from_epoch) / (last - self.from_epoch)
        return self.start + t * (self.end - self.start)


@dataclass(frozen=True, kw_only=True, slots=True)
class LossConfig:
    dice: Schedule = field(default_factory=lambda: Schedule(start=1.0, end=1.0))
    """Weight alpha of the soft Dice loss (the seed: 1.0 constant)."""
    bce: Schedule = field(default_factory=lambda: Schedule(start=1.0, end=0.5))
    """Weight beta of BCE-with-logits (the seed: 1.0 -> 0.5 over training)."""
    boundary: Schedule = field(default_factory=lambda: Schedule(start=0.0, end=0.5, from_epoch=20, to_epoch=60))
    """Weight gamma of the boundary Tversky loss (the seed: 0 -> 0.5 over epochs 20-60)."""
    tversky_alpha: float = 0.7
    """Tversky weight of false positives in the boundary band."""
    tversky_beta: float = 0.3
    """Tversky weight of false negatives in the boundary band."""
    boundary_width: int = 3
    """Half-width in pixels of the boundary band around the ground-truth outline."""
    smooth: float = 1.0
    """Additive smoothing of the Dice and Tversky ratios."""

    def __post_init__(self) -> None:
        check_range(self.tversky_alpha, "tversky_alpha", 0.0, 1.0)
        check_range(self.tversky_beta, "tversky_beta", 0.0, 1.0)
        check(self.tversky_alpha + self.tversky_beta > 0, "tversky_alpha",
              "tversky_alpha + tversky_beta must be > 0")
        check_range(self.boundary_width, "boundary_width", 1, 64)
        check_range(self.smooth, "smooth", 0.0)
