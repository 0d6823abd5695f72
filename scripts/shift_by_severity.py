"""Where a shift level's drop comes from: clean images or noise, paired case by case.

    python scripts/shift_by_severity.py ["radius 1 px" "count 5-14" ...] [--n 150] [--checkpoint shipped]

A shift level's drop (``dotseg evaluate --suite shift``) mixes two things: what the moved axis
takes from the clean image (sparser dots: less of the outline is drawn) and what it takes under
noise (smaller dots: each carries less signal against the same noise). The suite renders every
level from the benchmark's own recipes (noise kind, severity, seed), so each level image has a
reference image with the same noise; this splits the paired drop into clean images and the two
halves of the severity range.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from dotseg.evaluation import EVAL_SEED, score_sample
from dotseg.inference.predictor import Predictor, resolve_checkpoint
from dotseg.shift import LEVELS, Level, _cases, level_synthesis
from dotseg.synthesis import SynthesisConfig

GROUPS = ("clean", "severity < 0.5", "severity >= 0.5", "all")


def group(kind: str, severity: float | None) -> str:
    if kind == "clean":
        return "clean"
    return "severity < 0.5" if (severity or 0.0) < 0.5 else "severity >= 0.5"


def median_snr(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    return f"{np.median(finite):.1f}" if finite else "clean"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("levels", nargs="*", default=["radius 1 px", "count 5-14"], help="shift levels, by name")
    ap.add_argument("--n", type=int, default=150, help="images per level (the suite's own n)")
    ap.add_argument("--checkpoint", default="shipped")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables here (markdown)")
    args = ap.parse_args()
    known = {lv.name: lv for lv in LEVELS}
    unknown = [name for name in args.levels if name not in known]
    if unknown:
        ap.error(f"unknown shift level(s) {unknown}; the suite's levels are {sorted(known)}")

    model = Predictor.from_checkpoint(resolve_checkpoint(args.checkpoint))
    base = SynthesisConfig()  # the benchmark's generator, as the suite renders its references
    references: dict[tuple[str, ...] | None, dict[int, dict]] = {}  # one per noise restriction, as run_shift
    lines = []
    for name in args.levels:
        level = known[name]
        if level.noise_types not in references:
            reference = Level("reference", "", {}, noise_types=level.noise_types)
            references[level.noise_types] = {
                c.index: score_sample([model], c, c.sample(base, EVAL_SEED))[0][0] for c in _cases(reference, args.n)
            }
        ref = references[level.noise_types]
        moved = level_synthesis(base, level)
        rows: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
        for case in _cases(level, args.n):
            row = score_sample([model], case, case.sample(moved, EVAL_SEED))[0][0]
            for g in (group(case.kind, case.severity), "all"):
                rows[g].append((ref[case.index], row))
        lines += [
            f"**{level.label}** ({args.checkpoint}, {args.n} images, each paired with its reference image)",
            "",
            "| images | n | reference Dice | level Dice | drop | median SNR, reference / level (dB) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for g in GROUPS:
            pairs = rows[g]
            a = np.mean([r["dice"] for r, _ in pairs])
            b = np.mean([x["dice"] for _, x in pairs])
            snr = f"{median_snr([r['snr_db'] for r, _ in pairs])} / {median_snr([x['snr_db'] for _, x in pairs])}"
            lines.append(f"| {g} | {len(pairs)} | {a:.3f} | {b:.3f} | {b - a:+.3f} | {snr} |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
