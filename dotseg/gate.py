"""The precision gate's run: the standard benchmark through every installed engine in fp32 and in
each reduced precision this CPU computes natively, judged by Dice against the truth and recorded
for Predictors (:mod:`dotseg.inference.precision` says what passes and how the record is used).

    dotseg evaluate --gate [--checkpoint C] [--threads 1] [--n 1000]
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dotseg.evaluation import SNR_BINS, benchmark_cases, snr_bin
from dotseg.files import write_atomic
from dotseg.inference.precision import (
    DICE_TOLERANCE,
    GATE_N,
    MASK_AGREEMENT,
    RECORD_VERSION,
    REDUCED,
    _versions,
    cpu_key,
    record_path,
)
from dotseg.storage import one_line

log = logging.getLogger(__name__)


@dataclass
class _Stats:
    """One (engine, precision) pair's running numbers over the gate's images."""

    engine: str
    precision: str
    dice: list[tuple[str, float]]
    agreement: list[float]
    seconds: list[float]


def _mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def run_gate(
    checkpoint: str | Path | None,
    *,
    n: int = GATE_N,
    threads: int = 1,
    engines_to_try: tuple[str, ...] | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
    record: bool = True,
) -> dict[str, Any]:
    """Run the gate for ``checkpoint`` (None: the shipped model) and record the verdict.

    ``engines_to_try``: the engines to gate (default: every installed one that can run a reduced
    precision here). Returns the record (also written to ``out_dir`` as gate.json / gate.md); it is
    recorded for Predictors only when ``n`` is at least :data:`GATE_N`.
    """
    from tqdm import tqdm

    from dotseg.inference import engines as eng
    from dotseg.inference.predictor import Predictor
    from dotseg.metrics import segmentation_metrics
    from dotseg.synthesis import SynthesisConfig

    base = Predictor.from_checkpoint(checkpoint, threads=threads, engine="eager", precision="fp32")
    device = base.device
    names = engines_to_try or tuple(e for e in eng.ENGINES if eng.installed(e))
    pairs: list[tuple[str, str]] = []
    skipped: list[dict[str, str]] = []
    for e in names:
        pairs.append((e, "fp32"))
        for p in REDUCED:
            problem = eng.precision_problem(e, p, device)
            if problem is None:
                pairs.append((e, p))
            elif p in eng.ENGINES[e].precisions:
                skipped.append({"engine": e, "precision": p, "why": problem})
    predictors = {}
    for pair in pairs:
        try:
            predictors[pair] = (
                base
                if pair == ("eager", "fp32")
                else Predictor.from_checkpoint(
                    checkpoint, threads=threads, engine=pair[0], precision=pair[1], require_gate=False
                )
            )
        except Exception as exc:  # an engine that cannot run this pair is a row of the table, not the end of the gate
            if pair[1] == "fp32":
                raise
            skipped.append({"engine": pair[0], "precision": pair[1], "why": one_line(exc)})
    pairs = list(predictors)
    stats = {pair: _Stats(*pair, [], [], []) for pair in pairs}
    bench = SynthesisConfig(size=base.contract.input_size)
    for pred in predictors.values():  # first calls compile shapes and fill caches: not timed
        pred.predict(np.zeros((bench.size, bench.size), np.float32))
    for case in tqdm(benchmark_cases(n), desc="precision gate", unit="image", disable=not progress):
        s = case.sample(bench)
        truth = s.mask.astype(bool)
        label = snr_bin(s.snr_db)
        masks: dict[tuple[str, str], np.ndarray] = {}
        for pair, pred in predictors.items():
            t0 = time.perf_counter()
            mask = pred.predict(s.image).mask
            stats[pair].seconds.append(time.perf_counter() - t0)
            masks[pair] = mask
            stats[pair].dice.append((label, float(segmentation_metrics(mask, truth)["dice"])))
        for (e, p), mask in masks.items():
            stats[(e, p)].agreement.append(_mask_dice(mask, masks[(e, "fp32")]))
    result = _verdict(stats, base, threads, n, skipped)
    if record and n >= GATE_N:  # a smaller run is a preview: it never lets a precision in
        assert base.checkpoint is not None
        path = record_path(eng.cache_dir(base.checkpoint.path, packaged=base.packaged), base.checkpoint.model_id)
        write_atomic(path, json.dumps(result, indent=1))
        result["record"] = str(path)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "gate.json", json.dumps(result, indent=1))
        write_atomic(out_dir / "gate.md", "\n".join(gate_lines(result)) + "\n")
    return result


def _verdict(
    stats: dict[tuple[str, str], _Stats], base: Any, threads: int, n: int, skipped: list[dict[str, str]]
) -> dict[str, Any]:
    from dotseg.device import cpu_info

    def by_bin(s: _Stats) -> dict[str, float]:
        out = {"overall": float(np.mean([d for _, d in s.dice]))}
        for label, *_ in SNR_BINS:
            vals = [d for b, d in s.dice if b == label]
            if vals:
                out[label] = float(np.mean(vals))
        return out

    eager_ms = 1000 * float(np.median(stats[("eager", "fp32")].seconds))
    rows = []
    for (e, p), s in stats.items():
        ms = 1000 * float(np.median(s.seconds))
        fp32 = stats[(e, "fp32")]
        dice, ref = by_bin(s), by_bin(fp32)
        worst = min((dice[k] - ref[k], k) for k in ref)
        agreement = float(min(s.agreement))
        reasons = []
        if worst[0] < -DICE_TOLERANCE:
            reasons.append(f"Dice {worst[0]:+.4f} in {worst[1]} (tolerance {DICE_TOLERANCE})")
        if agreement < MASK_AGREEMENT:
            below = sum(a < MASK_AGREEMENT for a in s.agreement)
            reasons.append(f"{below} image(s) with mask agreement below {MASK_AGREEMENT} (min {agreement:.4f})")
        rows.append(
            {
                "engine": e,
                "precision": p,
                "passed": p == "fp32" or not reasons,
                "reasons": reasons,
                "dice": dice,
                "dice_fp32": ref,
                "agreement_min": agreement,
                "agreement_mean": float(np.mean(s.agreement)),
                "ms": ms,
                "fp32_ms": 1000 * float(np.median(fp32.seconds)),
                "x_eager": eager_ms / ms,
            }
        )
    name, features = cpu_info()
    model = base.checkpoint.about() if base.checkpoint is not None else {}
    return {
        "version": RECORD_VERSION,
        "model_id": base.checkpoint.model_id if base.checkpoint is not None else "",
        "model": model,
        "cpu": name,
        "cpu_features": list(features),
        "cpu_key": cpu_key(),
        "packages": _versions(),
        "threads": threads,
        "n": n,
        "rule": {"dice_tolerance": DICE_TOLERANCE, "mask_agreement": MASK_AGREEMENT},
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": rows,
        "not_run": skipped,
    }


def gate_lines(result: dict[str, Any]) -> list[str]:
    """The gate's table (Markdown)."""

    bins = ["overall", *(label for label, *_ in SNR_BINS)]
    lines = [
        f"Precision gate, {result['created']}: {result['n']} benchmark images, {result['threads']} thread(s), "
        f"model {result['model_id']}; "
        f"CPU {result['cpu']} ({', '.join(result['cpu_features']) or 'no listed features'}); "
        f"{', '.join(f'{k} {v}' for k, v in result['packages'].items())}. Rule: Dice against the truth within "
        f"{result['rule']['dice_tolerance']} of fp32 overall and per SNR bin, every image's mask Dice against "
        f"fp32 >= {result['rule']['mask_agreement']}.",
        "",
        "| engine | precision | "
        + " | ".join(f"Dice {b}" for b in bins)
        + " | mask agreement min / mean | ms / image | x eager fp32 | verdict |",
        "|---|---|" + "---:|" * len(bins) + "---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        cells = " | ".join(
            f"{r['dice'][b]:.4f}" + ("" if r["precision"] == "fp32" else f" ({r['dice'][b] - r['dice_fp32'][b]:+.4f})")
            if b in r["dice"]
            else "-"
            for b in bins
        )
        verdict = (
            "reference"
            if r["precision"] == "fp32"
            else ("**passed**" if r["passed"] else "refused: " + "; ".join(r["reasons"]))
        )
        lines.append(
            f"| {r['engine']} | {r['precision']} | {cells} | {r['agreement_min']:.4f} / {r['agreement_mean']:.4f} "
            f"| {r['ms']:.1f} | {r['x_eager']:.2f}x | {verdict} |"
        )
    for s in result.get("not_run", []):
        lines.append(f"| {s['engine']} | {s['precision']} | not run: {s['why']} |")
    return lines
