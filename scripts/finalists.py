"""Evaluate the finalists' sweep (configs/sweep-finalists.yaml) and write its verdict.

    python scripts/finalists.py runs/finalists docs/variant-study/finalists [--n 150] [--shift-n 60]

Every finished trial's best checkpoint (by validation Dice, what `dotseg sweep --promote` exports)
is scored on two of the project's suites, the same images for every model:

- the stratified benchmark (`dotseg evaluate --suite stratified --n 150`): 150 images in every SNR
  bin, < 0 dB included, so no bin's verdict rests on a handful of images;
- the shift suite (`dotseg evaluate --suite shift --n SHIFT_N`): the benchmark with one generator
  axis moved at a time; the mean Dice drop over the levels inside the training ranges and over the
  levels held out of training.

Then, per variant over seeds: mean and spread (max - min). The seed-to-seed rule of the variant
study: a difference between two variants is evidence only if it is larger than the seed spread of
both. Writes results.md, results.json and finalists.png; the evaluations stay in SWEEP_DIR/eval/.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from variant_study import best_checkpoint, evaluate, finished_trials, latency_ms, summarize

FINALISTS = ("unet", "unet_cbam", "attention_unet")
BINS = ("clean", "> 30 dB", "20-30 dB", "10-20 dB", "0-10 dB", "< 0 dB")
SHIFT = ("in_training", "held_out", "all")
# What the verdict compares: overall, the two low-SNR bins the variant study argued about, shift.
VERDICT_KEYS = ("overall", "0-10 dB", "< 0 dB", "shift in_training", "shift held_out")


def score(trial_dir: Path, info: dict[str, Any], eval_dir: Path, n: int, shift_n: int) -> dict[str, Any]:
    ckpt = best_checkpoint(trial_dir)
    strat = evaluate(ckpt, eval_dir / info["trial"] / "stratified", n, suite="stratified")
    shift = evaluate(ckpt, eval_dir / info["trial"] / "shift", shift_n, suite="shift")
    drops = [lv["model"]["drop"] for lv in shift["levels"]]
    metrics = {
        "overall": strat["overall"]["model"]["dice"],
        "iou": strat["overall"]["model"]["iou"],
        **{b: strat["by_snr_bin"][b]["model"]["dice"] for b in BINS},
        "shift in_training": shift["axes"]["model"]["in_training"]["mean_drop"],
        "shift held_out": shift["axes"]["model"]["held_out"]["mean_drop"],
        "shift all": statistics.fmean(drops),
    }
    return {
        "trial": info["trial"],
        "variant": info["params"]["model.variant"],
        "seed": info["params"]["train.seed"],
        "checkpoint": str(ckpt),
        "epoch": strat["about"].get("epoch"),
        "parameters": strat["about"]["parameters"],
        "metrics": metrics,
        "baseline_overall": strat["overall"]["baseline"]["dice"],
        "latency_ms": latency_ms(ckpt, size=512),
    }


def verdict(groups: dict[str, dict[str, Any]], a: str, b: str) -> list[str]:
    cells = []
    for k in VERDICT_KEYS:
        d = groups[a][k]["mean"] - groups[b][k]["mean"]
        noise = max(groups[a][k]["spread"], groups[b][k]["spread"])
        word = ("better" if d > 0 else "worse") if abs(d) > noise else "no evidence"
        cells.append(f"{d:+.4f} ({word}; spread {noise:.4f})")
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--n", type=int, default=150, help="stratified: images per SNR bin")
    ap.add_argument("--shift-n", type=int, default=60, help="shift suite: images per level")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    trials = []
    for trial_dir, info in finished_trials(args.sweep_dir):
        name = info["trial"]
        trials.append(score(trial_dir, info, args.sweep_dir / "eval", args.n, args.shift_n))
        m = trials[-1]["metrics"]
        print(
            f"{name}: {trials[-1]['variant']:<15} seed {trials[-1]['seed']}  overall {m['overall']:.4f}  "
            f"<0 dB {m['< 0 dB']:.4f}  shift held out {m['shift held_out']:+.4f}",
            flush=True,
        )

    keys = ("overall", "iou", *BINS, "shift in_training", "shift held_out", "shift all")
    groups: dict[str, dict[str, Any]] = {}
    for v in FINALISTS:
        ts = [t for t in trials if t["variant"] == v]
        if ts:
            groups[v] = {
                "seeds": sorted(t["seed"] for t in ts),
                "parameters": ts[0]["parameters"],
                "latency_ms": statistics.median(t["latency_ms"] for t in ts),
                **{k: summarize([t["metrics"][k] for t in ts]) for k in keys},
            }

    def pm(g: dict[str, Any], k: str, sign: bool = False) -> str:
        return f"{g[k]['mean']:{'+' if sign else ''}.4f} ± {g[k]['spread'] / 2:.4f}"

    table = [
        "| variant | seeds | overall | IoU | " + " | ".join(BINS) + " | parameters | ms (512 px, 1 thread) |",
        "|---|---:|" + "---:|" * (len(BINS) + 4),
    ]
    for v, g in groups.items():
        table.append(
            f"| {v} | {len(g['seeds'])} | {pm(g, 'overall')} | {pm(g, 'iou')} | "
            + " | ".join(pm(g, b) for b in BINS)
            + f" | {g['parameters']:,} | {g['latency_ms']:.1f} |"
        )
    shift_table = [
        "| variant | mean drop, levels inside training | held out of training | all levels |",
        "|---|---:|---:|---:|",
    ]
    for v, g in groups.items():
        shift_table.append(f"| {v} | " + " | ".join(pm(g, f"shift {s}", sign=True) for s in SHIFT) + " |")
    pairs = [(a, b) for a, b in (("unet_cbam", "unet"), ("attention_unet", "unet"), ("attention_unet", "unet_cbam"))]
    vs = ["| comparison | " + " | ".join(VERDICT_KEYS) + " |", "|---|" + "---|" * len(VERDICT_KEYS)]
    for a, b in pairs:
        if a in groups and b in groups:
            vs.append(f"| {a} − {b} | " + " | ".join(verdict(groups, a, b)) + " |")
    text = (
        f"Stratified benchmark: `dotseg evaluate --suite stratified --n {args.n}` ({args.n} images in every "
        f"SNR bin). Shift suite: `dotseg evaluate --suite shift --n {args.shift_n}` ({args.shift_n} images "
        "per level; a drop is the level's Dice minus the in-distribution reference's). "
        "Mean ± half the range over seeds (with 2 seeds: the two values are mean ± that).\n\n"
        + "\n".join(table)
        + "\n\n"
        + "\n".join(shift_table)
        + "\n\nA difference counts as evidence only if it is larger than the seed-to-seed spread of both "
        "variants:\n\n" + "\n".join(vs) + "\n"
    )
    (args.out_dir / "results.md").write_text(text)
    (args.out_dir / "results.json").write_text(json.dumps({"trials": trials, "groups": groups}, indent=1))
    plot(trials, args.out_dir / "finalists.png")
    print(text)


def plot(trials: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(FINALISTS)
    for i, v in enumerate(FINALISTS):
        ts = [t for t in trials if t["variant"] == v]
        if not ts:
            continue
        per = [[t["metrics"][b] for t in ts] for b in BINS]
        mean = [statistics.fmean(p) for p in per]
        ax.plot(range(len(BINS)), mean, "o-", color=f"C{i}", label=f"{v} ({len(ts)} seeds)")
        ax.fill_between(range(len(BINS)), [min(p) for p in per], [max(p) for p in per], color=f"C{i}", alpha=0.15)
        for j, s in enumerate(("in_training", "held_out")):
            vals = [t["metrics"][f"shift {s}"] for t in ts]
            x = j + (i - 1) * width
            bx.bar(x, statistics.fmean(vals), width, color=f"C{i}", label=v if j == 0 else None)
            bx.errorbar(x, statistics.fmean(vals), yerr=(max(vals) - min(vals)) / 2, color="k", capsize=3)
    ax.set_xticks(range(len(BINS)), BINS)
    ax.set_xlabel("SNR bin (stratified benchmark)")
    ax.set_ylabel("Dice (mean over seeds; band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    bx.set_xticks([0, 1], ["levels inside training", "held out of training"])
    bx.set_ylabel("shift suite: mean Dice drop (bar: ± half the seed range)")
    bx.axhline(0, color="k", lw=0.8)
    bx.grid(alpha=0.3, axis="y")
    bx.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
