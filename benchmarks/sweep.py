"""Per-trial overhead of the two sweep trial styles, measured in one run on one embedded Ray.

    python benchmarks/sweep.py [--trials 4] [--set KEY=VALUE ...]

Each row runs the same sweep: ``--trials`` trials of the smoke model (1 epoch of 16 samples, so
the work inside a trial is small and the overhead shows), one trial at a time (FIFO), through
``dotseg.tuning.sweep.sweep``:

  (a) function trials: the training loop in the Tune trial's own process,
  (b) trainer trials with 1 worker: a TorchTrainer (Train controller, worker group, placement
      group) inside each trial, reporting through TuneReportCallback,
  (c) trainer trials with 2 workers (DDP over gloo): what multi-worker trials cost.

Per trial: wall time from Tune's trial start to its completion (the driver's event lines), the
time the loop spent in its epochs, and the difference (the overhead). The ratio column is the
overhead against (a) measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from pathlib import Path

from dotseg.config import load_config
from dotseg.runtime import init_ray
from dotseg.tuning.results import collect
from dotseg.tuning.sweep import sweep


def run(style: str, workers: int, trials: int, root: Path, overrides: list[str]) -> dict[str, float]:
    values = ", ".join(str(s) for s in range(trials))
    cfg = load_config(
        "sweep-smoke",
        [
            f"train.storage_path={root}",
            f"tune.name={style}-{workers}",
            f"tune.trial_style={style}",
            f"train.num_workers={workers}",
            "tune.scheduler=fifo",
            "tune.max_concurrent_trials=1",
            f"tune.space=[{{key: train.seed, kind: grid, values: [{values}]}}]",
            "train.epochs=1",
            "train.samples_per_epoch=16",
            "train.val_samples=8",
            "train.warmup_epochs=0",
            "curriculum.phases=[{name: easy, start_epoch: 1, noise_scale: 0.1, mixed_prob: 0.0}]",
            "loss.boundary={start: 0.0, end: 0.5, from_epoch: 1, to_epoch: 1}",
            *overrides,
        ],
    )
    result = sweep(cfg, quiet=True)
    events = [json.loads(x) for x in (result.sweep_dir / "events.jsonl").read_text().splitlines()]
    start = {e["trial"]: e["time"] for e in events if e["event"] == "started"}
    end = {e["trial"]: e["time"] for e in events if e["event"] == "finished"}
    rows = collect(result.sweep_dir, cfg)
    walls = [end[t] - start[t] for t in start if t in end]
    loops = [r["time_s"] for r in rows]
    return {
        "wall": statistics.median(walls),
        "loop": statistics.median(loops),
        "overhead": statistics.median(w - r for w, r in zip(walls, loops, strict=False)),
        "sweep": result.wall_s,
        "done": len(end),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    init_ray(num_cpus=4)  # one embedded Ray for all rows: room for a 2-worker trial and its synthesis
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, style, workers in (
            ("(a) function trial", "function", 1),
            ("(b) TorchTrainer trial, 1 worker", "trainer", 1),
            ("(c) TorchTrainer trial, 2 workers", "trainer", 2),
        ):
            rows.append((label, run(style, workers, args.trials, Path(tmp), args.overrides)))
    base = rows[0][1]["overhead"]
    print(f"\n{args.trials} trials per row, one at a time; medians per trial")
    print(f"{'trial style':<36}{'wall s':>8}{'in loop s':>11}{'overhead s':>12}{'vs (a)':>8}{'sweep s':>9}")
    for label, r in rows:
        print(
            f"{label:<36}{r['wall']:>8.1f}{r['loop']:>11.1f}{r['overhead']:>12.1f}"
            f"{r['overhead'] / base:>7.1f}x{r['sweep']:>9.1f}"
        )


if __name__ == "__main__":
    main()
