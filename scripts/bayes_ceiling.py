"""How far the model is from the best any segmenter can do on the seed's clean random-placement images.

    python scripts/bayes_ceiling.py [--n 40] [--sweeps 2000] [--dots MIN MAX] [--checkpoint shipped] [--out DIR]

A clean image of the seed's generator shows only its dots, and with ``random`` placement the dot
centres are uniform over the shape's pixels. So everything an image says about its shape is the
posterior p(shape | centres) ∝ prior(shape) · area^-N · [every centre inside the shape], where the
prior is the generator's own (closed Catmull-Rom Bézier through 5-15 control points, its radius,
irregularity, smoothness, rotation, angle jitter and position draws). The prediction with the best
expected Dice is (close to) a threshold of the posterior's per-pixel mean, and its Dice against the
truth, averaged over images, is the ceiling of every segmenter on those images.

This script samples that posterior by MCMC (:func:`sample_posterior`), rasterizes the draws with
the generator's own code, thresholds their mean where the draws themselves expect the best Dice,
and scores it against the truth beside the model. Per image and per dot-count bin:

- ``posterior mean``: the chain is told the true number of control points (extra knowledge, which
  can only help it) and starts from a shape around the dots;
- ``posterior mean, n = 10``: the same chain told nothing of the truth (10 control points always,
  the middle of the seed's 5-15). It is a function of the dots alone, like the model; so whatever it
  scores, the ceiling is at least that, however well or badly the chain mixed (a chain that mixed
  badly is only a worse estimator);
- ``expected by the posterior``: the Dice the posterior expects of its own prediction (no truth);
- ``posterior mean on a 1/4 grid``: the posterior mean averaged onto the 128x128 grid that a
  ``downscale: 4`` network computes on and upsampled as its logits are: what that grid alone costs;
- ``model``: the model's Dice on the same clean image.

Only ``random`` placement has a likelihood this simple (a jittered lattice's does not), so the
table is for random-placement images; on the benchmark the lattice images are easier for every
model (the shipped model: 0.951 against 0.923 on clean images).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dotseg.evaluation import EVAL_SEED
from dotseg.metrics import segmentation_metrics
from dotseg.synthesis import SynthesisConfig, make_sample
from dotseg.synthesis.generate import _GEOMETRY_STREAM
from dotseg.synthesis.shapes import _one_region, bezier_outline

DOT_BINS = ((0, 30), (30, 50), (50, 1 << 30))
THRESHOLDS = np.round(np.arange(0.30, 0.701, 0.025), 3)
#: Centres within this distance (px) outside the continuous outline are inside the raster: the
#: generator draws the polygon with its outline, which adds about half a pixel all round.
TOLERANCE = 0.71
#: Beyond this distance (px) outside the continuous outline no pixel centre is in the raster.
RASTER_REACH = 1.5
#: The number of control points the blind chain assumes: the middle of the seed's 5-15.
BLIND_CONTROL = 10


class Problem:
    """One image's geometry: the generator's prior for its size, the dot centres, and the shape's
    parameters as a flat vector [R, irregularity, smoothness, rotation, shift_x, shift_y, u_0..u_n-1,
    v_0..v_n-1] (u: angle jitter in steps of 2 pi / n, v: radius jitter in units of irregularity)."""

    def __init__(self, cfg: SynthesisConfig, n_control: int, centres: np.ndarray) -> None:
        shape = cfg.shape
        self.size, self.n = cfg.size, n_control
        self.margin = shape.margin * cfg.size + 1.0
        n = n_control
        self.lo = np.array([shape.radius[0], shape.irregularity[0], shape.smoothness[0], -np.inf, 0, 0])
        self.hi = np.array([shape.radius[1], shape.irregularity[1], shape.smoothness[1], np.inf, cfg.size, cfg.size])
        self.lo = np.concatenate([self.lo, np.full(n, -0.3), np.full(n, -1.0)])
        self.hi = np.concatenate([self.hi, np.full(n, 0.3), np.full(n, 1.0)])
        self.xy = centres[:, ::-1].astype(np.float64)  # (N, 2) as (x, y)
        self.count = len(centres)

    def unit(self, theta: np.ndarray) -> np.ndarray:
        """The outline at the origin, px (before translation): the generator's ``_bezier`` exactly."""
        n = self.n
        radius, irregularity, smoothness, rotation = theta[:4]
        angles = rotation + (np.arange(n) + theta[6 : 6 + n]) * (2 * np.pi / n)
        radii = np.clip(1.0 + irregularity * theta[6 + n :], 0.25, 2.0)
        control = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
        return bezier_outline(control, smoothness) * (radius * self.size)

    def outline(self, theta: np.ndarray) -> tuple[np.ndarray, float] | None:
        """(polygon (P, 2) as (x, y) px, log prior density of the shift) or None outside the prior.

        The generator translates the outline uniformly over the positions that keep it inside the
        margins, so the shift's density is 1 / (its range) per axis. Outlines too big for the frame
        (which the generator would shrink) are left out of the prior: they are vanishingly rare."""
        poly = self.unit(theta)
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        low, high = self.margin - lo, self.size - self.margin - hi
        span = high - low
        shift = theta[4:6]
        if (span <= 0).any() or (shift < low).any() or (shift > high).any():
            return None
        return poly + shift, -float(np.log(span).sum())

    def log_post(self, theta: np.ndarray) -> float:
        """log prior + log likelihood, up to a constant; -inf outside the support."""
        if (theta < self.lo).any() or (theta > self.hi).any():
            return -math.inf
        got = self.outline(theta)
        if got is None:
            return -math.inf
        poly, log_prior = got
        if not _all_inside(poly, self.xy):
            return -math.inf
        return log_prior - self.count * math.log(_raster_area(poly))

    def violation(self, theta: np.ndarray) -> float:
        """How far ``theta`` is from the support (0 inside it): px of the outline beyond the margins
        plus px of every dot outside the outline. Only the start's search uses it."""
        poly = self.unit(theta)
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        low, high = self.margin - lo, self.size - self.margin - hi
        shift = theta[4:6]
        frame = float(np.maximum(low - shift, 0).sum() + np.maximum(shift - high, 0).sum())
        return frame + float(_outside(poly + shift, self.xy).sum())

    def reflect(self, j: int, x: float) -> float:
        """Coordinate ``j`` moved to ``x``, reflected into the prior's range (rotation is free)."""
        lo, hi = self.lo[j], self.hi[j]
        if not math.isfinite(lo):
            return x
        span = hi - lo
        return float(lo + abs((x - lo + span) % (2 * span) - span))

    def mask(self, theta: np.ndarray) -> np.ndarray:
        """The full-frame mask the generator would rasterize for ``theta``."""
        got = self.outline(theta)
        assert got is not None
        poly = got[0]
        img = Image.new("L", (self.size, self.size), 0)
        ImageDraw.Draw(img).polygon(poly.ravel().tolist(), fill=1, outline=1)
        return _one_region(np.asarray(img, dtype=bool))


