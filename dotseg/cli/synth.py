"""`dotseg synth` and `dotseg data`: synthetic samples, and checking a labelled dataset."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dotseg.cli.common import UserError, add_config_args, config_field, load_config_args, ranged


def cmd_synth(args: argparse.Namespace) -> int:
    from dotseg.synthesis.export import noise_grid, write_samples

    cfg = load_config_args(args)
    if args.size:
        cfg = cfg.replace(**{"synthesis.size": args.size})
    seed = cfg.train.seed if args.seed is None else args.seed
    if args.n > 0:
        if args.out is None:
            raise UserError("--out DIR is required to write samples (or pass --n 0 with --grid)")
        t0 = time.perf_counter()
        written = write_samples(
            _synth_batches(cfg, seed, args),
            Path(args.out),
            args.n,
            preview=not args.no_preview,
            progress=not args.quiet,
            labelled=args.labelled,
        )
        dt = time.perf_counter() - t0
        print(
            f"wrote {written} samples ({cfg.synthesis.size}x{cfg.synthesis.size}, seed {seed}) to {args.out}/ "
            f"in {dt:.1f} s ({written / dt:.1f} samples/s incl. writing)"
        )
    if args.grid:
        path = noise_grid(cfg.synthesis, seed, args.grid)
        print(f"sample grid (noise types x severity): {path}")
    return 0


def _synth_batches(cfg: Any, seed: int, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Batches of samples, from Ray Data workers (``--ray``) or this process."""
    from dotseg.synthesis import make_batch

    knobs = {"noise_scale": args.noise_scale, "mixed_prob": args.mixed_prob, "noisy": not args.clean}
    if not args.ray:
        step = 16
        for start in range(args.start, args.start + args.n, step):
            stop = min(start + step, args.start + args.n)
            yield make_batch(cfg.synthesis, seed, range(start, stop), **knobs)
        return
    from dotseg.data import synthesis_dataset
    from dotseg.runtime import init_ray

    resources = init_ray(args.address, num_cpus=args.num_cpus)
    print(
        f"Ray: {int(resources.get('CPU', 0))} CPUs, synthesizing with "
        f"{cfg.data.synth_tasks} Ray Data tasks x {cfg.data.rows_per_block} rows per block",
        flush=True,
    )
    ds = synthesis_dataset(cfg.synthesis, cfg.data, seed, args.n, offset=args.start, **knobs)
    yield from ds.iter_batches(batch_size=cfg.data.rows_per_block, batch_format="numpy", prefetch_batches=2)


def cmd_data(args: argparse.Namespace) -> int:
    import json

    from dotseg.labelled import DatasetError, summary, summary_lines

    synthesis = None
    if args.checkpoint:
        from dotseg.checkpoint import CheckpointError, read_meta, trained_synthesis
        from dotseg.inference.predictor import resolve_checkpoint

        try:
            synthesis = trained_synthesis(read_meta(resolve_checkpoint(args.checkpoint)))
        except CheckpointError as e:
            raise UserError(str(e)) from None
    try:
        s = summary(args.location, synthesis)
    except DatasetError as e:
        raise UserError(str(e)) from None
    print(json.dumps(s, indent=1) if args.json else "\n".join(summary_lines(s)))
    return 0


def add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write synthetic samples (npz + PNG previews) and/or a sample grid",
        description="Synthesize noisy dot-blob samples, deterministically from a seed. "
        "Each sample is written as sample_<index>.npz (image float32, mask uint8, "
        "dots, meta JSON) plus a PNG preview with the mask outline.",
    )
    add_config_args(p)
    p.add_argument("--n", type=ranged(int, 0), default=16, help="number of samples to write (default 16)")
    p.add_argument("--out", metavar="DIR", help="output directory for the samples")
    p.add_argument("--start", type=ranged(int, 0), default=0, help="index of the first sample (default 0)")
    p.add_argument(
        "--seed", type=config_field("train.seed"), default=None, help="seed (default: train.seed of the config)"
    )
    p.add_argument(
        "--size", type=config_field("synthesis.size"), default=None, help="image side in px (default: synthesis.size)"
    )
    p.add_argument(
        "--noise-scale",
        type=config_field("curriculum.phases[0].noise_scale"),
        default=1.0,
        help="curriculum knob in [0, 1]: how far noise parameters may go towards their harshest (default 1)",
    )
    p.add_argument(
        "--mixed-prob",
        type=config_field("curriculum.phases[0].mixed_prob"),
        default=0.3,
        help="probability of 2-3 composed noise types per sample (default 0.3)",
    )
    p.add_argument("--clean", action="store_true", help="write the noise-free copies instead")
    p.add_argument("--grid", metavar="PNG", help="also render one figure of samples across noise types x levels")
    p.add_argument("--no-preview", action="store_true", help="skip the per-sample PNG previews")
    p.add_argument(
        "--labelled",
        action="store_true",
        help="write a labelled dataset (images/NAME.png 16-bit + masks/NAME.png) for data check, evaluate --data "
        "and data.labelled, instead of npz files",
    )
    p.add_argument(
        "--ray",
        action="store_true",
        help="synthesize in parallel Ray Data workers (embedded local Ray unless --address)",
    )
    p.add_argument("--address", default=None, help="Ray cluster address to join (with --ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)


def add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="check a labelled dataset (image/mask pairs in a folder or bucket) and summarize it",
        description="dotseg data check DIR|URI: find the image/mask pairs (images/NAME + masks/NAME, or "
        "NAME.png + NAME.mask.png), read every file, and report every problem in one line per kind "
        "(unpaired files, unreadable files, size mismatches, masks that are not binary); else the summary: "
        "count, sizes, foreground fraction, estimated SNR, in-distribution verdicts, content digest.",
    )
    p.add_argument("action", choices=("check",), help="what to do with the dataset")
    p.add_argument("location", metavar="DIR|URI", help="a folder, or an s3:// / gs:// prefix")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="judge 'in distribution' against this model's training data (default: the shipped model's)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_data)
