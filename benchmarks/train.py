"""Training throughput: today's shipped configuration against a candidate (v2's), in one run.

    python benchmarks/train.py [--baseline cpu] [--candidate v2 ...] [--epochs 3] [--samples 384] [--rounds 1]

A candidate is a config name, optionally with overrides joined by '+':
``--candidate v2 --candidate v2+data.priority=idle`` measures v2 as it is and with idle-priority synthesis.

For each config, in alternating rounds (so a burst of other work on a shared machine hits both):
  * the step profile: a plain PyTorch loop over pre-generated, pre-normalized batches, timed by
    part (forward, loss, backward, optimizer step), plus what a real run adds around the steps:
    synthesizing a batch (one core), validating a sample, writing the epoch's checkpoint;
  * a real ``dotseg train`` run on an embedded local Ray (Ray Data synthesis streamed into a Ray
    Train worker, validation and checkpoints as in a real run), all epochs at the full noise mix:
    training samples/s (the steps alone) and end-to-end samples/s (epoch samples / epoch wall
    time, validation and checkpoint included), steady state (the first epoch pays Ray's start).
The header names the CPU, its vector features and whether bf16 autocast ran (it does only where
the CPU computes bf16 natively; see dotseg.device).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dotseg.config import Config, load_config
from dotseg.device import amp_active, autocast, configure_cpu, cpu_line, grad_scaler, memory_format
from dotseg.losses.compound import CompoundLoss, loss_weights
from dotseg.models import build_model
from dotseg.normalize import normalize
from dotseg.synthesis import make_batch
from dotseg.training.step import build_optimizer, logits_for_loss

#: The same short schedule for every config: one phase at the full noise mix, a fixed loss mix.
SHORT = [
    "train.warmup_epochs=0",
    "train.early_stopping.patience=0",
    "curriculum.phases=[{name: all, start_epoch: 1, noise_scale: 1.0, mixed_prob: 0.3}]",
]


def short_config(name: str, epochs: int, samples: int, overrides: list[str]) -> Config:
    cfg = load_config(name)
    boundary = f"loss.boundary={{start: 0.25, end: 0.25, from_epoch: 1, to_epoch: {epochs}}}"
    val = max(samples // 4, cfg.train.batch_size)  # the shipped ratio: 256 validation per 1024 training samples
    return load_config(
        name,
        [
            *SHORT,
            boundary,
            f"train.epochs={epochs}",
            f"train.samples_per_epoch={samples}",
            f"train.val_samples={val}",
            *overrides,
        ],
    )


def step_profile(cfg: Config, steps: int = 8) -> dict[str, float]:
    """Milliseconds per batch of each part of a training step, and per sample of validation, batch
    synthesis and the epoch's checkpoint, measured in this process with the config's threads."""
    from dotseg.checkpoint import save_training_checkpoint

    configure_cpu(cfg.train.torch_threads or 1)
    device, amp, bs = torch.device("cpu"), cfg.train.amp, cfg.train.batch_size
    torch.manual_seed(0)
    t0 = time.perf_counter()
    b = make_batch(cfg.synthesis, 0, range(2 * bs), noise_scale=1.0, mixed_prob=0.3)
    images = torch.from_numpy(normalize(b["image"])).unsqueeze(1)  # (2B, 1, H, W)
    synth_ms = (time.perf_counter() - t0) * 1e3 / 2  # per batch: generation + normalization, one core
    masks = torch.from_numpy(b["mask"]).unsqueeze(1).float()
    layout = memory_format(device, amp)  # as the training loop runs it
    images = images.contiguous(memory_format=layout)
    model = build_model(cfg.model).to(memory_format=layout)  # type: ignore[call-overload]
    optimizer, scheduler = build_optimizer(model, cfg.train, steps + 2)
    scaler = grad_scaler(device, amp)
    loss_fn = CompoundLoss(cfg.loss, cfg.model.downscale)
    weights = loss_weights(cfg.loss, 1, cfg.train.epochs)
    parts: dict[str, list[float]] = {"forward": [], "loss": [], "backward": [], "optimizer": []}
    for i in range(steps + 2):  # 2 warm-up steps: oneDNN picks its kernels on the first calls
        x, y = images[(i % 2) * bs : (i % 2 + 1) * bs], masks[(i % 2) * bs : (i % 2 + 1) * bs]
        model.train()
        t = [time.perf_counter()]
        with autocast(device, amp):
            logits = logits_for_loss(model, x, loss_fn)
        t.append(time.perf_counter())
        loss, _ = loss_fn(logits, y, weights)
        t.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        t.append(time.perf_counter())
        if cfg.train.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        t.append(time.perf_counter())
        if i >= 2:
            for key, a, z in zip(parts, t, t[1:], strict=False):
                parts[key].append((z - a) * 1e3)
    out = {k: statistics.median(v) for k, v in parts.items()}
    model.eval()
    with torch.no_grad(), autocast(device, amp):
        model(images[:bs])
        t0 = time.perf_counter()
        model(images[:bs])
    out["validate"] = (time.perf_counter() - t0) * 1e3 / bs  # per validation sample (x2: noisy and clean)
    out["synthesize"] = synth_ms
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        save_training_checkpoint(
            tmp, model, cfg, metrics={}, epoch=1, optimizer=optimizer, scheduler=scheduler, scaler=scaler, loop={}
        )
        out["checkpoint"] = (time.perf_counter() - t0) * 1e3
    out["step"] = sum(out[k] for k in ("forward", "loss", "backward", "optimizer"))
    out["samples_per_s"] = bs / out["step"] * 1e3
    return out


def ray_run(cfg: Config, storage: Path, tag: str) -> dict[str, float]:
    """Steady-state samples/s of a real ``dotseg train`` run: the steps alone and end to end."""
    from dotseg.training.run import train

    cfg = cfg.replace(
        **{"train.storage_path": str(storage), "train.wandb.mode": "disabled", "train.wandb.images_per_epoch": 0}
    )
    t0 = time.perf_counter()
    result = train(cfg, run_dir=storage / tag, quiet=True)
    wall = time.perf_counter() - t0
    steady = result.history[1:] or result.history
    samples = cfg.train.samples_per_epoch
    return {
        "train": statistics.mean(h["samples_per_s"] for h in steady),
        "end_to_end": statistics.mean(samples / h["epoch_time_s"] for h in steady),
        "startup": wall - sum(h["epoch_time_s"] for h in result.history),
        "val_dice": result.history[-1]["val_dice"],
    }


def describe(name: str, cfg: Config) -> str:
    m, t = cfg.model, cfg.train
    amp = "bf16 autocast" if amp_active(torch.device("cpu"), t.amp) else "fp32"
    return (
        f"`{name}`: {m.variant} base {m.base_channels} depth {m.depth} downscale {m.downscale}, batch "
        f"{t.batch_size}, {t.num_workers} worker(s) x {t.torch_threads or int(t.cpus_per_worker)} thread(s), "
        f"{amp}, {'channels-last' if memory_format(torch.device('cpu'), t.amp) == torch.channels_last else 'NCHW'}, "
        f"augment {cfg.data.augment}, loss at the {cfg.loss.resolution} resolution"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="cpu", help="today's shipped configuration (default cpu)")
    ap.add_argument(
        "--candidate",
        action="append",
        default=None,
        help="a configuration to compare, NAME[+KEY=VALUE...] (repeatable; default v2)",
    )
    ap.add_argument("--epochs", type=int, default=3, help="epochs per Ray run (default 3; the first is not timed)")
    ap.add_argument("--samples", type=int, default=384, help="training samples per epoch (default 384)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of both configs (default 1)")
    ap.add_argument("--no-ray", action="store_true", help="only the step profiles (no Ray runs)")
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override for both configs"
    )
    args = ap.parse_args()
    names = [args.baseline, *(args.candidate or ["v2"])]
    cfgs = {}
    for spec in names:
        name, *extra = spec.split("+")
        cfgs[spec] = short_config(name, args.epochs, args.samples, args.overrides + extra)
    print(f"# training throughput, {time.strftime('%Y-%m-%d')}: {cpu_line()}", flush=True)
    for n in names:
        print(f"# {describe(n, cfgs[n])}")
    print()
    profiles: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    if not args.no_ray:
        from dotseg.runtime import init_ray
        from dotseg.training.resources import RunNeed

        init_ray(num_cpus=max(RunNeed.of(c).local_cpus() for c in cfgs.values()))
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n in names:
                profiles[n].append(step_profile(cfgs[n]))
                print(
                    f"... round {r + 1} {n}: plain loop {profiles[n][-1]['samples_per_s']:.1f} samples/s",
                    file=sys.stderr,
                )
                if not args.no_ray:
                    runs[n].append(ray_run(cfgs[n], Path(tmp), re.sub(r"[^A-Za-z0-9]+", "-", f"{n}-{r}")))
                    print(f"... round {r + 1} {n}: {runs[n][-1]}", file=sys.stderr, flush=True)

    def best(rows: list[dict[str, float]], key: str) -> float:
        return max(row[key] for row in rows)

    base = names[0]
    print(
        "| config | plain loop samples/s | Ray run: training samples/s | Ray run: end-to-end samples/s "
        "| vs today | start-up s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for n in names:
        plain = best(profiles[n], "samples_per_s")
        if runs[n]:
            e2e = best(runs[n], "end_to_end")
            cells = [
                f"{best(runs[n], 'train'):.1f}",
                f"{e2e:.1f}",
                f"**{e2e / best(runs[base], 'end_to_end'):.2f}x**",
                f"{min(x['startup'] for x in runs[n]):.0f}",
            ]
        else:  # --no-ray: the plain loops' ratio
            cells = ["", "", f"{plain / best(profiles[base], 'samples_per_s'):.2f}x (plain loop)", ""]
        print(f"| `{n}` | {plain:.1f} | " + " | ".join(cells) + " |")
    print()
    print("Where a step's time goes (median ms per batch; validation per sample, checkpoint per epoch):")
    print()
    keys = ("synthesize", "forward", "loss", "backward", "optimizer", "step", "validate", "checkpoint")
    print("| config | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for n in names:
        med = {k: statistics.median(p[k] for p in profiles[n]) for k in keys}
        print(f"| `{n}` | " + " | ".join(f"{med[k]:.1f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
