"""Reading images from disk for prediction, and writing masks, probabilities and overlays.

    image = read_image("scan.tif")          # (H, W) as stored, or (H, W, 3|4) for colour PNG/TIFF
    write_mask_png(pred.mask, "scan_mask.png")

Supported: ``.png`` (8- or 16-bit grey, RGB, RGBA, palette), ``.tif``/``.tiff`` (8/16-bit integer or
float32, grey or RGB), ``.npy`` (a 2-D array of any real dtype; never unpickled). Values are returned
as stored -- no scaling: the model's input mapping (:func:`dotseg.normalize.normalize`) is invariant to
offset and scale, so 8-bit, 16-bit and float files of one image give the same prediction. Colour is
turned into grey only by :func:`to_grey`, which the predictor calls.

Every problem with a file is an :class:`ImageError` with one line naming the file and what was
expected. Torch-free, so the CLI can check its inputs before loading a model.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np

from dotseg.plots import overlay

__all__ = [
    "SUPPORTED_SUFFIXES",
    "MAX_PIXELS",
    "ImageError",
    "read_image",
    "decode_image",
    "to_grey",
    "list_images",
    "write_mask_png",
    "write_prob_npy",
    "write_overlay_png",
    "encode_png",
    "encode_npy",
    "overlay_rgb",
]

SUPPORTED_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
#: Default cap on pixels per image: 64 Mpx is an 8k x 8k frame, ~256 MB as float32.
MAX_PIXELS = 64 * 1024 * 1024
#: ITU-R BT.601 luma weights for R, G, B (what Pillow's "L" conversion uses).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class ImageError(ValueError):
    """An input image cannot be used; the one-line message names the file and the problem.

    ``status`` is the HTTP status the problem maps to: 413 (too many pixels), 415 (a format dotseg
    does not read), 422 (not an image, corrupt, truncated, wrong shape, NaN/inf).
    """

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read one image, as stored: (H, W) of its own dtype, or (H, W, 3|4) for colour PNG/TIFF.

    The pixel count is checked from the file's header before decoding, so an oversized (or
    decompression-bomb) file costs no memory.

    Raises:
        ImageError: missing file, unsupported suffix, unreadable or corrupt file, wrong
            dimensionality, a non-numeric dtype, more than ``max_pixels`` pixels, or an empty image.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ImageError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}",
            415,
        )
    reader = {".png": _read_png, ".tif": _read_tiff, ".tiff": _read_tiff, ".npy": _read_npy}[suffix]
    return _checked(reader(path, str(path), max_pixels), str(path))


#: Leading bytes of the formats dotseg reads, and of common ones it does not (for a clear 415).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"\x93NUMPY", "npy"),
)
_OTHER_FORMATS = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"RIFF", "WebP/RIFF"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP", "JPEG 2000"),
    (b"PK\x03\x04", "ZIP"),
)


def decode_image(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image from the bytes of a PNG, TIFF or NPY file (the format is read from its first bytes,
    not from a name), as :func:`read_image` returns it.

    Raises:
        ImageError: with ``status`` 413/415/422 (see there); ``name`` starts the message.
    """
    if not data:
        raise ImageError(f"{name}: empty body; send the bytes of a PNG, TIFF or NPY image")
    kind = next((k for magic, k in _MAGIC if data.startswith(magic)), None)
    if kind is None:
        other = next((f for magic, f in _OTHER_FORMATS if data.startswith(magic)), None)
        if other is not None:
            raise ImageError(f"{name}: {other} is not supported; send PNG (8/16-bit), TIFF or NPY", 415)
        raise ImageError(f"{name}: not an image (no PNG, TIFF or NPY signature); send PNG (8/16-bit), TIFF or NPY")
    reader = {"png": _read_png, "tiff": _read_tiff, "npy": _read_npy}[kind]
    return _checked(reader(io.BytesIO(data), name, max_pixels), name)


def _checked(image: np.ndarray, name: str) -> np.ndarray:
    if image.size == 0:
        raise ImageError(f"{name}: image is empty (shape {image.shape})")
    if image.dtype != bool and not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ImageError(f"{name}: pixel type {image.dtype} is not a real number type")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ImageError(f"{name}: image contains NaN or infinite values")
    return image