def _raster_area(poly: np.ndarray) -> float:
    """About the pixel count of the generator's raster of the closed polygon: its area plus half
    its perimeter (the drawn outline adds about half a pixel all round)."""
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    perimeter = float(np.hypot(*(np.roll(poly, -1, axis=0) - poly).T).sum())
    return area + 0.5 * perimeter


def _all_inside(poly: np.ndarray, pts: np.ndarray) -> bool:
    """Whether the generator's raster of the polygon holds every point (a pixel centre).

    Points inside the continuous outline or within :data:`TOLERANCE` of it are in the raster; the
    few just beyond (up to :data:`RASTER_REACH` px, where the drawn outline may still cover them) are
    settled by rasterizing the polygon around that pixel with the generator's own call."""
    gaps = _outside(poly, pts)
    if not gaps.any():
        return True
    if (gaps > RASTER_REACH - TOLERANCE).any():
        return False
    for x, y in pts[gaps > 0].astype(np.int64):
        # A 9x9 window around the pixel: smaller ones clip the outline differently from the full
        # frame (a 1x1 one disagreed on 3 % of boundary pixels; 9x9 on none of 6120).
        img = Image.new("L", (9, 9), 0)
        ImageDraw.Draw(img).polygon((poly - (x - 4, y - 4)).ravel().tolist(), fill=1, outline=1)
        if not img.getpixel((4, 4)):
            return False
    return True


