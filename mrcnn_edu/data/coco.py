"""COCO-format instance segmentation files: export the shapes data set, load any data set (lecture stage 9).

A COCO data set is an image folder plus one JSON file (as labelme, CVAT and Label Studio export)::

    {"images":      [{"id": 1, "file_name": "000000.png", "height": 128, "width": 128}, ...],
     "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "segmentation": ..., "bbox": [x, y, w, h],
                      "area": 1264, "iscrowd": 0}, ...],
     "categories":  [{"id": 2, "name": "circle"}, ...]}

``segmentation`` is a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` or a run-length encoding (RLE)
``{"size": [H, W], "counts": ...}``, uncompressed (counts a list of run lengths, column-major, starting
with a run of zeros) or compressed (counts a string). pycocotools turns each into an ``H x W`` mask, as its
``COCO.annToMask`` does. Polygons and boxes use continuous pixel coordinates, as this library: the polygon
``[10, 10, 30, 10, 30, 20, 10, 20]`` covers columns 10..29 and rows 10..19, and ``bbox`` is
``[x1, y1, x2 - x1, y2 - y1]``.

Images are read by ``read_image`` whatever their pixel format (16-bit, float, palette, CMYK, alpha: its
docstring gives the rules) and turned upright by their EXIF orientation, as the annotation tools show them.
The model takes S x S squares: ``resize_and_pad`` scales an image and its masks so the longer side is S and
pads bottom and right; ``read_image_resized`` goes straight from a (big) file to that square;
``detections_to_original`` maps the model's detections back onto the original image.

Category ids may be any integers; the model numbers classes ``1..K`` (0 is the background), so a loaded
data set maps the categories, sorted by id, onto ``1..K`` and keeps ``category_ids`` to write results back
with the original ids. A file that is not what it should be raises ``DatasetError`` (a ``ValueError``)
whose message names the file and what is wrong. Segmentations are checked before pycocotools sees them,
since its C code trusts them: a polygon coordinate of 1e9 or a malformed RLE string crashes the process.

Host-only: images and masks are NumPy arrays; files are read with Pillow, masks coded by pycocotools.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from .augment import resize_image, resize_masks
from .shapes import CLASS_NAMES, boxes_from_masks, collate, validation_set

__all__ = ["DatasetError", "encode_masks", "samples_to_coco", "coco_from_dict", "export_shapes", "read_image",
           "read_image_resized", "resize_and_pad", "undo_resize_and_pad", "detections_to_original", "CocoDataset",
           "load_coco"]


# the largest image side accepted (JPEG's own limit): pycocotools counts a mask's pixels in 32 bits
MAX_SIDE = 65535


class DatasetError(ValueError):
    """A data set file is missing, unreadable or not valid COCO; the message names the file."""


# -------------------------------------------------------------------------------------------- masks
def encode_masks(masks):
    """Compressed RLEs of instance masks, ready for JSON.

    masks : G x H x W bool
    returns a list of G dicts ``{"size": [H, W], "counts": str}`` (pycocotools wants Fortran-order uint8
    ``H x W x G``, and returns ``counts`` as bytes, which JSON cannot hold).
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected G x H x W, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _decode(rles, height, width):
    """G RLEs -> G x H x W bool (G may be 0)."""
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    with warnings.catch_warnings():
        # pycocotools' compiled decoder trips NumPy 2's __array__(copy=...) deprecation; nothing to act on
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        masks = mask_utils.decode(rles)
    return masks.transpose(2, 0, 1).astype(bool)


