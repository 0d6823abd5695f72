"""What averaging buys: test-time augmentation, ensembles and the threshold, on the benchmark.

    python scripts/headroom.py [--n 350] [--model NAME=CHECKPOINT ...] [--out FILE.md]

If a model's misses were noise of its own (a variance a bigger or longer-trained network would
shed), averaging its predictions over the 8 flips and 90° rotations of the image, or over several
independently trained models, would recover part of them. If every model misses the same pixels,
averaging buys nothing and the error is in the images. Each model runs eager fp32; every row is
on the same first ``n`` images of the standard benchmark (its noise kinds cycle, so any prefix
covers all of them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dotseg.evaluation import benchmark_cases
from dotseg.inference.predictor import Predictor
from dotseg.synthesis import SynthesisConfig

THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
DEFAULT_MODELS = ("v1=shipped-v1", "v2=shipped-v2")


def dihedral(x: np.ndarray) -> np.ndarray:
    """(H, W) -> (8, H, W): the four rotations, each also mirrored."""
    return np.stack([f for k in range(4) for r in [np.rot90(x, k)] for f in (r, r[:, ::-1])])


def undihedral(p: np.ndarray) -> np.ndarray:
    """(8, H, W) predictions of :func:`dihedral`'s views -> (8, H, W) in the image's own frame."""
    return np.stack([np.rot90(p[2 * k + m][:, ::-1] if m else p[2 * k], -k) for k in range(4) for m in (0, 1)])


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=350, help="benchmark images (default 350)")
    ap.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="NAME=CHECKPOINT",
        help=f"a model to compare (repeatable; default {' '.join(DEFAULT_MODELS)})",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args()
    specs = [m.split("=", 1) for m in (args.model or DEFAULT_MODELS)]
    if any(len(s) != 2 for s in specs):
        ap.error("--model takes NAME=CHECKPOINT, e.g. v2=shipped-v2 or fast=runs/x/best.safetensors")
    models = {
        name: Predictor.from_checkpoint(path, threads=args.threads, engine="eager", precision="fp32")
        for name, path in specs
    }
    synthesis = SynthesisConfig(size=512)
    rows: dict[str, list[float]] = {}
    placements: list[str] = []
    t0 = time.time()
    for i, case in enumerate(benchmark_cases(1000)[: args.n]):
        sample = case.sample(synthesis)
        truth = sample.mask.astype(bool)
        placements.append(str(sample.meta["placement"]))
        views = list(dihedral(sample.image))
        probs = {name: undihedral(np.stack([p.prob for p in m.predict_batch(views)])) for name, m in models.items()}
        combos = {name: [name] for name in models}
        if len(models) > 1:
            combos["ensemble of all"] = list(models)
        for label, names in combos.items():
            single = np.mean([probs[n][0] for n in names], axis=0)
            tta = np.mean([probs[n].mean(axis=0) for n in names], axis=0)
            for t in THRESHOLDS:
                rows.setdefault(f"{label}|single|{t}", []).append(dice(single >= t, truth))
                rows.setdefault(f"{label}|8-fold TTA|{t}", []).append(dice(tta >= t, truth))
        if (i + 1) % 25 == 0:
            print(f"{i + 1}/{args.n} images, {time.time() - t0:.0f} s", flush=True)
    lines = [
        f"Standard benchmark, first {args.n} images (512 px, all noise kinds and clean), eager fp32.",
        "",
        "| model | pass | Dice at 0.5 | best threshold | Dice there | vs the first row at 0.5 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    base = None
    for key in dict.fromkeys(k.rsplit("|", 1)[0] for k in rows):
        at = {t: float(np.mean(rows[f"{key}|{t}"])) for t in THRESHOLDS}
        best = max(at, key=lambda t: at[t])
        base = at[0.5] if base is None else base
        label, mode = key.split("|")
        lines.append(f"| {label} | {mode} | {at[0.5]:.4f} | {best} | {at[best]:.4f} | {at[0.5] - base:+.4f} |")
    lines += [
        "",
        "Single pass, by dot placement, with the threshold that suits each placement best. The model is not",
        "told the placement, so this is an oracle: what hedging one outline between the two placements costs.",
        "",
        "| model | placement | n | Dice at 0.5 | best threshold | Dice there | gain |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    where = np.array(placements)
    for label in combos:
        for placement in dict.fromkeys(placements):
            sel = where == placement
            at = {t: float(np.mean(np.array(rows[f"{label}|single|{t}"])[sel])) for t in THRESHOLDS}
            best = max(at, key=lambda t: at[t])
            lines.append(
                f"| {label} | {placement} | {int(sel.sum())} | {at[0.5]:.4f} | {best} | {at[best]:.4f} | "
                f"{at[best] - at[0.5]:+.4f} |"
            )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
