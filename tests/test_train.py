"""Training on a real local Ray: DDP over gloo, exact resume, config drift, a killed worker, W&B offline.

Each ``fit()`` costs 15-40 s on a 2-core machine (worker group and process-group start-up), so
every test here does as few as it can and checks as much as it can on each.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dotseg.config import dump_yaml, load_config
from dotseg.training.run import TrainError, resume_config, train
from wandb_log import wandb_records

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def smoke(tmp_path: Path, *overrides: str):
    return load_config("smoke", [f"train.storage_path={tmp_path}", *overrides])


def test_two_worker_ddp_run_checkpoints_loads_and_logs_one_wandb_run(ray_session, tmp_path: Path) -> None:
    # The loss on the network's grid (issue 17's cpu-fast): through Ray Train's DDP, as it trains.
    cfg = smoke(tmp_path, "train.num_workers=2", "model.downscale=2", "loss.resolution=network")
    result = train(cfg, run_dir=tmp_path / "ddp", quiet=True)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.stop_reason == "completed"
    assert [h["phase"] for h in result.history] == ["easy", "extreme"]
    assert result.history[0]["noise_scale"] == 0.1 and result.history[1]["mixed_prob"] == 0.6
    for key in ("loss", "val_dice", "val_iou", "val_precision", "val_recall", "clean_dice", "lr", "samples_per_s"):
        assert all(np.isfinite(h[key]) for h in result.history), key
    assert (result.run_dir / "curves.png").stat().st_size > 1000
    assert (result.run_dir / "config.yaml").read_text().startswith(f"# dotseg run config, hash {cfg.hash}")

    # The best checkpoint is a project checkpoint the Predictor loads.
    from dotseg.inference.predictor import Predictor

    pred = Predictor.from_checkpoint(result.best_checkpoint)
    out = pred.predict(np.random.default_rng(0).random((50, 70)).astype(np.float32))
    assert out.mask.shape == (50, 70) and out.prob.dtype == np.float32

    # One W&B run for the whole training run (not one per rank), with config, metrics and images.
    runs, rows, config = wandb_records(result.run_dir)
    assert len(runs) == 1 and runs[0].name.endswith(result.run_dir.name)
    assert [r["epoch"] for r in rows if "epoch" in r] == [1, 2]
    assert {"val_dice", "clean_dice", "lr", "w_bce", "phase", "samples_per_s"} <= set(rows[0])
    assert config["config_hash"] == cfg.hash and config["train"]["num_workers"] == 2
    images = list((runs[0] / "files" / "media" / "images").glob("*.png"))
    assert len(images) >= 2 * cfg.train.wandb.images_per_epoch


def test_resume_gives_the_same_next_epoch_as_an_uninterrupted_run(ray_session, tmp_path: Path) -> None:
    cfg = smoke(tmp_path, "train.epochs=3", "curriculum.phases[1].start_epoch=3")
    full = train(cfg, run_dir=tmp_path / "full", quiet=True)
    paused = train(cfg, run_dir=tmp_path / "paused", quiet=True, stop_after_epoch=2)
    assert [h["epoch"] for h in paused.history] == [1, 2] and paused.stop_reason == "paused"
    resumed = train(resume_config(tmp_path / "paused"), resume=tmp_path / "paused", quiet=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    a, b = full.history[2], resumed.history[2]
    for key in ("loss", "val_dice", "val_iou", "clean_dice", "lr", "w_bce"):
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    # The resumed run continued the same W&B run id.
    runs, rows, _ = wandb_records(tmp_path / "paused")
    assert len({r.name.rsplit("-", 1)[-1] for r in runs}) == 1
    assert sorted(r["epoch"] for r in rows if "epoch" in r) == [1, 2, 3]


def test_resume_refuses_a_different_synthesis_or_model(cli, tmp_path: Path) -> None:
    cfg = smoke(tmp_path)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    with pytest.raises(TrainError, match=r"model\.base_channels \(4 -> 8\), synthesis\.size \(64 -> 96\)"):
        resume_config(run_dir, None, ["synthesis.size=96", "model.base_channels=8"])
    assert resume_config(run_dir, None, ["train.epochs=5"]).train.epochs == 5  # allowed
    out = cli("train", "--resume", str(run_dir), "--set", "synthesis.noise.gaussian_sigma=[0.1, 0.5]")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "synthesis.noise.gaussian_sigma" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = cli("train", "--resume", str(tmp_path / "nope"))
    assert out.returncode == 2 and "not a dotseg run directory" in out.stderr


def test_a_killed_worker_resumes_from_its_last_checkpoint(ray_session, tmp_path: Path) -> None:
    from ray.util.state import list_actors

    cfg = smoke(
        tmp_path,
        "train.epochs=3",
        "curriculum.phases[1].start_epoch=3",
        "train.samples_per_epoch=96",
        "train.max_failures=1",
    )
    run_dir = tmp_path / "killed"
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", train(cfg, run_dir=run_dir, quiet=True)))
    thread.start()
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and thread.is_alive():
        if list(run_dir.glob("checkpoint_*/history.json")):  # epoch 1 is checkpointed; epoch 2 is running
            # Name our cluster: another Ray on the machine would make the State API's auto-detection fail.
            for actor in list_actors(
                address=ray_session.get_runtime_context().gcs_address,
                filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
            ):
                os.kill(actor["pid"], signal.SIGKILL)
                killed = actor["pid"]
        time.sleep(0.2)
    thread.join(timeout=300)
    assert killed is not None, "never saw the epoch-1 checkpoint"
    result = box["result"]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]  # every epoch exactly once
    assert result.best_checkpoint is not None and result.best_checkpoint.exists()


def test_blank_mask_collapse_stops_the_run(ray_session, tmp_path: Path) -> None:
    # A threshold no sigmoid of a fresh model reaches: the predicted foreground is empty.
    cfg = smoke(
        tmp_path,
        "train.threshold=0.999",
        "train.collapse.grace_epochs=0",
        "train.collapse.max_epochs=1",
        "train.wandb.mode=disabled",
    )
    result = train(cfg, run_dir=tmp_path / "collapse", quiet=True)
    assert result.stop_reason == "collapse"
    assert len(result.history) == 1 and result.history[0]["collapsed_epochs"] == 1


def _labelled_folder(root: Path, n: int = 6) -> Path:
    from dotseg.synthesis import SynthesisConfig, make_sample

    for i in range(n):
        s = make_sample(SynthesisConfig(size=80), 9, i, noise_scale=0.3)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        np.save(root / "images" / f"x{i}.npy", s.image)
        np.save(root / "masks" / f"x{i}.npy", s.mask)
    return root


def test_fine_tuning_starts_from_the_checkpoints_weights(ray_session, tmp_path: Path) -> None:
    """`train.init` (dotseg train --init) with `data.labelled`: the run starts from the file's
    weights, trains on labelled windows mixed with synthesis, validates on the held-out pairs
    (`labelled_dice`, which picks the best checkpoint), and its checkpoints record where it started
    and each dataset's digest."""
    import torch

    from dotseg.checkpoint import load_checkpoint, save_checkpoint
    from dotseg.labelled import digest
    from dotseg.models import build_model

    folder = _labelled_folder(tmp_path / "mine")
    # The weights barely move: what comes out is what went in.
    cfg = smoke(tmp_path, "train.lr=1e-9", f"data.labelled=[{{path: {folder}}}]", "data.labelled_fraction=0.5")
    torch.manual_seed(123)
    start = build_model(cfg.model)
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.05)  # not what the run's own seeded init would give
    init = save_checkpoint(tmp_path / "start.safetensors", start, cfg, threshold=0.5, metrics={}, epoch=7)
    result = train(cfg.replace(**{"train.init": str(init)}), run_dir=tmp_path / "ft", quiet=True)
    assert result.best_checkpoint is not None
    out, ref = load_checkpoint(result.best_checkpoint), load_checkpoint(init)
    weights = [k for k in ref.state_dict if "running_" not in k and "num_batches" not in k]
    for k in weights:
        torch.testing.assert_close(out.state_dict[k], ref.state_dict[k], atol=1e-5, rtol=0)
    fresh = build_model(cfg.model).state_dict()  # the seed's init is far from it: the test can fail
    assert max(float((fresh[k] - ref.state_dict[k]).abs().max()) for k in weights) > 0.01
    assert out.cfg is not None and out.cfg.train.init == str(init)
    assert out.meta.run_id == cfg.replace(**{"train.init": str(init)}).run_id != cfg.run_id  # another run
    assert all(0.0 <= h["labelled_dice"] <= 1.0 for h in result.history)
    assert result.best_metrics["labelled_dice"] == max(h["labelled_dice"] for h in result.history)
    assert out.meta.provenance.datasets == {str(folder): digest(folder)}
    assert cfg.run_id != cfg.replace(**{"data.labelled": ()}).run_id  # the data a model learned from is identity


