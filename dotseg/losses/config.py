"""Configuration of the compound Dice + BCE + boundary-Tversky loss and its per-epoch weights."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from dotseg.configbase import NonNegFloat, PositiveInt, Section, check


class Schedule(Section):
    """A weight that moves linearly from ``start`` to ``end`` between two epochs (1-based, inclusive)
    and stays constant outside them."""

    start: NonNegFloat = 1.0
    """Value up to and including ``from_epoch``."""
    end: NonNegFloat = 1.0
    """Value from ``to_epoch`` on."""
    from_epoch: PositiveInt = 1
    """First epoch of the ramp."""
    to_epoch: int | None = None
    """Last epoch of the ramp; null = the last training epoch."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.to_epoch is not None:
            check(
                self.to_epoch >= self.from_epoch,
                "to_epoch",
                f"must be >= from_epoch ({self.from_epoch}), got {self.to_epoch}",
            )
        return self

    def at(self, epoch: int, total_epochs: int) -> float:
        """The weight at ``epoch`` (1-based) of a run of ``total_epochs``."""
        last = self.to_epoch if self.to_epoch is not None else total_epochs
        if epoch <= self.from_epoch or last <= self.from_epoch:
            return self.start if epoch <= self.from_epoch else self.end
        if epoch >= last:
            return self.end
        t = (epoch - self.from_epoch) / (last - self.from_epoch)
        return self.start + t * (self.end - self.start)


class LossConfig(Section):
    dice: Schedule = Schedule(start=1.0, end=1.0)
    """Weight alpha of the soft Dice loss (the seed: 1.0 constant)."""
    bce: Schedule = Schedule(start=1.0, end=0.5)
    """Weight beta of BCE-with-logits (the seed: 1.0 -> 0.5 over training)."""
    boundary: Schedule = Schedule(start=0.0, end=0.5, from_epoch=20, to_epoch=60)
    """Weight gamma of the boundary Tversky loss (the seed: 0 -> 0.5 over epochs 20-60)."""
    tversky_alpha: float = Field(0.7, ge=0.0, le=1.0)
    """Tversky weight of false positives in the boundary band."""
    tversky_beta: float = Field(0.3, ge=0.0, le=1.0)
    """Tversky weight of false negatives in the boundary band."""
    boundary_width: int = Field(3, ge=1, le=64)
    """Half-width in pixels of the boundary band around the ground-truth outline."""
    smooth: NonNegFloat = 1.0
    """Additive smoothing of the Dice and Tversky ratios."""
    resolution: Literal["input", "network"] = "input"
    """Where the loss compares: ``input`` = the logits upsampled to the image's size against the mask
    (the seed's); ``network`` = the network's own output grid (1/``model.downscale`` of the image; the
    same as ``input`` at downscale 1) against the mask's area fraction per cell, with the boundary
    band ``boundary_width / downscale`` cells wide (at least 1). It skips the upsampling and computes
    the loss on downscale**2 fewer pixels; validation and the threshold stay at the input size."""

    @model_validator(mode="after")
    def _tversky(self) -> Self:
        check(self.tversky_alpha + self.tversky_beta > 0, "tversky_alpha", "tversky_alpha + tversky_beta must be > 0")
        return self
