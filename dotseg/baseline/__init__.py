"""The classical, learning-free baseline: config (:mod:`.config`, light) and pipeline (:mod:`.classical`).

``ClassicalBaseline`` is loaded on first access: importing the config must not pull in scipy and
scikit-image.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dotseg.baseline.config import BaselineConfig

if TYPE_CHECKING:
    from dotseg.baseline.classical import ClassicalBaseline

__all__ = ["BaselineConfig", "ClassicalBaseline"]


def __getattr__(name: str) -> Any:
    if name == "ClassicalBaseline":
        return importlib.import_module("dotseg.baseline.classical").ClassicalBaseline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
