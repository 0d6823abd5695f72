"""The per-worker training loop: the only code that talks to ``ray.train``.

Each epoch, every rank builds its own Ray Data pipeline over its own slice of sample indices,
with the epoch's curriculum noise and a seed derived from (run seed, epoch). Synthesis runs in
Ray Data tasks anywhere in the cluster and streams into the rank while it trains. Every rank gets
exactly ``steps_per_epoch`` full batches by construction — uneven shards or a short last batch
would leave one DDP rank waiting in an all-reduce forever. The validation set is synthesized once
per run, each rank its own slice, and kept in the object store.

The pieces are plain functions elsewhere: one optimizer step and validation in
:mod:`dotseg.training.step`, stopping rules in :mod:`dotseg.training.stopping`, the checkpoint
pair in :mod:`dotseg.checkpoint`, W&B in :mod:`dotseg.tracking`.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dotseg.config import Config
from dotseg.curriculum import Phase
from dotseg.device import autocast, configure_cpu, grad_scaler, memory_format

log = logging.getLogger(__name__)
#: In the run directory: the records dotseg code logs in the workers, for the driver to relay.
WORKER_LOG = "worker_log.jsonl"


@dataclass(frozen=True, slots=True)
class LoopArgs:
    """What the driver hands every worker (through Ray as a plain dict: :meth:`to_ray`)."""

    cfg: Config
    run_dir: Path
    """The run's directory (shared storage on a multi-node cluster)."""
    stop_after_epoch: int | None = None
    """Pause after this epoch (``--stop-after-epoch``)."""
    origin: dict[str, Any] = field(default_factory=dict)
    """A sweep trial's identity: ``sweep``, ``trial`` (recorded in its checkpoints and W&B run) and
    ``params`` (the sampled values); empty for a plain training run."""
    records: str | None = None
    """The driver's :class:`~dotseg.logs.RecordSink` actor that dotseg's log records go to;
    None: straight to ``run_dir/worker_log.jsonl``."""
    remote: str | None = None
    """The run's bucket URI when ``train.storage_path`` is one (``run_dir`` is then a staging
    directory on each node, and rank 0 uploads its W&B run there at the end)."""
    datasets: dict[str, str] = field(default_factory=dict)
    """``data.labelled`` paths and their content digests (the driver checked them): provenance."""

    @property
    def run_name(self) -> str:
        """Names the run for Ray Train and W&B (a resumed run keeps it)."""
        return self.run_dir.name

    def to_ray(self) -> dict[str, Any]:
        return {
            "cfg": self.cfg.to_dict(),
            "run_dir": str(self.run_dir),
            "stop_after_epoch": self.stop_after_epoch,
            "origin": self.origin,
            "records": self.records,
            "remote": self.remote,
            "datasets": self.datasets,
        }

    @classmethod
    def from_ray(cls, data: dict[str, Any]) -> LoopArgs:
        return cls(
            cfg=Config.from_dict(data["cfg"]),
            run_dir=Path(data["run_dir"]),
            stop_after_epoch=data.get("stop_after_epoch"),
            origin=dict(data.get("origin") or {}),
            records=data.get("records"),
            remote=data.get("remote"),
            datasets=dict(data.get("datasets") or {}),
        )


@dataclass(frozen=True, slots=True)
class Session:
    """Where the loop runs: a rank of a Ray Train worker group, or a Ray Tune trial's own process
    (a single-worker sweep trial, without a Train run around it). The loop only talks to this."""

    rank: int
    world: int
    device: torch.device
    checkpoint: Any | None
    """The checkpoint to resume from (a ``ray.train.Checkpoint``), or None."""
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module]
    report: Callable[[dict[str, Any], str | None], None]
    """``report(metrics, checkpoint_dir)``: hands the epoch's metrics (and checkpoint) to Ray."""


def train_session() -> Session:
    """Inside a Ray Train worker: its rank, its device, DDP wrapping, ``ray.train.report``."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()

    def report(metrics: dict[str, Any], directory: str | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if directory else None)

    return Session(
        rank=ctx.get_world_rank(),
        world=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        checkpoint=ray.train.get_checkpoint(),
        prepare_model=ray.train.torch.prepare_model,
        report=report,
    )


def tune_session(cfg: Config) -> Session:
    """Inside a Ray Tune function trial: one process, the GPU Tune assigned it if the config asks for one."""
    import ray.tune

    from dotseg.device import resolve_device

    device = resolve_device("cuda" if cfg.train.use_gpu else "cpu")

    def report(metrics: dict[str, Any], directory: str | None) -> None:
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(directory) if directory else None)

    return Session(
        rank=0,
        world=1,
        device=device,
        checkpoint=ray.tune.get_checkpoint(),
        prepare_model=lambda model: model.to(device),
        report=report,
    )


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s training samples: distinct per (run seed, epoch), never the validation seed."""
    return int(np.random.SeedSequence([seed, 1, epoch]).generate_state(1, dtype=np.uint64)[0])


