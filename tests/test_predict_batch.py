"""Batch inference on Ray Data (dotseg.batch): ``dotseg predict --runner ray`` over a folder, its
manifest, bad files recorded, and resumption. The 2-node cluster run with a killed actor and a
bucket is in test_cluster.py. (Named to sort after test_cli_serve.py and test_cluster.py: those
start Ray clusters of their own and skip once the session's Ray runs.)

A tiny model (base 4, depth 3) from a local file: what is tested is the bookkeeping, and that the
masks are exactly the single-process path's; the file travels to the actors through Ray's object
store as it must on a cluster.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dotseg import batch
from dotseg.inference.images import read_image, write_mask_png
from dotseg.plots import save_png
from dotseg.synthesis import make_sample
from dotseg.synthesis.config import SynthesisConfig

N_GOOD = 10


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    return tiny_checkpoint


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dot patterns (16-bit PNG and NPY), a photograph, and one file that is not an image."""
    from skimage import data

    d = tmp_path_factory.mktemp("scans")
    cfg = SynthesisConfig(size=128)
    for i in range(N_GOOD):
        image = make_sample(cfg, 5, i, noise_scale=0.5, mixed_prob=0.0).image
        if i % 2:
            np.save(d / f"dots{i:02d}.npy", image)
        else:
            save_png((np.clip(image, 0, 1) * 65535).astype(np.uint16), d / f"dots{i:02d}.png")
    save_png(data.camera()[::4, ::4], d / "photo.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really")
    return d


def _manifest(out: Path) -> list[dict[str, str]]:
    with open(out / batch.MANIFEST) as f:
        return list(csv.DictReader(f))


