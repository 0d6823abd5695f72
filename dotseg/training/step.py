"""The pieces of one training epoch as plain functions: learning rate, one step, validation.

Nothing here knows about Ray; :mod:`dotseg.training.loop` strings these together per worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dotseg.device import autocast, memory_format
from dotseg.losses.compound import CompoundLoss, LossWeights
from dotseg.metrics import torch_overlap_metrics
from dotseg.training.config import TrainConfig


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based): linear warmup
    over ``warmup_steps``, then cosine annealing to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and its per-step warmup + cosine schedule."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, cfg.min_lr_ratio)
    )
    return optimizer, scheduler


def logits_for_loss(model: nn.Module, images: torch.Tensor, loss_fn: CompoundLoss) -> torch.Tensor:
    """The model's logits where ``loss_fn`` compares them: (B, 1, H, W), or the network's own grid
    (B, 1, H/s, W/s) with ``loss.resolution: network`` (no upsampling in the step at all)."""
    return model(images, coarse=True) if loss_fn.scale > 1 else model(images)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    loss_fn: CompoundLoss,
    weights: LossWeights,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp: bool,
    grad_clip: float,
) -> dict[str, float]:
    """One optimizer step on a batch. images, masks: (B, 1, H, W) float32 on ``device``."""
    model.train()
    with autocast(device, amp):
        logits = logits_for_loss(model, images, loss_fn)
    loss, parts = loss_fn(logits, masks, weights)  # computed in float32 whatever the autocast
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grad_norm = float("nan")
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return {"loss": float(loss.detach()), **{f"loss_{k}": float(v) for k, v in parts.items()}, "grad_norm": grad_norm}


# -- validation -----------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    device: torch.device,
    amp: bool,
    threshold: float,
) -> dict[str, float]:
    """Mean per-sample Dice, IoU, precision, recall over ``batches``, summed across DDP ranks, plus
    the predicted-to-true foreground ratio (the blank-mask detector)."""
    model.eval()
    keys = ("dice", "iou", "precision", "recall")
    sums = torch.zeros(len(keys) + 3, dtype=torch.float64, device=device)
    for images, masks in batches:
        x = torch.from_numpy(images).unsqueeze(1).to(device)  # (B, 1, H, W)
        x = x.contiguous(memory_format=memory_format(device, amp))
        y = torch.from_numpy(masks).to(device).bool()  # (B, H, W)
        with autocast(device, amp):
            logits = model(x)
        pred = torch.sigmoid(logits.float())[:, 0] >= threshold  # (B, H, W)
        m = torch_overlap_metrics(pred, y)
        for i, k in enumerate(keys):
            sums[i] += m[k].double().sum()
        sums[len(keys)] += len(images)
        sums[len(keys) + 1] += pred.sum()
        sums[len(keys) + 2] += y.sum()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    n = max(float(sums[len(keys)]), 1.0)
    out = {k: float(sums[i]) / n for i, k in enumerate(keys)}
    true_fg = float(sums[len(keys) + 2])
    out["fg_ratio"] = float(sums[len(keys) + 1]) / true_fg if true_fg > 0 else 0.0
    return out