def val_seed(seed: int) -> int:
    return int(np.random.SeedSequence([seed, 2]).generate_state(1, dtype=np.uint64)[0])


def steps_per_epoch(cfg: Config, world: int) -> int:
    """Full batches per rank per epoch (the same on every rank)."""
    return max(cfg.train.samples_per_epoch // (world * cfg.train.batch_size), 1)


def _epoch_batches(
    cfg: Config, epoch: int, phase: Phase, rank: int, world: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's training batches of ``epoch``: (images, masks) as (B, 1, H, W) float32 on ``device``."""
    import ray.data

    from dotseg.data import LabelledMix, synthesis_dataset

    steps = steps_per_epoch(cfg, world)
    per_rank = steps * cfg.train.batch_size
    # Streaming order must not depend on which task finishes first, or a resumed run would see
    # the same samples in another order and drift from the uninterrupted one.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = synthesis_dataset(
        cfg.synthesis,
        cfg.data,
        epoch_seed(cfg.train.seed, epoch),
        per_rank,
        offset=rank * per_rank,
        noise_scale=phase.noise_scale,
        mixed_prob=phase.mixed_prob,
        columns=("image", "mask"),
        model_input=True,
        augment=cfg.data.augment,
        priority=cfg.data.priority,
        labelled=LabelledMix.of(cfg.data, cfg.train.seed),
    )
    batches = ds.iter_torch_batches(
        batch_size=cfg.train.batch_size, drop_last=True, prefetch_batches=cfg.data.prefetch_batches
    )
    for i, b in enumerate(batches):
        if i >= steps:
            break
        yield (
            b["image"].unsqueeze(1).to(device, non_blocking=True),
            b["mask"].unsqueeze(1).to(device, dtype=torch.float32, non_blocking=True),
        )


def _validation(cfg: Config, rank: int, world: int) -> Any | None:
    """This rank's slice of the fixed validation set: the full noise distribution (noise_scale 1,
    the last phase's mix), synthesized once for the run."""
    from dotseg.data import validation_shard

    mixed = max(p.mixed_prob for p in cfg.curriculum.phases)
    return validation_shard(
        cfg.synthesis,
        cfg.data,
        val_seed(cfg.train.seed),
        cfg.train.val_samples,
        rank=rank,
        world=world,
        noise_scale=1.0,
        mixed_prob=mixed,
    )


def _labelled_validation(cfg: Config, rank: int, world: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """This rank's share of the held-out labelled pairs (``data.labelled``), whole images as
    (model input (1, H, W), mask (1, H, W) uint8): validated at full size, as they are predicted."""
    from dotseg import labelled
    from dotseg.normalize import normalize

    held: list[tuple[np.ndarray, np.ndarray]] = []
    for source in cfg.data.labelled:
        _, images, masks = labelled.arrays(source.path)
        _, out = labelled.split(len(images), cfg.data.labelled_holdout, cfg.train.seed)
        held += [(normalize(images[k])[None], masks[k][None].astype(np.uint8)) for k in out]
    return held[rank::world]


def _val_batches(shard: Any | None, batch_size: int, column: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(model input (B, H, W) float32, masks (B, H, W) uint8) of the noisy (``image``) or ``clean`` column."""
    if shard is None:
        return
    for b in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        yield b[column], b["mask"]


def _panels(
    model: torch.nn.Module, shard: Any | None, cfg: Config, device: torch.device, n: int
) -> list[tuple[np.ndarray, str]]:
    """image | truth | prediction strips for the first ``n`` validation samples of this rank."""
    from dotseg.plots import panel_row

    if n <= 0 or shard is None:
        return []
    b = shard.take_batch(n, batch_format="numpy")
    model.eval()
    with torch.no_grad(), autocast(device, cfg.train.amp):
        logits = model(torch.from_numpy(b["image"]).unsqueeze(1).to(device))  # (n, 1, H, W)
    prob = torch.sigmoid(logits.float())[:, 0].cpu().numpy()  # (n, H, W)
    return [
        (
            panel_row(b["image"][i], b["mask"][i], prob[i] >= cfg.train.threshold, prob[i]),
            f"{b['noise'][i]}, SNR {b['snr_db'][i]:.1f} dB",
        )
        for i in range(len(prob))
    ]


def train_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train entry point, run on every rank; dotseg's log records go to the run's
    ``worker_log.jsonl`` (through the driver's record sink, if it has one), which the driver
    relays to its console."""
    from dotseg.logs import records_to

    args = LoopArgs.from_ray(loop_config)
    args.run_dir.mkdir(parents=True, exist_ok=True)  # a bucket run's staging directory, on this node
    with records_to(args.records or args.run_dir / WORKER_LOG):
        return run_loop(args, train_session())


def run_loop(args: LoopArgs, session: Session) -> dict[str, Any]:
    """The training loop, the same for ``dotseg train`` (every DDP rank) and a sweep trial."""
    from dotseg import tracking
    from dotseg.checkpoint import load_training_checkpoint, save_training_checkpoint
    from dotseg.losses.compound import CompoundLoss, loss_weights
    from dotseg.models import build_model
    from dotseg.training.step import build_optimizer, evaluate, train_step
    from dotseg.training.stopping import LoopState, after_epoch, first_epoch, is_collapsed

    # Our per-epoch line says what matters; Ray Data's per-dataset INFO lines would bury it.
    for name in ("ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg, tcfg = args.cfg, args.cfg.train
    rank, world, device = session.rank, session.world, session.device
    if world > 1:  # where each DDP rank landed: a user checks a multi-node run spans the nodes
        import ray

        log.info(f"rank {rank}/{world} on node {ray.get_runtime_context().get_node_id()[:12]}, {device}")
    configure_cpu(tcfg.torch_threads or max(int(tcfg.cpus_per_worker), 1))
    torch.manual_seed(tcfg.seed)

    model = build_model(cfg.model)
    steps = steps_per_epoch(cfg, world)
    optimizer, scheduler = build_optimizer(model, tcfg, steps)
    scaler = grad_scaler(device, tcfg.amp)
    state = LoopState()
    if session.checkpoint is not None:
        with session.checkpoint.as_directory() as d:
            state = LoopState.from_dict(
                load_training_checkpoint(d, model, optimizer, scheduler, scaler, expect=cfg.model)
            )
        if rank == 0:
            log.info(f"resumed from the checkpoint of epoch {state.epoch}")
    elif tcfg.init is not None:  # fine-tuning: weights only; the driver checked the file (training.run.check_init)
        from dotseg.checkpoint import load_checkpoint
        from dotseg.inference.predictor import resolve_checkpoint

        init = load_checkpoint(resolve_checkpoint(tcfg.init), expect=cfg.model)
        model.load_state_dict(init.state_dict, strict=True)
        if rank == 0:
            log.info(f"initialized from {tcfg.init} (model {init.model_id}, epoch {init.epoch})")

    layout = memory_format(device, tcfg.amp)
    model = model.to(memory_format=layout)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    model = session.prepare_model(model)  # moves to device; DDP when world > 1
    loss_fn = CompoundLoss(cfg.loss, cfg.model.downscale)
    val = _validation(cfg, rank, world)
    held_out = _labelled_validation(cfg, rank, world)
    # A sweep trial's W&B run is the sweep driver's (tracking.start_trial_run).
    run = tracking.start_training_run(cfg, args.run_dir, args.run_name) if rank == 0 and not args.origin else None
    epoch_times: list[float] = []

    # A run that stopped early stays stopped when resumed; one that ran out of epochs can be
    # extended by resuming with a larger train.epochs.
    # finally: a trial that Ray Tune stops (ASHA) still closes its W&B run.
    try:
        for epoch in range(first_epoch(state), tcfg.epochs + 1):
            phase = cfg.curriculum.phase_at(epoch)
            weights = loss_weights(cfg.loss, epoch, tcfg.epochs)
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            n_steps = 0
            for images, masks in _epoch_batches(cfg, epoch, phase, rank, world, device):
                out = train_step(
                    model,
                    images.contiguous(memory_format=layout),
                    masks,
                    loss_fn,
                    weights,
                    optimizer,
                    scheduler,
                    scaler,
                    device,
                    tcfg.amp,
                    tcfg.grad_clip,
                )
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_steps += 1
            if n_steps != steps:
                raise RuntimeError(f"rank {rank} got {n_steps} training batches in epoch {epoch}, expected {steps}")
            train_time = time.perf_counter() - t0
            # All-reduced metrics: every rank takes the same stopping decision below.
            noisy = evaluate(model, _val_batches(val, tcfg.batch_size, "image"), device, tcfg.amp, tcfg.threshold)
            clean = evaluate(model, _val_batches(val, tcfg.batch_size, "clean"), device, tcfg.amp, tcfg.threshold)
            own = evaluate(model, iter(held_out), device, tcfg.amp, tcfg.threshold) if cfg.data.labelled else None
            epoch_time = time.perf_counter() - t0
            epoch_times.append(epoch_time)
            metrics: dict[str, Any] = {
                "epoch": epoch,
                "phase": phase.name,
                "noise_scale": phase.noise_scale,
                "mixed_prob": phase.mixed_prob,
                **{k: v / n_steps for k, v in sums.items()},
                **{f"val_{k}": v for k, v in noisy.items()},
                "clean_dice": clean["dice"],
                "clean_fg_ratio": clean["fg_ratio"],
                **({"labelled_dice": own["dice"], "labelled_iou": own["iou"]} if own else {}),
                "lr": scheduler.get_last_lr()[0],
                "w_dice": weights.dice,
                "w_bce": weights.bce,
                "w_boundary": weights.boundary,
                "samples_per_s": steps * tcfg.batch_size * world / train_time,
                "epoch_time_s": epoch_time,
            }
            state = after_epoch(
                state,
                metrics,
                early=tcfg.early_stopping,
                guard=tcfg.collapse,
                epochs=tcfg.epochs,
                stop_after=args.stop_after_epoch,
            )
            metrics = state.history[-1]

            if rank == 0:
                eta = (tcfg.epochs - epoch) * (sum(epoch_times) / len(epoch_times))
                log.info(
                    f"epoch {epoch}/{tcfg.epochs} {phase.name} (noise {phase.noise_scale:.2f}, "
                    f"mixed {phase.mixed_prob:.1f}) | loss {metrics['loss']:.4f} | val dice {metrics['val_dice']:.4f} "
                    f"iou {metrics['val_iou']:.4f} clean dice {metrics['clean_dice']:.4f}"
                    + (f" labelled dice {metrics['labelled_dice']:.4f}" if own else "")
                    + " | "
                    f"{metrics['samples_per_s']:.1f} samples/s | {epoch_time:.0f} s/epoch | ETA {_fmt(eta)}"
                )
                guard = tcfg.collapse
                if is_collapsed(epoch, clean["dice"], clean["fg_ratio"], guard):
                    log.warning(
                        f"blank-mask collapse at epoch {epoch}: clean dice {clean['dice']:.3f} "
                        f"(min {guard.min_clean_dice}), predicted/true foreground {clean['fg_ratio']:.3f} "
                        f"(min {guard.min_foreground_ratio}); {state.collapsed} epoch(s) in a row"
                        + (f", stopping after {guard.max_epochs}" if guard.max_epochs else "")
                    )
                tracking.log_epoch(
                    run, epoch, metrics, _panels(model, val, cfg, device, tcfg.wandb.images_per_epoch) if run else None
                )

            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:  # every rank reports (a barrier); rank 0 alone writes
                    save_training_checkpoint(
                        tmp,
                        model,
                        cfg,
                        metrics=metrics,
                        epoch=epoch,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        scaler=scaler,
                        loop=state.to_dict(),
                        origin={
                            **{k: args.origin[k] for k in ("sweep", "trial") if k in args.origin},
                            **({"datasets": args.datasets} if args.datasets else {}),
                        },
                    )
                    checkpoint = tmp
                session.report(
                    {
                        **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
                        "stop_reason": state.stop_reason,
                    },
                    checkpoint,
                )
            if state.stop_reason != "completed":
                if rank == 0:
                    log.info(f"stopping at epoch {epoch}: {state.stop_reason.replace('_', ' ')}")
                break
    finally:
        tracking.finish(run)
        if run is not None and args.remote:  # the W&B run is on this node's disk, not the bucket's
            _upload_wandb(args)
    return {"stop_reason": state.stop_reason, "epochs_run": state.epoch, "history": list(state.history)}


def _upload_wandb(args: LoopArgs) -> None:
    from dotseg import storage

    assert args.remote is not None
    try:
        storage.upload(args.run_dir / "wandb", storage.join(args.remote, "wandb"))
    except storage.StorageError as e:
        log.warning(f"W&B run not uploaded to the bucket (it stays in {args.run_dir / 'wandb'} on this node): {e}")


def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
