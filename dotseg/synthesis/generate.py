"""Samples and batches: the public face of the synthesizer.

A sample is a pure function of (config, seed, index, noise_scale, mixed_prob, noisy): it draws
from ``np.random.default_rng([seed, index, stream])`` and nothing else, so the same arguments
give the same bytes in any batch, process, worker count or machine. The geometry (shape, dots)
and the noise use separate streams, so the clean copy of a sample has exactly the shape and
dots of its noisy version whatever the noise settings.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dotseg.synthesis.config import SynthesisConfig
from dotseg.synthesis.dots import draw_dots, draw_varied_dots, place_dots
from dotseg.synthesis.noise import ORDER, PARAM, apply_noise, choose_types, draw_param, snr_db
from dotseg.synthesis.optics import export, illuminate, optical_blur
from dotseg.synthesis.shapes import make_blob

#: The sample's random streams: the seed's geometry and noise, the variation fields' draws, and the
#: choice of generator (``seed_fraction``).
_GEOMETRY_STREAM, _NOISE_STREAM, _VARIATION_STREAM, _GENERATOR_STREAM = 0, 1, 2, 3

#: Scalar metadata columns of a batch, with their dtypes.
META_COLUMNS: dict[str, Any] = {
    "index": np.int64,
    "n_control": np.int16,
    "shape_radius": np.float32,
    "irregularity": np.float32,
    "smoothness": np.float32,
    "center_y": np.float32,
    "center_x": np.float32,
    "area": np.int32,
    "n_dots": np.int16,
    "placement": "U7",
    "noise": "U40",
    "gaussian_sigma": np.float32,
    "poisson_lambda": np.float32,
    "salt_pepper_p": np.float32,
    "speckle_sigma": np.float32,
    "noise_scale": np.float32,
    "mixed_prob": np.float32,
    "snr_db": np.float32,
    "shape_kind": "U12",
    "dot_profile": "U8",
    "blur": np.float32,
    "illumination": np.float32,
    "correlation": np.float32,
    "gain": np.float32,
    "offset": np.float32,
    "export": "U7",
    "seed_generator": np.bool_,
}


@dataclass(frozen=True, slots=True)
class Sample:
    image: np.ndarray
    """(H, W) float32: dots at 1.0 on 0.0, plus noise (unclipped)."""
    mask: np.ndarray
    """(H, W) uint8 ground truth: the blob (1), not the dots."""
    dots: np.ndarray
    """(n, 3) float32 rows (y, x, radius) in px; centres are integer pixels inside the mask."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Scalar metadata; keys are :data:`META_COLUMNS`. Absent noise parameters are NaN."""

    @property
    def snr_db(self) -> float:
        return float(self.meta["snr_db"])


_scratch = threading.local()


def _clean_copy(image: np.ndarray) -> np.ndarray:
    """A per-thread reusable copy of the clean image, for the SNR (a fresh 1 MiB array per sample
    costs page faults comparable to the noise itself)."""
    buf = getattr(_scratch, "clean", None)
    if buf is None or buf.shape != image.shape:
        buf = _scratch.clean = np.empty_like(image)
    np.copyto(buf, image)
    return buf


def _check_knobs(
    seed: int,
    noise_scale: float,
    mixed_prob: float,
    noise_types: Sequence[str] | None = None,
    severity: float | None = None,
) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if noise_types is not None:
        unknown = [t for t in noise_types if t not in ORDER]
        if unknown or not noise_types:
            raise ValueError(f"noise_types must be a non-empty subset of {', '.join(ORDER)}, got {list(noise_types)}")
    if severity is not None and not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity!r}")
    if not 0.0 <= noise_scale <= 1.0:
        raise ValueError(f"noise_scale must be in [0, 1], got {noise_scale!r}")
    if not 0.0 <= mixed_prob <= 1.0:
        raise ValueError(f"mixed_prob must be in [0, 1], got {mixed_prob!r}")


