"""What an instrument and an export do to an image (the variation fields of ``synthesis.image``).

Optics (blur, uneven illumination) act on the clean signal before the noise, so the SNR keeps the
seed's definition against that signal; gain, offset and the bit-depth export act on the noisy
image after it, as a detector and an image file would. Each is a no-op at the seed's defaults.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Levels of the integer exports: values are min-max scaled to 0 .. levels and rounded.
EXPORT_LEVELS = {"uint8": 255.0, "uint16": 65535.0}


def optical_blur(image: np.ndarray, sigma: float) -> None:
    """Gaussian blur of sigma px, in place on (H, W) float32. Values below 1e-3 of the peak are
    set to 0 so the signal keeps a finite support (Poisson and speckle noise act only on it)."""
    if sigma <= 0:
        return
    peak = float(image.max())
    ndimage.gaussian_filter(image, sigma, output=image, mode="constant")
    image[image < 1e-3 * peak] = 0.0


def illuminate(rng: np.random.Generator, image: np.ndarray, strength: float) -> None:
    """Multiply (H, W) ``image`` in place by 1 + strength * f, f a smooth field in [-1, 1]: half a
    tilted plane in a random direction, half a vignette around a random point. Draws 3 values from
    ``rng`` whatever the strength, so the draws after it do not depend on it."""
    theta, cy, cx = rng.uniform(0.0, 2 * np.pi), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)
    if strength <= 0:
        return
    h, w = image.shape
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    plane = (y - 0.5) * np.sin(theta) + (x - 0.5) * np.cos(theta)  # (H, W) in [-0.71, 0.71]
    vignette = 1.0 - 2.0 * ((y - cy) ** 2 + (x - cx) ** 2)  # (H, W), 1 at the centre
    field = 0.5 * plane / 0.71 + 0.5 * np.clip(vignette, -1.0, 1.0)
    image *= 1.0 + np.float32(strength) * field


def export(image: np.ndarray, gain: float, offset: float, bits: str) -> None:
    """Detector gain and background offset, then an integer export (``uint8`` / ``uint16``: min-max
    scaled to the type's range and rounded; the values stay float32), in place."""
    if gain != 1.0:
        image *= np.float32(gain)
    if offset != 0.0:
        image += np.float32(offset)
    levels = EXPORT_LEVELS.get(bits)
    if levels is None:
        return
    lo, hi = float(image.min()), float(image.max())
    if hi > lo:
        image -= np.float32(lo)
        image *= np.float32(levels / (hi - lo))
        np.rint(image, out=image)
    else:
        image[:] = 0.0
