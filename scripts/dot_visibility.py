"""How many dots the noise leaves visible: at full resolution, and after the network's 1/4 stem.

    python scripts/dot_visibility.py [--level "radius 1 px"] [--n 150] [--out FILE.md]

The shipped networks run at a quarter of the input resolution: their stem averages every 4×4
block before the first convolution sees it. For dots of radius 2-6 px that loses nothing (a dot
fills several blocks). A dot of radius 1 px is 5 pixels, at most a third of one block, so the
average dilutes it before anything can filter it. This measures what that costs, with no model:

- **full resolution:** a dot is *visible* when the sum over its own pixels (the matched filter of
  its footprint) exceeds that sum at every background position of the image (positions ≥ 8 px
  from every dot centre): an ideal detector that knows the footprint finds it with no false alarm;
- **after the stem:** the same test on the 4×4-averaged image, the dot's value being the best of
  the cells it touches and the background every cell ≥ 8 px from every dot centre.

Both are upper bounds of a kind (the dot's position and footprint are given), so what matters is
their difference: dots the image still shows at full resolution but the stem has averaged away.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage

from dotseg.evaluation import EVAL_SEED
from dotseg.shift import LEVELS, Level, _cases, level_synthesis
from dotseg.synthesis import SynthesisConfig

STEM = 4  # the shipped networks' downscale
FAR = 8.0  # px from every dot centre: background


def visible(image: np.ndarray, dots: np.ndarray) -> tuple[float, float]:
    """Fractions of ``dots`` (y, x, r) visible at full resolution and after the 4×4 average."""
    h, w = image.shape
    r = float(np.median(dots[:, 2]))
    k = int(np.ceil(r))
    oy, ox = np.mgrid[-k : k + 1, -k : k + 1]
    footprint = ((oy**2 + ox**2) <= r * r).astype(np.float32)  # the generator's disc rule
    summed = ndimage.correlate(image.astype(np.float32), footprint, mode="constant")
    centres = np.rint(dots[:, :2]).astype(int)
    near = np.zeros((h, w), bool)
    near[centres[:, 0], centres[:, 1]] = True
    background = ndimage.distance_transform_edt(~near) >= FAR
    full = float(np.mean(summed[centres[:, 0], centres[:, 1]] > summed[background].max()))

    pooled = image[: h // STEM * STEM, : w // STEM * STEM].reshape(h // STEM, STEM, w // STEM, STEM).mean(axis=(1, 3))
    cells_bg = (
        background[: h // STEM * STEM, : w // STEM * STEM].reshape(h // STEM, STEM, w // STEM, STEM).all(axis=(1, 3))
    )
    bg_max = pooled[cells_bg].max()
    seen = []
    for y, x in centres:  # the cells the dot's footprint touches
        y0, y1 = max(y - k, 0) // STEM, min(y + k, h - 1) // STEM
        x0, x1 = max(x - k, 0) // STEM, min(x + k, w - 1) // STEM
        seen.append(pooled[y0 : y1 + 1, x0 : x1 + 1].max() > bg_max)
    return full, float(np.mean(seen))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--level", default="radius 1 px", help="a shift level, by name")
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args()
    known = {lv.name: lv for lv in LEVELS}
    if args.level not in known:
        ap.error(f"unknown shift level {args.level!r}; the suite's levels are {sorted(known)}")
    level = known[args.level]
    base = SynthesisConfig()
    rows: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for name, synthesis, lv in (
        ("reference", base, Level("reference", "", {})),
        (level.name, level_synthesis(base, level), level),
    ):
        for case in _cases(lv, args.n):
            if case.kind == "clean":
                continue
            s = case.sample(synthesis, EVAL_SEED)
            dots = s.dots[~np.isnan(s.dots[:, 0])]
            half = "severity < 0.5" if (case.severity or 0.0) < 0.5 else "severity >= 0.5"
            rows[(case.kind, half)][name].append(visible(s.image, dots))
    lines = [
        f"Dots visible (no false alarm anywhere in the image): reference vs **{level.label}**, "
        f"{args.n} benchmark recipes, noisy ones only; full resolution / after the 1/{STEM} stem",
        "",
        f"| noise | images | reference: full | reference: stem | {level.name}: full | {level.name}: stem |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(rows):
        ref, moved = np.array(rows[key]["reference"]), np.array(rows[key][level.name])
        lines.append(
            f"| {key[0]}, {key[1]} | {len(moved)} | {ref[:, 0].mean():.2f} | {ref[:, 1].mean():.2f} "
            f"| {moved[:, 0].mean():.2f} | {moved[:, 1].mean():.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
