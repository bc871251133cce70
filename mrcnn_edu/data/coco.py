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

Category ids may be any integers; the model numbers classes ``1..K`` (0 is the background), so a loaded
data set maps the categories, sorted by id, onto ``1..K`` and keeps ``category_ids`` to write results back
with the original ids. A file that is not what it should be raises ``DatasetError`` (a ``ValueError``)
whose message names the file and what is wrong.

Host-only: images and masks are NumPy arrays; files are read with Pillow, masks coded by pycocotools.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from .shapes import CLASS_NAMES, boxes_from_masks, collate, validation_set

__all__ = ["DatasetError", "encode_masks", "samples_to_coco", "coco_from_dict", "export_shapes", "read_image",
           "resize_and_pad", "undo_resize_and_pad", "CocoDataset", "load_coco"]


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
def read_image(path):
    """An image file as ``H x W x 3`` uint8 RGB (grayscale, palette and RGBA images converted)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"{path}: cannot read the image ({err})") from None


def _image_size(path):
    """``(height, width)`` from an image file's header, without decoding it."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"{path}: cannot read the image ({err})") from None


def resize_and_pad(image, masks, size):
    """Scale an image and its masks so the longer side is ``size``, then pad bottom and right to square.

    image : H x W x 3 uint8
    masks : G x H x W bool
    size  : output side S
    returns ``(image S x S x 3 uint8, masks G x S x S bool, scale)``; a point ``(x, y)`` of the input lands
    on ``(scale * x, scale * y)``, with ``scale = S / max(H, W)`` (the aspect ratio is kept). The padding is
    black and belongs to no mask. Masks are resized as 0/1 images and thresholded at 0.5 (with the image's
    anti-aliasing when shrinking), so a tiny object may vanish: callers drop empty masks.
    """
    image, masks = np.asarray(image), np.asarray(masks, dtype=bool)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected H x W x 3, got shape {image.shape}")
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks: expected G x {image.shape[0]} x {image.shape[1]}, got shape {masks.shape}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive int, got {size!r}")
    from skimage.transform import resize  # pulls in SciPy (half a second): only when resizing

    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = min(size, max(1, round(height * scale))), min(size, max(1, round(width * scale)))
    out_image = np.zeros((size, size, 3), dtype=np.uint8)
    out_masks = np.zeros((masks.shape[0], size, size), dtype=bool)
    if (new_h, new_w) == (height, width):
        out_image[:height, :width], out_masks[:, :height, :width] = image, masks
        return out_image, out_masks, scale
    smooth = scale < 1  # shrinking without a low-pass filter aliases thin edges
    scaled = resize(image, (new_h, new_w), order=1, preserve_range=True, anti_aliasing=smooth)
    out_image[:new_h, :new_w] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if masks.shape[0]:
        # the masks as channels of one image: one call resizes them all
        scaled = resize(masks.transpose(1, 2, 0).astype(np.float32), (new_h, new_w), order=1,
                        anti_aliasing=smooth)
        out_masks[:, :new_h, :new_w] = scaled.transpose(2, 0, 1) >= 0.5
    return out_image, out_masks, scale


def undo_resize_and_pad(boxes, masks, scale, original_size):
    """Map detections on a ``resize_and_pad``-ed image back onto the original image.

    boxes         : R x 4 ``(x1, y1, x2, y2)`` on the S x S image
    masks         : R x S x S bool
    scale         : the scale ``resize_and_pad`` returned
    original_size : ``(H, W)`` of the original image
    returns ``(boxes R x 4 float32, masks R x H x W bool)``, boxes clipped to the original image.
    """
    from skimage.transform import resize

    height, width = (int(v) for v in original_size)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / np.float32(scale)
    boxes = np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float32))
    masks = np.asarray(masks, dtype=bool)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if masks.shape[0] == 0:
        return boxes, np.zeros((0, height, width), dtype=bool)
    crop = masks[:, :new_h, :new_w].transpose(1, 2, 0).astype(np.float32)
    back = resize(crop, (height, width), order=1, anti_aliasing=scale > 1)
    return boxes, back.transpose(2, 0, 1) >= 0.5


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
        if not (_is_count(img["height"]) and _is_count(img["width"])):
            raise DatasetError(f"{path}: image {img['id']!r} has height {img['height']!r} and width "
                               f"{img['width']!r}, expected positive ints")


def _check_polygons(seg, where, path):
    for poly in seg:
        if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in poly)):
            raise DatasetError(f"{path}: {where}: a polygon must be a list of at least 3 points "
                               "[x1, y1, x2, y2, x3, y3, ...] of finite numbers")


def _check_rle(seg, height, width, where, path):
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
    elif not isinstance(counts, str):
        raise DatasetError(f"{path}: {where}: RLE counts must be a list of ints or a string")


def _check_segmentation(ann, image, where, path):
    seg = ann["segmentation"]
    if isinstance(seg, list):
        if not seg:
            raise DatasetError(f"{path}: {where}: empty segmentation (no polygon)")
        _check_polygons(seg, where, path)
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
    return {"size": seg["size"], "counts": seg["counts"].encode("ascii")}


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

    def __getitem__(self, index):
        info = self.images[index]
        path = self.image_dir / info["file_name"]
        image = read_image(path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise DatasetError(f"{path}: image is {image.shape[0]} x {image.shape[1]} (H x W) but "
                               f"{self.ann_file} says {info['height']} x {info['width']}")
        anns = [a for a in self.coco.imgToAnns[info["id"]] if not a["iscrowd"]]
        masks = _decode([_to_rle(a, info) for a in anns], info["height"], info["width"])
        class_ids = np.array([self._label[a["category_id"]] for a in anns], dtype=np.int64)
        if self.size is not None:
            image, masks, _ = resize_and_pad(image, masks, self.size)
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
