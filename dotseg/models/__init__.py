"""Segmentation networks: config (torch-free), building blocks, the U-Net and the variant registry.

This package must stay importable without torch, so that ``dotseg.models.config`` (and with it every
config) validates in milliseconds. ``build_model`` and ``list_models`` are therefore loaded on first
access through the module-level ``__getattr__`` below, which imports torch only then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dotseg.models.registry import build_model, list_models

__all__ = ["build_model", "list_models"]

_LAZY = {"build_model": "dotseg.models.registry", "list_models": "dotseg.models.registry"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
