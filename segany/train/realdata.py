"""Real photographs whose objects can be labelled without a model, for honest evaluation.

``coins()``: scikit-image's Greek coins photo (303×384, public domain), labelled by a local
threshold, hole filling and connected components. The synthetic training data never uses these
pixels (see ``synth.HELD_OUT_SOURCES``).
"""

from __future__ import annotations

import numpy as np

from segany.errors import MissingExtraError


def coins(min_area: int = 150) -> tuple[np.ndarray, list[np.ndarray]]:
    """The coins photo as ``H×W×3`` uint8 RGB and one ``H×W`` bool mask per coin."""
    try:
        from scipy import ndimage as ndi
        from skimage import data, filters, measure, morphology
    except ImportError as err:  # pragma: no cover
        raise MissingExtraError("real-photo evaluation", "dev", "scikit-image") from err
    gray = data.coins()
    # Coins are brighter than the dark background; a local threshold copes with the uneven light.
    fg = gray > filters.threshold_local(gray, 101, offset=-8)
    fg &= gray > filters.threshold_otsu(gray) * 0.75
    fg = ndi.binary_opening(fg, morphology.disk(2))
    fg = ndi.binary_fill_holes(ndi.binary_closing(fg, morphology.disk(3)))
    labels = measure.label(fg)
    masks = []
    for region in measure.regionprops(labels):
        if region.area < min_area:
            continue
        minr, minc, maxr, maxc = region.bbox
        if minr == 0 or minc == 0 or maxr == gray.shape[0] or maxc == gray.shape[1]:
            continue  # cut by the frame: not a whole object
        masks.append(labels == region.label)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    return rgb, masks
