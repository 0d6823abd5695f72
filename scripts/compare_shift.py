"""Models side by side on the shift suite: a table and the drop picture from their reports.

python scripts/compare_shift.py v1/shift/report.json v2/shift/report.json --labels v1 v2 --out docs/shipped-model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dotseg.shift import compare_markdown, plot_shift


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", type=Path, help="report.json files of `dotseg evaluate --suite shift`")
    ap.add_argument("--labels", nargs="+", required=True, help="one label per report")
    ap.add_argument("--out", type=Path, required=True, help="directory for shift_compare.md and shift_compare.png")
    args = ap.parse_args()
    if len(args.labels) != len(args.reports):
        ap.error("give one --labels entry per report")
    reports = [json.loads(p.read_text()) for p in args.reports]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shift_compare.md").write_text(compare_markdown(reports, args.labels))
    plot_shift(reports, args.out / "shift_compare.png", labels=args.labels)
    print((args.out / "shift_compare.md").read_text())


if __name__ == "__main__":
    main()
