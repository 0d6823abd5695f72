"""Storage locations: bucket URIs through pyarrow against a real S3 API on loopback (moto's server),
and the up-front refusals. A whole training run into a bucket, on a 2-node cluster, is in
tests/test_cluster.py."""

from __future__ import annotations

import pytest

from dotseg import storage
from s3_server import keys, s3_server


@pytest.fixture(scope="module")
def s3():
    with s3_server("dotseg-storage-test") as env:
        yield env


@pytest.fixture
def s3_env(s3, monkeypatch, tmp_path):
    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(storage, "CACHE_DIR", tmp_path / "cache")
    return s3


def test_uri_helpers_and_where_a_bucket_run_is_staged(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(storage, "CACHE_DIR", tmp_path)
    assert storage.is_uri("s3://b/runs") and storage.is_uri("gs://b/runs")
    assert not storage.is_uri("runs") and not storage.is_uri("/mnt/x") and not storage.is_uri("file:///tmp/x")
    assert storage.join("s3://b/runs/", "/x/", "config.yaml") == "s3://b/runs/x/config.yaml"
    assert storage.parent("s3://b/runs/x/") == "s3://b/runs" and storage.name("s3://b/runs/x") == "x"
    assert storage.staging_dir("gs://b/runs/x") == tmp_path / "staging" / "gs" / "b" / "runs" / "x"
    # A bucket is shared by every node, wherever they are; a node-local disk is not.
    storage.check_shared_storage("s3://b/runs", ["10.0.0.1", "10.0.0.2"], "ext4")
    with pytest.raises(storage.StorageError, match=r"Set train.storage_path to a bucket \(s3://bucket/"):
        storage.check_shared_storage("runs", ["10.0.0.1", "10.0.0.2"], "ext4")


def test_bucket_round_trip_and_one_line_errors(s3_env, tmp_path) -> None:
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    (run / "config.yaml").write_text("a: 1\n")
    (run / "sub" / "x.bin").write_bytes(b"\0" * 10)
    uri = "s3://dotseg-storage-test/runs/r1"
    storage.check_writable(uri)
    storage.upload(run, uri)
    assert keys(s3_env, "dotseg-storage-test", "runs/") == ["runs/r1/config.yaml", "runs/r1/sub/x.bin"]  # no probe left
    assert storage.exists(uri + "/config.yaml") and not storage.exists(uri + "/nope")
    assert storage.read_text(uri + "/config.yaml") == "a: 1\n"
    assert storage.local_copy(uri + "/sub/x.bin").read_bytes() == b"\0" * 10

    with pytest.raises(storage.StorageError) as e:
        storage.read_text(uri + "/nope")
    assert str(e.value) == f"{uri}/nope does not exist"
    with pytest.raises(storage.StorageError) as e:  # no such bucket: says what to check
        storage.check_writable("s3://no-such-bucket/runs")
    (line,) = str(e.value).splitlines()
    assert "s3://no-such-bucket/runs" in line and "AWS_ENDPOINT_URL" in line and "bucket exists" in line
    with pytest.raises(storage.StorageError, match="not a storage location pyarrow can open"):
        storage.exists("nosuchscheme://x/y")


def test_a_checkpoint_loads_from_a_bucket_and_its_errors_name_the_uri(s3_env, tmp_path) -> None:
    from dotseg.checkpoint import CheckpointError, load_checkpoint
    from dotseg.inference.predictor import Predictor, shipped_checkpoint

    uri = "s3://dotseg-storage-test/models/best.safetensors"
    storage.upload(shipped_checkpoint(), uri)
    loaded = load_checkpoint(uri)
    assert loaded.model_id == load_checkpoint(shipped_checkpoint()).model_id
    assert Predictor.from_checkpoint(uri, engine="eager").checkpoint.model_id == loaded.model_id  # serve, predict

    bad = tmp_path / "page.safetensors"
    bad.write_text("<html>AccessDenied</html>")
    storage.upload(bad, "s3://dotseg-storage-test/models/page.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint("s3://dotseg-storage-test/models/page.safetensors")
    assert str(e.value).startswith("s3://dotseg-storage-test/models/page.safetensors: ") and "cache" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"^s3://dotseg-storage-test/models/none.safetensors does not exist$"):
        load_checkpoint("s3://dotseg-storage-test/models/none.safetensors")


def test_bucket_runs_are_refused_up_front_where_they_cannot_work(s3_env) -> None:
    from dotseg.config import load_config
    from dotseg.training.run import TrainError, new_run_dir, resume_config
    from dotseg.tuning.sweep import SweepError, sweep

    with pytest.raises(TrainError, match=r"s3://dotseg-storage-test/runs/ghost is not a dotseg run \(no config.yaml"):
        resume_config("s3://dotseg-storage-test/runs/ghost")
    cfg = load_config("smoke", ["train.storage_path=s3://dotseg-storage-test/runs"])
    storage.check_writable("s3://dotseg-storage-test/runs/taken")
    (staged := storage.staging_dir("s3://dotseg-storage-test/runs/taken")).mkdir(parents=True)
    (staged / "config.yaml").write_text("x: 1\n")
    storage.upload(staged / "config.yaml", "s3://dotseg-storage-test/runs/taken/config.yaml")
    with pytest.raises(TrainError, match=r"s3://dotseg-storage-test/runs/taken already exists.*--resume s3://"):
        new_run_dir(cfg, "taken")
    assert new_run_dir(cfg, "fresh") == storage.staging_dir("s3://dotseg-storage-test/runs/fresh")
    with pytest.raises(SweepError, match=r"a sweep's files .* live in a directory"):
        sweep(load_config("sweep-smoke", ["train.storage_path=s3://dotseg-storage-test/sweeps"]))


def test_a_stale_machine_never_uploads_older_results_over_newer_ones(s3_env, tmp_path, caplog) -> None:
    """Issue 19: machine B resumed a bucket run further; an interrupted resume on machine A then
    uploaded A's stale staging files (history, best checkpoint) over B's, without a word."""
    import json
    import logging

    from dotseg.training.run import upload_run

    def history(n: int) -> str:
        return json.dumps([{"epoch": e, "val_dice": 0.5 + e / 100} for e in range(1, n + 1)])

    bucket = "s3://dotseg-storage-test/runs/shared-run"
    newer = tmp_path / "b"  # machine B: epoch 10
    newer.mkdir()
    (newer / "history.json").write_text(history(10))
    (newer / "best.safetensors").write_bytes(b"B's best")
    storage.upload(newer, bucket)
    stale = tmp_path / "a"  # machine A: its staging files stopped at epoch 5
    stale.mkdir()
    (stale / "history.json").write_text(history(5))
    (stale / "best.safetensors").write_bytes(b"A's older best")
    (stale / "ray.log").write_text("A's attempt\n")
    with caplog.at_level(logging.WARNING):
        upload_run(stale, bucket)
    got = tmp_path / "got"
    assert json.loads(storage.download(f"{bucket}/history.json", got / "h.json").read_text())[-1]["epoch"] == 10
    assert storage.download(f"{bucket}/best.safetensors", got / "b").read_bytes() == b"B's best"
    assert storage.download(f"{bucket}/ray.log", got / "log").read_text() == "A's attempt\n"  # logs still go up
    (line,) = [r.getMessage() for r in caplog.records if "not uploading" in r.getMessage()]
    assert "epoch 10" in line and "this machine's 5" in line
    # The machine that got further uploads as usual.
    (stale / "history.json").write_text(history(12))
    upload_run(stale, bucket)
    assert json.loads(storage.download(f"{bucket}/history.json", got / "h2.json").read_text())[-1]["epoch"] == 12


def test_a_labelled_dataset_in_a_bucket_is_checked_like_a_folder(s3_env, tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from dotseg.labelled import DatasetError, load, summary
    from dotseg.synthesis import SynthesisConfig, make_sample

    local = tmp_path / "mydata"
    for sub in ("images", "masks"):
        (local / sub).mkdir(parents=True)
    for i in range(3):
        s = make_sample(SynthesisConfig(size=64), 1, i)
        Image.fromarray((np.clip(s.image, 0, 1) * 255).astype(np.uint8)).save(local / "images" / f"a{i}.png")
        Image.fromarray(s.mask.astype(np.uint8) * 255).save(local / "masks" / f"a{i}.png")
    uri = "s3://dotseg-storage-test/datasets/mydata"
    storage.upload(local, uri)
    assert [p.name for p, *_ in load(uri)] == ["a0", "a1", "a2"]
    assert summary(uri)["pairs"] == 3 and summary(uri)["location"] == uri
    with pytest.raises(DatasetError, match=r"s3://dotseg-storage-test/datasets/nothing"):
        load("s3://dotseg-storage-test/datasets/nothing")
