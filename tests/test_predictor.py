"""Inference without Ray: the Predictor, image files, and ``dotseg predict`` end to end.

One tiny model (base 4, depth 3), saved once per module, serves every test; random weights are
enough, since what is tested is shapes, dtypes, order, invariances and error handling.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from dotseg.cli import main
from dotseg.inference.images import ImageError, list_images, read_image, to_grey
from dotseg.inference.predictor import Predictor, resolve_device
from dotseg.inference.segmenter import Prediction, Segmenter

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    return tiny_checkpoint


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, device="cpu", engine="eager")  # engines: test_engines.py


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A bright noisy disc on a dark background, float64 in about [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    disc = ((yy - height / 2) ** 2 + (xx - width / 2) ** 2) < (min(height, width) / 3) ** 2
    return 0.2 + 0.6 * disc + 0.1 * rng.standard_normal((height, width))


# -- Predictor ------------------------------------------------------------------------------------


def test_is_a_segmenter_with_the_checkpoints_threshold(predictor: Predictor, checkpoint: Path) -> None:
    assert isinstance(predictor, Segmenter)
    assert predictor.name == "model"
    assert predictor.threshold == 0.5
    assert predictor.checkpoint is not None and predictor.checkpoint.path == checkpoint
    assert not predictor.model.training
    assert Predictor.from_checkpoint(checkpoint, threshold=0.7).threshold == 0.7


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64, bool])
def test_any_dtype_and_odd_size_gives_outputs_at_input_size(predictor: Predictor, dtype: type) -> None:
    image = _image(37, 53)
    if dtype is bool:
        image = image > 0.5
    elif np.issubdtype(dtype, np.integer):
        image = (np.clip(image, 0, 1) * np.iinfo(dtype).max / 2).astype(dtype)
    else:
        image = image.astype(dtype)
    pred = predictor.predict(image)
    assert isinstance(pred, Prediction)
    assert pred.mask.shape == pred.prob.shape == (37, 53)
    assert pred.mask.dtype == bool and pred.prob.dtype == np.float32
    assert np.all((pred.prob >= 0) & (pred.prob <= 1))
    assert np.array_equal(pred.mask, pred.prob >= predictor.threshold)


def test_tiny_and_constant_images(predictor: Predictor) -> None:
    for shape in [(1, 1), (3, 5), (16, 1)]:
        assert predictor.predict(np.zeros(shape, np.uint8)).prob.shape == shape


def test_rgb_and_rgba_are_converted_to_grey_by_luma(predictor: Predictor) -> None:
    grey = (np.clip(_image(24, 30), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((24, 30, 1), 255, np.uint8)], axis=2)
    expected = predictor.predict(grey).prob
    for colour in (rgb, rgba):
        np.testing.assert_allclose(predictor.predict(colour).prob, expected, atol=1e-5)
    # Green weighs most: a pure-green picture equals its luma image.
    green = np.zeros((24, 30, 3), np.uint8)
    green[..., 1] = grey
    np.testing.assert_allclose(to_grey(green), 0.587 * grey, rtol=1e-6)


@pytest.mark.parametrize("shape", [(5,), (4, 4, 2), (4, 4, 1), (2, 8, 8, 1), (0, 7)])
def test_bad_shapes_are_rejected_naming_the_shape(predictor: Predictor, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        predictor.predict(np.zeros(shape, np.float32))


def test_nan_is_rejected(predictor: Predictor) -> None:
    image = _image(16, 16)
    image[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict(image)


def test_predict_batch_keeps_order_with_mixed_sizes(predictor: Predictor) -> None:
    sizes = [(32, 32), (20, 24), (32, 32), (17, 17), (20, 24), (32, 32)]
    images = [_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    preds = predictor.predict_batch(images, batch_size=2)
    assert [p.prob.shape for p in preds] == sizes
    for image, pred in zip(images, preds, strict=True):
        np.testing.assert_allclose(pred.prob, predictor.predict(image).prob, atol=1e-5)
    assert predictor.predict_batch([]) == []


def test_normalization_makes_dtype_and_scale_irrelevant(predictor: Predictor) -> None:
    """The same picture as float, as 8-bit and as offset 16-bit reaches the model identically."""
    levels = np.random.default_rng(3).integers(0, 256, size=(40, 48))
    as_float = 0.2 + 0.6 * levels / 255.0
    as_u8 = levels.astype(np.uint8)
    as_u16 = (levels * 250 + 100).astype(np.uint16)  # at most 63850: no wrap-around
    reference = predictor.predict(as_float).prob
    for image in (as_u8, as_u16):
        np.testing.assert_allclose(predictor.predict(image).prob, reference, atol=1e-5)


def test_channels_last_path_gives_the_same_probabilities(predictor: Predictor, checkpoint: Path) -> None:
    # The eager engine's two layouts (the exported engines are compared with eager in test_engines.py).
    plain = Predictor.from_checkpoint(checkpoint, channels_last=False, engine="eager")
    fast = Predictor.from_checkpoint(checkpoint, channels_last=True, engine="eager")
    assert predictor.channels_last and not plain.channels_last  # the CPU default is channels_last
    image = _image(61, 47, seed=3)
    a, b = plain.predict(image), fast.predict(image)
    assert np.abs(a.prob - b.prob).max() < 1e-4
    assert np.array_equal(a.mask, b.mask)


def test_threads_are_set_explicitly(checkpoint: Path) -> None:
    before = torch.get_num_threads()
    try:
        Predictor.from_checkpoint(checkpoint, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        Predictor.from_checkpoint(checkpoint, threads=0)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_no_shipped_model_says_to_pass_a_checkpoint(tmp_path: Path) -> None:
    # An installation without the asset (a source build that left it out): a copy of the package
    # without assets/ comes first on PYTHONPATH, ahead of the installed one.
    import shutil

    import dotseg

    shutil.copytree(
        Path(dotseg.__file__).parent, tmp_path / "dotseg", ignore=shutil.ignore_patterns("assets", "__pycache__")
    )
    (tmp_path / "img.npy").write_bytes(b"")  # never read: the model is resolved first
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dotseg.cli, sys; print(dotseg.__file__, file=sys.stderr); "
            "sys.exit(dotseg.cli.main(['predict', '-i', 'img.npy', '-o', 'o']))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert str(tmp_path / "dotseg") in out.stderr  # the copy was imported
    assert out.returncode == 2 and "no shipped model is installed" in out.stderr and "--checkpoint" in out.stderr


# -- image files ------------------------------------------------------------------------------------


def test_read_image_formats(tmp_path: Path) -> None:
    grey16 = (np.arange(30 * 20).reshape(30, 20) * 100).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert read_image(tmp_path / "g16.png").dtype == np.uint16
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), grey16)

    rgba = np.random.default_rng(0).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.PNG")
    assert read_image(tmp_path / "rgba.PNG").shape == (10, 12, 4)

    f32 = np.random.default_rng(1).random((9, 11), dtype=np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f32)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), f32)

    np.save(tmp_path / "i.npy", np.arange(12, dtype=np.int64).reshape(3, 4))
    assert read_image(tmp_path / "i.npy").dtype == np.int64


def _image_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(ImageError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def _npy_header_only(shape: tuple[int, ...], dtype: str = "<f8", body: bytes = b"") -> bytes:
    """A .npy file whose header declares ``shape`` but carries only ``body`` as data."""
    from numpy.lib import format as npy

    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + body


def test_npy_header_is_checked_before_anything_is_allocated(tmp_path: Path) -> None:
    """Issue 18: a 192-byte .npy declaring a (10^6, 10^6) float64 array made np.load allocate 8 TB
    (MemoryError, a 500 over HTTP). The header is read and checked first: too many pixels is a 413,
    a body shorter than the header declares a 422, both without allocating the array."""
    import resource

    from dotseg.inference.images import decode_image

    bomb = _npy_header_only((1_000_000, 1_000_000))
    assert len(bomb) <= 192
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError) as info:
        decode_image(bomb, "upload")
    assert info.value.status == 413 and "too many pixels" in str(info.value)
    (tmp_path / "bomb.npy").write_bytes(bomb)
    assert "too many pixels" in _image_error(tmp_path / "bomb.npy")
    # Inside the pixel cap but with the data missing: truncated, not a huge zero-filled read.
    short = _npy_header_only((4000, 4000), body=b"\0" * 64)
    with pytest.raises(ImageError) as info:
        decode_image(short, "upload")
    assert info.value.status == 422 and "truncated .npy" in str(info.value) and "128,000,000 bytes" in str(info.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing big was allocated
    # Well-formed arrays still read exactly, in any byte order and memory order.
    for array in (np.arange(12, dtype=">u2").reshape(3, 4), np.asfortranarray(np.random.rand(5, 7).astype(np.float32))):
        buf = io.BytesIO()
        np.save(buf, array)
        got = decode_image(buf.getvalue(), "upload")
        assert got.dtype == array.dtype and np.array_equal(got, array) and got.flags.writeable


def test_read_image_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "no such file" in _image_error(tmp_path / "missing.png")
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff")
    assert "unsupported file type '.jpg'; supported: .png, .tif, .tiff, .npy" in _image_error(tmp_path / "x.jpg")
    (tmp_path / "bad.png").write_bytes(b"<html>not an image</html>")
    assert "not a readable PNG" in _image_error(tmp_path / "bad.png")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    assert "not a readable TIFF" in _image_error(tmp_path / "bad.tif")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    assert "expected a 2-D array (H, W), got shape (2, 3, 4)" in _image_error(tmp_path / "cube.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    assert "image is empty" in _image_error(tmp_path / "empty.npy")
    np.save(tmp_path / "obj.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    assert "never unpickled" in _image_error(tmp_path / "obj.npy")
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    assert "not a real number type" in _image_error(tmp_path / "text.npy")

    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    assert "too many pixels (100x100" in _image_error(tmp_path / "big.png", max_pixels=5000)
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((100, 100), np.uint16))
    assert "too many pixels" in _image_error(tmp_path / "big.tif", max_pixels=5000)
    # Pillow's own decompression-bomb guard surfaces as the same error, above and below its 2x line.
    for limit in (6000, 2000):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        assert "too many pixels (Pillow's decompression-bomb guard" in _image_error(
            tmp_path / "big.png", max_pixels=10**9
        )


def test_truncated_png(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated PNG" in _image_error(tmp_path / "a.png")


def test_list_images(tmp_path: Path) -> None:
    for name in ("b.png", "a.npy", "c.TIF", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images([tmp_path])] == ["a.npy", "b.png", "c.TIF"]
    with pytest.raises(ImageError, match="no such file or directory"):
        list_images([tmp_path / "nope"])


# -- dotseg predict ---------------------------------------------------------------------------------


def test_cli_predict_end_to_end(checkpoint: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    base = np.clip(_image(37, 53), 0, 1)
    Image.fromarray((base * 255).astype(np.uint8)).save(inputs / "a.png")
    tifffile.imwrite(inputs / "b.tif", (base * 65535).astype(np.uint16))
    np.save(inputs / "c.npy", _image(30, 31))
    (inputs / "d.png").write_bytes(b"this is not a png")
    out = tmp_path / "out"

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dotseg.cli",
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--input",
            str(inputs),
            "--output",
            str(out),
            "--prob",
            "--overlay",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dotseg predict:")]
    assert len(errors) == 1 and "d.png" in errors[0] and "not a readable PNG" in errors[0]
    assert "predicted 3 of 4 images (1 failed)" in proc.stdout

    for stem, shape in (("a", (37, 53)), ("b", (37, 53)), ("c", (30, 31))):
        mask = np.array(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        prob = np.load(out / f"{stem}_prob.npy")
        assert prob.shape == shape and prob.dtype == np.float32
        assert np.array(Image.open(out / f"{stem}_overlay.png")).shape == (*shape, 3)
    assert not list(out.glob("d_*"))
    # The 8-bit PNG and the 16-bit TIFF of one picture give the same mask.
    np.testing.assert_allclose(np.load(out / "a_prob.npy"), np.load(out / "b_prob.npy"), atol=2e-3)


def test_cli_predict_usage_errors_exit_2(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "x.npy"
    np.save(image, _image(16, 16))
    html = tmp_path / "best.safetensors"
    html.write_text("<!DOCTYPE html><html><body>Not found</body></html>")

    def run(*args: str) -> tuple[int, str]:
        code = main(["predict", "--input", *args, "--output", str(tmp_path / "o"), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        return code, err

    code, err = run(str(image), "--checkpoint", str(html))
    assert code == 2 and "is an HTML page" in err and "?download=true" in err
    code, err = run(str(tmp_path / "missing.png"), "--checkpoint", str(checkpoint))
    assert code == 2 and "no such file or directory" in err
    code, err = run(str(image), "--checkpoint", str(checkpoint), "--threshold", "1.5")
    assert code == 2 and "--threshold" in err
    (tmp_path / "x.png").write_bytes(b"")
    code, err = run(str(image), str(tmp_path / "x.png"), "--checkpoint", str(checkpoint))
    assert code == 2 and "same outputs" in err
    code, _ = run(str(image), "--checkpoint", str(checkpoint), "--device", "cpu")
    assert code == 0
    assert (tmp_path / "o" / "x_mask.png").is_file()


def test_prediction_leaves_denormals_alone_for_the_rest_of_the_process(tmp_path: Path) -> None:
    """The Predictor flushes denormals around its forward pass only: left on, scipy's cKDTree (the
    baseline's nearest-neighbour search) crashes the process on some point sets (scipy 1.17)."""
    code = (
        "import numpy as np; from scipy import ndimage as ndi; from scipy.spatial import cKDTree\n"
        "from skimage.segmentation import find_boundaries\n"
        "from dotseg.inference.predictor import Predictor\n"
        "Predictor.from_checkpoint(None, threads=1).predict(np.random.default_rng(0).random((64, 64)))\n"
        "field = ndi.gaussian_filter(np.random.default_rng(5).standard_normal((48, 40)), 4.0) > 0\n"
        "edge = find_boundaries(np.pad(field, 1), connectivity=1, mode='inner')[1:-1, 1:-1]\n"
        "pts = np.argwhere(edge).astype(float)\n"
        "print('ok', cKDTree(pts).query(pts)[0].max())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-500:]
