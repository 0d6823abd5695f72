"""Configuration of the segmentation network. Torch-free so configs load in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dotseg.configbase import check, check_range

#: Registered variants and what they switch on. The builders live in ``dotseg.models.registry``;
#: names are listed here as well so a config can be checked without importing torch.
VARIANTS: dict[str, str] = {
    "unet": "vanilla U-Net: plain skip connections, no attention",
    "unet_gates": "U-Net with additive attention gates on the skip connections",
    "unet_cbam": "U-Net with CBAM (channel + spatial attention) on the encoder stages",
    "attention_unet": "the seed's model: attention gates and CBAM",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    variant: str = "attention_unet"
    """Registry entry: unet | unet_gates | unet_cbam | attention_unet."""
    base_channels: int = 64
    """Channels of the first encoder stage; stage i has base_channels * 2**i."""
    depth: int = 5
    """Encoder stages including the bottleneck (5 = 64-128-256-512-1024 at base 64)."""
    downsample: Literal["blurpool", "maxpool"] = "blurpool"
    """Anti-aliased blur-pool (the seed) or plain 2x2 max-pool between encoder stages."""
    dropout: float = 0.1
    """Dropout probability in the deeper stages."""
    downscale: int = 1
    """Internal down-scaling stem: the network runs at 1/downscale of the input resolution and the
    logits are upsampled back to the input size (1, 2 or 4)."""

    def __post_init__(self) -> None:
        check(self.variant in VARIANTS, "variant",
              f"unknown variant {self.variant!r}; registered: {', '.join(VARIANTS)}")
        check_range(self.base_channels, "base_channels", 4, 256)
        check_range(self.depth, "depth", 2, 7)
        check_range(self.dropout, "dropout", 0.0, 0.9)
        check(self.downscale in (1, 2, 4), "downscale", f"must be 1, 2 or 4, got {self.downscale!r}")
