"""Configuration of the dot-blob synthesizer (the seed's "Data Pipeline" and "Noise Types")."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from dotseg.configbase import NONEMPTY, ORDERED, Section, check

NoiseType = Literal["gaussian", "poisson", "salt_pepper", "speckle"]
Placement = Literal["random", "lattice"]
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
    """Lattice jitter: each lattice point moves uniformly by up to ``jitter * side`` per axis."""


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


class SynthesisConfig(Section):
    size: int = Field(512, ge=32, le=4096)
    """Side of the square images, in pixels."""
    shape: ShapeConfig = ShapeConfig()
    """The organic blob silhouette (the ground-truth mask)."""
    dots: DotsConfig = DotsConfig()
    """The dots that are all the image shows of the shape."""
    noise: NoiseConfig = NoiseConfig()
    """Noise types and their parameter ranges."""
