"""Configuration of the classical, learning-free baseline (see :mod:`dotseg.baseline.classical`).

Torch- and scikit-image-free, so the root config loads in milliseconds.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from dotseg.configbase import NONEMPTY, PositiveInt, Section, check


class BaselineConfig(Section):
    work_size: int = 256
    """Largest side (px) processed: bigger inputs are block-averaged by the smallest integer factor
    that brings them to at most this; 0 = always full resolution."""
    denoise: Literal["gaussian", "median", "nlmeans", "bilateral"] = "gaussian"
    """Pre-filter before the dot matched filter: ``gaussian`` = none beyond the matched filter
    itself; ``median`` (size ``median_size``), ``nlmeans`` or ``bilateral`` (scikit-image, slower)."""
    median_size: int = Field(3, ge=1, le=31)
    """Median filter window side in working px (``denoise = median``)."""
    dot_sigmas: Annotated[tuple[Annotated[float, Field(gt=0.0, le=32.0)], ...], NONEMPTY] = (1.0, 2.0)
    """Gaussian matched-filter scales in working px; the detection score is the max over scales."""
    threshold: Literal["robust", "otsu", "local"] = "robust"
    """``robust``: score (r - median) / sigma above ``z_threshold``; ``otsu``: Otsu's
    threshold of the finest response; ``local``: scikit-image local mean threshold over
    ``local_block`` px, offset by ``z_threshold`` noise units."""
    z_threshold: float = Field(4.5, gt=0.0)
    """Detection threshold in noise standard deviations of the filter response (sigma = 1.4826
    MAD, or more by ``tail_quantile``)."""
    tail_quantile: float = 0.95
    """The noise sigma is at least what puts this quantile of the response where a Gaussian would
    (a guard against skewed noise: sparse salt); 0 = MAD only."""
    min_contrast: float = Field(0.2, ge=0.0, le=1.0)
    """The threshold is at least this fraction of the way from the background median to the bright
    (99.9th percentile) response: on noise-free images the MAD is 0 and would admit any halo."""
    local_block: int = 31
    """Window side (odd, working px) of the ``local`` threshold."""
    min_dot_area: PositiveInt = 2
    """Detected components smaller than this (working px) are specks, not dots."""
    peak_window: int = Field(5, ge=1, le=64)
    """Window side (working px) within which a detection score maximum is one dot's centre."""
    min_dots: PositiveInt = 5
    """Fewer detected dots than this means nothing was found: empty mask, zero probability."""
    region: Literal["density", "close", "hull"] = "hull"
    """How the dot set becomes a region: kernel density of the centres, closing of the centres
    (a concave hull), or their convex hull (see the module docstring)."""
    bandwidth: float = Field(0.6, gt=0.0, le=10.0)
    """Kernel density standard deviation as a multiple of the dot spacing."""
    edge_level: float = Field(0.4, gt=0.0, lt=1.0)
    """Relative dot density taken as the region edge: prob = 0.5 there (``density``)."""
    inlier_level: float = Field(0.2, ge=0.0, lt=1.0)
    """``close`` / ``hull``: only dots whose kernel-density score (prob of ``density``) is at least
    this are used, and only those in its largest region; 0 = every detected dot."""
    closing_scale: float = Field(1.5, gt=0.0, le=10.0)
    """``close``: closing disc radius as a multiple of the dot spacing (large = convex hull)."""
    margin: float = Field(0.35, ge=0.0, le=5.0)
    """``close`` / ``hull``: the region is grown by this multiple of the dot spacing beyond the
    outermost dot centres, where the outline lies on average."""
    max_area_fraction: float = Field(0.5, gt=0.0, le=1.0)
    """A region covering more of the frame than this is taken as noise detections scattered
    everywhere, not a shape, and nothing is returned (the synthesizer's largest blobs cover ~0.43)."""
    fill_holes: bool = True
    """Fill holes of the region."""
    largest_only: bool = True
    """Keep only the largest connected region (the data has one shape per image)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check(
            self.work_size == 0 or self.work_size >= 16,
            "work_size",
            f"must be 0 (full resolution) or >= 16 px, got {self.work_size}",
        )
        check(
            self.tail_quantile == 0 or 0.5 < self.tail_quantile < 1,
            "tail_quantile",
            f"must be 0 (off) or in (0.5, 1), got {self.tail_quantile}",
        )
        check(
            self.local_block >= 3 and self.local_block % 2 == 1,
            "local_block",
            f"must be an odd number >= 3, got {self.local_block}",
        )
        return self
