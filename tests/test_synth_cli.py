"""`dotseg synth`: files on disk, in-process and through Ray Data workers, equal to the API's samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dotseg.config import load_config
from dotseg.synthesis import make_batch, make_sample
from dotseg.synthesis.export import load_sample


def test_synth_writes_npz_previews_and_grid(cli, tmp_path: Path) -> None:
    out = cli(
        "synth",
        "--config",
        "smoke",
        "--n",
        "3",
        "--start",
        "10",
        "--seed",
        "5",
        "--out",
        str(tmp_path),
        "--grid",
        str(tmp_path / "grid.png"),
        "--noise-scale",
        "0.5",
        "--mixed-prob",
        "0.5",
    )
    assert out.returncode == 0, out.stderr
    assert "wrote 3 samples" in out.stdout and "grid.png" in out.stdout
    cfg = load_config("smoke").synthesis
    for index in (10, 11, 12):
        image, mask, dots, meta = load_sample(tmp_path / f"sample_{index:06d}.npz")  # allow_pickle=False
        ref = make_sample(cfg, 5, index, noise_scale=0.5, mixed_prob=0.5)
        assert image.tobytes() == ref.image.tobytes() and mask.tobytes() == ref.mask.tobytes()
        assert np.array_equal(dots, ref.dots)
        assert meta["index"] == index and meta["n_dots"] == len(dots) and meta["noise"] == ref.meta["noise"]
        assert Image.open(tmp_path / f"sample_{index:06d}.png").size == (64, 64)
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size[0] > 500 and grid.size[1] > 500


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "2"], "--out DIR is required"),
        (["--n", "2", "--out", "x", "--noise-scale", "2"], "argument --noise-scale: must be in [0, 1], got 2"),
        (["--n", "2", "--out", "x", "--config", "nope"], "config file 'nope' not found"),
    ],
)
def test_synth_bad_arguments_are_one_line_errors(cli, args: list[str], message: str) -> None:
    out = cli("synth", *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.ray
def test_ray_data_synthesis_is_the_same_samples_whatever_the_blocks(ray_session) -> None:
    from dotseg.data import DataConfig, synthesis_dataset

    cfg = load_config("smoke").synthesis.replace(size=48)
    ref = make_batch(cfg, 3, range(100, 130), noise_scale=0.8, mixed_prob=0.5)
    for data in (
        DataConfig(synth_tasks=1, rows_per_block=30, cpus_per_task=0.5),
        DataConfig(synth_tasks=2, rows_per_block=7, cpus_per_task=0.5),
    ):
        ds = synthesis_dataset(cfg, data, 3, 30, offset=100, noise_scale=0.8, mixed_prob=0.5)
        rows = sorted(ds.take_all(), key=lambda r: int(r["index"]))
        assert [int(r["index"]) for r in rows] == list(range(100, 130))
        for j, r in enumerate(rows):
            assert r["image"].tobytes() == ref["image"][j].tobytes()
            assert r["mask"].tobytes() == ref["mask"][j].tobytes()
            assert str(r["noise"]) == ref["noise"][j]


@pytest.mark.ray
def test_validation_shards_are_the_validation_set_split_across_ranks(ray_session) -> None:
    """Synthesized once per run, each rank a contiguous slice: together exactly the samples of the
    seeded set, as model input, with their noise-free copies."""
    from dotseg.data import DataConfig, validation_shard
    from dotseg.normalize import normalize

    cfg = load_config("smoke").synthesis.replace(size=48)
    data = DataConfig(synth_tasks=1, rows_per_block=3, cpus_per_task=0.5)
    noisy = make_batch(cfg, 11, range(7), noise_scale=1.0, mixed_prob=0.6)
    clean = make_batch(cfg, 11, range(7), noise_scale=1.0, mixed_prob=0.6, noisy=False)
    shards = [validation_shard(cfg, data, 11, 7, rank=r, world=3, noise_scale=1.0, mixed_prob=0.6) for r in range(3)]
    assert [s.count() for s in shards] == [2, 2, 3]
    got = {
        k: np.concatenate([s.take_batch(10, batch_format="numpy")[k] for s in shards])
        for k in ("image", "clean", "mask")
    }
    np.testing.assert_array_equal(got["image"], normalize(noisy["image"]))
    np.testing.assert_array_equal(got["clean"], normalize(clean["image"]))
    np.testing.assert_array_equal(got["mask"], noisy["mask"])
    assert validation_shard(cfg, data, 11, 2, rank=0, world=3, noise_scale=1.0, mixed_prob=0.6) is None  # 0 of 2
