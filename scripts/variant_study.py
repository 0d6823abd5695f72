"""Evaluate a finished variant-study sweep and write docs/variant-study/.

    python scripts/variant_study.py runs/variant-study docs/variant-study [--n 320]

Every finished trial's best checkpoint (by validation Dice, what `dotseg sweep --promote` would
export) is evaluated with `dotseg evaluate` on the same benchmark (the same n images for every
model, drawn at the models' 256 px), then grouped by (variant, loss) over seeds: mean and spread
(max - min over seeds) of the overall, clean, 0-10 dB and < 0 dB Dice; parameters; CPU latency
(eager PyTorch, 1 thread, median of 30 predictions of a 256 px image). A difference between two
variants counts as evidence only if it is larger than both variants' seed-to-seed spread.
Writes results.md, results.json and dice_vs_snr.png; the evaluations stay in SWEEP_DIR/eval/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("unet", "unet_gates", "unet_cbam", "attention_unet")
LOSSES = {0.5: "Dice + BCE + boundary Tversky (seed)", 0.0: "Dice + BCE"}
BINS = ("overall", "clean", "0-10 dB", "< 0 dB")


def best_checkpoint(trial_dir: Path) -> Path:
    from dotseg.checkpoint import MODEL_FILE, load_checkpoint

    scored = []
    for f in trial_dir.rglob(f"checkpoint_*/{MODEL_FILE}"):
        ck = load_checkpoint(f)
        scored.append((ck.metrics.get("val_dice", -1.0), ck.epoch, f))
    return max(scored)[2]


def evaluate(ckpt: Path, out: Path, n: int, suite: str = "standard") -> dict[str, Any]:
    if not (out / "report.json").exists():
        cmd = [sys.executable, "-m", "dotseg.cli", "evaluate", "--checkpoint", str(ckpt), "--n", str(n)]
        subprocess.run([*cmd, "--suite", suite, "--out", str(out), "--quiet", "--threads", "1"], check=True)
    return json.loads((out / "report.json").read_text())


def latency_ms(ckpt: Path, size: int = 256) -> float:
    import numpy as np

    from dotseg.inference.predictor import Predictor

    p = Predictor.from_checkpoint(ckpt, threads=1, engine="eager")
    image = np.random.default_rng(0).random((size, size), dtype=np.float32)
    for _ in range(3):
        p.predict(image)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        p.predict(image)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def finished_trials(sweep_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(trial directory, its trial.json) of every trial the sweep's events say finished."""
    events = [json.loads(x) for x in (sweep_dir / "events.jsonl").read_text().splitlines() if x.strip()]
    finished = {e["trial"] for e in events if e["event"] == "finished"}
    out = []
    for tf in sorted(sweep_dir.glob("trial-*/trial.json")):
        info = json.loads(tf.read_text())
        if info["trial"] in finished:
            out.append((tf.parent, info))
        else:
            print(f"{info['trial']}: not finished, left out", flush=True)
    return out


