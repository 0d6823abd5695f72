"""The models shipped inside the package: the default (v2) and v1 by name load, each is the one its
committed report describes, its config reproduces its settings, and the default works out of the
box (predict, evaluate)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from PIL import Image

from dotseg.config import load_config
from dotseg.configbase import diff_keys
from dotseg.evaluation import KINDS, SNR_BINS
from dotseg.inference.predictor import Predictor, shipped_checkpoint
from dotseg.metrics import segmentation_metrics
from dotseg.synthesis import make_sample

DOCS = Path(__file__).resolve().parents[1] / "docs" / "shipped-model"
#: Each shipped version: its name, file, record directory, the config that reproduces it, its model id.
VERSIONS = {
    "v1": ("shipped-v1", "model.safetensors", DOCS, "cpu", "a78329d38a86"),
    "v2": ("shipped-v2", "model-v2.safetensors", DOCS / "v2", "v2-mix", None),
}


@pytest.fixture(scope="module", params=sorted(VERSIONS))
def version(request: pytest.FixtureRequest) -> tuple[str, Predictor]:
    # Eager, not the default engine ("auto": OpenVINO or ONNX Runtime when installed): the recorded masks are
    # eager's, bit for bit; tests/test_engines.py holds every other engine to eager's masks.
    return request.param, Predictor.from_checkpoint(VERSIONS[request.param][0], threads=1, engine="eager")


def test_shipped_models_are_installed_small_and_load(version: tuple[str, Predictor]) -> None:
    name, shipped = version
    asset = resources.files("dotseg").joinpath("assets", VERSIONS[name][1])
    assert asset.is_file() and shipped_checkpoint(VERSIONS[name][0]) == Path(str(asset))
    assert Path(str(asset)).stat().st_size <= 25 * 1024 * 1024
    assert shipped.contract.model.variant == "attention_unet" and shipped.contract.input_size == 512
    assert shipped.checkpoint is not None
    assert shipped.checkpoint.meta.format_version == (1 if name == "v1" else 2)  # v1's file is never converted
    assert 0.0 < shipped.threshold < 1.0


def test_the_default_is_v2_and_v1_stays_loadable_by_name() -> None:
    from dotseg.checkpoint import read_meta

    assert shipped_checkpoint() == shipped_checkpoint("shipped-v2") != shipped_checkpoint("shipped-v1")
    v1, v2 = read_meta(shipped_checkpoint("shipped-v1")), read_meta(shipped_checkpoint())
    assert v1.model_id == "a78329d38a86" and v2.model_id != v1.model_id
    assert v2.provenance.config["train"]["init"] == "shipped-v1"  # v2 is v1 trained on, on a wider generator


def _reject(token: str) -> NoReturn:
    raise ValueError(f"not strict JSON: {token}")


def test_shipped_models_match_their_records_and_reports(version: tuple[str, Predictor]) -> None:
    name, shipped = version
    docs = VERSIONS[name][2]
    record = json.loads((docs / "training.json").read_text())
    standard = docs / ("standard" if name != "v1" else "")
    report = json.loads((standard / "report.json").read_text(), parse_constant=_reject)  # strict JSON
    ckpt = shipped.checkpoint
    assert ckpt is not None
    assert record["config_hash"] == ckpt.meta.provenance.config_hash == report["about"]["config_hash"]
    assert record["best_epoch"] == ckpt.epoch == report["about"]["epoch"]
    assert report["benchmark"]["n"] >= 1000 and report["benchmark"]["size"] == 512
    assert [g["goal"] for g in report["goals"]] == [
        "overall_dice",
        "clean_dice",
        "overall_iou",
        "beats_baseline",
        "margin_below_10db",
    ]
    assert (docs / "curves.png").stat().st_size > 10_000 and (standard / "dice_vs_snr.png").stat().st_size > 10_000
    assert len(json.loads((docs / "history.json").read_text())) == record["epochs_run"]
    for suite in ("stratified", "shift"):  # the other two suites of the ship gate, of this very model
        about = json.loads((docs / suite / "report.json").read_text(), parse_constant=_reject)["about"]
        assert about["model_id"] == shipped.checkpoint.model_id


def test_the_shipped_configs_reproduce_the_shipped_settings(version: tuple[str, Predictor]) -> None:
    # Only where the run was stored may differ: everything that shapes the model is in the config file.
    # (The sections of other components -- serving, sweeps -- change with dotseg versions.)
    name, shipped = version
    config = load_config(VERSIONS[name][3])
    assert shipped.checkpoint is not None and shipped.checkpoint.cfg is not None
    differ = diff_keys(shipped.checkpoint.cfg, config)
    assert {k for k in differ if k.split(".")[0] not in ("serve", "tune", "data", "baseline")} <= {"train.storage_path"}
    assert shipped.checkpoint.meta.run_id == config.run_id


def test_fresh_install_predicts_a_png_without_training(cli, tmp_path: Path) -> None:
    cfg = load_config("cpu")
    sample = make_sample(cfg.synthesis, seed=7, index=3, noise_scale=0.5)
    grey = np.round(np.clip(sample.image / sample.image.max(), 0, 1) * 255).astype(np.uint8)  # an 8-bit PNG
    Image.fromarray(grey).save(tmp_path / "blob.png")
    out = cli(
        "predict",
        "-i",
        str(tmp_path / "blob.png"),
        "-o",
        str(tmp_path / "out"),
        "--overlay",
        "--quiet",
        "--threads",
        "1",
    )
    assert out.returncode == 0, out.stderr
    mask = np.asarray(Image.open(tmp_path / "out" / "blob_mask.png")) > 127
    assert mask.shape == sample.mask.shape
    assert segmentation_metrics(mask, sample.mask.astype(bool))["dice"] > 0.85
    assert (tmp_path / "out" / "blob_overlay.png").exists()


def test_evaluate_shipped_model_beats_baseline_on_clean_and_mid_snr(cli, tmp_path: Path) -> None:
    n = 48  # 6 of each kind: clean, every noise type across its severity range, mixes
    out = cli("evaluate", "--n", str(n), "--out", str(tmp_path), "--quiet", "--threads", "1")
    assert out.returncode == 0, out.stderr
    assert "goal: overall Dice" in out.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["segmenters"] == ["model", "baseline"] and report["about"]["checkpoint"] == "shipped model"
    assert report["benchmark"]["size"] == 512 and len(report["samples"]) == 2 * n
    assert set(report["by_snr_bin"]) == {b[0] for b in SNR_BINS} and set(report["by_noise"]) == set(KINDS)
    for png in ("dice_vs_snr.png", "worst_model.png", "worst_baseline.png"):
        assert (tmp_path / png).stat().st_size > 1000

    def mean_dice(name: str, lo: float, hi: float) -> tuple[float, int]:
        sel = [
            r["dice"]
            for r in report["samples"]  # clean images have snr_db "inf" (a string in JSON)
            if r["segmenter"] == name and r["kind"] != "clean" and lo <= r["snr_db"] < hi
        ]
        return float(np.mean(sel)), len(sel)

    clean = report["by_snr_bin"]["clean"]
    assert clean["model"]["n"] >= 6 and clean["model"]["dice"] > clean["baseline"]["dice"]
    (model_mid, count), (base_mid, _) = mean_dice("model", 0.0, 20.0), mean_dice("baseline", 0.0, 20.0)
    assert count >= 6 and model_mid > base_mid


def test_v1_predicts_the_masks_it_always_did() -> None:
    """Bit-identical masks on 24 benchmark images (every noise kind, clean to harshest), against the
    masks model v1 predicted before the checkpoint format moved to version 2 (recorded at 1 thread
    in tests/data/shipped_model_masks.npz): reading format 1 changed nothing the model computes, and
    ``--checkpoint shipped-v1`` keeps naming that model whatever the default becomes."""
    from dotseg.evaluation import benchmark_cases

    shipped = Predictor.from_checkpoint("shipped-v1", threads=1, engine="eager")
    assert shipped.checkpoint is not None and shipped.checkpoint.model_id == "a78329d38a86"

    ref = np.load(Path(__file__).parent / "data" / "shipped_model_masks.npz")
    cases = benchmark_cases(len(ref["indices"]))
    assert [c.index for c in cases] == ref["indices"].tolist() and len(cases) >= 20
    for case, packed in zip(cases, ref["masks"], strict=True):
        s = case.sample(shipped.synthesis, 4242)
        mask = shipped.predict(s.image).mask
        expected = np.unpackbits(packed)[: mask.size].reshape(mask.shape).astype(bool)
        assert np.array_equal(mask, expected), f"{case}: {int((mask != expected).sum())} pixels differ"


def test_shipped_names_and_an_unknown_one(cli, tmp_path: Path) -> None:
    from dotseg.checkpoint import CheckpointError
    from dotseg.inference.predictor import SHIPPED_MODELS, resolve_checkpoint

    assert {"shipped", "shipped-v1", "shipped-v2"} <= set(SHIPPED_MODELS)
    for name in SHIPPED_MODELS:
        assert Path(resolve_checkpoint(name)).is_file()
    assert resolve_checkpoint("runs/x/best.safetensors") == "runs/x/best.safetensors"
    with pytest.raises(CheckpointError, match="shipped-v9"):
        Predictor.from_checkpoint("shipped-v9")
    out = cli("evaluate", "--checkpoint", "shipped-v1", "--n", "6", "--out", str(tmp_path), "--quiet", "--threads", "1")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["about"]["model_id"] == "a78329d38a86"
