"""Synthesis speed: samples/s per core at 256 and 512 px, by stage, against a naive reference.

    python benchmarks/synth.py [--n 200] [--sizes 256 512]

The naive reference draws the same kind of sample the obvious way — shape polygon with
``skimage.draw.polygon`` on the full frame, one ``skimage.draw.disk`` call per dot, every noise
model over the full image in float64 — and is measured in the same run on the same indices, so
the ratio is meaningful on any machine. Everything runs in this one process on one core.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from skimage.draw import disk, polygon

from dotseg.synthesis import SynthesisConfig, make_sample
from dotseg.synthesis.dots import draw_dots, place_dots
from dotseg.synthesis.noise import PARAM, apply_noise, draw_param
from dotseg.synthesis.shapes import bezier_outline, make_blob

NOISE_TYPES = ("gaussian", "poisson", "salt_pepper", "speckle")


def naive_sample(cfg: SynthesisConfig, seed: int, index: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward implementation the fast path is measured against."""
    size = cfg.size
    rng = np.random.default_rng([seed, index, 7])
    n = int(rng.integers(cfg.shape.control_points[0], cfg.shape.control_points[1] + 1))
    angles = rng.uniform(0, 2 * np.pi) + (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n
    radii = 1.0 + rng.uniform(*cfg.shape.irregularity) * rng.uniform(-1, 1, n)
    ctrl = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)
    outline = bezier_outline(ctrl, 0.35) * rng.uniform(*cfg.shape.radius) * size * 0.8 + size / 2
    mask = np.zeros((size, size), dtype=bool)
    rr, cc = polygon(outline[:, 1], outline[:, 0], shape=mask.shape)
    mask[rr, cc] = True
    ys, xs = np.nonzero(mask)
    image = np.zeros((size, size), dtype=np.float64)
    scale = size / cfg.dots.reference_size
    for _ in range(int(rng.integers(cfg.dots.count[0], cfg.dots.count[1] + 1))):
        j = rng.integers(len(ys))
        r = rng.uniform(cfg.dots.radius[0] * scale, cfg.dots.radius[1] * scale)
        rr, cc = disk((ys[j], xs[j]), r, shape=image.shape)
        image[rr, cc] = 1.0
    p = draw_param(rng, cfg.noise, kind, 1.0)
    if kind == "gaussian":
        image = image + rng.normal(0.0, p, image.shape)
    elif kind == "poisson":
        image = rng.poisson(p * image) / p
    elif kind == "speckle":
        image = image + image * rng.normal(0.0, p, image.shape)
    else:
        u = rng.random(image.shape)
        image = image.copy()
        image[u < p / 2] = 0.0
        image[u > 1 - p / 2] = 1.0
    return image.astype(np.float32), mask


def timed(fn, n: int) -> float:
    """Seconds per call, best of 3 passes of ``n`` calls (index varies per call)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def stage_times(cfg: SynthesisConfig, n: int) -> dict[str, float]:
    """Seconds per sample for each stage of the fast path."""
    size = cfg.size
    blobs = [make_blob(np.random.default_rng([0, i, 0]), cfg.shape, size) for i in range(n)]
    placed = [place_dots(np.random.default_rng([0, i, 5]), cfg.dots, b, size) for i, b in enumerate(blobs)]
    clean = np.zeros((size, size), dtype=np.float32)
    draw_dots(clean, placed[0][1])
    out = {
        "shape": timed(lambda i: make_blob(np.random.default_rng([0, i, 0]), cfg.shape, size), n),
        "dots: place": timed(lambda i: place_dots(np.random.default_rng([0, i, 5]), cfg.dots, blobs[i], size), n),
        "dots: draw": timed(lambda i: draw_dots(np.zeros((size, size), np.float32), placed[i][1]), n),
    }
    for kind in NOISE_TYPES:
        rng = np.random.default_rng(1)
        params = {PARAM[kind]: draw_param(rng, cfg.noise, kind, 1.0)}
        noise = (kind,)
        out[f"noise: {kind}"] = timed(lambda i, r=rng, t=noise, p=params: apply_noise(r, clean.copy(), t, p), n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="samples per measurement (default 200)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sides (default 256 512)")
    args = ap.parse_args()

    print(f"# synthesis benchmark: 1 process, 1 core, n={args.n} per cell, best of 3\n")
    print("| size | noise | dotseg samples/s | naive samples/s | speed-up |")
    print("|---:|---|---:|---:|---:|")
    summary = {}
    for size in args.sizes:
        cfg = SynthesisConfig().replace(size=size)
        fast_all, naive_all = [], []
        for kind in NOISE_TYPES:
            ncfg = cfg.replace(noise=cfg.noise.replace(types=(kind,)))
            fast = timed(lambda i, ncfg=ncfg: make_sample(ncfg, 0, i, noise_scale=1.0), args.n)
            naive = timed(lambda i, cfg=cfg, kind=kind: naive_sample(cfg, 0, i, kind), args.n)
            fast_all.append(fast)
            naive_all.append(naive)
            print(f"| {size} | {kind} | {1 / fast:.0f} | {1 / naive:.0f} | {naive / fast:.1f}x |")
        mixed = timed(lambda i, cfg=cfg: make_sample(cfg, 0, i, noise_scale=1.0, mixed_prob=0.6), args.n)
        fast_avg, naive_avg = float(np.mean(fast_all)), float(np.mean(naive_all))
        print(f"| {size} | mixed_prob=0.6 | {1 / mixed:.0f} | | |")
        print(
            f"| {size} | **average over the 4 types** | **{1 / fast_avg:.0f}** | **{1 / naive_avg:.0f}** "
            f"| **{naive_avg / fast_avg:.1f}x** |"
        )
        summary[size] = naive_avg / fast_avg

    print("\n# fast-path stages (ms per sample)\n")
    print("| stage | " + " | ".join(f"{s} px" for s in args.sizes) + " |")
    print("|---|" + "---:|" * len(args.sizes))
    stages = {s: stage_times(SynthesisConfig().replace(size=s), max(args.n // 2, 20)) for s in args.sizes}
    for name in stages[args.sizes[0]]:
        print(f"| {name} | " + " | ".join(f"{stages[s][name] * 1e3:.2f}" for s in args.sizes) + " |")
    for size, ratio in summary.items():
        print(f"\nspeed-up at {size} px (average over noise types): {ratio:.1f}x")


if __name__ == "__main__":
    main()
