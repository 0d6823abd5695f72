"""Configuration of the dot-blob synthesizer (the seed's "Data Pipeline" and "Noise Types")."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from dotseg.configbase import NONEMPTY, ORDERED, Section, check

NoiseType = Literal["gaussian", "poisson", "salt_pepper", "speckle"]
Placement = Literal["random", "lattice", "poisson_disc", "clustered", "gradient", "boundary"]
ShapeKind = Literal["bezier", "bezier_free", "fourier", "superellipse"]
ShapePosition = Literal["anywhere", "corner"]
DotProfile = Literal["disc", "gaussian"]
Export = Literal["float", "uint8", "uint16"]
# Item types of the [min, max] pairs below (each pair is also ORDERED: min <= max).
_Pos = Annotated[float, Field(gt=0.0)]  # a mild..harsh noise parameter
_ControlPoints = Annotated[int, Field(ge=3, le=64)]
_RadiusFraction = Annotated[float, Field(ge=0.02, le=0.45)]
_Irregularity = Annotated[float, Field(ge=0.0, le=0.9)]
_Smoothness = Annotated[float, Field(ge=0.0, le=0.6)]
_DotCount = Annotated[int, Field(ge=1, le=400)]
_DotRadius = Annotated[float, Field(ge=0.5, le=32.0)]
_Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
_MixCount = Annotated[int, Field(ge=2, le=4)]
_Exponent = Annotated[float, Field(ge=0.3, le=10.0)]
_Aspect = Annotated[float, Field(ge=1.0, le=4.0)]
_Amplitude = Annotated[float, Field(gt=0.0, le=1.0)]
_Sigma = Annotated[float, Field(ge=0.0, le=16.0)]
_Offset = Annotated[float, Field(ge=-100.0, le=100.0)]
_Gain = Annotated[float, Field(gt=0.0, le=1000.0)]
_Strength = Annotated[float, Field(ge=0.0, le=0.9)]

# The fields below marked "variation" widen the generator beyond the seed's (domain randomization,
# and the axes of the shift suite, dotseg.shift). Their defaults are the seed's generator exactly:
# a config that leaves them alone renders the same bytes as before they existed. Their random
# draws come from a stream of their own, so switching one on never moves another sample's shape,
# dots or noise.


class ShapeConfig(Section):
    control_points: Annotated[tuple[_ControlPoints, _ControlPoints], ORDERED] = (5, 15)
    """[min, max] number of control points the closed Bézier outline passes through."""
    radius: Annotated[tuple[_RadiusFraction, _RadiusFraction], ORDERED] = (0.14, 0.32)
    """[min, max] mean radius of the blob, as a fraction of the image side."""
    irregularity: Annotated[tuple[_Irregularity, _Irregularity], ORDERED] = (0.05, 0.45)
    """[min, max] relative spread of the control points' radii around the mean (0 = near-circular)."""
    smoothness: Annotated[tuple[_Smoothness, _Smoothness], ORDERED] = (0.25, 0.45)
    """[min, max] Bézier handle length as a fraction of the distance to the neighbouring control point."""
    margin: float = Field(0.03, ge=0.0, le=0.2)
    """Minimum gap between the shape and the image border, as a fraction of the side."""
    kinds: Annotated[tuple[ShapeKind, ...], NONEMPTY] = ("bezier",)
    """Variation: outline constructions drawn uniformly per sample. ``bezier`` (the seed): Catmull-Rom
    Bézier through control points at evenly spread, jittered angles; ``bezier_free``: the same curve
    through control points at uniformly random angles (uneven spacing, sharper turns); ``fourier``:
    a radial Fourier series with ``control_points`` harmonics of amplitude ~``irregularity`` (concave
    lobes when high); ``superellipse``: ``|x/a|^p + |y/b|^p = 1`` with p from ``exponent``."""
    exponent: Annotated[tuple[_Exponent, _Exponent], ORDERED] = (1.5, 4.0)
    """Variation: [min, max] superellipse exponent p (p < 1: concave, star-like; 2: ellipse; large: box)."""
    position: Annotated[tuple[ShapePosition, ...], NONEMPTY] = ("anywhere",)
    """Variation: where the blob sits, drawn per sample: ``anywhere`` (uniform over every position
    that keeps it inside the margins: the seed) or ``corner`` (pushed against a random corner)."""

    @model_validator(mode="after")
    def _fits(self) -> Self:
        check(
            self.radius[1] * 2 + self.margin * 2 < 1.0,
            "radius",
            "the largest blob plus its margins must fit inside the frame (2*radius[1] + 2*margin < 1)",
        )
        return self


class DotsConfig(Section):
    count: Annotated[tuple[_DotCount, _DotCount], ORDERED] = (15, 80)
    """[min, max] number of dots drawn inside the shape."""
    radius: Annotated[tuple[_DotRadius, _DotRadius], ORDERED] = (2.0, 6.0)
    """[min, max] dot radius in pixels at ``reference_size``; scaled with the image size."""
    reference_size: int = Field(512, ge=16, le=8192)
    """Image side (px) at which ``radius`` is given."""
    placement: Annotated[tuple[Placement, ...], NONEMPTY] = ("random", "lattice")
    """Placements drawn uniformly per sample: ``random`` (uniform inside the shape) or ``lattice``
    (a jittered lattice fitted to the shape's area)."""
    jitter: float = Field(0.03, ge=0.0, le=0.2)
    """Lattice jitter: each lattice point moves uniformly by up to ``jitter * side`` per axis.

    Placements beyond the seed's two (variation): ``poisson_disc`` (blue noise: no two centres
    closer than ~0.7 of the lattice spacing), ``clustered`` (2-5 Gaussian clusters), ``gradient``
    (density rising linearly across the shape in a random direction) and ``boundary`` (only within
    ~15 % of the shape's size of its outline)."""
    profile: Annotated[tuple[DotProfile, ...], NONEMPTY] = ("disc",)
    """Variation: dot profiles drawn per sample: ``disc`` (hard-edged, the seed) or ``gaussian``
    (soft: exp(-d^2 / 2 s^2) with s = radius / 2, so the disc's radius is ~2 s)."""
    aspect: Annotated[tuple[_Aspect, _Aspect], ORDERED] = (1.0, 1.0)
    """Variation: [min, max] ratio of a dot's long to short axis (1 = round), drawn per dot with a
    random orientation; the area stays that of the round dot."""
    amplitude: Annotated[tuple[_Amplitude, _Amplitude], ORDERED] = (1.0, 1.0)
    """Variation: [min, max] peak value of a dot, drawn per dot (the seed: every dot at 1.0)."""


