"""Segmentation metrics on binary masks: Dice, IoU, precision, recall, HD95 and boundary F1.

One set of definitions, two implementations:

* numpy/scipy for evaluation: per sample (:func:`segmentation_metrics`), over a stack of samples
  (:func:`batch_metrics`) and summarised (:func:`aggregate`). HD95 and boundary F1 need distance
  transforms, so they live only here.
* torch for per-epoch validation (:func:`torch_overlap_metrics`): the overlap metrics only, batched
  on whatever device the masks are on, without a host round trip.

Definitions, with P the predicted and T the target foreground pixels of an H x W image::

    TP = |P & T|    FP = |P - T|    FN = |T - P|
    dice = 2 TP / (2 TP + FP + FN)     iou = TP / (TP + FP + FN)
    precision = TP / (TP + FP)         recall = TP / (TP + FN)
    fg_fraction = |P| / (H W)

``fg_fraction`` is the predicted foreground share; a model that collapses to all-background (the
seed's "empty masks" failure) shows up as 0 long before Dice is read closely.

The *boundary* of a mask is its foreground pixels that have at least one 4-neighbour in the
background, where pixels outside the image count as background. A mask touching the image edge
therefore has boundary pixels along that edge, and only an empty mask has an empty boundary (the
same set as ``skimage.segmentation.find_boundaries(mode="inner", connectivity=1)`` of the mask
padded by one background pixel on every side).

``hd95`` is the 95th percentile (numpy's default linear interpolation) of the pooled symmetric
surface distances, in pixels: for every boundary pixel of P the Euclidean distance to the nearest
boundary pixel of T, together with the same for every boundary pixel of T towards P. (MedPy's hd95
convention; MONAI instead takes the larger of the two directed percentiles.)

``boundary_precision`` is the share of P's boundary pixels within Euclidean distance ``tolerance``
(inclusive) of T's boundary, ``boundary_recall`` the share of T's boundary pixels within
``tolerance`` of P's, and ``boundary_f1`` their harmonic mean.

Empty cases -- every metric is always a finite number, so means over a data set stay defined:

* A ratio whose denominator is zero is 1.0 if both masks are empty and 0.0 otherwise. So both
  empty gives 1.0 for all ratios; an empty prediction against a non-empty target gives precision
  0.0 (and recall, Dice, IoU 0.0); boundary F1 with boundary precision = recall = 0 is 0.0.
* ``hd95`` is 0.0 if both masks are empty, and the image diagonal sqrt(H^2 + W^2) if exactly one
  is: larger than any distance between two pixels of the image, yet finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

from dotseg.masks import boundary

OVERLAP_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall", "fg_fraction")
"""Keys of :func:`torch_overlap_metrics`, also returned by :func:`segmentation_metrics`."""
METRICS: tuple[str, ...] = (*OVERLAP_METRICS, "hd95", "boundary_precision", "boundary_recall", "boundary_f1")
"""Keys of :func:`segmentation_metrics` and :func:`batch_metrics`, in that order."""


def _as_mask(x: ArrayLike, name: str) -> NDArray[np.bool_]:
    """``x`` as a bool array; bool, or numbers that are all 0 or 1 (probabilities are refused, so
    an un-thresholded prediction cannot slip through as 'everything > 0 is foreground')."""
    a = np.asarray(x)
    if a.dtype == np.bool_:
        return a
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"{name}: expected a bool or numeric mask, got dtype {a.dtype}")
    if not np.all((a == 0) | (a == 1)):
        raise ValueError(f"{name}: mask values must be 0 or 1 (threshold probabilities first)")
    return a != 0


def _ratio(num: float, den: float, both_empty: bool) -> float:
    """``num / den``, or the empty-case convention of the module docstring when ``den == 0``."""
    if den == 0:
        return 1.0 if both_empty else 0.0
    return num / den


def _boundary_metrics(
    pred: NDArray[np.bool_], target: NDArray[np.bool_], tolerance: float, both_empty: bool
) -> dict[str, float]:
    pred_edge = boundary(pred)  # (H, W) bool
    target_edge = boundary(target)  # (H, W) bool
    n_pred = int(np.count_nonzero(pred_edge))
    n_target = int(np.count_nonzero(target_edge))
    if n_pred == 0 or n_target == 0:
        # A boundary is empty only when its mask is, so this is "both empty" or "exactly one".
        score = 1.0 if both_empty else 0.0
        hd95 = 0.0 if both_empty else math.hypot(*pred.shape)
        return {"hd95": hd95, "boundary_precision": score, "boundary_recall": score, "boundary_f1": score}

    # The EDT of the complement gives, at every pixel, the distance to the nearest boundary pixel.
    to_target = ndi.distance_transform_edt(~target_edge)  # (H, W) float64
    to_pred = ndi.distance_transform_edt(~pred_edge)  # (H, W) float64
    pred_to_target = to_target[pred_edge]  # (n_pred,)
    target_to_pred = to_pred[target_edge]  # (n_target,)

    hd95 = float(np.percentile(np.concatenate([pred_to_target, target_to_pred]), 95))
    b_precision = np.count_nonzero(pred_to_target <= tolerance) / n_pred
    b_recall = np.count_nonzero(target_to_pred <= tolerance) / n_target
    b_f1 = _ratio(2 * b_precision * b_recall, b_precision + b_recall, both_empty=False)
    return {
        "hd95": hd95,
        "boundary_precision": float(b_precision),
        "boundary_recall": float(b_recall),
        "boundary_f1": float(b_f1),
    }


def segmentation_metrics(pred: ArrayLike, target: ArrayLike, tolerance: float = 2.0) -> dict[str, float]:
    """All metrics of the module docstring for one sample.

    Args:
        pred: (H, W) predicted mask: bool, or numbers that are all 0 or 1.
        target: (H, W) ground-truth mask, same shape and rules.
        tolerance: boundary F1 tolerance in pixels (Euclidean, inclusive), >= 0.

    Returns:
        Python floats keyed by :data:`METRICS`.
    """
    p = _as_mask(pred, "pred")
    t = _as_mask(target, "target")
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"pred and target must both be (H, W), got {p.shape} and {t.shape}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance: must be >= 0 px, got {tolerance}")

    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    both_empty = tp + fp + fn == 0
    out = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "iou": _ratio(tp, tp + fp + fn, both_empty),
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
        "fg_fraction": (tp + fp) / p.size,
    }
    out.update(_boundary_metrics(p, t, tolerance, both_empty))
    return out


def _stack(masks: ArrayLike, name: str) -> NDArray[np.bool_]:
    a = _as_mask(masks, name)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]  # (N, H, W): accept the model's (N, 1, H, W) layout as is
    if a.ndim != 3:
        raise ValueError(f"{name}: expected (N, H, W) or (N, 1, H, W), got {a.shape}")
    return a


def batch_metrics(preds: ArrayLike, targets: ArrayLike, tolerance: float = 2.0) -> dict[str, NDArray[np.float64]]:
    """:func:`segmentation_metrics` for every sample of a stack.

    Args:
        preds: (N, H, W) or (N, 1, H, W) predicted masks (bool or 0/1 numbers).
        targets: ground-truth masks of the same shape.
        tolerance: boundary F1 tolerance in pixels.

    Returns:
        (N,) float64 array per key of :data:`METRICS`; sample i of every array is sample i of the
        input.
    """
    p = _stack(preds, "preds")  # (N, H, W)
    t = _stack(targets, "targets")  # (N, H, W)
    if p.shape != t.shape:
        raise ValueError(f"preds and targets differ in shape: {p.shape} vs {t.shape}")
    rows = [segmentation_metrics(pi, ti, tolerance) for pi, ti in zip(p, t, strict=True)]
    return {key: np.array([row[key] for row in rows], dtype=np.float64) for key in METRICS}


def aggregate(per_sample: Mapping[str, ArrayLike]) -> dict[str, dict[str, float]]:
    """Summary statistics of per-sample metrics (the output of :func:`batch_metrics`).

    Args:
        per_sample: metric name -> (N,) values, N >= 1.

    Returns:
        metric name -> ``{"mean", "std", "median", "min", "max"}``; ``std`` is the population
        standard deviation (ddof = 0), so it is defined for N = 1.
    """
    summary: dict[str, dict[str, float]] = {}
    for key, values in per_sample.items():
        v = np.asarray(values, dtype=np.float64).ravel()  # (N,)
        if v.size == 0:
            raise ValueError(f"{key}: no samples to aggregate")
        summary[key] = {
            "mean": float(v.mean()),
            "std": float(v.std()),
            "median": float(np.median(v)),
            "min": float(v.min()),
            "max": float(v.max()),
        }
    return summary


def torch_overlap_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dice, IoU, precision, recall and predicted foreground fraction per sample, on device.

    Same definitions and empty-case rules as the numpy metrics (module docstring). Runs without
    gradients or host syncs, so it can be called on every validation batch.

    Args:
        pred: (B, H, W) bool predicted masks (e.g. ``logits[:, 0] > 0``); any (B, ...) layout works,
            every non-batch dimension is reduced.
        target: bool ground truth of the same shape.

    Returns:
        (B,) float32 tensor per key of :data:`OVERLAP_METRICS`, on the input's device.
    """
    if pred.dtype != torch.bool or target.dtype != torch.bool:
        raise TypeError(f"pred and target must be bool masks, got {pred.dtype} and {target.dtype}")
    if pred.shape != target.shape or pred.ndim < 2:
        raise ValueError(f"pred and target must both be (B, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    with torch.no_grad():
        p = pred.flatten(1)  # (B, H*W)
        t = target.flatten(1)  # (B, H*W)
        tp = (p & t).sum(1)  # (B,) int64
        fp = (p & ~t).sum(1)  # (B,) int64
        fn = (~p & t).sum(1)  # (B,) int64
        both_empty = (tp + fp + fn == 0).float()  # (B,) 1.0 where both masks are empty

        def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
            # Integer counts: a non-zero denominator is >= 1, so clamping only touches the zeros,
            # which the where then replaces by the empty-case value.
            return torch.where(den > 0, num.float() / den.clamp_min(1).float(), both_empty)  # (B,)

        return {
            "dice": ratio(2 * tp, 2 * tp + fp + fn),
            "iou": ratio(tp, tp + fp + fn),
            "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn),
            "fg_fraction": (tp + fp).float() / p.shape[1],
        }
