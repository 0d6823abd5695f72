"""`dotseg train` and `dotseg sweep`: runs on Ray Train, sweeps on Ray Tune."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dotseg.cli.common import UserError, add_config_args, config_field, load_config_args


def cmd_train(args: argparse.Namespace) -> int:
    from dotseg.config import Override
    from dotseg.training.run import TrainError, new_run_dir, resume_config, train

    overrides: list[Override] = list(args.overrides)  # the flags below as values: no YAML re-parsing of a path
    if args.workers is not None:
        overrides.append(("train.num_workers", args.workers))
    if args.gpu:
        overrides.append(("train.use_gpu", True))
    if args.init is not None:
        if args.resume:
            raise UserError("--init starts a new run from a checkpoint's weights; --resume continues a run: use one")
        overrides.append(("train.init", args.init))
    args.overrides = overrides  # load_config_args reads them from args
    try:
        if args.resume:
            cfg = resume_config(args.resume, args.config, overrides)
            where: dict[str, Any] = {"resume": args.resume}
        else:
            cfg = load_config_args(args)
            where = {"run_dir": new_run_dir(cfg, args.name)}
        result = train(
            cfg,
            **where,
            address=args.address,
            quiet=args.quiet,
            verbose=args.verbose,
            stop_after_epoch=args.stop_after_epoch,
        )
    except TrainError as e:
        raise UserError(str(e)) from None
    m = result.best_metrics
    print(
        f"[dotseg] finished ({result.stop_reason.replace('_', ' ')}) after {len(result.history)} epoch(s) "
        f"in {result.wall_s / 60:.1f} min"
    )
    if result.best_checkpoint:
        best = result.where("best.safetensors")
        print(
            f"[dotseg] best checkpoint: {best}  (epoch {m.get('epoch')}, "
            f"val dice {m.get('val_dice', float('nan')):.4f}, clean dice {m.get('clean_dice', float('nan')):.4f}, "
            f"val iou {m.get('val_iou', float('nan')):.4f}"
            + (f", held-out labelled dice {m['labelled_dice']:.4f}" if "labelled_dice" in m else "")
            + ")"
        )
        print(
            f"[dotseg] learning curves: {result.where('curves.png')}; history: {result.where('history.json')}; "
            f"W&B (offline): wandb sync {result.run_dir / 'wandb'}"
            + (f" (also uploaded to {result.where('wandb')})" if result.remote else "")
        )
        print(f"[dotseg] next: dotseg predict --checkpoint {best} --input IMAGES --output OUT")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """One of: promote a sweep's best trial, rewrite its report, resume it, or run a new one."""
    from dotseg.tuning.sweep import SweepError

    try:
        if args.promote:
            return _promote(args)
        if args.report:
            return _report(args)
        return _sweep(args)
    except SweepError as e:
        raise UserError(str(e)) from None