class NoiseConfig(Section):
    types: Annotated[tuple[NoiseType, ...], NONEMPTY] = ("gaussian", "poisson", "salt_pepper", "speckle")
    """Single noise types drawn uniformly when a sample is not 'mixed'."""
    gaussian_sigma: Annotated[tuple[_Pos, _Pos], ORDERED] = (0.01, 1.5)
    """Additive x + N(0, sigma^2): [mildest, harshest] sigma."""
    poisson_lambda: tuple[_Pos, _Pos] = (300.0, 1.0)
    """Shot noise Pois(lambda * x) / lambda: [mildest, harshest] lambda (large lambda = mild)."""
    salt_pepper_p: Annotated[tuple[_Fraction, _Fraction], ORDERED] = (0.01, 0.5)
    """Impulse noise: [mildest, harshest] fraction of pixels set to 0 or 1 (half each)."""
    speckle_sigma: Annotated[tuple[_Pos, _Pos], ORDERED] = (0.05, 2.0)
    """Multiplicative x + x * N(0, sigma^2): [mildest, harshest] sigma."""
    mixed_count: Annotated[tuple[_MixCount, _MixCount], ORDERED] = (2, 3)
    """[min, max] number of distinct types composed in a 'mixed' sample."""
    correlation: Annotated[tuple[_Sigma, _Sigma], ORDERED] = (0.0, 0.0)
    """Variation: [min, max] correlation length (px at ``dots.reference_size``) of the Gaussian
    noise: white noise low-pass filtered by a Gaussian of this sigma and rescaled to the drawn
    sigma (0 = white, the seed)."""
    interpolation: Literal["linear", "log"] = "linear"
    """How ``noise_scale`` moves a parameter from its mildest to its harshest end. Each sample draws
    u ~ U(0, noise_scale) and sets p = mild + u * (harsh - mild) (``linear``) or
    p = mild * (harsh / mild) ** u (``log``, even coverage of SNR in dB)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check(len(set(self.types)) == len(self.types), "types", f"has duplicates: {list(self.types)}")
        # Lambda is the odd one out: a large lambda is mild. (With fewer types than mixed_count
        # asks for, a mixed sample composes all of them.)
        check(
            self.poisson_lambda[0] >= self.poisson_lambda[1],
            "poisson_lambda",
            "is [mildest, harshest]: the mild lambda must be >= the harsh one, e.g. [300, 1]",
        )
        return self


class ImageConfig(Section):
    """Variation: what an instrument and an export do to the image. Optical effects act on the clean
    signal before the noise (so the SNR, measured against that signal, stays the seed's
    definition); gain, offset and quantization act on the noisy image after it."""

    blur: Annotated[tuple[_Sigma, _Sigma], ORDERED] = (0.0, 0.0)
    """[min, max] Gaussian optical blur sigma (px at ``dots.reference_size``) of the clean signal."""
    illumination: Annotated[tuple[_Strength, _Strength], ORDERED] = (0.0, 0.0)
    """[min, max] strength s of uneven illumination: the signal is multiplied by 1 + s * f, f a
    smooth field in [-1, 1] (a tilted plane plus a vignette, random direction)."""
    gain: Annotated[tuple[_Gain, _Gain], ORDERED] = (1.0, 1.0)
    """[min, max] multiplier of the noisy image (detector gain)."""
    offset: Annotated[tuple[_Offset, _Offset], ORDERED] = (0.0, 0.0)
    """[min, max] constant added to the noisy image after the gain (background level)."""
    export: Annotated[tuple[Export, ...], NONEMPTY] = ("float",)
    """Exports drawn per sample: ``float`` (as rendered), ``uint8`` / ``uint16`` (min-max scaled to
    the type's full range and rounded, as an 8- or 16-bit image file holds it; values stay float32)."""


class SynthesisConfig(Section):
    size: int = Field(512, ge=32, le=4096)
    """Side of the square images, in pixels."""
    shape: ShapeConfig = ShapeConfig()
    """The organic blob silhouette (the ground-truth mask)."""
    dots: DotsConfig = DotsConfig()
    """The dots that are all the image shows of the shape."""
    noise: NoiseConfig = NoiseConfig()
    """Noise types and their parameter ranges."""
    image: ImageConfig = ImageConfig()
    """Variation: optics and export (blur, illumination, gain, offset, bit depth)."""
    seed_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Variation: fraction of samples rendered by the seed's generator exactly (``shape``, ``dots``,
    ``noise`` and ``image`` at their defaults; ``size`` kept), drawn per sample. A wide generator
    spends its samples across its ranges; this keeps part of every batch on the seed's distribution,
    so a model trained wider does not lose what it knew there (docs/model-v2-candidate)."""
