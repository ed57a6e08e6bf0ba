"""Edge-aware mask refinement: predicted masks snapped to the image's edges by a guided filter.

SAM predicts masks at a quarter of its input resolution (256² for the official models, 192² for
the bundled one) and scales them up bilinearly, so a mask's outline follows that coarse grid, not
the object: it cuts corners, and spills a few pixels over sharp boundaries. The colour guided
filter (He, Sun and Tang, "Guided Image Filtering", ECCV 2010) fits, in every (2r+1)² window,
the mask probability as a linear function of the pixel's RGB value, and averages the fits: where
the window holds an edge of the image, the filtered mask takes that edge; where the image is
flat, the mask is smoothed. Nothing is learnt and the model is not changed.

``RefinedPredictor`` wraps a predictor (``Predictor``, ``ZoomPredictor``): each returned mask is
the model's full-resolution probability, filtered with the image as guide, thresholded at 0.5.
The low-res logits it returns are the model's own (what the next click feeds back) and the
scores are unchanged. Unless given, the radius is ``RADIUS_FRACTION`` of the longer side of
what the model saw: the image, or the crop when a ``ZoomPredictor`` answered on one. It and eps
were chosen on held-out synthetic scenes (the model card's "Edge refinement" section). The
filter runs on the box of a call's masks grown by twice the radius, where it can change
anything, and the guide's statistics there are computed once for all of them. Parts narrower
than the window are thinned away; a mask the filter would erase entirely (an object much
smaller than the window) is returned as the model gave it.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike

from segany.errors import InputError
from segany.images import ImageLike, to_rgb_uint8
from segany.inference.prediction import Prediction
from segany.inference.protocol import PredictorLike

__all__ = [
    "DEFAULT_EPS",
    "RADIUS_FRACTION",
    "RefinedPredictor",
    "default_radius",
    "guided_filter",
    "refine_logits",
]

RADIUS_FRACTION = 1 / 16  # the default radius, as a fraction of the image's longer side
FAST_ABOVE = 48  # px of radius (images over ~770 px with the default): fitted on fewer pixels
DEFAULT_EPS = 1e-4  # on RGB scaled to [0, 1]: below it, a colour change counts as an edge
_FLOOR = 1e-3  # probabilities below this are background the filter need not visit
_LOGIT_CLIP = 20.0  # refined probabilities are returned as logits within ±this


def _mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)² window around each pixel (edges reflected), per channel."""
    size = 2 * radius + 1
    return cv2.boxFilter(x, -1, (size, size), borderType=cv2.BORDER_REFLECT)


def _check(radius: Any, eps: Any) -> None:
    if radius is not None and (int(radius) != radius or radius < 1):
        raise InputError(f"refinement radius must be a whole number >= 1, got {radius}")
    if not np.isfinite(eps) or eps <= 0:
        raise InputError(f"refinement eps must be a finite number > 0, got {eps}")