def _check_pixels(path: str, height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise ImageError(
            f"{path}: too many pixels ({width}x{height} = {height * width:,}; the limit is {max_pixels:,})", 413
        )


def _check_ndim(path: str, shape: tuple[int, ...], colour: bool) -> None:
    if len(shape) == 2 or (colour and len(shape) == 3 and shape[2] in (3, 4)):
        return
    expected = "(H, W) or (H, W, 3|4)" if colour else "a 2-D array (H, W)"
    raise ImageError(f"{path}: expected {expected}, got shape {tuple(shape)}")


def _read_png(src: Path | BinaryIO, path: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make it an error like above.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as opened:
                img: Image.Image = opened
                if opened.format != "PNG":
                    raise ImageError(f"{path}: is not a PNG file (its content is {opened.format or 'unknown'})")
                width, height = img.size
                _check_pixels(path, height, width, max_pixels)
                if img.mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                elif img.mode == "LA":
                    img = img.getchannel("L")  # alpha says nothing about the content
                elif img.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "RGB", "RGBA"):
                    img = img.convert("RGB")
                array = np.array(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(
            f"{path}: too many pixels (Pillow's decompression-bomb guard: {' '.join(str(e).split())})", 413
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable PNG image (corrupt, or another format?)") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{path}: corrupt or truncated PNG: {' '.join(str(e).split())}") from None
    _check_ndim(path, array.shape, colour=True)
    return array


def _read_tiff(src: Path | BinaryIO, path: str, max_pixels: int) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(src) as tif:
            if not tif.series:
                raise ImageError(f"{path}: not a readable TIFF: it holds no image (corrupt or truncated?)")
            series = tif.series[0]
            shape = tuple(series.shape)
            _check_ndim(path, shape, colour=True)
            _check_pixels(path, shape[0], shape[1], max_pixels)
            array = series.asarray()
    except ImageError:
        raise
    except Exception as e:  # tifffile raises TiffFileError, ValueError, struct.error, ... on bad files
        raise ImageError(
            f"{path}: not a readable TIFF (corrupt or truncated): {' '.join(str(e).split()) or type(e).__name__}"
        ) from None
    return array


def _read_npy(src: Path | BinaryIO, path: str, max_pixels: int) -> np.ndarray:
    """A 2-D numeric array from a .npy file or body. The header is parsed and checked first --
    dimensions, pixel count, dtype and that the data it declares is really there -- so a 100-byte
    file that declares a terabyte array costs nothing (np.load would allocate it before reading)."""
    from numpy.lib import format as npy

    stream: BinaryIO = src.open("rb") if isinstance(src, Path) else src
    try:
        start = stream.tell()
        stream.seek(0, io.SEEK_END)
        total = stream.tell() - start
        stream.seek(start)
        try:
            version = npy.read_magic(stream)
            read_header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, dtype = read_header(stream, max_header_size=10_000)
        except ValueError as e:
            raise ImageError(f"{path}: not a readable .npy array: {' '.join(str(e).split())}") from None
        if dtype.hasobject:
            raise ImageError(f"{path}: holds Python objects, which are never unpickled; expected a numeric 2-D array")
        _check_ndim(path, tuple(shape), colour=False)
        _check_pixels(path, shape[0], shape[1], max_pixels)
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        have = total - (stream.tell() - start)
        if have < need:
            raise ImageError(
                f"{path}: truncated .npy: its header declares {tuple(shape)} {dtype} ({need:,} bytes) "
                f"but {have:,} bytes follow"
            )
        try:
            data = np.frombuffer(stream.read(need), dtype=dtype)
        except ValueError as e:  # a dtype numpy cannot build from bytes
            raise ImageError(f"{path}: not a readable .npy array: {' '.join(str(e).split())}") from None
        return data.reshape(shape, order="F" if fortran else "C").copy()  # writable, owns its memory
    finally:
        if isinstance(src, Path):
            stream.close()


def to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W) unchanged; (H, W, 3|4) RGB(A) -> (H, W) float32 luma ``0.299 R + 0.587 G + 0.114 B``.

    Alpha is ignored. Other shapes raise ``ValueError`` naming the shape.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3].astype(np.float64)
        return (rgb @ np.asarray(LUMA_WEIGHTS)).astype(np.float32)  # (H, W)
    raise ValueError(f"expected a 2-D image (H, W) or RGB/RGBA (H, W, 3|4), got shape {arr.shape}")


def list_images(paths: list[str | Path]) -> list[Path]:
    """Files as given, directories expanded to their supported files (sorted, not recursive).

    Raises:
        ImageError: a path that does not exist, or a directory without supported files.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise ImageError(f"{p}: directory has no {'/'.join(SUPPORTED_SUFFIXES)} files")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise ImageError(f"{p}: no such file or directory")
    return out


def encode_png(array: np.ndarray) -> bytes:
    """A bool mask (0/255) or a uint8 (H, W[, 3]) array as the bytes of a PNG file."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    """An array as the bytes of an ``.npy`` file (float32 probabilities, never pickled)."""
    out = io.BytesIO()
    np.save(out, np.asarray(array), allow_pickle=False)
    return out.getvalue()


def overlay_rgb(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image in grey (contrast-stretched) with the mask's outline in red, (H, W, 3) uint8."""
    return overlay(to_grey(image), pred=mask)


def write_mask_png(mask: np.ndarray, path: str | Path) -> Path:
    """(H, W) bool -> 8-bit grey PNG, 255 inside the shape and 0 outside (written atomically)."""
    return _write(path, encode_png(np.asarray(mask, dtype=bool)))


def write_prob_npy(prob: np.ndarray, path: str | Path) -> Path:
    """(H, W) probabilities -> float32 ``.npy`` (written atomically)."""
    return _write(path, encode_npy(np.asarray(prob, dtype=np.float32)))


def write_overlay_png(image: np.ndarray, mask: np.ndarray, path: str | Path) -> Path:
    """:func:`overlay_rgb` as RGB PNG (written atomically)."""
    return _write(path, encode_png(overlay_rgb(image, mask)))


def _write(path: str | Path, data: bytes) -> Path:
    from dotseg.files import write_atomic

    write_atomic(path, data)  # a kill leaves the old output or the new one, never a cut file
    return Path(path)
