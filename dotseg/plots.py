"""Pictures people would rather look at than tables, all in one module: previews, overlays, sample
grids, learning curves, Dice-vs-SNR plots and galleries of the worst cases.

Display only: nothing here feeds a model. Images are shown with a robust contrast stretch
(percentiles), masks as coloured outlines. Matplotlib is imported inside the functions that
need it, on the Agg backend (no display), so importing this module stays cheap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dotseg.masks import boundary

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
    return boundary(np.asarray(mask, dtype=bool), width)


def overlay(
    image: np.ndarray, truth: np.ndarray | None = None, pred: np.ndarray | None = None, width: int | None = None
) -> np.ndarray:
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


def panel_row(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray | None = None, prob: np.ndarray | None = None
) -> np.ndarray:
    """(H, k*W, 3) uint8: image | truth | prediction | probability, as many as are given."""
    tiles = [
        np.repeat(to_uint8(image)[..., None], 3, axis=2),
        np.repeat((np.asarray(truth, bool) * 255).astype(np.uint8)[..., None], 3, axis=2),
    ]
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


def sample_grid(
    cells: Sequence[Sequence[tuple[np.ndarray, np.ndarray, str]]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
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


def plot_dice_vs_snr(
    rows: list[dict[str, Any]], names: list[str], path: Path, kinds: Sequence[str], reference: float | None = None
) -> Path:
    """One panel per noise kind: per-sample Dice against SNR, with binned means, per segmenter;
    ``reference`` (the seed's reported val Dice) as a dashed level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3.6), sharey=True)
    edges = np.array([-10, -5, 0, 5, 10, 15, 20, 25, 30, 40, 60])
    for ax, kind in zip(axes, kinds, strict=True):
        for i, name in enumerate(names):
            sel = [r for r in rows if r["segmenter"] == name and r["kind"] == kind and math.isfinite(r["snr_db"])]
            if not sel:
                continue
            snr = np.array([r["snr_db"] for r in sel])
            dice = np.array([r["dice"] for r in sel])
            ax.scatter(snr, dice, s=6, alpha=0.35, color=f"C{i}")
            centres, means = [], []
            for lo, hi in itertools.pairwise(edges):
                m = (snr >= lo) & (snr < hi)
                if m.sum() >= 2:
                    centres.append((lo + hi) / 2)
                    means.append(dice[m].mean())
            ax.plot(centres, means, "-o", color=f"C{i}", label=name, ms=3)
        if reference is not None:
            # The seed's only published figure: a level to compare with, not a curve (no SNR breakdown).
            ax.axhline(reference, ls="--", lw=1, color="grey", label="seed val Dice (reported)")
        ax.set_title(kind, fontsize=10)
        ax.set_xlabel("SNR (dB)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_gallery(items: list[tuple], path: Path, name: str) -> Path:
    """Rows of image | truth | prediction | probability for the given (worst) cases."""
    from PIL import ImageDraw

    if not items:
        return path
    strips = []
    for image, truth, mask, prob, row in items:
        strip = panel_row(image, truth, mask, prob)
        img = Image.fromarray(strip)
        ImageDraw.Draw(img).text(
            (4, 4), f"{name}: dice {row['dice']:.3f}, {row['noise']}, SNR {row['snr_db']:.1f} dB", fill=(255, 255, 0)
        )
        strips.append(np.asarray(img))
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
    Image.fromarray(np.concatenate(strips, axis=0)).save(path)
    return path


def plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    """Learning curves: loss, validation/clean Dice and IoU per epoch, with the curriculum phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["loss"] for h in history], "o-", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("compound loss")
    curves = [("val_dice", "val Dice (noisy)"), ("clean_dice", "clean Dice"), ("val_iou", "val IoU")]
    curves += [("labelled_dice", "held-out labelled Dice")] if all("labelled_dice" in h for h in history) else []
    for key, label in curves:
        ax2.plot(epochs, [h[key] for h in history], "o-", label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1)
    for ax in (ax1, ax2):
        start: tuple[int, str] | None = None  # (first epoch, name) of the phase being shaded
        for h in [*history, None]:
            if start is not None and (h is None or h["phase"] != start[1]):
                ax.axvspan(
                    start[0] - 0.5,
                    (h["epoch"] if h else epochs[-1] + 1) - 0.5,
                    alpha=0.08,
                    color=f"C{len(ax.patches) % 10}",
                )
                ax.text(start[0], ax.get_ylim()[1], start[1], va="top", fontsize=8)
            if h is not None and (start is None or h["phase"] != start[1]):
                start = (h["epoch"], h["phase"])
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax2 else "upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def heatmap(prob: np.ndarray) -> np.ndarray:
    """(H, W) probabilities in [0, 1] -> (H, W, 4) uint8 RGBA: the 'inferno' colormap, transparent
    where the model is sure it is background, so it can lie over the image."""
    from matplotlib import colormaps

    p = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
    rgba = (colormaps["inferno"](p) * 255).astype(np.uint8)  # (H, W, 4)
    rgba[..., 3] = (np.sqrt(p) * 255).astype(np.uint8)
    return rgba


def plot_parallel(rows: list[dict[str, Any]], keys: list[str], path: Path, metric: str = "best_val_dice") -> Path:
    """A sweep's parallel-coordinates plot: one axis per swept key and one for the metric, one line
    per trial coloured by the metric (categorical values spread evenly along their axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    done = [r for r in rows if r.get(metric) is not None]
    axes = [*keys, metric]
    cols: list[list[float]] = []
    ticks: list[tuple[list[float], list[str]]] = []
    for key in axes:
        values = [r[metric] if key == metric else r["params"].get(key) for r in done]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and values:
            lo, hi = min(values), max(values)
            if lo > 0 and hi / lo > 100:  # a learning-rate-like axis: log scale
                scaled = [math.log10(v) for v in values]
                cols.append([(v - math.log10(lo)) / math.log10(hi / lo) for v in scaled])
            else:
                cols.append([(v - lo) / ((hi - lo) or 1.0) for v in values])
            ticks.append(([0.0, 1.0], [f"{lo:.4g}", f"{hi:.4g}"]))
        else:
            cats = sorted({str(v) for v in values})
            pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
            cols.append([pos[str(v)] for v in values])
            ticks.append((list(pos.values()), cats))
    fig, ax = plt.subplots(figsize=(2.2 * len(axes) + 1, 4.2))
    scores = [r[metric] for r in done]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    cmap = colormaps["viridis"]
    for i, r in enumerate(done):
        ax.plot(
            range(len(axes)),
            [c[i] for c in cols],
            color=cmap((r[metric] - lo) / ((hi - lo) or 1.0)),
            alpha=0.8,
            lw=1.6,
            ls="-" if "stopped" not in r.get("status", "") else "--",
        )
    for j, (where, labels) in enumerate(ticks):
        ax.axvline(j, color="0.6", lw=0.8)
        for p, label in zip(where, labels, strict=True):
            ax.text(j + 0.03, p, label, fontsize=7, va="center")
    ax.set_xticks(range(len(axes)), [a.replace(".", ".\n", 1) for a in axes], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes) - 0.6)
    ax.set_title(f"{len(done)} trials, coloured by {metric} ({lo:.3f}-{hi:.3f}); dashed: stopped early", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_trial_curves(rows: list[dict[str, Any]], path: Path, key: str = "val_dice") -> Path:
    """Validation Dice per epoch, one line per trial (a sweep's learning curves side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in rows:
        h = r.get("history") or []
        if h:
            ax.plot([e["epoch"] for e in h], [e[key] for e in h], "o-", ms=3, label=f"{r['trial']} ({r['status']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if len(rows) <= 20:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
