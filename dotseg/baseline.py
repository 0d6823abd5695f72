"""The classical, learning-free baseline: find the dots, then the region they fill.

The learned model is only worth its training if it beats this. The pipeline follows the seed's
pre-deep-learning idea (denoise, threshold, morphology) and makes each step robust:

1. **Rescale.** :func:`dotseg.normalize.normalize` (the model's own input mapping), so any dtype,
   range or offset reaches the baseline exactly as it reaches the model.
2. **Reduce.** Images larger than ``work_size`` are block-averaged by an integer factor k. The
   dots scale with the image in the synthesizer, so the working image looks alike at every input
   size, and a k x k block mean is itself a matched denoiser for dots a few pixels wide.
3. **Denoise and detect.** An optional pre-filter (median / non-local means / bilateral), then a
   Gaussian matched filter at each of ``dot_sigmas``. Each response is turned into a score in
   units of its own noise, (r - median) / (1.4826 MAD): a constant false-alarm-rate detector that
   needs no knowledge of the noise type or level. The score is thresholded (``robust``), or the
   response by Otsu or a local threshold. Connected components smaller than ``min_dot_area`` are
   specks, not dots.
4. **Dots -> region.** The dot spacing s is the median distance from a dot to its 2nd nearest
   neighbour (about sqrt(area / count) for both random and lattice placement). ``density``: a
   Gaussian kernel density of the dot centres with bandwidth ``bandwidth * s``, scaled so that it
   is ~1 inside a uniformly dotted region and ~0.5 on its edge, which is where the blob's outline
   lies -- the outermost dots sit about half a spacing inside it. ``close``: union of discs around
   the dots closed with a radius adapted to s. ``hull``: convex hull of the centres grown by half
   a spacing. Then holes are filled and the largest component is kept.
5. **Back to size.** ``prob`` is upsampled bilinearly and ``mask = prob >= 0.5`` at the input's
   size; hole filling and component removal are written back into ``prob`` first, so the two
   always agree.

Dots are assumed brighter than the background (the synthesizer's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError, cKDTree
from skimage.draw import polygon as draw_polygon
from skimage.filters import threshold_local, threshold_otsu
from skimage.restoration import denoise_bilateral, denoise_nl_means

from dotseg.configbase import check, check_range
from dotseg.normalize import normalize
from dotseg.prediction import Prediction

_EIGHT = np.ones((3, 3), dtype=bool)
#: MAD -> standard deviation for Gaussian data.
_MAD_TO_STD = 1.4826


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineConfig:
    work_size: int = 256
    """Largest side (px) processed: bigger inputs are block-averaged by the smallest integer factor
    that brings them to at most this; 0 = always full resolution."""
    denoise: Literal["gaussian", "median", "nlmeans", "bilateral"] = "gaussian"
    """Pre-filter before the dot matched filter: ``gaussian`` = none beyond the matched filter
    itself; ``median`` (size ``median_size``), ``nlmeans`` or ``bilateral`` (scikit-image, slower)."""
    median_size: int = 3
    """Median filter window side in working px (``denoise = median``)."""
    dot_sigmas: tuple[float, ...] = (1.0, 2.0)
    """Gaussian matched-filter scales in working px; the detection score is the max over scales."""
    threshold: Literal["robust", "otsu", "local"] = "robust"
    """``robust``: score (r - median) / (1.4826 MAD) above ``z_threshold``; ``otsu``: Otsu's
    threshold of the finest response; ``local``: scikit-image local mean threshold over
    ``local_block`` px, offset by ``z_threshold`` noise units."""
    z_threshold: float = 4.0
    """Detection threshold in robust noise standard deviations of the filter response."""
    min_contrast: float = 0.2
    """The threshold is at least this fraction of the way from the background median to the bright
    (99.9th percentile) response: on noise-free images the MAD is 0 and would admit any halo."""
    local_block: int = 31
    """Window side (odd, working px) of the ``local`` threshold."""
    min_dot_area: int = 2
    """Detected components smaller than this (working px) are specks, not dots."""
    peak_window: int = 5
    """Window side (working px) within which a detection score maximum is one dot's centre."""
    min_dots: int = 3
    """Fewer detected dots than this means nothing was found: empty mask, zero probability."""
    region: Literal["density", "close", "hull"] = "density"
    """How the dot set becomes a region: kernel density of the centres, closing of the centres
    (a concave hull), or their convex hull (see the module docstring)."""
    bandwidth: float = 0.8
    """Kernel density standard deviation as a multiple of the dot spacing."""
    edge_level: float = 0.5
    """Relative dot density taken as the region edge: prob = 0.5 there (``density``)."""
    inlier_level: float = 0.0
    """``close`` / ``hull``: only dots whose kernel-density score (prob of ``density``) is at least
    this are used, and only those in its largest region; 0 = every detected dot."""
    closing_scale: float = 1.5
    """``close``: closing disc radius as a multiple of the dot spacing (large = convex hull)."""
    margin: float = 0.5
    """``close`` / ``hull``: the region is grown by this multiple of the dot spacing beyond the
    outermost dot centres, where the outline lies on average."""
    fill_holes: bool = True
    """Fill holes of the region."""
    largest_only: bool = True
    """Keep only the largest connected region (the data has one shape per image)."""

    def __post_init__(self) -> None:
        check(self.work_size == 0 or self.work_size >= 16, "work_size",
              f"must be 0 (full resolution) or >= 16 px, got {self.work_size}")
        check_range(self.median_size, "median_size", 1, 31)
        check(len(self.dot_sigmas) > 0, "dot_sigmas", "needs at least one scale")
        for i, s in enumerate(self.dot_sigmas):
            check_range(s, f"dot_sigmas[{i}]", 0.0, 32.0, lo_open=True)
        check_range(self.z_threshold, "z_threshold", 0.0, lo_open=True)
        check_range(self.min_contrast, "min_contrast", 0.0, 1.0)
        check(self.local_block >= 3 and self.local_block % 2 == 1, "local_block",
              f"must be an odd number >= 3, got {self.local_block}")
        check_range(self.min_dot_area, "min_dot_area", 1)
        check_range(self.peak_window, "peak_window", 1, 64)
        check_range(self.min_dots, "min_dots", 1)
        check_range(self.bandwidth, "bandwidth", 0.0, 10.0, lo_open=True)
        check_range(self.edge_level, "edge_level", 0.0, 1.0, lo_open=True, hi_open=True)
        check_range(self.inlier_level, "inlier_level", 0.0, 1.0, hi_open=True)
        check_range(self.closing_scale, "closing_scale", 0.0, 10.0, lo_open=True)
        check_range(self.margin, "margin", 0.0, 5.0)


