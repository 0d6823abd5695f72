"""Users' own labelled images: a folder (or a bucket prefix) of image/mask pairs, checked whole.

Two conventions, the first that matches wins:

    DIR/images/NAME.{png,tif,tiff,npy}   +  DIR/masks/NAME.{png,tif,tiff,npy}      (same stems)
    DIR/NAME.{png,tif,tiff,npy}          +  DIR/NAME.mask.{png,tif,tiff,npy}

Images are read as ``dotseg predict`` reads them (PNG 8/16-bit, TIFF, NPY; RGB becomes grey). A
mask is binary: bool, or integers with two values, 0 and one other (1, 255, 65535); 0 is
background. Every problem of a dataset is found before anything uses it and reported in one line
per kind, naming the first few files and the count: files without a partner, unreadable files,
image and mask sizes that differ, masks that are not binary. ``dotseg data check DIR`` prints the
summary (count, sizes, foreground fraction, estimated SNR, the in-distribution verdicts).
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dotseg import storage
from dotseg.inference.images import SUPPORTED_SUFFIXES, ImageError, read_image, to_grey

#: How many names an error lists before "and N more".
SHOWN = 3
MASK_TAG = ".mask"


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names every problem, one kind per clause."""


@dataclass(frozen=True)
class Pair:
    name: str
    image: Path
    mask: Path


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def local_dir(location: str | Path) -> Path:
    """The dataset's local directory: ``location`` itself, or a bucket prefix's copy in the cache."""
    if not storage.is_uri(location):
        path = Path(location).expanduser()
        if not path.is_dir():
            raise DatasetError(f"{location}: {'no such directory' if not path.exists() else 'not a directory'}")
        return path
    uri = str(location).rstrip("/")
    if uri in _FETCHED and _FETCHED[uri].is_dir():
        return _FETCHED[uri]
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    try:  # a fresh copy: the bucket may have changed since the last fetch
        _FETCHED[uri] = storage.download(uri, storage.CACHE_DIR / "datasets" / key / storage.name(uri))
    except storage.StorageError as e:
        raise DatasetError(str(e)) from None
    return _FETCHED[uri]


#: Bucket datasets fetched by this process (one command reads a dataset several times).
_FETCHED: dict[str, Path] = {}


def find_pairs(location: str | Path) -> list[Pair]:
    """The dataset's image/mask pairs by the conventions above, sorted by name.

    Raises:
        DatasetError: no pairs, or files without a partner (names listed).
    """
    root = local_dir(location)
    images_dir, masks_dir = root / "images", root / "masks"
    if images_dir.is_dir() and masks_dir.is_dir():
        images = {_stem(p): p for p in _files(images_dir) if p.suffix.lower() in SUPPORTED_SUFFIXES}
        masks = {_stem(p): p for p in _files(masks_dir) if p.suffix.lower() in SUPPORTED_SUFFIXES}
        convention = "images/NAME + masks/NAME"
    else:
        files = [p for p in _files(root) if p.suffix.lower() in SUPPORTED_SUFFIXES]
        masks = {_stem(p)[: -len(MASK_TAG)]: p for p in files if _stem(p).endswith(MASK_TAG)}
        images = {_stem(p): p for p in files if not _stem(p).endswith(MASK_TAG)}
        convention = "NAME.png + NAME.mask.png"
    lonely_images = sorted(images.keys() - masks.keys())
    lonely_masks = sorted(masks.keys() - images.keys())
    problems = []
    if lonely_images:
        problems.append(
            f"{len(lonely_images)} image(s) without a mask ({_listed([images[n].name for n in lonely_images])})"
        )
    if lonely_masks:
        problems.append(
            f"{len(lonely_masks)} mask(s) without an image ({_listed([masks[n].name for n in lonely_masks])})"
        )
    if problems:
        raise DatasetError(f"{location}: " + "; ".join(problems) + f" (the convention found here: {convention})")
    if not images:
        raise DatasetError(
            f"{location}: no image/mask pairs; lay it out as images/NAME + masks/NAME, or NAME.png + "
            f"NAME.mask.png ({', '.join(SUPPORTED_SUFFIXES)})"
        )
    return [Pair(n, images[n], masks[n]) for n in sorted(images)]


def as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """A stored mask as bool (H, W); a DatasetError if it is not binary."""
    if array.ndim == 3:
        array = array[..., 0] if array.shape[-1] in (3, 4) and (array == array[..., :1]).all() else array
    if array.ndim != 2:
        raise DatasetError(f"{name}: a mask is one channel (H, W), got shape {array.shape}")
    if array.dtype == bool:
        return array
    values = np.unique(array)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0) or (len(values) == 1 and values[0] not in (0, 1)):
        shown = ", ".join(f"{v:g}" for v in values[:4]) + (", ..." if len(values) > 4 else "")
        raise DatasetError(f"{name}: not binary ({len(values)} values: {shown}; expected 0 and one other)")
    return array != 0


