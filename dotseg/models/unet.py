"""The U-Net that every registered variant is built from.

    model = UNet(base_channels=64, depth=5, attention_gates=True, cbam=True)
    logits = model(images)  # (B, 1, H, W) float32 in -> (B, 1, H, W) logits out, any H, W

Encoder: ``depth`` stages of :class:`DoubleConv` (the last one is the bottleneck), widths
``base_channels * 2**i``, with optional CBAM after each stage and blur-pool or max-pool between them.
Decoder: 2x2 stride-2 transposed convs, skip connections (optionally through attention gates),
:class:`DoubleConv`. A 1x1 head gives one logit per pixel. Variants switch the options on and off;
their names live in :mod:`dotseg.models.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dotseg.models.layers import CBAM, RELU, AttentionGate, BlurPool2d, DoubleConv, LayerType

__all__ = ["UNet", "DecoderStage"]

#: The downsampling between encoder stages, by config name; each is called with no arguments.
DOWNSAMPLE_LAYERS: dict[str, LayerType] = {
    "blurpool": BlurPool2d,
    "maxpool": partial(nn.MaxPool2d, kernel_size=2),
}


class DecoderStage(nn.Module):
    """One decoder level: upsample the coarser map, merge the (optionally gated) skip, convolve.

    Args:
        in_channels: channels of the coarser decoder map (``2 * skip_channels`` in a U-Net).
        skip_channels: channels of the encoder skip; also the width after the transposed conv.
        out_channels: channels of the stage's output.
        gate_layer: attention-gate type called as ``gate_layer(skip_channels, in_channels)``, or
            ``None`` for a plain skip connection.
        norm_layer: normalisation type of the double conv.
        act_layer: activation type of the double conv.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        gate_layer: LayerType | None = None,
        norm_layer: LayerType = nn.BatchNorm2d,
        act_layer: LayerType = RELU,
    ) -> None:
        super().__init__()
        self.gate = gate_layer(skip_channels, in_channels) if gate_layer is not None else None
        self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * skip_channels, out_channels, norm_layer, act_layer)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C_in, h, w) and ``skip`` (B, C_skip, 2h, 2w) -> (B, C_out, 2h, 2w)."""
        if self.gate is not None:
            skip = self.gate(skip, x)  # (B, C_skip, 2h, 2w), gated by the coarser level
        up = self.up(x)  # (B, C_skip, 2h, 2w)
        return self.conv(torch.cat([skip, up], dim=1))  # (B, C_out, 2h, 2w)


class UNet(nn.Module):
    """Binary-segmentation U-Net with optional attention gates, CBAM and an internal down-scaling stem.

    Args:
        in_channels: channels of the input image (1: grayscale).
        base_channels: width of the first stage; stage ``i`` has ``base_channels * 2**i``.
        depth: encoder stages including the bottleneck (5 at base 64: 64-128-256-512-1024).
        attention_gates: gate every skip connection with an :class:`AttentionGate`.
        cbam: apply :class:`CBAM` after every encoder stage (bottleneck included).
        downsample: ``"blurpool"`` (anti-aliased) or ``"maxpool"`` between encoder stages.
        dropout: ``Dropout2d`` probability in the two deepest encoder stages (0 disables it).
        downscale: the network runs at ``1/downscale`` of the input resolution (1, 2 or 4) and its
            logits are upsampled back, trading boundary precision for a ``downscale**2`` cheaper pass.
        norm_layer: normalisation type used throughout (called with the channel count).
        act_layer: activation type used throughout (called with no arguments).

    Input ``(B, in_channels, H, W)`` float32 of any ``H, W >= 1``; output ``(B, 1, H, W)`` logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        depth: int = 5,
        attention_gates: bool = True,
        cbam: bool = True,
        downsample: Literal["blurpool", "maxpool"] = "blurpool",
        dropout: float = 0.1,
        downscale: int = 1,
        *,
        norm_layer: LayerType = nn.BatchNorm2d,
        act_layer: LayerType = RELU,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2 (one stage plus a bottleneck), got {depth}")
        if downscale not in (1, 2, 4):
            raise ValueError(f"downscale must be 1, 2 or 4, got {downscale}")
        if downsample not in DOWNSAMPLE_LAYERS:
            raise ValueError(f"downsample must be one of {sorted(DOWNSAMPLE_LAYERS)}, got {downsample!r}")
        self.depth = depth
        self.downscale = downscale
        #: Input sides are padded to a multiple of this so every pooling halves an even size and the
        #: stem divides exactly; the padding is cropped off the logits again.
        self.size_multiple = 2 ** (depth - 1) * downscale

        # Average pooling as the stem rather than a strided conv: for integer factors it is exact area
        # resampling (anti-aliased), it averages i.i.d. pixel noise down by a factor of ``downscale``
        # before the first conv sees it, and it has no weights, so the parameter set (and a checkpoint)
        # is the same for every ``downscale``.
        self.stem = nn.AvgPool2d(downscale) if downscale > 1 else nn.Identity()

        widths = [base_channels * 2**i for i in range(depth)]
        down_layer = DOWNSAMPLE_LAYERS[downsample]
        self.downsamples = nn.ModuleList(down_layer() for _ in range(depth - 1))
        self.encoder = nn.ModuleList()
        for i, width in enumerate(widths):
            stage: list[nn.Module] = [DoubleConv(widths[i - 1] if i else in_channels, width, norm_layer, act_layer)]
            if cbam:
                stage.append(CBAM(width, act_layer=act_layer))
            # Dropout only in the two deepest stages (the last skip and the bottleneck, never the first
            # stage): they hold most of the weights and are where a model overfits the training shapes,
            # while the shallow stages are narrow, carry the boundary detail and would only lose signal.
            # Dropout2d drops whole channels, since neighbouring pixels of a map are too correlated for
            # per-pixel dropout to regularise anything.
            if dropout > 0 and i >= max(1, depth - 2):
                stage.append(nn.Dropout2d(dropout))
            self.encoder.append(nn.Sequential(*stage))

        gate_layer = partial(AttentionGate, norm_layer=norm_layer, act_layer=act_layer) if attention_gates else None
        self.decoder = nn.ModuleList(
            DecoderStage(widths[i + 1], widths[i], widths[i], gate_layer, norm_layer, act_layer)
            for i in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(base_channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, coarse: bool = False) -> torch.Tensor:
        """``x`` (B, C_in, H, W) float -> logits (B, 1, H, W); ``coarse``: the logits on the network's
        own grid, (B, 1, H/s, W/s), for sides that are multiples of :attr:`size_multiple` (training
        with ``loss.resolution: network``; a keyword of ``forward`` so that DDP's hooks see the call)."""
        height, width = x.shape[-2:]
        x = self._pad(x)  # (B, C_in, Hp, Wp), Hp and Wp multiples of size_multiple
        logits = self.coarse_logits(x)  # (B, 1, Hp/s, Wp/s)
        if coarse:
            if x.shape[-2:] != (height, width):
                raise ValueError(
                    f"coarse logits need sides that are multiples of {self.size_multiple}, got {height}x{width}"
                )
            return logits
        return self.upsample(logits, x.shape[-2:])[..., :height, :width]  # (B, 1, H, W)

    def coarse_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network at its own resolution: ``x`` (B, C_in, Hp, Wp), sides multiples of
        :attr:`size_multiple` (already padded) -> logits (B, 1, Hp/s, Wp/s), s = ``downscale``.

        The exported CPU engines run this part and :meth:`upsample` outside their graph: OpenVINO's
        Interpolate of the one-channel map took ~4-5 ms of a ~25 ms pass per 512 px image, torch 0.8 ms.
        """
        z = self.stem(x)  # (B, C_in, Hp/s, Wp/s)

        skips: list[torch.Tensor] = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                z = self.downsamples[i - 1](z)  # (B, C_{i-1}, Hp/(s*2**i), Wp/(s*2**i))
            z = stage(z)  # (B, C_i, Hp/(s*2**i), Wp/(s*2**i))
            skips.append(z)

        z = skips.pop()  # bottleneck, (B, C_{depth-1}, Hp/(s*2**(depth-1)), ...)
        for stage, skip in zip(self.decoder, reversed(skips), strict=True):
            z = stage(z, skip)  # (B, C_i, 2h, 2w)
        return self.head(z)  # (B, 1, Hp/s, Wp/s)

    def upsample(self, logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """:meth:`coarse_logits` (B, 1, Hp/s, Wp/s) -> (B, 1, Hp, Wp) = ``size``, bilinear (identity at s = 1)."""
        if self.downscale == 1:
            return logits
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad bottom and right up to multiples of ``size_multiple``."""
        height, width = x.shape[-2:]
        pad_h = -height % self.size_multiple
        pad_w = -width % self.size_multiple
        if pad_h == 0 and pad_w == 0:
            return x
        # Reflect continues the image's texture and noise, so the border pixels see statistics like
        # the interior's; zero padding would add a false dark edge. Reflect cannot pad by as much as
        # the side itself, so tiny inputs fall back to zeros.
        mode = "reflect" if pad_h < height and pad_w < width else "constant"
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)  # (B, C, H + pad_h, W + pad_w)
