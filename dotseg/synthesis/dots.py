"""Dots inside a blob: where they go (random or jittered lattice) and how they are drawn.

Dot centres are integer pixel coordinates chosen among the blob's own pixels, so every centre
lies in the mask by construction. Discs are stamped all at once with one vectorized scatter
instead of one ``skimage.draw.disk`` call per dot.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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


def weighted_centres(
    rng: np.random.Generator, blob: Blob, ys: np.ndarray, xs: np.ndarray, n: int, placement: str
) -> np.ndarray:
    """``n`` centres drawn over the blob pixels with a density that is not uniform: ``clustered``
    (a mixture of 2-5 Gaussians of sigma ~0.15 of the shape's size around random blob pixels),
    ``gradient`` (rising linearly across the shape in a random direction, from 5 % to 100 %) or
    ``boundary`` (uniform within ~15 % of the shape's size of its outline, nothing deeper)."""
    scale = np.sqrt(blob.area)  # the shape's size, px
    if placement == "clustered":
        k = int(rng.integers(2, 6))
        pick = rng.integers(0, len(ys), k)
        sigma = 0.15 * scale
        d2 = (ys[:, None] - ys[pick][None]) ** 2 + (xs[:, None] - xs[pick][None]) ** 2  # (P, k)
        w = np.exp(-d2 / (2 * sigma * sigma)).sum(axis=1)
    elif placement == "gradient":
        theta = rng.uniform(0.0, 2 * np.pi)
        proj = ys * np.sin(theta) + xs * np.cos(theta)
        w = 0.05 + (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    else:  # boundary
        depth = ndimage.distance_transform_edt(np.pad(blob.crop, 1))[1:-1, 1:-1][blob.crop]  # in ys/xs order
        w = (depth <= max(0.15 * scale / np.sqrt(np.pi), 1.5)).astype(np.float64)
    pick = rng.choice(len(ys), n, p=w / w.sum())
    return np.stack([ys[pick], xs[pick]], axis=1)


def poisson_disc_centres(rng: np.random.Generator, blob: Blob, ys: np.ndarray, xs: np.ndarray, n: int) -> np.ndarray:
    """Blue noise: up to ``n`` centres no two closer than 0.7 of the lattice spacing sqrt(area / n),
    by dart throwing over the blob pixels (30 darts per dot); the rest, if the darts run out, uniform."""
    spacing2 = (0.7 * np.sqrt(blob.area / n)) ** 2
    darts = rng.integers(0, len(ys), 30 * n)
    kept: list[int] = []
    pts = np.empty((n, 2), dtype=np.float64)
    for d in darts:
        y, x = ys[d], xs[d]
        if kept and (((pts[: len(kept)] - (y, x)) ** 2).sum(axis=1) < spacing2).any():
            continue
        pts[len(kept)] = (y, x)
        kept.append(int(d))
        if len(kept) == n:
            break
    centres = np.stack([ys[kept], xs[kept]], axis=1)
    if len(kept) < n:
        centres = np.concatenate([centres, random_centres(rng, ys, xs, n - len(kept))])
    return centres


#: Placements drawn by :func:`weighted_centres`.
_WEIGHTED = ("clustered", "gradient", "boundary")


def place_dots(rng: np.random.Generator, cfg: DotsConfig, blob: Blob, size: int) -> tuple[str, np.ndarray]:
    """Choose the placement and the dots. Returns (placement, dots (n, 3) float32 as y, x, radius)."""
    scale = size / cfg.reference_size
    n = int(rng.integers(cfg.count[0], cfg.count[1] + 1))
    placement = cfg.placement[int(rng.integers(len(cfg.placement)))]
    ys, xs = np.nonzero(blob.crop)
    ys, xs = ys + blob.origin[0], xs + blob.origin[1]
    if placement in _WEIGHTED:
        centres = weighted_centres(rng, blob, ys, xs, n, placement)
    elif placement == "poisson_disc":
        centres = poisson_disc_centres(rng, blob, ys, xs, n)
    elif placement == "lattice":
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


def draw_varied_dots(
    image: np.ndarray,
    dots: np.ndarray,
    profile: str,
    aspect: np.ndarray,
    angle: np.ndarray,
    amplitude: np.ndarray,
) -> None:
    """Stamp dots that are not the seed's unit discs into ``image`` (H, W) float32 in place: per dot
    an elongation ``aspect`` (>= 1, area kept), an orientation ``angle`` (rad) and a peak
    ``amplitude``; ``profile`` ``disc`` (hard edge) or ``gaussian`` (sigma = radius / 2). Where dots
    overlap the brighter one wins, as with the seed's discs."""
    if len(dots) == 0:
        return
    major = dots[:, 2] * np.sqrt(aspect)  # semi-axes keeping the round dot's area
    minor = dots[:, 2] / np.sqrt(aspect)
    reach = int(np.ceil(major.max() * (1.5 if profile == "gaussian" else 1.0))) + 1
    offs = np.arange(-reach, reach + 1)
    dy, dx = np.meshgrid(offs, offs, indexing="ij")  # (K, K)
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (dx[None] * c + dy[None] * s) / major[:, None, None]  # (n, K, K), along the long axis
    v = (-dx[None] * s + dy[None] * c) / minor[:, None, None]
    r2 = u * u + v * v  # 1 on the dot's outline
    if profile == "gaussian":
        value = np.exp(-2.0 * r2) * amplitude[:, None, None]  # sigma = radius / 2
        value[value < 1e-3] = 0.0  # finite support: poisson/speckle only touch the signal's pixels
    else:
        value = np.where(r2 <= 1.0, amplitude[:, None, None], 0.0)
    cy = dots[:, 0].astype(np.int64)[:, None, None]
    cx = dots[:, 1].astype(np.int64)[:, None, None]
    yy, xx = cy + dy, cx + dx  # (n, K, K)
    h, w = image.shape
    hit = (value > 0) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    np.maximum.at(image, (yy[hit], xx[hit]), value[hit].astype(np.float32))