def _check_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D image (H, W), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"image is empty (shape {arr.shape})")
    if arr.dtype != bool and not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"image dtype {arr.dtype} is not a real number type")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError("image contains NaN or infinite values")
    return arr


def _block_mean(x: np.ndarray, k: int) -> np.ndarray:
    """(H, W) -> (ceil(H/k), ceil(W/k)) means of k x k blocks; the ragged edge is edge-padded."""
    if k == 1:
        return x
    h, w = x.shape
    ph, pw = -h % k, -w % k
    if ph or pw:
        x = np.pad(x, ((0, ph), (0, pw)), mode="edge")
    return x.reshape(x.shape[0] // k, k, x.shape[1] // k, k).mean(axis=(1, 3), dtype=np.float32)


def _robust_stats(r: np.ndarray) -> tuple[float, float, float]:
    """(median, robust sigma, 99.9th percentile) of a response; a strided subsample keeps it cheap."""
    flat = r.ravel()
    if flat.size > 16384:
        flat = flat[:: flat.size // 16384]
    med = float(np.median(flat))
    sigma = _MAD_TO_STD * float(np.median(np.abs(flat - med)))
    return med, sigma, float(np.quantile(flat, 0.999))


def _dot_spacing(centres: np.ndarray) -> float:
    """Median distance from a centre to its 2nd nearest neighbour (the 1st if there is one).

    Measured on the synthesizer's data this is sqrt(region area / dot count) to within ~10 %, for
    random and jittered-lattice placement alike (the 1st neighbour is ~0.75 of it for random dots
    and the 4th ~1.35: edge dots lack outer neighbours).
    """
    k = min(2, len(centres) - 1)
    dist, _ = cKDTree(centres).query(centres, k=k + 1)  # (n, k+1), column 0 is the point itself
    return float(np.median(dist[:, k]))


class ClassicalBaseline:
    """Learning-free dot-blob segmenter implementing :class:`dotseg.prediction.Segmenter`."""

    name = "baseline"

    def __init__(self, config: BaselineConfig | None = None) -> None:
        self.config = config if config is not None else BaselineConfig()

    # ------------------------------------------------------------------------------------------
    # Public API

    def predict(self, image: np.ndarray) -> Prediction:
        """(H, W) image of any real dtype -> mask (H, W) bool and prob (H, W) float32 in [0, 1].

        Raises ValueError for a non-2-D, empty, non-numeric or non-finite image.
        """
        arr = _check_image(image)
        h, w = arr.shape
        x = normalize(arr)  # (H, W) float32, zero mean, unit std
        side = self.config.work_size
        k = max(1, -(-max(h, w) // side)) if side else 1
        work = _block_mean(x, k)  # (h', w') float32
        prob = self._work_prob(work)  # (h', w') float32, mask = prob >= 0.5
        if k > 1:
            # grid_mode: work pixel i covers input pixels [i k, (i + 1) k), so centres line up.
            prob = ndi.zoom(prob, k, order=1, mode="nearest", grid_mode=True)[:h, :w]
            np.clip(prob, 0.0, 1.0, out=prob)
        return Prediction(mask=prob >= 0.5, prob=prob.astype(np.float32, copy=False))

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Several 2-D images (sizes may differ) -> one prediction each, in order."""
        return [self.predict(im) for im in images]

    # ------------------------------------------------------------------------------------------
    # Stages, all at working resolution

    def _work_prob(self, x: np.ndarray) -> np.ndarray:
        centres = self._detect(x)
        prob = np.zeros(x.shape, dtype=np.float32)
        if len(centres) < self.config.min_dots:
            return prob
        spacing = max(_dot_spacing(centres), 1.0)
        cfg = self.config
        prob = self._density_prob(centres, spacing, x.shape)
        if cfg.region == "density":
            return self._postprocess(prob)
        if cfg.inlier_level > 0:
            centres = self._inliers(centres, prob)
            if len(centres) < cfg.min_dots:
                return np.zeros(x.shape, dtype=np.float32)
        if cfg.region == "close":
            signed = self._closing_distance(centres, spacing, x.shape)
        else:
            signed = self._hull_distance(centres, x.shape)
        # Signed distance (px, > 0 inside) to the grown outline -> a soft score, 0.5 on the edge.
        signed += cfg.margin * spacing
        prob = 0.5 + 0.5 * np.tanh(signed / max(0.25 * spacing, 1.0))
        return self._postprocess(prob.astype(np.float32))

    def _prefilter(self, x: np.ndarray) -> np.ndarray:
        method = self.config.denoise
        if method == "median":
            return ndi.median_filter(x, size=self.config.median_size, mode="reflect")
        if method == "nlmeans":
            return denoise_nl_means(x, patch_size=5, patch_distance=6, h=0.8, fast_mode=True).astype(np.float32)
        if method == "bilateral":
            # Bilateral works on non-negative intensities; shift, filter, shift back.
            lo = float(x.min())
            return (denoise_bilateral(x - lo, sigma_spatial=1.5, mode="reflect") + lo).astype(np.float32)
        return x

    def _detect(self, x: np.ndarray) -> np.ndarray:
        """Dot centres (n, 2) float64 (y, x) in working px.

        A dot is a local maximum of the detection score (within ``peak_window``) inside a
        thresholded component of at least ``min_dot_area`` px. Peaks rather than components,
        because neighbouring dots merge into one component once smoothed.
        """
        cfg = self.config
        base = self._prefilter(x)
        responses = [ndi.gaussian_filter(base, s, mode="reflect", truncate=3.0) for s in cfg.dot_sigmas]
        if cfg.threshold == "robust":
            score = np.full(x.shape, -np.inf, dtype=np.float32)
            for r in responses:
                med, sigma, bright = _robust_stats(r)
                # Floor the noise unit so the threshold is >= min_contrast of the bright level.
                unit = max(sigma, cfg.min_contrast * (bright - med) / cfg.z_threshold, 1e-6)
                np.maximum(score, (r - med) / unit, out=score)
            dots = score > cfg.z_threshold
        elif cfg.threshold == "otsu":
            score = responses[0]
            flat = float(score.max()) == float(score.min())
            dots = np.zeros(x.shape, bool) if flat else score > threshold_otsu(score)
        else:  # local
            score = responses[0]
            _, sigma, _ = _robust_stats(score)
            block = min(cfg.local_block, 2 * ((min(x.shape) - 1) // 2) + 1)
            if block < 3:
                return np.zeros((0, 2))
            dots = score > threshold_local(score, block, method="mean", offset=-cfg.z_threshold * max(sigma, 1e-6))

        labels, n = ndi.label(dots, structure=_EIGHT)
        if n == 0:
            return np.zeros((0, 2))
        area = np.bincount(labels.ravel(), minlength=n + 1)  # (n+1,), index 0 is background
        keep = area >= cfg.min_dot_area
        keep[0] = False
        peaks = keep[labels] & (score >= ndi.maximum_filter(score, size=cfg.peak_window, mode="nearest"))
        # Ties (a flat top) give adjacent peaks: one dot each, at their mean position.
        labels, n = ndi.label(peaks, structure=_EIGHT)
        if n == 0:
            return np.zeros((0, 2))
        centres = ndi.center_of_mass(peaks, labels, np.arange(1, n + 1))
        return np.asarray(centres, dtype=np.float64).reshape(-1, 2)

    def _density_prob(self, centres: np.ndarray, spacing: float, shape: tuple[int, int]) -> np.ndarray:
        cfg = self.config
        h = cfg.bandwidth * spacing
        impulses = np.zeros(shape, dtype=np.float32)
        iy = np.clip(np.rint(centres[:, 0]).astype(np.int64), 0, shape[0] - 1)
        ix = np.clip(np.rint(centres[:, 1]).astype(np.int64), 0, shape[1] - 1)
        np.add.at(impulses, (iy, ix), 1.0)
        # The kernel integrates to 1 and the dots have density 1 / s^2 per px^2, so times s^2 the
        # density is ~1 inside the region and ~0.5 on a straight edge.
        dens = ndi.gaussian_filter(impulses, h, mode="constant", truncate=3.0)
        dens *= spacing * spacing
        return np.clip(dens * (0.5 / cfg.edge_level), 0.0, 1.0)

    def _inliers(self, centres: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """Centres on the largest region where the density score is >= ``inlier_level``."""
        labels, n = ndi.label(prob >= self.config.inlier_level, structure=_EIGHT)
        iy = np.clip(np.rint(centres[:, 0]).astype(np.int64), 0, prob.shape[0] - 1)
        ix = np.clip(np.rint(centres[:, 1]).astype(np.int64), 0, prob.shape[1] - 1)
        lab = labels[iy, ix]
        if n == 0 or not lab.any():
            return centres[:0]
        # The region holding most dots, not the largest in area: that is the shape.
        best = int(np.bincount(lab[lab > 0]).argmax())
        return centres[lab == best]

    def _closing_distance(self, centres: np.ndarray, spacing: float, shape: tuple[int, int]) -> np.ndarray:
        """Signed distance (px, > 0 inside) to the closing of the centre set by a disc of radius
        R = closing_scale * s: dilation is "within R of a centre", erosion "farther than R from
        the dilation's outside", both by Euclidean distance transforms (exact discs, and fast for
        any R, unlike structuring elements)."""
        radius = self.config.closing_scale * spacing
        pad = int(np.ceil(radius)) + 2  # so the erosion does not start at the image border
        pts = np.ones((shape[0] + 2 * pad, shape[1] + 2 * pad), dtype=bool)
        pts[np.rint(centres[:, 0]).astype(np.int64) + pad, np.rint(centres[:, 1]).astype(np.int64) + pad] = False
        dilated = ndi.distance_transform_edt(pts) <= radius
        inside = ndi.distance_transform_edt(dilated) - radius  # > 0 inside the closing
        return inside[pad:-pad, pad:-pad].astype(np.float32)

    @staticmethod
    def _hull_distance(centres: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Signed distance (px, > 0 inside) to the convex hull of the centres."""
        mask = np.zeros(shape, dtype=bool)
        try:
            hull = ConvexHull(centres)
            rr, cc = draw_polygon(centres[hull.vertices, 0], centres[hull.vertices, 1], shape)
            mask[rr, cc] = True
        except QhullError:  # collinear or coincident centres: the hull has no area
            pass
        iy = np.clip(np.rint(centres[:, 0]).astype(np.int64), 0, shape[0] - 1)
        ix = np.clip(np.rint(centres[:, 1]).astype(np.int64), 0, shape[1] - 1)
        mask[iy, ix] = True
        return (ndi.distance_transform_edt(mask) - ndi.distance_transform_edt(~mask)).astype(np.float32)

    def _postprocess(self, prob: np.ndarray) -> np.ndarray:
        """Fill holes and keep the largest component, writing the result back into ``prob``."""
        mask = prob >= 0.5
        out = mask
        if self.config.fill_holes:
            out = ndi.binary_fill_holes(out)
        if self.config.largest_only:
            labels, n = ndi.label(out, structure=_EIGHT)
            if n > 1:
                area = np.bincount(labels.ravel())
                area[0] = 0
                out = labels == int(area.argmax())
        prob = prob.astype(np.float32, copy=True)
        # Just below / at the cut, so mask == (prob >= 0.5) holds exactly.
        prob[mask & ~out] = np.minimum(prob[mask & ~out], np.float32(0.499))
        prob[out & ~mask] = 0.5
        return prob
