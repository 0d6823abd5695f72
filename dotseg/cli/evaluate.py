"""`dotseg evaluate`: the benchmark, stratified and shift suites, your labelled data, the precision gate."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dotseg.cli.common import UserError, add_config_args, config_field, load_config_args, ranged


def cmd_evaluate(args: argparse.Namespace) -> int:
    from datetime import datetime

    from dotseg import tracking
    from dotseg.checkpoint import CheckpointError
    from dotseg.evaluation import EVAL_SEED, summary_lines
    from dotseg.suites import SUITE_N, evaluate

    cfg = load_config_args(args)  # the baseline's settings and W&B's
    out = Path(args.out or f"runs/eval-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if args.gate:
        return _gate(args, out)
    if args.data:
        return _evaluate_data(args, cfg, out)
    # The benchmark is the seed's generator unless the user names another with --config / --set.
    own_generator = args.config is not None or any(o.startswith("synthesis.") for o in args.overrides)
    try:
        report = evaluate(
            None if args.baseline else args.checkpoint,
            SUITE_N[args.suite] if args.n is None else args.n,
            out,
            suite=args.suite,
            baseline=cfg.baseline,
            baseline_only=args.baseline,
            size=args.size,
            seed=EVAL_SEED if args.seed is None else args.seed,
            tolerance=args.tolerance,
            threads=args.threads,
            progress=not args.quiet,
            synthesis=cfg.synthesis if own_generator else None,
        )
    except CheckpointError as e:
        raise UserError(str(e)) from None
    if args.suite == "shift":
        from dotseg.shift import summary_lines as shift_lines

        print("\n".join(shift_lines(report)))
        print(f"report: {out / 'report.md'} (and report.json, shift_drop.png, gallery.png)")
    else:
        print("\n".join(summary_lines(report)))
        print(f"report: {out / 'report.md'} (and report.json, dice_vs_snr.png, worst_*.png)")
    if args.wandb:
        tracking.log_evaluation(report, out, cfg.train.wandb)
    return 0


def _evaluate_data(args: argparse.Namespace, cfg: Any, out: Path) -> int:
    from dotseg.checkpoint import CheckpointError
    from dotseg.evaluation import evaluate_labelled
    from dotseg.labelled import DatasetError

    if args.baseline or args.suite != "standard" or args.gate:
        raise UserError(
            "--data evaluates the model and the baseline on your images: drop --baseline / --suite / --gate"
        )
    try:
        report = evaluate_labelled(
            args.checkpoint,
            args.data,
            out,
            baseline=cfg.baseline,
            tolerance=args.tolerance,
            threads=args.threads,
            progress=not args.quiet,
        )
    except (CheckpointError, DatasetError) as e:
        raise UserError(str(e)) from None
    for name, o in report["overall"].items():
        print(f"{name:<9} n={o['n']}  dice {o['dice']:.3f}  iou {o['iou']:.3f}  boundary F1 {o['boundary_f1']:.3f}")
    ind = report["in_distribution"]
    print(
        f"in distribution: {ind['pass']} of {report['benchmark']['n']}"
        + (f" (flagged: {', '.join(ind['flagged'][:5])})" if ind["flagged"] else "")
    )
    print(f"report: {out / 'report.md'} (and report.json, worst_*.png)")
    return 0


def _gate(args: argparse.Namespace, out: Path) -> int:
    from dotseg.checkpoint import CheckpointError
    from dotseg.gate import GATE_N, gate_lines, run_gate

    if args.baseline or args.suite != "standard":
        raise UserError("--gate runs on the standard benchmark with a model: drop --baseline / --suite")
    try:
        result = run_gate(
            args.checkpoint, n=args.n or GATE_N, threads=args.threads or 1, out_dir=out, progress=not args.quiet
        )
    except CheckpointError as e:
        raise UserError(str(e)) from None
    print("\n".join(gate_lines(result)))
    passed = [f"{r['engine']} {r['precision']}" for r in result["rows"] if r["precision"] != "fp32" and r["passed"]]
    if "record" in result:
        print(f"recorded: {result['record']} (passed: {', '.join(passed) or 'none'}; precision auto uses the fastest)")
    else:
        print(f"not recorded: --n {result['n']} is a preview; the gate records at --n {GATE_N} or more")
    print(f"report: {out / 'gate.md'} (and gate.json)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="benchmark a checkpoint against the classical baseline, by SNR and noise type",
        description="Evaluate on a fixed, seeded benchmark set (every noise type across its full "
        "severity range, mixed noise, clean images, both dot placements): per-sample Dice, "
        "IoU, precision, recall, HD95, boundary F1; tables by SNR bin and noise type, model "
        "and baseline side by side; report.json, report.md and plots.",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint to evaluate: a path, an s3:// / gs:// URI, or a shipped model's name (shipped, shipped-v1); "
        "default: the model shipped with the package",
    )
    p.add_argument("--baseline", action="store_true", help="evaluate the classical baseline alone")
    p.add_argument(
        "--data",
        metavar="DIR|URI",
        default=None,
        help="evaluate on your own labelled images instead (images/NAME + masks/NAME, or NAME + NAME.mask; "
        "see `dotseg data check`): the same metrics, the baseline beside the model, bins by estimated SNR",
    )
    p.add_argument(
        "--gate",
        action="store_true",
        help="run the precision gate instead: every installed engine in fp32 and in bf16 (where this CPU computes "
        "it natively) on the standard benchmark; a precision within 0.002 Dice of fp32 in every SNR bin, with "
        "every mask agreeing >= 0.99, is recorded for this model and CPU and used by precision auto (--n "
        "below 1000 previews without recording); --threads default 1",
    )
    add_config_args(p)
    p.add_argument(
        "--suite",
        choices=("standard", "stratified", "shift"),
        default="standard",
        help="standard: the benchmark mix; stratified: --n images in every SNR bin (< 0 dB included); "
        "shift: the benchmark with one generator axis moved at a time, --n images per level",
    )
    p.add_argument(
        "--n",
        type=ranged(int, 1),
        default=None,
        help="images: in all (standard, default 1000), per SNR bin (stratified, default 150) or per level "
        "(shift, default 150)",
    )
    p.add_argument(
        "--size",
        type=config_field("synthesis.size"),
        default=None,
        help="image side in px (default: the checkpoint's, 512 for the seed)",
    )
    p.add_argument("--out", default=None, help="report directory (default runs/eval-<time>)")
    p.add_argument("--seed", type=int, default=None, help="benchmark seed (default: the fixed benchmark seed)")
    p.add_argument("--tolerance", type=float, default=2.0, help="boundary F1 tolerance in px (default 2)")
    p.add_argument("--threads", type=ranged(int, 1), default=None, help="CPU threads for the model (default: torch's)")
    p.add_argument("--wandb", action="store_true", help="also log the tables and plots to W&B (offline by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)
