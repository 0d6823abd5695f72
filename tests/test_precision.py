"""The precision gate (issue 18): reduced precision runs only where a gate on Dice against the truth
passed for this model on this CPU, and ``precision: fp32`` always pins exact arithmetic.

The gate itself runs on the shipped model over a few benchmark images (a preview, which never
records); the record-driven choice is tested with records written the way the gate writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dotseg import gate
from dotseg.checkpoint import read_meta
from dotseg.cli import main
from dotseg.device import native_bf16
from dotseg.inference import engines, precision
from dotseg.inference.predictor import Predictor, shipped_checkpoint

SHIPPED_ID = read_meta(shipped_checkpoint()).model_id  # the default shipped model (v2)
bf16_native = pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 / AMX)")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user cache dir: the shipped model's exports and gate records go there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "dotseg"


@pytest.fixture(scope="module")
def _exports_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg")


@pytest.fixture
def exports(_exports_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user cache dir that this module's exporting tests share, and no other: the shipped model's
    ONNX export and its int8 quantization (~15 s each) are made once for them, never by a record."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(_exports_dir))
    return _exports_dir / "dotseg"


def _record(cache: Path, rows: list[dict], **extra: object) -> Path:
    """A gate record for the shipped model on this CPU, as run_gate writes it."""
    row_defaults = {"reasons": [], "dice": {}, "dice_fp32": {}, "agreement_min": 1.0, "agreement_mean": 1.0}
    record = {
        "version": precision.RECORD_VERSION,
        "model_id": SHIPPED_ID,
        "packages": precision._versions(),
        "rows": [{**row_defaults, **r} for r in rows],
        **extra,
    }
    path = precision.record_path(cache, SHIPPED_ID)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


FP32 = {"engine": "eager", "precision": "fp32", "passed": True, "ms": 50.0, "fp32_ms": 50.0}
BF16 = {"engine": "eager", "precision": "bf16", "passed": True, "ms": 30.0, "fp32_ms": 50.0}


def test_choose_follows_the_record() -> None:
    record = {"rows": [FP32, BF16]}
    assert precision.choose(record, "eager", "fp32", False) == ("eager", "fp32")
    assert precision.choose(record, "eager", "auto", False) == ("eager", "bf16")
    assert precision.choose(None, "openvino", "auto", False) == ("openvino", "fp32")
    # a passed pair slower than the engine's own fp32 is not taken
    ov = {"engine": "openvino", "precision": "fp32", "passed": True, "ms": 20.0, "fp32_ms": 20.0}
    assert precision.choose({"rows": [FP32, BF16, ov]}, "openvino", "auto", False) == ("openvino", "fp32")
    # a named engine keeps its engine
    assert precision.choose(record, "openvino", "auto", True) == ("openvino", "fp32")
    refused = {"rows": [FP32, {**BF16, "passed": False}]}
    assert precision.choose(refused, "eager", "auto", False) == ("eager", "fp32")
    with pytest.raises(ValueError, match=r"has not passed the precision gate.*dotseg evaluate --gate"):
        precision.choose(refused, "eager", "bf16", False)


def test_no_record_means_fp32_and_bf16_is_refused(cache: Path) -> None:
    p = Predictor.from_checkpoint(None, threads=1, engine="eager")
    assert p.precision == "fp32"
    with pytest.raises(ValueError, match="has not passed the precision gate"):
        Predictor.from_checkpoint(None, threads=1, engine="eager", precision="bf16")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Predictor.from_checkpoint(None, threads=1, engine="eager", precision="fp8")


@bf16_native
def test_a_passed_record_is_used_and_fp32_pins(cache: Path) -> None:
    _record(cache, [FP32, BF16])
    assert Predictor.from_checkpoint(None, threads=1, engine="eager").precision == "bf16"
    assert Predictor.from_checkpoint(None, threads=1, engine="eager", precision="bf16").precision == "bf16"
    exact = Predictor.from_checkpoint(None, threads=1, engine="eager", precision="fp32")
    assert exact.precision == "fp32"


@bf16_native
def test_stale_or_cut_records_are_ignored(cache: Path) -> None:
    path = _record(cache, [FP32, BF16], packages={"torch": "0.0.1"})
    assert Predictor.from_checkpoint(None, threads=1, engine="eager").precision == "fp32"
    path.write_text(path.read_text()[:40])  # a kill mid-write of an older dotseg
    assert Predictor.from_checkpoint(None, threads=1, engine="eager").precision == "fp32"
    # a record of another CPU lives under another name and is never read here
    other = path.with_name(f"{SHIPPED_ID}.gate-0000000000.json")
    other.write_text(
        json.dumps({"version": 1, "model_id": SHIPPED_ID, "packages": precision._versions(), "rows": [BF16]})
    )
    path.unlink()
    assert Predictor.from_checkpoint(None, threads=1, engine="eager").precision == "fp32"


@pytest.mark.skipif(native_bf16(), reason="this CPU computes bf16 natively")
def test_bf16_is_refused_where_it_would_be_emulated() -> None:
    problem = engines.precision_problem("eager", "bf16", Predictor.from_checkpoint(None, engine="eager").device)
    assert problem and "natively" in problem


def test_gate_preview_compares_and_does_not_record(
    exports: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "gate"
    rc = main(["evaluate", "--gate", "--n", "6", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    result = json.loads((out / "gate.json").read_text())
    pairs = {(r["engine"], r["precision"]) for r in result["rows"]}
    assert ("eager", "fp32") in pairs
    assert result["cpu"] and result["n"] == 6 and result["model_id"] == SHIPPED_ID
    for r in result["rows"]:
        assert set(r["dice"]) >= {"overall"} and 0.0 < r["dice"]["overall"] <= 1.0
        if r["precision"] == "fp32":
            assert r["agreement_min"] == 1.0
    if engines.installed("openvino") and engines.precision_problem("openvino", "int8", torch.device("cpu")) is None:
        int8 = next(r for r in result["rows"] if (r["engine"], r["precision"]) == ("openvino", "int8"))
        assert int8["agreement_min"] > 0.9  # quantized, not broken
    if native_bf16():
        assert ("eager", "bf16") in pairs
        bf16 = next(r for r in result["rows"] if r["precision"] == "bf16")
        assert bf16["agreement_min"] > 0.9  # the same model, a little rounding
    else:
        assert any(s["precision"] == "bf16" for s in result["not_run"])
    assert "not recorded" in text and "| eager | fp32 |" in text
    assert not precision.record_path(exports, SHIPPED_ID).exists()
    assert (out / "gate.md").read_text().startswith("Precision gate")


def test_the_gate_verdict_applies_the_rule() -> None:
    """A precision that changes one image's mask is refused even with equal Dice on average."""

    class _P:
        checkpoint = None

    labels = ["clean", "> 30 dB"]
    s32 = gate._Stats("eager", "fp32", [(lbl, 0.9) for lbl in labels], [1.0, 1.0], [0.05, 0.05])
    good = gate._Stats("eager", "bf16", [(lbl, 0.9) for lbl in labels], [0.999, 0.995], [0.03, 0.03])
    cut = gate._Stats("eager", "bf16", [("clean", 0.9), ("> 30 dB", 0.897)], [1.0, 1.0], [0.03, 0.03])
    flip = gate._Stats("eager", "bf16", [(lbl, 0.9) for lbl in labels], [1.0, 0.95], [0.03, 0.03])
    for stats, passed, why in ((good, True, ""), (cut, False, "Dice -0.0030 in > 30 dB"), (flip, False, "1 image(s)")):
        result = gate._verdict({("eager", "fp32"): s32, ("eager", "bf16"): stats}, _P(), 1, 2, [])
        row = next(r for r in result["rows"] if r["precision"] == "bf16")
        assert row["passed"] is passed and why in "; ".join(row["reasons"])
        assert row["x_eager"] == pytest.approx(50 / 30)


