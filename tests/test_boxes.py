"""Stage 1 (boxes.py): IoU, box encoding and decoding, NMS, on hand-computed examples."""
import math

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.boxes import (BBOX_XFORM_CLIP, batched_nms, box_area, box_decode, box_encode, box_iou,
                             clip_boxes_to_image, nms, remove_small_boxes)


def host(a):
    return backend.to_host(a)


def random_boxes(gen, n, low=-50.0, high=600.0, min_size=1.0, max_size=200.0):
    """n valid boxes with positive sizes, some partly outside a 640 x 480 image."""
    xy = gen.uniform(low, high, size=(n, 2))
    wh = gen.uniform(min_size, max_size, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def greedy_nms(boxes, scores, threshold):
    """The textbook loop (host NumPy), to check the vectorized fixed point against."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    iou = host(box_iou(boxes, boxes))
    keep = []
    for i in order:
        if all(iou[k, i] <= threshold for k in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


# ----------------------------------------------------------------------------------------------- IoU
def test_box_iou_hand_computed(xp):
    a = xp.asarray([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0]])
    b = xp.asarray([[1.0, 1.0, 3.0, 3.0],   # overlaps a0 in a 1 x 1 square: 1 / (4 + 4 - 1)
                    [2.0, 0.0, 4.0, 2.0],   # touches a0 along an edge: 0
                    [0.0, 0.0, 2.0, 2.0],   # equals a0: 1
                    [10.0, 10.0, 11.0, 11.0]])
    expected = np.array([[1 / 7, 0.0, 1.0, 0.0],
                         [4 / 16, 4 / 16, 4 / 16, 0.0]])  # b0, b1, b2 lie inside a1 (area 16)
    np.testing.assert_allclose(host(box_iou(a, b)), expected, rtol=1e-12)
    np.testing.assert_allclose(host(box_iou(b, a)), expected.T, rtol=1e-12)


def test_box_iou_zero_union_is_zero_not_nan(xp):
    points = xp.asarray([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    iou = host(box_iou(points, points))
    assert not np.isnan(iou).any()
    np.testing.assert_array_equal(iou, np.zeros((2, 2)))


def test_box_iou_dtype_and_symmetry(xp, rng):
    b1 = random_boxes(rng, 7)
    b2 = random_boxes(rng, 5)
    for dtype in (xp.float32, xp.float64):
        iou = box_iou(xp.asarray(b1, dtype=dtype), xp.asarray(b2, dtype=dtype))
        assert iou.dtype == dtype and iou.shape == (7, 5)
    iou = host(box_iou(xp.asarray(b1), xp.asarray(b2)))
    np.testing.assert_allclose(iou, host(box_iou(xp.asarray(b2), xp.asarray(b1))).T, rtol=1e-15)
    assert (iou >= 0).all() and (iou <= 1).all()
    np.testing.assert_allclose(np.diag(host(box_iou(xp.asarray(b1), xp.asarray(b1)))), 1.0)


def test_box_area(xp):
    area = box_area(xp.asarray([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]]))
    np.testing.assert_array_equal(host(area), [6.0, 0.0])


def test_box_iou_empty(xp):
    empty = xp.zeros((0, 4))
    three = xp.asarray([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert box_iou(empty, three).shape == (0, 3)
    assert box_iou(three, empty).shape == (3, 0)
    assert box_iou([], []).shape == (0, 0)


@pytest.mark.parametrize("boxes1, boxes2, name, message", [
    (np.zeros((3, 5)), np.zeros((2, 4)), "boxes1", "N x 4"),
    (np.zeros(4), np.zeros((2, 4)), "boxes1", "N x 4"),
    (np.zeros((2, 4)), np.array([[0.0, 0.0, np.nan, 1.0]]), "boxes2", "NaN"),
    (np.zeros((2, 4)), np.array([[0.0, 0.0, np.inf, 1.0]]), "boxes2", "inf"),
    (np.array([[2.0, 0.0, 1.0, 1.0]]), np.zeros((2, 4)), "boxes1", "x2 >= x1"),
    (np.array([[0.0, 2.0, 1.0, 1.0]]), np.zeros((2, 4)), "boxes1", "y2 >= y1"),
])
def test_box_iou_bad_input(xp, boxes1, boxes2, name, message):
    with pytest.raises(ValueError, match=f"{name}.*{message}"):
        box_iou(xp.asarray(boxes1), xp.asarray(boxes2))


# ------------------------------------------------------------------------------------ encode / decode
def test_box_encode_hand_computed(xp):
    reference = xp.asarray([[0.0, 0.0, 10.0, 20.0]])    # w 10, h 20, centre (5, 10)
    targets = xp.asarray([[2.0, 4.0, 22.0, 24.0]])      # w 20, h 20, centre (12, 14)
    deltas = host(box_encode(reference, targets))
    np.testing.assert_allclose(deltas, [[7 / 10, 4 / 20, math.log(2.0), 0.0]], rtol=1e-6, atol=1e-7)
    deltas = host(box_encode(reference, targets, weights=(10.0, 10.0, 5.0, 5.0)))
    np.testing.assert_allclose(deltas, [[7.0, 2.0, 5 * math.log(2.0), 0.0]], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip(xp, rng, weights):
    reference = random_boxes(rng, 50)
    targets = random_boxes(rng, 50)
    for dtype, tol in ((xp.float64, 1e-10), (xp.float32, 2e-4)):
        ref, tgt = xp.asarray(reference, dtype=dtype), xp.asarray(targets, dtype=dtype)
        deltas = box_encode(ref, tgt, weights)
        assert deltas.shape == (50, 4) and deltas.dtype == dtype
        decoded = box_decode(deltas, ref, weights)
        assert decoded.dtype == dtype
        np.testing.assert_allclose(host(decoded), targets, rtol=tol, atol=tol * 100)


def test_box_decode_hand_computed_and_clamp(xp):
    reference = xp.asarray([[0.0, 0.0, 16.0, 16.0], [10.0, 10.0, 20.0, 30.0]])
    deltas = xp.asarray([[0.0, 0.0, 10.0, 10.0],                 # dw, dh clamped at log(1000/16): 1000 wide
                         [0.5, -0.25, math.log(2.0), -12.0]])    # no lower clamp: height shrinks a lot
    boxes = host(box_decode(deltas, reference))
    np.testing.assert_allclose(boxes[0], [8 - 500, 8 - 500, 8 + 500, 8 + 500], rtol=1e-12)
    # centre (15, 20) moved by (0.5 * 10, -0.25 * 20) = (20, 15); width 20, height 20 * exp(-12)
    half_h = 10 * math.exp(-12.0)
    np.testing.assert_allclose(boxes[1], [10.0, 15.0 - half_h, 30.0, 15.0 + half_h], rtol=1e-12)
    unclamped = host(box_decode(deltas, reference, clip=math.inf))
    np.testing.assert_allclose(unclamped[0, 2] - unclamped[0, 0], 16 * math.exp(10.0), rtol=1e-12)
    assert BBOX_XFORM_CLIP == math.log(1000 / 16)


def test_box_decode_class_specific_deltas(xp, rng):
    reference = xp.asarray(random_boxes(rng, 6))
    deltas = xp.asarray(rng.normal(size=(6, 12)))          # K = 3 classes
    boxes = box_decode(deltas, reference, (10.0, 10.0, 5.0, 5.0))
    assert boxes.shape == (6, 12)
    for k in range(3):
        one = box_decode(deltas[:, 4 * k:4 * k + 4], reference, (10.0, 10.0, 5.0, 5.0))
        np.testing.assert_array_equal(host(boxes[:, 4 * k:4 * k + 4]), host(one))


def test_encode_decode_empty(xp):
    assert box_encode(xp.zeros((0, 4)), xp.zeros((0, 4))).shape == (0, 4)
    assert box_decode(xp.zeros((0, 8)), xp.zeros((0, 4))).shape == (0, 8)
    assert box_decode([], []).shape == (0, 4)


def test_encode_decode_bad_input(xp):
    ref = xp.asarray([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 5.0, 5.0]])
    with pytest.raises(ValueError, match="targets: expected 2 rows"):
        box_encode(ref, ref[:1])
    with pytest.raises(ValueError, match="reference: every box needs a positive width"):
        box_encode(xp.asarray([[0.0, 0.0, 0.0, 10.0]]), xp.asarray([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="targets: every box needs a positive width"):
        box_encode(xp.asarray([[0.0, 0.0, 1.0, 1.0]]), xp.asarray([[0.0, 0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="targets: contains NaN"):
        box_encode(ref, xp.asarray([[0.0, 0.0, 1.0, np.nan]] * 2))
    with pytest.raises(ValueError, match="weights"):
        box_encode(ref, ref, weights=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="weights"):
        box_encode(ref, ref, weights=(1.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="deltas: expected N x 4K"):
        box_decode(xp.zeros((2, 5)), ref)
    with pytest.raises(ValueError, match="deltas: expected N x 4K"):
        box_decode(xp.zeros(4), ref)
    with pytest.raises(ValueError, match="deltas: contains NaN"):
        box_decode(xp.full((2, 4), np.nan), ref)
    with pytest.raises(ValueError, match="reference: expected 2 rows"):
        box_decode(xp.zeros((2, 4)), ref[:1])
    with pytest.raises(ValueError, match="reference: every box needs x2 >= x1"):
        box_decode(xp.zeros((1, 4)), xp.asarray([[5.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="clip"):
        box_decode(xp.zeros((2, 4)), ref, clip=float("nan"))


# ------------------------------------------------------------------------------------------------ NMS
def test_nms_chain(xp):
    """A suppresses B; B would suppress C, but B is gone, and C overlaps A too little: C is kept."""
    a = [0.0, 0.0, 10.0, 10.0]
    b = [3.0, 0.0, 13.0, 10.0]    # IoU(A, B) = 70 / 130 = 0.54
    c = [6.0, 0.0, 16.0, 10.0]    # IoU(B, C) = 0.54, IoU(A, C) = 40 / 160 = 0.25
    boxes = xp.asarray([c, a, b])
    scores = xp.asarray([0.7, 0.9, 0.8])
    keep = nms(boxes, scores, 0.5)
    assert keep.dtype == xp.int64
    np.testing.assert_array_equal(host(keep), [1, 0])          # A, then C; never B
    np.testing.assert_array_equal(host(nms(boxes, scores, 0.6)), [1, 2, 0])
    np.testing.assert_array_equal(host(nms(boxes, scores, 0.2)), [1])


def test_nms_strictly_greater_and_ties(xp):
    boxes = xp.asarray([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]])   # IoU exactly 2 / 4 = 0.5
    scores = xp.asarray([0.5, 0.5])                                     # a tie: lower index first
    np.testing.assert_array_equal(host(nms(boxes, scores, 0.5)), [0, 1])
    np.testing.assert_array_equal(host(nms(boxes, scores, 0.49)), [0])
    np.testing.assert_array_equal(host(nms(boxes[::-1], scores, 0.49)), [0])


def test_nms_long_chain_matches_greedy_loop(xp):
    """50 boxes sliding by 1 px: every box overlaps its neighbour; the fixed point needs many iterations."""
    x = np.arange(50, dtype=np.float64)
    boxes = np.stack([x, np.zeros(50), x + 10, np.full(50, 10.0)], axis=1)
    scores = np.linspace(1.0, 0.5, 50)
    keep = host(nms(xp.asarray(boxes), xp.asarray(scores), 0.7))   # shift 1: IoU 0.82, shift 2: IoU 0.67
    np.testing.assert_array_equal(keep, np.arange(0, 50, 2))
    np.testing.assert_array_equal(keep, greedy_nms(boxes, scores, 0.7))


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_random_matches_greedy_loop(xp, rng, threshold):
    boxes = random_boxes(rng, 120, high=300.0)
    scores = rng.uniform(size=120).round(2)     # rounding makes ties
    keep = host(nms(xp.asarray(boxes), xp.asarray(scores), threshold))
    np.testing.assert_array_equal(keep, greedy_nms(boxes, scores, threshold))
    if threshold == 1.0:
        assert len(keep) == 120


def test_batched_nms_classes_do_not_suppress_each_other(xp):
    boxes = xp.asarray([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]])
    scores = xp.asarray([0.9, 0.8, 0.7])
    np.testing.assert_array_equal(host(nms(boxes, scores, 0.5)), [0])
    np.testing.assert_array_equal(host(batched_nms(boxes, scores, xp.asarray([0, 1, 0]), 0.5)), [0, 1])
    np.testing.assert_array_equal(host(batched_nms(boxes, scores, xp.asarray([0, 1, 2]), 0.5)), [0, 1, 2])
    np.testing.assert_array_equal(host(batched_nms(boxes, scores, xp.asarray([3, 3, 3]), 0.5)), [0])


def test_batched_nms_negative_coordinates(xp):
    """torchvision's shift (max + 1 = 1 here) would let these two classes overlap; ours does not."""
    boxes = xp.asarray([[-100.0, -100.0, 0.0, 0.0], [-100.0, -100.0, 0.0, 0.0]])
    keep = batched_nms(boxes, xp.asarray([0.9, 0.8]), xp.asarray([0, 1]), 0.5)
    np.testing.assert_array_equal(host(keep), [0, 1])


def test_batched_nms_random_equals_nms_per_class(xp, rng):
    boxes = random_boxes(rng, 90, high=200.0)
    scores = rng.uniform(size=90)
    idxs = rng.integers(0, 3, size=90)
    keep = host(batched_nms(xp.asarray(boxes), xp.asarray(scores), xp.asarray(idxs), 0.4))
    expected = np.concatenate([np.flatnonzero(idxs == c)[greedy_nms(boxes[idxs == c], scores[idxs == c], 0.4)]
                               for c in range(3)])
    expected = expected[np.argsort(-scores[expected], kind="stable")]
    np.testing.assert_array_equal(keep, expected)


def test_nms_empty(xp):
    for keep in (nms(xp.zeros((0, 4)), xp.zeros(0), 0.5), nms([], [], 0.5),
                 batched_nms(xp.zeros((0, 4)), xp.zeros(0), xp.zeros(0, dtype=xp.int64), 0.5),
                 batched_nms([], [], [], 0.5)):
        assert keep.shape == (0,) and keep.dtype == xp.int64


def test_nms_bad_input(xp):
    boxes = xp.asarray([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(ValueError, match="scores: expected 2 rows"):
        nms(boxes, xp.asarray([0.5]), 0.5)
    with pytest.raises(ValueError, match="scores: expected N scores"):
        nms(boxes, xp.asarray([[0.5, 0.4]]), 0.5)
    with pytest.raises(ValueError, match="scores: contains NaN"):
        nms(boxes, xp.asarray([0.5, np.nan]), 0.5)
    with pytest.raises(ValueError, match="boxes: expected N x 4"):
        nms(xp.zeros((2, 3)), xp.asarray([0.5, 0.4]), 0.5)
    with pytest.raises(ValueError, match="boxes: every box needs x2 >= x1"):
        nms(xp.asarray([[1.0, 0.0, 0.0, 1.0]]), xp.asarray([0.5]), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(boxes, xp.asarray([0.5, 0.4]), 1.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(boxes, xp.asarray([0.5, 0.4]), "high")
    with pytest.raises(ValueError, match="idxs: expected 2 rows"):
        batched_nms(boxes, xp.asarray([0.5, 0.4]), xp.asarray([0]), 0.5)
    with pytest.raises(TypeError, match="idxs: expected integer"):
        batched_nms(boxes, xp.asarray([0.5, 0.4]), xp.asarray([0.0, 1.0]), 0.5)


# ---------------------------------------------------------------------------------- clip and filter
def test_clip_boxes_to_image(xp):
    boxes = xp.asarray([[-5.0, -3.0, 50.0, 20.0], [10.0, 5.0, 70.0, 40.0], [1.0, 2.0, 3.0, 4.0]],
                       dtype=xp.float32)
    clipped = clip_boxes_to_image(boxes, (30, 60))      # (height, width)
    assert clipped.dtype == xp.float32
    np.testing.assert_array_equal(host(clipped), [[0, 0, 50, 20], [10, 5, 60, 30], [1, 2, 3, 4]])
    assert clip_boxes_to_image(xp.zeros((0, 4)), (30, 60)).shape == (0, 4)
    with pytest.raises(ValueError, match="image_size"):
        clip_boxes_to_image(boxes, (30, 0))


def test_remove_small_boxes(xp):
    boxes = xp.asarray([[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 4.0, 9.0], [0.0, 0.0, 9.0, 4.9], [1.0, 1.0, 11.0, 6.0]])
    keep = remove_small_boxes(boxes, 5.0)                 # width and height both >= 5
    assert keep.dtype == xp.int64
    np.testing.assert_array_equal(host(keep), [0, 3])
    assert remove_small_boxes(xp.zeros((0, 4)), 1.0).shape == (0,)
    with pytest.raises(ValueError, match="min_size"):
        remove_small_boxes(boxes, float("nan"))


# ------------------------------------------------------------------------------------------- float16
# float16 tops out at 65504: the area of a 300 x 300 box (90000) overflows to inf, and IoU = inf / inf = NaN.
# Public functions compute float16 input in float32 and return float32.
BIG16 = np.array([[0.0, 0.0, 300.0, 300.0], [100.0, 100.0, 400.0, 400.0], [50.0, 0.0, 350.0, 300.0]])


def test_box_iou_of_float16_boxes_equals_float32(xp):
    half, single = xp.asarray(BIG16, dtype=xp.float16), xp.asarray(BIG16, dtype=xp.float32)
    iou = box_iou(half, half)
    assert iou.dtype == xp.float32
    np.testing.assert_array_equal(host(iou), host(box_iou(single, single)))
    assert host(iou)[0, 1] == np.float32(200 * 200) / np.float32(2 * 90000 - 200 * 200)  # 40000 / 140000


def test_box_functions_compute_float16_in_float32(xp):
    half, single = xp.asarray(BIG16, dtype=xp.float16), xp.asarray(BIG16, dtype=xp.float32)
    scores = xp.asarray([0.9, 0.8, 0.7], dtype=xp.float16)
    area = box_area(half)
    assert area.dtype == xp.float32
    np.testing.assert_array_equal(host(area), [90000.0] * 3)
    for name, f in [("box_encode", lambda b: box_encode(b, b[::-1])),
                    ("box_decode", lambda b: box_decode(xp.full((3, 4), 0.5, dtype=b.dtype), b)),
                    ("clip_boxes_to_image", lambda b: clip_boxes_to_image(b, (200, 320)))]:
        got, expected = f(half), f(single)
        assert got.dtype == xp.float32, name
        assert np.isfinite(host(got)).all(), name
        np.testing.assert_array_equal(host(got), host(expected), err_msg=name)
    # IoU(0, 2) = 75000 / 105000 = 0.71: at 0.5 box 2 goes, box 1 (IoU 0.29 with box 0) stays
    np.testing.assert_array_equal(host(nms(half, scores, 0.5)), [0, 1])
    np.testing.assert_array_equal(host(batched_nms(half, scores, xp.asarray([1, 1, 2]), 0.5)), [0, 1, 2])
    np.testing.assert_array_equal(host(remove_small_boxes(half, 300)), [0, 1, 2])


# ------------------------------------------------------------------------------------------- the cores
def test_the_cores_handle_empty_input_and_give_the_public_results(xp, rng):
    from mrcnn_edu import boxes as lib
    empty = xp.zeros((0, 4))
    for keep in (lib._nms(empty, xp.zeros(0), 0.5), lib._batched_nms(empty, xp.zeros(0), xp.zeros(0, xp.int64), 0.5)):
        assert keep.shape == (0,) and keep.dtype == xp.int64
    b = xp.asarray(random_boxes(rng, 30))
    scores, idxs = xp.asarray(rng.random(30)), xp.asarray(rng.integers(0, 3, 30))
    np.testing.assert_array_equal(host(lib._batched_nms(b, scores, idxs, 0.5)), host(batched_nms(b, scores, idxs, 0.5)))
    deltas = xp.asarray(rng.normal(0, 0.5, (30, 8)))
    np.testing.assert_array_equal(host(lib._box_decode(deltas, b, lib.BOX_HEAD_WEIGHTS)),
                                  host(box_decode(deltas, b, (10, 10, 5, 5))))
    np.testing.assert_array_equal(host(lib._box_encode(b, b[::-1], lib.BOX_HEAD_WEIGHTS)),
                                  host(box_encode(b, b[::-1], (10, 10, 5, 5))))
    np.testing.assert_array_equal(host(lib._clip_boxes_to_image(b, (100, 200))),
                                  host(clip_boxes_to_image(b, (100, 200))))
    np.testing.assert_array_equal(host(lib._remove_small_boxes(b, 50.0)), host(remove_small_boxes(b, 50)))
