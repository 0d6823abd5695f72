"""Organic blob silhouettes: closed cubic Bézier outlines through 5-15 control points.

The control points sit at jittered, evenly spread angles around a centre with radii that vary
by the sample's irregularity, so the outline is star-shaped and rarely crosses itself; the
rasterized mask is still cleaned to one 4-connected, hole-free region, which is what the ground
truth promises (a rare pixel-thin neck could otherwise split it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from dotseg.masks import largest_component
from dotseg.synthesis.config import ShapeConfig

#: Points sampled on each cubic segment when the outline is turned into a polygon.
_SEGMENT_SAMPLES = 20
_T = np.linspace(0.0, 1.0, _SEGMENT_SAMPLES, endpoint=False)[:, None]  # (S, 1)
_BERNSTEIN = np.concatenate([(1 - _T) ** 3, 3 * (1 - _T) ** 2 * _T, 3 * (1 - _T) * _T**2, _T**3], axis=1)  # (S, 4)


@dataclass(frozen=True, slots=True)
class Blob:
    """One rasterized silhouette and the parameters that made it.

    Only the bounding-box crop is stored: drawing and cleaning a quarter of the frame instead of
    all of it is most of what makes synthesis cheap at 512 px.
    """

    crop: np.ndarray
    """(h, w) bool: the mask inside its bounding box, one simply-connected region."""
    origin: tuple[int, int]
    """(y0, x0) of the crop in the frame."""
    n_control: int
    radius: float
    """Mean radius as a fraction of the side (after any shrinking to fit the frame)."""
    irregularity: float
    smoothness: float
    center: tuple[float, float]
    """(y, x) of the outline's centre, in px."""
    area: int
    """Foreground pixels."""

    def paste(self, mask: np.ndarray) -> None:
        """Write the blob into a zeroed full-frame ``mask`` (H, W) in place."""
        y0, x0 = self.origin
        h, w = self.crop.shape
        mask[y0 : y0 + h, x0 : x0 + w] = self.crop


def bezier_outline(control: np.ndarray, smoothness: float) -> np.ndarray:
    """Closed C1 curve through ``control`` (N, 2) as a polygon (N * S, 2).

    Each segment p_i -> p_{i+1} is a cubic Bézier whose handles follow the Catmull-Rom tangent
    at its ends, ``smoothness`` times the segment length long: the curve passes through every
    control point and is smooth there.
    """
    prev_pts = np.roll(control, 1, axis=0)
    next_pts = np.roll(control, -1, axis=0)
    tangent = next_pts - prev_pts  # (N, 2)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
    seg_len = np.linalg.norm(next_pts - control, axis=1, keepdims=True)  # (N, 1)
    c1 = control + smoothness * seg_len * tangent
    c2 = next_pts - smoothness * seg_len * np.roll(tangent, -1, axis=0)
    nodes = np.stack([control, c1, c2, next_pts], axis=1)  # (N, 4, 2)
    curve = np.einsum("sk,nkd->nsd", _BERNSTEIN, nodes)  # (N, S, 2)
    return curve.reshape(-1, 2)