def _promote(args: argparse.Namespace) -> int:
    from dotseg.checkpoint import CheckpointError
    from dotseg.tuning.results import promote

    if not args.out:
        raise UserError("--promote needs --out PATH.safetensors (where to write the checkpoint)")
    try:
        p = promote(Path(args.promote).expanduser().resolve(), Path(args.out))
    except CheckpointError as e:
        raise UserError(str(e)) from None
    params = ", ".join(f"{k}={v}" for k, v in p["params"].items())
    metric = p["metric"]
    print(
        f"[dotseg] promoted {p['trial']} ({params}), epoch {p['epoch']}, {metric.replace('_', ' ')} "
        f"{p.get(metric, float('nan')):.4f} -> {p['out']}  (model id {p['model_id']})"
    )
    print(f"[dotseg] next: dotseg serve --checkpoint {p['out']}   or   dotseg evaluate --checkpoint {p['out']}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from dotseg.tuning.results import table_lines, write
    from dotseg.tuning.sweep import sweep_config

    sweep_dir = Path(args.report).expanduser().resolve()
    cfg = sweep_config(sweep_dir)
    rows = write(sweep_dir, cfg)
    print("\n".join(table_lines(rows, [d.key for d in cfg.tune.space], cfg.tune.metric)))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from dotseg.tuning.results import table_lines
    from dotseg.tuning.sweep import sweep, sweep_config

    if args.resume:
        if args.config or args.overrides:
            raise UserError("--resume continues a sweep with the config it started with; drop --config/--set")
        result = sweep(resume=Path(args.resume), address=args.address, quiet=args.quiet, verbose=args.verbose)
    else:
        result = sweep(load_config_args(args), address=args.address, quiet=args.quiet, verbose=args.verbose)
    cfg = sweep_config(result.sweep_dir)
    d = result.sweep_dir
    print("\n".join(table_lines(result.rows, [dim.key for dim in cfg.tune.space], cfg.tune.metric)))
    print(f"[dotseg] sweep finished in {result.wall_s / 60:.1f} min: {d / 'results.md'}, {d / 'results.csv'}")
    print(f"[dotseg] pictures: {d / 'parallel.png'}, {d / 'curves.png'}")
    print(f"[dotseg] W&B (offline, one run per trial in group {d.name}): wandb sync {d / 'wandb'}")
    unfinished = [r["trial"] for r in result.rows if r["status"] in ("running", "interrupted", "pending")]
    errored = [r for r in result.rows if r["status"] == "errored"]
    if unfinished:
        print(f"[dotseg] {len(unfinished)} trial(s) unfinished; continue with: dotseg sweep --resume {d}")
        return 130
    if errored:
        where = ", ".join(str(d / r["dir"] / "error.txt") for r in errored)
        print(f"[dotseg] {len(errored)} trial(s) errored: see {where}")
    print(f"[dotseg] next: dotseg sweep --promote {d} --out best.safetensors")
    return 1 if errored else 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train on Ray Train (embedded local Ray unless --address)",
        description="Train with Ray Data synthesis streaming into Ray Train DDP workers, following "
        "the curriculum. Prints one line per epoch; at the end, where the best checkpoint is.",
    )
    add_config_args(p)
    p.add_argument(
        "--workers",
        type=config_field("train.num_workers"),
        default=None,
        help="training workers / DDP ranks (default: train.num_workers)",
    )
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (fp16 + GradScaler, NCCL)")
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        default=None,
        help="fine-tune: start from this checkpoint's weights (a path, a bucket URI, shipped or "
        "shipped-v1; the same as --set train.init=CHECKPOINT)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (auto, host:port or ray://...); default: start an embedded local Ray",
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        default=None,
        help="continue a run (its directory, or its URI for a bucket run) from its last checkpoint "
        "(synthesis/model config must not change)",
    )
    p.add_argument("--name", default=None, help="run directory name under train.storage_path (default: timestamped)")
    p.add_argument(
        "--stop-after-epoch",
        type=int,
        default=None,
        metavar="N",
        help="pause after epoch N (checkpoint written); --resume continues exactly where it stopped",
    )
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="only warnings and the final summary")
    noise.add_argument(
        "--verbose",
        action="store_true",
        help="also show Ray's own output (otherwise in RUN_DIR/ray.log and the Ray session's logs)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "sweep",
        help="sweep loss weights and model variants on Ray Tune (ASHA or FIFO), promote the best trial",
        description="Run a Ray Tune sweep over the config's tune.space: every trial is a full "
        "training run (curriculum, checkpoints, blank-mask guard) driven by validation Dice. "
        "One line per trial event; at the end results.csv/.md, parallel.png and curves.png in "
        "the sweep directory, and one W&B run per trial in the sweep's group.",
    )
    add_config_args(p)
    p.add_argument("--resume", metavar="SWEEP_DIR", default=None, help="continue a stopped or killed sweep")
    p.add_argument(
        "--promote",
        metavar="SWEEP_DIR",
        default=None,
        help="export the best trial's best checkpoint (with --out) instead of sweeping",
    )
    p.add_argument("--out", metavar="FILE", default=None, help="where --promote writes the checkpoint (*.safetensors)")
    p.add_argument("--report", metavar="SWEEP_DIR", default=None, help="rewrite and print a sweep's results table")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (auto, host:port); default: start an embedded local Ray",
    )
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="only errors and the final table")
    noise.add_argument("--verbose", action="store_true", help="also show Ray's own output")
    p.set_defaults(func=cmd_sweep)
