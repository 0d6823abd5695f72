"""Ship a finished training run as the package's default model, with its training record.

    python scripts/ship_model.py /root/dotseg-runs/shipped-cpu-v1
    python scripts/ship_model.py /root/dotseg-runs/v2-mix --config configs/v2-mix.yaml \
        --asset model-v2.safetensors --docs docs/shipped-model/v2

Copies the run's ``best.safetensors`` to ``dotseg/assets/<asset>`` (refused if it does
not load or is over 25 MB: it travels inside every wheel and clone), and writes the record next to
the evaluation report in ``docs/shipped-model/``: ``training.json`` (run, config hash, epochs, wall
time, hardware), ``history.json`` (per-epoch metrics) and ``curves.png`` (the learning curves).
Then evaluate it: ``dotseg evaluate --n 1000 --out docs/shipped-model`` (and the stratified and
shift suites). The model it replaces stays loadable by name: each version has a file of its own,
and ``SHIPPED_MODELS`` in ``dotseg/inference/predictor.py`` says which one ``shipped`` names.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "dotseg" / "assets" / "model.safetensors"
DOCS = ROOT / "docs" / "shipped-model"
MAX_BYTES = 25 * 1024 * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a finished `dotseg train` run directory")
    ap.add_argument("--config", default="configs/cpu.yaml", help="the config file the run reproduces (recorded)")
    ap.add_argument("--asset", default=ASSET.name, help=f"file name under dotseg/assets/ (default {ASSET.name}, v1's)")
    ap.add_argument("--docs", type=Path, default=DOCS, help=f"where the record goes (default {DOCS.relative_to(ROOT)})")
    ap.add_argument(
        "--record-only",
        action="store_true",
        help="write the record of a candidate that is not shipped (the package's model is left alone)",
    )
    args = ap.parse_args()
    docs = args.docs.resolve()

    import ray
    import torch

    from dotseg.checkpoint import CheckpointError, build_from_checkpoint
    from dotseg.device import cpu_info
    from dotseg.plots import plot_history

    best = args.run_dir / "best.safetensors"
    history_file = args.run_dir / "history.json"
    if not best.exists() or not history_file.exists():
        sys.exit(f"{args.run_dir} has no best.safetensors/history.json: is the run finished?")
    if best.stat().st_size > MAX_BYTES:
        sys.exit(f"{best} is {best.stat().st_size / 2**20:.1f} MB; the shipped model must be <= 25 MB")
    try:
        model, ckpt = build_from_checkpoint(best)
    except CheckpointError as e:
        sys.exit(str(e))
    history = json.loads(history_file.read_text())
    cfg = ckpt.cfg
    if cfg is None:
        sys.exit(f"{best}: its stored config is not readable by this dotseg; ship a run trained by this version")

    asset = ASSET.with_name(args.asset)
    if not args.record_only:
        asset.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, asset)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "history.json").write_text(json.dumps(history, indent=1))
    plot_history(history, docs / "curves.png")
    t = cfg.train
    record = {
        "run": args.run_dir.name,
        "config_hash": ckpt.meta.provenance.config_hash,
        "run_id": ckpt.meta.run_id,
        "model_id": ckpt.model_id,
        "config": args.config,
        "model": {
            "variant": cfg.model.variant,
            "base_channels": cfg.model.base_channels,
            "depth": cfg.model.depth,
            "downscale": cfg.model.downscale,
            "parameters": sum(p.numel() for p in model.parameters()),
            "bytes": best.stat().st_size,
        },
        "best_epoch": ckpt.epoch,
        "best_metrics": {k: v for k, v in ckpt.metrics.items() if isinstance(v, (int, float))},
        "epochs_run": len(history),
        "samples_seen": len(history) * t.samples_per_epoch,
        "train_wall_s": round(sum(h["epoch_time_s"] for h in history), 1),
        "hardware": {
            "cpu": cpu_info()[0],
            "logical_cpus": os.cpu_count(),
            "gpu": None,
            "workers": t.num_workers,
            "torch_threads": t.torch_threads,
        },
        "software": {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__},
    }
    (docs / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    size_mb = best.stat().st_size / 2**20
    shipped = "not shipped (--record-only)" if args.record_only else f"shipped {asset.relative_to(ROOT)}"
    print(f"{shipped} ({size_mb:.1f} MB); record in {docs}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
