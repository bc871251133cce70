"""COCO files (data/coco.py): export and load round trip, polygon and RLE masks, resizing, clear errors."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrcnn_edu.data.coco import DatasetError, encode_masks, load_coco
from mrcnn_edu.data.images import resize_and_pad, undo_resize_and_pad
from mrcnn_edu.data.shapes import boxes_from_masks, export_shapes, validation_set


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    ann_file, image_dir = export_shapes(out, n=6, seed=2)
    return ann_file, image_dir


def write_dataset(folder, data, images):
    """``images``: {file name: H x W (x C) uint8}; returns (annotation file, image folder)."""
    (folder / "img").mkdir(exist_ok=True)
    for name, pixels in images.items():
        Image.fromarray(pixels).save(folder / "img" / name)
    ann = folder / "ann.json"
    ann.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return ann, folder / "img"


def small_dataset(**changes):
    """One 40 x 60 image with a polygon rectangle (category 7) and a polygon triangle (category 3)."""
    data = {"images": [{"id": 10, "file_name": "a.png", "height": 40, "width": 60}],
            "annotations": [{"id": 1, "image_id": 10, "category_id": 7,
                             "segmentation": [[10, 5, 30, 5, 30, 25, 10, 25]]},
                            {"id": 2, "image_id": 10, "category_id": 3,
                             "segmentation": [[40, 10, 50, 10, 50, 20]]}],
            "categories": [{"id": 7, "name": "rect"}, {"id": 3, "name": "tri"}]}
    data.update(changes)
    return data


def test_export_then_load_gives_back_the_samples(exported):
    ann_file, image_dir = exported
    assert ann_file.name == "annotations.json" and len(list(image_dir.glob("*.png"))) == 6
    data = load_coco(ann_file, image_dir)
    assert len(data) == 6 and data.category_ids == (1, 2, 3)
    assert data.class_names == ("background", "square", "circle", "triangle")
    for (image, masks, class_ids), (image2, masks2, class_ids2, image_id) in zip(validation_set(6, 2), data):
        np.testing.assert_array_equal(image2, image)
        np.testing.assert_array_equal(masks2, masks)
        np.testing.assert_array_equal(class_ids2, class_ids)
    raw = json.loads(ann_file.read_text())
    ann = raw["annotations"][0]
    assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
    first = validation_set(1, 2)[0][1][0]
    x1, y1, x2, y2 = boxes_from_masks(first[None])[0]
    assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1] and ann["area"] == first.sum()


def test_polygons_load_as_the_right_masks_with_contiguous_classes(tmp_path):
    ann, img = write_dataset(tmp_path, small_dataset(), {"a.png": np.zeros((40, 60, 3), np.uint8)})
    data = load_coco(ann, img)
    assert data.category_ids == (3, 7) and data.class_names == ("background", "tri", "rect")
    image, masks, class_ids, image_id = data[0]
    assert image_id == 10 and image.shape == (40, 60, 3)
    np.testing.assert_array_equal(class_ids, [2, 1])   # category 7 -> class 2, category 3 -> class 1
    rect = np.zeros((40, 60), bool)
    rect[5:25, 10:30] = True                           # continuous coordinates: columns 10..29, rows 5..24
    np.testing.assert_array_equal(masks[0], rect)
    # the right triangle (40, 10), (50, 10), (50, 20): within its box, narrowing downward, half of it
    rows, cols = np.nonzero(masks[1])
    assert rows.min() >= 10 and rows.max() <= 19 and cols.min() >= 40 and cols.max() <= 49
    widths = masks[1].sum(axis=1)[10:20]
    assert (np.diff(widths) <= 0).all() and widths[0] >= 9 and 40 <= masks[1].sum() <= 60
    # area and bbox are filled in for the evaluation
    gt = data.coco.loadAnns([1])[0]
    assert gt["bbox"] == [10, 5, 20, 20] and gt["area"] == 400 and gt["iscrowd"] == 0


def test_uncompressed_and_compressed_rle_load(tmp_path):
    mask = np.zeros((40, 60), bool)
    mask[3:9, 50:58] = True
    compressed = encode_masks(mask[None])[0]
    # uncompressed RLE: alternating run lengths of 0s and 1s, column-major
    flat = np.concatenate([[False], mask.ravel(order="F"), [not mask.ravel(order="F")[-1]]])
    runs = np.diff(np.flatnonzero(np.diff(flat.astype(int)) != 0), prepend=0).tolist()
    uncompressed = {"size": [40, 60], "counts": runs}
    anns = [{"id": 1, "image_id": 10, "category_id": 3, "segmentation": compressed},
            {"id": 2, "image_id": 10, "category_id": 3, "segmentation": uncompressed}]
    ann, img = write_dataset(tmp_path, small_dataset(annotations=anns), {"a.png": np.zeros((40, 60), np.uint8)})
    image, masks, class_ids, _ = load_coco(ann, img)[0]
    assert image.shape == (40, 60, 3)                  # a grayscale file comes back RGB
    np.testing.assert_array_equal(masks[0], mask)
    np.testing.assert_array_equal(masks[1], mask)


def test_rgba_images_become_rgb(tmp_path):
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    ann, img = write_dataset(tmp_path, small_dataset(), {"a.png": rgba})
    image = load_coco(ann, img)[0][0]
    assert image.shape == (40, 60, 3) and (image[..., 0] == 200).all() and (image[..., 1:] == 0).all()


def test_resize_and_pad_keeps_the_aspect_ratio():
    image = np.full((50, 100, 3), 200, np.uint8)
    masks = np.zeros((2, 50, 100), bool)
    masks[0, 10:30, 20:60] = True
    masks[1, 0, 0] = True                              # one pixel, lost when halving
    out, out_masks, scale = resize_and_pad(image, masks, 50)
    assert scale == 0.5 and out.shape == (50, 50, 3) and out_masks.shape == (2, 50, 50)
    assert (out[:25] == 200).all() and (out[25:] == 0).all()   # padded at the bottom
    np.testing.assert_array_equal(boxes_from_masks(out_masks[:1]), [[10, 5, 30, 15]])
    assert not out_masks[1].any()
    boxes, back = undo_resize_and_pad(boxes_from_masks(out_masks[:1]), out_masks[:1], scale, (50, 100))
    np.testing.assert_array_equal(boxes, [[20, 10, 60, 30]])
    assert back.shape == (1, 50, 100) and (back[0] ^ masks[0]).sum() <= 0.05 * masks[0].sum()


def test_load_with_a_size_resizes_and_pads(tmp_path):
    ann, img = write_dataset(tmp_path, small_dataset(), {"a.png": np.zeros((40, 60, 3), np.uint8)})
    data = load_coco(ann, img, size=30)
    image, masks, class_ids, _ = data[0]
    assert image.shape == (30, 30, 3) and masks.shape == (2, 30, 30)
    assert data.image_info(0)["scale"] == 0.5
    # the rectangle (10, 5, 30, 25) halves to (5, 2.5, 15, 12.5), give or take a pixel at its edges
    assert np.abs(boxes_from_masks(masks[:1])[0] - [5, 2.5, 15, 12.5]).max() <= 1
    assert masks[0][3:12, 6:14].all()
    assert not masks[:, 20:].any()                     # the padding holds no object
    assert len(data.batch_indices(0, 3, seed=0)) == 3


def test_batches_shuffle_every_epoch_and_cover_all_images(exported):
    data = load_coco(*exported)
    ids = [i for step in range(4) for i in data.batch_indices(step, 3, seed=1)]   # 12 images = two epochs of 6
    assert sorted(ids[:6]) == list(range(6)) and sorted(ids[6:]) == list(range(6))
    assert ids[:6] != ids[6:]
    assert data.batch_indices(3, 3, seed=1) == ids[9:]      # a step's batch depends on (seed, step) alone


# ------------------------------------------------------------------------------------------- errors
def expect_error(tmp_path, data, match, images=None, **kwargs):
    ann, img = write_dataset(tmp_path, data, images or {"a.png": np.zeros((40, 60, 3), np.uint8)})
    with pytest.raises(DatasetError, match=match) as info:
        load_coco(ann, img, **kwargs)
    assert "ann.json" in str(info.value) and isinstance(info.value, ValueError)
    return str(info.value)


def test_malformed_json_names_the_file(tmp_path):
    expect_error(tmp_path, '{"images": [', "not valid JSON")


def test_missing_key(tmp_path):
    data = small_dataset()
    del data["categories"]
    expect_error(tmp_path, data, "missing the top-level key 'categories'")
    data = small_dataset()
    del data["annotations"][0]["segmentation"]
    expect_error(tmp_path, data, "annotation 1 is missing 'segmentation'")


def test_unknown_category(tmp_path):
    data = small_dataset()
    data["annotations"][1]["category_id"] = 99
    expect_error(tmp_path, data, "annotation 2: unknown category_id 99")


def test_unknown_image_id(tmp_path):
    data = small_dataset()
    data["annotations"][0]["image_id"] = 11
    expect_error(tmp_path, data, "annotation 1: unknown image_id 11")


def test_missing_image(tmp_path):
    data = small_dataset()
    data["images"].append({"id": 11, "file_name": "gone.png", "height": 40, "width": 60})
    message = expect_error(tmp_path, data, "1 image file")
    assert "gone.png" in message


def test_empty_data_sets(tmp_path):
    expect_error(tmp_path, small_dataset(images=[], annotations=[]), "empty data set")
    expect_error(tmp_path, small_dataset(annotations=[]), "no annotations")


def test_bad_segmentations(tmp_path):
    data = small_dataset()
    data["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]
    expect_error(tmp_path, data, "polygon must be a list of at least 3 points")
    data["annotations"][0]["segmentation"] = {"size": [10, 10], "counts": [100]}
    expect_error(tmp_path, data, "RLE size")
    data["annotations"][0]["segmentation"] = {"size": [40, 60], "counts": [5, 6]}
    expect_error(tmp_path, data, "summing to height")


def test_missing_files_and_wrong_image_size(tmp_path):
    with pytest.raises(DatasetError, match="nothing.json: annotation file not found"):
        load_coco(tmp_path / "nothing.json", tmp_path)
    ann, img = write_dataset(tmp_path, small_dataset(), {"a.png": np.zeros((41, 60, 3), np.uint8)})
    data = load_coco(ann, img)
    with pytest.raises(DatasetError, match="a.png: image is 41 x 60"):
        data[0]


# ------------------------------------------------------------ checks that keep pycocotools from crashing
@pytest.mark.parametrize("value", [1e9, -1e9, 1e300, 10 ** 400, 181, -61])
def test_polygon_coordinates_far_outside_the_image_are_refused(tmp_path, value):
    data = small_dataset()
    data["annotations"][0]["segmentation"] = [[10, 5, value, 5, 30, 25, 10, 25]]
    if isinstance(value, int) and value > 10 ** 300:
        expect_error(tmp_path, data, "annotation 1: a polygon must be a list of at least 3 points")
        return
    message = expect_error(tmp_path, data, "annotation 1: polygon point")
    assert f"({value:g}, 5)" in message and "60 x 40 (W x H)" in message and "x in [-60, 120]" in message


def test_polygons_a_little_outside_the_image_load_clipped(tmp_path):
    data = small_dataset()
    data["annotations"][0]["segmentation"] = [[-60, -40, 120, -40, 120, 20, -60, 20]]   # the bounds exactly
    ann, img = write_dataset(tmp_path, data, {"a.png": np.zeros((40, 60, 3), np.uint8)})
    masks = load_coco(ann, img)[0][1]
    np.testing.assert_array_equal(masks[0].sum(axis=1), [60] * 20 + [0] * 20)          # rows 0..19, all columns


def test_a_polygon_of_1e9_gives_an_error_not_a_crash(tmp_path):
    """Run in a child process: before the check, pycocotools died here with a segmentation fault."""
    import subprocess
    import sys

    data = small_dataset()
    data["annotations"][0]["segmentation"] = [[0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9]]
    ann, img = write_dataset(tmp_path, data, {"a.png": np.zeros((40, 60, 3), np.uint8)})
    code = ("import sys\nfrom mrcnn_edu.data.coco import DatasetError, load_coco\n"
            f"try:\n    load_coco({str(ann)!r}, {str(img)!r})\nexcept DatasetError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "annotation 1: polygon point (1e+09, 0)" in done.stdout


@pytest.mark.parametrize("counts, match", [
    ("zzzz", "malformed compressed RLE"),             # characters beyond 'o'
    ("0 1", "malformed compressed RLE"),              # a space
    ("ab\u00e9", "malformed compressed RLE"),          # not ASCII
    ("", "malformed compressed RLE"),
    ("0o", "malformed compressed RLE"),               # 'o' says "more follows" at the end of the string
    ("0oooooo1", "malformed compressed RLE"),         # a run of 7 groups
    ("123", "compressed RLE runs sum to 6, expected"),             # well formed, but 1 + 2 + 3 != 2400
    ("0O", "compressed RLE runs sum to -1 and 1 are negative"),   # 'O' = 48 + 0x1F: sign bit, a run of -1
])
def test_malformed_compressed_rle_is_refused(tmp_path, counts, match):
    data = small_dataset()
    data["annotations"][0]["segmentation"] = {"size": [40, 60], "counts": counts}
    expect_error(tmp_path, data, "annotation 1: " + match)


def test_compressed_rle_of_another_size_is_refused(tmp_path):
    mask = np.zeros((40, 61), bool)
    mask[3:9, 50:58] = True
    data = small_dataset()
    data["annotations"][0]["segmentation"] = {"size": [40, 60], "counts": encode_masks(mask[None])[0]["counts"]}
    expect_error(tmp_path, data, "runs sum to 2440")


def test_random_garbage_never_crashes_pycocotools(tmp_path):
    """A small fuzz: random compressed RLE strings and polygons either fail the checks or decode safely."""
    from mrcnn_edu.data.coco import _check_segmentation, _decode, _to_rle

    rng = np.random.default_rng(0)
    image = {"id": 1, "height": 40, "width": 60}
    inside, outside = [-60, -5, 0, 33.3, 59.5, 120], [-1e9, -61, 121, 1e9, 1e300]
    passed = 0
    for trial in range(300):
        if trial % 2:   # a valid string with one character replaced by any of '.'..'q'
            counts = list(encode_masks(rng.random((1, 40, 60)) < rng.random())[0]["counts"])
            counts[rng.integers(len(counts))] = chr(rng.integers(46, 114))
            seg = {"size": [40, 60], "counts": "".join(counts)}
        else:           # mostly within the bounds, sometimes far out
            seg = [[rng.choice(outside) if rng.random() < 0.05 else rng.choice(inside) for _ in range(8)]]
        try:
            _check_segmentation({"segmentation": seg}, image, "annotation 1", "fuzz.json")
        except DatasetError:
            continue
        passed += 1
        assert _decode([_to_rle({"segmentation": seg}, image)], 40, 60).shape == (1, 40, 60)
    assert passed > 20


def test_bbox_and_area_must_be_finite_numbers(tmp_path):
    for bbox in ([1, 2, 3], [1, 2, 3, "4"], [1, 2, 3, float("inf")], [1, 2, 3, 10 ** 400], "1 2 3 4"):
        data = small_dataset()
        data["annotations"][0]["bbox"] = bbox
        expect_error(tmp_path, data, r"annotation 1: bbox must be \[x, y, width, height\]")
    data = small_dataset()
    data["annotations"][0]["area"] = float("nan")
    expect_error(tmp_path, data, "annotation 1: area must be a finite number")


def test_image_sides_beyond_65535_are_refused(tmp_path):
    data = small_dataset()
    data["images"][0]["width"] = 70000
    expect_error(tmp_path, data, "image 10 has height 40 and width 70000, expected ints in 1..65535")


# --------------------------------------------------------------------------- orientation, fast path
def test_exif_orientation_sets_the_size_and_a_mismatch_says_why(tmp_path):
    img = Image.fromarray(np.zeros((40, 60, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6                                   # stored 40 x 60, shown turned: 60 x 40
    (tmp_path / "img").mkdir()
    img.save(tmp_path / "img" / "a.png", exif=exif.tobytes())
    data = small_dataset()
    del data["images"][0]["height"], data["images"][0]["width"]
    data["annotations"][0]["segmentation"] = [[5, 10, 25, 10, 25, 50, 5, 50]]
    data["annotations"][1]["segmentation"] = [[30, 50, 35, 50, 35, 55]]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    dataset = load_coco(ann, tmp_path / "img")
    assert dataset.images[0]["height"] == 60 and dataset.images[0]["width"] == 40
    image, masks, _, _ = dataset[0]
    assert image.shape == (60, 40, 3) and masks.shape == (2, 60, 40)
    data["images"][0].update(height=40, width=60)    # the stored size: the annotations do not fit
    ann.write_text(json.dumps(small_dataset(images=data["images"])))
    with pytest.raises(DatasetError, match="image is 60 x 40 .* says 40 x 60 .*EXIF orientation"):
        load_coco(ann, tmp_path / "img")[0]


def test_big_jpeg_with_a_size_goes_through_the_fast_path(tmp_path):
    y, x = np.mgrid[0:600, 0:800]
    pixels = np.stack([x % 256, y % 256, (x + y) // 8 % 256], axis=-1).astype(np.uint8)
    data = small_dataset(images=[{"id": 10, "file_name": "a.jpg", "height": 600, "width": 800}])
    data["annotations"][0]["segmentation"] = [[100, 50, 500, 50, 500, 450, 100, 450]]
    data["annotations"][1]["segmentation"] = [[600, 100, 700, 100, 700, 300]]
    ann, img = write_dataset(tmp_path, data, {"a.jpg": pixels})
    image, masks, class_ids, _ = load_coco(ann, img, size=80)[0]
    expected, _, _ = resize_and_pad(np.asarray(Image.open(img / "a.jpg")), np.zeros((0, 600, 800), bool), 80)
    assert image.shape == (80, 80, 3) and np.abs(image.astype(int) - expected).mean() < 3
    np.testing.assert_array_equal(class_ids, [2, 1])
    np.testing.assert_array_equal(boxes_from_masks(masks[:1]), [[10, 5, 50, 45]])   # x 0.1
    assert not masks[:, 60:].any()


# --------------------------------------------------------------------------------------- subsets
def two_image_dataset(tmp_path):
    """Images 10 (a rectangle, category 7) and 20 (a triangle, category 3)."""
    data = small_dataset()
    data["images"].append({"id": 20, "file_name": "b.png", "height": 40, "width": 60})
    data["annotations"][1]["image_id"] = 20
    pixels = np.zeros((40, 60, 3), np.uint8)
    return load_coco(*write_dataset(tmp_path, data, {"a.png": pixels, "b.png": pixels + 9}))


def test_subset_holds_only_its_images_and_keeps_the_classes(tmp_path):
    data = two_image_dataset(tmp_path)
    assert data.image_ids == [10, 20]
    sub = data.subset([1])
    assert sub.image_ids == [20] and sorted(sub.coco.getImgIds()) == [20] and len(sub) == 1
    assert sub.coco.getAnnIds() == [2]
    assert sub.class_names == data.class_names == ("background", "tri", "rect")   # rect has no annotation
    assert sub.category_ids == (3, 7) and sub.size == data.size
    image, masks, class_ids, image_id = sub[0]
    assert image_id == 20 and (image == 9).all()
    np.testing.assert_array_equal(class_ids, [1])
    np.testing.assert_array_equal(masks, data[1][1])
    both = data.subset(np.array([1, 0]))
    assert both.image_ids == [20, 10] and both[1][3] == 10


def test_subset_evaluation_sees_only_its_images_and_leaves_the_parent_alone(tmp_path, exported):
    from mrcnn_edu.evaluate import coco_evaluate, detections_to_coco

    data = load_coco(*exported)
    sub = data.subset([4, 1])
    assert sorted(sub.coco.getImgIds()) == sorted([data.image_ids[4], data.image_ids[1]])
    results = []
    for image, masks, class_ids, image_id in sub:
        results += detections_to_coco(image_id, boxes_from_masks(masks), np.ones(len(masks)), class_ids, masks,
                                      sub.category_ids)
    metrics = coco_evaluate(sub, results)
    assert metrics["box_AP"] == pytest.approx(1.0) and metrics["mask_AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_evaluate(sub, detections_to_coco(data.image_ids[0], [[0, 0, 5, 5]], [1.0], [1]))
    # pycocotools rewrote the subset's annotations in place; the parent's are untouched and still load
    assert all(isinstance(a["segmentation"]["counts"], str) for a in data.coco.dataset["annotations"])
    np.testing.assert_array_equal(sub[0][1], data[4][1])


def test_subset_refuses_bad_indices(tmp_path):
    data = two_image_dataset(tmp_path)
    with pytest.raises(ValueError, match="indices: 2 is out of range for a data set of 2 images"):
        data.subset([0, 2])
    with pytest.raises(ValueError, match="more than once"):
        data.subset([1, 1])
    with pytest.raises(ValueError, match="1-d sequence of ints"):
        data.subset([0.5])
