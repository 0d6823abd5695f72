"""Robustness evaluation: a fixed, seeded benchmark set, per-sample metrics, tables and pictures.

The set is stratified so every noise type is seen across its whole severity range (from the
mildest to the harshest parameter, evenly spaced), mixed noise too, plus clean images; dot
placement is drawn per sample as in training, so both placements occur. Every segmenter (the
model, the classical baseline) sees exactly the same images, so their numbers sit side by side.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dotseg.baseline.config import BaselineConfig
from dotseg.files import write_atomic
from dotseg.inference.segmenter import Prediction, Segmenter
from dotseg.metrics import segmentation_metrics
from dotseg.plots import plot_dice_vs_snr, plot_gallery
from dotseg.synthesis import Sample, SynthesisConfig, make_sample
from dotseg.synthesis.export import jsonable
from dotseg.synthesis.noise import ORDER

#: Seed of the benchmark set; never used by training (whose seeds are derived through SeedSequence).
EVAL_SEED = 90210
#: (label, low dB, high dB) — the report's SNR bins.
SNR_BINS: tuple[tuple[str, float, float], ...] = (
    ("> 30 dB", 30.0, math.inf),
    ("20-30 dB", 20.0, 30.0),
    ("10-20 dB", 10.0, 20.0),
    ("0-10 dB", 0.0, 10.0),
    ("< 0 dB", -math.inf, 0.0),
    ("clean", math.inf, math.inf),
)
#: (label, low, high) — dot-count bins. A shape is only ever seen through its dots, and 15 dots
#: leave much of a boundary to guesswork even on a clean image: this table shows how much.
DOT_BINS: tuple[tuple[str, int, int], ...] = (("< 30 dots", 0, 30), ("30-49 dots", 30, 50), (">= 50 dots", 50, 1 << 30))
#: Noise kinds of the stratified set, in the order they cycle.
KINDS: tuple[str, ...] = ("clean", *ORDER, "mixed")
METRIC_KEYS = ("dice", "iou", "precision", "recall", "hd95", "boundary_f1")
#: What the seed reports for its 31.5M-parameter model after 80 GPU epochs (its README). Its
#: "val Dice" is on its own validation mix, not on this benchmark, so it is context, not a row.
SEED_FIGURES = {"val_dice": 0.886, "clean_dice": 0.926, "iou": 0.796}
#: Quality goals of the shipped model on the 512-px benchmark: (key, description, target).
GOALS = (
    ("overall_dice", "overall Dice >= 0.90", 0.90),
    ("clean_dice", "clean Dice >= 0.95", 0.95),
    ("overall_iou", "overall IoU >= 0.82", 0.82),
    ("beats_baseline", "Dice above the baseline in every SNR bin", 0.0),
    ("margin_below_10db", "Dice >= baseline + 0.2 in every bin below 10 dB", 0.2),
)


@dataclass(frozen=True, slots=True)
class Case:
    """One benchmark sample's recipe."""

    index: int
    kind: str
    noise_types: tuple[str, ...] | None
    severity: float | None

    def sample(self, synthesis: SynthesisConfig, seed: int = EVAL_SEED) -> Sample:
        """The benchmark sample this recipe describes, drawn from ``synthesis``."""
        return make_sample(
            synthesis,
            seed,
            self.index,
            noisy=self.kind != "clean",
            noise_types=self.noise_types,
            severity=self.severity,
        )


def benchmark_cases(n: int) -> list[Case]:
    """``n`` recipes cycling through :data:`KINDS`; within a kind, severities are evenly spaced over
    [0, 1]; mixed samples cycle through the 2- and 3-type combinations."""
    import itertools

    combos = [c for k in (2, 3) for c in itertools.combinations(ORDER, k)]
    per_kind = max(math.ceil(n / len(KINDS)), 1)
    cases = []
    for i in range(n):
        kind, j = KINDS[i % len(KINDS)], i // len(KINDS)
        severity = j / (per_kind - 1) if per_kind > 1 else 1.0
        if kind == "clean":
            cases.append(Case(i, kind, None, None))
        elif kind == "mixed":
            cases.append(Case(i, kind, combos[j % len(combos)], severity))
        else:
            cases.append(Case(i, kind, (kind,), severity))
    return cases


def snr_bin(snr: float) -> str:
    if math.isinf(snr) and snr > 0:
        return "clean"
    for label, lo, hi in SNR_BINS[:-1]:
        if lo <= snr < hi:
            return label
    return SNR_BINS[0][0]


