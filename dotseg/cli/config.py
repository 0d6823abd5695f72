"""`dotseg config` and `dotseg curriculum`: the resolved config, its keys and schema, the epoch table."""

from __future__ import annotations

import argparse
from pathlib import Path

from dotseg.cli.common import add_config_args, load_config_args


def cmd_config(args: argparse.Namespace) -> int:
    from dotseg.config import Config, dump_yaml
    from dotseg.configbase import explain

    if args.explain:
        for key, tp, default, doc in explain(Config):
            print(f"{key}  ({tp}, default {default!r})\n    {doc}")
        return 0
    if args.schema is not None:
        import json

        text = json.dumps(Config.model_json_schema(), indent=1) + "\n"
        if args.schema == "-":
            print(text, end="")
        else:
            Path(args.schema).write_text(text)
            print(
                f"JSON Schema of the config written to {args.schema} (point your editor's YAML "
                f"language server at it, e.g. `# yaml-language-server: $schema={args.schema}`)"
            )
        return 0
    cfg = load_config_args(args)
    print(f"# config hash: {cfg.hash}, run identity: {cfg.run_id}")
    print(dump_yaml(cfg), end="")
    return 0


def cmd_curriculum(args: argparse.Namespace) -> int:
    from dotseg.curriculum import schedule_table

    cfg = load_config_args(args)
    rows = schedule_table(cfg.curriculum, cfg.loss, cfg.train.epochs)
    print(f"# curriculum and loss schedule, {cfg.train.epochs} epochs (config hash {cfg.hash})")
    print(
        f"{'epoch':>5}  {'phase':<10} {'noise_scale':>11} {'mixed_prob':>10}  "
        f"{'w_dice':>6} {'w_bce':>6} {'w_boundary':>10}"
    )
    for r in rows:
        print(
            f"{r['epoch']:>5}  {r['phase']:<10} {r['noise_scale']:>11.2f} {r['mixed_prob']:>10.2f}  "
            f"{r['dice']:>6.3f} {r['bce']:>6.3f} {r['boundary']:>10.3f}"
        )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curriculum",
        help="print the epoch -> phase, noise and loss-weight table",
        description="Print, for every epoch of the configured run, the curriculum phase, its "
        "noise_scale and mixed_prob, and the loss weights (Dice, BCE, boundary).",
    )
    add_config_args(p)
    p.set_defaults(func=cmd_curriculum)

    p = sub.add_parser(
        "config",
        help="print the resolved config and its hash, or explain every key",
        description="Resolve defaults + YAML + --set overrides, validate, and print the result "
        "with its stable hash. Invalid configs exit with status 2 and name the key.",
    )
    add_config_args(p)
    p.add_argument("--explain", action="store_true", help="list every key with its type, default and meaning")
    p.add_argument(
        "--schema",
        metavar="PATH",
        nargs="?",
        const="-",
        default=None,
        help="write the config's JSON Schema to PATH (or stdout): editors then complete and check configs/*.yaml",
    )
    p.set_defaults(func=cmd_config)
