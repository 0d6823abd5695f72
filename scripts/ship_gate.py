"""Whether a candidate model may replace the shipped one: the gate of issue 17, from the reports.

    python scripts/ship_gate.py --old v1/ --new v2/ [--tolerance 0.003] [--out gate.md]

Each directory holds ``standard/``, ``stratified/`` and ``shift/`` report.json files of
``dotseg evaluate``. The candidate passes when it is at least as good as the shipped model in
every in-distribution SNR bin of both the standard and the stratified suite (no bin worse by more
than ``tolerance``) and better on the shift suite (a smaller mean drop, over all levels and over
the levels held out of the candidate's training). Prints the table; exit status 0 = pass, 1 = fail.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _load(directory: Path, suite: str) -> dict[str, Any]:
    return json.loads((directory / suite / "report.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="the shipped model's reports")
    ap.add_argument("--new", type=Path, required=True, help="the candidate's reports")
    ap.add_argument("--tolerance", type=float, default=0.003, help="largest allowed loss in any bin (default 0.003)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args()
    lines = ["| suite | bin | shipped | candidate | difference | within tolerance |", "|---|---|---:|---:|---:|---|"]
    ok = True
    for suite in ("standard", "stratified"):
        old, new = _load(args.old, suite), _load(args.new, suite)
        bins = {"overall": (old["overall"]["model"], new["overall"]["model"])}
        bins.update({b: (old["by_snr_bin"][b]["model"], new["by_snr_bin"][b]["model"]) for b in old["by_snr_bin"]})
        for b, (o, n) in bins.items():
            if not o["n"]:
                continue
            diff = n["dice"] - o["dice"]
            good = diff >= -args.tolerance
            ok &= good
            mark = "yes" if good else "**no**"
            lines.append(f"| {suite} | {b} (n={o['n']}) | {o['dice']:.4f} | {n['dice']:.4f} | {diff:+.4f} | {mark} |")
    old, new = _load(args.old, "shift"), _load(args.new, "shift")
    split = np.array([r["in_training"] for r in new["levels"]], dtype=bool)
    drop_old = np.array([r["model"]["drop"] for r in old["levels"]])
    drop_new = np.array([r["model"]["drop"] for r in new["levels"]])
    for label, sel in (("all levels", np.ones_like(split)), ("held out of the candidate's training", ~split)):
        if not sel.any():
            continue
        o, n = drop_old[sel].mean(), drop_new[sel].mean()
        good = n > o
        ok &= good
        mark = "yes" if good else "**no**"
        lines.append(f"| shift: mean drop | {label} ({int(sel.sum())}) | {o:+.4f} | {n:+.4f} | {n - o:+.4f} | {mark} |")
    lines += ["", f"Verdict: the candidate {'PASSES' if ok else 'FAILS'} the gate (tolerance {args.tolerance})."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
