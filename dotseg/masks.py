"""Binary mask geometry, shared by synthesis, metrics, the baseline and the plots (torch-free).

The *boundary* of a mask is its foreground pixels that have at least one 4-neighbour in the
background, where pixels outside the image count as background (see :mod:`dotseg.metrics`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

_FOUR_NEIGHBOURS = ndi.generate_binary_structure(2, 1)  # (3, 3) bool cross
_EIGHT_NEIGHBOURS = ndi.generate_binary_structure(2, 2)  # (3, 3) all True


def boundary(mask: NDArray[np.bool_], width: int = 1) -> NDArray[np.bool_]:
    """(H, W) bool: foreground pixels within ``width`` 4-neighbour steps of the background
    (the inner contour); outside the image counts as background."""
    # border_value=0 makes the image edge an outline, so that only an empty mask has no boundary:
    # HD95 and boundary F1 then never compare a shape against an empty point set by accident.
    return mask & ~ndi.binary_erosion(mask, structure=_FOUR_NEIGHBOURS, iterations=width, border_value=0)


def largest_component(mask: NDArray[np.bool_], eight: bool = False) -> NDArray[np.bool_]:
    """(H, W) bool: the largest connected component of ``mask`` (4-connected, or 8-connected with
    ``eight``); the mask itself when it has at most one."""
    labels, count = ndi.label(mask, structure=_EIGHT_NEIGHBOURS if eight else _FOUR_NEIGHBOURS)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # the background
    return labels == int(sizes.argmax())
