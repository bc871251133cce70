"""The shapes data set (data/shapes.py): the issue's constraints on many samples, exact geometry, streams."""
import numpy as np
import pytest

from mrcnn_edu.boxes import box_iou
from mrcnn_edu.data.shapes import (CLASS_NAMES, HALF_SIZE, MARGIN, MAX_IOU, MIN_CONTRAST, Layout, ShapesDataset,
                                   boxes_from_masks, collate, make_sample, random_layout, render, shape_boxes,
                                   validation_set)

SIZE = 128


def layout(class_ids, centres, half_sizes):
    """A hand-made layout: white objects on black."""
    n = len(class_ids)
    return Layout(np.array(class_ids, dtype=np.int64), np.array(centres, dtype=np.int64),
                  np.array(half_sizes, dtype=np.int64), np.full((n, 3), 255, np.uint8), np.zeros(3, np.uint8))


def test_sample_types_and_shapes():
    image, masks, class_ids = make_sample(np.random.default_rng(0))
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert masks.ndim == 3 and masks.shape[1:] == (SIZE, SIZE) and masks.dtype == bool
    assert class_ids.shape == (masks.shape[0],) and class_ids.dtype == np.int64
    assert CLASS_NAMES == ("background", "square", "circle", "triangle")


def test_same_seed_same_sample_other_seed_other_sample():
    a, b, c = (make_sample(np.random.default_rng(s)) for s in (7, 7, 8))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    # make_sample is random_layout, painted
    again = render(random_layout(np.random.default_rng(7)))
    for x, y in zip(a, again):
        np.testing.assert_array_equal(x, y)


def test_the_issue_constraints_hold_on_many_samples():
    counts = []
    for seed in range(300):
        lay = random_layout(np.random.default_rng(seed))
        image, masks, class_ids = render(lay)
        n = len(lay.class_ids)
        counts.append(n)
        assert 1 <= n <= 4
        assert set(lay.class_ids.tolist()) <= {1, 2, 3}
        assert (lay.centres >= MARGIN).all() and (lay.centres <= SIZE - MARGIN).all(), lay.centres
        assert (lay.half_sizes >= HALF_SIZE[0]).all() and (lay.half_sizes <= HALF_SIZE[1]).all()
        iou = box_iou(shape_boxes(lay.centres, lay.half_sizes), shape_boxes(lay.centres, lay.half_sizes))
        assert (iou[~np.eye(n, dtype=bool)] <= MAX_IOU).all(), iou
        # every object's colour stands out from the background and from the objects drawn before it
        palette = np.concatenate([lay.background[None], lay.colours]).astype(int)
        for i in range(1, n + 1):
            assert np.abs(palette[i] - palette[:i]).max(axis=1).min() >= MIN_CONTRAST
        # visible masks: non-empty, disjoint, each painted in its object's colour, the rest background
        assert 1 <= len(masks) <= n and masks.any(axis=(1, 2)).all()
        assert masks.sum(axis=0).max() <= 1
        colours = {tuple(c) for c in lay.colours.tolist()}
        for m in masks:
            assert len(np.unique(image[m], axis=0)) == 1 and tuple(image[m][0]) in colours
        background = image[~masks.any(axis=0)]
        np.testing.assert_array_equal(background, np.broadcast_to(lay.background, background.shape))
        boxes = boxes_from_masks(masks)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= SIZE).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    assert set(counts) == {1, 2, 3, 4}


def test_square_is_2s_by_2s_and_circle_fits_its_box():
    image, masks, class_ids = render(layout([1, 2], [[40, 40], [90, 80]], [20, 25]))
    np.testing.assert_array_equal(class_ids, [1, 2])
    expected = np.zeros((SIZE, SIZE), bool)
    expected[20:60, 20:60] = True
    np.testing.assert_array_equal(masks[0], expected)
    np.testing.assert_array_equal(boxes_from_masks(masks), [[20, 20, 60, 60], [65, 55, 115, 105]])
    assert abs(masks[1].sum() - np.pi * 25 ** 2) < 2 * np.pi * 25  # area within one perimeter of pi r^2
    window = masks[1][55:105, 65:115]
    np.testing.assert_array_equal(window, window[::-1])      # symmetric about the centre row
    np.testing.assert_array_equal(window, window[:, ::-1])   # and column
    np.testing.assert_array_equal(image[masks.any(axis=0)], 255)


