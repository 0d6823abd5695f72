"""The compound segmentation loss: soft Dice + BCE-with-logits + boundary Tversky.

The seed's loss (its README, "Loss Function")::

    L = alpha * Dice + beta * BCE + gamma * BoundaryTversky

with per-epoch weights from :class:`~dotseg.losses.config.LossConfig`: alpha constant 1.0, beta
1.0 -> 0.5 over the run, gamma 0 -> 0.5 ramped over epochs 20-60. :func:`loss_weights` resolves
them for one epoch and the training step passes them to :meth:`CompoundLoss.forward`, so the
module holds no epoch counter that a resumed run could get out of step with.

Every term takes raw logits of shape (B, 1, H, W) and a float target of the same shape, {0, 1} at the
input's resolution or a cell's foreground fraction in [0, 1] at the network's (``loss.resolution:
network``), and computes in float32 whatever dtype autocast gave the logits (see :class:`CompoundLoss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dotseg.losses.config import LossConfig


def boundary_band(target: Tensor, width: int) -> Tensor:
    """The pixels within ``width`` px of the ground-truth outline, on both sides of it.

    Definition: a pixel is in the band iff the (2w+1) x (2w+1) square window centred on it, clipped
    to the image, holds at least one foreground *and* one background pixel of ``target``. That is
    ``dilate(target) - erode(target)`` with a (2w+1) square structuring element where pixels outside
    the image are ignored (neither foreground nor background), so the image border is not an
    outline. Distances are Chebyshev: the band is w pixels deep outside the shape and w inside.

    Examples: a square of side s > 2w away from the image edges gets (s + 2w)^2 - (s - 2w)^2 = 8*s*w
    band pixels; the same square in an image corner gets only the rings on its two inner sides. An
    empty target and a full target have no outline, so their band is all zeros.

    A soft target (values in [0, 1]: the foreground fraction of each cell of a coarser grid) has its
    outline where a window holds some foreground (> 0) and some background (< 1); on a {0, 1} target
    that is the definition above.

    Args:
        target: (B, 1, H, W) floating-point ground truth with values in [0, 1] ({0, 1} at the input's
            resolution). More channels work too; each channel gets its own band.
        width: half-width w >= 1 of the band in pixels.

    Returns:
        (B, 1, H, W) band mask with values in {0, 1}, same dtype and device as ``target``.
    """
    if width < 1:
        raise ValueError(f"width: must be >= 1, got {width}")
    if target.ndim != 4 or not target.is_floating_point():
        raise ValueError(f"target: expected a floating (B, C, H, W) tensor, got {target.dtype} {tuple(target.shape)}")
    k = 2 * width + 1
    # max_pool2d pads with -inf, so pixels outside the image never win the max: they take part in
    # neither the dilation nor the erosion (erosion is -maxpool(-x)). A square window's max is the
    # max over its rows of each row's max, so two 1-D passes give exactly the k x k result at
    # 2k instead of k^2 comparisons per pixel (1.8x faster at k = 7, 512 px).
    dilated = _square_max(target, k, width)  # (B, 1, H, W): > 0 where the window has fg
    eroded = -_square_max(-target, k, width)  # (B, 1, H, W): 1 where the window is all fg
    return ((dilated > 0) & (eroded < 1)).to(target.dtype)  # (B, 1, H, W)


def _square_max(x: Tensor, k: int, pad: int) -> Tensor:
    """k x k max filter with -inf padding, as a row pass then a column pass."""
    rows = F.max_pool2d(x, (1, k), stride=1, padding=(0, pad))
    return F.max_pool2d(rows, (k, 1), stride=1, padding=(pad, 0))


def _ratio_or_one(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, but 1.0 (a perfect score) where ``den == 0``.

    A zero denominator happens only with ``smooth == 0`` and nothing to compare (empty target,
    prediction all-zero to float32 precision, or an empty boundary band). The double ``where`` keeps
    the backward pass free of 0/0: the masked branch divides by 1, not by 0.
    """
    nonzero = den > 0  # (B,)
    safe_den = torch.where(nonzero, den, torch.ones_like(den))  # (B,)
    return torch.where(nonzero, num / safe_den, torch.ones_like(num))  # (B,)


