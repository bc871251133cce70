"""COCO-format instance segmentation files: write samples as one, load any data set (lecture stage 9).

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

Images are read, resized to the model's S x S square and mapped back by ``data.images``; a loaded data set
(``load_coco(..., size=S)``) hands out each image and its masks on that square.

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
import warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from . import DatasetError
from .images import MAX_SIDE, _image_size, boxes_from_masks, read_image, read_image_resized, resize_and_pad_masks

__all__ = ["DatasetError", "encode_masks", "samples_to_coco", "coco_from_dict", "CocoDataset", "load_coco"]


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
def samples_to_coco(samples, class_names, file_names=None):
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
            masks = resize_and_pad_masks(masks, self.size)
        keep = masks.any(axis=(1, 2))  # degenerate polygons, or objects lost in shrinking
        return image, masks[keep], class_ids[keep], info["id"]

    def batch_indices(self, step, batch_size, seed=0):
        """The images of training step ``step``: positions ``step B .. (step + 1) B - 1`` of an endless stream
        that visits every image once an epoch, in a new order every epoch (a permutation drawn from
        ``(seed, epoch)`` alone, so the batch of a step never depends on the steps before it).
        Returns ``B`` int positions into the data set."""
        n = len(self)
        positions = np.arange(step * batch_size, (step + 1) * batch_size)
        epochs = positions // n
        order = {e: np.random.default_rng([seed, int(e)]).permutation(n) for e in np.unique(epochs)}
        return [int(order[e][p]) for e, p in zip(epochs, positions % n)]


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
