"""Early stopping and the blank-mask guard as pure functions: no Ray, no model, milliseconds."""

from __future__ import annotations

from dotseg.training.config import CollapseGuardConfig, EarlyStoppingConfig
from dotseg.training.stopping import LoopState, after_epoch, first_epoch, is_collapsed

EARLY = EarlyStoppingConfig(patience=2, min_delta=0.01)
GUARD = CollapseGuardConfig(min_clean_dice=0.05, min_foreground_ratio=0.1, max_epochs=2, grace_epochs=1)


def _m(epoch: int, val: float, clean: float = 0.9, fg: float = 1.0) -> dict:
    return {"epoch": epoch, "val_dice": val, "clean_dice": clean, "clean_fg_ratio": fg}


def _run(
    *metrics: dict, epochs: int = 10, stop_after: int | None = None, early: EarlyStoppingConfig = EARLY
) -> LoopState:
    state = LoopState()
    for m in metrics:
        state = after_epoch(state, m, early=early, guard=GUARD, epochs=epochs, stop_after=stop_after)
        if state.stop_reason != "completed":
            break
    return state


def test_early_stopping_counts_epochs_without_a_real_improvement() -> None:
    state = _run(_m(1, 0.5), _m(2, 0.6), _m(3, 0.605), _m(4, 0.62), _m(5, 0.6))
    assert state.epoch == 5 and state.stop_reason == "completed"  # 0.62 improved on 0.6 by > 0.01
    state = _run(_m(1, 0.5), _m(2, 0.6), _m(3, 0.605), _m(4, 0.609), _m(5, 0.9))
    assert state.epoch == 4 and state.stop_reason == "early_stopping" and state.best_dice == 0.6
    never = _run(*[_m(e, 0.5) for e in range(1, 8)], early=EarlyStoppingConfig(patience=0))
    assert never.epoch == 7 and never.stop_reason == "completed" and never.bad_epochs == 6


def test_collapse_needs_consecutive_bad_epochs_after_the_grace_period() -> None:
    assert not is_collapsed(1, 0.0, 0.0, GUARD)  # grace
    assert is_collapsed(2, 0.01, 1.0, GUARD) and is_collapsed(2, 0.9, 0.05, GUARD)
    assert not is_collapsed(2, 0.9, 0.5, GUARD)
    state = _run(
        _m(1, 0.1, 0.0, 0.0), _m(2, 0.2, 0.0, 0.0), _m(3, 0.3, 0.9, 1.0), _m(4, 0.4, 0.0, 0.0), _m(5, 0.5, 0.0, 0.0)
    )
    assert state.stop_reason == "collapse" and state.epoch == 5
    assert [h["collapsed_epochs"] for h in state.history] == [0, 1, 0, 1, 2]


def test_pause_is_resumable_and_final_stops_stay_stopped() -> None:
    paused = _run(_m(1, 0.5), _m(2, 0.6), _m(3, 0.7), stop_after=2)
    assert paused.stop_reason == "paused" and paused.epoch == 2 and first_epoch(paused) == 3
    last = _run(_m(1, 0.5), _m(2, 0.6), epochs=2, stop_after=2)
    assert last.stop_reason == "completed"  # pausing after the last epoch is just finishing
    stopped = _run(_m(1, 0.5), _m(2, 0.5), _m(3, 0.5))
    assert stopped.stop_reason == "early_stopping" and first_epoch(stopped) > 10_000


def test_state_round_trips_through_plain_types_and_reads_the_old_dict() -> None:
    state = _run(_m(1, 0.5), _m(2, 0.6))
    assert LoopState.from_dict(state.to_dict()) == state
    old = {"epoch": 3, "best_dice": 0.7, "bad_epochs": 1, "collapsed": 0, "history": [{"epoch": 1}]}  # dotseg 0.1
    restored = LoopState.from_dict(old)
    assert restored.epoch == 3 and restored.stop_reason == "completed" and restored.history == ({"epoch": 1},)
