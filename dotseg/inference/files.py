"""Predicting image files into a directory: what ``dotseg predict`` does, as a library call.

    result = predict_files(predictor, list_images(["scans/"]), Path("masks"), overlay=True)

For each input ``<stem>.<ext>``: ``<stem>_mask.png`` (0/255), and on request ``<stem>_prob.npy``
(float32) and ``<stem>_overlay.png``. A file that cannot be read or predicted is reported and
skipped; the others are still written.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dotseg.inference.images import ImageError, read_image, write_mask_png, write_overlay_png, write_prob_npy
from dotseg.inference.segmenter import Segmenter


@dataclass(frozen=True, slots=True)
class FilesResult:
    written: int
    """Inputs whose outputs were written."""
    failed: dict[Path, str] = field(default_factory=dict)
    """Inputs that could not be used, with the one-line reason."""
    seconds: float = 0.0


def failure_line(location: str, error: BaseException) -> str:
    """The one line a failed input gets: the error on one line, starting with the input's name."""
    message = " ".join(str(error).split())
    return message if message.startswith(location) else f"{location}: {message}"


def stem_clashes(paths: list[Path]) -> str:
    """'a.png, a.tif' for inputs whose outputs (named by stem) would overwrite each other; '' if none."""
    by_stem: dict[str, list[Path]] = {}
    for p in paths:
        by_stem.setdefault(p.stem, []).append(p)
    return "; ".join(", ".join(map(str, ps)) for ps in by_stem.values() if len(ps) > 1)


def predict_files(
    segmenter: Segmenter,
    inputs: list[Path],
    out: Path,
    *,
    prob: bool = False,
    overlay: bool = False,
    progress: bool = True,
) -> FilesResult:
    """Predict every file of ``inputs`` into ``out`` (created). Raises ImageError if two inputs
    would write the same outputs or ``out`` is a file."""
    from tqdm import tqdm

    clashes = stem_clashes(inputs)
    if clashes:
        raise ImageError(f"inputs would write the same outputs: {clashes} (rename one or predict them separately)")
    if out.exists() and not out.is_dir():
        raise ImageError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    failed: dict[Path, str] = {}
    t0 = time.perf_counter()
    bar = tqdm(inputs, desc="predict", unit="image", disable=not progress)
    for path in bar:
        try:
            image = read_image(path)
            pred = segmenter.predict(image)
            write_mask_png(pred.mask, out / f"{path.stem}_mask.png")
            if prob:
                write_prob_npy(pred.prob, out / f"{path.stem}_prob.npy")
            if overlay:
                write_overlay_png(image, pred.mask, out / f"{path.stem}_overlay.png")
        except (ValueError, OSError, MemoryError) as e:  # one bad file (ImageError too) must not stop the others
            failed[path] = failure_line(str(path), e)
            tqdm.write(f"dotseg predict: {failed[path]}", file=sys.stderr)
    bar.close()
    return FilesResult(written=len(inputs) - len(failed), failed=failed, seconds=time.perf_counter() - t0)
