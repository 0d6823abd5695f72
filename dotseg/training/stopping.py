"""When a run stops: the loop's state between epochs, early stopping and the blank-mask guard.

Pure functions of the epoch's validation metrics and the previous state, so every rule is a
millisecond unit test and every DDP rank, given the same all-reduced metrics, takes the same
decision (a rank that stopped alone would leave the others waiting in an all-reduce forever).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from dotseg.training.config import CollapseGuardConfig, EarlyStoppingConfig

#: Why a run ended. ``paused`` (``--stop-after-epoch``) and ``completed`` runs can be resumed or
#: extended; ``early_stopping`` and ``collapse`` stay stopped.
StopReason = Literal["completed", "paused", "early_stopping", "collapse"]
FINAL: tuple[StopReason, ...] = ("early_stopping", "collapse")


@dataclass(frozen=True, slots=True)
class LoopState:
    """What the per-worker loop carries from one epoch to the next (saved with every checkpoint)."""

    epoch: int = 0
    """Last finished epoch (0 before the first)."""
    best_dice: float = -1.0
    """Best validation Dice so far."""
    bad_epochs: int = 0
    """Epochs in a row without an improvement of at least ``min_delta``."""
    collapsed: int = 0
    """Epochs in a row that looked like a blank-mask collapse."""
    stop_reason: StopReason = "completed"
    """Why the run stopped after ``epoch`` (``completed`` while it runs)."""
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    """One metrics dict per finished epoch."""

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: the training-state file is read back with ``torch.load(weights_only=True)``."""
        return {**dataclasses.asdict(self), "history": list(self.history)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        """Back from :meth:`to_dict` (and from the dict dotseg 0.1 saved, which had no ``stop_reason``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        state = {k: v for k, v in data.items() if k in known}
        return cls(**{**state, "history": tuple(state.get("history", ()))})


def first_epoch(state: LoopState) -> int:
    """Where a (resumed) loop starts: after the last finished epoch, never again after a final stop."""
    return state.epoch + 1 if state.stop_reason not in FINAL else 1 << 30


def monitored(metrics: dict[str, Any]) -> str:
    """The metric early stopping and the best checkpoint follow: the Dice on the held-out part of
    the user's labelled images when the run trains on some (``data.labelled``), else the
    synthetic validation Dice."""
    return "labelled_dice" if "labelled_dice" in metrics else "val_dice"


def is_collapsed(epoch: int, clean_dice: float, fg_ratio: float, guard: CollapseGuardConfig) -> bool:
    """The seed's blank-mask failure: clean-image Dice or predicted foreground far too low, after the grace epochs."""
    return epoch > guard.grace_epochs and (clean_dice < guard.min_clean_dice or fg_ratio < guard.min_foreground_ratio)


def after_epoch(
    state: LoopState,
    metrics: dict[str, Any],
    *,
    early: EarlyStoppingConfig,
    guard: CollapseGuardConfig,
    epochs: int,
    stop_after: int | None = None,
) -> LoopState:
    """The state after an epoch with these metrics (``epoch``, ``val_dice`` or ``labelled_dice``
    (:func:`monitored`), ``clean_dice``,
    ``clean_fg_ratio``), including whether the run stops now and why. ``metrics`` gains
    ``collapsed_epochs`` in the history."""
    epoch = int(metrics["epoch"])
    score = float(metrics[monitored(metrics)])
    if score > state.best_dice + early.min_delta:
        best, bad = score, 0
    else:
        best, bad = state.best_dice, state.bad_epochs + 1
    collapsed = (
        state.collapsed + 1 if is_collapsed(epoch, metrics["clean_dice"], metrics["clean_fg_ratio"], guard) else 0
    )
    reason: StopReason = "completed"
    if guard.max_epochs and collapsed >= guard.max_epochs:
        reason = "collapse"
    elif early.patience and bad >= early.patience:
        reason = "early_stopping"
    elif stop_after is not None and stop_after <= epoch < epochs:
        reason = "paused"  # --stop-after-epoch: resumable, unlike the two above
    return LoopState(
        epoch=epoch,
        best_dice=best,
        bad_epochs=bad,
        collapsed=collapsed,
        stop_reason=reason,
        history=(*state.history, {**metrics, "collapsed_epochs": collapsed}),
    )