def _size_problem(pair: Pair, image: np.ndarray, mask: np.ndarray) -> str | None:
    if image.shape == mask.shape:
        return None
    return f"{pair.name}: image {image.shape[1]}x{image.shape[0]} but mask {mask.shape[1]}x{mask.shape[0]}"


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(image as stored, grey; mask bool), same (H, W); DatasetError / ImageError on a bad file."""
    image = to_grey(read_image(pair.image))
    mask = as_mask(read_image(pair.mask), pair.name)
    problem = _size_problem(pair, image, mask)
    if problem:
        raise DatasetError(problem)
    return image, mask


def load(location: str | Path) -> list[tuple[Pair, np.ndarray, np.ndarray]]:
    """Every pair read and checked: (pair, image, mask). Every problem is collected first, then
    raised as one DatasetError with one clause per kind."""
    pairs = find_pairs(location)
    out: list[tuple[Pair, np.ndarray, np.ndarray]] = []
    unreadable: list[str] = []
    sizes: list[str] = []
    not_binary: list[str] = []
    for pair in pairs:
        try:
            image, stored = to_grey(read_image(pair.image)), read_image(pair.mask)
        except ImageError as e:
            unreadable.append(f"{pair.name} ({str(e).split(': ', 1)[-1]})")
            continue
        try:
            mask = as_mask(stored, pair.name)
        except DatasetError as e:
            not_binary.append(str(e))
            continue
        problem = _size_problem(pair, image, mask)
        if problem:
            sizes.append(problem)
            continue
        out.append((pair, image, mask))
    problems = []
    if unreadable:
        problems.append(f"{len(unreadable)} unreadable file(s): {_listed(unreadable)}")
    if sizes:
        problems.append(f"{len(sizes)} pair(s) whose image and mask sizes differ: {_listed(sizes)}")
    if not_binary:
        problems.append(f"{len(not_binary)} mask(s) not binary: {_listed(not_binary)}")
    if problems:
        raise DatasetError(f"{location}: " + "; ".join(problems))
    return out


def digest(location: str | Path) -> str:
    """A 12-hex content digest of the dataset (names and bytes of every pair): what provenance records."""
    return pairs_digest(find_pairs(location))


def pairs_digest(pairs: list[Pair]) -> str:
    """:func:`digest` of pairs already found."""
    h = hashlib.blake2b(digest_size=6)
    for pair in pairs:
        for path in (pair.image, pair.mask):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def summary(location: str | Path, synthesis: Any = None) -> dict[str, Any]:
    """What ``dotseg data check`` prints: count, sizes, foreground fraction, estimated SNR (from the
    true mask), how many images look like the model's training data, and the content digest."""
    from dotseg.inference.ood import estimate_snr_db, in_distribution

    rows = load(location)
    sizes = Counter(f"{im.shape[1]}x{im.shape[0]}" for _, im, _ in rows)
    fg = np.array([m.mean() for _, _, m in rows])
    snr = np.array([estimate_snr_db(im, m) for _, im, m in rows])
    finite = snr[np.isfinite(snr)]
    verdicts = [in_distribution(im, synthesis) for _, im, _ in rows]
    outside = [p.name for (p, _, _), v in zip(rows, verdicts, strict=True) if not v.in_distribution]
    return {
        "location": str(location),
        "pairs": len(rows),
        "sizes": dict(sizes.most_common()),
        "foreground": {"mean": float(fg.mean()), "min": float(fg.min()), "max": float(fg.max())},
        "snr_db": {
            "median": float(np.median(finite)) if finite.size else None,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "noise_free": int(np.isposinf(snr).sum()),
        },
        "in_distribution": {"pass": len(rows) - len(outside), "flagged": outside},
        "digest": pairs_digest([pair for pair, _, _ in rows]),
    }


def summary_lines(s: dict[str, Any]) -> list[str]:
    fg, snr, ind = s["foreground"], s["snr_db"], s["in_distribution"]
    sizes = ", ".join(f"{k} ({v})" for k, v in list(s["sizes"].items())[:4])
    snr_text = (
        f"median {snr['median']:.1f} dB, {snr['min']:.1f} to {snr['max']:.1f}" if snr["median"] is not None else "n/a"
    )
    lines = [
        f"{s['location']}: {s['pairs']} image/mask pairs, content digest {s['digest']}",
        f"  sizes: {sizes}" + (f" and {len(s['sizes']) - 4} more" if len(s["sizes"]) > 4 else ""),
        f"  foreground fraction: mean {fg['mean']:.3f} (min {fg['min']:.3f}, max {fg['max']:.3f})",
        f"  estimated SNR: {snr_text}" + (f"; {snr['noise_free']} noise-free" if snr["noise_free"] else ""),
        f"  in distribution: {ind['pass']} of {s['pairs']} look like the model's training data",
    ]
    if ind["flagged"]:
        lines.append(f"  flagged: {_listed(ind['flagged'])} (the model's masks there are not to be trusted as is)")
    return lines


# -- training on labelled images (data.labelled) ------------------------------------------------


@functools.lru_cache(maxsize=8)
def arrays(location: str) -> tuple[tuple[str, ...], tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """(names, images as stored, masks bool) of a dataset, read and checked once per process:
    training tasks draw from them every batch. Sorted by name, like :func:`find_pairs`."""
    rows = load(location)
    return tuple(p.name for p, _, _ in rows), tuple(im for _, im, _ in rows), tuple(m for _, _, m in rows)


def split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices) of a dataset of ``n`` pairs: ``holdout`` of them,
    chosen by a permutation seeded with ``seed`` (the run's: a resumed run holds out the same
    ones), at least one of each side when ``n >= 2``; both sorted."""
    k = min(max(round(n * holdout), 1 if n >= 2 else 0), n - 1) if n else 0
    order = np.random.default_rng([int(seed), 5]).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def window(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` window of an image and its mask at a random place, as float32 and uint8;
    sides shorter than ``size`` are reflect-padded (the model sees no hard edge there)."""
    pad = [(0, max(0, size - n)) for n in image.shape]
    if any(p for _, p in pad):
        image, mask = np.pad(image, pad, mode="reflect"), np.pad(mask, pad, mode="reflect")
    y = int(rng.integers(image.shape[0] - size + 1))
    x = int(rng.integers(image.shape[1] - size + 1))
    return (
        np.asarray(image[y : y + size, x : x + size], dtype=np.float32),
        np.asarray(mask[y : y + size, x : x + size], dtype=np.uint8),
    )
