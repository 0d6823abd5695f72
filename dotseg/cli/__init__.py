"""The ``dotseg`` command: parse, build, run. Logic lives in the modules it calls.

One module per command group, each command's parser next to the command; this module assembles
them in the order ``dotseg --help`` lists them. Imports are deferred into each command so
``dotseg --help`` and config errors answer at once, without loading torch or Ray.
"""

from __future__ import annotations

import argparse
import sys

from dotseg.cli import config, evaluate, jobs, predict, serve, synth, train
from dotseg.cli.common import Parser, UserError

__all__ = ["UserError", "build_parser", "main"]

EPILOG = """examples:
  dotseg synth --n 16 --out runs/synth --grid runs/synth/grid.png
  dotseg synth --ray --n 256 --out runs/synth          # parallel Ray Data workers
  dotseg config --config configs/cpu.yaml --set train.lr=3e-4
  dotseg config --explain                                # every key, its type, default and meaning
  dotseg config --schema dotseg.schema.json              # JSON Schema for editors
  dotseg train --config configs/quickstart.yaml          # embedded local Ray
  dotseg train --config configs/smoke.yaml --workers 2 # CPU DDP
  dotseg train --resume runs/<run>                      # continue from the last checkpoint
  dotseg sweep --config configs/sweep-smoke.yaml       # Ray Tune: ASHA, one W&B run per trial
  dotseg sweep --promote runs/<sweep> --out best.safetensors
  dotseg curriculum --config configs/cpu.yaml           # epoch -> phase, noise, loss weights
  dotseg predict --checkpoint best.safetensors --input scans/ --output masks/ --overlay
  dotseg evaluate --checkpoint best.safetensors --n 1000 --out runs/eval
  dotseg serve --port 8000                               # HTTP API, docs and dashboard on Ray Serve
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dotseg",
        description="Noise-robust dot-pattern segmentation: synthesis, training, sweeps and serving on Ray.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (
        synth.add_synth,
        train.add_parsers,
        synth.add_data,
        evaluate.add_parsers,
        config.add_parsers,
        serve.add_parsers,
        jobs.add_parsers,
        predict.add_parsers,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if argv[:1] == ["submit"] and "--" in argv:  # `dotseg submit JOB ... -- ARGS`: ARGS are the job's
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    try:
        args = parser.parse_args(argv)
        args.passthrough = passthrough
    except SystemExit as e:  # --help (0) or a usage error (2, already printed): a status, not an exit
        return int(e.code or 0)
    import logging

    from dotseg.configbase import ConfigError
    from dotseg.logs import configure_console

    # dotseg's library code logs; the CLI prints its records as plain `[dotseg] ...` lines.
    configure_console(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)

    try:
        return int(args.func(args) or 0)
    except (ConfigError, UserError) as e:
        print(f"dotseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `dotseg config | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"dotseg {args.command}: interrupted", file=sys.stderr)
        return 130
