"""The one mapping from a raw 2-D image to the model's input, shared by training and inference.

Per-image standardization, (x - mean) / std, clipped to +-CLIP: it is invariant to any positive
affine change of intensities, so a float image in [0, 1], the same image saved as 8-bit or
16-bit, or one with an offset all reach the model identically. The clip bounds the few extreme
values that impulse and speckle noise produce. A constant image maps to zeros.
"""

from __future__ import annotations

import numpy as np

#: Standardized values are clipped to [-CLIP, CLIP].
CLIP = 10.0
#: Version of this mapping, stored in checkpoints: a model trained with another normalization is refused.
NORMALIZATION = "standardize-clip10-v1"


def normalize(image: np.ndarray) -> np.ndarray:
    """Map (H, W) or a batch (B, H, W) of any real/integer dtype to float32, per image.

    Raises ValueError for complex, boolean-free non-numeric, empty or non-finite input (NaN/inf),
    naming the problem.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D image (H, W) or a batch (B, H, W), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"image is empty (shape {arr.shape})")
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"image dtype {arr.dtype} is not a real number type")
    axes = (-2, -1)
    # Values beyond float32 become inf, a sum of inf and -inf nan: the error below says so, not
    # numpy's warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        x = arr.astype(np.float32, copy=True)
        # Statistics in float64: 16-bit images and 4k frames lose precision in a float32 sum.
        mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
    # A float64 sum of float32 values cannot overflow, so the mean is finite exactly when every
    # pixel is: the check costs no pass of its own (values beyond float32 became inf in the cast).
    if not np.isfinite(mean).all():
        raise ValueError("image contains NaN or infinite values")
    std = x.std(axis=axes, keepdims=True, dtype=np.float64)
    x -= mean.astype(np.float32)
    x /= np.maximum(std, 1e-8).astype(np.float32)
    flat = std < 1e-8
    if flat.any():  # constant images map to zeros
        x[np.broadcast_to(flat, x.shape)] = 0.0
    np.clip(x, -CLIP, CLIP, out=x)
    return x