def make_blob(
    rng: np.random.Generator, cfg: ShapeConfig, size: int, kind: str = "bezier", position: str = "anywhere"
) -> Blob:
    """Draw one blob with ``rng`` on a ``size`` x ``size`` frame.

    ``kind`` and ``position`` are the sample's draws from ``cfg.kinds`` and ``cfg.position`` (made by
    the caller from the variation stream); the seed's ``bezier`` / ``anywhere`` draw exactly what
    they always drew from ``rng``.
    """
    n = int(rng.integers(cfg.control_points[0], cfg.control_points[1] + 1))
    radius = float(rng.uniform(*cfg.radius))
    irregularity = float(rng.uniform(*cfg.irregularity))
    smoothness = float(rng.uniform(*cfg.smoothness))
    rotation = rng.uniform(0.0, 2 * np.pi)
    unit = _OUTLINES[kind](rng, cfg, n, irregularity, smoothness, rotation)  # (P, 2) as (x, y), mean radius ~1
    outline = unit * (radius * size)  # (P, 2) px, centred at 0

    # Place it: scale down if the outline would not fit between the margins, then translate
    # uniformly over every position that keeps it inside.
    lo_xy, hi_xy = outline.min(axis=0), outline.max(axis=0)
    margin = cfg.margin * size + 1.0
    room = size - 2 * margin
    extent = float((hi_xy - lo_xy).max())
    if extent > room:
        outline *= room / extent
        radius *= room / extent
        lo_xy, hi_xy = outline.min(axis=0), outline.max(axis=0)
    if position == "corner":  # against a random corner, inside the margins
        side = rng.integers(0, 2, 2)
        shift = np.where(side == 0, margin - lo_xy, size - margin - hi_xy)
    else:
        # An outline scaled to fill the room exactly can overshoot it by a rounding error: the range
        # then collapses to its lower end (as it would for an exact fit) instead of failing.
        low, high = margin - lo_xy, size - margin - hi_xy
        shift = np.array([rng.uniform(low[i], max(low[i], high[i])) for i in range(2)])
    outline += shift

    # Rasterize only the bounding box (plus one pixel of border for the hole filling).
    x0, y0 = np.floor(outline.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(outline.max(axis=0)).astype(int) + 2
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, size), min(x1, size)
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(img).polygon((outline - (x0, y0)).ravel().tolist(), fill=1, outline=1)
    crop = _one_region(np.asarray(img, dtype=bool))
    rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
    crop = crop[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return Blob(
        crop=np.ascontiguousarray(crop),
        origin=(y0 + int(rows[0]), x0 + int(cols[0])),
        n_control=n,
        radius=radius,
        irregularity=irregularity,
        smoothness=smoothness,
        center=(float(shift[1]), float(shift[0])),
        area=int(crop.sum()),
    )


def _bezier(
    rng: np.random.Generator, cfg: ShapeConfig, n: int, irregularity: float, smoothness: float, rotation: float
) -> np.ndarray:
    """The seed's outline: evenly spread angles with bounded jitter keep the control polygon
    star-shaped around the centre, so the Bézier curve through it stays simple for all but extreme
    parameters."""
    angles = rotation + (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n)
    return _bezier_through(rng, angles, irregularity, smoothness)


def _bezier_free(
    rng: np.random.Generator, cfg: ShapeConfig, n: int, irregularity: float, smoothness: float, rotation: float
) -> np.ndarray:
    """Another anchor scheme: control points at uniformly random angles (sorted), so gaps between
    anchors range from tiny to wide: long smooth arcs next to tight bends."""
    angles = rotation + np.sort(rng.uniform(0.0, 2 * np.pi, n))
    return _bezier_through(rng, angles, irregularity, smoothness)


def _bezier_through(rng: np.random.Generator, angles: np.ndarray, irregularity: float, smoothness: float) -> np.ndarray:
    radii = np.clip(1.0 + irregularity * rng.uniform(-1.0, 1.0, len(angles)), 0.25, 2.0)
    control = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)  # (N, 2) as (x, y)
    return bezier_outline(control, smoothness)


#: Outline points of the radial constructions (Fourier, superellipse).
_RADIAL_POINTS = 256


def _fourier(
    rng: np.random.Generator, cfg: ShapeConfig, n: int, irregularity: float, smoothness: float, rotation: float
) -> np.ndarray:
    """A radial Fourier series r(t) = 1 + sum_k a_k cos(k t + phi_k), k = 2 .. n/2 + 1, with a_k
    drawn up to ``irregularity`` / k^0.8: low harmonics bend the outline, high ones add lobes; a
    high irregularity makes deep concavities. Radii are floored at 0.2 so the outline stays simple."""
    harmonics = np.arange(2, max(n // 2, 1) + 2)
    amps = irregularity * rng.uniform(0.0, 1.0, len(harmonics)) / harmonics**0.8
    phases = rng.uniform(0.0, 2 * np.pi, len(harmonics))
    t = np.linspace(0.0, 2 * np.pi, _RADIAL_POINTS, endpoint=False)
    r = 1.0 + (amps[:, None] * np.cos(harmonics[:, None] * t + phases[:, None])).sum(axis=0)
    r = np.maximum(r, 0.2)
    return np.stack([np.cos(t + rotation) * r, np.sin(t + rotation) * r], axis=1)


def _superellipse(
    rng: np.random.Generator, cfg: ShapeConfig, n: int, irregularity: float, smoothness: float, rotation: float
) -> np.ndarray:
    """|x/a|^p + |y/b|^p = 1, rotated, with p from ``cfg.exponent`` and the aspect b/a shrinking
    with ``irregularity`` (a circle-ish blob at 0, up to 2.5:1 at 0.9). Scaled to mean radius ~1."""
    p = float(rng.uniform(*cfg.exponent))
    aspect = 1.0 - irregularity * rng.uniform(0.0, 0.67)
    t = np.linspace(0.0, 2 * np.pi, _RADIAL_POINTS, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = np.sign(c) * np.abs(c) ** (2.0 / p)
    y = aspect * np.sign(s) * np.abs(s) ** (2.0 / p)
    pts = np.stack([x, y], axis=1)
    pts /= max(float(np.sqrt((pts**2).sum(axis=1)).mean()), 1e-6)
    rot = np.array([[np.cos(rotation), -np.sin(rotation)], [np.sin(rotation), np.cos(rotation)]])
    return pts @ rot.T


_OUTLINES = {"bezier": _bezier, "bezier_free": _bezier_free, "fourier": _fourier, "superellipse": _superellipse}


def _one_region(crop: np.ndarray) -> np.ndarray:
    """Largest 4-connected component of ``crop`` with its holes filled (background pixels not
    4-connected to the crop's border join the shape)."""
    crop = largest_component(crop)
    padded = np.pad(~crop, 1, constant_values=True)
    background, _ = ndimage.label(padded)
    return background[1:-1, 1:-1] != background[0, 0]