def test_shipped_record_lives_in_the_user_cache(cache: Path) -> None:
    """The shipped model's directory may be read-only: its exports and records go to the user cache."""
    dirs = engines.cache_dirs(shipped_checkpoint(), packaged=True)
    assert dirs == [cache]


def test_serve_refuses_an_ungated_precision_before_starting(cache: Path) -> None:
    """`dotseg serve --set serve.precision=bf16` without a passed gate: one line on the driver, no
    replica started to fail."""
    from dotseg.serving import run

    with pytest.raises(run.ServeError, match=r"serve\.precision=bf16: it has not passed the precision gate"):
        run.check_checkpoint(None, "bf16", local=True)
    run.check_checkpoint(None, "auto", local=True)  # auto and fp32 always start
    run.check_checkpoint(None, "bf16", local=False)  # a cluster's replicas judge on their own CPU


def test_int8_is_quantized_once_from_the_models_own_inputs_and_only_a_gate_lets_it_in(exports: Path) -> None:
    """OpenVINO int8: NNCF post-training quantization on images of the model's training
    distribution, cached beside the export (the weights written before the graph that names them),
    reused at the next start; refused without a passed gate like bf16."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from dotseg.synthesis import make_sample

    with pytest.raises(ValueError, match="has not passed the precision gate"):
        Predictor.from_checkpoint(None, threads=1, engine="openvino", precision="int8")
    p8 = Predictor.from_checkpoint(None, threads=1, engine="openvino", precision="int8", require_gate=False)
    assert (p8.engine, p8.precision) == ("openvino", "int8")
    (xml,) = exports.glob(f"{engines.export_path(exports, SHIPPED_ID).stem}.int8-nncf*.xml")
    assert xml.with_suffix(".bin").is_file() and not list(exports.glob(".*.tmp*"))
    exact = Predictor.from_checkpoint(None, threads=1, engine="openvino", precision="fp32")
    image = make_sample(p8.synthesis, 5, 3).image
    a, b = p8.predict(image).mask, exact.predict(image).mask
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9  # close to fp32; how close is the gate's call
    stamp = xml.stat().st_mtime_ns
    Predictor.from_checkpoint(None, threads=1, engine="openvino", precision="int8", require_gate=False)
    assert xml.stat().st_mtime_ns == stamp  # read from the cache, not quantized again
    xml.with_suffix(".bin").unlink()  # a cache cut short: quantized again, not served
    again = Predictor.from_checkpoint(None, threads=1, engine="openvino", precision="int8", require_gate=False)
    assert xml.with_suffix(".bin").is_file() and np.array_equal(again.predict(image).mask, a)
