"""The per-worker training loop: the only code that talks to ``ray.train``.

Each epoch, every rank builds its own Ray Data pipeline over its own slice of sample indices,
with the epoch's curriculum noise and a seed derived from (run seed, epoch). Synthesis runs in
Ray Data tasks anywhere in the cluster and streams into the rank while it trains. Every rank gets
exactly ``steps_per_epoch`` full batches by construction — uneven shards or a short last batch
would leave one DDP rank waiting in an all-reduce forever.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dotseg.config import Config, config_from_dict
from dotseg.curriculum import Phase
from dotseg.device import autocast, configure_cpu, grad_scaler

log = logging.getLogger(__name__)

#: Files inside each reported checkpoint directory.
MODEL_FILE, STATE_FILE, HISTORY_FILE = "model.safetensors", "train_state.pt", "history.json"


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s training samples: distinct per (run seed, epoch), never the validation seed."""
    return int(np.random.SeedSequence([seed, 1, epoch]).generate_state(1, dtype=np.uint64)[0])


def val_seed(seed: int) -> int:
    return int(np.random.SeedSequence([seed, 2]).generate_state(1, dtype=np.uint64)[0])


def steps_per_epoch(cfg: Config, world: int) -> int:
    """Full batches per rank per epoch (the same on every rank)."""
    return max(cfg.train.samples_per_epoch // (world * cfg.train.batch_size), 1)


def validation_set(cfg: Config):
    """The fixed validation set: the full noise distribution (noise_scale 1, the last phase's mix)."""
    from dotseg.training.step import ValSet

    mixed = max(p.mixed_prob for p in cfg.curriculum.phases)
    return ValSet(synthesis=cfg.synthesis, seed=val_seed(cfg.train.seed), count=cfg.train.val_samples,
                  noise_scale=1.0, mixed_prob=mixed)


def _epoch_batches(cfg: Config, epoch: int, phase: Phase, rank: int, world: int, device: torch.device):
    """This rank's training batches of ``epoch``: (images, masks) as (B, 1, H, W) float32 on ``device``."""
    import ray.data

    from dotseg.data import synthesis_dataset

    steps = steps_per_epoch(cfg, world)
    per_rank = steps * cfg.train.batch_size
    # Streaming order must not depend on which task finishes first, or a resumed run would see
    # the same samples in another order and drift from the uninterrupted one.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = synthesis_dataset(cfg.synthesis, cfg.data, epoch_seed(cfg.train.seed, epoch), per_rank,
                           offset=rank * per_rank, noise_scale=phase.noise_scale, mixed_prob=phase.mixed_prob,
                           columns=("image", "mask"), model_input=True)
    batches = ds.iter_torch_batches(batch_size=cfg.train.batch_size, drop_last=True,
                                    prefetch_batches=cfg.data.prefetch_batches)
    for i, b in enumerate(batches):
        if i >= steps:
            break
        yield (b["image"].unsqueeze(1).to(device, non_blocking=True),
               b["mask"].unsqueeze(1).to(device, dtype=torch.float32, non_blocking=True))


def _panels(model: torch.nn.Module, cfg: Config, device: torch.device, n: int) -> list[tuple[np.ndarray, str]]:
    """image | truth | prediction strips for the first ``n`` validation samples."""
    from dotseg.synthesis import make_batch
    from dotseg.normalize import normalize
    from dotseg.viz import panel_row

    if n <= 0:
        return []
    vs = validation_set(cfg)
    b = make_batch(vs.synthesis, vs.seed, range(n), noise_scale=vs.noise_scale, mixed_prob=vs.mixed_prob)
    model.eval()
    with torch.no_grad(), autocast(device, cfg.train.amp):
        logits = model(torch.from_numpy(normalize(b["image"])).unsqueeze(1).to(device))
    prob = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
    return [(panel_row(b["image"][i], b["mask"][i], prob[i] >= cfg.train.threshold, prob[i]),
             f"{b['noise'][i]}, SNR {b['snr_db'][i]:.1f} dB") for i in range(n)]


