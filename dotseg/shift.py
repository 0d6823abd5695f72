"""The shift suite: the benchmark re-rendered with one generator axis moved at a time.

A model can score well on the generator it was trained on and still have learned that generator's
habits rather than the shapes. Each :class:`Level` here changes one thing about how the images are
made (the outline construction, the dots, where they go, the optics and export, the noise beyond
the seed's ranges) through the typed variation fields of :class:`~dotseg.synthesis.SynthesisConfig`,
and the suite scores the model and the classical baseline on the same recipes with and without
the change. A level's *drop* is its mean Dice minus the reference's on the same case indices
(the same noise kinds and severities; the image-level axes even keep each sample's shape and
dots), with a 95 % interval from the per-image paired differences.

Whether a level lies inside the model's training distribution is read from the checkpoint's own
synthesis config (:func:`covered`), so the report separates what the model was trained on from
what it was not: the suite measures generalization, not memorized augmentation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dotseg.evaluation import EVAL_SEED, Case, benchmark_cases, score_sample
from dotseg.files import write_atomic
from dotseg.inference.segmenter import Segmenter
from dotseg.synthesis import SynthesisConfig
from dotseg.synthesis.export import jsonable

#: Dot-count bins of the shift tables (the dot count is what shape inference lives on).
SHIFT_DOT_BINS: tuple[tuple[str, int, int], ...] = (
    ("< 20", 0, 20),
    ("20-29", 20, 30),
    ("30-44", 30, 45),
    ("45-59", 45, 60),
    (">= 60", 60, 1 << 30),
)


@dataclass(frozen=True, slots=True)
class Level:
    """One moved axis at one level: synthesis overrides (dotted keys of ``SynthesisConfig``)."""

    axis: str
    name: str
    overrides: dict[str, Any]
    noise_types: tuple[str, ...] | None = None
    """Restrict every noisy case to these types (a noise-axis level moves only that noise); the
    reference then uses the same restriction."""

    @property
    def label(self) -> str:
        return f"{self.axis}: {self.name}"


#: The suite, axis by axis. Ranges are at the reference size (512 px), like the config's.
LEVELS: tuple[Level, ...] = (
    Level("shape", "bezier, random anchors", {"shape.kinds": ("bezier_free",)}),
    Level("shape", "radial Fourier", {"shape.kinds": ("fourier",)}),
    Level("shape", "superellipse", {"shape.kinds": ("superellipse",)}),
    Level(
        "shape",
        "concave (Fourier, irregularity 0.6-0.9)",
        {"shape.kinds": ("fourier",), "shape.irregularity": (0.6, 0.9)},
    ),
    Level("shape", "near-circular (irregularity 0-0.05)", {"shape.irregularity": (0.0, 0.05)}),
    Level("shape", "more irregular (0.45-0.9)", {"shape.irregularity": (0.45, 0.9)}),
    Level("shape", "small (radius 0.06-0.14)", {"shape.radius": (0.06, 0.14)}),
    Level("shape", "large (radius 0.32-0.44)", {"shape.radius": (0.32, 0.44)}),
    Level("shape", "off-centre (in a corner)", {"shape.position": ("corner",)}),
    Level("dots", "count 5-14", {"dots.count": (5, 14)}),
    Level("dots", "count 81-200", {"dots.count": (81, 200)}),
    Level("dots", "radius 1 px", {"dots.radius": (1.0, 1.0)}),
    Level("dots", "radius 8 px", {"dots.radius": (8.0, 8.0)}),
    Level("dots", "soft (Gaussian)", {"dots.profile": ("gaussian",)}),
    Level("dots", "elliptical (aspect 1.5-3)", {"dots.aspect": (1.5, 3.0)}),
    Level("dots", "amplitude 0.4-1.0", {"dots.amplitude": (0.4, 1.0)}),
    Level("placement", "Poisson disc (blue noise)", {"dots.placement": ("poisson_disc",)}),
    Level("placement", "clustered", {"dots.placement": ("clustered",)}),
    Level("placement", "density gradient", {"dots.placement": ("gradient",)}),
    Level("placement", "near the boundary only", {"dots.placement": ("boundary",)}),
    Level("image", "background offset 0.5-2", {"image.offset": (0.5, 2.0)}),
    Level("image", "gain 0.2-5", {"image.gain": (0.2, 5.0)}),
    Level("image", "optical blur sigma 1-2 px", {"image.blur": (1.0, 2.0)}),
    Level("image", "uneven illumination 0.3-0.6", {"image.illumination": (0.3, 0.6)}),
    Level("image", "8-bit export", {"image.export": ("uint8",)}),
    Level("image", "16-bit export", {"image.export": ("uint16",)}),
    Level("image", "size 256", {"size": 256}),
    Level("image", "size 384", {"size": 384}),
    Level("image", "size 768", {"size": 768}),
    Level("noise", "correlated Gaussian, 1-3 px", {"noise.correlation": (1.0, 3.0)}, noise_types=("gaussian",)),
    Level("noise", "Poisson, lambda 1 -> 0.3", {"noise.poisson_lambda": (1.0, 0.3)}, noise_types=("poisson",)),
)


def level_synthesis(base: SynthesisConfig, level: Level) -> SynthesisConfig:
    """``base`` with the level's overrides (a ``size`` level keeps every other field)."""
    return base.replace(**level.overrides)


