"""Pictures people would rather look at than tables: previews, overlays and sample grids.

Display only: nothing here feeds a model. Images are shown with a robust contrast stretch
(percentiles), masks as coloured outlines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

#: Outline colours (RGB) for ground truth and prediction.
TRUTH_RGB = (0, 220, 90)
PRED_RGB = (255, 60, 60)


def to_uint8(image: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.9) -> np.ndarray:
    """(H, W) any dtype -> uint8 with a percentile contrast stretch (constant images -> black).

    The low percentile is 1 % so the few negative values speckle noise gives sparse dots do not
    turn an empty background grey."""
    x = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(x, [lo_pct, hi_pct])
    if hi <= lo:
        hi = float(x.max())
        lo = float(x.min())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    return (np.clip((x - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool: pixels of ``mask`` that touch its background (a ``width``-px inner contour)."""
    m = np.asarray(mask, dtype=bool)
    return m & ~ndimage.binary_erosion(m, iterations=width, border_value=0)


def overlay(image: np.ndarray, truth: np.ndarray | None = None, pred: np.ndarray | None = None,
            width: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8: the image in grey with the truth (green) and prediction (red) outlines."""
    grey = to_uint8(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    w = width if width is not None else max(1, round(max(grey.shape) / 256))
    for m, colour in ((truth, TRUTH_RGB), (pred, PRED_RGB)):
        if m is not None:
            rgb[outline(m, w)] = colour
    return rgb


def save_png(array: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def panel_row(image: np.ndarray, truth: np.ndarray, pred: np.ndarray | None = None,
              prob: np.ndarray | None = None) -> np.ndarray:
    """(H, k*W, 3) uint8: image | truth | prediction | probability, as many as are given."""
    tiles = [np.repeat(to_uint8(image)[..., None], 3, axis=2),
             np.repeat((np.asarray(truth, bool) * 255).astype(np.uint8)[..., None], 3, axis=2)]
    if pred is not None:
        tiles.append(overlay(image, truth, pred))
    if prob is not None:
        p = (np.clip(prob, 0, 1) * 255).astype(np.uint8)
        tiles.append(np.stack([p, np.zeros_like(p), 255 - p], axis=2))
    sep = np.full((tiles[0].shape[0], 4, 3), 255, dtype=np.uint8)
    out = [tiles[0]]
    for t in tiles[1:]:
        out += [sep, t]
    return np.concatenate(out, axis=1)


def sample_grid(cells: Sequence[Sequence[tuple[np.ndarray, np.ndarray, str]]], row_labels: Sequence[str],
                col_labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """A labelled grid figure: ``cells[r][c] = (image, mask, caption)``, each shown with its mask outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(cells), len(cells[0])
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols + 0.8, 2.4 * rows + 0.6), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            image, mask, caption = cells[r][c]
            ax.imshow(overlay(image, truth=mask), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(caption, fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=10)
            if r == 0:
                ax.set_title(col_labels[c], fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