def _outside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N,) px by which each point lies outside the closed polygon beyond :data:`TOLERANCE` (0 if not)."""
    a, b = poly, np.roll(poly, -1, axis=0)
    px, py = pts[:, 0:1], pts[:, 1:2]
    ay, by = a[None, :, 1], b[None, :, 1]
    crosses = (ay > py) != (by > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        xcross = a[None, :, 0] + (py - ay) * (b[None, :, 0] - a[None, :, 0]) / (by - ay)
    inside = ((crosses & (px < xcross)).sum(axis=1) % 2) == 1
    gaps = np.zeros(len(pts))
    if inside.all():
        return gaps
    out = pts[~inside]
    d = b - a
    t = np.clip(((out[:, None] - a[None]) * d[None]).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0, 1)
    near = np.hypot(*(a[None] + t[..., None] * d[None] - out[:, None]).transpose(2, 0, 1)).min(axis=1)
    gaps[~inside] = np.maximum(near - TOLERANCE, 0.0)
    return gaps


def true_theta(cfg: SynthesisConfig, seed: int, index: int) -> tuple[int, np.ndarray] | None:
    """The shape parameters the generator drew for sample ``index`` (its geometry stream replayed in
    :func:`dotseg.synthesis.shapes.make_blob`'s order), or None if it shrank the outline to fit."""
    rng = np.random.default_rng([int(seed), int(index), _GEOMETRY_STREAM])
    shape, size = cfg.shape, cfg.size
    n = int(rng.integers(shape.control_points[0], shape.control_points[1] + 1))
    radius = float(rng.uniform(*shape.radius))
    irregularity = float(rng.uniform(*shape.irregularity))
    smoothness = float(rng.uniform(*shape.smoothness))
    rotation = rng.uniform(0.0, 2 * np.pi)
    u = rng.uniform(-0.3, 0.3, n)
    v = rng.uniform(-1.0, 1.0, n)
    theta = np.concatenate([[radius, irregularity, smoothness, rotation, 0.0, 0.0], u, v])
    problem = Problem(cfg, n, np.zeros((0, 2)))
    poly = problem.unit(theta)
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    margin = shape.margin * size + 1.0
    if float((hi - lo).max()) > size - 2 * margin:
        return None
    low, high = margin - lo, size - margin - hi
    theta[4:6] = [rng.uniform(low[i], max(low[i], high[i])) for i in range(2)]
    return n, theta


def start_from_dots(problem: Problem, rng: np.random.Generator) -> np.ndarray:
    """A shape that contains every dot and knows nothing else: control points at even angles around
    the dots' centre, on the dots' convex hull pushed out a little, then moved one coordinate at a
    time until no dot is left outside and the outline fits the frame (the chain then finds what
    the dots support)."""
    from scipy.spatial import ConvexHull

    n, size = problem.n, problem.size
    hull = problem.xy[ConvexHull(problem.xy).vertices]
    centre = hull.mean(axis=0)
    rotation = rng.uniform(0, 2 * np.pi)
    radii = _hull_reach(hull - centre, rotation + np.arange(n) * (2 * np.pi / n)) + 3.0
    irregularity = problem.hi[1]
    scale = float(np.clip(radii.max() / (1 + irregularity), problem.lo[0] * size, problem.hi[0] * size))
    v = np.clip((radii / scale - 1) / irregularity, -1.0, 1.0)
    theta = np.concatenate([[scale / size, irregularity, 0.35, rotation, *centre], np.zeros(n), v])
    bad = problem.violation(theta)
    step = np.where(np.isfinite(problem.hi - problem.lo), problem.hi - problem.lo, 2 * np.pi) * 0.02
    step[4:6] = 2.0
    for _ in range(400):
        if bad == 0.0 and math.isfinite(problem.log_post(theta)):
            return theta
        for j in rng.permutation(len(theta)):
            proposal = theta.copy()
            proposal[j] = problem.reflect(j, theta[j] + step[j] * rng.standard_normal())
            worse = problem.violation(proposal)
            if worse <= bad:
                theta, bad = proposal, worse
    raise RuntimeError("no start around the dots holds every dot")


def _hull_reach(hull: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Distance from the origin (inside the convex polygon ``hull``) to its edge along each angle."""
    a, b = hull, np.roll(hull, -1, axis=0)
    d = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (n, 2)
    e = b - a  # (k, 2)
    # origin + t d = a + s e  ->  t = cross(a, e) / cross(d, e), s = cross(a, d) / cross(d, e)
    den = d[:, None, 0] * e[None, :, 1] - d[:, None, 1] * e[None, :, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (a[None, :, 0] * e[None, :, 1] - a[None, :, 1] * e[None, :, 0]) / den
        s = (a[None, :, 0] * d[:, None, 1] - a[None, :, 1] * d[:, None, 0]) / den
    ok = (s >= -1e-9) & (s <= 1 + 1e-9) & (t > 0)
    return np.where(ok, t, np.inf).min(axis=1)


def sample_posterior(
    problem: Problem, theta: np.ndarray, rng: np.random.Generator, sweeps: int, burn: int, thin: int
) -> list[np.ndarray]:
    """Draws of ``theta`` from the posterior, every ``thin``-th sweep after ``burn``.

    The chain does not walk the generator's own coordinates: there, moving the radius or the
    rotation moves every control point at once, which the dots almost always refuse. It walks the same
    distribution in other coordinates: the control points' absolute positions P (n, 2) and the
    smoothness, which alone fix the outline, beside the generator's centre c, mean radius R,
    irregularity and rotation, which then only enter the prior. The density of (P, c, R,
    irregularity, rotation) is the generator's uniform one times the Jacobian of
    (rotation, u, v) -> P: prod 1 / (R * size * irregularity * r_i) (dropping constants), where r_i
    is |P_i - c|. Moves: each control point alone; the smoothness; the whole outline scaled about c,
    translated, rotated about c (its hyperparameters moving with it); and, costing no outline,
    c, R, irregularity and rotation alone. Gaussian steps, adapted towards ~30 % acceptance during
    burn-in, then frozen.

    It still mixes slowly: the area's autocorrelation lasts ~50 sweeps, and four chains of one
    image scored 0.940-0.951 against its truth. So a single image's result carries MCMC noise; the
    means over images do not (their standard errors are in the table), and the blind chain's score
    bounds the ceiling from below however it mixed.
    """
    chain = _PointChain(problem, theta)
    assert math.isfinite(chain.lp), "the start must hold every dot"
    draws = []
    for sweep in range(sweeps):
        chain.sweep(rng, adapt=sweep < burn)
        if sweep >= burn and (sweep - burn) % thin == 0:
            theta = chain.theta()
            assert math.isfinite(problem.log_post(theta)), "a draw left the support"
            draws.append(theta)
    return draws


class _PointChain:
    """The Markov chain of :func:`sample_posterior`, in control-point coordinates."""

    def __init__(self, problem: Problem, theta: np.ndarray) -> None:
        self.problem, n, size = problem, problem.n, problem.size
        radius, self.irr, self.sm, self.rot = (float(v) for v in theta[:4])
        self.big_r = radius * size  # px
        self.c = theta[4:6].astype(np.float64).copy()
        angles = self.rot + (np.arange(n) + theta[6 : 6 + n]) * (2 * np.pi / n)
        radii = self.big_r * (1.0 + self.irr * theta[6 + n :])
        self.P = self.c + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
        self.lik = self._likelihood(self.P, self.sm)
        self.prior = self._prior(self.P, self.c, self.big_r, self.irr, self.rot)
        self.lp = self.lik + self.prior
        self.step = {
            "point": 2.0,
            "sm": 0.02,
            "scale": 0.01,
            "move": 1.0,
            "turn": 0.01,
            "c": 2.0,
            "R": 0.02,
            "irr": 0.02,
            "rot": 0.02,
        }

    def theta(self) -> np.ndarray:
        """The state in the generator's coordinates."""
        n, size = self.problem.n, self.problem.size
        d = self.P - self.c
        r = np.hypot(d[:, 0], d[:, 1])
        phase = np.arctan2(d[:, 1], d[:, 0]) - self.rot - np.arange(n) * (2 * np.pi / n)
        u = (phase + np.pi) % (2 * np.pi) - np.pi
        v = (r / self.big_r - 1.0) / self.irr
        head = [self.big_r / size, self.irr, self.sm, self.rot % (2 * np.pi), *self.c]
        return np.concatenate([head, u / (2 * np.pi / n), v])

    def _prior(self, points: np.ndarray, c: np.ndarray, big_r: float, irr: float, rot: float) -> float:
        """log prior density of everything but the outline's own support (see :meth:`_likelihood`)."""
        pr, n, size = self.problem, self.problem.n, self.problem.size
        if not (pr.lo[0] * size - 1e-9 <= big_r <= pr.hi[0] * size + 1e-9 and pr.lo[1] <= irr <= pr.hi[1]):
            return -math.inf
        d = points - c
        r = np.hypot(d[:, 0], d[:, 1])
        v = (r / big_r - 1.0) / irr
        phase = np.arctan2(d[:, 1], d[:, 0]) - rot - np.arange(n) * (2 * np.pi / n)
        u = ((phase + np.pi) % (2 * np.pi) - np.pi) / (2 * np.pi / n)
        if (np.abs(v) > 1.0 + 1e-9).any() or (np.abs(u) > 0.3 + 1e-9).any():  # a start may sit on the bound
            return -math.inf
        return -n * math.log(big_r * irr) - float(np.log(r).sum())

    def _likelihood(self, points: np.ndarray, sm: float) -> float:
        """log of: area^-N if every dot is inside and the outline fits the margins (times the
        shift's density 1 / span per axis), else -inf."""
        pr = self.problem
        if not pr.lo[2] <= sm <= pr.hi[2]:
            return -math.inf
        poly = bezier_outline(points, sm)
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        if (lo < pr.margin).any() or (hi > pr.size - pr.margin).any():
            return -math.inf
        span = pr.size - 2 * pr.margin - (hi - lo)
        if not _all_inside(poly, pr.xy):
            return -math.inf
        return -float(np.log(span).sum()) - pr.count * math.log(_raster_area(poly))

    def _try(
        self,
        kind: str,
        rng: np.random.Generator,
        adapt: bool,
        points: np.ndarray | None,
        sm: float,
        c: np.ndarray,
        big_r: float,
        irr: float,
        rot: float,
        log_jacobian: float = 0.0,
    ) -> None:
        lik = self.lik if points is None else self._likelihood(points, sm)
        points = self.P if points is None else points
        prior = self._prior(points, c, big_r, irr, rot) if math.isfinite(lik) else -math.inf
        accept = math.log(rng.random() + 1e-300) < lik + prior + log_jacobian - self.lp
        if accept:
            self.P, self.sm, self.c, self.big_r, self.irr, self.rot = points, sm, c, big_r, irr, rot
            self.lik, self.prior, self.lp = lik, prior, lik + prior
        if adapt:
            self.step[kind] *= math.exp((0.7 if accept else -0.3) * 0.05)

    def sweep(self, rng: np.random.Generator, adapt: bool) -> None:
        n, st = self.problem.n, self.step
        for i in rng.permutation(n):
            points = self.P.copy()
            points[i] += st["point"] * rng.standard_normal(2)
            self._try("point", rng, adapt, points, self.sm, self.c, self.big_r, self.irr, self.rot)
        self._try(
            "sm",
            rng,
            adapt,
            self.P.copy(),
            self.sm + st["sm"] * rng.standard_normal(),
            self.c,
            self.big_r,
            self.irr,
            self.rot,
        )
        e = st["scale"] * rng.standard_normal()  # P and R scaled by exp(e): Jacobian exp((2n + 1) e)
        self._try(
            "scale",
            rng,
            adapt,
            self.c + (self.P - self.c) * math.exp(e),
            self.sm,
            self.c,
            self.big_r * math.exp(e),
            self.irr,
            self.rot,
            (2 * n + 1) * e,
        )
        delta = st["move"] * rng.standard_normal(2)
        self._try("move", rng, adapt, self.P + delta, self.sm, self.c + delta, self.big_r, self.irr, self.rot)
        a = st["turn"] * rng.standard_normal()
        turn = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # row vectors: rotate by a
        self._try(
            "turn", rng, adapt, self.c + (self.P - self.c) @ turn, self.sm, self.c, self.big_r, self.irr, self.rot + a
        )
        for _ in range(5):  # the outline stays: only the prior is computed
            c = self.c + st["c"] * rng.standard_normal(2)
            self._try("c", rng, adapt, None, self.sm, c, self.big_r, self.irr, self.rot)
            h = st["R"] * rng.standard_normal()  # R moves on a log scale: Jacobian exp(h)
            self._try("R", rng, adapt, None, self.sm, self.c, self.big_r * math.exp(h), self.irr, self.rot, h)
            irr = self.irr + st["irr"] * rng.standard_normal()
            self._try("irr", rng, adapt, None, self.sm, self.c, self.big_r, irr, self.rot)
            rot = self.rot + st["rot"] * rng.standard_normal()
            self._try("rot", rng, adapt, None, self.sm, self.c, self.big_r, self.irr, rot)


def bayes_prediction(problem: Problem, draws: list[np.ndarray]) -> tuple[np.ndarray, float, float, np.ndarray]:
    """(prediction mask, its posterior-expected Dice, threshold, posterior mean): the threshold of
    the posterior mean with the best expected Dice over the posterior's own draws."""
    masks = np.stack([problem.mask(t) for t in draws])  # (K, H, W)
    q = masks.mean(axis=0)
    sizes = masks.reshape(len(masks), -1).sum(axis=1)
    best = (-1.0, 0.5, q >= 0.5)
    for t in THRESHOLDS:
        pred = q >= t
        inter = masks[:, pred].sum(axis=1)
        expected = float(np.mean(2 * inter / np.maximum(pred.sum() + sizes, 1)))
        if expected > best[0]:
            best = (expected, float(t), pred)
    return best[2], best[0], best[1], q


def on_coarse_grid(q: np.ndarray, threshold: float, factor: int = 4) -> np.ndarray:
    """The posterior mean as a ``downscale`` network must give it: averaged onto the 1/``factor``
    grid it computes on, as logits, upsampled bilinearly as its logits are, then thresholded."""
    import torch
    import torch.nn.functional as F

    h, w = q.shape
    pooled = np.clip(q.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3)), 1e-4, 1 - 1e-4)
    logits = torch.from_numpy(np.log(pooled / (1 - pooled)))[None, None]
    up = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    return up >= math.log(threshold / (1 - threshold))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="random-placement clean images (default 40)")
    ap.add_argument(
        "--dots",
        type=int,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="draw MIN-MAX dots instead of the seed's 15-80 (the shift suite's 5-14, say); nothing else changes",
    )
    ap.add_argument("--sweeps", type=int, default=2000, help="MCMC sweeps per chain (default 2000)")
    ap.add_argument("--burn", type=int, default=500, help="of which burn-in (default 500)")
    ap.add_argument("--thin", type=int, default=3)
    ap.add_argument("--checkpoint", default=None, help="model to compare (default: the shipped one); 'none' skips")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write bayes_ceiling[_MIN-MAX_dots].md and .json here")
    args = ap.parse_args()
    cfg = SynthesisConfig.from_dict({"size": 512, **({"dots": {"count": args.dots}} if args.dots else {})})
    seed = EVAL_SEED + 1  # the clean images of scripts/ceiling.py
    model = None
    if args.checkpoint != "none":
        from dotseg.inference.predictor import Predictor

        model = Predictor.from_checkpoint(args.checkpoint, threads=args.threads, engine="eager", precision="fp32")
    rows: list[dict[str, float]] = []
    index, t0 = 0, time.time()
    while len(rows) < args.n:
        sample = make_sample(cfg, seed, index, noisy=False)
        index += 1
        if sample.meta["placement"] != "random":
            continue
        truth = sample.mask.astype(bool)
        got = true_theta(cfg, seed, index - 1)
        if got is None:
            continue
        n_control, theta_true = got
        centres = sample.dots[~np.isnan(sample.dots[:, 0]), :2].astype(np.int64)
        replay = Problem(cfg, n_control, centres).mask(theta_true)
        assert (replay == truth).all(), "the replayed shape differs from the generator's"
        rng = np.random.default_rng([seed, index - 1, 7])
        row: dict[str, float] = {"index": index - 1, "dots": len(centres), "control": n_control}
        for name, n in (("known_n", n_control), ("blind", BLIND_CONTROL)):
            problem = Problem(cfg, n, centres)
            draws = sample_posterior(problem, start_from_dots(problem, rng), rng, args.sweeps, args.burn, args.thin)
            pred, expected, threshold, q = bayes_prediction(problem, draws)
            row[name] = segmentation_metrics(pred, truth)["dice"]
            if name == "known_n":
                row["expected"], row["threshold"] = expected, threshold
                row["coarse"] = segmentation_metrics(on_coarse_grid(q, threshold), truth)["dice"]
        if model is not None:
            row["model"] = segmentation_metrics(model.predict(sample.image).mask, truth)["dice"]
        rows.append(row)
        print(
            f"[{len(rows)}/{args.n}] image {row['index']}: {row['dots']} dots, posterior {row['known_n']:.3f} "
            f"(n = {BLIND_CONTROL}: {row['blind']:.3f}, expected {row['expected']:.3f}, 1/4 grid {row['coarse']:.3f})"
            + (f", model {row['model']:.3f}" if "model" in row else "")
            + f"  [{time.time() - t0:.0f} s]",
            flush=True,
        )
    text = render(rows, args)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = "bayes_ceiling" + (f"_{args.dots[0]}-{args.dots[1]}_dots" if args.dots else "")
        (args.out / f"{stem}.md").write_text(text + "\n")
        (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=1) + "\n")