def test_a_bad_labelled_dataset_stops_training_before_it_starts(cli, tmp_path: Path) -> None:
    folder = _labelled_folder(tmp_path / "mine", n=3)
    (folder / "masks" / "x1.npy").unlink()
    args = ("train", "--config", "smoke", "--set", f"train.storage_path={tmp_path / 'runs'}")
    r = cli(*args, "--set", f"data.labelled=[{{path: {folder}}}]")
    assert r.returncode == 2 and f"data.labelled[0]: {folder}: 1 image(s) without a mask (x1.npy)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()  # nothing started
    r = cli(*args, "--set", f"data.labelled=[{{path: {tmp_path / 'nope'}}}]")
    assert r.returncode == 2 and "no such directory" in r.stderr


def test_fine_tuning_refuses_another_model_in_one_line(cli, tmp_path: Path) -> None:
    r = cli("train", "--config", "smoke", "--init", "shipped-v1", "--set", f"train.storage_path={tmp_path}")
    assert r.returncode == 2 and "train.init" in r.stderr and "another model than expected" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())  # nothing started
    r = cli("train", "--config", "smoke", "--init", str(tmp_path / "nope.safetensors"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = cli("train", "--init", "shipped", "--resume", str(tmp_path))
    assert r.returncode == 2 and "use one" in r.stderr