def _contains(trained: Any, moved: Any) -> bool:
    """Whether the value ``moved`` lies inside ``trained``: a numeric [a, b] range inside the trained
    range (either order, e.g. Poisson's [mild, harsh] lambda), choices a subset, anything else equal."""
    numeric = isinstance(moved, tuple) and len(moved) == 2 and all(isinstance(v, (int, float)) for v in moved)
    if numeric and isinstance(trained, tuple) and len(trained) == 2:
        return min(trained) <= min(moved) and max(moved) <= max(trained)
    if isinstance(moved, tuple) and isinstance(trained, tuple):
        return set(moved) <= set(trained)
    return bool(trained == moved)


def covered(trained: SynthesisConfig, level: Level) -> bool:
    """Whether every override of ``level`` lies inside the training distribution ``trained``."""
    from dotseg.configbase import get_path

    return all(_contains(get_path(trained, key), value) for key, value in level.overrides.items())


def _cases(level: Level, n: int) -> list[Case]:
    """The level's recipes: the benchmark's, or with every noisy case restricted to its noise types."""
    cases = benchmark_cases(n)
    if level.noise_types is None:
        return cases
    return [c if c.kind == "clean" else Case(c.index, c.kind, level.noise_types, c.severity) for c in cases]


def run_shift(
    segmenters: Sequence[Segmenter],
    base: SynthesisConfig,
    trained: SynthesisConfig | None,
    n: int,
    out_dir: Path,
    *,
    seed: int = EVAL_SEED,
    tolerance: float = 2.0,
    levels: Sequence[Level] = LEVELS,
    progress: bool = True,
    about: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every segmenter on ``n`` images per level of ``levels`` (rendered from ``base`` with the
    level moved) and on the references, and write report.json, report.md, shift_drop.png and
    gallery.png to ``out_dir``. ``trained`` (the model's training synthesis) decides which levels
    count as inside training; None marks them all held out."""
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in segmenters]
    # The references: one per distinct case list (the benchmark's, or restricted to a noise type).
    restrictions = sorted({lv.noise_types for lv in levels}, key=lambda t: t or ())
    total = n * (len(levels) + len(restrictions))
    bar = tqdm(total=total, desc="shift suite", unit="image", disable=not progress)
    reference: dict[tuple[str, ...] | None, dict[str, dict[int, dict[str, Any]]]] = {}
    for noise_types in restrictions:
        probe = Level("reference", "", {}, noise_types=noise_types)
        reference[noise_types] = _score_level(segmenters, base, probe, n, seed, tolerance, bar)[0]
    results = []
    gallery = []
    for level in levels:
        synthesis = level_synthesis(base, level)
        rows, example = _score_level(segmenters, synthesis, level, n, seed, tolerance, bar)
        ref = reference[level.noise_types]
        results.append(
            {
                "axis": level.axis,
                "level": level.name,
                "overrides": level.overrides,
                "noise_types": level.noise_types,
                "in_training": covered(trained, level) if trained is not None else False,
                **{name: _summary(rows[name], ref[name]) for name in names},
            }
        )
        gallery.append((level.label, example))
    bar.close()
    ref_summary = {
        ("all" if k is None else "+".join(k)): {name: _summary(v[name], v[name]) for name in names}
        for k, v in reference.items()
    }
    report = {
        "suite": "shift",
        "n_per_level": n,
        "seed": seed,
        "size": base.size,
        "segmenters": names,
        "about": about or {},
        "reference": ref_summary,
        "levels": results,
        "axes": _axis_means(results, names),
    }
    write_atomic(out_dir / "report.json", json.dumps(jsonable(report), indent=1, allow_nan=False))
    write_atomic(out_dir / "report.md", render_markdown(report))
    plot_shift([report], out_dir / "shift_drop.png")
    _plot_gallery(gallery, out_dir / "gallery.png")
    return report


def _score_level(
    segmenters: Sequence[Segmenter],
    synthesis: SynthesisConfig,
    level: Level,
    n: int,
    seed: int,
    tolerance: float,
    bar: Any,
) -> tuple[dict[str, dict[int, dict[str, Any]]], tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
    """Rows by segmenter and case index, and one example (image, truth, the first segmenter's mask,
    caption) for the gallery: the level's first noisy case of moderate severity."""
    rows: dict[str, dict[int, dict[str, Any]]] = {s.name: {} for s in segmenters}
    example = None
    for case in _cases(level, n):
        s = case.sample(synthesis, seed)
        for (row, pred), seg in zip(score_sample(segmenters, case, s, tolerance), segmenters, strict=True):
            rows[seg.name][case.index] = row
            if example is None and seg is segmenters[0] and case.kind != "clean" and (case.severity or 0) >= 0.3:
                example = (s.image, s.mask.astype(bool), pred.mask, f"Dice {row['dice']:.3f}, {row['noise']}")
        bar.update(1)
    if example is None:  # n too small for a noisy case: show the first one
        s = _cases(level, n)[0].sample(synthesis, seed)
        example = (s.image, s.mask.astype(bool), s.mask.astype(bool), "")
    return rows, example


def _summary(rows: dict[int, dict[str, Any]], ref: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean Dice and IoU, the drop against the reference on the same indices with its 95 % interval
    (paired differences), and Dice by dot-count bin."""
    idx = sorted(rows)
    dice = np.array([rows[i]["dice"] for i in idx])
    diff = dice - np.array([ref[i]["dice"] for i in idx])
    half = 1.96 * float(diff.std(ddof=1)) / math.sqrt(len(idx)) if len(idx) > 1 else math.nan
    by_dots = {}
    for label, lo, hi in SHIFT_DOT_BINS:
        sel = [rows[i]["dice"] for i in idx if lo <= rows[i]["n_dots"] < hi]
        by_dots[label] = {"n": len(sel), "dice": float(np.mean(sel)) if sel else None}
    return {
        "n": len(idx),
        "dice": float(dice.mean()),
        "iou": float(np.mean([rows[i]["iou"] for i in idx])),
        "drop": float(diff.mean()),
        "ci95": half,
        "dice_ci95": 1.96 * float(dice.std(ddof=1)) / math.sqrt(len(idx)) if len(idx) > 1 else math.nan,
        "by_dots": by_dots,
    }


def _axis_means(results: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Mean drop per segmenter over the levels inside training and over the held-out ones."""
    out: dict[str, Any] = {}
    for name in names:
        for key, inside in (("in_training", True), ("held_out", False)):
            drops = [r[name]["drop"] for r in results if r["in_training"] is inside]
            out.setdefault(name, {})[key] = {
                "levels": len(drops),
                "mean_drop": float(np.mean(drops)) if drops else None,
            }
    return out


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The console summary: the mean drops, then every level's drop per segmenter."""
    names = report["segmenters"]
    lines = [f"{'shift suite':<48}" + "".join(f"{n:>16}" for n in names) + "   (Dice drop)"]
    for key, title in (("in_training", "mean, inside training"), ("held_out", "mean, held out")):
        cells = []
        for n in names:
            a = report["axes"][n][key]
            cells.append("–" if a["mean_drop"] is None else f"{a['mean_drop']:+.3f}")
        lines.append(f"{title:<48}" + "".join(f"{c:>16}" for c in cells))
    for r in report["levels"]:
        tag = "" if r["in_training"] else " [held out]"
        lines.append(
            f"{(r['axis'] + ': ' + r['level'] + tag)[:48]:<48}" + "".join(f"{r[n]['drop']:>+16.3f}" for n in names)
        )
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    names = report["segmenters"]
    lines = [
        f"# dotseg shift suite: {report['n_per_level']} images per level, {report['size']} px, seed {report['seed']}",
        "",
        "Each row moves one generator axis; everything else is the benchmark's generator. *Drop* is the "
        "level's mean Dice minus the reference's on the same case indices (same noise kinds and "
        "severities; image-level axes keep each sample's shape and dots), +- the 95 % interval of "
        "the paired per-image differences. *Training*: whether the level lies inside the model's "
        "training distribution (read from its checkpoint) or was held out.",
        "",
    ]
    about = report.get("about") or {}
    if about:
        lines += ["Model: " + ", ".join(f"{k} `{v}`" for k, v in about.items()) + ".", ""]
    lines += ["## Summary", "", "| segmenter | mean drop, inside training | mean drop, held out |", "|---|---:|---:|"]
    for name in names:
        a = report["axes"][name]

        def cell(x: dict[str, Any]) -> str:
            return "–" if x["mean_drop"] is None else f"{x['mean_drop']:+.3f} ({x['levels']} levels)"

        lines.append(f"| {name} | {cell(a['in_training'])} | {cell(a['held_out'])} |")
    lines += ["", "## References (in distribution)", "", "| cases | " + " | ".join(f"Dice ({n})" for n in names) + " |"]
    lines.append("|---|" + "---:|" * len(names))
    for key, per in report["reference"].items():
        lines.append(
            f"| {key} | " + " | ".join(f"{per[n]['dice']:.3f} +- {per[n]['dice_ci95']:.3f}" for n in names) + " |"
        )
    bins = [b[0] for b in SHIFT_DOT_BINS]
    first = names[0]
    lines += [
        "",
        "## Levels",
        "",
        "| axis | level | training | n | "
        + " | ".join(f"Dice ({n})" for n in names)
        + f" | IoU ({first}) | "
        + " | ".join(f"drop ({n})" for n in names)
        + " | "
        + " | ".join(f"{first}: {b} dots" for b in bins)
        + " |",
        "|---|---|---|---:|" + "---:|" * (2 * len(names) + 1 + len(bins)),
    ]
    for r in report["levels"]:
        m = r[first]
        dots = [
            "–" if m["by_dots"][b]["dice"] is None else f"{m['by_dots'][b]['dice']:.3f} ({m['by_dots'][b]['n']})"
            for b in bins
        ]
        lines.append(
            f"| {r['axis']} | {r['level']} | {'trained' if r['in_training'] else 'held out'} | {m['n']} | "
            + " | ".join(f"{r[n]['dice']:.3f}" for n in names)
            + f" | {m['iou']:.3f} | "
            + " | ".join(f"{r[n]['drop']:+.3f} +- {r[n]['ci95']:.3f}" for n in names)
            + " | "
            + " | ".join(dots)
            + " |"
        )
    halves = [r[first]["ci95"] for r in report["levels"]]
    worst = max(halves, default=math.nan)
    typical = float(np.median(halves)) if halves else math.nan
    tight = sum(h <= 0.005 for h in halves)
    lines += [
        "",
        f"Precision ({report['n_per_level']} images per level): the 95 % interval of a drop is +-{typical:.3f} at "
        f"the median level, +-{worst:.3f} at the widest; {tight} of {len(halves)} levels are within +-0.005. "
        "An interval shrinks as 1/sqrt(n) (`--n`): the wide ones are levels where the model fails on some images "
        "and not others, whose drops are large anyway.",
        "",
        "Pictures: `shift_drop.png` (the drop per level, by axis), `gallery.png` (one sample per level: "
        "image | truth and prediction outlines).",
        "",
    ]
    return "\n".join(lines)


def compare_markdown(reports: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """Models side by side on the shift suite: per level each model's Dice, drop (+- its 95 %
    interval) and whether the level was inside its training distribution; then the mean drops."""
    first = reports[0]
    head = "| axis | level | " + " | ".join(f"{lb}: Dice | {lb}: drop | {lb}: training" for lb in labels)
    lines = [head + " | baseline: drop |", "|---|---|" + "---:|---:|---|" * len(labels) + "---:|"]
    for i, level in enumerate(first["levels"]):
        cells = []
        for rep in reports:
            r = rep["levels"][i]
            assert r["level"] == level["level"], "the reports must run the same levels"
            m = r[rep["segmenters"][0]]
            status = "trained" if r["in_training"] else "held out"
            cells.append(f"{m['dice']:.3f} | {m['drop']:+.3f} +- {m['ci95']:.3f} | {status}")
        base = level["baseline"]["drop"] if "baseline" in level else float("nan")
        lines.append(f"| {level['axis']} | {level['level']} | " + " | ".join(cells) + f" | {base:+.3f} |")
    # The goal compares models on the same levels: the last report's (the candidate's) split into
    # the levels inside its training distribution and the ones held out of it.
    split = [r["in_training"] for r in reports[-1]["levels"]]
    lines += [
        "",
        f"Mean drop over the levels inside / held out of {labels[-1]}'s training ({sum(split)} / "
        f"{len(split) - sum(split)} levels):",
        "",
        "| model | inside | held out | all levels |",
        "|---|---:|---:|---:|",
    ]

    def mean(x: np.ndarray) -> str:
        return f"{x.mean():+.4f}" if len(x) else "–"

    inside = np.array(split, dtype=bool)
    for rep, lb in zip(reports, labels, strict=True):
        drops = np.array([r[rep["segmenters"][0]]["drop"] for r in rep["levels"]])
        lines.append(f"| {lb} | {mean(drops[inside])} | {mean(drops[~inside])} | {mean(drops)} |")
    return "\n".join(lines) + "\n"


def plot_shift(reports: Sequence[dict[str, Any]], path: Path, labels: Sequence[str] | None = None) -> Path:
    """Horizontal bars of the Dice drop per level, grouped by axis: one bar per report (e.g. v1 and
    v2 side by side) for its first segmenter, plus the baseline of the first report; the levels
    held out of the last report's training have red labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = reports[-1]["levels"]  # the candidate's: its training decides what counts as held out
    series: list[tuple[str, list[dict[str, Any]], str]] = []
    for i, rep in enumerate(reports):
        name = rep["segmenters"][0]
        series.append(((labels[i] if labels else name), [r[name] for r in rep["levels"]], f"C{i}"))
    if "baseline" in reports[0]["segmenters"][1:]:  # beside a model (a baseline-only run shows it once)
        series.append(("classical baseline", [r["baseline"] for r in reports[0]["levels"]], "0.6"))
    k = len(series)
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(levels) * max(k, 2) / 2 + 1.5))
    y = np.arange(len(levels))[::-1] * (k + 1) * 0.3
    for j, (label, vals, colour) in enumerate(series):
        drops = np.array([v["drop"] for v in vals])
        err = np.array([v["ci95"] for v in vals])
        ax.barh(y - j * 0.3, drops, height=0.28, color=colour, xerr=err, error_kw={"lw": 0.6}, label=label)
    ax.set_yticks(y - (k - 1) * 0.15)
    ax.set_yticklabels(
        [f"{r['axis']}: {r['level']}" + ("" if r["in_training"] else "  [held out]") for r in levels], fontsize=7
    )
    for tick, r in zip(ax.get_yticklabels(), levels, strict=True):
        if not r["in_training"]:
            tick.set_color("firebrick")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("Dice drop against in-distribution (same cases)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Shift suite: one generator axis moved at a time (red labels: held out of training)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_gallery(items: list[tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]]], path: Path) -> Path:
    """One sample per level, with the truth (green) and the model's prediction (red) outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dotseg.plots import overlay

    cols = 6
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(items):
            ax.axis("off")
            continue
        label, (image, truth, pred, caption) = items[i]
        ax.imshow(overlay(image, truth, pred), interpolation="nearest")
        ax.set_xlabel(f"{label}\n{caption}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