def summarize(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "spread": max(values) - min(values), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--n", type=int, default=320)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    trials = []
    for trial_dir, info in finished_trials(args.sweep_dir):
        ckpt = best_checkpoint(trial_dir)
        report = evaluate(ckpt, args.sweep_dir / "eval" / info["trial"], args.n)
        by_bin = report["by_snr_bin"]
        dice = {
            "overall": report["overall"]["model"]["dice"],
            **{b: by_bin[b]["model"]["dice"] for b in ("clean", "0-10 dB", "< 0 dB")},
        }
        curve = {b: v["model"]["dice"] for b, v in by_bin.items() if v["model"]["n"]}
        counts = {b: v["model"]["n"] for b, v in by_bin.items()}
        trials.append(
            {
                "trial": info["trial"],
                "variant": info["params"]["model.variant"],
                "boundary": float(info["params"]["loss.boundary.end"]),
                "seed": info["params"]["train.seed"],
                "checkpoint": str(ckpt),
                "epoch": report["about"].get("epoch"),
                "parameters": report["about"]["parameters"],
                "dice": dice,
                "curve": curve,
                "counts": counts,
                "baseline_overall": report["overall"]["baseline"]["dice"],
                "latency_ms": latency_ms(ckpt),
            }
        )
        print(
            f"{info['trial']}: {trials[-1]['variant']:<15} boundary {trials[-1]['boundary']} seed "
            f"{trials[-1]['seed']}  overall {dice['overall']:.4f}  <0 dB {dice['< 0 dB']:.4f}",
            flush=True,
        )

    groups: dict[tuple[str, float], dict[str, Any]] = {}
    for v in VARIANTS:
        for b in LOSSES:
            ts = [t for t in trials if t["variant"] == v and t["boundary"] == b]
            if ts:
                groups[(v, b)] = {
                    "seeds": sorted(t["seed"] for t in ts),
                    "parameters": ts[0]["parameters"],
                    "latency_ms": statistics.median(t["latency_ms"] for t in ts),
                    **{k: summarize([t["dice"][k] for t in ts]) for k in BINS},
                }

    lines = [
        "| variant | loss | seeds | overall Dice | clean | 0-10 dB | < 0 dB | parameters "
        "| CPU latency (ms, 256 px, 1 thread) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (v, b), g in groups.items():
        cells = [f"{g[k]['mean']:.4f} ± {g[k]['spread'] / 2:.4f}" for k in BINS]
        lines.append(
            f"| {v} | {LOSSES[b]} | {len(g['seeds'])} | "
            + " | ".join(cells)
            + f" | {g['parameters']:,} | {g['latency_ms']:.1f} |"
        )
    comparisons = [
        "",
        "| against unet (same loss) | loss | Δ overall | Δ 0-10 dB | Δ < 0 dB | larger than the seed spread? |",
        "|---|---|---|---|---|---|",
    ]
    for (v, b), g in groups.items():
        ref = groups.get(("unet", b))
        if v == "unet" or ref is None:
            continue
        deltas, verdicts = [], []
        for k in ("overall", "0-10 dB", "< 0 dB"):
            d = g[k]["mean"] - ref[k]["mean"]
            noise = max(g[k]["spread"], ref[k]["spread"])
            deltas.append(f"{d:+.4f}")
            verdicts.append(f"{k}: {'yes' if abs(d) > noise else 'no'} (spread {noise:.4f})")
        comparisons.append(f"| {v} | {LOSSES[b]} | " + " | ".join(deltas) + " | " + "; ".join(verdicts) + " |")
    n_eval = args.n
    counts = trials[0]["counts"] if trials else {}
    per_bin = ", ".join(f"{b}: {k}" for b, k in counts.items())
    text = (
        f"Benchmark: `dotseg evaluate --n {n_eval}` (the same {n_eval} images for every model, 256 px, every "
        f"noise kind from clean to the harshest; images per SNR bin: {per_bin}). Mean ± half the range "
        f"over seeds (with 2 seeds: the two values are mean ± that).\n\n"
        + "\n".join(lines)
        + "\n"
        + "\n".join(comparisons)
        + "\n"
    )
    (args.out_dir / "results.md").write_text(text)
    (args.out_dir / "results.json").write_text(json.dumps({"trials": trials}, indent=1))
    plot(trials, args.out_dir / "dice_vs_snr.png")
    print(text)


def plot(trials: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = ["clean", "> 30 dB", "20-30 dB", "10-20 dB", "0-10 dB", "< 0 dB"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, (b, label) in zip(axes, LOSSES.items(), strict=True):
        for i, v in enumerate(VARIANTS):
            ts = [t for t in trials if t["variant"] == v and t["boundary"] == b]
            if not ts:
                continue
            xs = [o for o in order if all(o in t["curve"] for t in ts)]
            per = [[t["curve"][o] for t in ts] for o in xs]
            mean = [statistics.fmean(p) for p in per]
            ax.plot(range(len(xs)), mean, "o-", color=f"C{i}", label=f"{v} ({len(ts)} seeds)")
            ax.fill_between(range(len(xs)), [min(p) for p in per], [max(p) for p in per], color=f"C{i}", alpha=0.15)
            ax.set_xticks(range(len(xs)), xs)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("SNR bin (clean → harshest)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Dice (mean over seeds; band: min-max)")
    axes[0].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