# ------------------------------------------------------------------------------------------ writing
def samples_to_coco(samples, file_names=None, class_names=CLASS_NAMES):
    """A COCO ground-truth dict of samples ``(image, masks, class_ids, ...)``.

    samples     : N samples: ``H x W x 3`` uint8, ``G x H x W`` bool, ``G`` ints in ``1..K``
    file_names  : N image file names (default ``000000.png``, ``000001.png``, ...)
    class_names : ``K + 1`` names, the background first; category ``k`` is ``class_names[k]``
    returns the dict, image ids ``1..N`` in order, annotations with RLE masks, ``bbox`` from the masks.
    """
    samples = list(samples)
    file_names = file_names or [f"{i:06d}.png" for i in range(len(samples))]
    images, annotations = [], []
    for image_id, (sample, name) in enumerate(zip(samples, file_names), start=1):
        image, masks, class_ids = sample[:3]
        images.append({"id": image_id, "file_name": name, "height": int(image.shape[0]),
                       "width": int(image.shape[1])})
        boxes = boxes_from_masks(masks)
        areas = np.asarray(masks).sum(axis=(1, 2))
        for rle, box, area, class_id in zip(encode_masks(masks), boxes.tolist(), areas.tolist(),
                                            np.asarray(class_ids).tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(class_id),
                                "segmentation": rle, "area": float(area), "iscrowd": 0,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    categories = [{"id": k, "name": name, "supercategory": "shape"} for k, name in enumerate(class_names)
                  if k > 0]
    return {"info": {"description": "mrcnn-edu"}, "images": images, "annotations": annotations,
            "categories": categories}


def coco_from_dict(data):
    """A pycocotools ``COCO`` object of an in-memory data set dict (without its "creating index" prints)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def export_shapes(out_dir, n, seed=0, size=128):
    """Write the shapes validation split of a seed as a COCO data set.

    out_dir : folder; gets ``images/000000.png ...`` and ``annotations.json``
    n, seed : ``mrcnn_edu.data.shapes.validation_set(n, seed, size)``, so evaluating on the export equals
              evaluating on the built-in validation split
    returns ``(annotations path, image folder)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    samples = validation_set(n, seed, size)
    names = [f"{i:06d}.png" for i in range(n)]
    for (image, _, _), name in zip(samples, names):
        Image.fromarray(image).save(image_dir / name)
    ann_file = out_dir / "annotations.json"
    ann_file.write_text(json.dumps(samples_to_coco(samples, names)), encoding="utf-8")
    return ann_file, image_dir


# ------------------------------------------------------------------------------------------ images
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


# ------------------------------------------------------------------------------------------ reading
def _read_json(path):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the annotation file ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with images, annotations and categories, "
                           f"got a {type(data).__name__}")
    return data


def _is_id(value):
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_count(value, low=1):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _entries(data, key, path):
    """``data[key]``: a list of JSON objects each, or a ``DatasetError``."""
    if key not in data:
        raise DatasetError(f"{path}: missing the top-level key '{key}'")
    entries = data[key]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DatasetError(f"{path}: '{key}' must be a list of objects")
    return entries


def _require(entry, keys, what, path):
    missing = [k for k in keys if k not in entry]
    if missing:
        raise DatasetError(f"{path}: {what} is missing {', '.join(repr(k) for k in missing)}")


def _unique_ids(entries, what, path):
    ids = [e["id"] for e in entries]
    bad = next((i for i in ids if not _is_id(i)), None)
    if bad is not None:
        raise DatasetError(f"{path}: {what} id {bad!r} is not an int or a string")
    if len(set(ids)) != len(ids):
        seen = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise DatasetError(f"{path}: {what} id {dup!r} appears more than once")
    return ids


