"""Dots inside a blob: where they go (random or jittered lattice) and how they are drawn.

Dot centres are integer pixel coordinates chosen among the blob's own pixels, so every centre
lies in the mask by construction. Discs are stamped all at once with one vectorized scatter
instead of one ``skimage.draw.disk`` call per dot.
"""

from __future__ import annotations

import numpy as np

from dotseg.synthesis.config import DotsConfig
from dotseg.synthesis.shapes import Blob


def random_centres(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, n: int) -> np.ndarray:
    """``n`` centres uniform over the blob pixels (``ys``, ``xs``); (n, 2) int as (y, x)."""
    pick = rng.integers(0, len(ys), n)
    return np.stack([ys[pick], xs[pick]], axis=1)


def lattice_centres(rng: np.random.Generator, blob: Blob, n: int, jitter_px: float) -> np.ndarray:
    """A square lattice fitted to the blob's area (spacing sqrt(area / n)), randomly rotated and
    shifted, each point jittered uniformly by up to ``jitter_px`` per axis. A point whose jittered
    position leaves the blob falls back to its lattice position; points outside are dropped.
    Returns (k, 2) int (y, x) in frame coordinates; k is close to ``n`` but not exactly ``n``.
    """
    crop = blob.crop
    h, w = crop.shape
    spacing = max(np.sqrt(blob.area / n), 1.0)
    theta = rng.uniform(0.0, np.pi / 2)
    phase = rng.uniform(0.0, spacing, 2)
    half = 0.5 * np.hypot(h, w) + spacing
    steps = np.arange(-half, half + spacing, spacing)
    gu, gv = np.meshgrid(steps + phase[0], steps + phase[1], indexing="ij")
    c, s = np.cos(theta), np.sin(theta)
    py = h / 2.0 + c * gu.ravel() - s * gv.ravel()  # crop coordinates
    px = w / 2.0 + s * gu.ravel() + c * gv.ravel()
    jy = py + rng.uniform(-jitter_px, jitter_px, py.shape)
    jx = px + rng.uniform(-jitter_px, jitter_px, px.shape)

    def inside(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        iy, ix = np.rint(y).astype(np.int64), np.rint(x).astype(np.int64)
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        ok[ok] = crop[iy[ok], ix[ok]]
        return iy, ix, ok

    jy_i, jx_i, j_ok = inside(jy, jx)
    py_i, px_i, p_ok = inside(py, px)
    keep = j_ok | p_ok
    ys = np.where(j_ok, jy_i, py_i)[keep] + blob.origin[0]
    xs = np.where(j_ok, jx_i, px_i)[keep] + blob.origin[1]
    return np.stack([ys, xs], axis=1)


def place_dots(rng: np.random.Generator, cfg: DotsConfig, blob: Blob, size: int) -> tuple[str, np.ndarray]:
    """Choose the placement and the dots. Returns (placement, dots (n, 3) float32 as y, x, radius)."""
    scale = size / cfg.reference_size
    n = int(rng.integers(cfg.count[0], cfg.count[1] + 1))
    placement = cfg.placement[int(rng.integers(len(cfg.placement)))]
    ys, xs = np.nonzero(blob.crop)
    ys, xs = ys + blob.origin[0], xs + blob.origin[1]
    if placement == "lattice":
        centres = lattice_centres(rng, blob, n, cfg.jitter * size)
        # A lattice cannot hit an exact count; keep its count inside the configured range.
        if len(centres) > cfg.count[1]:
            centres = centres[np.sort(rng.permutation(len(centres))[: cfg.count[1]])]
        elif len(centres) < cfg.count[0]:
            centres = np.concatenate([centres, random_centres(rng, ys, xs, cfg.count[0] - len(centres))])
    else:
        centres = random_centres(rng, ys, xs, n)
    radii = rng.uniform(cfg.radius[0] * scale, cfg.radius[1] * scale, len(centres))
    dots = np.concatenate([centres.astype(np.float32), radii.astype(np.float32)[:, None]], axis=1)
    return placement, dots


def draw_dots(image: np.ndarray, dots: np.ndarray) -> None:
    """Stamp filled discs (value 1.0) into ``image`` (H, W) float32 in place.

    A pixel belongs to a disc when its centre is within the radius of the dot centre.
    """
    if len(dots) == 0:
        return
    reach = int(np.ceil(dots[:, 2].max()))
    offs = np.arange(-reach, reach + 1)
    dy, dx = np.meshgrid(offs, offs, indexing="ij")  # (K, K)
    d2 = (dy * dy + dx * dx).astype(np.float32)
    cy = dots[:, 0].astype(np.int64)[:, None, None]
    cx = dots[:, 1].astype(np.int64)[:, None, None]
    yy, xx = cy + dy, cx + dx  # (n, K, K)
    hit = d2[None] <= (dots[:, 2] ** 2)[:, None, None]
    h, w = image.shape
    hit &= (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    image[yy[hit], xx[hit]] = 1.0
