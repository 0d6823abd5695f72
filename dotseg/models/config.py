"""Configuration of the segmentation network. Torch-free so configs load in milliseconds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from dotseg.configbase import Section

#: Registered variants and what they switch on. The builders live in ``dotseg.models.registry``;
#: names are listed here as well so a config can be checked without importing torch.
VARIANTS: dict[str, str] = {
    "unet": "vanilla U-Net: plain skip connections, no attention",
    "unet_gates": "U-Net with additive attention gates on the skip connections",
    "unet_cbam": "U-Net with CBAM (channel + spatial attention) on the encoder stages",
    "attention_unet": "the seed's model: attention gates and CBAM",
}


class ModelConfig(Section):
    variant: str = "attention_unet"
    """Registry entry: unet | unet_gates | unet_cbam | attention_unet."""
    base_channels: int = Field(64, ge=4, le=256)
    """Channels of the first encoder stage; stage i has base_channels * 2**i."""
    depth: int = Field(5, ge=2, le=7)
    """Encoder stages including the bottleneck (5 = 64-128-256-512-1024 at base 64)."""
    downsample: Literal["blurpool", "maxpool"] = "blurpool"
    """Anti-aliased blur-pool (the seed) or plain 2x2 max-pool between encoder stages."""
    dropout: float = Field(0.1, ge=0.0, le=0.9)
    """Dropout probability in the deeper stages."""
    downscale: Literal[1, 2, 4] = 1
    """Internal down-scaling stem: the network runs at 1/downscale of the input resolution and the
    logits are upsampled back to the input size (1, 2 or 4)."""

    @field_validator("variant")
    @classmethod
    def _registered(cls, variant: str) -> str:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; registered: {', '.join(VARIANTS)}")
        return variant
