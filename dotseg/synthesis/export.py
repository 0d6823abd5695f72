"""Writing samples to disk (npz + PNG previews) and the noise-type x level grid figure."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dotseg.synthesis.config import SynthesisConfig
from dotseg.synthesis.generate import META_COLUMNS, make_sample
from dotseg.synthesis.noise import ORDER

#: Levels (severity, the fraction of the way from mildest to harshest) shown in the grid.
GRID_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


def jsonable(v: Any) -> Any:
    """``v`` as strict JSON values, recursively: infinities (a clean image's SNR) as the strings
    "inf"/"-inf", NaN as null, numpy scalars as Python values, other objects as strings."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None if math.isnan(v) else "inf" if v > 0 else "-inf"
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    if v is None or isinstance(v, (str, int)):
        return v
    return str(v)


def write_sample(
    out_dir: Path, image: np.ndarray, mask: np.ndarray, dots: np.ndarray, meta: dict[str, Any], preview: bool = True
) -> Path:
    """``sample_<index>.npz`` (image, mask, dots, meta as JSON) and ``sample_<index>.png``.

    The npz holds only plain arrays and a JSON string, so it loads with ``allow_pickle=False``.
    """
    from dotseg import plots

    index = int(meta["index"])
    meta_json = json.dumps({k: jsonable(v) for k, v in meta.items()}, sort_keys=True)
    path = out_dir / f"sample_{index:06d}.npz"
    dots = dots[~np.isnan(dots[:, 0])] if len(dots) else dots
    np.savez(path, image=image, mask=mask, dots=dots, meta=np.array(meta_json))
    if preview:
        plots.save_png(plots.overlay(image, truth=mask), out_dir / f"sample_{index:06d}.png")
    return path


def load_sample(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(image, mask, dots, meta) of a file written by :func:`write_sample`."""
    with np.load(path, allow_pickle=False) as f:
        return f["image"], f["mask"], f["dots"], json.loads(str(f["meta"]))


def rows_of(batch: dict[str, np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]]:
    """Split a :func:`make_batch` batch into per-sample (image, mask, dots, meta)."""
    for i in range(len(batch["image"])):
        meta = {k: batch[k][i] for k in META_COLUMNS if k in batch}
        yield batch["image"][i], batch["mask"][i], batch["dots"][i], meta


def write_labelled(out_dir: Path, image: np.ndarray, mask: np.ndarray, index: int) -> None:
    """``images/sample_<index>.png`` (16-bit, the image's range stretched to 0..65535: predictions
    do not change, normalization is affine-invariant) and ``masks/sample_<index>.png`` (0/255): a
    labelled dataset in the layout :mod:`dotseg.labelled` reads."""
    from dotseg.files import write_atomic
    from dotseg.inference.images import encode_png

    lo, hi = float(image.min()), float(image.max())
    u16 = np.round((image - lo) / max(hi - lo, 1e-12) * 65535).astype(np.uint16)
    write_atomic(out_dir / "images" / f"sample_{index:06d}.png", encode_png(u16))
    write_atomic(out_dir / "masks" / f"sample_{index:06d}.png", encode_png(np.asarray(mask, dtype=bool)))


def write_samples(
    batches: Iterable[dict[str, np.ndarray]],
    out_dir: Path,
    total: int,
    *,
    preview: bool = True,
    progress: bool = True,
    labelled: bool = False,
) -> int:
    """Write every sample of ``batches`` (as :func:`make_batch` gives them) into ``out_dir``; returns
    the count. ``labelled``: as a labelled dataset (:func:`write_labelled`) instead of npz files."""
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    with tqdm(total=total, desc="synth", unit="sample", disable=not progress) as bar:
        for batch in batches:
            for image, mask, dots, meta in rows_of(batch):
                if labelled:
                    write_labelled(out_dir, image, mask, int(meta["index"]))
                else:
                    write_sample(out_dir, image, mask, dots, meta, preview=preview)
                written += 1
                bar.update(1)
    return written


def noise_grid(cfg: SynthesisConfig, seed: int, path: str | Path, levels: Iterable[float] = GRID_LEVELS) -> Path:
    """One figure: rows = clean and each noise type (plus a 2-type mix), columns = severity levels,
    every cell with its ground-truth outline and SNR. Each row keeps one shape and its dots, so only
    the noise changes along it."""
    from dotseg import plots

    levels = tuple(levels)
    rows: list[tuple[str, tuple[str, ...] | None]] = [("clean", None)]
    rows += [(t, (t,)) for t in ORDER if t in cfg.noise.types]
    mix = tuple(t for t in ORDER if t in cfg.noise.types)[:2]
    if len(mix) == 2:
        rows.append(("+".join(mix), mix))
    cells = []
    for r, (_, types) in enumerate(rows):
        row = []
        for level in levels:
            s = make_sample(cfg, seed, r, noisy=types is not None, noise_types=types, severity=level)
            snr = s.snr_db
            caption = "SNR inf" if math.isinf(snr) else f"SNR {snr:.1f} dB"
            row.append((s.image, s.mask, caption))
        cells.append(row)
    col_labels = [f"severity {lv:g}" for lv in levels]
    return plots.sample_grid(
        cells,
        [r[0] for r in rows],
        col_labels,
        path,
        title=f"dotseg synthesis, {cfg.size} px, seed {seed} (green: ground-truth outline)",
    )
