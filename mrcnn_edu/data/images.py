"""Images and masks at the boundary (host-only, NumPy and Pillow): read any image file as RGB, resize and pad it
to the model's square, map detections back onto the original image, and the boxes of masks.

A point ``(x, y)`` of an image lands on ``(scale x, scale y)`` of its resized, padded square, ``scale = S /
max(H, W)``; the padding is at the bottom and right. ``detections_to_original`` undoes that for a model's
detections, and drops those that lie in the padding. Large photos are reduced fast (by an integer factor
with Pillow first, or by the JPEG decoder itself in ``read_image_resized``). Files that cannot be read raise
``DatasetError`` naming the file.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps

from . import DatasetError
from .augment import resize_image, resize_masks

__all__ = ["MAX_SIDE", "read_image", "read_image_resized", "resize_and_pad", "undo_resize_and_pad",
           "resize_and_pad_masks", "detections_to_original", "boxes_from_masks", "collate"]

# the largest image side accepted (JPEG's own limit): pycocotools counts a mask's pixels in 32 bits
MAX_SIDE = 65535


# Pillow modes holding one channel of more than 8 bits: 16-bit unsigned ("I;16" little-endian as PNG and
# TIFF open them, "I;16B" big-endian, "I;16L", "I;16N" native), 32-bit signed ("I"), 32-bit float ("F")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_HIGH_DEPTH = _SIXTEEN_BIT + ("I", "F")
# EXIF orientations that swap width and height (a quarter turn, with or without a mirror)
_QUARTER_TURNS = (5, 6, 7, 8)


@contextlib.contextmanager
def _open_image(path):
    """``Image.open`` whose failures, while opening or decoding, become a ``DatasetError`` naming the file."""
    try:
        with Image.open(path) as img:
            yield img
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (OSError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        raise DatasetError(f"{path}: cannot read the image ({err})") from None


def _upright_size(img):
    """``(height, width)`` of an opened image once its EXIF orientation is applied (header only for JPEG
    and TIFF; a PNG without an early eXIf chunk is decoded to look for a late one)."""
    if img.getexif().get(ExifTags.Base.Orientation, 1) in _QUARTER_TURNS:
        return img.width, img.height
    return img.height, img.width


def _grey_to_uint8(values, mode):
    """One channel of more than 8 bits as H x W uint8 (``read_image``'s rules 1 to 3).

    values : H x W, uint16, int32 or float32 (Pillow modes I;16*, I, F)
    """
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    if mode in _SIXTEEN_BIT or (mode == "I" and 0 <= low and high <= 65535):
        low, high = 0.0, 65535.0      # the 16-bit range: 65535 -> 255, 257 -> 1
    elif mode == "F" and 0 <= low and high <= 1:
        low, high = 0.0, 1.0          # a float image in [0, 1], as matplotlib and scikit-image draw one
    if high == low:                   # a flat image (the stretch has nothing to stretch)
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.where(finite, (values - low) * (255.0 / (high - low)), 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb(img):
    """An opened Pillow image of any mode as H x W x 3 uint8 RGB (``read_image``'s rules)."""
    if img.mode in _HIGH_DEPTH:
        grey = _grey_to_uint8(np.asarray(img), img.mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    with warnings.catch_warnings():
        # a palette image with one transparency byte per colour warns that RGBA could keep the
        # transparency; we drop it on purpose (rule 4)
        warnings.filterwarnings("ignore", message="Palette images with Transparency", category=UserWarning)
        try:
            return np.asarray(img.convert("RGB"))
        except ValueError as err:  # a mode Pillow cannot turn into RGB
            raise DatasetError(f"{img.filename}: cannot convert image mode {img.mode} to RGB ({err})") from None


def read_image(path):
    """An image file as ``H x W x 3`` uint8 RGB, upright, whatever its pixel format.

    path : an image file Pillow reads (PNG, JPEG, TIFF, BMP, GIF (first frame), WebP, ...)
    returns H x W x 3 uint8, H x W as the annotation tools show the image:

    1. 16-bit grey (Pillow modes I;16, I;16B, I;16L, I;16N) scales 0..65535 onto 0..255:
       ``round(v * 255 / 65535)``, so a 16-bit gradient comes back as its 8-bit gradient.
    2. 32-bit integer grey ("I") whose values all lie in 0..65535 is 16-bit data (as Pillow opens some 16-bit
       files) and scales as rule 1; with values beyond that range, the image's min..max stretches onto
       0..255 (a flat image gives 0).
    3. float grey ("F") with values in 0..1 scales by 255; otherwise min..max stretches onto 0..255; NaN and
       infinities are black.
    4. Everything else goes through Pillow's ``convert("RGB")``: "1" gives 0/255, "L" is repeated over the
       three channels, "P" looks up its palette, "CMYK" and "YCbCr" convert by Pillow's formulas (no colour
       profile). Alpha ("RGBA", "LA", "PA", "P" with transparency) is dropped, not composited: the colour
       stored under a transparent pixel is kept, as OpenCV's ``imread``, torchvision and Detectron2 read
       such files, so a model trained here sees what theirs see.
    5. The EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``), as labelme, CVAT, Label Studio
       and browsers show a phone photo; so polygons drawn in those tools fit the image, and H x W are the
       upright sizes their COCO exports record.
    Raises ``DatasetError`` naming the file when it is missing or unreadable.
    """
    with _open_image(path) as img:
        ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb(img)


def _image_size(path):
    """``(height, width)`` of an image file, upright (``read_image``'s rule 5), from its header where it can."""
    with _open_image(path) as img:
        return _upright_size(img)


def _fitted_shape(height, width, size):
    """``(scale, (h, w))``: the scale that fits an H x W image into size x size, and the scaled shape."""
    scale = size / max(height, width)
    return scale, (min(size, max(1, round(height * scale))), min(size, max(1, round(width * scale))))


def _pad_image(image, size):
    """h x w x 3 -> size x size x 3, black at the bottom and the right."""
    out = np.zeros((size, size, 3), dtype=np.uint8)
    out[:image.shape[0], :image.shape[1]] = image
    return out


def _pad_masks(masks, size):
    """G x h x w -> G x size x size, False at the bottom and the right."""
    out = np.zeros((masks.shape[0], size, size), dtype=bool)
    out[:, :masks.shape[1], :masks.shape[2]] = masks
    return out


def _check_size(size, name="size"):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{name}: expected a positive int, got {size!r}")
    return int(size)


def resize_and_pad(image, masks, size):
    """Scale an image and its masks so the longer side is ``size``, then pad bottom and right to square.

    image : H x W x 3 uint8
    masks : G x H x W bool
    size  : output side S
    returns ``(image S x S x 3 uint8, masks G x S x S bool, scale)``; a point ``(x, y)`` of the input lands
    on ``(scale * x, scale * y)``, with ``scale = S / max(H, W)`` (the aspect ratio is kept). The padding is
    black and belongs to no mask. An image already S pixels on its longer side is only padded. The resizing
    is ``augment.resize_image`` and ``augment.resize_masks`` (Pillow's antialiased bilinear filter, masks
    thresholded at one half), so a tiny object may vanish: callers drop empty masks.
    """
    image, masks = np.asarray(image), np.asarray(masks, dtype=bool)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected H x W x 3, got shape {image.shape}")
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks: expected G x {image.shape[0]} x {image.shape[1]}, got shape {masks.shape}")
    size = _check_size(size)
    scale, shape = _fitted_shape(image.shape[0], image.shape[1], size)
    if shape != image.shape[:2]:
        image, masks = resize_image(image.astype(np.uint8, copy=False), shape), resize_masks(masks, shape)
    return _pad_image(image, size), _pad_masks(masks, size), scale


def resize_and_pad_masks(masks, size):
    """G x H x W bool masks resized and padded as ``resize_and_pad`` does with an image's masks: G x S x S bool."""
    _, shape = _fitted_shape(masks.shape[1], masks.shape[2], size)
    return _pad_masks(masks if shape == masks.shape[1:] else resize_masks(masks, shape), size)


def read_image_resized(path, size):
    """Read an image straight into the model's S x S input: ``resize_and_pad`` without the full-size array.

    path : an image file (``read_image``'s rules apply)
    size : S
    returns ``(image S x S x 3 uint8, scale, (H, W))`` with ``scale = S / max(H, W)`` and ``(H, W)`` the
    upright full size, as ``resize_and_pad(read_image(path), ...)`` gives them. A JPEG is decoded at 1/2, 1/4
    or 1/8 of its size by the decoder itself when that is still at least the target size (Pillow's
    ``draft``, which scales in the DCT), then resized as ``resize_and_pad`` does: the pixels differ from the
    full decode by a few grey levels, and where a side is not a multiple of the reduction (camera sizes
    are multiples of 8) the content shifts by under one output pixel at the far edge. Other formats are
    decoded whole.
    """
    size = _check_size(size)
    with _open_image(path) as img:
        height, width = _upright_size(img)
        scale, shape = _fitted_shape(height, width, size)
        # draft works on the stored (not yet turned) image; it only ever shrinks by 1, 2, 4 or 8
        img.draft(None, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
        ImageOps.exif_transpose(img, in_place=True)
        image = _to_rgb(img)
    if image.shape[:2] != shape:
        image = resize_image(image, shape)
    return _pad_image(image, size), scale, (height, width)


def _paste_back(mask, out):
    """Resize one mask of the resized image's content back to the original size, only around the object.

    mask : h x w bool, the content region of the resized image (no padding)
    out  : H x W bool, all False, the original size; receives the mask
    The result is that of resizing the whole mask to H x W (Pillow's bilinear filter, threshold at one half),
    but for a grey level of rounding at the threshold: Pillow's ``box`` argument computes just the output
    pixels near the object, with the full resize's filter.
    """
    height, width = out.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    sy, sx = mask.shape[0] / height, mask.shape[1] / width      # mask pixels per original pixel
    # the filter reaches max(1, s) mask pixels (its support widens when shrinking); one more for safety
    reach_y, reach_x = max(1.0, sy) + 1, max(1.0, sx) + 1
    y0, y1 = max(0, math.floor((rows[0] - reach_y) / sy)), min(height, math.ceil((rows[-1] + 1 + reach_y) / sy))
    x0, x1 = max(0, math.floor((cols[0] - reach_x) / sx)), min(width, math.ceil((cols[-1] + 1 + reach_x) / sx))
    grey = Image.fromarray(mask.astype(np.uint8) * 255)
    crop = grey.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    out[y0:y1, x0:x1] = np.asarray(crop) >= 128


def _boxes_to_original(boxes, scale, original_size):
    """R x 4 boxes on the S x S image -> R x 4 float32 on the H x W original, divided by scale and clipped."""
    height, width = original_size
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / np.float32(scale)
    return np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float32))


def undo_resize_and_pad(boxes, masks, scale, original_size):
    """Map detections on a ``resize_and_pad``-ed image back onto the original image.

    boxes         : R x 4 ``(x1, y1, x2, y2)`` on the S x S image
    masks         : R x S x S bool
    scale         : the scale ``resize_and_pad`` returned
    original_size : ``(H, W)`` of the original image
    returns ``(boxes R x 4 float32, masks R x H x W bool)``, boxes clipped to the original image. Each mask's
    content region (the S x S square less the padding) is resized to H x W with Pillow's bilinear filter and
    thresholded at one half, computing only the pixels around the object, so a few masks map onto a
    12-megapixel photo quickly (the R x H x W result itself is the cost for many detections).
    """
    height, width = (int(v) for v in original_size)
    boxes = _boxes_to_original(boxes, scale, (height, width))
    masks = np.asarray(masks, dtype=bool)
    new_h, new_w = (min(masks.shape[1], max(1, round(height * scale))),
                    min(masks.shape[2], max(1, round(width * scale))))
    back = np.zeros((masks.shape[0], height, width), dtype=bool)
    for mask, out in zip(masks, back):  # one Pillow call per detection, each around its own object
        _paste_back(mask[:new_h, :new_w], out)
    return boxes, back


def detections_to_original(detection, scale, original_size):
    """One image's detections on the resized-and-padded S x S image, moved onto the original image.

    detection     : dict of host NumPy arrays: ``boxes`` R x 4 ``(x1, y1, x2, y2)``, ``scores`` R,
                    ``labels`` R, ``masks`` R x S x S bool (as ``MaskRCNN.predict`` gives, after
                    ``backend.to_host``)
    scale         : the scale ``resize_and_pad`` (or ``read_image_resized``) returned
    original_size : ``(H, W)`` of the original image
    returns a dict with the same keys: ``boxes`` D x 4 float32 on the original image (divided by ``scale``
    and clipped to it), ``scores`` D, ``labels`` D, ``masks`` D x H x W bool (``undo_resize_and_pad``), in
    the input's order. A detection is dropped (D <= R) when its clipped box is less than one original pixel
    wide or high: it lies in the padding (or on its edge). A kept detection whose mask vanishes when mapped
    back keeps its empty mask: its box still counts for the box metric. Any other key whose value has R
    rows is filtered alike; the rest are copied.
    """
    missing = [k for k in ("boxes", "scores", "labels", "masks") if k not in detection]
    if missing:
        raise ValueError(f"detection: missing key(s) {', '.join(missing)}")
    boxes, masks = np.asarray(detection["boxes"]).reshape(-1, 4), np.asarray(detection["masks"], dtype=bool)
    count = boxes.shape[0]
    if masks.ndim != 3 or masks.shape[0] != count:
        raise ValueError(f"detection: masks must be {count} x S x S (one per box), got shape {masks.shape}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected a positive number, got {scale!r}")
    height, width = _check_size(original_size[0], "original_size"), _check_size(original_size[1], "original_size")
    clipped = _boxes_to_original(boxes, scale, (height, width))
    keep = (clipped[:, 2] - clipped[:, 0] >= 1) & (clipped[:, 3] - clipped[:, 1] >= 1)
    out = {key: (np.asarray(value)[keep] if np.ndim(value) and len(value) == count else value)
           for key, value in detection.items()}
    out["boxes"], out["masks"] = undo_resize_and_pad(boxes[keep], masks[keep], scale, (height, width))
    return out


# ------------------------------------------------------------------------------------------ masks and batches
def boxes_from_masks(masks):
    """The tight box of each mask, in continuous pixel coordinates (no ``+ 1``).

    masks : G x H x W bool (or 0/1)
    returns G x 4 float32 ``(x1, y1, x2, y2)``: ``x1`` the first column that holds a pixel of the mask,
    ``x2`` its last column + 1 (a one-pixel mask has width 1); rows alike. An empty mask gives
    ``(0, 0, 0, 0)``.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected G x H x W, got shape {masks.shape}")
    masks = masks.astype(bool, copy=False)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    height, width = masks.shape[1:]
    boxes = np.stack([cols.argmax(axis=1), rows.argmax(axis=1),
                      width - cols[:, ::-1].argmax(axis=1), height - rows[:, ::-1].argmax(axis=1)], axis=1)
    return np.where(rows.any(axis=1)[:, None], boxes, 0).astype(np.float32)


def collate(samples):
    """Stack samples into a batch.

    samples : N samples ``(image, masks, class_ids, ...)``, images all ``H x W x 3``
    returns ``(images, masks, class_ids)``: ``N x H x W x 3`` uint8, a list of N ``G_i x H x W`` bool, a list
    of N ``G_i`` int64 (the object counts differ between images, so masks and classes stay lists).
    """
    samples = list(samples)
    if not samples:
        raise ValueError("samples: expected at least one sample to collate")
    shapes = {s[0].shape for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"samples: images differ in size {sorted(shapes)}; resize and pad them to one size "
                         "first (mrcnn_edu.data.images.resize_and_pad)")
    return np.stack([s[0] for s in samples]), [s[1] for s in samples], [s[2] for s in samples]
