"""Configuration of the dot-blob synthesizer (the seed's "Data Pipeline" and "Noise Types")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dotseg.configbase import check, check_pair, check_range

NoiseType = Literal["gaussian", "poisson", "salt_pepper", "speckle"]
Placement = Literal["random", "lattice"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ShapeConfig:
    control_points: tuple[int, int] = (5, 15)
    """[min, max] number of control points the closed Bézier outline passes through."""
    radius: tuple[float, float] = (0.14, 0.32)
    """[min, max] mean radius of the blob, as a fraction of the image side."""
    irregularity: tuple[float, float] = (0.05, 0.45)
    """[min, max] relative spread of the control points' radii around the mean (0 = near-circular)."""
    smoothness: tuple[float, float] = (0.25, 0.45)
    """[min, max] Bézier handle length as a fraction of the distance to the neighbouring control point."""
    margin: float = 0.03
    """Minimum gap between the shape and the image border, as a fraction of the side."""

    def __post_init__(self) -> None:
        check_pair(self.control_points, "control_points", 3, 64)
        check_pair(self.radius, "radius", 0.02, 0.45)
        check_pair(self.irregularity, "irregularity", 0.0, 0.9)
        check_pair(self.smoothness, "smoothness", 0.0, 0.6)
        check_range(self.margin, "margin", 0.0, 0.2)
        check(self.radius[1] * 2 + self.margin * 2 < 1.0, "radius",
              "the largest blob plus its margins must fit inside the frame (2*radius[1] + 2*margin < 1)")


@dataclass(frozen=True, kw_only=True, slots=True)
class DotsConfig:
    count: tuple[int, int] = (15, 80)
    """[min, max] number of dots drawn inside the shape."""
    radius: tuple[float, float] = (2.0, 6.0)
    """[min, max] dot radius in pixels at ``reference_size``; scaled with the image size."""
    reference_size: int = 512
    """Image side (px) at which ``radius`` is given."""
    placement: tuple[Placement, ...] = ("random", "lattice")
    """Placements drawn uniformly per sample: ``random`` (uniform inside the shape) or ``lattice``
    (a jittered lattice fitted to the shape's area)."""
    jitter: float = 0.03
    """Lattice jitter: each lattice point moves uniformly by up to ``jitter * side`` per axis."""

    def __post_init__(self) -> None:
        check_pair(self.count, "count", 1, 400)
        check_pair(self.radius, "radius", 0.5, 32.0)
        check_range(self.reference_size, "reference_size", 16, 8192)
        check(len(self.placement) > 0, "placement", "needs at least one of 'random', 'lattice'")
        check_range(self.jitter, "jitter", 0.0, 0.2)


@dataclass(frozen=True, kw_only=True, slots=True)
class NoiseConfig:
    types: tuple[NoiseType, ...] = ("gaussian", "poisson", "salt_pepper", "speckle")
    """Single noise types drawn uniformly when a sample is not 'mixed'."""
    gaussian_sigma: tuple[float, float] = (0.01, 1.5)
    """Additive x + N(0, sigma^2): [mildest, harshest] sigma."""
    poisson_lambda: tuple[float, float] = (300.0, 1.0)
    """Shot noise Pois(lambda * x) / lambda: [mildest, harshest] lambda (large lambda = mild)."""
    salt_pepper_p: tuple[float, float] = (0.01, 0.5)
    """Impulse noise: [mildest, harshest] fraction of pixels set to 0 or 1 (half each)."""
    speckle_sigma: tuple[float, float] = (0.05, 2.0)
    """Multiplicative x + x * N(0, sigma^2): [mildest, harshest] sigma."""
    mixed_count: tuple[int, int] = (2, 3)
    """[min, max] number of distinct types composed in a 'mixed' sample."""
    interpolation: Literal["linear", "log"] = "linear"
    """How ``noise_scale`` moves a parameter from its mildest to its harshest end. Each sample draws
    u ~ U(0, noise_scale) and sets p = mild + u * (harsh - mild) (``linear``) or
    p = mild * (harsh / mild) ** u (``log``, even coverage of SNR in dB)."""

    def __post_init__(self) -> None:
        check(len(self.types) > 0, "types", "needs at least one noise type")
        check(len(set(self.types)) == len(self.types), "types", f"has duplicates: {list(self.types)}")
        for key in ("gaussian_sigma", "poisson_lambda", "salt_pepper_p", "speckle_sigma"):
            pair = getattr(self, key)
            check_range(pair[0], f"{key}[0]", 0.0, lo_open=True)
            check_range(pair[1], f"{key}[1]", 0.0, lo_open=True)
        check(self.poisson_lambda[0] >= self.poisson_lambda[1], "poisson_lambda",
              "is [mildest, harshest]: the mild lambda must be >= the harsh one, e.g. [300, 1]")
        for key in ("gaussian_sigma", "salt_pepper_p", "speckle_sigma"):
            pair = getattr(self, key)
            check(pair[0] <= pair[1], key, f"is [mildest, harshest]: need min <= max, got {list(pair)}")
        check_range(self.salt_pepper_p[1], "salt_pepper_p[1]", 0.0, 1.0)
        # With fewer types than mixed_count asks for, a mixed sample composes all of them.
        check_pair(self.mixed_count, "mixed_count", 2, 4)


@dataclass(frozen=True, kw_only=True, slots=True)
class SynthesisConfig:
    size: int = 512
    """Side of the square images, in pixels."""
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    """The organic blob silhouette (the ground-truth mask)."""
    dots: DotsConfig = field(default_factory=DotsConfig)
    """The dots that are all the image shows of the shape."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Noise types and their parameter ranges."""

    def __post_init__(self) -> None:
        check_range(self.size, "size", 32, 4096)