class _Guide:
    """What the filter needs of the guide alone, computed once for all the masks of a call:
    the window means of I (H×W×3) and (Σ + eps·I)⁻¹ per pixel, from the symmetric 3×3
    window covariance by its adjugate (six H×W planes)."""

    def __init__(self, guide: np.ndarray, radius: int, eps: float) -> None:
        self.guide, self.radius = guide, radius
        self.mean = mi = _mean(guide, radius)
        s = {}
        for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)):
            s[i, j] = _mean(guide[..., i] * guide[..., j], radius) - mi[..., i] * mi[..., j]
        for i in range(3):
            s[i, i] = s[i, i] + eps
        adj = {
            (0, 0): s[1, 1] * s[2, 2] - s[1, 2] ** 2,
            (0, 1): s[0, 2] * s[1, 2] - s[0, 1] * s[2, 2],
            (0, 2): s[0, 1] * s[1, 2] - s[0, 2] * s[1, 1],
            (1, 1): s[0, 0] * s[2, 2] - s[0, 2] ** 2,
            (1, 2): s[0, 1] * s[0, 2] - s[0, 0] * s[1, 2],
            (2, 2): s[0, 0] * s[1, 1] - s[0, 1] ** 2,
        }
        det = s[0, 0] * adj[0, 0] + s[0, 1] * adj[0, 1] + s[0, 2] * adj[0, 2]
        self.inverse = {k: v / det for k, v in adj.items()}

    def coefficients(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The window-averaged fit of p ≈ a·I + b: mean(a) H×W×3 and mean(b) H×W."""
        r, mi, inv = self.radius, self.mean, self.inverse
        mp = _mean(p, r)
        cov = _mean(self.guide * p[..., None], r) - mi * mp[..., None]  # H×W×3
        v0, v1, v2 = cov[..., 0], cov[..., 1], cov[..., 2]
        a = np.stack(
            [
                inv[0, 0] * v0 + inv[0, 1] * v1 + inv[0, 2] * v2,
                inv[0, 1] * v0 + inv[1, 1] * v1 + inv[1, 2] * v2,
                inv[0, 2] * v0 + inv[1, 2] * v1 + inv[2, 2] * v2,
            ],
            axis=-1,
        )  # H×W×3
        b = mp - (a * mi).sum(axis=-1)
        return _mean(a, r), _mean(b, r)


def _filter_all(
    guide: np.ndarray, probs: list[np.ndarray], radius: int, eps: float
) -> list[np.ndarray]:
    """``guided_filter`` of each of ``probs`` with one guide: its statistics computed once."""
    h, w = guide.shape[:2]
    if radius <= FAST_ABOVE:
        fitted = _Guide(guide, radius, eps)
        shrink = None
    else:
        step = radius // 24
        shrink = (max(1, round(w / step)), max(1, round(h / step)))  # cv2 sizes are (W, H)
        small = cv2.resize(guide, shrink, interpolation=cv2.INTER_AREA)
        fitted = _Guide(small, max(1, round(radius / step)), eps)
    out = []
    for p in probs:
        if shrink is None:
            ma, mb = fitted.coefficients(p)
        else:
            ma, mb = fitted.coefficients(cv2.resize(p, shrink, interpolation=cv2.INTER_AREA))
            ma = cv2.resize(ma, (w, h), interpolation=cv2.INTER_LINEAR)
            mb = cv2.resize(mb, (w, h), interpolation=cv2.INTER_LINEAR)
        out.append(((ma * guide).sum(axis=-1) + mb).astype(np.float32))
    return out


def guided_filter(guide: np.ndarray, p: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """The colour guided filter of ``p`` (H×W float32) with ``guide`` (H×W×3 float32 in
    [0, 1]): in each window, p ≈ a·I + b by ridge regression (eps on the diagonal), then
    q = mean(a)·I + mean(b). Returns q, H×W float32 (not clipped: it may leave [0, 1]).

    Above ``FAST_ABOVE`` px of radius, the fast guided filter (He and Sun, 2015): a and b are
    fitted on the images shrunk by s = radius // 24 (radius / s at that scale) and scaled back
    up bilinearly; q = a·I + b still uses the full-resolution guide, so edges stay sharp."""
    return _filter_all(guide, [p], radius, eps)[0]


def default_radius(size: tuple[int, int]) -> int:
    """The radius for an image of ``size`` (H, W): its longer side times ``RADIUS_FRACTION``
    (24 px for a 384-px image), at least 1."""
    return max(1, round(max(size) * RADIUS_FRACTION))


def refine_logits(
    image: np.ndarray,
    logits: np.ndarray,
    radius: int | None = None,
    eps: float = DEFAULT_EPS,
) -> np.ndarray:
    """Mask logits C×H×W (at the image's size) refined with ``image`` (H×W×3 uint8) as guide:
    the logits of the filtered probabilities, C×H×W float32 within ±20 (a mask is > 0).
    ``radius`` in pixels (None: ``default_radius``). Far from every mask (probability < 1e-3
    everywhere within twice the radius), and on masks with no pixel above it, the logits are
    returned as they came; so are those of a mask the filter would erase (an object much
    smaller than the window: a refinement never turns a found object into nothing)."""
    if radius is None:
        radius = default_radius(image.shape[:2])
    _check(radius, eps)
    logits = np.asarray(logits, dtype=np.float32)
    image = np.asarray(image)
    if logits.ndim != 3 or image.shape[:2] != logits.shape[1:] or image.shape[2:] != (3,):
        raise InputError(
            f"refine_logits takes an H×W×3 image and C×H×W logits of the same size; "
            f"got {image.shape} and {logits.shape}"
        )
    if image.dtype != np.uint8:
        raise InputError(f"refine_logits takes a uint8 RGB image, got {image.dtype}")
    out = logits.copy()
    floor = float(np.log(_FLOOR / (1 - _FLOOR)))
    visit = [k for k in range(len(logits)) if (logits[k] > floor).any()]
    if not visit:
        return out
    # One window for all the masks (the multimask outputs of a click overlap): the box of every
    # pixel above the floor, grown by twice the radius; the guide's statistics are shared.
    ys, xs = np.nonzero((logits[visit] > floor).any(axis=0))
    h, w = logits.shape[1:]
    grow = 2 * int(radius)
    y0, y1 = max(0, ys.min() - grow), min(h, ys.max() + 1 + grow)
    x0, x1 = max(0, xs.min() - grow), min(w, xs.max() + 1 + grow)
    guide = image[y0:y1, x0:x1].astype(np.float32) / 255.0
    clipped = np.clip(logits[visit, y0:y1, x0:x1], -_LOGIT_CLIP, _LOGIT_CLIP)
    probs = list(1.0 / (1.0 + np.exp(-clipped)))
    lo = 1.0 / (1.0 + np.exp(_LOGIT_CLIP))
    for k, q in zip(visit, _filter_all(guide, probs, int(radius), eps), strict=True):
        q = np.clip(q, lo, 1.0 - lo)
        if (q > 0.5).any() or not (logits[k] > 0).any():
            out[k, y0:y1, x0:x1] = np.log(q / (1.0 - q))
        # else: an object narrower than the window, averaged away; the model's mask stays
    return out


class RefinedPredictor(PredictorLike):
    """A predictor whose masks are refined with the image as guide (``refine_logits``).

    Wraps any ``PredictorLike`` (``Predictor``, ``ZoomPredictor``, ``OnnxPredictor``);
    ``set_image`` and ``predict`` take what theirs take and return the same ``Prediction``:
    masks C×H×W, or B×C×H×W for a batch of boxes (bool, or the refined logits with
    ``return_logits``), and the scores and low-res logits of the wrapped predictor, unchanged.
    """

    def __init__(
        self, predictor: PredictorLike, radius: int | None = None, eps: float = DEFAULT_EPS
    ) -> None:
        _check(radius, eps)
        self.predictor = predictor
        self.model = getattr(predictor, "model", None)  # the onnxruntime backend has none
        # None: default_radius of each image
        self.radius, self.eps = None if radius is None else int(radius), float(eps)
        self._image: np.ndarray | None = None

    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        rgb = to_rgb_uint8(image, image_format)
        self.predictor.set_image(rgb)
        self._image = rgb

    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Prediction:
        if self._image is None:
            raise InputError("call set_image before predict")
        raw = self.predictor.predict(
            point_coords, point_labels, box, mask_input, multimask_output, return_logits=True
        )
        radius = self.radius
        crop = getattr(self.predictor, "crop", None)  # a ZoomPredictor's crop, if it zoomed
        if radius is None and crop is not None:
            # The model saw the crop at its full input size: scale the radius to the crop.
            radius = default_radius((crop[3] - crop[1], crop[2] - crop[0]))
        if raw.masks.ndim == 4:  # a batch of prompts: B×C×H×W
            refined = np.stack([refine_logits(self._image, m, radius, self.eps) for m in raw.masks])
        else:
            refined = refine_logits(self._image, raw.masks, radius, self.eps)
        masks = refined if return_logits else refined > 0
        return Prediction(masks=masks, scores=raw.scores, logits=raw.logits)
