"""CPU inference engines (dotseg.inference.engines): every installed engine predicts what eager predicts
on the shipped model, the exported model is cached under the model's identity and reused, a missing
package falls back to eager with a notice, and ``dotseg predict --engine`` works.

The shipped model is exported once per module into a temporary ``XDG_CACHE_HOME`` (~15 s on 2 cores);
everything else reuses that file, so only the stale-cache test exports a second (tiny) model.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dotseg.checkpoint import read_meta, save_checkpoint
from dotseg.cli import build_parser
from dotseg.config import Config
from dotseg.evaluation import EVAL_SEED, benchmark_cases
from dotseg.inference import engines
from dotseg.inference.predictor import Predictor, shipped_checkpoint
from dotseg.models import build_model
from dotseg.synthesis import make_sample

EXPORTED = [name for name in engines.ENGINES if name != "eager" and engines._missing(engines.ENGINES[name]) is None]
pytestmark = pytest.mark.skipif(not EXPORTED, reason=f"no exported engine installed ({engines.INSTALL_HINT})")
#: The shipped model's identity, the key of its cached export.
SHIPPED_ID = read_meta(shipped_checkpoint()).model_id  # the default shipped model (v2)


@pytest.fixture(scope="module")
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private ``XDG_CACHE_HOME`` for the module: the shipped model's export lands in ``<it>/dotseg``."""
    root = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root))
        yield root / "dotseg"


@pytest.fixture(scope="module")
def eager(user_cache: Path) -> Predictor:
    return Predictor.from_checkpoint(None, threads=1, engine="eager")


@pytest.fixture(scope="module")
def fast(user_cache: Path) -> dict[str, Predictor]:
    """One predictor per installed exported engine on the shipped model (the first one exports)."""
    return {name: Predictor.from_checkpoint(None, threads=1, engine=name) for name in EXPORTED}


@pytest.fixture(scope="module")
def images(eager: Predictor) -> list[np.ndarray]:
    """8 evaluation images at 512 px (every noise kind), then odd sizes."""
    cases = benchmark_cases(8)
    full = [c.sample(eager.synthesis).image for c in cases]
    return [*full, full[1][:301, :457].copy(), full[2][:64, :64].copy(), full[3][100:105, 7:14].copy()]


def _assert_agree(got: list, expected: list) -> None:
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.prob.dtype == np.float32 and g.prob.shape == e.prob.shape
        diff = float(np.abs(g.prob - e.prob).max())
        assert diff <= engines.PROBE_TOLERANCE, f"image {i} {e.prob.shape}: max |Δprob| {diff:.2g}"
        assert np.array_equal(g.mask, e.mask), f"image {i} {e.prob.shape}: {int((g.mask != e.mask).sum())} px differ"


@pytest.mark.parametrize("name", EXPORTED)
def test_engine_matches_eager_on_the_shipped_model(
    name: str, fast: dict[str, Predictor], eager: Predictor, images: list[np.ndarray]
) -> None:
    predictor = fast[name]
    assert predictor.engine == name and predictor.threshold == eager.threshold
    expected = [eager.predict(im) for im in images]
    _assert_agree(predictor.predict_batch(images[:8], batch_size=8), expected[:8])  # one batch of 8 at 512 px
    _assert_agree([predictor.predict(im) for im in images[8:]], expected[8:])  # 301x457, 64x64, 5x7
    # A batch of mixed sizes comes back in input order.
    order = [8, 0, 9, 1, 10, 8]
    _assert_agree(predictor.predict_batch([images[i] for i in order]), [expected[i] for i in order])
    for _ in range(engines.OPENVINO_PROMOTE_AT):  # a recurring shape (OpenVINO: compiled for it on the 3rd)
        _assert_agree(predictor.predict_batch(images[4:6]), expected[4:6])


