"""Noise models with the seed's parameter ranges, and the curriculum's ``noise_scale`` knob.

The clean image is dots at 1.0 on 0.0, so two of the four models only touch the dots:
Poisson of 0 is 0 and speckle multiplies by the signal. Drawing them only at the non-zero pixels
gives the same distribution at a fraction of the cost. Types compose in a fixed physical order —
shot noise, then multiplicative, then additive read noise, then impulses — so a mixed sample is
well defined whatever order its types were drawn in.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from dotseg.synthesis.config import NoiseConfig, NoiseType

#: Composition order of the noise types in a mixed sample.
ORDER: tuple[NoiseType, ...] = ("poisson", "speckle", "gaussian", "salt_pepper")
#: The parameter each type draws, by type (also the metadata column names).
PARAM: dict[str, str] = {
    "gaussian": "gaussian_sigma",
    "poisson": "poisson_lambda",
    "salt_pepper": "salt_pepper_p",
    "speckle": "speckle_sigma",
}


#: Inverse normal CDF at the centres of 2**16 equiprobable bins. numpy's ziggurat costs ~11 ns per
#: value on the reference CPU; a table lookup on 16 random bits costs ~2 ns, which is what lets a
#: 512x512 Gaussian sample be cheap. The CDF error is below 1.6e-5 everywhere and the tails are cut
#: at +-4.3 sigma (probability 1.5e-5): far below anything the model or the SNR can tell apart.
_NORMAL_TABLE = ndtri((np.arange(2**16) + 0.5) / 2**16).astype(np.float32)


#: Values drawn per chunk. Whole-frame temporaries (1 MiB at 512 px) make glibc return memory to
#: the OS and fault it back in on every sample, which cost more than the noise itself; chunks of
#: 64 KiB stay in malloc's free lists and in cache. A multiple of 4 so the bit stream (4 values per
#: 64-bit draw) is consumed exactly as by a single call.
_CHUNK = 16384
_scratch = threading.local()


def _buffer() -> np.ndarray:
    buf = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = np.empty(_CHUNK, dtype=np.float32)
    return buf


def _normal_into(rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` (m <= _CHUNK,) float32 with N(0, 1) draws by table lookup (see :data:`_NORMAL_TABLE`)."""
    m = len(out)
    raw = rng.bit_generator.random_raw((m + 3) // 4)
    # Little-endian view so the same seed gives the same values on any machine.
    bits = raw.astype("<u8", copy=False).view("<u2")[:m]
    return np.take(_NORMAL_TABLE, bits, out=out)


def add_normal(rng: np.random.Generator, x: np.ndarray, sigma: float, multiplicative: bool = False) -> None:
    """In place on 1-D float32 ``x``: x += sigma * N(0, 1), or x += x * sigma * N(0, 1)."""
    buf = _buffer()
    s = np.float32(sigma)
    for start in range(0, len(x), _CHUNK):
        part = x[start : start + _CHUNK]
        noise = _normal_into(rng, buf[: len(part)])
        noise *= s
        if multiplicative:
            noise *= part
        part += noise


def choose_types(rng: np.random.Generator, cfg: NoiseConfig, mixed_prob: float) -> tuple[str, ...]:
    """One type, or with probability ``mixed_prob`` 2-3 distinct types, in composition order."""
    if len(cfg.types) >= 2 and rng.random() < mixed_prob:
        k = int(rng.integers(cfg.mixed_count[0], min(cfg.mixed_count[1], len(cfg.types)) + 1))
        picked = {cfg.types[i] for i in rng.choice(len(cfg.types), k, replace=False)}
    else:
        picked = {cfg.types[int(rng.integers(len(cfg.types)))]}
    return tuple(t for t in ORDER if t in picked)


def draw_param(
    rng: np.random.Generator, cfg: NoiseConfig, kind: str, noise_scale: float, severity: float | None = None
) -> float:
    """A parameter between the mildest end and ``noise_scale`` of the way to the harshest, or
    exactly ``severity`` of the way (0 = mildest, 1 = harshest) when it is given."""
    mild, harsh = getattr(cfg, PARAM[kind])
    if severity is not None:
        u = severity
    else:
        u = rng.uniform(0.0, noise_scale) if noise_scale > 0 else 0.0
    if cfg.interpolation == "log":
        return float(mild * (harsh / mild) ** u)
    return float(mild + u * (harsh - mild))


def apply_noise(
    rng: np.random.Generator,
    image: np.ndarray,
    types: tuple[str, ...],
    params: dict[str, float],
    correlation: float = 0.0,
) -> None:
    """Corrupt ``image`` (H, W) float32 in place with ``types`` (in composition order).

    ``correlation`` > 0 (px) makes the Gaussian noise spatially correlated: the white field is
    low-pass filtered by a Gaussian of that sigma and rescaled to unit variance before it is scaled
    by the drawn sigma, so the noise power (and the SNR) is what the sigma says."""
    flat = image.reshape(-1)
    support: np.ndarray | None = None  # flat indices of the non-zero signal, computed once
    for kind in types:
        p = params[PARAM[kind]]
        if kind in ("poisson", "speckle"):
            if support is None:
                support = np.flatnonzero(flat)
            x = flat[support]
            if kind == "poisson":
                flat[support] = rng.poisson(p * x.astype(np.float64)).astype(np.float32) / np.float32(p)
            else:
                add_normal(rng, x, p, multiplicative=True)
                flat[support] = x
        elif kind == "gaussian" and correlation > 0:
            field = np.zeros_like(flat)
            add_normal(rng, field, 1.0)
            field = ndimage.gaussian_filter(field.reshape(image.shape), correlation, mode="wrap").reshape(-1)
            field *= np.float32(p / max(float(field.std()), 1e-12))
            flat += field
        elif kind == "gaussian":
            add_normal(rng, flat, p)
        elif kind == "salt_pepper":
            # Each pixel independently: pepper (0) with probability p/2, salt (1) with p/2.
            buf, half = _buffer(), np.float32(p / 2)
            for start in range(0, flat.size, _CHUNK):
                part = flat[start : start + _CHUNK]
                u = rng.random(len(part), dtype=np.float32, out=buf[: len(part)])
                part[u < half] = 0.0
                part[u >= 1 - half] = 1.0
        else:  # pragma: no cover - NoiseConfig validates the names
            raise ValueError(f"unknown noise type {kind!r}")


def snr_db(noisy: np.ndarray, clean: np.ndarray, amplitude: float = 1.0) -> float:
    """The project's SNR: 10 log10(A^2 / mean((noisy - clean)^2)) with A the dot amplitude; inf if equal."""
    diff = (noisy - clean).reshape(-1)
    mse = float(np.dot(diff, diff)) / diff.size
    return math.inf if mse == 0.0 else 10.0 * math.log10(amplitude * amplitude / mse)
