"""Geometric transforms of an image and its instance masks: resizing, and the training augmentations
(horizontal flip, scale jitter).

A sample here is ``image`` ``H x W x 3`` uint8, ``masks`` ``G x H x W`` bool (one per object) and
``class_ids`` ``G`` ints, as everywhere in ``mrcnn_edu.data``. A mask moves with its image: it is resized
as a 0/255 grey image with the image's own filter and thresholded at one half, so an object and its mask
stay aligned to a fraction of a pixel.

Resizing goes through Pillow, whose filters are separable convolutions in C: a 12-megapixel photo
shrinks to the model's size in a few hundredths of a second (scikit-image's ``resize`` takes seconds). A
big shrink is done in two steps, as Pillow's ``reducing_gap`` does: first an integer factor ``f`` by
averaging ``f x f`` blocks (``Image.reduce``), then the exact size with the bilinear filter, which is
antialiased (its support widens with the shrink factor), so thin edges do not alias.

Randomness: ``augment`` draws only from the ``numpy.random.Generator`` it is given, so a training loop that
builds one from ``(seed, step)`` replays the same augmentations when a run resumes.

Host-only: NumPy arrays and Pillow images.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

__all__ = ["resize_image", "resize_masks", "flip_horizontal", "scale_about_origin", "augment"]

# shrink by block averaging until at most this factor is left for the bilinear filter (Pillow's advice:
# 2 is close to a one-step bilinear shrink, 3 closer still; the difference is a grey level or two)
REDUCING_GAP = 2.0


def resize_image(image, shape):
    """Resize an image with Pillow's bilinear filter (antialiased when shrinking).

    image : H x W x 3 uint8
    shape : ``(h, w)`` of the result
    returns h x w x 3 uint8. Pixel centres map onto pixel centres: pixel ``(x, y)`` of the result samples
    the input at ``((x + 0.5) * W / w - 0.5, (y + 0.5) * H / h - 0.5)``.
    """
    height, width = shape
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR,
                                            reducing_gap=REDUCING_GAP)
    return np.asarray(resized)


def resize_masks(masks, shape):
    """Resize instance masks as ``resize_image`` resizes their image.

    masks : G x H x W bool
    shape : ``(h, w)`` of the result
    returns G x h x w bool: each mask resized as a 0/255 grey image and thresholded at 128 (one half), so a
    pixel belongs to the object when at least half of what it covers does; a tiny object may vanish.
    """
    height, width = shape
    out = np.zeros((len(masks), height, width), dtype=bool)
    # Pillow resizes one plane at a time: the loop is over the few objects of one image, each call in C
    for g, mask in enumerate(masks):
        grey = Image.fromarray(mask.astype(np.uint8) * 255)
        out[g] = np.asarray(grey.resize((width, height), Image.Resampling.BILINEAR,
                                        reducing_gap=REDUCING_GAP)) >= 128
    return out


def flip_horizontal(image, masks):
    """Mirror an image and its masks left to right.

    image : H x W x 3 uint8, masks : G x H x W bool
    returns the mirrored copies. Column ``x`` goes to ``W - 1 - x``, so a box ``(x1, y1, x2, y2)`` becomes
    ``(W - x2, y1, W - x1, y2)``.
    """
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(masks[:, :, ::-1])


def scale_about_origin(image, masks, factor):
    """Scale an image and its masks by ``factor`` about the top-left corner, then crop or pad (black, no
    object) back to the input's size.

    image  : H x W x 3 uint8, masks : G x H x W bool
    factor : > 0; the content becomes ``round(H * factor) x round(W * factor)``, so the exact factor of each
             axis is ``round(H * factor) / H`` (rows) and ``round(W * factor) / W`` (columns)
    returns ``(image H x W x 3 uint8, masks G x H x W bool)``: a point ``(x, y)`` lands on about
    ``(factor * x, factor * y)``; what lands beyond the right or bottom edge is cut off.
    """
    height, width = image.shape[:2]
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    h, w = min(height, new_h), min(width, new_w)
    out_image = np.zeros_like(image)
    out_masks = np.zeros_like(masks)
    out_image[:h, :w] = resize_image(image, (new_h, new_w))[:h, :w]
    out_masks[:, :h, :w] = resize_masks(masks, (new_h, new_w))[:, :h, :w]
    return out_image, out_masks


def _check_scale_range(scale_range):
    try:
        low, high = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        raise ValueError(f"scale_range: expected None or a pair (low, high), got {scale_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise ValueError(f"scale_range: expected 0 < low <= high, both finite, got {scale_range!r}")
    return low, high


def _check_sample(image, masks, class_ids, rng):
    image, masks, class_ids = np.asarray(image), np.asarray(masks), np.asarray(class_ids)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected H x W x 3 uint8, got shape {image.shape} {image.dtype}")
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2] or masks.dtype != bool:
        raise ValueError(f"masks: expected G x {image.shape[0]} x {image.shape[1]} bool, got shape "
                         f"{masks.shape} {masks.dtype}")
    if class_ids.shape != masks.shape[:1]:
        raise ValueError(f"class_ids: expected {masks.shape[0]} ids (one per mask), got shape {class_ids.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return image, masks, class_ids


def augment(image, masks, class_ids, rng, flip=True, scale_range=None):
    """Randomly flip and rescale one training sample.

    image       : S x S x 3 uint8 (any H x W x 3 works), as ``resize_and_pad`` gives it: content at the
                  top left, black padding at the bottom and right
    masks       : G x S x S bool
    class_ids   : G ints
    rng         : ``numpy.random.Generator``, the only source of randomness. Draws, in this order: one
                  ``rng.random()`` for the flip (only when ``flip``), one ``rng.uniform(low, high)`` for the
                  scale (only when ``scale_range``); so the same generator state gives the same output
    flip        : mirror left to right with probability 0.5. The whole square is mirrored, padding included,
                  so the padding moves to the left: fine for training, where the model sees the square
                  and the boxes come from the mirrored masks. Boxes become ``x1' = S - x2``, ``x2' = S - x1``
    scale_range : None, or ``(low, high)``: scale the square by ``s ~ U(low, high)`` about the top-left
                  corner and crop or pad back to S x S (``scale_about_origin``); applied before the flip
    returns ``(image S x S x 3 uint8, masks G' x S x S bool, class_ids G')``: the masks that are empty
    afterwards (objects pushed out of the crop, or shrunk below half a pixel) are dropped together with
    their class ids, so ``G' <= G``.
    """
    image, masks, class_ids = _check_sample(image, masks, class_ids, rng)
    scale_range = None if scale_range is None else _check_scale_range(scale_range)
    mirror = bool(flip) and rng.random() < 0.5
    if scale_range is not None:
        image, masks = scale_about_origin(image, masks, rng.uniform(*scale_range))
    if mirror:
        image, masks = flip_horizontal(image, masks)
    keep = masks.any(axis=(1, 2))
    return image, masks[keep], class_ids[keep]
