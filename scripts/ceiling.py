"""How much of a shape's outline the dots leave to guesswork, and what that costs a model.

    python scripts/ceiling.py [--checkpoint shipped] [--n 300] [--out docs/shipped-model/ceiling/by_gap.md]

On clean benchmark images (no noise at all, so only the dots limit what can be known), for each
image: the model's Dice, and the *gap*: the mean distance (px) from a point of the true outline to
the nearest dot pixel. Where the outline runs between sparse dots its course is not in the image,
and any model must guess it. The table gives Dice by dot count and by gap; its best rows estimate
the ceiling a model reaches when the outline is well supported, and its worst rows what guessing
costs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from dotseg.evaluation import EVAL_SEED
from dotseg.inference.predictor import Predictor
from dotseg.masks import boundary
from dotseg.metrics import segmentation_metrics
from dotseg.synthesis import SynthesisConfig, make_sample

DOT_BINS = ((0, 20), (20, 30), (30, 45), (45, 60), (60, 1 << 30))
GAP_BINS = ((0, 6), (6, 10), (10, 15), (15, 25), (25, 1 << 30))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="model (default: the shipped one)")
    ap.add_argument("--n", type=int, default=300, help="clean images (default 300)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the tables here (markdown)")
    args = ap.parse_args()
    model = Predictor.from_checkpoint(args.checkpoint, threads=args.threads)
    synthesis = SynthesisConfig(size=model.synthesis.size)
    rows = []
    for i in range(args.n):
        s = make_sample(synthesis, EVAL_SEED + 1, i, noisy=False)
        truth = s.mask.astype(bool)
        dice = segmentation_metrics(model.predict(s.image).mask, truth)["dice"]
        outline = boundary(truth, 1)
        gap = ndimage.distance_transform_edt(s.image < 0.5)[outline].mean()  # px from the outline to a dot
        rows.append((int(s.meta["n_dots"]), float(gap), float(dice)))
    data = np.array(rows)
    name = "shipped model" if args.checkpoint is None else args.checkpoint
    lines = [
        f"Clean images (seed {EVAL_SEED + 1}, n = {args.n}, {synthesis.size} px), {name}: Dice by dot count and by the",
        "mean distance from the true outline to the nearest dot (the *gap*).",
        "",
        "| dots | n | mean gap (px) | Dice |",
        "|---|---:|---:|---:|",
    ]
    for lo, hi in DOT_BINS:
        sel = data[(data[:, 0] >= lo) & (data[:, 0] < hi)]
        if len(sel):
            label = f"{lo}-{hi - 1}" if hi < 1 << 30 else f">= {lo}"
            lines.append(f"| {label} | {len(sel)} | {sel[:, 1].mean():.1f} | {sel[:, 2].mean():.3f} |")
    lines += ["", "| gap (px) | n | Dice |", "|---|---:|---:|"]
    for lo, hi in GAP_BINS:
        sel = data[(data[:, 1] >= lo) & (data[:, 1] < hi)]
        if len(sel):
            label = f"{lo}-{hi}" if hi < 1 << 30 else f">= {lo}"
            lines.append(f"| {label} | {len(sel)} | {sel[:, 2].mean():.3f} |")
    slope, intercept = np.polyfit(data[:, 1], data[:, 2], 1)
    lines += [
        "",
        f"Overall clean Dice {data[:, 2].mean():.3f}; a least-squares line gives Dice = {intercept:.3f} "
        f"{slope:+.4f} x gap (px): about {-slope * 10:.3f} Dice per 10 px of outline between dots.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