def _check_pair(logits: Tensor, target: Tensor) -> None:
    if logits.shape != target.shape or logits.ndim != 4:
        raise ValueError(
            f"logits and target must both be (B, 1, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )


class SoftDiceLoss(nn.Module):
    """1 - soft Dice of sigmoid(logits) against the target, per sample, then averaged over the batch.

    For sample b with probabilities p and target t (sums over all pixels)::

        dice_b = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)

    Per sample rather than over the whole batch so that a small shape weighs as much as a large
    one. With ``smooth > 0`` an empty target predicted empty scores ~1 (loss ~0); with
    ``smooth == 0`` a sample whose ratio is 0/0 counts as a perfect 1.

    Args:
        smooth: additive smoothing of numerator and denominator (>= 0).
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Args: logits (B, 1, H, W) any float dtype; target (B, 1, H, W) in {0, 1}.
        Returns: scalar float32 loss in [0, 1]."""
        _check_pair(logits, target)
        # float32 so the sums over H*W pixels cannot overflow half precision (fp16 max is 65,504).
        probs = torch.sigmoid(logits.float()).flatten(1)  # (B, H*W)
        t = target.float().flatten(1)  # (B, H*W)
        intersection = (probs * t).sum(1)  # (B,)
        denominator = probs.sum(1) + t.sum(1)  # (B,)
        dice = _ratio_or_one(2 * intersection + self.smooth, denominator + self.smooth)  # (B,)
        return 1 - dice.mean()

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}"