def test_openvino_compiles_an_image_size_once_for_every_batch_size(
    fast: dict[str, Predictor], eager: Predictor, images: list[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18: a replica's batches come in every size from 1 to max_batch_size. A model compiled
    per (batch, H, W) with 4 kept thrashed under load (random batch sizes ran 1.8x slower per image
    than one size); now an image size that recurs is compiled once with a dynamic batch, and once
    more for single images (the latency case, 6-9 % faster fully static)."""
    if "openvino" not in fast:
        pytest.skip("OpenVINO is not installed")
    predictor = Predictor.from_checkpoint(None, threads=1, engine="openvino")
    crops = [im[:160, :96].copy() for im in images[:8]]  # a size no other test compiles
    expected = [eager.predict(c) for c in crops]
    caplog.set_level(logging.DEBUG, logger="dotseg.inference.engines")
    for _ in range(engines.OPENVINO_PROMOTE_AT):
        for b in (1, 3, 8, 2, 5):
            _assert_agree(predictor.predict_batch(crops[:b], batch_size=8), expected[:b])
    compiled = [r for r in caplog.records if "compiled a model for" in r.getMessage()]
    # 160x96 runs padded to the network's size multiple (64 px): one size, two models, 15 batches.
    assert [r.getMessage() for r in compiled] == [
        "OpenVINO: compiled a model for any batch of 1x192x128 inputs",  # on the 3rd batch above 1
        "OpenVINO: compiled a model for single 1x192x128 inputs",  # on the 3rd single image
    ]


def test_openvino_leaves_threads_unpinned_unless_one_process_takes_every_core(
    fast: dict[str, Predictor], user_cache: Path
) -> None:
    """Issue 18: OpenVINO pins its threads to the first cores, so two 1-thread replicas (or Ray Data
    actors) on 2 cores shared core 0: each ran 2.2x slower than alone (benchmarks/serve.py)."""
    if "openvino" not in fast:
        pytest.skip("OpenVINO is not installed")
    import openvino as ov

    cores = len(os.sched_getaffinity(0))
    assert engines.openvino_config("fp32", 1)["ENABLE_CPU_PINNING"] is (cores <= 1)
    assert engines.openvino_config("bf16", cores)["ENABLE_CPU_PINNING"] is True
    core = ov.Core()
    model = core.read_model(str(engines.export_path(user_cache, SHIPPED_ID)))
    compiled = core.compile_model(model, "CPU", engines.openvino_config("fp32", 1))
    assert compiled.get_property("ENABLE_CPU_PINNING") is (cores <= 1)  # what the replicas' models run with


def test_the_export_stops_at_the_coarse_logits_and_torch_upsamples(
    eager: Predictor, fast: dict[str, Predictor], user_cache: Path
) -> None:
    """The shipped model runs at 1/4 of the input inside: its exported graph returns the 128x128
    logits of a 512x512 image, and the engine upsamples them in torch (OpenVINO's Interpolate of
    the one-channel map was a fifth of its bf16 pass)."""
    ov = pytest.importorskip("openvino")
    model = ov.Core().read_model(str(engines.export_path(user_cache, SHIPPED_ID)))
    model.reshape([1, 1, 512, 512])
    assert list(model.output(0).get_shape()) == [1, 1, 128, 128]
    image = np.random.default_rng(3).random((512, 512)).astype(np.float32)
    for predictor in fast.values():
        _assert_agree([predictor.predict(image)], [eager.predict(image)])


def test_auto_picks_the_first_installed_engine_of_the_measured_order(fast: dict[str, Predictor]) -> None:
    expected = next(n for n in engines.AUTO_ORDER if n in EXPORTED)
    assert Predictor.from_checkpoint(None, threads=1).engine == expected  # the default is "auto"
    assert engines.resolve_engine("auto", torch.device("cuda")) == "eager"  # exported engines are CPU-only


def test_export_is_cached_by_model_id_and_reused(
    fast: dict[str, Predictor], user_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cached = engines.export_path(user_cache, SHIPPED_ID)  # the packaged model caches in the user cache dir
    assert fast[EXPORTED[0]].checkpoint is not None and fast[EXPORTED[0]].checkpoint.model_id == SHIPPED_ID
    assert cached.is_file() and not list(shipped_checkpoint().parent.glob(".dotseg-cache"))
    assert not [p for p in user_cache.iterdir() if p.name.endswith(".tmp")]  # written atomically
    before = cached.stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="dotseg.inference.engines")
    for name in EXPORTED:
        assert Predictor.from_checkpoint(None, threads=1, engine=name).engine == name
    assert cached.stat().st_mtime_ns == before
    assert not [r for r in caplog.records if "exporting" in r.getMessage()]


def test_checkpoint_cache_lives_beside_it_else_in_the_user_cache(
    fast: dict[str, Predictor], user_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = EXPORTED[0]
    beside, elsewhere = tmp_path / "run", tmp_path / "read-only-run"
    for d in (beside, elsewhere):
        d.mkdir()
        shutil.copy(shipped_checkpoint(), d / "best.safetensors")
    # Beside a writable checkpoint: <dir>/.dotseg-cache/<model_id>.onnx (seeded here: no second export).
    (beside / ".dotseg-cache").mkdir()
    shutil.copy(engines.export_path(user_cache, SHIPPED_ID), engines.export_path(beside / ".dotseg-cache", SHIPPED_ID))
    # An earlier export format's file (the whole model, <id>.onnx) is neither used nor deleted: an
    # older dotseg may share the cache.
    old_format = beside / ".dotseg-cache" / f"{SHIPPED_ID}.onnx"
    old_format.write_bytes(b"an older dotseg's export")
    # Where .dotseg-cache cannot be created (a file is in the way), the user cache dir.
    (elsewhere / ".dotseg-cache").write_text("not a directory")
    assert engines.cache_dir(beside / "best.safetensors") == beside / ".dotseg-cache"
    assert engines.cache_dir(elsewhere / "best.safetensors") == user_cache
    caplog.set_level(logging.INFO, logger="dotseg.inference.engines")
    for d in (beside, elsewhere):
        assert Predictor.from_checkpoint(d / "best.safetensors", threads=1, engine=name).engine == name
    assert not [r for r in caplog.records if "exporting" in r.getMessage()]
    assert old_format.read_bytes() == b"an older dotseg's export"


def test_a_stale_cached_export_is_detected_and_replaced(
    fast: dict[str, Predictor], user_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache file that is not this model's (here: the shipped model's graph under a tiny model's
    identity) fails the load-time probe against eager and is exported again."""
    cfg = Config().replace(**{"model.base_channels": 4, "model.depth": 3, "synthesis.size": 64})
    torch.manual_seed(0)
    path = save_checkpoint(
        tmp_path / "tiny.safetensors", build_model(cfg.model).eval(), cfg, threshold=0.5, metrics={}, epoch=1
    )
    eager = Predictor.from_checkpoint(path, threads=1, engine="eager")
    assert eager.checkpoint is not None
    stale = engines.export_path(tmp_path / ".dotseg-cache", eager.checkpoint.model_id)
    stale.parent.mkdir()
    shutil.copy(engines.export_path(user_cache, SHIPPED_ID), stale)
    caplog.set_level(logging.INFO, logger="dotseg.inference.engines")
    predictor = Predictor.from_checkpoint(path, threads=1, engine=EXPORTED[0])
    assert [r for r in caplog.records if r.levelno == logging.WARNING and str(stale) in r.getMessage()]
    assert [r for r in caplog.records if "exporting" in r.getMessage()]
    image = np.random.default_rng(1).random((45, 70))
    _assert_agree([predictor.predict(image)], [eager.predict(image)])
    assert stale.stat().st_size < os.path.getsize(engines.export_path(user_cache, SHIPPED_ID))  # the tiny model now


def test_missing_package_falls_back_to_eager_with_a_notice(
    user_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for spec in engines.ENGINES.values():  # an absent install: importing the package fails
        for module in spec.requires:
            monkeypatch.setitem(sys.modules, module, None)
    caplog.set_level(logging.INFO, logger="dotseg.inference.engines")
    predictor = Predictor.from_checkpoint(None, threads=1)
    assert predictor.engine == "eager" and predictor.channels_last
    notices = [r for r in caplog.records if r.name == "dotseg.inference.engines"]
    assert len(notices) == 1 and notices[0].levelno == logging.INFO
    assert "pip install 'dotseg[fast]'" in notices[0].getMessage() and "\n" not in notices[0].getMessage()
    for name in EXPORTED:
        with pytest.raises(ValueError, match=r"not installed: pip install 'dotseg\[fast\]'"):
            Predictor.from_checkpoint(None, threads=1, engine=name)


def test_unknown_and_misplaced_engines_are_refused(eager: Predictor) -> None:
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'; choose one of auto, eager"):
        Predictor.from_checkpoint(None, engine="tensorrt")
    with pytest.raises(ValueError, match="CPU only"):
        engines.resolve_engine(EXPORTED[0], torch.device("cuda"))


def test_cli_predict_engine(cli, fast: dict[str, Predictor], eager: Predictor, tmp_path: Path) -> None:
    for name in engines.engine_names():  # the CLI's literal list of choices holds every registered engine
        assert build_parser().parse_args(["predict", "-i", "x", "-o", "y", "--engine", name]).engine == name
    image = make_sample(eager.synthesis, EVAL_SEED, 5, noisy=True).image.astype(np.float32)
    np.save(tmp_path / "x.npy", image)
    expected = eager.predict(image).mask
    for name in ("eager", *EXPORTED):
        out = cli("predict", "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / name), "--engine", name,
                  "--threads", "1", "--quiet")  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert np.array_equal(np.asarray(Image.open(tmp_path / name / "x_mask.png")) > 127, expected)
    out = cli("predict", "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o"), "--engine", "fastest")
    assert out.returncode == 2 and "invalid choice: 'fastest'" in out.stderr