def render(rows: list[dict[str, float]], args: argparse.Namespace) -> str:
    cols = [c for c in ("known_n", "blind", "expected", "coarse", "model") if c in rows[0]]
    names = {
        "known_n": "posterior mean",
        "blind": f"posterior mean, n = {BLIND_CONTROL}",
        "expected": "expected by the posterior",
        "coarse": "posterior mean on a 1/4 grid",
        "model": "model",
    }
    lines = [
        f"Clean random-placement images of the seed's generator (seed {EVAL_SEED + 1}, 512 px, "
        f"{args.dots[0] if args.dots else 15}-{args.dots[1] if args.dots else 80} dots, n = {len(rows)}); "
        f"{args.sweeps} sweeps per chain, {args.burn} burn-in, one draw in {args.thin} kept. Dice against the truth.",
        "",
        "| dots | n | " + " | ".join(names[c] for c in cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    data = {c: np.array([r[c] for r in rows]) for c in cols}
    dots = np.array([r["dots"] for r in rows])
    for lo, hi in (*DOT_BINS, (0, 1 << 30)):
        sel = (dots >= lo) & (dots < hi)
        if not sel.any():
            continue
        label = "all" if (lo, hi) == (0, 1 << 30) else (f"{lo}-{hi - 1}" if hi < 1 << 30 else f">= {lo}")
        cells = " | ".join(f"{data[c][sel].mean():.4f}" for c in cols)
        lines.append(f"| {label} | {int(sel.sum())} | {cells} |")
    if "model" in data:
        lines.append("")
        for c in ("known_n", "blind"):
            gap = data[c] - data["model"]
            se = gap.std(ddof=1) / math.sqrt(len(gap)) if len(gap) > 1 else float("nan")
            wins = int((gap > 0).sum())
            lines.append(
                f"{names[c]} minus model: {gap.mean():+.4f} ± {se:.4f} (standard error over images; "
                f"better on {wins} of {len(gap)} images)."
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