class BoundaryTverskyLoss(nn.Module):
    """1 - Tversky index restricted to the :func:`boundary_band` of the target, per sample, averaged.

    For sample b with probabilities p, target t and band m (sums over all pixels)::

        TP = sum(p * t * m)    FP = sum(p * (1 - t) * m)    FN = sum((1 - p) * t * m)
        tversky_b = (TP + smooth) / (TP + alpha * FP + beta * FN + smooth)

    With the seed's alpha = 0.7 > beta = 0.3 a false positive in the band costs more than a false
    negative, so the term discourages the predicted edge from bleeding outwards (the seed's "sharp
    edges"). Pixels outside the band do not contribute at all; Dice and BCE cover those.

    A sample whose band is empty (empty or full target) has nothing to delineate and scores a
    perfect 1 (loss 0), whatever ``smooth``; it still counts in the batch mean, so the term's scale
    depends only on the batch size.

    Args:
        alpha: weight of false positives in the band.
        beta: weight of false negatives in the band.
        width: half-width of the band in pixels (see :func:`boundary_band`).
        smooth: additive smoothing of numerator and denominator (>= 0).
    """

    def __init__(self, alpha: float = 0.7, beta: float = 0.3, width: int = 3, smooth: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.width = width
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Args: logits (B, 1, H, W) any float dtype; target (B, 1, H, W) in {0, 1}.
        Returns: scalar float32 loss in [0, 1]."""
        _check_pair(logits, target)
        t4 = target.float()  # (B, 1, H, W)
        band = boundary_band(t4, self.width).flatten(1)  # (B, H*W)
        probs = torch.sigmoid(logits.float()).flatten(1)  # (B, H*W)
        t = t4.flatten(1)  # (B, H*W)
        tp = (probs * t * band).sum(1)  # (B,)
        fp = (probs * (1 - t) * band).sum(1)  # (B,)
        fn = ((1 - probs) * t * band).sum(1)  # (B,)
        # An empty band makes TP = FP = FN = 0 exactly, so the ratio is smooth/smooth or 0/0 -> 1.
        tversky = _ratio_or_one(tp + self.smooth, tp + self.alpha * fp + self.beta * fn + self.smooth)  # (B,)
        return 1 - tversky.mean()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, width={self.width}, smooth={self.smooth}"


@dataclass(frozen=True, kw_only=True, slots=True)
class LossWeights:
    """The weights of the three loss terms at one epoch."""

    dice: float
    """alpha: weight of the soft Dice loss."""
    bce: float
    """beta: weight of BCE-with-logits."""
    boundary: float
    """gamma: weight of the boundary Tversky loss."""


def loss_weights(cfg: LossConfig, epoch: int, total_epochs: int) -> LossWeights:
    """The term weights at ``epoch`` (1-based) of a run of ``total_epochs``, from ``cfg``'s schedules.

    With the seed's defaults and 80 epochs: dice 1.0 throughout; bce 1.0 at epoch 1 falling linearly
    to 0.5 at epoch 80; boundary 0.0 up to epoch 20, 0.25 at epoch 40, 0.5 from epoch 60 on.
    """
    if epoch < 1 or total_epochs < 1:
        raise ValueError(f"epoch and total_epochs are 1-based, got epoch={epoch}, total_epochs={total_epochs}")
    return LossWeights(
        dice=cfg.dice.at(epoch, total_epochs),
        bce=cfg.bce.at(epoch, total_epochs),
        boundary=cfg.boundary.at(epoch, total_epochs),
    )


class CompoundLoss(nn.Module):
    """``weights.dice * Dice + weights.bce * BCE + weights.boundary * BoundaryTversky``.

    The whole loss runs in float32 with autocast switched off: under autocast the model's logits
    arrive in bf16 (CPU) or fp16 (CUDA), and a sum of probabilities over a 512 x 512 image (up to
    262,144) overflows fp16, while bf16 keeps only ~3 significant digits of it. Casting the logits
    up costs one (B, 1, H, W) copy.

    All three terms are always computed, even at weight 0, so the logs show the boundary term
    before its ramp starts.

    Args:
        cfg: the loss section of the config (Tversky alpha/beta, band width, smoothing). The
            schedules in it are read by :func:`loss_weights`, not here.
        downscale: the model's ``downscale``. With ``cfg.resolution`` ``network`` the loss runs on
            the network's grid (:attr:`scale` = ``downscale``): the logits are ``scale`` times smaller
            than the mask, and the mask is area-averaged to them; else :attr:`scale` is 1.
    """

    def __init__(self, cfg: LossConfig, downscale: int = 1) -> None:
        super().__init__()
        scale = downscale if cfg.resolution == "network" else 1
        self.scale = scale
        self.dice = SoftDiceLoss(smooth=cfg.smooth)
        self.bce = nn.BCEWithLogitsLoss()
        self.boundary = BoundaryTverskyLoss(
            alpha=cfg.tversky_alpha,
            beta=cfg.tversky_beta,
            width=max(1, round(cfg.boundary_width / scale)),
            smooth=cfg.smooth,
        )

    def forward(self, logits: Tensor, target: Tensor, weights: LossWeights) -> tuple[Tensor, dict[str, Tensor]]:
        """Args:
            logits: (B, 1, H / scale, W / scale) raw model outputs, any float dtype.
            target: (B, 1, H, W) ground truth with values in {0, 1}, any float dtype.
            weights: the term weights for the current epoch, from :func:`loss_weights`.

        Returns:
            ``(total, parts)``: ``total`` is the scalar float32 loss to backpropagate; ``parts``
            maps ``"dice"``, ``"bce"`` and ``"boundary"`` to the *unweighted* scalar terms,
            detached so that logging them keeps no graph alive.
        """
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()  # (B, 1, h, w)
            target = target.float()  # (B, 1, H, W)
            if self.scale > 1:  # loss.resolution: network: each cell's foreground fraction
                target = F.avg_pool2d(target, self.scale)  # (B, 1, H/scale, W/scale)
            _check_pair(logits, target)
            parts = {
                "dice": self.dice(logits, target),
                "bce": self.bce(logits, target),
                "boundary": self.boundary(logits, target),
            }
            total = weights.dice * parts["dice"] + weights.bce * parts["bce"] + weights.boundary * parts["boundary"]
        return total, {name: value.detach() for name, value in parts.items()}