def train_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train entry point, run on every rank."""
    import ray.train
    import ray.train.torch

    from dotseg.checkpoint import load_checkpoint, save_checkpoint
    from dotseg.losses.compound import CompoundLoss, loss_weights
    from dotseg.models import build_model
    from dotseg.training import tracking
    from dotseg.training.step import build_optimizer, evaluate, train_step

    # Our per-epoch line says what matters; Ray Data's per-dataset INFO lines would bury it.
    for name in ("ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg: Config = config_from_dict(loop_config["cfg"])
    stop_after = loop_config.get("stop_after_epoch")
    run_dir = Path(loop_config["run_dir"])
    tcfg = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    configure_cpu(tcfg.torch_threads or max(int(tcfg.cpus_per_worker), 1))
    device = ray.train.torch.get_device()
    torch.manual_seed(tcfg.seed)

    model = build_model(cfg.model)
    steps = steps_per_epoch(cfg, world)
    optimizer, scheduler = build_optimizer(model, tcfg, steps)
    scaler = grad_scaler(device, tcfg.amp)
    state: dict[str, Any] = {"epoch": 0, "best_dice": -1.0, "bad_epochs": 0, "collapsed": 0, "history": []}

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            loaded = load_checkpoint(Path(d) / MODEL_FILE, expect=cfg.model)
            model.load_state_dict(loaded.state_dict)
            saved = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["loop"]
        if rank == 0:
            log.info(f"resumed from the checkpoint of epoch {state['epoch']}")

    model = ray.train.torch.prepare_model(model)  # moves to device; DDP when world > 1
    loss_fn = CompoundLoss(cfg.loss)
    val = validation_set(cfg)
    run = tracking.start_run(cfg, run_dir, loop_config["run_id"], rank)
    epoch_times: list[float] = []
    stop_reason = "completed"

    # A run that stopped early stays stopped when resumed; one that ran out of epochs can be
    # extended by resuming with a larger train.epochs.
    first = state["epoch"] + 1 if state.get("stop_reason") not in ("early_stopping", "collapse") else tcfg.epochs + 1
    if first > tcfg.epochs:
        stop_reason = state.get("stop_reason", "completed")
    for epoch in range(first, tcfg.epochs + 1):
        phase = cfg.curriculum.phase_at(epoch)
        weights = loss_weights(cfg.loss, epoch, tcfg.epochs)
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        n_steps = 0
        for images, masks in _epoch_batches(cfg, epoch, phase, rank, world, device):
            out = train_step(model, images, masks, loss_fn, weights, optimizer, scheduler, scaler, device,
                             tcfg.amp, tcfg.grad_clip)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            n_steps += 1
        if n_steps != steps:
            raise RuntimeError(f"rank {rank} got {n_steps} training batches in epoch {epoch}, expected {steps}")
        train_time = time.perf_counter() - t0
        noisy = evaluate(model, val.batches(rank, world, tcfg.batch_size, noisy=True), device, tcfg.amp, tcfg.threshold)
        clean = evaluate(model, val.batches(rank, world, tcfg.batch_size, noisy=False), device, tcfg.amp, tcfg.threshold)
        epoch_time = time.perf_counter() - t0
        epoch_times.append(epoch_time)

        metrics: dict[str, Any] = {
            "epoch": epoch, "phase": phase.name, "noise_scale": phase.noise_scale, "mixed_prob": phase.mixed_prob,
            **{k: v / n_steps for k, v in sums.items()},
            **{f"val_{k}": v for k, v in noisy.items()}, "clean_dice": clean["dice"],
            "clean_fg_ratio": clean["fg_ratio"],
            "lr": scheduler.get_last_lr()[0], "w_dice": weights.dice, "w_bce": weights.bce,
            "w_boundary": weights.boundary,
            "samples_per_s": steps * tcfg.batch_size * world / train_time, "epoch_time_s": epoch_time,
        }
        # Early stopping and the blank-mask guard decide on all-reduced metrics, so every rank agrees.
        if metrics["val_dice"] > state["best_dice"] + tcfg.early_stopping.min_delta:
            state["best_dice"], state["bad_epochs"] = metrics["val_dice"], 0
        else:
            state["bad_epochs"] += 1
        guard = tcfg.collapse
        collapsed = epoch > guard.grace_epochs and (
            clean["dice"] < guard.min_clean_dice or clean["fg_ratio"] < guard.min_foreground_ratio)
        state["collapsed"] = state["collapsed"] + 1 if collapsed else 0
        metrics["collapsed_epochs"] = state["collapsed"]
        state["epoch"] = epoch
        state["history"] = state["history"] + [metrics]

        if rank == 0:
            remaining = tcfg.epochs - epoch
            eta = remaining * (sum(epoch_times) / len(epoch_times))
            log.info(f"epoch {epoch}/{tcfg.epochs} {phase.name} (noise {phase.noise_scale:.2f}, "
                     f"mixed {phase.mixed_prob:.1f}) | loss {metrics['loss']:.4f} | val dice {metrics['val_dice']:.4f} "
                     f"iou {metrics['val_iou']:.4f} clean dice {metrics['clean_dice']:.4f} | "
                     f"{metrics['samples_per_s']:.1f} samples/s | {epoch_time:.0f} s/epoch | ETA {_fmt(eta)}")
            if collapsed:
                log.warning(f"blank-mask collapse at epoch {epoch}: clean dice {clean['dice']:.3f} "
                            f"(min {guard.min_clean_dice}), predicted/true foreground {clean['fg_ratio']:.3f} "
                            f"(min {guard.min_foreground_ratio}); {state['collapsed']} epoch(s) in a row"
                            + (f", stopping after {guard.max_epochs}" if guard.max_epochs else ""))
            tracking.log_epoch(run, epoch, metrics, _panels(model, cfg, device, tcfg.wandb.images_per_epoch)
                               if run is not None else None)

        if guard.max_epochs and state["collapsed"] >= guard.max_epochs:
            stop_reason = "collapse"
        elif tcfg.early_stopping.patience and state["bad_epochs"] >= tcfg.early_stopping.patience:
            stop_reason = "early_stopping"
        elif stop_after is not None and epoch >= stop_after and epoch < tcfg.epochs:
            stop_reason = "paused"  # --stop-after-epoch: resumable, unlike the two above
        state["stop_reason"] = stop_reason

        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_checkpoint(Path(tmp) / MODEL_FILE, model, cfg, threshold=tcfg.threshold,
                                metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                                epoch=epoch)
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(), "loop": state},
                           Path(tmp) / STATE_FILE)
                (Path(tmp) / HISTORY_FILE).write_text(json.dumps(state["history"], indent=1))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
                             checkpoint=checkpoint)
        if stop_reason != "completed":
            if rank == 0:
                log.info(f"stopping at epoch {epoch}: {stop_reason.replace('_', ' ')}")
            break

    tracking.finish(run)
    return {"stop_reason": stop_reason, "epochs_run": state["epoch"], "history": state["history"]}


def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
