"""Inference without Ray: the :class:`Predictor`, the :class:`Segmenter` protocol it shares with the
classical baseline, and reading and writing image files.

``Predictor`` (which imports torch) is loaded on first access, so reading images and the protocol
stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dotseg.inference.segmenter import Prediction, Segmenter

if TYPE_CHECKING:
    from dotseg.inference.predictor import Predictor, shipped_checkpoint

__all__ = ["Prediction", "Segmenter", "Predictor", "shipped_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in ("Predictor", "shipped_checkpoint"):
        return getattr(importlib.import_module("dotseg.inference.predictor"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
