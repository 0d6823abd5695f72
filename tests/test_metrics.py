"""Tests of dotseg.metrics against independent computations (sets, skimage boundaries, k-d trees)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from scipy.spatial.distance import directed_hausdorff
from skimage.segmentation import find_boundaries

from dotseg.metrics import (
    METRICS,
    OVERLAP_METRICS,
    aggregate,
    batch_metrics,
    segmentation_metrics,
    torch_overlap_metrics,
)

H, W = 48, 40  # not square, so a swapped axis shows


def blob(seed: int, threshold: float = 0.0, sigma: float = 4.0) -> np.ndarray:
    field = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal((H, W)), sigma)
    return field > threshold


def pixel(r: int, c: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[r, c] = True
    return m


EMPTY = np.zeros((H, W), dtype=bool)
FULL = np.ones((H, W), dtype=bool)
SALT = np.random.default_rng(7).random((H, W)) < 0.1

CASES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "blob_vs_blob": (blob(1), blob(2)),
    "blob_vs_shifted": (blob(3), np.roll(blob(3), (2, -3), axis=(0, 1))),
    "blob_vs_dilated": (blob(4), ndi.binary_dilation(blob(4), iterations=2)),
    "identical": (blob(5), blob(5)),
    "salt_vs_blob": (SALT, blob(6)),
    "empty_pred": (EMPTY, blob(8)),
    "empty_target": (blob(9), EMPTY),
    "both_empty": (EMPTY, EMPTY),
    "pixel_vs_pixel": (pixel(3, 4), pixel(10, 4)),
    "same_pixel": (pixel(20, 20), pixel(20, 20)),
    "pixel_vs_blob": (pixel(0, 0), blob(10)),
    "full_vs_blob": (FULL, blob(11)),
    "full_vs_full": (FULL, FULL),
}


# ------------------------------------------------------------------------ independent reference


def ref_ratio(num: float, den: float, both_empty: bool) -> float:
    return (1.0 if both_empty else 0.0) if den == 0 else num / den


def ref_boundary(mask: np.ndarray) -> np.ndarray:
    """Inner 4-connected boundary, with the outside of the image counted as background."""
    padded = np.pad(mask, 1, constant_values=False)
    return find_boundaries(padded, connectivity=1, mode="inner")[1:-1, 1:-1]


def reference_metrics(pred: np.ndarray, target: np.ndarray, tolerance: float) -> dict[str, float]:
    p = set(zip(*np.nonzero(pred), strict=True))
    t = set(zip(*np.nonzero(target), strict=True))
    tp, fp, fn = len(p & t), len(p - t), len(t - p)
    both_empty = not p and not t
    out = {
        "dice": ref_ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "iou": ref_ratio(tp, tp + fp + fn, both_empty),
        "precision": ref_ratio(tp, tp + fp, both_empty),
        "recall": ref_ratio(tp, tp + fn, both_empty),
        "fg_fraction": len(p) / pred.size,
    }
    bp = np.argwhere(ref_boundary(pred)).astype(float)
    bt = np.argwhere(ref_boundary(target)).astype(float)
    if len(bp) == 0 or len(bt) == 0:
        assert (len(bp) == 0) == (not p) and (len(bt) == 0) == (not t)
        score = 1.0 if both_empty else 0.0
        out.update(
            hd95=0.0 if both_empty else math.hypot(*pred.shape),
            boundary_precision=score,
            boundary_recall=score,
            boundary_f1=score,
        )
        return out
    d_pt, _ = cKDTree(bt).query(bp)
    d_tp, _ = cKDTree(bp).query(bt)
    # The k-d tree distances are the point sets' nearest-neighbour distances: their maxima are the
    # directed Hausdorff distances.
    assert d_pt.max() == pytest.approx(directed_hausdorff(bp, bt)[0])
    assert d_tp.max() == pytest.approx(directed_hausdorff(bt, bp)[0])
    bprec = float(np.mean(d_pt <= tolerance))
    brec = float(np.mean(d_tp <= tolerance))
    out.update(
        hd95=float(np.percentile(np.concatenate([d_pt, d_tp]), 95)),
        boundary_precision=bprec,
        boundary_recall=brec,
        boundary_f1=ref_ratio(2 * bprec * brec, bprec + brec, False),
    )
    return out


# ------------------------------------------------------------------------------------- numpy


@pytest.mark.parametrize("tolerance", [0.0, 2.0])
@pytest.mark.parametrize("name", list(CASES))
def test_numpy_metrics_match_reference(name: str, tolerance: float) -> None:
    pred, target = CASES[name]
    got = segmentation_metrics(pred, target, tolerance=tolerance)
    expected = reference_metrics(pred, target, tolerance)
    assert list(got) == list(METRICS)
    for key in METRICS:
        assert isinstance(got[key], float) and math.isfinite(got[key]), key
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key


def test_empty_case_conventions() -> None:
    both = segmentation_metrics(EMPTY, EMPTY)
    assert all(both[k] == 1.0 for k in METRICS if k not in ("hd95", "fg_fraction"))
    assert both["hd95"] == 0.0 and both["fg_fraction"] == 0.0

    diagonal = math.hypot(H, W)
    for pred, target in [(EMPTY, blob(1)), (blob(1), EMPTY)]:
        one = segmentation_metrics(pred, target)
        assert all(one[k] == 0.0 for k in METRICS if k not in ("hd95", "fg_fraction"))
        assert one["hd95"] == diagonal


def test_single_pixels_by_hand() -> None:
    apart = segmentation_metrics(pixel(3, 4), pixel(10, 4), tolerance=2)
    assert apart["dice"] == 0.0 and apart["hd95"] == 7.0 and apart["boundary_f1"] == 0.0
    assert segmentation_metrics(pixel(3, 4), pixel(10, 4), tolerance=7)["boundary_f1"] == 1.0
    same = segmentation_metrics(pixel(20, 20), pixel(20, 20))
    assert same["dice"] == 1.0 and same["hd95"] == 0.0 and same["boundary_f1"] == 1.0


def test_masks_may_be_zero_one_numbers_but_not_probabilities() -> None:
    pred, target = CASES["blob_vs_blob"]
    assert segmentation_metrics(pred.astype(np.uint8), target.astype(np.float32)) == segmentation_metrics(pred, target)
    with pytest.raises(ValueError, match="0 or 1"):
        segmentation_metrics(pred * 0.7, target)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        segmentation_metrics(pred, target[:-1])


def test_batch_metrics_and_aggregate() -> None:
    names = ["blob_vs_blob", "empty_pred", "both_empty", "full_vs_blob"]
    preds = np.stack([CASES[n][0] for n in names])[:, None]  # (N, 1, H, W) is accepted
    targets = np.stack([CASES[n][1] for n in names])[:, None]
    per_sample = batch_metrics(preds, targets, tolerance=2)
    assert list(per_sample) == list(METRICS)
    for i, n in enumerate(names):
        row = segmentation_metrics(*CASES[n], tolerance=2)
        for key in METRICS:
            assert per_sample[key].shape == (len(names),)
            assert per_sample[key][i] == row[key]

    summary = aggregate(per_sample)
    dice = per_sample["dice"]
    assert summary["dice"] == pytest.approx(
        {"mean": dice.mean(), "std": dice.std(), "median": np.median(dice), "min": dice.min(), "max": dice.max()}
    )
    assert all(math.isfinite(v) for stats in summary.values() for v in stats.values())
    with pytest.raises(ValueError, match="no samples"):
        aggregate({"dice": np.array([])})


# ------------------------------------------------------------------------------------- torch


def test_torch_overlap_metrics_agree_with_numpy() -> None:
    names = list(CASES)
    preds = torch.from_numpy(np.stack([CASES[n][0] for n in names]))  # (B, H, W) bool
    targets = torch.from_numpy(np.stack([CASES[n][1] for n in names]))
    got = torch_overlap_metrics(preds, targets)
    assert list(got) == list(OVERLAP_METRICS)
    for i, n in enumerate(names):
        row = segmentation_metrics(*CASES[n])
        for key in OVERLAP_METRICS:
            assert got[key].shape == (len(names),) and got[key].dtype == torch.float32
            assert got[key][i].item() == pytest.approx(row[key], abs=1e-6), (n, key)


def test_torch_overlap_metrics_want_bool_masks() -> None:
    with pytest.raises(TypeError, match="bool"):
        torch_overlap_metrics(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.bool))
