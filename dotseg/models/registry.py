"""Model variants as registered builder functions, resolved from ``ModelConfig.variant``.

    model = build_model(cfg.model)  # nn.Module: (B, 1, H, W) float32 -> (B, 1, H, W) logits

A variant is a function named after it, decorated with :func:`register_model`, that turns a
:class:`ModelConfig` into a module. Its name must also be listed in ``VARIANTS`` in
``dotseg/models/config.py`` (which stays torch-free so configs validate without importing torch);
``tests/test_models.py`` checks the two lists agree and runs every entry.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dotseg.configbase import ConfigError
from dotseg.models.config import ModelConfig
from dotseg.models.unet import UNet

__all__ = ["register_model", "build_model", "list_models"]

ModelBuilder = Callable[[ModelConfig], nn.Module]

_MODELS: dict[str, ModelBuilder] = {}


def register_model(builder: ModelBuilder) -> ModelBuilder:
    """Register ``builder`` under its function name; a second builder with the same name is an error."""
    name = builder.__name__
    if name in _MODELS:
        raise ValueError(f"model variant {name!r} is registered twice")
    _MODELS[name] = builder
    return builder


def list_models() -> list[str]:
    """Registered variant names, in registration order."""
    return list(_MODELS)


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the variant ``cfg.variant`` with the widths and options of ``cfg`` (weights freshly initialised).

    Raises:
        ConfigError: (a ``ValueError``) if no builder is registered under ``cfg.variant``.
    """
    builder = _MODELS.get(cfg.variant)
    if builder is None:
        raise ConfigError(f"model.variant: unknown variant {cfg.variant!r}; registered: {', '.join(_MODELS)}")
    return builder(cfg)


def _unet(cfg: ModelConfig, *, attention_gates: bool, cbam: bool) -> UNet:
    return UNet(
        in_channels=1,
        base_channels=cfg.base_channels,
        depth=cfg.depth,
        attention_gates=attention_gates,
        cbam=cbam,
        downsample=cfg.downsample,
        dropout=cfg.dropout,
        downscale=cfg.downscale,
    )


@register_model
def unet(cfg: ModelConfig) -> UNet:
    """Vanilla U-Net: plain skip connections, no attention (31.0M parameters at base 64, depth 5)."""
    return _unet(cfg, attention_gates=False, cbam=False)


@register_model
def unet_gates(cfg: ModelConfig) -> UNet:
    """U-Net with additive attention gates on the skip connections."""
    return _unet(cfg, attention_gates=True, cbam=False)


@register_model
def unet_cbam(cfg: ModelConfig) -> UNet:
    """U-Net with CBAM (channel + spatial attention) after every encoder stage."""
    return _unet(cfg, attention_gates=False, cbam=True)


@register_model
def attention_unet(cfg: ModelConfig) -> UNet:
    """The seed's model: attention gates and CBAM (31.7M parameters at base 64, depth 5)."""
    return _unet(cfg, attention_gates=True, cbam=True)
