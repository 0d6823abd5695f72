"""The Dice no model can beat on the seed's clean random-placement images: a Bayes ceiling by MCMC.

    python scripts/bayes_ceiling.py [--n 40] [--sweeps 1500] [--checkpoint shipped] [--out DIR]

A clean image of the seed's generator shows only its dots, and with ``random`` placement the dot
centres are uniform over the shape's pixels. So everything an image says about its shape is the
posterior p(shape | centres) ∝ prior(shape) · area^-N · [every centre inside the shape], where the
prior is the generator's own (closed Catmull-Rom Bézier through 5-15 control points, its radius,
irregularity, smoothness, rotation, angle jitter and position draws). The prediction with the best
expected Dice is a threshold of the posterior's per-pixel mean; the Dice it scores against the true
mask, averaged over images, is the ceiling of *any* segmenter on those images.

This script samples that posterior with Metropolis-within-Gibbs over the generator's own
parameters (the number of control points is given the true value: extra knowledge, so the
estimate can only rise), rasterizes the posterior draws with the generator's own code, and reports
per image and per dot-count bin:

- ``bayes``: the Dice of the posterior-mean prediction against the truth, from a chain started at
  a shape that only the dots suggest (nothing of the truth);
- ``bayes (truth start)``: the same from a chain started at the true shape. A chain that mixed
  gives the same; one that did not is pulled towards the truth, so this is an estimate from above;
- ``expected``: the Dice the posterior itself expects of its prediction (no truth used at all);
- ``model``: the model's Dice on the same clean image.

Only ``random`` placement has a likelihood this simple (a jittered lattice's does not), so the
table is for random-placement images; the benchmark's lattice images are easier for every model.
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
        x, y = poly[:, 0], poly[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        perimeter = float(np.hypot(*(np.roll(poly, -1, axis=0) - poly).T).sum())
        return log_prior - self.count * math.log(area + 0.5 * perimeter)  # the raster's area, ~

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
    """Metropolis-within-Gibbs: one coordinate at a time, Gaussian steps reflected at the prior's
    bounds (rotation wraps), step sizes adapted to ~35 % acceptance during burn-in then frozen."""
    dim = len(theta)
    width = np.where(np.isfinite(problem.hi - problem.lo), problem.hi - problem.lo, 2 * np.pi)
    width[4:6] = 20.0  # px
    step = width * 0.05
    current = problem.log_post(theta)
    assert math.isfinite(current), "the start must hold every dot"
    draws = []
    for sweep in range(sweeps):
        for j in rng.permutation(dim):
            proposal = theta.copy()
            # reflected into the prior's box: still a symmetric proposal
            proposal[j] = problem.reflect(j, theta[j] + step[j] * rng.standard_normal())
            lp = problem.log_post(proposal)
            accept = math.log(rng.random() + 1e-300) < lp - current
            if accept:
                theta, current = proposal, lp
            if sweep < burn:
                step[j] *= math.exp((0.65 if accept else -0.35) * 0.1)
                step[j] = min(step[j], width[j])
        if sweep >= burn and (sweep - burn) % thin == 0:
            draws.append(theta.copy())
    return draws


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
    ap.add_argument("--sweeps", type=int, default=1500, help="MCMC sweeps per chain (default 1500)")
    ap.add_argument("--burn", type=int, default=500, help="of which burn-in (default 500)")
    ap.add_argument("--thin", type=int, default=5)
    ap.add_argument("--checkpoint", default=None, help="model to compare (default: the shipped one); 'none' skips")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write ceiling.md and ceiling.json here")
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
        problem = Problem(cfg, n_control, centres)
        assert (problem.mask(theta_true) == truth).all(), "the replayed shape differs from the generator's"
        rng = np.random.default_rng([seed, index - 1, 7])
        row: dict[str, float] = {"index": index - 1, "dots": len(centres), "control": n_control}
        for name, start in (("bayes", start_from_dots(problem, rng)), ("truth_start", theta_true)):
            draws = sample_posterior(problem, start, rng, args.sweeps, args.burn, args.thin)
            pred, expected, threshold, q = bayes_prediction(problem, draws)
            row[name] = segmentation_metrics(pred, truth)["dice"]
            if name == "bayes":
                row["expected"], row["threshold"] = expected, threshold
                row["coarse"] = segmentation_metrics(on_coarse_grid(q, threshold), truth)["dice"]
        if model is not None:
            row["model"] = segmentation_metrics(model.predict(sample.image).mask, truth)["dice"]
        rows.append(row)
        print(
            f"[{len(rows)}/{args.n}] image {row['index']}: {row['dots']} dots, bayes {row['bayes']:.3f} "
            f"(truth start {row['truth_start']:.3f}, expected {row['expected']:.3f}, 1/4 grid {row['coarse']:.3f})"
            + (f", model {row['model']:.3f}" if "model" in row else "")
            + f"  [{time.time() - t0:.0f} s]",
            flush=True,
        )
    text = render(rows, args)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bayes_ceiling.md").write_text(text + "\n")
        (args.out / "bayes_ceiling.json").write_text(json.dumps(rows, indent=1) + "\n")


def render(rows: list[dict[str, float]], args: argparse.Namespace) -> str:
    cols = [c for c in ("bayes", "truth_start", "expected", "coarse", "model") if c in rows[0]]
    names = {
        "bayes": "Bayes",
        "truth_start": "Bayes (truth start)",
        "expected": "expected",
        "coarse": "Bayes on a 1/4 grid",
        "model": "model",
    }
    lines = [
        f"Clean random-placement images of the seed's generator (seed {EVAL_SEED + 1}, 512 px, "
        f"{args.dots[0] if args.dots else 15}-{args.dots[1] if args.dots else 80} dots, n = {len(rows)}); "
        f"MCMC {args.sweeps} sweeps, {args.burn} burn-in, every {args.thin}th draw kept.",
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
    spread = np.abs(data["bayes"] - data["truth_start"])
    lines += [
        "",
        f"The two chains of an image differ by {spread.mean():.4f} Dice on average (at most {spread.max():.4f}).",
    ]
    if "model" in data:
        gap = data["bayes"] - data["model"]
        se = gap.std(ddof=1) / math.sqrt(len(gap)) if len(gap) > 1 else float("nan")
        lines += [f"Bayes minus model: {gap.mean():+.4f} ± {se:.4f} (standard error over images)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
