"""`dotseg evaluate`: the stratified benchmark set, the report's structure, the plots, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

from dotseg.evaluation import DOT_BINS, KINDS, SNR_BINS, benchmark_cases, snr_bin


def test_benchmark_set_covers_every_kind_across_severity() -> None:
    cases = benchmark_cases(60)
    assert {c.kind for c in cases} == set(KINDS)
    for kind in KINDS[1:]:
        sev = sorted(c.severity for c in cases if c.kind == kind)
        assert sev[0] == 0.0 and sev[-1] == 1.0
    assert any(c.noise_types and len(c.noise_types) == 3 for c in cases if c.kind == "mixed")
    assert benchmark_cases(60) == cases  # fixed
    assert snr_bin(35) == "> 30 dB" and snr_bin(-3) == "< 0 dB" and snr_bin(float("inf")) == "clean"
    assert snr_bin(10.0) == "10-20 dB"


def strict_json(text: str) -> Any:
    """``json.loads`` that rejects the non-standard NaN / Infinity / -Infinity tokens."""

    def reject(token: str) -> NoReturn:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=reject)


def test_evaluate_cli_writes_report_tables_and_plots(cli, tmp_path: Path) -> None:
    from dotseg.checkpoint import save_checkpoint
    from dotseg.config import load_config
    from dotseg.models import build_model

    cfg = load_config("smoke", ["synthesis.size=96"])
    ckpt = save_checkpoint(tmp_path / "m.safetensors", build_model(cfg.model), cfg, threshold=0.5, metrics={}, epoch=1)
    out = cli(
        "evaluate", "--checkpoint", str(ckpt), "--n", "14", "--out", str(tmp_path / "ev"), "--quiet", "--threads", "1"
    )
    assert out.returncode == 0, out.stderr
    assert "overall" in out.stdout and "report.md" in out.stdout
    report = strict_json((tmp_path / "ev" / "report.json").read_text())
    assert report["segmenters"] == ["model", "baseline"]
    # A clean image's SNR is infinite: the string "inf" in strict JSON.
    assert {r["snr_db"] for r in report["samples"] if r["kind"] == "clean"} == {"inf"}
    assert report["benchmark"]["n"] == 14 and report["benchmark"]["size"] == 96
    assert set(report["by_snr_bin"]) == {b[0] for b in SNR_BINS}
    assert set(report["by_noise"]) == set(KINDS)
    assert set(report["by_dots"]) == set(report["clean_by_dots"]) == {b[0] for b in DOT_BINS}
    assert len(report["samples"]) == 28
    for name in ("model", "baseline"):
        o = report["overall"][name]
        assert o["n"] == 14 and 0.0 <= o["dice"] <= 1.0 and o["hd95"] >= 0.0
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "## By SNR bin" in md and "Dice (model)" in md and "Dice (baseline)" in md
    for png in ("dice_vs_snr.png", "worst_model.png", "worst_baseline.png"):
        assert (tmp_path / "ev" / png).stat().st_size > 1000


def test_evaluate_errors_are_one_line(cli, tmp_path: Path) -> None:
    bad = tmp_path / "x.safetensors"
    bad.write_text("<html><body>not found</body></html>")
    out = cli("evaluate", "--checkpoint", str(bad), "--n", "2")
    assert out.returncode == 2 and "HTML page" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = cli("evaluate", "--baseline", "--n", "0")
    assert out.returncode == 2 and "argument --n: must be >= 1, got 0" in out.stderr


def test_evaluate_logs_tables_goals_and_plots_to_a_wandb_offline_run(tmp_path: Path) -> None:
    from dotseg.checkpoint import save_checkpoint
    from dotseg.config import load_config
    from dotseg.models import build_model
    from wandb_log import wandb_records, wandb_summary

    cfg = load_config("smoke", ["synthesis.size=64"])
    ckpt = save_checkpoint(tmp_path / "m.safetensors", build_model(cfg.model), cfg, threshold=0.5, metrics={}, epoch=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # the default: offline
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dotseg.cli",
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--n",
            "7",
            "--out",
            str(tmp_path / "ev"),
            "--quiet",
            "--wandb",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    runs, rows, config = wandb_records(tmp_path / "ev")
    assert len(runs) == 1 and config["n"] == 7 and config["size"] == 64
    assert config["model"]["epoch"] == 1 and config["model"]["config_hash"] == cfg.hash
    (row,) = rows  # tables, goals and plots in one step
    for table in ("by_snr_bin", "by_noise", "by_dots", "goals"):
        assert row[f"{table}._type"] == "table-file"
    for image in ("dice_vs_snr", "worst_model", "worst_baseline"):
        assert row[f"{image}._type"] == "image-file"
    summary = wandb_summary(tmp_path / "ev")
    report = strict_json((tmp_path / "ev" / "report.json").read_text())
    assert summary["baseline/dice"] == report["overall"]["baseline"]["dice"] and summary["model/n"] == 7