def test_manifest_parts_fold_into_one_row_per_input_and_done_means_the_mask_is_there(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = batch.Place(tmp_path / "out")
    opts = batch.BatchOptions()
    rows = [
        {"input": "a.png", "status": "ok", "error": "", "height": 8, "width": 8, "in_distribution": True},
        {"input": "b.png", "status": "failed", "error": "b.png: not an image"},
    ]
    out.put(f"{batch.PARTS}/{batch.part_name(['a.png', 'b.png'])}", batch.to_csv(rows))
    # A retried batch rewrites the same part: its inputs name it.
    assert batch.part_name(["a.png", "b.png"]) == batch.part_name(["a.png", "b.png"]) != batch.part_name(["a.png"])
    out.put(f"{batch.PARTS}/{batch.part_name(['a.png', 'b.png'])}", batch.to_csv(rows))
    got = batch.read_manifest(out)
    assert sorted(got) == ["a.png", "b.png"]
    assert batch.still_done(got, out, ["a.png", "b.png"], opts) == set()  # a's mask is not there
    write_mask_png(np.ones((8, 8), bool), Path(out.join("a_mask.png")))
    assert batch.still_done(got, out, ["a.png", "b.png"], opts) == {"a.png"}  # failed ones are retried

    batch.write_manifest(out, got)
    assert out.names(batch.PARTS) == []  # folded into manifest.csv
    assert [r["input"] for r in _manifest(tmp_path / "out")] == ["a.png", "b.png"]
    table = pq.read_table(out.join(batch.MANIFEST_PARQUET)).to_pylist()
    assert table[0]["height"] == 8.0 and table[0]["in_distribution"] is True and table[1]["height"] is None
    assert batch.read_manifest(out) == batch.read_manifest(out)  # the merged file reads back the same


def test_one_file_is_read_predicted_written_and_described_or_recorded_as_failed(
    checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    from dotseg.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, engine="eager", threads=1)
    out = batch.Place(tmp_path)
    opts = batch.BatchOptions(prob=True, overlay=True)
    row = batch.predict_file(predictor, str(images / "dots01.npy"), out, opts)
    assert row["status"] == "ok" and row["error"] == ""
    assert (row["height"], row["width"]) == (128, 128)
    assert 0.0 <= row["foreground_fraction"] <= 1.0 and 0.5 <= row["mean_confidence"] <= 1.0
    assert sorted(out.names()) == ["dots01_mask.png", "dots01_overlay.png", "dots01_prob.npy"]
    expected = predictor.predict(np.load(images / "dots01.npy")).mask
    assert np.array_equal(read_image(tmp_path / "dots01_mask.png") > 0, expected)

    bad = batch.predict_file(predictor, str(images / "broken.png"), out, opts)
    assert bad["status"] == "failed" and bad["error"].startswith(str(images / "broken.png"))
    assert "dots" not in bad["error"] and "Traceback" not in bad["error"]


def test_runner_choice_and_flag_errors(cli, tmp_path: Path) -> None:
    assert batch.use_ray("auto", ["scans"], "out", None, 10) is False
    assert batch.use_ray("auto", ["scans"], "out", None, batch.AUTO_RAY_FILES + 1) is True
    assert batch.use_ray("auto", ["s3://b/scans"], "out", None) is True
    assert batch.use_ray("auto", ["scans"], "gs://b/masks", None) is True
    assert batch.use_ray("auto", ["scans"], "out", "127.0.0.1:6379") is True
    assert batch.use_ray("local", ["scans"], "out", None, 10**6) is False

    for flag, said in (("0", "N >= 1"), ("3-2", "MIN <= MAX"), ("x", "N or MIN-MAX")):
        r = cli("predict", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--actors", flag)
        assert r.returncode == 2 and said in r.stderr, r.stderr
    r = cli("predict", "--runner", "local", "-i", "s3://b/scans", "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "--runner local reads and writes local files only" in r.stderr

    from dotseg.submit import SubmitError, entrypoint

    assert entrypoint("predict", None, [], ["--input", "s3://b/x"], tmp_path).endswith(
        "jobs/predict.py --input s3://b/x"
    )
    with pytest.raises(SubmitError, match="dotseg predict takes no config"):
        entrypoint("predict", "configs/cpu.yaml", [], [], tmp_path)


def test_a_folder_on_ray_data_gives_the_single_process_masks_a_manifest_and_resumes(
    ray_session, cli, checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    common = ("--checkpoint", str(checkpoint), "--engine", "eager", "--threads", "1", "--quiet")
    out = tmp_path / "masks"
    r = cli("predict", "--runner", "ray", "-i", str(images), "-o", str(out), "--actors", "1-2", *common)
    n = N_GOOD + 2
    assert r.returncode == 1, r.stdout + r.stderr  # one file could not be read: recorded, the others done
    assert f"predicted {n - 1} of {n} images, 1 failed into {out}" in r.stdout, r.stdout
    assert "manifest: " + str(out / "manifest.csv") in r.stdout
    assert f"{images / 'broken.png'}:" in r.stderr  # the reason, one line, as it happened

    rows = {Path(r["input"]).name: r for r in _manifest(out)}
    assert len(rows) == n and len(_manifest(out)) == n
    assert rows["broken.png"]["status"] == "failed" and "PNG" in rows["broken.png"]["error"]
    assert all(rows[f"dots{i:02d}.{'npy' if i % 2 else 'png'}"]["status"] == "ok" for i in range(N_GOOD))
    assert rows["photo.png"]["in_distribution"] == "False"  # a photograph is flagged, as /predict/json does
    assert sum(rows[k]["in_distribution"] == "True" for k in rows if k.startswith("dots")) >= N_GOOD - 1
    assert all(rows[k]["node"] for k in rows)
    assert (out / batch.MANIFEST_PARQUET).is_file() and not list((out / batch.PARTS).glob("part-*"))

    # The same masks as the single-process path (same engine, same threads).
    here = tmp_path / "here"
    assert cli("predict", "--runner", "local", "-i", str(images), "-o", str(here), *common).returncode == 1
    for name in sorted(p.name for p in here.glob("*_mask.png")):
        assert np.array_equal(read_image(out / name), read_image(here / name)), name

    # Again: everything done is skipped, the failed file is tried again; a lost mask is redone.
    r = cli("predict", "--runner", "ray", "-i", str(images), "-o", str(out), *common)
    assert f"predicted 0 of {n} images, {n - 1} done earlier and skipped, 1 failed" in r.stdout, r.stdout
    (out / "dots03_mask.png").unlink()
    r = cli("predict", "--runner", "ray", "-i", str(images), "-o", str(out), *common)
    assert f"predicted 1 of {n} images, {n - 2} done earlier and skipped, 1 failed" in r.stdout, r.stdout
    assert (out / "dots03_mask.png").is_file() and len(_manifest(out)) == n

    # A pool that cannot fit is refused before anything waits on it.
    r = cli("predict", "--runner", "ray", "-i", str(images), "-o", str(out), "--threads", "64", "--overwrite")
    assert r.returncode == 2 and "need 64 CPUs and the Ray cluster has 4" in r.stderr, r.stderr