def _check_images(images, image_dir, path):
    """Every image: an id, a file that exists, and its height and width (read from the file if absent)."""
    for k, img in enumerate(images):
        _require(img, ("id", "file_name"), f"images[{k}]", path)
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise DatasetError(f"{path}: images[{k}]: file_name must be a non-empty string")
    _unique_ids(images, "image", path)
    missing = [img["file_name"] for img in images if not (image_dir / img["file_name"]).is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DatasetError(f"{path}: {len(missing)} image file(s) missing in {image_dir}: "
                           f"{', '.join(map(str, missing[:3]))}{more}")
    for img in images:
        if "height" not in img or "width" not in img:
            img["height"], img["width"] = _image_size(image_dir / img["file_name"])
        if not (_is_count(img["height"]) and _is_count(img["width"])
                and img["height"] <= MAX_SIDE and img["width"] <= MAX_SIDE):
            raise DatasetError(f"{path}: image {img['id']!r} has height {img['height']!r} and width "
                               f"{img['width']!r}, expected ints in 1..{MAX_SIDE}")


def _is_number(value):
    """A JSON number (int or float, not a bool) that is finite, as a float can hold it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int with hundreds of digits
        return False


def _check_polygons(seg, height, width, where, path):
    """Polygons ``[[x1, y1, x2, y2, ...], ...]``: at least 3 points each, finite numbers, and every point at
    most one image side outside the image (``-W <= x <= 2 W``, ``-H <= y <= 2 H``).

    The bound keeps pycocotools safe: its rasterizer turns 5 x every coordinate into a C int and allocates
    a point per pixel along each edge, so a coordinate of 1e9 overflows and crashes the process. A point a
    little outside the image is common (a polygon drawn past the border) and pycocotools clips it.
    """
    for poly in seg:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or not all(map(_is_number, poly)):
            raise DatasetError(f"{path}: {where}: a polygon must be a list of at least 3 points "
                               "[x1, y1, x2, y2, x3, y3, ...] of finite numbers")
        points = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        low, high = np.array([-width, -height]), np.array([2 * width, 2 * height])
        outside = ((points < low) | (points > high)).any(axis=1)
        if outside.any():
            x, y = points[np.argmax(outside)]
            raise DatasetError(f"{path}: {where}: polygon point ({x:g}, {y:g}) lies more than one image side "
                               f"outside the {width} x {height} (W x H) image (allowed: x in [{-width}, "
                               f"{2 * width}], y in [{-height}, {2 * height}])")


def _rle_string_runs(counts):
    """The run lengths of a compressed RLE string, decoded as pycocotools' ``rleFrString`` does; None for a
    string that pycocotools would misread (and may crash on).

    counts : str
    returns int64 run lengths (zeros first, column-major), or None.

    The format: one character per 5-bit group, ``chr(48 + c)`` with ``c`` in 0..63 (so '0'..'o'); bit 0x20
    of ``c`` says "another group follows", the low 5 bits are the value, least significant group first, and
    bit 0x10 of a run's last group is its sign. From the fourth run on, the stored number is the
    difference from the run two before. Refused besides bad characters: a string that ends inside a run
    (pycocotools reads past its end) and runs of more than 6 groups (its 32-bit shifts overflow; a real
    mask needs 6 groups only beyond 2**29 pixels).
    """
    try:
        codes = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        return None
    if codes.size == 0 or codes.min() < 0 or codes.max() > 63 or codes[-1] & 0x20:
        return None
    last = (codes & 0x20) == 0                                   # the last group of each run
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))  # the first group of each run
    run_of = np.cumsum(np.concatenate([[0], last[:-1]]))        # the run each group belongs to
    group = np.arange(codes.size) - starts[run_of]               # 0 for a run's least significant group
    if group.max() >= 6:
        return None
    stored = np.bincount(run_of, weights=(codes & 0x1F) << (5 * group)).astype(np.int64)
    groups = np.diff(np.append(starts, codes.size))
    stored -= ((codes[last] >> 4) & 1) << (5 * groups)            # two's complement sign of each run
    # run i = stored i + run i - 2 from i = 3 on: a running sum over the odd runs, and over the even runs
    # from the third run on
    runs = stored.copy()
    runs[1::2] = np.cumsum(stored[1::2])
    runs[2::2] = np.cumsum(stored[2::2])
    return runs


def _check_rle(seg, height, width, where, path):
    """An RLE ``{"size": [H, W], "counts": ...}`` of its image's size whose runs are non-negative and sum to
    H * W, so that pycocotools decodes it within the mask (a longer run writes past it)."""
    if "counts" not in seg or "size" not in seg:
        raise DatasetError(f"{path}: {where}: an RLE segmentation needs 'counts' and 'size'")
    if not isinstance(seg["size"], list) or seg["size"] != [height, width]:
        raise DatasetError(f"{path}: {where}: RLE size {seg['size']} differs from its image's "
                           f"[height, width] = [{height}, {width}]")
    counts = seg["counts"]
    if isinstance(counts, list):
        if not all(_is_count(c, 0) for c in counts) or sum(counts) != height * width:
            raise DatasetError(f"{path}: {where}: uncompressed RLE counts must be non-negative ints summing "
                               f"to height * width = {height * width}")
    elif isinstance(counts, str):
        runs = _rle_string_runs(counts)
        if runs is None:
            shown = counts if len(counts) <= 40 else counts[:37] + "..."
            raise DatasetError(f"{path}: {where}: malformed compressed RLE counts {shown!r} (expected "
                               "pycocotools' characters '0'..'o', each run complete)")
        negative = int((runs < 0).sum())
        if negative or runs.sum() != height * width:
            also = f" and {negative} are negative" if negative else ""
            raise DatasetError(f"{path}: {where}: compressed RLE runs sum to {runs.sum()}{also}, expected "
                               f"non-negative runs summing to height * width = {height * width}")
    else:
        raise DatasetError(f"{path}: {where}: RLE counts must be a list of ints or a string")


def _check_box_and_area(ann, where, path):
    """``bbox`` (when given) is ``[x, y, w, h]``, 4 finite numbers; ``area`` (when given) a finite number:
    pycocotools' evaluation reads both."""
    if "bbox" in ann and not (isinstance(ann["bbox"], list) and len(ann["bbox"]) == 4
                              and all(map(_is_number, ann["bbox"]))):
        raise DatasetError(f"{path}: {where}: bbox must be [x, y, width, height], 4 finite numbers, "
                           f"got {ann['bbox']!r}")
    if "area" in ann and not _is_number(ann["area"]):
        raise DatasetError(f"{path}: {where}: area must be a finite number, got {ann['area']!r}")


def _check_segmentation(ann, image, where, path):
    seg = ann["segmentation"]
    if isinstance(seg, list):
        if not seg:
            raise DatasetError(f"{path}: {where}: empty segmentation (no polygon)")
        _check_polygons(seg, image["height"], image["width"], where, path)
    elif isinstance(seg, dict):
        _check_rle(seg, image["height"], image["width"], where, path)
    else:
        raise DatasetError(f"{path}: {where}: segmentation must be a list of polygons or an RLE object")


def _to_rle(ann, image):
    """One annotation's segmentation as a compressed RLE (pycocotools' ``annToRLE``)."""
    seg, height, width = ann["segmentation"], image["height"], image["width"]
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, height, width)
    counts = seg["counts"]  # bytes once pycocotools' evaluation has converted the annotation in place
    return {"size": seg["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _check_annotations(annotations, images_by_id, category_ids, path):
    """Keys, known image and category ids, valid segmentations; fills ``id``, ``iscrowd``, ``area`` and
    ``bbox`` where absent, since pycocotools' evaluation needs them."""
    for k, ann in enumerate(annotations):
        where = f"annotation {ann['id']!r}" if "id" in ann else f"annotations[{k}]"
        _require(ann, ("image_id", "category_id", "segmentation"), where, path)
        if not _is_id(ann["image_id"]) or ann["image_id"] not in images_by_id:
            raise DatasetError(f"{path}: {where}: unknown image_id {ann['image_id']!r} (not in 'images')")
        if not _is_id(ann["category_id"]) or ann["category_id"] not in category_ids:
            raise DatasetError(f"{path}: {where}: unknown category_id {ann['category_id']!r} "
                               f"(categories: {sorted(category_ids, key=str)})")
        image = images_by_id[ann["image_id"]]
        _check_segmentation(ann, image, where, path)
        _check_box_and_area(ann, where, path)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann or "bbox" not in ann:
            rle = _to_rle(ann, image)
            ann.setdefault("area", float(mask_utils.area(rle)))
            ann.setdefault("bbox", mask_utils.toBbox(rle).tolist())
    next_id = 1 + max((a["id"] for a in annotations if isinstance(a.get("id"), int)), default=0)
    for ann in annotations:
        if "id" not in ann:
            ann["id"], next_id = next_id, next_id + 1
    _unique_ids(annotations, "annotation", path)


def _validate(data, image_dir, path):
    """Check (and complete) a loaded COCO dict in place; raise ``DatasetError`` on anything wrong."""
    images = _entries(data, "images", path)
    annotations = _entries(data, "annotations", path)
    categories = _entries(data, "categories", path)
    if not images:
        raise DatasetError(f"{path}: empty data set: 'images' is empty")
    if not categories:
        raise DatasetError(f"{path}: 'categories' is empty")
    for k, cat in enumerate(categories):
        _require(cat, ("id", "name"), f"categories[{k}]", path)
    _unique_ids(categories, "category", path)
    _check_images(images, image_dir, path)
    _check_annotations(annotations, {img["id"]: img for img in images}, {c["id"] for c in categories}, path)
    if not any(not a["iscrowd"] for a in annotations):
        raise DatasetError(f"{path}: empty data set: no annotations (other than crowd regions)")


class CocoDataset:
    """A loaded COCO data set: ``dataset[i]`` is ``(image, masks, class_ids, image_id)``.

    image     : H x W x 3 uint8 RGB (S x S when loaded with ``size=S``)
    masks     : G x H x W bool, one per non-crowd annotation with a non-empty mask, in file order
    class_ids : G int64 in ``1..K``: category ``category_ids[k - 1]`` is class ``k``
    image_id  : the image's id in the file

    Attributes: ``coco`` (the pycocotools ground truth, original ids and sizes, for ``coco_evaluate``),
    ``category_ids`` (K original ids, sorted), ``class_names`` (K + 1 names, "background" first), ``size``.
    Crowd annotations (``iscrowd: 1``) are no training targets; the evaluation still ignores detections on
    them, as COCO does.
    """

    def __init__(self, data, ann_file, image_dir, size=None):
        self.ann_file, self.image_dir, self.size = Path(ann_file), Path(image_dir), size
        self.coco = coco_from_dict(data)
        self.images = data["images"]
        categories = sorted(data["categories"], key=lambda c: (str(type(c["id"])), c["id"]))
        self.category_ids = tuple(c["id"] for c in categories)
        self.class_names = ("background",) + tuple(str(c["name"]) for c in categories)
        self._label = {cid: k for k, cid in enumerate(self.category_ids, start=1)}

    def __len__(self):
        return len(self.images)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def image_info(self, index):
        """The file's entry of image ``index`` (id, file_name, height, width) plus the ``scale`` that
        ``resize_and_pad`` applies to it (1.0 without a ``size``)."""
        info = dict(self.images[index])
        info["scale"] = 1.0 if self.size is None else self.size / max(info["height"], info["width"])
        return info

    @property
    def image_ids(self):
        """The images' ids, in the data set's order (``dataset[i]`` is image ``image_ids[i]``)."""
        return [img["id"] for img in self.images]

    def subset(self, indices):
        """A data set of some of these images only, e.g. a train / validation split.

        indices : ints in ``0..len(self) - 1``, no repeats; the new data set holds these images in this order
        returns a ``CocoDataset`` with those images and their annotations, the same ``category_ids``,
        ``class_names`` and ``size`` (even when a category has no annotation left), and its own ``coco``
        index, so that ``coco_evaluate`` on it sees only its images. Its entries are copies: pycocotools'
        evaluation edits annotations in place, and must not edit the parent's.
        """
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise ValueError(f"indices: expected a 1-d sequence of ints, got {indices!r}")
        bad = indices[(indices < 0) | (indices >= len(self))]
        if bad.size:
            raise ValueError(f"indices: {bad[0]} is out of range for a data set of {len(self)} images")
        if np.unique(indices).size != indices.size:
            raise ValueError("indices: an image is chosen more than once")
        images = [dict(self.images[i]) for i in indices.tolist()]
        annotations = [dict(a) for img in images for a in self.coco.imgToAnns[img["id"]]]
        data = dict(self.coco.dataset, images=images, annotations=annotations)
        return CocoDataset(data, self.ann_file, self.image_dir, self.size)

    def _check_shape(self, path, shape, info):
        """The decoded image's upright ``(H, W)`` must be the file's record of it."""
        if shape == (info["height"], info["width"]):
            return
        hint = ""
        if shape == (info["width"], info["height"]):
            hint = (" (its EXIF orientation turns it a quarter turn: were the annotations made on the "
                    "stored, unturned image?)")
        raise DatasetError(f"{path}: image is {shape[0]} x {shape[1]} (H x W) but {self.ann_file} says "
                           f"{info['height']} x {info['width']}{hint}")

    def __getitem__(self, index):
        info = self.images[index]
        path = self.image_dir / info["file_name"]
        if self.size is None:
            image = read_image(path)
            self._check_shape(path, image.shape[:2], info)
        else:  # big photos: decode (JPEG) at a reduced scale, resize masks and image with Pillow
            image, _, shape = read_image_resized(path, self.size)
            self._check_shape(path, shape, info)
        anns = [a for a in self.coco.imgToAnns[info["id"]] if not a["iscrowd"]]
        masks = _decode([_to_rle(a, info) for a in anns], info["height"], info["width"])
        class_ids = np.array([self._label[a["category_id"]] for a in anns], dtype=np.int64)
        if self.size is not None:
            _, shape = _fitted_shape(info["height"], info["width"], self.size)
            masks = _pad_masks(masks if shape == masks.shape[1:] else resize_masks(masks, shape), self.size)
        keep = masks.any(axis=(1, 2))  # degenerate polygons, or objects lost in shrinking
        return image, masks[keep], class_ids[keep], info["id"]

    def batches(self, batch_size, seed=0, start=0):
        """Endless shuffled batches (a new permutation every epoch, from ``seed`` and the epoch number),
        from batch ``start`` on, each ``collate``'d: ``(N x S x S x 3 uint8, [G_i x S x S bool], [G_i int64])``.
        Needs one image size: load with ``size=S`` unless every image has the same size."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start: expected an int >= 0, got {start!r}")
        n = len(self)
        step = start
        while True:
            positions = np.arange(step * batch_size, (step + 1) * batch_size)
            epochs = positions // n
            order = {e: np.random.default_rng([seed, int(e)]).permutation(n) for e in np.unique(epochs)}
            yield collate(self[int(order[e][p])] for e, p in zip(epochs, positions % n))
            step += 1


def load_coco(ann_file, image_dir, size=None):
    """Load a COCO-format instance segmentation data set (polygon or RLE masks).

    ann_file  : the annotations JSON
    image_dir : the folder that ``file_name`` is relative to
    size      : None keeps each image's size; an int S resizes and pads every image to S x S
                (``resize_and_pad``)
    returns a ``CocoDataset``. Raises ``DatasetError`` naming the file for: a missing or malformed JSON file,
    missing keys, unknown image or category ids, malformed segmentations, missing image files, no images or
    no annotations.
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size: expected None or a positive int, got {size!r}")
    data = _read_json(ann_file)
    _validate(data, image_dir, ann_file)
    return CocoDataset(data, ann_file, image_dir, size)