def test_triangle_apex_is_up():
    _, masks, _ = render(layout([3], [[64, 64]], [20]))
    widths = masks[0].sum(axis=1)
    rows = np.flatnonzero(widths)
    assert (np.diff(widths[rows]) >= 0).all(), widths[rows]   # width grows downward
    assert widths[rows[0]] == 2 and widths[rows[-1]] == 40      # apex at the top, base 2s at the bottom
    assert masks[0].sum() == 800                                # half of the 40 x 40 box
    np.testing.assert_array_equal(masks[0][:, 24:104], masks[0][:, 24:104][:, ::-1])  # symmetric about x = 64
    np.testing.assert_array_equal(boxes_from_masks(masks), [[44, 45, 84, 84]])


def test_later_shapes_occlude_earlier_ones_and_hidden_ones_are_dropped():
    # drawn in order: A at x 40, D at x 90, B at x 60 over A's right half, C exactly over D
    lay = layout([1, 1, 1, 1], [[40, 64], [90, 64], [60, 64], [90, 64]], [20, 20, 20, 20])
    image, masks, class_ids = render(lay)
    assert len(masks) == 3   # D is hidden completely by C
    a = np.zeros((SIZE, SIZE), bool)
    a[44:84, 20:40] = True   # A covers columns 20..59, B columns 40..79
    np.testing.assert_array_equal(masks[0], a)
    np.testing.assert_array_equal(boxes_from_masks(masks), [[20, 44, 40, 84], [40, 44, 70, 84], [70, 44, 110, 84]])
    assert masks.sum(axis=0).max() == 1


def test_shapes_are_cut_at_the_border():
    _, masks, _ = render(layout([1], [[20, 108]], [32]), size=SIZE)
    np.testing.assert_array_equal(boxes_from_masks(masks), [[0, 76, 52, 128]])


def test_boxes_from_masks_has_no_plus_one():
    masks = np.zeros((3, 5, 6), bool)
    masks[0, 2, 3] = True              # one pixel: width and height 1
    masks[1, 1:4, 0:6] = True          # touches the left and right edges
    boxes = boxes_from_masks(masks)    # the third mask is empty
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, [[3, 2, 4, 3], [0, 1, 6, 4], [0, 0, 0, 0]])
    assert boxes_from_masks(np.zeros((0, 5, 6), bool)).shape == (0, 4)
    with pytest.raises(ValueError, match="masks"):
        boxes_from_masks(np.zeros((5, 6), bool))


def test_dataset_is_indexable_and_the_stream_resumes():
    data = ShapesDataset(seed=3)
    np.testing.assert_array_equal(data[5][0], ShapesDataset(seed=3)[5][0])
    stream = ShapesDataset(3, split="train").batches(2)
    batches = [next(stream) for _ in range(3)]
    images, masks, class_ids = batches[0]
    assert images.shape == (2, SIZE, SIZE, 3) and len(masks) == len(class_ids) == 2
    np.testing.assert_array_equal(images[1], data[1][0])
    resumed = next(ShapesDataset(3, split="train").batches(2, start=2))
    np.testing.assert_array_equal(resumed[0], batches[2][0])
    for x, y in zip(resumed[1] + resumed[2], batches[2][1] + batches[2][2]):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(TypeError, match="endless"):
        len(data)


def test_validation_split_is_fixed_and_apart_from_training():
    val = validation_set(n=5, seed=0)
    assert len(val) == 5
    again = validation_set(n=5, seed=0)
    train = ShapesDataset(seed=0)
    for i in range(5):
        np.testing.assert_array_equal(val[i][0], again[i][0])
        assert not np.array_equal(val[i][0], train[i][0])
    assert not np.array_equal(validation_set(n=1, seed=1)[0][0], val[0][0])
    fixed = ShapesDataset(seed=0, split="validation", length=5)
    assert len(fixed) == 5 and len(list(fixed.batches(2))) == 3
    with pytest.raises(IndexError):
        fixed[5]


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="rng"):
        make_sample(np.random.RandomState(0))
    with pytest.raises(ValueError, match="size"):
        make_sample(np.random.default_rng(0), size=32)
    with pytest.raises(ValueError, match="split"):
        ShapesDataset(split="test")
    with pytest.raises(ValueError, match="seed"):
        ShapesDataset(seed=-1)
    with pytest.raises(ValueError, match="differ in size"):
        collate([make_sample(np.random.default_rng(0)), make_sample(np.random.default_rng(0), size=96)])
