"""Building blocks of the segmentation networks, one concept per class.

Every block takes its normalisation and activation as layer *types* (``norm_layer=nn.BatchNorm2d``,
``act_layer=nn.ReLU``) so a variant can swap them without touching the block. All blocks work on
``(B, C, H, W)`` float tensors and are single-device code.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerType", "DoubleConv", "BlurPool2d", "ChannelAttention", "SpatialAttention", "CBAM", "AttentionGate"]

#: A layer type: a class (or ``functools.partial``) called with the channel count, or with nothing.
LayerType = Callable[..., nn.Module]

#: In-place ReLU: it overwrites the BatchNorm output, which its backward does not need, and saves one
#: activation map per conv at 512x512.
RELU: LayerType = partial(nn.ReLU, inplace=True)


class DoubleConv(nn.Module):
    """Two ``3x3 conv -> norm -> act`` layers; the unit of every U-Net stage.

    Args:
        in_channels: channels of the input.
        out_channels: channels of both convs' outputs.
        norm_layer: normalisation type, called with the channel count.
        act_layer: activation type, called with no arguments.
    """

    def __init__(
        self, in_channels: int, out_channels: int, norm_layer: LayerType = nn.BatchNorm2d, act_layer: LayerType = RELU
    ) -> None:
        super().__init__()
        # No conv bias: the norm layer right after it subtracts the mean, so a bias would be dead weight.
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            norm_layer(out_channels),
            act_layer(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            norm_layer(out_channels),
            act_layer(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)  # (B, C_in, H, W) -> (B, C_out, H, W)


class BlurPool2d(nn.Module):
    """Anti-aliased 2x downsampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again").

    Low-pass filters every channel with the fixed binomial kernel ``[1,2,1] x [1,2,1] / 16`` and keeps
    every second pixel. A plain stride-2 subsample folds high frequencies (here: pixel noise and the
    dot texture) into the coarse maps as aliasing; blurring first removes them. Reflect padding keeps
    the border from being darkened as zero padding would. Needs ``H, W >= 2``; output
    ``(B, C, ceil(H/2), ceil(W/2))``. No parameters: the kernel is a non-persistent buffer, so it is
    not in checkpoints and moves with ``.to(device)``.
    """

    kernel: torch.Tensor  # the registered buffer, typed for the checker

    def __init__(self) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0  # (3, 3), sums to 1
        self.register_buffer("kernel", kernel[None, None], persistent=False)  # (1, 1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")  # (B, C, H+2, W+2)
        weight = self.kernel.to(x.dtype).expand(channels, 1, 3, 3)  # (C, 1, 3, 3), depthwise
        return F.conv2d(x, weight, stride=2, groups=channels)  # (B, C, ceil(H/2), ceil(W/2))


class ChannelAttention(nn.Module):
    """CBAM's channel attention: a shared MLP over avg- and max-pooled channel descriptors.

    Noise switches on many channels a little and everywhere; the signal drives a few channels hard.
    The max-pooled descriptor sees the latter, the average the former, so the MLP can tell them apart.

    Args:
        channels: channels of the input.
        reduction: hidden width is ``channels // reduction``, but at least 1 so tiny test models work.
        act_layer: activation between the two MLP layers.
    """

    def __init__(self, channels: int, reduction: int = 16, act_layer: LayerType = RELU) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        # 1x1 convs on (B, C, 1, 1) are the MLP without reshapes.
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), act_layer(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        return x * torch.sigmoid(avg + peak)  # (B, C, H, W)


class SpatialAttention(nn.Module):
    """CBAM's spatial attention: a 7x7 conv over the per-pixel mean and max across channels.

    Args:
        kernel_size: size of the conv; 7 as in the CBAM paper, wide enough to span several dots.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return x * torch.sigmoid(self.conv(pooled))  # (B, C, H, W)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel attention, then spatial.

    Args:
        channels: channels of the input.
        reduction: channel-MLP reduction (hidden width at least 1).
        act_layer: activation inside the channel MLP.
    """

    def __init__(self, channels: int, reduction: int = 16, act_layer: LayerType = RELU) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, act_layer)
        self.spatial = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))  # (B, C, H, W)


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al. 2018, "Attention U-Net").

    The gating signal comes from the next-coarser decoder level, which has seen more context than the
    skip; it decides per pixel how much of the skip to pass on. Plain skips copy noise-activated
    encoder features straight into the decoder; the gate learns to suppress them.

    ``alpha = sigmoid(psi(relu(W_x(x) + up(W_g(g)))))`` and the output is ``x * alpha``. ``W_g`` runs at
    the gate's coarse resolution and is then resampled bilinearly to the skip's size: both are linear
    per pixel, so this equals resampling ``g`` first, at a quarter of the cost. The norm after
    ``W_x`` and ``W_g`` (as in the common Attention U-Net implementations, not in the paper's
    equation) puts the two inputs on one scale before they are added.

    Args:
        skip_channels: channels of the skip ``x``.
        gate_channels: channels of the gating signal ``g``.
        inter_channels: width of the additive attention; default ``skip_channels // 2`` (at least 1).
        norm_layer: normalisation after ``W_x`` and ``W_g``.
        act_layer: the non-linearity between the sum and ``psi``.
    """

    def __init__(
        self,
        skip_channels: int,
        gate_channels: int,
        inter_channels: int | None = None,
        norm_layer: LayerType = nn.BatchNorm2d,
        act_layer: LayerType = RELU,
    ) -> None:
        super().__init__()
        inter = inter_channels if inter_channels is not None else max(1, skip_channels // 2)
        self.w_x = nn.Sequential(nn.Conv2d(skip_channels, inter, 1, bias=False), norm_layer(inter))
        self.w_g = nn.Sequential(nn.Conv2d(gate_channels, inter, 1, bias=False), norm_layer(inter))
        self.act = act_layer()
        self.psi = nn.Conv2d(inter, 1, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Gate ``x`` (B, C_x, H, W) by ``g`` (B, C_g, h, w) from a coarser level; returns ``x``'s shape."""
        gate = self.w_g(g)  # (B, F, h, w)
        gate = F.interpolate(gate, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, F, H, W)
        alpha = torch.sigmoid(self.psi(self.act(self.w_x(x) + gate)))  # (B, 1, H, W)
        return x * alpha  # (B, C_x, H, W)