def stratified_cases(synthesis: SynthesisConfig, per_bin: int, seed: int = EVAL_SEED) -> list[Case]:
    """At least ``per_bin`` recipes in every :data:`SNR_BINS` bin (exactly ``per_bin`` each): the
    noise kinds cycle as in :func:`benchmark_cases`, severities follow a golden-ratio sequence over
    [0, 1], and each candidate is rendered to read its SNR; candidates whose bin is full are skipped.
    Deterministic: the same scan always keeps the same cases."""
    import itertools

    combos = [c for k in (2, 3) for c in itertools.combinations(ORDER, k)]
    counts = dict.fromkeys((b[0] for b in SNR_BINS), 0)
    cases: list[Case] = []
    golden = (math.sqrt(5) - 1) / 2
    limit = 200 * per_bin * len(SNR_BINS)  # a generator that cannot reach a bin must not loop forever
    for i in range(limit):
        kind, j = KINDS[i % len(KINDS)], i // len(KINDS)
        if kind == "clean":
            case = Case(i, kind, None, None)
        else:
            types = combos[j % len(combos)] if kind == "mixed" else (kind,)
            case = Case(i, kind, types, (j * golden) % 1.0)
        label = "clean" if kind == "clean" else snr_bin(case.sample(synthesis, seed).snr_db)
        if counts[label] < per_bin:
            counts[label] += 1
            cases.append(case)
        if all(c >= per_bin for c in counts.values()):
            return cases
    short = {k: v for k, v in counts.items() if v < per_bin}
    raise ValueError(f"the generator reached only {short} images in these SNR bins after {limit} candidates")


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The console summary: mean Dice overall and per SNR bin, side by side, and the goals."""
    names = report["segmenters"]
    lines = [
        f"{'':<10}" + "".join(f"{n:>12}" for n in names) + "   (mean Dice)",
        f"{'overall':<10}" + "".join(f"{report['overall'][n]['dice']:>12.3f}" for n in names),
    ]
    for group, per in report["by_snr_bin"].items():
        if per[names[0]]["n"]:
            lines.append(f"{group:<10}" + "".join(f"{per[n]['dice']:>12.3f}" for n in names))
    for g in report.get("goals", []):
        shown = "no data" if g["measured"] is None else f"{g['measured']:.3f}"
        lines.append(f"goal: {g['description']:<48} {shown:>8}  {'met' if g['met'] else 'MISSED'}")
    return lines


def run_evaluation(
    segmenters: Sequence[Segmenter],
    synthesis: SynthesisConfig,
    n: int,
    out_dir: Path,
    seed: int = EVAL_SEED,
    tolerance: float = 2.0,
    worst_k: int = 8,
    progress: bool = True,
    about: dict[str, Any] | None = None,
    cases: Sequence[Case] | None = None,
    suite: str = "standard",
) -> dict[str, Any]:
    """Evaluate every segmenter on the same ``n`` benchmark samples (or on ``cases``, e.g. the
    stratified suite's) and write the report to ``out_dir``.

    ``about`` (e.g. the checkpoint's name, config hash and epoch) is stored in the report as is.
    Returns the report dict (also written as report.json); writes report.md, dice_vs_snr.png and
    worst_<name>.png.
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    worst: dict[str, list] = {s.name: [] for s in segmenters}
    cases = benchmark_cases(n) if cases is None else cases
    for case in tqdm(cases, desc=f"evaluate ({suite})", unit="image", disable=not progress):
        s = case.sample(synthesis, seed)
        truth = s.mask.astype(bool)
        for seg, (row, pred) in zip(segmenters, score_sample(segmenters, case, s, tolerance), strict=True):
            rows.append(row)
            # Keep the k lowest-Dice cases for the gallery: a min-heap on -dice has the best kept
            # case at its root, which is the one to evict. The unique index breaks ties before
            # the arrays would be compared.
            item = (-row["dice"], case.index, (s.image, truth, pred.mask, pred.prob, row))
            heap = worst[seg.name]
            if len(heap) < worst_k:
                heapq.heappush(heap, item)
            elif item[0] > heap[0][0]:
                heapq.heapreplace(heap, item)
    report = _aggregate(rows, [s.name for s in segmenters], synthesis, len(cases), seed, tolerance)
    report["benchmark"]["suite"] = suite
    report["about"] = about or {}
    if {"model", "baseline"} <= set(report["segmenters"]):
        report["goals"] = check_goals(report)
    # Strict JSON (no Infinity tokens, which many parsers reject): see jsonable.
    report_json = json.dumps(jsonable({**report, "samples": rows}), indent=1, allow_nan=False)
    write_atomic(out_dir / "report.json", report_json)
    write_atomic(out_dir / "report.md", render_markdown(report))
    plot_dice_vs_snr(
        rows,
        [s.name for s in segmenters],
        out_dir / "dice_vs_snr.png",
        kinds=[k for k in KINDS if k != "clean"],
        reference=SEED_FIGURES["val_dice"],
    )
    for name, heap in worst.items():
        items = sorted(heap, key=lambda t: (-t[0], t[1]))  # lowest Dice first
        plot_gallery([t[2] for t in items], out_dir / f"worst_{name}.png", name)
    return report


def evaluate_labelled(
    checkpoint: str | Path | None,
    data: str | Path,
    out_dir: Path,
    *,
    baseline: BaselineConfig | None = None,
    tolerance: float = 2.0,
    threads: int | None = None,
    progress: bool = True,
    worst_k: int = 8,
) -> dict[str, Any]:
    """``dotseg evaluate --data``: the model and the classical baseline on a user's labelled
    dataset (:mod:`dotseg.labelled`), the same metrics and report as the benchmark's, binned by an
    SNR estimated from each image and its true mask, with the in-distribution verdicts."""
    from tqdm import tqdm

    from dotseg.baseline import ClassicalBaseline
    from dotseg.inference.ood import estimate_snr_db, in_distribution
    from dotseg.inference.predictor import Predictor
    from dotseg.labelled import load, pairs_digest

    dataset = load(data)  # every problem of the dataset, in one line, before any prediction
    model = Predictor.from_checkpoint(checkpoint, threads=threads, precision="fp32")
    segmenters: list[Segmenter] = [model, ClassicalBaseline(baseline)]
    names = [seg.name for seg in segmenters]
    rows: list[dict[str, Any]] = []
    worst: dict[str, list] = {name: [] for name in names}
    flagged = []
    for i, (pair, image, truth) in enumerate(
        tqdm(dataset, desc="evaluate (labelled)", unit="image", disable=not progress)
    ):
        snr = estimate_snr_db(image, truth)
        if not in_distribution(image, model.synthesis).in_distribution:
            flagged.append(pair.name)
        for seg in segmenters:
            pred = seg.predict(image)
            m = segmentation_metrics(pred.mask, truth, tolerance=tolerance)
            row = {
                "segmenter": seg.name,
                "index": i,
                "name": pair.name,
                "noise": pair.name,  # the gallery's caption
                "snr_db": snr,
                "snr_bin": "unknown" if np.isnan(snr) else snr_bin(snr),  # nan: an empty or full mask
                **{k: float(m[k]) for k in METRIC_KEYS},
            }
            rows.append(row)
            item = (-row["dice"], i, (image, truth, pred.mask, pred.prob, row))
            heap = worst[seg.name]
            if len(heap) < worst_k:
                heapq.heappush(heap, item)
            elif item[0] > heap[0][0]:
                heapq.heapreplace(heap, item)
    by_bin: dict[str, dict[str, Any]] = {}
    unknown = ["unknown"] if any(r["snr_bin"] == "unknown" for r in rows) else []
    for label in [b[0] for b in SNR_BINS] + unknown:
        by_bin[label] = {}
        for name in names:
            sel = [r for r in rows if r["segmenter"] == name and r["snr_bin"] == label]
            by_bin[label][name] = {"n": len(sel), **{k: _mean(sel, k) for k in METRIC_KEYS}}
    overall = {}
    for name in names:
        sel = [r for r in rows if r["segmenter"] == name]
        overall[name] = {"n": len(sel), **{k: _mean(sel, k) for k in METRIC_KEYS}}
    about = {**(model.checkpoint.about() if model.checkpoint else {})}
    if checkpoint is None:
        about["checkpoint"] = "shipped model"
    report = {
        "benchmark": {
            "suite": "labelled",
            "data": str(data),
            "digest": pairs_digest([pair for pair, _, _ in dataset]),
            "n": len(dataset),
            "tolerance_px": tolerance,
            "snr_bins": [b[0] for b in SNR_BINS],
        },
        "segmenters": names,
        "overall": overall,
        "by_snr_bin": by_bin,
        "in_distribution": {"pass": len(dataset) - len(flagged), "flagged": flagged},
        "about": about,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "report.json", json.dumps(jsonable({**report, "samples": rows}), indent=1, allow_nan=False))
    write_atomic(out_dir / "report.md", render_markdown(report))
    for name, heap in worst.items():
        items = sorted(heap, key=lambda t: (-t[0], t[1]))
        plot_gallery([t[2] for t in items], out_dir / f"worst_{name}.png", name)
    return report


def score_sample(
    segmenters: Sequence[Segmenter], case: Case, s: Sample, tolerance: float = 2.0
) -> list[tuple[dict[str, Any], Prediction]]:
    """Every segmenter's prediction of benchmark sample ``s`` (drawn from ``case``) and its row:
    the case, the sample's noise, SNR, dot count and their bins, and the :data:`METRIC_KEYS`."""
    truth = s.mask.astype(bool)
    out = []
    for seg in segmenters:
        pred = seg.predict(s.image)
        m = segmentation_metrics(pred.mask, truth, tolerance=tolerance)
        row = {
            "segmenter": seg.name,
            "index": case.index,
            "kind": case.kind,
            "noise": s.meta["noise"],
            "severity": case.severity,
            "placement": s.meta["placement"],
            "snr_db": s.snr_db,
            "snr_bin": snr_bin(s.snr_db),
            "n_dots": int(s.meta["n_dots"]),
            "dots_bin": next(lbl for lbl, lo, hi in DOT_BINS if lo <= s.meta["n_dots"] < hi),
            **{k: float(m[k]) for k in METRIC_KEYS},
        }
        out.append((row, pred))
    return out


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows]
    return float(np.mean(vals)) if vals else None


def _aggregate(
    rows: list[dict[str, Any]], names: list[str], synthesis: SynthesisConfig, n: int, seed: int, tolerance: float
) -> dict[str, Any]:
    def table(group_key: str, groups: Sequence[str], kind: str | None = None) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for g in groups:
            out[g] = {}
            for name in names:
                sel = [
                    r
                    for r in rows
                    if r["segmenter"] == name and r[group_key] == g and (kind is None or r["kind"] == kind)
                ]
                out[g][name] = {"n": len(sel), **{k: _mean(sel, k) for k in METRIC_KEYS}}
        return out

    overall = {
        name: {
            "n": len([r for r in rows if r["segmenter"] == name]),
            **{k: _mean([r for r in rows if r["segmenter"] == name], k) for k in METRIC_KEYS},
        }
        for name in names
    }
    return {
        "benchmark": {
            "n": n,
            "seed": seed,
            "size": synthesis.size,
            "tolerance_px": tolerance,
            "kinds": list(KINDS),
            "snr_bins": [b[0] for b in SNR_BINS],
        },
        "segmenters": names,
        "overall": overall,
        "by_snr_bin": table("snr_bin", [b[0] for b in SNR_BINS]),
        "by_noise": table("kind", list(KINDS)),
        "by_placement": table("placement", ["random", "lattice"]),
        "by_dots": table("dots_bin", [b[0] for b in DOT_BINS]),
        "clean_by_dots": table("dots_bin", [b[0] for b in DOT_BINS], kind="clean"),
    }


def check_goals(report: dict[str, Any], model: str = "model", baseline: str = "baseline") -> list[dict[str, Any]]:
    """The :data:`GOALS`, each with its measured value and whether it is met. SNR bins without
    samples are skipped; the margins are model Dice minus baseline Dice, the smallest one counts."""
    bins = {g: per for g, per in report["by_snr_bin"].items() if g != "clean" and per[model]["n"]}
    margins = {g: per[model]["dice"] - per[baseline]["dice"] for g, per in bins.items()}
    below_10db = {label for label, _, hi in SNR_BINS if hi <= 10.0}
    low = {g: m for g, m in margins.items() if g in below_10db}
    clean = report["by_snr_bin"]["clean"][model]
    measured = {
        "overall_dice": report["overall"][model]["dice"],
        "overall_iou": report["overall"][model]["iou"],
        "clean_dice": clean["dice"] if clean["n"] else None,
        "beats_baseline": min(margins.values()) if margins else None,
        "margin_below_10db": min(low.values()) if low else None,
    }
    detail = {"beats_baseline": margins, "margin_below_10db": low}
    out = []
    for key, text, target in GOALS:
        value = measured[key]
        met = None if value is None else (value > target if key == "beats_baseline" else value >= target)
        out.append(
            {
                "goal": key,
                "description": text,
                "target": target,
                "measured": value,
                "met": met,
                **({"by_bin": detail[key]} if key in detail else {}),
            }
        )
    return out


def render_markdown(report: dict[str, Any]) -> str:
    names = report["segmenters"]
    b = report["benchmark"]
    head = (
        f"# dotseg evaluation on {b['data']} (content digest {b['digest']}): {b['n']} labelled images"
        if b.get("suite") == "labelled"
        else f"# dotseg evaluation ({b.get('suite', 'standard')} suite): {b['n']} images, {b['size']}x{b['size']} px, "
        f"seed {b['seed']}"
    )
    lines = [
        head,
        "",
        f"Mean per-sample metrics (HD95 in px; boundary F1 at a tolerance of {b['tolerance_px']:g} px).",
        "",
    ]

    def fmt(v: float | None, key: str) -> str:
        return "–" if v is None else (f"{v:.1f}" if key == "hd95" else f"{v:.3f}")

    about = report.get("about") or {}
    if about:
        lines += ["Model: " + ", ".join(f"{k} `{v}`" for k, v in about.items()) + ".", ""]
    if report.get("goals"):
        lines += ["## Goals", "", "| goal | measured | met |", "|---|---:|---|"]
        for g in report["goals"]:
            sign = "+" if "by_bin" in g else ""  # margins are signed
            value = "–" if g["measured"] is None else f"{g['measured']:{sign}.3f}"
            where = ""
            if g.get("by_bin"):
                where = " (" + ", ".join(f"{b}: {m:+.3f}" for b, m in g["by_bin"].items()) + ")"
            met = {True: "yes", False: "**no**", None: "no data"}[g["met"]]
            lines.append(f"| {g['description']} | {value}{where} | {met} |")
        lines += [
            "",
            f"For context, the seed reports val Dice {SEED_FIGURES['val_dice']}, clean Dice "
            f"{SEED_FIGURES['clean_dice']} and IoU {SEED_FIGURES['iou']} for its 31.5M-parameter model "
            "after 80 GPU epochs, on its own validation mix (not this benchmark).",
            "",
        ]
    lines += [
        "## Overall",
        "",
        "| segmenter | n | " + " | ".join(METRIC_KEYS) + " |",
        "|---|---:|" + "---:|" * len(METRIC_KEYS),
    ]
    for name in names:
        o = report["overall"][name]
        lines.append(f"| {name} | {o['n']} | " + " | ".join(fmt(o[k], k) for k in METRIC_KEYS) + " |")
    for title, key in (
        ("By SNR bin", "by_snr_bin"),
        ("By noise type", "by_noise"),
        ("By dot placement", "by_placement"),
        ("By dot count", "by_dots"),
        ("Clean images by dot count", "clean_by_dots"),
    ):
        if key not in report:  # a labelled dataset has no noise types, placements or dot counts
            continue
        if key == "by_snr_bin" and b.get("suite") == "labelled":
            title = "By estimated SNR (from each image and its true mask)"
        lines += [
            "",
            f"## {title}",
            "",
            "| group | n | "
            + " | ".join(f"Dice ({n})" for n in names)
            + " | "
            + " | ".join(f"IoU ({n})" for n in names)
            + " | "
            + " | ".join(f"HD95 ({n})" for n in names)
            + " |",
            "|---|---:|" + "---:|" * (3 * len(names)),
        ]
        for group, per in report[key].items():
            count = per[names[0]]["n"]
            if not count:
                continue
            lines.append(
                f"| {group} | {count} | "
                + " | ".join(fmt(per[n]["dice"], "dice") for n in names)
                + " | "
                + " | ".join(fmt(per[n]["iou"], "iou") for n in names)
                + " | "
                + " | ".join(fmt(per[n]["hd95"], "hd95") for n in names)
                + " |"
            )
    if b.get("suite") == "labelled":
        ind = report["in_distribution"]
        lines += [
            "",
            f"In distribution: {ind['pass']} of {b['n']} images look like the model's training data"
            + (f"; flagged: {', '.join(ind['flagged'][:8])}" if ind["flagged"] else "")
            + ".",
            "",
            "Pictures: " + ", ".join(f"`worst_{n}.png`" for n in names) + " (lowest-Dice images).",
            "",
        ]
        return "\n".join(lines)
    lines += [
        "",
        "Plots: `dice_vs_snr.png` (Dice against SNR per noise type), "
        + ", ".join(f"`worst_{n}.png`" for n in names)
        + " (lowest-Dice cases: image | truth | prediction | probability).",
        "",
    ]
    return "\n".join(lines)
