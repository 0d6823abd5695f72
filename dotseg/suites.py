"""The suites of ``dotseg evaluate`` by name: which images, which segmenters, which report.

Above both :mod:`dotseg.evaluation` (the benchmark set, the stratified suite, the report) and
:mod:`dotseg.shift` (built on it), so that neither imports the other back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dotseg.baseline.config import BaselineConfig
from dotseg.evaluation import EVAL_SEED, run_evaluation, stratified_cases
from dotseg.inference.segmenter import Segmenter
from dotseg.shift import run_shift
from dotseg.synthesis import SynthesisConfig

#: The report suites of ``dotseg evaluate --suite``.
SUITES = ("standard", "stratified", "shift")
#: Default image counts: in all, per SNR bin, per shift level.
SUITE_N = {"standard": 1000, "stratified": 150, "shift": 150}


def evaluate(
    checkpoint: str | Path | None,
    n: int,
    out_dir: Path,
    *,
    suite: str = "standard",
    baseline: BaselineConfig | None = None,
    baseline_only: bool = False,
    size: int | None = None,
    seed: int = EVAL_SEED,
    tolerance: float = 2.0,
    threads: int | None = None,
    progress: bool = True,
    synthesis: SynthesisConfig | None = None,
) -> dict[str, Any]:
    """``dotseg evaluate``: a checkpoint (None: the shipped model) and the classical baseline on one
    of the :data:`SUITES`, written to ``out_dir``; ``baseline_only`` evaluates the baseline alone.

    ``standard``: ``n`` images of the benchmark. ``stratified``: ``n`` images in *every* SNR bin
    (the < 0 dB bin included). ``shift``: ``n`` images per level of :mod:`dotseg.shift`.

    The images come from the project's benchmark generator, the seed's, at the model's image size
    (``size`` overrides it); ``synthesis`` replaces that generator (the CLI passes the one of
    ``--config`` / ``--set`` when the user gives them). The model's own training generator may be
    wider (domain randomization): the benchmark stays the same for every model.

    Raises :class:`~dotseg.checkpoint.CheckpointError` for an unusable checkpoint.
    """
    from dotseg.baseline import ClassicalBaseline

    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    segmenters: list[Segmenter] = []
    about: dict[str, Any] = {}
    trained: SynthesisConfig | None = None
    bench = synthesis or SynthesisConfig()
    if not baseline_only:
        from dotseg.inference.predictor import Predictor

        # fp32: the benchmark measures the model itself (a gated reduced precision is within 0.002 of it)
        model = Predictor.from_checkpoint(checkpoint, threads=threads, precision="fp32")
        segmenters.append(model)
        trained = model.synthesis
        if synthesis is None:
            bench = bench.replace(size=trained.size)
        assert model.checkpoint is not None
        about = {**model.checkpoint.about(), "parameters": sum(p.numel() for p in model.model.parameters())}
        if checkpoint is None:
            about["checkpoint"] = "shipped model"
    segmenters.append(ClassicalBaseline(baseline))
    if size is not None:
        bench = bench.replace(size=size)
    if suite == "shift":
        return run_shift(
            segmenters, bench, trained, n, out_dir, seed=seed, tolerance=tolerance, progress=progress, about=about
        )
    cases = stratified_cases(bench, n, seed) if suite == "stratified" else None
    return run_evaluation(
        segmenters,
        bench,
        n,
        out_dir,
        seed=seed,
        tolerance=tolerance,
        progress=progress,
        about=about,
        cases=cases,
        suite=suite,
    )
