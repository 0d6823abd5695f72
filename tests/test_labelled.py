"""Users' own labelled images (issue 20, first part): the folder conventions, every bad-input case
as one line naming the files, and `dotseg data check`'s summary. The dataset is built by the test
from synthesis with a generator setting the shipped model was not trained on, plus real photos
from scikit-image for the in-distribution column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from dotseg.labelled import DatasetError, digest, find_pairs, load, summary
from dotseg.synthesis import SynthesisConfig, make_sample

SOFT = SynthesisConfig(size=128).replace(
    **{"dots.profile": ("gaussian",), "dots.amplitude": (0.4, 1.0), "image.offset": (0.5, 1.5)}
)  # soft dots, per-dot amplitude, a background offset: a setting the shipped model was not trained on


def _u16(image: np.ndarray) -> np.ndarray:
    lo, hi = float(image.min()), float(image.max())
    return np.round((image - lo) / max(hi - lo, 1e-12) * 65535).astype(np.uint16)


def _write(root: Path, n: int, layout: str = "dirs", size: int = 128) -> Path:
    for i in range(n):
        s = make_sample(SOFT.replace(size=size), 3, i, noise_scale=0.5)
        if layout == "dirs":
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(_u16(s.image)).save(root / "images" / f"s{i:02d}.png")
            Image.fromarray(s.mask.astype(np.uint8) * 255).save(root / "masks" / f"s{i:02d}.png")
        else:
            root.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / f"s{i:02d}.tif", s.image.astype(np.float32))
            np.save(root / f"s{i:02d}.mask.npy", s.mask.astype(bool))
    return root


def test_both_conventions_pair_by_name_and_read(tmp_path: Path) -> None:
    for layout in ("dirs", "flat"):
        root = _write(tmp_path / layout, 4, layout)
        pairs = find_pairs(root)
        assert [p.name for p in pairs] == ["s00", "s01", "s02", "s03"]
        rows = load(root)
        assert all(m.dtype == bool and im.shape == m.shape == (128, 128) for _, im, m in rows)
        assert all(0.0 < m.mean() < 1.0 for *_, m in rows)
    assert digest(tmp_path / "dirs") == digest(tmp_path / "dirs")
    (tmp_path / "dirs" / "masks" / "s00.png").write_bytes((tmp_path / "dirs" / "masks" / "s01.png").read_bytes())
    assert digest(tmp_path / "dirs") != digest(tmp_path / "flat")


@pytest.mark.parametrize(
    ("breakage", "words"),
    [
        ("unpaired", ("2 image(s) without a mask (s01.png, s02.png)", "1 mask(s) without an image (x.png)")),
        ("unreadable", ("1 unreadable file(s): s01",)),
        ("size", ("1 pair(s) whose image and mask sizes differ: s02: image 128x128 but mask 64x64",)),
        ("not_binary", ("1 mask(s) not binary: s03: not binary (3 values: 0, 1, 7",)),
        ("empty", ("no image/mask pairs",)),
    ],
)
def test_every_bad_dataset_is_one_line_naming_the_files(tmp_path: Path, breakage: str, words: tuple) -> None:
    root = _write(tmp_path / "d", 4)
    if breakage == "unpaired":
        (root / "masks" / "s01.png").unlink()
        (root / "masks" / "s02.png").unlink()
        (root / "masks" / "x.png").write_bytes((root / "masks" / "s00.png").read_bytes())
    elif breakage == "unreadable":
        (root / "images" / "s01.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif breakage == "size":
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "masks" / "s02.png")
    elif breakage == "not_binary":
        mask = np.zeros((128, 128), np.uint8)
        mask[10:20, 10:20], mask[30:40, 30:40] = 1, 7
        Image.fromarray(mask).save(root / "masks" / "s03.png")
    else:
        for p in [*(root / "images").iterdir(), *(root / "masks").iterdir()]:
            p.unlink()
    with pytest.raises(DatasetError) as e:
        load(root)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(root))
    for w in words:
        assert w in message, message


def test_many_problems_list_the_first_few_and_the_count(tmp_path: Path) -> None:
    root = _write(tmp_path / "d", 6)
    for i in range(6):
        (root / "masks" / f"s{i:02d}.png").rename(root / "masks" / f"t{i:02d}.png")
    with pytest.raises(DatasetError, match=r"6 image\(s\) without a mask \(s00.png, s01.png, s02.png and 3 more\)"):
        find_pairs(root)


def test_data_check_summarizes_and_flags_photos(tmp_path: Path, cli) -> None:
    from skimage import data as photos

    root = _write(tmp_path / "d", 6, size=512)  # the model's image size: its dot scale
    camera = photos.camera()  # a real photograph: not a dot pattern
    Image.fromarray(camera).save(root / "images" / "camera.png")
    Image.fromarray((camera > 128).astype(np.uint8) * 255).save(root / "masks" / "camera.png")
    r = cli("data", "check", str(root))
    assert r.returncode == 0, r.stderr
    assert "7 image/mask pairs" in r.stdout and "512x512 (7)" in r.stdout
    assert "6 of 7 look like the model's training data" in r.stdout and "flagged: camera" in r.stdout
    s = summary(root)
    assert s["pairs"] == 7 and 0 < s["foreground"]["mean"] < 1 and s["snr_db"]["median"] is not None
    r = cli("data", "check", str(root), "--json")
    assert json.loads(r.stdout)["in_distribution"]["flagged"] == ["camera"]
    r = cli("data", "check", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no such directory" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_evaluate_on_labelled_data_reports_model_and_baseline(tmp_path: Path, cli) -> None:
    root = _write(tmp_path / "d", 4, layout="flat")
    out = tmp_path / "report"
    r = cli("evaluate", "--data", str(root), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "model     n=4" in r.stdout and "baseline  n=4" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["benchmark"]["suite"] == "labelled" and report["benchmark"]["digest"] == digest(root)
    assert set(report["overall"]) == {"model", "baseline"}
    assert 0.0 <= report["overall"]["model"]["dice"] <= 1.0
    assert sum(per["model"]["n"] for per in report["by_snr_bin"].values()) == 4
    assert {s["name"] for s in report["samples"]} == {"s00", "s01", "s02", "s03"}
    text = (out / "report.md").read_text()
    assert "labelled images" in text and "By estimated SNR" in text and (out / "worst_model.png").is_file()
    (root / "s01.mask.npy").unlink()
    r = cli("evaluate", "--data", str(root), "--out", str(out))
    assert r.returncode == 2 and "1 image(s) without a mask (s01.tif)" in r.stderr


# -- fine-tuning on labelled images (data.labelled) -----------------------------------------------


def test_training_rows_mix_labelled_windows_from_the_training_split_deterministically(tmp_path: Path) -> None:
    from dotseg.data import LabelledMix, _mixed_batch
    from dotseg.labelled import split, window

    # Image k is the constant 1000 * (k + 1): a window of it says which pair it came from, whatever
    # the crop and the flip / rotation.
    root = tmp_path / "d"
    for k in range(10):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        np.save(root / "images" / f"c{k}.npy", np.full((96, 80), 1000 * (k + 1), np.uint16))  # < 128: padded
        np.save(root / "masks" / f"c{k}.npy", np.tri(96, 80, dtype=bool))
    train, held = split(10, 0.2, seed=7)
    assert len(held) == 2 and sorted([*train, *held]) == list(range(10))
    assert np.array_equal(split(10, 0.2, seed=7)[1], held) and not np.array_equal(split(10, 0.2, seed=8)[1], held)
    assert [len(p) for p in split(2, 0.01, 0)] == [1, 1] and [len(p) for p in split(2, 0.99, 0)] == [1, 1]
    w_image, w_mask = window(np.zeros((96, 80)), np.tri(96, 80, dtype=bool), 128, np.random.default_rng(0))
    assert w_image.shape == w_mask.shape == (128, 128) and w_image.dtype == np.float32 and w_mask.dtype == np.uint8

    cfg = SynthesisConfig(size=128)
    mix = LabelledMix(paths=(str(root),), weights=(1.0,), fraction=0.5, holdout=0.2, split_seed=7)
    ids = np.arange(64)
    rows = _mixed_batch(cfg, 11, ids, 1.0, 0.0, False, False, mix)
    again = _mixed_batch(cfg, 11, ids, 1.0, 0.0, False, False, mix)
    assert rows["image"].shape == (64, 128, 128) and rows["mask"].dtype == np.uint8
    assert all(np.array_equal(rows[k], again[k]) for k in rows)  # a sample is a function of (seed, id)
    sources = [{int(v) // 1000 - 1 for v in np.unique(im)} for im in rows["image"] if np.ptp(im) == 0]
    assert 16 <= len(sources) <= 48, len(sources)  # about half of 64 rows are labelled windows
    assert all(len(s) == 1 and s <= set(train.tolist()) for s in sources)  # of training pairs, never held-out ones
    assert all(0 < m.mean() < 1 for m, im in zip(rows["mask"], rows["image"], strict=True) if np.ptp(im) == 0)

    everything = LabelledMix(paths=(str(root),), weights=(1.0,), fraction=1.0, holdout=0.2, split_seed=7)
    model_input = _mixed_batch(cfg, 11, ids[:8], 1.0, 0.0, False, True, everything)["image"]
    assert np.allclose(model_input, 0.0)  # normalized per sample (a constant image maps to zeros)


def test_a_sweep_or_a_metric_that_needs_labelled_data_is_refused_in_one_line(tmp_path: Path, cli) -> None:
    r = cli("config", "--set", "tune.metric=labelled_dice")
    assert r.returncode == 2
    assert "tune.metric: labelled_dice is reported only by runs that train on labelled" in r.stderr
    good = _write(tmp_path / "good", 3)
    r = cli("config", "--set", f"data.labelled=[{{path: {good}}}]", "--set", "tune.metric=labelled_dice")
    assert r.returncode == 0, r.stderr
    (good / "masks" / "s02.png").unlink()
    runs = tmp_path / "runs"
    r = cli(
        "sweep", "--config", "sweep-smoke", "--set", f"train.storage_path={runs}",
        "--set", f"data.labelled=[{{path: {good}}}]", "--set", "tune.space[0].values=[0.3, 0.7]",
        "--set", "tune.space[0].key=data.labelled_fraction",
    )  # fmt: skip
    assert r.returncode == 2 and "data.labelled[0]: " in r.stderr and "1 image(s) without a mask (s02.png)" in r.stderr
    assert not runs.exists()  # refused before anything was made
