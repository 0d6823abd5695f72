"""DDP parity (issue 19): 2 ranks x batch b take the step 1 rank takes on the same 2b samples.

Two real processes, gloo on 127.0.0.1, the project's own ``train_step`` under
``DistributedDataParallel`` (what Ray Train's ``prepare_model`` wraps it in). Every loss term is a
per-sample mean, so DDP's gradient average equals the full batch's gradient except for one thing
CPU DDP cannot share: BatchNorm's batch statistics are each rank's own (``SyncBatchNorm`` runs on
GPUs only). So the test checks (1) DDP's gradients equal the mean of the gradients of the two
halves, each computed alone -- exactly what one worker with batch 2b computes when its statistics
are per half -- to float tolerance; (2) against the true 2b batch, the gradients point the same way
(cosine 0.95 measured at b = 2 on 64 px images; > 0.9 asserted: the gap is the BatchNorm statistics
of b vs 2b images alone, which (1) proves); (3) after the step, both ranks hold the same weights.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dotseg.config import Config
from dotseg.device import grad_scaler
from dotseg.losses.compound import CompoundLoss, LossWeights
from dotseg.models import build_model
from dotseg.training.step import build_optimizer, train_step

WEIGHTS = LossWeights(dice=1.0, bce=0.5, boundary=0.5)
B = 2  # per rank


def _cfg(resolution: str = "input") -> Config:
    """``resolution`` ``network``: the loss on the network's grid (issue 17), at downscale 2."""
    return Config().replace(
        **{
            "loss.resolution": resolution,
            "model.downscale": 2 if resolution == "network" else 1,
            "model.base_channels": 4,
            "model.depth": 3,
            "model.dropout": 0.0,  # dropout masks would differ between the runs
            "train.warmup_epochs": 0,
            "train.epochs": 100,
            "train.lr": 1e-3,
        }
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    from dotseg.normalize import normalize
    from dotseg.synthesis import SynthesisConfig, make_sample

    samples = [make_sample(SynthesisConfig(size=64), 5, i, noise_scale=0.5) for i in range(2 * B)]
    images = torch.stack([torch.from_numpy(normalize(s.image)) for s in samples])[:, None]
    masks = torch.stack([torch.from_numpy(s.mask.astype("float32")) for s in samples])[:, None]
    return images, masks


def _step(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, clip: float, resolution: str) -> None:
    cfg = _cfg(resolution)
    device = torch.device("cpu")
    optimizer, scheduler = build_optimizer(model, cfg.train, steps_per_epoch=1)
    loss = CompoundLoss(cfg.loss, cfg.model.downscale)
    train_step(
        model, images, masks, loss, WEIGHTS, optimizer, scheduler, grad_scaler(device, False), device, False, clip,
    )  # fmt: skip


def _rank(rank: int, port: int, out: str, resolution: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(build_model(_cfg(resolution).model))
        images, masks = _batch()
        _step(model, images[rank * B : (rank + 1) * B], masks[rank * B : (rank + 1) * B], 0.0, resolution)
        grads = {k: p.grad.clone() for k, p in model.module.named_parameters()}
        params = {k: p.detach().clone() for k, p in model.module.named_parameters()}
        torch.save({"grads": grads, "params": params}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _grads(images: torch.Tensor, masks: torch.Tensor, resolution: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(_cfg(resolution).model)
    _step(model, images, masks, 0.0, resolution)
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _flat(g: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten() for v in g.values()])


@pytest.mark.slow
@pytest.mark.parametrize("resolution", ["input", "network"])
def test_two_ranks_take_the_step_of_one_rank_with_twice_the_batch(tmp_path: Path, resolution: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank, args=(port, str(tmp_path), resolution), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    # (3) one step later, both ranks hold the same weights
    for k in r0["params"]:
        torch.testing.assert_close(r0["params"][k], r1["params"][k], rtol=0, atol=0)

    images, masks = _batch()
    halves = [_grads(images[i * B : (i + 1) * B], masks[i * B : (i + 1) * B], resolution) for i in (0, 1)]
    # (1) DDP's gradient is the mean of the halves' (every loss term is a per-sample mean)
    for k, g in r0["grads"].items():
        torch.testing.assert_close(g, (halves[0][k] + halves[1][k]) / 2, rtol=1e-4, atol=1e-6)
    # (2) and close to the full batch's, BatchNorm statistics of b vs 2b images aside. That gap is the
    # network's, not DDP's: on the 32 px grid of downscale 2 (4 px at the bottleneck) it is wider
    # (cosine 0.88), so (2) is asserted for the default; (1) and (3) are the parity for both.
    if resolution != "input":
        return
    full = _flat(_grads(images, masks, resolution))
    ddp = _flat(r0["grads"])
    cosine = float(torch.nn.functional.cosine_similarity(ddp, full, dim=0))
    assert cosine > 0.9, cosine
    assert abs(float(ddp.norm() / full.norm()) - 1.0) < 0.2
