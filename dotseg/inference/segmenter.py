"""What every segmenter returns, and the interface evaluation and serving rely on.

Both the learned model (:class:`dotseg.inference.predictor.Predictor`) and the classical baseline
(:class:`dotseg.baseline.ClassicalBaseline`) implement :class:`Segmenter`, so an evaluation or a
server can take either and show them side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class Prediction:
    mask: np.ndarray
    """(H, W) bool at the input's size: the delineated shape."""
    prob: np.ndarray
    """(H, W) float32 in [0, 1] at the input's size: per-pixel foreground probability (or score)."""


@runtime_checkable
class Segmenter(Protocol):
    name: str
    """Short label for tables and plots (``model``, ``baseline``)."""

    def predict(self, image: np.ndarray) -> Prediction:
        """One 2-D image of any real dtype and size -> its prediction at the same size."""
        ...

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Several 2-D images (sizes may differ) -> one prediction each, in order."""
        ...
