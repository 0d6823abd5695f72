"""Tests of dotseg.losses.compound: the boundary band, each loss term, the weight schedule, autocast."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from dotseg.losses.compound import (
    BoundaryTverskyLoss,
    CompoundLoss,
    LossWeights,
    SoftDiceLoss,
    boundary_band,
    loss_weights,
)
from dotseg.losses.config import LossConfig

SEED_WEIGHTS_AT_END = LossWeights(dice=1.0, bce=0.5, boundary=0.5)


def square(size: int = 32, top: int = 8, side: int = 10) -> torch.Tensor:
    """(1, 1, size, size) float target with a ``side`` x ``side`` square at (top, top)."""
    t = torch.zeros(1, 1, size, size)
    t[..., top : top + side, top : top + side] = 1.0
    return t


def blobs(n: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) float targets: smoothed noise thresholded into organic blobs."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 4, 4))
    return torch.from_numpy(field > 0.02).float()[:, None]


def hard_logits(target: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """Confident logits that predict ``target`` exactly."""
    return (2 * target - 1) * scale


# ---------------------------------------------------------------------------------------- band


@pytest.mark.parametrize("width", [1, 2, 3])
def test_band_of_square_is_rings_on_both_sides(width: int) -> None:
    band = boundary_band(square(), width)
    expected = torch.zeros(1, 1, 32, 32)
    expected[..., 8 - width : 18 + width, 8 - width : 18 + width] = 1.0  # dilated square
    expected[..., 8 + width : 18 - width, 8 + width : 18 - width] = 0.0  # minus the eroded square
    assert int(band.sum()) == (10 + 2 * width) ** 2 - (10 - 2 * width) ** 2 == 8 * 10 * width
    assert torch.equal(band, expected)


def test_band_ignores_the_image_border() -> None:
    # A square in the corner has an outline only on its two sides facing the image.
    band = boundary_band(square(top=0), width=2)
    assert int(band.sum()) == 12 * 12 - 8 * 8
    assert band[0, 0, 0, 0] == 0 and band[0, 0, 7, 7] == 0 and band[0, 0, 8, 8] == 1


@pytest.mark.parametrize("fill", [0.0, 1.0], ids=["empty", "full"])
def test_band_of_empty_and_full_targets_is_empty(fill: float) -> None:
    target = torch.full((2, 1, 16, 16), fill)
    band = boundary_band(target, width=3)
    assert band.shape == target.shape and band.dtype == target.dtype
    assert int(band.sum()) == 0


def test_band_matches_scipy_morphology_per_sample() -> None:
    targets = blobs(3)
    width = 2
    band = boundary_band(targets, width)
    footprint = np.ones((2 * width + 1,) * 2, dtype=bool)
    for t, b in zip(targets[:, 0].numpy().astype(bool), band[:, 0].numpy(), strict=True):
        # Dilation pads with background and erosion with foreground: outside pixels never matter.
        expected = ndi.binary_dilation(t, footprint) & ~ndi.binary_erosion(t, footprint, border_value=1)
        np.testing.assert_array_equal(b.astype(bool), expected)


def test_band_in_bfloat16_equals_float32() -> None:
    targets = blobs(2)
    assert torch.equal(boundary_band(targets.bfloat16(), 3).float(), boundary_band(targets, 3))


# ---------------------------------------------------------------------------------------- Dice


def test_dice_is_zero_for_perfect_and_one_for_inverted_logits() -> None:
    targets = blobs(4)
    dice = SoftDiceLoss(smooth=1.0)
    assert dice(hard_logits(targets), targets).item() < 1e-3
    assert dice(-hard_logits(targets), targets).item() > 0.99


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_dice_of_empty_target_predicted_empty_is_zero(smooth: float) -> None:
    target = torch.zeros(2, 1, 8, 8)
    logits = torch.full_like(target, -200.0, requires_grad=True)  # sigmoid underflows to exactly 0
    loss = SoftDiceLoss(smooth)(logits, target)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------------------------- Tversky


def _one_sided_errors(alpha: float, beta: float) -> tuple[float, float]:
    """Boundary Tversky loss of k false positives vs k false negatives, all inside the band."""
    target = square()
    k = 6
    fp_logits = hard_logits(target)
    fp_logits[0, 0, 7, 8 : 8 + k] = 20.0  # row just above the square: predicted fg, true bg
    fn_logits = hard_logits(target)
    fn_logits[0, 0, 8, 8 : 8 + k] = -20.0  # first row of the square: predicted bg, true fg
    loss = BoundaryTverskyLoss(alpha=alpha, beta=beta, width=2, smooth=1.0)
    return loss(fp_logits, target).item(), loss(fn_logits, target).item()


def test_tversky_charges_false_positives_more_with_alpha_above_beta() -> None:
    fp_loss, fn_loss = _one_sided_errors(alpha=0.7, beta=0.3)
    assert fp_loss > 1.5 * fn_loss > 0
    # Hand check: band of the 10-square at w=2 has 8*10*2 = 160 px, 10^2 - 6^2 = 64 of them inside.
    assert fp_loss == pytest.approx(1 - (64 + 1) / (64 + 0.7 * 6 + 1), abs=1e-5)
    assert fn_loss == pytest.approx(1 - (58 + 1) / (58 + 0.3 * 6 + 1), abs=1e-5)
    swapped_fp, swapped_fn = _one_sided_errors(alpha=0.3, beta=0.7)
    assert swapped_fn > 1.5 * swapped_fp


def test_tversky_ignores_errors_outside_the_band() -> None:
    target = square()
    logits = hard_logits(target)
    logits[0, 0, 25:30, 25:30] = 20.0  # a false blob far from the outline
    assert BoundaryTverskyLoss(width=2)(logits, target).item() < 1e-6
    assert SoftDiceLoss()(logits, target).item() > 0.05  # Dice does see it


@pytest.mark.parametrize("smooth", [0.0, 1.0])
@pytest.mark.parametrize("fill", [0.0, 1.0], ids=["empty", "full"])
def test_tversky_of_target_without_outline_is_zero(fill: float, smooth: float) -> None:
    target = torch.full((2, 1, 12, 12), fill)
    logits = torch.randn(2, 1, 12, 12, requires_grad=True)
    loss = BoundaryTverskyLoss(width=3, smooth=smooth)(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------------------------ schedule


def test_seed_schedule() -> None:
    cfg = LossConfig()
    assert loss_weights(cfg, 1, 80) == LossWeights(dice=1.0, bce=1.0, boundary=0.0)
    assert loss_weights(cfg, 80, 80) == SEED_WEIGHTS_AT_END
    assert all(loss_weights(cfg, e, 80).dice == 1.0 for e in range(1, 81))

    midway = loss_weights(cfg, 40, 80)
    assert midway.bce == pytest.approx(1.0 - 0.5 * 39 / 79)  # linear from epoch 1 to 80
    assert midway.bce == pytest.approx(0.75, abs=0.01)
    assert midway.boundary == pytest.approx(0.25)

    assert [loss_weights(cfg, e, 80).boundary for e in (1, 10, 20)] == [0.0, 0.0, 0.0]
    assert [loss_weights(cfg, e, 80).boundary for e in (60, 70, 80)] == [0.5, 0.5, 0.5]
    bces = [loss_weights(cfg, e, 80).bce for e in range(1, 81)]
    assert all(a > b for a, b in itertools.pairwise(bces))


def test_schedule_rejects_zero_based_epochs() -> None:
    with pytest.raises(ValueError, match="1-based"):
        loss_weights(LossConfig(), 0, 80)


# ------------------------------------------------------------------------------------ compound


def test_compound_is_the_weighted_sum_of_detached_parts() -> None:
    targets = blobs(3)
    logits = torch.randn_like(targets, requires_grad=True)
    weights = LossWeights(dice=1.0, bce=0.75, boundary=0.25)
    total, parts = CompoundLoss(LossConfig())(logits, targets, weights)
    assert set(parts) == {"dice", "bce", "boundary"}
    assert all(not p.requires_grad and p.ndim == 0 for p in parts.values())
    assert parts["bce"].item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, targets).item())
    expected = parts["dice"] + 0.75 * parts["bce"] + 0.25 * parts["boundary"]
    assert total.item() == pytest.approx(expected.item())
    assert total.requires_grad and total.dtype == torch.float32


def test_compound_gradients_are_finite_even_for_extreme_logits() -> None:
    targets = torch.cat([blobs(2), torch.zeros(1, 1, 40, 40), torch.ones(1, 1, 40, 40)])
    logits = (torch.randn_like(targets) * 1e4).requires_grad_()
    total, parts = CompoundLoss(LossConfig(smooth=0.0))(logits, targets, SEED_WEIGHTS_AT_END)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(p) for p in parts.values())
    assert torch.isfinite(logits.grad).all()


def test_compound_under_bfloat16_autocast_is_finite_and_close_to_float32() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    images = torch.randn(2, 1, 40, 40)
    targets = blobs(2)
    loss = CompoundLoss(LossConfig())

    reference, _ = loss(net(images), targets, SEED_WEIGHTS_AT_END)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(images)
        assert logits.dtype == torch.bfloat16  # the precondition this test is about
        total, _ = loss(logits, targets, SEED_WEIGHTS_AT_END)
    total.backward()
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert total.item() == pytest.approx(reference.item(), rel=1e-2)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_compound_does_not_overflow_half_precision_sums() -> None:
    # 320 * 320 = 102,400 foreground pixels: their probability sum would be inf in fp16 (max 65,504).
    targets = torch.ones(1, 1, 320, 320, dtype=torch.float16)
    logits = torch.full_like(targets, 8.0)
    total, parts = CompoundLoss(LossConfig())(logits, targets, SEED_WEIGHTS_AT_END)
    reference, _ = CompoundLoss(LossConfig())(logits.float(), targets.float(), SEED_WEIGHTS_AT_END)
    assert torch.isfinite(total) and parts["dice"].item() < 1e-3
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)


def test_compound_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        CompoundLoss(LossConfig())(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8), SEED_WEIGHTS_AT_END)


# ------------------------------------------------------------ on the network's grid (issue 17)


def test_band_of_a_soft_target_marks_the_cells_the_outline_crosses() -> None:
    """A coarse cell's value is its foreground fraction: partly covered cells and their neighbours
    within the width are the outline; on a {0, 1} target the definition is the binary one."""
    fine = square(size=32, top=6, side=13)  # edges at 6 and 19: not on the 4-px grid
    soft = F.avg_pool2d(fine, 4)  # (1, 1, 8, 8), fractions
    band = boundary_band(soft, 1)
    assert set(band.unique().tolist()) <= {0.0, 1.0}
    crossed = (soft > 0) & (soft < 1)
    assert bool(band[crossed].eq(1).all())  # every cell the outline crosses
    assert band[0, 0, 7, 7] == 0 and band[0, 0, 0, 7] == 0  # far outside it
    binary = blobs(4)
    k = 2 * 2 + 1
    old = F.max_pool2d(binary, k, 1, 2) + F.max_pool2d(-binary, k, 1, 2)  # dilate - erode, no border case
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert torch.equal(boundary_band(binary, 2)[inner], old[inner])


def test_compound_on_the_network_grid_is_the_loss_of_the_area_averaged_mask() -> None:
    """``loss.resolution: network``: logits 4x coarser than the mask; the mask is area-averaged to
    them and the band is ``boundary_width / 4`` cells wide (at least 1)."""
    cfg = LossConfig(boundary_width=3, resolution="network")
    targets = blobs(3, size=64)
    logits = torch.randn(3, 1, 16, 16, requires_grad=True)
    coarse = CompoundLoss(cfg, downscale=4)
    assert coarse.boundary.width == 1
    total, parts = coarse(logits, targets, SEED_WEIGHTS_AT_END)
    reference, ref_parts = CompoundLoss(LossConfig(boundary_width=1))(
        logits, F.avg_pool2d(targets, 4), SEED_WEIGHTS_AT_END
    )
    assert total.item() == pytest.approx(reference.item())
    assert parts["bce"].item() == pytest.approx(ref_parts["bce"].item())
    total.backward()
    assert torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        coarse(torch.zeros(3, 1, 32, 32), targets, SEED_WEIGHTS_AT_END)  # not 4x coarser