def _render(
    cfg: SynthesisConfig,
    seed: int,
    index: int,
    noise_scale: float,
    mixed_prob: float,
    noisy: bool,
    image: np.ndarray,
    mask: np.ndarray,
    noise_types: Sequence[str] | None,
    severity: float | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw one sample into the preallocated ``image`` (zeros) and ``mask``; return (dots, meta)."""
    seed_generator = False
    if cfg.seed_fraction > 0.0:  # its own stream: a config without it draws nothing more
        pick = np.random.default_rng([int(seed), int(index), _GENERATOR_STREAM])
        if pick.random() < cfg.seed_fraction:
            cfg, seed_generator = _seed_generator(cfg.size), True
    size = cfg.size
    scale = size / cfg.dots.reference_size  # px lengths of the config are given at reference_size
    geo = np.random.default_rng([int(seed), int(index), _GEOMETRY_STREAM])
    var = np.random.default_rng([int(seed), int(index), _VARIATION_STREAM])
    kind = _pick(var, cfg.shape.kinds)
    blob = make_blob(geo, cfg.shape, size, kind, _pick(var, cfg.shape.position))
    blob.paste(mask)
    placement, dots = place_dots(geo, cfg.dots, blob, size)
    profile = _pick(var, cfg.dots.profile)
    aspect = var.uniform(*cfg.dots.aspect, len(dots))
    angle = var.uniform(0.0, np.pi, len(dots))
    amplitude = var.uniform(*cfg.dots.amplitude, len(dots))
    if profile == "disc" and cfg.dots.aspect == (1.0, 1.0) and cfg.dots.amplitude == (1.0, 1.0):
        draw_dots(image, dots)  # the seed's unit discs
    else:
        draw_varied_dots(image, dots, profile, aspect, angle, amplitude)
    im = cfg.image
    blur = float(var.uniform(*im.blur)) * scale
    illumination = float(var.uniform(*im.illumination))
    correlation = float(var.uniform(*cfg.noise.correlation)) * scale
    gain, offset = float(var.uniform(*im.gain)), float(var.uniform(*im.offset))
    bits = _pick(var, im.export)
    optical_blur(image, blur)
    illuminate(var, image, illumination)

    meta: dict[str, Any] = {
        "index": int(index),
        "n_control": blob.n_control,
        "shape_radius": blob.radius,
        "irregularity": blob.irregularity,
        "smoothness": blob.smoothness,
        "center_y": blob.center[0],
        "center_x": blob.center[1],
        "area": blob.area,
        "n_dots": len(dots),
        "placement": placement,
        "noise": "none",
        **dict.fromkeys(PARAM.values(), math.nan),
        "noise_scale": noise_scale if noisy else 0.0,
        "mixed_prob": mixed_prob if noisy else 0.0,
        "snr_db": math.inf,
        "shape_kind": kind,
        "dot_profile": profile,
        "blur": blur,
        "illumination": illumination,
        "correlation": correlation if noisy else 0.0,
        "gain": gain,
        "offset": offset,
        "export": bits,
        "seed_generator": seed_generator,
    }
    if noisy:
        rng = np.random.default_rng([int(seed), int(index), _NOISE_STREAM])
        if noise_types is None:
            types = choose_types(rng, cfg.noise, mixed_prob)
        else:
            types = tuple(t for t in ORDER if t in noise_types)
        params = {PARAM[t]: draw_param(rng, cfg.noise, t, noise_scale, severity) for t in types}
        clean = _clean_copy(image)
        apply_noise(rng, image, types, params, correlation)
        meta.update(params, noise="+".join(types), snr_db=snr_db(image, clean))
    export(image, gain, offset, bits)
    return dots, meta


@functools.lru_cache(maxsize=8)
def _seed_generator(size: int) -> SynthesisConfig:
    """The seed's generator at this image size: what a ``seed_fraction`` sample is rendered with."""
    return SynthesisConfig(size=size)


def _pick(rng: np.random.Generator, choices: Sequence[str]) -> str:
    return choices[int(rng.integers(len(choices)))]


def make_sample(
    cfg: SynthesisConfig,
    seed: int,
    index: int,
    noise_scale: float = 1.0,
    mixed_prob: float = 0.0,
    noisy: bool = True,
    noise_types: Sequence[str] | None = None,
    severity: float | None = None,
) -> Sample:
    """One sample.

    Args:
        cfg: the synthesis section of the config.
        seed, index: identify the sample; the same pair always gives the same sample.
        noise_scale: the curriculum's knob in [0, 1]; each noise parameter is drawn between its
            mildest end and ``noise_scale`` of the way to its harshest.
        mixed_prob: probability of composing 2-3 noise types instead of one.
        noisy: ``False`` gives the noise-free copy (same shape and dots, SNR = inf).
        noise_types: force these types (composed in the fixed order) instead of drawing them;
            for stratified evaluation sets and sample grids.
        severity: force every parameter to exactly this fraction of the way from mildest to harshest.
    """
    _check_knobs(seed, noise_scale, mixed_prob, noise_types, severity)
    image = np.zeros((cfg.size, cfg.size), dtype=np.float32)
    mask = np.zeros((cfg.size, cfg.size), dtype=np.uint8)
    dots, meta = _render(cfg, seed, index, noise_scale, mixed_prob, noisy, image, mask, noise_types, severity)
    return Sample(image=image, mask=mask, dots=dots, meta=meta)


def make_batch(
    cfg: SynthesisConfig,
    seed: int,
    indices: Sequence[int] | np.ndarray,
    noise_scale: float = 1.0,
    mixed_prob: float = 0.0,
    noisy: bool = True,
    noise_types: Sequence[str] | None = None,
    severity: float | None = None,
) -> dict[str, np.ndarray]:
    """A batch as a dict of equal-length numpy arrays (the Ray Data batch format).

    Keys: ``image`` (B, H, W) float32, ``mask`` (B, H, W) uint8, ``dots`` (B, max_dots, 3) float32
    padded with NaN, and one (B,) column per :data:`META_COLUMNS` entry (``snr_db`` among them).
    Sample ``i`` equals ``make_sample(cfg, seed, indices[i], ...)`` byte for byte; the arguments
    mean what they mean there.
    """
    _check_knobs(seed, noise_scale, mixed_prob, noise_types, severity)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    b, size = len(indices), cfg.size
    out: dict[str, np.ndarray] = {
        "image": np.zeros((b, size, size), dtype=np.float32),
        "mask": np.zeros((b, size, size), dtype=np.uint8),
        "dots": np.full((b, _max_dots(cfg), 3), np.nan, dtype=np.float32),
    }
    metas = []
    for i, index in enumerate(indices):
        dots, meta = _render(
            cfg,
            seed,
            int(index),
            noise_scale,
            mixed_prob,
            noisy,
            out["image"][i],
            out["mask"][i],
            noise_types,
            severity,
        )
        out["dots"][i, : len(dots)] = dots
        metas.append(meta)
    for name, dtype in META_COLUMNS.items():
        out[name] = np.array([m[name] for m in metas], dtype=dtype)
    return out


def _max_dots(cfg: SynthesisConfig) -> int:
    """The most dots a sample of ``cfg`` can have (the seed's generator's too, where it mixes it in)."""
    most = cfg.dots.count[1]
    return max(most, _seed_generator(cfg.size).dots.count[1]) if cfg.seed_fraction > 0.0 else most
